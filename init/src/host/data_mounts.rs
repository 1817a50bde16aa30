//! The `[[mount]]` entries of host.toml: data file systems mounted
//! read-write for guests' disk images, unmounted again at shutdown.

use std::fs;
use std::io;
use std::path::PathBuf;

use hvconfig::host::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::boot::boot_medium::BootMedium;
use crate::config_source::probe::{self, BlockDevice};

/// Mounts every entry whose device is present and returns the mount
/// points made, in order. Nothing on `boot` is mounted writable.
pub fn mount_all(mounts: &[Mount], devices: &[BlockDevice], boot: &BootMedium) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for m in mounts {
        let spec = &m.source;
        match mount_one(m, devices, boot) {
            Ok(fstype) => {
                log::info!("mounted {spec} on {} ({fstype})", m.target.display());
                done.push(m.target.clone());
            }
            Err(e) => log::error!("mount {spec} on {}: {e}", m.target.display()),
        }
    }
    done
}

fn mount_one(m: &Mount, devices: &[BlockDevice], boot: &BootMedium) -> io::Result<String> {
    let dev = probe::find(&m.source, devices)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such device"))?;
    if boot.holds_node(&fs::metadata(&dev.node)?) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is on the boot medium, which is never written",
                dev.node.display()
            ),
        ));
    }
    let fstype = match (&m.fstype, &dev.fs) {
        (Some(t), _) => t.clone(),
        (None, Some(fs)) => fs.fstype.mount_name().to_string(),
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "no known file system on {}; give fstype",
                    dev.node.display()
                ),
            ))
        }
    };
    fs::create_dir_all(&m.target)?;
    mount(
        Some(dev.node.as_path()),
        &m.target,
        Some(fstype.as_str()),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    Ok(fstype)
}

/// Unmounts in reverse order. A busy file system is detached so the
/// kernel finishes it once the last user is gone; sync has run before.
pub fn unmount_all(targets: &[PathBuf]) {
    for target in targets.iter().rev() {
        if let Err(e) = umount2(target, MntFlags::empty()) {
            log::warn!("unmount {}: {e}; detaching", target.display());
            let _ = umount2(target, MntFlags::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvconfig::DeviceSource;

    #[test]
    fn the_boot_medium_is_never_mounted_writable() {
        let m = Mount {
            source: DeviceSource::Label("nothere".into()),
            target: "/data".into(),
            fstype: Some("ext4".into()),
        };
        let err = mount_one(&m, &[], &BootMedium::default()).expect_err("none");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let lo = crate::boot::boot_medium::tests::LoopDevice::new();
        let name = lo.node.file_name().expect("name").to_string_lossy();
        let devices = [BlockDevice {
            name: name.to_string(),
            node: lo.node.clone(),
            disk: None,
            part_label: None,
            part_uuid: None,
            fs: None,
        }];
        let m = Mount {
            source: DeviceSource::Path(lo.node.clone()),
            ..m
        };
        let err = mount_one(&m, &devices, &lo.as_boot_medium()).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("is on the boot medium"), "{err}");
    }
}
