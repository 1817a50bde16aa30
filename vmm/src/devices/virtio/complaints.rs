//! Rate limit for log lines a guest can trigger at will.

use std::fmt;

/// How many guest-caused warnings one device logs before going quiet.
const WARNINGS_PER_DEVICE: u32 = 16;

/// Logs the first few guest misbehaviours of a device; a hostile guest must
/// not be able to flood the host log (and the serial console behind it).
#[derive(Debug)]
pub(crate) struct Complaints {
    name: &'static str,
    left: u32,
}

impl Complaints {
    pub(crate) fn new(name: &'static str) -> Self {
        Complaints {
            name,
            left: WARNINGS_PER_DEVICE,
        }
    }

    pub(crate) fn warn(&mut self, args: fmt::Arguments) {
        match self.left {
            0 => {}
            1 => {
                self.left = 0;
                log::warn!("{}: {} (further guest errors not logged)", self.name, args);
            }
            _ => {
                self.left -= 1;
                log::warn!("{}: {}", self.name, args);
            }
        }
    }
}
