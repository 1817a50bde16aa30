//! What the searches need from a file system, whichever it is: bounded
//! reads of whole files, one symbolic link at a time, and sorted,
//! bounded directory listings. [`mount`] tells ext2/3/4 and FAT apart by
//! their magic numbers and mounts the partition read-only.

use super::disk::Slice;
use super::{ext4, fat};

/// Why a file could not be had. Paths are as the file system names them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("{0} missing")]
    NotFound(String),
    #[error("{path}: {size} bytes is more than the {what} limit of {limit} bytes")]
    TooLarge {
        path: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{0}: not a regular file")]
    NotAFile(String),
    #[error("{0}: not a directory")]
    NotADir(String),
    #[error("{0}: a symbolic link loop (more than {MAX_LINKS} links)")]
    Loop(String),
    #[error("{path}: more than {max} directory entries")]
    DirTooLarge { path: String, max: usize },
    #[error("{path}: {reason}")]
    Fs { path: String, reason: String },
}

/// The most symbolic links followed for one name.
pub(super) const MAX_LINKS: usize = 16;

/// One entry of a directory listing.
pub(super) struct DirItem {
    pub name: String,
    pub is_file: bool,
}

/// A mounted, read-only file system.
pub(super) trait Fs {
    /// "ext4" or "vfat", for messages.
    fn kind(&self) -> &'static str;

    /// `UUID=` as Linux's `root=UUID=` and blkid spell it, if the file
    /// system has one.
    fn uuid(&self) -> Option<String>;

    /// The whole file at `path` (absolute), following links, if it is at
    /// most `limit` bytes; `what` names the limit in the error.
    fn read(&self, path: &str, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError>;

    /// The target of `path` if it is a symbolic link, `None` if it is
    /// something else; `NotFound` if there is nothing.
    fn read_link(&self, path: &str) -> Result<Option<String>, FileError>;

    /// The entries of the directory `path`, sorted by name, at most `max`
    /// of them looked at.
    fn list(&self, path: &str, max: usize) -> Result<Vec<DirItem>, FileError>;
}

/// What [`mount`] makes of a partition.
pub(super) enum Mount {
    Mounted(Box<dyn Fs>),
    /// A file system was recognised but does not mount.
    Broken {
        kind: &'static str,
        reason: String,
    },
    /// Nothing recognised (swap, BIOS boot, empty, another file system).
    Unknown,
}

pub(super) fn mount(slice: &Slice) -> Mount {
    if ext4::looks_like(slice) {
        return match ext4::Ext4Fs::mount(slice) {
            Ok(fs) => Mount::Mounted(Box::new(fs)),
            Err(reason) => Mount::Broken {
                kind: "ext4",
                reason,
            },
        };
    }
    if fat::looks_like(slice) {
        return match fat::FatFs::mount(slice) {
            Ok(fs) => Mount::Mounted(Box::new(fs)),
            Err(reason) => Mount::Broken {
                kind: "vfat",
                reason,
            },
        };
    }
    Mount::Unknown
}

/// `path` made absolute and lexically clean: no `.`, no `..` past the
/// root, no doubled or trailing slashes. Boot loaders resolve entry paths
/// this way, against the root of the file system that holds the entry.
pub(super) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The directory part of a normalized path (`/` for `/vmlinuz`).
pub(super) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => path.get(..i).unwrap_or("/"),
    }
}

/// `target` (a link's contents, or a relative path in a config file)
/// taken from the directory `dir`.
pub(super) fn join(dir: &str, target: &str) -> String {
    if target.starts_with('/') {
        normalize(target)
    } else {
        normalize(&format!("{dir}/{target}"))
    }
}

/// Where a name leads, link by link.
pub(super) enum Resolved {
    /// The chain walked (`/vmlinuz`, `/boot/vmlinuz-6.1`); the last is
    /// what the name is, not a link.
    Found(Vec<String>),
    /// The chain walked; its last element does not exist.
    Missing(Vec<String>),
}

/// Follows `path` link by link, at most [`MAX_LINKS`] links. Links in the
/// directories on the way are left to the file system, which bounds them
/// too.
pub(super) fn resolve(fs: &dyn Fs, path: &str) -> Result<Resolved, FileError> {
    let mut current = normalize(path);
    let mut chain = vec![current.clone()];
    for _ in 0..=MAX_LINKS {
        match fs.read_link(&current) {
            Ok(None) => return Ok(Resolved::Found(chain)),
            Ok(Some(target)) => {
                current = join(parent(&current), &target);
                chain.push(current.clone());
            }
            Err(FileError::NotFound(_)) => return Ok(Resolved::Missing(chain)),
            Err(e) => return Err(e),
        }
    }
    Err(FileError::Loop(normalize(path)))
}

/// A zeroed buffer for a file of `size` bytes, or the error naming `path`
/// when that is more than `limit` (the caller's bound for `what`).
pub fn buffer_for(
    path: &str,
    what: &'static str,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, FileError> {
    let too_large = || FileError::TooLarge {
        path: path.into(),
        what,
        size,
        limit,
    };
    if size > limit {
        return Err(too_large());
    }
    let size = usize::try_from(size).map_err(|_| too_large())?;
    Ok(vec![0u8; size])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_lexically() {
        assert_eq!(normalize("boot//vmlinuz-6.1/"), "/boot/vmlinuz-6.1");
        assert_eq!(normalize("/../../etc/./x"), "/etc/x");
        assert_eq!(normalize(""), "/");
        assert_eq!(parent("/vmlinuz"), "/");
        assert_eq!(parent("/boot/vmlinuz"), "/boot");
        assert_eq!(join("/", "boot/vmlinuz-6.1"), "/boot/vmlinuz-6.1");
        assert_eq!(join("/boot", "vmlinuz-6.1"), "/boot/vmlinuz-6.1");
        assert_eq!(join("/boot", "/vmlinuz-6.1"), "/vmlinuz-6.1");
        assert_eq!(join("/boot/extlinux", "../vmlinuz"), "/boot/vmlinuz");
    }
}
