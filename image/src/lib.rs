//! hv-image: assembles the hv boot image and checks kernel configurations.
//!
//! The `hv-image` binary is a thin wrapper around [`run`]; the modules are
//! public where other crates of the workspace or the tests reuse them
//! (hv-tests writes its initramfs archives with [`cpio`]; `tests/build.rs`
//! reads volumes back with `hvfat::read_file`).

pub mod assemble;
pub mod budget;
mod checksums;
pub mod cli;
pub mod cpio;
mod disk;
mod epoch;
mod ids;
mod initramfs;
mod inputs;
pub mod kconfig;
pub mod report;
mod syslinux;

use std::ffi::OsString;

use cli::USAGE;

// The errors of the private modules, as they appear inside BuildError.
pub use disk::DiskError;
pub use epoch::EpochError;
pub use initramfs::InitramfsError;
pub use inputs::{InputError, InputReason, Mismatch};
pub use syslinux::{InstalledError, SyslinuxError};

/// What went wrong with an `hv-image` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown command {0:?}\n\n{USAGE}")]
    UnknownCommand(String),
    #[error("{USAGE}")]
    NoCommand,
    #[error(transparent)]
    Cli(#[from] cli::CliError),
    #[error(transparent)]
    Build(#[from] assemble::BuildError),
    #[error(transparent)]
    Kconfig(#[from] kconfig::KconfigError),
}

/// Runs one `hv-image` command line (without the program name).
pub fn run(args: &[OsString]) -> Result<(), Error> {
    let command = args.first().and_then(|a| a.to_str());
    let rest = args.get(1..).unwrap_or_default();
    match command {
        Some("build") => {
            let args = cli::parse_build(rest)?;
            assemble::build(&args)?;
            Ok(())
        }
        Some("kconfig-check") => Ok(kconfig::run_cli(rest)?),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Error::UnknownCommand(other.into())),
        None => Err(Error::NoCommand),
    }
}
