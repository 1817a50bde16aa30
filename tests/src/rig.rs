//! The nested-KVM rig: our host kernel under QEMU/TCG with an initramfs that
//! runs the `vmm` on a real Linux guest.
//!
//! The development machine's `/dev/kvm` cannot boot Linux guests, but the
//! host kernel booted under TCG with `-cpu max` (emulated AMD SVM + NPT) can.
//! The rig's initramfs (the "L1 host") holds busybox, the static `vmm`, the
//! guest kernel and a busybox guest initramfs; busybox init runs a test's
//! shell script, which starts the vmm and prints its findings on the console.
//!
//! ```no_run
//! use std::time::Duration;
//! use hv_tests::rig::Rig;
//!
//! let mut vm = Rig::new("echo \"rig: vmm is $(stat -c %s /bin/vmm) bytes\"")?
//!     .guest("echo guest: hello; poweroff -f", "[boot]\nkernel = \"bzImage\"\n")?
//!     .boot("my_rig_test")?;
//! vm.wait_for(r"^rig: vmm is \d+ bytes", Duration::from_secs(120))?;
//! vm.wait_exit(Duration::from_secs(60))?;
//! # Ok::<(), hv_tests::Error>(())
//! ```
//!
//! Environment: `HV_HOST_KERNEL` and `HV_GUEST_KERNEL` (bzImages to use
//! instead of asking `scripts/kernel`), `HV_VMM` (the static vmm binary).

use std::collections::BTreeMap;
use std::env;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hv_image::cpio::{self, CpioError};

use crate::builder::QemuBuilder;
use crate::error::{Error, ErrorKind};
use crate::paths::{logs_dir, workspace_root};
use crate::qemu::Qemu;

/// The musl target the static binaries are built for.
const MUSL: &str = "x86_64-unknown-linux-musl";
const BUSYBOX: &str = "/bin/busybox";

/// L1 memory and CPUs: room for a 256 MiB guest (or two) and two vCPUs, so
/// a 2-vCPU guest really runs on two host CPUs.
pub const L1_MEMORY_MIB: u32 = 2048;
pub const L1_VCPUS: u32 = 2;

/// What every rig script starts with. busybox init runs it as `sysinit`;
/// the host kernel has no `binfmt_script`, hence `sh FILE`.
const PRELUDE: &str = r#"
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "rig: L1 up at $(cut -d' ' -f1 /proc/uptime) s, kvm $([ -c /dev/kvm ] && echo yes || echo no)"
"#;

/// What every rig script ends with: the L1 powers off, and QEMU
/// (`-no-reboot`) exits.
const EPILOGUE: &str = r#"
echo "rig: done"
sync
poweroff -f
"#;

/// The guest's busybox init table: `/etc/rc` once at boot; Ctrl-Alt-Del
/// (the vmm's answer to SIGTERM) starts an orderly power-off, which runs the
/// `::shutdown:` actions first.
const GUEST_INITTAB: &str = "\
::sysinit:/bin/sh /etc/rc
::ctrlaltdel:/bin/poweroff
::shutdown:/bin/echo guest: shutdown handler: stopping cleanly
::shutdown:/bin/sync
";

/// The start of the guest's `/etc/rc`: the first line is printed before
/// anything else so that boot time can be measured up to it.
const GUEST_PRELUDE: &str = r#"echo "guest: init started"
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
"#;

/// A bzImage from the kernel cache: `$HV_<PROFILE>_KERNEL` when set, else
/// the last line printed by `scripts/kernel PROFILE` (instant when cached;
/// builds the kernel otherwise).
///
/// # Panics
/// When the script fails or names a missing file.
pub fn kernel(profile: &str) -> PathBuf {
    let var = format!("HV_{}_KERNEL", profile.to_uppercase());
    cached_artefact(&var, "kernel", &[profile])
}

/// A stock Debian 12 disk (Debian's cloud kernel and initrd, untouched;
/// see `scripts/debian-guest`): `$HV_DEBIAN_DISK` when set, else the last
/// line printed by `scripts/debian-guest` (instant when cached; built with
/// debootstrap otherwise).
///
/// # Panics
/// When the script fails or names a missing file.
pub fn debian_disk() -> PathBuf {
    cached_artefact("HV_DEBIAN_DISK", "debian-guest", &[])
}

/// The file `$var` names, else the one whose path `scripts/SCRIPT ARGS`
/// prints last (the cached scripts print the path of what they built).
fn cached_artefact(var: &str, script: &str, args: &[&str]) -> PathBuf {
    if let Some(path) = env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{var}={} does not exist", path.display());
        return path;
    }
    let what = format!("scripts/{script} {}", args.join(" "));
    let what = what.trim_end();
    // Progress goes to stderr: shown only when the script fails.
    let out = Command::new(workspace_root().join("scripts").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "{what} named {path:?}, which does not exist"
    );
    path
}

