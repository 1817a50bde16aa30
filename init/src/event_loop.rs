//! The one event loop of PID 1: signals, power buttons and guest output
//! arrive through epoll; everything timed (restarts, config search,
//! watchdog, shutdown deadline) is driven by the wait's timeout.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvconfig::HostConfig;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::boot::boot_medium::{BootMedium, MOUNTINFO, SYS_DIR};
use crate::boot::boot_report::{self, BootReport, GuestProgress};
use crate::boot::cmdline::{ConfigSource, Options};
use crate::boot::power::PowerAction;
use crate::boot::signals::{self, SignalEvent};
use crate::boot::watchdog::Watchdog;
use crate::boot::{logger, power_button};
use crate::config_source::fetch::MIRROR_DIR;
use crate::config_source::fetch_thread::Pending;
use crate::config_source::partition::{self, ConfigMount, Loaded, CONFIG_DIR, DEV_DIR, SYS_BLOCK};
use crate::config_source::probe::DeviceCache;
use crate::guests::supervisor::{Action, Exit, Verdict, CRASH_LOOP_FAILURES, CRASH_LOOP_WINDOW};
use crate::guests::{ConsoleOut, Guest, StartContext, MAX_GUESTS};
use crate::host::net::{self, Netlink};
use crate::host::{cgroup, data_mounts};
use hvconfig::DeviceSource;

/// How long boot waits quietly for a slow USB/SD config device before
/// saying it is missing.
const CONFIG_WAIT: Duration = Duration::from_secs(15);
const CONFIG_POLL_FAST: Duration = Duration::from_millis(250);
/// After the wait, look for a hot-plugged stick this often.
const CONFIG_POLL_SLOW: Duration = Duration::from_secs(5);
/// After SIGKILL, how long to wait for the vmms to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Upper bound on one epoll wait, so time-driven work never starves.
const MAX_WAIT: Duration = Duration::from_secs(5);

const TOKEN_SIGNAL: u64 = 0;
const TOKEN_FETCH: u64 = 1;
const TOKEN_BUTTON: u64 = 1 << 16;
const TOKEN_GUEST: u64 = 1 << 32;

fn guest_token(index: usize, stderr: bool) -> u64 {
    TOKEN_GUEST | ((index as u64) << 1) | u64::from(stderr)
}

enum ConfigState {
    Searching {
        spec: DeviceSource,
        since: Instant,
        next: Instant,
        reported: bool,
        last_error: Option<String>,
    },
    Mounted(ConfigMount),
    /// `hv.config=http://...`: being fetched into RAM by a thread.
    Fetching(Pending),
    /// Fetched into a copy in RAM, laid out like the partition.
    Fetched,
    Unavailable,
}

struct Shutdown {
    action: PowerAction,
    deadline: Instant,
    killed_at: Option<Instant>,
}

pub struct Init {
    epoll: Epoll,
    signals: SignalFd,
    buttons: Vec<File>,
    watchdog: Option<Watchdog>,
    next_feed: Instant,
    netlink: Option<Netlink>,
    cgroup_base: Option<PathBuf>,
    config: ConfigState,
    host: HostConfig,
    data_mounts: Vec<PathBuf>,
    /// Block devices for data mounts and LABEL= disks, scanned when first
    /// needed after the config is read, not on every guest start.
    devices: DeviceCache,
    boot_medium: BootMedium,
    guests: heapless::Vec<Guest, MAX_GUESTS>,
    console: ConsoleOut,
    shutdown: Option<Shutdown>,
    boot_report: BootReport,
}

