//! Where the build outputs and the test logs live.

use std::env;
use std::path::{Path, PathBuf};

/// The repository root (the Cargo workspace containing this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("hv-tests lives one level below the workspace root")
        .to_path_buf()
}

/// The build output directory: `$HV_OUT`, or `<workspace root>/out`.
pub fn out_dir() -> PathBuf {
    match env::var_os("HV_OUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("out"),
    }
}

/// Path of a build output below [`out_dir`], e.g. `artefact("hv.img")`.
///
/// # Panics
/// When the file is missing, with a message telling how to produce it
/// (`run ./scripts/build first (missing out/hv.img)`): an end-to-end test
/// cannot do anything useful without it.
#[track_caller]
pub fn artefact(relative: impl AsRef<Path>) -> PathBuf {
    let relative = relative.as_ref();
    let path = out_dir().join(relative);
    if !path.exists() {
        let shown = if env::var_os("HV_OUT").is_some_and(|d| !d.is_empty()) {
            path.display().to_string()
        } else {
            Path::new("out").join(relative).display().to_string()
        };
        panic!("run ./scripts/build first (missing {shown})");
    }
    path
}

/// Directory for per-test console logs: `$HV_E2E_LOGS`, or
/// `<workspace root>/target/e2e-logs`.
pub fn logs_dir() -> PathBuf {
    match env::var_os("HV_E2E_LOGS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("e2e-logs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn missing_artefact_names_the_build_script_and_the_file() {
        let err = std::panic::catch_unwind(|| artefact("no-such-artefact.img")).unwrap_err();
        let message = err.downcast_ref::<String>().unwrap();
        assert!(
            message.starts_with("run ./scripts/build first (missing "),
            "{message}"
        );
        assert!(message.ends_with("no-such-artefact.img)"), "{message}");
    }
}
