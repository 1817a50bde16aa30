//! Command-line parsing for `hv-image build`.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage:
  hv-image build --out DIR --host-kernel BZIMAGE --init BIN --vmm BIN
                 --guest-kernel BZIMAGE --busybox BIN --efi-loader EFI
                 [--budget BYTES]
  hv-image kconfig-check ARGS...

build writes DIR/hv.img, DIR/pxe/{vmlinuz,initrd.img}, DIR/SHA256SUMS and
DIR/size-report.json. The size budget (default and maximum 64M) comes from
--budget or HV_SIZE_BUDGET and accepts K/M/G (1024-based) or kB/MB/GB.
Timestamps come from SOURCE_DATE_EPOCH when set.";

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
}

/// Parses the arguments that follow `build`.
pub fn parse_build(args: &[OsString]) -> Result<BuildArgs, String> {
    use lexopt::prelude::*;

    let mut out = None;
    let mut host_kernel = None;
    let mut init = None;
    let mut vmm = None;
    let mut guest_kernel = None;
    let mut busybox = None;
    let mut efi_loader = None;
    let mut budget = None;

    let mut parser = lexopt::Parser::from_args(args.iter().cloned());
    let error = |e: lexopt::Error| format!("build: {e}");
    while let Some(arg) = parser.next().map_err(error)? {
        let slot = match arg {
            Long("out") => &mut out,
            Long("host-kernel") => &mut host_kernel,
            Long("init") => &mut init,
            Long("vmm") => &mut vmm,
            Long("guest-kernel") => &mut guest_kernel,
            Long("busybox") => &mut busybox,
            Long("efi-loader") => &mut efi_loader,
            Long("budget") => {
                let value = parser.value().map_err(error)?;
                let text = value
                    .into_string()
                    .map_err(|v| format!("build: --budget {v:?} is not valid UTF-8"))?;
                budget = Some(text);
                continue;
            }
            other => return Err(error(other.unexpected())),
        };
        *slot = Some(PathBuf::from(parser.value().map_err(error)?));
    }

    let required = |value: Option<PathBuf>, flag: &str| {
        value.ok_or_else(|| format!("build: missing required option {flag}\n\n{USAGE}"))
    };
    Ok(BuildArgs {
        out: required(out, "--out")?,
        host_kernel: required(host_kernel, "--host-kernel")?,
        init: required(init, "--init")?,
        vmm: required(vmm, "--vmm")?,
        guest_kernel: required(guest_kernel, "--guest-kernel")?,
        busybox: required(busybox, "--busybox")?,
        efi_loader: required(efi_loader, "--efi-loader")?,
        budget,
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
        let equals = parse_build(&args(&format!("{FULL} --budget=1M"))).unwrap();
        assert_eq!(equals.budget.as_deref(), Some("1M"));
    }

    #[test]
    fn reports_missing_and_unknown() {
        let err = parse_build(&args("--out o")).unwrap_err();
        assert!(err.contains("--host-kernel"), "{err}");
        let err = parse_build(&args(&format!("{FULL} --bogus x"))).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
        let err = parse_build(&args("--out")).unwrap_err();
        assert!(err.contains("--out"), "{err}");
    }
}
