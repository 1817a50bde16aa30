//! The KVM VM: guest memory slots, in-kernel irqchip and PIT.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

/// A KVM ioctl that failed while the VM was set up; always the host's
/// problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create KVM VM: {0}")]
    Create(kvm_ioctls::Error),
    #[error("guest memory has more regions than KVM has slots")]
    TooManySlots,
    #[error("cannot register guest memory with KVM: {0}")]
    Memory(kvm_ioctls::Error),
    #[error("cannot set TSS address: {0}")]
    Tss(kvm_ioctls::Error),
    #[error("cannot create in-kernel irqchip: {0}")]
    IrqChip(kvm_ioctls::Error),
    #[error("cannot create in-kernel PIT: {0}")]
    Pit(kvm_ioctls::Error),
}

/// Creates the VM and hands it all of guest memory.
pub fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, Error> {
    let vm = kvm.create_vm().map_err(Error::Create)?;
    for (slot, region) in mem.iter().enumerate() {
        let desc = kvm_userspace_memory_region {
            slot: u32::try_from(slot).map_err(|_| Error::TooManySlots)?,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which
        // outlives the VM (both are kept until the process exits).
        unsafe { vm.set_user_memory_region(desc) }.map_err(Error::Memory)?;
    }
    vm.set_tss_address(KVM_TSS_ADDRESS).map_err(Error::Tss)?;
    vm.create_irq_chip().map_err(Error::IrqChip)?;
    // The dummy speaker port keeps 0x61 accesses (PIT channel 2 gate,
    // used for TSC calibration) in the kernel.
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(Error::Pit)?;
    Ok(vm)
}
