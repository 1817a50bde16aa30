//! End-to-end test harness: boots hv images in QEMU and watches the serial
//! console.
//!
//! Machines run under TCG with `-cpu max`, whose emulated CPU has AMD SVM and
//! NPT, so our host kernel gets a working `/dev/kvm` inside QEMU. Each run has
//! its own temporary directory (QMP socket, firmware variables), so tests can
//! run in parallel; disks are attached with `snapshot=on` (or read-only) so
//! build outputs are never modified. The console of each run is also written
//! to `<logs_dir()>/<name>.log` with timestamps.
//!
//! ```no_run
//! use std::time::Duration;
//! use hv_tests::{artefact, Qemu};
//!
//! let mut vm = Qemu::builder("boot_uefi").uefi().usb_disk(artefact("hv.img")).spawn()?;
//! vm.wait_for_text("hv-init 0.1.0", Duration::from_secs(180))?;
//! vm.quit()?;
//! # Ok::<(), hv_tests::Error>(())
//! ```
//!
//! Environment: `HV_OUT` (build outputs, default `<repo>/out`),
//! `HV_E2E_LOGS` (logs, default `<repo>/target/e2e-logs`),
//! `HV_E2E_TIMEOUT_SCALE` (multiplies every timeout), `HV_QEMU` (QEMU binary).

mod ansi;
mod builder;
mod console;
mod devices;
mod error;
mod firmware;
pub mod http;
mod lines;
mod log;
mod opts;
mod paths;
mod qemu;
mod qmp;
pub mod rig;
mod timeouts;

use std::net::TcpListener;

pub use builder::QemuBuilder;
pub use devices::{Bus, Disk, UserNet};
pub use error::{Error, ErrorKind, Snapshot};
pub use firmware::Firmware;
pub use paths::{artefact, logs_dir, out_dir, workspace_root};
pub use qemu::Qemu;
pub use timeouts::{scale, scaled};

/// A TCP port on 127.0.0.1 that was free a moment ago, for `hostfwd` rules.
pub fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
