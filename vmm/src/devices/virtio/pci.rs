//! virtio-pci transport, virtio 1.x "modern" and non-transitional: device
//! ID 0x1040 + type, revision 1. One 64-bit memory BAR holds the common
//! configuration, the ISR, the device configuration, one notification
//! doorbell per queue, and the MSI-X table and pending-bit array; vendor
//! capabilities in the configuration space point at each. The register
//! semantics are [`TransportCore`]'s, shared with virtio-mmio.
//!
//! Interrupts: MSI-X, one vector per queue plus one for configuration
//! changes as the driver assigns them, or INTx (pin A, level, status in
//! the ISR) while the driver has not enabled MSI-X.
// Register code splits wider values into their fields: the truncating
// casts are what it means.
#![allow(clippy::cast_possible_truncation)]

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::common::{InitialQueueSize, QueueField, TransportCore};
use super::interrupt::{Cause, IrqSink};
use super::worker::WorkerGate;
use super::VirtioDevice;
use crate::devices::pci::configuration::{
    Header, COMMAND_INTX_DISABLE, COMMAND_MEMORY, CONFIG_SIZE,
};
use crate::devices::pci::msix::{self, MsiRouter, Msix, Vector};
use crate::devices::pci::{Configuration, PciDevice};

pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
const DEVICE_ID_BASE: u16 = 0x1040;
/// The subsystem QEMU gives its modern virtio devices.
const SUBSYSTEM_ID: u16 = 0x1100;
const REVISION: u8 = 1;

/// Where things are in BAR 0; every region gets its own page.
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
const DEVICE_CFG_LEN: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Each queue's doorbell is 4 bytes after the previous one's.
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
const REGION_LEN: u64 = 0x1000;

/// The driver assigned no vector to this event.
pub const NO_VECTOR: u16 = 0xffff;

const CAP_ID_VENDOR: u8 = 0x09;
const CAP_ID_MSIX: u8 = 0x11;
const CFG_TYPE_COMMON: u8 = 1;
const CFG_TYPE_NOTIFY: u8 = 2;
const CFG_TYPE_ISR: u8 = 3;
const CFG_TYPE_DEVICE: u8 = 4;
/// The window onto the BAR through configuration space, which the spec
/// makes every device offer (for firmware that cannot map BARs).
const CFG_TYPE_PCI_CFG: u8 = 5;
/// Where, in that capability, the driver puts bar/offset/length and the
/// data it moves.
const PCI_CFG_BAR: usize = 4;
const PCI_CFG_OFFSET: usize = 8;
const PCI_CFG_LENGTH: usize = 12;
const PCI_CFG_DATA: usize = 16;

/// Common configuration registers (virtio 1.x, 4.1.4.3).
pub mod common_cfg {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}
use common_cfg::*;

/// The INTx line: a resample irqfd on the slot's IOAPIC pin.
pub struct IntxLine {
    pub irq: EventFd,
    pub resample: EventFd,
}

/// The interrupt resources the device manager set up for one function.
pub struct PciInterrupts {
    /// One per queue plus one, each an irqfd on its own GSI.
    pub vectors: Vec<Vector>,
    /// `None` without a VM (tests): vectors are never routed.
    pub router: Option<Arc<MsiRouter>>,
    pub intx: Option<IntxLine>,
}

/// Which vector each event uses, as the driver programmed it, plus the
/// MSI-X state; shared by the vCPU side and the worker.
struct IrqState {
    msix: Msix,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    intx_disabled: bool,
}

struct PciIrq {
    state: Mutex<IrqState>,
    intx: Option<IntxLine>,
}

impl PciIrq {
    fn lock(&self) -> MutexGuard<'_, IrqState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assert_intx(&self) {
        if let Some(line) = &self.intx {
            if let Err(e) = line.irq.write(1) {
                log::error!("virtio-pci: cannot raise INTx: {e}");
            }
        }
    }
}

struct PciSink(Arc<PciIrq>);

impl IrqSink for PciSink {
    fn trigger(&self, cause: Cause) {
        let mut state = self.0.lock();
        if !state.msix.enabled() {
            let disabled = state.intx_disabled;
            drop(state);
            if !disabled {
                self.0.assert_intx();
            }
            return;
        }
        match cause {
            Cause::Config => {
                let v = state.config_vector;
                state.msix.signal(v);
            }
            Cause::Queues(mask) => {
                let IrqState {
                    msix,
                    queue_vectors,
                    ..
                } = &mut *state;
                let mut fired = 0u64;
                for (i, &v) in queue_vectors.iter().enumerate() {
                    // One interrupt per vector, however many of its queues
                    // advanced; NO_VECTOR and the like fail `v < 64`.
                    if i < 64 && mask & (1 << i) != 0 && v < 64 && fired & (1 << v) == 0 {
                        fired |= 1 << v;
                        msix.signal(v);
                    }
                }
            }
        }
    }

    fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.0.lock().msix.irq_fds();
        fds.extend(self.0.intx.as_ref().map(|l| l.irq.as_raw_fd()));
        fds
    }

    fn resample_fd(&self) -> Option<&EventFd> {
        self.0.intx.as_ref().map(|l| &l.resample)
    }

    fn resample(&self, pending: bool) {
        let state = self.0.lock();
        let wanted = pending && !state.msix.enabled() && !state.intx_disabled;
        drop(state);
        if wanted {
            self.0.assert_intx();
        }
    }
}

/// Where the doorbells are registered as KVM ioeventfds.
struct Doorbells {
    vm: Option<Arc<VmFd>>,
    at: Option<u64>,
    /// The PCI memory window: a BAR the guest moves out of it reaches
    /// nothing, so its doorbells must not catch writes there either.
    window: Range<u64>,
}

/// A virtio device as a PCI function.
pub struct PciTransport {
    core: TransportCore,
    config: Configuration,
    irq: Arc<PciIrq>,
    msix_cap: usize,
    /// The VIRTIO_PCI_CAP_PCI_CFG capability.
    cfg_cap: usize,
    doorbells: Doorbells,
}

/// Vectors a device needs: one per queue, one for configuration changes.
pub fn vectors_needed(device: &dyn VirtioDevice) -> usize {
    device.queue_max_sizes().len() + 1
}

fn class_code(device_type: u32) -> u32 {
    use virtio_bindings::virtio_ids::*;
    match device_type {
        VIRTIO_ID_BLOCK => 0x01_00_00,
        VIRTIO_ID_NET => 0x02_00_00,
        _ => 0xff_00_00,
    }
}

/// A virtio vendor capability's body (after ID and next): cap_len,
/// cfg_type, bar, id, padding, offset, length, then `extra`.
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let mut body = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

