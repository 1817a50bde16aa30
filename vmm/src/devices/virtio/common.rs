//! The transport-independent half of a virtio 1.x transport: feature
//! negotiation, the device status handshake, queue registers, activation
//! with validation, reset, and the worker that processes the queues.
//! virtio-mmio ([`super::MmioTransport`]) and virtio-pci
//! ([`super::PciTransport`]) only map their register layouts onto it.

use std::io;
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::complaints::Complaints;
use super::interrupt::{Interrupt, IrqSink};
use super::worker::{Worker, WorkerGate, WorkerThread};
use super::VirtioDevice;

/// Queue registers as the driver wrote them; turned into a
/// `virtio_queue::Queue` (and validated) only at `DRIVER_OK`.
#[derive(Clone, Copy, Default)]
struct QueueRegs {
    max_size: u16,
    size: u32,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

/// A queue register, whatever its offset in the transport's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueField {
    Size,
    Ready,
    DescLow,
    DescHigh,
    AvailLow,
    AvailHigh,
    UsedLow,
    UsedHigh,
}

fn set_low(reg: &mut u64, v: u32) {
    *reg = (*reg & !0xffff_ffff) | u64::from(v);
}

fn set_high(reg: &mut u64, v: u32) {
    *reg = (*reg & 0xffff_ffff) | (u64::from(v) << 32);
}

/// What a queue's size register holds after a reset: virtio-mmio starts
/// at 0 (QueueNumMax tells the maximum), virtio-pci at the maximum (the
/// driver reads queue_size and may lower it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InitialQueueSize {
    Zero,
    Max,
}

enum Executor {
    Thread(WorkerThread),
    /// Only the `new_inline` constructors make one, which exist for the
    /// tests and the fuzz driver: in the vmm itself the variant is never
    /// built, and that is the point.
    #[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
    Inline(Worker),
}

/// The state every virtio transport shares.
pub(crate) struct TransportCore {
    pub(crate) device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    pub(crate) interrupt: Arc<Interrupt>,
    executor: Executor,
    notifiers: Vec<EventFd>,
    offered_features: u64,
    status: u32,
    pub(crate) device_features_sel: u32,
    pub(crate) driver_features_sel: u32,
    driver_features: u64,
    /// The driver acked a bit beyond the 64 we can offer.
    unknown_features_acked: bool,
    pub(crate) queue_sel: u32,
    queues: Vec<QueueRegs>,
    initial_size: InitialQueueSize,
    active: bool,
    pub(crate) complaints: Complaints,
}

impl TransportCore {
    /// Wraps `device`, spawning its worker thread, which waits until the
    /// gate ([`TransportCore::take_worker_gate`]) is opened.
    pub(crate) fn new(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        sink: Box<dyn IrqSink>,
        initial_size: InitialQueueSize,
    ) -> io::Result<TransportCore> {
        let device_type = device.device_type();
        Self::build(mem, device, sink, initial_size, |worker, notifiers| {
            Ok(Executor::Thread(WorkerThread::spawn(
                worker,
                device_type,
                notifiers,
            )?))
        })
    }

