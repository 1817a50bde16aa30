//! ACPI tables: enough for the guest to find its CPUs (MADT), the legacy
//! PC devices and fixed power button (FADT), its virtio devices (DSDT: the
//! PCI root bus `\_SB_.PCI0` or the virtio-mmio windows), and to power
//! itself off via `\_S5_` (DSDT). Written into the BIOS area where Linux
//! scans for the RSDP.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package,
    Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    ACPI_END, ACPI_START, APIC_ADDR, IOAPIC_ADDR, PCI_CONFIG_PORT, PCI_ECAM_SIZE, PCI_ECAM_START,
    PCI_MMIO_SIZE, PCI_MMIO_START, PM1A_CNT_PORT, PM1A_EVT_PORT, SCI_IRQ, VIRTIO_MMIO_SIZE,
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
    #[error("device window at {0:#x} is above 4 GiB")]
    WindowAbove4G(u64),
}

/// The devices the DSDT describes.
#[derive(Clone, Copy, Default)]
pub struct Devices<'a> {
    /// The PCI root bus, with (slot, INTx GSI) of each function; `None`
    /// when the guest has no PCI.
    pub pci: Option<&'a [(u8, u32)]>,
    /// virtio-mmio windows: (address, GSI).
    pub virtio_mmio: &'a [(u64, u32)],
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
/// PM1a event/control block on I/O ports. Without PCI, MSI is declared
/// unsupported; with PCI that bit must stay clear, or Linux turns MSI off.
fn fadt(facs: u32, dsdt: u32, pci: bool) -> Vec<u8> {
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
    let msi = if pci { 0 } else { IAPC_MSI_NOT_SUPPORTED };
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT | msi).into();
    bytes(&f.finalize())
}

fn below_4g(addr: u64) -> Result<u32, Error> {
    u32::try_from(addr).map_err(|_| Error::WindowAbove4G(addr))
}

/// `\_SB_.PCI0`: the root bus, its resources (bus 0, the configuration
/// ports, every other I/O port, the memory window) and its `_PRT` (pin A
/// of each slot to its IOAPIC GSI, level-triggered, active-low).
fn pci_root(slots: &[(u8, u32)], out: &mut Vec<u8>) -> Result<(), Error> {
    let window_start = below_4g(PCI_MMIO_START)?;
    let window_end = below_4g(PCI_MMIO_START + PCI_MMIO_SIZE - 1)?;
    let bus = AddressSpace::new_bus_number(0u16, 0u16);
    let cam = IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
    let io_low = AddressSpace::new_io(0u16, PCI_CONFIG_PORT - 1, None);
    let io_high = AddressSpace::new_io(PCI_CONFIG_PORT + 8, 0xffffu16, None);
    let memory = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        window_start,
        window_end,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &cam, &io_low, &io_high, &memory]);
    // Address: slot in the high word, any function.
    let entries: Vec<(u32, u32)> = slots
        .iter()
        .map(|&(slot, gsi)| (u32::from(slot) << 16 | 0xffff, gsi))
        .collect();
    let packages: Vec<Package> = entries
        .iter()
        .map(|(addr, gsi)| Package::new(vec![addr, &0u8, &0u8, gsi]))
        .collect();
    let prt = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0A08"));
    let cid = Name::new("_CID".into(), &EISAName::new("PNP0A03"));
    let adr = Name::new("_ADR".into(), &0u8);
    let seg = Name::new("_SEG".into(), &0u8);
    let uid = Name::new("_UID".into(), &0u8);
    let bbn = Name::new("_BBN".into(), &0u8);
    let crs = Name::new("_CRS".into(), &crs);
    let prt = Name::new("_PRT".into(), &prt);
    Device::new(
        "PCI0".into(),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs, &prt],
    )
    .to_aml_bytes(out);
    // ECAM is a motherboard resource: Linux uses what the MCFG names only
    // once it is reserved here (or in the E820 map).
    let ecam = Memory32Fixed::new(false, below_4g(PCI_ECAM_START)?, below_4g(PCI_ECAM_SIZE)?);
    let crs = ResourceTemplate::new(vec![&ecam]);
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0C02"));
    let uid = Name::new("_UID".into(), &0u8);
    let crs = Name::new("_CRS".into(), &crs);
    Device::new("MRES".into(), vec![&hid, &uid, &crs]).to_aml_bytes(out);
    Ok(())
}

