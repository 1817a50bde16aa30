//! `hv-image build`: turns the input files into every output in `--out`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::budget::{self, BudgetError, OverBudget, MIB};
use crate::checksums;
use crate::cli::BuildArgs;
use crate::disk::{
    self, DiskError, Partition, BASIC_DATA_TYPE, BOOT_CODE_SIZE, ESP_TYPE, LEGACY_BIOS_BOOTABLE,
};
use crate::epoch::{self, EpochError};
use crate::ids::{self, Ids};
use crate::initramfs::{self, InitramfsError};
use crate::inputs::{self, InputError, Kind};
use crate::report::{self, SizeReport};
use crate::syslinux::{self, SyslinuxError};
use hvfat::{self as fat, FatClock, FatError, FatFile, VolumeSpec};

const LOADER_CONF: &str = include_str!("../assets/loader.conf");
const LOADER_ENTRY: &str = include_str!("../assets/hv.conf");
const HOST_TOML: &str = include_str!("../assets/host.toml");
const EXAMPLE_GUEST_TOML: &str = include_str!("../assets/example.toml");
const CONFIG_README: &str = include_str!("../assets/README.txt");
const SYSLINUX_CFG: &str = include_str!("../assets/syslinux.cfg");
const PXELINUX_CFG: &str = include_str!("../assets/pxelinux.cfg");
const BOOT_IPXE: &str = include_str!("../assets/boot.ipxe");
const PXE_README_TEXT: &str = include_str!("../assets/pxe-README.txt");

/// Label of the config partition, which init looks for.
pub const CONFIG_LABEL: &str = "HVCONFIG";
const ESP_LABEL: &str = "HVBOOT";

/// The image is rewritten as a whole for every update, so the ESP only
/// needs room for rounding, not for growth in place.
const ESP_SLACK: u64 = MIB / 2;
/// Users put their own guest definitions (and often kernels) here.
const CONFIG_MIN_SIZE: u64 = 16 * MIB;
const CONFIG_SLACK: u64 = MIB;

/// Output paths, relative to `--out`.
pub const IMAGE: &str = "hv.img";
pub const PXE_KERNEL: &str = "pxe/vmlinuz";
pub const PXE_INITRD: &str = "pxe/initrd.img";
pub const PXE_IPXE_SCRIPT: &str = "pxe/boot.ipxe";
pub const PXE_PXELINUX: &str = "pxe/pxelinux.0";
pub const PXE_LDLINUX: &str = "pxe/ldlinux.c32";
pub const PXE_PXELINUX_CFG: &str = "pxe/pxelinux.cfg/default";
pub const PXE_README: &str = "pxe/README.txt";
pub const SUMS: &str = "SHA256SUMS";
pub const REPORT: &str = "size-report.json";

