//! Deterministic newc cpio archives, the format the kernel unpacks into its
//! initial rootfs, and a reader for checking them.

use std::io::{self, Read, Write};

use cpio::newc::{self, ModeFileType};

/// What a path in the archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
    /// A symbolic link to the given target.
    Symlink(&'a str),
    CharDevice {
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Relative path without a leading `/`, components separated by `/`.
    pub path: &'a str,
    /// Permission bits only; the file type comes from `node`.
    pub permissions: u32,
    pub node: Node<'a>,
}

impl<'a> Entry<'a> {
    pub fn dir(path: &'a str) -> Self {
        Entry {
            path,
            permissions: 0o755,
            node: Node::Dir,
        }
    }

    pub fn file(path: &'a str, permissions: u32, data: &'a [u8]) -> Self {
        Entry {
            path,
            permissions,
            node: Node::File(data),
        }
    }

    /// A symbolic link; links carry no permissions of their own (0777).
    pub fn symlink(path: &'a str, target: &'a str) -> Self {
        Entry {
            path,
            permissions: 0o777,
            node: Node::Symlink(target),
        }
    }

    pub fn char_device(path: &'a str, permissions: u32, major: u32, minor: u32) -> Self {
        Entry {
            path,
            permissions,
            node: Node::CharDevice { major, minor },
        }
    }
}

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("{path}: too large for a cpio archive (over 4 GiB)")]
    TooLarge { path: String },
    #[error("too many entries for a cpio archive")]
    TooManyEntries,
    #[error("invalid archive path {0:?}")]
    InvalidPath(String),
    #[error("duplicate archive path {0:?}")]
    DuplicatePath(String),
    #[error("archive path {0:?} has no parent directory entry")]
    NoParent(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes `entries` as a newc archive with every file owned by root and
/// stamped with `mtime`. Entries are sorted by path components so a
/// directory always precedes its contents (the kernel does not create missing
/// parents) and the order never depends on the caller; inode numbers follow
/// that order.
pub fn write_archive(entries: &[Entry<'_>], mtime: u32) -> Result<Vec<u8>, CpioError> {
    let mut sorted: Vec<&Entry<'_>> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    validate(&sorted)?;
    // Inode numbers are 32 bits.
    if u32::try_from(sorted.len()).is_err() {
        return Err(CpioError::TooManyEntries);
    }

    let mut out = Vec::new();
    for (ino, entry) in (1u32..).zip(&sorted) {
        let (file_type, nlink, data, rdev): (_, _, &[u8], _) = match entry.node {
            Node::Dir => (ModeFileType::Directory, 2, &[], (0, 0)),
            Node::File(data) => (ModeFileType::Regular, 1, data, (0, 0)),
            Node::Symlink(target) => (ModeFileType::Symlink, 1, target.as_bytes(), (0, 0)),
            Node::CharDevice { major, minor } => (ModeFileType::Char, 1, &[], (major, minor)),
        };
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: entry.path.into(),
        })?;
        let mut writer = newc::Builder::new(entry.path)
            .ino(ino)
            .mode(entry.permissions & 0o7777)
            .set_mode_file_type(file_type)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(mtime)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut out, size);
        writer.write_all(data)?;
        writer.finish()?;
    }
    newc::trailer(&mut out)?;
    Ok(out)
}

fn validate(sorted: &[&Entry<'_>]) -> Result<(), CpioError> {
    for (i, entry) in sorted.iter().enumerate() {
        let path = entry.path;
        if path.is_empty()
            || path.starts_with('/')
            || path.ends_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(CpioError::InvalidPath(path.into()));
        }
        if i > 0 && sorted[i - 1].path == path {
            return Err(CpioError::DuplicatePath(path.into()));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            let has_parent = sorted[..i]
                .iter()
                .any(|e| e.path == parent && e.node == Node::Dir);
            if !has_parent {
                return Err(CpioError::NoParent(path.into()));
            }
        }
    }
    Ok(())
}

