//! A stock distribution image as operators run it, on the whole appliance:
//! `scripts/debian-guest`'s Debian 12 image (Debian's cloud kernel, its
//! initramfs-tools initrd, systemd, cloud-init; systemd-boot on the ESP)
//! is the `base` of the guest's first disk, which init copies onto the data
//! disk at the first start; a second disk is a blank `size_gib` image. The
//! vmm boots what the copy holds, and cloud-init configures it from the
//! definition's `[cloud_init]`: the hostname from meta-data, a `runcmd`
//! that writes a marker onto the blank disk, then a reboot. Every boot
//! (`bootcmd`) reports the blank disk's size and what it holds, so the
//! marker is seen to survive a guest reboot and then a host reboot (a
//! second boot of the same stick and data disk).
//!
//! Needs hv.img (`./scripts/build`) and the Debian disk (cached;
//! debootstrap builds it on first use, which needs root).

mod host_common;

use std::fs;
use std::time::Duration;

use host_common::{make_ext4, wait_each, ConfigPartition};
use hv_tests::rig::debian_disk;
use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);
/// Copying the base (half a GiB of data) under TCG, then Debian's kernel,
/// systemd and cloud-init (Python) under nested KVM: minutes.
const FIRST_BOOT: Duration = Duration::from_secs(900);
const NEXT_BOOT: Duration = Duration::from_secs(600);
const POWER_OFF: Duration = Duration::from_secs(300);

const HOST_TOML: &str = r#"hostname = "rack1"

[[mount]]
source = "LABEL=vmdata"
target = "/data"
"#;

const DEBIAN_TOML: &str = r#"[machine]
memory_mib = 1024

[[disk]]
path = "/data/debian.img"
base = "/data/base/debian.img"

[[disk]]
path = "/data/scratch.img"
size_gib = 2

[cloud_init]
user_data = "debian/user-data"
"#;

/// The disks are vda and vdb, the seed vdc.
const USER_DATA: &str = r#"#cloud-config
bootcmd:
  - [sh, -c, 'echo "hv-boot: scratch $(cat /sys/block/vdb/size) sectors, holds [$(head -c 14 /dev/vdb | tr -dc a-z0-9-)]" >/dev/console']
runcmd:
  - [sh, -c, 'echo "hv-cloud-init: hostname=$(hostname)" >/dev/console']
  - [sh, -c, 'printf hv-marker-0042 | dd of=/dev/vdb conv=fsync 2>/dev/null']
power_state:
  mode: reboot
  condition: true
"#;

/// 2 GiB in 512-byte sectors.
const SCRATCH: &str = "4194304 sectors";

fn appliance(
    name: &str,
    stick: &std::path::Path,
    data: &std::path::Path,
) -> Result<Qemu, hv_tests::Error> {
    Qemu::builder(name)
        .seabios()
        .smp(2)
        .memory_mib(3072)
        .usb_disk(stick)
        .args([
            "-drive".to_string(),
            format!("if=none,id=vmdata,file={},format=raw", data.display()),
            "-device".into(),
            "virtio-blk-pci,drive=vmdata".into(),
        ])
        .fail_on(r"^\[example\] ")
        .spawn()
}

/// Ignored, with its reason: in the nested rig this test has not yet run to
/// its end. Of six runs (2026-12-02), every one created both images and
/// booted the copy. The last got through cloud-init, the guest's reboot
/// (the marker read back from the blank disk) and the host's power-off,
/// then stalled early in the guest's boot after the host's reboot, with
/// one L1 vCPU busy. Before it: two stalled or crawled in the guest's
/// second boot (one a cgroup carrying the last vmm's page cache, since
/// fixed), one ended in a silent L1 reset, and two stalled in cloud-init's
/// first stage. `vmm_stock_guest.rs` (the same image under the bare vmm)
/// and `disk_sources.rs` (images from a base) pass.
#[test]
#[ignore = "stalls in the nested rig (QEMU/TCG) during the Debian guest's boots; not yet run to its end there"]
fn debian_image_boots_from_a_provisioned_copy_with_cloud_init_and_keeps_its_writes(
) -> Result<(), hv_tests::Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let stick = dir.path().join("hv.img");
    fs::copy(artefact("hv.img"), &stick).expect("copying hv.img");

    let config = ConfigPartition::of(&stick);
    config.delete("guests/example.toml");
    config.write("host.toml", HOST_TOML);
    config.write("guests/debian.toml", DEBIAN_TOML);
    config.mkdir("guests/debian");
    config.write("guests/debian/user-data", USER_DATA);

    // The data disk holds only the base; mke2fs keeps its holes.
    let files = dir.path().join("data");
    fs::create_dir_all(files.join("base")).expect("mkdir");
    fs::copy(debian_disk(), files.join("base/debian.img")).expect("copying the Debian disk");
    let data = dir.path().join("vmdata.img");
    make_ext4(&data, "vmdata", &files, 8192);

    let mut vm = appliance("host_debian", &stick, &data)?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    wait_each(
        &mut vm,
        &[
            r"guest debian: disk 1: created /data/debian\.img, \d+ bytes, a sparse copy of /data/base/debian\.img",
            r"guest debian: disk 2: created /data/scratch\.img, 2147483648 bytes",
        ],
        FIRST_BOOT,
    )?;
    let first = vm.wait_for(r"^\[debian\] hv-boot: scratch ", FIRST_BOOT)?;
    let configured = vm.wait_for(r"^\[debian\] hv-cloud-init: ", FIRST_BOOT)?;
    // cloud-init's power_state reboots the guest; init starts it again.
    vm.wait_for(r"guest debian: guest rebooted \(exit 3\)", NEXT_BOOT)?;
    let second = vm.wait_for(r"^\[debian\] hv-boot: scratch ", NEXT_BOOT)?;
    vm.powerdown()?;
    let status = vm.wait_exit(POWER_OFF)?;
    assert!(status.success(), "QEMU ended with {status}");

    assert_eq!(
        first,
        format!("[debian] hv-boot: scratch {SCRATCH}, holds []")
    );
    assert_eq!(configured, "[debian] hv-cloud-init: hostname=debian");
    assert_eq!(
        second,
        format!("[debian] hv-boot: scratch {SCRATCH}, holds [hv-marker-0042]")
    );

    // The host reboots: the same stick and data disk, the images reused.
    let mut vm = appliance("host_debian_again", &stick, &data)?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    let third = vm.wait_for(r"^\[debian\] hv-boot: scratch ", NEXT_BOOT)?;
    assert_eq!(
        third,
        format!("[debian] hv-boot: scratch {SCRATCH}, holds [hv-marker-0042]")
    );
    let console = vm.console_text();
    assert!(
        !console.contains("guest debian: disk 1: created"),
        "the image was created again (see {})",
        vm.log_path().display()
    );
    vm.powerdown()?;
    let status = vm.wait_exit(POWER_OFF)?;
    assert!(status.success(), "QEMU ended with {status}");
    Ok(())
}
