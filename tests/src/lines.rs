//! The console transcript: raw bytes in, numbered clean lines out.
//!
//! Lines get absolute numbers so a reader can keep a cursor ("everything after
//! the banner") even after the oldest lines were dropped to bound memory.

use std::collections::VecDeque;

use regex::Regex;

use crate::ansi;

/// Beyond this, the oldest lines are dropped (a chatty guest must not eat RAM).
const MAX_LINES: usize = 100_000;
/// A "line" this long without a newline is cut, so matching stays cheap.
const MAX_PARTIAL: usize = 64 * 1024;

/// A line that matched one of the patterns searched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The whole matching line, without escape sequences.
    pub line: String,
    /// Cursor to pass to the next search so it starts after this line.
    pub next: u64,
    /// Index of the pattern that matched (the first one wins on a line).
    pub pattern: usize,
}

/// Complete lines plus the line still being written.
#[derive(Debug, Default)]
pub struct LineBuffer {
    lines: VecDeque<String>,
    /// Number of the oldest line kept.
    first: u64,
    /// Bytes after the last newline; kept raw so a UTF-8 character or escape
    /// sequence split across two reads is decoded whole.
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Appends console output; returns the lines it completed, cleaned.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut completed = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                completed.push(self.complete_partial());
            } else {
                self.partial.push(byte);
                if self.partial.len() >= MAX_PARTIAL {
                    completed.push(self.complete_partial());
                }
            }
        }
        completed
    }

    /// Completes the unterminated last line, if any (the console closed).
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.complete_partial())
    }

    /// Number the next completed line will get.
    pub fn end(&self) -> u64 {
        self.first + self.lines.len() as u64
    }

    /// First complete line numbered `from` or later that matches any of
    /// `patterns`. With `partial`, the unterminated last line counts too
    /// (for prompts such as `login: `, which never end); otherwise a line is
    /// only matched once complete, so `hv-init (\S+)` cannot see half a
    /// version number.
    pub fn find(&self, from: u64, patterns: &[Regex], partial: bool) -> Option<Found> {
        let which = |line: &str| patterns.iter().position(|p| p.is_match(line));
        let skip = usize::try_from(from.saturating_sub(self.first)).unwrap_or(usize::MAX);
        let complete = self
            .lines
            .iter()
            .zip(self.first..)
            .skip(skip)
            .find_map(|(line, number)| {
                which(line).map(|pattern| Found {
                    line: line.clone(),
                    next: number + 1,
                    pattern,
                })
            });
        complete.or_else(|| {
            if !partial || from > self.end() {
                return None;
            }
            let text = self.partial_text();
            // The partial line will become line `end()`: a cursor past it
            // stops the same text from matching twice once it is completed.
            which(&text).map(|pattern| Found {
                line: text,
                next: self.end() + 1,
                pattern,
            })
        })
    }

    /// The last `count` lines, the unterminated one included.
    pub fn tail(&self, count: usize) -> Vec<String> {
        let partial = self.partial_text();
        let wanted = if partial.is_empty() {
            count
        } else {
            count.saturating_sub(1)
        };
        let mut tail: Vec<String> = self
            .lines
            .iter()
            .skip(self.lines.len().saturating_sub(wanted))
            .cloned()
            .collect();
        if !partial.is_empty() && count > 0 {
            tail.push(partial);
        }
        tail
    }

    /// Every line kept, the unterminated one included, joined by newlines.
    pub fn text(&self) -> String {
        self.tail(usize::MAX).join("\n")
    }

    fn partial_text(&self) -> String {
        ansi::strip(&String::from_utf8_lossy(&self.partial))
    }

    fn complete_partial(&mut self) -> String {
        let line = self.partial_text();
        self.partial.clear();
        self.lines.push_back(line.clone());
        if self.lines.len() > MAX_LINES {
            self.lines.pop_front();
            self.first += 1;
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(pattern: &str) -> [Regex; 1] {
        [Regex::new(pattern).unwrap()]
    }

    #[test]
    fn splits_lines_across_reads_and_strips_cr_and_escapes() {
        let mut buf = LineBuffer::default();
        assert!(buf.push(b"hv-in").is_empty());
        assert_eq!(buf.push(b"it 0.1.0\r\n\x1b[0mnext"), vec!["hv-init 0.1.0"]);
        assert_eq!(buf.end(), 1);
        assert_eq!(buf.tail(5), vec!["hv-init 0.1.0", "next"]);
        assert_eq!(buf.finish(), Some("next".to_string()));
        assert_eq!(buf.finish(), None);
    }

    #[test]
    fn decodes_utf8_split_across_reads() {
        let mut buf = LineBuffer::default();
        let text = "größe\n".as_bytes();
        buf.push(&text[..3]);
        assert_eq!(buf.push(&text[3..]), vec!["größe"]);
    }

    #[test]
    fn cursor_moves_past_each_match() {
        let mut buf = LineBuffer::default();
        buf.push(b"guest a up\nnoise\nguest b up\n");
        let first = buf.find(0, &re("guest . up"), false).unwrap();
        assert_eq!(
            first,
            Found {
                line: "guest a up".into(),
                next: 1,
                pattern: 0
            }
        );
        let second = buf.find(first.next, &re("guest . up"), false).unwrap();
        assert_eq!(
            second,
            Found {
                line: "guest b up".into(),
                next: 3,
                pattern: 0
            }
        );
        assert_eq!(buf.find(second.next, &re("guest . up"), false), None);
    }

    #[test]
    fn matches_an_unterminated_prompt_only_once() {
        let mut buf = LineBuffer::default();
        buf.push(b"banner\nlogin: ");
        assert_eq!(buf.find(1, &re("login:"), false), None);
        let prompt = buf.find(1, &re("login:"), true).unwrap();
        assert_eq!(prompt.line, "login: ");
        assert_eq!(buf.find(prompt.next, &re("login:"), true), None);
        buf.push(b"root\nlogin: ");
        // The completed "login: root" line is the one already seen.
        assert_eq!(
            buf.find(prompt.next, &re("login:"), true).unwrap().line,
            "login: "
        );
    }

    #[test]
    fn drops_oldest_lines_but_keeps_numbering() {
        let mut buf = LineBuffer::default();
        for i in 0..MAX_LINES + 10 {
            buf.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(buf.end(), (MAX_LINES + 10) as u64);
        let found = buf.find(0, &re("^line 1[0-9]$"), false).unwrap();
        assert_eq!(
            found,
            Found {
                line: "line 10".into(),
                next: 11,
                pattern: 0
            }
        );
        assert_eq!(
            buf.tail(2),
            vec![
                format!("line {}", MAX_LINES + 8),
                format!("line {}", MAX_LINES + 9)
            ]
        );
    }

    #[test]
    fn cuts_endless_lines() {
        let mut buf = LineBuffer::default();
        let completed = buf.push(&vec![b'x'; MAX_PARTIAL + 1]);
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].len(), MAX_PARTIAL);
        assert_eq!(buf.tail(1), vec!["x"]);
    }

    #[test]
    fn does_not_match_half_written_lines() {
        let mut buf = LineBuffer::default();
        buf.push(b"hv-init 0.");
        assert_eq!(buf.find(0, &re(r"hv-init \S+"), false), None);
        buf.push(b"1.0 starting\n");
        assert_eq!(
            buf.find(0, &re(r"hv-init \S+"), false).unwrap().line,
            "hv-init 0.1.0 starting"
        );
    }

    #[test]
    fn reports_which_pattern_matched_first_pattern_winning_a_line() {
        let mut buf = LineBuffer::default();
        buf.push(b"booting\nKernel panic - not syncing: hv-init died\n");
        let patterns = [
            Regex::new("hv-init").unwrap(),
            Regex::new("Kernel panic").unwrap(),
        ];
        let found = buf.find(0, &patterns, false).unwrap();
        assert_eq!((found.pattern, found.next), (0, 2));
        let found = buf.find(0, &patterns[1..], false).unwrap();
        assert_eq!((found.pattern, found.next), (0, 2));
        assert_eq!(buf.find(2, &patterns, false), None);
    }

    #[test]
    fn tail_counts_the_partial_line() {
        let mut buf = LineBuffer::default();
        buf.push(b"a\nb\nc");
        assert_eq!(buf.tail(2), vec!["b", "c"]);
        assert_eq!(buf.tail(0), Vec::<String>::new());
        assert_eq!(buf.text(), "a\nb\nc");
    }
}
