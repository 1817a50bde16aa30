//! Seccomp allow-lists, one per thread kind. A guest that breaks out of a
//! device model lands in a thread that can do little more than what it
//! already does: no open, no exec, no sockets, and only the vCPU and main
//! threads may issue (a few, argument-checked) ioctls.
//!
//! Every thread installs its own filter; there is no process-wide one.
//! Installation order (see `privileges` and `lifecycle`): the VMM drops
//! its privileges first, while it has a single thread and before the VM
//! is built (setuid/setgid/setgroups are allowed by no filter), then each
//! virtio worker installs its device kind's list when told to start (the
//! workers exist from the moment the devices are built, so they cannot
//! inherit anything), then the serial console's writer thread installs
//! its own as it starts, then the vCPU threads and finally the main thread
//! install theirs. No thread is created after that.
//!
//! The lists were checked with `strace -f` on the tests (vmm/tests/run.rs
//! and a Linux guest using virtio-blk, -net and -rng, shut down by SIGTERM).

use std::collections::BTreeMap;
use std::convert::TryInto;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_NET, VIRTIO_ID_RNG};

/// A filter that does not compile, or a handler that does not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seccomp filter: {0}")]
    Filter(BackendError),
    #[error("cannot install SIGSYS handler: {0}")]
    SigsysHandler(vmm_sys_util::errno::Error),
}

/// `_IO(KVMIO, 0x80)`
const KVM_RUN: u64 = 0xae80;
/// `_IOW(KVMIO, 0x61, struct kvm_irq_level)`: the ACPI SCI line.
const KVM_IRQ_LINE: u64 = 0x4008_ae61;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    Main,
    Vcpu,
    /// The worker thread of a virtio-blk transport (devices::virtio).
    BlockWorker,
    /// The worker thread of a virtio-net transport.
    NetWorker,
    /// The worker thread of a virtio-rng transport.
    RngWorker,
    /// The thread that writes the serial console's output to stdout.
    Console,
}

impl ThreadKind {
    /// The worker kind for a virtio device ID (`VIRTIO_ID_*`).
    pub fn virtio_worker(device_type: u32) -> Option<ThreadKind> {
        match device_type {
            VIRTIO_ID_BLOCK => Some(ThreadKind::BlockWorker),
            VIRTIO_ID_NET => Some(ThreadKind::NetWorker),
            VIRTIO_ID_RNG => Some(ThreadKind::RngWorker),
            _ => None,
        }
    }
}

/// What any Rust thread needs to allocate, lock, log and exit.
const COMMON: &[i64] = &[
    // Heap and per-request buffers (the allocator grows, shrinks and
    // returns memory).
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    // Mutexes, channels, thread join.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    // Log lines on stderr; eventfd signalling (irqfd, exit, notify).
    libc::SYS_write,
    // Log timestamps (normally served by the vDSO).
    libc::SYS_clock_gettime,
    // Thread exit: std tears down the signal stack and masks signals.
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Dropping fds (a vCPU thread drops its vCPU, a worker its epoll and
    // eventfds, when it ends).
    libc::SYS_close,
];

/// What every virtio worker's epoll loop needs on top of [`COMMON`].
const VIRTIO_WORKER: &[i64] = &[
    // Waiting for queue notifications, commands and tap input
    // (epoll_pwait on musl, epoll_wait on glibc).
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_wait,
    // Turning tap polling on and off (virtio-net; harmless elsewhere, the
    // worker only holds its own epoll fd).
    libc::SYS_epoll_ctl,
    // Draining the control and queue-notify eventfds.
    libc::SYS_read,
];

fn syscalls(kind: ThreadKind) -> &'static [i64] {
    match kind {
        ThreadKind::Main => &[
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_ctl,
            libc::SYS_read,
            // Kicking vCPUs out of KVM_RUN (pthread_kill: tkill on musl,
            // getpid + tgkill on glibc).
            libc::SYS_tkill,
            libc::SYS_tgkill,
            libc::SYS_getpid,
            libc::SYS_nanosleep,
            libc::SYS_clock_nanosleep,
        ],
        // ioctl is added with argument checks below.
        ThreadKind::Vcpu => &[],
        // Disk reads and writes at the request's sector, and FLUSH.
        ThreadKind::BlockWorker => &[libc::SYS_pread64, libc::SYS_pwrite64, libc::SYS_fdatasync],
        // Frames move with read/write on the tap, already in the list.
        ThreadKind::NetWorker => &[],
        // The entropy itself.
        ThreadKind::RngWorker => &[libc::SYS_getrandom],
        // Writes to stdout are in the list; sleeping out a full
        // non-blocking stdout is all it adds.
        ThreadKind::Console => &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep],
    }
}

fn is_virtio_worker(kind: ThreadKind) -> bool {
    matches!(
        kind,
        ThreadKind::BlockWorker | ThreadKind::NetWorker | ThreadKind::RngWorker
    )
}

