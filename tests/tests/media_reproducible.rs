//! The boot media are reproducible with the real inputs: `hv-image build`
//! run twice, as `./scripts/build` runs it (same kernels, init, vmm,
//! busybox, systemd-boot, syslinux, same SOURCE_DATE_EPOCH) but seconds
//! apart and in different time zones, writes byte-identical hv.img and PXE
//! files. And the `out/SHA256SUMS` that `./scripts/build` wrote verifies.
//!
//! The binaries come from the target directory `./scripts/build` used:
//! `$HV_TARGET_DIR`, else `$CARGO_TARGET_DIR`, else `<repo>/target`; the
//! kernels from `scripts/kernel` (or `HV_HOST_KERNEL` / `HV_GUEST_KERNEL`).

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hv_tests::{artefact, out_dir, rig, workspace_root};

const MUSL: &str = "x86_64-unknown-linux-musl";
const BUSYBOX: &str = "/bin/busybox";
const EFI_LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Used when the tree is not a git checkout (scripts/build then leaves
/// SOURCE_DATE_EPOCH unset, and hv-image uses its own fixed default).
const FALLBACK_EPOCH: &str = "1704067200";
/// Time zones far from each other and from UTC, in POSIX form so that no
/// tzdata is needed: mtools stamps files in local time, which must not show.
const TIME_ZONES: [&str; 2] = ["UTC0", "XST-13:45"];

#[test]
fn two_builds_in_different_time_zones_are_byte_identical() {
    let epoch = source_date_epoch();
    let inputs = Inputs::find();
    let builds: Vec<(tempfile::TempDir, BTreeMap<String, String>)> = TIME_ZONES
        .iter()
        .map(|tz| {
            let dir = tempfile::tempdir().expect("temp dir");
            inputs.build(&dir.path().join("out"), &epoch, tz);
            let sums = sha256_tree(&dir.path().join("out"));
            (dir, sums)
        })
        .collect();
    let (first, second) = (&builds[0].1, &builds[1].1);

    for name in ["hv.img", "pxe/vmlinuz", "pxe/initrd.img", "pxe/pxelinux.0"] {
        assert!(
            first.contains_key(name),
            "the build wrote no {name}: {first:?}"
        );
    }
    eprintln!("media_reproducible: SOURCE_DATE_EPOCH={epoch}");
    for (tz, sums) in TIME_ZONES.iter().zip([first, second]) {
        eprintln!(
            "media_reproducible: TZ={tz:<10} hv.img sha256 {}",
            sums["hv.img"]
        );
    }
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>(),
        "the two builds wrote different files"
    );
    let differing: Vec<&String> = first
        .iter()
        .filter(|(name, sum)| second[*name] != **sum)
        .map(|(name, _)| name)
        .collect();
    assert!(
        differing.is_empty(),
        "not reproducible: {differing:?} differ between TZ={} and TZ={}\n{first:#?}\n{second:#?}",
        TIME_ZONES[0],
        TIME_ZONES[1]
    );
    for (dir, _) in &builds {
        verify_sha256sums(&dir.path().join("out"));
    }

    // Not asserted: out/ may come from other inputs (an older commit, a
    // kernel or binary rebuilt since). Shown because a match says more.
    if out_dir().join("hv.img").is_file() {
        let shipped = sha256_tree(&out_dir());
        let same = shipped.get("hv.img") == first.get("hv.img");
        eprintln!(
            "media_reproducible: out/hv.img sha256 {} ({})",
            shipped["hv.img"],
            if same {
                "identical to both builds"
            } else {
                "differs: built from other inputs"
            }
        );
    }
}

#[test]
fn shipped_sha256sums_verify_and_cover_every_output() {
    let out = artefact("SHA256SUMS").parent().expect("out/").to_path_buf();
    verify_sha256sums(&out);
}

