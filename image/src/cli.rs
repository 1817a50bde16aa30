//! Command-line parsing for `hv-image build`.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage:
  hv-image build --out DIR --host-kernel BZIMAGE --init BIN --vmm BIN
                 --guest-kernel BZIMAGE --busybox BIN --efi-loader EFI
                 [--budget BYTES] [--syslinux BIN] [--syslinux-dir DIR]
                 [--pxelinux FILE] [--config-pubkey FILE]
  hv-image kconfig-check ARGS...

build writes DIR/hv.img, DIR/pxe/ (vmlinuz, initrd.img, boot.ipxe,
pxelinux.0, ldlinux.c32, pxelinux.cfg/default, README.txt), DIR/SHA256SUMS
and DIR/size-report.json. The size budget (default and maximum 64M) comes
from --budget or HV_SIZE_BUDGET and accepts K/M/G (1024-based) or kB/MB/GB.
Timestamps come from SOURCE_DATE_EPOCH when set. --config-pubkey bakes a
minisign public key (minisign -G) into the host initramfs as
/etc/hv/config.pub: init then uses only configs with a signed SHA256SUMS
(docs/signing.md).

The legacy BIOS boot path uses Debian's syslinux packages: --syslinux is the
installer (default /usr/bin/syslinux, package syslinux), --syslinux-dir holds
mbr/gptmbr.bin and modules/bios/ldlinux.c32 (default /usr/lib/syslinux,
package syslinux-common), --pxelinux is pxelinux.0 (default
/usr/lib/PXELINUX/pxelinux.0, package pxelinux).";

pub const DEFAULT_SYSLINUX: &str = "/usr/bin/syslinux";
pub const DEFAULT_SYSLINUX_DIR: &str = "/usr/lib/syslinux";
pub const DEFAULT_PXELINUX: &str = "/usr/lib/PXELINUX/pxelinux.0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    pub out: PathBuf,
    pub host_kernel: PathBuf,
    pub init: PathBuf,
    pub vmm: PathBuf,
    pub guest_kernel: PathBuf,
    pub busybox: PathBuf,
    pub efi_loader: PathBuf,
    /// Unparsed; the budget module owns the syntax.
    pub budget: Option<String>,
    /// The syslinux installer (mtools variant).
    pub syslinux: PathBuf,
    /// syslinux-common's library directory.
    pub syslinux_dir: PathBuf,
    pub pxelinux: PathBuf,
    /// A minisign public key to bake in: configs must then be signed.
    pub config_pubkey: Option<PathBuf>,
}

impl BuildArgs {
    /// The GPT-aware MBR boot code.
    pub fn gptmbr(&self) -> PathBuf {
        self.syslinux_dir.join("mbr/gptmbr.bin")
    }

    /// The core module pxelinux.0 loads; it must come from the same
    /// syslinux release as pxelinux.0, as Debian's packages do.
    pub fn ldlinux_c32(&self) -> PathBuf {
        self.syslinux_dir.join("modules/bios/ldlinux.c32")
    }
}

