//! A hostile driver scribbling over its virtqueues: every case must end in
//! a failed request or DEVICE_NEEDS_RESET, never a crash or a hang. Each
//! case runs over both transports (`NAME::mmio`, `NAME::pci`).
// Test drivers split 64-bit addresses into 32-bit registers and build
// small test patterns and lengths: the truncation is what they mean.
#![allow(clippy::cast_possible_truncation)]

use std::time::Duration;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_IN};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use super::driver::{scratch_file, Driver, Kind, DATA};
use crate::devices::virtio::{Block, Rng};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
const HDR: u64 = DATA;
const STATUS: u64 = DATA + 0x100;
const TABLE: u64 = DATA + 0x1000;

/// Runs the case `$name` (a `fn(Kind)`) over both transports.
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn mmio() {
                super::$name(super::Kind::Mmio);
            }
            #[test]
            fn pci() {
                super::$name(super::Kind::Pci);
            }
        })*
    };
}

fn blk(kind: Kind, queue_size: u32) -> Driver {
    let mut d = Driver::of(
        kind,
        Box::new(Block::new(scratch_file(64 * 1024), false).unwrap()),
    );
    d.start(0, 1, queue_size);
    d.write_mem(HDR, &read_header());
    d
}

fn read_header() -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    h
}

fn broken(d: &mut Driver) -> bool {
    d.status() & VIRTIO_CONFIG_S_NEEDS_RESET != 0
}

/// The device still serves a well-formed request after the abuse.
fn assert_still_works(d: &mut Driver) {
    assert!(!broken(d));
    d.write_mem(STATUS, &[0xff]);
    let head = d.submit(
        0,
        &[
            (HDR, 16, false),
            (DATA + 0x2000, 512, true),
            (STATUS, 1, true),
        ],
    );
    assert_eq!(d.wait_used(0), (u32::from(head), 513));
    assert_eq!(d.read_mem(STATUS, 1), [0]);
}

fn publish(d: &mut Driver, head: u16) {
    d.push_avail(0, head);
    d.kick(0);
}

fn descriptor_loop_terminates(kind: Kind) {
    let mut d = blk(kind, 16);
    // 0 -> 1 -> 0 -> ... with the status byte inside the loop.
    d.write_desc(0, 0, HDR, 16, NEXT, 1);
    d.write_desc(0, 1, STATUS, 1, NEXT | WRITE, 0);
    publish(&mut d, 0);
    let (id, _) = d.wait_used(0);
    assert_eq!(id, 0);
    assert_eq!(d.read_mem(STATUS, 1)[0], VIRTIO_BLK_S_IOERR as u8);
    // A descriptor pointing at itself.
    d.write_desc(0, 2, HDR, 16, NEXT, 2);
    publish(&mut d, 2);
    assert_eq!(d.wait_used(0), (2, 0));
    // Move the test driver's descriptor allocator past the slots used above.
    d.add_chain(0, &[(0, 0, false); 3]);
    assert_still_works(&mut d);
}

fn chain_longer_than_queue_is_cut(kind: Kind) {
    let mut d = blk(kind, 16);
    for i in 0..16u16 {
        d.write_desc(0, i, STATUS, 1, NEXT | WRITE, (i + 1) % 16);
    }
    d.write_desc(0, 0, HDR, 16, NEXT, 1);
    publish(&mut d, 0);
    assert_eq!(d.wait_used(0).0, 0);
    assert!(!broken(&mut d));
}

fn next_index_out_of_range_truncates_chain(kind: Kind) {
    let mut d = blk(kind, 16);
    d.write_desc(0, 0, HDR, 16, NEXT, 300);
    publish(&mut d, 0);
    // Only the header survives: no status byte to write.
    assert_eq!(d.wait_used(0), (0, 0));
    d.add_chain(0, &[(0, 0, false)]);
    assert_still_works(&mut d);
}

fn zero_length_and_wrapping_descriptors_fail_the_request(kind: Kind) {
    let mut d = blk(kind, 16);
    d.write_mem(STATUS, &[0xff]);
    d.submit(0, &[(HDR, 0, false), (STATUS, 1, true)]);
    assert_eq!(d.wait_used(0).1, 1);
    assert_eq!(d.read_mem(STATUS, 1)[0], VIRTIO_BLK_S_IOERR as u8);
    d.submit(0, &[(u64::MAX, 16, false), (STATUS, 1, true)]);
    assert_eq!(d.wait_used(0).1, 1);
    d.submit(0, &[(HDR, 16, false), (u64::MAX - 100, 4096, true)]);
    assert_eq!(d.wait_used(0).1, 0);
    assert_still_works(&mut d);
}