/// An archive member as [`read_archive`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ino: u32,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    /// File contents, or a symbolic link's target.
    pub data: Vec<u8>,
}

/// Reads an uncompressed newc archive up to its trailer.
pub fn read_archive(mut archive: &[u8]) -> Result<Vec<Member>, CpioError> {
    let mut members = Vec::new();
    loop {
        let mut reader = newc::Reader::new(archive)?;
        if reader.entry().is_trailer() {
            return Ok(members);
        }
        let e = reader.entry();
        let mut member = Member {
            name: e.name().to_string(),
            ino: e.ino(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            mtime: e.mtime(),
            rdev: (e.rdev_major(), e.rdev_minor()),
            data: Vec::new(),
        };
        reader.read_to_end(&mut member.data)?;
        members.push(member);
        archive = reader.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(archive: &[u8]) -> Vec<Member> {
        read_archive(archive).unwrap()
    }

    #[test]
    fn round_trip_sorted_with_fixed_metadata() {
        let entries = [
            Entry::file("init", 0o755, b"#!init"),
            Entry::char_device("dev/console", 0o600, 5, 1),
            Entry::dir("dev"),
            Entry::dir("bin"),
            Entry::file("bin/vmm", 0o755, b"vmm-bytes"),
        ];
        let archive = write_archive(&entries, 1234).unwrap();
        // newc: 110-byte ASCII headers, 4-byte aligned, ends with the trailer.
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);

        let members = read_back(&archive);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/vmm", "dev", "dev/console", "init"]);
        for (ino, m) in (1..).zip(&members) {
            assert_eq!(m.ino, ino);
            assert_eq!((m.uid, m.gid, m.mtime), (0, 0, 1234));
        }
        assert_eq!(members[0].mode, 0o040755);
        assert_eq!(members[1].mode, 0o100755);
        assert_eq!(members[1].data, b"vmm-bytes");
        assert_eq!(members[3].mode, 0o020600);
        assert_eq!(members[3].rdev, (5, 1));
        assert_eq!(members[4].data, b"#!init");
    }

    #[test]
    fn symlinks_store_their_target() {
        let entries = [Entry::dir("bin"), Entry::symlink("bin/sh", "busybox")];
        let members = read_back(&write_archive(&entries, 0).unwrap());
        assert_eq!(members[1].name, "bin/sh");
        assert_eq!(members[1].mode, 0o120777);
        assert_eq!(members[1].data, b"busybox");
    }

    #[test]
    fn reading_garbage_is_an_error() {
        assert!(read_archive(b"not an archive").is_err());
        let archive = write_archive(&[Entry::dir("d")], 0).unwrap();
        assert!(read_archive(&archive[..archive.len() - 8]).is_err());
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a = [
            Entry::dir("a"),
            Entry::file("a/x", 0o644, b"1"),
            Entry::file("b", 0o644, b"2"),
        ];
        let b = [a[2].clone(), a[1].clone(), a[0].clone()];
        assert_eq!(write_archive(&a, 7).unwrap(), write_archive(&b, 7).unwrap());
    }

    #[test]
    fn directory_precedes_contents_even_with_sibling_prefix() {
        // "a-b" sorts between "a" and "a/x" as plain strings; by components
        // it must come after everything under "a".
        let entries = [
            Entry::file("a-b", 0o644, b""),
            Entry::dir("a"),
            Entry::file("a/x", 0o644, b""),
        ];
        let members = read_back(&write_archive(&entries, 0).unwrap());
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "a/x", "a-b"]);
    }

    #[test]
    fn rejects_bad_trees() {
        assert!(write_archive(&[Entry::file("/abs", 0o644, b"")], 0).is_err());
        assert!(write_archive(&[Entry::file("a/../b", 0o644, b"")], 0).is_err());
        assert!(write_archive(&[Entry::file("missing/parent", 0o644, b"")], 0).is_err());
        assert!(write_archive(&[Entry::dir("d"), Entry::dir("d")], 0).is_err());
    }
}