/// PCI Express memory-mapped configuration: one ECAM range, bus 0 only.
fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(PCI_ECAM_START, 0, 0, 0);
    bytes(&mcfg)
}

/// One `LNRO0005` device per virtio-mmio window (`\_SB_.VR00`, ...),
/// which Linux's virtio_mmio driver binds through ACPI: no command line
/// option needed.
fn virtio_mmio_devices(windows: &[(u64, u32)], out: &mut Vec<u8>) -> Result<(), Error> {
    for (index, &(addr, gsi)) in windows.iter().enumerate() {
        let size = below_4g(VIRTIO_MMIO_SIZE)?;
        let memory = Memory32Fixed::new(true, below_4g(addr)?, size);
        let irq = Interrupt::new(true, true, false, false, gsi);
        let crs = ResourceTemplate::new(vec![&memory, &irq]);
        let hid = Name::new("_HID".into(), &"LNRO0005");
        let uid_value = u32::try_from(index).map_err(|_| Error::TooBig)?;
        let uid = Name::new("_UID".into(), &uid_value);
        let crs = Name::new("_CRS".into(), &crs);
        // Two hex digits: at most 19 windows exist (GSIs 5-23).
        let name = format!("VR{:02X}", index % 256);
        Device::new(Path::new(&name), vec![&hid, &uid, &crs]).to_aml_bytes(out);
    }
    Ok(())
}

