//! Starts a vmm in its own jail: new mount, pid, ipc, uts and network
//! namespaces, a read-only tmpfs root holding only what that vmm needs,
//! and its cgroup. The vmm drops to its own uid/gid itself, after opening
//! /dev/kvm (a root-only node).
//!
//! Everything the child does between clone and exec is planned in the
//! parent: the child runs a list of prepared system calls and allocates
//! nothing, so it is safe even from a multi-threaded process (the tests).
//!
//! What the child ends up with:
//! - its root: `pivot_root` into the jail's tmpfs with the old root
//!   detached (`MNT_DETACH`), so /proc/self/mountinfo shows the jail's own
//!   mounts and nothing of the host's stays mounted in its namespace. PID 1
//!   runs from the initramfs, whose rootfs cannot be pivoted away from
//!   (`pivot_root` fails with EINVAL there): then the jail root is moved
//!   over / and entered with chroot, as switch_root does, and every mount
//!   on the old root (planned from init's /proc/self/mountinfo) is
//!   detached through an fd kept on it. Either way only the jail's mounts
//!   remain reachable or attached; the vmm drops every privilege right
//!   after start-up, so it cannot chroot back out;
//! - fds 0-2 and the fds handed on, nothing else: everything else is
//!   closed (`close_range` over the gaps), not left to O_CLOEXEC;
//! - limits: `RLIMIT_NOFILE` for what a vmm opens, `RLIMIT_NPROC` for its
//!   threads, no core dumps (guest memory).
//!
//! No user namespace: the vmm must open /dev/kvm, a root-only node, with
//! real root, and a user namespace's root maps to an unprivileged host uid
//! (or, mapped to 0, gains nothing). The vmm gives root up itself, checked,
//! with no_new_privs and seccomp, before it touches guest input.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use libc::c_ulong;

/// One prepared step of the child's set-up.
#[derive(Debug)]
enum Step {
    Mkdir(CString),
    Touch(CString),
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    Chdir(CString),
    /// Makes the current directory (the jail root) `/`: see
    /// [`enter_root`].
    EnterRoot {
        /// Mount points on the old root, relative to it (`proc`, `run`,
        /// ...), for when pivot_root is impossible.
        old_mounts: Vec<CString>,
        /// false only in the test of the initramfs way.
        try_pivot: bool,
    },
    Hostname(Vec<u8>),
}

/// A file from the host made visible in the jail at the same path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub path: PathBuf,
    /// Device nodes need their mount to allow device access.
    pub device: bool,
    pub executable: bool,
}

impl Bind {
    pub fn file(path: impl Into<PathBuf>) -> Bind {
        Bind {
            path: path.into(),
            device: false,
            executable: false,
        }
    }

    pub fn device(path: impl Into<PathBuf>) -> Bind {
        Bind {
            path: path.into(),
            device: true,
            executable: false,
        }
    }

    pub fn executable(path: impl Into<PathBuf>) -> Bind {
        Bind {
            path: path.into(),
            device: false,
            executable: true,
        }
    }
}

/// What to run and what it may see.
pub struct JailSpec<'a> {
    /// Becomes the host name inside the jail.
    pub hostname: &'a str,
    /// Empty directory on the host where the jail's root is assembled.
    pub root: &'a Path,
    pub program: &'a Path,
    /// argv, including argv[0].
    pub args: &'a [String],
    pub binds: &'a [Bind],
    /// Open fds the program inherits under the same numbers.
    pub keep_fds: &'a [RawFd],
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// cgroup directory fd for CLONE_INTO_CGROUP.
    pub cgroup: Option<RawFd>,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cpath(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

/// `root` joined with absolute `path`, refusing `..` so a bind can never
/// land outside the jail.
fn inside(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: '..' not allowed in jailed paths", path.display()),
                ))
            }
        }
    }
    Ok(out)
}

const MS_PRIVATE_REC: c_ulong = libc::MS_PRIVATE | libc::MS_REC;

