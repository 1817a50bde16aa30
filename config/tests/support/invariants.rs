//! What must hold for any input whatsoever, shared by the seeded property
//! test (tests/fuzz.rs) and the cargo-fuzz target (fuzz/).

use std::path::Path;

use hvconfig::{parse_guest, parse_host, ConfigError};

pub const GUEST_FILE: &str = "guests/fuzz.toml";
pub const HOST_FILE: &str = "host.toml";

/// Parses `data` as both formats; panics (a finding) if the parser panics or
/// an error points outside the text or lacks the file name.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_guest(Path::new(GUEST_FILE), text) {
        check_error(&e, GUEST_FILE, text);
    }
    if let Err(e) = parse_host(Path::new(HOST_FILE), text) {
        check_error(&e, HOST_FILE, text);
    }
}

fn check_error(e: &ConfigError, file: &str, text: &str) {
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("{file}:")), "{shown}");
    assert!(!e.message().is_empty(), "empty message for {text:?}");
    // Parsing in memory has no I/O, so every error has a place in the text.
    let pos = e
        .position()
        .unwrap_or_else(|| panic!("no position: {shown}"));
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        pos.line >= 1 && pos.line <= lines.len(),
        "{shown} for {text:?}"
    );
    let width = lines[pos.line - 1].chars().count();
    assert!(
        pos.column >= 1 && pos.column <= width + 1,
        "{shown} for {text:?}"
    );
}