/// `sha256sum -c --strict SHA256SUMS` passes in `out`, and the list names
/// hv.img and every file below pxe/ (a list with files left out would
/// verify too).
fn verify_sha256sums(out: &Path) {
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(out)
        .output()
        .expect("running sha256sum (coreutils)");
    assert!(
        check.status.success(),
        "sha256sum -c SHA256SUMS in {} failed:\n{}{}",
        out.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let listed: Vec<String> = fs::read_to_string(out.join("SHA256SUMS"))
        .expect("reading SHA256SUMS")
        .lines()
        .filter_map(|line| line.split_once("  ").map(|(_, name)| name.to_string()))
        .collect();
    let mut expected: Vec<String> = sha256_tree(&out.join("pxe"))
        .into_keys()
        .map(|name| format!("pxe/{name}"))
        .collect();
    expected.push("hv.img".into());
    for name in &expected {
        assert!(
            listed.contains(name),
            "{}: SHA256SUMS does not list {name}; it lists {listed:?}",
            out.display()
        );
    }
}

/// What scripts/build hands to hv-image.
struct Inputs {
    tool: PathBuf,
    host_kernel: PathBuf,
    guest_kernel: PathBuf,
    init: PathBuf,
    vmm: PathBuf,
}

impl Inputs {
    fn find() -> Self {
        let target = ["HV_TARGET_DIR", "CARGO_TARGET_DIR"]
            .iter()
            .find_map(|var| env::var_os(var).filter(|v| !v.is_empty()))
            .map_or_else(|| workspace_root().join("target"), PathBuf::from);
        let built = |path: PathBuf| {
            assert!(
                path.is_file(),
                "run ./scripts/build first (missing {}; set HV_TARGET_DIR to the \
                 target directory it used)",
                path.display()
            );
            path
        };
        let musl = target.join(MUSL).join("release");
        for file in [BUSYBOX, EFI_LOADER] {
            assert!(
                Path::new(file).is_file(),
                "missing {file}: run ./scripts/build first"
            );
        }
        Inputs {
            tool: built(target.join("release/hv-image")),
            init: built(musl.join("init")),
            vmm: built(musl.join("vmm")),
            host_kernel: rig::kernel("host"),
            guest_kernel: rig::kernel("guest"),
        }
    }

    /// `hv-image build`, with the flags of scripts/build.
    fn build(&self, out: &Path, epoch: &str, tz: &str) {
        let run = Command::new(&self.tool)
            .arg("build")
            .arg("--out")
            .arg(out)
            .arg("--host-kernel")
            .arg(&self.host_kernel)
            .arg("--init")
            .arg(&self.init)
            .arg("--vmm")
            .arg(&self.vmm)
            .arg("--guest-kernel")
            .arg(&self.guest_kernel)
            .args(["--busybox", BUSYBOX, "--efi-loader", EFI_LOADER])
            .env("SOURCE_DATE_EPOCH", epoch)
            .env("TZ", tz)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.tool.display()));
        assert!(
            run.status.success(),
            "hv-image build (TZ={tz}) failed: {}\n{}{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// SOURCE_DATE_EPOCH as scripts/build sets it: from the environment, else
/// the time of the checked-out commit.
fn source_date_epoch() -> String {
    if let Some(epoch) = env::var("SOURCE_DATE_EPOCH").ok().filter(|e| !e.is_empty()) {
        return epoch;
    }
    let git = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(workspace_root())
        .output();
    match git {
        Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => {
            String::from_utf8_lossy(out.stdout.trim_ascii()).into_owned()
        }
        _ => FALLBACK_EPOCH.into(),
    }
}

/// SHA-256 of every file below `dir`, keyed by its path relative to `dir`.
fn sha256_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files);
    if files.is_empty() {
        return BTreeMap::new();
    }
    let out = Command::new("sha256sum")
        .args(&files)
        .current_dir(dir)
        .output()
        .expect("running sha256sum (coreutils)");
    assert!(
        out.status.success(),
        "sha256sum in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect()
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading a directory entry").path();
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("below the root");
            files.push(relative.to_string_lossy().into_owned());
        }
    }
}
