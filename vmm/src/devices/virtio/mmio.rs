//! virtio-mmio transport, register layout version 2 (virtio 1.x only).

use std::io;
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::complaints::Complaints;
use super::interrupt::Interrupt;
use super::worker::{Worker, WorkerGate, WorkerThread};
use super::VirtioDevice;
use crate::devices::bus::BusDevice;

const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0;

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

fn set_low(reg: &mut u64, v: u32) {
    *reg = (*reg & !0xffff_ffff) | u64::from(v);
}

fn set_high(reg: &mut u64, v: u32) {
    *reg = (*reg & 0xffff_ffff) | (u64::from(v) << 32);
}

enum Executor {
    Thread(WorkerThread),
    /// Only [`MmioTransport::new_inline`] makes one, which exists for the
    /// tests and the fuzz driver: in the vmm itself the variant is never
    /// built, and that is the point.
    #[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
    Inline(Worker),
}

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    executor: Executor,
    notifiers: Vec<EventFd>,
    offered_features: u64,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver acked a bit beyond the 64 we can offer.
    unknown_features_acked: bool,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    active: bool,
    complaints: Complaints,
}

impl MmioTransport {
    /// Wraps `device`; `irq` is written whenever the interrupt must be raised
    /// (register it as a KVM irqfd). Spawns the device's worker thread,
    /// which waits until [`MmioTransport::take_worker_gate`] is opened.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        irq: EventFd,
    ) -> io::Result<MmioTransport> {
        let device_type = device.device_type();
        Self::build(mem, device, irq, |worker, notifiers| {
            Ok(Executor::Thread(WorkerThread::spawn(
                worker,
                device_type,
                notifiers,
            )?))
        })
    }

    /// What starts the worker thread; `None` for an inline transport and
    /// after the first call.
    pub fn take_worker_gate(&mut self) -> Option<WorkerGate> {
        match &mut self.executor {
            Executor::Thread(thread) => thread.take_gate(),
            Executor::Inline(_) => None,
        }
    }

    /// Like [`MmioTransport::new`], but queues are processed synchronously
    /// inside `write`, for the deterministic fuzz driver.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new_inline(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        irq: EventFd,
    ) -> io::Result<MmioTransport> {
        Self::build(mem, device, irq, |worker, _| Ok(Executor::Inline(worker)))
    }

    fn build(
        mem: GuestMemoryMmap,
        mut device: Box<dyn VirtioDevice>,
        irq: EventFd,
        executor: impl FnOnce(Worker, Vec<EventFd>) -> io::Result<Executor>,
    ) -> io::Result<MmioTransport> {
        let name = device_name(device.device_type());
        let interrupt = Arc::new(Interrupt::new(irq));
        let queues: Vec<QueueRegs> = device
            .queue_max_sizes()
            .iter()
            .map(|&max_size| QueueRegs {
                max_size,
                ..Default::default()
            })
            .collect();
        let mut notifiers = Vec::with_capacity(queues.len());
        let mut worker_notifiers = Vec::with_capacity(queues.len());
        for _ in &queues {
            let evt = EventFd::new(EFD_NONBLOCK)?;
            worker_notifiers.push(evt.try_clone()?);
            notifiers.push(evt);
        }
        let worker = Worker::new(name, mem.clone(), device.processor(), interrupt.clone());
        let executor = executor(worker, worker_notifiers)?;
        Ok(MmioTransport {
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
            queues,
            active: false,
            complaints: Complaints::new(name),
        })
    }

    /// Queue-notify eventfds, index = queue index. Optional: register them as
    /// KVM ioeventfds at `base + 0x50` (4 bytes, datamatch = index) to skip
    /// the exit to userspace; `QueueNotify` writes that do reach `write` are
    /// forwarded to the same eventfds.
    pub fn queue_notify_eventfds(&self) -> &[EventFd] {
        &self.notifiers
    }

    fn status_reg(&self) -> u32 {
        if self.interrupt.is_broken() {
            self.status | VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn selected_queue(&mut self) -> Option<&mut QueueRegs> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_reg(&self, offset: u32) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => (self.offered_features & 0xffff_ffff) as u32,
                1 => (self.offered_features >> 32) as u32,
                _ => 0,
            },
            // 0 tells the driver the queue does not exist.
            VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size)),
            VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status_reg(),
            // No shared memory regions: length and base read as all ones.
            VIRTIO_MMIO_SHM_LEN_LOW
            | VIRTIO_MMIO_SHM_LEN_HIGH
            | VIRTIO_MMIO_SHM_BASE_LOW
            | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            // The configuration space never changes while the guest runs.
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u32, v: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(v),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_reg(offset, v),
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(v),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => self.write_status(v),
            VIRTIO_MMIO_SHM_SEL => {}
            _ => self.complaints.warn(format_args!(
                "write to read-only or unknown register {offset:#x}"
            )),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
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

    fn write_queue_reg(&mut self, offset: u32, v: u32) {
        if self.active && offset == VIRTIO_MMIO_QUEUE_READY && v == 0 {
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
        let Some(queue) = self.selected_queue() else {
            self.complaints
                .warn(format_args!("write to a queue register of a missing queue"));
            return;
        };
        if queue.ready && offset != VIRTIO_MMIO_QUEUE_READY {
            self.complaints
                .warn(format_args!("write to a ready queue's register ignored"));
            return;
        }
        match offset {
            VIRTIO_MMIO_QUEUE_NUM => queue.size = v,
            VIRTIO_MMIO_QUEUE_READY => queue.ready = v == 1,
            VIRTIO_MMIO_QUEUE_DESC_LOW => set_low(&mut queue.desc, v),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => set_high(&mut queue.desc, v),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => set_low(&mut queue.avail, v),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => set_high(&mut queue.avail, v),
            VIRTIO_MMIO_QUEUE_USED_LOW => set_low(&mut queue.used, v),
            VIRTIO_MMIO_QUEUE_USED_HIGH => set_high(&mut queue.used, v),
            _ => {}
        }
    }

    /// Stops a running queue, the way the spec lets a driver take a queue
    /// out of use: once QueueReady reads back 0 the device is done with it.
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

    fn notify(&mut self, index: u32) {
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

    fn write_status(&mut self, v: u32) {
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
        for q in &mut self.queues {
            *q = QueueRegs {
                max_size: q.max_size,
                ..Default::default()
            };
        }
        self.interrupt.clear();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        // Below the configuration space, so the offset fits a u32.
        match u32::try_from(offset) {
            Ok(reg) if data.len() == 4 && reg % 4 == 0 => {
                data.copy_from_slice(&self.read_reg(reg).to_le_bytes());
            }
            _ => {
                data.fill(0);
                self.complaints.warn(format_args!(
                    "register read at {offset:#x} must be 4 aligned bytes"
                ));
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        match (<[u8; 4]>::try_from(data), u32::try_from(offset)) {
            (Ok(word), Ok(reg)) if reg % 4 == 0 => self.write_reg(reg, u32::from_le_bytes(word)),
            _ => self.complaints.warn(format_args!(
                "register write at {offset:#x} must be 4 aligned bytes"
            )),
        }
    }
}

fn device_name(device_type: u32) -> &'static str {
    use virtio_bindings::virtio_ids::*;
    match device_type {
        VIRTIO_ID_NET => "virtio-net",
        VIRTIO_ID_BLOCK => "virtio-blk",
        VIRTIO_ID_RNG => "virtio-rng",
        _ => "virtio",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use virtio_bindings::virtio_config::*;
    use virtio_bindings::virtio_mmio::*;

    use crate::devices::bus::BusDevice;
    use crate::devices::virtio::test_support::driver::{Driver, DATA, MEM_SIZE, VERSION_1};
    use crate::devices::virtio::{Block, Rng};

    const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

    fn rng() -> Driver {
        Driver::new(Box::new(Rng::new()))
    }

    #[test]
    fn identifies_itself() {
        let mut d = rng();
        assert_eq!(d.read(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(d.read(VIRTIO_MMIO_VERSION), 2);
        assert_eq!(d.read(VIRTIO_MMIO_DEVICE_ID), 4);
        assert_eq!(d.device_features(), VERSION_1);
        d.write(VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(d.read(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        d.write(VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(d.read(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        assert_eq!(d.read(VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    }

    #[test]
    fn refuses_bogus_feature_negotiation() {
        let mut d = rng();
        // Missing VERSION_1 (a legacy driver).
        assert!(!d.negotiate(0));
        // A bit the device never offered.
        assert!(!d.negotiate(VERSION_1 | 1));
        // A bit beyond the first 64.
        d.write(VIRTIO_MMIO_STATUS, 0);
        d.write(VIRTIO_MMIO_STATUS, 3);
        d.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        d.write(VIRTIO_MMIO_DRIVER_FEATURES, 1);
        d.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 2);
        d.write(VIRTIO_MMIO_DRIVER_FEATURES, 1);
        d.write(VIRTIO_MMIO_STATUS, 3 | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(d.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        // Going on to DRIVER_OK anyway breaks the device instead of running it.
        d.setup_queue(0, 16);
        d.driver_ok();
        assert_ne!(d.status() & NEEDS_RESET, 0);
        assert_ne!(
            d.read(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG,
            0
        );
        d.submit(0, &[(DATA, 64, true)]);
        assert_eq!(d.try_wait_used(0, Duration::from_millis(100)), None);
        // A correct negotiation after the reset works.
        assert!(d.negotiate(VERSION_1));
        assert_eq!(d.status() & NEEDS_RESET, 0);
        // Feature writes after FEATURES_OK are ignored.
        d.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        d.write(VIRTIO_MMIO_DRIVER_FEATURES, 0xffff_ffff);
        d.setup_queue(0, 16);
        d.driver_ok();
        assert_eq!(d.status() & NEEDS_RESET, 0);
        d.submit(0, &[(DATA, 64, true)]);
        assert_eq!(d.wait_used(0).1, 64);
    }

    #[test]
    fn driver_ok_without_features_ok_needs_reset() {
        let mut d = rng();
        d.write(VIRTIO_MMIO_STATUS, 3);
        d.setup_queue(0, 16);
        d.write(VIRTIO_MMIO_STATUS, 3 | VIRTIO_CONFIG_S_DRIVER_OK);
        assert_ne!(d.status() & NEEDS_RESET, 0);
        d.write(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(d.status(), 0);
        assert_eq!(d.read(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    }

    #[test]
    fn invalid_queue_sizes_need_reset() {
        for size in [0u32, 3, 100, 255, 512, 0x1_0100] {
            let mut d = rng();
            assert!(d.negotiate(VERSION_1));
            d.setup_queue(0, size);
            d.driver_ok();
            assert_ne!(d.status() & NEEDS_RESET, 0, "queue size {size} accepted");
            d.kick(0);
        }
    }

    #[test]
    fn rings_outside_memory_or_misaligned_need_reset() {
        let end = MEM_SIZE as u64;
        let layouts = [
            (end - 16, 0x2000, 0x3000),           // descriptor table runs off the end
            (0x1000, end - 2, 0x3000),            // available ring runs off the end
            (0x1000, 0x2000, end),                // used ring outside memory
            (0x1008, 0x2000, 0x3000),             // descriptor table not 16-aligned
            (0x1000, 0x2001, 0x3000),             // available ring not 2-aligned
            (0x1000, 0x2000, 0x3002),             // used ring not 4-aligned
            (0x1_0000_0000_1000, 0x2000, 0x3000), // high address bits
        ];
        for (desc, avail, used) in layouts {
            let mut d = rng();
            assert!(d.negotiate(VERSION_1));
            d.setup_queue_at(0, 16, desc, avail, used);
            d.driver_ok();
            assert_ne!(
                d.status() & NEEDS_RESET,
                0,
                "layout {desc:#x}/{avail:#x}/{used:#x} accepted"
            );
        }
    }

    #[test]
    fn notifications_before_driver_ok_are_ignored() {
        let mut d = rng();
        assert!(d.negotiate(VERSION_1));
        d.setup_queue(0, 16);
        d.write_mem(DATA, &[0; 32]);
        d.submit(0, &[(DATA, 32, true)]);
        d.kick(0);
        d.kick(7);
        assert_eq!(d.try_wait_used(0, Duration::from_millis(100)), None);
        assert_eq!(d.read_mem(DATA, 32), vec![0; 32]);
        // DRIVER_OK picks up what was queued.
        d.driver_ok();
        assert_eq!(d.wait_used(0).1, 32);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let mut d = rng();
        d.start(0, 1, 16);
        assert_eq!(d.read(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        d.submit(0, &[(DATA, 8, true)]);
        d.wait_used(0);
        assert_eq!(d.irq.read().unwrap(), 1);
        assert_eq!(d.read(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        d.write(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(d.read(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        d.write(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(d.read(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    }

    #[test]
    fn reset_clears_state_and_device_restarts() {
        let mut d = rng();
        d.start(0, 1, 16);
        d.submit(0, &[(DATA, 8, true)]);
        d.wait_used(0);
        d.write(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(d.status(), 0);
        assert_eq!(d.read(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        d.write(VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(d.read(VIRTIO_MMIO_QUEUE_READY), 0);
        // After the reset the old queue is dead: a kick does nothing.
        d.submit(0, &[(DATA, 8, true)]);
        assert_eq!(d.try_wait_used(0, Duration::from_millis(50)), None);
        // Fresh initialisation, fresh rings.
        d.start(0, 1, 16);
        d.write_mem(DATA + 0x100, &[0; 16]);
        d.submit(0, &[(DATA + 0x100, 16, true)]);
        assert_eq!(d.wait_used(0), (0, 16));
    }

    #[test]
    fn status_bits_cannot_be_cleared_without_reset() {
        let mut d = rng();
        d.write(VIRTIO_MMIO_STATUS, 3);
        d.write(VIRTIO_MMIO_STATUS, 1);
        assert_eq!(d.status(), 3);
        // The driver cannot set NEEDS_RESET itself.
        d.write(VIRTIO_MMIO_STATUS, 3 | NEEDS_RESET);
        assert_eq!(d.status(), 3);
    }

    #[test]
    fn queue_registers_are_frozen_after_driver_ok() {
        let mut d = rng();
        d.start(0, 1, 16);
        d.write(VIRTIO_MMIO_QUEUE_NUM, 2);
        d.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
        d.write(VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(d.read(VIRTIO_MMIO_QUEUE_READY), 1);
        for _ in 0..4 {
            d.submit(0, &[(DATA, 4, true)]);
            assert_eq!(d.wait_used(0).1, 4);
        }
    }

    #[test]
    fn driver_can_stop_a_running_queue() {
        let mut d = rng();
        d.start(0, 1, 16);
        d.submit(0, &[(DATA, 4, true)]);
        d.wait_used(0);
        d.write(VIRTIO_MMIO_QUEUE_READY, 0);
        assert_eq!(d.read(VIRTIO_MMIO_QUEUE_READY), 0);
        // The device no longer looks at the rings, kicked or not.
        d.submit(0, &[(DATA, 4, true)]);
        assert_eq!(d.try_wait_used(0, Duration::from_millis(50)), None);
        assert_eq!(d.status() & NEEDS_RESET, 0);
    }

    #[test]
    fn odd_register_accesses_are_harmless() {
        let mut d = Driver::new(Box::new(
            Block::new(
                crate::devices::virtio::test_support::driver::scratch_file(4096),
                false,
            )
            .unwrap(),
        ));
        let mut byte = [0xffu8; 1];
        d.dev.read(u64::from(VIRTIO_MMIO_MAGIC_VALUE), &mut byte);
        assert_eq!(byte, [0]);
        let mut word = [0xffu8; 4];
        d.dev.read(1, &mut word);
        assert_eq!(word, [0; 4]);
        d.dev.write(u64::from(VIRTIO_MMIO_STATUS), &[1, 0]);
        d.dev
            .write(u64::from(VIRTIO_MMIO_STATUS) + 1, &[1, 0, 0, 0]);
        assert_eq!(d.status(), 0);
        d.write(VIRTIO_MMIO_MAGIC_VALUE, 0);
        d.write(0xf0, 0x1234);
        assert_eq!(d.read(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        // Config space: byte-wise reads work, reads past the end are zero,
        // writes are ignored.
        let mut cap = [0u8; 1];
        d.dev.read(u64::from(VIRTIO_MMIO_CONFIG), &mut cap);
        assert_eq!(cap, [8]);
        d.dev.write(u64::from(VIRTIO_MMIO_CONFIG), &[0xff; 8]);
        d.dev.read(u64::from(VIRTIO_MMIO_CONFIG), &mut cap);
        assert_eq!(cap, [8]);
        let mut far = [0xffu8; 8];
        d.dev.read(u64::MAX - 4, &mut far);
        assert_eq!(far, [0; 8]);
        d.dev.read(0x1000 - 8, &mut far);
        assert_eq!(far, [0; 8]);
    }
}
