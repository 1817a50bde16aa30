//! The partitions of the disk: a GPT (through gptman, 512-byte sectors,
//! then 4096), else a plain MBR's primary partitions, else the whole disk
//! as one file system.
//!
//! The MBR parser is our own: the four 16-byte entries are the whole
//! format, and the crates that read them (mbrman) also pull in their own
//! error and serialisation stacks for what is a dozen lines here.

use std::fmt::Write as _;

use super::disk::Slice;

/// The most partitions looked at; a GPT may list more, a hostile one
/// many more.
const MAX_PARTITIONS: usize = 128;
/// The most GPT entries a header may claim before gptman is let near
/// it: gptman allocates from the count.
const MAX_GPT_ENTRIES: u32 = 1024;
const GPT_ENTRY_SIZE: u32 = 128;
const GPT_HEADER_SIZE: usize = 92;
const MBR_PROTECTIVE: u8 = 0xee;
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];

/// Why the disk's partition table cannot be used. A table that is simply
/// not there is not an error: the disk is then read as one file system.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read its first sectors: {0}")]
    Read(std::io::Error),
    #[error(
        "its GPT header at byte {at} is valid but claims {entries} entries of {size} bytes \
         at LBA {lba}, which does not fit the disk ({len} bytes) or the limit of \
         {MAX_GPT_ENTRIES} entries of {GPT_ENTRY_SIZE} bytes"
    )]
    HostileGpt {
        at: u64,
        entries: u32,
        size: u32,
        lba: u64,
        len: u64,
    },
    #[error(
        "its GPT header at byte {at} puts partition {number} at LBA 0, over the protective MBR"
    )]
    GptAtZero { at: u64, number: u32 },
    #[error("it has a protective MBR but no valid GPT: {0}")]
    BrokenGpt(String),
}

/// How the disk is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Gpt,
    Mbr,
    /// No partition table: the disk is one file system.
    None,
}

/// One partition (or the whole disk, number 0).
#[derive(Clone)]
pub(super) struct Partition {
    /// 1-based as Linux numbers them (`vda2` is 2), 0 for the whole disk.
    pub number: u32,
    pub slice: Slice,
    /// What `root=PARTUUID=` names: the GPT unique GUID, or for an MBR
    /// the disk signature and partition number (`1234abcd-02`).
    pub partuuid: Option<String>,
}

/// The partitions in table order, the table kind, and notes on what was
/// skipped (for the error if nothing boots).
pub(super) fn read(disk: &Slice) -> Result<(Table, Vec<Partition>, Vec<String>), Error> {
    let mut notes = Vec::new();
    check_gpt_headers(disk)?;
    match gptman::GPT::find_from(&mut disk.cursor()) {
        Ok(gpt) => {
            let parts = gpt_partitions(disk, &gpt, &mut notes);
            return Ok((Table::Gpt, parts, notes));
        }
        Err(gptman::Error::InvalidSignature) => {}
        Err(e) => notes.push(format!("GPT: {e}")),
    }
    let mut mbr = [0u8; 512];
    if disk.len() >= 512 {
        disk.read_exact_at(&mut mbr, 0).map_err(Error::Read)?;
    }
    match mbr_entries(&mbr) {
        Some(entries) if entries.iter().any(|e| e.kind == MBR_PROTECTIVE) => {
            let why = notes.pop().unwrap_or_else(|| "no GPT header".into());
            Err(Error::BrokenGpt(why))
        }
        Some(entries) if !entries.is_empty() => {
            let parts = mbr_partitions(disk, &mbr, &entries, &mut notes);
            Ok((Table::Mbr, parts, notes))
        }
        _ => Ok((
            Table::None,
            vec![Partition {
                number: 0,
                slice: disk.clone(),
                partuuid: None,
            }],
            notes,
        )),
    }
}

/// Refuses a GPT header that gptman would accept (its CRC is right) but
/// whose entry array is absurd: gptman would size an allocation from it
/// and compute its offset unchecked.
fn check_gpt_headers(disk: &Slice) -> Result<(), Error> {
    let len = disk.len();
    for sector in [512u64, 4096] {
        let backup = (len / sector).checked_sub(1).map(|lba| lba * sector);
        for at in [Some(sector), backup].into_iter().flatten() {
            let mut h = [0u8; GPT_HEADER_SIZE];
            if disk.read_exact_at(&mut h, at).is_err() || h.get(..8) != Some(b"EFI PART") {
                continue;
            }
            let mut zeroed = h;
            if let Some(crc) = zeroed.get_mut(16..20) {
                crc.fill(0);
            }
            let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&zeroed);
            if Some(crc) != le32(&h, 16) {
                continue; // gptman refuses it too
            }
            let lba = le64(&h, 72).unwrap_or(u64::MAX);
            let entries = le32(&h, 80).unwrap_or(u32::MAX);
            let size = le32(&h, 84).unwrap_or(u32::MAX);
            let end = lba
                .checked_mul(sector)
                .and_then(|start| start.checked_add(u64::from(entries) * u64::from(size)));
            let fits = end.is_some_and(|end| end <= len);
            if !fits || entries > MAX_GPT_ENTRIES || size != GPT_ENTRY_SIZE {
                return Err(Error::HostileGpt {
                    at,
                    entries,
                    size,
                    lba,
                    len,
                });
            }
            check_gpt_entries(disk, &h, at, lba * sector, entries)?;
        }
    }
    Ok(())
}

