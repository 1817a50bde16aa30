//! KVM state: the VM (memory, irqchip, PIT) and its vCPUs.

// lint-clean in the legacy-device rework
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
pub mod vcpu;
pub mod vm;
