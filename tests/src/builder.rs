//! Describing a test machine.

use std::env;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::devices::{Bus, Disk, UserNet};
use crate::error::{Error, ErrorKind};
use crate::firmware::Firmware;
use crate::opts::{absolute, escape};
use crate::qemu::Qemu;

/// Console lines that end any wait at once: nothing good follows them.
/// Anchored to the start of the line so that a nested guest's panic, which
/// init relays with a `[name] ` prefix, does not count as the host's.
const DEFAULT_FAIL_PATTERNS: &[&str] = &[r"^(\[\s*\d+\.\d+\] )?Kernel panic - not syncing"];

/// Builds and starts a QEMU machine for one test.
///
/// Defaults: q35, TCG with `-cpu max` (emulated AMD SVM + NPT, so KVM works
/// inside the guest), 1 vCPU, 1024 MiB, SeaBIOS, no devices but the serial
/// console, `-no-reboot` (a panicking guest ends the run instead of looping).
#[derive(Debug, Clone)]
pub struct QemuBuilder {
    name: String,
    firmware: Firmware,
    smp: u32,
    memory_mib: u32,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    disks: Vec<Disk>,
    nets: Vec<UserNet>,
    no_reboot: bool,
    fail_patterns: Vec<String>,
    extra: Vec<String>,
}

