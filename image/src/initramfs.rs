//! The two initramfs images: the host's (our init and the VMM) and the
//! example guest's (busybox and a greeting script).

use std::io::Write;

use flate2::{Compression, GzBuilder};

use crate::cpio::{write_archive, CpioError, Entry};

/// Why an initramfs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error("gzip: {0}")]
    Gzip(#[source] std::io::Error),
}

/// PID 1 of the example guest.
pub const EXAMPLE_GUEST_INIT: &str = include_str!("../assets/example-init.sh");

/// Directories init expects to mount things on; they must exist before any
/// filesystem is mounted because the initramfs is the only writable root.
const HOST_DIRS: [&str; 8] = ["bin", "data", "dev", "mnt", "proc", "run", "sys", "tmp"];

/// `busybox --install -s` puts its links in all four of these.
const GUEST_DIRS: [&str; 9] = [
    "bin", "dev", "proc", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin",
];

/// The console node lets the kernel give PID 1 its stdin/stdout/stderr
/// before anything has mounted devtmpfs.
fn console() -> Entry<'static> {
    Entry::char_device("dev/console", 0o600, 5, 1)
}

/// Where init looks for the config signing key (init's
/// `config_source::signed::PUBKEY_PATH`, without the leading `/`).
pub const CONFIG_PUBKEY: &str = "etc/hv/config.pub";

/// Host initramfs: `/init`, `/bin/vmm`, mount points and `/dev/console`,
/// and the config signing key when there is one.
pub fn host(
    init: &[u8],
    vmm: &[u8],
    config_pubkey: Option<&[u8]>,
    mtime: u32,
) -> Result<Vec<u8>, InitramfsError> {
    let mut entries: Vec<Entry<'_>> = HOST_DIRS.iter().map(|d| Entry::dir(d)).collect();
    entries.push(console());
    entries.push(Entry::file("init", 0o755, init));
    entries.push(Entry::file("bin/vmm", 0o755, vmm));
    if let Some(key) = config_pubkey {
        entries.push(Entry::dir("etc"));
        entries.push(Entry::dir("etc/hv"));
        entries.push(Entry::file(CONFIG_PUBKEY, 0o644, key));
    }
    gzip(&write_archive(&entries, mtime)?)
}

/// Example guest initramfs: `/bin/busybox` and the `/init` script.
pub fn example_guest(busybox: &[u8], mtime: u32) -> Result<Vec<u8>, InitramfsError> {
    let mut entries: Vec<Entry<'_>> = GUEST_DIRS.iter().map(|d| Entry::dir(d)).collect();
    entries.push(console());
    entries.push(Entry::file("init", 0o755, EXAMPLE_GUEST_INIT.as_bytes()));
    entries.push(Entry::file("bin/busybox", 0o755, busybox));
    gzip(&write_archive(&entries, mtime)?)
}

/// gzip with no file name and a zero header mtime, so the compressed bytes
/// depend on the archive alone.
fn gzip(data: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(data.len() / 2), Compression::best());
    encoder
        .write_all(data)
        .and_then(|_| encoder.finish())
        .map_err(InitramfsError::Gzip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::read_archive;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn host_layout_matches_contract() {
        let image = host(b"INIT", b"VMM", None, 99).unwrap();
        assert_eq!(&image[..2], &[0x1f, 0x8b], "gzip magic");
        let members = read_archive(&gunzip(&image)).unwrap();
        let listing: Vec<(&str, u32)> = members.iter().map(|m| (m.name.as_str(), m.mode)).collect();
        assert_eq!(
            listing,
            [
                ("bin", 0o040755),
                ("bin/vmm", 0o100755),
                ("data", 0o040755),
                ("dev", 0o040755),
                ("dev/console", 0o020600),
                ("init", 0o100755),
                ("mnt", 0o040755),
                ("proc", 0o040755),
                ("run", 0o040755),
                ("sys", 0o040755),
                ("tmp", 0o040755),
            ]
        );
        assert_eq!(members[1].data, b"VMM");
        assert_eq!(members[4].rdev, (5, 1));
        assert_eq!(members[5].data, b"INIT");
        assert!(members.iter().all(|m| m.mtime == 99));
    }

    #[test]
    fn a_config_key_is_baked_at_its_path() {
        let image = host(b"INIT", b"VMM", Some(b"KEY"), 0).unwrap();
        let members = read_archive(&gunzip(&image)).unwrap();
        let key = members.iter().find(|m| m.name == CONFIG_PUBKEY).unwrap();
        assert_eq!((key.mode, key.data.as_slice()), (0o100644, &b"KEY"[..]));
        assert!(members
            .iter()
            .any(|m| m.name == "etc/hv" && m.mode == 0o040755));
    }

    #[test]
    fn example_guest_has_busybox_and_script() {
        let members = read_archive(&gunzip(&example_guest(b"BB", 0).unwrap())).unwrap();
        let init = members.iter().find(|m| m.name == "init").unwrap();
        assert_eq!(init.mode, 0o100755);
        assert!(init.data.starts_with(b"#!/bin/busybox sh\n"));
        let text = String::from_utf8(init.data.clone()).unwrap();
        assert!(text.contains("Hello from the example guest"));
        let busybox = members.iter().find(|m| m.name == "bin/busybox").unwrap();
        assert_eq!(
            (busybox.mode, busybox.data.as_slice()),
            (0o100755, &b"BB"[..])
        );
        assert!(members.iter().any(|m| m.name == "dev/console"));
    }

    #[test]
    fn deterministic() {
        assert_eq!(
            host(b"a", b"b", None, 5).unwrap(),
            host(b"a", b"b", None, 5).unwrap()
        );
        assert_ne!(
            host(b"a", b"b", None, 5).unwrap(),
            host(b"a", b"b", None, 6).unwrap()
        );
    }
}
