//! A guest with a `[cloud_init]` table, run by the whole appliance: init
//! finds the seed files on the config partition (edited with mtools, as on
//! a laptop), binds them into the guest's jail, and the jailed vmm presents
//! them as a read-only disk labelled CIDATA with the generated meta-data.
//! The test guest kernel has no vfat, so the guest reads the volume raw:
//! the boot-sector label and the files' text (each small file sits whole in
//! its own cluster).

mod host_common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use host_common::{wait_each, ConfigPartition};
use hv_tests::rig::Cpio;
use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);
const GUEST_UP: Duration = Duration::from_secs(240);
const POWER_OFF: Duration = Duration::from_secs(120);

const HOST_TOML: &str = "hostname = \"e2e\"\n";

/// No disks of its own: the seed is vda.
const SEED_TOML: &str = r#"[boot]
kernel = "../example/bzImage"
initrd = "../e2e/initrd.img"
cmdline = "console=ttyS0 quiet"

[machine]
memory_mib = 96

[lifecycle]
restart = "never"

[cloud_init]
user_data = "seed/user-data"
network_config = "seed/network-config"
"#;

const USER_DATA: &str = "#cloud-config\nrig_user_data: from-the-config-partition\n";
const NETWORK_CONFIG: &str = "version: 2\nrig_network_config: also-from-there\n";

/// PID 1 of the test guest (busybox sh).
const GUEST_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "hv-e2e: seed: $*"; }
say "vda ro=$(cat /sys/block/vda/ro) serial=$(cat /sys/block/vda/serial) label=$(dd if=/dev/vda bs=1 skip=43 count=11 2>/dev/null | tr -d ' ')"
strings /dev/vda | grep -E '^(instance-id|local-hostname|rig_user_data|rig_network_config):' |
	while read -r line; do say "file $line"; done
[ -b /dev/vdb ] && say "vdb exists" || say "no vdb"
say "done"
poweroff -f
"#;

#[test]
fn init_hands_a_guest_its_cloud_init_seed() -> Result<(), hv_tests::Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let stick = dir.path().join("hv.img");
    fs::copy(artefact("hv.img"), &stick).expect("copying hv.img");

    let initrd = dir.path().join("initrd.img");
    let mut guest = Cpio::new();
    guest
        .copy("bin/busybox", 0o755, Path::new("/bin/busybox"))
        .expect("reading /bin/busybox (busybox-static)");
    for dir in ["dev", "proc", "sys", "tmp"] {
        guest.dir(dir);
    }
    guest
        .char_device("dev/console", 5, 1)
        .file("init", 0o755, GUEST_INIT);
    guest.write_gz(&initrd).expect("writing the guest initrd");

    let config = ConfigPartition::of(&stick);
    config.delete("guests/example.toml");
    config.write("host.toml", HOST_TOML);
    config.write("guests/seed.toml", SEED_TOML);
    config.mkdir("guests/seed");
    config.write("guests/seed/user-data", USER_DATA);
    config.write("guests/seed/network-config", NETWORK_CONFIG);
    config.mkdir("e2e");
    config.copy(&initrd, "e2e/initrd.img");

    let mut vm = Qemu::builder("host_cloud_init")
        .seabios()
        .smp(2)
        .memory_mib(2048)
        .usb_disk(&stick)
        .fail_on(r"^\[example\] ")
        .spawn()?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    let instance_id = hvconfig::cloud_init::instance_id("seed", SEED_TOML);
    let lines = [
        r"^\[seed\] hv-e2e: seed: vda ro=1 serial=cidata label=CIDATA$".to_string(),
        format!(r#"^\[seed\] hv-e2e: seed: file instance-id: "{instance_id}"$"#),
        r#"^\[seed\] hv-e2e: seed: file local-hostname: "seed"$"#.to_string(),
        r"^\[seed\] hv-e2e: seed: file rig_network_config: also-from-there$".to_string(),
        r"^\[seed\] hv-e2e: seed: file rig_user_data: from-the-config-partition$".to_string(),
        r"^\[seed\] hv-e2e: seed: no vdb$".to_string(),
        r"^\[seed\] hv-e2e: seed: done$".to_string(),
        r"guest seed: guest powered off \(exit 0\)".to_string(),
    ];
    let patterns: Vec<&str> = lines.iter().map(String::as_str).collect();
    wait_each(&mut vm, &patterns, GUEST_UP)?;

    vm.powerdown()?;
    let status = vm.wait_exit(POWER_OFF)?;
    assert!(status.success(), "QEMU ended with {status}");
    Ok(())
}
