//! Helpers for writing QEMU option values.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// A path as a QEMU option value: commas are doubled so a path cannot inject
/// options.
pub(crate) fn escape(path: &Path) -> Result<String, Error> {
    let text = path.to_str().ok_or_else(|| {
        Error::new(
            ErrorKind::Io,
            format!("path {} is not UTF-8", path.display()),
        )
    })?;
    Ok(text.replace(',', ",,"))
}

/// Absolute form of a path given by a test, so the command line written to
/// the log can be rerun by hand from any directory.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_paths_are_escaped() {
        assert_eq!(escape(Path::new("/a,b/c.img")).unwrap(), "/a,,b/c.img");
    }

    #[test]
    fn relative_paths_become_absolute() {
        assert!(absolute(Path::new("out/hv.img")).is_absolute());
    }
}
