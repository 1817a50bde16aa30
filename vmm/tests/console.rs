//! The serial console of the built `vmm`, driven by tiny hand-assembled
//! 64-bit guests (where /dev/kvm is usable): string port I/O, a 1 MiB
//! flood read at full speed and slowly (every byte, in order, nothing
//! dropped), and a stdout nobody reads (the VM still stops).
//!
//! They need a usable /dev/kvm: without one they fail, saying so.
// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const VMM: &str = env!("CARGO_BIN_EXE_vmm");

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
    let len = u64::try_from(code.len()).unwrap();
    for v in [CODE_OFFSET, ENTRY, ENTRY, len, len, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.resize(usize::try_from(CODE_OFFSET).unwrap(), 0);
    f.extend_from_slice(code);
    f
}

// Hand-assembled 64-bit snippets.
const ACPI_POWEROFF: &[u8] = &[
    0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
    0x66, 0xb8, 0x00, 0x34, // mov ax, SLP_TYP=5 | SLP_EN
    0x66, 0xef, // out dx, ax
];
const HANG: &[u8] = &[0xf4, 0xeb, 0xfd]; // hlt; jmp hlt
const NEWLINE: &[u8] = &[0x66, 0xba, 0xf8, 0x03, 0xb0, b'\n', 0xee]; // mov dx, 0x3f8; mov al, '\n'; out dx, al

/// `rep outsb` of "hello" to COM1, then a newline and power-off.
fn rep_outsb_hello() -> Vec<u8> {
    let tail: Vec<u8> = [NEWLINE, ACPI_POWEROFF, HANG].concat();
    let body: Vec<u8> = [
        &[0xb9, 0x05, 0x00, 0x00, 0x00][..], // mov ecx, 5
        &[0x66, 0xba, 0xf8, 0x03],           // mov dx, 0x3f8
        &[0xf3, 0x6e],                       // rep outsb
        &tail,
    ]
    .concat();
    // lea rsi, [rip + body.len()]: the message follows the code.
    let disp = u32::try_from(body.len()).unwrap().to_le_bytes();
    [&[0x48, 0x8d, 0x35][..], &disp, &body, b"hello"].concat()
}

/// `rep insb` of four bytes from LSR into memory, then `rep outsb` of
/// them to COM1: four reads of LSR (0x60, "`"), not one read of 0xff.
fn rep_insb_lsr() -> Vec<u8> {
    [
        &[0xbf, 0x00, 0x00, 0x20, 0x00][..], // mov edi, 0x200000
        &[0xb9, 0x04, 0x00, 0x00, 0x00],     // mov ecx, 4
        &[0x66, 0xba, 0xfd, 0x03],           // mov dx, 0x3fd (LSR)
        &[0xf3, 0x6c],                       // rep insb
        &[0xbe, 0x00, 0x00, 0x20, 0x00],     // mov esi, 0x200000
        &[0xb9, 0x04, 0x00, 0x00, 0x00],     // mov ecx, 4
        &[0x66, 0xba, 0xf8, 0x03],           // mov dx, 0x3f8
        &[0xf3, 0x6e],                       // rep outsb
        NEWLINE,
        ACPI_POWEROFF,
        HANG,
    ]
    .concat()
}

/// Writes bytes 0, 1, 2, ... (mod 256) to COM1 as a polling driver does
/// (wait for LSR.THRE, write THR), `count` of them, then powers off.
fn polled_counter(count: u32) -> Vec<u8> {
    let n = count.to_le_bytes();
    [
        &[0x31, 0xdb][..],               // xor ebx, ebx
        &[0xb9, n[0], n[1], n[2], n[3]], // mov ecx, count
        &[0x66, 0xba, 0xfd, 0x03],       // next: mov dx, 0x3fd
        &[0xec],                         // wait: in al, dx
        &[0xa8, 0x20],                   // test al, 0x20 (THRE)
        &[0x74, 0xfb],                   // jz wait
        &[0x66, 0xba, 0xf8, 0x03],       // mov dx, 0x3f8
        &[0x88, 0xd8],                   // mov al, bl
        &[0xee],                         // out dx, al
        &[0xfe, 0xc3],                   // inc bl
        &[0xff, 0xc9],                   // dec ecx
        &[0x75, 0xea],                   // jnz next
        ACPI_POWEROFF,
        HANG,
    ]
    .concat()
}

struct Kernel(PathBuf);

