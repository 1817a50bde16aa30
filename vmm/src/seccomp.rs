//! Seccomp allow-lists, one per thread kind. A guest that breaks out of a
//! device model lands in a process that can do little more than what that
//! thread already does: no open, no exec, no sockets, only the KVM ioctls
//! the thread needs.
//!
//! Installation order (see `lifecycle`): once every thread exists, the
//! union of all lists goes on the whole process with TSYNC (this covers
//! the virtio workers, which are spawned while devices are built); then
//! each vCPU thread and the main thread stack their own, narrower list.

use std::collections::BTreeMap;
use std::convert::TryInto;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `_IO(KVMIO, 0x80)`
const KVM_RUN: u64 = 0xae80;
/// `_IOW(KVMIO, 0x61, struct kvm_irq_level)`: the ACPI SCI line.
const KVM_IRQ_LINE: u64 = 0x4008_ae61;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    Main,
    Vcpu,
    /// virtio-mmio worker threads (devices::virtio).
    VirtioWorker,
}

/// What any Rust thread needs to allocate, lock, log and exit.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_write,
    libc::SYS_clock_gettime,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Dropping fds (a vCPU thread drops its vCPU when it ends).
    libc::SYS_close,
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
        ThreadKind::VirtioWorker => &[
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_ctl,
            libc::SYS_read,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_fdatasync,
            libc::SYS_getrandom,
        ],
    }
}

// TCSETS is a c_int on musl and a c_ulong on glibc.
#[allow(clippy::unnecessary_cast)]
fn ioctls(kind: ThreadKind) -> &'static [u64] {
    match kind {
        // The power button raises the SCI from the main thread.
        ThreadKind::Main => &[libc::TCSETS as u64, KVM_IRQ_LINE],
        ThreadKind::Vcpu => &[KVM_RUN, KVM_IRQ_LINE],
        ThreadKind::VirtioWorker => &[],
    }
}

fn arg_equals(index: u8, value: u64) -> Result<SeccompRule, String> {
    let cond = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(|e| e.to_string())?;
    SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
}

fn rules(kinds: &[ThreadKind]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in COMMON {
        map.insert(nr, vec![]);
    }
    let mut ioctl_rules = Vec::new();
    for &kind in kinds {
        for &nr in syscalls(kind) {
            map.insert(nr, vec![]);
        }
        for &request in ioctls(kind) {
            ioctl_rules.push(arg_equals(1, request)?);
        }
    }
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
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, String> {
    compile(rules(&[kind])?)
}

/// The process-wide filter: every thread kind's list, plus what the vCPU
/// and main threads need to stack their own filter on top of it.
pub fn process_filter() -> Result<BpfProgram, String> {
    let mut map = rules(ALL_KINDS)?;
    map.insert(
        libc::SYS_prctl,
        vec![arg_equals(0, libc::PR_SET_NO_NEW_PRIVS as u64)?],
    );
    map.insert(
        libc::SYS_seccomp,
        vec![arg_equals(0, u64::from(libc::SECCOMP_SET_MODE_FILTER))?],
    );
    compile(map)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp filter: {e}"))
}

pub const ALL_KINDS: &[ThreadKind] =
    &[ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::VirtioWorker];

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

pub fn install_sigsys_handler() -> Result<(), String> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(|e| format!("cannot install SIGSYS handler: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles() {
        for kind in ALL_KINDS {
            assert!(!filter(*kind).unwrap().is_empty());
        }
        assert!(!process_filter().unwrap().is_empty());
    }

    #[test]
    fn only_vcpus_run_guests() {
        let vcpu = rules(&[ThreadKind::Vcpu]).unwrap();
        assert!(vcpu.contains_key(&libc::SYS_ioctl));
        assert!(!vcpu.contains_key(&libc::SYS_read));
        let worker = rules(&[ThreadKind::VirtioWorker]).unwrap();
        assert!(!worker.contains_key(&libc::SYS_ioctl));
        for map in [vcpu, worker] {
            assert!(!map.contains_key(&libc::SYS_openat));
            assert!(!map.contains_key(&libc::SYS_execve));
        }
    }

    #[test]
    fn kvm_ioctl_numbers() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        assert_eq!(KVM_RUN, (0xae << 8) | 0x80);
        assert_eq!(KVM_IRQ_LINE, (1 << 30) | (8 << 16) | (0xae << 8) | 0x61);
    }
}