impl QemuBuilder {
    /// `name` identifies the run: it names the log file
    /// (`<logs>/<name>.log`) and the QEMU process. Use the test's name.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            firmware: Firmware::default(),
            smp: 1,
            memory_mib: 1024,
            kernel: None,
            initrd: None,
            append: None,
            disks: Vec::new(),
            nets: Vec::new(),
            no_reboot: true,
            fail_patterns: DEFAULT_FAIL_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            extra: Vec::new(),
        }
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Boot through OVMF (UEFI).
    pub fn uefi(self) -> Self {
        self.firmware(Firmware::Uefi)
    }

    /// Boot through SeaBIOS (legacy BIOS; the default).
    pub fn seabios(self) -> Self {
        self.firmware(Firmware::SeaBios)
    }

    /// Boot this kernel directly (`-kernel`), bypassing any boot loader.
    pub fn kernel(mut self, bzimage: impl AsRef<Path>) -> Self {
        self.kernel = Some(absolute(bzimage.as_ref()));
        self
    }

    pub fn initrd(mut self, initrd: impl AsRef<Path>) -> Self {
        self.initrd = Some(absolute(initrd.as_ref()));
        self
    }

    /// Kernel command line for [`QemuBuilder::kernel`].
    pub fn append(mut self, cmdline: &str) -> Self {
        self.append = Some(cmdline.into());
        self
    }

    /// Attach a disk. Unless some disk or NIC has a boot index, the first
    /// disk gets boot index 1, so the firmware boots it without probing.
    pub fn disk(mut self, disk: Disk) -> Self {
        self.disks.push(disk);
        self
    }

    /// Shorthand for `disk(Disk::usb(path))`: the image as a USB stick.
    pub fn usb_disk(self, path: impl AsRef<Path>) -> Self {
        self.disk(Disk::usb(path))
    }

    /// Attach a user-mode network.
    pub fn net(mut self, net: UserNet) -> Self {
        self.nets.push(net);
        self
    }

    pub fn smp(mut self, vcpus: u32) -> Self {
        self.smp = vcpus;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Let a guest reboot instead of making QEMU exit.
    pub fn allow_reboot(mut self) -> Self {
        self.no_reboot = false;
        self
    }

    /// A console regex that makes every wait fail at once (default: a
    /// kernel panic of the host, not of a guest). The awaited pattern still
    /// wins when a line matches both.
    pub fn fail_on(mut self, pattern: &str) -> Self {
        self.fail_patterns.push(pattern.into());
        self
    }

    /// An extra QEMU argument, appended after the generated ones.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts QEMU and connects to its monitor. See [`Qemu`].
    pub fn spawn(self) -> Result<Qemu, Error> {
        Qemu::spawn(self)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn compiled_fail_patterns(&self) -> Result<Vec<Regex>, Error> {
        self.fail_patterns.iter().map(|p| compile(p)).collect()
    }

    /// The QEMU binary: `$HV_QEMU`, or `qemu-system-x86_64` from `PATH`.
    pub(crate) fn program() -> String {
        env::var("HV_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
    }

    /// Every QEMU argument. `run_dir` is the run's private directory (monitor
    /// socket, firmware variables).
    pub fn qemu_args(&self, run_dir: &Path) -> Result<Vec<String>, Error> {
        let mut args: Vec<String> = vec![
            "-name".into(),
            format!("hv-e2e-{}", self.name.replace(',', "_")),
            // No default NIC, VGA, monitor or CD-ROM: the machine has exactly
            // what the test asked for.
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            // graphics=off makes SeaBIOS print to the serial port.
            "-machine".into(),
            "q35,graphics=off".into(),
            "-accel".into(),
            "tcg".into(),
            "-cpu".into(),
            "max".into(),
            "-smp".into(),
            self.smp.to_string(),
            "-m".into(),
            self.memory_mib.to_string(),
            // The serial console is QEMU's stdout/stdin.
            "-chardev".into(),
            "stdio,id=serial0,signal=off".into(),
            "-serial".into(),
            "chardev:serial0".into(),
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                escape(&run_dir.join("qmp.sock"))?
            ),
        ];
        if self.no_reboot {
            args.push("-no-reboot".into());
        }
        args.extend(self.firmware.qemu_args(run_dir)?);
        if let Some(kernel) = &self.kernel {
            args.extend(["-kernel".into(), escape(kernel)?]);
        }
        if let Some(initrd) = &self.initrd {
            args.extend(["-initrd".into(), escape(initrd)?]);
        }
        if let Some(cmdline) = &self.append {
            args.extend(["-append".into(), cmdline.clone()]);
        }
        if self.disks.iter().any(|d| d.bus() == Bus::Usb) {
            args.extend(["-device".into(), "qemu-xhci,id=xhci".into()]);
        }
        let explicit_boot =
            self.disks.iter().any(Disk::has_bootindex) || self.nets.iter().any(UserNet::boots);
        for (i, disk) in self.disks.iter().enumerate() {
            let implicit = (i == 0 && !explicit_boot).then_some(1);
            args.extend(disk.qemu_args(&format!("disk{i}"), implicit)?);
        }
        for (i, net) in self.nets.iter().enumerate() {
            args.extend(net.qemu_args(&format!("net{i}"))?);
        }
        args.extend(self.extra.iter().cloned());
        Ok(args)
    }
}

pub(crate) fn compile(pattern: &str) -> Result<Regex, Error> {
    Regex::new(pattern).map_err(|e| {
        Error::new(
            ErrorKind::Pattern,
            format!("bad console pattern {pattern:?}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn defaults_are_a_small_tcg_machine_with_only_a_serial_console() {
        let dir = tempfile::tempdir().unwrap();
        let args = QemuBuilder::new("t").qemu_args(dir.path()).unwrap();
        assert!(args.contains(&"-nodefaults".to_string()));
        assert!(args.contains(&"-no-reboot".to_string()));
        assert_eq!(after(&args, "-accel"), ["tcg"]);
        assert_eq!(after(&args, "-cpu"), ["max"]);
        assert_eq!(after(&args, "-smp"), ["1"]);
        assert_eq!(after(&args, "-m"), ["1024"]);
        assert_eq!(after(&args, "-serial"), ["chardev:serial0"]);
        assert!(after(&args, "-qmp")[0].ends_with("/qmp.sock,server=on,wait=off"));
        assert!(after(&args, "-device").is_empty());
    }

    #[test]
    fn usb_stick_under_uefi_gets_xhci_and_boots_first() {
        let dir = tempfile::tempdir().unwrap();
        let args = QemuBuilder::new("t")
            .uefi()
            .usb_disk("/out/hv.img")
            .disk(Disk::virtio("/data.img"))
            .smp(2)
            .memory_mib(2048)
            .allow_reboot()
            .qemu_args(dir.path())
            .unwrap();
        assert!(!args.contains(&"-no-reboot".to_string()));
        assert_eq!(after(&args, "-smp"), ["2"]);
        assert_eq!(
            after(&args, "-device"),
            [
                "qemu-xhci,id=xhci",
                "usb-storage,bus=xhci.0,drive=disk0,bootindex=1",
                "virtio-blk-pci,drive=disk1"
            ]
        );
        assert!(after(&args, "-drive")
            .iter()
            .any(|d| d.starts_with("if=pflash")));
    }

    #[test]
    fn network_boot_takes_precedence_over_the_implicit_disk_boot() {
        let dir = tempfile::tempdir().unwrap();
        let args = QemuBuilder::new("t")
            .usb_disk("/out/hv.img")
            .net(UserNet::new().tftp("/out/pxe").bootfile("boot.ipxe").boot())
            .qemu_args(dir.path())
            .unwrap();
        let devices = after(&args, "-device");
        assert_eq!(devices[1], "usb-storage,bus=xhci.0,drive=disk0");
        assert_eq!(devices[2], "virtio-net-pci,netdev=net0,bootindex=0");
    }

    #[test]
    fn direct_kernel_boot_and_extra_args_come_last() {
        let dir = tempfile::tempdir().unwrap();
        let args = QemuBuilder::new("t")
            .kernel("/k/bzImage")
            .initrd("/k/initrd.img")
            .append("console=ttyS0 panic=-1")
            .arg("-device")
            .arg("virtio-rng-pci")
            .qemu_args(dir.path())
            .unwrap();
        assert_eq!(after(&args, "-kernel"), ["/k/bzImage"]);
        assert_eq!(after(&args, "-initrd"), ["/k/initrd.img"]);
        assert_eq!(after(&args, "-append"), ["console=ttyS0 panic=-1"]);
        assert_eq!(args[args.len() - 2..], ["-device", "virtio-rng-pci"]);
    }

    #[test]
    fn host_panics_fail_waits_but_guest_panics_do_not() {
        let patterns = QemuBuilder::new("t").compiled_fail_patterns().unwrap();
        let fails = |line: &str| patterns.iter().any(|p| p.is_match(line));
        assert!(fails(
            "[    1.351765] Kernel panic - not syncing: No working init found."
        ));
        assert!(fails(
            "Kernel panic - not syncing: VFS: Unable to mount root fs"
        ));
        assert!(!fails(
            "[example] [    2.108069] Kernel panic - not syncing: No working init found."
        ));
    }

    #[test]
    fn bad_fail_pattern_is_reported() {
        let err = QemuBuilder::new("t")
            .fail_on("(")
            .compiled_fail_patterns()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Pattern);
        assert!(err.message().contains("\"(\""), "{}", err.message());
    }
}
