//! Builds a ready-to-run VM from a [`VmSpec`]: guest memory, kernel and
//! initrd, firmware tables, devices on their buses, and configured vCPUs.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::boot::{self, BootInfo};
use crate::arch::x86_64::kernel::{self, LoadedKernel};
use crate::arch::x86_64::layout::{self, *};
use crate::arch::x86_64::{acpi, regs};
use crate::devices::acpi_pm::{self, AcpiPm};
use crate::devices::bus::{Bus, SharedDevice};
use crate::devices::irq::{EdgeIrq, KvmIrqLine};
use crate::devices::legacy::{Cmos, SerialDevice, I8042};
use crate::devices::virtio::{VirtioDevice, WorkerGate};
use crate::error::Fatal;
use crate::exit::ExitHandle;
use crate::spec::VmSpec;
use crate::virtio_attach::{self, HandedFds};
use crate::vstate::{vcpu::Vcpu, vm};

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

fn open(spec: &VmSpec, what: &str, path: &std::path::Path) -> Result<File, Fatal> {
    File::open(path)
        .map_err(|e| Fatal::invalid(format!("{}: cannot open: {e}", spec.describe(what, path))))
}

fn kernel_fatal(spec: &VmSpec, what: &str, path: &std::path::Path, e: kernel::Error) -> Fatal {
    Fatal::invalid(format!("{}: {e}", spec.describe(what, path)))
}

/// The kernel and initrd, open but not read yet.
pub struct Images {
    kernel: File,
    initrd: Option<File>,
}

pub fn open_images(spec: &VmSpec) -> Result<Images, Fatal> {
    Ok(Images {
        kernel: open(spec, "kernel", &spec.kernel)?,
        initrd: match &spec.initrd {
            Some(path) => Some(open(spec, "initrd", path)?),
            None => None,
        },
    })
}

/// Parses and loads kernel and initrd; shared with `--check`, which loads
/// into a scratch memory to validate the images.
pub fn load_images(
    spec: &VmSpec,
    mem: &GuestMemoryMmap,
    mut images: Images,
) -> Result<(LoadedKernel, Option<(vm_memory::GuestAddress, u64)>), Fatal> {
    let kernel = kernel::load_kernel(mem, &mut images.kernel)
        .map_err(|e| kernel_fatal(spec, "kernel", &spec.kernel, e))?;
    let initrd = match (&spec.initrd, images.initrd.as_mut()) {
        (Some(path), Some(f)) => Some(
            kernel::load_initrd(mem, f, &kernel)
                .map_err(|e| kernel_fatal(spec, "initrd", path, e))?,
        ),
        _ => None,
    };
    Ok((kernel, initrd))
}

/// Everything the VM needs that may take root to open, opened before the
/// privilege drop; nothing in it has been read yet. KVM and device errors
/// are held until the images have been checked, so a broken kernel is
/// reported as such (exit 2) even on a host without KVM.
pub struct HostResources {
    images: Images,
    kvm: Result<Kvm, Fatal>,
    devices: Result<Vec<Box<dyn VirtioDevice>>, Fatal>,
}

pub fn open_host(spec: &VmSpec, fds: &HandedFds) -> Result<HostResources, Fatal> {
    if spec.vcpus == 0 {
        return Err(Fatal::invalid("a guest needs at least one vCPU"));
    }
    let images = open_images(spec)?;
    let kvm = Kvm::new().map_err(|e| Fatal::vmm(format!("cannot open /dev/kvm: {e}")));
    let devices = match &spec.guest {
        Some(guest) => virtio_attach::open_devices(guest, fds),
        None => Ok(Vec::new()),
    };
    Ok(HostResources {
        images,
        kvm,
        devices,
    })
}

pub fn guest_memory(spec: &VmSpec) -> Result<GuestMemoryMmap, Fatal> {
    let size = u64::from(spec.memory_mib) << 20;
    GuestMemoryMmap::from_ranges(&layout::ram_regions(size)).map_err(|e| {
        Fatal::vmm(format!(
            "cannot allocate {} MiB of guest memory: {e}",
            spec.memory_mib
        ))
    })
}

