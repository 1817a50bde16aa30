//! Emulated devices and the buses the vCPUs dispatch guest I/O through.

pub mod acpi_pm;
pub mod bus;
pub mod irq;
pub mod legacy;
pub mod virtio;
