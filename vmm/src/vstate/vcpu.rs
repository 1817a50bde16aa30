//! vCPU threads: run the guest, dispatch port and MMIO exits to the buses,
//! and turn the ways a guest can stop into an exit reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hvcontract::VmmExit;
use kvm_bindings::{
    kvm_run, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use seccompiler::BpfProgram;

use crate::arch::x86_64::{cpuid, regs};
use crate::devices::bus::Bus;
use crate::exit::ExitHandle;

pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    /// Size of the vCPU's `kvm_run` mapping (KVM_GET_VCPU_MMAP_SIZE): the
    /// bound for the data of a port I/O exit.
    run_size: usize,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitHandle>,
}

impl Vcpu {
    /// Creates vCPU `id` of `count`; the boot vCPU (id 0) starts at `entry`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kvm: &Kvm,
        vm: &VmFd,
        id: u8,
        count: u8,
        entry: u64,
        buses: (Arc<Bus>, Arc<Bus>),
        exit: Arc<ExitHandle>,
    ) -> Result<Self, String> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| format!("cannot create vCPU {id}: {e}"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("cannot get supported CPUID: {e}"))?;
        let timers = cpuid::Timers {
            tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
            // Fails when the host TSC is unstable: then the guest
            // calibrates against kvmclock and does not get the leaf.
            tsc_khz: fd.get_tsc_khz().ok(),
        };
        if id == 0 {
            log::debug!("guest timers: {timers:?}");
        }
        cpuid::filter(&mut cpuid, id, count, timers).map_err(|e| format!("vCPU {id}: {e}"))?;
        fd.set_cpuid2(&cpuid)
            .map_err(|e| format!("cannot set CPUID of vCPU {id}: {e}"))?;
        regs::setup_vcpu(&fd, (id == 0).then_some(entry)).map_err(|e| format!("vCPU {id}: {e}"))?;
        let run_size = kvm
            .get_vcpu_mmap_size()
            .map_err(|e| format!("cannot get the vCPU mapping size: {e}"))?;
        Ok(Vcpu {
            id,
            fd,
            run_size,
            pio: buses.0,
            mmio: buses.1,
            exit,
        })
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// Thread body: waits at `start` for the go, installs `filter`, then
    /// runs the guest until it stops or `stop` is set (the caller kicks the
    /// thread out of KVM_RUN). The boot vCPU logs when it first enters the guest, timed from the
    /// process start (`started`) and from host boot.
    pub fn run(
        mut self,
        start: Arc<Barrier>,
        filter: Option<Arc<BpfProgram>>,
        stop: Arc<AtomicBool>,
        started: Instant,
    ) {
        start.wait();
        if let Some(filter) = filter {
            if let Err(e) = seccompiler::apply_filter(&filter) {
                log::error!("vCPU {}: cannot install seccomp filter: {e}", self.id);
                self.exit.request(VmmExit::Error);
                return;
            }
        }
        if self.id == 0 {
            // The end of the VMM's share of boot time; the host uptime
            // lines it up with init's log and the kernel's. Printed with
            // integers: float formatting would add 16 KiB to the binary.
            let up = host_uptime();
            log::info!(
                "vCPU 0 entering the guest, {} ms after vmm start (host uptime {}.{:03} s)",
                started.elapsed().as_millis(),
                up.as_secs(),
                up.subsec_millis()
            );
        }
        while !stop.load(Ordering::Acquire) {
            if let Some(reason) = self.run_once() {
                self.exit.request(reason);
                break;
            }
        }
    }

    /// One KVM_RUN; `Some` when the VM must stop.
    fn run_once(&mut self) -> Option<VmmExit> {
        let id = self.id;
        match self.fd.run() {
            // kvm-ioctls hands over the data of a string instruction as one
            // slice and hides the item size; `port_io` reads both from
            // kvm_run once the exit's borrow of the vCPU has ended.
            Ok(VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) => {
                // SAFETY: `get_kvm_run` is the vCPU's own kvm_run mapping,
                // `run_size` bytes long, and KVM_RUN just returned an I/O
                // exit in it.
                if let Err(e) = unsafe { port_io(self.fd.get_kvm_run(), self.run_size, &self.pio) }
                {
                    log::error!("vCPU {id}: {e}");
                    return Some(VmmExit::Error);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => self.mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => self.mmio.write(addr, data),
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                log::warn!("vCPU {id}: guest shut down the CPU (triple fault)");
                return Some(VmmExit::Crash);
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                log::error!("vCPU {id}: VM entry failed (reason {reason:#x}, cpu {cpu})");
                return Some(VmmExit::Crash);
            }
            Ok(VcpuExit::InternalError) => {
                log::error!("vCPU {id}: KVM internal error");
                return Some(VmmExit::Crash);
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Some(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmmExit::PoweredOff,
                    KVM_SYSTEM_EVENT_RESET => VmmExit::Reboot,
                    KVM_SYSTEM_EVENT_CRASH => VmmExit::Crash,
                    other => {
                        log::error!("vCPU {id}: unknown system event {other}");
                        VmmExit::Error
                    }
                });
            }
            // With the in-kernel LAPIC, HLT never leaves the kernel; if it
            // does anyway the guest has stopped for good.
            Ok(VcpuExit::Hlt) => {
                log::error!("vCPU {id}: unexpected HLT exit");
                return Some(VmmExit::Crash);
            }
            Ok(other) => {
                log::error!("vCPU {id}: unexpected exit {other:?}");
                return Some(VmmExit::Error);
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                log::error!("vCPU {id}: KVM_RUN failed: {e}");
                return Some(VmmExit::Error);
            }
        }
        None
    }
}

