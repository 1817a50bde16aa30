//! The host boots over the network: SeaBIOS runs the NIC's iPXE ROM, which
//! fetches out/pxe/boot.ipxe, the kernel and the initramfs from QEMU's TFTP
//! server, and our init comes up.

use std::time::Duration;

use hv_tests::{artefact, Qemu, UserNet};

const BOOT_TO_INIT: Duration = Duration::from_secs(180);

#[test]
fn pxe_boot_through_ipxe_reaches_init() -> Result<(), hv_tests::Error> {
    let script = artefact("pxe/boot.ipxe");
    let tftp_root = script.parent().expect("boot.ipxe lies in out/pxe");
    let net = UserNet::new().tftp(tftp_root).bootfile("boot.ipxe").boot();
    let mut vm = Qemu::builder("boot_pxe").seabios().net(net).spawn()?;

    vm.wait_for(r"boot\.ipxe.*\[script\]", BOOT_TO_INIT)?;
    let banner = vm.wait_for(r"^hv-init 0\.1\.0\b", BOOT_TO_INIT)?;
    eprintln!("boot_pxe: {banner:?} after {:.1?}", vm.elapsed());
    assert!(vm.quit()?.success());
    Ok(())
}
