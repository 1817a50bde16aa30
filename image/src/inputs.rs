//! Reading the build inputs, with checks that catch swapped or wrong files
//! before they end up in an image that fails to boot.

use std::io;
use std::path::{Path, PathBuf};

use crate::disk::BOOT_CODE_SIZE;

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
    /// A minisign public key file, as `minisign -G` writes it.
    MinisignPublicKey,
}

#[derive(Debug)]
pub struct Input {
    pub data: Vec<u8>,
}

/// An input that cannot be used: names the role, the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{role} {}: {reason}", .path.display())]
pub struct InputError {
    pub role: String,
    pub path: PathBuf,
    pub reason: InputReason,
}

#[derive(Debug, thiserror::Error)]
pub enum InputReason {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error(transparent)]
    Content(#[from] Mismatch),
}

/// Why a file's contents are not the [`Kind`] it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("file is empty")]
    Empty,
    #[error("kernel has no EFI stub (build it with CONFIG_EFI_STUB=y)")]
    NoEfiStub,
    #[error(
        "{0} bytes; MBR boot code is exactly {BOOT_CODE_SIZE} bytes (e.g. syslinux's mbr/gptmbr.bin)"
    )]
    MbrBootCodeSize(usize),
    #[error("not a syslinux COM32 module (32-bit x86 ELF)")]
    NotCom32Module,
    #[error("not PXELINUX's pxelinux.0 (no \"PXELINUX\" banner)")]
    NotPxelinux,
    #[error(
        "not a Linux bzImage (no \"HdrS\" boot header at 0x202); \
         pass arch/x86/boot/bzImage, not vmlinux"
    )]
    NotBzImage,
    #[error("not an ELF executable")]
    NotElf,
    #[error("not an x86-64 ELF executable")]
    NotX86_64,
    #[error("truncated ELF header")]
    TruncatedElf,
    #[error(
        "dynamically linked (has an ELF interpreter); \
         build it for x86_64-unknown-linux-musl"
    )]
    Dynamic,
    #[error("not an EFI application (no PE header)")]
    NotPe,
    #[error("this is a minisign secret key; pass the public key (the .pub file)")]
    SecretKey,
    #[error(
        "not a minisign public key file (minisign -G writes one: an \
         \"untrusted comment:\" line, then the key in base64){0}"
    )]
    NotMinisignKey(String),
}

/// Reads `path` and checks that it is a `kind`. Errors name the role, the
/// file and the reason.
pub fn read(role: &str, path: &Path, kind: Kind) -> Result<Input, InputError> {
    let fail = |reason: InputReason| InputError {
        role: role.into(),
        path: path.into(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.into()))?;
    if !meta.is_file() {
        return Err(fail(InputReason::NotAFile));
    }
    let data = std::fs::read(path).map_err(|e| fail(e.into()))?;
    check(&data, kind).map_err(|e| fail(e.into()))?;
    Ok(Input { data })
}

fn check(data: &[u8], kind: Kind) -> Result<(), Mismatch> {
    if data.is_empty() {
        return Err(Mismatch::Empty);
    }
    match kind {
        Kind::EfiStubKernel => {
            check_bzimage(data)?;
            if !data.starts_with(b"MZ") {
                return Err(Mismatch::NoEfiStub);
            }
            Ok(())
        }
        Kind::Kernel => check_bzimage(data),
        Kind::StaticExecutable => check_static_elf(data),
        Kind::EfiApplication => check_pe(data),
        Kind::MbrBootCode if data.len() != BOOT_CODE_SIZE => {
            Err(Mismatch::MbrBootCodeSize(data.len()))
        }
        Kind::MbrBootCode => Ok(()),
        Kind::Com32Module => {
            // ELFCLASS32, little-endian, EM_386.
            if !data.starts_with(b"\x7fELF\x01\x01") || data.get(18..20) != Some(&[3, 0]) {
                return Err(Mismatch::NotCom32Module);
            }
            Ok(())
        }
        Kind::Pxelinux => {
            if !data.windows(8).any(|w| w == b"PXELINUX") {
                return Err(Mismatch::NotPxelinux);
            }
            Ok(())
        }
        Kind::MinisignPublicKey => check_minisign_key(data),
    }
}

/// What init's `signed::Trust::parse` accepts: the comment line, the key,
/// nothing else.
fn check_minisign_key(data: &[u8]) -> Result<(), Mismatch> {
    let not_key = |why: &str| Mismatch::NotMinisignKey(why.to_string());
    let text = std::str::from_utf8(data).map_err(|_| not_key(": not text"))?;
    let mut lines = text.lines();
    let comment = lines.next().unwrap_or_default();
    if comment.contains("secret key") {
        return Err(Mismatch::SecretKey);
    }
    if !comment.starts_with("untrusted comment:") {
        return Err(not_key(": no \"untrusted comment:\" first line"));
    }
    let key = lines.next().unwrap_or_default().trim();
    minisign_verify::PublicKey::from_base64(key).map_err(|e| not_key(&format!(": {e}")))?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(not_key(": more than two lines"));
    }
    Ok(())
}

