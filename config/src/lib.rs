//! Guest and host configuration of the hypervisor image.
//!
//! One definition of both formats, shared by init (which reads every file at
//! boot) and the VMM (which reads the one guest it runs), so the two can never
//! disagree about what a file means. Parsing never panics: every problem is a
//! [`ConfigError`] naming the file, line and column, and what is allowed.
//! The formats are documented in this crate's README.md.

// Linked into PID 1 and the vmm, which must not panic on what they read.
#![warn(clippy::indexing_slicing)]

pub mod cloud_init;
pub mod device;
mod error;
mod fields;
pub mod guest;
pub mod host;
mod mac;
pub mod names;
pub mod provision;

use std::fs;
use std::io::{self, Read};
use std::path::Path;

pub use cloud_init::CloudInit;
pub use device::DeviceSource;
pub use error::{ConfigError, Position};
pub use guest::GuestConfig;
pub use host::HostConfig;
pub use mac::{MacAddr, ParseMacError};

/// Definition files are a few hundred bytes; the cap keeps a stray large
/// file on the config partition from exhausting PID 1's memory.
pub const MAX_FILE_SIZE: u64 = 256 * 1024;

/// How many guests one host runs at most. host.toml's `guests` list is
/// refused past it, so a hostile config server cannot make init fetch (and
/// fill `/run` with) more than this many guests' files; init's guest table
/// has exactly this capacity.
pub const MAX_GUESTS: usize = 64;

/// Reads and parses a guest definition; paths in it are resolved against
/// the directory holding `path`, and the guest is named after its file stem.
pub fn load_guest(path: &Path) -> Result<GuestConfig, ConfigError> {
    let text = read_text(path)?;
    guest::parse(path, &text)
}

/// Parses a guest definition held in memory (fetched over HTTP, or in
/// tests); `path` names it in errors and anchors relative paths.
pub fn parse_guest(path: &Path, text: &str) -> Result<GuestConfig, ConfigError> {
    guest::parse(path, text)
}

/// Reads and parses host.toml. Callers use [`HostConfig::default`] when the
/// file does not exist.
pub fn load_host(path: &Path) -> Result<HostConfig, ConfigError> {
    let text = read_text(path)?;
    host::parse(path, strip_bom(&text))
}

/// Like [`load_host`], but a host.toml that does not exist means the
/// defaults; any other problem (unreadable, invalid) is still an error.
pub fn load_host_or_default(path: &Path) -> Result<HostConfig, ConfigError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HostConfig::default()),
        _ => load_host(path),
    }
}

pub fn parse_host(path: &Path, text: &str) -> Result<HostConfig, ConfigError> {
    host::parse(path, strip_bom(text))
}

/// Loads every `*.toml` in `dir`, sorted by file name, each on its own so
/// that one broken definition does not hide the others. Hidden files (such
/// as the `._web.toml` that macOS leaves on FAT) and other files are
/// skipped. A missing directory holds no guests; any other failure to list
/// it is returned as a single error.
pub fn load_guests_dir(dir: &Path) -> Vec<Result<GuestConfig, ConfigError>> {
    guest_files(dir)
        .into_iter()
        .map(|file| file.and_then(|path| load_guest(&path)))
        .collect()
}

/// The definition files [`load_guests_dir`] loads, in its order, for a
/// caller that reads them itself (init checks them against SHA256SUMS).
pub fn guest_files(dir: &Path) -> Vec<Result<std::path::PathBuf, ConfigError>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            return vec![Err(ConfigError::new(
                dir,
                None,
                format!("cannot list directory: {e}"),
            ))]
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                files.push(Err(ConfigError::new(
                    dir,
                    None,
                    format!("cannot list directory: {e}"),
                )));
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_toml = Path::new(&*name)
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
        // Directories named x.toml are not definitions; fs::metadata follows
        // symlinks so a linked definition still counts.
        if name.starts_with('.') || !is_toml || path.is_dir() {
            continue;
        }
        files.push(Ok(path));
    }
    files.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => a.file_name().cmp(&b.file_name()),
        (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => std::cmp::Ordering::Equal,
    });
    files
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    let fail = |msg: String| ConfigError::new(path, None, msg);
    let file = fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    // Read one byte past the cap to tell "exactly at the cap" from "over it".
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(fail(format!(
            "file is larger than {MAX_FILE_SIZE} bytes; is it really a definition?"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .unwrap_or_default();
        // The valid prefix is UTF-8 by definition, so this never falls back.
        let prefix = std::str::from_utf8(valid).unwrap_or("");
        let at = Position::of_offset(strip_bom(prefix), strip_bom(prefix).len());
        ConfigError::new(path, Some(at), "file is not valid UTF-8 text")
    })
}

/// Editors on other systems may start the file with a byte order mark;
/// dropping it keeps columns on the first line right.
pub(crate) fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}