impl PciTransport {
    /// Wraps `device` as a function whose BAR 0 is at `bar` (aligned to
    /// [`BAR_SIZE`]), spawning its worker thread, which waits for its gate.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        bar: u64,
        irqs: PciInterrupts,
    ) -> io::Result<PciTransport> {
        Self::build(mem, device, bar, irqs, false)
    }

    /// Like [`PciTransport::new`], with the queues processed inside the
    /// notify write, for the deterministic tests and the fuzz driver.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new_inline(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        bar: u64,
        irqs: PciInterrupts,
    ) -> io::Result<PciTransport> {
        Self::build(mem, device, bar, irqs, true)
    }

    fn build(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        bar: u64,
        irqs: PciInterrupts,
        inline: bool,
    ) -> io::Result<PciTransport> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let device_type = device.device_type();
        let queues = device.queue_max_sizes().len();
        if irqs.vectors.len() > msix::MAX_VECTORS || queues * 4 > REGION_LEN as usize {
            return Err(invalid(format!(
                "{queues} queues and {} vectors do not fit the BAR",
                irqs.vectors.len()
            )));
        }
        let irq = Arc::new(PciIrq {
            state: Mutex::new(IrqState {
                msix: Msix::new(irqs.vectors, irqs.router),
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; queues],
                intx_disabled: false,
            }),
            intx: irqs.intx,
        });
        let sink = Box::new(PciSink(irq.clone()));
        let core = if inline {
            #[cfg(any(test, feature = "fuzzing"))]
            {
                TransportCore::new_inline(mem, device, sink, InitialQueueSize::Max)?
            }
            #[cfg(not(any(test, feature = "fuzzing")))]
            {
                return Err(invalid("inline transports are for tests".into()));
            }
        } else {
            TransportCore::new(mem, device, sink, InitialQueueSize::Max)?
        };
        let device_id = u16::try_from(device_type)
            .ok()
            .and_then(|t| DEVICE_ID_BASE.checked_add(t))
            .ok_or_else(|| invalid(format!("virtio device type {device_type}")))?;
        let mut config = Configuration::new(&Header {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id,
            class: class_code(device_type),
            revision: REVISION,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: SUBSYSTEM_ID,
            interrupt_pin: 1,
        });
        let cfg_error = |e| invalid(format!("PCI configuration space: {e}"));
        config.add_mem64_bar(0, bar, BAR_SIZE).map_err(cfg_error)?;
        let table_size = irq.lock().msix.table_size();
        let mut msix_body = table_size.saturating_sub(1).to_le_bytes().to_vec();
        // BIR 0 in the low bits of both offsets.
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let msix_cap = config
            .add_capability(CAP_ID_MSIX, &msix_body)
            .map_err(cfg_error)?;
        config.set_writable_u16(
            msix_cap + 2,
            msix::CONTROL_ENABLE | msix::CONTROL_FUNCTION_MASK,
        );
        let notify_len = (queues as u64 * u64::from(NOTIFY_MULTIPLIER)).max(4);
        for body in [
            virtio_cap(CFG_TYPE_COMMON, COMMON_OFFSET, COMMON_LEN, &[]),
            virtio_cap(
                CFG_TYPE_NOTIFY,
                NOTIFY_OFFSET,
                notify_len,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
            virtio_cap(CFG_TYPE_ISR, ISR_OFFSET, 1, &[]),
            virtio_cap(CFG_TYPE_DEVICE, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN, &[]),
        ] {
            config
                .add_capability(CAP_ID_VENDOR, &body)
                .map_err(cfg_error)?;
        }
        let cfg_cap = config
            .add_capability(CAP_ID_VENDOR, &virtio_cap(CFG_TYPE_PCI_CFG, 0, 0, &[0; 4]))
            .map_err(cfg_error)?;
        config.set_writable_bytes(cfg_cap + PCI_CFG_BAR, 1);
        config.set_writable_bytes(cfg_cap + PCI_CFG_OFFSET, 8);
        // Decoding on, as firmware leaves a function it assigned.
        config.set_command(COMMAND_MEMORY);
        Ok(PciTransport {
            core,
            config,
            irq,
            msix_cap,
            cfg_cap,
            doorbells: Doorbells {
                vm: None,
                at: None,
                window: 0..u64::MAX,
            },
        })
    }

    /// What starts the worker thread; `None` for an inline transport and
    /// after the first call.
    pub fn take_worker_gate(&mut self) -> Option<WorkerGate> {
        self.core.take_worker_gate()
    }

    /// Registers the doorbells as KVM ioeventfds, so queue notifications
    /// complete in the kernel; they follow the BAR if the guest moves it
    /// inside `window` (the bus's memory window).
    pub fn register_doorbells(
        &mut self,
        vm: Arc<VmFd>,
        window: Range<u64>,
    ) -> Result<(), kvm_ioctls::Error> {
        self.doorbells.window = window;
        let at = self.doorbell_base();
        if let Some(base) = at {
            register(&vm, self.core.queue_notify_eventfds(), base)?;
        }
        self.doorbells.vm = Some(vm);
        self.doorbells.at = at;
        Ok(())
    }

    /// Where the doorbells are while BAR 0 decodes inside the window.
    fn doorbell_base(&self) -> Option<u64> {
        let window = &self.doorbells.window;
        self.config
            .decoded_bars()
            .find(|&(bar, base, size)| {
                bar == 0 && base >= window.start && base.saturating_add(size) <= window.end
            })
            .map(|(_, base, _)| base + NOTIFY_OFFSET)
    }

    /// Re-registers the doorbells after the BAR moved or decoding changed.
    /// On failure the doorbells still work, through exits to the vCPU.
    fn move_doorbells(&mut self) {
        let new = self.doorbell_base();
        let Some(vm) = self.doorbells.vm.clone() else {
            return;
        };
        if new == self.doorbells.at {
            return;
        }
        let fds = self.core.queue_notify_eventfds();
        if let Some(old) = self.doorbells.at.take() {
            for (i, evt) in (0u64..).zip(fds) {
                let addr = IoEventAddress::Mmio(old + i * u64::from(NOTIFY_MULTIPLIER));
                if let Err(e) = vm.unregister_ioevent(evt, &addr, NoDatamatch) {
                    log::warn!("virtio-pci: cannot unregister a doorbell: {e}");
                }
            }
        }
        if let Some(base) = new {
            match register(&vm, fds, base) {
                Ok(()) => self.doorbells.at = Some(base),
                Err(e) => self.core.complaints.warn(format_args!(
                    "doorbells at {base:#x} stay in userspace: {e}"
                )),
            }
        }
    }

    fn common_read(&self, offset: u64, len: usize) -> Option<u64> {
        let core = &self.core;
        let irq = self.irq.lock();
        let queue = core.queue_sel as usize;
        let (desc, avail, used) = core.queue_addresses();
        let exists = queue < core.num_queues();
        let v = match (offset, len) {
            (DEVICE_FEATURE_SELECT, 4) => u64::from(core.device_features_sel),
            (DEVICE_FEATURE, 4) => u64::from(core.device_features()),
            (DRIVER_FEATURE_SELECT, 4) => u64::from(core.driver_features_sel),
            (DRIVER_FEATURE, 4) => u64::from(core.driver_features()),
            (MSIX_CONFIG, 2) => u64::from(irq.config_vector),
            (NUM_QUEUES, 2) => core.num_queues() as u64,
            (DEVICE_STATUS, 1) => u64::from(core.status() & 0xff),
            // The configuration space never changes while the guest runs.
            (CONFIG_GENERATION, 1) => 0,
            (QUEUE_SELECT, 2) => u64::from(core.queue_sel),
            (QUEUE_SIZE, 2) => u64::from(core.queue_size()),
            (QUEUE_MSIX_VECTOR, 2) => {
                u64::from(irq.queue_vectors.get(queue).copied().unwrap_or(NO_VECTOR))
            }
            (QUEUE_ENABLE, 2) => u64::from(core.queue_ready()),
            // Doorbell `i` is queue `i`'s; a missing queue has none.
            (QUEUE_NOTIFY_OFF, 2) => {
                if exists {
                    queue as u64
                } else {
                    0
                }
            }
            (QUEUE_DESC, 8) => desc,
            (QUEUE_DRIVER, 8) => avail,
            (QUEUE_DEVICE, 8) => used,
            (QUEUE_DESC, 4) => desc & 0xffff_ffff,
            (QUEUE_DRIVER, 4) => avail & 0xffff_ffff,
            (QUEUE_DEVICE, 4) => used & 0xffff_ffff,
            (o, 4) if o == QUEUE_DESC + 4 => desc >> 32,
            (o, 4) if o == QUEUE_DRIVER + 4 => avail >> 32,
            (o, 4) if o == QUEUE_DEVICE + 4 => used >> 32,
            _ => return None,
        };
        Some(v)
    }

    /// A vector the driver may assign: one the table has, or NO_VECTOR
    /// (which is also what a refused assignment reads back as).
    fn valid_vector(&self, v: u16) -> u16 {
        if v < self.irq.lock().msix.table_size() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let mut word = [0u8; 8];
        if let Some(dst) = word.get_mut(..data.len()) {
            dst.copy_from_slice(data);
        }
        let v = u64::from_le_bytes(word);
        let (v32, v16) = (v as u32, v as u16);
        let queue_field = |lo: QueueField, hi: QueueField| match data.len() {
            4 => Some(vec![(lo, v32)]),
            8 => Some(vec![(lo, v32), (hi, (v >> 32) as u32)]),
            _ => None,
        };
        let fields = match (offset, data.len()) {
            (QUEUE_SIZE, 2) => Some(vec![(QueueField::Size, u32::from(v16))]),
            (QUEUE_ENABLE, 2) => Some(vec![(QueueField::Ready, u32::from(v16))]),
            (QUEUE_DESC, _) => queue_field(QueueField::DescLow, QueueField::DescHigh),
            (QUEUE_DRIVER, _) => queue_field(QueueField::AvailLow, QueueField::AvailHigh),
            (QUEUE_DEVICE, _) => queue_field(QueueField::UsedLow, QueueField::UsedHigh),
            (o, 4) if o == QUEUE_DESC + 4 => Some(vec![(QueueField::DescHigh, v32)]),
            (o, 4) if o == QUEUE_DRIVER + 4 => Some(vec![(QueueField::AvailHigh, v32)]),
            (o, 4) if o == QUEUE_DEVICE + 4 => Some(vec![(QueueField::UsedHigh, v32)]),
            _ => None,
        };
        if let Some(fields) = fields {
            for (field, v) in fields {
                self.core.write_queue(field, v);
            }
            return;
        }
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => self.core.device_features_sel = v32,
            (DRIVER_FEATURE_SELECT, 4) => self.core.driver_features_sel = v32,
            (DRIVER_FEATURE, 4) => self.core.write_driver_features(v32),
            (MSIX_CONFIG, 2) => {
                let vector = self.valid_vector(v16);
                self.irq.lock().config_vector = vector;
            }
            (DEVICE_STATUS, 1) => {
                self.core.write_status(v32);
                if v32 == 0 {
                    let mut irq = self.irq.lock();
                    irq.config_vector = NO_VECTOR;
                    irq.queue_vectors.fill(NO_VECTOR);
                }
            }
            (QUEUE_SELECT, 2) => self.core.queue_sel = u32::from(v16),
            (QUEUE_MSIX_VECTOR, 2) => {
                let vector = self.valid_vector(v16);
                let queue = self.core.queue_sel as usize;
                match self.irq.lock().queue_vectors.get_mut(queue) {
                    Some(slot) => *slot = vector,
                    None => self
                        .core
                        .complaints
                        .warn(format_args!("vector for missing queue {queue}")),
                }
            }
            _ => self.core.complaints.warn(format_args!(
                "{}-byte write to read-only or unknown common register {offset:#x}",
                data.len()
            )),
        }
    }
}