/// DSDT: `Name (_S5_, Package () { 5, 5, 0, 0 })` and the devices in
/// `\_SB_`.
fn dsdt(devices: &Devices) -> Result<Vec<u8>, Error> {
    let typ = S5_SLP_TYP;
    let mut dsdt = Sdt::new(*b"DSDT", HEADER_LEN, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    Name::new("_S5_".into(), &Package::new(vec![&typ, &typ, &0u8, &0u8])).to_aml_bytes(&mut dsdt);
    let mut sb = Vec::new();
    if let Some(slots) = devices.pci {
        pci_root(slots, &mut sb)?;
    }
    virtio_mmio_devices(devices.virtio_mmio, &mut sb)?;
    if !sb.is_empty() {
        Scope::new("\\_SB_".into(), vec![&RawAml(sb)]).to_aml_bytes(&mut dsdt);
    }
    Ok(dsdt.as_slice().to_vec())
}

/// AML already encoded, to nest in a scope.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
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
pub fn create_tables(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    devices: &Devices,
) -> Result<GuestAddress, Error> {
    let mut tables = Vec::new();
    let mut next = ACPI_START;
    let mut place = |table: Vec<u8>| {
        let addr = next;
        next = (addr + table.len() as u64).next_multiple_of(TABLE_ALIGN);
        tables.push((addr, table));
        addr
    };
    let facs = place(bytes(&FACS::new()));
    let dsdt = place(dsdt(devices)?);
    // The FADT's 32-bit pointers; the tables live below 1 MiB.
    let below_4g = |addr: u64| u32::try_from(addr).map_err(|_| Error::Above4G(addr));
    let fadt = place(fadt(
        below_4g(facs)?,
        below_4g(dsdt)?,
        devices.pci.is_some(),
    ));
    let madt = place(madt(vcpus));
    let mcfg = devices.pci.map(|_| place(mcfg()));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    if let Some(mcfg) = mcfg {
        xsdt.add_entry(mcfg);
    }
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
        let pci = [(1u8, 17u32), (2, 18)];
        let devices = Devices {
            pci: Some(&pci),
            virtio_mmio: &[(0xd000_0000, 5)],
        };
        for t in [
            fadt(0x1000, 0x2000, false),
            dsdt(&Devices::default()).unwrap(),
            dsdt(&devices).unwrap(),
            madt(4),
            mcfg(),
        ] {
            assert_eq!(sum(&t), 0, "{}", String::from_utf8_lossy(&t[..4]));
            assert_eq!(u32_at(&t, 4) as usize, t.len());
        }
    }

    #[test]
    fn fadt_layout() {
        let f = fadt(0xe0080, 0xe00c0, false);
        assert_eq!(f.len(), 276);
        assert_eq!(u32_at(&f, 36), 0xe0080);
        assert_eq!(u32_at(&f, 40), 0xe00c0);
        assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "SCI");
        assert_eq!(u32_at(&f, 56), 0x600);
        assert_eq!(u32_at(&f, 64), 0x604);
        assert_eq!((f[88], f[89]), (4, 2), "PM1 block lengths");
        assert_eq!(f[109] & 2, 2, "8042 present");
        assert_eq!(u32_at(&f, 112) & (1 << 4), 0, "fixed power button");
        assert_eq!(f[109] & 8, 8, "no MSI without PCI");
        let f = fadt(0xe0080, 0xe00c0, true);
        assert_eq!(f[109] & 8, 0, "MSI allowed with PCI");
        assert_eq!(sum(&f), 0);
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
        let d = dsdt(&Devices::default()).unwrap();
        let aml = &d[HEADER_LEN as usize..];
        assert_eq!(&aml[..5], b"\x08_S5_");
        assert_eq!(&aml[5..], &[0x12, 8, 4, 0x0a, 5, 0x0a, 5, 0, 0]);
    }

    #[test]
    fn written_tables_are_found_from_rsdp() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let rsdp_addr = create_tables(&mem, 2, &Devices::default()).unwrap();
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

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// The EISA ID encoding (`EISAID ("PNP0A08")`) as a DWord constant.
    fn eisa(id: &str) -> [u8; 5] {
        let mut out = Vec::new();
        EISAName::new(id).to_aml_bytes(&mut out);
        out.try_into().unwrap()
    }

    #[test]
    fn dsdt_describes_the_pci_root_bus() {
        let slots = [(1u8, 17u32), (2, 18), (9, 17)];
        let d = dsdt(&Devices {
            pci: Some(&slots),
            virtio_mmio: &[],
        })
        .unwrap();
        let scope = find(&d, b"\\_SB_").expect("\\_SB_ scope");
        let pci0 = find(&d, b"PCI0").expect("PCI0 device");
        assert!(scope < pci0);
        assert_eq!(d[pci0 - 3], 0x82, "DeviceOp before PCI0");
        let hid = find(&d, b"_HID").unwrap();
        assert_eq!(&d[hid + 4..hid + 9], &eisa("PNP0A08"));
        let cid = find(&d, b"_CID").unwrap();
        assert_eq!(&d[cid + 4..cid + 9], &eisa("PNP0A03"));
        for name in [b"_SEG", b"_BBN", b"_UID", b"_ADR"] {
            let at = find(&d, name).unwrap();
            assert_eq!(d[at + 4], 0, "{} = Zero", String::from_utf8_lossy(name));
        }
        // _CRS: bus 0..0, the CAM ports, the memory window.
        let crs = find(&d, b"_CRS").unwrap();
        let res = &d[crs..];
        let bus = find(res, &[0x88, 0x0d, 0, 2]).expect("WordBusNumber");
        assert_eq!(&res[bus + 8..bus + 12], &[0, 0, 0, 0], "bus 0 to 0");
        assert!(find(res, &[0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]).is_some());
        let mem = find(res, &[0x87, 0x17, 0, 0]).expect("DWordMemory");
        assert_eq!(u32_at(res, mem + 10), 0xc000_0000);
        assert_eq!(u32_at(res, mem + 14), 0xcfff_ffff);
        // _PRT: one package per slot: (slot << 16 | 0xffff, pin A, 0, GSI).
        let prt = find(&d, b"_PRT").unwrap();
        let entry = |slot: u32, gsi: u8| {
            // PackageOp, length, 4 elements, DWordConst address, Zero,
            // Zero, ByteConst GSI.
            let mut e = vec![0x12, 0x0b, 4, 0x0c];
            e.extend_from_slice(&(slot << 16 | 0xffff).to_le_bytes());
            e.extend_from_slice(&[0, 0, 0x0a, gsi]);
            e
        };
        for (slot, gsi) in [(1, 17), (2, 18), (9, 17)] {
            assert!(
                find(&d[prt..], &entry(slot, gsi)).is_some(),
                "_PRT entry for slot {slot}"
            );
        }
        assert!(find(&d, b"LNRO").is_none());
        // The ECAM range, reserved as a motherboard resource.
        let mres = find(&d, b"MRES").expect("MRES device");
        assert_eq!(&d[mres + 9..mres + 14], &eisa("PNP0C02"));
        let mut ecam = vec![0x86, 9, 0, 0];
        ecam.extend_from_slice(&0xe000_0000u32.to_le_bytes());
        ecam.extend_from_slice(&0x10_0000u32.to_le_bytes());
        assert!(find(&d[mres..], &ecam).is_some());
    }

    #[test]
    fn mcfg_names_the_ecam_of_bus_0() {
        let m = mcfg();
        assert_eq!(&m[..4], b"MCFG");
        assert_eq!(m.len(), 44 + 16);
        assert_eq!(u64_at(&m, 44), 0xe000_0000);
        assert_eq!(&m[52..56], &[0, 0, 0, 0], "segment 0, buses 0 to 0");
    }

    #[test]
    fn mcfg_is_listed_only_with_pci() {
        for pci in [false, true] {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
            let slots = [(1u8, 17u32)];
            let devices = Devices {
                pci: pci.then_some(&slots[..]),
                virtio_mmio: &[],
            };
            let rsdp = create_tables(&mem, 1, &devices).unwrap();
            let mut r = [0u8; 36];
            mem.read_slice(&mut r, rsdp).unwrap();
            let xsdt = table(&mem, u64_at(&r, 24));
            let signatures: Vec<Vec<u8>> = (36..xsdt.len())
                .step_by(8)
                .map(|o| table(&mem, u64_at(&xsdt, o))[..4].to_vec())
                .collect();
            assert_eq!(
                signatures.iter().any(|s| s == b"MCFG"),
                pci,
                "{signatures:?}"
            );
        }
    }

    #[test]
    fn dsdt_announces_virtio_mmio_windows() {
        let d = dsdt(&Devices {
            pci: None,
            virtio_mmio: &[(0xd000_0000, 5), (0xd000_1000, 6)],
        })
        .unwrap();
        assert!(find(&d, b"PCI0").is_none());
        for (i, (addr, gsi)) in [(0xd000_0000u32, 5u8), (0xd000_1000, 6)]
            .into_iter()
            .enumerate()
        {
            let name = format!("VR{i:02X}");
            let at = find(&d, name.as_bytes()).expect("device");
            let dev = &d[at..];
            assert!(find(dev, b"LNRO0005\0").is_some());
            let mut mem = vec![0x86, 9, 0, 1];
            mem.extend_from_slice(&addr.to_le_bytes());
            mem.extend_from_slice(&0x1000u32.to_le_bytes());
            assert!(find(dev, &mem).is_some(), "Memory32Fixed of {name}");
            // Extended IRQ: consumer, edge, active high, exclusive.
            assert!(find(dev, &[0x89, 6, 0, 0b0011, 1, gsi, 0, 0, 0]).is_some());
        }
    }

    /// Disassembles the DSDT with ACPICA's iasl, the reference AML parser:
    /// it rejects malformed AML that the byte checks above could miss.
    #[test]
    fn dsdt_disassembles_with_iasl() {
        let iasl = std::process::Command::new("iasl").arg("-v").output();
        assert!(
            iasl.is_ok(),
            "iasl not found: install Debian's acpica-tools (scripts/test does)"
        );
        let slots = [(1u8, 17u32), (2, 18)];
        let table = dsdt(&Devices {
            pci: Some(&slots),
            virtio_mmio: &[(0xd000_0000, 5)],
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("vmm-dsdt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let aml = dir.join("dsdt.aml");
        std::fs::write(&aml, &table).unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .current_dir(&dir)
            .output()
            .unwrap();
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "iasl -d failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for expected in [
            "Device (PCI0)",
            "EisaId (\"PNP0A08\")",
            "EisaId (\"PNP0A03\")",
            "Name (_PRT, Package",
            "0x0001FFFF",
            "WordBusNumber",
            "0x0CF8,",
            "DWordMemory",
            "0xC0000000",
            "0xCFFFFFFF",
            "Device (VR00)",
            "\"LNRO0005\"",
            "Memory32Fixed (ReadWrite,",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
            "Name (_S5, Package",
            "EisaId (\"PNP0C02\")",
            "0xE0000000",
        ] {
            assert!(dsl.contains(expected), "{expected} missing from:\n{dsl}");
        }
    }
}
