//! Identifies block devices by what is written on them: file system type,
//! label and UUID from the superblock, GPT partition name from the kernel.
//!
//! Only reads. The boot medium is among the probed devices and must never
//! be written to.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hvconfig::DeviceSource;

/// File systems init can identify and mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Vfat,
    Ext2,
    Ext3,
    Ext4,
}

impl FsType {
    /// The name `mount(2)` wants. The ext4 driver mounts ext2 and ext3
    /// too, and is the one a minimal kernel is sure to have.
    pub fn mount_name(self) -> &'static str {
        match self {
            FsType::Vfat => "vfat",
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsType::Vfat => "vfat",
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        })
    }
}

/// What a superblock says about a file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub fstype: FsType,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

/// One entry of /sys/class/block with what was found on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name, e.g. `sda1`.
    pub name: String,
    /// Device node, e.g. `/dev/sda1`.
    pub node: PathBuf,
    /// For a partition, the kernel name of the disk holding it.
    pub disk: Option<String>,
    pub part_label: Option<String>,
    /// For a GPT partition, its unique partition GUID (PARTUUID) as blkid
    /// prints it, read from the disk's partition table.
    pub part_uuid: Option<String>,
    pub fs: Option<FsInfo>,
}

impl BlockDevice {
    /// Whether `source` names this device. UUIDs compare without regard to
    /// case: FAT serials are upper case, ext UUIDs lower.
    pub fn is_named_by(&self, source: &DeviceSource) -> bool {
        let fs_label = self.fs.as_ref().and_then(|fs| fs.label.as_deref());
        let fs_uuid = self.fs.as_ref().and_then(|fs| fs.uuid.as_deref());
        match source {
            DeviceSource::Label(label) => fs_label == Some(label.as_str()),
            DeviceSource::PartLabel(label) => self.part_label.as_deref() == Some(label.as_str()),
            DeviceSource::Uuid(uuid) => fs_uuid.is_some_and(|u| u.eq_ignore_ascii_case(uuid)),
            DeviceSource::PartUuid(uuid) => self
                .part_uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid)),
            DeviceSource::Path(path) => self.node == *path,
        }
    }
}

/// Enough of the start of a device for every superblock probed here
/// (ext's sits at 1 KiB, FAT's root directory follows the FATs).
const PROBE_LEN: usize = 4096;
const SECTOR: usize = 512;

fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    let bytes = buf.get(off..off.checked_add(2)?)?;
    bytes.try_into().ok().map(u16::from_le_bytes)
}

fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    bytes.try_into().ok().map(u32::from_le_bytes)
}

/// Reads as much of `len` bytes at `offset` as the device holds.
fn read_at(dev: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match dev.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Identifies the file system on `dev`, if any.
pub fn probe_fs(dev: &File) -> io::Result<Option<FsInfo>> {
    let head = read_at(dev, 0, PROBE_LEN)?;
    if let Some(info) = probe_ext(&head) {
        return Ok(Some(info));
    }
    Ok(probe_fat(dev, &head))
}

const EXT_SB: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
/// Incompat features only ext4 has: extents, 64bit, flex_bg, inline data.
const EXT4_INCOMPAT: u32 = 0x40 | 0x80 | 0x200 | 0x8000;

fn probe_ext(head: &[u8]) -> Option<FsInfo> {
    let sb = head.get(EXT_SB..EXT_SB + 1024)?;
    if u16_at(sb, 56)? != EXT_MAGIC {
        return None;
    }
    let compat = u32_at(sb, 92)?;
    let incompat = u32_at(sb, 96)?;
    let fstype = if incompat & EXT4_INCOMPAT != 0 {
        FsType::Ext4
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    let uuid = sb.get(104..120).and_then(format_uuid);
    let label = sb.get(120..136).and_then(|raw| {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        clean_label(raw.get(..end)?)
    });
    Some(FsInfo {
        fstype,
        label,
        uuid,
    })
}

fn format_uuid(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 || raw.iter().all(|&b| b == 0) {
        return None;
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8)?,
        hex.get(8..12)?,
        hex.get(12..16)?,
        hex.get(16..20)?,
        hex.get(20..32)?
    ))
}

