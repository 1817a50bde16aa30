//! Runs the built `hv-image build` on small stand-in inputs and checks the
//! outputs, the budget enforcement and reproducibility.

use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Output};

use hvfat::read_file;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;
const OUTPUTS: [&str; 10] = [
    "hv.img",
    "pxe/README.txt",
    "pxe/boot.ipxe",
    "pxe/initrd.img",
    "pxe/ldlinux.c32",
    "pxe/pxelinux.0",
    "pxe/pxelinux.cfg/default",
    "pxe/vmlinuz",
    "SHA256SUMS",
    "size-report.json",
];
/// Debian's syslinux files, which the build uses by default.
const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
const PXELINUX: &str = "/usr/lib/PXELINUX/pxelinux.0";

/// A scratch directory removed when the test ends.
fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("hv-image-{name}-"))
        .tempdir()
        .expect("creating a scratch directory")
}

fn bzimage(efi_stub: bool, len: usize, fill: u8) -> Vec<u8> {
    let mut data = vec![fill; len];
    data[..2].copy_from_slice(if efi_stub { b"MZ" } else { b"\0\0" });
    data[0x202..0x206].copy_from_slice(b"HdrS");
    data
}

fn static_elf(len: usize, fill: u8) -> Vec<u8> {
    let mut data = vec![fill; len];
    data[..64].fill(0);
    data[..4].copy_from_slice(b"\x7fELF");
    data[4..6].copy_from_slice(&[2, 1]);
    data[18..20].copy_from_slice(&[62, 0]);
    data
}

