//! Puts the guest definition's virtio devices on a PCI root bus: the host
//! bridge at 00:00.0, device `i` at 00:(i+1).0 with its BAR in the PCI
//! window (`layout::pci_bar_addr`), the configuration ports at 0xCF8 and
//! ECAM at `layout::PCI_ECAM_START`, one
//! MSI-X vector (irqfd + MSI route) per queue plus one, and pin A as a
//! resample irqfd on its IOAPIC GSI for drivers that stay on INTx.

use std::sync::{Arc, Mutex};

use hvconfig::guest::GuestConfig;
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{insert, irqfd, Error};
use crate::arch::x86_64::layout::{
    pci_bar_addr, pci_intx_gsi, PCI_BAR_SIZE, PCI_CONFIG_PORT, PCI_ECAM_SIZE, PCI_ECAM_START,
    PCI_MMIO_SIZE, PCI_MMIO_START,
};
use crate::devices::bus::Bus;
use crate::devices::pci::msix::{MsiRouter, Vector};
use crate::devices::pci::{self, ConfigIo, Ecam, MmioWindow, PciBus};
use crate::devices::virtio::pci::{vectors_needed, IntxLine, PciInterrupts, BAR_SIZE};
use crate::devices::virtio::{PciTransport, VirtioDevice, WorkerGate};

const _: () = assert!(BAR_SIZE == PCI_BAR_SIZE);

/// The virtio devices of a built VM.
#[derive(Default)]
pub struct Attached {
    /// (slot, INTx GSI) of each device, for the DSDT's `_PRT`.
    pub slots: Vec<(u8, u32)>,
    /// The transports' worker threads, waiting to be started.
    pub workers: Vec<WorkerGate>,
}

fn eventfd() -> Result<EventFd, Error> {
    EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)
}

fn intx(vm: &VmFd, gsi: u32) -> Result<IntxLine, Error> {
    let line = IntxLine {
        irq: eventfd()?,
        resample: eventfd()?,
    };
    vm.register_irqfd_with_resample(&line.irq, &line.resample, gsi)
        .map_err(|source| Error::Irqfd { gsi, source })?;
    Ok(line)
}

/// Creates the transports for the opened `devices` (each spawns its
/// worker thread, which waits for its gate), puts them on a PCI bus and
/// wires their interrupts and doorbells into KVM.
pub fn attach(
    guest: &GuestConfig,
    devices: Vec<Box<dyn VirtioDevice>>,
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pio: &mut Bus,
    mmio: &mut Bus,
) -> Result<Attached, Error> {
    let max = pci::MAX_SLOTS - 1;
    if devices.len() > max {
        return Err(Error::TooManyDevices {
            definition: guest.file.display().to_string(),
            count: devices.len(),
            max,
        });
    }
    let router = Arc::new(MsiRouter::new(vm.clone()));
    let mut bus = PciBus::new();
    let mut attached = Attached::default();
    for (index, device) in devices.into_iter().enumerate() {
        let slot = index + 1;
        let mut vectors = Vec::new();
        for _ in 0..vectors_needed(device.as_ref()) {
            let gsi = router.allocate().map_err(Error::Msi)?;
            vectors.push(Vector::new(irqfd(vm, gsi)?, gsi));
        }
        let gsi = pci_intx_gsi(slot);
        let irqs = PciInterrupts {
            vectors,
            router: Some(router.clone()),
            intx: Some(intx(vm, gsi)?),
        };
        let mut transport = PciTransport::new(mem.clone(), device, pci_bar_addr(slot), irqs)
            .map_err(|source| Error::Transport { index, source })?;
        transport
            .register_doorbells(vm.clone(), PCI_MMIO_START..PCI_MMIO_START + PCI_MMIO_SIZE)
            .map_err(Error::IoEventFd)?;
        attached.workers.extend(transport.take_worker_gate());
        if !bus.insert(slot, Arc::new(Mutex::new(transport))) {
            return Err(Error::Bus(crate::devices::bus::OverlapError {
                base: pci_bar_addr(slot),
                len: PCI_BAR_SIZE,
            }));
        }
        // Below MAX_SLOTS, so it fits.
        attached
            .slots
            .push((u8::try_from(slot).unwrap_or(u8::MAX), gsi));
    }
    let bus = Arc::new(bus);
    insert(
        pio,
        Arc::new(Mutex::new(ConfigIo::new(bus.clone()))),
        u64::from(PCI_CONFIG_PORT),
        pci::CONFIG_IO_LEN,
    )?;
    insert(
        mmio,
        Arc::new(Mutex::new(Ecam::new(bus.clone()))),
        PCI_ECAM_START,
        PCI_ECAM_SIZE,
    )?;
    insert(
        mmio,
        Arc::new(Mutex::new(MmioWindow::new(PCI_MMIO_START, bus))),
        PCI_MMIO_START,
        PCI_MMIO_SIZE,
    )?;
    Ok(attached)
}
