//! The single error type of this crate and the translation of byte offsets
//! into the 1-based line and column users see in their editor.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A 1-based position in a definition file; the column counts characters,
/// not bytes, so it matches what editors show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The start of a file: where errors about the file as a whole point.
    pub const START: Position = Position { line: 1, column: 1 };

    /// Position of byte `offset` in `text`; offsets past the end or inside a
    /// multi-byte character are clamped rather than trusted.
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// What went wrong in which definition file, and where.
///
/// Displays as `FILE:LINE:COL: message`, or `FILE: message` for problems
/// that have no place inside the file (unreadable file, missing kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    position: Option<Position>,
    message: String,
}

impl ConfigError {
    pub fn new(file: &Path, position: Option<Position>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position,
            message: message.into(),
        }
    }

    /// The definition file the error is about.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// What is wrong and what is allowed, without the file and position.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                p.line,
                p.column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file being parsed: turns spans into positioned errors.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(
            self.path,
            Some(Position::of_offset(self.text, span.start)),
            message,
        )
    }

    pub fn error_at_start(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path, Some(Position::START), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_character_columns() {
        let text = "a = 1\nkey = \"é\" x\r\nlast";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 4),
            Position { line: 1, column: 5 }
        );
        assert_eq!(
            Position::of_offset(text, 6),
            Position { line: 2, column: 1 }
        );
        // 'x' follows a two-byte character: column counts characters.
        let x = text.find('x').unwrap();
        assert_eq!(
            Position::of_offset(text, x),
            Position {
                line: 2,
                column: 11
            }
        );
        let last = text.find("last").unwrap();
        assert_eq!(
            Position::of_offset(text, last),
            Position { line: 3, column: 1 }
        );
    }

    #[test]
    fn bad_offsets_are_clamped() {
        let text = "é\n";
        assert_eq!(
            Position::of_offset(text, 1),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 99),
            Position { line: 2, column: 1 }
        );
    }

    #[test]
    fn display_names_file_line_and_column() {
        let e = ConfigError::new(
            Path::new("guests/web.toml"),
            Some(Position { line: 3, column: 9 }),
            "boom",
        );
        assert_eq!(e.to_string(), "guests/web.toml:3:9: boom");
        let e = ConfigError::new(Path::new("host.toml"), None, "cannot read");
        assert_eq!(e.to_string(), "host.toml: cannot read");
    }
}