/// The x86 boot protocol puts "HdrS" at 0x202 of every bzImage.
fn check_bzimage(data: &[u8]) -> Result<(), Mismatch> {
    if data.get(0x202..0x206) != Some(b"HdrS") {
        return Err(Mismatch::NotBzImage);
    }
    Ok(())
}

fn check_static_elf(data: &[u8]) -> Result<(), Mismatch> {
    const PT_INTERP: u32 = 3;
    if !data.starts_with(b"\x7fELF") {
        return Err(Mismatch::NotElf);
    }
    // ELFCLASS64, little-endian, x86-64.
    if data.get(4..6) != Some(&[2, 1]) || data.get(18..20) != Some(&[62, 0]) {
        return Err(Mismatch::NotX86_64);
    }
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    // An offset beyond the address space is as truncated as one past the end.
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
    };
    let truncated = Mismatch::TruncatedElf;
    let phoff = u64_at(0x20).ok_or(truncated.clone())?;
    let phentsize = u16_at(0x36).ok_or(truncated.clone())?;
    let phnum = u16_at(0x38).ok_or(truncated.clone())?;
    for index in 0..phnum {
        let at = phoff
            .checked_add(index.saturating_mul(phentsize))
            .ok_or(truncated.clone())?;
        let p_type = data
            .get(at..at.saturating_add(4))
            .ok_or(truncated.clone())?;
        if u32::from_le_bytes([p_type[0], p_type[1], p_type[2], p_type[3]]) == PT_INTERP {
            return Err(Mismatch::Dynamic);
        }
    }
    Ok(())
}

fn check_pe(data: &[u8]) -> Result<(), Mismatch> {
    let pe_offset = data
        .get(0x3c..0x40)
        .and_then(|b| usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok());
    let has_pe = data.starts_with(b"MZ")
        && pe_offset.and_then(|o| data.get(o..o.saturating_add(4))) == Some(b"PE\0\0");
    if !has_pe {
        return Err(Mismatch::NotPe);
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
            .to_string()
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
        assert_eq!(check(b"", Kind::Kernel), Err(Mismatch::Empty));
        assert!(check(&fake_bzimage(false, 0), Kind::EfiStubKernel)
            .unwrap_err()
            .to_string()
            .contains("EFI_STUB"));
        assert!(check(&fake_static_elf(0x400), Kind::Kernel).is_err());
        assert!(check(&fake_bzimage(true, 0), Kind::StaticExecutable).is_err());
        assert!(check(&fake_static_elf(0), Kind::EfiApplication).is_err());
    }

    #[test]
    fn minisign_keys() {
        let key = "untrusted comment: minisign public key 1D0A5C4E\n\
                   RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n";
        check(key.as_bytes(), Kind::MinisignPublicKey).unwrap();
        for (bad, why) in [
            ("untrusted comment: minisign encrypted secret key\nRWRTY0Iy\n", "secret key"),
            ("RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n", "first line"),
            ("untrusted comment: x\nnot base64\n", "not a minisign public key"),
            ("untrusted comment: x\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\nx\n", "more than two"),
        ] {
            let e = check(bad.as_bytes(), Kind::MinisignPublicKey)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
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
            .to_string()
            .contains("dynamically linked"));
        // Truncated program headers are an error, not a panic.
        elf[0x38..0x3a].copy_from_slice(&100u16.to_le_bytes());
        assert!(check(&elf, Kind::StaticExecutable).is_err());
    }

    #[test]
    fn real_system_binaries() {
        // scripts/build installs these packages (busybox-static,
        // systemd-boot-efi, syslinux-common, pxelinux) because the image is
        // made of them; a missing one fails here rather than passing
        // without checking anything.
        for (path, kind) in [
            ("/bin/busybox", Kind::StaticExecutable),
            (
                "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
                Kind::EfiApplication,
            ),
            ("/usr/lib/syslinux/mbr/gptmbr.bin", Kind::MbrBootCode),
            (
                "/usr/lib/syslinux/modules/bios/ldlinux.c32",
                Kind::Com32Module,
            ),
            ("/usr/lib/PXELINUX/pxelinux.0", Kind::Pxelinux),
        ] {
            let data = std::fs::read(path)
                .unwrap_or_else(|e| panic!("{path}: {e} (scripts/build installs it)"));
            check(&data, kind).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(
            check(&ls, Kind::StaticExecutable).is_err(),
            "/bin/ls is dynamic"
        );
    }

    #[test]
    fn read_names_file_and_reason() {
        let err = read(
            "host kernel",
            Path::new("/nonexistent/bzImage"),
            Kind::Kernel,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("host kernel /nonexistent/bzImage: "),
            "{err}"
        );
        let err = read("init", Path::new("/"), Kind::StaticExecutable)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
