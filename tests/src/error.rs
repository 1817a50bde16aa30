//! Errors that explain themselves: every failure that happens while QEMU runs
//! carries the end of the console, QEMU's own messages and the log path.

use std::fmt;
use std::path::PathBuf;

/// How many console lines a failure shows.
pub const TAIL_LINES: usize = 60;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// QEMU could not be started, or did not come up.
    Spawn,
    /// The awaited output or event did not happen in time.
    Timeout,
    /// QEMU exited while something was still awaited.
    Exited,
    /// The console printed a failure pattern (e.g. a kernel panic) first.
    ConsoleFailure,
    /// The QEMU monitor (QMP) failed or refused a command.
    Monitor,
    /// A pattern given by the test is not a valid regex.
    Pattern,
    /// Other I/O failure (temp dir, firmware copy, console input).
    Io,
}

/// What the console looked like when the error happened.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub console_tail: Vec<String>,
    pub qemu_stderr: Vec<String>,
    pub log: Option<PathBuf>,
}

/// A harness error. `Debug` prints the same report as `Display`, so a test
/// returning `Result<(), hv_tests::Error>` shows the console on failure.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    snapshot: Option<Snapshot>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            snapshot: None,
        }
    }

    pub(crate) fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The one-line reason, without the console report.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The console at the time of the error, when QEMU was running.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        let Some(snap) = &self.snapshot else {
            return Ok(());
        };
        if snap.console_tail.is_empty() {
            write!(f, "\n--- console: no output ---")?;
        } else {
            write!(
                f,
                "\n--- console, last {} lines ---",
                snap.console_tail.len()
            )?;
            for line in &snap.console_tail {
                write!(f, "\n{line}")?;
            }
        }
        if !snap.qemu_stderr.is_empty() {
            write!(f, "\n--- qemu stderr ---")?;
            for line in &snap.qemu_stderr {
                write!(f, "\n{line}")?;
            }
        }
        if let Some(log) = &snap.log {
            write!(f, "\n--- full log: {} ---", log.display())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {self}", self.kind)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shows_reason_console_stderr_and_log() {
        let err =
            Error::new(ErrorKind::Timeout, "no `hv-init` after 90s").with_snapshot(Snapshot {
                console_tail: vec!["Linux version 6.12".into(), "Kernel panic".into()],
                qemu_stderr: vec!["qemu: warning".into()],
                log: Some(PathBuf::from("/tmp/x.log")),
            });
        let text = err.to_string();
        assert_eq!(
            text,
            "no `hv-init` after 90s\n--- console, last 2 lines ---\nLinux version 6.12\nKernel panic\n\
             --- qemu stderr ---\nqemu: warning\n--- full log: /tmp/x.log ---"
        );
        assert_eq!(format!("{err:?}"), format!("Timeout: {text}"));
    }

    #[test]
    fn report_says_when_the_console_was_silent() {
        let err = Error::new(ErrorKind::Exited, "QEMU exited").with_snapshot(Snapshot::default());
        assert_eq!(err.to_string(), "QEMU exited\n--- console: no output ---");
    }
}
