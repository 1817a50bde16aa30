//! A host shutdown in progress: the guests were asked to stop (SIGTERM)
//! and have until the deadline; then they are killed, and after a grace
//! the machine goes down whatever is left. Pure: time is passed in, the
//! signals to send and what to log are returned.

use std::time::{Duration, Instant};

use super::logger::Notice;
use super::power::PowerAction;

/// After SIGKILL, how long to wait for the vmms to be reaped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// A vmm still running: its guest's name and pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running<'a> {
    pub name: &'a str,
    pub pid: i32,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Waiting,
    /// SIGKILL these pids now.
    Kill(Vec<i32>, Notice),
    /// Every vmm is gone (or the grace ran out): finish with the action.
    Done(PowerAction, Notice),
}

#[derive(Debug)]
pub struct Shutdown {
    action: PowerAction,
    deadline: Instant,
    killed_at: Option<Instant>,
}

impl Shutdown {
    /// Starts a shutdown; the caller sends SIGTERM to the `running` vmms
    /// (all at once: the wait is bounded by the slowest guest, not the sum).
    pub fn begin(
        action: PowerAction,
        timeout: Duration,
        running: usize,
        now: Instant,
    ) -> (Shutdown, Notice) {
        let notice = Notice::Info(format!(
            "{} requested: stopping {running} guest(s), waiting up to {} s",
            action.verb(),
            timeout.as_secs()
        ));
        let shutdown = Shutdown {
            action,
            deadline: now + timeout,
            killed_at: None,
        };
        (shutdown, notice)
    }

    /// Asked again (`action`) while shutting down: kill what is left now.
    pub fn again(&mut self, action: PowerAction, running: &[Running], now: Instant) -> Progress {
        self.killed_at.get_or_insert(now);
        Progress::Kill(
            running.iter().map(|r| r.pid).collect(),
            Notice::Warn(format!(
                "{} requested again: killing the remaining guests now",
                action.verb()
            )),
        )
    }

    /// When [`Shutdown::progress`] next has something to do.
    pub fn deadline(&self) -> Instant {
        self.killed_at.map_or(self.deadline, |k| k + KILL_GRACE)
    }

    /// Advances the shutdown, given the vmms still running.
    pub fn progress(&mut self, running: &[Running], now: Instant) -> Progress {
        if running.is_empty() {
            return Progress::Done(self.action, Notice::Info("all guests stopped".into()));
        }
        match self.killed_at {
            None if now >= self.deadline => {
                let names: Vec<&str> = running.iter().map(|r| r.name).collect();
                self.killed_at = Some(now);
                Progress::Kill(
                    running.iter().map(|r| r.pid).collect(),
                    Notice::Warn(format!(
                        "guests still running at the shutdown timeout: {}; killing them",
                        names.join(", ")
                    )),
                )
            }
            Some(at) if now >= at + KILL_GRACE => Progress::Done(
                self.action,
                Notice::Error("vmm processes survived SIGKILL; going down anyway".into()),
            ),
            _ => Progress::Waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const WEB: Running = Running {
        name: "web",
        pid: 10,
    };
    const DB: Running = Running {
        name: "db",
        pid: 11,
    };

    #[test]
    fn begin_says_what_it_waits_for() {
        let t0 = Instant::now();
        let (s, notice) = Shutdown::begin(PowerAction::PowerOff, secs(30), 2, t0);
        assert_eq!(
            notice.text(),
            "power off requested: stopping 2 guest(s), waiting up to 30 s"
        );
        assert_eq!(s.deadline(), t0 + secs(30));
    }

    #[test]
    fn done_as_soon_as_every_guest_is_gone() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(PowerAction::Reboot, secs(30), 1, t0);
        assert_eq!(s.progress(&[WEB], t0 + secs(1)), Progress::Waiting);
        assert_eq!(
            s.progress(&[], t0 + secs(2)),
            Progress::Done(
                PowerAction::Reboot,
                Notice::Info("all guests stopped".into())
            )
        );
    }

    #[test]
    fn the_timeout_kills_then_the_grace_gives_up() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(PowerAction::PowerOff, secs(30), 2, t0);
        assert_eq!(s.progress(&[WEB, DB], t0 + secs(29)), Progress::Waiting);
        assert_eq!(
            s.progress(&[WEB, DB], t0 + secs(30)),
            Progress::Kill(
                vec![10, 11],
                Notice::Warn(
                    "guests still running at the shutdown timeout: web, db; killing them".into()
                )
            )
        );
        assert_eq!(s.deadline(), t0 + secs(30) + KILL_GRACE);
        assert_eq!(s.progress(&[DB], t0 + secs(31)), Progress::Waiting);
        assert!(matches!(
            s.progress(&[DB], t0 + secs(30) + KILL_GRACE),
            Progress::Done(PowerAction::PowerOff, Notice::Error(_))
        ));
    }

    #[test]
    fn asking_again_kills_at_once() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(PowerAction::PowerOff, secs(30), 1, t0);
        assert_eq!(
            s.again(PowerAction::Reboot, &[WEB], t0 + secs(1)),
            Progress::Kill(
                vec![10],
                Notice::Warn("reboot requested again: killing the remaining guests now".into())
            )
        );
        assert_eq!(s.deadline(), t0 + secs(1) + KILL_GRACE);
        // The first action stands, and the grace is not restarted.
        s.again(PowerAction::Reboot, &[WEB], t0 + secs(2));
        assert_eq!(s.deadline(), t0 + secs(1) + KILL_GRACE);
        assert!(matches!(
            s.progress(&[WEB], t0 + secs(1) + KILL_GRACE),
            Progress::Done(PowerAction::PowerOff, _)
        ));
    }
}
