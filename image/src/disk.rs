//! The GPT disk image: protective MBR, primary and backup GPT, and the
//! partition contents placed at 1 MiB boundaries.

use std::io::Cursor;

use gptman::{GPTPartitionEntry, GPT};

use crate::budget::MIB;

pub const SECTOR: u64 = 512;

/// EFI system partition, C12A7328-F81F-11D2-BA4B-00A0C93EC93B (on-disk order).
pub const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

/// Microsoft basic data, EBD0A0A2-B9E5-4433-87C0-68B6B72699C7: what every OS
/// expects a plain FAT data partition to be, so users can edit it anywhere.
pub const BASIC_DATA_TYPE: [u8; 16] = [
    0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7,
];

/// GPT partition attribute bit 2, "legacy BIOS bootable": the partition
/// syslinux's GPT-aware MBR code (gptmbr.bin) chain-loads.
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// The MBR's boot code area, in front of the disk signature and the
/// partition table.
pub const BOOT_CODE_SIZE: usize = 440;

/// The first partition starts at 1 MiB, the usual alignment for flash media.
const FIRST_PARTITION_OFFSET: u64 = MIB;

/// 128 entries of 128 bytes: the standard table size, which firmware and
/// partitioning tools expect.
const ENTRY_ARRAY_SECTORS: u64 = 128 * 128 / SECTOR;

pub struct Partition<'a> {
    pub name: &'a str,
    pub type_guid: [u8; 16],
    pub guid: [u8; 16],
    /// GPT attribute bits, e.g. [`LEGACY_BIOS_BOOTABLE`].
    pub attributes: u64,
    /// Contents; the length must be a multiple of 1 MiB to keep the next
    /// partition aligned.
    pub data: &'a [u8],
}

/// Where each partition landed, in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub offset: u64,
    pub size: u64,
}

pub struct Disk {
    pub bytes: Vec<u8>,
    pub placements: Vec<Placement>,
}

/// Why the partitions could not be laid out.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("partition {name}: size {size} is not a whole number of MiB")]
    Unaligned { name: String, size: u64 },
    #[error("the disk ({0} bytes) does not fit in this machine's memory")]
    TooLarge(u64),
    #[error("GPT: {0}")]
    Gpt(#[from] gptman::Error),
}