/// Label bytes as text: trailing padding trimmed, empty means no label.
/// FAT labels are in an OEM code page; anything outside ASCII is kept as
/// its Latin-1 reading, which is what matching against ASCII names needs.
fn clean_label(raw: &[u8]) -> Option<String> {
    let text: String = raw.iter().map(|&b| char::from(b)).collect();
    let text = text.trim_end_matches([' ', '\0']);
    (!text.is_empty()).then(|| text.to_string())
}

/// The placeholder FAT formatters write when no label was asked for.
const FAT_NO_NAME: &str = "NO NAME";
const FAT_ATTR_VOLUME_ID: u8 = 0x08;
const FAT_ATTR_LFN: u8 = 0x0F;
const FAT_DIRENT: usize = 32;

/// The BIOS parameter block fields needed to find the label.
struct FatBpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fats: u64,
    root_entries: u64,
    sectors_per_fat: u64,
    /// FAT32 keeps the root directory in a cluster chain.
    root_cluster: Option<u64>,
    /// Label and serial from the extended boot record, if it has one.
    ebr_label: Option<String>,
    serial: Option<u32>,
}

fn parse_fat_bpb(boot: &[u8]) -> Option<FatBpb> {
    if boot.get(510..512)? != [0x55, 0xAA] {
        return None;
    }
    // Jump instruction: EB xx 90 or E9 xx xx.
    if !matches!(boot.first()?, 0xEB | 0xE9) {
        return None;
    }
    let bytes_per_sector = u16_at(boot, 11)?;
    let sectors_per_cluster = *boot.get(13)?;
    let reserved_sectors = u16_at(boot, 14)?;
    let fats = *boot.get(16)?;
    let root_entries = u16_at(boot, 17)?;
    let fat16_size = u16_at(boot, 22)?;
    let valid = bytes_per_sector.is_power_of_two()
        && (512..=4096).contains(&bytes_per_sector)
        && sectors_per_cluster.is_power_of_two()
        && reserved_sectors > 0
        && (1..=2).contains(&fats);
    if !valid {
        return None;
    }
    // FAT32 has no fixed root directory and its FAT size field moved.
    let fat32 = fat16_size == 0 && root_entries == 0;
    let (sectors_per_fat, root_cluster, ebr) = if fat32 {
        (
            u64::from(u32_at(boot, 36)?),
            Some(u64::from(u32_at(boot, 44)?)),
            64,
        )
    } else {
        (u64::from(fat16_size), None, 36)
    };
    if sectors_per_fat == 0 {
        return None;
    }
    // Extended boot signature 0x29 means serial, label and type follow.
    let has_ebr = *boot.get(ebr + 2)? == 0x29;
    let (serial, ebr_label) = if has_ebr {
        let label = boot
            .get(ebr + 7..ebr + 18)
            .and_then(clean_label)
            .filter(|l| l != FAT_NO_NAME);
        (u32_at(boot, ebr + 3), label)
    } else {
        (None, None)
    };
    Some(FatBpb {
        bytes_per_sector: u64::from(bytes_per_sector),
        sectors_per_cluster: u64::from(sectors_per_cluster),
        reserved_sectors: u64::from(reserved_sectors),
        fats: u64::from(fats),
        root_entries: u64::from(root_entries),
        sectors_per_fat,
        root_cluster,
        ebr_label,
        serial,
    })
}

fn probe_fat(dev: &File, head: &[u8]) -> Option<FsInfo> {
    let bpb = parse_fat_bpb(head.get(..SECTOR)?)?;
    // The root directory's volume entry is the label tools (and Windows)
    // update; the boot record copy is often left at "NO NAME".
    let root_label = read_fat_root_label(dev, &bpb);
    let label = root_label.or(bpb.ebr_label);
    let uuid = bpb
        .serial
        .map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF));
    Some(FsInfo {
        fstype: FsType::Vfat,
        label,
        uuid,
    })
}

