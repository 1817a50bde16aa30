//! Disk images built the way distributions build them, with the Debian
//! tools (e2fsprogs, dosfstools, mtools, fdisk's sfdisk, coreutils'
//! truncate) on plain files: no root, no loop devices. A missing tool
//! fails the test and names the package.
// Test images are a few MiB and a few partitions: the casts are meant.
#![allow(clippy::cast_possible_truncation)]

mod fuzz;
mod layouts;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{find_boot, BootFiles, Error, Limits, ReadAt};

pub const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const ROOT_UUID: &str = "6a0bcd3e-8c5f-4a7e-9b1d-2f4e6c8a0b1c";
pub const BOOT_UUID: &str = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9";

/// A scratch directory, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hv-boot-disk-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tool`; a tool that is not installed fails the test loudly.
pub fn run(tool: &str, package: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{tool} is not installed: the boot_disk tests build disk images with it \
             (apt-get install {package})"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    };
    if let Some(input) = stdin {
        // A tool that fails early closes its input: its status says why.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree of files and symbolic links to put in a file system.
#[derive(Default, Clone)]
pub struct Tree {
    files: Vec<(String, Vec<u8>)>,
    links: Vec<(String, String)>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files.push((path.into(), contents.as_ref().to_vec()));
        self
    }

    pub fn link(mut self, path: &str, target: &str) -> Self {
        self.links.push((path.into(), target.into()));
        self
    }

    fn write_to(&self, root: &Path) {
        std::fs::create_dir_all(root).unwrap();
        for (path, contents) in &self.files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, contents).unwrap();
        }
        for (path, target) in &self.links {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
        }
    }
}

/// An ext4 file system of `mib` MiB holding `tree`, with UUID `uuid`.
pub fn ext4(tree: &Tree, mib: u32, uuid: &str) -> Vec<u8> {
    ext4_with(tree, mib, uuid, &[])
}

/// The same, with more mkfs.ext4 options.
pub fn ext4_with(tree: &Tree, mib: u32, uuid: &str, options: &[&str]) -> Vec<u8> {
    let s = Scratch::new();
    let root = s.path("root");
    tree.write_to(&root);
    let img = s.path("fs.img");
    let img_s = img.to_str().unwrap();
    run(
        "truncate",
        "coreutils",
        &["-s", &format!("{mib}M"), img_s],
        None,
    );
    let mut args = vec!["-q", "-F", "-U", uuid, "-d", root.to_str().unwrap()];
    args.extend_from_slice(options);
    args.push(img_s);
    run("mkfs.ext4", "e2fsprogs", &args, None);
    std::fs::read(img).unwrap()
}

/// A FAT file system of `mib` MiB holding `tree` (no links on FAT);
/// `fat_bits` 12, 16 or 32.
pub fn fat(tree: &Tree, mib: u32, fat_bits: u32) -> Vec<u8> {
    assert!(tree.links.is_empty(), "FAT has no links");
    let s = Scratch::new();
    let img = s.path("fs.img");
    let img_s = img.to_str().unwrap();
    run(
        "truncate",
        "coreutils",
        &["-s", &format!("{mib}M"), img_s],
        None,
    );
    let bits = fat_bits.to_string();
    run(
        "mkfs.vfat",
        "dosfstools",
        // One sector a cluster: small images still have the clusters
        // FAT16 and FAT32 need.
        &["-F", &bits, "-s", "1", "-i", "12AB34CD", "-n", "ESP", img_s],
        None,
    );
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in &tree.files {
        let mut dir = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir = format!("{dir}/{part}");
            if !dirs.contains(&dir) {
                run("mmd", "mtools", &["-i", img_s, &format!("::{dir}")], None);
                dirs.push(dir.clone());
            }
        }
    }
    for (i, (path, contents)) in tree.files.iter().enumerate() {
        let src = s.path(&format!("src{i}"));
        std::fs::write(&src, contents).unwrap();
        run(
            "mcopy",
            "mtools",
            &["-i", img_s, src.to_str().unwrap(), &format!("::{path}")],
            None,
        );
    }
    std::fs::read(img).unwrap()
}

