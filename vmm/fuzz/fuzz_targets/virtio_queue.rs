//! Arbitrary bytes as a guest driving virtio-blk / virtio-rng through the
//! virtio-mmio registers and its own virtqueue memory.
#![no_main]
// Only part of the device code is reachable from this target.
#![allow(dead_code, unused_imports)]

#[path = "../src/devices.rs"]
mod devices;
#[path = "../../src/devices/virtio/fuzz_driver.rs"]
mod fuzz_driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_driver::run(data));
