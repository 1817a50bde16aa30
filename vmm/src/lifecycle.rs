//! Running a built VM: vCPU threads and seccomp, and the main loop that
//! waits for the guest to stop or the host to ask it to.
//!
//! The first SIGTERM (or SIGINT) presses Ctrl-Alt-Del and the ACPI power
//! button; a second one, or the shutdown timeout, stops the VM hard
//! (exit 5). A guest that answers the request by rebooting (the usual
//! Ctrl-Alt-Del action) has shut down as asked and exits 0.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hvcontract::VmmExit;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::builder::Vmm;
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::legacy::{SerialDevice, I8042};
use crate::devices::virtio::{NotStarted, WorkerGate};
use crate::exit::ExitHandle;
use crate::seccomp::{self, ThreadKind};
use crate::signals::SignalFd;
use crate::terminal::RawTerminal;

/// A failure while the VM runs: always the vmm's or the host's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot install vCPU kick handler: {0}")]
    KickHandler(vmm_sys_util::errno::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
    #[error("no seccomp filter for virtio device type {0}")]
    NoWorkerFilter(u32),
    #[error(transparent)]
    Worker(#[from] NotStarted),
    #[error("cannot start vCPU thread: {0}")]
    VcpuThread(io::Error),
    #[error("cannot start the console writer thread: {0}")]
    ConsoleThread(io::Error),
    #[error("cannot install seccomp filter: {0}")]
    ApplyFilter(seccompiler::Error),
    #[error("epoll: {0}")]
    Epoll(io::Error),
    #[error("signalfd: {0}")]
    SignalFd(io::Error),
}

pub struct RunOptions {
    pub seccomp: bool,
    pub shutdown_timeout: Duration,
    /// When the process started: the boot vCPU reports how long it took.
    pub started: Instant,
}

/// How often a shutdown request is repeated while the guest has not
/// stopped. A guest still booting loses a key press or button event that
/// arrives before its drivers are up (both drivers flush what came
/// earlier), so a single press would leave it running until the timeout.
const REQUEST_REPEAT: Duration = Duration::from_secs(5);

const TOKEN_EXIT: u64 = 1;
const TOKEN_SIGNAL: u64 = 2;
const TOKEN_STDIN: u64 = 3;

/// Signal used to kick a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

struct VcpuThreads {
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl VcpuThreads {
    /// Stops every vCPU, kicking each out of KVM_RUN until it is gone. The
    /// kick is repeated because it can land just before a thread re-enters
    /// the guest and then be lost.
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for handle in self.handles {
            while !handle.is_finished() {
                if let Err(e) = handle.kill(kick_signal()) {
                    log::debug!("cannot kick vCPU thread: {e}");
                }
                thread::sleep(Duration::from_millis(2));
            }
            let _ = handle.join();
        }
    }
}

/// The devices the main loop talks to.
struct Controls {
    exit: Arc<ExitHandle>,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    pm: Arc<Mutex<AcpiPm>>,
}

/// Runs the VM to completion; returns why it stopped.
pub fn run(vmm: Vmm, signals: &SignalFd, opts: &RunOptions) -> Result<VmmExit, Error> {
    register_signal_handler(kick_signal(), on_kick).map_err(Error::KickHandler)?;
    if opts.seccomp {
        seccomp::install_sigsys_handler()?;
    }
    // Set up before the filters go on.
    let terminal = RawTerminal::stdin();

    let Vmm {
        vcpus,
        serial,
        i8042,
        pm,
        exit,
        workers,
        mem: _mem,
        ..
    } = vmm;
    // Privileges were dropped and no_new_privs set before the VM was
    // built (see `privileges`). Every thread installs its own filter. The
    // workers' go on first, before any vCPU exists to hand them queues.
    // Only the block workers may touch the disks (positioned I/O).
    let disks: Vec<i32> = workers.iter().filter_map(|g| g.fds().disk).collect();
    start_workers(workers, opts.seccomp)?;
    let console_filter = match opts.seccomp {
        true => Some(Arc::new(seccomp::filter(ThreadKind::Console, &disks)?)),
        false => None,
    };
    lock(&serial)
        .start_output(console_filter)
        .map_err(Error::ConsoleThread)?;
    let start = Arc::new(Barrier::new(vcpus.len() + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let vcpu_filter = match opts.seccomp {
        true => Some(Arc::new(seccomp::filter(ThreadKind::Vcpu, &disks)?)),
        false => None,
    };
    let mut handles = Vec::new();
    for vcpu in vcpus {
        let (start, stop, filter) = (start.clone(), stop.clone(), vcpu_filter.clone());
        let started = opts.started;
        let handle = thread::Builder::new()
            .name(format!("vcpu{}", vcpu.id()))
            .spawn(move || vcpu.run(start, filter, stop, started))
            .map_err(Error::VcpuThread)?;
        handles.push(handle);
    }
    let threads = VcpuThreads { handles, stop };
    let controls = Controls {
        exit,
        serial,
        i8042,
        pm,
    };
    let epoll = event_set(&controls, signals, terminal.as_ref())?;

    // Let the vCPUs go (each installs its own filter first), then filter
    // the main thread.
    start.wait();
    if opts.seccomp {
        let main = seccomp::filter(ThreadKind::Main, &disks)?;
        seccompiler::apply_filter(&main).map_err(Error::ApplyFilter)?;
    }

    let result = main_loop(
        &controls,
        &epoll,
        signals,
        terminal.as_ref(),
        opts.shutdown_timeout,
    );
    if result.is_err() {
        controls.exit.request(VmmExit::Error);
    }
    threads.stop();
    drop(terminal);
    result
}

/// Lets each virtio worker run, under the filter for its device kind.
fn start_workers(workers: Vec<WorkerGate>, seccomp: bool) -> Result<(), Error> {
    for gate in workers {
        let filter = match seccomp {
            true => {
                let kind = ThreadKind::virtio_worker(gate.device_type())
                    .ok_or(Error::NoWorkerFilter(gate.device_type()))?;
                Some(seccomp::worker_filter(kind, gate.fds())?)
            }
            false => None,
        };
        gate.open(filter)?;
    }
    Ok(())
}

/// The main loop's epoll set, created before the seccomp filters go on.
fn event_set(
    c: &Controls,
    signals: &SignalFd,
    terminal: Option<&RawTerminal>,
) -> Result<Epoll, Error> {
    let epoll = Epoll::new().map_err(Error::Epoll)?;
    let add = |fd: i32, token: u64| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(Error::Epoll)
    };
    add(c.exit.eventfd().as_raw_fd(), TOKEN_EXIT)?;
    add(signals.as_raw_fd(), TOKEN_SIGNAL)?;
    if let Some(t) = terminal {
        add(t.fd(), TOKEN_STDIN)?;
    }
    Ok(epoll)
}

fn main_loop(
    c: &Controls,
    epoll: &Epoll,
    signals: &SignalFd,
    terminal: Option<&RawTerminal>,
    timeout: Duration,
) -> Result<VmmExit, Error> {
    let mut deadline: Option<Instant> = None;
    let mut repeat_at: Option<Instant> = None;
    let mut events = [EpollEvent::default(); 4];
    loop {
        if let Some(reason) = c.exit.reason() {
            return Ok(match (reason, deadline) {
                (VmmExit::Reboot, Some(_)) => {
                    log::info!(
                        "guest restarted after the shutdown request; treating it as powered off"
                    );
                    VmmExit::PoweredOff
                }
                _ => reason,
            });
        }
        let wake = match (deadline, repeat_at) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        let wait_ms = match wake {
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        let n = match epoll.wait(wait_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Epoll(e)),
        };
        if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!(
                "guest did not shut down within {} s; stopping it",
                timeout.as_secs()
            );
            return Ok(VmmExit::StoppedByHost);
        }
        if repeat_at.is_some_and(|at| Instant::now() >= at) {
            log::debug!("guest still running: repeating the shutdown request");
            request_shutdown(c);
            // From now, not from the missed time: presses in a burst could
            // read as a "force reboot" to the guest's init.
            repeat_at = Some(Instant::now() + REQUEST_REPEAT);
        }
        for event in events.iter().take(n) {
            match event.data() {
                TOKEN_EXIT => {
                    let _ = c.exit.eventfd().read();
                }
                TOKEN_SIGNAL => {
                    while let Some(sig) = signals.read().map_err(Error::SignalFd)? {
                        if deadline.is_some() {
                            log::warn!("signal {sig} again: stopping the guest hard");
                            return Ok(VmmExit::StoppedByHost);
                        }
                        log::info!("signal {sig}: asking the guest to shut down");
                        request_shutdown(c);
                        deadline = Some(Instant::now() + timeout);
                        repeat_at = Some(Instant::now() + REQUEST_REPEAT);
                    }
                }
                TOKEN_STDIN => {
                    if let Some(t) = terminal {
                        forward_input(t, &c.serial, epoll);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Ctrl-Alt-Del on the keyboard and a press of the ACPI power button:
/// Linux guests react to one or the other depending on their init.
fn request_shutdown(c: &Controls) {
    lock(&c.i8042).ctrl_alt_del();
    lock(&c.pm).press_power_button();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves terminal input into the UART's receive FIFO; what does not fit
/// is dropped, as a real UART would overrun.
fn forward_input(t: &RawTerminal, serial: &Mutex<SerialDevice>, epoll: &Epoll) {
    let mut buf = [0u8; 64];
    match t.read(&mut buf) {
        Ok(0) => {
            let _ = epoll.ctl(ControlOperation::Delete, t.fd(), EpollEvent::default());
        }
        Ok(n) => {
            lock(serial).enqueue_input(buf.get(..n).unwrap_or_default());
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            log::warn!("stdin: {e}; no more console input");
            let _ = epoll.ctl(ControlOperation::Delete, t.fd(), EpollEvent::default());
        }
    }
}