/// A port I/O exit as KVM describes it in kvm_run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortIo {
    out: bool,
    port: u16,
    /// Bytes per item: 1, 2 or 4.
    size: usize,
    /// Items: more than one for `rep ins`/`rep outs`.
    count: usize,
    data_offset: usize,
}

impl PortIo {
    fn from_run(run: &kvm_run) -> Result<Self, String> {
        if run.exit_reason != KVM_EXIT_IO {
            return Err(format!("exit {} is not port I/O", run.exit_reason));
        }
        // SAFETY: the exit reason says `io` is the member of the union KVM
        // filled in; it is plain integers.
        let io = unsafe { run.__bindgen_anon_1.io };
        let out = match u32::from(io.direction) {
            KVM_EXIT_IO_OUT => true,
            KVM_EXIT_IO_IN => false,
            other => return Err(format!("port I/O exit with direction {other}")),
        };
        Ok(PortIo {
            out,
            port: io.port,
            size: usize::from(io.size),
            count: usize::try_from(io.count).unwrap_or(usize::MAX),
            data_offset: usize::try_from(io.data_offset).unwrap_or(usize::MAX),
        })
    }

    /// Where the items lie in a `run_size`-byte kvm_run mapping.
    fn data_range(&self, run_size: usize) -> Result<std::ops::Range<usize>, String> {
        self.size
            .checked_mul(self.count)
            .and_then(|len| Some(self.data_offset..self.data_offset.checked_add(len)?))
            .filter(|r| r.end <= run_size && r.start >= std::mem::size_of::<kvm_run>())
            .ok_or_else(|| format!("port I/O data outside kvm_run: {self:?}"))
    }
}

/// Emulates the port I/O exit in `run`: `count` accesses of `size` bytes
/// each at the port, in order (a `rep outsb` of "hello" is five one-byte
/// writes, a `rep insb` reads the port once per byte).
///
/// # Safety
/// `run` must be the start of a live kvm_run mapping at least `run_size`
/// bytes long (the data of an I/O exit lies past the struct, in the same
/// mapping) that no one else accesses during the call.
unsafe fn port_io(run: &mut kvm_run, run_size: usize, bus: &Bus) -> Result<(), String> {
    let io = PortIo::from_run(run)?;
    let range = io.data_range(run_size)?;
    let base = (run as *mut kvm_run).cast::<u8>();
    // SAFETY: `range` lies within the `run_size`-byte mapping that starts
    // at `run` (checked above, caller's contract), past the kvm_run struct
    // itself, and nothing else touches it while the slice lives.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(range.start), range.len()) };
    let port = u64::from(io.port);
    if io.out {
        bus.write_each(port, io.size, data);
    } else {
        bus.read_each(port, io.size, data);
    }
    Ok(())
}