    /// Like [`TransportCore::new`], but queues are processed synchronously
    /// inside the notify write, for the deterministic fuzz driver.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new_inline(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        sink: Box<dyn IrqSink>,
        initial_size: InitialQueueSize,
    ) -> io::Result<TransportCore> {
        Self::build(mem, device, sink, initial_size, |worker, _| {
            Ok(Executor::Inline(worker))
        })
    }

    fn build(
        mem: GuestMemoryMmap,
        mut device: Box<dyn VirtioDevice>,
        sink: Box<dyn IrqSink>,
        initial_size: InitialQueueSize,
        executor: impl FnOnce(Worker, Vec<EventFd>) -> io::Result<Executor>,
    ) -> io::Result<TransportCore> {
        let name = device_name(device.device_type());
        let interrupt = Arc::new(Interrupt::new(sink));
        let mut core_queues = Vec::new();
        let mut notifiers = Vec::new();
        let mut worker_notifiers = Vec::new();
        for &max_size in device.queue_max_sizes() {
            core_queues.push(QueueRegs {
                max_size,
                ..Default::default()
            });
            let evt = EventFd::new(EFD_NONBLOCK)?;
            worker_notifiers.push(evt.try_clone()?);
            notifiers.push(evt);
        }
        let worker = Worker::new(name, mem.clone(), device.processor(), interrupt.clone());
        let executor = executor(worker, worker_notifiers)?;
        let mut core = TransportCore {
            offered_features: device.features() | (1u64 << VIRTIO_F_VERSION_1),
            device,
            mem,
            interrupt,
            executor,
            notifiers,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_features_acked: false,
            queue_sel: 0,
            queues: core_queues,
            initial_size,
            active: false,
            complaints: Complaints::new(name),
        };
        core.reset_queue_regs();
        Ok(core)
    }

    /// What starts the worker thread; `None` for an inline transport and
    /// after the first call.
    pub(crate) fn take_worker_gate(&mut self) -> Option<WorkerGate> {
        match &mut self.executor {
            Executor::Thread(thread) => thread.take_gate(),
            Executor::Inline(_) => None,
        }
    }

    /// Queue-notify eventfds, index = queue index.
    pub(crate) fn queue_notify_eventfds(&self) -> &[EventFd] {
        &self.notifiers
    }

    pub(crate) fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The device status register as the driver reads it.
    pub(crate) fn status(&self) -> u32 {
        if self.interrupt.is_broken() {
            self.status | VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// The device feature word `device_features_sel` selects.
    pub(crate) fn device_features(&self) -> u32 {
        match self.device_features_sel {
            0 => (self.offered_features & 0xffff_ffff) as u32,
            1 => (self.offered_features >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver feature word `driver_features_sel` selects, as written.
    pub(crate) fn driver_features(&self) -> u32 {
        match self.driver_features_sel {
            0 => (self.driver_features & 0xffff_ffff) as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Maximum size of the selected queue; 0 when it does not exist.
    pub(crate) fn queue_max_size(&self) -> u16 {
        self.selected().map_or(0, |q| q.max_size)
    }

    /// Size register of the selected queue; 0 when it does not exist.
    pub(crate) fn queue_size(&self) -> u32 {
        self.selected().map_or(0, |q| q.size)
    }

    pub(crate) fn queue_ready(&self) -> bool {
        self.selected().is_some_and(|q| q.ready)
    }

    /// (desc, avail, used) of the selected queue.
    pub(crate) fn queue_addresses(&self) -> (u64, u64, u64) {
        self.selected()
            .map_or((0, 0, 0), |q| (q.desc, q.avail, q.used))
    }

    pub(crate) fn write_driver_features(&mut self, v: u32) {
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.complaints
                .warn(format_args!("feature write after FEATURES_OK ignored"));
            return;
        }
        match self.driver_features_sel {
            0 => set_low(&mut self.driver_features, v),
            1 => set_high(&mut self.driver_features, v),
            _ => self.unknown_features_acked |= v != 0,
        }
    }

    pub(crate) fn write_queue(&mut self, field: QueueField, v: u32) {
        if self.active && field == QueueField::Ready && v == 0 {
            self.stop_queue();
            return;
        }
        // The worker owns the queues from DRIVER_OK on; a ready queue must
        // not change under the driver's feet either.
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.complaints
                .warn(format_args!("queue register write after DRIVER_OK ignored"));
            return;
        }
        let Some(queue) = self.queues.get_mut(self.queue_sel as usize) else {
            self.complaints
                .warn(format_args!("write to a queue register of a missing queue"));
            return;
        };
        if queue.ready && field != QueueField::Ready {
            self.complaints
                .warn(format_args!("write to a ready queue's register ignored"));
            return;
        }
        match field {
            QueueField::Size => queue.size = v,
            QueueField::Ready => queue.ready = v == 1,
            QueueField::DescLow => set_low(&mut queue.desc, v),
            QueueField::DescHigh => set_high(&mut queue.desc, v),
            QueueField::AvailLow => set_low(&mut queue.avail, v),
            QueueField::AvailHigh => set_high(&mut queue.avail, v),
            QueueField::UsedLow => set_low(&mut queue.used, v),
            QueueField::UsedHigh => set_high(&mut queue.used, v),
        }
    }

    /// Stops a running queue, the way the spec lets a driver take a queue
    /// out of use: once the ready register reads back 0 the device is done
    /// with it.
    fn stop_queue(&mut self) {
        let index = self.queue_sel as usize;
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        queue.ready = false;
        match &mut self.executor {
            Executor::Thread(thread) => thread.stop_queue(index),
            Executor::Inline(worker) => worker.stop_queue(index),
        }
    }

    /// A notification of queue `index` that reached the vCPU thread
    /// (rather than a KVM ioeventfd).
    pub(crate) fn notify(&mut self, index: u32) {
        if !self.active {
            // Includes kicks before DRIVER_OK and on a broken device.
            return;
        }
        let Some(evt) = self.notifiers.get(index as usize) else {
            self.complaints
                .warn(format_args!("notify for missing queue {index}"));
            return;
        };
        match &mut self.executor {
            Executor::Thread(_) => {
                if let Err(e) = evt.write(1) {
                    log::error!("virtio: cannot signal queue notify: {e}");
                }
            }
            Executor::Inline(worker) => {
                worker.queue_notified(index as usize);
            }
        }
    }

    /// A write to the device status register; 0 resets the device.
    pub(crate) fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // NEEDS_RESET is the device's bit, not the driver's.
        let mut v = v & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if v & self.status != self.status {
            self.complaints.warn(format_args!(
                "status {v:#x} clears bits of {:#x} without a reset",
                self.status
            ));
            return;
        }
        let new = v & !self.status;
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            // Leaving FEATURES_OK clear is how a device refuses features.
            self.complaints.warn(format_args!(
                "refused features {:#x} (offered {:#x})",
                self.driver_features, self.offered_features
            ));
            v &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        self.status = v;
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn features_acceptable(&self) -> bool {
        !self.unknown_features_acked
            && self.driver_features & !self.offered_features == 0
            && self.driver_features & (1u64 << VIRTIO_F_VERSION_1) != 0
    }

    fn activate(&mut self) {
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            self.complaints
                .warn(format_args!("DRIVER_OK without FEATURES_OK"));
            self.interrupt.mark_broken();
            return;
        }
        let queues = match self.build_queues() {
            Ok(q) => q,
            Err(reason) => {
                self.complaints
                    .warn(format_args!("cannot activate: {reason}"));
                self.interrupt.mark_broken();
                return;
            }
        };
        self.active = true;
        let features = self.driver_features;
        match &mut self.executor {
            Executor::Thread(thread) => thread.activate(queues, features),
            Executor::Inline(worker) => {
                worker.activate(queues, features);
            }
        }
    }

    /// Turns the queue registers into queues, rejecting anything the spec
    /// forbids: bad sizes, misaligned rings, rings outside guest memory.
    fn build_queues(&self) -> Result<Vec<Queue>, String> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, regs) in self.queues.iter().enumerate() {
            let mut queue = Queue::new(regs.max_size).map_err(|e| format!("queue {i}: {e}"))?;
            if regs.ready {
                let size = u16::try_from(regs.size)
                    .map_err(|_| format!("queue {i}: size {} too large", regs.size))?;
                queue
                    .try_set_size(size)
                    .map_err(|e| format!("queue {i}: size {size}: {e}"))?;
                queue
                    .try_set_desc_table_address(GuestAddress(regs.desc))
                    .map_err(|e| format!("queue {i}: {e}"))?;
                queue
                    .try_set_avail_ring_address(GuestAddress(regs.avail))
                    .map_err(|e| format!("queue {i}: {e}"))?;
                queue
                    .try_set_used_ring_address(GuestAddress(regs.used))
                    .map_err(|e| format!("queue {i}: {e}"))?;
                queue.set_ready(true);
                if !queue.is_valid(&self.mem) {
                    return Err(format!("queue {i}: rings outside guest memory"));
                }
            }
            queues.push(queue);
        }
        Ok(queues)
    }

    fn reset_queue_regs(&mut self) {
        let initial = self.initial_size;
        for q in &mut self.queues {
            *q = QueueRegs {
                max_size: q.max_size,
                size: match initial {
                    InitialQueueSize::Zero => 0,
                    InitialQueueSize::Max => u32::from(q.max_size),
                },
                ..Default::default()
            };
        }
    }

    fn reset(&mut self) {
        match &mut self.executor {
            Executor::Thread(thread) => thread.reset(),
            Executor::Inline(worker) => worker.reset(),
        }
        // A kick that raced with the reset must not survive into the next
        // activation's bookkeeping; the worker drains notifiers anyway.
        self.active = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.unknown_features_acked = false;
        self.queue_sel = 0;
        self.reset_queue_regs();
        self.interrupt.clear();
    }
}

pub(crate) fn device_name(device_type: u32) -> &'static str {
    use virtio_bindings::virtio_ids::*;
    match device_type {
        VIRTIO_ID_NET => "virtio-net",
        VIRTIO_ID_BLOCK => "virtio-blk",
        VIRTIO_ID_RNG => "virtio-rng",
        _ => "virtio",
    }
}
