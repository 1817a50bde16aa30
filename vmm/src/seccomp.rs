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
//!
//! Beyond the system call numbers:
//! - memory: no thread can make memory executable. `mmap` and `mprotect`
//!   are allowed only without `PROT_EXEC` (and `mmap` only anonymous: no
//!   thread maps a file, the disk or guest memory, after set-up).
//!   `mremap` has no protection argument: it keeps a mapping's protection
//!   and contents, so it cannot create executable memory; it is allowed
//!   only without `MREMAP_FIXED` and `MREMAP_DONTUNMAP`, so an existing
//!   mapping (the program's code included) cannot be moved over another
//!   one or duplicated. `madvise` only frees memory (`MADV_DONTNEED`,
//!   `MADV_FREE`).
//! - fds: each virtio worker may `read` and `write` only the fds it owns
//!   ([`WorkerFds`]: its eventfds, its tap, stderr) and the disk calls
//!   (`pread64`, `pwrite64`, `fdatasync`) only on its disk, so not even a
//!   compromised block worker can `write(2)` a disk at the file offset.
//!   The vCPU and main threads write to several devices' eventfds, the
//!   console and stderr: they may `write` any fd but the disks.
//! - ioctl: by request number, see [`ioctls`].

use std::collections::BTreeMap;
use std::convert::TryInto;
use std::os::fd::RawFd;

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
/// `_IOW(KVMIO, 0x6a, struct kvm_irq_routing)`: the MSI routes, set when the
/// guest programs a virtio-pci function's MSI-X table.
const KVM_SET_GSI_ROUTING: u64 = 0x4008_ae6a;
/// `_IOW(KVMIO, 0x79, struct kvm_ioeventfd)`: virtio-pci doorbells follow
/// their BAR when the guest moves it (or turns decoding off and on).
const KVM_IOEVENTFD: u64 = 0x4040_ae79;

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
    /// The thread that searches the guest's disk for a kernel to boot
    /// (`disk_boot`): it reads the disk and allocates, nothing more.
    BootLoader,
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

/// The fds one virtio worker thread does I/O on: its filter allows
/// `read`, `write` and the disk calls on these alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerFds {
    /// `read`: the control and queue-notify eventfds, the tap.
    pub read: Vec<RawFd>,
    /// `write`: stderr (log lines), the interrupt eventfd, the
    /// queue-notify eventfds (re-armed when work is left), the tap.
    pub write: Vec<RawFd>,
    /// `pread64`, `pwrite64`, `fdatasync`: the disk image.
    pub disk: Option<RawFd>,
}

/// What any Rust thread needs to allocate, lock, log and exit (memory
/// calls are added with argument checks by [`memory_rules`]).
const COMMON: &[i64] = &[
    // Heap and per-request buffers (the allocator grows, shrinks and
    // returns memory).
    libc::SYS_brk,
    libc::SYS_munmap,
    // Mutexes, channels, thread join.
    libc::SYS_futex,
    libc::SYS_sched_yield,
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

/// What every virtio worker's epoll loop needs on top of [`COMMON`]
/// (`read` and `write` are added per fd, see [`WorkerFds`]).
const VIRTIO_WORKER: &[i64] = &[
    // Waiting for queue notifications, commands and tap input
    // (epoll_pwait on musl, epoll_wait on glibc).
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_wait,
    // Turning tap polling on and off (virtio-net; harmless elsewhere, the
    // worker only holds its own epoll fd).
    libc::SYS_epoll_ctl,
];

fn syscalls(kind: ThreadKind) -> &'static [i64] {
    match kind {
        // write (log lines, eventfd signalling) is added for every fd but
        // the disks, see `filter`.
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
        // write (the serial console, log lines, queue-notify and control
        // eventfds, the exit eventfd) is added for every fd but the disks,
        // and ioctl with argument checks, in `rules`.
        ThreadKind::Vcpu => &[],
        // Disk reads and writes at the request's sector, and FLUSH: added
        // for the disk fd only, see `worker_rules`.
        ThreadKind::BlockWorker => &[],
        // Frames move with read/write on the tap (see `WorkerFds`).
        ThreadKind::NetWorker => &[],
        // The entropy itself.
        ThreadKind::RngWorker => &[libc::SYS_getrandom],
        // Writes to stdout are in the list; sleeping out a full
        // non-blocking stdout is all it adds.
        ThreadKind::Console => &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep],
        // `pread64` on the disk is added in `rules`; a file system parser
        // needs nothing else.
        ThreadKind::BootLoader => &[],
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
        // MSI-X table and BAR writes reach the vCPU that made them and
        // update the MSI routes and the doorbells' ioeventfds there. The
        // irqfds are all registered while the VM is built: no KVM_IRQFD.
        ThreadKind::Vcpu => &[KVM_RUN, KVM_IRQ_LINE, KVM_SET_GSI_ROUTING, KVM_IOEVENTFD],
        // Workers signal interrupts through irqfds, never by ioctl.
        ThreadKind::BlockWorker
        | ThreadKind::NetWorker
        | ThreadKind::RngWorker
        | ThreadKind::Console
        | ThreadKind::BootLoader => &[],
    }
}

