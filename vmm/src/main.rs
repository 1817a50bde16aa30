//! `vmm`: runs one Linux guest under KVM. The command line is
//! `hvcontract::launch` (see its `USAGE`), the exit code
//! `hvcontract::VmmExit`.

mod arch;
mod builder;
mod devices;
mod error;
mod exit;
mod lifecycle;
mod logger;
mod privileges;
mod seccomp;
mod signals;
mod spec;
mod terminal;
mod virtio_attach;
mod vstate;

use std::path::Path;
use std::time::Instant;

use hvcontract::launch::{self, Launch, LaunchSource};
use hvcontract::{Command, VmmExit};

use error::Fatal;
use lifecycle::RunOptions;
use signals::SignalFd;
use spec::VmSpec;

fn main() {
    let started = Instant::now();
    let command = launch::parse(std::env::args().skip(1));
    logger::init(matches!(&command, Ok(Command::Run(l)) if l.verbose));
    let code = match command {
        Ok(Command::Help) => {
            println!("{}", launch::USAGE);
            0
        }
        Ok(Command::Version) => {
            println!("vmm {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Command::Check(files)) => check(&files),
        Ok(Command::Run(launch)) => run(&launch, started).unwrap_or_else(|e| {
            log::error!("{e}");
            e.code
        }),
        Err(e) => {
            log::error!("{e}\n{}", launch::USAGE);
            VmmExit::Invalid.code()
        }
    };
    std::process::exit(code);
}

/// Validates each definition and its kernel/initrd, as far as that is
/// possible without running anything.
fn check(files: &[std::path::PathBuf]) -> i32 {
    let mut code = 0;
    for file in files {
        match check_one(file) {
            Ok(()) => println!("{}: ok", file.display()),
            Err(e) => {
                log::error!("{e}");
                code = VmmExit::Invalid.code();
            }
        }
    }
    code
}

fn check_one(file: &Path) -> Result<(), Fatal> {
    let spec = VmSpec::from_definition(file, true)?;
    let mem = builder::guest_memory(&spec)?;
    builder::load_images(&spec, &mem, builder::open_images(&spec)?)?;
    Ok(())
}

fn run(args: &Launch, started: Instant) -> Result<i32, Fatal> {
    // Before any thread exists, so every thread inherits the mask.
    let signals = SignalFd::block(signals::SHUTDOWN_SIGNALS)
        .map_err(|e| Fatal::vmm(format!("cannot set up signal handling: {e}")))?;
    let spec = match &args.source {
        LaunchSource::Definition(path) => VmSpec::from_definition(path, false)?,
        LaunchSource::AdHoc {
            kernel,
            initrd,
            cmdline,
            memory_mib,
            vcpus,
        } => VmSpec::ad_hoc(
            kernel.clone(),
            initrd.clone(),
            cmdline.clone(),
            *memory_mib,
            *vcpus,
        ),
    };
    if spec.definition.is_some() {
        logger::set_guest(&spec.name);
    }
    let fds = virtio_attach::HandedFds {
        disks: args.disk_fds.clone(),
        taps: args.tap_fds.clone(),
    };
    // Open as root whatever needs it, give root up, and only then parse
    // the kernel images and build the devices.
    let host = builder::open_host(&spec, &fds)?;
    privileges::drop_to(args.ids)?;
    let vmm = builder::build(&spec, host)?;
    let opts = RunOptions {
        seccomp: args.seccomp,
        shutdown_timeout: args.shutdown_timeout,
        started,
    };
    let reason = lifecycle::run(vmm, &signals, &opts)?;
    log::info!("guest stopped: {reason:?} (exit code {})", reason.code());
    Ok(reason.code())
}
