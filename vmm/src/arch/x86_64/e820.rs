//! The BIOS-style memory map handed to the kernel in `boot_params`.

use linux_loader::loader::bootparam::boot_e820_entry;
use vm_memory::GuestAddress;

use super::layout::{EBDA_START, HIMEM_START};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// Memory map for the given RAM regions: conventional memory up to the
/// EBDA, the BIOS area (EBDA, VGA hole, ACPI tables) reserved, then all RAM
/// from 1 MiB on.
pub fn build(ram: &[(GuestAddress, usize)]) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, size: u64, r#type| boot_e820_entry { addr, size, r#type };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for &(start, len) in ram {
        let (start, end) = (start.0.max(HIMEM_START), start.0 + len as u64);
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{ram_regions, MMIO_GAP_END, MMIO_GAP_START};

    fn tuples(map: &[boot_e820_entry]) -> Vec<(u64, u64, u32)> {
        map.iter().map(|e| (e.addr, e.size, e.r#type)).collect()
    }

    #[test]
    fn small_guest() {
        let map = build(&ram_regions(128 << 20));
        assert_eq!(
            tuples(&map),
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED),
                (0x100000, (128 << 20) - 0x100000, E820_RAM),
            ]
        );
    }

    #[test]
    fn large_guest_has_hole_below_4g() {
        let map = build(&ram_regions(6 << 30));
        let t = tuples(&map);
        assert_eq!(t.len(), 4);
        assert_eq!(t[2], (0x100000, MMIO_GAP_START - 0x100000, E820_RAM));
        assert_eq!(t[3], (MMIO_GAP_END, (6 << 30) - MMIO_GAP_START, E820_RAM));
    }
}
