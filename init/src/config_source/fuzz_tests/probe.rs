//! The superblock probes (`probe_ext`, `parse_fat_bpb`, the FAT root
//! directory's label, and `probe_fs` on a file) on arbitrary 4 KiB device
//! heads: valid FAT16, FAT32 and ext images with fields set to boundary
//! and random values, byte-level mutations, and raw random bytes. A child
//! module of `probe`, so it reaches the private parsers.
//!
//! Invariants: no panic; an ext result has the magic, the type its
//! feature bits say, a label of at most 16 bytes without NUL or trailing
//! padding and a UUID that is the superblock's bytes; a FAT boot sector is
//! accepted only with a signature, a jump, a power-of-two sector size in
//! 512..=4096, a power-of-two cluster size, reserved sectors, one or two
//! FATs and a FAT size; FAT labels are at most 11 bytes and never
//! "NO NAME"; `probe_fs` agrees with the parsers.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{
    fat_volume_label, parse_fat_bpb, probe_ext, probe_fs, FsInfo, FsType, EXT_COMPAT_HAS_JOURNAL,
    EXT_MAGIC, EXT_SB, FAT_ATTR_VOLUME_ID, FAT_NO_NAME, PROBE_LEN, SECTOR,
};
use crate::config_source::fuzz_tests::{mutate, run, Rng};

const EXT4_ONLY: u32 = 0x40 | 0x80 | 0x200 | 0x8000;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// A FAT16 boot sector whose root directory (one sector at 1 KiB) holds
/// a volume label entry, inside the 4 KiB the probe reads.
fn fat16() -> Vec<u8> {
    let mut b = vec![0u8; PROBE_LEN];
    put(&mut b, 0, &[0xEB, 0x3C, 0x90]);
    put(&mut b, 3, b"mkfs.fat");
    put(&mut b, 11, &512u16.to_le_bytes());
    b[13] = 4;
    put(&mut b, 14, &1u16.to_le_bytes());
    b[16] = 1;
    put(&mut b, 17, &16u16.to_le_bytes());
    put(&mut b, 19, &8192u16.to_le_bytes());
    b[21] = 0xF8;
    put(&mut b, 22, &1u16.to_le_bytes());
    b[38] = 0x29;
    put(&mut b, 39, &0x1234_abcdu32.to_le_bytes());
    put(&mut b, 43, b"NO NAME    ");
    put(&mut b, 54, b"FAT16   ");
    put(&mut b, 510, &[0x55, 0xAA]);
    put(&mut b, 1024, b"HVCONFIG   ");
    b[1024 + 11] = FAT_ATTR_VOLUME_ID;
    b
}

fn fat32() -> Vec<u8> {
    let mut b = vec![0u8; PROBE_LEN];
    put(&mut b, 0, &[0xEB, 0x58, 0x90]);
    put(&mut b, 11, &512u16.to_le_bytes());
    b[13] = 1;
    put(&mut b, 14, &2u16.to_le_bytes());
    b[16] = 1;
    b[21] = 0xF8;
    put(&mut b, 32, &80_000u32.to_le_bytes());
    put(&mut b, 36, &1u32.to_le_bytes());
    // Root cluster 2: the first data sector, sector 3 (1.5 KiB).
    put(&mut b, 44, &2u32.to_le_bytes());
    b[66] = 0x29;
    put(&mut b, 67, &0xdead_beefu32.to_le_bytes());
    put(&mut b, 71, b"HVCONFIG   ");
    put(&mut b, 82, b"FAT32   ");
    put(&mut b, 510, &[0x55, 0xAA]);
    put(&mut b, 1536, b"OTHER      ");
    b[1536 + 11] = FAT_ATTR_VOLUME_ID;
    b
}

fn ext() -> Vec<u8> {
    let mut b = vec![0u8; PROBE_LEN];
    let sb = EXT_SB;
    put(&mut b, sb + 56, &EXT_MAGIC.to_le_bytes());
    put(&mut b, sb + 92, &EXT_COMPAT_HAS_JOURNAL.to_le_bytes());
    put(&mut b, sb + 96, &0x2c2u32.to_le_bytes());
    put(
        &mut b,
        sb + 104,
        &[
            0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ],
    );
    put(&mut b, sb + 120, b"guestdata");
    b
}

/// Offsets and widths of the fields the probes read.
const FIELDS: &[(usize, usize)] = &[
    (0, 1),
    (11, 2),
    (13, 1),
    (14, 2),
    (16, 1),
    (17, 2),
    (22, 2),
    (36, 4),
    (38, 1),
    (44, 4),
    (66, 1),
    (510, 2),
    (1024, 32),
    (1024 + 11, 1),
    (1536, 32),
    (1536 + 11, 1),
    (EXT_SB + 56, 2),
    (EXT_SB + 92, 4),
    (EXT_SB + 96, 4),
    (EXT_SB + 104, 16),
    (EXT_SB + 120, 16),
];

fn field_mutation(rng: &mut Rng, buf: &mut [u8]) {
    let (off, width) = rng.pick(FIELDS);
    let value: u64 = match rng.below(6) {
        0 => 0,
        1 => u64::MAX,
        2 => 1 << rng.below(64),
        3 => (1 << rng.below(64)) - 1,
        4 => u64::from(rng.pick(&[0x20u8, 0x00, 0xE5, 0x0F, 0x08, 0x29, 0x55, 0xAA, 0xEB])),
        _ => rng.next(),
    };
    let bytes = value.to_le_bytes();
    for i in 0..width {
        buf[off + i] = if width > 8 && rng.one_in(2) {
            rng.byte()
        } else {
            bytes[i % 8]
        };
    }
}

