//! Which disks hold the boot medium, by device number. A guest disk or a
//! data mount may name a device by any path (`..`, a second node, a
//! whole disk instead of its partition); once opened or stat'ed they all
//! come down to the same major:minor, which names and paths do not.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use libc::dev_t;

use crate::config_source::probe::BlockDevice;

pub const SYS_DIR: &str = "/sys";
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
/// File system labels of the image's own partitions (hv-image's ESP and
/// config partition). A disk carrying one was flashed with the image and
/// may be what booted this host even when the config came over HTTP.
const IMAGE_LABELS: [&str; 2] = ["HVBOOT", "HVCONFIG"];

/// The whole disks nothing may be written to.
#[derive(Debug, Default)]
pub struct BootMedium {
    sys: PathBuf,
    disks: Vec<dev_t>,
}

fn parse_dev(text: &str) -> Option<dev_t> {
    let (major, minor) = text.trim().split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

/// The whole disk holding block device `dev` (itself for a whole disk),
/// from sysfs: a partition's directory sits inside its disk's and has a
/// `partition` file.
pub fn whole_disk(sys: &Path, dev: dev_t) -> Option<dev_t> {
    let link = format!("dev/block/{}:{}", libc::major(dev), libc::minor(dev));
    let dir = fs::canonicalize(sys.join(link)).ok()?;
    let disk_dir = match dir.join("partition").exists() {
        true => dir.parent()?,
        false => dir.as_path(),
    };
    parse_dev(&fs::read_to_string(disk_dir.join("dev")).ok()?)
}

/// Device numbers of the read-only mounts in a mountinfo table: the
/// config partition, however it was found. Fields: id, parent,
/// MAJ:MIN, root, mount point, options, ...
fn read_only_mounts(mountinfo: &str) -> Vec<dev_t> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let dev = fields.nth(2)?;
            let options = fields.nth(2)?;
            options
                .split(',')
                .any(|o| o == "ro")
                .then(|| parse_dev(dev))?
        })
        .collect()
}

