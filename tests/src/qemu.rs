//! A running QEMU machine.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::builder::{compile, QemuBuilder};
use crate::console::{Console, Waited};
use crate::error::{Error, ErrorKind, Snapshot, TAIL_LINES};
use crate::log::Log;
use crate::paths::logs_dir;
use crate::qmp::{Qmp, QmpError};
use crate::timeouts::scaled;

/// How long QEMU may take to open its monitor socket (nominal, scaled).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a monitor command may take to answer (nominal, scaled).
const MONITOR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long QEMU may take to exit after `quit` (nominal, scaled).
const QUIT_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
/// How long to listen for monitor events that may still be on their way.
const EVENT_POLL: Duration = Duration::from_millis(100);

/// A QEMU process with its serial console captured and its QMP monitor
/// connected. QEMU is killed when this is dropped, also when the test panics.
///
/// Console waits keep a cursor: each successful wait moves it past the line
/// that matched, so consecutive waits see the console in order.
pub struct Qemu {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Console>,
    log: Arc<Log>,
    qmp: Option<Qmp>,
    events: Vec<Value>,
    fail_patterns: Vec<Regex>,
    cursor: u64,
    started: Instant,
    status: Option<ExitStatus>,
    run_dir: TempDir,
}

impl Qemu {
    /// Starts describing a machine; `name` names the log file.
    pub fn builder(name: &str) -> QemuBuilder {
        QemuBuilder::new(name)
    }