fn irqfd(vm: &VmFd, gsi: u32) -> Result<EdgeIrq, Fatal> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| Fatal::vmm(format!("eventfd: {e}")))?;
    vm.register_irqfd(&evt, gsi)
        .map_err(|e| Fatal::vmm(format!("cannot register irqfd for GSI {gsi}: {e}")))?;
    Ok(EdgeIrq(evt))
}

fn insert(bus: &mut Bus, dev: SharedDevice, base: u64, len: u64) -> Result<(), Fatal> {
    bus.insert(dev, base, len)
        .map_err(|e| Fatal::vmm(e.to_string()))
}

/// Guest output goes straight to fd 1, unbuffered: partial lines (shell
/// prompts) must show up immediately.
fn stdout_writer() -> Box<dyn Write + Send> {
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
    // keeps the File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    struct Stdout(std::mem::ManuallyDrop<File>);
    impl Write for Stdout {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            (&*self.0).write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    Box::new(Stdout(file))
}

/// Builds the VM from what [`open_host`] opened. Runs after the privilege
/// drop: this is where the kernel images are parsed.
pub fn build(spec: &VmSpec, host: HostResources) -> Result<Vmm, Fatal> {
    let mem = guest_memory(spec)?;
    let (kernel, initrd) = load_images(spec, &mem, host.images)?;

    let kvm = host.kvm?;
    let max_vcpus = kvm.get_max_vcpus();
    if usize::from(spec.vcpus) > max_vcpus {
        return Err(Fatal::invalid(format!(
            "{} vCPUs requested, this host supports {max_vcpus}",
            spec.vcpus
        )));
    }
    let vm = Arc::new(vm::create_vm(&kvm, &mem).map_err(Fatal::vmm)?);
    let exit = Arc::new(ExitHandle::new().map_err(|e| Fatal::vmm(format!("eventfd: {e}")))?);

    let mut pio = Bus::new("I/O port");
    let mut mmio = Bus::new("MMIO");
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irqfd(&vm, SERIAL_IRQ)?,
        stdout_writer(),
    )));
    insert(&mut pio, serial.clone(), u64::from(SERIAL_PORT), 8)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(irqfd(&vm, I8042_IRQ)?, exit.clone())));
    insert(&mut pio, i8042.clone(), u64::from(I8042_PORT), 5)?;
    insert(
        &mut pio,
        Arc::new(Mutex::new(Cmos::new())),
        u64::from(CMOS_PORT),
        2,
    )?;
    let sci = KvmIrqLine {
        vm: vm.clone(),
        gsi: SCI_IRQ,
    };
    let pm = Arc::new(Mutex::new(AcpiPm::new(Box::new(sci), exit.clone())));
    insert(
        &mut pio,
        pm.clone(),
        u64::from(PM1A_EVT_PORT),
        acpi_pm::BLOCK_LEN,
    )?;

    let devices = host.devices?;
    let virtio = match &spec.guest {
        Some(guest) => virtio_attach::attach(guest, devices, &vm, &mem, &mut mmio)?,
        None => Default::default(),
    };

    let cmdline = boot::build_cmdline(&spec.cmdline, &virtio.slots).map_err(|e| {
        Fatal::invalid(match &spec.definition {
            Some(def) => format!("{}: {e}", def.display()),
            None => e,
        })
    })?;
    let rsdp = acpi::create_tables(&mem, spec.vcpus).map_err(Fatal::vmm)?;
    regs::setup_boot_tables(&mem).map_err(|e| Fatal::vmm(e.to_string()))?;
    let ram = layout::ram_regions(u64::from(spec.memory_mib) << 20);
    boot::write_boot_params(
        &mem,
        &BootInfo {
            kernel: &kernel,
            cmdline: &cmdline,
            initrd,
            ram: &ram,
            rsdp,
        },
    )
    .map_err(Fatal::vmm)?;

    let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));
    let vcpus = (0..spec.vcpus)
        .map(|id| {
            Vcpu::new(
                &kvm,
                &vm,
                id,
                spec.vcpus,
                kernel.entry,
                (pio.clone(), mmio.clone()),
                exit.clone(),
            )
            .map_err(Fatal::vmm)
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Vmm {
        vcpus,
        serial,
        i8042,
        pm,
        exit,
        workers: virtio.workers,
        mem,
        _kvm: kvm,
    })
}