fn mount_step(
    source: Option<&[u8]>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> io::Result<Step> {
    Ok(Step::Mount {
        source: source.map(cstring).transpose()?,
        target: cpath(target)?,
        fstype: fstype.map(|s| cstring(s.as_bytes())).transpose()?,
        flags,
        data: data.map(|s| cstring(s.as_bytes())).transpose()?,
    })
}

/// The mount points directly on the root mount, from a mountinfo table,
/// relative to `/` and unescaped (`\040` is a space).
fn top_mounts(mountinfo: &str) -> Vec<Vec<u8>> {
    // Fields: id, parent id, dev, root, mount point, ...
    let entries: Vec<(&str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            Some((f.next()?, f.next()?, f.nth(2)?))
        })
        .collect();
    // The last mount at "/" is the one on top: the process root.
    let Some(root_id) = entries.iter().rev().find(|e| e.2 == "/").map(|e| e.0) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(id, parent, point)| *parent == root_id && *id != root_id && *point != "/")
        .map(|(_, _, point)| unescape(point.trim_start_matches('/')))
        .collect()
}

fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// [`plan_entering`] as [`spawn`] uses it.
#[cfg(test)]
fn plan(spec: &JailSpec, old_mounts: &[Vec<u8>]) -> io::Result<Vec<Step>> {
    plan_entering(spec, old_mounts, true)
}

/// Plans the child's file system: the list of steps that turn `root`
/// into its `/`. `old_mounts` are the mount points on the current root
/// (see [`top_mounts`]); `try_pivot` is false only to test the way taken
/// from the initramfs.
fn plan_entering(
    spec: &JailSpec,
    old_mounts: &[Vec<u8>],
    try_pivot: bool,
) -> io::Result<Vec<Step>> {
    let root = spec.root;
    let mut steps = vec![
        // Nothing mounted in the jail may leak back to the host.
        mount_step(None, Path::new("/"), None, MS_PRIVATE_REC, None)?,
        mount_step(
            Some(b"tmpfs"),
            root,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("size=1m,mode=0755"),
        )?,
    ];
    let mut made: Vec<PathBuf> = Vec::new();
    let mut binds: Vec<Bind> = spec.binds.to_vec();
    binds.push(Bind::executable(spec.program));
    for bind in &binds {
        let target = inside(root, &bind.path)?;
        let mut dirs: Vec<&Path> = target
            .ancestors()
            .skip(1)
            .take_while(|d| *d != root)
            .collect();
        dirs.reverse();
        for dir in dirs {
            if !made.iter().any(|m| m == dir) {
                made.push(dir.to_path_buf());
                steps.push(Step::Mkdir(cpath(dir)?));
            }
        }
        steps.push(Step::Touch(cpath(&target)?));
        steps.push(mount_step(
            Some(bind.path.as_os_str().as_bytes()),
            &target,
            None,
            libc::MS_BIND,
            None,
        )?);
        // Bind mounts take their flags from a remount.
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID;
        if !bind.device {
            flags |= libc::MS_NODEV;
        }
        if !bind.executable {
            flags |= libc::MS_NOEXEC;
        }
        steps.push(mount_step(None, &target, None, flags, None)?);
    }
    // A /proc of the jail's own pid namespace: it shows the vmm alone.
    let proc_dir = root.join("proc");
    steps.push(Step::Mkdir(cpath(&proc_dir)?));
    steps.push(mount_step(
        Some(b"proc"),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
        None,
    )?);
    steps.push(mount_step(
        None,
        root,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )?);
    steps.push(Step::Chdir(cpath(root)?));
    steps.push(Step::EnterRoot {
        old_mounts: old_mounts
            .iter()
            .map(|m| cstring(m))
            .collect::<io::Result<_>>()?,
        try_pivot,
    });
    steps.push(Step::Chdir(cstring(b"/")?));
    steps.push(Step::Hostname(spec.hostname.as_bytes().to_vec()));
    Ok(steps)
}

/// Paths the plan binds into the jail, for tests and logs.
#[cfg(test)]
fn planned_targets(spec: &JailSpec) -> io::Result<Vec<PathBuf>> {
    use std::ffi::OsStr;
    Ok(plan(spec, &[])?
        .iter()
        .filter_map(|s| match s {
            Step::Touch(t) => Some(PathBuf::from(OsStr::from_bytes(t.as_bytes()))),
            _ => None,
        })
        .collect())
}

