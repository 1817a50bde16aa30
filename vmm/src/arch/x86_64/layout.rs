//! Fixed guest-physical addresses. The low megabyte mirrors what a PC BIOS
//! leaves behind, so an unmodified Linux finds everything where it looks.

use vm_memory::GuestAddress;

use super::usize_from;

/// GDT used while entering 64-bit mode.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT: the kernel installs its own before enabling interrupts.
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack; only used until the kernel sets up its own.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we hand to the kernel (its own limit on x86_64).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area: RAM below this is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the BIOS read-only area, where Linux scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// Kernels are loaded at and above 1 MiB.
pub const HIMEM_START: u64 = 0x100000;

/// Guest RAM below 4 GiB stops here; the rest of the 32-bit space is for
/// device MMIO, the IOAPIC and the local APICs.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

/// The PCI root bus's memory window, where the virtio-pci BARs live: the
/// bottom of the 32-bit gap, below the virtio-mmio windows.
pub const PCI_MMIO_START: u64 = MMIO_GAP_START;
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;
/// Each PCI slot's BAR 0 gets this much of the window (a virtio-pci BAR).
pub const PCI_BAR_SIZE: u64 = 0x8000;
/// Configuration access mechanism #1: address at 0xCF8, data at 0xCFC.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// ECAM (enhanced configuration access, announced in the MCFG): bus 0's
/// configuration spaces as memory, 4 KiB per function. Between the
/// virtio-mmio windows and the IOAPIC.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
/// INTx: pin A of slot `s` is IOAPIC GSI 16 + s % 8, the pins the PC
/// leaves to PCI (level-triggered, shareable, not ISA IRQs).
pub const PCI_INTX_GSI_BASE: u32 = 16;
pub const PCI_INTX_GSIS: u32 = 8;

/// virtio-mmio devices: one 4 KiB window each, starting here.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First GSI for virtio devices (lower ones belong to legacy ISA devices).
pub const VIRTIO_GSI_BASE: u32 = 5;
/// The in-kernel IOAPIC has 24 pins.
pub const MAX_GSI: u32 = 23;

pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// KVM needs three pages for the TSS on Intel; keep them out of RAM.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Legacy I/O ports.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;
pub const I8042_PORT: u16 = 0x60;
pub const I8042_IRQ: u32 = 1;
pub const CMOS_PORT: u16 = 0x70;
/// ACPI fixed hardware: PM1a event block (status + enable) and control block.
pub const PM1A_EVT_PORT: u16 = 0x600;
pub const PM1A_CNT_PORT: u16 = 0x604;
pub const SCI_IRQ: u32 = 9;

/// RAM regions for `mem_size` bytes of guest memory, leaving the MMIO gap
/// below 4 GiB free.
pub fn ram_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), usize_from(mem_size))]
    } else {
        vec![
            (GuestAddress(0), usize_from(MMIO_GAP_START)),
            (
                GuestAddress(MMIO_GAP_END),
                usize_from(mem_size - MMIO_GAP_START),
            ),
        ]
    }
}

/// Guest-physical base address of virtio-mmio device `index`.
pub fn virtio_mmio_addr(index: usize) -> u64 {
    VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE
}

/// Guest-physical address of the BAR of the virtio-pci device in `slot`
/// (slot 0 is the host bridge, which has none).
pub fn pci_bar_addr(slot: usize) -> u64 {
    PCI_MMIO_START + slot as u64 * PCI_BAR_SIZE
}

/// The IOAPIC GSI pin A of `slot` is wired to.
pub fn pci_intx_gsi(slot: usize) -> u32 {
    // The remainder is below 8, so it converts.
    PCI_INTX_GSI_BASE + u32::try_from(slot % PCI_INTX_GSIS as usize).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_guest_skips_mmio_gap() {
        let regions = ram_regions(4 << 30);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0], (GuestAddress(0), usize_from(MMIO_GAP_START)));
        assert_eq!(regions[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(regions[1].1 as u64, (4 << 30) - MMIO_GAP_START);
    }

    #[test]
    fn virtio_windows_stay_in_gap_below_ioapic() {
        assert_eq!(virtio_mmio_addr(0), 0xd000_0000);
        assert_eq!(virtio_mmio_addr(3), 0xd000_3000);
        let last = (MAX_GSI - VIRTIO_GSI_BASE) as usize;
        assert!(virtio_mmio_addr(last) + VIRTIO_MMIO_SIZE <= u64::from(IOAPIC_ADDR));
    }

    #[test]
    fn pci_window_stays_in_gap_clear_of_everything_else() {
        const { assert!(PCI_MMIO_START >= MMIO_GAP_START) };
        const { assert!(PCI_MMIO_START + PCI_MMIO_SIZE <= VIRTIO_MMIO_START) };
        // Every slot's BAR fits the window, aligned to its size.
        let last = pci_bar_addr(31);
        assert!(last + PCI_BAR_SIZE <= PCI_MMIO_START + PCI_MMIO_SIZE);
        assert_eq!(last % PCI_BAR_SIZE, 0);
        const {
            let windows = (MAX_GSI - VIRTIO_GSI_BASE + 1) as u64;
            assert!(PCI_ECAM_START >= VIRTIO_MMIO_START + windows * VIRTIO_MMIO_SIZE)
        };
        const { assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_ADDR as u64) };
        assert_eq!(pci_intx_gsi(1), 17);
        assert_eq!(pci_intx_gsi(8), 16);
        assert!(pci_intx_gsi(31) <= MAX_GSI);
    }
}
