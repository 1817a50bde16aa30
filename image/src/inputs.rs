//! Reading the build inputs, with checks that catch swapped or wrong files
//! before they end up in an image that fails to boot.

use std::path::Path;

/// What an input file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An x86 Linux bzImage that UEFI firmware can also start directly
    /// (CONFIG_EFI_STUB), as systemd-boot requires.
    EfiStubKernel,
    /// An x86 Linux bzImage (boot protocol header present).
    Kernel,
    /// A statically linked x86-64 ELF executable: nothing in the initramfs
    /// provides a dynamic loader or libraries.
    StaticExecutable,
    /// A PE/COFF EFI application.
    EfiApplication,
    /// Boot code for the first 440 bytes of a disk's MBR.
    MbrBootCode,
    /// A syslinux COM32 module: a 32-bit x86 ELF object.
    Com32Module,
    /// PXELINUX's network bootstrap program (pxelinux.0).
    Pxelinux,
}

#[derive(Debug)]
pub struct Input {
    pub data: Vec<u8>,
}

/// Reads `path` and checks that it is a `kind`. Errors name the role, the
/// file and the reason.
pub fn read(role: &str, path: &Path, kind: Kind) -> Result<Input, String> {
    let fail = |reason: String| format!("{role} {}: {reason}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let data = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    check(&data, kind).map_err(fail)?;
    Ok(Input { data })
}

fn check(data: &[u8], kind: Kind) -> Result<(), String> {
    if data.is_empty() {
        return Err("file is empty".into());
    }
    match kind {
        Kind::EfiStubKernel => {
            check_bzimage(data)?;
            if !data.starts_with(b"MZ") {
                return Err("kernel has no EFI stub (build it with CONFIG_EFI_STUB=y)".into());
            }
            Ok(())
        }
        Kind::Kernel => check_bzimage(data),
        Kind::StaticExecutable => check_static_elf(data),
        Kind::EfiApplication => check_pe(data),
        Kind::MbrBootCode if data.len() != crate::disk::BOOT_CODE_SIZE => Err(format!(
            "{} bytes; MBR boot code is exactly {} bytes (e.g. syslinux's mbr/gptmbr.bin)",
            data.len(),
            crate::disk::BOOT_CODE_SIZE
        )),
        Kind::MbrBootCode => Ok(()),
        Kind::Com32Module => {
            // ELFCLASS32, little-endian, EM_386.
            if !data.starts_with(b"\x7fELF\x01\x01") || data.get(18..20) != Some(&[3, 0]) {
                return Err("not a syslinux COM32 module (32-bit x86 ELF)".into());
            }
            Ok(())
        }
        Kind::Pxelinux => {
            if !data.windows(8).any(|w| w == b"PXELINUX") {
                return Err("not PXELINUX's pxelinux.0 (no \"PXELINUX\" banner)".into());
            }
            Ok(())
        }
    }
}

/// The x86 boot protocol puts "HdrS" at 0x202 of every bzImage.
fn check_bzimage(data: &[u8]) -> Result<(), String> {
    if data.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a Linux bzImage (no \"HdrS\" boot header at 0x202); \
                    pass arch/x86/boot/bzImage, not vmlinux"
            .into());
    }
    Ok(())
}

fn check_static_elf(data: &[u8]) -> Result<(), String> {
    const PT_INTERP: u32 = 3;
    if !data.starts_with(b"\x7fELF") {
        return Err("not an ELF executable".into());
    }
    // ELFCLASS64, little-endian, x86-64.
    if data.get(4..6) != Some(&[2, 1]) || data.get(18..20) != Some(&[62, 0]) {
        return Err("not an x86-64 ELF executable".into());
    }
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
    };
    let truncated = || "truncated ELF header".to_string();
    let phoff = u64_at(0x20).ok_or_else(truncated)?;
    let phentsize = u16_at(0x36).ok_or_else(truncated)?;
    let phnum = u16_at(0x38).ok_or_else(truncated)?;
    for index in 0..phnum {
        let at = phoff
            .checked_add(index.saturating_mul(phentsize))
            .ok_or_else(truncated)?;
        let p_type = data.get(at..at + 4).ok_or_else(truncated)?;
        if u32::from_le_bytes([p_type[0], p_type[1], p_type[2], p_type[3]]) == PT_INTERP {
            return Err("dynamically linked (has an ELF interpreter); \
                        build it for x86_64-unknown-linux-musl"
                .into());
        }
    }
    Ok(())
}