fn efi_app(len: usize) -> Vec<u8> {
    let mut data = vec![0x11; len];
    data[..2].copy_from_slice(b"MZ");
    data[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    data[0x80..0x84].copy_from_slice(b"PE\0\0");
    data
}

/// Writes stand-in inputs of a few hundred KiB each and returns the
/// `build` arguments naming them (without `--out`).
fn inputs(dir: &Path) -> Vec<String> {
    let files: [(&str, &str, Vec<u8>); 6] = [
        (
            "--host-kernel",
            "bzImage-host",
            bzimage(true, 700_000, 0x48),
        ),
        ("--init", "init", static_elf(300_000, 0x49)),
        ("--vmm", "vmm", static_elf(500_000, 0x56)),
        (
            "--guest-kernel",
            "bzImage-guest",
            bzimage(false, 600_000, 0x47),
        ),
        ("--busybox", "busybox", static_elf(400_000, 0x42)),
        ("--efi-loader", "BOOTX64.EFI", efi_app(100_000)),
    ];
    let mut args = Vec::new();
    for (flag, name, data) in files {
        let path = dir.join(name);
        std::fs::write(&path, data).expect("writing a stand-in input");
        args.push(flag.to_string());
        args.push(path.display().to_string());
    }
    args
}

fn hv_image(args: &[String], out: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hv-image"));
    command
        .arg("build")
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("HV_SIZE_BUDGET")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run hv-image")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn report(out: &Path) -> serde_json::Value {
    let json = std::fs::read(out.join("size-report.json")).expect("reading size-report.json");
    serde_json::from_slice(&json).expect("size-report.json is JSON")
}

#[test]
fn builds_all_outputs_within_budget() {
    let scratch = scratch("ok");
    let args = inputs(scratch.path());
    let out = scratch.path().join("out");
    let output = hv_image(&args, &out, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("total hv.img"), "table printed:\n{stdout}");
    for file in OUTPUTS {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    let image = std::fs::read(out.join("hv.img")).unwrap();
    let json = report(&out);
    assert_eq!(json["total_bytes"], image.len() as u64);
    assert_eq!(json["budget_bytes"], 64 * MIB);
    assert_eq!(json["headroom_bytes"], 64 * MIB as i64 - image.len() as i64);
    assert_eq!(json["components"]["host_kernel"], 700_000);
    assert_eq!(json["components"]["vmm"], 500_000);
    assert_eq!(json["components"]["guest_kernel"], 600_000);
    let initrd = std::fs::read(out.join("pxe/initrd.img")).unwrap();
    assert_eq!(json["components"]["host_initramfs"], initrd.len() as u64);

    // Partitions: ESP first at 1 MiB, then HVCONFIG of at least 16 MiB.
    let gpt = gptman::GPT::read_from(&mut Cursor::new(&image), 512).unwrap();
    assert_eq!(gpt[1].starting_lba, 2048);
    assert_eq!(gpt[2].partition_name.as_str(), "HVCONFIG");
    let part = |i: u32| {
        let lba = |lba: u64| usize::try_from(lba * 512).unwrap();
        &image[lba(gpt[i].starting_lba)..lba(gpt[i].ending_lba + 1)]
    };
    let (esp, config) = (part(1), part(2));
    assert_eq!(json["partitions"]["esp"]["size_bytes"], esp.len() as u64);
    assert_eq!(
        json["partitions"]["config"]["offset_bytes"],
        gpt[2].starting_lba * 512
    );
    assert!(config.len() as u64 >= 16 * MIB);

    // PXE files are the very bytes on the ESP.
    assert_eq!(
        read_file(esp, "vmlinuz").unwrap(),
        std::fs::read(out.join("pxe/vmlinuz")).unwrap()
    );
    assert_eq!(read_file(esp, "initrd.img").unwrap(), initrd);
    assert_eq!(
        read_file(esp, "EFI/BOOT/BOOTX64.EFI").unwrap(),
        efi_app(100_000)
    );
    let entry = String::from_utf8(read_file(esp, "loader/entries/hv.conf").unwrap()).unwrap();
    // The config partition by its PARTUUID, as the GPT has it.
    let g = gpt[2].unique_partition_guid;
    let partuuid = format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        g[8],
        g[9],
        g[10..]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    );
    let options =
        format!("console=tty0 console=ttyS0,115200n8 panic=10 hv.config=PARTUUID={partuuid}");
    assert!(
        entry.lines().any(|l| l == format!("options {options}")),
        "{entry}"
    );
    assert_eq!(
        read_file(config, "example/bzImage").unwrap(),
        bzimage(false, 600_000, 0x47)
    );
    assert!(!read_file(config, "guests/example.toml").unwrap().is_empty());
    assert!(!read_file(config, "host.toml").unwrap().is_empty());
    let fs =
        hvfat::fatfs::FileSystem::new(Cursor::new(config.to_vec()), hvfat::fatfs::FsOptions::new())
            .unwrap();
    assert_eq!(fs.volume_label(), "HVCONFIG");

    // SHA256SUMS covers the image and the PXE files, relative to out/.
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (digest, path) = line.split_once("  ").unwrap();
        let actual: String = Sha256::digest(std::fs::read(out.join(path)).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, actual, "{path}");
        listed.push(path);
    }
    assert_eq!(listed, OUTPUTS[..8], "every output but the two listings");

    // Legacy BIOS: gptmbr.bin in the MBR, partition 1 legacy BIOS bootable,
    // syslinux on the ESP with its boot sector, PXE loaders from Debian.
    assert_eq!(&image[..440], &std::fs::read(GPTMBR).unwrap()[..]);
    assert_eq!(gpt[1].attribute_bits, 1 << 2);
    assert_eq!(gpt[2].attribute_bits, 0);
    assert_eq!(&esp[3..11], b"SYSLINUX", "syslinux boot sector");
    assert_eq!(&esp[510..512], &[0x55, 0xaa]);
    let ldlinux_sys = read_file(esp, "syslinux/ldlinux.sys").unwrap();
    let ldlinux_c32 = read_file(esp, "syslinux/ldlinux.c32").unwrap();
    assert_eq!(
        json["components"]["bios_loader"],
        (ldlinux_sys.len() + ldlinux_c32.len()) as u64
    );
    let syslinux_cfg = String::from_utf8(read_file(esp, "syslinux/syslinux.cfg").unwrap()).unwrap();
    assert!(syslinux_cfg.contains(&format!("APPEND {options}\n")));
    assert_eq!(
        std::fs::read(out.join("pxe/pxelinux.0")).unwrap(),
        std::fs::read(PXELINUX).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("pxe/ldlinux.c32")).unwrap(),
        std::fs::read(LDLINUX_C32).unwrap()
    );
    let pxe_cfg = std::fs::read_to_string(out.join("pxe/pxelinux.cfg/default")).unwrap();
    assert!(pxe_cfg.contains("APPEND console=tty0 console=ttyS0,115200n8 panic=10 ip=dhcp\n"));
    let ipxe = std::fs::read_to_string(out.join("pxe/boot.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"), "{ipxe}");

    // Every entry on both volumes carries the build time, including the
    // files the syslinux installer wrote through mtools.
    for (name, bytes) in [("esp", esp), ("config", config)] {
        let fs = hvfat::fatfs::FileSystem::new(
            Cursor::new(bytes.to_vec()),
            hvfat::fatfs::FsOptions::new(),
        )
        .unwrap();
        let mut dirs = vec![fs.root_dir()];
        let mut seen = 0;
        while let Some(dir) = dirs.pop() {
            for entry in dir.iter().map(|e| e.unwrap()) {
                let name_here = entry.file_name();
                if name_here == "." || name_here == ".." {
                    continue;
                }
                let modified = entry.modified();
                // SOURCE_DATE_EPOCH=1700000000 is 2023-11-14T22:13:20Z.
                assert_eq!(
                    (modified.date.year, modified.date.month, modified.date.day),
                    (2023, 11, 14),
                    "{name}: {name_here}"
                );
                assert_eq!(
                    (modified.time.hour, modified.time.min, modified.time.sec),
                    (22, 13, 20),
                    "{name}: {name_here}"
                );
                assert_eq!(entry.created(), modified, "{name}: {name_here}");
                seen += 1;
                if entry.is_dir() {
                    dirs.push(entry.to_dir());
                }
            }
        }
        assert!(seen >= 5, "{name}: {seen} entries");
    }

    // fsck.fat is the strictest FAT checker at hand; a missing one fails
    // the test rather than leaving the volumes unchecked.
    for (name, bytes) in [("esp", esp), ("config", config)] {
        let file = scratch.path().join(format!("{name}.fat"));
        std::fs::write(&file, bytes).unwrap();
        let fsck = Command::new("fsck.fat")
            .arg("-n")
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!("running fsck.fat: {e} (install dosfstools; scripts/test does)")
            });
        let text = String::from_utf8_lossy(&fsck.stdout);
        assert!(fsck.status.success(), "fsck.fat {name}:\n{text}");
        assert_eq!(
            text.lines().count(),
            2,
            "fsck.fat {name} complained:\n{text}"
        );
    }
}

