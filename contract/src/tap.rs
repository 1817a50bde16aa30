//! Tap devices as init creates them and the vmm adopts them. Both sides
//! must agree on the flags (the vmm's virtio-net expects every frame to
//! carry a vnet header), so opening and checking live here once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

pub const IFF_TAP: libc::c_short = 0x0002;
pub const IFF_NO_PI: libc::c_short = 0x1000;
pub const IFF_VNET_HDR: libc::c_short = 0x4000;
/// What every tap handed to a vmm is created with.
pub const TAP_FLAGS: libc::c_short = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
/// Interface names are at most 15 bytes and a NUL.
pub const IFNAMSIZ: usize = 16;

/// `_IOW('T', 202, int)` and `_IOR('T', 210, unsigned int)` from
/// `<linux/if_tun.h>`, spelled out because libc does not export them for
/// every target we build.
const TUNSETIFF: libc::c_ulong = ioc(1, 202);
const TUNGETIFF: libc::c_ulong = ioc(2, 210);

const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong) -> libc::c_ulong {
    const SIZE_OF_INT: libc::c_ulong = 4;
    (dir << 30) | (SIZE_OF_INT << 16) | ((b'T' as libc::c_ulong) << 8) | nr
}

/// `struct ifreq` as far as TUNSETIFF/TUNGETIFF use it: a name and flags,
/// padded to the kernel's 40 bytes.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates (or attaches to) tap `name` with [`TAP_FLAGS`]. The interface
/// lives as long as the returned fd. A name with `%d` lets the kernel pick
/// the number.
pub fn open(name: &str, nonblocking: bool) -> io::Result<File> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tap name {name:?} must be 1 to 15 bytes without NUL"),
        ));
    }
    let mut req = IfReq {
        flags: TAP_FLAGS,
        ..IfReq::default()
    };
    if let Some(dst) = req.name.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 })
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
    // SAFETY: TUNSETIFF reads and writes back a `struct ifreq`, which
    // `IfReq` matches in size and in the layout of the fields used; `req`
    // outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("tap {name}: TUNSETIFF: {e}"),
        ));
    }
    Ok(file)
}

/// The name and flags of the tap behind `file`; an error if it is none.
pub fn query(file: &File) -> io::Result<(String, libc::c_short)> {
    let mut req = IfReq::default();
    // SAFETY: TUNGETIFF fills a `struct ifreq`, which `IfReq` matches;
    // `req` outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNGETIFF as _, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("fd {} is not a tap device: {e}", file.as_raw_fd()),
        ));
    }
    let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    let name = String::from_utf8_lossy(req.name.get(..len).unwrap_or_default()).into_owned();
    Ok((name, req.flags))
}

/// Checks that a handed-over fd is a tap created with [`TAP_FLAGS`], and
/// returns its name.
pub fn check_handed(file: &File) -> io::Result<String> {
    let (name, flags) = query(file)?;
    if flags & TAP_FLAGS != TAP_FLAGS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "tap fd {} lacks IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (flags {flags:#x})",
                file.as_raw_fd()
            ),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(TUNSETIFF, 0x4004_54ca);
        assert_eq!(TUNGETIFF, 0x8004_54d2);
    }

    #[test]
    fn names_are_checked_before_any_syscall() {
        assert!(open("", false).is_err());
        assert!(open("sixteen-bytes-xx", false).is_err());
        assert!(open("a\0b", false).is_err());
    }

    #[test]
    fn a_regular_file_is_not_a_tap() {
        let f = File::open("/proc/self/stat").unwrap();
        assert!(query(&f).is_err());
    }
}