/// A disk with a partition table (`gpt` or `dos`, made by sfdisk)
/// holding `parts` (a type for sfdisk, the partition's contents), each
/// starting on a MiB.
pub fn disk(label: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut script = format!("label: {label}\n");
    if label == "dos" {
        script.push_str("label-id: 0x1234abcd\n");
    }
    let (offsets, total) = layout(parts);
    for (&(kind, bytes), (at, len)) in parts.iter().zip(&offsets) {
        let _ = bytes;
        script.push_str(&format!(
            "start={}, size={}, type={kind}\n",
            at / 512,
            len / 512
        ));
    }
    let s = Scratch::new();
    let img = s.path("disk.img");
    let img_s = img.to_str().unwrap();
    run(
        "truncate",
        "coreutils",
        &["-s", &total.to_string(), img_s],
        None,
    );
    run(
        "sfdisk",
        "fdisk",
        &["-q", "--no-reread", "--no-tell-kernel", img_s],
        Some(&script),
    );
    fill(std::fs::read(img).unwrap(), parts, &offsets)
}

/// A GPT disk with 4096-byte sectors. sfdisk (util-linux 2.38) makes
/// those only on a device with such sectors, so gptman writes it.
pub fn disk_4k(parts: &[(&str, &[u8])]) -> Vec<u8> {
    const SECTOR: u64 = 4096;
    let (offsets, total) = layout(parts);
    let mut cur = std::io::Cursor::new(vec![0u8; total as usize]);
    let mut gpt = gptman::GPT::new_from(&mut cur, SECTOR, [7; 16]).unwrap();
    for (i, (&(kind, _), (at, len))) in parts.iter().zip(&offsets).enumerate() {
        gpt[i as u32 + 1] = gptman::GPTPartitionEntry {
            partition_type_guid: guid_bytes(kind),
            unique_partition_guid: [i as u8 + 1; 16],
            starting_lba: at / SECTOR,
            ending_lba: (at + len) / SECTOR - 1,
            attribute_bits: 0,
            partition_name: "part".into(),
        };
    }
    gptman::GPT::write_protective_mbr_into(&mut cur, SECTOR).unwrap();
    gpt.write_into(&mut cur).unwrap();
    fill(cur.into_inner(), parts, &offsets)
}

/// Where each partition goes (offset, length, both whole MiBs) and the
/// disk's size, with a MiB at each end for the tables.
fn layout(parts: &[(&str, &[u8])]) -> (Vec<(u64, u64)>, u64) {
    const MIB: u64 = 1 << 20;
    let mut at = MIB;
    let mut offsets = Vec::new();
    for &(_, bytes) in parts {
        let len = (<[u8]>::len(bytes) as u64).div_ceil(MIB) * MIB;
        offsets.push((at, len));
        at += len;
    }
    (offsets, at + MIB)
}

fn fill(mut d: Vec<u8>, parts: &[(&str, &[u8])], offsets: &[(u64, u64)]) -> Vec<u8> {
    for (&(_, bytes), &(at, _)) in parts.iter().zip(offsets) {
        let at = at as usize;
        d[at..at + <[u8]>::len(bytes)].copy_from_slice(bytes);
    }
    d
}

/// A GUID as text to its bytes on disk (first three fields little-endian).
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// `find_boot` with the default limits and 64 MiB for initrds.
pub fn boot(d: Vec<u8>) -> Result<BootFiles, Error> {
    boot_with(d, &Limits::new(64 << 20))
}

pub fn boot_with(d: Vec<u8>, limits: &Limits) -> Result<BootFiles, Error> {
    let disk: Rc<dyn ReadAt> = Rc::new(d);
    find_boot(disk, limits)
}

/// `bytes` padded with zeros to a multiple of 4, as initrds are joined.
pub fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

/// A root file system as Debian's cloud images have it.
pub fn debian_root(version: &str) -> Tree {
    Tree::new()
        .file("/etc/fstab", "UUID=x / ext4 defaults 0 1\n")
        .file(
            &format!("/boot/vmlinuz-{version}"),
            format!("kernel {version}"),
        )
        .file(
            &format!("/boot/initrd.img-{version}"),
            format!("initrd {version}"),
        )
        .file("/boot/vmlinuz-6.1.0-9-cloud-amd64", "old kernel")
        .link("/vmlinuz", &format!("boot/vmlinuz-{version}"))
        .link("/initrd.img", &format!("boot/initrd.img-{version}"))
        .link("/vmlinuz.old", "boot/vmlinuz-6.1.0-9-cloud-amd64")
}