/// The static vmm built by `./scripts/build`: `$HV_VMM`, or
/// `${CARGO_TARGET_DIR:-<repo>/target}/x86_64-unknown-linux-musl/release/vmm`.
///
/// # Panics
/// When it is missing: `run ./scripts/build first (missing PATH)`.
#[track_caller]
pub fn vmm_binary() -> PathBuf {
    let path = match env::var_os("HV_VMM").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => env::var_os("CARGO_TARGET_DIR")
            .filter(|p| !p.is_empty())
            .map_or_else(|| workspace_root().join("target"), PathBuf::from)
            .join(MUSL)
            .join("release/vmm"),
    };
    if !path.is_file() {
        panic!("run ./scripts/build first (missing {})", path.display());
    }
    path
}

/// An initramfs under construction: a gzip-compressed newc cpio archive,
/// written without root (device nodes included) by hv-image's
/// [`hv_image::cpio`]. Parent directories are added on demand; everything
/// belongs to root. A path added twice keeps its last contents, as when
/// the kernel unpacks an archive that lists it twice.
#[derive(Debug, Default, Clone)]
pub struct Cpio {
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    permissions: u32,
    node: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (mode 0755).
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let path = path.trim_matches('/');
        if path.is_empty()
            || matches!(self.entries.get(path), Some(e) if matches!(e.node, Node::Dir))
        {
            return self;
        }
        self.push(path, 0o755, Node::Dir)
    }

    /// A regular file with `contents` and permission bits `mode`.
    pub fn file(&mut self, path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> &mut Self {
        self.push(path, mode & 0o7777, Node::File(contents.into()))
    }

    /// A copy of the file `from` of this machine.
    pub fn copy(&mut self, path: &str, mode: u32, from: &Path) -> io::Result<&mut Self> {
        let contents = fs::read(from)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", from.display())))?;
        Ok(self.file(path, mode, contents))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.push(path, 0o777, Node::Symlink(target.into()))
    }

    /// A character device node, e.g. `/dev/console` (5, 1), which the
    /// kernel opens for init's stdio before anything can mount devtmpfs;
    /// having it in the archive keeps the rig independent of the kernel's
    /// built-in default initramfs.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.push(path, 0o600, Node::CharDevice { major, minor })
    }

    /// This machine's static busybox as `/bin/busybox`, with a `/bin` link
    /// for each of its applets.
    pub fn busybox(&mut self) -> io::Result<&mut Self> {
        let out = Command::new(BUSYBOX).arg("--list").output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{BUSYBOX} --list failed (install busybox-static)"
            )));
        }
        self.copy("bin/busybox", 0o755, Path::new(BUSYBOX))?;
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let applet = applet.trim();
            if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
                self.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        Ok(self)
    }

    fn push(&mut self, path: &str, permissions: u32, node: Node) -> &mut Self {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries
            .insert(path.to_string(), Entry { permissions, node });
        self
    }

    /// The uncompressed newc archive. Timestamps are 0, and hv-image sorts
    /// the entries (parents first), so equal inputs give equal archives.
    pub fn to_newc(&self) -> Result<Vec<u8>, CpioError> {
        let entries: Vec<cpio::Entry<'_>> = self
            .entries
            .iter()
            .map(|(path, entry)| cpio::Entry {
                path,
                permissions: entry.permissions,
                node: match &entry.node {
                    Node::Dir => cpio::Node::Dir,
                    Node::File(data) => cpio::Node::File(data),
                    Node::Symlink(target) => cpio::Node::Symlink(target),
                    Node::CharDevice { major, minor } => cpio::Node::CharDevice {
                        major: *major,
                        minor: *minor,
                    },
                },
            })
            .collect();
        cpio::write_archive(&entries, 0)
    }

    /// Writes the archive, gzip-compressed (`gzip -1`: the rig rebuilds it
    /// on every run, so speed beats size), to `path`.
    pub fn write_gz(&self, path: &Path) -> io::Result<()> {
        let file = File::create(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut gzip = Command::new("gzip")
            .args(["-1", "-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run gzip: {e}")))?;
        let archive = self.to_newc().map_err(io::Error::other)?;
        let written = gzip
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(&archive);
        let status = gzip.wait()?;
        written?;
        if !status.success() {
            return Err(io::Error::other(format!("gzip failed ({status})")));
        }
        Ok(())
    }
}

/// A busybox guest initramfs: busybox init runs `/etc/rc`, which first
/// prints `guest: init started`, mounts /proc, /sys and /dev, then runs
/// `rc`. When `rc` returns, the guest idles; Ctrl-Alt-Del powers it off in
/// order, printing `guest: shutdown handler: stopping cleanly` on the way.
pub fn busybox_guest(rc: &str) -> io::Result<Cpio> {
    let mut cpio = Cpio::new();
    cpio.busybox()?;
    for dir in ["proc", "sys", "dev", "tmp", "sbin", "etc"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1)
        .symlink("init", "bin/busybox")
        .symlink("sbin/init", "../bin/busybox")
        .file("etc/inittab", 0o644, GUEST_INITTAB)
        .file("etc/rc", 0o755, format!("{GUEST_PRELUDE}{rc}\n"));
    Ok(cpio)
}