impl BootMedium {
    /// The disks of every read-only block mount (the config partition)
    /// plus, when `devices` are given, every disk carrying one of the
    /// image's partitions. Devices without a sysfs entry (tmpfs, proc)
    /// drop out.
    pub fn gather(sys: &Path, mountinfo: &str, devices: &[BlockDevice]) -> BootMedium {
        let labelled = devices
            .iter()
            .filter(|d| {
                d.fs.as_ref()
                    .and_then(|fs| fs.label.as_deref())
                    .is_some_and(|l| IMAGE_LABELS.contains(&l))
            })
            .filter_map(|d| {
                let text = fs::read_to_string(sys.join("class/block").join(&d.name).join("dev"));
                parse_dev(&text.ok()?)
            });
        let mut disks: Vec<dev_t> = read_only_mounts(mountinfo)
            .into_iter()
            .chain(labelled)
            .filter_map(|dev| whole_disk(sys, dev))
            .collect();
        disks.sort_unstable();
        disks.dedup();
        BootMedium {
            sys: sys.to_path_buf(),
            disks,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    /// Whether block device `rdev` is, or is a partition of, a boot disk.
    pub fn holds(&self, rdev: dev_t) -> bool {
        let disk = whole_disk(&self.sys, rdev).unwrap_or(rdev);
        self.disks.contains(&disk)
    }

    /// Whether `meta` (of a device node or an open fd) is a block device
    /// on a boot disk. Regular files are never: the config partition is
    /// mounted read-only, so files on it cannot be opened writable.
    pub fn holds_node(&self, meta: &fs::Metadata) -> bool {
        meta.file_type().is_block_device() && self.holds(meta.rdev())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::config_source::probe::{FsInfo, FsType};
    use std::process::Command;

    /// A fake /sys: disk sda (8:0) with partitions sda1 (8:1, HVBOOT)
    /// and sda2 (8:2), and disk sdb (8:16) with sdb1 (8:17).
    fn fake_sys() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let sys = root.path();
        for (disk, major_minor, parts) in [("sda", "8:0", &[1, 2]), ("sdb", "8:16", &[17, 18])] {
            let disk_dir = sys.join("devices").join(disk);
            fs::create_dir_all(&disk_dir).expect("mkdir");
            fs::write(disk_dir.join("dev"), format!("{major_minor}\n")).expect("w");
            let mut links = vec![(major_minor.to_string(), disk.to_string(), disk_dir.clone())];
            for (i, minor) in parts.iter().enumerate() {
                let name = format!("{disk}{}", i + 1);
                let dir = disk_dir.join(&name);
                fs::create_dir_all(&dir).expect("mkdir");
                fs::write(dir.join("dev"), format!("8:{minor}\n")).expect("w");
                fs::write(dir.join("partition"), format!("{}\n", i + 1)).expect("w");
                links.push((format!("8:{minor}"), name, dir));
            }
            for (num, name, target) in links {
                for (sub, link) in [("dev/block", num), ("class/block", name)] {
                    fs::create_dir_all(sys.join(sub)).expect("mkdir");
                    std::os::unix::fs::symlink(&target, sys.join(sub).join(link)).expect("symlink");
                }
            }
        }
        root
    }

    fn dev(major: u32, minor: u32) -> dev_t {
        libc::makedev(major, minor)
    }

    #[test]
    fn partitions_map_to_their_disk() {
        let sys = fake_sys();
        assert_eq!(whole_disk(sys.path(), dev(8, 2)), Some(dev(8, 0)));
        assert_eq!(whole_disk(sys.path(), dev(8, 0)), Some(dev(8, 0)));
        assert_eq!(whole_disk(sys.path(), dev(8, 17)), Some(dev(8, 16)));
        assert_eq!(whole_disk(sys.path(), dev(0, 23)), None);
    }

    #[test]
    fn the_read_only_config_mount_protects_its_whole_disk() {
        let sys = fake_sys();
        let mountinfo = "\
22 1 0:20 / /proc rw,relatime - proc proc rw
30 1 8:2 / /mnt/config ro,nosuid,nodev,noexec - vfat /dev/sda2 ro,fmask=0133
31 1 8:17 / /data rw,nosuid - ext4 /dev/sdb1 rw
32 1 0:25 / /run/hv/config ro - tmpfs tmpfs ro
";
        let boot = BootMedium::gather(sys.path(), mountinfo, &[]);
        // The disk and each of its partitions, whichever is named.
        assert!(boot.holds(dev(8, 0)) && boot.holds(dev(8, 1)) && boot.holds(dev(8, 2)));
        // The writable data disk is not the boot medium.
        assert!(!boot.holds(dev(8, 16)) && !boot.holds(dev(8, 17)));
    }

    #[test]
    fn without_a_config_mount_the_image_labels_mark_the_boot_disk() {
        let sys = fake_sys();
        let part = |name: &str, label: &str| BlockDevice {
            name: name.into(),
            node: PathBuf::from("/dev").join(name),
            disk: None,
            part_label: None,
            part_uuid: None,
            fs: Some(FsInfo {
                fstype: FsType::Vfat,
                label: Some(label.into()),
                uuid: None,
            }),
        };
        let devices = [part("sda1", "HVBOOT"), part("sdb1", "vmdata")];
        let boot = BootMedium::gather(sys.path(), "", &devices);
        assert!(boot.holds(dev(8, 2)), "the other partition of the stick");
        assert!(!boot.holds(dev(8, 17)));
        assert!(BootMedium::gather(sys.path(), "", &[]).is_empty());
    }

    /// A loop device over a small file, detached on drop. The tests that
    /// use one need root and losetup (as CI has): without them they fail,
    /// saying so, rather than pass having checked nothing.
    pub struct LoopDevice {
        pub node: PathBuf,
        _file: tempfile::NamedTempFile,
    }

    impl LoopDevice {
        pub fn new() -> LoopDevice {
            let file = tempfile::NamedTempFile::new().expect("temporary file");
            file.as_file().set_len(1 << 20).expect("size the file");
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(file.path())
                .output()
                .expect("this test needs losetup (util-linux) and root");
            let node = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            assert!(
                out.status.success() && node.is_absolute(),
                "this test needs root to set up a loop device: losetup said {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            LoopDevice { node, _file: file }
        }

        /// A BootMedium whose only disk is this loop device, found as the
        /// kernel would report it mounted read-only.
        pub fn as_boot_medium(&self) -> BootMedium {
            let rdev = fs::metadata(&self.node).expect("stat loop").rdev();
            let mountinfo = format!(
                "30 1 {}:{} / /mnt/config ro - vfat {} ro\n",
                libc::major(rdev),
                libc::minor(rdev),
                self.node.display()
            );
            BootMedium::gather(Path::new(SYS_DIR), &mountinfo, &[])
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.node).status();
        }
    }

    #[test]
    fn a_real_block_device_is_matched_by_number() {
        let lo = LoopDevice::new();
        let boot = lo.as_boot_medium();
        assert!(!boot.is_empty());
        let meta = fs::metadata(&lo.node).expect("stat");
        assert!(boot.holds_node(&meta));
        // Any spelling of the path is the same device.
        let detour = Path::new("/dev/../dev").join(lo.node.file_name().expect("name"));
        assert!(boot.holds_node(&fs::metadata(detour).expect("stat")));
        assert!(!boot.holds_node(&fs::metadata("/dev/null").expect("stat")));
        assert!(!BootMedium::default().holds_node(&meta));
    }
}
