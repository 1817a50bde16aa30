//! End-to-end tests of the built `vmm` binary: exit codes and messages for
//! bad input, and, where /dev/kvm is usable, tiny hand-assembled 64-bit
//! guests that exercise the serial port, the i8042 reset line, ACPI
//! power-off, triple faults and the SIGTERM protocol.
//!
//! The guest runs need a usable /dev/kvm (and the privilege drop test
//! root): without one they fail, saying so, rather than pass having
//! checked nothing.
// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const VMM: &str = env!("CARGO_BIN_EXE_vmm");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vmm-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A minimal ELF64 x86_64 executable whose single segment holds `code`,
/// loaded (and entered) at 1 MiB.
fn elf(code: &[u8]) -> Vec<u8> {
    const ENTRY: u64 = 0x10_0000;
    const CODE_OFFSET: u64 = 0x80;
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&ENTRY.to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 1, 0, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, sh*
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&7u32.to_le_bytes()); // RWX
    for v in [
        CODE_OFFSET,
        ENTRY,
        ENTRY,
        code.len() as u64,
        code.len() as u64,
        0x1000,
    ] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.resize(usize::try_from(CODE_OFFSET).unwrap(), 0);
    f.extend_from_slice(code);
    f
}

// Hand-assembled 64-bit snippets.
const SERIAL_OK: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'O', 0xee, // mov al, 'O'; out dx, al
    0xb0, b'K', 0xee, // mov al, 'K'; out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
];
const POKE_UNMAPPED: &[u8] = &[
    0xe4, 0x80, // in al, 0x80
    0x66, 0xba, 0xf8, 0x02, 0xee, // mov dx, 0x2f8; out dx, al
    0x8a, 0x04, 0x25, 0x00, 0x00, 0x00, 0x03, // mov al, [48 MiB]: past RAM, so MMIO
];
const PRINT_CMDLINE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xbe, 0x00, 0x00, 0x02, 0x00, // mov esi, 0x20000 (command line)
    0xac, // next: lodsb
    0x84, 0xc0, // test al, al
    0x74, 0x03, // jz done
    0xee, // out dx, al
    0xeb, 0xf8, // jmp next
    0xb0, b'\n', 0xee, // done: mov al, '\n'; out dx, al
];
const I8042_RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64]; // mov al, 0xfe; out 0x64, al
const ACPI_POWEROFF: &[u8] = &[
    0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
    0x66, 0xb8, 0x00, 0x34, // mov ax, SLP_TYP=5 | SLP_EN
    0x66, 0xef, // out dx, ax
];
const WAIT_FOR_KEY: &[u8] = &[0xe4, 0x64, 0xa8, 0x01, 0x74, 0xfa]; // poll i8042 OBF
const HANG: &[u8] = &[0xf4, 0xeb, 0xfd]; // hlt; jmp hlt
const SPIN: &[u8] = &[0xeb, 0xfe]; // jmp $
const UD2: &[u8] = &[0x0f, 0x0b];

fn program(parts: &[&[u8]]) -> Vec<u8> {
    elf(&parts.concat())
}

fn require_kvm() {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("/dev/kvm is not usable here ({e}); this test runs a guest and needs it");
    }
}

fn vmm(args: &[&str]) -> Command {
    let mut c = Command::new(VMM);
    c.args(args).stdin(Stdio::null());
    c
}

