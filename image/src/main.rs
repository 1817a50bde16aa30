//! The `hv-image` command: see [`hv_image::run`] and `hv-image --help`.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match hv_image::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hv-image: error: {message}");
            ExitCode::FAILURE
        }
    }
}