/// Why `hv-image build` wrote no image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    Epoch(#[from] EpochError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("host initramfs: {0}")]
    HostInitramfs(#[source] InitramfsError),
    #[error("example guest initramfs: {0}")]
    GuestInitramfs(#[source] InitramfsError),
    #[error(transparent)]
    Fat(#[from] FatError),
    #[error("ESP: {0}")]
    Syslinux(#[from] SyslinuxError),
    #[error("MBR boot code: wrong size")]
    BootCodeSize,
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("size report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}; nothing but {REPORT} was written")]
    OverBudget(#[source] OverBudget),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// A file of `--out` that could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output directory {}: {error}", .path.display())]
    Directory {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("creating {}: {error}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("writing {}: {error}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("removing stale {}: {error}", .path.display())]
    Remove {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
}

struct Inputs {
    host_kernel: inputs::Input,
    init: inputs::Input,
    vmm: inputs::Input,
    guest_kernel: inputs::Input,
    busybox: inputs::Input,
    efi_loader: inputs::Input,
    gptmbr: inputs::Input,
    ldlinux_c32: inputs::Input,
    pxelinux: inputs::Input,
    config_pubkey: Option<inputs::Input>,
}

impl Inputs {
    fn read(args: &BuildArgs) -> Result<Self, InputError> {
        Ok(Inputs {
            host_kernel: inputs::read("host kernel", &args.host_kernel, Kind::EfiStubKernel)?,
            init: inputs::read("init", &args.init, Kind::StaticExecutable)?,
            vmm: inputs::read("vmm", &args.vmm, Kind::StaticExecutable)?,
            guest_kernel: inputs::read("guest kernel", &args.guest_kernel, Kind::Kernel)?,
            busybox: inputs::read("busybox", &args.busybox, Kind::StaticExecutable)?,
            efi_loader: inputs::read("EFI loader", &args.efi_loader, Kind::EfiApplication)?,
            gptmbr: inputs::read("MBR boot code", &args.gptmbr(), Kind::MbrBootCode)?,
            ldlinux_c32: inputs::read("syslinux core", &args.ldlinux_c32(), Kind::Com32Module)?,
            pxelinux: inputs::read("pxelinux", &args.pxelinux, Kind::Pxelinux)?,
            config_pubkey: args
                .config_pubkey
                .as_ref()
                .map(|key| inputs::read("config public key", key, Kind::MinisignPublicKey))
                .transpose()?,
        })
    }

    fn ids(&self, epoch: u32) -> Ids {
        Ids::from_inputs(
            u64::from(epoch),
            &[
                ("host-kernel", &self.host_kernel.data),
                ("init", &self.init.data),
                ("vmm", &self.vmm.data),
                ("guest-kernel", &self.guest_kernel.data),
                ("busybox", &self.busybox.data),
                ("efi-loader", &self.efi_loader.data),
                ("gptmbr", &self.gptmbr.data),
                ("ldlinux-c32", &self.ldlinux_c32.data),
                ("pxelinux", &self.pxelinux.data),
            ],
        )
    }
}

/// The kernel option that names the config partition by PARTUUID.
pub fn config_option(partuuid: &str) -> String {
    format!("hv.config=PARTUUID={partuuid}")
}

/// `config` with [`config_option`] appended to the command-line line, the
/// one starting (after indentation) with `key`.
fn with_config_partition(config: &str, key: &str, partuuid: &str) -> String {
    config
        .split_inclusive('\n')
        .map(|line| {
            let text = line.trim_end_matches('\n');
            if text.trim_start().starts_with(key) {
                let end = &line[text.len()..];
                format!("{text} {}{end}", config_option(partuuid))
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// Builds everything, prints the size report, and writes the outputs. An
/// image over budget leaves only the size report behind (and removes stale
/// images from earlier runs) so that nothing downstream can pick it up.
pub fn build(args: &BuildArgs) -> Result<SizeReport, BuildError> {
    let env_budget = std::env::var(budget::ENV_VAR).ok();
    let budget = budget::resolve(args.budget.as_deref(), env_budget.as_deref())?;
    let epoch = epoch::from_env()?;
    let inputs = Inputs::read(args)?;
    let ids = inputs.ids(epoch);
    let clock = FatClock::leak(epoch);

    // The loaders name the config partition by its GPT PARTUUID, which
    // only this image's partition carries: a file system labelled
    // HVCONFIG on another disk (a guest's) is never taken for it.
    let config_partuuid = ids::guid_string(&ids.guid("config"));
    let loader_entry = with_config_partition(LOADER_ENTRY, "options ", &config_partuuid);
    let syslinux_cfg = with_config_partition(SYSLINUX_CFG, "APPEND ", &config_partuuid);

    let config_pubkey = inputs.config_pubkey.as_ref().map(|k| k.data.as_slice());
    let host_initrd = initramfs::host(&inputs.init.data, &inputs.vmm.data, config_pubkey, epoch)
        .map_err(BuildError::HostInitramfs)?;
    let guest_initrd = initramfs::example_guest(&inputs.busybox.data, epoch)
        .map_err(BuildError::GuestInitramfs)?;

    let mut esp = fat::build(
        &[
            FatFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: &inputs.efi_loader.data,
            },
            FatFile {
                path: "loader/loader.conf",
                data: LOADER_CONF.as_bytes(),
            },
            FatFile {
                path: "loader/entries/hv.conf",
                data: loader_entry.as_bytes(),
            },
            FatFile {
                path: "vmlinuz",
                data: &inputs.host_kernel.data,
            },
            FatFile {
                path: "initrd.img",
                data: &host_initrd,
            },
            FatFile {
                path: syslinux::CONFIG,
                data: syslinux_cfg.as_bytes(),
            },
        ],
        &VolumeSpec {
            label: ESP_LABEL,
            volume_id: ids.volume_id("esp"),
            min_size: MIB,
            slack: ESP_SLACK + syslinux::ROOM,
        },
        clock,
    )?;
    let bios = syslinux::install(&args.syslinux, &mut esp.bytes, epoch, clock)?;
    esp.used = bios.used;
    let config = fat::build(
        &[
            FatFile {
                path: "README.txt",
                data: CONFIG_README.as_bytes(),
            },
            FatFile {
                path: "host.toml",
                data: HOST_TOML.as_bytes(),
            },
            FatFile {
                path: "guests/example.toml",
                data: EXAMPLE_GUEST_TOML.as_bytes(),
            },
            FatFile {
                path: "example/bzImage",
                data: &inputs.guest_kernel.data,
            },
            FatFile {
                path: "example/initrd.img",
                data: &guest_initrd,
            },
        ],
        &VolumeSpec {
            label: CONFIG_LABEL,
            volume_id: ids.volume_id("config"),
            min_size: CONFIG_MIN_SIZE,
            slack: CONFIG_SLACK,
        },
        clock,
    )?;

    let boot_code: &[u8; BOOT_CODE_SIZE] = inputs.gptmbr.data[..]
        .try_into()
        .map_err(|_| BuildError::BootCodeSize)?;
    let image = disk::assemble(
        ids.guid("disk"),
        boot_code,
        &[
            Partition {
                name: "EFI system partition",
                type_guid: ESP_TYPE,
                guid: ids.guid("esp"),
                attributes: LEGACY_BIOS_BOOTABLE,
                data: &esp.bytes,
            },
            Partition {
                name: CONFIG_LABEL,
                type_guid: BASIC_DATA_TYPE,
                guid: ids.guid("config"),
                attributes: 0,
                data: &config.bytes,
            },
        ],
    )?;

    let report = SizeReport {
        host_kernel: inputs.host_kernel.data.len() as u64,
        host_initramfs: host_initrd.len() as u64,
        init: inputs.init.data.len() as u64,
        vmm: inputs.vmm.data.len() as u64,
        config_pubkey: config_pubkey.map(|k| k.len() as u64),
        efi_loader: inputs.efi_loader.data.len() as u64,
        bios_loader: bios.loader,
        mbr_boot_code: BOOT_CODE_SIZE as u64,
        pxe_loader: (inputs.pxelinux.data.len() + inputs.ldlinux_c32.data.len()) as u64,
        guest_kernel: inputs.guest_kernel.data.len() as u64,
        guest_initramfs: guest_initrd.len() as u64,
        esp: report::Partition {
            offset: image.placements[0].offset,
            size: esp.bytes.len() as u64,
            used: esp.used,
        },
        config: report::Partition {
            offset: image.placements[1].offset,
            size: config.bytes.len() as u64,
            used: config.used,
        },
        total: image.bytes.len() as u64,
        budget,
    };

    let out = Output::new(&args.out)?;
    let json = serde_json::to_string_pretty(&report.to_json())? + "\n";
    out.write(REPORT, json.as_bytes())?;
    print!("{report}");

    // Sorted by path, the order SHA256SUMS lists them in.
    let files: [(&str, &[u8]); 8] = [
        (IMAGE, &image.bytes),
        (PXE_README, PXE_README_TEXT.as_bytes()),
        (PXE_IPXE_SCRIPT, BOOT_IPXE.as_bytes()),
        (PXE_INITRD, &host_initrd),
        (PXE_LDLINUX, &inputs.ldlinux_c32.data),
        (PXE_PXELINUX, &inputs.pxelinux.data),
        (PXE_PXELINUX_CFG, PXELINUX_CFG.as_bytes()),
        (PXE_KERNEL, &inputs.host_kernel.data),
    ];
    let image_path = out.path(IMAGE);
    if let Err(over) = budget::check(&image_path.display().to_string(), report.total, budget) {
        for (stale, _) in files {
            out.remove(stale)?;
        }
        out.remove(SUMS)?;
        return Err(BuildError::OverBudget(over));
    }

    for (path, data) in files {
        out.write(path, data)?;
    }
    out.write(SUMS, checksums::sums(&files).as_bytes())?;
    println!("wrote {} ({} bytes)", image_path.display(), report.total);
    Ok(report)
}

/// The output directory. Files are written under a temporary name and
/// renamed, so an interrupted build never leaves a truncated image behind.
struct Output {
    dir: PathBuf,
}

impl Output {
    fn new(dir: &Path) -> Result<Self, OutputError> {
        fs::create_dir_all(dir).map_err(|error| OutputError::Directory {
            path: dir.into(),
            error,
        })?;
        Ok(Output {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    fn write(&self, relative: &str, data: &[u8]) -> Result<(), OutputError> {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|error| OutputError::Create {
                path: parent.into(),
                error,
            })?;
        }
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        fs::write(&partial, data)
            .and_then(|_| fs::rename(&partial, &path))
            .map_err(|error| OutputError::Write { path, error })
    }

    fn remove(&self, relative: &str) -> Result<(), OutputError> {
        let path = self.path(relative);
        match fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                Err(OutputError::Remove { path, error })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvconfig::guest::RestartPolicy;
    use std::path::Path;

    #[test]
    fn shipped_host_toml_is_valid() {
        let host = hvconfig::parse_host(Path::new("/cfg/host.toml"), HOST_TOML).unwrap();
        assert_eq!(host.hostname, "hv01");
        assert_eq!(host.shutdown_timeout_s, 30);
        assert_eq!(host.bridges.len(), 1);
        assert_eq!(host.bridges[0].name, "br0");
        assert!(host.bridges[0].interfaces.is_empty());
        assert!(host.mounts.is_empty());
    }

    #[test]
    fn shipped_example_guest_is_valid() {
        let path = Path::new("/cfg/guests/example.toml");
        let guest = hvconfig::parse_guest(path, EXAMPLE_GUEST_TOML).unwrap();
        assert_eq!(guest.name, "example");
        assert_eq!((guest.machine.vcpus, guest.machine.memory_mib), (1, 64));
        assert_eq!(
            guest.boot.kernel().expect("kernel"),
            Path::new("/cfg/guests/../example/bzImage")
        );
        assert_eq!(
            guest.boot.initrd(),
            Some(Path::new("/cfg/guests/../example/initrd.img"))
        );
        assert_eq!(guest.boot.cmdline, "console=ttyS0 quiet");
        assert!(guest.disks.is_empty());
        assert!(guest.rng.enabled);
        assert_eq!(guest.lifecycle.restart, RestartPolicy::OnFailure);
        assert!(guest.lifecycle.autostart);
    }

    #[test]
    fn boot_entry_uses_contract_cmdline() {
        assert!(LOADER_ENTRY
            .lines()
            .any(|l| l == "options console=tty0 console=ttyS0,115200n8 panic=10"));
        assert!(LOADER_ENTRY.lines().any(|l| l == "linux /vmlinuz"));
        assert!(LOADER_ENTRY.lines().any(|l| l == "initrd /initrd.img"));
        assert!(LOADER_CONF.lines().any(|l| l == "default hv.conf"));
    }

    /// The options line of the systemd-boot entry, which every other boot
    /// path must repeat.
    fn cmdline() -> &'static str {
        LOADER_ENTRY
            .lines()
            .find_map(|l| l.strip_prefix("options "))
            .unwrap()
    }

    #[test]
    fn every_boot_path_uses_the_same_cmdline() {
        let append = |cfg: &'static str| {
            cfg.lines()
                .find_map(|l| l.trim().strip_prefix("APPEND "))
                .unwrap()
        };
        assert_eq!(append(SYSLINUX_CFG), cmdline());
        assert_eq!(append(PXELINUX_CFG), format!("{} ip=dhcp", cmdline()));
        let kernel = BOOT_IPXE
            .lines()
            .find(|l| l.starts_with("kernel "))
            .unwrap();
        assert!(
            kernel.contains(&format!(" {} ip=dhcp ", cmdline())),
            "{kernel}"
        );
    }

    #[test]
    fn both_loaders_name_the_config_partition_by_partuuid() {
        let uuid = "0A1B2C3D-0000-4000-8000-00000000000F";
        let entry = with_config_partition(LOADER_ENTRY, "options ", uuid);
        let bios = with_config_partition(SYSLINUX_CFG, "APPEND ", uuid);
        let want = format!("{} hv.config=PARTUUID={uuid}", cmdline());
        assert!(
            entry.lines().any(|l| l == format!("options {want}")),
            "{entry}"
        );
        assert!(
            bios.lines().any(|l| l == format!("  APPEND {want}")),
            "{bios}"
        );
        // Nothing else changes.
        assert_eq!(
            entry.len(),
            LOADER_ENTRY.len() + want.len() - cmdline().len()
        );
        assert_eq!(bios.lines().count(), SYSLINUX_CFG.lines().count());
        assert!(bios.ends_with('\n'));
    }

    #[test]
    fn syslinux_configs_are_well_formed() {
        // SERIAL only takes effect as the first directive.
        assert!(SYSLINUX_CFG.starts_with("SERIAL 0 115200\n"));
        assert!(PXELINUX_CFG.starts_with("SERIAL 0 115200\n"));
        for cfg in [SYSLINUX_CFG, PXELINUX_CFG] {
            let directives: Vec<&str> = cfg
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            assert!(directives.contains(&"DEFAULT hv"));
            assert!(directives.contains(&"LABEL hv"));
        }
        assert!(SYSLINUX_CFG.contains("LINUX /vmlinuz\n  INITRD /initrd.img\n"));
        assert!(PXELINUX_CFG.contains("KERNEL vmlinuz\n  INITRD initrd.img\n"));
        assert!(BOOT_IPXE.starts_with("#!ipxe\n"));
        assert!(BOOT_IPXE.contains("\ninitrd initrd.img\nboot\n"));
    }
}