/// Writes `what: errno N` to fd 2 without allocating.
fn report(what: &[u8], errno: i32) {
    let mut buf = [0u8; 160];
    let mut len = 0;
    for part in [b"jail: ".as_slice(), what, b": errno ".as_slice()] {
        for &b in part {
            if let Some(slot) = buf.get_mut(len) {
                *slot = b;
                len += 1;
            }
        }
    }
    let mut digits = [0u8; 12];
    let mut n = errno.unsigned_abs();
    let mut d = digits.len();
    loop {
        d -= 1;
        if let Some(slot) = digits.get_mut(d) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || d == 0 {
            break;
        }
    }
    for &b in digits.get(d..).unwrap_or_default().iter().chain(b"\n") {
        if let Some(slot) = buf.get_mut(len) {
            *slot = b;
            len += 1;
        }
    }
    // SAFETY: writing a valid buffer to a (possibly closed) fd.
    unsafe { libc::write(2, buf.as_ptr().cast(), len) };
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// Turns the current directory, the jail root (a mount point), into `/`
/// with nothing of the old root left mounted. Returns 0 or -1 (errno set).
///
/// SAFETY (for callers): system calls on prepared strings only.
unsafe fn enter_root(old_mounts: &[CString], try_pivot: bool) -> libc::c_int {
    // SAFETY: every pointer is a live NUL-terminated string.
    unsafe {
        let dot = c".".as_ptr();
        // The trick pivot_root(2) documents: the old root is stacked on
        // the new one, then lazily unmounted with everything on it.
        if try_pivot {
            if libc::syscall(libc::SYS_pivot_root, dot, dot) == 0 {
                return libc::umount2(dot, libc::MNT_DETACH);
            }
            if errno() != libc::EINVAL {
                return -1;
            }
        }
        // The initramfs: keep a handle on the old root, move the jail over
        // it, enter it, then detach the old root's mounts through the
        // handle (they are no longer reachable from the jail).
        let old = libc::open(
            c"/".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if old < 0 {
            return -1;
        }
        let entered = libc::mount(
            dot,
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        ) == 0
            && libc::chroot(dot) == 0
            && libc::fchdir(old) == 0;
        if !entered {
            return -1;
        }
        for mount in old_mounts {
            // EINVAL: not a mount point (any more); ENOENT: gone.
            if libc::umount2(mount.as_ptr(), libc::MNT_DETACH) != 0
                && !matches!(errno(), libc::EINVAL | libc::ENOENT)
            {
                return -1;
            }
        }
        libc::close(old);
        0
    }
}

/// Runs the prepared steps in the child. Returns the failing step's name.
///
/// SAFETY (for callers): only system calls on memory prepared before
/// clone; no allocation, no locks.
fn run_steps(steps: &[Step]) -> Result<(), (&'static [u8], i32)> {
    for step in steps {
        // SAFETY: all pointers come from live CStrings/Vecs owned by `steps`.
        let (rc, what): (i32, &'static [u8]) = unsafe {
            match step {
                Step::Mkdir(p) => {
                    let rc = libc::mkdir(p.as_ptr(), 0o755);
                    (
                        if rc != 0 && errno() == libc::EEXIST {
                            0
                        } else {
                            rc
                        },
                        b"mkdir",
                    )
                }
                Step::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o444,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    (fd.min(0), b"create bind target")
                }
                Step::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => (
                    libc::mount(
                        opt_ptr(source),
                        target.as_ptr(),
                        opt_ptr(fstype),
                        *flags,
                        opt_ptr(data).cast(),
                    ),
                    b"mount",
                ),
                Step::Chdir(p) => (libc::chdir(p.as_ptr()), b"chdir"),
                Step::EnterRoot {
                    old_mounts,
                    try_pivot,
                } => (enter_root(old_mounts, *try_pivot), b"enter jail root"),
                Step::Hostname(h) => (
                    libc::sethostname(h.as_ptr().cast(), h.len()),
                    b"sethostname",
                ),
            }
        };
        if rc != 0 {
            return Err((what, errno()));
        }
    }
    Ok(())
}

/// Virtio devices a vmm can have: its disks, NICs and the rng.
const VMM_DEVICES: u64 = (hvconfig::guest::MAX_DISKS + hvconfig::guest::MAX_NETS + 1) as u64;
/// fds a vmm opens itself on top of the ones it is handed: /dev/kvm, the
/// VM, one per vCPU, per virtio device an interrupt, a control and
/// per-queue notify eventfds (each twice) and an epoll fd (16 is ample),
/// and a few more (kernel, initrd, signalfd, exit eventfd, epoll).
const VMM_OWN_FDS: u64 = 64 + hvconfig::guest::MAX_VCPUS as u64 + 16 * VMM_DEVICES;
/// Threads of one vmm: main, its vCPUs and one worker per device, with
/// room to spare. Counted per uid, and every guest has its own.
const VMM_THREADS: u64 = 2 * (1 + hvconfig::guest::MAX_VCPUS as u64 + VMM_DEVICES);

/// setrlimit's resource type: unsigned in glibc, int in musl.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// What the child sets up besides its file system, planned in the parent.
struct ProcessPlan {
    /// The kept fds above 2, sorted, without duplicates.
    keep: Vec<libc::c_uint>,
    limits: [(Resource, u64); 3],
}

impl ProcessPlan {
    fn new(spec: &JailSpec) -> ProcessPlan {
        let mut keep: Vec<libc::c_uint> = spec
            .keep_fds
            .iter()
            .filter_map(|&fd| libc::c_uint::try_from(fd).ok())
            .filter(|&fd| fd > 2)
            .collect();
        keep.sort_unstable();
        keep.dedup();
        let handed = u64::try_from(keep.len()).unwrap_or(u64::MAX);
        ProcessPlan {
            keep,
            limits: [
                (libc::RLIMIT_NOFILE, 3 + handed.saturating_add(VMM_OWN_FDS)),
                (libc::RLIMIT_NPROC, VMM_THREADS),
                (libc::RLIMIT_CORE, 0),
            ],
        }
    }
}

/// Closes every fd above 2 except `keep` (sorted).
///
/// SAFETY (for callers): plain fd system calls.
fn close_other_fds(keep: &[libc::c_uint]) -> Result<(), (&'static [u8], i32)> {
    let mut from: libc::c_uint = 3;
    for &fd in keep.iter().chain(std::iter::once(&libc::c_uint::MAX)) {
        if fd > from {
            // SAFETY: closing fds of our own process image.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
            if rc != 0 {
                if errno() != libc::ENOSYS {
                    return Err((b"close_range", errno()));
                }
                // Before Linux 5.9: one by one, up to the fd limit.
                // SAFETY: sysconf has no preconditions.
                let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
                let end = libc::c_uint::try_from(max).unwrap_or(1024).min(fd);
                for n in from..end {
                    // SAFETY: as above; EBADF for fds not open is fine.
                    unsafe { libc::close(n as libc::c_int) };
                }
            }
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

/// Makes fds 0-2 and the kept fds what the program inherits (and nothing
/// else), sets its limits, and resets what init changed for itself
/// (blocked signals, ignored SIGPIPE).
///
/// SAFETY (for callers): async-signal-safe calls only.
fn prepare_process(spec: &JailSpec, plan: &ProcessPlan) -> Result<(), (&'static [u8], i32)> {
    // SAFETY: plain fd and signal system calls on valid arguments.
    unsafe {
        for (from, to) in [(spec.stdin, 0), (spec.stdout, 1), (spec.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                return Err((b"dup2", errno()));
            }
        }
        for &fd in spec.keep_fds {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err((b"keep fd", errno()));
            }
        }
        close_other_fds(&plan.keep)?;
        for &(resource, value) in &plan.limits {
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource, &limit) != 0 {
                return Err((b"setrlimit", errno()));
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in [
            libc::SIGPIPE,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGCHLD,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    Ok(())
}

/// clone3(2) arguments (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks into new namespaces (and the cgroup, atomically, so not one
/// page is charged elsewhere). Returns 0 in the child, like fork.
fn clone_jailed(cgroup: Option<RawFd>) -> io::Result<libc::pid_t> {
    let mut args = CloneArgs {
        // A network namespace of its own too: the vmm reaches the network
        // only through the tap fds it is handed.
        flags: (libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWNET) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; without a
    // stack the child continues on a copy of ours, like fork.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel's pids fit a pid_t.
    libc::pid_t::try_from(rc).map_err(|_| io::Error::other("clone3: pid out of range"))
}

/// Starts `spec.program` in a fresh jail and returns its pid.
pub fn spawn(spec: &JailSpec) -> io::Result<libc::pid_t> {
    spawn_entering(spec, true)
}

/// [`spawn`], where `try_pivot: false` takes the initramfs way even on a
/// root that could be pivoted away from (for its test).
fn spawn_entering(spec: &JailSpec, try_pivot: bool) -> io::Result<libc::pid_t> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let steps = plan_entering(spec, &top_mounts(&mountinfo), try_pivot)?;
    let process = ProcessPlan::new(spec);
    let program = cpath(&inside(Path::new("/"), spec.program)?)?;
    let argv: Vec<CString> = spec
        .args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // The vmm gets no environment: nothing on the host is its business.
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    std::fs::create_dir_all(spec.root)?;

    let pid = clone_jailed(spec.cgroup)?;
    if pid != 0 {
        return Ok(pid);
    }
    // Child: from here on only prepared system calls, then exec or exit.
    let result = run_steps(&steps).and_then(|()| prepare_process(spec, &process));
    match result {
        Ok(()) => {
            // SAFETY: argv/envp are NULL-terminated arrays of C strings.
            unsafe { libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr()) };
            report(b"exec", errno());
        }
        Err((what, e)) => report(what, e),
    }
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(127) }
}

/// /dev/null for a child's stdin.
pub fn dev_null() -> io::Result<std::fs::File> {
    std::fs::File::open("/dev/null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn spec<'a>(root: &'a Path, binds: &'a [Bind], args: &'a [String]) -> JailSpec<'a> {
        JailSpec {
            hostname: "web",
            root,
            program: Path::new("/bin/vmm"),
            args,
            binds,
            keep_fds: &[],
            stdin: 0,
            stdout: 1,
            stderr: 2,
            cgroup: None,
        }
    }

    #[test]
    fn plan_binds_each_file_at_its_own_path() {
        let binds = [
            Bind::device("/dev/kvm"),
            Bind::file("/mnt/config/guests/web.toml"),
            Bind::file("/mnt/config/web/bzImage"),
        ];
        let root = Path::new("/run/hv/jail/web");
        let targets = planned_targets(&spec(root, &binds, &[])).expect("plan");
        assert_eq!(
            targets,
            [
                "/run/hv/jail/web/dev/kvm",
                "/run/hv/jail/web/mnt/config/guests/web.toml",
                "/run/hv/jail/web/mnt/config/web/bzImage",
                "/run/hv/jail/web/bin/vmm",
            ]
            .map(PathBuf::from)
        );
        let steps = plan(&spec(root, &binds, &[]), &[]).expect("plan");
        let mkdirs = steps
            .iter()
            .filter(
                |s| matches!(s, Step::Mkdir(p) if p.as_bytes() == b"/run/hv/jail/web/mnt/config"),
            )
            .count();
        assert_eq!(mkdirs, 1, "shared parent directories are made once");
    }

    #[test]
    fn plan_refuses_escaping_paths() {
        let binds = [Bind::file("/mnt/config/../../etc/shadow")];
        assert!(plan(&spec(Path::new("/run/hv/jail/x"), &binds, &[]), &[]).is_err());
    }

    /// Runs busybox in a real jail. Needs root (namespaces, mounts) and
    /// /bin/busybox, as CI has; without them it fails, saying so.
    #[test]
    fn busybox_runs_jailed() {
        let busybox = Path::new("/bin/busybox");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root, "this test needs root (namespaces, mounts)");
        assert!(busybox.exists(), "this test needs /bin/busybox");
        let host = tempfile::tempdir().expect("tempdir");
        let root = host.path().join("jail");
        let secret = host.path().join("visible.txt");
        std::fs::write(&secret, "hello").expect("write");
        let (mut read, write) = std::io::pipe().expect("pipe");
        let binds = [Bind::file(&secret), Bind::device("/dev/null")];
        let script = format!(
            "echo pid=$$; echo host=$(hostname); cat {}; echo; ls /; \
             touch /x 2>/dev/null && echo writable; read c < /proc/1/comm; echo $c",
            secret.display()
        );
        let args = ["sh".to_string(), "-c".to_string(), script];
        let devnull = dev_null().expect("/dev/null");
        let spec = JailSpec {
            hostname: "web",
            root: &root,
            program: busybox,
            args: &args,
            binds: &binds,
            keep_fds: &[],
            stdin: devnull.as_raw_fd(),
            stdout: write.as_raw_fd(),
            stderr: write.as_raw_fd(),
            cgroup: None,
        };
        let pid = spawn(&spec).expect("spawn");
        drop(write);
        let mut out = String::new();
        read.read_to_string(&mut out).expect("read");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(
            out, "pid=1\nhost=web\nhello\nbin\ndev\nproc\ntmp\nbusybox\n",
            "jail output"
        );
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // The host side of the jail root stays an empty directory.
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
    }

    #[test]
    fn top_mounts_are_the_children_of_the_root_mount() {
        // PID 1 on the initramfs: rootfs is its own parent.
        let table = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                     20 1 0:20 / /proc rw - proc proc rw\n\
                     21 1 0:6 / /dev rw - devtmpfs devtmpfs rw\n\
                     22 21 0:21 / /dev/pts rw - devpts devpts rw\n\
                     23 1 8:3 / /mnt/my\\040config ro - vfat /dev/sda3 ro\n";
        assert_eq!(
            top_mounts(table),
            [b"proc".to_vec(), b"dev".to_vec(), b"mnt/my config".to_vec()]
        );
        assert!(top_mounts("").is_empty());
    }

    /// A jailed program sees only the jail's mounts and only the fds it was
    /// handed. Needs root and /bin/busybox, as CI has; fails without them.
    #[test]
    fn busybox_sees_only_its_mounts_and_fds() {
        sees_only_its_mounts_and_fds(true);
    }

    /// The same the way PID 1 on the initramfs enters the jail (move, chroot
    /// and detach the old root's mounts).
    #[test]
    fn busybox_sees_only_its_mounts_and_fds_without_pivot_root() {
        sees_only_its_mounts_and_fds(false);
    }

    fn sees_only_its_mounts_and_fds(try_pivot: bool) {
        let busybox = Path::new("/bin/busybox");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root, "this test needs root (namespaces, mounts)");
        assert!(busybox.exists(), "this test needs /bin/busybox");
        let host = tempfile::tempdir().expect("tempdir");
        let root = host.path().join("jail");
        let secret = host.path().join("visible.txt");
        std::fs::write(&secret, "hello").expect("write");
        // One fd handed on and one leaked without O_CLOEXEC, both above
        // anything the jail opens itself.
        let null = dev_null().expect("/dev/null");
        // SAFETY: duplicating an fd we own; the copies are closed below.
        let (kept, leaked) = unsafe {
            (
                libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100),
                libc::fcntl(null.as_raw_fd(), libc::F_DUPFD, 300),
            )
        };
        assert!(kept >= 100 && leaked >= 300);
        let (mut read, write) = std::io::pipe().expect("pipe");
        let binds = [Bind::file(&secret), Bind::device("/dev/null")];
        let script = "cut -d' ' -f5 /proc/self/mountinfo; echo --; \
                      for f in /proc/self/fd/*; do echo ${f##*/}; done; echo --; \
                      ulimit -n; ulimit -c";
        let args = ["sh".to_string(), "-c".to_string(), script.to_string()];
        let spec = JailSpec {
            hostname: "web",
            root: &root,
            program: busybox,
            args: &args,
            binds: &binds,
            keep_fds: &[kept],
            stdin: null.as_raw_fd(),
            stdout: write.as_raw_fd(),
            stderr: write.as_raw_fd(),
            cgroup: None,
        };
        let pid = spawn_entering(&spec, try_pivot).expect("spawn");
        drop(write);
        // SAFETY: closing the duplicates made above.
        unsafe {
            libc::close(kept);
            libc::close(leaked);
        }
        let mut out = String::new();
        read.read_to_string(&mut out).expect("read");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{out}"
        );
        let mut parts = out.split("--\n");
        let mounts: Vec<&str> = parts.next().unwrap_or_default().lines().collect();
        let expected = [
            "/".to_string(),
            secret.display().to_string(),
            "/dev/null".to_string(),
            "/bin/busybox".to_string(),
            "/proc".to_string(),
        ];
        assert_eq!(mounts, expected, "mounts in the jail:\n{out}");
        let fds: Vec<i32> = parts
            .next()
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().expect("fd number"))
            .collect();
        // 0-2, the kept fd, and the directory the shell reads the list
        // through (the lowest free number).
        assert!(fds.contains(&kept), "kept fd missing: {fds:?}");
        assert!(!fds.contains(&leaked), "leaked fd visible: {fds:?}");
        let others: Vec<i32> = fds
            .iter()
            .copied()
            .filter(|&fd| fd > 2 && fd != kept)
            .collect();
        assert!(
            others.len() <= 1 && others.iter().all(|&fd| fd == 3),
            "{fds:?}"
        );
        let limits: Vec<&str> = parts.next().unwrap_or_default().lines().collect();
        assert_eq!(limits, [(3 + 1 + VMM_OWN_FDS).to_string().as_str(), "0"]);
    }
}
