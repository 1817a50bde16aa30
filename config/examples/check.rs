//! Validates definition files the way init and `vmm --check` do:
//! `cargo run -p hvconfig --example check -- host.toml guests/*.toml`.
//! Files named host.toml are read as host configuration, all others as
//! guest definitions. Also the yardstick for the crate's size cost.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for arg in std::env::args_os().skip(1) {
        let path = Path::new(&arg);
        let result = if path.file_name().is_some_and(|n| n == "host.toml") {
            hvconfig::load_host(path).map(|h| {
                format!(
                    "host {}: {} bridges, {} mounts",
                    h.hostname,
                    h.bridges.len(),
                    h.mounts.len()
                )
            })
        } else {
            hvconfig::load_guest(path)
                .and_then(|g| g.check_files().map(|()| g))
                .map(|g| {
                    format!(
                        "guest {}: {} vcpus, {} MiB, {} disks, {} nets",
                        g.name,
                        g.machine.vcpus,
                        g.machine.memory_mib,
                        g.disks.len(),
                        g.nets.len()
                    )
                })
        };
        match result {
            Ok(summary) => println!("{}: ok ({summary})", path.display()),
            Err(e) => {
                eprintln!("{e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
