//! The whole appliance with a configuration a user wrote: the config
//! partition of a copy of `hv.img` is edited with mtools (as on a laptop),
//! two more disks hold the guests' disks, and one boot checks that
//!
//! - the edit is what runs: the example guest is gone, our guests start;
//! - two guests on the host bridge reach each other and the host;
//! - each guest gets its own disk: a file on the data disk that host.toml
//!   mounts, or a whole host partition named by its label;
//! - a guest that powers off is restarted (`restart = "always"`), and so is
//!   one whose kernel panics (`restart = "on-failure"`);
//! - a broken definition is reported with file:line:col while the others run;
//! - the ACPI power button stops every guest cleanly (they write a marker to
//!   disk on the way down) and powers the host off, and the markers are on
//!   the disks afterwards.

mod host_common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use host_common::{debugfs_cat, make_ext4, wait_each, ConfigPartition};
use hv_tests::rig::Cpio;
use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);
/// Four nested guests booting at once on two emulated CPUs.
const GUESTS_UP: Duration = Duration::from_secs(300);
/// host.toml gives guests 30 s; init then unmounts and powers off.
const POWER_OFF: Duration = Duration::from_secs(120);

const HOST_TOML: &str = r#"hostname = "e2e"
shutdown_timeout_s = 30

[[bridge]]
name = "br0"
interfaces = []
address = "10.0.0.1/24"

[[mount]]
source = "LABEL=vmdata"
target = "/data"
"#;

/// A guest on br0 with one disk; `role`, `ip` and `peer` reach the guest's
/// /init as environment variables (unknown kernel parameters).
fn net_guest(name: &str, vcpus: u8, disk: &str, ip: &str, peer: &str) -> String {
    format!(
        r#"[machine]
vcpus = {vcpus}
memory_mib = 96

[boot]
kernel = "../example/bzImage"
initrd = "../e2e/initrd.img"
cmdline = "console=ttyS0 quiet hv_name={name} hv_role=net hv_ip={ip} hv_peer={peer}"

[[disk]]
path = "{disk}"

[[net]]
bridge = "br0"

[lifecycle]
restart = "on-failure"
"#
    )
}

/// Powers itself off a second after booting; `always` brings it back.
const EXITER_TOML: &str = r#"[boot]
kernel = "../example/bzImage"
initrd = "../e2e/initrd.img"
cmdline = "console=ttyS0 quiet hv_name=c hv_role=exit"

[machine]
memory_mib = 96

[lifecycle]
restart = "always"
"#;

/// Its init exits: the kernel panics and, with panic=-1, reboots at once.
const CRASHER_TOML: &str = r#"[boot]
kernel = "../example/bzImage"
initrd = "../e2e/initrd.img"
cmdline = "console=ttyS0 quiet panic=-1 hv_name=d hv_role=crash"

[machine]
memory_mib = 96

[lifecycle]
restart = "on-failure"
"#;

/// vcpus out of range: line 2, column 9.
const BROKEN_TOML: &str = "[machine]\nvcpus = 99\n\n[boot]\nkernel = \"../example/bzImage\"\n";

/// PID 1 of the test guests (busybox sh).
const GUEST_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "hv-e2e: $hv_name: $*"; }

if [ "$hv_role" = exit ]; then
	say "up, powering off in 1 s"
	sleep 1
	poweroff -f
fi
if [ "$hv_role" = crash ]; then
	say "up, crashing"
	exit 1
fi

# The host asks for a clean shutdown with Ctrl-Alt-Del (SIGINT to PID 1
# once ctrl-alt-del is 0) and the ACPI power button.
stop() {
	echo "hv-e2e marker: $hv_name shut down cleanly" | dd of=/dev/vda conv=fsync 2>/dev/null
	sync
	say "marker written, powering off"
	poweroff -f
}
trap stop INT TERM USR2 PWR
echo 0 >/proc/sys/kernel/ctrl-alt-del

say "$(grep -c ^processor /proc/cpuinfo) cpus, disk says $(head -n 1 /dev/vda)"
ip link set lo up
ip addr add "$hv_ip/24" dev eth0
ip link set eth0 up
for target in "$hv_peer" 10.0.0.1; do
	tries=0
	until ping -c 1 -W 1 "$target" >/dev/null 2>&1; do
		tries=$((tries + 1))
		if [ $tries -ge 120 ]; then
			say "cannot reach $target"
			break
		fi
	done
	[ $tries -lt 120 ] && say "reached $target"
done
while :; do
	sleep 3600 &
	wait $!
done
"#;

