//! The vmm: runs one Linux guest under KVM. The binary (`main.rs`) reads
//! the command line ([`hvcontract::launch`]) and calls [`run`] or
//! [`check`]; the exit code is [`hvcontract::VmmExit`].
//!
//! How a guest comes to run:
//! - `resources`: what to run, a definition or an ad-hoc kernel
//!   (`VmSource`);
//! - `builder`: opens the host resources as root, then (after
//!   `privileges` dropped root) parses the images and builds the VM,
//!   putting the devices on their buses with `device_manager`;
//! - `lifecycle`: starts the vCPU and device threads, each under its own
//!   `seccomp` filter, and waits for the guest to stop.
//!
//! Every module has its own error enum; [`Error`] gathers them and
//! [`Error::exit`] says, from the error's type alone, which exit code it
//! is. The modules are private: the binary needs only [`run`], [`check`]
//! and [`logger`], the fuzz target `fuzz_driver` (feature `fuzzing`),
//! and whatever the vmm itself stops using is reported as dead code.
#![warn(clippy::indexing_slicing)]

mod arch;
pub mod boot_disk;
mod builder;
mod cloud_init;
mod device_manager;
mod devices;
mod disk_boot;
mod exit;
mod lifecycle;
pub mod logger;
mod privileges;
mod resources;
mod seccomp;
mod signals;
mod terminal;
mod vstate;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::Instant;

use hvcontract::{Launch, VmmExit};

use device_manager::HandedFds;
use lifecycle::RunOptions;
use resources::VmSource;
use signals::SignalFd;

/// Why the vmm could not run the guest, or could not finish running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Resources(#[from] resources::Error),
    #[error(transparent)]
    Build(#[from] builder::Error),
    #[error(transparent)]
    Privileges(#[from] privileges::Error),
    #[error(transparent)]
    Run(#[from] lifecycle::Error),
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
}

impl Error {
    /// The exit code this error ends the vmm with: [`VmmExit::Invalid`]
    /// when the definition or its kernel must change, [`VmmExit::Error`]
    /// when the host or the vmm failed.
    pub fn exit(&self) -> VmmExit {
        match self {
            Error::Resources(e) => e.exit(),
            Error::Build(e) => e.exit(),
            Error::Privileges(_) | Error::Run(_) | Error::Signals(_) => VmmExit::Error,
        }
    }
}

impl From<&Error> for VmmExit {
    fn from(e: &Error) -> VmmExit {
        e.exit()
    }
}

/// Validates the definition in `file` and its kernel/initrd, as far as
/// that is possible without running anything.
pub fn check(file: &Path) -> Result<(), Error> {
    let source = VmSource::load(file)?;
    source.check_files()?;
    let mem = builder::guest_memory(&source)?;
    let no_fds = BTreeMap::new();
    let fds = HandedFds {
        disks: &no_fds,
        taps: &no_fds,
    };
    builder::load_images(&source, &mem, builder::open_images(&source, fds)?, true)?;
    Ok(())
}

/// Runs the guest `launch` describes until it stops; `started` is when the
/// process started (the boot vCPU logs how long it took).
pub fn run(launch: &Launch, started: Instant) -> Result<VmmExit, Error> {
    // Before any thread exists, so every thread inherits the mask.
    let signals = SignalFd::block(signals::SHUTDOWN_SIGNALS).map_err(Error::Signals)?;
    let source = VmSource::from_launch(&launch.source)?;
    if source.definition().is_some() {
        logger::set_guest(source.name());
    }
    let fds = HandedFds {
        disks: &launch.disk_fds,
        taps: &launch.tap_fds,
    };
    // Open as root whatever needs it, give root up, and only then parse
    // the kernel images and build the devices.
    let host = builder::open_host(&source, fds)?;
    privileges::drop_to(launch.ids)?;
    let vmm = builder::build(&source, host, launch.seccomp)?;
    let opts = RunOptions {
        seccomp: launch.seccomp,
        shutdown_timeout: launch.shutdown_timeout,
        started,
    };
    Ok(lifecycle::run(vmm, &signals, &opts)?)
}

/// The deterministic driver the fuzz target (vmm/fuzz) runs.
#[cfg(feature = "fuzzing")]
pub use devices::virtio::test_support::fuzz_driver;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_follows_the_error_type() {
        let invalid = Error::from(builder::Error::NoVcpus);
        assert_eq!(VmmExit::from(&invalid), VmmExit::Invalid);
        assert_eq!(invalid.to_string(), "a guest needs at least one vCPU");
        let host = Error::from(privileges::Error::DidNotStick);
        assert_eq!(host.exit(), VmmExit::Error);
        let signals = Error::Signals(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(signals.exit(), VmmExit::Error);
    }
}
