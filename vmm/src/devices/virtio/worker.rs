//! The per-device worker: owns the queues while the device is active and
//! runs the device's queue processor, on its own thread (or inline, for the
//! fuzz driver).
//!
//! A worker thread is spawned while the devices are built (after the VMM
//! has dropped its privileges, so it starts unprivileged), but sits idle
//! until its [`WorkerGate`] is opened: the VMM then hands each worker its
//! seccomp filter, which the worker installs on itself before it handles
//! anything the guest controls.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use seccompiler::BpfProgram;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::complaints::Complaints;
use super::interrupt::Interrupt;
use super::queue::QueueContext;
use super::QueueProcessor;
use crate::seccomp::WorkerFds;

pub(crate) enum Command {
    /// Always the first command: install the filter, if any, then run.
    /// The ack is dropped unsent if the filter does not go on.
    Start {
        filter: Option<BpfProgram>,
        done: SyncSender<()>,
    },
    Activate {
        queues: Vec<Queue>,
        features: u64,
    },
    StopQueue(usize, SyncSender<()>),
    Reset(SyncSender<()>),
    Exit,
}

/// Device state that lives on the worker side.
pub(crate) struct Worker {
    name: &'static str,
    mem: GuestMemoryMmap,
    processor: Box<dyn QueueProcessor>,
    interrupt: Arc<Interrupt>,
    /// `Some` between activation and reset, and only while not broken.
    queues: Option<Vec<Queue>>,
    /// A guest can break its device, reset it and break it again at will.
    complaints: Complaints,
}

impl Worker {
    pub(crate) fn new(
        name: &'static str,
        mem: GuestMemoryMmap,
        processor: Box<dyn QueueProcessor>,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        Worker {
            name,
            mem,
            processor,
            interrupt,
            queues: None,
            complaints: Complaints::new(name),
        }
    }

    pub(crate) fn activate(&mut self, queues: Vec<Queue>, features: u64) -> u64 {
        self.processor.activate(features);
        let count = queues.len();
        self.queues = Some(queues);
        // Kicks sent before DRIVER_OK were dropped: look at every queue once.
        let mut leftover = 0;
        for index in 0..count {
            leftover |= self.queue_notified(index);
        }
        leftover
    }

    pub(crate) fn reset(&mut self) {
        self.queues = None;
        self.processor.reset();
    }

    /// The driver wrote 0 to QueueReady of a running queue: never touch
    /// that queue again (until the next activation).
    pub(crate) fn stop_queue(&mut self, index: usize) {
        if let Some(queue) = self.queues.as_mut().and_then(|q| q.get_mut(index)) {
            queue.set_ready(false);
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.queues.is_some()
    }

    /// Handles a notification of queue `index`; returns the queues that
    /// still have work (see [`QueueContext::leftover`]).
    pub(crate) fn queue_notified(&mut self, index: usize) -> u64 {
        self.run(|processor, ctx| processor.process_queue(index, ctx))
    }

    pub(crate) fn backend_ready(&mut self) -> u64 {
        self.run(|processor, ctx| processor.backend_ready(ctx))
    }

    fn run<F>(&mut self, f: F) -> u64
    where
        F: FnOnce(&mut dyn QueueProcessor, &mut QueueContext) -> Result<(), super::DeviceError>,
    {
        let Some(queues) = self.queues.as_mut() else {
            return 0;
        };
        let mut ctx = QueueContext::new(&self.mem, queues);
        let result = f(self.processor.as_mut(), &mut ctx);
        let (used, leftover) = (ctx.used_added(), ctx.leftover());
        if used != 0 {
            self.interrupt.signal_used(used);
        }
        match result {
            Ok(()) => leftover,
            Err(e) => {
                self.complaints
                    .warn(format_args!("{e}; device needs reset"));
                self.queues = None;
                self.interrupt.mark_broken();
                0
            }
        }
    }

    fn wants_backend_events(&self) -> bool {
        self.is_active() && self.processor.wants_backend_events()
    }
}

const CONTROL_TOKEN: u64 = 0;
const BACKEND_TOKEN: u64 = 1;
const FIRST_QUEUE_TOKEN: u64 = 2;
/// Far above any queue's token.
const RESAMPLE_TOKEN: u64 = u64::MAX;

/// Handle to a worker running on its own thread.
pub(crate) struct WorkerThread {
    commands: mpsc::Sender<Command>,
    control: EventFd,
    handle: Option<JoinHandle<()>>,
    /// Handed out once, so the worker gets exactly one `Start`.
    gate: Option<WorkerGate>,
}

impl WorkerThread {
    /// Spawns the thread; `notifiers` are the queue-notify eventfds
    /// (index = queue index).
    pub(crate) fn spawn(
        worker: Worker,
        device_type: u32,
        notifiers: Vec<EventFd>,
    ) -> io::Result<Self> {
        let control = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        add(&epoll, control.as_raw_fd(), CONTROL_TOKEN, EventSet::IN)?;
        for (i, evt) in notifiers.iter().enumerate() {
            add(
                &epoll,
                evt.as_raw_fd(),
                FIRST_QUEUE_TOKEN + i as u64,
                EventSet::IN,
            )?;
        }
        if let Some(evt) = worker.interrupt.resample_fd() {
            add(&epoll, evt.as_raw_fd(), RESAMPLE_TOKEN, EventSet::IN)?;
        }
        if let Some(fd) = worker.processor.backend_fd() {
            // Registered idle; enabled while the device is active.
            add(&epoll, fd, BACKEND_TOKEN, EventSet::empty())?;
        }
        let (commands, receiver) = mpsc::channel();
        let thread_control = control.try_clone()?;
        let fds = worker_fds(&worker, &thread_control, &notifiers);
        let handle = thread::Builder::new()
            .name(format!("{}-worker", worker.name))
            .spawn(move || {
                if wait_for_start(worker.name, &receiver) {
                    run_loop(worker, epoll, thread_control, receiver, notifiers);
                }
            })?;
        let gate = WorkerGate {
            device_type,
            fds,
            commands: commands.clone(),
        };
        Ok(WorkerThread {
            commands,
            control,
            handle: Some(handle),
            gate: Some(gate),
        })
    }

