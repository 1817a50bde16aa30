//! Pressing the server's power button shuts the host down cleanly, guests
//! included.

use std::time::Duration;

use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);
/// The example guest boots under nested KVM (about 10 s under TCG).
const GUEST_UP: Duration = Duration::from_secs(120);
/// init stops the guests (each with its own shutdown timeout), syncs and
/// powers off; QEMU exits when the machine reaches ACPI S5.
const POWER_OFF: Duration = Duration::from_secs(120);

#[test]
fn acpi_power_button_powers_the_host_off() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("power_button")
        .uefi()
        .usb_disk(artefact("hv.img"))
        .spawn()?;
    vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    // A press before init listens for the button would be lost; once the
    // example guest talks, init has long been listening.
    vm.wait_for(r"^\[example\] Hello from the example guest$", GUEST_UP)?;

    let pressed = vm.elapsed();
    vm.powerdown()?;
    let status = vm.wait_exit(POWER_OFF)?;
    assert!(status.success(), "QEMU ended with {status}");
    // -no-reboot also ends QEMU on a reboot: make sure it was a power-off.
    assert_eq!(vm.shutdown_reason().as_deref(), Some("guest-shutdown"));
    eprintln!(
        "power_button: off {:.1?} after the press",
        vm.elapsed() - pressed
    );
    Ok(())
}
