//! The real kernel configuration flow must refuse a fragment whose request
//! Kconfig silently drops: here KVM_AMD while its parent menu is disabled.

use std::path::Path;
use std::process::Command;

#[test]
fn unsatisfiable_fragment_fails_the_kernel_config() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fragment = dir.path().join("unsatisfiable.config");
    std::fs::write(
        &fragment,
        "# CONFIG_VIRTUALIZATION is not set\nCONFIG_KVM_AMD=y\n",
    )
    .unwrap();

    let output = Command::new(repo.join("scripts/kernel"))
        .args(["guest", "--config-only", "--extra-fragment"])
        .arg(&fragment)
        // Check with the binary under test instead of a separate release build.
        .env("HV_IMAGE", env!("CARGO_BIN_EXE_hv-image"))
        .output()
        .expect("run scripts/kernel");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "scripts/kernel succeeded:\n{stderr}"
    );
    let expected = format!("{}:2: CONFIG_KVM_AMD=y requested", fragment.display());
    assert!(stderr.contains(&expected), "no '{expected}' in:\n{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).trim().is_empty(),
        "a failed check must not print a path"
    );
}
