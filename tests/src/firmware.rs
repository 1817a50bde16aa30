//! Firmware selection: SeaBIOS for the legacy path, OVMF for UEFI.

use std::fs;
use std::path::Path;

use crate::error::{Error, ErrorKind};
use crate::opts::escape;

/// Split OVMF (code + variable store) builds, preferred: the variable store
/// is a per-run copy, so boot entries OVMF writes stay within one test.
const OVMF_SPLIT: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];
/// Combined builds, used with `-bios` (variables then live in RAM only).
const OVMF_COMBINED: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];

/// What the machine boots first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// QEMU's built-in SeaBIOS (legacy BIOS boot, `-kernel` boots).
    #[default]
    SeaBios,
    /// OVMF (UEFI), with a fresh variable store per run, like a new machine.
    Uefi,
}

impl Firmware {
    /// QEMU arguments for this firmware; may copy the variable store into
    /// `run_dir`.
    pub(crate) fn qemu_args(self, run_dir: &Path) -> Result<Vec<String>, Error> {
        match self {
            // SeaBIOS is QEMU's default; `graphics=off` on the machine makes
            // it print to the serial port.
            Self::SeaBios => Ok(Vec::new()),
            Self::Uefi => ovmf_args(run_dir),
        }
    }
}

fn ovmf_args(run_dir: &Path) -> Result<Vec<String>, Error> {
    if let Some((code, vars)) = OVMF_SPLIT
        .iter()
        .find(|(code, vars)| Path::new(code).exists() && Path::new(vars).exists())
    {
        let copy = run_dir.join("OVMF_VARS.fd");
        fs::copy(vars, &copy).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("copying {vars} to {}: {e}", copy.display()),
            )
        })?;
        return Ok(vec![
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                escape(Path::new(code))?
            ),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", escape(&copy)?),
        ]);
    }
    if let Some(combined) = OVMF_COMBINED.iter().find(|path| Path::new(path).exists()) {
        return Ok(vec!["-bios".into(), combined.to_string()]);
    }
    Err(Error::new(
        ErrorKind::Spawn,
        format!("no OVMF firmware found (looked for {OVMF_SPLIT:?} and {OVMF_COMBINED:?}); install the ovmf package"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seabios_needs_no_arguments() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Firmware::SeaBios.qemu_args(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn uefi_uses_a_private_copy_of_the_variable_store() {
        let dir = tempfile::tempdir().unwrap();
        let args = Firmware::Uefi.qemu_args(dir.path()).unwrap();
        if args[0] == "-drive" {
            assert!(args[1].contains("readonly=on"));
            assert!(args[3].contains(dir.path().to_str().unwrap()));
            assert!(dir.path().join("OVMF_VARS.fd").exists());
        } else {
            assert_eq!(args[0], "-bios");
        }
    }
}
