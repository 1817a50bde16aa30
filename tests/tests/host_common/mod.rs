//! Helpers shared by the `host_*` tests: editing the config partition of an
//! image copy with mtools, making guest initramfs and data disks, and
//! waiting for console lines that come in any order.

#![allow(dead_code)] // each test binary uses its own subset

pub mod mtools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hv_tests::{Error, Qemu};
use regex::Regex;

/// The HVCONFIG partition (partition 2) of an image file.
pub struct ConfigPartition {
    image: PathBuf,
    offset: u64,
}

impl ConfigPartition {
    /// Finds partition 2 in the image's GPT, as `sgdisk -p` would show it.
    pub fn of(image: &Path) -> Self {
        let offset = gpt_partition_offset(image, 2);
        ConfigPartition {
            image: image.to_path_buf(),
            offset,
        }
    }

    fn image_args(&self) -> [String; 2] {
        [
            "-i".into(),
            format!("{}@@{}", self.image.display(), self.offset),
        ]
    }

    /// Writes `text` to `path` (relative to the partition root), replacing
    /// any file there.
    pub fn write(&self, path: &str, text: &str) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("file");
        std::fs::write(&file, text).expect("writing a temp file");
        self.copy(&file, path);
    }

    /// Copies a host file onto the partition.
    pub fn copy(&self, from: &Path, to: &str) {
        let [i, image] = self.image_args();
        let from = from.display().to_string();
        mtools::run(
            "mcopy",
            &[&i, &image, "-o", "-D", "o", &from, &format!("::/{to}")],
        );
    }

    pub fn mkdir(&self, path: &str) {
        let [i, image] = self.image_args();
        mtools::run("mmd", &[&i, &image, &format!("::/{path}")]);
    }

    pub fn delete(&self, path: &str) {
        let [i, image] = self.image_args();
        mtools::run("mdel", &[&i, &image, &format!("::/{path}")]);
    }

    /// Every file and directory on the partition, one path a line.
    pub fn list(&self) -> String {
        let [i, image] = self.image_args();
        mtools::run("mdir", &[&i, &image, "-/", "-b", "::/"])
    }

    pub fn read(&self, path: &str) -> String {
        let [i, image] = self.image_args();
        mtools::run("mtype", &[&i, &image, &format!("::/{path}")])
    }
}

/// Byte offset of GPT partition `number` (1-based): the primary header at
/// LBA 1 says where the entry array is; an entry's first LBA is at byte 32.
fn gpt_partition_offset(image: &Path, number: u64) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    const SECTOR: u64 = 512;
    let mut file = std::fs::File::open(image).expect("opening the image");
    let mut header = [0u8; 92];
    file.seek(SeekFrom::Start(SECTOR)).expect("seek");
    file.read_exact(&mut header)
        .expect("reading the GPT header");
    assert_eq!(&header[..8], b"EFI PART", "{}: no GPT", image.display());
    let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let le32 = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let entries_lba = le64(&header[72..80]);
    let entry_size = le32(&header[84..88]);
    let mut entry = [0u8; 48];
    file.seek(SeekFrom::Start(
        entries_lba * SECTOR + (number - 1) * entry_size,
    ))
    .expect("seek");
    file.read_exact(&mut entry).expect("reading a GPT entry");
    let first_lba = le64(&entry[32..40]);
    assert!(first_lba > 0, "{}: no partition {number}", image.display());
    first_lba * SECTOR
}

/// Makes `image` a `size_mib` ext4 file system labelled `label` holding the
/// files of `dir` (mke2fs -d: no mounting needed).
pub fn make_ext4(image: &Path, label: &str, dir: &Path, size_mib: u32) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(dir)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .output()
        .expect("running mkfs.ext4 (package e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The contents of `path` inside the ext4 file system `image` (debugfs).
pub fn debugfs_cat(image: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(image)
        .output()
        .expect("running debugfs (package e2fsprogs)");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "debugfs cat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Waits until each pattern has matched a console line, in any order,
/// within one overall `timeout` (nominal).
pub fn wait_each(vm: &mut Qemu, patterns: &[&str], timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + hv_tests::scaled(timeout);
    let mut pending: Vec<(&str, Regex)> = patterns
        .iter()
        .map(|p| (*p, Regex::new(p).expect("valid pattern")))
        .collect();
    while !pending.is_empty() {
        let any = pending
            .iter()
            .map(|(p, _)| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        // wait_for scales its timeout again; undo that for the remainder.
        let left = deadline.saturating_duration_since(Instant::now());
        let left = Duration::from_secs_f64(left.as_secs_f64() / hv_tests::scale());
        let line = vm.wait_for(&any, left)?;
        pending.retain(|(_, regex)| !regex.is_match(&line));
    }
    Ok(())
}