    pub(crate) fn spawn(builder: QemuBuilder) -> Result<Self, Error> {
        let io_err =
            |what: &str, e: std::io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
        let run_dir = tempfile::Builder::new()
            .prefix("hv-e2e-")
            .tempdir()
            .map_err(|e| io_err("creating the run directory", e))?;
        let fail_patterns = builder.compiled_fail_patterns()?;
        let args = builder.qemu_args(run_dir.path())?;
        let program = QemuBuilder::program();
        let started = Instant::now();
        let log = Log::create(&logs_dir(), builder.name(), started)
            .map_err(|e| io_err(&format!("creating the log in {}", logs_dir().display()), e))?;
        let log = Arc::new(log);
        log.line("harness", &format!("{program} {}", shell_words(&args)));

        let mut command = Command::new(&program);
        command
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // Dying with the test process (even on SIGKILL, where Drop cannot
        // run) keeps stray QEMUs from eating the CPUs of later runs.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            Error::new(
                ErrorKind::Spawn,
                format!("cannot start {program}: {e} (is qemu-system-x86 installed?)"),
            )
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let console = Console::capture(stdout, stderr, Arc::clone(&log));
        let mut qemu = Self {
            stdin: child.stdin.take(),
            child,
            console,
            log,
            qmp: None,
            events: Vec::new(),
            fail_patterns,
            cursor: 0,
            started,
            status: None,
            run_dir,
        };
        qemu.qmp = Some(qemu.connect_monitor()?);
        Ok(qemu)
    }

    /// Waits for the monitor socket; fails early if QEMU exits (bad
    /// arguments, missing file), with its complaint in the error.
    fn connect_monitor(&mut self) -> Result<Qmp, Error> {
        let socket = self.run_dir.path().join("qmp.sock");
        let deadline = Instant::now() + scaled(STARTUP_TIMEOUT);
        loop {
            if let Some(status) = self.try_reap() {
                // Let the stderr reader catch QEMU's last words.
                self.console
                    .wait_closed(Instant::now() + Duration::from_secs(1));
                thread::sleep(Duration::from_millis(100));
                return Err(self.error(
                    ErrorKind::Spawn,
                    format!("QEMU exited during startup ({status})"),
                ));
            }
            if socket.exists() {
                match Qmp::connect(&socket, scaled(MONITOR_TIMEOUT)) {
                    Ok(qmp) => return Ok(qmp),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(self.error(ErrorKind::Spawn, format!("QMP monitor: {e}")));
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(self.error(ErrorKind::Spawn, "QEMU did not open its monitor socket"));
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until a complete console line after the cursor matches the
    /// regex `pattern`, and returns that line (escape sequences removed).
    ///
    /// `timeout` is nominal: it is multiplied by `HV_E2E_TIMEOUT_SCALE`.
    /// Fails at once if QEMU exits or the console shows a failure pattern
    /// (see [`QemuBuilder::fail_on`]); the error shows the last 60 lines.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<String, Error> {
        let regex = compile(pattern)?;
        self.wait_for_regex(regex, &format!("/{pattern}/"), false, timeout)
    }

    /// Like [`Qemu::wait_for`], for a literal piece of text.
    pub fn wait_for_text(&mut self, text: &str, timeout: Duration) -> Result<String, Error> {
        let regex = compile(&regex::escape(text))?;
        self.wait_for_regex(regex, &format!("{text:?}"), false, timeout)
    }

    /// Like [`Qemu::wait_for`], but also matches the line still being
    /// written: for prompts that wait for input without a newline.
    pub fn wait_for_prompt(&mut self, pattern: &str, timeout: Duration) -> Result<String, Error> {
        let regex = compile(pattern)?;
        self.wait_for_regex(regex, &format!("prompt /{pattern}/"), true, timeout)
    }

    fn wait_for_regex(
        &mut self,
        wanted: Regex,
        shown: &str,
        partial: bool,
        timeout: Duration,
    ) -> Result<String, Error> {
        let timeout = scaled(timeout);
        let mut patterns = vec![wanted];
        patterns.extend(self.fail_patterns.iter().cloned());
        match self
            .console
            .wait_for(self.cursor, &patterns, partial, Instant::now() + timeout)
        {
            Waited::Found(found) => {
                self.cursor = found.next;
                if found.pattern == 0 {
                    self.log.line("harness", &format!("matched {shown}"));
                    Ok(found.line)
                } else {
                    let failure = &patterns[found.pattern];
                    Err(self.error(
                        ErrorKind::ConsoleFailure,
                        format!(
                            "console showed /{failure}/ while waiting for {shown}: {}",
                            found.line
                        ),
                    ))
                }
            }
            Waited::TimedOut => Err(self.error(
                ErrorKind::Timeout,
                format!("no console line matched {shown} within {timeout:.0?}"),
            )),
            Waited::Closed => {
                let status = self.reap_within(Duration::from_secs(5));
                let status = status.map_or("still running".into(), |s| s.to_string());
                Err(self.error(
                    ErrorKind::Exited,
                    format!("QEMU exited ({status}) while waiting for {shown}"),
                ))
            }
        }
    }

    /// Moves the cursor to the end of the console: later waits only see
    /// output printed from now on.
    pub fn skip_console(&mut self) {
        self.cursor = self.console.end();
    }

    /// Types `text` on the serial console.
    pub fn send_console(&mut self, text: &str) -> Result<(), Error> {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(text.as_bytes()).and_then(|_| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        result.map_err(|e| self.error(ErrorKind::Io, format!("writing to the serial console: {e}")))
    }

    /// Runs a QMP command (e.g. `query-status`) and returns its result.
    pub fn qmp(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        self.log.line(
            "harness",
            &format!(
                "qmp {command} {}",
                arguments.as_ref().map_or(String::new(), Value::to_string)
            ),
        );
        self.execute(command, arguments)
            .map_err(|e| self.error(ErrorKind::Monitor, format!("QMP {command}: {e}")))
    }

    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        match self.qmp.as_mut() {
            Some(qmp) => qmp.execute(command, arguments),
            None => Err(QmpError::Closed),
        }
    }

    /// Runs a human monitor (HMP) command, e.g. `info usernet`, and returns
    /// its output.
    pub fn hmp(&mut self, command_line: &str) -> Result<String, Error> {
        let out = self.qmp(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        Ok(out.as_str().unwrap_or_default().to_string())
    }

    /// QMP events (`POWERDOWN`, `SHUTDOWN`, `RESET`, ...) received since
    /// the last call, including any sent just before QEMU exited.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.collect_events(EVENT_POLL);
        std::mem::take(&mut self.events)
    }

    /// Why the machine stopped, from QEMU's `SHUTDOWN` event:
    /// `guest-shutdown` (ACPI power-off), `guest-reset` (a reboot under
    /// `-no-reboot`), `guest-panic`, `host-qmp-quit`, ... `None` while it
    /// runs. Events stay available to [`Qemu::take_events`].
    pub fn shutdown_reason(&mut self) -> Option<String> {
        self.collect_events(EVENT_POLL);
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "SHUTDOWN")
            .and_then(|e| e["data"]["reason"].as_str())
            .map(str::to_string)
    }

    fn collect_events(&mut self, wait: Duration) {
        if let Some(qmp) = self.qmp.as_mut() {
            let events = qmp.take_events(wait);
            for event in &events {
                self.log.line("harness", &format!("event {event}"));
            }
            self.events.extend(events);
        }
    }

    /// Presses the ACPI power button (`system_powerdown`).
    pub fn powerdown(&mut self) -> Result<(), Error> {
        self.qmp("system_powerdown", None).map(drop)
    }

    /// Ends QEMU through the monitor (`quit`) and reaps it.
    pub fn quit(&mut self) -> Result<ExitStatus, Error> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.log.line("harness", "qmp quit");
        match self.execute("quit", None) {
            // QEMU may close the socket before its answer gets out.
            Ok(_) | Err(QmpError::Closed) => {}
            Err(e) => return Err(self.error(ErrorKind::Monitor, format!("QMP quit: {e}"))),
        }
        let status = self.wait_exit(QUIT_TIMEOUT)?;
        self.qmp = None;
        Ok(status)
    }

    /// Waits for QEMU to exit by itself (the guest powered off, or rebooted
    /// with `-no-reboot`); `timeout` is nominal.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let timeout = scaled(timeout);
        match self.reap_within(timeout) {
            Some(status) => {
                self.log.line("harness", &format!("QEMU exited ({status})"));
                // The socket is closed now: this reads what is left, at once.
                self.collect_events(EVENT_POLL);
                Ok(status)
            }
            None => Err(self.error(
                ErrorKind::Timeout,
                format!("QEMU still running after {timeout:.0?}"),
            )),
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it; a no-op once it has exited.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("waiting for a child we spawned");
        self.log.line("harness", &format!("killed QEMU ({status})"));
        self.status = Some(status);
        status
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_reap().is_none()
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole console so far (bounded), escape sequences removed.
    pub fn console_text(&self) -> String {
        self.console.text()
    }

    /// The last `count` console lines.
    pub fn console_tail(&self, count: usize) -> Vec<String> {
        self.console.tail(count)
    }

    /// The log file of this run.
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn reap_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_reap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        let error = Error::new(kind, message).with_snapshot(Snapshot {
            console_tail: self.console.tail(TAIL_LINES),
            qemu_stderr: self.console.stderr_tail(20),
            log: Some(self.log.path().to_path_buf()),
        });
        self.log
            .line("harness", &format!("error: {}", error.message()));
        error
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("QEMU console log: {}", self.log.path().display());
        }
    }
}

/// The command line as one could paste it into a shell.
fn shell_words(args: &[String]) -> String {
    let quote = |a: &String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,.:/+@%".contains(c))
        {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn command_line_is_logged_shell_quoted() {
        let args = [
            "-append".to_string(),
            "console=ttyS0 it's".into(),
            "-m".into(),
            "1024".into(),
        ];
        assert_eq!(
            shell_words(&args),
            r"-append 'console=ttyS0 it'\''s' -m 1024"
        );
    }
}
