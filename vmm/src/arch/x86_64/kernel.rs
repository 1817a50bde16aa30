//! Loading the guest kernel (bzImage or ELF vmlinux) and initrd into guest
//! memory. Images are validated before loading so a corrupt or truncated
//! file is reported as such rather than as an obscure loader failure or a
//! guest that never prints anything.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{setup_header, LOADED_HIGH, XLF_KERNEL_64};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::layout::{HIMEM_START, MMIO_GAP_START};

const SETUP_HEADER_OFFSET: u64 = 0x1f1;
const HDRS_MAGIC: u32 = 0x5372_6448; // "HdrS"
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
/// The 64-bit entry point sits this far into the protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Boot protocol 2.12 introduced `xloadflags` (and with it XLF_KERNEL_64).
const MIN_BOOT_PROTOCOL: u16 = 0x020c;

/// Why a kernel or initrd cannot be booted: always the image's fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(io::Error),
    /// The file is not a kernel we can boot; the text says why.
    #[error("not a bzImage or ELF vmlinux: {0}")]
    Format(String),
    /// The kernel does not fit in guest memory.
    #[error("{0}")]
    TooBig(String),
}

fn format_err(why: impl Into<String>) -> Error {
    Error::Format(why.into())
}

/// Where the kernel ended up and how to enter it.
#[derive(Debug)]
pub struct LoadedKernel {
    /// Guest-physical 64-bit entry point.
    pub entry: u64,
    /// First byte after the loaded image (the initrd must not go below).
    pub end: u64,
    /// The bzImage setup header, to be copied into `boot_params`.
    pub setup_header: Option<setup_header>,
}

enum Kind {
    Elf,
    BzImage(setup_header),
}

/// Identifies and sanity-checks the image without touching guest memory.
fn identify(file: &mut File) -> Result<Kind, Error> {
    let len = file.seek(SeekFrom::End(0)).map_err(Error::Io)?;
    if len == 0 {
        return Err(format_err("file is empty"));
    }
    let mut magic = [0u8; 4];
    file.rewind().map_err(Error::Io)?;
    let n = read_up_to(file, &mut magic)?;
    if n == 4 && &magic == ELF_MAGIC {
        return check_elf(file).map(|()| Kind::Elf);
    }

    let mut hdr = setup_header::default();
    let hdr_end = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>() as u64;
    if len < hdr_end {
        return Err(format_err(format!(
            "file is only {len} bytes, too short for a setup header"
        )));
    }
    file.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))
        .map_err(Error::Io)?;
    file.read_exact(hdr.as_mut_slice()).map_err(Error::Io)?;
    check_bzimage(&hdr, len).map(|()| Kind::BzImage(hdr))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> Result<usize, Error> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(n)
}

fn check_elf(file: &mut File) -> Result<(), Error> {
    let mut ident = [0u8; 20];
    file.rewind().map_err(Error::Io)?;
    if read_up_to(file, &mut ident)? < ident.len() {
        return Err(format_err("truncated ELF header"));
    }
    if ident[4] != ELFCLASS64 {
        return Err(format_err("ELF file is not 64-bit"));
    }
    let machine = u16::from_le_bytes([ident[18], ident[19]]);
    if machine != EM_X86_64 {
        return Err(format_err(format!(
            "ELF file is for machine type {machine}, not x86_64"
        )));
    }
    Ok(())
}

fn check_bzimage(hdr: &setup_header, file_len: u64) -> Result<(), Error> {
    let magic = hdr.header;
    if magic != HDRS_MAGIC {
        return Err(format_err("no ELF magic and no 'HdrS' setup header"));
    }
    let version = hdr.version;
    if version < MIN_BOOT_PROTOCOL {
        return Err(format_err(format!(
            "boot protocol {}.{} is too old (need 2.12 or later)",
            version >> 8,
            version & 0xff
        )));
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(format_err("zImage (loaded low) is not supported"));
    }
    let xloadflags = hdr.xloadflags;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(format_err("kernel has no 64-bit entry point"));
    }
    let setup_sects = match hdr.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    let expected = (setup_sects + 1) * 512 + u64::from(hdr.syssize) * 16;
    if file_len < expected {
        return Err(format_err(format!(
            "file is truncated ({file_len} bytes, its header says {expected})"
        )));
    }
    Ok(())
}

fn loader_err(e: linux_loader::loader::Error) -> Error {
    use linux_loader::loader::{bzimage, elf, Error as L};
    match e {
        L::Elf(elf::Error::ReadKernelImage)
        | L::Bzimage(bzimage::Error::ReadBzImageCompressedKernel) => {
            Error::TooBig("kernel image is truncated or does not fit in guest memory".into())
        }
        L::Elf(e) => format_err(
            format!("{e}")
                .trim_start_matches("Kernel Loader: ")
                .to_string(),
        ),
        other => format_err(format!("{other}")),
    }
}

