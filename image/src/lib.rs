//! hv-image: assembles the hv boot image and checks kernel configurations.
//!
//! The `hv-image` binary is a thin wrapper around [`run`]; the modules are
//! public where other crates of the workspace reuse them (hv-tests writes
//! its initramfs archives with [`cpio`] and reads volumes back with
//! [`fat::read_file`]).

pub mod assemble;
pub mod budget;
mod checksums;
pub mod cli;
pub mod cpio;
mod disk;
mod epoch;
pub mod fat;
mod ids;
mod initramfs;
mod inputs;
pub mod kconfig;
pub mod report;
mod syslinux;

use std::ffi::OsString;

/// Runs one `hv-image` command line (without the program name).
pub fn run(args: &[OsString]) -> Result<(), String> {
    let command = args.first().and_then(|a| a.to_str());
    let rest = args.get(1..).unwrap_or_default();
    match command {
        Some("build") => cli::parse_build(rest).and_then(|a| assemble::build(&a).map(drop)),
        Some("kconfig-check") => kconfig::run_cli(rest),
        Some("-h" | "--help" | "help") => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{}", cli::USAGE)),
        None => Err(cli::USAGE.to_string()),
    }
}
