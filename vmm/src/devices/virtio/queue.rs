//! What a queue processor sees of its queues during one wake-up.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::DeviceError;

/// Descriptor chains handled per wake-up before the worker goes back to its
/// epoll loop (leftover work re-arms the queue's notifier), so a guest that
/// refills a queue as fast as we drain it cannot starve control commands.
pub const MAX_CHAINS_PER_EVENT: u32 = 256;

/// Bytes of device work (disk data moved, or what a FLUSH is charged)
/// per wake-up, on top of the chain count: 256 whole-disk reads in one
/// kick are spread over many wake-ups, so a reset or a stop waits for
/// at most one budget's worth of I/O, and one guest cannot hold a shared
/// disk for long at a time.
pub const MAX_BYTES_PER_EVENT: u64 = 8 << 20;

pub type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// Access to the active queues for one wake-up of the worker.
pub struct QueueContext<'a> {
    mem: &'a GuestMemoryMmap,
    queues: &'a mut [Queue],
    budget: u32,
    bytes_left: u64,
    /// Queues (bit `i` = queue `i`) whose used ring advanced.
    used_added: u64,
    leftover: u64,
}

impl<'a> QueueContext<'a> {
    pub(crate) fn new(mem: &'a GuestMemoryMmap, queues: &'a mut [Queue]) -> Self {
        QueueContext {
            mem,
            queues,
            budget: MAX_CHAINS_PER_EVENT,
            bytes_left: MAX_BYTES_PER_EVENT,
            used_added: 0,
            leftover: 0,
        }
    }

    pub fn mem(&self) -> &'a GuestMemoryMmap {
        self.mem
    }

    fn queue(&mut self, index: usize) -> Option<&mut Queue> {
        self.queues.get_mut(index).filter(|q| q.ready())
    }

    /// Next available descriptor chain of queue `index`, or `None` when the
    /// queue is empty, not set up by the driver, or this wake-up's budget
    /// (chains or bytes) is spent (the queue is then remembered as having
    /// leftover work).
    pub fn pop(&mut self, index: usize) -> Result<Option<Chain<'a>>, DeviceError> {
        if self.budget == 0 || self.bytes_left == 0 {
            self.leftover |= 1u64 << (index % 64);
            return Ok(None);
        }
        let mem = self.mem;
        let Some(queue) = self.queue(index) else {
            return Ok(None);
        };
        // `iter` fails when the driver claims more new entries than the
        // queue holds: the ring is corrupt.
        let chain = queue.iter(mem).map_err(DeviceError::Queue)?.next();
        if chain.is_some() {
            self.budget -= 1;
        }
        Ok(chain)
    }

    /// Counts `bytes` of work against this wake-up's byte budget. The chain
    /// being handled always finishes; the next [`pop`](Self::pop) returns
    /// `None` once the budget is spent.
    pub fn charge(&mut self, bytes: u64) {
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
    }

    /// Returns a chain to the driver with `len` bytes written into it.
    /// Fails (device broken) when the head index is not a valid descriptor.
    pub fn add_used(&mut self, index: usize, head: u16, len: u32) -> Result<(), DeviceError> {
        let mem = self.mem;
        let queue = self
            .queues
            .get_mut(index)
            .ok_or(DeviceError::Queue(virtio_queue::Error::QueueNotReady))?;
        queue.add_used(mem, head, len).map_err(DeviceError::Queue)?;
        self.used_added |= 1u64 << (index % 64);
        Ok(())
    }

    pub(crate) fn used_added(&self) -> u64 {
        self.used_added
    }

    /// Bit mask of queues that still had chains when the budget ran out.
    pub(crate) fn leftover(&self) -> u64 {
        self.leftover
    }
}
