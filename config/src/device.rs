//! How a configuration names a block device: `LABEL=x`, `PARTLABEL=x`,
//! `UUID=x` or a path. One type and one parser for a guest's disks,
//! host.toml's data mounts and init's `hv.config=`; each [`Context`] says
//! which of the forms it allows and how its paths must look.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// A block device (or, for disks, a file) as a configuration names it.
/// Labels and UUIDs are resolved by init, which knows the block devices;
/// the vmm only ever opens a path or an fd.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceSource {
    /// `LABEL=x`: the file system label of a host partition.
    Label(String),
    /// `PARTLABEL=x`: the GPT partition name of a host partition.
    PartLabel(String),
    /// `UUID=x`: the file system UUID of a host partition.
    Uuid(String),
    /// `PARTUUID=x`: the GPT unique partition GUID of a host partition;
    /// what hv-image writes into the boot loaders' `hv.config=`, since no
    /// other disk carries it. Not for disks.
    PartUuid(String),
    /// A regular file or a device node, as written (disks resolve a
    /// relative one against the definition's directory).
    Path(PathBuf),
}

/// Where a device is named, which decides what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// `[[disk]] path` of a guest: a file or device path without `..`,
    /// `LABEL=` or `PARTLABEL=`; never `UUID=`.
    Disk,
    /// `[[mount]] source` of host.toml: `LABEL=`, `PARTLABEL=`, `UUID=` or
    /// a normalised `/dev/...` path.
    Mount,
    /// `hv.config=` on the kernel command line: `LABEL=`, `PARTLABEL=`,
    /// `UUID=` or an absolute path.
    KernelCmdline,
}

/// Why a device name was refused; the message says what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSourceError {
    /// A disk's `LABEL=` or `PARTLABEL=` without a label.
    DiskNeedsLabel {
        prefix: &'static str,
    },
    DiskByUuid,
    DiskParentDir {
        path: String,
    },
    /// A disk path into a kernel file system (`/proc`, `/sys`) or init's
    /// own run-time tree (`/run`): never a disk.
    DiskPseudoFs {
        path: String,
        root: &'static str,
    },
    /// A mount source's `LABEL=`, `PARTLABEL=` or `UUID=` without a value.
    MountNeedsValue {
        source: String,
    },
    MountNotADevice {
        source: String,
    },
    NotADevice {
        text: String,
    },
}

impl fmt::Display for DeviceSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSourceError::DiskNeedsLabel { prefix } => {
                write!(f, "path '{prefix}' needs a label after '='")
            }
            DeviceSourceError::DiskByUuid => f.write_str(
                "disks cannot be chosen by UUID (allowed: a path, LABEL=x or PARTLABEL=x)",
            ),
            DeviceSourceError::DiskParentDir { path } => write!(
                f,
                "path '{path}' must not contain '..' (use an absolute path such as \
                 /data/web.img, or one inside the definition's directory)"
            ),
            DeviceSourceError::DiskPseudoFs { path, root } => write!(
                f,
                "path '{path}' is under {root}, which holds no disks (a disk is a block device \
                 or a file beneath a [[mount]] target of host.toml, such as /data/web.img)"
            ),
            DeviceSourceError::MountNeedsValue { source } => {
                write!(f, "source '{source}' needs a value after '='")
            }
            DeviceSourceError::MountNotADevice { source } => write!(
                f,
                "source '{source}' is not a device (allowed: LABEL=x, PARTLABEL=x, UUID=x or an \
                 absolute /dev/... path)"
            ),
            DeviceSourceError::NotADevice { text } => write!(
                f,
                "'{text}' is not a device (allowed: LABEL=x, PARTLABEL=x, UUID=x or an absolute path)"
            ),
        }
    }
}

impl std::error::Error for DeviceSourceError {}

const LABEL: &str = "LABEL=";
/// Trees that never hold a guest's disk: the kernel's proc and sysfs, and
/// init's run-time files (other guests' console logs, the jails).
const DISK_FREE_ROOTS: [&str; 3] = ["/proc", "/sys", "/run"];
const PARTLABEL: &str = "PARTLABEL=";
const UUID: &str = "UUID=";
const PARTUUID: &str = "PARTUUID=";

