//! Hardware watchdog: if the board has one, a hung init resets the
//! machine instead of leaving guests dead.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

pub struct Watchdog {
    dev: File,
    timeout: Duration,
}

impl Watchdog {
    /// Opens (and so arms) the watchdog at `path`, if there is one.
    pub fn open(path: &Path) -> Option<Watchdog> {
        if !path.exists() {
            return None;
        }
        let dev = match OpenOptions::new().write(true).open(path) {
            Ok(dev) => dev,
            Err(e) => {
                log::warn!("watchdog {}: {e}", path.display());
                return None;
            }
        };
        let mut secs: libc::c_int = 0;
        // SAFETY: the ioctl writes one int into `secs`.
        let timeout = match unsafe { wdioc_gettimeout(dev.as_raw_fd(), &mut secs) } {
            Ok(_) if secs > 0 => Duration::from_secs(secs as u64),
            _ => Duration::from_secs(60),
        };
        log::info!(
            "watchdog {} armed, timeout {} s",
            path.display(),
            timeout.as_secs()
        );
        let wd = Watchdog { dev, timeout };
        wd.feed();
        Some(wd)
    }

    /// How often the main loop must call `feed`: well inside the timeout.
    pub fn interval(&self) -> Duration {
        (self.timeout / 3).max(Duration::from_secs(1))
    }

    pub fn feed(&self) {
        let mut dummy: libc::c_int = 0;
        // SAFETY: KEEPALIVE ignores its argument; `dummy` is valid anyway.
        if unsafe { wdioc_keepalive(self.dev.as_raw_fd(), &mut dummy) }.is_err() {
            // Drivers without the ioctl accept any write as a keepalive.
            let _ = (&self.dev).write_all(b"\0");
        }
    }

    /// Orderly shutdown: the magic 'V' disarms the watchdog on close, so
    /// a slow firmware power-off is not cut short by a reset.
    pub fn disarm(self) {
        let _ = (&self.dev).write_all(b"V");
    }
}
