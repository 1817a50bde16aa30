//! Deterministic newc cpio archives, the format the kernel unpacks into its
//! initial rootfs.

use std::io::Write;

use cpio::newc::{self, ModeFileType};

/// What a path in the archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
    CharDevice { major: u32, minor: u32 },
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

    pub fn char_device(path: &'a str, permissions: u32, major: u32, minor: u32) -> Self {
        Entry {
            path,
            permissions,
            node: Node::CharDevice { major, minor },
        }
    }
}

/// Writes `entries` as a newc archive with every file owned by root and
/// stamped with `mtime`. Entries are sorted by path components so a
/// directory always precedes its contents (the kernel does not create missing
/// parents) and the order never depends on the caller; inode numbers follow
/// that order.
pub fn write_archive(entries: &[Entry<'_>], mtime: u32) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&Entry<'_>> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    validate(&sorted)?;

    let mut out = Vec::new();
    for (index, entry) in sorted.iter().enumerate() {
        let (file_type, nlink, data, rdev): (_, _, &[u8], _) = match entry.node {
            Node::Dir => (ModeFileType::Directory, 2, &[], (0, 0)),
            Node::File(data) => (ModeFileType::Regular, 1, data, (0, 0)),
            Node::CharDevice { major, minor } => (ModeFileType::Char, 1, &[], (major, minor)),
        };
        let size = u32::try_from(data.len())
            .map_err(|_| format!("{}: too large for a cpio archive (over 4 GiB)", entry.path))?;
        let mut writer = newc::Builder::new(entry.path)
            .ino(index as u32 + 1)
            .mode(entry.permissions & 0o7777)
            .set_mode_file_type(file_type)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(mtime)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut out, size);
        writer.write_all(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    newc::trailer(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn validate(sorted: &[&Entry<'_>]) -> Result<(), String> {
    for (i, entry) in sorted.iter().enumerate() {
        let path = entry.path;
        if path.is_empty()
            || path.starts_with('/')
            || path.ends_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("invalid archive path {path:?}"));
        }
        if i > 0 && sorted[i - 1].path == path {
            return Err(format!("duplicate archive path {path:?}"));
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            let has_parent = sorted[..i]
                .iter()
                .any(|e| e.path == parent && e.node == Node::Dir);
            if !has_parent {
                return Err(format!(
                    "archive path {path:?} has no parent directory entry"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Read;

    /// An archive member as read back with the `cpio` crate's reader.
    #[derive(Debug)]
    pub struct ReadBack {
        pub name: String,
        pub ino: u32,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub mtime: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    pub fn read_archive(mut archive: &[u8]) -> Vec<ReadBack> {
        let mut members = Vec::new();
        loop {
            let mut reader = newc::Reader::new(archive).expect("valid newc header");
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry();
            let mut member = ReadBack {
                name: e.name().to_string(),
                ino: e.ino(),
                mode: e.mode(),
                uid: e.uid(),
                gid: e.gid(),
                mtime: e.mtime(),
                rdev: (e.rdev_major(), e.rdev_minor()),
                data: Vec::new(),
            };
            reader.read_to_end(&mut member.data).unwrap();
            members.push(member);
            archive = reader.finish().unwrap();
        }
        members
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

        let members = read_archive(&archive);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["bin", "bin/vmm", "dev", "dev/console", "init"]);
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.ino, i as u32 + 1);
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
        let members = read_archive(&write_archive(&entries, 0).unwrap());
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
