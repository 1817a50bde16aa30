//! Interrupt status and the `DEVICE_NEEDS_RESET` flag, shared between the
//! vcpu side of a transport and its worker thread.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::EventFd;

pub(crate) struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    irq: EventFd,
}

impl Interrupt {
    pub(crate) fn new(irq: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            irq,
        }
    }

    /// Tells the driver the used ring of some queue advanced.
    pub(crate) fn signal_used(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    fn raise(&self, bits: u32) {
        // The status bit must be visible before the guest takes the interrupt
        // and reads InterruptStatus.
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1) {
            log::error!("virtio: cannot raise interrupt: {e}");
        }
    }

    /// The interrupt eventfd, which the worker's seccomp filter lets it
    /// write.
    pub(crate) fn irq_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.irq)
    }

    /// InterruptStatus register.
    pub(crate) fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK register.
    pub(crate) fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Sets `DEVICE_NEEDS_RESET` and sends the configuration-change
    /// notification the spec asks for (once).
    pub(crate) fn mark_broken(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            self.raise(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Device reset: nothing pending, nothing broken.
    pub(crate) fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}
