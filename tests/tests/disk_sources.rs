//! What a guest definition may name as a disk, on the real appliance. One
//! boot of a copy of `hv.img` whose config partition defines
//!
//! - `good`: a file on the data disk host.toml mounts at /data: it runs;
//! - `run`, `sys`, `proc`: disks under /run (another guest's console log),
//!   /sys and /proc, refused with file:line:col when the config is read;
//! - `devnull`: /dev/null, a character device, refused by init;
//! - `link`: a symlink on the data disk pointing out of /data, refused;
//! - `twin1` and `twin2`: one image named by both: the first to start
//!   gets it, the other is refused while the first runs;
//! - `copy`: an image that does not exist, with `size_gib` and a `base` on
//!   the data disk: init creates it as a sparse copy (ext4 has no
//!   reflinks) before the guest starts, and the guest reads the base's
//!   first line;
//! - `outside`: `size_gib` for an image outside the data mounts: refused;
//!
//! and a second disk carries a FAT file system labelled HVCONFIG (as a
//! guest could write on its raw disk) with a guest of its own: the boot
//! loader names the stick's config partition by PARTUUID, so that disk's
//! config never runs.

mod host_common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use host_common::{make_ext4, wait_each, ConfigPartition};
use hv_tests::rig::Cpio;
use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);
/// Four nested guests booting at once on two emulated CPUs.
const GUESTS_UP: Duration = Duration::from_secs(300);

const HOST_TOML: &str = r#"hostname = "disks"

[[mount]]
source = "LABEL=vmdata"
target = "/data"
"#;

/// A guest whose only disk is `disk`; its /init prints the disk's first
/// line, then idles.
fn guest(name: &str, disk: &str) -> String {
    guest_with(name, &format!("path = \"{disk}\""))
}

/// A guest whose only `[[disk]]` table holds `keys`.
fn guest_with(name: &str, keys: &str) -> String {
    format!(
        r#"[machine]
memory_mib = 96

[boot]
kernel = "../example/bzImage"
initrd = "../e2e/initrd.img"
cmdline = "console=ttyS0 quiet hv_name={name}"

[[disk]]
{keys}

[lifecycle]
restart = "never"
"#
    )
}

const GUEST_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "hv-e2e: $hv_name: disk says $(/bin/busybox head -n 1 /dev/vda)"
while :; do
	/bin/busybox sleep 3600
done
"#;

/// The config a guest could leave on its disk for the next boot.
const EVIL_HOST_TOML: &str = "hostname = \"evil\"\n";
const EVIL_GUEST_TOML: &str = "[boot]\nkernel = \"../example/bzImage\"\n";

