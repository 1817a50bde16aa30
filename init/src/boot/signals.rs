//! Signals PID 1 reacts to, delivered through a signalfd so the event
//! loop sees them as ordinary readable events.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::boot::power::PowerAction;

/// What a delivered signal means to init.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    ChildExited,
    Shutdown(PowerAction),
    Ignored,
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGUSR2,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        set.add(sig);
    }
    set
}

/// Blocks the handled signals and opens a signalfd for them. Blocked
/// signals are queued even for PID 1, which would otherwise drop signals
/// it has no handler for.
pub fn open() -> nix::Result<SignalFd> {
    let set = handled();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

pub fn classify(signo: u32) -> SignalEvent {
    match Signal::try_from(signo as i32) {
        Ok(Signal::SIGCHLD) => SignalEvent::ChildExited,
        // SIGTERM/SIGUSR2 are what `poweroff` tools and the kernel's
        // orderly_poweroff send; SIGPWR is the UPS convention.
        Ok(Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR) => {
            SignalEvent::Shutdown(PowerAction::PowerOff)
        }
        // Ctrl-Alt-Del arrives as SIGINT once CAD is routed to init.
        Ok(Signal::SIGINT) => SignalEvent::Shutdown(PowerAction::Reboot),
        _ => SignalEvent::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_meanings() {
        assert_eq!(
            classify(libc::SIGTERM as u32),
            SignalEvent::Shutdown(PowerAction::PowerOff)
        );
        assert_eq!(
            classify(libc::SIGUSR2 as u32),
            SignalEvent::Shutdown(PowerAction::PowerOff)
        );
        assert_eq!(
            classify(libc::SIGINT as u32),
            SignalEvent::Shutdown(PowerAction::Reboot)
        );
        assert_eq!(classify(libc::SIGCHLD as u32), SignalEvent::ChildExited);
        assert_eq!(classify(libc::SIGHUP as u32), SignalEvent::Ignored);
    }
}
