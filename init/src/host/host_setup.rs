//! Setting the host up as host.toml says, once the configuration is
//! loaded: hostname, network bridges, which disks are the boot medium,
//! data mounts. [`plan`] decides the steps (pure, tested); [`apply`]
//! carries them out, logging and living with each failure.

use std::path::{Path, PathBuf};

use hvconfig::guest::DiskSource;
use hvconfig::HostConfig;

use super::data_mounts;
use super::net::{self, Netlink};
use crate::boot::boot_medium::{BootMedium, MOUNTINFO, SYS_DIR};
use crate::boot::logger::Notice;
use crate::config_source::probe::{self, BlockDevice, DeviceCache};

/// One step of the host set-up, in the order they are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    SetHostname(String),
    /// Loopback and every bridge of host.toml, over netlink.
    SetUpNetwork,
    /// Something that cannot be done; said and skipped.
    Skip(Notice),
    /// Which disks guests and data mounts may only read: the one holding
    /// the mounted config partition; without one (config over HTTP), any
    /// disk flashed with the image, which may be the stick that booted.
    FindBootMedium {
        scan_devices: bool,
    },
    /// Mounts host.toml's `[[mount]]` entries (after the boot medium is
    /// known, so none of them lands on it writable).
    MountData,
}

/// What the host has once set up, for the guests and the shutdown.
#[derive(Debug, Default)]
pub struct HostState {
    pub boot_medium: BootMedium,
    /// The data mounts made, to unmount at shutdown.
    pub data_mounts: Vec<PathBuf>,
}

/// What `apply` works with.
pub struct HostContext<'a> {
    pub netlink: Option<&'a mut Netlink>,
    /// Scanned when first needed: for the boot medium when the config was
    /// fetched, and for data mounts.
    pub devices: &'a mut DeviceCache,
    /// Whether the config came from a mounted partition.
    pub config_mounted: bool,
    /// Every guest's disks: the devices they name (and their partitions)
    /// are never taken for a data mount.
    pub guest_disks: Vec<DiskSource>,
}

/// The device nodes `disks` name among `devices`: every device a label
/// matches, and a path as written and as resolved.
pub fn handed_nodes(disks: &[DiskSource], devices: &[BlockDevice]) -> Vec<PathBuf> {
    let mut nodes = Vec::new();
    for disk in disks {
        match disk {
            DiskSource::Path(p) => {
                nodes.push(p.clone());
                nodes.extend(std::fs::canonicalize(p).ok());
            }
            named => nodes.extend(
                devices
                    .iter()
                    .filter(|d| d.is_named_by(named))
                    .map(|d| d.node.clone()),
            ),
        }
    }
    nodes
}

/// The steps for `host`, given whether netlink is open and where the
/// configuration came from.
pub fn plan(host: &HostConfig, have_netlink: bool, config_mounted: bool) -> Vec<Step> {
    let mut steps = vec![Step::SetHostname(host.hostname.clone())];
    if have_netlink {
        steps.push(Step::SetUpNetwork);
    } else if !host.bridges.is_empty() {
        steps.push(Step::Skip(Notice::Error(
            "network: no netlink socket; bridges not set up".into(),
        )));
    }
    steps.push(Step::FindBootMedium {
        scan_devices: !config_mounted,
    });
    if !host.mounts.is_empty() {
        steps.push(Step::MountData);
    }
    steps
}

/// What to say about the boot medium found: a mounted config partition
/// must have been found in mountinfo, or guests could write to it.
pub fn check_boot_medium(config_mounted: bool, boot: &BootMedium) -> Option<Notice> {
    (config_mounted && boot.is_empty()).then(|| {
        Notice::Error(format!(
            "boot medium not found in {MOUNTINFO}: it is not protected from guests"
        ))
    })
}

