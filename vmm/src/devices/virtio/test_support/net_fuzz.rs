//! Seeded fuzzing of virtio-net queue processing through the test
//! [`Driver`], with one end of a datagram socket pair as the "tap" (as
//! the net unit tests do) and the queues processed inline, so every kick
//! is a deterministic step.
//!
//! Each case starts a device with a random queue size and runs a random
//! sequence of: frames from the host (empty, header-only, small, up to
//! and past the largest frame), RX chains and TX chains (one to four
//! descriptors, mixed directions, some outside guest memory or straddling
//! its end), kicks, and hostile rewrites of submitted descriptors or
//! available-ring entries. After every kick:
//!
//! - guest memory changed only inside the device-writable buffers of the
//!   RX chains the driver had made available, and the used rings;
//! - every used element names a chain the driver made available, and its
//!   length is at most that chain's device-writable bytes (0 for TX);
//! - while the driver behaves, the model's exact answer: frames are
//!   delivered in order into the next RX chain that holds them (header
//!   rewritten, payload intact, length the frame's), dropped with length
//!   0 into one too small or outside memory; TX chains reach the host as
//!   their readable bytes with a zeroed header, unless shorter than a
//!   header, larger than a frame or outside memory.
//!
//! `HV_FUZZ_SEED` and `HV_FUZZ_ITERS` (or `HV_FUZZ_SECS`) as for init's
//! fuzz tests.
// Test code builds small lengths and indices: the truncation is meant.
#![allow(clippy::cast_possible_truncation)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::driver::{Driver, DATA, MEM_SIZE};
use crate::devices::virtio::tap::VNET_HDR_LEN;
use crate::devices::virtio::Net;

const RX: usize = 0;
const TX: usize = 1;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MAX_FRAME: usize = VNET_HDR_LEN + 14 + 4 + 65535;
const MEM: u64 = MEM_SIZE as u64;
const NEEDS_RESET: u32 = 0x40;

/// What the cases exercised, for the summary line: RX frames delivered,
/// RX frames dropped, TX frames sent, cases with a hostile driver.
static STATS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn count(stat: usize) {
    STATS[stat].fetch_add(1, Ordering::Relaxed);
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// One descriptor as the driver wrote it.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    writable: bool,
}

impl Desc {
    fn in_memory(&self) -> bool {
        self.len == 0
            || self
                .addr
                .checked_add(u64::from(self.len))
                .is_some_and(|end| end <= MEM)
    }
}

/// A chain the driver made available and the device has not returned.
#[derive(Debug)]
struct Pending {
    head: u16,
    descs: Vec<Desc>,
}

struct Case {
    d: Driver,
    peer: UnixDatagram,
    size: u16,
    /// Per queue, in the order made available.
    pending: [VecDeque<Pending>; 2],
    /// Descriptors in flight per queue (they are handed out in a ring).
    in_flight: [usize; 2],
    /// Frames sent by the host, not yet delivered (as the device sees
    /// them: header-only ones skipped, long ones cut to a frame).
    frames: VecDeque<Vec<u8>>,
    /// False once the fuzzer has broken the driver's side of the rules:
    /// only the safety invariants hold from then on.
    clean: bool,
    /// Bump allocator over the data area, so buffers do not overlap.
    next_buf: u64,
    broken: bool,
}

