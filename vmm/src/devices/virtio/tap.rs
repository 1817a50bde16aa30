//! Host tap interfaces for virtio-net. Creating a tap and checking one
//! handed over by init is the contract's ([`hvcontract::tap`]); what is
//! left here is the vmm's own configuration of it: 12-byte vnet headers,
//! no offloads, non-blocking.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vmm_sys_util::ioctl::{ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::ioctl_iow_nr;

/// Size of `struct virtio_net_hdr_v1`, which every frame on the tap carries
/// in front of the Ethernet header.
pub const VNET_HDR_LEN: usize = 12;
/// The same, as TUNSETVNETHDRSZ takes it.
const VNET_HDR_SZ: std::os::raw::c_int = 12;
const _: () = assert!(VNET_HDR_SZ as usize == VNET_HDR_LEN);

const TUNTAP: u32 = b'T' as u32;
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, ::std::os::raw::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, ::std::os::raw::c_int);

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
        Tap::configure(hvcontract::tap::open(name, true)?)
    }

    /// Adopts an already-open tap fd (e.g. handed over by init). It must have
    /// been created with the contract's flags
    /// ([`hvcontract::tap::TAP_FLAGS`]).
    pub fn from_file(file: File) -> io::Result<Tap> {
        hvcontract::tap::check_handed(&file)?;
        Tap::configure(file)
    }

    fn configure(file: File) -> io::Result<Tap> {
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        if unsafe { ioctl_with_ref(&file, TUNSETVNETHDRSZ(), &VNET_HDR_SZ) } < 0 {
            return Err(os_error("TUNSETVNETHDRSZ"));
        }
        // We negotiate no offloads with the guest, so the host must hand us
        // complete, checksummed frames.
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { ioctl_with_val(&file, TUNSETOFFLOAD(), 0) } < 0 {
            return Err(os_error("TUNSETOFFLOAD"));
        }
        set_nonblocking(&file)?;
        // The name as the kernel reports it (a `%d` is filled in by now).
        let name = hvcontract::tap::query(&file)
            .map(|(name, _)| name)
            .unwrap_or_default();
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
