//! Signed configuration (docs/signing.md), end to end. A throwaway key
//! pair is made with `minisign -G -W`; the image is built with the public
//! key baked in (`hv-image build --config-pubkey`, into a temp directory,
//! never over out/), and trees are signed with `scripts/sign-config`.
//!
//! - a PXE host fetches a signed tree over HTTP: the guest whose file was
//!   changed after signing is not started and is named, with both hashes;
//!   the other guest, whose files all match, runs;
//! - a PXE host served an unsigned tree starts nothing and says why;
//! - a USB-booted host whose HVCONFIG partition is not signed (the image
//!   ships an unsigned example) starts nothing and says so.
//!
//! The three boot one at a time (a lock), as the machine is small.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hv_tests::http::HttpServer;
use hv_tests::{rig, workspace_root, Qemu, UserNet};

const BOOT_TO_INIT: Duration = Duration::from_secs(240);
/// The kernel's DHCP, then init's fetch and checks.
const CONFIG: Duration = Duration::from_secs(180);
/// A tree that does not match is fetched again for about a minute (init's
/// `fetch::MISMATCH_RETRIES`), then a nested guest boots under TCG.
const GUEST_UP: Duration = Duration::from_secs(420);
const POWER_OFF: Duration = Duration::from_secs(120);
const MUSL: &str = "x86_64-unknown-linux-musl";
const BUSYBOX: &str = "/bin/busybox";
const EFI_LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The key pair and the image built with its public half.
struct Signed {
    dir: PathBuf,
}

impl Signed {
    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    fn secret_key(&self) -> PathBuf {
        self.dir.join("hv.key")
    }
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Built once per test binary, under target/ (a temp directory).
fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        // Made anew by each run (a static is never dropped, so a temp
        // directory would be left behind).
        let dir = workspace_root().join("target/e2e-signed");
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("removing {}: {e}", dir.display())
            }
            _ => {}
        }
        fs::create_dir_all(&dir).expect("creating target/e2e-signed");
        let public = dir.join("hv.pub");
        run(Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&public)
            .arg("-s")
            .arg(dir.join("hv.key")));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| workspace_root().join("target"), PathBuf::from);
        let musl = target.join(MUSL).join("release");
        for file in [musl.join("init"), musl.join("vmm")] {
            assert!(
                file.is_file(),
                "run ./scripts/build first (missing {})",
                file.display()
            );
        }
        let arg = |p: &Path| p.as_os_str().to_os_string();
        let args = [
            "build".into(),
            "--out".into(),
            arg(&dir.join("out")),
            "--host-kernel".into(),
            arg(&rig::kernel("host")),
            "--init".into(),
            arg(&musl.join("init")),
            "--vmm".into(),
            arg(&musl.join("vmm")),
            "--guest-kernel".into(),
            arg(&rig::kernel("guest")),
            "--busybox".into(),
            BUSYBOX.into(),
            "--efi-loader".into(),
            EFI_LOADER.into(),
            "--config-pubkey".into(),
            arg(&public),
        ];
        hv_image::run(&args).unwrap_or_else(|e| panic!("hv-image build: {e}"));
        let report =
            fs::read_to_string(dir.join("out/size-report.json")).expect("size-report.json");
        assert!(
            report.contains("\"config_pubkey\": 1"),
            "the size report does not list the key:\n{report}"
        );
        Signed { dir }
    })
}

