//! ACPI tables: enough for the guest to find its CPUs (MADT), the legacy
//! PC devices and fixed power button (FADT), and to power itself off via
//! `\_S5_` (DSDT). Written into the BIOS area where Linux scans for the RSDP.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    ACPI_END, ACPI_START, APIC_ADDR, IOAPIC_ADDR, PM1A_CNT_PORT, PM1A_EVT_PORT, SCI_IRQ,
};

/// Sleep type the guest writes to PM1a_CNT.SLP_TYP to enter S5 (soft off);
/// advertised in the DSDT's `\_S5_` package.
pub const S5_SLP_TYP: u16 = 5;

const OEM_ID: &[u8; 6] = b"HVVMM ";
const OEM_TABLE_ID: &[u8; 8] = b"HVVMM   ";
const HEADER_LEN: usize = 36;
/// Tables are placed on this alignment (FACS requires 64 bytes).
const TABLE_ALIGN: u64 = 64;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// A System Description Table: standard header followed by `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; HEADER_LEN];
    put(&mut t, 0, signature);
    put(&mut t, 4, &((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t[8] = revision;
    put(&mut t, 10, OEM_ID);
    put(&mut t, 16, OEM_TABLE_ID);
    put(&mut t, 24, &1u32.to_le_bytes());
    put(&mut t, 28, b"HVMM");
    put(&mut t, 32, &1u32.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut r = vec![0u8; 36];
    put(&mut r, 0, b"RSD PTR ");
    put(&mut r, 9, OEM_ID);
    r[15] = 2;
    put(&mut r, 20, &36u32.to_le_bytes());
    put(&mut r, 24, &xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    put(&mut f, 0, b"FACS");
    put(&mut f, 4, &64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

/// Fixed ACPI Description Table (revision 6) describing PC-compatible
/// hardware with a PM1a event/control block on I/O ports.
fn fadt(facs: u32, dsdt: u32) -> Vec<u8> {
    const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
    const IAPC_8042: u16 = 1 << 1;
    const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
    const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
    const FLAG_WBINVD: u32 = 1 << 0;
    const FLAG_PROC_C1: u32 = 1 << 2;
    // Set means "no fixed sleep button"; the power button stays fixed.
    const FLAG_SLP_BUTTON: u32 = 1 << 5;

    let mut b = vec![0u8; 276 - HEADER_LEN];
    let mut at = |offset: usize, bytes: &[u8]| put(&mut b, offset - HEADER_LEN, bytes);
    at(36, &facs.to_le_bytes());
    at(40, &dsdt.to_le_bytes());
    at(46, &(SCI_IRQ as u16).to_le_bytes());
    // SMI_CMD stays 0: the hardware is always in ACPI mode.
    at(56, &u32::from(PM1A_EVT_PORT).to_le_bytes());
    at(64, &u32::from(PM1A_CNT_PORT).to_le_bytes());
    at(88, &[4]); // PM1_EVT_LEN
    at(89, &[2]); // PM1_CNT_LEN
                  // C2/C3 latencies above the limits mean "not supported".
    at(96, &101u16.to_le_bytes());
    at(98, &1001u16.to_le_bytes());
    at(108, &[0x32]); // CMOS century register
    let boot_arch = IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED;
    at(109, &boot_arch.to_le_bytes());
    at(
        112,
        &(FLAG_WBINVD | FLAG_PROC_C1 | FLAG_SLP_BUTTON).to_le_bytes(),
    );
    at(131, &[0]); // FADT minor version
    sdt(b"FACP", 6, &b)
}

/// DSDT holding only `Name (_S5_, Package () { 5, 5, 0, 0 })`.
fn dsdt() -> Vec<u8> {
    let typ = S5_SLP_TYP as u8;
    let aml = [
        0x08, b'_', b'S', b'5', b'_', // NameOp "_S5_"
        0x12, 0x08, 0x04, // PackageOp, PkgLength, NumElements
        0x0a, typ, 0x0a, typ, 0x00, 0x00, // BytePrefix SLP_TYPa, SLP_TYPb, reserved
    ];
    sdt(b"DSDT", 2, &aml)
}

/// Multiple APIC Description Table: one enabled LAPIC per vCPU (APIC id =
/// vCPU index), the IOAPIC, SCI as level-triggered/active-high, LINT1 NMI.
fn madt(vcpus: u8) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    let mut b = Vec::new();
    b.extend_from_slice(&APIC_ADDR.to_le_bytes());
    b.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for id in 0..vcpus {
        b.extend_from_slice(&[0, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    b.extend_from_slice(&[1, 12, 0, 0]);
    b.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let sci_flags: u16 = 0b11 << 2 | 0b01; // level, active high
    b.extend_from_slice(&[2, 10, 0, SCI_IRQ as u8]);
    b.extend_from_slice(&SCI_IRQ.to_le_bytes());
    b.extend_from_slice(&sci_flags.to_le_bytes());
    b.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    sdt(b"APIC", 5, &b)
}

fn align(addr: u64) -> u64 {
    addr.next_multiple_of(TABLE_ALIGN)
}

/// Writes all tables; returns the RSDP address for `boot_params`.
pub fn create_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<GuestAddress, String> {
    let rsdp_addr = ACPI_START;
    let xsdt_addr = align(rsdp_addr + 36);
    // XSDT has two entries.
    let facs_addr = align(xsdt_addr + HEADER_LEN as u64 + 16);
    let dsdt_addr = facs_addr + 64;
    let dsdt = dsdt();
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(facs_addr as u32, dsdt_addr as u32);
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = madt(vcpus);
    if madt_addr + madt.len() as u64 > ACPI_END {
        return Err("ACPI tables do not fit in the BIOS area".into());
    }
    let tables = [
        (rsdp_addr, rsdp(xsdt_addr)),
        (xsdt_addr, xsdt(&[fadt_addr, madt_addr])),
        (facs_addr, facs()),
        (dsdt_addr, dsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
    ];
    for (addr, table) in tables {
        mem.write_slice(&table, GuestAddress(addr))
            .map_err(|e| format!("cannot write ACPI tables: {e}"))?;
    }
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn tables_checksum_to_zero() {
        for t in [xsdt(&[1, 2]), fadt(0x1000, 0x2000), dsdt(), madt(4)] {
            assert_eq!(sum(&t), 0, "{}", String::from_utf8_lossy(&t[..4]));
            assert_eq!(u32_at(&t, 4) as usize, t.len());
        }
        let r = rsdp(0xe0040);
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(&r), 0);
    }

    #[test]
    fn fadt_layout() {
        let f = fadt(0xe0080, 0xe00c0);
        assert_eq!(f.len(), 276);
        assert_eq!(u32_at(&f, 36), 0xe0080);
        assert_eq!(u32_at(&f, 40), 0xe00c0);
        assert_eq!(u32_at(&f, 56), 0x600);
        assert_eq!(u32_at(&f, 64), 0x604);
        assert_eq!(f[109] & 2, 2, "8042 present");
    }

    #[test]
    fn madt_lists_every_cpu() {
        let m = madt(3);
        let lapics: Vec<u8> = m[44..]
            .chunks(8)
            .take(3)
            .map(|e| {
                assert_eq!(&e[..2], &[0, 8]);
                e[3]
            })
            .collect();
        assert_eq!(lapics, vec![0, 1, 2]);
        assert_eq!(m[44 + 24], 1, "IOAPIC follows the LAPICs");
    }

    #[test]
    fn dsdt_declares_s5() {
        let d = dsdt();
        let aml = &d[HEADER_LEN..];
        assert_eq!(&aml[1..5], b"_S5_");
        assert_eq!(aml[9], S5_SLP_TYP as u8);
    }

    #[test]
    fn written_tables_are_found_from_rsdp() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let rsdp_addr = create_tables(&mem, 2).unwrap();
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, rsdp_addr).unwrap();
        assert_eq!(&r[..8], b"RSD PTR ");
        let xsdt_addr = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(xsdt_addr)).unwrap();
        assert_eq!(&sig, b"XSDT");
        let fadt_addr: u64 = mem.read_obj(GuestAddress(xsdt_addr + 36)).unwrap();
        mem.read_slice(&mut sig, GuestAddress(fadt_addr)).unwrap();
        assert_eq!(&sig, b"FACP");
    }
}
