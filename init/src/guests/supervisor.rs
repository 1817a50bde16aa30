//! Life cycle of one guest: when to (re)start its vmm, with what delay,
//! and when to give up. Pure: time is passed in, effects are returned.

use std::fmt;
use std::time::{Duration, Instant};

use heapless::Deque;
use hvconfig::guest::RestartPolicy;
use hvcontract::VmmExit;

pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A guest that fails this often within `CRASH_LOOP_WINDOW` is left
/// stopped: restarting it only floods the console and burns CPU.
pub const CRASH_LOOP_FAILURES: usize = 5;
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// A run at least this long wipes the backoff: the guest was healthy.
pub const STABLE_RUN: Duration = Duration::from_secs(60);
/// A vmm that stays up this long (or prints guest output sooner) has got
/// past loading its definition and kernel, so the guest counts as running.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// How a vmm process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// An exit code the vmm gives (see `hvcontract::VmmExit`).
    Vmm(VmmExit),
    /// An exit code no vmm gives.
    UnknownCode(i32),
    Signal(i32),
    /// The vmm could not even be started (jail or exec failure).
    SpawnFailed,
}

impl Exit {
    /// What an exit status code means.
    pub fn from_code(code: i32) -> Exit {
        VmmExit::from_code(code).map_or(Exit::UnknownCode(code), Exit::Vmm)
    }