/// Time since the host booted (CLOCK_BOOTTIME, the clock of the kernel's
/// and init's log stamps; pid namespaces do not change it).
fn host_uptime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use kvm_bindings::kvm_run__bindgen_ty_1__bindgen_ty_4 as KvmIo;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::irq::EdgeIrq;
    use crate::devices::legacy::SerialDevice;

    const PAGE: usize = 4096;
    /// Where KVM puts port I/O data: KVM_PIO_PAGE_OFFSET pages in.
    const PIO_OFFSET: usize = PAGE;
    const RUN_SIZE: usize = 3 * PAGE;

    /// A stand-in for the kvm_run mapping: page-aligned enough for the
    /// struct (8-byte alignment), three pages long.
    struct FakeRun(Vec<u64>);

    impl FakeRun {
        fn io(out: bool, port: u16, size: u8, count: u32) -> Self {
            let mut run = FakeRun(vec![0; RUN_SIZE / 8]);
            let r = run.run();
            r.exit_reason = KVM_EXIT_IO;
            r.__bindgen_anon_1.io = KvmIo {
                direction: u8::try_from(if out { KVM_EXIT_IO_OUT } else { KVM_EXIT_IO_IN })
                    .unwrap(),
                size,
                port,
                count,
                data_offset: PIO_OFFSET as u64,
            };
            run
        }

        fn run(&mut self) -> &mut kvm_run {
            // SAFETY: the buffer is larger than kvm_run and 8-byte aligned;
            // kvm_run is plain data, valid when all zero.
            unsafe { &mut *self.0.as_mut_ptr().cast::<kvm_run>() }
        }

        fn data(&mut self) -> &mut [u8] {
            // SAFETY: a u64 buffer viewed as bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), RUN_SIZE)
            };
            &mut bytes[PIO_OFFSET..]
        }

        fn exit(&mut self, bus: &Bus) -> Result<(), String> {
            // SAFETY: the fake mapping is RUN_SIZE bytes and ours alone.
            unsafe { port_io(self.run(), RUN_SIZE, bus) }
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn serial_bus() -> (Bus, Arc<Mutex<SerialDevice>>, Sink) {
        let sink = Sink::default();
        let irq = EdgeIrq(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut serial = SerialDevice::new(irq, Box::new(sink.clone()));
        serial.start_output(None).unwrap();
        let serial = Arc::new(Mutex::new(serial));
        let mut bus = Bus::new("I/O port");
        bus.insert(serial.clone(), 0x3f8, 8).unwrap();
        (bus, serial, sink)
    }

    #[test]
    fn rep_outsb_hello_to_com1_prints_five_bytes() {
        let (bus, serial, sink) = serial_bus();
        let mut run = FakeRun::io(true, 0x3f8, 1, 5);
        run.data()[..5].copy_from_slice(b"hello");
        run.exit(&bus).unwrap();
        assert_eq!(serial.lock().unwrap().flush(Duration::from_secs(10)), 0);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello");
    }

    #[test]
    fn rep_insb_reads_the_port_once_per_byte() {
        let (bus, serial, _) = serial_bus();
        assert_eq!(serial.lock().unwrap().enqueue_input(b"abc"), 3);
        let mut run = FakeRun::io(false, 0x3f8, 1, 3);
        run.data()[..3].fill(0xee);
        run.exit(&bus).unwrap();
        assert_eq!(&run.data()[..3], b"abc");
        // LSR, three times: no data left, transmitter empty.
        let mut run = FakeRun::io(false, 0x3fd, 1, 3);
        run.exit(&bus).unwrap();
        assert_eq!(&run.data()[..3], &[0x60; 3]);
    }

    #[test]
    fn a_single_out_is_the_one_item_case() {
        let (bus, serial, sink) = serial_bus();
        let mut run = FakeRun::io(true, 0x3f8, 1, 1);
        run.data()[0] = b'!';
        run.exit(&bus).unwrap();
        serial.lock().unwrap().flush(Duration::from_secs(10));
        assert_eq!(&*sink.0.lock().unwrap(), b"!");
    }

    #[test]
    fn io_data_outside_the_mapping_is_refused() {
        let (bus, _, sink) = serial_bus();
        let mut run = FakeRun::io(true, 0x3f8, 1, u32::MAX);
        assert!(run.exit(&bus).is_err());
        let mut run = FakeRun::io(true, 0x3f8, 4, u32::try_from(RUN_SIZE / 4).unwrap());
        assert!(run.exit(&bus).is_err());
        let mut run = FakeRun::io(true, 0x3f8, 1, 1);
        run.run().exit_reason = kvm_bindings::KVM_EXIT_MMIO;
        assert!(run.exit(&bus).is_err());
        assert!(sink.0.lock().unwrap().is_empty());
    }
}
