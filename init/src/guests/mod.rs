//! The guest table: each guest's definition, supervisor, taps, console
//! pipes and log, and how its vmm is started: jailed ([`jail`]) and
//! restarted by policy ([`supervisor`]).

pub mod disk;
pub mod jail;
pub mod provision;
pub mod supervisor;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvconfig::guest::DiskSource;
use hvconfig::GuestConfig;
use hvcontract::launch::Ids;
use hvcontract::Launch;

use self::jail::{Bind, JailSpec};
use self::supervisor::{Exit, State, Supervisor, Verdict, CRASH_LOOP_FAILURES, CRASH_LOOP_WINDOW};
use crate::boot::boot_medium::{self, BootMedium};
use crate::boot::console::{ConsoleLog, ConsoleOut, LineSplitter, CONSOLE_LOG_CAP};
use crate::boot::logger::Notice;
use crate::config_source::probe::DeviceCache;
use crate::host::cgroup;
use crate::host::net::{self, Netlink};

/// Fixed capacity of the guest table (bounded memory for PID 1): the
/// format's own limit, which host.toml's `guests` list cannot exceed.
pub const MAX_GUESTS: usize = hvconfig::MAX_GUESTS;
/// Guest number N runs as uid/gid UID_BASE + N.
pub const UID_BASE: u32 = 10_000;
pub const VMM_PATH: &str = "/bin/vmm";
pub const JAIL_DIR: &str = "/run/hv/jail";
pub const GUESTS_RUN_DIR: &str = "/run/hv/guests";
/// Reads of one output pipe per wakeup (epoll is level-triggered, so the
/// rest comes next round): one chatty guest cannot starve the others,
/// signals or the watchdog.
const MAX_READS_PER_WAKEUP: usize = 4;
/// Device nodes every vmm needs; the rest of /dev stays out of the jail.
const JAIL_DEVICES: [&str; 3] = ["/dev/kvm", "/dev/null", "/dev/urandom"];

struct Tap {
    name: String,
    file: File,
}

/// Where and what the host may not let a guest write.
pub struct StartContext<'a> {
    pub netlink: Option<&'a mut Netlink>,
    pub cgroup_base: Option<&'a Path>,
    /// The disks a guest may only read.
    pub boot_medium: &'a BootMedium,
    /// Block devices for LABEL= and PARTLABEL= disks, scanned once.
    pub devices: &'a mut DeviceCache,
    /// The mounted `[[mount]]` targets: disk image files live beneath them.
    pub data_mounts: &'a [PathBuf],
    /// host.toml's shutdown_timeout_s: the vmm must not stop its guest hard
    /// before init would.
    pub shutdown_timeout_s: u32,
    pub now: Instant,
}

/// What [`Guest::start`] did.
pub enum Start {
    /// The vmm runs: the caller watches its pipes.
    Spawned(Started),
    /// Disk images are being created first, on a thread: the caller
    /// watches [`Guest::provisioning_fd`], then calls
    /// [`Guest::provisioned`] and starts the guest again.
    Provisioning,
}

/// The read ends of a started vmm's output pipes.
pub struct Started {
    pub stdout: File,
    pub stderr: File,
}

