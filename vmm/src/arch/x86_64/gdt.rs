//! The flat GDT used to enter the kernel's 64-bit entry point.

use kvm_bindings::kvm_segment;

/// Descriptor for a flat segment with the given access/flags word
/// (`flags` holds the access byte in bits 0-7 and G/DB/L/AVL in bits 12-15).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << (56 - 24))
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << (48 - 16))
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// Null, 64-bit code, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// KVM segment register state matching descriptor `index` of `table`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    // Limit bits 0-15 are the entry's bytes 0-1, bits 16-19 the low
    // nibble of its byte 6.
    let [l0, l1, _, _, _, _, l6, _] = entry.to_le_bytes();
    let limit = u32::from_le_bytes([l0, l1, l6 & 0x0f, 0]);
    let granular = (entry >> 55) & 1 == 1;
    kvm_segment {
        base,
        // The limit is in pages when G is set; KVM wants bytes.
        limit: if granular {
            (limit << 12) | 0xfff
        } else {
            limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64bit_ring0() {
        let seg = kvm_segment_from_gdt(boot_gdt()[1], 1);
        assert_eq!(seg.selector, 8);
        assert_eq!(seg.l, 1);
        assert_eq!(seg.db, 0);
        assert_eq!(seg.dpl, 0);
        assert_eq!(seg.present, 1);
        assert_eq!(seg.type_, 0xb);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.unusable, 0);
    }

    #[test]
    fn data_segment_is_flat_writable() {
        let seg = kvm_segment_from_gdt(boot_gdt()[2], 2);
        assert_eq!(seg.selector, 16);
        assert_eq!(seg.type_, 0x3);
        assert_eq!(seg.db, 1);
        assert_eq!(seg.base, 0);
    }

    #[test]
    fn null_descriptor_is_unusable() {
        assert_eq!(kvm_segment_from_gdt(boot_gdt()[0], 0).unusable, 1);
    }
}
