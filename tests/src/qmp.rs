//! A minimal QMP (QEMU Machine Protocol) client over a unix socket.
//!
//! QMP rather than HMP: replies are structured, errors are explicit, and HMP
//! is still reachable through `human-monitor-command`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Why a QMP exchange failed.
#[derive(Debug)]
pub enum QmpError {
    Io(io::Error),
    /// QEMU closed the connection (it is exiting).
    Closed,
    /// QEMU answered with an error object (class and description).
    Refused(String),
    /// QEMU sent something that is not QMP.
    Protocol(String),
}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Closed => write!(f, "QEMU closed the monitor connection"),
            Self::Refused(e) => write!(f, "refused: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl From<io::Error> for QmpError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    reply_timeout: Duration,
    /// A message whose end has not arrived yet (a read timed out mid-line).
    pending: String,
    events: Vec<Value>,
}

impl Qmp {
    /// Connects to a QMP server socket and leaves capabilities negotiation
    /// mode, so commands can be sent.
    pub fn connect(path: &Path, reply_timeout: Duration) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(reply_timeout))?;
        let mut qmp = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            reply_timeout,
            pending: String::new(),
            events: Vec::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a QMP greeting, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value. Events that arrive
    /// meanwhile are kept for [`Qmp::take_events`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let request = match arguments {
            Some(args) => json!({ "execute": command, "arguments": args }),
            None => json!({ "execute": command }),
        };
        writeln!(self.writer, "{request}").map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => QmpError::Closed,
            _ => QmpError::Io(e),
        })?;
        loop {
            let mut message = self.read_message()?;
            if message.get("event").is_some() {
                self.events.push(message);
            } else if let Some(value) = message.get_mut("return") {
                return Ok(value.take());
            } else if let Some(error) = message.get("error") {
                let class = error["class"].as_str().unwrap_or("?");
                let desc = error["desc"].as_str().unwrap_or("?");
                return Err(QmpError::Refused(format!("{class}: {desc}")));
            } else {
                return Err(QmpError::Protocol(format!("unexpected message {message}")));
            }
        }
    }

    /// Events (`SHUTDOWN`, `POWERDOWN`, `RESET`, ...) received so far,
    /// after collecting those that arrive within `wait`. Once QEMU has
    /// exited this reads what it sent before closing the socket.
    pub fn take_events(&mut self, wait: Duration) -> Vec<Value> {
        if self
            .reader
            .get_ref()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .is_ok()
        {
            while let Ok(message) = self.read_message() {
                if message.get("event").is_some() {
                    self.events.push(message);
                }
            }
            let _ = self
                .reader
                .get_ref()
                .set_read_timeout(Some(self.reply_timeout));
        }
        std::mem::take(&mut self.events)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        // read_line keeps what it read before a timeout in `pending`, so a
        // message split across reads is not lost.
        if self.reader.read_line(&mut self.pending)? == 0 {
            return Err(QmpError::Closed);
        }
        if !self.pending.ends_with('\n') {
            return Err(QmpError::Closed);
        }
        let line = std::mem::take(&mut self.pending);
        serde_json::from_str(&line)
            .map_err(|e| QmpError::Protocol(format!("{e} in {:?}", line.trim_end())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A scripted QMP server: checks each request and sends canned replies.
    fn serve(
        script: Vec<(&'static str, &'static str)>,
    ) -> (tempfile::TempDir, thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("qmp")).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writer
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            for (expected, reply) in script {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let request: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(request["execute"], expected);
                writer.write_all(reply.as_bytes()).unwrap();
            }
        });
        (dir, server)
    }

    #[test]
    fn negotiates_runs_commands_and_keeps_events() {
        let (dir, server) = serve(vec![
            ("qmp_capabilities", "{\"return\": {}}\r\n"),
            (
                "query-status",
                "{\"event\": \"POWERDOWN\", \"timestamp\": {}}\r\n{\"return\": {\"status\": \"running\"}}\r\n",
            ),
            ("bogus", "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no bogus\"}}\r\n"),
        ]);
        let mut qmp = Qmp::connect(&dir.path().join("qmp"), Duration::from_secs(5)).unwrap();
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        let events = qmp.take_events(Duration::from_millis(10));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event"], "POWERDOWN");
        match qmp.execute("bogus", None) {
            Err(QmpError::Refused(text)) => assert_eq!(text, "CommandNotFound: no bogus"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        server.join().unwrap();
        assert!(matches!(
            qmp.execute("query-status", None),
            Err(QmpError::Closed)
        ));
    }

    #[test]
    fn collects_events_sent_before_the_socket_closed() {
        let (dir, server) = serve(vec![(
            "qmp_capabilities",
            "{\"return\": {}}\r\n{\"event\": \"SHUTDOWN\", \"data\": {\"reason\": \"guest-shutdown\"}}\r\n",
        )]);
        let mut qmp = Qmp::connect(&dir.path().join("qmp"), Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        let events = qmp.take_events(Duration::from_secs(1));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["reason"], "guest-shutdown");
    }
}
