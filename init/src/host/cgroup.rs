//! cgroup v2 limits for each guest's vmm: memory.max bounds a runaway
//! vmm, cpu.weight shares CPU in proportion to vCPUs.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Parent of every guest's cgroup.
const HV_GROUP: &str = "hv";
/// Controllers guests are limited by, where the kernel has them.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Fixed memory the vmm needs beside guest RAM (binary, device queues,
/// KVM's own structures charged to the cgroup), plus a share that grows
/// with guest RAM for page tables.
const OVERHEAD_MIB: u64 = 64;
const OVERHEAD_PER_MIB_DIVISOR: u64 = 32;

pub fn memory_max_bytes(memory_mib: u32) -> u64 {
    let mib = u64::from(memory_mib);
    (mib + OVERHEAD_MIB + mib / OVERHEAD_PER_MIB_DIVISOR) << 20
}

/// The vmm runs a thread per vCPU, one worker per virtio device (at most
/// 16 disks, 8 NICs and an entropy device) and a few of its own; beyond
/// that a vmm is misbehaving and must not exhaust the host's pids.
const PIDS_BEYOND_VCPUS: u64 = 32;

pub fn pids_max(vcpus: u8) -> u64 {
    u64::from(vcpus) + PIDS_BEYOND_VCPUS
}

/// cpu.weight in the kernel's 1..=10000 range; 100 per vCPU.
pub fn cpu_weight(vcpus: u8) -> u64 {
    (u64::from(vcpus) * 100).clamp(1, 10_000)
}

/// Creates the `hv` group under `root` with the controllers guests need.
/// Returns its path.
pub fn setup(root: &Path) -> io::Result<PathBuf> {
    let base = root.join(HV_GROUP);
    // One unknown name fails the whole write, so ask only for what the
    // kernel offers.
    let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let enable = enable_line(&available);
    // Controllers must be enabled level by level from the root down.
    fs::write(root.join("cgroup.subtree_control"), &enable)?;
    match fs::create_dir(&base) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    fs::write(base.join("cgroup.subtree_control"), &enable)?;
    for missing in CONTROLLERS.iter().filter(|c| !enable.contains(*c)) {
        log::warn!("cgroups: the kernel has no {missing} controller");
    }
    Ok(base)
}

fn enable_line(available: &str) -> String {
    let have: Vec<&str> = available.split_whitespace().collect();
    CONTROLLERS
        .iter()
        .filter(|c| have.contains(c))
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates (or reuses) the guest's group, applies its limits and returns
/// the directory opened for `clone3(CLONE_INTO_CGROUP)`.
pub fn guest_group(base: &Path, name: &str, memory_mib: u32, vcpus: u8) -> io::Result<File> {
    let dir = base.join(name);
    // A new vmm gets a new group: the page cache the last one filled
    // through its disks stays charged to the group it was charged to, and
    // a reused group would start near its memory.max, reclaiming on every
    // guest page fault. Removing the empty group hands those charges to the
    // parent. A group still holding a process (EBUSY) is reused as it is.
    match fs::remove_dir(&dir) {
        Err(e)
            if e.kind() != io::ErrorKind::NotFound
                && !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) =>
        {
            log::warn!("cgroups: cannot remove {}: {e}", dir.display());
        }
        _ => {}
    }
    match fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    // A limit file exists only if its controller is enabled.
    if dir.join("memory.max").exists() {
        fs::write(
            dir.join("memory.max"),
            memory_max_bytes(memory_mib).to_string(),
        )?;
    }
    if dir.join("memory.swap.max").exists() {
        // Swapped-out guest RAM would hide overuse and stall the guest.
        fs::write(dir.join("memory.swap.max"), "0")?;
    }
    if dir.join("cpu.weight").exists() {
        fs::write(dir.join("cpu.weight"), cpu_weight(vcpus).to_string())?;
    }
    if dir.join("pids.max").exists() {
        fs::write(dir.join("pids.max"), pids_max(vcpus).to_string())?;
    }
    File::open(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(memory_max_bytes(512), (512 + 64 + 16) << 20);
        assert_eq!(memory_max_bytes(0), 64 << 20);
        assert_eq!(cpu_weight(1), 100);
        assert_eq!(cpu_weight(4), 400);
        assert_eq!(cpu_weight(255), 10_000);
        assert_eq!(pids_max(1), 33);
        assert_eq!(pids_max(32), 64);
    }

    #[test]
    fn only_available_controllers_are_enabled() {
        assert_eq!(
            enable_line("cpuset cpu io memory hugetlb pids rdma"),
            "+memory +cpu +pids"
        );
        assert_eq!(enable_line("cpu io"), "+cpu");
        assert_eq!(enable_line(""), "");
    }

    #[test]
    fn groups_are_written_in_place() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").expect("w");
        let base = setup(root.path()).expect("setup");
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).expect("read"),
            "+memory +cpu +pids"
        );
        // The kernel creates these when the controllers are enabled.
        let dir = base.join("web");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("memory.max"), "max").expect("w");
        fs::write(dir.join("cpu.weight"), "100").expect("w");
        fs::write(dir.join("pids.max"), "max").expect("w");
        guest_group(&base, "web", 1024, 2).expect("group");
        // Reuse after a restart.
        guest_group(&base, "web", 1024, 2).expect("group again");
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).expect("read"),
            ((1024u64 + 64 + 32) << 20).to_string()
        );
        assert_eq!(
            fs::read_to_string(dir.join("cpu.weight")).expect("read"),
            "200"
        );
        assert_eq!(
            fs::read_to_string(dir.join("pids.max")).expect("read"),
            "34"
        );
    }
}