/// Lays the partitions out back to back from 1 MiB and ends the disk right
/// after the backup GPT, so the image carries no unused tail. `boot_code`
/// is what a legacy BIOS runs from the MBR. The protective partition is not
/// marked active: the UEFI specification wants it that way, and firmware
/// that insists on an active partition is documented in docs/boot-media.md.
pub fn assemble(
    disk_guid: [u8; 16],
    boot_code: &[u8; BOOT_CODE_SIZE],
    partitions: &[Partition<'_>],
) -> Result<Disk, DiskError> {
    let mut placements = Vec::with_capacity(partitions.len());
    let mut offset = FIRST_PARTITION_OFFSET;
    for partition in partitions {
        let size = partition.data.len() as u64;
        if size == 0 || size % MIB != 0 {
            return Err(DiskError::Unaligned {
                name: partition.name.into(),
                size,
            });
        }
        placements.push(Placement { offset, size });
        offset += size;
    }
    let total = offset + (ENTRY_ARRAY_SECTORS + 1) * SECTOR;

    let len = usize::try_from(total).map_err(|_| DiskError::TooLarge(total))?;
    let mut disk = Cursor::new(vec![0u8; len]);
    let mut gpt = GPT::new_from(&mut disk, SECTOR, disk_guid)?;
    for (number, (partition, place)) in (1u32..).zip(partitions.iter().zip(&placements)) {
        gpt[number] = GPTPartitionEntry {
            partition_type_guid: partition.type_guid,
            unique_partition_guid: partition.guid,
            starting_lba: place.offset / SECTOR,
            ending_lba: (place.offset + place.size) / SECTOR - 1,
            attribute_bits: partition.attributes,
            partition_name: partition.name.into(),
        };
    }
    gpt.write_into(&mut disk)?;
    GPT::write_protective_mbr_into(&mut disk, SECTOR)?;

    let mut bytes = disk.into_inner();
    bytes[..BOOT_CODE_SIZE].copy_from_slice(boot_code);
    for (partition, place) in partitions.iter().zip(&placements) {
        // Below `total`, which fits a usize.
        let start = usize::try_from(place.offset).map_err(|_| DiskError::TooLarge(total))?;
        bytes[start..start + partition.data.len()].copy_from_slice(partition.data);
    }
    Ok(Disk { bytes, placements })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`MIB`] for indexing.
    const M: usize = 1 << 20;

    fn two_partitions() -> (Vec<u8>, Vec<u8>, Disk) {
        let esp = vec![0xe5; M];
        let cfg = vec![0xc0; 2 * M];
        let disk = assemble(
            [7; 16],
            &[0x33; BOOT_CODE_SIZE],
            &[
                Partition {
                    name: "EFI system partition",
                    type_guid: ESP_TYPE,
                    guid: [1; 16],
                    attributes: LEGACY_BIOS_BOOTABLE,
                    data: &esp,
                },
                Partition {
                    name: "HVCONFIG",
                    type_guid: BASIC_DATA_TYPE,
                    guid: [2; 16],
                    attributes: 0,
                    data: &cfg,
                },
            ],
        )
        .unwrap();
        (esp, cfg, disk)
    }

    #[test]
    fn gpt_reads_back() {
        let (esp, cfg, disk) = two_partitions();
        assert_eq!(disk.bytes.len() as u64, 4 * MIB + 33 * SECTOR);
        assert_eq!(
            disk.placements,
            [
                Placement {
                    offset: MIB,
                    size: MIB
                },
                Placement {
                    offset: 2 * MIB,
                    size: 2 * MIB
                }
            ]
        );

        let gpt = GPT::read_from(&mut Cursor::new(&disk.bytes), SECTOR).unwrap();
        assert!(gpt.is_primary());
        assert_eq!(gpt.header.disk_guid, [7; 16]);
        assert_eq!(gpt[1].partition_type_guid, ESP_TYPE);
        assert_eq!(gpt[1].partition_name.as_str(), "EFI system partition");
        assert_eq!((gpt[1].starting_lba, gpt[1].ending_lba), (2048, 4095));
        assert_eq!(gpt[2].partition_name.as_str(), "HVCONFIG");
        assert_eq!(gpt[2].unique_partition_guid, [2; 16]);
        assert_eq!((gpt[2].starting_lba, gpt[2].ending_lba), (4096, 8191));
        assert_eq!(gpt[1].attribute_bits, 1 << 2, "legacy BIOS bootable");
        assert_eq!(gpt[2].attribute_bits, 0);
        assert!(gpt[3].is_unused());
        assert!(gpt.header.last_usable_lba >= 8191);

        assert_eq!(&disk.bytes[M..2 * M], &esp[..]);
        assert_eq!(&disk.bytes[2 * M..4 * M], &cfg[..]);
    }

    #[test]
    fn protective_mbr_and_backup_header() {
        let (_, _, disk) = two_partitions();
        assert_eq!(&disk.bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(&disk.bytes[..BOOT_CODE_SIZE], &[0x33; BOOT_CODE_SIZE]);
        assert_eq!(disk.bytes[446], 0, "protective partition not active");
        assert_eq!(disk.bytes[446 + 4], 0xee, "protective partition type");
        let last_sector = disk.bytes.len() - 512;
        assert_eq!(&disk.bytes[last_sector..last_sector + 8], b"EFI PART");
        assert_eq!(&disk.bytes[512..520], b"EFI PART");
    }

    #[test]
    fn rejects_unaligned_partition() {
        let data = vec![0; 1000];
        let part = Partition {
            name: "x",
            type_guid: ESP_TYPE,
            guid: [1; 16],
            attributes: 0,
            data: &data,
        };
        assert!(assemble([0; 16], &[0; BOOT_CODE_SIZE], &[part]).is_err());
    }
}