impl Init {
    /// `started`: time since boot when init began, for the boot report.
    pub fn new(opts: &Options, signals: SignalFd, epoll: Epoll, started: Duration) -> Init {
        let now = Instant::now();
        if let Err(e) = epoll.add(
            signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
        ) {
            log::error!("epoll: signalfd: {e}");
        }
        let buttons = power_button::open_all(Path::new("/dev/input"));
        for (i, b) in buttons.iter().enumerate() {
            let ev = EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_BUTTON + i as u64);
            if let Err(e) = epoll.add(b.as_fd(), ev) {
                log::error!("epoll: power button: {e}");
            }
        }
        let watchdog = Watchdog::open(Path::new("/dev/watchdog"));
        let cgroup_base = match cgroup::setup(Path::new(cgroup::CGROUP_ROOT)) {
            Ok(base) => Some(base),
            Err(e) => {
                log::error!("cgroups: {e}; guests run without resource limits");
                None
            }
        };
        let netlink = match Netlink::open() {
            Ok(nl) => Some(nl),
            Err(e) => {
                log::error!("netlink: {e}; no networking");
                None
            }
        };
        let config = match &opts.config {
            ConfigSource::Device(spec) => {
                log::info!("looking for the config partition {spec}");
                ConfigState::Searching {
                    spec: spec.clone(),
                    since: now,
                    next: now,
                    reported: false,
                    last_error: None,
                }
            }
            ConfigSource::Url(url) => match Pending::spawn(url, Path::new(MIRROR_DIR)) {
                Ok(pending) => {
                    let ev = EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_FETCH);
                    if let Err(e) = epoll.add(pending.fd(), ev) {
                        log::error!("epoll: config fetch: {e}");
                    }
                    ConfigState::Fetching(pending)
                }
                Err(e) => {
                    log::error!(
                        "hv.config={url}: cannot start fetching: {e}; running without guests"
                    );
                    ConfigState::Unavailable
                }
            },
        };
        Init {
            epoll,
            signals,
            buttons,
            watchdog,
            next_feed: now,
            netlink,
            cgroup_base,
            config,
            host: HostConfig::default(),
            data_mounts: Vec::new(),
            devices: DeviceCache::new(Path::new(SYS_BLOCK), Path::new(DEV_DIR)),
            boot_medium: BootMedium::default(),
            guests: heapless::Vec::new(),
            console: ConsoleOut::open(),
            shutdown: None,
            boot_report: BootReport::new(started),
        }
    }

    /// Runs until a shutdown has completed; returns what to do next.
    pub fn run(mut self) -> PowerAction {
        let mut events = [EpollEvent::empty(); 32];
        loop {
            let now = Instant::now();
            let wait = self
                .next_deadline(now)
                .saturating_duration_since(now)
                .min(MAX_WAIT);
            // Round up so a deadline is never missed by a millisecond.
            let ms = wait.as_millis().saturating_add(1).min(u128::from(u16::MAX)) as u16;
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(ms))
                .unwrap_or(0);
            for ev in events.iter().take(n) {
                self.dispatch(ev.data());
            }
            if let Some(action) = self.tick(Instant::now()) {
                self.finish_shutdown();
                return action;
            }
        }
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut next = now + MAX_WAIT;
        if self.watchdog.is_some() {
            next = next.min(self.next_feed);
        }
        if let ConfigState::Searching { next: try_at, .. } = &self.config {
            next = next.min(*try_at);
        }
        if let Some(s) = &self.shutdown {
            next = next.min(s.killed_at.map_or(s.deadline, |k| k + KILL_GRACE));
        }
        for g in &self.guests {
            if let Some(d) = g.sup.deadline() {
                next = next.min(d);
            }
        }
        next
    }

    fn dispatch(&mut self, token: u64) {
        if token == TOKEN_FETCH {
            self.fetch_done(Instant::now());
        } else if token == TOKEN_SIGNAL {
            while let Ok(Some(info)) = self.signals.read_signal() {
                match signals::classify(info.ssi_signo) {
                    SignalEvent::ChildExited => self.reap(),
                    SignalEvent::Shutdown(action) => self.begin_shutdown(action),
                    SignalEvent::Ignored => {}
                }
            }
        } else if token & TOKEN_GUEST != 0 {
            let index = ((token & !TOKEN_GUEST) >> 1) as usize;
            self.guest_output(index, token & 1 == 1);
        } else if token >= TOKEN_BUTTON {
            let i = (token - TOKEN_BUTTON) as usize;
            if self.buttons.get(i).is_some_and(power_button::pressed) {
                log::info!("power button pressed");
                self.begin_shutdown(PowerAction::PowerOff);
            }
        }
    }

    fn guest_output(&mut self, index: usize, stderr: bool) {
        let Some(guest) = self.guests.get_mut(index) else {
            return;
        };
        guest.read_output(stderr, &mut self.console);
        if !stderr && guest.sup.output_seen() {
            log::info!("{}", guest.status_line());
            self.report_boot();
        }
    }

    /// Logs the boot report once every autostart guest has run.
    fn report_boot(&mut self) {
        let guests = self.guests.iter().map(|g| GuestProgress {
            autostart: g.config.lifecycle.autostart,
            has_run: g.sup.has_run(),
        });
        if let Some(line) =
            self.boot_report
                .check(guests, logger::uptime(), boot_report::own_rss_kib())
        {
            log::info!("{line}");
        }
    }

    /// Reaps every exited child: PID 1 inherits all orphans.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::from_code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let now = Instant::now();
            let Some(guest) = self
                .guests
                .iter_mut()
                .find(|g| g.sup.state().pid() == Some(pid.as_raw()))
            else {
                log::debug!("reaped orphan {pid}: {exit}");
                continue;
            };
            // Show the vmm's last words before its exit status.
            guest.read_output(false, &mut self.console);
            guest.read_output(true, &mut self.console);
            let verdict = guest.sup.exited(exit, now);
            report_exit(guest, exit, verdict);
        }
    }

    fn tick(&mut self, now: Instant) -> Option<PowerAction> {
        if let Some(wd) = &self.watchdog {
            if now >= self.next_feed {
                wd.feed();
                self.next_feed = now + wd.interval();
            }
        }
        if let Some(s) = &mut self.shutdown {
            return shutdown_progress(s, &self.guests, now);
        }
        self.search_config(now);
        let mut now_running = false;
        for i in 0..self.guests.len() {
            let Some(guest) = self.guests.get_mut(i) else {
                continue;
            };
            match guest.sup.poll(now) {
                Action::Start => self.start_guest(i, now),
                Action::NowRunning => {
                    log::info!("{}", guest.status_line());
                    now_running = true;
                }
                Action::None => {}
            }
        }
        if now_running {
            self.report_boot();
        }
        None
    }

    fn start_guest(&mut self, index: usize, now: Instant) {
        let Some(guest) = self.guests.get_mut(index) else {
            return;
        };
        let mut ctx = StartContext {
            netlink: self.netlink.as_mut(),
            cgroup_base: self.cgroup_base.as_deref(),
            boot_medium: &self.boot_medium,
            devices: &mut self.devices,
            shutdown_timeout_s: self.host.shutdown_timeout_s,
            now,
        };
        match guest.start(&mut ctx) {
            Ok(started) => {
                for (file, stderr) in [(&started.stdout, false), (&started.stderr, true)] {
                    let ev = EpollEvent::new(EpollFlags::EPOLLIN, guest_token(index, stderr));
                    if let Err(e) = self.epoll.add(file.as_fd(), ev) {
                        log::error!("guest {}: epoll: {e}", guest.name());
                    }
                }
                guest.stdout = Some(started.stdout);
                guest.stderr = Some(started.stderr);
                log::info!("{}", guest.status_line());
            }
            Err(e) => {
                log::error!("guest {}: cannot start: {e}", guest.name());
                let verdict = guest.sup.exited(Exit::SpawnFailed, now);
                report_exit(guest, Exit::SpawnFailed, verdict);
            }
        }
    }

    fn search_config(&mut self, now: Instant) {
        let ConfigState::Searching {
            spec,
            since,
            next,
            reported,
            last_error,
        } = &mut self.config
        else {
            return;
        };
        if now < *next {
            return;
        }
        let waited = now.saturating_duration_since(*since);
        let found = partition::find_device(spec).map(|dev| {
            partition::mount_config(&dev, Path::new(CONFIG_DIR)).map_err(|e| {
                format!(
                    "config partition {} ({spec}): mount: {e}",
                    dev.node.display()
                )
            })
        });
        match found {
            Some(Ok(mount)) => {
                let fs = mount
                    .device
                    .fs
                    .as_ref()
                    .map_or("?".to_string(), |f| f.fstype.to_string());
                log::info!(
                    "config partition {spec} is {} ({fs}), mounted read-only on {CONFIG_DIR}",
                    mount.device.node.display()
                );
                let dir = mount.dir.clone();
                self.config = ConfigState::Mounted(mount);
                let loaded = partition::load(&dir);
                if !loaded.host_toml_found {
                    log::info!("config: no host.toml, using defaults");
                }
                let hint = format!("put NAME.toml files in {}/guests", dir.display());
                self.apply_config(loaded, &hint, now);
                return;
            }
            // Said once, not every poll.
            Some(Err(e)) if last_error.as_ref() != Some(&e) => {
                log::error!("{e}");
                *last_error = Some(e);
            }
            Some(Err(_)) | None => {}
        }
        if waited >= CONFIG_WAIT && !*reported {
            log::warn!(
                "no config partition {spec} found after {} s: running without guests; \
                 still looking every {} s (plug in the config stick)",
                CONFIG_WAIT.as_secs(),
                CONFIG_POLL_SLOW.as_secs()
            );
            *reported = true;
        }
        *next = now
            + if *reported {
                CONFIG_POLL_SLOW
            } else {
                CONFIG_POLL_FAST
            };
    }

    /// The network fetch has ended: use what it got, unless the machine
    /// is already going down.
    fn fetch_done(&mut self, now: Instant) {
        let state = std::mem::replace(&mut self.config, ConfigState::Unavailable);
        let ConfigState::Fetching(pending) = state else {
            self.config = state;
            return;
        };
        let _ = self.epoll.delete(pending.fd());
        let (loaded, remote) = pending.finish();
        if self.shutdown.is_some() {
            return;
        }
        let hint = match remote {
            Some(remote) => {
                let dir = remote.dir();
                log::info!("config: {} fetched into {}", remote.base, dir.display());
                self.config = ConfigState::Fetched;
                format!(
                    "list them in host.toml as guests = [\"NAME\"], served as {}guests/NAME.toml",
                    remote.base
                )
            }
            None => "fix hv.config= on the kernel command line".to_string(),
        };
        self.apply_config(loaded, &hint, now);
    }

    fn apply_config(&mut self, loaded: Loaded, hint: &str, now: Instant) {
        for e in &loaded.errors {
            log::error!("config: {e}");
        }
        self.host = loaded.host;
        if let Err(e) = nix::unistd::sethostname(&self.host.hostname) {
            log::warn!("hostname {}: {e}", self.host.hostname);
        }
        match self.netlink.as_mut() {
            Some(nl) => net::setup_host(nl, &self.host.bridges),
            None if !self.host.bridges.is_empty() => {
                log::error!("network: no netlink socket; bridges not set up");
            }
            None => {}
        }
        self.find_boot_medium();
        if !self.host.mounts.is_empty() {
            let devices = self.devices.devices();
            self.data_mounts =
                data_mounts::mount_all(&self.host.mounts, devices, &self.boot_medium);
        }

        if loaded.guests.is_empty() {
            log::warn!("config: no guests defined ({hint}); running idle");
        }
        for config in loaded.guests {
            let index = self.guests.len();
            let name = config.name.clone();
            let autostart = config.lifecycle.autostart;
            if self.guests.is_full() {
                log::error!(
                    "guest {name}: not started: the guest table is full ({MAX_GUESTS} guests at most)"
                );
                continue;
            }
            let mut guest = Guest::new(config, index);
            if autostart {
                guest.sup.request_start(now);
            } else {
                log::info!("guest {name}: autostart is off");
            }
            if self.guests.push(guest).is_err() {
                log::error!("guest {name}: not started: the guest table is full");
            }
        }
        // Start-up status: starting guests report themselves as they are
        // started, the others here.
        for i in 0..self.guests.len() {
            let due = self
                .guests
                .get_mut(i)
                .map(|g| g.sup.poll(now) == Action::Start);
            match due {
                Some(true) => self.start_guest(i, now),
                Some(false) => {
                    if let Some(g) = self.guests.get(i) {
                        log::info!("{}", g.status_line());
                    }
                }
                None => {}
            }
        }
    }

    /// Which disks guests and data mounts may only read: the one holding
    /// the mounted config partition; without one (config over HTTP), any
    /// disk flashed with the image, which may be the stick that booted.
    fn find_boot_medium(&mut self) {
        let mountinfo = std::fs::read_to_string(MOUNTINFO).unwrap_or_default();
        let mounted = matches!(self.config, ConfigState::Mounted(_));
        let devices = if mounted {
            &[][..]
        } else {
            self.devices.devices()
        };
        self.boot_medium = BootMedium::gather(Path::new(SYS_DIR), &mountinfo, devices);
        if mounted && self.boot_medium.is_empty() {
            log::error!("boot medium not found in {MOUNTINFO}: it is not protected from guests");
        }
    }

    fn begin_shutdown(&mut self, action: PowerAction) {
        if self.shutdown.is_some() {
            log::warn!(
                "{} requested again: killing the remaining guests now",
                action.verb()
            );
            for g in &self.guests {
                if let Some(pid) = g.sup.state().pid() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if let Some(s) = &mut self.shutdown {
                s.killed_at.get_or_insert(Instant::now());
            }
            return;
        }
        let timeout = Duration::from_secs(u64::from(self.host.shutdown_timeout_s));
        let running = self
            .guests
            .iter()
            .filter(|g| g.sup.state().pid().is_some())
            .count();
        log::info!(
            "{} requested: stopping {running} guest(s), waiting up to {} s",
            action.verb(),
            timeout.as_secs()
        );
        // All at once: the wait is bounded by the slowest guest, not the sum.
        for g in &mut self.guests {
            if let Some(pid) = g.sup.begin_shutdown() {
                if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
                    log::warn!("guest {}: SIGTERM: {e}", g.name());
                }
                log::info!("{}", g.status_line());
            }
        }
        self.shutdown = Some(Shutdown {
            action,
            deadline: Instant::now() + timeout,
            killed_at: None,
        });
    }

    fn finish_shutdown(self) {
        nix::unistd::sync();
        data_mounts::unmount_all(&self.data_mounts);
        if let ConfigState::Mounted(m) = &self.config {
            data_mounts::unmount_all(std::slice::from_ref(&m.dir));
        }
        if let Some(wd) = self.watchdog {
            wd.disarm();
        }
    }
}

