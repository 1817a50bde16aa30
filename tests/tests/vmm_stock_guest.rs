//! A stock distribution boots unmodified from its own disk and is
//! configured by cloud-init: `scripts/debian-guest`'s Debian 12 image
//! (Debian's cloud kernel, with virtio as modules and no
//! `virtio_mmio.device=` support, its initramfs-tools initrd, systemd and
//! cloud-init; systemd-boot on the ESP with a Boot Loader Specification
//! entry), found by the vmm on the disk, and a NoCloud seed the vmm builds
//! from the definition's `[cloud_init]`.
//!
//! The disk is the L1's /dev/vda (a QEMU overlay: the cached image is never
//! written). Needs the host kernel (`scripts/kernel host`, cached), the
//! static vmm from `./scripts/build`, and the Debian disk (cached;
//! debootstrap builds it on first use, which needs root).

use std::time::Duration;

use hv_tests::rig::{debian_disk, Rig};
use hv_tests::Disk;

/// The host kernel booting under TCG, up to its init script.
const L1_UP: Duration = Duration::from_secs(240);
/// From the vmm's start to the disk search's result.
const FOUND: Duration = Duration::from_secs(120);
/// Debian's kernel, udev, systemd and cloud-init (Python) under nested
/// KVM in TCG: minutes, far slower than our own guest kernel.
const GUEST_UP: Duration = Duration::from_secs(900);
const STOP: Duration = Duration::from_secs(300);

const USER_DATA: &str = r#"#cloud-config
runcmd:
  - [sh, -c, 'echo "hv-cloud-init: hostname=$(hostname) root=$(findmnt -no FSTYPE /)" >/dev/console']
power_state:
  mode: poweroff
  condition: true
"#;

#[test]
fn debian_cloud_image_boots_from_its_own_disk_with_cloud_init() -> Result<(), hv_tests::Error> {
    let definition = r#"
[machine]
vcpus = 1
memory_mib = 1024

[boot]
cmdline = "console=ttyS0 panic=-1"

[[disk]]
path = "/dev/vda"

[cloud_init]
user_data = "user-data"
"#;
    let script = r#"
echo "rig: disk $(cat /sys/block/vda/size 2>&1) sectors"
(timeout -s KILL 1500 /bin/vmm --guest /guest/debian.toml --uid 1000 --gid 1000 \
    </dev/null 2>&1; echo "rig: vmm exit=$?")
"#;
    let mut rig = Rig::new(script)?;
    rig.initramfs()
        .file("guest/debian.toml", 0o644, definition)
        .file("guest/user-data", 0o644, USER_DATA);
    let mut vm = rig
        .machine("vmm_stock_guest_debian")?
        .disk(Disk::virtio(debian_disk()))
        .spawn()?;
    vm.wait_for(r"^rig: L1 up at .* kvm yes$", L1_UP)?;
    let found = vm.wait_for(r"booting .*vmlinuz", FOUND)?;
    let kernel = vm.wait_for(r"Linux version \S+-cloud-amd64", GUEST_UP)?;
    let configured = vm.wait_for(r"^hv-cloud-init: ", GUEST_UP)?;
    let exit = vm.wait_for(r"^rig: vmm exit=\d+$", STOP)?;
    vm.wait_for(r"^rig: done$", STOP)?;
    vm.wait_exit(STOP)?;

    // systemd-boot's entry on the ESP, with the initrd it names.
    assert!(found.contains("loader/entries/debian-"), "{found}");
    assert!(found.ends_with(" with its initrd"), "{found}");
    assert!(kernel.contains("Debian"), "Debian's own kernel: {kernel}");
    // meta-data's local-hostname is the guest's name; / is the disk's ext4.
    assert_eq!(configured, "hv-cloud-init: hostname=debian root=ext4");
    // cloud-init's power_state powered the guest off cleanly.
    assert_eq!(exit, "rig: vmm exit=0");
    Ok(())
}