fn read_fat_root_label(dev: &File, bpb: &FatBpb) -> Option<String> {
    let fat_start = bpb.reserved_sectors;
    let after_fats = fat_start + bpb.fats * bpb.sectors_per_fat;
    let (offset, len) = match bpb.root_cluster {
        Some(cluster) => {
            // The label sits in the first cluster of the root directory in
            // practice (formatters put it first); later clusters are not
            // followed to keep the probe cheap and bounded.
            let data_start = after_fats;
            let sector = data_start + cluster.checked_sub(2)? * bpb.sectors_per_cluster;
            (
                sector * bpb.bytes_per_sector,
                bpb.sectors_per_cluster * bpb.bytes_per_sector,
            )
        }
        None => (
            after_fats * bpb.bytes_per_sector,
            bpb.root_entries * FAT_DIRENT as u64,
        ),
    };
    let len = usize::try_from(len.min(64 * 1024)).ok()?;
    let dir = read_at(dev, offset, len).ok()?;
    fat_volume_label(&dir)
}

/// Finds the volume label entry in a directory's raw entries.
fn fat_volume_label(dir: &[u8]) -> Option<String> {
    for entry in dir.chunks_exact(FAT_DIRENT) {
        let first = *entry.first()?;
        if first == 0x00 {
            // End of directory.
            return None;
        }
        let attr = *entry.get(11)?;
        if first == 0xE5 || attr == FAT_ATTR_LFN {
            continue;
        }
        if attr & FAT_ATTR_VOLUME_ID != 0 {
            return entry
                .get(..11)
                .and_then(clean_label)
                .filter(|l| l != FAT_NO_NAME);
        }
    }
    None
}

