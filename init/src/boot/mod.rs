//! Bringing the machine up and down: the kernel command line, early
//! mounts, the console and logger, signals, the watchdog, the power
//! button, the shutdown of the guests and the final power-off, and which
//! disk the image booted from.

pub mod boot_medium;
pub mod boot_report;
pub mod cmdline;
pub mod console;
pub mod early_mounts;
pub mod logger;
pub mod power;
pub mod power_button;
pub mod shutdown;
pub mod signals;
pub mod watchdog;