/// A file of the HVCONFIG partition of `image`, read with mtools.
fn from_config_partition(out: &Path, path: &str) -> Vec<u8> {
    let report = fs::read_to_string(out.join("size-report.json")).expect("size-report.json");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    let offset = report["partitions"]["config"]["offset_bytes"]
        .as_u64()
        .expect("partitions.config.offset_bytes");
    let image = format!("{}@@{offset}", out.join("hv.img").display());
    let out = Command::new("mcopy")
        .args(["-i", &image, &format!("::/{path}"), "-"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("running mcopy (package mtools)");
    assert!(out.status.success(), "mcopy ::/{path}");
    out.stdout
}

/// A config tree in a temp directory: host.toml naming `guests`, each a
/// copy of the example guest.
fn example_tree(out: &Path, guests: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let list: Vec<String> = guests.iter().map(|g| format!("\"{g}\"")).collect();
    let files = [
        (
            "host.toml".to_string(),
            format!(
                "hostname = \"signed-e2e\"\nguests = [{}]\n",
                list.join(", ")
            )
            .into_bytes(),
        ),
        (
            "example/bzImage".to_string(),
            from_config_partition(out, "example/bzImage"),
        ),
        (
            "example/initrd.img".to_string(),
            from_config_partition(out, "example/initrd.img"),
        ),
    ];
    let example = from_config_partition(out, "guests/example.toml");
    for (path, bytes) in files {
        write(&root.join(path), &bytes);
    }
    for guest in guests {
        write(&root.join(format!("guests/{guest}.toml")), &example);
    }
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn sign(tree: &Path, key: &Path) {
    run(Command::new(workspace_root().join("scripts/sign-config"))
        .arg(tree)
        .arg(key));
}

/// Every file of `tree`, served below `/cfg/`.
fn serve(tree: &Path) -> HttpServer {
    fn walk(dir: &Path, root: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, files);
            } else {
                let rel = path.strip_prefix(root).expect("below root");
                files.insert(
                    format!("/cfg/{}", rel.display()),
                    fs::read(&path).expect("read"),
                );
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(tree, tree, &mut files);
    HttpServer::start(0, files).expect("starting the HTTP server")
}

/// Boots out/pxe/ of the signed build with `hv.config=` pointing at `port`.
fn pxe_host(
    name: &str,
    out: &Path,
    port: u16,
) -> Result<(Qemu, tempfile::TempDir), hv_tests::Error> {
    let tftp = tempfile::tempdir().expect("temp dir");
    for entry in fs::read_dir(out.join("pxe")).expect("pxe/") {
        let entry = entry.expect("entry");
        let target = tftp.path().join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            fs::create_dir_all(&target).expect("mkdir");
            for inner in fs::read_dir(entry.path()).expect("read_dir") {
                let inner = inner.expect("entry");
                fs::copy(inner.path(), target.join(inner.file_name())).expect("copy");
            }
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
    let config = tftp.path().join("pxelinux.cfg/default");
    let text = fs::read_to_string(&config).expect("pxelinux.cfg/default");
    let option = format!(" hv.config=http://10.0.2.2:{port}/cfg/");
    let edited: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("APPEND ") {
                format!("{l}{option}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(edited.contains(&option), "no APPEND line in:\n{text}");
    fs::write(&config, edited).expect("writing pxelinux.cfg/default");
    let net = UserNet::new()
        .model("e1000")
        .tftp(tftp.path())
        .bootfile("pxelinux.0")
        .boot();
    let vm = Qemu::builder(name).seabios().net(net).spawn()?;
    Ok((vm, tftp))
}

#[test]
fn pxe_host_runs_the_signed_guest_and_names_the_changed_one() -> Result<(), hv_tests::Error> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let signed = signed();
    let tree = example_tree(&signed.out(), &["example", "changed"]);
    sign(tree.path(), &signed.secret_key());
    // Changed after signing: a different command line, as an attacker
    // answering for the server would.
    let path = tree.path().join("guests/changed.toml");
    let text = fs::read_to_string(&path).expect("changed.toml");
    fs::write(&path, format!("{text}\n# changed after signing\n")).expect("write");
    let server = serve(tree.path());

    let (mut vm, _tftp) = pxe_host("signed_config_pxe", &signed.out(), server.port())?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    vm.wait_for(
        r"guests/changed\.toml not as SHA256SUMS says \(mid-update\?\), fetching the tree again; retrying in 1 s$",
        CONFIG,
    )?;
    let named = vm.wait_for(
        r"config: guests/changed\.toml: sha256 mismatch \(SHA256SUMS says [0-9a-f]{64}, file has [0-9a-f]{64}\): guest not started$",
        GUEST_UP,
    )?;
    eprintln!("signed_config: {named:?} after {:.1?}", vm.elapsed());
    vm.wait_for(r"^\[example\] Hello from the example guest$", GUEST_UP)?;
    eprintln!(
        "signed_config: the signed guest greeted after {:.1?}",
        vm.elapsed()
    );
    let console = vm.console_text();
    assert!(
        console.contains("config: must be signed by the key in /etc/hv/config.pub"),
        "init did not find the baked key"
    );
    assert!(
        console.contains("config: SHA256SUMS signature verified with the key baked into the image"),
        "no verification line"
    );
    assert!(
        !console.contains("[changed]") && !console.contains("guest changed:"),
        "the changed guest ran"
    );
    vm.powerdown()?;
    vm.wait_for(r"init: all guests stopped$", POWER_OFF)?;
    vm.wait_exit(POWER_OFF)?;
    Ok(())
}

#[test]
fn pxe_host_served_an_unsigned_tree_starts_nothing() -> Result<(), hv_tests::Error> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let signed = signed();
    let tree = example_tree(&signed.out(), &["example"]);
    let server = serve(tree.path());
    let (mut vm, _tftp) = pxe_host("signed_config_unsigned", &signed.out(), server.port())?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    let said = vm.wait_for(
        r"config: http://10\.0\.2\.2:\d+/cfg/: http://10\.0\.2\.2:\d+/cfg/SHA256SUMS: HTTP 404 .*the image requires a signed config .*: nothing started yet; retrying in 2 s$",
        CONFIG,
    )?;
    eprintln!("signed_config: {said:?} after {:.1?}", vm.elapsed());
    let paths = server.paths();
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with(".toml") || p.contains("example/")),
        "the host fetched files of an unsigned tree: {paths:?}"
    );
    assert!(!vm.console_text().contains("Hello from the example guest"));
    let _ = vm.kill();
    Ok(())
}

#[test]
fn usb_host_with_an_unsigned_config_partition_starts_nothing() -> Result<(), hv_tests::Error> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let signed = signed();
    let mut vm = Qemu::builder("signed_config_usb")
        .seabios()
        .smp(2)
        .memory_mib(2048)
        .usb_disk(signed.out().join("hv.img"))
        .spawn()?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    vm.wait_for(
        r"config: not signed as the image requires: no guests started, host\.toml not applied$",
        CONFIG,
    )?;
    let why = vm.wait_for(
        r"config: /mnt/config: SHA256SUMS: missing \(.*\); the image requires a signed config .*: nothing started$",
        CONFIG,
    )?;
    eprintln!("signed_config: {why:?} after {:.1?}", vm.elapsed());
    vm.wait_for(r"config: no guests defined \(", CONFIG)?;
    assert!(!vm.console_text().contains("Hello from the example guest"));
    vm.powerdown()?;
    vm.wait_exit(POWER_OFF)?;
    Ok(())
}