fn run_kernel(dir: &TempDir, code: Vec<u8>, extra: &[&str]) -> Output {
    let k = dir.write("kernel.elf", &code);
    let mut args = vec!["--kernel", k.to_str().unwrap(), "--mem", "32"];
    args.extend_from_slice(extra);
    let out = vmm(&args).output().unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

fn sigterm(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

#[test]
fn serial_output_and_i8042_reset_exit_3() {
    require_kvm();
    let dir = TempDir::new("reset");
    let out = run_kernel(&dir, program(&[SERIAL_OK, I8042_RESET, HANG]), &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn acpi_poweroff_exit_0_on_two_vcpus() {
    require_kvm();
    let dir = TempDir::new("poweroff");
    let out = run_kernel(&dir, program(&[ACPI_POWEROFF, HANG]), &["--vcpus", "2"]);
    assert_eq!(out.status.code(), Some(0));
    // One line per VM, from the boot vCPU, not one per vCPU.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("vCPU 0 entering the guest, ").count(),
        1,
        "{err}"
    );
}

#[test]
fn triple_fault_exit_4() {
    require_kvm();
    let dir = TempDir::new("crash");
    let out = run_kernel(&dir, program(&[UD2]), &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("triple fault"));
}

#[test]
fn unmapped_io_is_ignored() {
    require_kvm();
    let dir = TempDir::new("unmapped");
    let out = run_kernel(
        &dir,
        program(&[POKE_UNMAPPED, SERIAL_OK, I8042_RESET, HANG]),
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn sigterm_injects_ctrl_alt_del() {
    require_kvm();
    let dir = TempDir::new("cad");
    let k = dir.write(
        "k.elf",
        &program(&[SERIAL_OK, WAIT_FOR_KEY, ACPI_POWEROFF, HANG]),
    );
    let mut child = vmm(&["--kernel", k.to_str().unwrap(), "--mem", "32"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the guest runs (its serial line arrives), then ask.
    let mut stdout = child.stdout.take().unwrap();
    let mut line = [0u8; 3];
    std::io::Read::read_exact(&mut stdout, &mut line).unwrap();
    sigterm(&child);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn sigterm_twice_or_timeout_exit_5() {
    require_kvm();
    let dir = TempDir::new("stop");
    let k = dir.write("k.elf", &program(&[SPIN]));
    let k = k.to_str().unwrap();

    let mut child = vmm(&["--kernel", k, "--mem", "32", "--vcpus", "2"])
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(300));
    sigterm(&child);
    sleep(Duration::from_millis(200));
    sigterm(&child);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(10)), Some(5));

    let mut child = vmm(&["--kernel", k, "--mem", "32", "--shutdown-timeout", "1"])
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(300));
    sigterm(&child);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(10)), Some(5));
}

/// The first sector of a bzImage with a boot protocol 2.15 header claiming
/// `syssize` paragraphs of protected-mode code.
fn bzimage_header(syssize: u32) -> Vec<u8> {
    let mut b = vec![0u8; 0x400];
    b[0x1f1] = 1; // setup_sects
    b[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x211] = 1; // loadflags: LOADED_HIGH
    b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // xloadflags: KERNEL_64
    b[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    b
}

fn guest_definition(dir: &TempDir, kernel: &[u8]) -> PathBuf {
    dir.write("guests/web/bzImage", kernel);
    dir.write(
        "guests/x.toml",
        b"[boot]\nkernel = \"web/bzImage\"\ncmdline = \"console=ttyS0\"\n",
    )
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn in_dir(dir: &Path, args: &[&str]) -> Output {
    vmm(args).current_dir(dir).output().unwrap()
}

#[test]
fn truncated_bzimage_is_rejected_with_exit_2() {
    let dir = TempDir::new("trunc");
    let mut image = bzimage_header(0x1000);
    image.resize(0x400 + 0x100, 0x90); // far less than 0x1000 * 16 bytes
    guest_definition(&dir, &image);
    let out = in_dir(&dir.0, &["--guest", "guests/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains(
            "guests/x.toml: kernel web/bzImage: not a bzImage or ELF vmlinux: file is truncated"
        ),
        "{err}"
    );
    let out = in_dir(&dir.0, &["--check", "guests/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("file is truncated"));
}

#[test]
fn garbage_kernel_is_rejected_with_exit_2() {
    let dir = TempDir::new("garbage");
    guest_definition(&dir, &[0x42; 4096]);
    let out = in_dir(&dir.0, &["--guest", "guests/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains(
            "guests/x.toml: kernel web/bzImage: not a bzImage or ELF vmlinux: no ELF magic"
        ),
        "{}",
        stderr_of(&out)
    );
    // Tiny files too.
    for bytes in [&b"\x7fEL"[..], &b"\x7fELF\x01"[..], &b"MZ"[..]] {
        guest_definition(&dir, bytes);
        let out = in_dir(&dir.0, &["--check", "guests/x.toml"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("not a bzImage or ELF vmlinux"));
    }
    guest_definition(&dir, b"");
    let out = in_dir(&dir.0, &["--check", "guests/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("empty"), "{}", stderr_of(&out));
}

#[test]
fn valid_definition_passes_check() {
    let dir = TempDir::new("check-ok");
    let def = guest_definition(&dir, &program(&[HANG]));
    let out = vmm(&["--check", def.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn bad_usage_and_missing_files_exit_2() {
    let out = vmm(&["--frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("unknown argument '--frobnicate'"));

    let dir = TempDir::new("missing");
    let out = vmm(&["--guest", dir.path("nope.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("nope.toml"));

    let def = dir.write("g.toml", b"[boot]\nkernel = \"absent\"\n");
    let out = vmm(&["--guest", def.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("kernel"), "{}", stderr_of(&out));
}

#[test]
fn devices_are_left_to_acpi_not_the_cmdline() {
    require_kvm();
    let dir = TempDir::new("virtio");
    dir.write(
        "guests/web/bzImage",
        &program(&[PRINT_CMDLINE, I8042_RESET, HANG]),
    );
    dir.write("guests/web/disk.img", &[0u8; 8192]);
    // Both transports: the guest finds its devices through the DSDT (the
    // PCI root bus, or LNRO0005 devices), so the command line stays the
    // definition's own.
    for transport in ["pci", "mmio"] {
        let def = dir.write(
            "guests/web.toml",
            format!(
                "[machine]\nvcpus = 2\nmemory_mib = 32\nvirtio = \"{transport}\"\n\
                 [boot]\nkernel = \"web/bzImage\"\ncmdline = \"console=ttyS0 quiet\"\n\
                 [[disk]]\npath = \"web/disk.img\"\n[rng]\nenabled = true\n"
            )
            .as_bytes(),
        );
        let out = vmm(&["--guest", def.to_str().unwrap()]).output().unwrap();
        eprintln!("{}", stderr_of(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "console=ttyS0 quiet\n",
            "{transport}"
        );
        assert_eq!(out.status.code(), Some(3), "{transport}");
    }
}

#[test]
fn bad_device_fds_exit_2() {
    let dir = TempDir::new("fds");
    dir.write("guests/web/bzImage", &program(&[HANG]));
    dir.write("guests/web/disk.img", &[0u8; 4096]);
    let def = dir.write(
        "guests/web.toml",
        b"[boot]\nkernel = \"web/bzImage\"\n[[disk]]\npath = \"web/disk.img\"\n",
    );
    let def = def.to_str().unwrap();
    let out = vmm(&["--guest", def, "--disk-fd", "1=3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("only 1"), "{}", stderr_of(&out));
    // Handed fds are adopted once KVM is open.
    require_kvm();
    let out = vmm(&["--guest", def, "--disk-fd", "0=999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("fd 999 is not open"),
        "{}",
        stderr_of(&out)
    );
}

/// `vmm --check` is what users run on a laptop before copying definitions to
/// the config partition: each kind of mistake must come back with the file,
/// line, column and what is allowed, and a later good file must not hide an
/// earlier bad one.
#[test]
fn check_rejects_each_kind_of_bad_definition_precisely() {
    let dir = TempDir::new("check-bad");
    dir.write("guests/web/bzImage", &program(&[HANG]));
    let good = dir.write("guests/good.toml", b"[boot]\nkernel = \"web/bzImage\"\n");
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown-key",
            "[boot]\nkernal = \"web/bzImage\"\n",
            "unknown-key.toml:2:1: unknown key 'kernal' in [boot] (allowed: kernel, initrd, cmdline)",
        ),
        (
            "range",
            "[machine]\nvcpus = 64\n[boot]\nkernel = \"web/bzImage\"\n",
            "range.toml:2:9: vcpus = 64 is out of range (allowed 1..=32)",
        ),
        (
            "wrong-type",
            "[machine]\nmemory_mib = \"lots\"\n[boot]\nkernel = \"web/bzImage\"\n",
            "wrong-type.toml:2:14: memory_mib must be an integer in 16..=1048576, found a string",
        ),
        (
            "bad-mac",
            "[boot]\nkernel = \"web/bzImage\"\n[[net]]\ntap = \"tap0\"\nmac = \"01:00:5e:00:00:01\"\n",
            "bad-mac.toml:5:7: mac 01:00:5e:00:00:01 is a multicast address",
        ),
        (
            "missing-kernel",
            "[boot]\nkernel = \"web/none\"\n",
            "missing-kernel.toml: kernel",
        ),
        ("no-boot", "[machine]\nvcpus = 1\n", "no-boot.toml:"),
        (
            "Bad_Name",
            "[boot]\nkernel = \"web/bzImage\"\n",
            "Bad_Name.toml:1:1:",
        ),
        ("not-toml", "[boot\nkernel = 1\n", "not-toml.toml:1:6: invalid TOML"),
    ];
    for (name, text, expected) in cases {
        let def = dir.write(&format!("guests/{name}.toml"), text.as_bytes());
        let out = vmm(&["--check", def.to_str().unwrap(), good.to_str().unwrap()])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(expected),
            "{name}: expected {expected:?} in:\n{err}"
        );
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The credential lines of /proc/PID/task/TID/status, for every thread.
fn thread_credentials(pid: u32) -> Vec<(String, Vec<String>)> {
    let fields = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ];
    let mut threads = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let name = status.lines().next().unwrap_or_default().to_string();
        let lines = status
            .lines()
            .filter(|l| fields.iter().any(|f| l.starts_with(&format!("{f}:"))))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        threads.push((name, lines));
    }
    threads
}

/// With --uid/--gid everything that needs root (here: kernel, initrd and
/// disk only root may read, and /dev/kvm) is opened before the drop, so
/// the guest still boots; and every thread (main, vCPUs, virtio workers)
/// then runs with the new ids, no capabilities, not even in the bounding
/// set, and no_new_privs.
#[test]
fn uid_gid_run_opens_root_only_files_first_and_keeps_no_privilege() {
    require_kvm();
    assert!(
        running_as_root(),
        "this test opens root-only files and changes ids: it needs root"
    );
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("privdrop");
    for (rel, bytes) in [
        (
            "guests/web/bzImage",
            program(&[SERIAL_OK, WAIT_FOR_KEY, ACPI_POWEROFF, HANG]),
        ),
        ("guests/web/initrd.img", vec![0x5a; 4096]),
        ("guests/web/disk.img", vec![0; 8192]),
    ] {
        let p = dir.write(rel, &bytes);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let def = dir.write(
        "guests/web.toml",
        b"[machine]\nvcpus = 2\nmemory_mib = 32\n[boot]\nkernel = \"web/bzImage\"\n\
          initrd = \"web/initrd.img\"\n[[disk]]\npath = \"web/disk.img\"\n[rng]\nenabled = true\n",
    );
    let def = def.to_str().unwrap();

    // What a vmm that opened its files only after the drop would get.
    let out = vmm(&["--check", def])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("web.toml: kernel web/bzImage: cannot open: Permission denied"),
        "{}",
        stderr_of(&out)
    );

    let mut child = vmm(&["--guest", def, "--uid", "65534", "--gid", "65534"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 3];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut line).unwrap();
    assert_eq!(&line, b"OK\n");
    let threads = thread_credentials(child.id());
    sigterm(&child);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(10)), Some(0));

    // KVM may add threads of its own (kvm-nx-lpage-recovery); they are
    // checked as well.
    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "vmm",
        "vcpu0",
        "vcpu1",
        "virtio-blk-work",
        "virtio-rng-work",
    ] {
        assert!(
            names.contains(&format!("Name:\t{name}").as_str()),
            "{names:?}"
        );
    }
    let none = "0000000000000000";
    let expected = [
        "Uid: 65534 65534 65534 65534".to_string(),
        "Gid: 65534 65534 65534 65534".to_string(),
        "Groups:".to_string(),
        format!("CapInh: {none}"),
        format!("CapPrm: {none}"),
        format!("CapEff: {none}"),
        format!("CapBnd: {none}"),
        format!("CapAmb: {none}"),
        "NoNewPrivs: 1".to_string(),
    ];
    for (name, lines) in &threads {
        assert_eq!(lines, &expected, "{name}");
    }
}

/// The kernel is parsed only after the privilege drop: when the drop
/// fails (an unprivileged caller cannot change ids), a garbage kernel has
/// not been looked at yet, so the drop is what gets reported.
#[test]
fn kernel_is_parsed_only_after_the_privilege_drop() {
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("drop-order");
    let def = guest_definition(&dir, &[0x42; 4096]);
    let mut cmd = vmm(&["--guest", def.to_str().unwrap(), "--uid", "1", "--gid", "1"]);
    if running_as_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("cannot drop supplementary groups: Operation not permitted"),
        "{err}"
    );
    assert!(!err.contains("not a bzImage"), "{err}");
}