fn check_pe(data: &[u8]) -> Result<(), String> {
    let pe_offset = data
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let has_pe =
        data.starts_with(b"MZ") && pe_offset.and_then(|o| data.get(o..o + 4)) == Some(b"PE\0\0");
    if !has_pe {
        return Err("not an EFI application (no PE header)".into());
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Smallest byte strings that pass the checks, for tests elsewhere.
    pub fn fake_bzimage(efi_stub: bool, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len.max(0x400)];
        if efi_stub {
            data[..2].copy_from_slice(b"MZ");
        }
        data[0x202..0x206].copy_from_slice(b"HdrS");
        data
    }

    pub fn fake_static_elf(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len.max(64)];
        data[..4].copy_from_slice(b"\x7fELF");
        data[4..6].copy_from_slice(&[2, 1]);
        data[18..20].copy_from_slice(&[62, 0]);
        data
    }

    pub fn fake_efi_app(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len.max(0x100)];
        data[..2].copy_from_slice(b"MZ");
        data[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        data[0x80..0x84].copy_from_slice(b"PE\0\0");
        data
    }

    #[test]
    fn syslinux_kinds() {
        check(&[0; 440], Kind::MbrBootCode).unwrap();
        assert!(check(&[0; 512], Kind::MbrBootCode)
            .unwrap_err()
            .contains("exactly 440"));
        let mut module = vec![0u8; 64];
        module[..6].copy_from_slice(b"\x7fELF\x01\x01");
        module[18] = 3;
        check(&module, Kind::Com32Module).unwrap();
        assert!(check(&fake_static_elf(0), Kind::Com32Module).is_err());
        check(b"\xea\x24 PXELINUX 6.04 PXE", Kind::Pxelinux).unwrap();
        assert!(check(&module, Kind::Pxelinux).is_err());
    }

    #[test]
    fn accepts_fakes() {
        check(&fake_bzimage(true, 0), Kind::EfiStubKernel).unwrap();
        check(&fake_bzimage(false, 0), Kind::Kernel).unwrap();
        check(&fake_static_elf(0), Kind::StaticExecutable).unwrap();
        check(&fake_efi_app(0), Kind::EfiApplication).unwrap();
    }

    #[test]
    fn rejects_wrong_kinds() {
        assert!(check(b"", Kind::Kernel).unwrap_err().contains("empty"));
        assert!(check(&fake_bzimage(false, 0), Kind::EfiStubKernel)
            .unwrap_err()
            .contains("EFI_STUB"));
        assert!(check(&fake_static_elf(0x400), Kind::Kernel).is_err());
        assert!(check(&fake_bzimage(true, 0), Kind::StaticExecutable).is_err());
        assert!(check(&fake_static_elf(0), Kind::EfiApplication).is_err());
    }

    #[test]
    fn rejects_dynamic_elf() {
        let mut elf = fake_static_elf(256);
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        elf[64 + 56..64 + 60].copy_from_slice(&3u32.to_le_bytes());
        assert!(check(&elf, Kind::StaticExecutable)
            .unwrap_err()
            .contains("dynamically linked"));
        // Truncated program headers are an error, not a panic.
        elf[0x38..0x3a].copy_from_slice(&100u16.to_le_bytes());
        assert!(check(&elf, Kind::StaticExecutable).is_err());
    }

    #[test]
    fn real_system_binaries() {
        // busybox-static and systemd-boot are installed on the build host;
        // skip quietly where they are not.
        if let Ok(busybox) = std::fs::read("/bin/busybox") {
            check(&busybox, Kind::StaticExecutable).unwrap();
        }
        if let Ok(sdboot) = std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi") {
            check(&sdboot, Kind::EfiApplication).unwrap();
        }
        for (path, kind) in [
            ("/usr/lib/syslinux/mbr/gptmbr.bin", Kind::MbrBootCode),
            (
                "/usr/lib/syslinux/modules/bios/ldlinux.c32",
                Kind::Com32Module,
            ),
            ("/usr/lib/PXELINUX/pxelinux.0", Kind::Pxelinux),
        ] {
            if let Ok(data) = std::fs::read(path) {
                check(&data, kind).unwrap_or_else(|e| panic!("{path}: {e}"));
            }
        }
        if let Ok(ls) = std::fs::read("/bin/ls") {
            assert!(
                check(&ls, Kind::StaticExecutable).is_err(),
                "/bin/ls is dynamic"
            );
        }
    }

    #[test]
    fn read_names_file_and_reason() {
        let err = read(
            "host kernel",
            Path::new("/nonexistent/bzImage"),
            Kind::Kernel,
        )
        .unwrap_err();
        assert!(
            err.starts_with("host kernel /nonexistent/bzImage: "),
            "{err}"
        );
        let err = read("init", Path::new("/"), Kind::StaticExecutable).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
