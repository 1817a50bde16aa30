//! Log lines on stderr, tagged with the guest name so init can interleave
//! several VMMs' output on one console and still tell them apart.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    tag: OnceLock<String>,
    /// Whether lines carry the tag at all: on a terminal several VMMs may
    /// share, yes; on a pipe (init gives each vmm its own and prefixes the
    /// lines with the guest name itself) the tag would only repeat it.
    tagged: OnceLock<bool>,
}

static LOGGER: StderrLogger = StderrLogger {
    tag: OnceLock::new(),
    tagged: OnceLock::new(),
};

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let tag = match self.tagged.get() {
            Some(false) => "",
            _ => self.tag.get().map(String::as_str).unwrap_or("vmm: "),
        };
        let level = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug => "debug: ",
            Level::Trace => "trace: ",
        };
        // One write per line keeps lines from different threads whole.
        let line = format!("{tag}{level}{}\n", record.args());
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

pub fn init(verbose: bool) {
    // Only fails if a logger is already set, which means init ran before.
    let _ = log::set_logger(&LOGGER);
    let _ = LOGGER.tagged.set(std::io::stderr().is_terminal());
    log::set_max_level(if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
}

/// Tags subsequent lines with the guest's name (`vmm[web]: ...`).
pub fn set_guest(name: &str) {
    let _ = LOGGER.tag.set(format!("vmm[{name}]: "));
}
