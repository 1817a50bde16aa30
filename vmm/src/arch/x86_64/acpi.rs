//! ACPI tables: enough for the guest to find its CPUs (MADT), the legacy
//! PC devices and fixed power button (FADT), and to power itself off via
//! `\_S5_` (DSDT). Written into the BIOS area where Linux scans for the RSDP.

use acpi_tables::aml::{Name, Package};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    ACPI_END, ACPI_START, APIC_ADDR, IOAPIC_ADDR, PM1A_CNT_PORT, PM1A_EVT_PORT, SCI_IRQ,
};

/// Why the tables could not be written: the vmm's problem, never the
/// guest's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ACPI table at {0:#x} is above 4 GiB")]
    Above4G(u64),
    #[error("ACPI tables do not fit in the BIOS area")]
    TooBig,
    #[error("cannot write ACPI tables: {0}")]
    Write(vm_memory::GuestMemoryError),
}

/// Sleep type the guest writes to PM1a_CNT.SLP_TYP to enter S5 (soft off);
/// advertised in the DSDT's `\_S5_` package.
pub const S5_SLP_TYP: u8 = 5;
/// The SCI as the one-byte IRQ number the tables carry.
const SCI_IRQ_BYTE: u8 = 9;
const _: () = assert!(SCI_IRQ_BYTE as u32 == SCI_IRQ);

const OEM_ID: [u8; 6] = *b"HVVMM ";
const OEM_TABLE_ID: [u8; 8] = *b"HVVMM   ";
const OEM_REVISION: u32 = 1;
const HEADER_LEN: u32 = 36;
/// Tables are placed on this alignment (FACS requires 64 bytes).
const TABLE_ALIGN: u64 = 64;

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    table.to_aml_bytes(&mut out);
    out
}

/// Fixed ACPI Description Table describing PC-compatible hardware with a
/// PM1a event/control block on I/O ports.
fn fadt(facs: u32, dsdt: u32) -> Vec<u8> {
    const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
    const IAPC_8042: u16 = 1 << 1;
    const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
    const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;

    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs)
        .dsdt_32(dsdt)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // Set means "no fixed sleep button"; the power button stays fixed.
        .flag(Flags::SlpButton);
    f.sci_int = u16::from(SCI_IRQ_BYTE).into();
    // SMI_CMD stays 0: the hardware is always in ACPI mode.
    f.pm1a_evt_blk = u32::from(PM1A_EVT_PORT).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_PORT).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    // C2/C3 latencies above the limits mean "not supported".
    f.p_lvl2_lat = 101u16.into();
    f.p_lvl3_lat = 1001u16.into();
    f.century = 0x32;
    f.iapc_boot_arch =
        (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED).into();
    bytes(&f.finalize())
}

/// DSDT holding only `Name (_S5_, Package () { 5, 5, 0, 0 })`.
fn dsdt() -> Vec<u8> {
    let typ = S5_SLP_TYP;
    let mut dsdt = Sdt::new(*b"DSDT", HEADER_LEN, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    Name::new("_S5_".into(), &Package::new(vec![&typ, &typ, &0u8, &0u8])).to_aml_bytes(&mut dsdt);
    dsdt.as_slice().to_vec()
}

/// Multiple APIC Description Table: one enabled LAPIC per vCPU (APIC id =
/// vCPU index), the IOAPIC, SCI as level-triggered/active-high, LINT1 NMI.
/// Built on `Sdt` because the crate's `MADT` can set neither PCAT_COMPAT
/// nor the two x86 entries it lacks (interrupt override, LAPIC NMI).
fn madt(vcpus: u8) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    const LEVEL_ACTIVE_HIGH: u16 = 0b11 << 2 | 0b01;

    let mut madt = Sdt::new(
        *b"APIC",
        HEADER_LEN + 8,
        5,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(36, APIC_ADDR);
    madt.write_u32(40, PCAT_COMPAT);
    for id in 0..vcpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut madt);
    }
    IoApic::new(0, IOAPIC_ADDR, 0).to_aml_bytes(&mut madt);
    madt.append_slice(&[2, 10, 0, SCI_IRQ_BYTE]);
    madt.append_slice(&SCI_IRQ.to_le_bytes());
    madt.append_slice(&LEVEL_ACTIVE_HIGH.to_le_bytes());
    madt.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    madt.as_slice().to_vec()
}

