//! Emulated devices and the buses the vCPUs dispatch guest I/O through.

pub mod acpi_pm;
// lint-clean in the legacy-device rework
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
pub mod bus;
pub mod irq;
// lint-clean in the legacy-device rework
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
pub mod legacy;
pub mod pci;
pub mod virtio;