#[test]
fn user_config_guests_network_disks_restarts_and_clean_power_off() -> Result<(), hv_tests::Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let stick = dir.path().join("hv.img");
    fs::copy(artefact("hv.img"), &stick).expect("copying hv.img");

    let initrd = dir.path().join("initrd.img");
    // `/init` = the script, run by the busybox beside it; /dev/console so the
    // script has a console before devtmpfs is mounted.
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

    // Edit the config partition as a user would on a laptop.
    let config = ConfigPartition::of(&stick);
    config.delete("guests/example.toml");
    config.write("host.toml", HOST_TOML);
    config.write(
        "guests/a.toml",
        &net_guest("a", 2, "/data/a.img", "10.0.0.2", "10.0.0.3"),
    );
    config.write(
        "guests/b.toml",
        &net_guest("b", 1, "LABEL=bdisk", "10.0.0.3", "10.0.0.2"),
    );
    config.write("guests/c.toml", EXITER_TOML);
    config.write("guests/d.toml", CRASHER_TOML);
    config.write("guests/broken.toml", BROKEN_TOML);
    config.mkdir("e2e");
    config.copy(&initrd, "e2e/initrd.img");
    let listing = config.list();
    assert!(listing.contains("/guests/a.toml"), "{listing}");

    // The data disk: ext4 labelled vmdata holding a's disk file, which
    // starts with a line naming it.
    let files = dir.path().join("data");
    fs::create_dir(&files).expect("mkdir");
    let mut disk_a = b"disk-a\n".to_vec();
    disk_a.resize(1 << 20, 0);
    fs::write(files.join("a.img"), disk_a).expect("writing a's disk");
    let data = dir.path().join("vmdata.img");
    make_ext4(&data, "vmdata", &files, 32);
    // b's disk is a whole device found by its file system label. ext4
    // leaves the first KiB alone: the line naming the disk goes there.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let disk_b = dir.path().join("bdisk.img");
    make_ext4(&disk_b, "bdisk", &empty, 8);
    write_at_start(&disk_b, b"disk-b\n");

    let mut vm = Qemu::builder("host_guests")
        .seabios()
        .smp(2)
        .memory_mib(2048)
        .usb_disk(&stick)
        // Written for real (no snapshot): they are read back after power-off.
        .args(writable_virtio_disk("vmdata", &data))
        .args(writable_virtio_disk("bdisk", &disk_b))
        // The example guest was removed from the partition.
        .fail_on(r"^\[example\] ")
        .spawn()?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    let broken = vm.wait_for(
        r"config: \S*guests/broken\.toml:2:9: vcpus = 99 is out of range",
        BOOT_TO_INIT,
    )?;
    eprintln!("host_guests: {broken:?} at {:.1?}", vm.elapsed());

    wait_each(
        &mut vm,
        &[
            r"^\[a\] hv-e2e: a: 2 cpus, disk says disk-a$",
            r"^\[b\] hv-e2e: b: 1 cpus, disk says disk-b$",
            r"^\[a\] hv-e2e: a: reached 10\.0\.0\.3$",
            r"^\[b\] hv-e2e: b: reached 10\.0\.0\.2$",
            r"^\[a\] hv-e2e: a: reached 10\.0\.0\.1$",
            r"^\[b\] hv-e2e: b: reached 10\.0\.0\.1$",
            // c powered off and was started again.
            r"guest c: running, restarts [1-9]",
            // d panicked, rebooted (exit 3) and was started again.
            r"guest d: guest rebooted \(exit 3\); restarting",
            r"guest d: running, restarts [1-9]",
        ],
        GUESTS_UP,
    )?;
    eprintln!("host_guests: guests talked at {:.1?}", vm.elapsed());
    let console = vm.console_text();
    assert!(
        !console.contains("cannot reach"),
        "a guest could not reach its peer (see {})",
        vm.log_path().display()
    );
    assert!(
        !console.contains("guest broken:"),
        "the broken definition must not be started"
    );

    let pressed = vm.elapsed();
    vm.powerdown()?;
    wait_each(
        &mut vm,
        &[
            r"^\[a\] hv-e2e: a: marker written, powering off$",
            r"^\[b\] hv-e2e: b: marker written, powering off$",
        ],
        POWER_OFF,
    )?;
    let status = vm.wait_exit(POWER_OFF)?;
    eprintln!(
        "host_guests: host off {:.1?} after the power button, {:.1?} in all",
        vm.elapsed() - pressed,
        vm.elapsed()
    );
    assert!(status.success(), "QEMU ended with {status}");
    assert_eq!(vm.shutdown_reason().as_deref(), Some("guest-shutdown"));
    let console = vm.console_text();
    for name in ["a", "b"] {
        assert!(
            console.contains(&format!("guest {name}: guest powered off (exit 0)")),
            "guest {name} did not power off cleanly (see {})",
            vm.log_path().display()
        );
    }
    assert!(
        !console.contains("exit 5"),
        "a guest had to be stopped hard"
    );

    let written = [
        ("a", debugfs_cat(&data, "/a.img")),
        ("b", fs::read(&disk_b).expect("reading b's disk")),
    ];
    for (name, disk) in written {
        let marker = format!("hv-e2e marker: {name} shut down cleanly\n");
        assert!(
            disk.starts_with(marker.as_bytes()),
            "{name}'s disk starts with {:?}",
            String::from_utf8_lossy(&disk[..disk.len().min(64)])
        );
    }
    Ok(())
}

/// A virtio disk the machine writes to for real: no snapshot overlay.
fn writable_virtio_disk(id: &str, image: &Path) -> [String; 4] {
    [
        "-drive".into(),
        format!("if=none,id={id},file={},format=raw", image.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive={id}"),
    ]
}

fn write_at_start(image: &Path, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .expect("opening a disk image");
    file.write_all(bytes).expect("writing a disk image");
}
