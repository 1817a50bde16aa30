//! vCPU threads: run the guest, dispatch port and MMIO exits to the buses,
//! and turn the ways a guest can stop into an exit reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hvcontract::VmmExit;
use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use seccompiler::BpfProgram;

use crate::arch::x86_64::{cpuid, regs};
use crate::devices::bus::Bus;
use crate::exit::ExitHandle;

pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
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
        cpuid::filter(&mut cpuid, id, count);
        fd.set_cpuid2(&cpuid)
            .map_err(|e| format!("cannot set CPUID of vCPU {id}: {e}"))?;
        regs::setup_vcpu(&fd, (id == 0).then_some(entry)).map_err(|e| format!("vCPU {id}: {e}"))?;
        Ok(Vcpu {
            id,
            fd,
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
            Ok(VcpuExit::IoIn(port, data)) => self.pio.read(u64::from(port), data),
            Ok(VcpuExit::IoOut(port, data)) => self.pio.write(u64::from(port), data),
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
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