/// Sets the host up; every failure is logged and carried on from.
pub fn apply(host: &HostConfig, ctx: HostContext<'_>) -> HostState {
    let HostContext {
        mut netlink,
        devices,
        config_mounted,
        guest_disks,
    } = ctx;
    let mut state = HostState::default();
    for step in plan(host, netlink.is_some(), config_mounted) {
        match step {
            Step::SetHostname(name) => {
                if let Err(e) = nix::unistd::sethostname(&name) {
                    log::warn!("hostname {name}: {e}");
                }
            }
            Step::SetUpNetwork => {
                if let Some(nl) = netlink.as_deref_mut() {
                    net::setup_host(nl, &host.bridges);
                }
            }
            Step::Skip(notice) => notice.log(),
            Step::FindBootMedium { scan_devices } => {
                let mountinfo = std::fs::read_to_string(MOUNTINFO).unwrap_or_default();
                let scanned = if scan_devices {
                    devices.devices()
                } else {
                    &[][..]
                };
                state.boot_medium = BootMedium::gather(Path::new(SYS_DIR), &mountinfo, scanned);
                if let Some(notice) = check_boot_medium(config_mounted, &state.boot_medium) {
                    notice.log();
                }
            }
            Step::MountData => {
                let all = devices.devices();
                let candidates = probe::not_handed(all, &handed_nodes(&guest_disks, all));
                state.data_mounts =
                    data_mounts::mount_all(&host.mounts, &candidates, &state.boot_medium);
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_devices_are_named_by_label_and_by_path() {
        let dev = |name: &str, label: &str| BlockDevice {
            name: name.into(),
            node: Path::new("/dev").join(name),
            disk: None,
            part_label: None,
            part_uuid: None,
            fs: Some(probe::FsInfo {
                fstype: probe::FsType::Ext4,
                label: Some(label.into()),
                uuid: None,
            }),
        };
        let devices = [
            dev("vdb", "vmdata"),
            dev("vdc", "bdisk"),
            dev("vdd", "bdisk"),
        ];
        let disks = [
            DiskSource::Label("bdisk".into()),
            DiskSource::Path("/nonexistent/x".into()),
        ];
        assert_eq!(
            handed_nodes(&disks, &devices),
            [
                PathBuf::from("/dev/vdc"),
                PathBuf::from("/dev/vdd"),
                PathBuf::from("/nonexistent/x")
            ]
        );
    }

    fn host(text: &str) -> HostConfig {
        hvconfig::parse_host(Path::new("/cfg/host.toml"), text).expect("valid host.toml")
    }

    #[test]
    fn defaults_set_the_hostname_network_and_boot_medium() {
        assert_eq!(
            plan(&HostConfig::default(), true, true),
            [
                Step::SetHostname("hv".into()),
                Step::SetUpNetwork,
                Step::FindBootMedium {
                    scan_devices: false
                },
            ]
        );
    }

    #[test]
    fn without_netlink_bridges_are_skipped_loudly() {
        let h = host("[[bridge]]\nname = \"br0\"\n");
        assert_eq!(
            plan(&h, false, true).get(1),
            Some(&Step::Skip(Notice::Error(
                "network: no netlink socket; bridges not set up".into()
            )))
        );
        // Without bridges there is nothing to miss.
        assert!(!plan(&HostConfig::default(), false, true)
            .iter()
            .any(|s| matches!(s, Step::Skip(_) | Step::SetUpNetwork)));
    }

    #[test]
    fn data_mounts_come_after_the_boot_medium() {
        let h =
            host("hostname = \"hv01\"\n[[mount]]\nsource = \"LABEL=vmdata\"\ntarget = \"/data\"\n");
        assert_eq!(
            plan(&h, true, false),
            [
                Step::SetHostname("hv01".into()),
                Step::SetUpNetwork,
                Step::FindBootMedium { scan_devices: true },
                Step::MountData,
            ]
        );
    }

    #[test]
    fn a_mounted_config_partition_must_be_found() {
        let empty = BootMedium::default();
        assert!(check_boot_medium(true, &empty)
            .is_some_and(|n| n.text().contains("not protected from guests")));
        assert_eq!(check_boot_medium(false, &empty), None);
    }
}