/// A `build` command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("build: {0}")]
    Parse(#[from] lexopt::Error),
    #[error("build: --budget {0:?} is not valid UTF-8")]
    BudgetNotUtf8(OsString),
    #[error("build: missing required option {0}\n\n{USAGE}")]
    Missing(&'static str),
}

/// Parses the arguments that follow `build`.
pub fn parse_build(args: &[OsString]) -> Result<BuildArgs, CliError> {
    use lexopt::prelude::*;

    let mut out = None;
    let mut host_kernel = None;
    let mut init = None;
    let mut vmm = None;
    let mut guest_kernel = None;
    let mut busybox = None;
    let mut efi_loader = None;
    let mut budget = None;
    let mut syslinux = None;
    let mut syslinux_dir = None;
    let mut pxelinux = None;
    let mut config_pubkey = None;

    let mut parser = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = parser.next()? {
        let slot = match arg {
            Long("out") => &mut out,
            Long("host-kernel") => &mut host_kernel,
            Long("init") => &mut init,
            Long("vmm") => &mut vmm,
            Long("guest-kernel") => &mut guest_kernel,
            Long("busybox") => &mut busybox,
            Long("efi-loader") => &mut efi_loader,
            Long("syslinux") => &mut syslinux,
            Long("syslinux-dir") => &mut syslinux_dir,
            Long("pxelinux") => &mut pxelinux,
            Long("config-pubkey") => &mut config_pubkey,
            Long("budget") => {
                let value = parser.value()?;
                let text = value.into_string().map_err(CliError::BudgetNotUtf8)?;
                budget = Some(text);
                continue;
            }
            other => return Err(other.unexpected().into()),
        };
        *slot = Some(PathBuf::from(parser.value()?));
    }

    let required =
        |value: Option<PathBuf>, flag: &'static str| value.ok_or(CliError::Missing(flag));
    Ok(BuildArgs {
        out: required(out, "--out")?,
        host_kernel: required(host_kernel, "--host-kernel")?,
        init: required(init, "--init")?,
        vmm: required(vmm, "--vmm")?,
        guest_kernel: required(guest_kernel, "--guest-kernel")?,
        busybox: required(busybox, "--busybox")?,
        efi_loader: required(efi_loader, "--efi-loader")?,
        budget,
        syslinux: syslinux.unwrap_or_else(|| DEFAULT_SYSLINUX.into()),
        syslinux_dir: syslinux_dir.unwrap_or_else(|| DEFAULT_SYSLINUX_DIR.into()),
        pxelinux: pxelinux.unwrap_or_else(|| DEFAULT_PXELINUX.into()),
        config_pubkey,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<OsString> {
        text.split_whitespace().map(OsString::from).collect()
    }

    const FULL: &str = "--out o --host-kernel hk --init i --vmm v --guest-kernel gk \
                        --busybox bb --efi-loader efi";

    #[test]
    fn parses_all_options() {
        let parsed = parse_build(&args(&format!("{FULL} --budget 48M"))).unwrap();
        assert_eq!(parsed.out, PathBuf::from("o"));
        assert_eq!(parsed.host_kernel, PathBuf::from("hk"));
        assert_eq!(parsed.guest_kernel, PathBuf::from("gk"));
        assert_eq!(parsed.efi_loader, PathBuf::from("efi"));
        assert_eq!(parsed.budget.as_deref(), Some("48M"));
        assert_eq!(parsed.syslinux, PathBuf::from(DEFAULT_SYSLINUX));
        assert_eq!(
            parsed.gptmbr(),
            PathBuf::from("/usr/lib/syslinux/mbr/gptmbr.bin")
        );
        assert_eq!(parsed.pxelinux, PathBuf::from(DEFAULT_PXELINUX));
        assert_eq!(parsed.config_pubkey, None);
        let custom = parse_build(&args(&format!(
            "{FULL} --syslinux sl --syslinux-dir sd --pxelinux px"
        )))
        .unwrap();
        assert_eq!(custom.syslinux, PathBuf::from("sl"));
        assert_eq!(
            custom.ldlinux_c32(),
            PathBuf::from("sd/modules/bios/ldlinux.c32")
        );
        assert_eq!(custom.pxelinux, PathBuf::from("px"));
        let signed = parse_build(&args(&format!("{FULL} --config-pubkey k.pub"))).unwrap();
        assert_eq!(signed.config_pubkey, Some(PathBuf::from("k.pub")));
        let equals = parse_build(&args(&format!("{FULL} --budget=1M"))).unwrap();
        assert_eq!(equals.budget.as_deref(), Some("1M"));
    }

    #[test]
    fn reports_missing_and_unknown() {
        let err = parse_build(&args("--out o")).unwrap_err().to_string();
        assert!(err.contains("--host-kernel"), "{err}");
        let err = parse_build(&args(&format!("{FULL} --bogus x")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--bogus"), "{err}");
        let err = parse_build(&args("--out")).unwrap_err().to_string();
        assert!(err.contains("--out"), "{err}");
    }
}
