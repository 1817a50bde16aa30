//! A diskless host: PXELINUX from out/pxe/ boots the host over QEMU's TFTP
//! server, and init fetches its configuration over HTTP, set up the way
//! out/pxe/README.txt tells an operator to:
//!
//! - `hv.config=http://10.0.2.2:PORT/cfg/${mac}/` on the APPEND line of
//!   pxelinux.cfg/default; PXELINUX passes `${mac}` on literally, so init
//!   must replace it with the boot NIC's address (the server sees it);
//! - the HTTP server is down when the host comes up: init retries with
//!   growing waits, and once the server is up it fetches host.toml, the
//!   guest it lists, that guest's kernel and initrd, and starts the guest;
//! - the ACPI power button then powers the host off cleanly.
//!
//! The example guest's files come from the config partition of out/hv.img,
//! so the guest is exactly the one the image ships.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hv_tests::http::HttpServer;
use hv_tests::{artefact, free_tcp_port, Qemu, UserNet};

const BOOT_TO_INIT: Duration = Duration::from_secs(240);
/// The kernel's DHCP and init's first attempt.
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Fetching a few MiB through slirp, then a nested guest boot under TCG.
const GUEST_UP: Duration = Duration::from_secs(180);
const POWER_OFF: Duration = Duration::from_secs(120);

/// Not QEMU's default (52:54:00:12:34:56), so a match proves the address
/// came from this NIC.
const MAC: &str = "52:54:00:c0:ff:ee";

#[test]
fn pxelinux_host_waits_for_its_http_config_then_runs_the_guest() -> Result<(), hv_tests::Error> {
    let tftp = tempfile::tempdir().expect("temp dir");
    copy_dir(&artefact("pxe"), tftp.path());
    // Chosen now, bound later: until then nothing listens on it, as when
    // the configuration server is still down.
    let port = free_tcp_port().expect("a free port");
    let base = format!("http://10.0.2.2:{port}/cfg/${{mac}}/");
    add_to_append_line(
        &tftp.path().join("pxelinux.cfg/default"),
        &format!("hv.config={base}"),
    );

    let dir = format!("/cfg/{MAC}");
    let files = BTreeMap::from([
        (
            format!("{dir}/host.toml"),
            b"hostname = \"pxe-e2e\"\nguests = [\"example\"]\n".to_vec(),
        ),
        (
            format!("{dir}/guests/example.toml"),
            from_config_partition("guests/example.toml"),
        ),
        (
            format!("{dir}/example/bzImage"),
            from_config_partition("example/bzImage"),
        ),
        (
            format!("{dir}/example/initrd.img"),
            from_config_partition("example/initrd.img"),
        ),
    ]);

    // QEMU's e1000 has an iPXE ROM too; handing it pxelinux.0 makes it run
    // PXELINUX, which reads pxelinux.cfg/default over TFTP.
    let net = UserNet::new()
        .model(&format!("e1000,mac={MAC}"))
        .tftp(tftp.path())
        .bootfile("pxelinux.0")
        .boot();
    let mut vm = Qemu::builder("media_pxe").seabios().net(net).spawn()?;

    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    let nic = vm.wait_for(r"config: booted from \S+ \(", FIRST_RETRY)?;
    assert!(nic.contains(&format!("({MAC})")), "boot NIC line: {nic}");
    let host_toml = format!("http://10.0.2.2:{port}{dir}/host.toml");
    let retry = regex::escape(&format!("config: {host_toml}: "));
    vm.wait_for(&format!("{retry}.*; retrying in 1 s$"), FIRST_RETRY)?;
    vm.wait_for(&format!("{retry}.*; retrying in 2 s$"), FIRST_RETRY)?;
    assert!(
        !vm.console_text().contains("Hello from the example guest"),
        "the guest ran before its configuration could be fetched"
    );

    let server = HttpServer::start(port, files).expect("starting the HTTP server");
    let started = vm.elapsed();
    vm.wait_for(r"^\[example\] Hello from the example guest$", GUEST_UP)?;
    eprintln!(
        "media_pxe: guest greeted {:.1?} after the server came up ({:.1?} after QEMU started)",
        vm.elapsed() - started,
        vm.elapsed()
    );

    let wanted: Vec<String> = [
        "host.toml",
        "guests/example.toml",
        "example/bzImage",
        "example/initrd.img",
    ]
    .iter()
    .map(|f| format!("{dir}/{f}"))
    .collect();
    let requests = server.requests();
    for path in &wanted {
        assert!(
            requests.iter().any(|r| &r.path == path && r.status == 200),
            "the host never fetched {path}; requests: {requests:?}"
        );
    }
    assert!(
        requests.iter().all(|r| r.status == 200),
        "unexpected requests: {requests:?}"
    );

    // Clean means the guest was asked to stop and powered itself off
    // before the host did.
    vm.powerdown()?;
    vm.wait_for(r"guest example: guest powered off \(exit 0\)$", POWER_OFF)?;
    vm.wait_for(r"init: all guests stopped$", POWER_OFF)?;
    let status = vm.wait_exit(POWER_OFF)?;
    assert!(status.success(), "QEMU ended with {status}");
    assert_eq!(vm.shutdown_reason().as_deref(), Some("guest-shutdown"));
    Ok(())
}

/// A copy of `from` (files and subdirectories) in `to`.
fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("reading a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            fs::create_dir_all(&target).expect("creating a directory");
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copying {}: {e}", entry.path().display()));
        }
    }
}

/// Appends `option` to the kernel command line of a PXELINUX config, as an
/// operator edits pxelinux.cfg/default.
fn add_to_append_line(config: &Path, option: &str) {
    let text = fs::read_to_string(config).expect("reading pxelinux.cfg/default");
    let mut edited = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("APPEND ") {
                edited += 1;
                format!("{line} {option}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(edited, 1, "expected one APPEND line in:\n{text}");
    fs::write(config, lines.join("\n") + "\n").expect("writing pxelinux.cfg/default");
}

/// A file of the HVCONFIG partition of out/hv.img, read with mtools at the
/// offset size-report.json gives.
fn from_config_partition(path: &str) -> Vec<u8> {
    let report =
        fs::read_to_string(artefact("size-report.json")).expect("reading size-report.json");
    let report: serde_json::Value =
        serde_json::from_str(&report).expect("size-report.json is JSON");
    let offset = report["partitions"]["config"]["offset_bytes"]
        .as_u64()
        .expect("size-report.json: partitions.config.offset_bytes");
    let image = format!("{}@@{offset}", artefact("hv.img").display());
    let out = Command::new("mcopy")
        .args(["-i", &image, &format!("::/{path}"), "-"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("running mcopy (package mtools)");
    assert!(
        out.status.success(),
        "mcopy ::/{path} from {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.is_empty(),
        "{path} on the config partition is empty"
    );
    out.stdout
}