impl Case {
    fn new(rng: &mut Rng, pattern: &[u8]) -> Case {
        let (ours, peer) = UnixDatagram::pair().expect("socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        peer.set_nonblocking(true).expect("non-blocking");
        let net = Net::with_backend(File::from(OwnedFd::from(ours)), MAC);
        let mut d = Driver::new_inline(Box::new(net));
        let size = [256u16, 256, 64, 16, 4, 2, 1][rng.below(7) as usize];
        d.start(1 << VIRTIO_NET_F_MAC, 2, u32::from(size));
        // A pattern in the data area, so a stray write of zeros shows.
        d.write_mem(DATA, pattern);
        Case {
            d,
            peer,
            size,
            pending: [VecDeque::new(), VecDeque::new()],
            in_flight: [0, 0],
            frames: VecDeque::new(),
            clean: true,
            next_buf: DATA,
            broken: false,
        }
    }

    /// A buffer of `len` bytes: mostly fresh space in the data area,
    /// sometimes outside guest memory or straddling its end.
    fn buffer(&mut self, rng: &mut Rng, len: u32) -> u64 {
        match rng.below(40) {
            0 => MEM.saturating_sub(u64::from(len / 2).max(1)),
            1 => MEM + rng.below(0x10000),
            2 => u64::MAX - rng.below(u64::from(len) + 16),
            _ => {
                let addr = self.next_buf;
                if u64::from(len) > MEM - DATA {
                    // Fits nowhere: never in memory, whatever the address.
                    return DATA;
                }
                let addr = if addr + u64::from(len) > MEM {
                    // Out of fresh space: start over. Buffers may overlap
                    // now, which only the model's exact answer minds.
                    self.clean = false;
                    DATA
                } else {
                    addr
                };
                self.next_buf = (addr + u64::from(len) + 16 + rng.below(64)) & !7;
                addr
            }
        }
    }

    fn frame_len(rng: &mut Rng) -> usize {
        match rng.below(20) {
            // Not 0: a datagram socket's empty read looks like a closed
            // tap, which a tap itself never gives.
            0 => 1 + rng.below(VNET_HDR_LEN as u64) as usize,
            1 => MAX_FRAME - 2 + rng.below(5) as usize,
            2 => rng.below(MAX_FRAME as u64) as usize,
            _ => VNET_HDR_LEN + 1 + rng.below(1600) as usize,
        }
    }

    fn host_sends(&mut self, rng: &mut Rng) {
        let len = Case::frame_len(rng);
        let frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match self.peer.send(&frame) {
            Ok(_) => {
                if len > VNET_HDR_LEN {
                    let mut seen = frame;
                    // The device reads into a buffer of the largest frame.
                    seen.truncate(MAX_FRAME);
                    self.frames.push_back(seen);
                }
            }
            // The socket's buffer is full: the frame was never sent.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("send: {e}"),
        }
    }

    fn chain(&mut self, rng: &mut Rng, q: usize) -> Vec<Desc> {
        let count = 1 + rng.below(4) as usize;
        let total = match q {
            RX if rng.one_in(6) => MAX_FRAME as u32 + rng.below(64) as u32 - 32,
            RX if rng.one_in(4) => 1 + rng.below(2000) as u32,
            RX => 1700 + rng.below(400) as u32,
            _ => Case::frame_len(rng) as u32,
        };
        let mut descs = Vec::new();
        let mut left = total;
        for i in 0..count {
            let len = if i + 1 == count {
                left
            } else {
                rng.below(u64::from(left) + 1) as u32
            };
            left -= len;
            // Mostly the right direction for the queue.
            let writable = (q == RX) != rng.one_in(8);
            let len = if rng.one_in(40) {
                rng.next() as u32
            } else {
                len
            };
            let addr = self.buffer(rng, len);
            descs.push(Desc {
                addr,
                len,
                writable,
            });
        }
        descs
    }

    fn submit(&mut self, rng: &mut Rng, q: usize) {
        let descs = self.chain(rng, q);
        if self.in_flight[q] + descs.len() > usize::from(self.size) {
            return;
        }
        if q == TX {
            // Readable bytes the guest wants sent.
            for desc in descs.iter().filter(|d| !d.writable && d.in_memory()) {
                let data: Vec<u8> = (0..desc.len).map(|_| rng.next() as u8).collect();
                self.d.write_mem(desc.addr, &data);
            }
        }
        let buffers: Vec<(u64, u32, bool)> =
            descs.iter().map(|d| (d.addr, d.len, d.writable)).collect();
        let head = self.d.add_chain(q, &buffers);
        self.d.push_avail(q, head);
        self.in_flight[q] += descs.len();
        self.pending[q].push_back(Pending { head, descs });
    }

    /// The driver breaks the rules: rewrites a submitted descriptor or an
    /// available-ring entry.
    fn hostile(&mut self, rng: &mut Rng) {
        let q = rng.below(2) as usize;
        let size = u64::from(self.size);
        if rng.one_in(3) {
            let slot = rng.below(size);
            let head = if rng.one_in(2) {
                rng.next() as u16
            } else {
                rng.below(size) as u16
            };
            let avail = self.d.rings[q].avail;
            self.d
                .mem
                .write_obj(head, GuestAddress(avail + 4 + slot * 2))
                .expect("avail ring");
        } else {
            let index = rng.below(size) as u16;
            let addr = match rng.below(3) {
                0 => rng.next(),
                _ => DATA + rng.below(MEM - DATA),
            };
            let len = match rng.below(3) {
                0 => rng.next() as u32,
                _ => rng.below(4096) as u32,
            };
            // NEXT and WRITE only: INDIRECT was not negotiated.
            let flags = (rng.next() as u16) & (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16;
            let next = if rng.one_in(4) {
                rng.next() as u16
            } else {
                rng.below(size) as u16
            };
            self.d.write_desc(q, index, addr, len, flags, next);
        }
        self.clean = false;
    }

    /// A chain as the device will walk it, from the descriptor table in
    /// guest memory: at most a queue's worth of descriptors, stopping at an
    /// index beyond the queue or 4 GiB of buffers, as virtio-queue does.
    fn walk(&self, q: usize, head: u16) -> Vec<Desc> {
        let mut descs = Vec::new();
        let mut index = head;
        let mut bytes = 0u32;
        for _ in 0..self.size {
            if index >= self.size {
                break;
            }
            let at = self.d.rings[q].desc + u64::from(index) * 16;
            let addr: u64 = self.d.mem.read_obj(GuestAddress(at)).expect("desc");
            let len: u32 = self.d.mem.read_obj(GuestAddress(at + 8)).expect("desc");
            let flags: u16 = self.d.mem.read_obj(GuestAddress(at + 12)).expect("desc");
            let next: u16 = self.d.mem.read_obj(GuestAddress(at + 14)).expect("desc");
            let Some(sum) = bytes.checked_add(len) else {
                break;
            };
            bytes = sum;
            descs.push(Desc {
                addr,
                len,
                writable: flags & VRING_DESC_F_WRITE as u16 != 0,
            });
            if flags & VRING_DESC_F_NEXT as u16 == 0 {
                break;
            }
            index = next;
        }
        descs
    }

    /// Heads the device may take next: those in the available ring from
    /// where it stopped (the oldest pending chain) up to the index.
    fn available_heads(&self, q: usize) -> Vec<u16> {
        let ring = &self.d.rings[q];
        let avail_idx: u16 = self
            .d
            .mem
            .read_obj(GuestAddress(ring.avail + 2))
            .expect("avail idx");
        let used_idx = self.d.used_idx(q);
        let count = avail_idx.wrapping_sub(used_idx).min(self.size);
        (0..count)
            .map(|i| {
                let slot = u64::from(used_idx.wrapping_add(i) % self.size);
                self.d
                    .mem
                    .read_obj(GuestAddress(ring.avail + 4 + slot * 2))
                    .expect("avail ring")
            })
            .collect()
    }

    fn kick(&mut self, q: usize) {
        // What the device may write: the used rings, and the writable
        // buffers of every RX chain it could take.
        let mut allowed: Vec<(u64, u64)> = (0..2)
            .map(|r| {
                let used = self.d.rings[r].used;
                (used, used + 6 + 8 * u64::from(self.size))
            })
            .collect();
        let heads = self.available_heads(q);
        let walks: Vec<(u16, Vec<Desc>)> = heads.iter().map(|&h| (h, self.walk(q, h))).collect();
        if q == RX {
            for (_, descs) in &walks {
                for desc in descs.iter().filter(|d| d.writable) {
                    let end = desc.addr.saturating_add(u64::from(desc.len)).min(MEM);
                    if desc.addr < end {
                        allowed.push((desc.addr, end));
                    }
                }
            }
        }
        let before = self.d.read_mem(0, MEM_SIZE);
        let used_before = self.d.used_idx(q);
        self.d.kick(q as u32);
        let after = self.d.read_mem(0, MEM_SIZE);
        check_writes(&before, &after, &mut allowed);

        let used_after = self.d.used_idx(q);
        let new = used_after.wrapping_sub(used_before);
        assert!(
            usize::from(new) <= heads.len(),
            "{new} chains returned of {} available",
            heads.len()
        );
        if self.d.status() & NEEDS_RESET != 0 {
            assert!(!self.clean, "a well-behaved driver broke the device");
            self.broken = true;
        }
        for i in 0..new {
            let (id, len) = self.d.try_wait_used(q, Duration::ZERO).expect("used entry");
            let (head, descs) = &walks[usize::from(i)];
            assert_eq!(
                id,
                u32::from(*head),
                "used element {i} is not the next chain"
            );
            let capacity: u64 = descs
                .iter()
                .filter(|d| d.writable)
                .map(|d| u64::from(d.len))
                .sum();
            match q {
                RX => assert!(
                    u64::from(len) <= capacity,
                    "used length {len} > {capacity} writable bytes"
                ),
                _ => assert_eq!(len, 0, "TX used length"),
            }
            if self.clean {
                self.expect(q, id, len, descs, &after);
            }
        }
        if self.clean {
            if q == RX {
                // Chains left over mean no frame was waiting.
                assert!(
                    self.pending[RX].is_empty() || self.frames.is_empty(),
                    "{} frames wait with {} RX chains available",
                    self.frames.len(),
                    self.pending[RX].len()
                );
            } else {
                assert!(self.pending[TX].is_empty(), "TX chains left unprocessed");
            }
            let mut buf = [0u8; 1];
            assert!(
                self.peer.recv(&mut buf).is_err(),
                "a TX frame the model did not expect"
            );
        }
    }

    /// The exact answer for a well-behaved driver.
    /// `descs` is the chain as the device walked it: what the driver
    /// wrote, cut where its lengths pass 4 GiB.
    fn expect(&mut self, q: usize, id: u32, len: u32, descs: &[Desc], mem: &[u8]) {
        let chain = self.pending[q].pop_front().expect("a pending chain");
        assert_eq!(id, u32::from(chain.head));
        self.in_flight[q] -= chain.descs.len();
        if q == TX {
            let readable: Vec<&Desc> = descs.iter().filter(|d| !d.writable).collect();
            let total: usize = readable.iter().map(|d| d.len as usize).sum();
            if readable.iter().all(|d| d.in_memory()) && total > VNET_HDR_LEN && total <= MAX_FRAME
            {
                let mut sent = Vec::new();
                for d in &readable {
                    if d.len == 0 {
                        continue;
                    }
                    let start = d.addr as usize;
                    sent.extend_from_slice(&mem[start..start + d.len as usize]);
                }
                sent[..VNET_HDR_LEN].fill(0);
                let mut got = vec![0u8; MAX_FRAME + 1];
                let n = self
                    .peer
                    .recv(&mut got)
                    .expect("the TX frame reached the host");
                assert!(got[..n] == sent[..], "TX frame differs ({n} bytes)");
                count(2);
            }
            return;
        }
        let frame = self
            .frames
            .pop_front()
            .expect("RX chain used without a frame");
        let writable: Vec<&Desc> = descs.iter().filter(|d| d.writable).collect();
        let capacity: usize = writable.iter().map(|d| d.len as usize).sum();
        if !writable.iter().all(|d| d.in_memory()) || capacity < frame.len() {
            assert_eq!(len, 0, "a frame in a chain that cannot hold it");
            count(1);
            return;
        }
        assert_eq!(len as usize, frame.len(), "RX used length");
        let mut got = Vec::new();
        for d in &writable {
            if d.len == 0 {
                continue;
            }
            let start = d.addr as usize;
            let take = (d.len as usize).min(frame.len() - got.len());
            got.extend_from_slice(&mem[start..start + take]);
        }
        count(0);
        let mut header = [0u8; VNET_HDR_LEN];
        header[10] = 1;
        assert_eq!(got[..VNET_HDR_LEN], header, "RX header");
        assert!(
            got[VNET_HDR_LEN..] == frame[VNET_HDR_LEN..],
            "RX payload of {} bytes differs, chain {descs:x?}",
            frame.len()
        );
    }
}

/// Guest memory changed only inside `allowed` ranges.
fn check_writes(before: &[u8], after: &[u8], allowed: &mut [(u64, u64)]) {
    allowed.sort_unstable();
    let mut at = 0usize;
    for &(start, end) in allowed.iter() {
        let (start, end) = (start as usize, end as usize);
        if start > at {
            assert_changed_nothing(before, after, at, start);
        }
        at = at.max(end);
    }
    assert_changed_nothing(before, after, at, before.len());
}

fn assert_changed_nothing(before: &[u8], after: &[u8], start: usize, end: usize) {
    if start >= end || before[start..end] == after[start..end] {
        return;
    }
    let first = (start..end)
        .find(|&i| before[i] != after[i])
        .expect("a difference");
    panic!("the device wrote guest memory at {first:#x}, outside every buffer it was given");
}

fn net_case(rng: &mut Rng, pattern: &[u8]) {
    let mut case = Case::new(rng, pattern);
    for _ in 0..1 + rng.below(24) {
        if case.broken {
            break;
        }
        match rng.below(16) {
            0..=3 => case.host_sends(rng),
            4..=6 => case.submit(rng, RX),
            7..=9 => case.submit(rng, TX),
            10..=11 => case.kick(RX),
            12..=13 => case.kick(TX),
            14 if rng.one_in(3) => case.hostile(rng),
            _ => {
                case.submit(rng, RX);
                case.kick(RX);
            }
        }
    }
    if !case.clean {
        count(3);
    }
    if !case.broken {
        case.kick(RX);
        case.kick(TX);
    }
    // A reset always brings the device back.
    case.d
        .write(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
    assert_eq!(case.d.status(), 0);
}

#[test]
fn fuzz_net_queues_stay_inside_guest_buffers() {
    let seed = env_number("HV_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15);
    let iters = env_number("HV_FUZZ_ITERS").unwrap_or(600);
    let secs = env_number("HV_FUZZ_SECS");
    let mut rng = Rng(seed ^ 0x6e65_745f_6675_7a7a);
    let pattern: Vec<u8> = (0..MEM - DATA).map(|i| (i % 251) as u8 ^ 0xa5).collect();
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        match secs {
            Some(s) if start.elapsed() >= Duration::from_secs(s) => break,
            None if done >= iters => break,
            _ => {}
        }
        let guard = CaseGuard { seed, case: done };
        net_case(&mut rng, &pattern);
        std::mem::forget(guard);
        done += 1;
    }
    let [rx, dropped, tx, hostile] = STATS.each_ref().map(|s| s.load(Ordering::Relaxed));
    eprintln!(
        "fuzz virtio-net: {done} cases in {:.1?} (seed {seed:#x}): {rx} frames received, \
         {dropped} dropped, {tx} sent; {hostile} cases with a hostile driver",
        start.elapsed()
    );
}

/// Names the failing case while a panic unwinds.
struct CaseGuard {
    seed: u64,
    case: u64,
}

impl Drop for CaseGuard {
    fn drop(&mut self) {
        eprintln!(
            "fuzz virtio-net: case {} failed (HV_FUZZ_SEED={:#x} HV_FUZZ_ITERS={} reproduces it)",
            self.case,
            self.seed,
            self.case + 1
        );
    }
}
