//! The image boots as a USB stick on a legacy BIOS machine (SeaBIOS, the
//! image's syslinux path) and reaches our init.

use std::time::Duration;

use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);

#[test]
fn usb_stick_under_bios_reaches_init() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("boot_bios")
        .seabios()
        .usb_disk(artefact("hv.img"))
        .spawn()?;
    let banner = vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    eprintln!("boot_bios: {banner:?} after {:.1?}", vm.elapsed());
    assert!(vm.quit()?.success());
    Ok(())
}
