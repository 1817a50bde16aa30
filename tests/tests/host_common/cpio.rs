//! A gzip-compressed newc cpio archive (what the kernel unpacks as an
//! initramfs) holding a static busybox and an /init script.

use std::io::Write;
use std::process::{Command, Stdio};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Appends one newc entry: header, NUL-terminated name and data, each
/// padded to 4 bytes.
fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        data.len() as u32,
        0, // dev major
        0, // dev minor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// `/init` = `script`, `/bin/busybox` from the host (busybox-static),
/// `/dev/console` so the script has a console before devtmpfs is mounted.
pub fn busybox_initramfs(script: &str) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("reading /bin/busybox (busybox-static)");
    let mut archive = Vec::new();
    let mut ino = 1;
    let mut add = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        entry(&mut archive, ino, name, mode, rdev, data);
        ino += 1;
    };
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        add(dir, S_IFDIR | 0o755, (0, 0), &[]);
    }
    add("dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    add("bin/busybox", S_IFREG | 0o755, (0, 0), &busybox);
    add("init", S_IFREG | 0o755, (0, 0), script.as_bytes());
    entry(&mut archive, 0, "TRAILER!!!", 0, (0, 0), &[]);
    gzip(&archive)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running gzip");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip output");
    writer
        .join()
        .expect("writer thread")
        .expect("writing to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}
