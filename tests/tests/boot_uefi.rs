//! The image boots as a USB stick on a UEFI machine, reaches our init, and
//! the example guest shipped on the config partition runs with its console
//! relayed by init.

use std::time::Duration;

use hv_tests::{artefact, Qemu};

/// TCG boot of OVMF + kernel to init; generous for a loaded 2-core machine
/// (scaled further by HV_E2E_TIMEOUT_SCALE).
const BOOT_TO_INIT: Duration = Duration::from_secs(180);
/// The example guest boots under nested KVM (about 10 s under TCG).
const GUEST_UP: Duration = Duration::from_secs(120);

#[test]
fn usb_stick_under_uefi_runs_the_example_guest() -> Result<(), hv_tests::Error> {
    let image = artefact("hv.img");
    let mut vm = Qemu::builder("boot_uefi")
        .uefi()
        .smp(2)
        .memory_mib(2048)
        .usb_disk(&image)
        .spawn()?;

    let banner = vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    eprintln!("boot_uefi: {banner:?} after {:.1?}", vm.elapsed());
    vm.wait_for(
        r"init: guest example: running, restarts 0, pid \d+$",
        GUEST_UP,
    )?;
    // init relays the guest's serial console line by line, prefixed.
    vm.wait_for(r"^\[example\] Hello from the example guest$", GUEST_UP)?;
    eprintln!(
        "boot_uefi: example guest greeted after {:.1?}",
        vm.elapsed()
    );
    // The power-off path has its own test (power_button.rs).
    assert!(vm.quit()?.success());
    Ok(())
}
