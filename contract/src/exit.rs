//! What a vmm's exit code means. The vmm turns the reason its guest
//! stopped into [`VmmExit::code`]; init reads the code back with
//! [`VmmExit::from_code`] and decides whether to restart.

use std::fmt;

/// Why a vmm process ended, as told by its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmmExit {
    /// The guest powered itself off.
    PoweredOff,
    /// The vmm itself failed (a device, KVM or host error).
    Error,
    /// Bad command line, invalid definition or unusable kernel/initrd:
    /// restarting cannot help until the definition changes.
    Invalid,
    /// The guest asked for a reboot (i8042 reset line, ACPI reset).
    Reboot,
    /// Triple fault, failed VM entry or KVM internal error.
    Crash,
    /// The host stopped the guest: SIGTERM, or the shutdown timeout.
    StoppedByHost,
}

impl VmmExit {
    /// Every reason, in code order.
    pub const ALL: [VmmExit; 6] = [
        VmmExit::PoweredOff,
        VmmExit::Error,
        VmmExit::Invalid,
        VmmExit::Reboot,
        VmmExit::Crash,
        VmmExit::StoppedByHost,
    ];

    /// The process exit code for this reason.
    pub const fn code(self) -> i32 {
        match self {
            VmmExit::PoweredOff => 0,
            VmmExit::Error => 1,
            VmmExit::Invalid => 2,
            VmmExit::Reboot => 3,
            VmmExit::Crash => 4,
            VmmExit::StoppedByHost => 5,
        }
    }

    /// The reason behind an exit code; `None` for a code no vmm gives.
    pub fn from_code(code: i32) -> Option<VmmExit> {
        VmmExit::ALL.into_iter().find(|e| e.code() == code)
    }

    /// Failures are what a restart policy of `on-failure` reacts to: every
    /// reason but a clean power-off, a reboot and a stop by the host.
    pub const fn is_failure(self) -> bool {
        !matches!(
            self,
            VmmExit::PoweredOff | VmmExit::Reboot | VmmExit::StoppedByHost
        )
    }
}

impl fmt::Display for VmmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            VmmExit::PoweredOff => "guest powered off",
            VmmExit::Error => "vmm error",
            VmmExit::Invalid => "invalid definition or kernel",
            VmmExit::Reboot => "guest rebooted",
            VmmExit::Crash => "guest crashed",
            VmmExit::StoppedByHost => "stopped by host",
        };
        write!(f, "{what} (exit {})", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for e in VmmExit::ALL {
            assert_eq!(VmmExit::from_code(e.code()), Some(e));
        }
        assert_eq!(VmmExit::from_code(6), None);
        assert_eq!(VmmExit::from_code(-1), None);
    }

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<i32> = VmmExit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn failures() {
        let failing: Vec<VmmExit> = VmmExit::ALL
            .into_iter()
            .filter(|e| e.is_failure())
            .collect();
        assert_eq!(
            failing,
            vec![VmmExit::Error, VmmExit::Invalid, VmmExit::Crash]
        );
    }

    #[test]
    fn display_names_the_code() {
        assert_eq!(VmmExit::Reboot.to_string(), "guest rebooted (exit 3)");
    }
}