fn indirect_tables_are_bounded(kind: Kind) {
    let mut d = blk(kind, 16);
    // Indirect table whose entries loop.
    d.write_mem(TABLE, &desc_bytes(HDR, 16, NEXT, 1));
    d.write_mem(TABLE + 16, &desc_bytes(STATUS, 1, NEXT | WRITE, 0));
    d.write_desc(0, 0, TABLE, 32, INDIRECT, 0);
    publish(&mut d, 0);
    assert_eq!(d.wait_used(0).0, 0);
    // Nested indirect descriptor: the chain ends there.
    d.write_mem(TABLE, &desc_bytes(TABLE, 32, INDIRECT, 0));
    d.write_desc(0, 1, TABLE, 16, INDIRECT, 0);
    publish(&mut d, 1);
    assert_eq!(d.wait_used(0), (1, 0));
    // Table length not a multiple of 16, and a table outside memory.
    d.write_desc(0, 2, TABLE, 20, INDIRECT, 0);
    publish(&mut d, 2);
    assert_eq!(d.wait_used(0), (2, 0));
    d.write_desc(0, 3, 0xffff_ffff_0000, 0xffff_fff0, INDIRECT, 0);
    publish(&mut d, 3);
    assert_eq!(d.wait_used(0), (3, 0));
    d.add_chain(0, &[(0, 0, false); 4]);
    assert_still_works(&mut d);
}

fn desc_bytes(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&flags.to_le_bytes());
    b[14..16].copy_from_slice(&next.to_le_bytes());
    b
}

fn head_index_out_of_range_breaks_device(kind: Kind) {
    let mut d = blk(kind, 16);
    publish(&mut d, 999);
    assert!(d.wait_needs_reset());
    assert_ne!(d.interrupt_status() & VIRTIO_MMIO_INT_CONFIG, 0);
    // Further kicks are ignored, not processed.
    d.write_mem(STATUS, &[0xff]);
    d.submit(0, &[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(d.try_wait_used(0, Duration::from_millis(50)), None);
    assert_eq!(d.read_mem(STATUS, 1), [0xff]);
    // A reset brings it back.
    d.start(0, 1, 16);
    assert_still_works(&mut d);
}

fn available_index_beyond_queue_size_breaks_device(kind: Kind) {
    let mut d = blk(kind, 16);
    d.set_avail_idx(0, 17);
    d.kick(0);
    assert!(d.wait_needs_reset());
    d.start(0, 1, 16);
    assert_still_works(&mut d);
}

fn flooded_available_ring_is_processed_in_bounded_batches(kind: Kind) {
    // The driver claims a full ring of requests on a large queue, over and
    // over; the worker must keep up without starving a reset.
    let mut d = Driver::of(kind, Box::new(Rng::new()));
    d.start(0, 1, 256);
    for _ in 0..256 {
        let head = d.add_chain(0, &[(DATA, 8, true)]);
        d.push_avail(0, head);
    }
    d.kick(0);
    for _ in 0..256 {
        d.wait_used(0);
    }
    d.set_status(0);
    assert_eq!(d.status(), 0);
}

fn reset_while_requests_are_in_flight(kind: Kind) {
    let mut d = Driver::of(kind, Box::new(Rng::new()));
    for _ in 0..20 {
        d.start(0, 1, 16);
        for _ in 0..8 {
            d.submit(0, &[(DATA, 4096, true)]);
        }
        d.set_status(0);
        assert_eq!(d.status(), 0);
    }
}

fn inline_transport_handles_the_same_abuse(kind: Kind) {
    let mut d = Driver::inline_of(
        kind,
        Box::new(Block::new(scratch_file(4096), false).unwrap()),
    );
    d.start(0, 1, 16);
    d.write_desc(0, 0, HDR, 16, NEXT, 0);
    publish(&mut d, 0);
    assert_eq!(d.wait_used(0), (0, 0));
    publish(&mut d, 500);
    assert!(broken(&mut d));
}

both_transports!(
    descriptor_loop_terminates,
    chain_longer_than_queue_is_cut,
    next_index_out_of_range_truncates_chain,
    zero_length_and_wrapping_descriptors_fail_the_request,
    indirect_tables_are_bounded,
    head_index_out_of_range_breaks_device,
    available_index_beyond_queue_size_breaks_device,
    flooded_available_ring_is_processed_in_bounded_batches,
    reset_while_requests_are_in_flight,
    inline_transport_handles_the_same_abuse,
);
