//! Guest console plumbing: splitting a vmm's output into host console
//! lines prefixed with the guest's name, writing them to the console
//! without ever blocking, and keeping a bounded log of them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// A line longer than this is cut and shown in pieces, so one guest that
/// never prints a newline cannot grow init's memory.
pub const MAX_LINE: usize = 4096;

/// Turns a byte stream into prefixed lines.
pub struct LineSplitter {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn new(prefix: &str) -> Self {
        LineSplitter {
            prefix: prefix.as_bytes().to_vec(),
            partial: Vec::new(),
        }
    }

    /// Feeds `data`; appends every completed line, prefixed and ending
    /// in '\n', to `out`. Carriage returns are dropped: guests send CRLF
    /// and a bare CR would let the next prefix overwrite the line.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            match b {
                b'\n' => self.emit(out),
                b'\r' => {}
                b => {
                    self.partial.push(b);
                    if self.partial.len() >= MAX_LINE {
                        self.emit(out);
                    }
                }
            }
        }
    }

    /// Emits what is left of an unterminated line (the vmm exited).
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            self.emit(out);
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        push_printable(&self.partial, out);
        self.partial.clear();
        out.push(b'\n');
    }
}

/// Appends `line` with every control character but tab (C0, DEL, C1 such
/// as ESC and CSI) and every invalid UTF-8 sequence replaced by '?': a
/// guest must not drive the host's terminal (move the cursor, rewrite
/// earlier lines, change its settings). console.log keeps the raw bytes.
fn push_printable(line: &[u8], out: &mut Vec<u8>) {
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\t' {
                out.push(b'?');
            } else {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        if !chunk.invalid().is_empty() {
            out.push(b'?');
        }
    }
}

/// A file that holds the newest output of a guest, at most `cap` bytes.
/// When full, the oldest quarter is dropped (cut at a line boundary) so
/// the file always starts with a whole line and rewrites stay rare.
pub struct ConsoleLog {
    file: File,
    len: u64,
    cap: u64,
}

/// Per-guest console history kept in /run (tmpfs, so RAM).
pub const CONSOLE_LOG_CAP: u64 = 1 << 20;

impl ConsoleLog {
    /// Opens (and empties) the log at `path`.
    pub fn create(path: &Path, cap: u64) -> io::Result<ConsoleLog> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(ConsoleLog { file, len: 0, cap })
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let data = match data.len() as u64 {
            // Larger than the whole log: only its tail can be kept.
            n if n > self.cap => {
                let skip = usize::try_from(n - self.cap).unwrap_or(0);
                self.file.set_len(0)?;
                self.len = 0;
                data.get(skip..).unwrap_or_default()
            }
            _ => data,
        };
        if self.len + data.len() as u64 > self.cap {
            self.compact(data.len() as u64)?;
        }
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Drops the oldest bytes so that `incoming` more fit with a quarter
    /// of the cap to spare.
    fn compact(&mut self, incoming: u64) -> io::Result<()> {
        let keep_max = (self.cap - self.cap / 4).saturating_sub(incoming);
        let keep = self.len.min(keep_max);
        let mut tail = vec![0u8; usize::try_from(keep).unwrap_or(0)];
        self.file.read_exact_at(&mut tail, self.len - keep)?;
        // Start at the first whole line, unless the tail is one long line.
        let start = match tail.iter().position(|&b| b == b'\n') {
            Some(nl) if nl + 1 < tail.len() => nl + 1,
            _ => 0,
        };
        let tail = tail.get(start..).unwrap_or_default();
        self.file.write_all_at(tail, 0)?;
        self.file.set_len(tail.len() as u64)?;
        self.len = tail.len() as u64;
        Ok(())
    }
}

/// The host console for guest output: non-blocking, so a slow serial
/// line drops guest lines (they stay in console.log) instead of stalling
/// PID 1.
pub struct ConsoleOut {
    file: Option<File>,
    dropped: u64,
}

impl ConsoleOut {
    pub fn open() -> ConsoleOut {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open("/dev/console")
            .ok();
        ConsoleOut { file, dropped: 0 }
    }

    /// Guest output written to `file` instead, for tests.
    #[cfg(test)]
    pub fn to(file: File) -> ConsoleOut {
        ConsoleOut {
            file: Some(file),
            dropped: 0,
        }
    }

    pub fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Some(mut file) = self.file.as_ref() else {
            let _ = io::stdout().write_all(data);
            return;
        };
        let mut rest = data;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => break,
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !rest.is_empty() {
            if self.dropped == 0 {
                log::warn!(
                    "console too slow: guest output dropped (kept in {}/NAME/console.log)",
                    crate::guests::GUESTS_RUN_DIR
                );
            }
            self.dropped += rest.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(prefix: &str, chunks: &[&[u8]]) -> String {
        let mut s = LineSplitter::new(prefix);
        let mut out = Vec::new();
        for chunk in chunks {
            s.feed(chunk, &mut out);
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn lines_are_prefixed_across_chunk_boundaries() {
        assert_eq!(
            split(
                "[web] ",
                &[b"Hello fr", b"om the guest\r\nsecond", b" line\n"]
            ),
            "[web] Hello from the guest\n[web] second line\n"
        );
        assert_eq!(split("[a] ", &[b"no newline yet"]), "");
        assert_eq!(split("[a] ", &[b"\n\n"]), "[a] \n[a] \n");
    }

    #[test]
    fn control_characters_do_not_reach_the_console() {
        assert_eq!(
            split(
                "[x] ",
                &[
                    b"\x1b[2J\x1b]0;owned\x07\tgr\xc3",
                    b"\xbcn\x7f\xc2\x9b1m\xff\x08\n"
                ]
            ),
            "[x] ?[2J?]0;owned?\tgr\u{fc}n??1m??\n"
        );
    }

    #[test]
    fn flush_emits_the_unterminated_rest() {
        let mut s = LineSplitter::new("[db] ");
        let mut out = Vec::new();
        s.feed(b"login: ", &mut out);
        s.flush(&mut out);
        s.flush(&mut out);
        assert_eq!(out, b"[db] login: \n");
    }

    #[test]
    fn endless_lines_are_cut() {
        let mut s = LineSplitter::new("[x] ");
        let mut out = Vec::new();
        s.feed(&vec![b'a'; MAX_LINE * 2 + 10], &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(|l| l.len() == MAX_LINE + 4));
    }

    #[test]
    fn log_keeps_the_newest_bytes_within_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::create(&path, 1000).expect("create");
        for i in 0..500 {
            log.append(format!("line {i:04}\n").as_bytes())
                .expect("append");
            assert!(log.len() <= 1000);
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len() as u64, log.len());
        assert!(text.len() >= 700, "kept {} bytes", text.len());
        assert!(text.starts_with("line "), "starts on a line boundary");
        assert!(text.ends_with("line 0499\n"));
        // Consecutive lines, none lost in the kept part.
        let nums: Vec<u32> = text
            .lines()
            .map(|l| l.trim_start_matches("line ").parse().expect("number"))
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn oversized_write_keeps_its_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::create(&path, 100).expect("create");
        log.append(b"old\n").expect("append");
        let big: Vec<u8> = (0..250u32).map(|i| b'a' + (i % 26) as u8).collect();
        log.append(&big).expect("append");
        let text = std::fs::read(&path).expect("read");
        assert_eq!(text.as_slice(), big.get(150..).expect("tail"));
    }
}
