//! Puts the guest definition's virtio devices on the MMIO bus as
//! virtio-mmio devices: window `i` at 0xd000_0000 + i * 4 KiB, interrupt
//! GSI 5 + i, announced in the DSDT as `LNRO0005` devices.

use std::sync::{Arc, Mutex};

use hvconfig::guest::GuestConfig;
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;

use super::{insert, irqfd, Error};
use crate::arch::x86_64::layout::{virtio_mmio_addr, MAX_GSI, VIRTIO_GSI_BASE, VIRTIO_MMIO_SIZE};
use crate::devices::bus::Bus;
use crate::devices::virtio::{MmioTransport, VirtioDevice, WorkerGate};

/// Offset of the QueueNotify register in a virtio-mmio window.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// The virtio devices of a built VM.
#[derive(Default)]
pub struct Attached {
    /// (address, GSI) of each transport, for the DSDT.
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
