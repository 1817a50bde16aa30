//! Live capture of QEMU's serial console (its stdout) and its own messages
//! (its stderr), shared between reader threads and the test.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use regex::Regex;

use crate::lines::{Found, LineBuffer};
use crate::log::Log;

/// QEMU's stderr is short unless something is badly wrong; keep the end.
const MAX_STDERR_LINES: usize = 200;

#[derive(Default)]
struct State {
    serial: LineBuffer,
    stderr: VecDeque<String>,
    /// QEMU closed its stdout: it exited (or is about to).
    closed: bool,
}

/// How a wait ended.
pub enum Waited {
    Found(Found),
    TimedOut,
    Closed,
}

#[derive(Default)]
pub struct Console {
    state: Mutex<State>,
    changed: Condvar,
}

impl Console {
    /// Starts threads that drain QEMU's stdout and stderr into a new console.
    pub fn capture(
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
        log: Arc<Log>,
    ) -> Arc<Self> {
        let console = Arc::new(Self::default());
        let (c, l) = (Arc::clone(&console), Arc::clone(&log));
        thread::spawn(move || c.drain_serial(stdout, &l));
        let c = Arc::clone(&console);
        thread::spawn(move || c.drain_stderr(stderr, &log));
        console
    }

    /// Blocks until a line numbered `from` or later matches one of
    /// `patterns` (see [`LineBuffer::find`] for `partial`), QEMU closes its
    /// console, or `deadline` passes.
    pub fn wait_for(
        &self,
        from: u64,
        patterns: &[Regex],
        partial: bool,
        deadline: Instant,
    ) -> Waited {
        let mut state = self.lock();
        loop {
            if let Some(found) = state.serial.find(from, patterns, partial) {
                return Waited::Found(found);
            }
            if state.closed {
                return Waited::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Blocks until QEMU closes its console or `deadline` passes.
    pub fn wait_closed(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Number the next completed console line will get.
    pub fn end(&self) -> u64 {
        self.lock().serial.end()
    }

    pub fn tail(&self, count: usize) -> Vec<String> {
        self.lock().serial.tail(count)
    }

    pub fn text(&self) -> String {
        self.lock().serial.text()
    }

    pub fn stderr_tail(&self, count: usize) -> Vec<String> {
        let state = self.lock();
        state
            .stderr
            .iter()
            .skip(state.stderr.len().saturating_sub(count))
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking reader thread must not hide the transcript from the test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drain_serial(&self, mut stdout: impl Read, log: &Log) {
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let completed = self.lock().serial.push(&chunk[..n]);
            completed.iter().for_each(|line| log.line("serial", line));
            self.changed.notify_all();
        }
        let mut state = self.lock();
        if let Some(line) = state.serial.finish() {
            log.line("serial", &line);
        }
        state.closed = true;
        drop(state);
        self.changed.notify_all();
    }

    fn drain_stderr(&self, stderr: impl Read, log: &Log) {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            log.line("qemu", &line);
            let mut state = self.lock();
            state.stderr.push_back(line);
            if state.stderr.len() > MAX_STDERR_LINES {
                state.stderr.pop_front();
            }
        }
    }
}