fn condition(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, Error> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value).map_err(Error::Filter)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, Error> {
    SeccompRule::new(conditions).map_err(Error::Filter)
}

fn arg_equals(index: u8, value: u64) -> Result<SeccompRule, Error> {
    rule(vec![condition(index, SeccompCmpOp::Eq, value)?])
}

/// `arg & mask == 0`
fn bits_clear(index: u8, mask: u64) -> Result<SeccompCondition, Error> {
    condition(index, SeccompCmpOp::MaskedEq(mask), 0)
}

/// The memory calls every thread makes, argument-checked: see the module
/// documentation.
fn memory_rules(map: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), Error> {
    let exec = libc::PROT_EXEC as u64;
    let anonymous = libc::MAP_ANONYMOUS as u64;
    // mmap(addr, len, prot, flags, fd, off)
    map.insert(
        libc::SYS_mmap,
        vec![rule(vec![
            bits_clear(2, exec)?,
            condition(3, SeccompCmpOp::MaskedEq(anonymous), anonymous)?,
        ])?],
    );
    // mprotect(addr, len, prot): allocators turn guard pages into heap.
    map.insert(libc::SYS_mprotect, vec![rule(vec![bits_clear(2, exec)?])?]);
    // mremap(old, old_len, new_len, flags, new_addr): realloc.
    let moves = (libc::MREMAP_FIXED | MREMAP_DONTUNMAP) as u64;
    map.insert(libc::SYS_mremap, vec![rule(vec![bits_clear(3, moves)?])?]);
    // madvise(addr, len, advice): free(3) giving pages back.
    map.insert(
        libc::SYS_madvise,
        vec![
            arg_equals(2, libc::MADV_DONTNEED as u64)?,
            arg_equals(2, libc::MADV_FREE as u64)?,
        ],
    );
    Ok(())
}

/// `MREMAP_DONTUNMAP` (Linux 5.7), which the libc crate does not name
/// for every target.
const MREMAP_DONTUNMAP: libc::c_int = 4;

/// Rules allowing system call `nr` when its first argument is one of
/// `fds`; nothing (the call traps) when there are none.
fn on_fds(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, fds: &[RawFd]) -> Result<(), Error> {
    let rules = fds
        .iter()
        .filter_map(|&fd| u64::try_from(fd).ok())
        .map(|fd| arg_equals(0, fd))
        .collect::<Result<Vec<_>, _>>()?;
    // An empty rule list would allow the call on any fd.
    if !rules.is_empty() {
        map.insert(nr, rules);
    }
    Ok(())
}

fn worker_rules(map: &mut BTreeMap<i64, Vec<SeccompRule>>, fds: &WorkerFds) -> Result<(), Error> {
    on_fds(map, libc::SYS_read, &fds.read)?;
    on_fds(map, libc::SYS_write, &fds.write)?;
    let disk: &[RawFd] = fds.disk.as_slice();
    for nr in [libc::SYS_pread64, libc::SYS_pwrite64, libc::SYS_fdatasync] {
        on_fds(map, nr, disk)?;
    }
    Ok(())
}

