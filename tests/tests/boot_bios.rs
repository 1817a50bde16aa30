//! The image boots as a USB stick on a legacy BIOS machine (SeaBIOS, the
//! image's syslinux path), reaches our init, and the example guest shipped
//! on the config partition runs with its console relayed by init.

use std::time::Duration;

use hv_tests::{artefact, Qemu};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);
/// The example guest boots under nested KVM (about 10 s under TCG).
const GUEST_UP: Duration = Duration::from_secs(120);

#[test]
fn usb_stick_under_bios_runs_the_example_guest() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("boot_bios")
        .seabios()
        .smp(2)
        .memory_mib(2048)
        .usb_disk(artefact("hv.img"))
        .spawn()?;
    let banner = vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    eprintln!("boot_bios: {banner:?} after {:.1?}", vm.elapsed());
    // init relays the guest's serial console line by line, prefixed.
    vm.wait_for(r"^\[example\] Hello from the example guest$", GUEST_UP)?;
    // What example.toml asks for: one vCPU, 64 MiB, the entropy device.
    vm.wait_for(
        r"^\[example\] example guest: cpus=1 memory=\d+MiB block=\[none\] net=\[none\] hwrng=virtio_rng",
        GUEST_UP,
    )?;
    eprintln!(
        "boot_bios: example guest greeted after {:.1?}",
        vm.elapsed()
    );
    assert!(vm.quit()?.success());
    Ok(())
}
