//! Why the VMM stops, and the exit code each reason maps to (see the team
//! contract: 0 off, 1 VMM error, 2 bad input, 3 reboot, 4 crash, 5 killed).

use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered itself off.
    PowerOff,
    /// The guest asked for a reboot (i8042 reset line, ACPI reset).
    Reboot,
    /// Triple fault, failed VM entry or KVM internal error.
    Crash,
    /// The VMM itself failed (device or KVM error).
    Error,
    /// The host lost patience: second SIGTERM or shutdown timeout.
    HostStop,
}

impl ExitReason {
    pub fn code(self) -> i32 {
        match self {
            ExitReason::PowerOff => 0,
            ExitReason::Error => 1,
            ExitReason::Reboot => 3,
            ExitReason::Crash => 4,
            ExitReason::HostStop => 5,
        }
    }
}

/// Bad command line or invalid guest definition / kernel.
pub const EXIT_USAGE: i32 = 2;

/// Shared by every thread that can end the VM. The first reason recorded
/// wins; the eventfd wakes the main loop.
pub struct ExitHandle {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitHandle {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitHandle {
            reason: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn request(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            if let Err(e) = self.evt.write(1) {
                log::error!("cannot signal VM exit: {e}");
            }
        }
    }

    pub fn reason(&self) -> Option<ExitReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes() {
        let h = ExitHandle::new().unwrap();
        assert_eq!(h.reason(), None);
        h.request(ExitReason::Reboot);
        h.request(ExitReason::Crash);
        assert_eq!(h.reason(), Some(ExitReason::Reboot));
        assert_eq!(h.eventfd().read().unwrap(), 1);
    }

    #[test]
    fn codes_follow_contract() {
        let codes: Vec<i32> = [
            ExitReason::PowerOff,
            ExitReason::Error,
            ExitReason::Reboot,
            ExitReason::Crash,
            ExitReason::HostStop,
        ]
        .iter()
        .map(|r| r.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 3, 4, 5]);
    }
}