#[test]
fn two_builds_are_byte_identical() {
    let scratch = scratch("repro");
    let args = inputs(scratch.path());
    let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
    let output = hv_image(&args, &a, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // A build a few seconds later in another time zone: no wall clock or
    // local time may leak into the outputs (FAT stores 2-second steps).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let output = hv_image(&args, &b, &[("TZ", "America/New_York")]);
    assert!(output.status.success(), "{}", stderr(&output));
    for file in OUTPUTS {
        let (x, y) = (
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs between builds");
    }

    // A different timestamp must show up in the image.
    let c = scratch.path().join("c");
    let output = hv_image(&args, &c, &[("SOURCE_DATE_EPOCH", "1600000000")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(a.join("hv.img")).unwrap() != std::fs::read(c.join("hv.img")).unwrap());
}

#[test]
fn over_budget_fails_naming_both_sizes() {
    let scratch = scratch("budget");
    let args = inputs(scratch.path());
    let out = scratch.path().join("out");

    // A successful build first, to prove a failing one removes stale images.
    assert!(hv_image(&args, &out, &[]).status.success());
    let total = report(&out)["total_bytes"].as_u64().unwrap();

    let budget = total - 1;
    let mut small = args.clone();
    small.extend(["--budget".to_string(), budget.to_string()]);
    let output = hv_image(&small, &out, &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains(&total.to_string()),
        "names image size {total}: {err}"
    );
    assert!(
        err.contains(&budget.to_string()),
        "names budget {budget}: {err}"
    );
    assert!(
        !out.join("hv.img").exists(),
        "no over-budget image left behind"
    );
    assert!(!out.join("SHA256SUMS").exists());
    assert_eq!(report(&out)["within_budget"], false);

    // The environment variable works the same way, with a unit suffix.
    let output = hv_image(&args, &out, &[("HV_SIZE_BUDGET", "8M")]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&(8 * MIB).to_string()),
        "{}",
        stderr(&output)
    );
    // ... and --budget overrides it.
    let mut generous = args.clone();
    generous.extend(["--budget".to_string(), "64MiB".to_string()]);
    assert!(hv_image(&generous, &out, &[("HV_SIZE_BUDGET", "8M")])
        .status
        .success());
}

#[test]
fn budget_cannot_be_raised() {
    let scratch = scratch("raise");
    let mut args = inputs(scratch.path());
    args.extend(["--budget".to_string(), "65M".to_string()]);
    let output = hv_image(&args, &scratch.path().join("out"), &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("only be lowered"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_inputs_name_the_file_and_reason() {
    let scratch = scratch("bad");
    let mut args = inputs(scratch.path());
    let missing = scratch.path().join("no-such-vmm");
    let at = args.iter().position(|a| a == "--vmm").unwrap() + 1;
    args[at] = missing.display().to_string();
    let output = hv_image(&args, &scratch.path().join("out"), &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains(&format!("vmm {}", missing.display())), "{err}");
    assert!(err.contains("No such file"), "{err}");

    // A kernel where an executable belongs (swapped arguments).
    args[at] = scratch.path().join("bzImage-host").display().to_string();
    let err = stderr(&hv_image(&args, &scratch.path().join("out"), &[]));
    assert!(err.contains("bzImage-host: not an ELF executable"), "{err}");
}