/// Refuses an entry array (its CRC right, so gptman would use it) with a
/// used partition at LBA 0: gptman's alignment guess unwraps an empty
/// range when every used partition starts there.
fn check_gpt_entries(
    disk: &Slice,
    header: &[u8],
    at: u64,
    start: u64,
    entries: u32,
) -> Result<(), Error> {
    // Bounded: at most MAX_GPT_ENTRIES entries of GPT_ENTRY_SIZE bytes.
    let mut array = vec![0u8; entries as usize * GPT_ENTRY_SIZE as usize];
    if disk.read_exact_at(&mut array, start).is_err() {
        return Ok(()); // gptman cannot read it either
    }
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&array);
    if Some(crc) != le32(header, 88) {
        return Ok(()); // gptman refuses it and tries the other header
    }
    let used_at_zero = (1u32..)
        .zip(array.chunks_exact(GPT_ENTRY_SIZE as usize))
        .find(|(_, e)| e.get(..16).is_some_and(|t| t != [0; 16]) && le64(e, 32) == Some(0));
    match used_at_zero {
        Some((number, _)) => Err(Error::GptAtZero { at, number }),
        None => Ok(()),
    }
}

fn gpt_partitions(disk: &Slice, gpt: &gptman::GPT, notes: &mut Vec<String>) -> Vec<Partition> {
    let sector = gpt.sector_size;
    let mut parts = Vec::new();
    for (number, entry) in gpt.iter().filter(|(_, e)| e.is_used()) {
        if parts.len() == MAX_PARTITIONS {
            notes.push(format!(
                "partitions past the first {MAX_PARTITIONS} not searched"
            ));
            break;
        }
        let range = entry
            .ending_lba
            .checked_sub(entry.starting_lba)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(sector))
            .zip(entry.starting_lba.checked_mul(sector));
        match range.and_then(|(len, start)| disk.sub(start, len)) {
            Some(slice) => parts.push(Partition {
                number,
                slice,
                partuuid: Some(guid(&entry.unique_partition_guid)),
            }),
            None => notes.push(format!(
                "partition {number}: LBA {}..={} is outside the disk ({} bytes; a truncated image?)",
                entry.starting_lba,
                entry.ending_lba,
                disk.len()
            )),
        }
    }
    parts
}

struct MbrEntry {
    number: u32,
    kind: u8,
    start: u32,
    sectors: u32,
}

/// The used primary entries, or `None` if sector 0 is not an MBR (no
/// 0x55AA, or a status byte no MBR has, as in a FAT boot sector).
fn mbr_entries(mbr: &[u8; 512]) -> Option<Vec<MbrEntry>> {
    if mbr.get(510..512) != Some(&[0x55, 0xaa]) {
        return None;
    }
    let mut entries = Vec::new();
    for (number, e) in (1u32..).zip(mbr.get(446..510)?.chunks_exact(16)) {
        let status = *e.first()?;
        if status != 0 && status != 0x80 {
            return None;
        }
        let kind = *e.get(4)?;
        let start = le32(e, 8)?;
        let sectors = le32(e, 12)?;
        if kind != 0 && sectors != 0 {
            entries.push(MbrEntry {
                number,
                kind,
                start,
                sectors,
            });
        }
    }
    Some(entries)
}

fn mbr_partitions(
    disk: &Slice,
    mbr: &[u8; 512],
    entries: &[MbrEntry],
    notes: &mut Vec<String>,
) -> Vec<Partition> {
    let signature = le32(mbr, 440).unwrap_or(0);
    let mut parts = Vec::new();
    for e in entries {
        if MBR_EXTENDED.contains(&e.kind) {
            notes.push(format!(
                "partition {}: an extended partition (type {:#04x}); logical partitions are not searched",
                e.number, e.kind
            ));
            continue;
        }
        let start = u64::from(e.start) * 512;
        let len = u64::from(e.sectors) * 512;
        match disk.sub(start, len) {
            Some(slice) => parts.push(Partition {
                number: e.number,
                slice,
                partuuid: (signature != 0).then(|| format!("{signature:08x}-{:02x}", e.number)),
            }),
            None => notes.push(format!(
                "partition {}: bytes {start}..{} are outside the disk ({} bytes; a truncated image?)",
                e.number,
                start + len,
                disk.len()
            )),
        }
    }
    parts
}