/// Loads the kernel; bzImages go to their preferred address (1 MiB), ELF
/// images to their physical load addresses.
pub fn load_kernel(mem: &GuestMemoryMmap, file: &mut File) -> Result<LoadedKernel, Error> {
    let mem_end = mem.last_addr().raw_value() + 1;
    match identify(file)? {
        Kind::Elf => {
            let r =
                Elf::load(mem, None, file, Some(GuestAddress(HIMEM_START))).map_err(loader_err)?;
            Ok(LoadedKernel {
                entry: r.kernel_load.raw_value(),
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Kind::BzImage(hdr) => {
            let load = u64::from(hdr.code32_start).max(HIMEM_START);
            let init_size = u64::from(hdr.init_size);
            let needed = load + init_size;
            if needed > mem_end.min(MMIO_GAP_START) {
                return Err(Error::TooBig(format!(
                    "kernel needs {} MiB of guest memory to decompress, guest has {} MiB",
                    needed.div_ceil(1 << 20),
                    mem_end >> 20
                )));
            }
            let r = BzImage::load(mem, Some(GuestAddress(load)), file, None).map_err(loader_err)?;
            let mut header = r.setup_header.unwrap_or(hdr);
            // At most the header's own 32-bit code32_start or HIMEM_START.
            header.code32_start = u32::try_from(load)
                .map_err(|_| format_err(format!("load address {load:#x} is above 4 GiB")))?;
            Ok(LoadedKernel {
                entry: load + BZIMAGE_64BIT_ENTRY_OFFSET,
                end: r.kernel_end.max(needed),
                setup_header: Some(header),
            })
        }
    }
}

/// Places the initrd as high as the kernel allows in low memory.
/// Returns its guest address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    file: &mut File,
    kernel: &LoadedKernel,
) -> Result<(GuestAddress, u64), Error> {
    let size = file.seek(SeekFrom::End(0)).map_err(Error::Io)?;
    file.rewind().map_err(Error::Io)?;
    let mem_end = mem.last_addr().raw_value() + 1;
    let mut limit = mem_end.min(MMIO_GAP_START);
    if let Some(hdr) = &kernel.setup_header {
        let max = u64::from(hdr.initrd_addr_max);
        if max != 0 {
            limit = limit.min(max + 1);
        }
    }
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel.end)
        .ok_or_else(|| {
            Error::TooBig(format!(
                "initrd ({} MiB) does not fit in guest memory above the kernel",
                size.div_ceil(1 << 20)
            ))
        })?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, super::usize_from(size))
        .map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
    Ok((GuestAddress(addr), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(version: u16, xloadflags: u16, syssize: u32) -> setup_header {
        setup_header {
            header: HDRS_MAGIC,
            version,
            xloadflags,
            loadflags: LOADED_HIGH,
            setup_sects: 1,
            syssize,
            ..Default::default()
        }
    }

    fn why(r: Result<(), Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn bzimage_checks() {
        let ok = header(0x020f, XLF_KERNEL_64, 0x10);
        assert!(check_bzimage(&ok, 1024 + 0x100).is_ok());
        assert!(why(check_bzimage(&ok, 1024 + 0xff))
            .contains("file is truncated (1279 bytes, its header says 1280)"));
        assert!(why(check_bzimage(&header(0x0204, XLF_KERNEL_64, 0), 4096))
            .contains("boot protocol 2.4 is too old"));
        assert!(why(check_bzimage(&header(0x020f, 0, 0), 4096)).contains("no 64-bit entry point"));
        let mut low = ok;
        low.loadflags = 0;
        assert!(why(check_bzimage(&low, 4096)).contains("zImage"));
        let mut bad = ok;
        bad.header = 0;
        assert!(why(check_bzimage(&bad, 4096)).starts_with("not a bzImage or ELF vmlinux"));
    }

    fn temp_file(name: &str, bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("vmm-kernel-{}-{name}", std::process::id()));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let kernel = LoadedKernel {
            entry: 0x100200,
            end: 0x40_0000,
            setup_header: None,
        };
        let mut f = temp_file("initrd", &[0xab; 5000]);
        let (addr, size) = load_initrd(&mem, &mut f, &kernel).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr.0 % 4096, 0);
        assert!(addr.0 + size <= 16 << 20 && addr.0 + size > (16 << 20) - 8192);
        let byte: u8 = mem.read_obj(addr).unwrap();
        assert_eq!(byte, 0xab);
    }

    #[test]
    fn initrd_that_does_not_fit_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let kernel = LoadedKernel {
            entry: 0x100200,
            end: 0x30_0000,
            setup_header: None,
        };
        let mut f = temp_file("big", &vec![0; 2 << 20]);
        let e = load_initrd(&mem, &mut f, &kernel).unwrap_err().to_string();
        assert!(e.contains("initrd (2 MiB) does not fit"), "{e}");
    }

    #[test]
    fn elf_for_other_machines_is_rejected() {
        let mut ident = vec![0u8; 64];
        ident[..4].copy_from_slice(ELF_MAGIC);
        ident[4] = ELFCLASS64;
        ident[18] = 183; // EM_AARCH64
        let mut f = temp_file("arm", &ident);
        assert!(
            matches!(identify(&mut f), Err(Error::Format(w)) if w.contains("machine type 183"))
        );
        ident[4] = 1;
        let mut f = temp_file("elf32", &ident);
        assert!(matches!(identify(&mut f), Err(Error::Format(w)) if w.contains("not 64-bit")));
    }
}