// TCSETS is a c_int on musl and a c_ulong on glibc.
#[allow(clippy::unnecessary_cast)]
fn ioctls(kind: ThreadKind) -> &'static [u64] {
    match kind {
        // Restoring the terminal mode on exit, and the power button
        // raises the SCI from the main thread.
        ThreadKind::Main => &[libc::TCSETS as u64, KVM_IRQ_LINE],
        // Running the guest; the SCI is also raised on a PM register write.
        ThreadKind::Vcpu => &[KVM_RUN, KVM_IRQ_LINE],
        // Workers signal interrupts through irqfds, never by ioctl.
        ThreadKind::BlockWorker
        | ThreadKind::NetWorker
        | ThreadKind::RngWorker
        | ThreadKind::Console => &[],
    }
}

fn arg_equals(index: u8, value: u64) -> Result<SeccompRule, Error> {
    let cond = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(Error::Filter)?;
    SeccompRule::new(vec![cond]).map_err(Error::Filter)
}

fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let worker: &[i64] = if is_virtio_worker(kind) {
        VIRTIO_WORKER
    } else {
        &[]
    };
    for &nr in COMMON.iter().chain(worker).chain(syscalls(kind)) {
        map.insert(nr, vec![]);
    }
    let ioctl_rules = ioctls(kind)
        .iter()
        .map(|&request| arg_equals(1, request))
        .collect::<Result<Vec<_>, _>>()?;
    if !ioctl_rules.is_empty() {
        map.insert(libc::SYS_ioctl, ioctl_rules);
    }
    // Debug builds of std check that an fd is open before closing it.
    if cfg!(debug_assertions) {
        map.insert(libc::SYS_fcntl, vec![arg_equals(1, libc::F_GETFD as u64)?]);
    }
    Ok(map)
}

/// Compiles the allow-list for one thread kind. Anything else traps
/// (SIGSYS), and the handler installed by [`install_sigsys_handler`] names
/// the offending system call before exiting.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, Error> {
    compile(rules(kind)?)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, Error> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(Error::Filter)?;
    filter.try_into().map_err(Error::Filter)
}

#[cfg(test)]
const ALL_KINDS: &[ThreadKind] = &[
    ThreadKind::Main,
    ThreadKind::Vcpu,
    ThreadKind::BlockWorker,
    ThreadKind::NetWorker,
    ThreadKind::RngWorker,
    ThreadKind::Console,
];

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // siginfo for SIGSYS: si_syscall is the int at byte 24 on x86_64
    // (after signo, errno, code, padding and si_call_addr).
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() };
    let mut msg = *b"vmm: fatal: blocked system call 0000\n";
    let digits = &mut msg[32..36];
    let mut n = nr.clamp(0, 9999);
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(1);
    }
}

pub fn install_sigsys_handler() -> Result<(), Error> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(Error::SigsysHandler)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKERS: [ThreadKind; 3] = [
        ThreadKind::BlockWorker,
        ThreadKind::NetWorker,
        ThreadKind::RngWorker,
    ];

    #[test]
    fn every_kind_compiles() {
        for kind in ALL_KINDS {
            assert!(!filter(*kind).unwrap().is_empty());
        }
    }

    #[test]
    fn only_vcpus_run_guests() {
        let vcpu = rules(ThreadKind::Vcpu).unwrap();
        assert!(vcpu.contains_key(&libc::SYS_ioctl));
        assert!(!vcpu.contains_key(&libc::SYS_read));
        for kind in WORKERS {
            assert!(!rules(kind).unwrap().contains_key(&libc::SYS_ioctl));
        }
        for kind in ALL_KINDS {
            let map = rules(*kind).unwrap();
            for nr in [
                libc::SYS_openat,
                libc::SYS_execve,
                libc::SYS_socket,
                libc::SYS_clone,
                libc::SYS_setuid,
                libc::SYS_prctl,
                libc::SYS_seccomp,
            ] {
                assert!(!map.contains_key(&nr), "{kind:?} allows {nr}");
            }
        }
    }

    #[test]
    fn workers_get_only_their_device_calls() {
        let has = |kind, nr| rules(kind).unwrap().contains_key(&nr);
        for kind in WORKERS {
            assert!(has(kind, libc::SYS_epoll_pwait));
            assert!(has(kind, libc::SYS_read));
        }
        assert!(has(ThreadKind::BlockWorker, libc::SYS_pwrite64));
        assert!(!has(ThreadKind::NetWorker, libc::SYS_pwrite64));
        assert!(!has(ThreadKind::RngWorker, libc::SYS_pread64));
        assert!(has(ThreadKind::RngWorker, libc::SYS_getrandom));
        assert!(!has(ThreadKind::BlockWorker, libc::SYS_getrandom));
        assert!(!has(ThreadKind::Vcpu, libc::SYS_epoll_pwait));
        assert_eq!(
            ThreadKind::virtio_worker(VIRTIO_ID_NET),
            Some(ThreadKind::NetWorker)
        );
        assert_eq!(ThreadKind::virtio_worker(0), None);
    }

    #[test]
    fn kvm_ioctl_numbers() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        assert_eq!(KVM_RUN, (0xae << 8) | 0x80);
        assert_eq!(KVM_IRQ_LINE, (1 << 30) | (8 << 16) | (0xae << 8) | 0x61);
    }
}