fn image(rng: &mut Rng) -> Vec<u8> {
    let mut buf = match rng.below(8) {
        0 => return rng.bytes(PROBE_LEN),
        1 | 2 => fat16(),
        3 | 4 => fat32(),
        _ => ext(),
    };
    for _ in 0..rng.below(4) {
        field_mutation(rng, &mut buf);
    }
    if rng.one_in(3) {
        mutate(
            rng,
            &mut buf,
            &[&[0x55, 0xAA], &[0xEF, 0x53], b"NO NAME", &[0; 32]],
        ); // Still a 4 KiB read: the bytes moved, the size did not.
        buf.resize(PROBE_LEN, 0);
    }
    buf
}

fn check_label(label: &str, max: usize, what: &str) {
    assert!(!label.is_empty(), "{what}: empty label");
    assert!(
        label.chars().count() <= max,
        "{what}: label {label:?} longer than {max}"
    );
    assert!(!label.ends_with([' ', '\0']), "{what}: padding left");
}

fn check_ext(head: &[u8], info: &FsInfo) {
    let sb = &head[EXT_SB..EXT_SB + 1024];
    assert_eq!(u16::from_le_bytes([sb[56], sb[57]]), EXT_MAGIC);
    let word = |off: usize| u32::from_le_bytes([sb[off], sb[off + 1], sb[off + 2], sb[off + 3]]);
    let expected = if word(96) & EXT4_ONLY != 0 {
        FsType::Ext4
    } else if word(92) & EXT_COMPAT_HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    assert_eq!(info.fstype, expected);
    if let Some(label) = &info.label {
        check_label(label, 16, "ext");
        assert!(!label.contains('\0'), "ext label {label:?} has a NUL");
    }
    let raw = &sb[104..120];
    match &info.uuid {
        None => assert!(raw.iter().all(|&b| b == 0), "UUID lost"),
        Some(uuid) => {
            assert_eq!(uuid.len(), 36, "{uuid}");
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(uuid.replace('-', ""), hex);
            for (i, c) in uuid.char_indices() {
                assert_eq!(c == '-', [8, 13, 18, 23].contains(&i), "{uuid}");
            }
        }
    }
}

fn check_fat(boot: &[u8]) {
    let Some(bpb) = parse_fat_bpb(boot) else {
        return;
    };
    assert_eq!(&boot[510..512], &[0x55, 0xAA]);
    assert!(matches!(boot[0], 0xEB | 0xE9));
    assert!([512, 1024, 2048, 4096].contains(&bpb.bytes_per_sector));
    assert!(bpb.sectors_per_cluster.is_power_of_two() && bpb.sectors_per_cluster <= 128);
    assert!((1..=0xFFFF).contains(&bpb.reserved_sectors));
    assert!((1..=2).contains(&bpb.fats));
    assert!(bpb.sectors_per_fat > 0 && bpb.sectors_per_fat <= u64::from(u32::MAX));
    assert!(bpb.root_entries <= 0xFFFF);
    let fat16_size = u16::from_le_bytes([boot[22], boot[23]]);
    assert_eq!(
        bpb.root_cluster.is_some(),
        fat16_size == 0 && bpb.root_entries == 0
    );
    if let Some(label) = &bpb.ebr_label {
        check_label(label, 11, "FAT boot record");
        assert_ne!(label, FAT_NO_NAME);
    }
}

fn check_dir(dir: &[u8]) {
    if let Some(label) = fat_volume_label(dir) {
        check_label(&label, 11, "FAT root directory");
        assert_ne!(label, FAT_NO_NAME);
    }
}

fn probe_case(rng: &mut Rng, file: &File) {
    let head = image(rng);
    if let Some(info) = probe_ext(&head) {
        check_ext(&head, &info);
    }
    check_fat(&head[..SECTOR]);
    check_dir(&head[1024..1024 + 1024]);
    check_dir(&head[rng.below(PROBE_LEN)..]);
    // Now and then the whole probe, on a file of that head (maybe cut short).
    if rng.one_in(8) {
        let len = if rng.one_in(4) {
            rng.below(PROBE_LEN)
        } else {
            PROBE_LEN
        };
        file.set_len(0).expect("truncate");
        file.write_all_at(&head[..len], 0).expect("write image");
        let info = probe_fs(file).expect("probe a regular file");
        let head = &head[..len];
        match info {
            Some(info) if info.fstype == FsType::Vfat => {
                assert!(probe_ext(head).is_none(), "ext wins over FAT");
                let bpb = parse_fat_bpb(&head[..SECTOR]).expect("FAT without a boot sector");
                if let Some(label) = &info.label {
                    check_label(label, 11, "FAT");
                }
                let serial = bpb
                    .serial
                    .map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF));
                assert_eq!(info.uuid, serial);
            }
            Some(info) => assert_eq!(Some(info), probe_ext(head)),
            None => {
                assert!(probe_ext(head).is_none());
                assert!(head.len() < SECTOR || parse_fat_bpb(&head[..SECTOR]).is_none());
            }
        }
    }
}

#[test]
fn fuzz_probe_superblocks() {
    let file = tempfile::tempfile().expect("scratch file");
    // The seeds themselves are what they say.
    for (image, fstype, label) in [
        (fat16(), FsType::Vfat, "HVCONFIG"),
        (fat32(), FsType::Vfat, "OTHER"),
        (ext(), FsType::Ext4, "guestdata"),
    ] {
        file.set_len(0).expect("truncate");
        file.write_all_at(&image, 0).expect("write");
        let info = probe_fs(&file).expect("probe").expect("a file system");
        assert_eq!((info.fstype, info.label.as_deref()), (fstype, Some(label)));
    }
    run("probe", 60_000, |rng| probe_case(rng, &file));
}
