//! Interrupt status and the `DEVICE_NEEDS_RESET` flag, shared between the
//! vcpu side of a transport and its worker thread, and the way the
//! transport turns "queue `i` advanced" or "configuration changed" into a
//! guest interrupt ([`IrqSink`]: one line for virtio-mmio, MSI-X vectors
//! or INTx for virtio-pci).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::EventFd;

/// What an interrupt is about, for transports with one vector per queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The used rings of these queues (bit `i` = queue `i`) advanced.
    Queues(u64),
    Config,
}

/// Where a transport's interrupts go.
pub(crate) trait IrqSink: Send + Sync {
    fn trigger(&self, cause: Cause);
    /// The fds `trigger` writes, for the worker's seccomp filter.
    fn fds(&self) -> Vec<RawFd>;
    /// An eventfd KVM signals when the guest acknowledged a level
    /// interrupt (a resample irqfd): the worker polls it and calls
    /// [`Interrupt::resample`].
    fn resample_fd(&self) -> Option<&EventFd> {
        None
    }
    /// The line was lowered at the guest's EOI; `pending` tells whether
    /// the interrupt status still has bits set.
    fn resample(&self, _pending: bool) {}
}

/// One edge interrupt for everything: an eventfd registered as a KVM
/// irqfd (virtio-mmio).
pub(crate) struct EdgeLine(pub(crate) EventFd);

impl IrqSink for EdgeLine {
    fn trigger(&self, _cause: Cause) {
        if let Err(e) = self.0.write(1) {
            log::error!("virtio: cannot raise interrupt: {e}");
        }
    }

    fn fds(&self) -> Vec<RawFd> {
        vec![self.0.as_raw_fd()]
    }
}

pub(crate) struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    sink: Box<dyn IrqSink>,
}

impl Interrupt {
    pub(crate) fn new(sink: Box<dyn IrqSink>) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            sink,
        }
    }

    /// Tells the driver the used rings of `queues` (a bit mask) advanced.
    pub(crate) fn signal_used(&self, queues: u64) {
        self.raise(VIRTIO_MMIO_INT_VRING, Cause::Queues(queues));
    }

    fn raise(&self, bits: u32, cause: Cause) {
        // The status bit must be visible before the guest takes the interrupt
        // and reads InterruptStatus.
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.sink.trigger(cause);
    }

    /// The fds the worker writes to interrupt, for its seccomp filter.
    pub(crate) fn irq_fds(&self) -> Vec<RawFd> {
        self.sink.fds()
    }

    pub(crate) fn resample_fd(&self) -> Option<&EventFd> {
        self.sink.resample_fd()
    }

    /// The guest acknowledged the level interrupt: raise it again if
    /// something is still pending (it came after the driver read the ISR).
    pub(crate) fn resample(&self) {
        self.sink.resample(self.status() != 0);
    }

    /// InterruptStatus register (virtio-mmio), ISR (virtio-pci, which then
    /// clears it with [`Interrupt::take_status`]).
    pub(crate) fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK register.
    pub(crate) fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The virtio-pci ISR: reading it acknowledges everything it shows.
    pub(crate) fn take_status(&self) -> u32 {
        self.status.swap(0, Ordering::SeqCst)
    }

    /// Sets `DEVICE_NEEDS_RESET` and sends the configuration-change
    /// notification the spec asks for (once).
    pub(crate) fn mark_broken(&self) {
        if !self.needs_reset.swap(true, Ordering::SeqCst) {
            self.raise(VIRTIO_MMIO_INT_CONFIG, Cause::Config);
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