    /// The handle that lets the worker start (the first call only); see
    /// [`WorkerGate`].
    pub(crate) fn take_gate(&mut self) -> Option<WorkerGate> {
        self.gate.take()
    }

    fn send(&self, command: Command) -> bool {
        if self.commands.send(command).is_err() {
            return false;
        }
        if let Err(e) = self.control.write(1) {
            log::error!("virtio: cannot wake worker: {e}");
            return false;
        }
        true
    }

    pub(crate) fn activate(&self, queues: Vec<Queue>, features: u64) {
        self.send(Command::Activate { queues, features });
    }

    /// Returns once the worker has dropped its queues.
    pub(crate) fn reset(&self) {
        self.call(Command::Reset);
    }

    /// Returns once the worker no longer uses queue `index`.
    pub(crate) fn stop_queue(&self, index: usize) {
        self.call(|ack| Command::StopQueue(index, ack));
    }

    /// Sends a command and waits until the worker has carried it out.
    fn call(&self, command: impl FnOnce(SyncSender<()>) -> Command) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.send(command(ack)) {
            // Fails only if the worker thread is gone, which is just as good.
            let _ = done.recv();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.send(Command::Exit);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// A worker that ended instead of starting (it logged why).
#[derive(Debug, thiserror::Error)]
#[error("virtio device type {device_type}: worker did not start")]
pub struct NotStarted {
    pub device_type: u32,
}

/// Lets one worker thread start, under a seccomp filter of the caller's
/// choosing. Until then the worker only waits (dropping its transport
/// still ends it).
pub struct WorkerGate {
    device_type: u32,
    fds: WorkerFds,
    commands: mpsc::Sender<Command>,
}

impl WorkerGate {
    /// Virtio device ID (`VIRTIO_ID_*`) of the worker's device, to pick
    /// its filter.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The fds the worker does I/O on, for its seccomp filter.
    pub fn fds(&self) -> &WorkerFds {
        &self.fds
    }

    /// Starts the worker; returns once it has installed `filter` on its own
    /// thread. On failure the worker has logged why and ended.
    pub fn open(self, filter: Option<BpfProgram>) -> Result<(), NotStarted> {
        let (done, started) = mpsc::sync_channel(1);
        let sent = self.commands.send(Command::Start { filter, done });
        match sent.is_ok() && started.recv().is_ok() {
            true => Ok(()),
            false => Err(NotStarted {
                device_type: self.device_type,
            }),
        }
    }
}

/// Blocks until the worker may run (`true`) or must end (`false`). The
/// filter goes on here, before the first queue is handed over.
fn wait_for_start(name: &str, commands: &Receiver<Command>) -> bool {
    match commands.recv() {
        Ok(Command::Start { filter, done }) => {
            if let Some(filter) = filter {
                if let Err(e) = seccompiler::apply_filter(&filter) {
                    log::error!("{name} worker: cannot install seccomp filter: {e}");
                    return false;
                }
            }
            let _ = done.send(());
            true
        }
        // Dropped before it was started. No other command can come first:
        // the queues are handed over by vCPUs, which run only after every
        // gate is open.
        _ => false,
    }
}

/// What the worker thread reads and writes: see [`WorkerFds`].
fn worker_fds(worker: &Worker, control: &EventFd, notifiers: &[EventFd]) -> WorkerFds {
    let backend = worker.processor.backend_fd();
    let notify = notifiers.iter().map(AsRawFd::as_raw_fd);
    WorkerFds {
        read: std::iter::once(control.as_raw_fd())
            .chain(notify.clone())
            .chain(worker.interrupt.resample_fd().map(AsRawFd::as_raw_fd))
            .chain(backend)
            .collect(),
        write: std::iter::once(libc::STDERR_FILENO)
            .chain(worker.interrupt.irq_fds())
            .chain(notify)
            .chain(backend)
            .collect(),
        disk: worker.processor.io_fd(),
    }
}

fn add(epoll: &Epoll, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
    epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
}

fn run_loop(
    mut worker: Worker,
    epoll: Epoll,
    control: EventFd,
    commands: Receiver<Command>,
    notifiers: Vec<EventFd>,
) {
    let backend = worker.processor.backend_fd();
    let mut backend_polled = false;
    let mut events = [EpollEvent::default(); 8];
    loop {
        let count = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("{}: epoll failed: {e}; device stopped", worker.name);
                worker.reset();
                worker.interrupt.mark_broken();
                return;
            }
        };
        let ready = events.get_mut(..count).unwrap_or_default();
        // Commands first: a reset or stop never waits behind a queue's
        // batch that arrived in the same wake-up (sorting in place, no
        // allocation).
        ready.sort_unstable_by_key(|event| event.data() != CONTROL_TOKEN);
        let mut leftover = 0u64;
        for event in ready.iter() {
            match event.data() {
                CONTROL_TOKEN => {
                    let _ = control.read();
                    loop {
                        match commands.try_recv() {
                            Ok(Command::Activate { queues, features }) => {
                                leftover |= worker.activate(queues, features);
                            }
                            Ok(Command::StopQueue(index, ack)) => {
                                worker.stop_queue(index);
                                let _ = ack.send(());
                            }
                            Ok(Command::Reset(ack)) => {
                                worker.reset();
                                leftover = 0;
                                let _ = ack.send(());
                            }
                            // Only one gate exists, and it was used.
                            Ok(Command::Start { .. }) => {}
                            Ok(Command::Exit) | Err(TryRecvError::Disconnected) => return,
                            Err(TryRecvError::Empty) => break,
                        }
                    }
                }
                BACKEND_TOKEN => leftover |= worker.backend_ready(),
                RESAMPLE_TOKEN => {
                    if let Some(evt) = worker.interrupt.resample_fd() {
                        let _ = evt.read();
                    }
                    worker.interrupt.resample();
                }
                token => {
                    let index = token
                        .checked_sub(FIRST_QUEUE_TOKEN)
                        .and_then(|i| usize::try_from(i).ok());
                    if let Some((index, evt)) =
                        index.and_then(|i| notifiers.get(i).map(|evt| (i, evt)))
                    {
                        // Drain the counter even when inactive: early kicks
                        // must not keep the fd readable forever.
                        let _ = evt.read();
                        leftover |= worker.queue_notified(index);
                    }
                }
            }
        }
        // Unfinished queues get their notifier re-armed so they are picked up
        // again after anything else that is pending.
        for (index, evt) in notifiers.iter().enumerate() {
            if index < 64 && leftover & (1 << index) != 0 {
                let _ = evt.write(1);
            }
        }
        if let Some(fd) = backend {
            let wanted = worker.wants_backend_events();
            if wanted != backend_polled {
                let events = if wanted {
                    EventSet::IN
                } else {
                    EventSet::empty()
                };
                match epoll.ctl(
                    ControlOperation::Modify,
                    fd,
                    EpollEvent::new(events, BACKEND_TOKEN),
                ) {
                    Ok(()) => backend_polled = wanted,
                    Err(e) => log::error!("{}: cannot update backend polling: {e}", worker.name),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::super::{MmioTransport, Rng};
    use crate::devices::virtio::test_support::driver::guest_memory;

    fn transport() -> MmioTransport {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        MmioTransport::new(guest_memory(), Box::new(Rng::new()), irq).unwrap()
    }

    #[test]
    fn a_worker_that_never_started_ends_with_its_transport() {
        let mut dev = transport();
        let gate = dev.take_worker_gate().unwrap();
        // Joins the worker, which is still waiting for its start.
        drop(dev);
        assert!(gate.open(None).is_err());
    }

    #[test]
    fn a_break_and_reset_loop_logs_a_bounded_number_of_lines() {
        use crate::devices::virtio::complaints_test_log::lines_logged_by;
        use crate::devices::virtio::test_support::driver::Driver;
        use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
        use virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS;
        // Inline, so every line is logged on this thread.
        let mut d = Driver::new_inline(Box::new(Rng::new()));
        let lines = lines_logged_by(|| {
            for _ in 0..10_000 {
                d.start(0, 1, 16);
                // More new entries than the queue holds: the device breaks.
                d.set_avail_idx(0, 17);
                d.kick(0);
                assert_ne!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
                d.write(VIRTIO_MMIO_STATUS, 0);
            }
        });
        assert!((1..=16).contains(&lines), "{lines} lines logged");
    }

    #[test]
    fn the_gate_is_handed_out_once() {
        let mut dev = transport();
        let gate = dev.take_worker_gate().unwrap();
        assert!(dev.take_worker_gate().is_none());
        gate.open(None).unwrap();
    }
}
