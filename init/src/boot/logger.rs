//! Log backend for PID 1: every record goes to the console (fd 2) and to
//! the kernel ring buffer (/dev/kmsg), each prefixed with the time since boot.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Longest record the kernel accepts from /dev/kmsg without truncating it
/// itself; longer lines are cut here so one write stays one record.
const KMSG_MAX: usize = 976;

struct InitLogger {
    kmsg: OnceLock<File>,
}

static LOGGER: InitLogger = InitLogger {
    kmsg: OnceLock::new(),
};

/// Time since boot, the same clock the kernel stamps its own messages
/// with, so both streams line up on the console.
pub fn uptime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // Boot time is never negative and nanoseconds stay below 10^9.
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn level_tag(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR ",
        Level::Warn => "WARN ",
        Level::Info => "",
        Level::Debug => "debug ",
        Level::Trace => "trace ",
    }
}

impl Log for InitLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let up = uptime();
        let (sec, usec) = (up.as_secs(), up.subsec_micros());
        let tag = level_tag(record.level());
        let line = format!("[{sec:5}.{usec:06}] init: {tag}{}\n", record.args());
        // The console may be gone or wedged; PID 1 carries on regardless.
        let _ = std::io::stderr().write_all(line.as_bytes());

        if let Some(mut kmsg) = self.kmsg.get() {
            // Priority 7 (debug) keeps the kernel from echoing the record
            // to the console a second time; the level is in the text.
            let text = format!("<7>init: {tag}{}", record.args());
            let mut end = text.len().min(KMSG_MAX);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let _ = kmsg.write_all(text.as_bytes().get(..end).unwrap_or_default());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. Call after /dev and /proc are mounted; before
/// that only the console receives records.
pub fn init(level: LevelFilter) {
    if let Ok(file) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = LOGGER.kmsg.set(file);
    }
    // Userspace writes to /dev/kmsg are rate limited by default, which
    // would silently drop boot-time records.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// A message a pure state machine asks its caller to log, so tests can
/// see what an operator would read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Warn(String),
    Error(String),
}

impl Notice {
    /// Logs the message at its level.
    pub fn log(&self) {
        let level = match self {
            Notice::Info(_) => Level::Info,
            Notice::Warn(_) => Level::Warn,
            Notice::Error(_) => Level::Error,
        };
        log::log!(level, "{}", self.text());
    }

    pub fn text(&self) -> &str {
        match self {
            Notice::Info(m) | Notice::Warn(m) | Notice::Error(m) => m,
        }
    }
}
