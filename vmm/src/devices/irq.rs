//! Ways for a device to interrupt the guest through the in-kernel irqchip.

use std::sync::Arc;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// An edge-triggered interrupt: an eventfd registered as a KVM irqfd.
pub struct EdgeIrq(pub EventFd);

impl EdgeIrq {
    pub fn raise(&self) {
        if let Err(e) = self.0.write(1) {
            log::warn!("cannot raise interrupt: {e}");
        }
    }
}

/// A level-triggered interrupt line the device holds up until the guest
/// acknowledges the condition (ACPI SCI).
pub trait LevelIrq: Send {
    fn set_level(&self, high: bool);
}

pub struct KvmIrqLine {
    pub vm: Arc<VmFd>,
    pub gsi: u32,
}

impl LevelIrq for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("cannot set IRQ {} line: {e}", self.gsi);
        }
    }
}