/// Writes all tables; returns the RSDP address for `boot_params`.
pub fn create_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<GuestAddress, Error> {
    let mut tables = Vec::new();
    let mut next = ACPI_START;
    let mut place = |table: Vec<u8>| {
        let addr = next;
        next = (addr + table.len() as u64).next_multiple_of(TABLE_ALIGN);
        tables.push((addr, table));
        addr
    };
    let facs = place(bytes(&FACS::new()));
    let dsdt = place(dsdt());
    // The FADT's 32-bit pointers; the tables live below 1 MiB.
    let below_4g = |addr: u64| u32::try_from(addr).map_err(|_| Error::Above4G(addr));
    let fadt = place(fadt(below_4g(facs)?, below_4g(dsdt)?));
    let madt = place(madt(vcpus));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = place(bytes(&xsdt));
    let rsdp = place(bytes(&Rsdp::new(OEM_ID, xsdt)));
    if next > ACPI_END {
        return Err(Error::TooBig);
    }
    for (addr, table) in tables {
        mem.write_slice(&table, GuestAddress(addr))
            .map_err(Error::Write)?;
    }
    Ok(GuestAddress(rsdp))
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

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// Reads the table at `addr` whose length field is at offset 4.
    fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut t = vec![0u8; len as usize];
        mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
        t
    }

    #[test]
    fn tables_checksum_to_zero() {
        for t in [fadt(0x1000, 0x2000), dsdt(), madt(4)] {
            assert_eq!(sum(&t), 0, "{}", String::from_utf8_lossy(&t[..4]));
            assert_eq!(u32_at(&t, 4) as usize, t.len());
        }
    }

    #[test]
    fn fadt_layout() {
        let f = fadt(0xe0080, 0xe00c0);
        assert_eq!(f.len(), 276);
        assert_eq!(u32_at(&f, 36), 0xe0080);
        assert_eq!(u32_at(&f, 40), 0xe00c0);
        assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "SCI");
        assert_eq!(u32_at(&f, 56), 0x600);
        assert_eq!(u32_at(&f, 64), 0x604);
        assert_eq!((f[88], f[89]), (4, 2), "PM1 block lengths");
        assert_eq!(f[109] & 2, 2, "8042 present");
        assert_eq!(u32_at(&f, 112) & (1 << 4), 0, "fixed power button");
    }

    #[test]
    fn madt_lists_every_cpu() {
        let m = madt(3);
        assert_eq!(u32_at(&m, 36), APIC_ADDR);
        let lapics: Vec<u8> = m[44..]
            .chunks(8)
            .take(3)
            .map(|e| {
                assert_eq!(&e[..2], &[0, 8]);
                e[3]
            })
            .collect();
        assert_eq!(lapics, vec![0, 1, 2]);
        let rest = &m[44 + 24..];
        assert_eq!(&rest[..2], &[1, 12], "IOAPIC follows the LAPICs");
        assert_eq!(&rest[12..16], &[2, 10, 0, 9], "SCI override");
        assert_eq!(&rest[22..], &[4, 6, 0xff, 0, 0, 1], "LINT1 NMI");
    }

    #[test]
    fn dsdt_declares_s5() {
        let d = dsdt();
        let aml = &d[HEADER_LEN as usize..];
        assert_eq!(&aml[..5], b"\x08_S5_");
        assert_eq!(&aml[5..], &[0x12, 8, 4, 0x0a, 5, 0x0a, 5, 0, 0]);
    }

    #[test]
    fn written_tables_are_found_from_rsdp() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let rsdp_addr = create_tables(&mem, 2).unwrap();
        assert_eq!(rsdp_addr.0 % 16, 0, "Linux scans on 16-byte boundaries");
        let mut r = [0u8; 36];
        mem.read_slice(&mut r, rsdp_addr).unwrap();
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!((sum(&r[..20]), sum(&r)), (0, 0));
        let xsdt = table(&mem, u64_at(&r, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let entries: Vec<Vec<u8>> = (36..xsdt.len())
            .step_by(8)
            .map(|o| table(&mem, u64_at(&xsdt, o)))
            .collect();
        let fadt = &entries[0];
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(&entries[1][..4], b"APIC");
        let lapics = (entries[1].len() - 44 - 12 - 10 - 6) / 8;
        assert_eq!(lapics, 2, "one LAPIC per vCPU");
        let dsdt = table(&mem, u64::from(u32_at(fadt, 40)));
        assert_eq!(&dsdt[..4], b"DSDT");
        let facs = table(&mem, u64::from(u32_at(fadt, 36)));
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(u32_at(fadt, 36) % 64, 0, "FACS alignment");
        for t in [&xsdt, fadt, &entries[1], &dsdt] {
            assert_eq!(sum(t), 0, "{}", String::from_utf8_lossy(&t[..4]));
        }
    }
}
