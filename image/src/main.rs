//! hv-image: assembles the hv boot image and checks kernel configurations.

mod assemble;
mod budget;
mod checksums;
mod cli;
mod cpio;
mod disk;
mod epoch;
mod fat;
mod fat_dirs;
mod fat_dots;
mod fat_times;
mod ids;
mod initramfs;
mod inputs;
mod kconfig;
mod report;
mod syslinux;

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = args.first().and_then(|a| a.to_str());
    let result = match command {
        Some("build") => cli::parse_build(&args[1..]).and_then(|a| assemble::build(&a).map(drop)),
        Some("kconfig-check") => kconfig::run_cli(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{}", cli::USAGE)),
        None => Err(cli::USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hv-image: error: {message}");
            ExitCode::FAILURE
        }
    }
}
