//! Rate limit for log lines a guest can trigger at will.

use std::fmt;

use log::Level;

/// How many guest-caused lines one device logs before going quiet.
const WARNINGS_PER_DEVICE: u32 = 16;

/// Logs the first few guest misbehaviours of a device; a hostile guest must
/// not be able to flood the host log (and the serial console behind it).
/// Every log line a guest can cause, however often it likes, goes through
/// one of these.
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

    /// A guest error (bad request, bad register write).
    pub(crate) fn warn(&mut self, args: fmt::Arguments) {
        self.log(Level::Warn, args);
    }

    /// A host failure the guest can make happen again and again (an I/O
    /// error on a bad sector it keeps reading).
    pub(crate) fn error(&mut self, args: fmt::Arguments) {
        self.log(Level::Error, args);
    }

    fn log(&mut self, level: Level, args: fmt::Arguments) {
        match self.left {
            0 => {}
            1 => {
                self.left = 0;
                log::log!(
                    level,
                    "{}: {} (further such messages not logged)",
                    self.name,
                    args
                );
            }
            _ => {
                self.left -= 1;
                log::log!(level, "{}: {}", self.name, args);
            }
        }
    }
}

/// Counts the log lines a piece of code emits on the calling thread, for
/// the tests that flood a device.
#[cfg(test)]
pub(crate) mod test_log {
    use std::cell::Cell;
    use std::sync::Once;

    use log::{LevelFilter, Log, Metadata, Record};

    thread_local! {
        static LINES: Cell<usize> = const { Cell::new(0) };
    }

    struct Counter;

    impl Log for Counter {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, _: &Record) {
            LINES.with(|n| n.set(n.get() + 1));
        }
        fn flush(&self) {}
    }

    static COUNTER: Counter = Counter;

    /// Runs `f` and returns how many lines it logged on this thread.
    pub(crate) fn lines_logged_by(f: impl FnOnce()) -> usize {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&COUNTER).expect("no other logger in the unit tests");
            log::set_max_level(LevelFilter::Trace);
        });
        let before = LINES.with(Cell::get);
        f();
        LINES.with(Cell::get) - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_a_bounded_number_of_times() {
        let mut complaints = Complaints::new("dev");
        let lines = test_log::lines_logged_by(|| {
            for i in 0..10_000 {
                complaints.warn(format_args!("bad thing {i}"));
                complaints.error(format_args!("host failure {i}"));
            }
        });
        assert_eq!(lines, WARNINGS_PER_DEVICE as usize);
    }
}
