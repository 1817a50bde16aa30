//! Initial vCPU state for the Linux 64-bit boot protocol: long mode with an
//! identity map of the first GiB, flat segments, `rsi` pointing at the zero
//! page.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{boot_gdt, kvm_segment_from_gdt};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

/// The boot GDT's limit: its four 8-byte descriptors, less one.
const BOOT_GDT_LIMIT: u16 = 4 * 8 - 1;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {0} to guest memory")]
    Memory(&'static str),
    #[error("cannot set vCPU {0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
}

/// Writes the GDT, IDT and page tables shared by all vCPUs.
pub fn setup_boot_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (i, entry) in boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(|_| Error::Memory("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| Error::Memory("IDT"))?;

    // One PML4 entry -> one PDPT entry -> 512 2 MiB pages: the kernel only
    // needs its own image, the zero page and the command line mapped.
    let present_rw = 0x03;
    mem.write_obj(PDPTE_START | present_rw, GuestAddress(PML4_START))
        .map_err(|_| Error::Memory("page tables"))?;
    mem.write_obj(PDE_START | present_rw, GuestAddress(PDPTE_START))
        .map_err(|_| Error::Memory("page tables"))?;
    for i in 0..512u64 {
        let huge_page = 0x80;
        mem.write_obj(
            (i << 21) | huge_page | present_rw,
            GuestAddress(PDE_START + i * 8),
        )
        .map_err(|_| Error::Memory("page tables"))?;
    }
    Ok(())
}

/// The boot vCPU's general purpose registers.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// Long mode with paging on and flat segments from the boot GDT.
pub fn configure_sregs(sregs: &mut kvm_sregs) {
    let gdt = boot_gdt();
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = BOOT_GDT_LIMIT;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
}

fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
    ]
}

/// Puts a vCPU into the state the kernel's 64-bit entry point expects.
/// Application processors only need FPU, MSRs and LAPIC: the kernel starts
/// them with INIT/SIPI.
pub fn setup_vcpu(vcpu: &VcpuFd, boot_entry: Option<u64>) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| Error::Kvm("FPU", e))?;

    let msrs = Msrs::from_entries(&boot_msrs()).map_err(|_| Error::Memory("MSR list"))?;
    vcpu.set_msrs(&msrs).map_err(|e| Error::Kvm("MSRs", e))?;

    set_lint(vcpu)?;

    if let Some(entry) = boot_entry {
        vcpu.set_regs(&boot_regs(entry))
            .map_err(|e| Error::Kvm("registers", e))?;
        let mut sregs = vcpu.get_sregs().map_err(|e| Error::Kvm("sregs", e))?;
        configure_sregs(&mut sregs);
        vcpu.set_sregs(&sregs).map_err(|e| Error::Kvm("sregs", e))?;
    }
    Ok(())
}

/// Wire LINT0 to the PIC (ExtINT) and LINT1 to NMI, as a BIOS would.
fn set_lint(vcpu: &VcpuFd) -> Result<(), Error> {
    let mut lapic = vcpu.get_lapic().map_err(|e| Error::Kvm("LAPIC", e))?;
    let mut set = |reg: usize, mode: u32| {
        let Some(field) = lapic.regs.get_mut(reg..reg + 4) else {
            return Err(Error::Memory("LAPIC register"));
        };
        // c_char is i8 here: the casts reinterpret the bytes, no value is
        // truncated.
        let bytes: [u8; 4] = std::array::from_fn(|i| field.get(i).map_or(0, |&b| b as u8));
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (dst, src) in field.iter_mut().zip(value.to_le_bytes()) {
            *dst = src as _;
        }
        Ok(())
    };
    set(APIC_LVT0, APIC_MODE_EXTINT)?;
    set(APIC_LVT1, APIC_MODE_NMI)?;
    vcpu.set_lapic(&lapic).map_err(|e| Error::Kvm("LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn gdt_limit_covers_the_boot_gdt() {
        let gdt = boot_gdt();
        assert_eq!(usize::from(BOOT_GDT_LIMIT), std::mem::size_of_val(&gdt) - 1);
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        setup_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pde1: u64 = mem.read_obj(GuestAddress(PDE_START + 8)).unwrap();
        assert_eq!(pde1, 0x20_0000 | 0x83);
        let last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
        let gdt1: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(gdt1, boot_gdt()[1]);
    }

    #[test]
    fn sregs_enter_long_mode() {
        let mut sregs = kvm_sregs::default();
        configure_sregs(&mut sregs);
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.gdt.limit, 31);
    }

    #[test]
    fn regs_point_at_zero_page() {
        let regs = boot_regs(0x100200);
        assert_eq!(regs.rip, 0x100200);
        assert_eq!(regs.rsi, ZERO_PAGE_START);
        assert_eq!(regs.rflags, 2);
    }

    #[test]
    fn setup_tables_fails_cleanly_without_low_memory() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x10_0000)]).unwrap();
        assert!(setup_boot_tables(&mem).is_err());
    }
}
