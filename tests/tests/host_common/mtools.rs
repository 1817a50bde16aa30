//! mtools, the way a user edits the FAT config partition without mounting
//! it.

use std::process::Command;

/// Runs an mtools command and returns its stdout; panics with its stderr
/// on failure.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        // The partition is inside an image file: no drive geometry to check.
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {tool} (package mtools): {e}"));
    assert!(
        out.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