/// The L1 host's initramfs and how to boot it.
pub struct Rig {
    host: Cpio,
}

impl Rig {
    /// An L1 host with busybox and `/bin/vmm` ([`vmm_binary`]) that runs
    /// `script` (busybox sh) after mounting /proc, /sys, /dev and /tmp, then
    /// prints `rig: done` and powers off.
    #[track_caller]
    pub fn new(script: &str) -> Result<Self, Error> {
        let vmm = vmm_binary();
        let mut host = Cpio::new();
        host.busybox().map_err(io_error)?;
        for dir in ["proc", "sys", "dev", "tmp", "etc", "guest"] {
            host.dir(dir);
        }
        host.char_device("dev/console", 5, 1)
            .symlink("init", "bin/busybox")
            .file("etc/inittab", 0o644, "::sysinit:/bin/sh /etc/rig.sh\n")
            .file(
                "etc/rig.sh",
                0o755,
                format!("{PRELUDE}\n{script}\n{EPILOGUE}"),
            );
        host.copy("bin/vmm", 0o755, &vmm).map_err(io_error)?;
        Ok(Self { host })
    }

    /// Adds the guest: `/guest/bzImage` (the guest kernel), `/guest/initrd.img`
    /// ([`busybox_guest`] running `rc`) and `/guest/guest.toml` holding
    /// `definition`, whose relative paths are relative to `/guest`.
    pub fn guest(mut self, rc: &str, definition: &str) -> Result<Self, Error> {
        let initrd = tempfile::NamedTempFile::new().map_err(io_error)?;
        busybox_guest(rc)
            .and_then(|cpio| cpio.write_gz(initrd.path()))
            .map_err(io_error)?;
        self.host
            .copy("guest/bzImage", 0o644, &kernel("guest"))
            .and_then(|h| h.copy("guest/initrd.img", 0o644, initrd.path()))
            .map_err(io_error)?;
        self.host.file("guest/guest.toml", 0o644, definition);
        Ok(self)
    }

    /// The L1 initramfs, for adding more files.
    pub fn initramfs(&mut self) -> &mut Cpio {
        &mut self.host
    }

    /// Writes the initramfs to `<logs>/<name>.rig.cpio.gz` (kept, so a
    /// failed run can be booted again by hand) and describes the L1 machine:
    /// the host kernel, 2 vCPUs, 2 GiB.
    pub fn machine(self, name: &str) -> Result<QemuBuilder, Error> {
        let dir = logs_dir();
        fs::create_dir_all(&dir).map_err(io_error)?;
        let initrd = dir.join(format!("{name}.rig.cpio.gz"));
        self.host.write_gz(&initrd).map_err(io_error)?;
        Ok(Qemu::builder(name)
            .kernel(kernel("host"))
            .initrd(initrd)
            .append("console=ttyS0,115200n8 rdinit=/init panic=-1")
            .smp(L1_VCPUS)
            .memory_mib(L1_MEMORY_MIB))
    }

    /// [`Rig::machine`], started.
    pub fn boot(self, name: &str) -> Result<Qemu, Error> {
        self.machine(name)?.spawn()
    }
}

fn io_error(e: io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("building the rig initramfs: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_archive_has_parents_and_every_kind_of_node() {
        let mut cpio = Cpio::new();
        cpio.file("guest/etc/rc", 0o755, "echo hi\n")
            .symlink("init", "bin/busybox")
            .char_device("dev/console", 5, 1);
        let members = cpio::read_archive(&cpio.to_newc().unwrap()).unwrap();
        let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "guest",
                "guest/etc",
                "guest/etc/rc",
                "init"
            ]
        );
        assert_eq!(members[0].mode, 0o040755);
        assert_eq!(members[1].mode, 0o020600);
        assert_eq!(members[1].rdev, (5, 1));
        assert_eq!(members[4].mode, 0o100755);
        assert_eq!(members[4].data, b"echo hi\n");
        assert_eq!(members[5].mode, 0o120777);
        assert_eq!(members[5].data, b"bin/busybox");
        assert!(members.iter().all(|m| m.mtime == 0 && m.uid == 0));
    }

    #[test]
    fn a_path_added_twice_keeps_its_last_contents() {
        let mut cpio = Cpio::new();
        cpio.symlink("bin/sh", "busybox")
            .file("bin/sh", 0o755, "#!real sh")
            .dir("bin");
        let members = cpio::read_archive(&cpio.to_newc().unwrap()).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "bin");
        assert_eq!(
            (members[1].mode, &members[1].data[..]),
            (0o100755, &b"#!real sh"[..])
        );
    }

    #[test]
    fn gzip_archive_is_readable_by_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let mut cpio = Cpio::new();
        cpio.file("a/b.txt", 0o644, "contents\n").dir("a/c");
        let gz = dir.path().join("x.cpio.gz");
        cpio.write_gz(&gz).unwrap();
        let listing = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | cpio -t --quiet", gz.display()))
            .output()
            .unwrap();
        assert!(listing.status.success());
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout),
            "a\na/b.txt\na/c\n"
        );
    }
}
