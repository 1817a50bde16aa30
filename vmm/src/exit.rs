//! The handle every thread that can end the VM shares. Why the vmm stops,
//! and the exit code each reason maps to, is [`hvcontract::VmmExit`].

use std::sync::Mutex;

use hvcontract::VmmExit;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Shared by every thread that can end the VM. The first reason recorded
/// wins; the eventfd wakes the main loop.
pub struct ExitHandle {
    reason: Mutex<Option<VmmExit>>,
    evt: EventFd,
}

impl ExitHandle {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitHandle {
            reason: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn request(&self, reason: VmmExit) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            if let Err(e) = self.evt.write(1) {
                log::error!("cannot signal VM exit: {e}");
            }
        }
    }

    pub fn reason(&self) -> Option<VmmExit> {
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
        h.request(VmmExit::Reboot);
        h.request(VmmExit::Crash);
        assert_eq!(h.reason(), Some(VmmExit::Reboot));
        assert_eq!(h.eventfd().read().unwrap(), 1);
    }
}