impl Kernel {
    fn new(name: &str, code: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("vmm-console-{}-{name}.elf", std::process::id()));
        fs::write(&path, elf(code)).unwrap();
        Kernel(path)
    }

    fn spawn(&self, stdout: Stdio) -> Child {
        Command::new(VMM)
            .args(["--kernel", self.0.to_str().unwrap(), "--mem", "32"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A vmm that a failed assertion must not leave running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn rep_outsb_of_hello_prints_five_bytes() {
    require_kvm();
    let k = Kernel::new("outsb", &rep_outsb_hello());
    let out = k.spawn(Stdio::piped()).wait_with_output().unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn rep_insb_reads_the_port_once_per_byte() {
    require_kvm();
    let k = Kernel::new("insb", &rep_insb_lsr());
    let out = k.spawn(Stdio::piped()).wait_with_output().unwrap();
    assert_eq!(out.stdout, b"````\n", "LSR (THRE|TEMT) four times");
    assert_eq!(out.status.code(), Some(0));
}

/// Reads all of `child`'s stdout, `chunk` bytes at a time with `pause`
/// between reads.
fn read_all(child: &mut Child, chunk: usize, pause: Duration) -> Vec<u8> {
    let mut stdout = child.stdout.take().unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            return all;
        }
        all.extend_from_slice(buf.get(..n).unwrap_or_default());
        sleep(pause);
    }
}

fn check_counter(out: &[u8], count: usize) {
    assert_eq!(out.len(), count, "every byte arrives");
    if let Some(i) = out
        .iter()
        .enumerate()
        .position(|(i, &b)| usize::from(b) != i % 256)
    {
        panic!("byte {i} is {:?}, expected {:#x}", out.get(i), i % 256);
    }
}

const FLOOD: u32 = 1 << 20;

#[test]
fn a_mib_flood_arrives_whole_and_in_order_with_a_fast_reader() {
    require_kvm();
    let k = Kernel::new("flood-fast", &polled_counter(FLOOD));
    let started = Instant::now();
    let mut child = k.spawn(Stdio::piped());
    let out = read_all(&mut child, 64 * 1024, Duration::ZERO);
    let elapsed = started.elapsed();
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(60)), Some(0));
    eprintln!(
        "1 MiB in {elapsed:?} ({:.0} KiB/s)",
        1024.0 / elapsed.as_secs_f64()
    );
    check_counter(&out, 1 << 20);
}

#[test]
fn a_mib_flood_arrives_whole_and_in_order_with_a_slow_reader() {
    require_kvm();
    let k = Kernel::new("flood-slow", &polled_counter(FLOOD));
    let mut child = k.spawn(Stdio::piped());
    // 4 KiB every 2 ms: at most 2 MiB/s, slower than the guest writes.
    let out = read_all(&mut child, 4096, Duration::from_millis(2));
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(60)), Some(0));
    let err = stderr_of(&mut child);
    assert!(!err.contains("lost"), "{err}");
    check_counter(&out, 1 << 20);
}

/// Nobody reads stdout: the guest is held back (no byte dropped), and the
/// VM still stops when asked, saying what it could not deliver.
#[test]
fn an_undrained_stdout_does_not_wedge_the_stop() {
    require_kvm();
    let k = Kernel::new("undrained", &polled_counter(u32::MAX));
    let mut child = KillOnDrop(k.spawn(Stdio::piped()));
    let child = &mut child.0;
    // Keep the pipe open but never read it; wait until it is full (the
    // guest is slow: two VM exits per byte).
    let stdout = child.stdout.take().unwrap();
    let queued = || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on a pipe we own writes one int.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&stdout),
                libc::FIONREAD,
                &mut n,
            )
        };
        n
    };
    let started = Instant::now();
    // A full pipe holds a little less than 64 KiB when written in pieces.
    while queued() < 60 * 1024 {
        assert!(started.elapsed() < Duration::from_secs(300), "{}", queued());
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_millis(500));
    let term = |child: &Child| {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    };
    term(child);
    sleep(Duration::from_millis(500));
    term(child);
    let started = Instant::now();
    assert_eq!(wait_timeout(child, Duration::from_secs(20)), Some(5));
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = stderr_of(child);
    eprintln!("stderr: {err}");
    assert!(err.contains("not written"), "{err}");
    assert!(
        !err.contains("lost"),
        "a polling guest loses nothing: {err}"
    );
}