    /// Everything but a power-off, a guest-requested reboot and a stop by
    /// the host is a failure; so are unknown codes, signals and failed
    /// spawns.
    pub fn is_failure(self) -> bool {
        match self {
            Exit::Vmm(e) => e.is_failure(),
            Exit::UnknownCode(_) | Exit::Signal(_) | Exit::SpawnFailed => true,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Vmm(e) => e.fmt(f),
            Exit::UnknownCode(code) => write!(f, "exit {code}"),
            Exit::Signal(sig) => write!(f, "killed by signal {sig}"),
            Exit::SpawnFailed => f.write_str("could not be started"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running and not scheduled to run.
    Stopped,
    /// vmm spawned, guest not yet seen alive.
    Starting {
        pid: i32,
    },
    Running {
        pid: i32,
    },
    /// Waiting before the next restart.
    BackingOff {
        until: Instant,
    },
    /// Ended in failure and will not be restarted.
    Failed,
    /// Asked to stop (host shutdown), waiting for the vmm to exit.
    Stopping {
        pid: i32,
    },
}

impl State {
    pub fn pid(self) -> Option<i32> {
        match self {
            State::Starting { pid } | State::Running { pid } | State::Stopping { pid } => Some(pid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::BackingOff { .. } => "backing off",
            State::Failed => "failed",
            State::Stopping { .. } => "stopping",
        }
    }
}

/// What the supervisor decided after a vmm exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    RestartAfter(Duration),
    /// Policy says no restart.
    Stay,
    /// Too many failures in a row.
    CrashLoop,
    /// The vmm rejected the definition or kernel: the config partition is
    /// read-only for this boot, so a restart would only fail the same way.
    Invalid,
    /// Host is shutting down.
    ShuttingDown,
}

/// What the caller should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Start,
    /// The vmm has survived start-up: state changed to running.
    NowRunning,
}

#[derive(Debug)]
pub struct Supervisor {
    policy: RestartPolicy,
    state: State,
    restarts: u32,
    backoff: Duration,
    started_at: Option<Instant>,
    failures: Deque<Instant, CRASH_LOOP_FAILURES>,
    shutting_down: bool,
    has_run: bool,
}

impl Supervisor {
    pub fn new(policy: RestartPolicy) -> Self {
        Supervisor {
            policy,
            state: State::Stopped,
            restarts: 0,
            backoff: BACKOFF_FIRST,
            started_at: None,
            failures: Deque::new(),
            shutting_down: false,
            has_run: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Whether the guest has been `running` at least once.
    pub fn has_run(&self) -> bool {
        self.has_run
    }

    /// Schedules the first start (autostart).
    pub fn request_start(&mut self, now: Instant) {
        if !self.shutting_down && self.state.pid().is_none() {
            self.state = State::BackingOff { until: now };
        }
    }

    pub fn spawned(&mut self, pid: i32, now: Instant) {
        self.state = State::Starting { pid };
        self.started_at = Some(now);
    }

    /// Guest output is proof of life.
    pub fn output_seen(&mut self) -> bool {
        if let State::Starting { pid } = self.state {
            self.state = State::Running { pid };
            self.has_run = true;
            return true;
        }
        false
    }

    /// Timer-driven work: start a guest whose backoff expired, promote a
    /// vmm that survived start-up.
    pub fn poll(&mut self, now: Instant) -> Action {
        match self.state {
            State::BackingOff { until } if now >= until && !self.shutting_down => Action::Start,
            State::Starting { pid } => {
                let up_for = self
                    .started_at
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                if up_for >= STARTUP_GRACE {
                    self.state = State::Running { pid };
                    self.has_run = true;
                    Action::NowRunning
                } else {
                    Action::None
                }
            }
            _ => Action::None,
        }
    }

    /// When `poll` next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::BackingOff { until } if !self.shutting_down => Some(until),
            State::Starting { .. } => self.started_at.map(|t| t + STARTUP_GRACE),
            _ => None,
        }
    }

    /// Records a vmm exit (or a failed spawn) and decides what follows.
    pub fn exited(&mut self, exit: Exit, now: Instant) -> Verdict {
        let ran_for = self
            .started_at
            .take()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if self.shutting_down {
            self.state = State::Stopped;
            return Verdict::ShuttingDown;
        }
        if ran_for >= STABLE_RUN {
            self.backoff = BACKOFF_FIRST;
        }
        if exit == Exit::Vmm(VmmExit::Invalid) {
            self.state = State::Failed;
            return Verdict::Invalid;
        }
        if exit.is_failure() && self.record_failure(now) {
            self.state = State::Failed;
            return Verdict::CrashLoop;
        }
        let restart = match self.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit.is_failure() || exit == Exit::Vmm(VmmExit::Reboot),
            RestartPolicy::Never => false,
        };
        if !restart {
            self.state = if exit.is_failure() {
                State::Failed
            } else {
                State::Stopped
            };
            return Verdict::Stay;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.restarts = self.restarts.saturating_add(1);
        self.state = State::BackingOff { until: now + delay };
        Verdict::RestartAfter(delay)
    }

    /// Remembers a failure; true when it completes a crash loop.
    fn record_failure(&mut self, now: Instant) -> bool {
        if self.failures.is_full() {
            self.failures.pop_front();
        }
        // Cannot fail: a slot was just freed.
        let _ = self.failures.push_back(now);
        self.failures.is_full()
            && self
                .failures
                .front()
                .is_some_and(|first| now.saturating_duration_since(*first) <= CRASH_LOOP_WINDOW)
    }

    /// Host shutdown: no more restarts. Returns the pid to signal, if any.
    pub fn begin_shutdown(&mut self) -> Option<i32> {
        self.shutting_down = true;
        match self.state {
            State::Starting { pid } | State::Running { pid } | State::Stopping { pid } => {
                self.state = State::Stopping { pid };
                Some(pid)
            }
            State::BackingOff { .. } => {
                self.state = State::Stopped;
                None
            }
            State::Stopped | State::Failed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Starts the guest at `t` and lets the vmm exit `after` later.
    fn run_once(sup: &mut Supervisor, t: Instant, after: Duration, exit: Exit) -> Verdict {
        assert_eq!(sup.poll(t), Action::Start);
        sup.spawned(100, t);
        sup.exited(exit, t + after)
    }

    #[test]
    fn exits_read_as_the_tests_and_operators_expect() {
        for (exit, text) in [
            (Exit::from_code(0), "guest powered off (exit 0)"),
            (Exit::from_code(1), "vmm error (exit 1)"),
            (Exit::from_code(2), "invalid definition or kernel (exit 2)"),
            (Exit::from_code(3), "guest rebooted (exit 3)"),
            (Exit::from_code(4), "guest crashed (exit 4)"),
            (Exit::from_code(5), "stopped by host (exit 5)"),
            (Exit::from_code(77), "exit 77"),
            (Exit::Signal(9), "killed by signal 9"),
            (Exit::SpawnFailed, "could not be started"),
        ] {
            assert_eq!(exit.to_string(), text);
        }
        assert_eq!(Exit::from_code(77), Exit::UnknownCode(77));
        assert!(Exit::UnknownCode(77).is_failure());
        assert!(!Exit::Vmm(VmmExit::Reboot).is_failure());
    }

    #[test]
    fn first_start_and_promotion_to_running() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        assert_eq!(sup.state(), State::Stopped);
        assert_eq!(sup.poll(t0), Action::None);
        sup.request_start(t0);
        assert_eq!(sup.poll(t0), Action::Start);
        sup.spawned(42, t0);
        assert_eq!(sup.state(), State::Starting { pid: 42 });
        assert_eq!(sup.deadline(), Some(t0 + STARTUP_GRACE));
        assert_eq!(sup.poll(t0 + secs(1)), Action::None);
        assert!(!sup.has_run());
        assert_eq!(sup.poll(t0 + STARTUP_GRACE), Action::NowRunning);
        assert_eq!(sup.state(), State::Running { pid: 42 });
        assert!(sup.has_run());
    }

    #[test]
    fn output_promotes_to_running_at_once() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.spawned(7, t0);
        assert!(sup.output_seen());
        assert_eq!(sup.state(), State::Running { pid: 7 });
        assert!(sup.has_run());
        assert!(!sup.output_seen());
    }

    #[test]
    fn has_run_outlives_the_run() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.spawned(7, t0);
        assert_eq!(
            sup.exited(Exit::from_code(1), t0 + secs(1)),
            Verdict::RestartAfter(secs(1))
        );
        assert!(!sup.has_run(), "a vmm that died starting never ran");
        sup.spawned(8, t0 + secs(2));
        assert!(sup.output_seen());
        sup.exited(Exit::from_code(1), t0 + secs(3));
        assert!(sup.has_run());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut t = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.request_start(t);
        let mut delays = Vec::new();
        // Clean power-offs never count as a crash loop, so the backoff
        // can be watched all the way to its cap.
        for _ in 0..9 {
            match run_once(&mut sup, t, secs(1), Exit::from_code(0)) {
                Verdict::RestartAfter(d) => {
                    delays.push(d.as_secs());
                    t += secs(1) + d;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(sup.restarts(), 9);
    }

    #[test]
    fn backing_off_waits_for_its_deadline() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.spawned(1, t0);
        assert_eq!(
            sup.exited(Exit::from_code(4), t0 + secs(5)),
            Verdict::RestartAfter(secs(1))
        );
        assert_eq!(sup.state().name(), "backing off");
        assert_eq!(sup.deadline(), Some(t0 + secs(6)));
        assert_eq!(sup.poll(t0 + secs(5)), Action::None);
        assert_eq!(sup.poll(t0 + secs(6)), Action::Start);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.spawned(1, t0);
        assert_eq!(
            sup.exited(Exit::from_code(1), t0 + secs(1)),
            Verdict::RestartAfter(secs(1))
        );
        sup.spawned(2, t0 + secs(2));
        assert_eq!(
            sup.exited(Exit::from_code(1), t0 + secs(3)),
            Verdict::RestartAfter(secs(2))
        );
        sup.spawned(3, t0 + secs(5));
        assert_eq!(
            sup.exited(Exit::from_code(1), t0 + secs(5) + STABLE_RUN),
            Verdict::RestartAfter(secs(1))
        );
    }

    #[test]
    fn five_failures_in_a_minute_is_a_crash_loop() {
        let mut t = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.request_start(t);
        for i in 0..4 {
            let v = run_once(&mut sup, t, Duration::from_millis(500), Exit::from_code(1));
            assert!(matches!(v, Verdict::RestartAfter(_)), "failure {i}: {v:?}");
            if let State::BackingOff { until } = sup.state() {
                t = until;
            }
        }
        // 1 + 2 + 4 + 8 s of backoff plus run time: well inside 60 s.
        assert_eq!(
            run_once(&mut sup, t, Duration::from_millis(500), Exit::Signal(9)),
            Verdict::CrashLoop
        );
        assert_eq!(sup.state(), State::Failed);
        assert_eq!(sup.poll(t + secs(3600)), Action::None);
        assert_eq!(sup.deadline(), None);
    }

    #[test]
    fn failures_spread_out_are_not_a_crash_loop() {
        let mut t = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::OnFailure);
        sup.request_start(t);
        for _ in 0..8 {
            let v = run_once(&mut sup, t, secs(20), Exit::from_code(4));
            assert!(matches!(v, Verdict::RestartAfter(_)), "{v:?}");
            if let State::BackingOff { until } = sup.state() {
                t = until;
            }
        }
    }

    #[test]
    fn on_failure_policy() {
        let t0 = Instant::now();
        for (exit, verdict, state) in [
            (Exit::from_code(0), Verdict::Stay, "stopped"),
            (Exit::from_code(5), Verdict::Stay, "stopped"),
            (
                Exit::from_code(3),
                Verdict::RestartAfter(secs(1)),
                "backing off",
            ),
            (
                Exit::from_code(1),
                Verdict::RestartAfter(secs(1)),
                "backing off",
            ),
            (Exit::from_code(2), Verdict::Invalid, "failed"),
            (
                Exit::from_code(4),
                Verdict::RestartAfter(secs(1)),
                "backing off",
            ),
            (
                Exit::Signal(9),
                Verdict::RestartAfter(secs(1)),
                "backing off",
            ),
            (
                Exit::SpawnFailed,
                Verdict::RestartAfter(secs(1)),
                "backing off",
            ),
        ] {
            let mut sup = Supervisor::new(RestartPolicy::OnFailure);
            sup.spawned(1, t0);
            assert_eq!(sup.exited(exit, t0 + secs(1)), verdict, "{exit:?}");
            assert_eq!(sup.state().name(), state, "{exit:?}");
        }
    }

    #[test]
    fn a_rejected_definition_is_not_restarted_even_under_always() {
        let t0 = Instant::now();
        let mut sup = Supervisor::new(RestartPolicy::Always);
        sup.spawned(1, t0);
        assert_eq!(
            sup.exited(Exit::from_code(2), t0 + secs(1)),
            Verdict::Invalid
        );
        assert_eq!(sup.state(), State::Failed);
        assert_eq!(sup.poll(t0 + secs(3600)), Action::None);
        assert_eq!(sup.restarts(), 0);
    }

    #[test]
    fn never_policy() {
        let t0 = Instant::now();
        for (exit, state) in [
            (Exit::from_code(0), State::Stopped),
            (Exit::from_code(3), State::Stopped),
            (Exit::from_code(4), State::Failed),
        ] {
            let mut sup = Supervisor::new(RestartPolicy::Never);
            sup.spawned(1, t0);
            assert_eq!(sup.exited(exit, t0 + secs(1)), Verdict::Stay);
            assert_eq!(sup.state(), state);
            assert_eq!(sup.restarts(), 0);
        }
    }

    #[test]
    fn shutdown_stops_restarts() {
        let t0 = Instant::now();
        let mut running = Supervisor::new(RestartPolicy::Always);
        running.spawned(9, t0);
        assert_eq!(running.begin_shutdown(), Some(9));
        assert_eq!(running.state(), State::Stopping { pid: 9 });
        assert_eq!(
            running.exited(Exit::from_code(1), t0 + secs(1)),
            Verdict::ShuttingDown
        );
        assert_eq!(running.state(), State::Stopped);

        let mut waiting = Supervisor::new(RestartPolicy::Always);
        waiting.request_start(t0);
        assert_eq!(waiting.begin_shutdown(), None);
        assert_eq!(waiting.poll(t0 + secs(10)), Action::None);
        waiting.request_start(t0);
        assert_eq!(waiting.state(), State::Stopped);
    }
}
