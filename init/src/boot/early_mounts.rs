//! The pseudo file systems every later step depends on.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

struct EarlyMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Order matters: cgroup2 lives below /sys.
const EARLY_MOUNTS: &[EarlyMount] = &[
    EarlyMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    EarlyMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    EarlyMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    EarlyMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
    },
    EarlyMount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
];

/// Outcome of one early mount, kept until the logger can report it.
pub struct MountReport {
    pub target: &'static str,
    pub result: Result<(), Errno>,
}

/// Mounts /proc, /sys, /dev, /run and the cgroup2 hierarchy. Failures are
/// returned, not fatal: a PID 1 with a missing /sys still has to supervise.
pub fn mount_all() -> Vec<MountReport> {
    EARLY_MOUNTS
        .iter()
        .map(|m| MountReport {
            target: m.target,
            result: mount_one(m),
        })
        .collect()
}

fn mount_one(m: &EarlyMount) -> Result<(), Errno> {
    let target = Path::new(m.target);
    if !target.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(target)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    }
    match mount(Some(m.source), target, Some(m.fstype), m.flags, m.data) {
        // Already mounted (e.g. the kernel auto-mounted devtmpfs).
        Err(Errno::EBUSY) => Ok(()),
        other => other,
    }
}
