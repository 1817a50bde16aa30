//! The one console line that says how long the host took to come up:
//! logged once, when every autostart guest has been seen running, with
//! the time since the kernel handed over, when init itself started and
//! init's resident memory. Operators compare hosts and releases by it.

use std::time::Duration;

/// Waits for the first moment every autostart guest has run.
pub struct BootReport {
    init_started: Duration,
    done: bool,
}

/// One guest, as far as the report cares.
#[derive(Clone, Copy, Debug)]
pub struct GuestProgress {
    pub autostart: bool,
    /// Has reached `running` at least once since boot.
    pub has_run: bool,
}

impl BootReport {
    /// `init_started`: time since boot when init began.
    pub fn new(init_started: Duration) -> Self {
        BootReport {
            init_started,
            done: false,
        }
    }

    /// The report line, the first time every autostart guest has run;
    /// `None` before that, after that, and when no guest autostarts
    /// (an idle host has nothing to time).
    pub fn check(
        &mut self,
        guests: impl IntoIterator<Item = GuestProgress>,
        now: Duration,
        rss_kib: Option<u64>,
    ) -> Option<String> {
        if self.done {
            return None;
        }
        let mut count = 0usize;
        for g in guests.into_iter().filter(|g| g.autostart) {
            if !g.has_run {
                return None;
            }
            count += 1;
        }
        if count == 0 {
            return None;
        }
        self.done = true;
        let what = match count {
            1 => "1 guest running".to_string(),
            n => format!("all {n} guests running"),
        };
        let rss = rss_kib.map_or(String::new(), |k| format!(", init RSS {k} KiB"));
        Some(format!(
            "{what}, {} s after boot (init started at {} s){rss}",
            seconds(now),
            seconds(self.init_started)
        ))
    }
}

/// `1.234`: integer arithmetic, since float formatting would add 20 KiB
/// to the binary.
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Resident set size in KiB from the text of /proc/PID/status.
pub fn rss_kib(status: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim();
    let kib = value.strip_suffix("kB")?.trim();
    kib.parse().ok()
}

/// init's own resident memory, if /proc is there to say.
pub fn own_rss_kib() -> Option<u64> {
    rss_kib(&std::fs::read_to_string("/proc/self/status").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(autostart: bool, has_run: bool) -> GuestProgress {
        GuestProgress { autostart, has_run }
    }

    #[test]
    fn reports_once_when_every_autostart_guest_has_run() {
        let mut r = BootReport::new(Duration::from_millis(450));
        let now = Duration::from_millis(1234);
        assert_eq!(
            r.check([g(true, true), g(true, false)], now, Some(812)),
            None
        );
        assert_eq!(
            r.check(
                [g(true, true), g(true, true), g(false, false)],
                now,
                Some(812)
            ),
            Some(
                "all 2 guests running, 1.234 s after boot (init started at 0.450 s), \
                 init RSS 812 KiB"
                    .to_string()
            )
        );
        assert_eq!(
            r.check([g(true, true), g(true, true)], now, Some(812)),
            None
        );
    }

    #[test]
    fn one_guest_and_unknown_rss() {
        let mut r = BootReport::new(Duration::from_secs(1));
        assert_eq!(
            r.check([g(true, true)], Duration::from_secs(3), None),
            Some("1 guest running, 3.000 s after boot (init started at 1.000 s)".to_string())
        );
    }

    #[test]
    fn nothing_to_report_without_autostart_guests() {
        let mut r = BootReport::new(Duration::ZERO);
        let now = Duration::from_secs(5);
        assert_eq!(r.check([], now, None), None);
        assert_eq!(r.check([g(false, true)], now, None), None);
        // Still armed: a later config with guests gets its report.
        assert!(r.check([g(true, true)], now, None).is_some());
    }

    #[test]
    fn rss_from_proc_status() {
        let status = "Name:\tinit\nVmPeak:\t    1400 kB\nVmRSS:\t     812 kB\nThreads:\t1\n";
        assert_eq!(rss_kib(status), Some(812));
        assert_eq!(rss_kib("Name:\tinit\n"), None);
        assert_eq!(rss_kib("VmRSS:\t812 pages\n"), None);
    }

    #[test]
    fn own_rss_is_readable_here() {
        let kib = own_rss_kib().expect("VmRSS in /proc/self/status");
        assert!(kib > 0);
    }
}
