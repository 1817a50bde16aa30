//! Disks and networks attached to the test machine.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::opts::{absolute, escape};

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// A USB mass-storage device on an xHCI controller: how users boot the
    /// image from a stick.
    Usb,
    /// virtio-blk (PCI).
    Virtio,
    /// A SATA disk on the q35 AHCI controller.
    Ide,
}

/// A disk image. Test machines never change it: by default writes go to a
/// throw-away overlay (`snapshot=on`); [`Disk::read_only`] makes the guest
/// see a write-protected medium instead.
#[derive(Debug, Clone)]
pub struct Disk {
    path: PathBuf,
    bus: Bus,
    format: String,
    read_only: bool,
    bootindex: Option<u32>,
}

impl Disk {
    pub fn new(path: impl AsRef<Path>, bus: Bus) -> Self {
        Self {
            path: absolute(path.as_ref()),
            bus,
            format: "raw".into(),
            read_only: false,
            bootindex: None,
        }
    }

    /// A USB stick.
    pub fn usb(path: impl AsRef<Path>) -> Self {
        Self::new(path, Bus::Usb)
    }

    pub fn virtio(path: impl AsRef<Path>) -> Self {
        Self::new(path, Bus::Virtio)
    }

    pub fn ide(path: impl AsRef<Path>) -> Self {
        Self::new(path, Bus::Ide)
    }

    /// Image format (`raw` unless told otherwise, e.g. `qcow2`).
    pub fn format(mut self, format: &str) -> Self {
        self.format = format.into();
        self
    }

    /// Present the disk as write-protected instead of using an overlay.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Firmware boot priority (lower boots first).
    pub fn bootindex(mut self, index: u32) -> Self {
        self.bootindex = Some(index);
        self
    }

    pub(crate) fn bus(&self) -> Bus {
        self.bus
    }

    pub(crate) fn has_bootindex(&self) -> bool {
        self.bootindex.is_some()
    }

    /// `-drive` and `-device` arguments; `id` must be unique per machine.
    pub(crate) fn qemu_args(&self, id: &str, bootindex: Option<u32>) -> Result<Vec<String>, Error> {
        let protection = if self.read_only {
            "readonly=on"
        } else {
            "snapshot=on"
        };
        let drive = format!(
            "if=none,id={id},file={},format={},{protection}",
            escape(&self.path)?,
            self.format
        );
        let mut device = match self.bus {
            Bus::Usb => format!("usb-storage,bus=xhci.0,drive={id}"),
            Bus::Virtio => format!("virtio-blk-pci,drive={id}"),
            Bus::Ide => format!("ide-hd,drive={id}"),
        };
        if let Some(index) = self.bootindex.or(bootindex) {
            device.push_str(&format!(",bootindex={index}"));
        }
        Ok(vec!["-drive".into(), drive, "-device".into(), device])
    }
}

/// A user-mode (slirp) network: no privileges, no host setup. Options for
/// PXE (built-in TFTP server and DHCP boot file) and port forwards.
#[derive(Debug, Clone)]
pub struct UserNet {
    model: String,
    tftp: Option<PathBuf>,
    bootfile: Option<String>,
    hostfwd: Vec<String>,
    boot: bool,
}

impl Default for UserNet {
    fn default() -> Self {
        Self {
            model: "virtio-net-pci".into(),
            tftp: None,
            bootfile: None,
            hostfwd: Vec::new(),
            boot: false,
        }
    }
}

impl UserNet {
    pub fn new() -> Self {
        Self::default()
    }

    /// NIC model (default `virtio-net-pci`; QEMU gives it the iPXE ROM).
    pub fn model(mut self, model: &str) -> Self {
        self.model = model.into();
        self
    }

    /// Serve this directory over TFTP.
    pub fn tftp(mut self, dir: impl AsRef<Path>) -> Self {
        self.tftp = Some(absolute(dir.as_ref()));
        self
    }

    /// Boot file name announced by DHCP (relative to the TFTP directory).
    pub fn bootfile(mut self, name: &str) -> Self {
        self.bootfile = Some(name.into());
        self
    }

    /// A QEMU `hostfwd` rule, e.g. `tcp:127.0.0.1:5555-:22`; see
    /// [`crate::free_tcp_port`] for picking a host port.
    pub fn hostfwd(mut self, rule: &str) -> Self {
        self.hostfwd.push(rule.into());
        self
    }

    /// Make the firmware try this NIC first (PXE).
    pub fn boot(mut self) -> Self {
        self.boot = true;
        self
    }

    pub(crate) fn boots(&self) -> bool {
        self.boot
    }

    /// `-netdev` and `-device` arguments; `id` must be unique per machine.
    pub(crate) fn qemu_args(&self, id: &str) -> Result<Vec<String>, Error> {
        let mut netdev = format!("user,id={id}");
        if let Some(dir) = &self.tftp {
            netdev.push_str(&format!(",tftp={}", escape(dir)?));
        }
        if let Some(file) = &self.bootfile {
            netdev.push_str(&format!(",bootfile={}", file.replace(',', ",,")));
        }
        for rule in &self.hostfwd {
            netdev.push_str(&format!(",hostfwd={rule}"));
        }
        let mut device = format!("{},netdev={id}", self.model);
        if self.boot {
            device.push_str(",bootindex=0");
        }
        Ok(vec!["-netdev".into(), netdev, "-device".into(), device])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_disk_is_a_snapshot_on_the_xhci_bus() {
        let args = Disk::usb("/out/hv.img")
            .qemu_args("disk0", Some(1))
            .unwrap();
        assert_eq!(
            args,
            [
                "-drive",
                "if=none,id=disk0,file=/out/hv.img,format=raw,snapshot=on",
                "-device",
                "usb-storage,bus=xhci.0,drive=disk0,bootindex=1"
            ]
        );
    }

    #[test]
    fn read_only_disk_and_explicit_bootindex() {
        let disk = Disk::virtio("/d,1.qcow2")
            .format("qcow2")
            .read_only()
            .bootindex(3);
        let args = disk.qemu_args("disk1", Some(1)).unwrap();
        assert_eq!(
            args[1],
            "if=none,id=disk1,file=/d,,1.qcow2,format=qcow2,readonly=on"
        );
        assert_eq!(args[3], "virtio-blk-pci,drive=disk1,bootindex=3");
        let args = Disk::ide("/x").qemu_args("disk2", None).unwrap();
        assert_eq!(args[3], "ide-hd,drive=disk2");
    }

    #[test]
    fn user_net_for_pxe() {
        let net = UserNet::new()
            .tftp("/out/pxe")
            .bootfile("boot.ipxe")
            .hostfwd("tcp:127.0.0.1:5555-:22")
            .boot();
        assert_eq!(
            net.qemu_args("net0").unwrap(),
            [
                "-netdev",
                "user,id=net0,tftp=/out/pxe,bootfile=boot.ipxe,hostfwd=tcp:127.0.0.1:5555-:22",
                "-device",
                "virtio-net-pci,netdev=net0,bootindex=0"
            ]
        );
        assert_eq!(
            UserNet::new().model("e1000").qemu_args("n").unwrap()[3],
            "e1000,netdev=n"
        );
    }
}
