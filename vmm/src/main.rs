//! `vmm`: runs one Linux guest under KVM. The command line is
//! `hvcontract::launch` (see its `USAGE`), the exit code
//! `hvcontract::VmmExit`; everything else is the `vmm` library.
#![warn(clippy::indexing_slicing)]

use std::time::Instant;

use hvcontract::launch::{self, Command};
use hvcontract::VmmExit;
use vmm::logger;

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
        Ok(Command::Run(launch)) => match vmm::run(&launch, started) {
            Ok(reason) => {
                log::info!("guest stopped: {reason:?} (exit code {})", reason.code());
                reason.code()
            }
            Err(e) => {
                log::error!("{e}");
                e.exit().code()
            }
        },
        Err(e) => {
            log::error!("{e}\n{}", launch::USAGE);
            VmmExit::Invalid.code()
        }
    };
    std::process::exit(code);
}

/// Checks every file, reporting each. The exit is the worst failure's
/// (an invalid definition over a host failure), or 0.
fn check(files: &[std::path::PathBuf]) -> i32 {
    let mut failed: Option<VmmExit> = None;
    for file in files {
        match vmm::check(file) {
            Ok(()) => println!("{}: ok", file.display()),
            Err(e) => {
                log::error!("{e}");
                failed = match failed {
                    Some(VmmExit::Invalid) => failed,
                    _ => Some(e.exit()),
                };
            }
        }
    }
    failed.map_or(0, VmmExit::code)
}
