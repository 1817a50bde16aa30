//! The per-test log file: console lines, QEMU's own messages and harness
//! notes, each stamped with seconds since QEMU started, so a failed CI run can
//! be read afterwards (and boot times can be read off it).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

pub struct Log {
    path: PathBuf,
    file: Mutex<File>,
    start: Instant,
}

impl Log {
    /// Creates (truncates) `<dir>/<name>.log`.
    pub fn create(dir: &Path, name: &str, start: Instant) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.log", file_stem(name)));
        let file = File::create(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one stamped line. Failing to log must not fail the test: the
    /// console buffer in memory is the source of truth.
    pub fn line(&self, source: &str, text: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "[{secs:8.3}] {source}| {text}");
    }
}

/// Test names become file names: keep them readable but path-safe.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_path_safe() {
        assert_eq!(file_stem("boot_uefi"), "boot_uefi");
        assert_eq!(file_stem("net/pxe boot::a"), "net_pxe_boot__a");
    }

    #[test]
    fn lines_are_stamped_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path(), "x y", Instant::now()).unwrap();
        log.line("serial", "hello");
        let text = fs::read_to_string(log.path()).unwrap();
        assert!(log.path().ends_with("x_y.log"));
        assert!(
            text.starts_with('[') && text.ends_with("] serial| hello\n"),
            "{text:?}"
        );
    }
}
