//! The Linux boot protocol's zero page (`boot_params`) and command line.

use linux_loader::cmdline::{self, Cmdline};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header, E820_MAX_ENTRIES_ZEROPAGE};
use linux_loader::loader::load_cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::e820;
use super::kernel::LoadedKernel;
use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, ZERO_PAGE_START};

/// Why the zero page or the command line cannot be written. A command
/// line that does not fit is the definition's problem; the rest is the
/// vmm's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    CmdlineBuffer(cmdline::Error),
    #[error("kernel command line: {0}")]
    Cmdline(cmdline::Error),
    #[error("kernel command line of {0} bytes")]
    CmdlineSize(usize),
    #[error("{what} {value:#x} does not fit the boot protocol")]
    Above4G { what: &'static str, value: u64 },
    #[error("too many E820 entries")]
    E820,
    #[error("cannot write kernel command line: {0}")]
    WriteCmdline(linux_loader::loader::Error),
    #[error("cannot write boot parameters: {0}")]
    WriteBootParams(linux_loader::configurator::Error),
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

/// Guest command line: the definition's own. The virtio devices are
/// found through ACPI (the PCI root bus, or `LNRO0005` devices for
/// virtio-mmio), so nothing is appended: a kernel built with
/// VIRTIO_MMIO_CMDLINE_DEVICES that also got `virtio_mmio.device=` would
/// probe each window twice, and the second probe fails with EBUSY.
pub fn build_cmdline(base: &str) -> Result<Cmdline, Error> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(Error::CmdlineBuffer)?;
    let base = base.trim();
    if !base.is_empty() {
        cmdline.insert_str(base).map_err(Error::Cmdline)?;
    }
    Ok(cmdline)
}

/// Everything the zero page describes.
pub struct BootInfo<'a> {
    pub kernel: &'a LoadedKernel,
    pub cmdline: &'a Cmdline,
    pub initrd: Option<(GuestAddress, u64)>,
    pub ram: &'a [(GuestAddress, usize)],
    /// (address, size) ranges outside RAM the E820 map marks reserved.
    pub reserved: &'a [(u64, u64)],
    pub rsdp: GuestAddress,
}

/// Fills `boot_params` from the kernel's own setup header (bzImage) or a
/// synthesized one (ELF).
pub fn build_boot_params(info: &BootInfo) -> Result<boot_params, Error> {
    let hdr = info.kernel.setup_header.unwrap_or_else(|| setup_header {
        boot_flag: KERNEL_BOOT_FLAG_MAGIC,
        header: KERNEL_HDR_MAGIC,
        kernel_alignment: KERNEL_MIN_ALIGNMENT_BYTES,
        ..Default::default()
    });
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    // The boot protocol's pointers and sizes are 32-bit: everything they
    // describe is placed below 4 GiB.
    let u32_field =
        |what, value: u64| u32::try_from(value).map_err(|_| Error::Above4G { what, value });
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = u32_field("command line address", CMDLINE_START)?;
    let cmdline_len = info
        .cmdline
        .as_cstring()
        .map_err(Error::Cmdline)?
        .as_bytes_with_nul()
        .len();
    params.hdr.cmdline_size =
        u32::try_from(cmdline_len).map_err(|_| Error::CmdlineSize(cmdline_len))?;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = u32_field("initrd address", addr.0)?;
        params.hdr.ramdisk_size = u32_field("initrd size", size)?;
    }
    params.acpi_rsdp_addr = info.rsdp.0;

    let map = e820::build(info.ram, info.reserved);
    let entries = u8::try_from(map.len())
        .ok()
        .filter(|&n| usize::from(n) <= E820_MAX_ENTRIES_ZEROPAGE)
        .ok_or(Error::E820)?;
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = *entry;
    }
    params.e820_entries = entries;
    Ok(params)
}

/// Writes the command line and zero page into guest memory.
pub fn write_boot_params(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), Error> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), info.cmdline).map_err(Error::WriteCmdline)?;
    let params = build_boot_params(info)?;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(Error::WriteBootParams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::ram_regions;
    use vm_memory::Bytes;

    #[test]
    fn cmdline_is_the_definitions_trimmed() {
        let c = build_cmdline(" console=ttyS0 quiet ").unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 quiet"
        );
    }

    #[test]
    fn empty_cmdline_is_fine() {
        let c = build_cmdline("").unwrap();
        assert_eq!(c.as_cstring().unwrap().to_str().unwrap(), "");
    }

    #[test]
    fn overlong_cmdline_is_an_error() {
        let long = "x".repeat(CMDLINE_MAX_SIZE + 1);
        assert!(build_cmdline(&long).is_err());
    }

    #[test]
    fn boot_params_for_elf_kernel() {
        let ram = ram_regions(64 << 20);
        let kernel = LoadedKernel {
            entry: 0x100_0000,
            end: 0x200_0000,
            setup_header: None,
        };
        let cmdline = build_cmdline("console=ttyS0").unwrap();
        let info = BootInfo {
            kernel: &kernel,
            cmdline: &cmdline,
            initrd: Some((GuestAddress(0x300_0000), 0x1234)),
            ram: &ram,
            reserved: &[],
            rsdp: GuestAddress(0xe0000),
        };
        let p = build_boot_params(&info).unwrap();
        let (magic, flag) = (p.hdr.header, p.hdr.boot_flag);
        assert_eq!((magic, flag), (KERNEL_HDR_MAGIC, KERNEL_BOOT_FLAG_MAGIC));
        let (image, size) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size);
        assert_eq!((image, size), (0x300_0000, 0x1234));
        let cmd = p.hdr.cmd_line_ptr;
        assert_eq!(u64::from(cmd), CMDLINE_START);
        assert_eq!(p.e820_entries, 3);
        let rsdp = p.acpi_rsdp_addr;
        assert_eq!(rsdp, 0xe0000);

        let mem = GuestMemoryMmap::<()>::from_ranges(&ram).unwrap();
        write_boot_params(&mem, &info).unwrap();
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        let written: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(written.e820_entries, 3);
    }
}