fn virtio_disk(id: &str, image: &Path) -> [String; 4] {
    [
        "-drive".into(),
        format!("if=none,id={id},file={},format=raw", image.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive={id}"),
    ]
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("running a disk tool (mtools, dosfstools)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn disks_outside_data_mounts_shared_images_and_a_foreign_hvconfig_are_refused(
) -> Result<(), hv_tests::Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let stick = dir.path().join("hv.img");
    fs::copy(artefact("hv.img"), &stick).expect("copying hv.img");

    let initrd = dir.path().join("initrd.img");
    let mut cpio = Cpio::new();
    cpio.copy("bin/busybox", 0o755, Path::new("/bin/busybox"))
        .expect("reading /bin/busybox (busybox-static)");
    for d in ["dev", "proc", "tmp"] {
        cpio.dir(d);
    }
    cpio.char_device("dev/console", 5, 1)
        .file("init", 0o755, GUEST_INIT);
    cpio.write_gz(&initrd).expect("writing the guest initrd");

    let config = ConfigPartition::of(&stick);
    config.delete("guests/example.toml");
    config.write("host.toml", HOST_TOML);
    config.mkdir("e2e");
    config.copy(&initrd, "e2e/initrd.img");
    let guests = [
        ("good", "/data/good.img"),
        ("run", "/run/hv/guests/good/console.log"),
        ("sys", "/sys/kernel/mm/transparent_hugepage/enabled"),
        ("proc", "/proc/self/environ"),
        ("devnull", "/dev/null"),
        ("link", "/data/link.img"),
        ("twin1", "/data/shared.img"),
        ("twin2", "/data/shared.img"),
    ];
    for (name, disk) in guests {
        config.write(&format!("guests/{name}.toml"), &guest(name, disk));
    }
    let provisioned = [
        (
            "copy",
            "path = \"/data/copy.img\"\nsize_gib = 1\nbase = \"/data/base.img\"",
        ),
        ("outside", "path = \"/srv/outside.img\"\nsize_gib = 1"),
    ];
    for (name, keys) in provisioned {
        config.write(&format!("guests/{name}.toml"), &guest_with(name, keys));
    }

    // The data disk: good's and the twins' images, and a symlink out.
    let files = dir.path().join("data");
    fs::create_dir(&files).expect("mkdir");
    for (name, line) in [
        ("good.img", "disk-good"),
        ("shared.img", "disk-shared"),
        ("base.img", "disk-base"),
    ] {
        let mut bytes = format!("{line}\n").into_bytes();
        bytes.resize(1 << 20, 0);
        fs::write(files.join(name), bytes).expect("writing a disk image");
    }
    std::os::unix::fs::symlink("/init", files.join("link.img")).expect("symlink");
    let data = dir.path().join("vmdata.img");
    make_ext4(&data, "vmdata", &files, 16);

    // A whole disk formatted FAT with the config partition's label.
    let evil = dir.path().join("evil.img");
    fs::File::create(&evil)
        .and_then(|f| f.set_len(16 << 20))
        .expect("sizing evil.img");
    run(Command::new("mkfs.vfat")
        .args(["-n", "HVCONFIG"])
        .arg(&evil));
    let evil_dir = dir.path().join("evil");
    fs::create_dir_all(evil_dir.join("guests")).expect("mkdir");
    fs::write(evil_dir.join("host.toml"), EVIL_HOST_TOML).expect("write");
    fs::write(evil_dir.join("guests/evil.toml"), EVIL_GUEST_TOML).expect("write");
    run(Command::new("mcopy")
        .arg("-s")
        .arg("-i")
        .arg(&evil)
        .arg(evil_dir.join("host.toml"))
        .arg(evil_dir.join("guests"))
        .arg("::"));

    let mut vm = Qemu::builder("disk_sources")
        .seabios()
        .smp(2)
        .memory_mib(1536)
        .usb_disk(&stick)
        .args(virtio_disk("vmdata", &data))
        .args(virtio_disk("evil", &evil))
        .fail_on(r"^\[example\] ")
        .fail_on(r"^\[evil\] ")
        .fail_on(r"guest evil: ")
        .fail_on(r"^\[(run|sys|proc|devnull|link|outside)\] ")
        .spawn()?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    vm.wait_for(
        r"looking for the config partition PARTUUID=[0-9A-Fa-f-]{36}$",
        BOOT_TO_INIT,
    )?;
    wait_each(
        &mut vm,
        &[
            r"config: \S*guests/run\.toml:\d+:\d+: path '/run/hv/guests/good/console\.log' is under /run, which holds no disks",
            r"config: \S*guests/sys\.toml:\d+:\d+: path '/sys/\S+' is under /sys, which holds no disks",
            r"config: \S*guests/proc\.toml:\d+:\d+: path '/proc/self/environ' is under /proc, which holds no disks",
            r"guest devnull: cannot start: disk 1 refused: /dev/null: a character device; a disk is a block device or a regular file beneath a data mount \(/data\)",
            r"guest link: cannot start: disk 1 refused: /data/link\.img: leaves its data mount /data",
            r"guest twin2: cannot start: disk 1 refused: /data/shared\.img: in use by another guest's vmm \(locked\)",
            r"^\[good\] hv-e2e: good: disk says disk-good$",
            r"^\[twin1\] hv-e2e: twin1: disk says disk-shared$",
            r"guest copy: disk 1: created /data/copy\.img, 1073741824 bytes, a sparse copy of /data/base\.img, \d+ bytes of data$",
            r"^\[copy\] hv-e2e: copy: disk says disk-base$",
            r"guest outside: cannot start: disk 1 of \S*guests/outside\.toml: cannot provision: /srv/outside\.img: size_gib and base create an image only beneath a data mount \(/data\)",
        ],
        GUESTS_UP,
    )?;
    let console = vm.console_text();
    assert!(
        !console.contains("guests/evil.toml") && !console.contains("guest evil"),
        "the foreign HVCONFIG disk's config was read (see {})",
        vm.log_path().display()
    );
    assert!(
        !console.contains("[twin2] "),
        "twin2 ran on an image twin1 holds (see {})",
        vm.log_path().display()
    );
    vm.kill();
    Ok(())
}