fn register(vm: &VmFd, fds: &[EventFd], base: u64) -> Result<(), kvm_ioctls::Error> {
    for (i, evt) in (0u64..).zip(fds) {
        // Any width, any value: the address names the queue.
        let addr = IoEventAddress::Mmio(base + i * u64::from(NOTIFY_MULTIPLIER));
        vm.register_ioevent(evt, &addr, NoDatamatch)?;
    }
    Ok(())
}

/// Which region of BAR 0 `offset` falls in, and the offset inside it.
fn region(offset: u64) -> (u64, u64) {
    let start = offset - offset % REGION_LEN;
    (start, offset - start)
}

impl PciTransport {
    /// The BAR access the VIRTIO_PCI_CAP_PCI_CFG window selects, if
    /// `offset..offset + len` is exactly its data field's first `length`
    /// bytes: (bar, offset in the BAR, length).
    fn cfg_window(&self, offset: usize, len: usize) -> Option<(usize, u64, usize)> {
        let data = self.cfg_cap + PCI_CFG_DATA;
        let length = self.config.read_u32(self.cfg_cap + PCI_CFG_LENGTH) as usize;
        let at = u64::from(self.config.read_u32(self.cfg_cap + PCI_CFG_OFFSET));
        let mut bar = [0u8; 1];
        self.config.read(self.cfg_cap + PCI_CFG_BAR, &mut bar);
        let valid = matches!(length, 1 | 2 | 4) && at % length as u64 == 0;
        (offset == data && len >= length && valid).then_some((usize::from(bar[0]), at, length))
    }
}

