//! Builds a ready-to-run VM from a [`VmSource`]: guest memory, kernel and
//! initrd, firmware tables, devices on their buses, and configured vCPUs.
//!
//! Two steps, on either side of the privilege drop: [`open_host`] opens
//! (as root) everything that may need it and reads nothing; [`build`]
//! parses the images and creates the VM.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hvconfig::guest::{DiskSource, VirtioTransport};
use hvcontract::VmmExit;
use kvm_ioctls::Kvm;
use vm_memory::mmap::FromRangesError;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::boot::{self, BootInfo};
use crate::arch::x86_64::kernel::{self, LoadedKernel};
use crate::arch::x86_64::{acpi, layout, regs};
use crate::boot_disk;
use crate::cloud_init;
use crate::device_manager::{self, legacy, mmio, pci, virtio, HandedFds};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::bus::Bus;
use crate::devices::legacy::{SerialDevice, I8042};
use crate::devices::virtio::{VirtioDevice, WorkerGate};
use crate::disk_boot;
use crate::exit::ExitHandle;
use crate::resources::VmSource;
use crate::vstate::{vcpu::Vcpu, vm};
use hvconfig::cloud_init::SeedFiles;

/// Why the VM could not be built. The images and the machine the
/// definition asks for are its problem ([`VmmExit::Invalid`]); memory,
/// KVM and the firmware tables are the host's ([`VmmExit::Error`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a guest needs at least one vCPU")]
    NoVcpus,
    #[error("{what}: cannot open: {source}")]
    OpenImage { what: String, source: io::Error },
    #[error("{what}: {source}")]
    Image { what: String, source: kernel::Error },
    /// The definition boots from its first disk and the search failed.
    #[error("{what}: {source}")]
    DiskBoot {
        what: String,
        source: disk_boot::Error,
    },
    #[error("{requested} vCPUs requested, this host supports {max}")]
    TooManyVcpus { requested: u8, max: usize },
    /// The kernel command line with the devices' part does not fit;
    /// `definition` is "FILE: " or empty.
    #[error("{definition}{source}")]
    Cmdline {
        definition: String,
        source: boot::Error,
    },
    #[error(transparent)]
    Devices(#[from] device_manager::Error),
    #[error(transparent)]
    Seed(#[from] cloud_init::Error),
    #[error("cannot open /dev/kvm: {0}")]
    Kvm(kvm_ioctls::Error),
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Memory { mib: u32, source: FromRangesError },
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error("eventfd: {0}")]
    EventFd(io::Error),
    #[error(transparent)]
    Acpi(#[from] acpi::Error),
    #[error(transparent)]
    BootTables(#[from] regs::Error),
    #[error(transparent)]
    BootParams(boot::Error),
    #[error("{0}")]
    Vcpu(String),
}

impl Error {
    pub fn exit(&self) -> VmmExit {
        match self {
            Error::NoVcpus
            | Error::OpenImage { .. }
            | Error::Image { .. }
            | Error::TooManyVcpus { .. }
            | Error::Cmdline { .. } => VmmExit::Invalid,
            Error::DiskBoot { source, .. } => match source {
                disk_boot::Error::Search(_) => VmmExit::Invalid,
                _ => VmmExit::Error,
            },
            Error::Devices(e) => e.exit(),
            Error::Seed(e) => e.exit(),
            Error::Kvm(_)
            | Error::Memory { .. }
            | Error::Vm(_)
            | Error::EventFd(_)
            | Error::Acpi(_)
            | Error::BootTables(_)
            | Error::BootParams(_)
            | Error::Vcpu(_) => VmmExit::Error,
        }
    }
}

/// A built VM, not yet running.
pub struct Vmm {
    pub vcpus: Vec<Vcpu>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub pm: Arc<Mutex<AcpiPm>>,
    pub exit: Arc<ExitHandle>,
    /// The virtio worker threads, not started yet.
    pub workers: Vec<WorkerGate>,
    /// Kept alive for the lifetime of the VM (KVM holds raw pointers into
    /// guest memory).
    pub mem: GuestMemoryMmap,
    _kvm: Kvm,
}

fn open(source: &VmSource, what: &str, path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| Error::OpenImage {
        what: source.describe(what, path),
        source: e,
    })
}

/// What the kernel comes from, open but not read yet.
pub enum Images {
    /// The definition's (or the command line's) kernel and initrd.
    Files { kernel: File, initrd: Option<File> },
    /// The first disk, to be searched for what its distribution installed.
    Disk(File),
}

pub fn open_images(source: &VmSource, fds: HandedFds) -> Result<Images, Error> {
    let Some(kernel) = source.kernel() else {
        return open_boot_disk(source, fds).map(Images::Disk);
    };
    Ok(Images::Files {
        kernel: open(source, "kernel", kernel)?,
        initrd: match source.initrd() {
            Some(path) => Some(open(source, "initrd", path)?),
            None => None,
        },
    })
}

/// The guest's first disk, read-only, for the boot loader: a duplicate of
/// the fd init handed over (the block device keeps the original), or the
/// path itself for `--check` and runs by hand.
fn open_boot_disk(source: &VmSource, fds: HandedFds) -> Result<File, Error> {
    let disk = source.guest().and_then(|guest| guest.disks.first());
    let what = || {
        source.describe(
            "disk 1",
            Path::new(&disk.map(|d| d.path.to_string()).unwrap_or_default()),
        )
    };
    let opened = match (fds.disks.get(&0), disk.map(|d| &d.path)) {
        (Some(&fd), _) => device_manager::dup_fd(fd),
        (None, Some(DiskSource::Path(path))) => File::open(path),
        (None, Some(_)) => {
            return Err(Error::Devices(device_manager::Error::DiskLabel {
                what: what(),
                index: 0,
            }))
        }
        // hvconfig refuses a definition with neither kernel nor disk.
        (None, None) => Err(io::Error::from(io::ErrorKind::NotFound)),
    };
    opened.map_err(|source| Error::OpenImage {
        what: what(),
        source,
    })
}

/// What was loaded, and the command line the guest is given (before the
/// devices' part): the definition's, after the disk's own options when
/// the kernel came from the disk.
pub struct Loaded {
    pub kernel: LoadedKernel,
    pub initrd: Option<(GuestAddress, u64)>,
    pub cmdline: String,
}

/// Parses and loads kernel and initrd; shared with `--check`, which loads
/// into a scratch memory to validate the images. A disk is searched under
/// its own seccomp filter when `confine` is set.
pub fn load_images(
    source: &VmSource,
    mem: &GuestMemoryMmap,
    images: Images,
    confine: bool,
) -> Result<Loaded, Error> {
    let (mut kernel_file, mut initrd_file, names, cmdline) = match images {
        Images::Files { kernel, initrd } => {
            let names = (
                source.describe("kernel", source.kernel().unwrap_or(Path::new(""))),
                source.describe("initrd", source.initrd().unwrap_or(Path::new(""))),
            );
            (kernel, initrd, names, source.cmdline().to_string())
        }
        Images::Disk(disk) => {
            let what = source.describe("disk 1", Path::new(""));
            let what = what.trim_end().to_string();
            let limits = boot_disk::Limits::new(u64::from(source.memory_mib()) << 20);
            let found = disk_boot::find(disk, limits, confine)
                .map_err(|source| Error::DiskBoot { what, source })?;
            let with = match found.initrd {
                Some(_) => "with its initrd",
                None => "without an initrd",
            };
            log::info!("booting {} {with}", found.found);
            let names = (
                format!("{}: kernel", found.found),
                format!("{}: initrd", found.found),
            );
            let cmdline = format!("{} {}", found.cmdline, source.cmdline());
            (
                found.kernel,
                found.initrd,
                names,
                cmdline.trim().to_string(),
            )
        }
    };
    let kernel = kernel::load_kernel(mem, &mut kernel_file).map_err(|e| Error::Image {
        what: names.0,
        source: e,
    })?;
    let initrd = match initrd_file.as_mut() {
        Some(f) => Some(
            kernel::load_initrd(mem, f, &kernel).map_err(|e| Error::Image {
                what: names.1,
                source: e,
            })?,
        ),
        None => None,
    };
    Ok(Loaded {
        kernel,
        initrd,
        cmdline,
    })
}

/// Everything the VM needs that may take root to open, opened before the
/// privilege drop; nothing in it has been read yet. KVM and device errors
/// are held until the images have been checked, so a broken kernel is
/// reported as such (exit 2) even on a host without KVM.
pub struct HostResources {
    images: Images,
    kvm: Result<Kvm, Error>,
    devices: Result<Vec<Box<dyn VirtioDevice>>, device_manager::Error>,
    /// The cloud-init seed's files, opened like the kernel, read after the
    /// drop.
    seed: Option<SeedFiles>,
}

pub fn open_host(source: &VmSource, fds: HandedFds) -> Result<HostResources, Error> {
    if source.vcpus() == 0 {
        return Err(Error::NoVcpus);
    }
    let images = open_images(source, fds)?;
    let kvm = Kvm::new().map_err(Error::Kvm);
    let devices = match source.guest() {
        Some(guest) => virtio::open_devices(guest, fds),
        None => Ok(Vec::new()),
    };
    let seed = match source.guest() {
        Some(guest) => match &guest.cloud_init {
            Some(seed) => Some(
                seed.open_files(&guest.file)
                    .map_err(cloud_init::Error::Files)?,
            ),
            None => None,
        },
        None => None,
    };
    Ok(HostResources {
        images,
        kvm,
        devices,
        seed,
    })
}

pub fn guest_memory(source: &VmSource) -> Result<GuestMemoryMmap, Error> {
    let mib = source.memory_mib();
    GuestMemoryMmap::from_ranges(&layout::ram_regions(u64::from(mib) << 20))
        .map_err(|e| Error::Memory { mib, source: e })
}

/// Builds the VM from what [`open_host`] opened. Runs after the privilege
/// drop: this is where the kernel images are parsed.
pub fn build(source: &VmSource, host: HostResources, confine: bool) -> Result<Vmm, Error> {
    let mem = guest_memory(source)?;
    let Loaded {
        kernel,
        initrd,
        cmdline,
    } = load_images(source, &mem, host.images, confine)?;

    let kvm = host.kvm?;
    let vcpu_count = source.vcpus();
    let max = kvm.get_max_vcpus();
    if usize::from(vcpu_count) > max {
        return Err(Error::TooManyVcpus {
            requested: vcpu_count,
            max,
        });
    }
    let vm = Arc::new(vm::create_vm(&kvm, &mem)?);
    let exit = Arc::new(ExitHandle::new().map_err(Error::EventFd)?);

    let mut pio = Bus::new("I/O port");
    let mut mmio_bus = Bus::new("MMIO");
    let legacy = legacy::attach(&vm, &exit, &mut pio)?;
    let mut devices = host.devices?;
    if let (Some(guest), Some(files)) = (source.guest(), host.seed) {
        if let Some(seed) = &guest.cloud_init {
            let disk = cloud_init::seed_disk(seed, files)?;
            cloud_init::insert_after_disks(&mut devices, guest.disks.len(), disk);
        }
    }
    let (workers, pci_slots, mmio_slots) = match source.guest() {
        Some(guest) => match guest.machine.virtio {
            VirtioTransport::Pci => {
                let a = pci::attach(guest, devices, &vm, &mem, &mut pio, &mut mmio_bus)?;
                (a.workers, Some(a.slots), Vec::new())
            }
            VirtioTransport::Mmio => {
                let a = mmio::attach(guest, devices, &vm, &mem, &mut mmio_bus)?;
                (a.workers, None, a.slots)
            }
        },
        // An ad-hoc kernel has no devices, and no PCI bus to probe.
        None => (Vec::new(), None, Vec::new()),
    };

    let cmdline = boot::build_cmdline(&cmdline).map_err(|e| Error::Cmdline {
        definition: source
            .definition()
            .map(|def| format!("{}: ", def.display()))
            .unwrap_or_default(),
        source: e,
    })?;
    let acpi_devices = acpi::Devices {
        pci: pci_slots.as_deref(),
        virtio_mmio: &mmio_slots,
    };
    let rsdp = acpi::create_tables(&mem, vcpu_count, &acpi_devices)?;
    regs::setup_boot_tables(&mem)?;
    let ram = layout::ram_regions(u64::from(source.memory_mib()) << 20);
    let ecam = [(layout::PCI_ECAM_START, layout::PCI_ECAM_SIZE)];
    let reserved: &[(u64, u64)] = if pci_slots.is_some() { &ecam } else { &[] };
    boot::write_boot_params(
        &mem,
        &BootInfo {
            kernel: &kernel,
            cmdline: &cmdline,
            initrd,
            ram: &ram,
            reserved,
            rsdp,
        },
    )
    .map_err(Error::BootParams)?;

    let buses = (Arc::new(pio), Arc::new(mmio_bus));
    let vcpus = (0..vcpu_count)
        .map(|id| {
            Vcpu::new(
                &kvm,
                &vm,
                id,
                vcpu_count,
                kernel.entry,
                buses.clone(),
                exit.clone(),
            )
            .map_err(Error::Vcpu)
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Vmm {
        vcpus,
        serial: legacy.serial,
        i8042: legacy.i8042,
        pm: legacy.pm,
        exit,
        workers,
        mem,
        _kvm: kvm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_whose_fault_it_is() {
        assert_eq!(Error::NoVcpus.exit(), VmmExit::Invalid);
        let image = Error::Image {
            what: "kernel k".into(),
            source: kernel::Error::Format("file is empty".into()),
        };
        assert_eq!(image.exit(), VmmExit::Invalid);
        assert_eq!(
            image.to_string(),
            "kernel k: not a bzImage or ELF vmlinux: file is empty"
        );
        assert_eq!(Error::from(acpi::Error::TooBig).exit(), VmmExit::Error);
        let devices = Error::from(device_manager::Error::FdIndex {
            flag: "--disk-fd",
            index: 1,
            count: 1,
        });
        assert_eq!(devices.exit(), VmmExit::Invalid);
        assert_eq!(
            devices.to_string(),
            "--disk-fd 1=...: the definition has only 1 such device(s)"
        );
    }
}