pub struct Guest {
    pub config: GuestConfig,
    pub index: usize,
    pub sup: Supervisor,
    taps: Vec<Option<Tap>>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    out_lines: LineSplitter,
    err_lines: LineSplitter,
    log: Option<ConsoleLog>,
    /// The creation of missing disk images, while it runs.
    provisioning: Option<provision::Pending>,
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (r, w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // init reads from the event loop and must never block on a guest.
    // SAFETY: fcntl on a valid fd.
    unsafe {
        let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

impl Guest {
    pub fn new(config: GuestConfig, index: usize) -> Guest {
        let prefix = format!("[{}] ", config.name);
        let err_prefix = format!("[{}] vmm: ", config.name);
        let sup = Supervisor::new(config.lifecycle.restart);
        let taps = config.nets.iter().map(|_| None).collect();
        let log = Self::open_log(&config.name);
        Guest {
            config,
            index,
            sup,
            taps,
            stdout: None,
            stderr: None,
            out_lines: LineSplitter::new(&prefix),
            err_lines: LineSplitter::new(&err_prefix),
            log,
            provisioning: None,
        }
    }

    fn open_log(name: &str) -> Option<ConsoleLog> {
        let dir = Path::new(GUESTS_RUN_DIR).join(name);
        let opened = fs::create_dir_all(&dir)
            .and_then(|()| ConsoleLog::create(&dir.join("console.log"), CONSOLE_LOG_CAP));
        match opened {
            Ok(log) => Some(log),
            Err(e) => {
                log::warn!("guest {name}: console log in {}: {e}", dir.display());
                None
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn uid(&self) -> u32 {
        // The guest table holds at most MAX_GUESTS: far from overflowing.
        UID_BASE.saturating_add(u32::try_from(self.index).unwrap_or(u32::MAX))
    }

    /// One console line with the guest's state.
    pub fn status_line(&self) -> String {
        let state = self.sup.state();
        let pid = state.pid().map_or("-".to_string(), |p| p.to_string());
        let extra = match state {
            // Its start is due, but waits for its disk images.
            _ if self.provisioning.is_some() => String::new(),
            State::BackingOff { until } => {
                let wait = until.saturating_duration_since(Instant::now());
                // Rounded up, so a start due within the second says 1 s.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                format!(", next start in {secs} s")
            }
            _ => String::new(),
        };
        let name = if self.provisioning.is_some() {
            "creating disk images"
        } else {
            state.name()
        };
        format!(
            "guest {}: {name}, restarts {}, pid {pid}{extra}",
            self.config.name,
            self.sup.restarts()
        )
    }

    /// What to say when its vmm has exited and the supervisor has decided.
    pub fn exit_notice(&self, exit: Exit, verdict: Verdict) -> Notice {
        let name = self.name();
        match verdict {
            Verdict::RestartAfter(d) => Notice::Warn(format!(
                "guest {name}: {exit}; restarting in {} s",
                d.as_secs()
            )),
            Verdict::Stay => Notice::Info(format!(
                "guest {name}: {exit}; restart policy '{}': not restarting",
                self.config.lifecycle.restart
            )),
            Verdict::CrashLoop => Notice::Error(format!(
                "guest {name}: {exit}; {CRASH_LOOP_FAILURES} failures within {} s: crash loop, \
                 giving up on this guest",
                CRASH_LOOP_WINDOW.as_secs()
            )),
            Verdict::Invalid => Notice::Error(format!(
                "guest {name}: {exit}; not restarting: fix the definition (vmm --check) and reboot"
            )),
            Verdict::ShuttingDown => Notice::Info(format!("guest {name}: {exit}")),
        }
    }

    /// Creates the guest's taps (once; they outlive vmm restarts) and
    /// puts them on their bridges.
    fn ensure_taps(&mut self, nl: Option<&mut Netlink>) -> io::Result<()> {
        let mut nl = nl;
        for (i, (slot, net)) in self.taps.iter_mut().zip(&self.config.nets).enumerate() {
            if slot.is_some() {
                continue;
            }
            let name = net::tap_name(net.tap.as_deref(), &self.config.name, self.index, i);
            // The error names the tap already.
            let file = net::open_tap(&name)?;
            match nl.as_deref_mut() {
                Some(nl) => net::attach_tap(nl, &name, net.bridge.as_deref())
                    .map_err(|e| io::Error::new(e.kind(), format!("tap {name}: {e}")))?,
                None => return Err(io::Error::other("no netlink socket for taps")),
            }
            log::info!(
                "guest {}: tap {name}{}",
                self.config.name,
                net.bridge
                    .as_deref()
                    .map(|b| format!(" on bridge {b}"))
                    .unwrap_or_default()
            );
            *slot = Some(Tap { name, file });
        }
        Ok(())
    }

    /// Opens disk `i` for the vmm, as [`disk::open`] allows, locked. The
    /// error names the disk's number, its path and why it was refused.
    fn open_disk(&self, i: usize, ctx: &mut StartContext) -> io::Result<File> {
        let Some(d) = self.config.disks.get(i) else {
            return Err(io::Error::other("no such disk"));
        };
        let path: PathBuf = match &d.path {
            DiskSource::Path(p) => p.clone(),
            named => self.find_disk(named, ctx)?,
        };
        let mountinfo = fs::read_to_string(boot_medium::MOUNTINFO).unwrap_or_default();
        let rules = disk::Rules {
            boot_medium: ctx.boot_medium,
            data_mounts: ctx.data_mounts,
            mountinfo: &mountinfo,
            sys: Path::new(boot_medium::SYS_DIR),
        };
        disk::open(&path, d.read_only, &rules).map_err(|e| {
            let kind = match e {
                disk::DiskError::Open { ref error, .. } => error.kind(),
                _ => io::ErrorKind::PermissionDenied,
            };
            let named = match &d.path {
                DiskSource::Path(_) => String::new(),
                spec => format!(" ({spec})"),
            };
            io::Error::new(kind, format!("disk {}{named} refused: {e}", i + 1))
        })
    }

    fn find_disk(&self, spec: &DiskSource, ctx: &mut StartContext) -> io::Result<PathBuf> {
        let found = ctx
            .devices
            .find(spec)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("disk {e}")))?;
        match found {
            Some(dev) => Ok(dev.node),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("disk {spec}: no such device"),
            )),
        }
    }

    /// The images of `size_gib`/`base` disks that do not exist yet. An
    /// existing one is used as it is; smaller than size_gib, it is not
    /// grown (its partition table and file system would not follow).
    fn missing_images(&self, mounts: &[PathBuf]) -> io::Result<Vec<provision::Request>> {
        let mut missing = Vec::new();
        for (i, d) in self.config.disks.iter().enumerate() {
            let Some(p) = &d.provision else { continue };
            let DiskSource::Path(path) = &d.path else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "disk {} of {}: {} cannot be provisioned: only a file path can",
                        i + 1,
                        self.config.file.display(),
                        d.path
                    ),
                ));
            };
            match provision::existing_len(path, mounts) {
                Ok(Some(len)) => {
                    if let Some(size) = p.size_bytes().filter(|&s| s > len) {
                        log::info!(
                            "guest {}: disk {}: {} is {len} bytes, less than size_gib = {}                              ({size} bytes): used as it is, not grown (the guest's partition                              table and file system would not follow)",
                            self.config.name,
                            i + 1,
                            path.display(),
                            p.size_gib.unwrap_or_default()
                        );
                    }
                }
                Ok(None) => missing.push(provision::Request {
                    disk: i,
                    path: path.clone(),
                    provision: p.clone(),
                }),
                Err(e) => return Err(self.provision_error(i, &e)),
            }
        }
        Ok(missing)
    }

    fn provision_error(&self, i: usize, e: &provision::ProvisionError) -> io::Error {
        let kind = match e {
            provision::ProvisionError::Create { error, .. } => error.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(
            kind,
            format!(
                "disk {} of {}: cannot provision: {e}",
                i + 1,
                self.config.file.display()
            ),
        )
    }

    /// Whether disk images are being created for the next start.
    pub fn is_provisioning(&self) -> bool {
        self.provisioning.is_some()
    }

    /// Readable once the disk image creation has ended.
    pub fn provisioning_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.provisioning.as_ref().map(provision::Pending::fd)
    }

    /// Collects the ended creation: logs each image made, or returns the
    /// first failure, naming the disk and the definition.
    pub fn provisioned(&mut self) -> io::Result<()> {
        let Some(pending) = self.provisioning.take() else {
            return Ok(());
        };
        let Some(results) = pending.finish() else {
            return Err(io::Error::other("the disk provisioning thread failed"));
        };
        for (req, result) in results {
            let n = req.disk + 1;
            let name = &self.config.name;
            let path = req.path.display();
            let base = req
                .provision
                .base
                .as_ref()
                .map(|b| b.display().to_string())
                .unwrap_or_default();
            match result {
                Ok(provision::Outcome::Created { len, fill }) => {
                    let how = match fill {
                        provision::Fill::Blank => "blank, sparse".to_string(),
                        provision::Fill::Cloned => format!("a reflink clone of {base}"),
                        provision::Fill::Copied { bytes } => {
                            format!("a sparse copy of {base}, {bytes} bytes of data")
                        }
                    };
                    log::info!("guest {name}: disk {n}: created {path}, {len} bytes, {how}");
                }
                Ok(provision::Outcome::LostRace { len }) => log::info!(
                    "guest {name}: disk {n}: {path} ({len} bytes) was created meanwhile by                      another start; using it, dropping this copy"
                ),
                Ok(provision::Outcome::Existing { .. }) => {}
                Err(e) => return Err(self.provision_error(req.disk, &e)),
            }
        }
        Ok(())
    }

    /// Asks a running creation to stop (host shutdown).
    pub fn cancel_provisioning(&self) {
        if let Some(p) = &self.provisioning {
            p.cancel();
        }
    }

    /// Stops a running creation and waits for its thread, so its files
    /// on the data mounts are closed before they are unmounted.
    pub fn abandon_provisioning(&mut self) {
        if let Some(p) = self.provisioning.take() {
            p.cancel();
            let _ = p.finish();
        }
    }

    /// Starts the vmm, or first the creation of its missing disk images.
    pub fn start(&mut self, ctx: &mut StartContext) -> io::Result<Start> {
        if self.provisioning.is_some() {
            return Ok(Start::Provisioning);
        }
        let missing = self.missing_images(ctx.data_mounts)?;
        if !missing.is_empty() {
            let pending = provision::Pending::spawn(missing, ctx.data_mounts.to_vec())
                .map_err(|e| io::Error::new(e.kind(), format!("disk provisioning thread: {e}")))?;
            self.provisioning = Some(pending);
            return Ok(Start::Provisioning);
        }
        self.ensure_taps(ctx.netlink.as_deref_mut())?;
        let disks: Vec<File> = (0..self.config.disks.len())
            .map(|i| self.open_disk(i, ctx))
            .collect::<io::Result<_>>()?;
        let cgroup = match ctx.cgroup_base {
            Some(base) => Some(
                cgroup::guest_group(
                    base,
                    &self.config.name,
                    self.config.machine.memory_mib,
                    self.config.machine.vcpus,
                )
                .map_err(|e| io::Error::new(e.kind(), format!("cgroup: {e}")))?,
            ),
            None => None,
        };

        let mut launch = Launch::definition(&self.config.file);
        launch.disk_fds = disks.iter().map(AsRawFd::as_raw_fd).enumerate().collect();
        launch.tap_fds = self
            .taps
            .iter()
            .enumerate()
            .filter_map(|(i, tap)| tap.as_ref().map(|t| (i, t.file.as_raw_fd())))
            .collect();
        let id = self.uid();
        launch.ids = Some(Ids { uid: id, gid: id });
        launch.shutdown_timeout = Duration::from_secs(u64::from(ctx.shutdown_timeout_s));
        let keep = launch.inherited_fds();
        let args: Vec<String> = std::iter::once("vmm".to_string())
            .chain(launch.to_args())
            .collect();

        let binds = self.binds()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let null = jail::dev_null()?;
        let root = Path::new(JAIL_DIR).join(&self.config.name);
        let spec = JailSpec {
            hostname: &self.config.name,
            root: &root,
            program: Path::new(VMM_PATH),
            args: &args,
            binds: &binds,
            keep_fds: &keep,
            stdin: null.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            cgroup: cgroup.as_ref().map(|c| c.as_raw_fd()),
        };
        let pid = jail::spawn(&spec)?;
        // The child has its copies; init keeps only the read ends.
        drop((out_w, err_w, null, disks, cgroup));
        self.sup.spawned(pid, ctx.now);
        let tap_names: Vec<&str> = self
            .taps
            .iter()
            .flatten()
            .map(|t| t.name.as_str())
            .collect();
        log::debug!(
            "guest {}: vmm pid {pid}, uid {}, taps {tap_names:?}",
            self.config.name,
            self.uid()
        );
        Ok(Start::Spawned(Started {
            stdout: out_r,
            stderr: err_r,
        }))
    }

    /// The files the vmm may see, at their canonical paths.
    fn binds(&self) -> io::Result<Vec<Bind>> {
        let mut binds: Vec<Bind> = JAIL_DEVICES
            .iter()
            .filter(|d| Path::new(d).exists())
            .map(|d| Bind::device(*d))
            .collect();
        // The definition, then the kernel, initrd and cloud-init seed files
        // it names: the vmm reads each itself.
        let boot_files = self.config.boot_files();
        for file in
            std::iter::once(self.config.file.as_path()).chain(boot_files.iter().map(|f| f.path))
        {
            let canonical = fs::canonicalize(file)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
            binds.push(Bind::file(canonical));
        }
        Ok(binds)
    }

    /// Reads what the vmm wrote. Guest lines go to the console (prefixed)
    /// and raw to the console log; vmm log lines to the console only.
    /// Returns true at end of file.
    pub fn read_output(&mut self, stderr: bool, console: &mut ConsoleOut) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut lines = Vec::new();
        let mut eof = false;
        for _ in 0..MAX_READS_PER_WAKEUP {
            let pipe = if stderr { &self.stderr } else { &self.stdout };
            let Some(mut pipe) = pipe.as_ref() else {
                return true;
            };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if stderr {
                        self.err_lines.feed(data, &mut lines);
                    } else {
                        self.out_lines.feed(data, &mut lines);
                        if let Some(log) = &mut self.log {
                            if let Err(e) = log.append(data) {
                                log::warn!("guest {}: console log: {e}", self.config.name);
                                self.log = None;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            if lines.len() > buf.len() {
                console.write(&lines);
                lines.clear();
            }
        }
        if eof {
            if stderr {
                self.err_lines.flush(&mut lines);
                self.stderr = None;
            } else {
                self.out_lines.flush(&mut lines);
                self.stdout = None;
            }
        }
        console.write(&lines);
        eof
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::boot_medium::tests::LoopDevice;
    use std::io::Write;

    fn guest_with_disk(path: &Path, read_only: bool) -> Guest {
        let text =
            format!("[boot]\nkernel = \"k\"\n[[disk]]\npath = \"/x\"\nread_only = {read_only}\n");
        let mut config =
            hvconfig::parse_guest(Path::new("/cfg/guests/web.toml"), &text).expect("valid");
        // Set after parsing: the parser refuses '..', init must not rely on it.
        if let Some(disk) = config.disks.first_mut() {
            disk.path = DiskSource::Path(path.to_path_buf());
        }
        Guest {
            sup: Supervisor::new(config.lifecycle.restart),
            taps: Vec::new(),
            index: 0,
            stdout: None,
            stderr: None,
            out_lines: LineSplitter::new("[web] "),
            err_lines: LineSplitter::new("[web] vmm: "),
            log: None,
            provisioning: None,
            config,
        }
    }

    fn open(guest: &Guest, boot: &BootMedium) -> io::Result<File> {
        let mut devices = DeviceCache::new(Path::new("/nonexistent"), Path::new("/dev"));
        let mut ctx = StartContext {
            netlink: None,
            cgroup_base: None,
            boot_medium: boot,
            devices: &mut devices,
            data_mounts: &[],
            shutdown_timeout_s: 30,
            now: Instant::now(),
        };
        guest.open_disk(0, &mut ctx)
    }

    #[test]
    fn boot_medium_disks_open_only_read_only_whatever_the_path() {
        let lo = LoopDevice::new();
        let boot = lo.as_boot_medium();
        let name = lo.node.file_name().expect("name");
        let detour = Path::new("/dev/../dev").join(name);
        for path in [&lo.node, &detour] {
            let err = open(&guest_with_disk(path, false), &boot).expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
            assert_eq!(
                err.to_string(),
                format!(
                    "disk 1 refused: {}: is on the boot medium, which is never written; only \
                     read_only = true is allowed",
                    path.display()
                )
            );
        }
        // As a relative path would resolve from a config partition's
        // guests directory: never opened at all.
        let relative = Path::new("..").join("..").join("dev").join(name);
        let err = open(&guest_with_disk(&relative, false), &boot).expect_err("relative");
        assert_eq!(
            err.to_string(),
            format!(
                "disk 1 refused: {}: not an absolute path",
                relative.display()
            )
        );
        open(&guest_with_disk(&detour, true), &boot).expect("read-only is fine");
        open(&guest_with_disk(&detour, false), &BootMedium::default()).expect("another disk");
    }

    #[test]
    fn a_chatty_guest_is_read_in_bounded_slices() {
        let mut guest = guest_with_disk(Path::new("/x"), false);
        let (r, mut w) = pipe().expect("pipe");
        // Room for more than one wakeup's worth, so the writer never blocks.
        // SAFETY: fcntl on a valid fd.
        let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        assert!(size >= 1 << 18, "pipe size {size}");
        guest.stdout = Some(r);
        let line = [b'x'; 99];
        let lines = (256 << 10) / 100;
        for _ in 0..lines {
            w.write_all(&line)
                .and_then(|()| w.write_all(b"\n"))
                .expect("write");
        }
        let shown = tempfile::tempfile().expect("tempfile");
        let mut console = ConsoleOut::to(shown.try_clone().expect("clone"));
        let shown_len = || usize::try_from(shown.metadata().expect("stat").len()).expect("fits");
        assert!(!guest.read_output(false, &mut console));
        let per_line = "[web] ".len() + 100;
        let cap = MAX_READS_PER_WAKEUP * 16 * 1024;
        assert!(
            shown_len() <= cap / 100 * per_line,
            "{} bytes shown",
            shown_len()
        );
        assert!(shown_len() > 0);
        drop(w);
        let mut wakeups = 1;
        while !guest.read_output(false, &mut console) {
            wakeups += 1;
        }
        assert!(wakeups >= (256 << 10) / cap, "{wakeups} wakeups");
        assert_eq!(shown_len(), lines * per_line, "nothing lost");
        assert!(guest.stdout.is_none());
    }

    #[test]
    fn exits_are_told_as_the_end_to_end_tests_expect() {
        let guest = guest_with_disk(Path::new("/x"), false);
        let say = |code: i32, verdict| guest.exit_notice(Exit::from_code(code), verdict);
        assert_eq!(
            say(0, Verdict::Stay),
            Notice::Info(
                "guest web: guest powered off (exit 0); restart policy 'on-failure': \
                 not restarting"
                    .into()
            )
        );
        assert_eq!(
            say(3, Verdict::RestartAfter(std::time::Duration::from_secs(2))),
            Notice::Warn("guest web: guest rebooted (exit 3); restarting in 2 s".into())
        );
        assert_eq!(
            say(2, Verdict::Invalid),
            Notice::Error(
                "guest web: invalid definition or kernel (exit 2); not restarting: fix the \
                 definition (vmm --check) and reboot"
                    .into()
            )
        );
        assert_eq!(
            say(4, Verdict::CrashLoop).text(),
            "guest web: guest crashed (exit 4); 5 failures within 60 s: crash loop, giving up \
             on this guest"
        );
        assert_eq!(
            say(5, Verdict::ShuttingDown),
            Notice::Info("guest web: stopped by host (exit 5)".into())
        );
    }

    #[test]
    fn missing_labels_are_named() {
        let mut guest = guest_with_disk(Path::new("/x"), false);
        if let Some(disk) = guest.config.disks.first_mut() {
            disk.path = DiskSource::Label("nothere".into());
        }
        let err = open(&guest, &BootMedium::default()).expect_err("no device");
        assert_eq!(err.to_string(), "disk LABEL=nothere: no such device");
    }

    /// Starts `guest` with `mounts` as data mounts until it has to spawn
    /// (which a test cannot) or fails: the provisioning half of `start`.
    fn provision(guest: &mut Guest, mounts: &[PathBuf]) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let boot = BootMedium::default();
        let mut devices = DeviceCache::new(Path::new("/nonexistent"), Path::new("/dev"));
        let mut ctx = StartContext {
            netlink: None,
            cgroup_base: None,
            boot_medium: &boot,
            devices: &mut devices,
            data_mounts: mounts,
            shutdown_timeout_s: 30,
            now: Instant::now(),
        };
        match guest.start(&mut ctx) {
            Ok(Start::Provisioning) => {}
            Ok(Start::Spawned(_)) => panic!("spawned"),
            Err(e) => return Err(e),
        }
        assert!(guest.is_provisioning());
        assert_eq!(
            guest.status_line(),
            "guest web: creating disk images, restarts 0, pid -"
        );
        // A start asked for meanwhile does not start a second thread.
        assert!(matches!(guest.start(&mut ctx), Ok(Start::Provisioning)));
        let fd = guest.provisioning_fd().expect("fd");
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll"),
            1
        );
        let done = guest.provisioned();
        assert!(!guest.is_provisioning());
        done
    }

    fn provisioned_guest(disk: &str) -> Guest {
        let mut guest = guest_with_disk(Path::new("/x"), false);
        let text = format!("[boot]\nkernel = \"k\"\n[[disk]]\n{disk}");
        guest.config =
            hvconfig::parse_guest(Path::new("/cfg/guests/web.toml"), &text).expect("valid");
        guest
    }

    #[test]
    fn a_missing_image_is_created_before_the_start_and_then_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let img = dir.path().join("web.img");
        let mut guest = provisioned_guest(&format!("path = \"{}\"\nsize_gib = 2\n", img.display()));
        provision(&mut guest, &mounts).expect("created");
        assert_eq!(fs::metadata(&img).expect("stat").len(), 2 << 30);
        // The next start finds it and goes on to the disks (and fails
        // later, at the taps or the jail, which a test has not).
        assert!(guest.missing_images(&mounts).expect("stat").is_empty());
        let boot = BootMedium::default();
        let mut devices = DeviceCache::new(Path::new("/nonexistent"), Path::new("/dev"));
        let mut ctx = StartContext {
            netlink: None,
            cgroup_base: None,
            boot_medium: &boot,
            devices: &mut devices,
            data_mounts: &mounts,
            shutdown_timeout_s: 30,
            now: Instant::now(),
        };
        guest
            .open_disk(0, &mut ctx)
            .expect("the new image opens as a disk");
    }

    #[test]
    fn a_failed_creation_names_the_disk_and_the_definition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let base = dir.path().join("base.img");
        File::create(&base)
            .and_then(|f| f.set_len(2 << 30))
            .expect("base");
        let img = dir.path().join("web.img");
        let mut guest = provisioned_guest(&format!(
            "path = \"{}\"\nsize_gib = 1\nbase = \"{}\"\n",
            img.display(),
            base.display()
        ));
        let err = provision(&mut guest, &mounts).expect_err("too large");
        assert_eq!(
            err.to_string(),
            format!(
                "disk 1 of /cfg/guests/web.toml: cannot provision: base {}: is 2147483648 \
                 bytes, larger than size_gib = 1 (1073741824 bytes); raise size_gib or drop \
                 it to use the base's size",
                base.display()
            )
        );
        assert!(!img.exists());
        // Outside the data mounts it fails at once, before any thread.
        let mut guest = provisioned_guest("path = \"/srv/web.img\"\nsize_gib = 1\n");
        let boot = BootMedium::default();
        let mut devices = DeviceCache::new(Path::new("/nonexistent"), Path::new("/dev"));
        let mut ctx = StartContext {
            netlink: None,
            cgroup_base: None,
            boot_medium: &boot,
            devices: &mut devices,
            data_mounts: &mounts,
            shutdown_timeout_s: 30,
            now: Instant::now(),
        };
        let err = guest.start(&mut ctx).err().expect("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "disk 1 of /cfg/guests/web.toml: cannot provision: /srv/web.img: size_gib and \
                 base create an image only beneath a data mount ({})",
                dir.path().display()
            )
        );
        assert!(!guest.is_provisioning());
    }
}
