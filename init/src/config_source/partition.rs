//! Finding, mounting and reading the configuration partition.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hvconfig::HostConfig;
use nix::mount::{mount, MsFlags};

use hvconfig::DeviceSource;

use super::probe::{self, BlockDevice};
use super::{Found, Loaded};

/// Where the config partition is mounted (read-only).
pub const CONFIG_DIR: &str = "/mnt/config";
pub const SYS_BLOCK: &str = "/sys/class/block";
pub const DEV_DIR: &str = "/dev";

/// The config partition, once mounted.
#[derive(Clone, Debug)]
pub struct ConfigMount {
    pub dir: PathBuf,
    pub device: BlockDevice,
}

/// Looks for the device `spec` names among the present block devices; a
/// label found on more than one device is an error naming them.
pub fn find_device(spec: &DeviceSource) -> Result<Option<BlockDevice>, probe::Ambiguous> {
    let devices = probe::scan(Path::new(SYS_BLOCK), Path::new(DEV_DIR));
    if let Some(dev) = probe::find(spec, &devices)? {
        return Ok(Some(dev.clone()));
    }
    // A path that is not a /sys/class/block node name (a by-id link, or
    // a device not listed yet) is probed directly.
    if let DeviceSource::Path(path) = spec {
        let Ok(file) = fs::File::open(path) else {
            return Ok(None);
        };
        let fs = probe::probe_fs(&file).ok().flatten();
        return Ok(Some(BlockDevice {
            name: path.display().to_string(),
            node: path.clone(),
            disk: None,
            part_label: None,
            part_uuid: None,
            fs,
        }));
    }
    Ok(None)
}

/// Mounts `device` read-only at `dir`: the config partition is the boot
/// medium, which init never writes to.
pub fn mount_config(device: &BlockDevice, dir: &Path) -> io::Result<ConfigMount> {
    let fstype = device.fs.as_ref().map_or("vfat", |f| f.fstype.mount_name());
    fs::create_dir_all(dir)?;
    mount(
        Some(device.node.as_path()),
        dir,
        Some(fstype),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        // Readable by the unprivileged vmm users; nothing is executed.
        (fstype == "vfat").then_some("fmask=0133,dmask=0022"),
    )
    .map_err(io::Error::from)?;
    Ok(ConfigMount {
        dir: dir.to_path_buf(),
        device: device.clone(),
    })
}

/// The config partition is there but would not mount.
#[derive(Debug, thiserror::Error)]
#[error("config partition {} ({spec}): mount: {source}", .node.display())]
pub struct MountError {
    pub node: PathBuf,
    pub spec: DeviceSource,
    pub source: io::Error,
}

/// One look for the config partition: find it, mount it, read it.
pub fn look(spec: &DeviceSource) -> Found {
    let dev = match find_device(spec) {
        Ok(Some(dev)) => dev,
        Ok(None) => return Found::Nothing,
        Err(e) => return Found::Ambiguous(e),
    };
    match mount_config(&dev, Path::new(CONFIG_DIR)) {
        Ok(mount) => {
            let loaded = load(&mount.dir);
            Found::Mounted(mount, Box::new(loaded))
        }
        Err(source) => Found::MountFailed(MountError {
            node: dev.node,
            spec: spec.clone(),
            source,
        }),
    }
}

/// Reads `dir/host.toml` (optional) and every `dir/guests/*.toml`.
pub fn load(dir: &Path) -> Loaded {
    let host_path = dir.join("host.toml");
    let mut errors = Vec::new();
    let host_toml_found = host_path.exists();
    let host = if host_toml_found {
        hvconfig::load_host(&host_path).unwrap_or_else(|e| {
            errors.push(e);
            HostConfig::default()
        })
    } else {
        HostConfig::default()
    };
    let mut guests = Vec::new();
    for result in hvconfig::load_guests_dir(&dir.join("guests")) {
        match result {
            Ok(guest) => guests.push(guest),
            Err(e) => errors.push(e),
        }
    }
    Loaded {
        host,
        guests,
        errors,
        host_toml_found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, text).expect("write");
    }

    #[test]
    fn empty_partition_gives_defaults_and_no_guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = load(dir.path());
        assert!(!loaded.host_toml_found);
        assert_eq!(loaded.host, HostConfig::default());
        assert!(loaded.guests.is_empty());
        assert!(loaded.errors.is_empty());
    }

    #[test]
    fn a_bad_guest_does_not_hide_the_good_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("host.toml"), "hostname = \"hv01\"\n");
        write(&root.join("example/bzImage"), "kernel");
        write(
            &root.join("guests/good.toml"),
            "[boot]\nkernel = \"../example/bzImage\"\n",
        );
        write(
            &root.join("guests/bad.toml"),
            "[boot]\nkernel = \"../example/bzImage\"\n[machine]\nvcpus = \"two\"\n",
        );
        write(&root.join("guests/README.txt"), "not a definition");
        let loaded = load(root);
        assert!(loaded.host_toml_found);
        assert_eq!(loaded.host.hostname, "hv01");
        let names: Vec<&str> = loaded.guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(loaded.errors.len(), 1);
        let err = loaded.errors.first().expect("error").to_string();
        assert!(err.contains("bad.toml:4:9:"), "{err}");
    }

    #[test]
    fn a_bad_host_toml_falls_back_to_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("host.toml"), "hostname = 5\n");
        let loaded = load(dir.path());
        assert_eq!(loaded.host, HostConfig::default());
        assert_eq!(loaded.errors.len(), 1);
        assert!(loaded
            .errors
            .first()
            .expect("error")
            .to_string()
            .contains("host.toml:1:"));
    }
}
