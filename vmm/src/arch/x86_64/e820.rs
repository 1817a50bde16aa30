//! The BIOS-style memory map handed to the kernel in `boot_params`.

use linux_loader::loader::bootparam::boot_e820_entry;
use vm_memory::GuestAddress;

use super::layout::{EBDA_START, HIMEM_START};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// Memory map for the given RAM regions: conventional memory up to the
/// EBDA, the BIOS area (EBDA, VGA hole, ACPI tables) reserved, then all RAM
/// from 1 MiB on, and the `reserved` (address, size) ranges outside RAM
/// (ECAM, which Linux uses early only when the map reserves it), in
/// address order.
pub fn build(ram: &[(GuestAddress, usize)], reserved: &[(u64, u64)]) -> Vec<boot_e820_entry> {
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
    map.extend(
        reserved
            .iter()
            .map(|&(addr, size)| entry(addr, size, E820_RESERVED)),
    );
    map.sort_by_key(|e| e.addr);
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
        let map = build(&ram_regions(128 << 20), &[]);
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
        let map = build(&ram_regions(6 << 30), &[]);
        let t = tuples(&map);
        assert_eq!(t.len(), 4);
        assert_eq!(t[2], (0x100000, MMIO_GAP_START - 0x100000, E820_RAM));
        assert_eq!(t[3], (MMIO_GAP_END, (6 << 30) - MMIO_GAP_START, E820_RAM));
    }

    #[test]
    fn reserved_ranges_go_in_address_order() {
        let map = build(&ram_regions(6 << 30), &[(0xe000_0000, 0x10_0000)]);
        let t = tuples(&map);
        assert_eq!(t.len(), 5);
        assert_eq!(t[3], (0xe000_0000, 0x10_0000, E820_RESERVED));
        assert_eq!(t[4].0, MMIO_GAP_END);
    }
}
