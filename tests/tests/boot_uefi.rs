//! The image boots as a USB stick on a UEFI machine and reaches our init.

use std::time::Duration;

use hv_tests::{artefact, Qemu};

/// TCG boot of OVMF + kernel to init; generous for a loaded 2-core machine
/// (scaled further by HV_E2E_TIMEOUT_SCALE).
const BOOT_TO_INIT: Duration = Duration::from_secs(180);

#[test]
fn usb_stick_under_uefi_reaches_init() -> Result<(), hv_tests::Error> {
    let image = artefact("hv.img");
    let mut vm = Qemu::builder("boot_uefi").uefi().usb_disk(&image).spawn()?;

    let banner = vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    eprintln!("boot_uefi: {banner:?} after {:.1?}", vm.elapsed());

    // init does not handle the ACPI power button yet; the power-off path gets
    // its own test once it does.
    assert!(vm.quit()?.success());
    Ok(())
}
