//! Virtio 1.x devices behind two transports: virtio-pci (modern,
//! [`PciTransport`], the default) and virtio-mmio version 2
//! ([`MmioTransport`]). Both are a register map over one shared core
//! (`common::TransportCore`): feature negotiation, the status handshake,
//! queue setup and validation, reset and the worker live there once.
//!
//! # Processing model
//!
//! Every transport owns one worker thread, spawned when it is created and
//! joined when it is dropped. The
//! thread waits until its [`WorkerGate`] is opened, installs the seccomp
//! filter it is given on itself (it exists before any filter does, so it
//! inherits none), and only then runs. The vcpu thread only touches
//! registers: a `QueueNotify` write becomes a write to that queue's
//! [`EventFd`](vmm_sys_util::eventfd::EventFd) and returns at once. The
//! worker runs an epoll loop over a control eventfd, the queue-notify
//! eventfds and, for virtio-net, the tap fd; it pops descriptor chains,
//! does the I/O, fills the used ring and writes the interrupt eventfd
//! (a KVM irqfd). `DRIVER_OK` hands the validated queues to the worker;
//! a device reset takes them back synchronously, so after the status
//! register reads 0 the worker no longer touches guest memory.
//!
//! A guest that breaks the virtqueue rules (bad ring index, used-ring
//! head out of range, queue layout outside its memory, ...) gets
//! `DEVICE_NEEDS_RESET` plus a configuration-change interrupt, and that
//! device stops processing until the driver resets it. Malformed single
//! requests only fail that request (`VIRTIO_BLK_S_IOERR`, dropped frame).
//! Work per wake-up is bounded, in chains (`queue::MAX_CHAINS_PER_EVENT`)
//! and in bytes (`queue::MAX_BYTES_PER_EVENT`); a worker with work left
//! re-arms its own notifier, and commands are handled before queues, so a
//! guest that keeps refilling a queue cannot starve a reset or a stop.
//! Every log line a guest can cause goes through a `Complaints` limit.
//!
//! The notify eventfds may also be registered as KVM ioeventfds
//! (virtio-mmio: address `base + 0x50`, 4 bytes, datamatch = queue index,
//! see [`MmioTransport::queue_notify_eventfds`]; virtio-pci: one doorbell
//! per queue, any width, see [`PciTransport::register_doorbells`]); the
//! worker copes with notifications arriving before `DRIVER_OK` either way.
//!
//! Interrupts go through an `interrupt::IrqSink`: one edge irqfd for
//! virtio-mmio; for virtio-pci the MSI-X vector the driver assigned to the
//! queue (or to configuration changes), or INTx while MSI-X is off. A
//! worker only ever writes eventfds; MSI routes change on the vCPU thread
//! that wrote the MSI-X table.
//!
//! # System calls made by the worker threads
//!
//! The per-device-kind allow-lists in `crate::seccomp` follow this list;
//! checked with strace on the tests:
//! - all devices: `epoll_pwait` (musl) / `epoll_wait` (glibc), `epoll_ctl`,
//!   `read` and `write` (eventfds, among them the MSI-X vectors' and the
//!   INTx resample eventfd, tap, log lines on stderr; the filter
//!   allows them on the worker's own fds only, `seccomp::WorkerFds`),
//!   `futex`, memory management for per-request buffers (`mmap`,
//!   `mprotect`, `munmap`, `mremap`, `brk`, `madvise`; never executable
//!   memory); when the transport is dropped the thread also runs `close`,
//!   `sigaltstack`, `rt_sigprocmask`, `munmap`, `madvise` and `exit`.
//! - virtio-blk: `pread64`, `pwrite64`, `fdatasync`, on its disk only
//!   (`QueueProcessor::io_fd`).
//! - virtio-rng: `getrandom`.
//! - virtio-net: nothing beyond the list above (`read`/`write` on the tap).
//!
//! The vcpu thread additionally needs `write` (notify/control eventfds) and
//! `futex` (the reset handshake) when it touches a transport, and for
//! virtio-pci the `KVM_SET_GSI_ROUTING` (MSI-X table writes) and
//! `KVM_IOEVENTFD` (doorbells following a moved BAR) ioctls.

mod block;
mod common;
mod complaints;
mod interrupt;
mod mmio;
mod net;
pub mod pci;
mod queue;
mod rng;
mod tap;
mod worker;

#[cfg(any(test, feature = "fuzzing"))]
pub mod test_support;

pub use block::Block;
#[cfg(test)]
pub(crate) use complaints::test_log as complaints_test_log;
pub(crate) use complaints::Complaints;
pub use mmio::MmioTransport;
pub use net::Net;
pub use pci::PciTransport;
pub use queue::QueueContext;
pub use rng::Rng;
pub use tap::Tap;
pub use worker::{NotStarted, WorkerGate};

/// One virtio device model: identity, features and configuration space.
/// The queue processing lives in the [`QueueProcessor`] it hands out, which
/// runs on the transport's worker thread.
pub trait VirtioDevice: Send {
    /// Virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits offered; the transport adds
    /// `VIRTIO_F_VERSION_1`.
    fn features(&self) -> u64;
    /// Reads from the device configuration space. Bytes past its end read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes to the device configuration space; our devices have no
    /// writable fields, so the default ignores the write.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio: ignored {}-byte config write at {:#x}",
            data.len(),
            offset
        );
    }
    /// Creates the queue processor; called once by the transport.
    fn processor(&mut self) -> Box<dyn QueueProcessor>;
}

/// The half of a device that runs on the worker thread.
pub trait QueueProcessor: Send {
    /// The driver reached `DRIVER_OK` with these acknowledged features.
    fn activate(&mut self, _features: u64) {}
    /// Queue `index` was notified (or has leftover work).
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError>;
    /// A host fd to poll for input (the tap for virtio-net).
    fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// A host fd the processor does positioned I/O on (the disk for
    /// virtio-blk); its worker's seccomp filter allows `pread64`,
    /// `pwrite64` and `fdatasync` on it alone.
    fn io_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Whether the backend fd should be polled right now (false while a
    /// received frame waits for guest buffers, to avoid spinning).
    fn wants_backend_events(&self) -> bool {
        false
    }
    /// The backend fd became readable.
    fn backend_ready(&mut self, _ctx: &mut QueueContext) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver reset the device: forget per-activation state.
    fn reset(&mut self) {}
}

/// The driver broke the virtqueue contract; the device needs a reset.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The virtqueue itself is unusable.
    #[error("virtqueue error: {0}")]
    Queue(virtio_queue::Error),
}

/// Copies `data.len()` bytes of `config` starting at `offset`, zero-filling
/// whatever lies past its end.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        for (dst, src) in data.iter_mut().zip(src) {
            *dst = *src;
        }
    }
}