/// Reads `KEY=value` lines of a sysfs uevent file.
fn uevent_value(uevent: &str, key: &str) -> Option<String> {
    uevent.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// Lists the block devices the kernel knows about, probing each for a
/// file system. Whole disks that carry a partition table are listed but
/// not probed: the first sector of a partition table can look like a FAT
/// boot sector. RAM disks, loop and zram devices without media are skipped.
pub fn scan(sys_block: &Path, dev_dir: &Path) -> Vec<BlockDevice> {
    let Ok(entries) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut devices = Vec::new();
    // PARTN of each device, in the order of `devices`.
    let mut part_numbers: Vec<Option<usize>> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let uevent = fs::read_to_string(dir.join("uevent")).unwrap_or_default();
        let size: u64 = fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if size == 0 {
            continue;
        }
        let is_partition = uevent_value(&uevent, "DEVTYPE").as_deref() == Some("partition");
        // A partition's sysfs directory sits inside its disk's.
        let disk = if is_partition {
            fs::canonicalize(&dir).ok().and_then(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
        } else {
            None
        };
        let devname = uevent_value(&uevent, "DEVNAME").unwrap_or_else(|| name.clone());
        part_numbers.push(uevent_value(&uevent, "PARTN").and_then(|n| n.parse().ok()));
        devices.push(BlockDevice {
            node: dev_dir.join(devname),
            part_label: uevent_value(&uevent, "PARTNAME"),
            // Filled in below from the disk's GPT.
            part_uuid: None,
            name,
            disk,
            fs: None,
        });
    }
    fill_part_uuids(sys_block, &mut devices, &part_numbers);
    let partitioned: Vec<String> = devices.iter().filter_map(|d| d.disk.clone()).collect();
    for dev in &mut devices {
        if partitioned.contains(&dev.name) {
            continue;
        }
        if let Ok(file) = File::open(&dev.node) {
            dev.fs = probe_fs(&file).ok().flatten();
        }
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// Gives each partition (numbered by `numbers`, PARTN) the unique GUID its
/// disk's GPT has for it; partitions of other tables get none.
fn fill_part_uuids(sys_block: &Path, devices: &mut [BlockDevice], numbers: &[Option<usize>]) {
    let disks: Vec<(String, PathBuf)> = devices
        .iter()
        .filter(|d| d.disk.is_none())
        .map(|d| (d.name.clone(), d.node.clone()))
        .collect();
    let mut tables: Vec<(String, Vec<[u8; 16]>)> = Vec::new();
    for (name, node) in disks {
        if !devices
            .iter()
            .any(|d| d.disk.as_deref() == Some(name.as_str()))
        {
            continue;
        }
        let sector: u64 =
            fs::read_to_string(sys_block.join(&name).join("queue/logical_block_size"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(512);
        let guids = File::open(&node)
            .ok()
            .and_then(|f| gpt_partition_guids(&f, sector))
            .unwrap_or_default();
        tables.push((name, guids));
    }
    for (dev, number) in devices.iter_mut().zip(numbers) {
        let (Some(disk), Some(number)) = (dev.disk.as_deref(), *number) else {
            continue;
        };
        dev.part_uuid = tables
            .iter()
            .find(|(name, _)| name == disk)
            .and_then(|(_, guids)| guids.get(number.checked_sub(1)?))
            .filter(|g| **g != [0u8; 16])
            .map(guid_string);
    }
}

/// At most this many GPT entries are read (the usual table has 128).
const GPT_MAX_ENTRIES: u32 = 256;

/// The unique partition GUIDs of the GPT on `dev`, by entry index, from
/// the primary header at LBA 1.
pub fn gpt_partition_guids(dev: &File, sector: u64) -> Option<Vec<[u8; 16]>> {
    let header = read_at(dev, sector, 92).ok()?;
    if header.get(..8)? != b"EFI PART" {
        return None;
    }
    let entries_lba = u64::from(u32_at(&header, 72)?) | (u64::from(u32_at(&header, 76)?) << 32);
    let count = u32_at(&header, 80)?.min(GPT_MAX_ENTRIES);
    let size = u32_at(&header, 84)?;
    if size < 128 {
        return None;
    }
    let size = usize::try_from(size).ok()?;
    let total = size.checked_mul(usize::try_from(count).ok()?)?;
    let table = read_at(dev, entries_lba.checked_mul(sector)?, total).ok()?;
    Some(
        table
            .chunks_exact(size)
            .filter_map(|e| e.get(16..32)?.try_into().ok())
            .collect(),
    )
}

/// An on-disk (mixed-endian) GUID as blkid prints a PARTUUID.
fn guid_string(g: &[u8; 16]) -> String {
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = String::with_capacity(36);
    for (i, &at) in order.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        if let Some(b) = g.get(at) {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// A label, UUID or partition name found on more than one device: none
/// of them is used, as the one meant cannot be told from the others (a
/// guest may have written the same label on its disk).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{spec} is on more than one device ({}); refusing to guess", nodes_list(.nodes))]
pub struct Ambiguous {
    pub spec: DeviceSource,
    pub nodes: Vec<PathBuf>,
}

fn nodes_list(nodes: &[PathBuf]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.display().to_string()).collect();
    names.join(", ")
}

/// Finds the device `spec` names among `devices`. A name (not a path)
/// matching more than one device is an error naming them.
pub fn find<'a>(
    spec: &DeviceSource,
    devices: &'a [BlockDevice],
) -> Result<Option<&'a BlockDevice>, Ambiguous> {
    let mut found = devices.iter().filter(|d| d.is_named_by(spec));
    let first = found.next();
    if matches!(spec, DeviceSource::Path(_)) {
        return Ok(first);
    }
    let rest: Vec<&BlockDevice> = found.collect();
    match first {
        Some(first) if !rest.is_empty() => Err(Ambiguous {
            spec: spec.clone(),
            nodes: std::iter::once(first)
                .chain(rest)
                .map(|d| d.node.clone())
                .collect(),
        }),
        other => Ok(other),
    }
}

/// `devices` without the ones named by `handed` (the devices given to
/// guests) and their partitions, and without the disks holding them: no
/// host mount is ever looked for on a guest's device.
pub fn not_handed(devices: &[BlockDevice], handed: &[PathBuf]) -> Vec<BlockDevice> {
    let names: Vec<&str> = devices
        .iter()
        .filter(|d| handed.contains(&d.node))
        .map(|d| d.name.as_str())
        .collect();
    devices
        .iter()
        .filter(|d| {
            !names.contains(&d.name.as_str())
                && !d.disk.as_deref().is_some_and(|disk| names.contains(&disk))
        })
        .cloned()
        .collect()
}

/// One scan of the block devices, made when first needed and reused:
/// a scan opens every device and reads its superblocks, which on a slow
/// USB stick blocks PID 1's loop for a noticeable time.
pub struct DeviceCache {
    sys_block: PathBuf,
    dev_dir: PathBuf,
    devices: Option<Vec<BlockDevice>>,
}

impl DeviceCache {
    pub fn new(sys_block: &Path, dev_dir: &Path) -> DeviceCache {
        DeviceCache {
            sys_block: sys_block.to_path_buf(),
            dev_dir: dev_dir.to_path_buf(),
            devices: None,
        }
    }

    pub fn devices(&mut self) -> &[BlockDevice] {
        self.devices
            .get_or_insert_with(|| scan(&self.sys_block, &self.dev_dir))
    }

    /// Finds `spec`; on a miss scans once more, for a disk plugged in
    /// since (guest restarts back off, so this stays rare).
    pub fn find(&mut self, spec: &DeviceSource) -> Result<Option<BlockDevice>, Ambiguous> {
        if let Some(dev) = find(spec, self.devices())? {
            return Ok(Some(dev.clone()));
        }
        self.devices = None;
        Ok(find(spec, self.devices())?.cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvconfig::device::Context;
    use std::process::Command;

    fn image(size_mib: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs.img");
        let file = File::create(&path).expect("create image");
        file.set_len(size_mib << 20).expect("size image");
        (dir, path)
    }

    fn run(cmd: &mut Command) {
        let out = cmd.output().expect("run formatter");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }

    fn probe_path(path: &Path) -> Option<FsInfo> {
        probe_fs(&File::open(path).expect("open image")).expect("probe")
    }

    #[test]
    fn fat32_label_and_serial() {
        let (_dir, path) = image(40);
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "HVCONFIG", "-i", "1234ABCD"])
            .arg(&path));
        let info = probe_path(&path).expect("fat32 detected");
        assert_eq!(info.fstype, FsType::Vfat);
        assert_eq!(info.label.as_deref(), Some("HVCONFIG"));
        assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
    }

    #[test]
    fn fat16_and_fat12_labels() {
        for (fat, size) in [("16", 16), ("12", 4)] {
            let (_dir, path) = image(size);
            run(Command::new("mkfs.vfat")
                .args(["-F", fat, "-n", "OTHER"])
                .arg(&path));
            let info = probe_path(&path).expect("fat detected");
            assert_eq!(info.fstype, FsType::Vfat, "FAT{fat}");
            assert_eq!(info.label.as_deref(), Some("OTHER"), "FAT{fat}");
        }
    }

    #[test]
    fn fat_root_directory_label_wins_over_boot_record() {
        // Windows relabels only the root directory entry.
        let (_dir, path) = image(16);
        run(Command::new("mkfs.vfat").args(["-F", "16"]).arg(&path));
        assert_eq!(probe_path(&path).expect("fat").label, None);
        let status = Command::new("mlabel")
            .args(["-i"])
            .arg(&path)
            .arg("::HVCONFIG")
            .env("MTOOLS_SKIP_CHECK", "1")
            .status();
        if status.is_ok_and(|s| s.success()) {
            assert_eq!(
                probe_path(&path).expect("fat").label.as_deref(),
                Some("HVCONFIG")
            );
        }
    }

    #[test]
    fn ext4_and_ext2_labels() {
        for (mkfs, fstype) in [("ext4", FsType::Ext4), ("ext2", FsType::Ext2)] {
            let (_dir, path) = image(8);
            run(Command::new(format!("mkfs.{mkfs}"))
                .args([
                    "-q",
                    "-F",
                    "-L",
                    "guestdata",
                    "-U",
                    "0fc63daf-8483-4772-8e79-3d69d8477de4",
                ])
                .arg(&path));
            let info = probe_path(&path).expect("ext detected");
            assert_eq!(info.fstype, fstype);
            assert_eq!(info.label.as_deref(), Some("guestdata"));
            assert_eq!(
                info.uuid.as_deref(),
                Some("0fc63daf-8483-4772-8e79-3d69d8477de4")
            );
        }
    }

    #[test]
    fn unformatted_and_short_devices_have_no_fs() {
        let (_dir, path) = image(1);
        assert_eq!(probe_path(&path), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short");
        fs::write(&short, [0xEB, 0x3C, 0x90]).expect("write");
        assert_eq!(probe_path(&short), None);
    }

    #[test]
    fn devices_are_found_by_every_kind_of_name() {
        let dev = BlockDevice {
            name: "sdb1".into(),
            node: "/dev/sdb1".into(),
            disk: Some("sdb".into()),
            part_label: Some("data".into()),
            part_uuid: Some("0a1b2c3d-0000-4000-8000-00000000000f".into()),
            fs: Some(FsInfo {
                fstype: FsType::Vfat,
                label: Some("HVCONFIG".into()),
                uuid: Some("1234-ABCD".into()),
            }),
        };
        let devices = [dev];
        for spec in [
            "LABEL=HVCONFIG",
            "PARTLABEL=data",
            "UUID=1234-abcd",
            "PARTUUID=0A1B2C3D-0000-4000-8000-00000000000F",
            "/dev/sdb1",
        ] {
            let spec = DeviceSource::parse(spec, Context::KernelCmdline).expect("valid spec");
            assert!(find(&spec, &devices).expect("one").is_some(), "{spec}");
        }
        let other = DeviceSource::Label("hvconfig".into());
        assert!(
            find(&other, &devices).expect("none").is_none(),
            "labels are case sensitive"
        );
    }

    fn labelled(name: &str, disk: Option<&str>, label: &str) -> BlockDevice {
        BlockDevice {
            name: name.into(),
            node: Path::new("/dev").join(name),
            disk: disk.map(Into::into),
            part_label: None,
            part_uuid: None,
            fs: Some(FsInfo {
                fstype: FsType::Vfat,
                label: Some(label.into()),
                uuid: None,
            }),
        }
    }

    #[test]
    fn a_label_on_two_devices_is_an_error_naming_both() {
        let devices = [
            labelled("sda2", Some("sda"), "HVCONFIG"),
            labelled("vdb", None, "HVCONFIG"),
        ];
        let err = find(&DeviceSource::Label("HVCONFIG".into()), &devices).expect_err("two");
        assert_eq!(
            err.to_string(),
            "LABEL=HVCONFIG is on more than one device (/dev/sda2, /dev/vdb); refusing to guess"
        );
        // A path names one node, whatever else carries its label.
        let path = DeviceSource::Path("/dev/vdb".into());
        assert_eq!(
            find(&path, &devices)
                .expect("path")
                .map(|d| d.name.as_str()),
            Some("vdb")
        );
    }

    #[test]
    fn devices_handed_to_guests_and_their_partitions_are_left_out() {
        let devices = [
            labelled("sda", None, "x"),
            labelled("sda1", Some("sda"), "vmdata"),
            labelled("vdb", None, "vmdata"),
            labelled("vdc", None, "vmdata"),
        ];
        let label = DeviceSource::Label("vmdata".into());
        assert!(find(&label, &devices).is_err());
        let left = not_handed(&devices, &["/dev/sda".into(), "/dev/vdc".into()]);
        let names: Vec<&str> = left.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vdb"]);
        assert_eq!(
            find(&label, &left).expect("one").map(|d| d.name.as_str()),
            Some("vdb")
        );
    }

    #[test]
    fn gpt_partition_guids_are_read_as_blkid_prints_them() {
        let (_dir, img) = image(4);
        run(Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:4095",
                "-u",
                "1:0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F9",
            ])
            .arg(&img));
        let file = File::open(&img).expect("open");
        let guids = gpt_partition_guids(&file, 512).expect("a GPT");
        let first = guids.first().expect("entry 1");
        assert_eq!(guid_string(first), "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9");
        assert!(
            guids.get(1).is_some_and(|g| *g == [0; 16]),
            "entry 2 unused"
        );
        let (_d2, plain) = image(1);
        assert_eq!(
            gpt_partition_guids(&File::open(&plain).expect("open"), 512),
            None
        );
    }

    #[test]
    fn scan_reads_sysfs_layout() {
        // A fake /sys/class/block with one partitioned disk whose partition
        // node is a FAT image, and an empty loop device.
        let root = tempfile::tempdir().expect("tempdir");
        let sys = root.path().join("sys");
        let dev = root.path().join("dev");
        let disk_dir = root.path().join("devices/sdb");
        let part_dir = disk_dir.join("sdb1");
        let loop_dir = root.path().join("devices/loop0");
        for d in [&sys, &dev, &part_dir, &loop_dir] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(disk_dir.join("uevent"), "DEVTYPE=disk\nDEVNAME=sdb\n").expect("w");
        fs::write(disk_dir.join("size"), "81920\n").expect("w");
        fs::write(
            part_dir.join("uevent"),
            "DEVTYPE=partition\nDEVNAME=sdb1\nPARTNAME=config\n",
        )
        .expect("w");
        fs::write(part_dir.join("size"), "81920\n").expect("w");
        fs::write(loop_dir.join("uevent"), "DEVTYPE=disk\nDEVNAME=loop0\n").expect("w");
        fs::write(loop_dir.join("size"), "0\n").expect("w");
        for (link, target) in [
            ("sdb", &disk_dir),
            ("sdb1", &part_dir),
            ("loop0", &loop_dir),
        ] {
            std::os::unix::fs::symlink(target, sys.join(link)).expect("symlink");
        }
        let img = dev.join("sdb1");
        File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        run(Command::new("mkfs.vfat").args(["-n", "HVCONFIG"]).arg(&img));
        // The whole disk must not be probed; give it a node that would
        // fail the test if it were (a FAT image with another label).
        let disk_img = dev.join("sdb");
        File::create(&disk_img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        run(Command::new("mkfs.vfat")
            .args(["-n", "WRONG"])
            .arg(&disk_img));

        let devices = scan(&sys, &dev);
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sdb", "sdb1"]);
        let sdb1 = devices.get(1).expect("sdb1");
        assert_eq!(sdb1.disk.as_deref(), Some("sdb"));
        assert_eq!(sdb1.part_label.as_deref(), Some("config"));
        assert_eq!(
            sdb1.fs.as_ref().and_then(|f| f.label.as_deref()),
            Some("HVCONFIG")
        );
        assert_eq!(devices.first().and_then(|d| d.fs.as_ref()), None);
        let found = find(&DeviceSource::Label("HVCONFIG".into()), &devices)
            .expect("one")
            .expect("found");
        assert_eq!(found.node, img);

        // The cache scans once, and again only for a device it lacks.
        let mut cache = DeviceCache::new(&sys, &dev);
        assert_eq!(cache.devices().len(), 2);
        let late = DeviceSource::PartLabel("late".into());
        assert!(cache.find(&late).expect("one").is_none());
        let late_dir = disk_dir.join("sdb2");
        fs::create_dir_all(&late_dir).expect("mkdir");
        fs::write(
            late_dir.join("uevent"),
            "DEVTYPE=partition\nDEVNAME=sdb2\nPARTNAME=late\n",
        )
        .expect("w");
        fs::write(late_dir.join("size"), "8\n").expect("w");
        std::os::unix::fs::symlink(&late_dir, sys.join("sdb2")).expect("symlink");
        assert_eq!(cache.devices().len(), 2, "cached");
        let found = cache
            .find(&late)
            .expect("one")
            .expect("found after a rescan");
        assert_eq!(found.node, dev.join("sdb2"));
    }
}

/// Seeded fuzzing of the parsers above (see `fuzz_tests`).
#[cfg(test)]
#[path = "fuzz_tests/probe.rs"]
mod fuzz;