/// Advances a shutdown; returns the action once every vmm is gone (or
/// the kill grace ran out).
fn shutdown_progress(s: &mut Shutdown, guests: &[Guest], now: Instant) -> Option<PowerAction> {
    let running: Vec<&Guest> = guests
        .iter()
        .filter(|g| g.sup.state().pid().is_some())
        .collect();
    if running.is_empty() {
        log::info!("all guests stopped");
        return Some(s.action);
    }
    match s.killed_at {
        None if now >= s.deadline => {
            let names: Vec<&str> = running.iter().map(|g| g.name()).collect();
            log::warn!(
                "guests still running at the shutdown timeout: {}; killing them",
                names.join(", ")
            );
            for g in &running {
                if let Some(pid) = g.sup.state().pid() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            s.killed_at = Some(now);
            None
        }
        Some(at) if now >= at + KILL_GRACE => {
            log::error!("vmm processes survived SIGKILL; going down anyway");
            Some(s.action)
        }
        _ => None,
    }
}

fn report_exit(guest: &Guest, exit: Exit, verdict: Verdict) {
    let name = guest.name();
    match verdict {
        Verdict::RestartAfter(d) => {
            log::warn!("guest {name}: {exit}; restarting in {} s", d.as_secs())
        }
        Verdict::Stay => log::info!(
            "guest {name}: {exit}; restart policy '{}': not restarting",
            guest.config.lifecycle.restart
        ),
        Verdict::CrashLoop => log::error!(
            "guest {name}: {exit}; {CRASH_LOOP_FAILURES} failures within {} s: crash loop, \
             giving up on this guest",
            CRASH_LOOP_WINDOW.as_secs()
        ),
        Verdict::Invalid => log::error!(
            "guest {name}: {exit}; not restarting: fix the definition (vmm --check) and reboot"
        ),
        Verdict::ShuttingDown => log::info!("guest {name}: {exit}"),
    }
    log::info!("{}", guest.status_line());
}
