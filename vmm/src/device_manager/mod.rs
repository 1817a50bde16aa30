//! Puts the guest's devices on the buses and wires their interrupts into
//! KVM: the PC legacy devices on the I/O port bus ([`legacy`]) and the
//! definition's virtio devices, as virtio-pci functions on a PCI root bus
//! ([`pci`]) or as virtio-mmio windows on the MMIO bus ([`mmio`]).

pub mod legacy;
pub mod mmio;
pub mod pci;
pub mod virtio;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use hvcontract::VmmExit;
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::{Bus, BusDevice, OverlapError};

/// Why the devices could not be set up. The handed fds and the backends
/// named by the definition are the definition's (or init's) problem;
/// KVM, eventfd and bus failures are the vmm's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{flag} {index}=...: the definition has only {count} such device(s)")]
    FdIndex {
        flag: &'static str,
        index: usize,
        count: usize,
    },
    #[error("{what}: fd {fd} is not open")]
    FdNotOpen { what: String, fd: RawFd },
    #[error(
        "{what}: labels are resolved by init; pass the opened device with --disk-fd {index}=FD"
    )]
    DiskLabel { what: String, index: usize },
    #[error("{what}: bridged networking needs the tap from init (--tap-fd {index}=FD)")]
    TapNotHanded { what: String, index: usize },
    /// A disk or tap that does not open, or is not what it must be.
    #[error("{what}: {source}")]
    Backend { what: String, source: io::Error },
    #[error("{definition}: {count} virtio devices requested, at most {max} are supported")]
    TooManyDevices {
        definition: String,
        count: usize,
        max: usize,
    },
    #[error("eventfd: {0}")]
    EventFd(io::Error),
    #[error("cannot register irqfd for GSI {gsi}: {source}")]
    Irqfd { gsi: u32, source: kvm_ioctls::Error },
    #[error("cannot register ioeventfd: {0}")]
    IoEventFd(kvm_ioctls::Error),
    #[error("MSI-X: {0}")]
    Msi(crate::devices::pci::msix::Error),
    #[error("virtio device {index}: {source}")]
    Transport { index: usize, source: io::Error },
    #[error("{0}")]
    Bus(OverlapError),
}

impl Error {
    pub fn exit(&self) -> VmmExit {
        match self {
            Error::FdIndex { .. }
            | Error::FdNotOpen { .. }
            | Error::DiskLabel { .. }
            | Error::TapNotHanded { .. }
            | Error::Backend { .. }
            | Error::TooManyDevices { .. } => VmmExit::Invalid,
            Error::EventFd(_)
            | Error::Irqfd { .. }
            | Error::IoEventFd(_)
            | Error::Msi(_)
            | Error::Transport { .. }
            | Error::Bus(_) => VmmExit::Error,
        }
    }
}

/// File descriptors handed over on the command line, by device index.
#[derive(Clone, Copy)]
pub struct HandedFds<'a> {
    pub disks: &'a BTreeMap<usize, RawFd>,
    pub taps: &'a BTreeMap<usize, RawFd>,
}

/// An eventfd registered as a KVM irqfd for `gsi`: writing it raises the
/// interrupt without a trip through the vCPU thread.
pub fn irqfd(vm: &VmFd, gsi: u32) -> Result<EventFd, Error> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|source| Error::Irqfd { gsi, source })?;
    Ok(evt)
}

/// A close-on-exec duplicate of a handed fd, for a second user of it that
/// only reads positioned (the boot loader beside the block device).
pub fn dup_fd(fd: RawFd) -> io::Result<std::fs::File> {
    // SAFETY: fcntl on an fd number; the kernel checks that it is open.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just created and nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(new) })
}

fn insert<D: BusDevice + 'static>(
    bus: &mut Bus,
    device: Arc<Mutex<D>>,
    base: u64,
    len: u64,
) -> Result<(), Error> {
    bus.insert(device, base, len).map_err(Error::Bus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_whose_fault_it_is() {
        let backend = Error::Backend {
            what: "g.toml: disk 1 (d.img)".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(backend.exit(), VmmExit::Invalid);
        let eventfd = Error::EventFd(io::Error::from(io::ErrorKind::OutOfMemory));
        assert_eq!(eventfd.exit(), VmmExit::Error);
        assert_eq!(
            Error::Bus(OverlapError { base: 0x60, len: 5 }).exit(),
            VmmExit::Error
        );
    }
}
