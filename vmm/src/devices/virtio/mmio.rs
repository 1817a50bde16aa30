//! virtio-mmio transport, register layout version 2 (virtio 1.x only):
//! the register map onto [`TransportCore`].

use std::io;

use virtio_bindings::virtio_mmio::*;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::common::{InitialQueueSize, QueueField, TransportCore};
use super::interrupt::EdgeLine;
use super::worker::WorkerGate;
use super::VirtioDevice;
use crate::devices::bus::BusDevice;

const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0;

/// A virtio device on the MMIO bus.
pub struct MmioTransport {
    core: TransportCore,
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
        let sink = Box::new(EdgeLine(irq));
        Ok(MmioTransport {
            core: TransportCore::new(mem, device, sink, InitialQueueSize::Zero)?,
        })
    }

    /// What starts the worker thread; `None` for an inline transport and
    /// after the first call.
    pub fn take_worker_gate(&mut self) -> Option<WorkerGate> {
        self.core.take_worker_gate()
    }

    /// Like [`MmioTransport::new`], but queues are processed synchronously
    /// inside `write`, for the deterministic fuzz driver.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new_inline(
        mem: GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        irq: EventFd,
    ) -> io::Result<MmioTransport> {
        let sink = Box::new(EdgeLine(irq));
        Ok(MmioTransport {
            core: TransportCore::new_inline(mem, device, sink, InitialQueueSize::Zero)?,
        })
    }

    /// Queue-notify eventfds, index = queue index. Optional: register them as
    /// KVM ioeventfds at `base + 0x50` (4 bytes, datamatch = index) to skip
    /// the exit to userspace; `QueueNotify` writes that do reach `write` are
    /// forwarded to the same eventfds.
    pub fn queue_notify_eventfds(&self) -> &[EventFd] {
        self.core.queue_notify_eventfds()
    }

    fn read_reg(&self, offset: u32) -> u32 {
        let core = &self.core;
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => core.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => core.device_features(),
            // 0 tells the driver the queue does not exist.
            VIRTIO_MMIO_QUEUE_NUM_MAX => u32::from(core.queue_max_size()),
            VIRTIO_MMIO_QUEUE_READY => u32::from(core.queue_ready()),
            VIRTIO_MMIO_INTERRUPT_STATUS => core.interrupt.status(),
            VIRTIO_MMIO_STATUS => core.status(),
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
        let core = &mut self.core;
        let queue_field = match offset {
            VIRTIO_MMIO_QUEUE_NUM => Some(QueueField::Size),
            VIRTIO_MMIO_QUEUE_READY => Some(QueueField::Ready),
            VIRTIO_MMIO_QUEUE_DESC_LOW => Some(QueueField::DescLow),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => Some(QueueField::DescHigh),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => Some(QueueField::AvailLow),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => Some(QueueField::AvailHigh),
            VIRTIO_MMIO_QUEUE_USED_LOW => Some(QueueField::UsedLow),
            VIRTIO_MMIO_QUEUE_USED_HIGH => Some(QueueField::UsedHigh),
            _ => None,
        };
        if let Some(field) = queue_field {
            core.write_queue(field, v);
            return;
        }
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => core.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => core.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => core.write_driver_features(v),
            VIRTIO_MMIO_QUEUE_SEL => core.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NOTIFY => core.notify(v),
            VIRTIO_MMIO_INTERRUPT_ACK => core.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => core.write_status(v),
            VIRTIO_MMIO_SHM_SEL => {}
            _ => core.complaints.warn(format_args!(
                "write to read-only or unknown register {offset:#x}"
            )),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.core
                .device
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
                self.core.complaints.warn(format_args!(
                    "register read at {offset:#x} must be 4 aligned bytes"
                ));
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.core
                .device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        match (<[u8; 4]>::try_from(data), u32::try_from(offset)) {
            (Ok(word), Ok(reg)) if reg % 4 == 0 => self.write_reg(reg, u32::from_le_bytes(word)),
            _ => self.core.complaints.warn(format_args!(
                "register write at {offset:#x} must be 4 aligned bytes"
            )),
        }
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