impl DeviceSource {
    /// Reads `text` as `context` allows it.
    pub fn parse(text: &str, context: Context) -> Result<DeviceSource, DeviceSourceError> {
        type Make = fn(String) -> DeviceSource;
        let tagged: [(&'static str, Make); 4] = [
            (LABEL, DeviceSource::Label),
            (PARTLABEL, DeviceSource::PartLabel),
            (UUID, DeviceSource::Uuid),
            (PARTUUID, DeviceSource::PartUuid),
        ];
        for (prefix, make) in tagged {
            let Some(value) = text.strip_prefix(prefix) else {
                continue;
            };
            return match context {
                Context::Disk if prefix == UUID || prefix == PARTUUID => {
                    Err(DeviceSourceError::DiskByUuid)
                }
                Context::Disk if value.is_empty() => {
                    Err(DeviceSourceError::DiskNeedsLabel { prefix })
                }
                Context::Mount if value.is_empty() || value.contains('\0') => {
                    Err(DeviceSourceError::MountNeedsValue {
                        source: text.to_string(),
                    })
                }
                Context::KernelCmdline if value.is_empty() => Err(DeviceSourceError::NotADevice {
                    text: text.to_string(),
                }),
                _ => Ok(make(value.to_string())),
            };
        }
        let path = Path::new(text);
        match context {
            // A disk is opened writable: '..' could climb from the config
            // partition to /dev and name the boot medium itself.
            Context::Disk if path.components().any(|c| c == Component::ParentDir) => {
                Err(DeviceSourceError::DiskParentDir {
                    path: text.to_string(),
                })
            }
            Context::Disk => match DISK_FREE_ROOTS.iter().find(|r| path.starts_with(r)) {
                Some(root) => Err(DeviceSourceError::DiskPseudoFs {
                    path: text.to_string(),
                    root,
                }),
                None => Ok(DeviceSource::Path(path.to_path_buf())),
            },
            Context::Mount => {
                let clean = path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
                if text.starts_with("/dev/") && text.len() > 5 && clean && !text.contains('\0') {
                    Ok(DeviceSource::Path(path.components().collect()))
                } else {
                    Err(DeviceSourceError::MountNotADevice {
                        source: text.to_string(),
                    })
                }
            }
            Context::KernelCmdline if text.starts_with('/') => {
                Ok(DeviceSource::Path(path.to_path_buf()))
            }
            Context::KernelCmdline => Err(DeviceSourceError::NotADevice {
                text: text.to_string(),
            }),
        }
    }

    /// The path, for a source that is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DeviceSource::Path(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSource::Label(l) => write!(f, "{LABEL}{l}"),
            DeviceSource::PartLabel(l) => write!(f, "{PARTLABEL}{l}"),
            DeviceSource::Uuid(u) => write!(f, "{UUID}{u}"),
            DeviceSource::PartUuid(u) => write!(f, "{PARTUUID}{u}"),
            DeviceSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, context: Context) -> DeviceSource {
        DeviceSource::parse(text, context).unwrap()
    }

    fn err(text: &str, context: Context) -> String {
        DeviceSource::parse(text, context).unwrap_err().to_string()
    }

    #[test]
    fn every_context_reads_labels() {
        for context in [Context::Disk, Context::Mount, Context::KernelCmdline] {
            assert_eq!(ok("LABEL=a b", context), DeviceSource::Label("a b".into()));
            assert_eq!(
                ok("PARTLABEL=p", context),
                DeviceSource::PartLabel("p".into())
            );
        }
    }

    #[test]
    fn only_disks_refuse_uuids() {
        assert_eq!(
            ok("UUID=0a1b", Context::Mount),
            DeviceSource::Uuid("0a1b".into())
        );
        assert_eq!(
            ok("UUID=0a1b", Context::KernelCmdline),
            DeviceSource::Uuid("0a1b".into())
        );
        assert_eq!(
            ok("PARTUUID=0A1B-2C", Context::KernelCmdline),
            DeviceSource::PartUuid("0A1B-2C".into())
        );
        assert!(DeviceSource::parse("PARTUUID=", Context::KernelCmdline).is_err());
        for text in ["UUID=0a1b", "PARTUUID=0a1b", "UUID="] {
            assert_eq!(
                err(text, Context::Disk),
                "disks cannot be chosen by UUID (allowed: a path, LABEL=x or PARTLABEL=x)"
            );
        }
    }

    #[test]
    fn empty_values_are_named_per_context() {
        assert_eq!(
            err("PARTLABEL=", Context::Disk),
            "path 'PARTLABEL=' needs a label after '='"
        );
        assert_eq!(
            err("UUID=", Context::Mount),
            "source 'UUID=' needs a value after '='"
        );
        assert!(DeviceSource::parse("LABEL=", Context::KernelCmdline).is_err());
    }

    #[test]
    fn paths_per_context() {
        assert_eq!(
            ok("images/a.img", Context::Disk),
            DeviceSource::Path("images/a.img".into())
        );
        assert!(err("../dev/sda", Context::Disk).contains("must not contain '..'"));
        for bad in [
            "/run/hv/guests/b/console.log",
            "/sys/block/sda/size",
            "/proc/kcore",
        ] {
            assert!(
                err(bad, Context::Disk).contains("which holds no disks"),
                "{bad}"
            );
        }
        assert_eq!(
            err("/proc/self/fd/3", Context::Disk),
            "path '/proc/self/fd/3' is under /proc, which holds no disks (a disk is a block \
             device or a file beneath a [[mount]] target of host.toml, such as /data/web.img)"
        );
        // Path::starts_with compares components: /running is not /run.
        assert_eq!(
            ok("/running/x.img", Context::Disk),
            DeviceSource::Path("/running/x.img".into())
        );
        assert_eq!(
            ok("/dev//sdb1", Context::Mount),
            DeviceSource::Path("/dev/sdb1".into())
        );
        for bad in ["sda1", "/dev/", "/dev/../sda", "/data/x"] {
            assert!(
                err(bad, Context::Mount).contains("is not a device"),
                "{bad}"
            );
        }
        assert_eq!(
            ok("/dev/sdb1", Context::KernelCmdline),
            DeviceSource::Path("/dev/sdb1".into())
        );
        assert!(DeviceSource::parse("sdb1", Context::KernelCmdline).is_err());
    }

    #[test]
    fn display_writes_what_parse_reads() {
        for text in [
            "LABEL=x",
            "PARTLABEL=y",
            "UUID=z",
            "PARTUUID=w",
            "/dev/sda1",
        ] {
            assert_eq!(ok(text, Context::Mount).to_string(), text);
        }
    }
}
