//! The size report: where the bytes of hv.img go, as a table for people and
//! JSON for scripts and CI trend tracking.

use std::fmt;

use serde_json::{json, Value};

use crate::budget::human;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Byte offset in hv.img, e.g. for `mdir -i hv.img@@OFFSET`.
    pub offset: u64,
    pub size: u64,
    pub used: u64,
}

impl Partition {
    pub fn free(&self) -> u64 {
        self.size.saturating_sub(self.used)
    }

    fn to_json(&self) -> Value {
        json!({ "offset_bytes": self.offset, "size_bytes": self.size, "used_bytes": self.used })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeReport {
    pub host_kernel: u64,
    /// Compressed, as stored on the ESP.
    pub host_initramfs: u64,
    pub init: u64,
    pub vmm: u64,
    /// The config signing key in the initramfs, when one is baked in.
    pub config_pubkey: Option<u64>,
    pub efi_loader: u64,
    /// ldlinux.sys and ldlinux.c32 as installed on the ESP.
    pub bios_loader: u64,
    /// gptmbr.bin, in the MBR sector itself (no space of its own).
    pub mbr_boot_code: u64,
    /// pxelinux.0 and ldlinux.c32 in pxe/ (not part of hv.img).
    pub pxe_loader: u64,
    pub guest_kernel: u64,
    /// Compressed, as stored on the config partition.
    pub guest_initramfs: u64,
    pub esp: Partition,
    pub config: Partition,
    pub total: u64,
    pub budget: u64,
}

impl SizeReport {
    /// Free space inside the filesystems, i.e. what could still be added to
    /// the image without growing it.
    pub fn free(&self) -> u64 {
        self.esp.free() + self.config.free()
    }

    /// Negative when over budget.
    pub fn headroom(&self) -> i64 {
        self.budget as i64 - self.total as i64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "total_bytes": self.total,
            "budget_bytes": self.budget,
            "headroom_bytes": self.headroom(),
            "free_bytes": self.free(),
            "within_budget": self.headroom() >= 0,
            "components": {
                "host_kernel": self.host_kernel,
                "host_initramfs": self.host_initramfs,
                "init": self.init,
                "vmm": self.vmm,
                "config_pubkey": self.config_pubkey,
                "efi_loader": self.efi_loader,
                "bios_loader": self.bios_loader,
                "mbr_boot_code": self.mbr_boot_code,
                "pxe_loader": self.pxe_loader,
                "guest_kernel": self.guest_kernel,
                "guest_initramfs": self.guest_initramfs,
            },
            "partitions": {
                "esp": self.esp.to_json(),
                "config": self.config.to_json(),
            },
        })
    }
}

impl fmt::Display for SizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, bytes: u64| {
            writeln!(f, "  {name:<40} {bytes:>12}  {:>12}", human(bytes))
        };
        writeln!(f, "hv.img size report")?;
        writeln!(f, "  {:<40} {:>12}  {:>12}", "component", "bytes", "")?;
        row(f, "host kernel (ESP /vmlinuz)", self.host_kernel)?;
        row(
            f,
            "host initramfs, gzip (ESP /initrd.img)",
            self.host_initramfs,
        )?;
        row(f, "  init", self.init)?;
        row(f, "  vmm", self.vmm)?;
        if let Some(key) = self.config_pubkey {
            row(f, "  config signing key (/etc/hv/config.pub)", key)?;
        }
        row(f, "EFI loader (systemd-boot)", self.efi_loader)?;
        row(f, "BIOS loader (syslinux, ESP /syslinux)", self.bios_loader)?;
        row(f, "BIOS MBR boot code (gptmbr.bin)", self.mbr_boot_code)?;
        row(f, "PXE loader (pxe/, not in hv.img)", self.pxe_loader)?;
        row(f, "example guest kernel", self.guest_kernel)?;
        row(f, "example guest initramfs, gzip", self.guest_initramfs)?;
        row(f, "ESP partition size", self.esp.size)?;
        row(f, "  used", self.esp.used)?;
        row(f, "config partition size", self.config.size)?;
        row(f, "  used", self.config.used)?;
        row(f, "free space in partitions", self.free())?;
        row(f, "total hv.img", self.total)?;
        row(f, "budget", self.budget)?;
        let headroom = self.headroom();
        let sign = if headroom < 0 { "-" } else { "" };
        writeln!(
            f,
            "  {:<40} {:>12}  {:>12}",
            "headroom",
            headroom,
            format!("{sign}{}", human(headroom.unsigned_abs()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SizeReport {
        SizeReport {
            host_kernel: 5_000_000,
            host_initramfs: 900_000,
            init: 400_000,
            vmm: 1_500_000,
            config_pubkey: None,
            efi_loader: 100_000,
            bios_loader: 180_000,
            mbr_boot_code: 440,
            pxe_loader: 160_000,
            guest_kernel: 4_000_000,
            guest_initramfs: 1_000_000,
            esp: Partition {
                offset: 1 << 20,
                size: 8 << 20,
                used: 6_100_000,
            },
            config: Partition {
                offset: 9 << 20,
                size: 16 << 20,
                used: 5_100_000,
            },
            total: 25 << 20,
            budget: 64 << 20,
        }
    }

    #[test]
    fn json_has_flat_totals_and_components() {
        let report = sample();
        let json = report.to_json();
        assert_eq!(json["total_bytes"], 25u64 << 20);
        assert_eq!(json["budget_bytes"], 64u64 << 20);
        assert_eq!(json["headroom_bytes"], (39i64 << 20));
        assert_eq!(json["within_budget"], true);
        assert_eq!(json["components"]["vmm"], 1_500_000);
        assert_eq!(json["components"]["bios_loader"], 180_000);
        assert_eq!(json["components"]["mbr_boot_code"], 440);
        assert_eq!(json["components"]["pxe_loader"], 160_000);
        assert_eq!(json["partitions"]["config"]["used_bytes"], 5_100_000);
        assert_eq!(json["free_bytes"], report.free());
        assert_eq!(json["components"]["config_pubkey"], Value::Null);
        assert!(!report.to_string().contains("config signing key"));
    }

    #[test]
    fn a_baked_key_is_listed() {
        let report = SizeReport {
            config_pubkey: Some(104),
            ..sample()
        };
        assert_eq!(report.to_json()["components"]["config_pubkey"], 104);
        assert!(report
            .to_string()
            .contains("config signing key (/etc/hv/config.pub)          104"));
    }

    #[test]
    fn negative_headroom() {
        let mut report = sample();
        report.budget = 20 << 20;
        assert_eq!(report.headroom(), -(5i64 << 20));
        assert_eq!(report.to_json()["within_budget"], false);
        assert!(report.to_string().contains("-5.00 MiB"));
    }
}
