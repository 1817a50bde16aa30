//! The vmm's device modules, compiled straight from vmm/src (the vmm is a
//! binary crate, so it cannot be a dependency).

#[path = "../../src/devices/bus.rs"]
pub mod bus;
#[path = "../../src/devices/virtio/mod.rs"]
pub mod virtio;