/// A GPT GUID as Linux prints it: the first three fields little-endian.
fn guid(b: &[u8; 16]) -> String {
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut s = String::with_capacity(36);
    for (n, i) in order.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{:02x}", b.get(*i).copied().unwrap_or(0));
    }
    s
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::boot_disk::ReadAt;

    fn disk(bytes: Vec<u8>) -> Slice {
        let len = bytes.len() as u64;
        let disk: Rc<dyn ReadAt> = Rc::new(bytes);
        Slice::whole(
            disk,
            len,
            crate::boot_disk::disk::Budget::new(1 << 30, 1 << 20),
        )
    }

    fn mbr_with(entries: &[(u8, u8, u32, u32)]) -> Vec<u8> {
        let mut d = vec![0u8; 1 << 20];
        d[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        for (i, (status, kind, start, sectors)) in entries.iter().enumerate() {
            let e = 446 + 16 * i;
            d[e] = *status;
            d[e + 4] = *kind;
            d[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            d[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xaa;
        d
    }

    #[test]
    fn guid_is_printed_mixed_endian() {
        let b = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(guid(&b), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }

    #[test]
    fn mbr_primaries_are_found_and_extended_ones_noted() {
        let d = disk(mbr_with(&[(0x80, 0x83, 64, 100), (0, 0x05, 1000, 10)]));
        let (table, parts, notes) = read(&d).unwrap();
        assert_eq!(table, Table::Mbr);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].slice.len(), 100 * 512);
        assert_eq!(parts[0].partuuid.as_deref(), Some("1234abcd-01"));
        assert!(notes[0].contains("extended"), "{notes:?}");
    }

    #[test]
    fn an_mbr_partition_past_the_end_is_skipped_with_a_note() {
        let d = disk(mbr_with(&[(0, 0x83, 2048, 1 << 20)]));
        let (table, parts, notes) = read(&d).unwrap();
        assert_eq!(table, Table::Mbr);
        assert!(parts.is_empty());
        assert!(notes[0].contains("outside the disk"), "{notes:?}");
    }

    #[test]
    fn a_boot_sector_is_not_an_mbr() {
        // A FAT boot sector: 0x55AA, but code where the entries would be.
        let mut d = mbr_with(&[]);
        d[446..510].fill(0x90);
        let (table, parts, _) = read(&disk(d)).unwrap();
        assert_eq!(table, Table::None);
        assert_eq!(parts[0].number, 0);
    }

    #[test]
    fn a_protective_mbr_without_a_gpt_is_refused() {
        let d = disk(mbr_with(&[(0, MBR_PROTECTIVE, 1, 2047)]));
        let err = read(&d).err().unwrap();
        assert!(err.to_string().contains("protective MBR"), "{err}");
    }

    #[test]
    fn a_gpt_header_with_a_valid_crc_and_absurd_counts_is_refused() {
        let mut d = vec![0u8; 1 << 20];
        let h = 512;
        d[h..h + 8].copy_from_slice(b"EFI PART");
        d[h + 8..h + 12].copy_from_slice(&[0, 0, 1, 0]);
        d[h + 12..h + 16].copy_from_slice(&92u32.to_le_bytes());
        d[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        d[h + 80..h + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        d[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&d[h..h + 92]);
        d[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
        let err = read(&disk(d)).err().unwrap();
        assert!(matches!(err, Error::HostileGpt { .. }), "{err}");
    }

    /// gptman's alignment guess unwraps an empty range when every used
    /// partition starts at LBA 0: such a table (CRCs right) must be
    /// refused before gptman reads it.
    #[test]
    fn a_gpt_partition_at_lba_0_is_refused() {
        let mut cur = std::io::Cursor::new(vec![0u8; 1 << 20]);
        let mut gpt = gptman::GPT::new_from(&mut cur, 512, [1; 16]).unwrap();
        gpt[1] = gptman::GPTPartitionEntry {
            partition_type_guid: [2; 16],
            unique_partition_guid: [3; 16],
            starting_lba: 0,
            ending_lba: 100,
            attribute_bits: 0,
            partition_name: "x".into(),
        };
        let entries: Vec<_> = gpt.iter().map(|(_, e)| e.clone()).collect();
        gpt.header.write_into(&mut cur, 512, &entries).unwrap();
        let err = read(&disk(cur.into_inner())).err().unwrap();
        assert!(err.to_string().contains("LBA 0"), "{err}");
    }

    #[test]
    fn a_tiny_disk_is_one_file_system() {
        let (table, parts, _) = read(&disk(vec![0; 100])).unwrap();
        assert_eq!(table, Table::None);
        assert_eq!(parts.len(), 1);
    }
}
