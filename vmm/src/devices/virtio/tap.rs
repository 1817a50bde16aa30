//! Host tap interfaces for virtio-net.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

/// Size of `struct virtio_net_hdr_v1`, which every frame on the tap carries
/// in front of the Ethernet header.
pub const VNET_HDR_LEN: usize = 12;

const TUNTAP: u32 = b'T' as u32;
ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, ::std::os::raw::c_int);
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, ::std::os::raw::c_uint);
ioctl_ior_nr!(TUNGETIFF, TUNTAP, 210, ::std::os::raw::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, ::std::os::raw::c_int);

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as far as TUNSETIFF/TUNGETIFF use it: a name and flags,
/// padded to the kernel's 40 bytes.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// An open tap device, configured for virtio-net: non-blocking, 12-byte
/// vnet headers, no offloads.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating if needed) the tap interface `name` via /dev/net/tun.
    /// A name containing `%d` lets the kernel pick the number.
    pub fn open(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid tap interface name {name:?}"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        let mut req = IfReq {
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            ..Default::default()
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes back a `struct ifreq`, which
        // `IfReq` matches in size and layout of the fields used.
        if unsafe { ioctl_with_mut_ref(&file, TUNSETIFF(), &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("tap {name}: TUNSETIFF: {e}"),
            ));
        }
        Tap::configure(file)
    }

    /// Adopts an already-open tap fd (e.g. handed over by init). It must have
    /// been created with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
    pub fn from_file(file: File) -> io::Result<Tap> {
        let mut req = IfReq::default();
        // SAFETY: TUNGETIFF fills a `struct ifreq`, which `IfReq` matches.
        if unsafe { ioctl_with_mut_ref(&file, TUNGETIFF(), &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("fd {} is not a tap device: {e}", file.as_raw_fd()),
            ));
        }
        let wanted = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if req.flags & wanted != wanted {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tap fd {} lacks IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (flags {:#x})",
                    file.as_raw_fd(),
                    req.flags
                ),
            ));
        }
        Tap::configure(file)
    }

    fn configure(file: File) -> io::Result<Tap> {
        let hdr_len = VNET_HDR_LEN as std::os::raw::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        if unsafe { ioctl_with_ref(&file, TUNSETVNETHDRSZ(), &hdr_len) } < 0 {
            return Err(os_error("TUNSETVNETHDRSZ"));
        }
        // We negotiate no offloads with the guest, so the host must hand us
        // complete, checksummed frames.
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { ioctl_with_val(&file, TUNSETOFFLOAD(), 0) } < 0 {
            return Err(os_error("TUNSETOFFLOAD"));
        }
        set_nonblocking(&file)?;
        let mut req = IfReq::default();
        // SAFETY: as in `from_file`.
        let name = if unsafe { ioctl_with_mut_ref(&file, TUNGETIFF(), &mut req) } < 0 {
            String::new()
        } else {
            let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
            String::from_utf8_lossy(&req.name[..len]).into_owned()
        };
        Ok(Tap { file, name })
    }

    /// The interface name (as the kernel reports it).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn into_file(self) -> File {
        self.file
    }
}

fn os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("tap: {what}: {e}"))
}

pub(crate) fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd we own; no memory is involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(os_error("O_NONBLOCK"));
    }
    Ok(())
}
