//! Puts the guest definition's disks, NICs and entropy source on the MMIO
//! bus as virtio-mmio devices: window `i` at 0xd000_0000 + i * 4 KiB,
//! interrupt GSI 5 + i, announced on the kernel command line.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};

use hvconfig::guest::{DiskSource, GuestConfig};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout::{virtio_mmio_addr, MAX_GSI, VIRTIO_GSI_BASE, VIRTIO_MMIO_SIZE};
use crate::devices::bus::Bus;
use crate::devices::virtio::{Block, MmioTransport, Net, Rng, Tap, VirtioDevice, WorkerGate};
use crate::error::Fatal;

/// Offset of the QueueNotify register in a virtio-mmio window.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// File descriptors handed over on the command line, by device index.
#[derive(Default)]
pub struct HandedFds {
    pub disks: BTreeMap<usize, RawFd>,
    pub taps: BTreeMap<usize, RawFd>,
}

/// Takes ownership of an inherited fd, checking first that it is open.
fn adopt(fd: RawFd, what: &str) -> Result<File, Fatal> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Fatal::invalid(format!("{what}: fd {fd} is not open")));
    }
    // SAFETY: the fd is open and was handed to us to own; nothing else in
    // this process uses it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn check_indexes(fds: &BTreeMap<usize, RawFd>, count: usize, flag: &str) -> Result<(), Fatal> {
    match fds.keys().find(|&&i| i >= count) {
        Some(i) => Err(Fatal::invalid(format!(
            "{flag} {i}=...: the definition has only {count} such device(s)"
        ))),
        None => Ok(()),
    }
}

/// The devices the definition asks for, in guest order: disks (vda, vdb,
/// ...), then NICs (eth0, ...), then the RNG. Runs before the privilege
/// drop: disk paths and taps opened by name (TUNSETIFF needs
/// CAP_NET_ADMIN) may need root; nothing here reads what is in them.
pub fn open_devices(
    guest: &GuestConfig,
    fds: &HandedFds,
) -> Result<Vec<Box<dyn VirtioDevice>>, Fatal> {
    check_indexes(&fds.disks, guest.disks.len(), "--disk-fd")?;
    check_indexes(&fds.taps, guest.nets.len(), "--tap-fd")?;
    let def = guest.file.display();
    let mut out: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (i, disk) in guest.disks.iter().enumerate() {
        let what = format!("{def}: disk {} ({})", i + 1, disk.path);
        let block = match (fds.disks.get(&i), &disk.path) {
            (Some(&fd), _) => Block::new(adopt(fd, &what)?, disk.read_only),
            (None, DiskSource::Path(path)) => Block::open(path, disk.read_only),
            (None, _) => {
                return Err(Fatal::invalid(format!(
                "{what}: labels are resolved by init; pass the opened device with --disk-fd {i}=FD"
            )))
            }
        }
        .map_err(|e| Fatal::invalid(format!("{what}: {e}")))?;
        log::debug!("{what}: {} sectors", block.capacity_sectors());
        out.push(Box::new(block.with_id(&format!(
            "{}-{}",
            guest.name,
            i + 1
        ))));
    }
    for (i, net) in guest.nets.iter().enumerate() {
        let what = format!("{def}: net {}", i + 1);
        let tap = match (fds.taps.get(&i), &net.tap) {
            (Some(&fd), _) => Tap::from_file(adopt(fd, &what)?),
            (None, Some(name)) => Tap::open(name),
            (None, None) => {
                return Err(Fatal::invalid(format!(
                    "{what}: bridged networking needs the tap from init (--tap-fd {i}=FD)"
                )))
            }
        }
        .map_err(|e| Fatal::invalid(format!("{what}: {e}")))?;
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
) -> Result<Attached, Fatal> {
    let max = (MAX_GSI - VIRTIO_GSI_BASE + 1) as usize;
    if devices.len() > max {
        return Err(Fatal::invalid(format!(
            "{}: {} virtio devices requested, at most {max} are supported",
            guest.file.display(),
            devices.len()
        )));
    }
    let mut attached = Attached::default();
    for (i, device) in devices.into_iter().enumerate() {
        let (addr, gsi) = (virtio_mmio_addr(i), VIRTIO_GSI_BASE + i as u32);
        let irq = EventFd::new(EFD_NONBLOCK).map_err(|e| Fatal::vmm(format!("eventfd: {e}")))?;
        vm.register_irqfd(&irq, gsi)
            .map_err(|e| Fatal::vmm(format!("cannot register irqfd for GSI {gsi}: {e}")))?;
        let mut transport = MmioTransport::new(mem.clone(), device, irq)
            .map_err(|e| Fatal::vmm(format!("virtio device {i}: {e}")))?;
        // Queue notifications complete in the kernel instead of exiting to
        // a vCPU thread.
        for (queue, evt) in transport.queue_notify_eventfds().iter().enumerate() {
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(addr + QUEUE_NOTIFY_OFFSET),
                queue as u32,
            )
            .map_err(|e| Fatal::vmm(format!("cannot register ioeventfd: {e}")))?;
        }
        attached.workers.extend(transport.take_worker_gate());
        bus.insert(
            std::sync::Arc::new(std::sync::Mutex::new(transport)),
            addr,
            VIRTIO_MMIO_SIZE,
        )
        .map_err(|e| Fatal::vmm(e.to_string()))?;
        attached.slots.push((addr, gsi));
    }
    Ok(attached)
}
