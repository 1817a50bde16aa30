//! Seeded random mutation of valid disks: bytes flipped in the partition
//! table, the FAT and the ext4 metadata (superblock, group descriptors,
//! bitmaps, inode table, directories), sometimes the disk cut short.
//! Every case must end in `Ok` or `Err`, never a panic, and within a
//! time bound. The ext4 file systems are made without metadata
//! checksums, so that corruption reaches the parsing behind them, and
//! some cases put the GPT's CRCs right after mutating it, so that
//! gptman takes the table in.
//!
//! `HV_FUZZ_SEED` (decimal or `0x` hex) and `HV_FUZZ_ITERS` as for the
//! other fuzz tests; a failure prints the pair that reproduces it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::*;

const DEFAULT_SEED: u64 = 0x626f_6f74_6469_736b;
const DEFAULT_ITERS: u64 = 300;
/// One case, in a debug build on a loaded machine.
const CASE_BOUND: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A disk to mutate and the byte ranges worth mutating: the partition
/// tables, the start of each file system (boot sector, FATs and root
/// directory; superblock, group descriptors, bitmaps, inode table).
struct Seed {
    disk: Vec<u8>,
    regions: Vec<std::ops::Range<usize>>,
}

/// A GPT disk: an ESP (FAT12) with loader entries, a Debian root.
fn gpt_seed() -> Seed {
    let esp = fat(
        &Tree::new()
            .file(
                "/loader/entries/a-6.1.conf",
                "version 6.1\nlinux /k61\ninitrd /i61\n",
            )
            .file(
                "/loader/entries/a-6.2.conf",
                "version 6.2\nlinux /k62\noptions ro\n",
            )
            .file("/k61", "kernel 6.1")
            .file("/i61", "initrd 6.1")
            .file("/k62", vec![0x4b; 3000]),
        2,
        12,
    );
    let root = ext4_with(
        &debian_root("6.1.0-28-cloud-amd64"),
        8,
        ROOT_UUID,
        &["-O", "^metadata_csum"],
    );
    let disk = disk("gpt", &[(ESP, &esp), (LINUX, &root)]);
    // The ESP at 1 MiB (2 MiB), the root at 3 MiB; the backup GPT at the end.
    let regions = vec![
        0..20 << 10,
        MIB..MIB + (64 << 10),
        3 * MIB..3 * MIB + MIB,
        disk.len() - (20 << 10)..disk.len(),
    ];
    Seed { disk, regions }
}

/// An MBR disk: a FAT32 /boot with extlinux.conf, a root whose links
/// point into it.
fn mbr_seed() -> Seed {
    let boot_fs = fat(
        &Tree::new()
            .file(
                "/extlinux/extlinux.conf",
                "default l\nlabel l\nkernel /vmlinuz-6.1\ninitrd /initrd-6.1\nappend ro\n",
            )
            .file("/vmlinuz-6.1", vec![0x6b; 5000])
            .file("/initrd-6.1", "initrd"),
        40,
        32,
    );
    let root = Tree::new()
        .file("/etc/fstab", "")
        .link("/vmlinuz", "boot/vmlinuz-6.1")
        .link("/initrd.img", "boot/initrd-6.1");
    let root = ext4_with(&root, 8, ROOT_UUID, &["-O", "^metadata_csum"]);
    let disk = disk("dos", &[("c", &boot_fs), ("83", &root)]);
    let regions = vec![0..512, MIB..MIB + (704 << 10), 41 * MIB..41 * MIB + MIB];
    Seed { disk, regions }
}

/// Recomputes the primary GPT's entry array and header CRCs, if the
/// header still says where a small enough array is.
fn fix_gpt_crcs(d: &mut [u8]) {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let h = 512;
    if d.len() < h + 92 || &d[h..h + 8] != b"EFI PART" {
        return;
    }
    let le32 = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let lba = u64::from_le_bytes(d[h + 72..h + 80].try_into().unwrap());
    let bytes = u64::from(le32(d, h + 80)) * u64::from(le32(d, h + 84));
    let start = lba.saturating_mul(512);
    if bytes <= 64 << 10 && start.saturating_add(bytes) <= d.len() as u64 {
        let (start, bytes) = (start as usize, bytes as usize);
        let array = crc.checksum(&d[start..start + bytes]);
        d[h + 88..h + 92].copy_from_slice(&array.to_le_bytes());
    }
    d[h + 16..h + 20].fill(0);
    let size = (le32(d, h + 12) as usize).clamp(92, 512);
    let header = crc.checksum(&d[h..h + size]);
    d[h + 16..h + 20].copy_from_slice(&header.to_le_bytes());
}

#[test]
fn mutated_disks_never_panic() {
    let seed = env_number("HV_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let iters = env_number("HV_FUZZ_ITERS").unwrap_or(DEFAULT_ITERS);
    let seeds = [gpt_seed(), mbr_seed()];
    for s in &seeds {
        assert!(boot(s.disk.clone()).is_ok(), "the unmutated disk must boot");
    }
    let limits = Limits {
        kernel: 1 << 20,
        ..Limits::new(1 << 20)
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut ok, mut err) = (0u64, 0u64);
    let started = Instant::now();
    for case in 0..iters {
        let base = &seeds[rng.usize(..seeds.len())];
        let mut d = base.disk.clone();
        for _ in 0..rng.usize(1..=24) {
            let region = &base.regions[rng.usize(..base.regions.len())];
            let at = rng.usize(region.clone());
            d[at] = match rng.u8(..4) {
                0 => 0,
                1 => 0xff,
                2 => d[at] ^ (1 << rng.u8(..8)),
                _ => rng.u8(..),
            };
        }
        if rng.u8(..4) == 0 {
            fix_gpt_crcs(&mut d);
        }
        if rng.u8(..16) == 0 {
            d.truncate(rng.usize(..d.len()));
        }
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| boot_with(d, &limits)));
        let took = t.elapsed();
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
            Err(_) => panic!(
                "fuzz boot_disk: case {case} panicked (HV_FUZZ_SEED={seed:#x} HV_FUZZ_ITERS={} \
                 reproduces it)",
                case + 1
            ),
        }
        assert!(
            took < CASE_BOUND,
            "fuzz boot_disk: case {case} took {took:?} (HV_FUZZ_SEED={seed:#x} \
             HV_FUZZ_ITERS={} reproduces it)",
            case + 1
        );
    }
    eprintln!(
        "fuzz boot_disk: {iters} cases from seed {seed:#x} in {:?}: {ok} booted, {err} refused",
        started.elapsed()
    );
}
