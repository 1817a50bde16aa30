//! The last step of every shutdown: flush, then hand the machine back.

use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};

/// What the operator asked the machine to do at the end of a shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl PowerAction {
    pub fn verb(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "power off",
            PowerAction::Reboot => "reboot",
        }
    }
}

/// Routes Ctrl-Alt-Del to init as SIGINT instead of an immediate reboot,
/// so guests get their clean shutdown first.
pub fn route_ctrl_alt_del_to_init() {
    if let Err(e) = set_cad_enabled(false) {
        log::warn!("cannot route Ctrl-Alt-Del to init: {e}");
    }
}

/// Syncs and powers off or reboots. Only returns control if the kernel
/// refuses, in which case PID 1 keeps idling rather than exiting (an
/// exiting PID 1 panics the kernel).
pub fn finish(action: PowerAction) -> ! {
    nix::unistd::sync();
    let mode = match action {
        PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
    };
    log::info!("{}", action.verb());
    let err = match reboot(mode) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // Fall back to halt, which needs no firmware support.
    log::error!("{} failed: {err}; halting", action.verb());
    let _ = reboot(RebootMode::RB_HALT_SYSTEM);
    loop {
        nix::unistd::pause();
    }
}