/// What a main or vCPU thread may do with an fd: the workers' own fds,
/// or (`Spare`) any but the disks.
#[derive(Clone, Copy)]
enum Fds<'a> {
    Worker(&'a WorkerFds),
    Spare(&'a [RawFd]),
}

fn rules(kind: ThreadKind, fds: Fds) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let worker: &[i64] = if is_virtio_worker(kind) {
        VIRTIO_WORKER
    } else {
        &[]
    };
    for &nr in COMMON.iter().chain(worker).chain(syscalls(kind)) {
        map.insert(nr, vec![]);
    }
    memory_rules(&mut map)?;
    match fds {
        Fds::Worker(fds) if is_virtio_worker(kind) => worker_rules(&mut map, fds)?,
        // Reads only: the guest's disk is never written while booting;
        // `write` is for log lines (the FAT reader warns about a corrupt
        // volume) on stderr.
        Fds::Worker(fds) if kind == ThreadKind::BootLoader => {
            on_fds(&mut map, libc::SYS_pread64, fds.disk.as_slice())?;
            on_fds(&mut map, libc::SYS_write, &fds.write)?;
        }
        Fds::Worker(_) => {}
        Fds::Spare(disks) if !is_virtio_worker(kind) => {
            // One rule: the fd is none of the disks.
            let not_disks = disks
                .iter()
                .filter_map(|&fd| u64::try_from(fd).ok())
                .map(|fd| condition(0, SeccompCmpOp::Ne, fd))
                .collect::<Result<Vec<_>, _>>()?;
            let write = match not_disks.is_empty() {
                true => vec![],
                false => vec![rule(not_disks)?],
            };
            map.insert(libc::SYS_write, write);
        }
        Fds::Spare(_) => {}
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

/// Compiles the allow-list for the main or a vCPU thread, which may
/// `write` any fd but `disks` (those go through the block workers'
/// positioned I/O only). Anything else traps (SIGSYS), and the handler
/// installed by [`install_sigsys_handler`] names the offending system call
/// before exiting. A virtio worker kind gets no I/O at all here: see
/// [`worker_filter`].
pub fn filter(kind: ThreadKind, disks: &[RawFd]) -> Result<BpfProgram, Error> {
    compile(rules(kind, Fds::Spare(disks))?)
}

/// Compiles the allow-list of a virtio worker doing I/O on `fds` only.
pub fn worker_filter(kind: ThreadKind, fds: &WorkerFds) -> Result<BpfProgram, Error> {
    compile(rules(kind, Fds::Worker(fds))?)
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
    ThreadKind::BootLoader,
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

    /// fds as a block worker might have them: control 10, notify 11,
    /// interrupt 12, disk 13.
    fn sample_fds(kind: ThreadKind) -> WorkerFds {
        WorkerFds {
            read: vec![10, 11],
            write: vec![2, 12, 11],
            disk: matches!(kind, ThreadKind::BlockWorker | ThreadKind::BootLoader).then_some(13),
        }
    }

    fn rules_of(kind: ThreadKind) -> BTreeMap<i64, Vec<SeccompRule>> {
        match is_virtio_worker(kind) || kind == ThreadKind::BootLoader {
            true => rules(kind, Fds::Worker(&sample_fds(kind))).unwrap(),
            false => rules(kind, Fds::Spare(&[13])).unwrap(),
        }
    }

    fn compiled(kind: ThreadKind, fds: &WorkerFds) -> BpfProgram {
        match is_virtio_worker(kind) || kind == ThreadKind::BootLoader {
            true => worker_filter(kind, fds).unwrap(),
            false => filter(kind, fds.disk.as_slice()).unwrap(),
        }
    }

    #[test]
    fn every_kind_compiles() {
        for kind in ALL_KINDS {
            assert!(!compiled(*kind, &sample_fds(*kind)).is_empty());
        }
    }

    #[test]
    fn only_vcpus_run_guests() {
        let vcpu = rules_of(ThreadKind::Vcpu);
        assert!(vcpu.contains_key(&libc::SYS_ioctl));
        assert!(!vcpu.contains_key(&libc::SYS_read));
        for kind in WORKERS {
            assert!(!rules_of(kind).contains_key(&libc::SYS_ioctl));
        }
        for kind in ALL_KINDS {
            let map = rules_of(*kind);
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
            // Memory calls are always argument-checked.
            for nr in [
                libc::SYS_mmap,
                libc::SYS_mprotect,
                libc::SYS_mremap,
                libc::SYS_madvise,
            ] {
                assert!(!map[&nr].is_empty(), "{kind:?} allows {nr} unchecked");
            }
        }
    }

    #[test]
    fn workers_get_only_their_device_calls() {
        let has = |kind, nr| rules_of(kind).contains_key(&nr);
        for kind in WORKERS {
            assert!(has(kind, libc::SYS_epoll_pwait));
            // Only on their own fds.
            assert!(!rules_of(kind)[&libc::SYS_read].is_empty());
            assert!(!rules_of(kind)[&libc::SYS_write].is_empty());
            // Without fds, no I/O at all.
            let bare = rules(kind, Fds::Worker(&WorkerFds::default())).unwrap();
            assert!(!bare.contains_key(&libc::SYS_read));
            assert!(!bare.contains_key(&libc::SYS_write));
            assert!(!bare.contains_key(&libc::SYS_pwrite64));
        }
        assert!(has(ThreadKind::BlockWorker, libc::SYS_pwrite64));
        assert!(!has(ThreadKind::NetWorker, libc::SYS_pwrite64));
        assert!(!has(ThreadKind::RngWorker, libc::SYS_pread64));
        assert!(has(ThreadKind::RngWorker, libc::SYS_getrandom));
        assert!(!has(ThreadKind::BlockWorker, libc::SYS_getrandom));
        assert!(!has(ThreadKind::Vcpu, libc::SYS_epoll_pwait));
        // The main and vCPU threads write anything but the disks.
        for kind in [ThreadKind::Main, ThreadKind::Vcpu] {
            assert!(!rules_of(kind)[&libc::SYS_write].is_empty());
            assert!(!has(kind, libc::SYS_pwrite64));
            let no_disks = rules(kind, Fds::Spare(&[])).unwrap();
            assert!(no_disks[&libc::SYS_write].is_empty());
        }
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
        assert_eq!(
            KVM_SET_GSI_ROUTING,
            (1 << 30) | (8 << 16) | (0xae << 8) | 0x6a
        );
        assert_eq!(
            std::mem::size_of::<kvm_bindings::kvm_irq_routing>(),
            8,
            "the size in KVM_SET_GSI_ROUTING"
        );
        assert_eq!(KVM_IOEVENTFD, (1 << 30) | (64 << 16) | (0xae << 8) | 0x79);
        assert_eq!(std::mem::size_of::<kvm_bindings::kvm_ioeventfd>(), 64);
    }

    /// How a forked child under a filter ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Ended {
        Exited(i32),
        Signal(i32),
    }

    /// Forks a child (a process, not a thread: a filter is for good) that
    /// installs `program` and then runs `probe`, exiting 0 if it returns.
    /// The filter is compiled before the fork; the child only makes
    /// system calls, it allocates nothing.
    fn run_filtered(program: &BpfProgram, probe: fn()) -> Ended {
        // SAFETY: fork has no preconditions; the child below only calls
        // async-signal-safe functions and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // The default SIGSYS action (kill the process) is what we
            // observe: no handler in the child.
            if seccompiler::apply_filter(program).is_err() {
                // SAFETY: leaving the child without the parent's state.
                unsafe { libc::_exit(100) };
            }
            probe();
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child, into a valid int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        if libc::WIFSIGNALED(status) {
            Ended::Signal(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        }
    }

    fn map(prot: libc::c_int) {
        // SAFETY: a fresh anonymous mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(101) };
        }
    }

    fn map_exec() {
        map(libc::PROT_READ | libc::PROT_EXEC);
    }

    fn map_read_write() {
        map(libc::PROT_READ | libc::PROT_WRITE);
    }

    fn protect_exec() {
        // SAFETY: a fresh mapping of our own, made executable.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(101);
            }
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
        }
    }

    #[test]
    fn no_thread_kind_can_map_executable_memory() {
        for &kind in ALL_KINDS {
            let program = compiled(kind, &sample_fds(kind));
            assert_eq!(
                run_filtered(&program, map_read_write),
                Ended::Exited(0),
                "{kind:?}: plain memory must still work"
            );
            assert_eq!(
                run_filtered(&program, map_exec),
                Ended::Signal(libc::SIGSYS),
                "{kind:?}: mmap(PROT_EXEC)"
            );
            assert_eq!(
                run_filtered(&program, protect_exec),
                Ended::Signal(libc::SIGSYS),
                "{kind:?}: mprotect(PROT_EXEC)"
            );
        }
    }

    /// The disk's fd, for the probes (set before the fork).
    static DISK_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

    fn disk_fd() -> RawFd {
        DISK_FD.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn positioned_write_on_disk() {
        // SAFETY: writing a valid buffer to the disk fd.
        if unsafe { libc::pwrite64(disk_fd(), b"x".as_ptr().cast(), 1, 0) } != 1 {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(102) };
        }
    }

    fn plain_write_on_disk() {
        // SAFETY: writing a valid buffer to the disk fd.
        unsafe { libc::write(disk_fd(), b"x".as_ptr().cast(), 1) };
    }

    fn positioned_write_elsewhere() {
        // SAFETY: writing a valid buffer to the interrupt eventfd's number
        // (the filter stops the call before it reaches any fd).
        unsafe { libc::pwrite64(12, b"x".as_ptr().cast(), 1, 0) };
    }

    fn write_on_stderr() {
        // SAFETY: writing a valid (empty) buffer to stderr.
        unsafe { libc::write(2, b"".as_ptr().cast(), 0) };
    }

    #[test]
    fn only_the_block_worker_touches_the_disk_and_only_positioned() {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("vmm-seccomp-disk-{}", std::process::id()));
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        DISK_FD.store(disk.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
        let kind = ThreadKind::BlockWorker;
        let fds = WorkerFds {
            disk: Some(disk.as_raw_fd()),
            ..sample_fds(kind)
        };
        let program = &compiled(kind, &fds);
        {
            assert_eq!(
                run_filtered(program, positioned_write_on_disk),
                Ended::Exited(0)
            );
            assert_eq!(run_filtered(program, write_on_stderr), Ended::Exited(0));
            assert_eq!(
                run_filtered(program, plain_write_on_disk),
                Ended::Signal(libc::SIGSYS),
                "write(2) at the disk's file offset"
            );
            assert_eq!(
                run_filtered(program, positioned_write_elsewhere),
                Ended::Signal(libc::SIGSYS)
            );
        }
        // Nor may the main and vCPU threads write the disk.
        for kind in [ThreadKind::Main, ThreadKind::Vcpu] {
            let program = &filter(kind, &[disk.as_raw_fd()]).unwrap();
            assert_eq!(run_filtered(program, write_on_stderr), Ended::Exited(0));
            assert_eq!(
                run_filtered(program, plain_write_on_disk),
                Ended::Signal(libc::SIGSYS),
                "{kind:?}: write(2) on the disk"
            );
        }
        // The boot loader reads the disk and writes nothing, not even
        // positioned, and opens nothing.
        let fds = WorkerFds {
            disk: Some(disk.as_raw_fd()),
            ..WorkerFds::default()
        };
        let program = &compiled(ThreadKind::BootLoader, &fds);
        assert_eq!(
            run_filtered(program, positioned_read_on_disk),
            Ended::Exited(0)
        );
        for (probe, what) in [
            (positioned_write_on_disk as fn(), "pwrite64 on the disk"),
            (plain_write_on_disk, "write on the disk"),
            (open_a_file, "openat"),
        ] {
            assert_eq!(
                run_filtered(program, probe),
                Ended::Signal(libc::SIGSYS),
                "boot loader: {what}"
            );
        }
        // Nothing reached the file but the one positioned byte.
        assert_eq!(disk.metadata().unwrap().len(), 1);
    }

    fn positioned_read_on_disk() {
        let mut byte = [0u8; 1];
        // SAFETY: reading into a valid one-byte buffer from the disk fd.
        if unsafe { libc::pread64(disk_fd(), byte.as_mut_ptr().cast(), 1, 0) } < 0 {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(103) };
        }
    }

    fn open_a_file() {
        // SAFETY: a NUL-terminated path; the filter stops the call.
        unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    }
}