impl PciDevice for PciTransport {
    fn config(&self) -> &Configuration {
        &self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        match self.cfg_window(offset, data.len()) {
            Some((bar, at, length)) => {
                data.fill(0);
                if let Some(window) = data.get_mut(..length) {
                    self.bar_read(bar, at, window);
                }
            }
            None => self.config.read(offset, data),
        }
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        if let Some((bar, at, length)) = self.cfg_window(offset, data.len()) {
            if let Some(window) = data.get(..length) {
                self.bar_write(bar, at, window);
            }
            return;
        }
        self.config.write(offset, data);
        let control = self.msix_cap + 2;
        let intx_disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
        let mut irq = self.irq.lock();
        let intx_before = !irq.msix.enabled() && !irq.intx_disabled;
        if offset < control + 2 && offset + data.len() > control && offset < CONFIG_SIZE {
            irq.msix.set_control(self.config.read_u16(control));
        }
        irq.intx_disabled = intx_disabled;
        let intx_now = !irq.msix.enabled() && !irq.intx_disabled;
        drop(irq);
        // Like a real line, INTx comes up again once unmasked (or MSI-X
        // turned off) while the ISR still holds a cause.
        if intx_now && !intx_before && self.core.interrupt.status() != 0 {
            self.irq.assert_intx();
        }
        self.move_doorbells();
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        let (start, at) = region(offset);
        match start {
            COMMON_OFFSET => match self.common_read(at, data.len()) {
                Some(v) => {
                    let bytes = v.to_le_bytes();
                    for (d, s) in data.iter_mut().zip(bytes) {
                        *d = s;
                    }
                }
                None => self.core.complaints.warn(format_args!(
                    "{}-byte read of common register {at:#x}",
                    data.len()
                )),
            },
            ISR_OFFSET if at == 0 => {
                if let Some(b) = data.first_mut() {
                    // Reading acknowledges, and lowers INTx at the EOI.
                    *b = self.core.interrupt.take_status() as u8;
                }
            }
            DEVICE_CFG_OFFSET => self.core.device.read_config(at, data),
            MSIX_TABLE_OFFSET => self.irq.lock().msix.table_read(at, data),
            MSIX_PBA_OFFSET => self.irq.lock().msix.pba_read(at, data),
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        let (start, at) = region(offset);
        match start {
            COMMON_OFFSET => self.common_write(at, data),
            DEVICE_CFG_OFFSET => self.core.device.write_config(at, data),
            NOTIFY_OFFSET if at % u64::from(NOTIFY_MULTIPLIER) == 0 => {
                // Only reached when the doorbell is not an ioeventfd.
                let queue = at / u64::from(NOTIFY_MULTIPLIER);
                self.core.notify(queue as u32);
            }
            MSIX_TABLE_OFFSET => self.irq.lock().msix.table_write(at, data),
            _ => self.core.complaints.warn(format_args!(
                "{}-byte write at BAR offset {offset:#x} ignored",
                data.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use virtio_bindings::virtio_config::*;

    use super::common_cfg::*;
    use super::*;
    use crate::devices::virtio::test_support::driver::{
        scratch_file, Driver, Kind, DATA, KINDS, TEST_BAR, VERSION_1,
    };
    use crate::devices::virtio::{Block, Rng};

    fn rng() -> Driver {
        Driver::of(Kind::Pci, Box::new(Rng::new()))
    }

    fn cfg_read(d: &mut Driver, offset: usize, len: usize) -> u32 {
        let mut b = [0u8; 4];
        d.dev.pci().config().read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    fn cfg_write(d: &mut Driver, offset: usize, data: &[u8]) {
        d.dev.pci().config_write(offset, data);
    }

    /// (offset, id, bytes) of each capability, walked as a driver does.
    fn capabilities(d: &mut Driver) -> Vec<(usize, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = cfg_read(d, 0x34, 1) as usize;
        while at != 0 {
            assert!(out.len() < 16, "capability loop");
            let id = cfg_read(d, at, 1) as u8;
            let mut bytes = vec![0u8; 20];
            d.dev.pci().config().read(at, &mut bytes);
            out.push((at, id, bytes));
            at = cfg_read(d, at + 1, 1) as usize;
        }
        out
    }

    #[test]
    fn identifies_itself_as_a_modern_virtio_function() {
        let mut d = rng();
        assert_eq!(cfg_read(&mut d, 0, 4), 0x1044_1af4, "1af4:1040 + 4");
        assert_eq!(cfg_read(&mut d, 8, 4), 0xff00_0001, "class, revision 1");
        assert_eq!(cfg_read(&mut d, 0x2c, 4), 0x1100_1af4);
        assert_eq!(cfg_read(&mut d, 0x3d, 1), 1, "INTA#");
        assert_eq!(cfg_read(&mut d, 0x10, 4), (TEST_BAR as u32) | 0b100);
        assert_eq!(cfg_read(&mut d, 0x14, 4), (TEST_BAR >> 32) as u32);
        let caps = capabilities(&mut d);
        let msix: Vec<_> = caps.iter().filter(|c| c.1 == 0x11).collect();
        assert_eq!(msix.len(), 1);
        let m = &msix[0].2;
        assert_eq!(
            u16::from_le_bytes([m[2], m[3]]),
            1,
            "2 vectors: table size - 1"
        );
        assert_eq!(u32::from_le_bytes(m[4..8].try_into().unwrap()), 0x4000);
        assert_eq!(u32::from_le_bytes(m[8..12].try_into().unwrap()), 0x5000);
        // The virtio capabilities: type, bar, offset, length.
        let virtio: Vec<(u8, u8, u32, u32)> = caps
            .iter()
            .filter(|c| c.1 == 0x09)
            .map(|(_, _, b)| {
                let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
                (b[3], b[4], word(8), word(12))
            })
            .collect();
        assert_eq!(
            virtio,
            vec![
                (1, 0, 0x0000, 0x38),
                (2, 0, 0x3000, 4),
                (3, 0, 0x1000, 1),
                (4, 0, 0x2000, 0x1000),
                (5, 0, 0, 0)
            ]
        );
        let notify = caps.iter().find(|c| c.1 == 0x09 && c.2[3] == 2).unwrap();
        assert_eq!(notify.2[2], 20, "cap_len of the notify capability");
        assert_eq!(
            u32::from_le_bytes(notify.2[16..20].try_into().unwrap()),
            4,
            "notify_off_multiplier"
        );
    }

    #[test]
    fn the_pci_cfg_capability_reaches_the_bar() {
        let mut d = rng();
        let cap = capabilities(&mut d)
            .into_iter()
            .find(|c| c.1 == 0x09 && c.2[3] == 5)
            .expect("VIRTIO_PCI_CAP_PCI_CFG")
            .0;
        let select = |d: &mut Driver, offset: u32, length: u32| {
            cfg_write(d, cap + 4, &[0]);
            cfg_write(d, cap + 8, &offset.to_le_bytes());
            cfg_write(d, cap + 12, &length.to_le_bytes());
        };
        // num_queues through the window.
        select(&mut d, NUM_QUEUES as u32, 2);
        let mut b = [0u8; 4];
        d.dev.pci().config_read(cap + 16, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1);
        // A status write through the window.
        select(&mut d, DEVICE_STATUS as u32, 1);
        d.dev.pci().config_write(cap + 16, &[1, 0, 0, 0]);
        assert_eq!(d.status(), 1);
        // Misaligned or bad lengths move nothing: the bytes are plain
        // (read-only) configuration space then.
        select(&mut d, NUM_QUEUES as u32 + 1, 2);
        d.dev.pci().config_read(cap + 16, &mut b);
        assert_eq!(b, [0; 4]);
        select(&mut d, NUM_QUEUES as u32, 3);
        d.dev.pci().config_write(cap + 16, &[9, 9, 9, 9]);
        d.dev.pci().config_read(cap + 16, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn bar_sizing_and_moves() {
        let mut d = rng();
        cfg_write(&mut d, 0x10, &[0xff; 4]);
        cfg_write(&mut d, 0x14, &[0xff; 4]);
        assert_eq!(cfg_read(&mut d, 0x10, 4), 0xffff_8004);
        assert_eq!(cfg_read(&mut d, 0x14, 4), 0xffff_ffff);
        cfg_write(&mut d, 0x10, &0xc001_0000u32.to_le_bytes());
        cfg_write(&mut d, 0x14, &[0; 4]);
        assert_eq!(d.dev.pci().config().bar(0), Some((0xc001_0000, BAR_SIZE)));
        assert_eq!(d.dev.pci().doorbell_base(), Some(0xc001_3000));
        // Outside the bus's window: no doorbells either.
        d.dev.pci().doorbells.window = 0xc000_0000..0xc001_0000;
        assert_eq!(d.dev.pci().doorbell_base(), None);
        d.dev.pci().doorbells.window = 0xc000_0000..0xd000_0000;
        assert_eq!(d.dev.pci().doorbell_base(), Some(0xc001_3000));
        // Decoding off: no doorbells.
        cfg_write(&mut d, 4, &[0, 0]);
        assert_eq!(d.dev.pci().doorbell_base(), None);
    }

    #[test]
    fn common_cfg_registers() {
        let mut d = Driver::of(
            Kind::Pci,
            Box::new(Block::new(scratch_file(4096), false).unwrap()),
        );
        assert_eq!(d.read_n(NUM_QUEUES, 2), 1);
        assert_eq!(d.device_features() & VERSION_1, VERSION_1);
        // A queue's size starts at its maximum; the driver may lower it.
        assert_eq!(d.read_n(QUEUE_SIZE, 2), 256);
        d.write_n(QUEUE_SIZE, 2, 64);
        assert_eq!(d.read_n(QUEUE_SIZE, 2), 64);
        assert_eq!(d.read_n(QUEUE_NOTIFY_OFF, 2), 0);
        // 64-bit fields: whole or in halves.
        d.write_n(QUEUE_DESC, 8, 0x1_2345_6000);
        assert_eq!(d.read_n(QUEUE_DESC, 8), 0x1_2345_6000);
        d.write_n(QUEUE_DRIVER, 4, 0x7000);
        d.write_n(QUEUE_DRIVER + 4, 4, 2);
        assert_eq!(d.read_n(QUEUE_DRIVER, 4), 0x7000);
        assert_eq!(d.read_n(QUEUE_DRIVER + 4, 4), 2);
        // A queue that does not exist reads size 0 and takes nothing.
        d.write_n(QUEUE_SELECT, 2, 5);
        assert_eq!(d.read_n(QUEUE_SELECT, 2), 5);
        assert_eq!(d.read_n(QUEUE_SIZE, 2), 0);
        d.write_n(QUEUE_MSIX_VECTOR, 2, 0);
        assert_eq!(d.read_n(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        // Vectors: in range sticks, out of range reads NO_VECTOR.
        d.write_n(QUEUE_SELECT, 2, 0);
        d.write_n(QUEUE_MSIX_VECTOR, 2, 1);
        assert_eq!(d.read_n(QUEUE_MSIX_VECTOR, 2), 1);
        d.write_n(QUEUE_MSIX_VECTOR, 2, 2);
        assert_eq!(d.read_n(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        assert_eq!(d.read_n(MSIX_CONFIG, 2), u64::from(NO_VECTOR));
        d.write_n(MSIX_CONFIG, 2, 0);
        assert_eq!(d.read_n(MSIX_CONFIG, 2), 0);
        // Wrong widths and read-only registers change nothing.
        d.write_n(NUM_QUEUES, 2, 9);
        d.write_n(QUEUE_SIZE, 4, 16);
        d.write_n(DEVICE_STATUS, 2, 1);
        assert_eq!(d.read_n(NUM_QUEUES, 2), 1);
        assert_eq!(d.read_n(QUEUE_SIZE, 2), 64);
        assert_eq!(d.read_n(QUEUE_SIZE, 4), 0);
        assert_eq!(d.status(), 0);
        assert_eq!(d.read_n(CONFIG_GENERATION, 1), 0);
        // The device configuration: capacity in sectors.
        assert_eq!(d.read_n(DEVICE_CFG_OFFSET, 8), 8);
        // A reset forgets the vectors and the queue registers.
        d.set_status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
        d.set_status(0);
        assert_eq!(d.read_n(MSIX_CONFIG, 2), u64::from(NO_VECTOR));
        assert_eq!(d.read_n(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        assert_eq!(d.read_n(QUEUE_SIZE, 2), 256);
        assert_eq!(d.read_n(QUEUE_DESC, 8), 0);
    }

    #[test]
    fn intx_until_msix_is_enabled() {
        let mut d = rng();
        d.start(0, 1, 16);
        d.submit(0, &[(DATA, 8, true)]);
        d.wait_used(0);
        assert_eq!(d.irq.read().unwrap(), 1, "INTx raised");
        assert_eq!(d.interrupt_status(), 1, "ISR: queue interrupt");
        assert_eq!(d.interrupt_status(), 0, "the read cleared it");
        // INTx disabled in the command register: nothing...
        cfg_write(&mut d, 4, &0x0406u16.to_le_bytes());
        d.submit(0, &[(DATA, 8, true)]);
        d.wait_used(0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(d.irq.read().is_err());
        // ...until it is enabled again: the pending cause raises it.
        cfg_write(&mut d, 4, &0x0006u16.to_le_bytes());
        assert_eq!(d.irq.read().unwrap(), 1);
        assert_eq!(d.interrupt_status(), 1);
        // Enabling with nothing pending raises nothing.
        cfg_write(&mut d, 4, &0x0406u16.to_le_bytes());
        cfg_write(&mut d, 4, &0x0006u16.to_le_bytes());
        assert!(d.irq.read().is_err());
    }

    fn msix_entry(d: &mut Driver, vector: u64, data: u32, masked: bool) {
        let at = MSIX_TABLE_OFFSET + vector * 16;
        d.write_n(at, 4, 0xfee0_0000);
        d.write_n(at + 4, 4, 0);
        d.write_n(at + 8, 4, u64::from(data));
        d.write_n(at + 12, 4, u64::from(masked));
    }

    fn enable_msix(d: &mut Driver, control: u16) {
        let cap = capabilities(d).iter().find(|c| c.1 == 0x11).unwrap().0;
        cfg_write(d, cap + 2, &control.to_le_bytes());
    }

    fn wait_fired(evt: &EventFd) -> bool {
        for _ in 0..2000 {
            if evt.read().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn msix_vectors_follow_the_driver_and_masks() {
        let mut d = rng();
        enable_msix(&mut d, msix::CONTROL_ENABLE);
        msix_entry(&mut d, 0, 0x41, false);
        msix_entry(&mut d, 1, 0x42, false);
        assert!(d.negotiate(VERSION_1));
        d.write_n(MSIX_CONFIG, 2, 0);
        d.setup_queue(0, 16);
        d.write_n(QUEUE_MSIX_VECTOR, 2, 1);
        d.driver_ok();
        d.submit(0, &[(DATA, 8, true)]);
        d.wait_used(0);
        assert!(wait_fired(&d.vectors[1]), "queue vector fired");
        assert!(d.vectors[0].read().is_err(), "config vector quiet");
        assert!(d.irq.read().is_err(), "no INTx with MSI-X on");
        // Masked entry: no interrupt, the PBA bit instead.
        d.write_n(MSIX_TABLE_OFFSET + 16 + 12, 4, 1);
        d.submit(0, &[(DATA, 8, true)]);
        d.wait_used(0);
        let mut pending = 0;
        for _ in 0..2000 {
            pending = d.read_n(MSIX_PBA_OFFSET, 8);
            if pending != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pending, 0b10);
        assert!(d.vectors[1].read().is_err());
        // Unmasking delivers it.
        d.write_n(MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
        assert!(d.vectors[1].read().is_ok());
        assert_eq!(d.read_n(MSIX_PBA_OFFSET, 8), 0);
        // A broken device interrupts on the config vector.
        d.set_avail_idx(0, 1000);
        d.kick(0);
        assert!(d.wait_needs_reset());
        assert!(wait_fired(&d.vectors[0]), "config vector fired");
    }

    #[test]
    fn doorbells_outside_the_notify_region_are_ignored() {
        let mut d = Driver::inline_of(Kind::Pci, Box::new(Rng::new()));
        d.start(0, 1, 16);
        d.add_chain(0, &[(DATA, 8, true)]);
        let head = 0;
        d.push_avail(0, head);
        // Misaligned doorbell, another queue's doorbell, past the region.
        d.write_n(NOTIFY_OFFSET + 2, 2, 0);
        d.write_n(NOTIFY_OFFSET + 4, 2, 1);
        d.write_n(NOTIFY_OFFSET + 0x1000, 2, 0);
        assert_eq!(d.try_wait_used(0, Duration::ZERO), None);
        d.kick(0);
        assert_eq!(d.try_wait_used(0, Duration::ZERO), Some((0, 8)));
    }

    #[test]
    fn both_transports_run_every_device() {
        for kind in KINDS {
            let mut d = Driver::of(
                kind,
                Box::new(Block::new(scratch_file(4096), false).unwrap()),
            );
            d.start(0, 1, 16);
            let hdr = [0u8; 16];
            d.write_mem(DATA, &hdr);
            d.write_mem(DATA + 0x300, &[0xff]);
            let head = d.submit(
                0,
                &[
                    (DATA, 16, false),
                    (DATA + 0x100, 512, true),
                    (DATA + 0x300, 1, true),
                ],
            );
            assert_eq!(d.wait_used(0), (u32::from(head), 513), "{kind:?}");
            assert_eq!(d.read_mem(DATA + 0x300, 1), [0], "{kind:?}");
            let mut d = Driver::of(kind, Box::new(Rng::new()));
            d.start(0, 1, 16);
            d.submit(0, &[(DATA, 32, true)]);
            assert_eq!(d.wait_used(0).1, 32, "{kind:?}");
        }
    }
}
