//! Puts the guest definition's disks, NICs and entropy source on the MMIO
//! bus as virtio-mmio devices: window `i` at 0xd000_0000 + i * 4 KiB,
//! interrupt GSI 5 + i, announced on the kernel command line.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Arc, Mutex};

use hvconfig::guest::{DiskSource, GuestConfig};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use super::{insert, irqfd, Error, HandedFds};
use crate::arch::x86_64::layout::{virtio_mmio_addr, MAX_GSI, VIRTIO_GSI_BASE, VIRTIO_MMIO_SIZE};
use crate::devices::bus::Bus;
use crate::devices::virtio::{Block, MmioTransport, Net, Rng, Tap, VirtioDevice, WorkerGate};

/// Offset of the QueueNotify register in a virtio-mmio window.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// Takes ownership of an inherited fd, checking first that it is open.
fn adopt(fd: RawFd, what: &str) -> Result<File, Error> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::FdNotOpen {
            what: what.into(),
            fd,
        });
    }
    // SAFETY: the fd is open and was handed to us to own; nothing else in
    // this process uses it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn check_indexes(
    fds: &BTreeMap<usize, RawFd>,
    count: usize,
    flag: &'static str,
) -> Result<(), Error> {
    match fds.keys().find(|&&i| i >= count) {
        Some(&index) => Err(Error::FdIndex { flag, index, count }),
        None => Ok(()),
    }
}

/// The devices the definition asks for, in guest order: disks (vda, vdb,
/// ...), then NICs (eth0, ...), then the RNG. Runs before the privilege
/// drop: disk paths and taps opened by name (TUNSETIFF needs
/// CAP_NET_ADMIN) may need root; nothing here reads what is in them.
pub fn open_devices(
    guest: &GuestConfig,
    fds: HandedFds,
) -> Result<Vec<Box<dyn VirtioDevice>>, Error> {
    check_indexes(fds.disks, guest.disks.len(), "--disk-fd")?;
    check_indexes(fds.taps, guest.nets.len(), "--tap-fd")?;
    let def = guest.file.display();
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (index, disk) in guest.disks.iter().enumerate() {
        let what = format!("{def}: disk {} ({})", index + 1, disk.path);
        let block = match (fds.disks.get(&index), &disk.path) {
            (Some(&fd), _) => Block::new(adopt(fd, &what)?, disk.read_only),
            (None, DiskSource::Path(path)) => Block::open(path, disk.read_only),
            (None, _) => return Err(Error::DiskLabel { what, index }),
        };
        let block = block.map_err(|source| Error::Backend {
            what: what.clone(),
            source,
        })?;
        log::debug!("{what}: {} sectors", block.capacity_sectors());
        out.push(Box::new(block.with_id(&format!(
            "{}-{}",
            guest.name,
            index + 1
        ))));
    }
    for (index, net) in guest.nets.iter().enumerate() {
        let what = format!("{def}: net {}", index + 1);
        let tap = match (fds.taps.get(&index), &net.tap) {
            (Some(&fd), _) => Tap::from_file(adopt(fd, &what)?),
            (None, Some(name)) => Tap::open(name),
            (None, None) => return Err(Error::TapNotHanded { what, index }),
        };
        let tap = tap.map_err(|source| Error::Backend {
            what: what.clone(),
            source,
        })?;
        log::debug!("{what}: tap {}, MAC {}", tap.name(), net.mac);
        out.push(Box::new(Net::new(tap, net.mac.to_bytes())));
    }
    if guest.rng.enabled {
        out.push(Box::new(Rng::new()));
    }
    Ok(out)
}

/// The virtio devices of a built VM.
#[derive(Default)]
pub struct Attached {
    /// (address, GSI) of each transport, for the kernel command line.
    pub slots: Vec<(u64, u32)>,
    /// The transports' worker threads, waiting to be started.
    pub workers: Vec<WorkerGate>,
}

/// Creates the transports for the opened `devices` (each spawns its
/// worker thread, which waits for its gate), maps them and wires their
/// interrupts and queue notifications into KVM.
pub fn attach(
    guest: &GuestConfig,
    devices: Vec<Box<dyn VirtioDevice>>,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
) -> Result<Attached, Error> {
    let slots = (VIRTIO_GSI_BASE..MAX_GSI + 1).enumerate();
    if devices.len() > slots.len() {
        return Err(Error::TooManyDevices {
            definition: guest.file.display().to_string(),
            count: devices.len(),
            max: slots.len(),
        });
    }
    let mut attached = Attached::default();
    for ((index, gsi), device) in slots.zip(devices) {
        let addr = virtio_mmio_addr(index);
        let mut transport = MmioTransport::new(mem.clone(), device, irqfd(vm, gsi)?)
            .map_err(|source| Error::Transport { index, source })?;
        // Queue notifications complete in the kernel instead of exiting to
        // a vCPU thread.
        let notify = IoEventAddress::Mmio(addr + QUEUE_NOTIFY_OFFSET);
        for (queue, evt) in (0u32..).zip(transport.queue_notify_eventfds()) {
            vm.register_ioevent(evt, &notify, queue)
                .map_err(Error::IoEventFd)?;
        }
        attached.workers.extend(transport.take_worker_gate());
        insert(bus, Arc::new(Mutex::new(transport)), addr, VIRTIO_MMIO_SIZE)?;
        attached.slots.push((addr, gsi));
    }
    Ok(attached)
}
