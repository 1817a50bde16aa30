//! Arbitrary bytes as a guest driving virtio-blk / virtio-rng through the
//! virtio-mmio registers and its own virtqueue memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm::fuzz_driver::run(data));
