//! The one event loop of PID 1: signals, power buttons and guest output
//! arrive through epoll; everything timed (restarts, config search,
//! watchdog, shutdown deadline) is driven by the wait's timeout. It only
//! wires: the config source ([`crate::config_source::Loader`]), the host
//! set-up ([`crate::host::host_setup`]), the guests' supervisors and the
//! shutdown ([`crate::boot::shutdown`]) decide; the loop carries it out.

mod token;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvconfig::HostConfig;
use nix::sys::epoll::{Epoll, EpollEvent, EpollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::boot::boot_report::{self, BootReport, GuestProgress};
use crate::boot::cmdline::Options;
use crate::boot::console::ConsoleOut;
use crate::boot::logger;
use crate::boot::power::PowerAction;
use crate::boot::power_button;
use crate::boot::shutdown::{Progress, Running, Shutdown};
use crate::boot::signals::{self, SignalEvent};
use crate::boot::watchdog::Watchdog;
use crate::config_source::fetch::MIRROR_DIR;
use crate::config_source::fetch_thread::Pending;
use crate::config_source::partition::{self, DEV_DIR, SYS_BLOCK};
use crate::config_source::probe::DeviceCache;
use crate::config_source::signed::{Trust, PUBKEY_PATH};
use crate::config_source::{ConfigSource, Event, Loaded, Loader};
use crate::guests::supervisor::{Action, Exit, Verdict};
use crate::guests::{Guest, Start, StartContext, MAX_GUESTS};
use crate::host::host_setup::{self, HostContext, HostState};
use crate::host::net::Netlink;
use crate::host::{cgroup, data_mounts};
use token::Token;

/// Upper bound on one epoll wait, so time-driven work never starves.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub struct Init {
    epoll: Epoll,
    signals: SignalFd,
    buttons: Vec<File>,
    watchdog: Option<Watchdog>,
    next_feed: Instant,
    netlink: Option<Netlink>,
    cgroup_base: Option<PathBuf>,
    config: Loader,
    /// Whether config trees must be signed (a key baked into the image).
    trust: Trust,
    /// The fetch of `hv.config=http://...`, while it runs.
    fetch: Option<Pending>,
    host: HostConfig,
    host_state: HostState,
    /// Block devices for data mounts and LABEL= disks, scanned when first
    /// needed after the config is read, not on every guest start.
    devices: DeviceCache,
    guests: heapless::Vec<Guest, MAX_GUESTS>,
    console: ConsoleOut,
    shutdown: Option<Shutdown>,
    boot_report: BootReport,
}

impl Init {
    /// `started`: time since boot when init began, for the boot report.
    pub fn new(opts: &Options, signals: SignalFd, epoll: Epoll, started: Duration) -> Init {
        let now = Instant::now();
        if let Err(e) = epoll.add(signals.as_fd(), Token::Signal.event()) {
            log::error!("epoll: signalfd: {e}");
        }
        let buttons = power_button::open_all(Path::new("/dev/input"));
        for (i, b) in buttons.iter().enumerate() {
            if let Err(e) = epoll.add(b.as_fd(), Token::Button(i).event()) {
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
        let trust = Trust::load(Path::new(PUBKEY_PATH));
        match &trust {
            Trust::Any => {}
            Trust::Key(_) => log::info!("config: must be signed by the key in {PUBKEY_PATH}"),
            Trust::Broken(why) => {
                log::error!("config: {PUBKEY_PATH}: {why}; no config can be verified, none is used")
            }
        }
        let (mut config, notice) = Loader::new(&opts.config, now);
        if let Some(notice) = notice {
            notice.log();
        }
        let mut fetch = None;
        if let ConfigSource::Url(url) = &opts.config {
            match Pending::spawn(url, Path::new(MIRROR_DIR), trust.clone()) {
                Ok(pending) => {
                    if let Err(e) = epoll.add(pending.fd(), Token::Fetch.event()) {
                        log::error!("epoll: config fetch: {e}");
                    }
                    fetch = Some(pending);
                }
                Err(e) => config.fetch_failed(url, &e).log(),
            }
        }
        Init {
            epoll,
            signals,
            buttons,
            watchdog,
            next_feed: now,
            netlink,
            cgroup_base,
            config,
            trust,
            fetch,
            host: HostConfig::default(),
            host_state: HostState::default(),
            devices: DeviceCache::new(Path::new(SYS_BLOCK), Path::new(DEV_DIR)),
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
            let ms = u16::try_from(wait.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
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
        if let Some(try_at) = self.config.deadline() {
            next = next.min(try_at);
        }
        if let Some(s) = &self.shutdown {
            next = next.min(s.deadline());
        }
        // A guest whose disk images are being made waits for its token:
        // its due start would otherwise spin the loop.
        for g in self.guests.iter().filter(|g| !g.is_provisioning()) {
            if let Some(d) = g.sup.deadline() {
                next = next.min(d);
            }
        }
        next
    }

    fn dispatch(&mut self, token: u64) {
        match Token::decode(token) {
            Some(Token::Fetch) => self.fetch_done(Instant::now()),
            Some(Token::Provision(index)) => self.provision_done(index, Instant::now()),
            Some(Token::Signal) => {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    match signals::classify(info.ssi_signo) {
                        SignalEvent::ChildExited => self.reap(),
                        SignalEvent::Shutdown(action) => self.begin_shutdown(action),
                        SignalEvent::Ignored => {}
                    }
                }
            }
            Some(Token::Guest { index, stderr }) => self.guest_output(index, stderr),
            Some(Token::Button(i)) if self.buttons.get(i).is_some_and(power_button::pressed) => {
                log::info!("power button pressed");
                self.begin_shutdown(PowerAction::PowerOff);
            }
            Some(Token::Button(_)) | None => {}
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
        if self.shutdown.is_some() {
            return self.shutdown_progress(now);
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
        if guest.is_provisioning() {
            return;
        }
        let mut ctx = StartContext {
            netlink: self.netlink.as_mut(),
            cgroup_base: self.cgroup_base.as_deref(),
            boot_medium: &self.host_state.boot_medium,
            devices: &mut self.devices,
            data_mounts: &self.host_state.data_mounts,
            shutdown_timeout_s: self.host.shutdown_timeout_s,
            now,
        };
        match guest.start(&mut ctx) {
            Ok(Start::Provisioning) => {
                if let Some(fd) = guest.provisioning_fd() {
                    if let Err(e) = self.epoll.add(fd, Token::Provision(index).event()) {
                        log::error!("guest {}: epoll: {e}", guest.name());
                    }
                }
                log::info!("{}", guest.status_line());
            }
            Ok(Start::Spawned(started)) => {
                for (file, stderr) in [(&started.stdout, false), (&started.stderr, true)] {
                    let token = Token::Guest { index, stderr };
                    if let Err(e) = self.epoll.add(file.as_fd(), token.event()) {
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

    /// A guest's disk images are made (or failed): start it, unless the
    /// host is going down.
    fn provision_done(&mut self, index: usize, now: Instant) {
        let Some(guest) = self.guests.get_mut(index) else {
            return;
        };
        if let Some(fd) = guest.provisioning_fd() {
            let _ = self.epoll.delete(fd);
        }
        match guest.provisioned() {
            Ok(()) if self.shutdown.is_none() => self.start_guest(index, now),
            Ok(()) => {}
            Err(e) => {
                log::error!("guest {}: cannot start: {e}", guest.name());
                let verdict = guest.sup.exited(Exit::SpawnFailed, now);
                report_exit(guest, Exit::SpawnFailed, verdict);
            }
        }
    }

    fn search_config(&mut self, now: Instant) {
        let Some(spec) = self.config.due(now).cloned() else {
            return;
        };
        let found = partition::look(&spec, &self.trust);
        let events = self.config.looked(found, now);
        self.config_events(events, now);
    }

    /// The network fetch has ended: use what it got, unless the machine
    /// is already going down.
    fn fetch_done(&mut self, now: Instant) {
        let Some(pending) = self.fetch.take() else {
            return;
        };
        let _ = self.epoll.delete(pending.fd());
        let (loaded, remote) = pending.finish();
        if self.shutdown.is_some() {
            self.config.abandon();
            return;
        }
        let events = self.config.fetched(loaded, remote.as_ref());
        self.config_events(events, now);
    }

    fn config_events(&mut self, events: Vec<Event>, now: Instant) {
        for event in events {
            match event {
                Event::Log(notice) => notice.log(),
                Event::Loaded { loaded, hint } => self.apply_config(loaded, &hint, now),
            }
        }
    }

    fn apply_config(&mut self, loaded: Loaded, hint: &str, now: Instant) {
        for e in &loaded.errors {
            log::error!("config: {e}");
        }
        self.host = loaded.host;
        self.host_state = host_setup::apply(
            &self.host,
            HostContext {
                netlink: self.netlink.as_mut(),
                devices: &mut self.devices,
                config_mounted: self.config.mounted().is_some(),
                guest_disks: loaded
                    .guests
                    .iter()
                    .flat_map(|g| g.disks.iter().map(|d| d.path.clone()))
                    .collect(),
            },
        );

        if loaded.guests.is_empty() {
            log::warn!("config: no guests defined ({hint}); running idle");
        }
        for config in loaded.guests {
            self.add_guest(config, now);
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

    fn add_guest(&mut self, config: hvconfig::GuestConfig, now: Instant) {
        let index = self.guests.len();
        let name = config.name.clone();
        if self.guests.is_full() {
            log::error!(
                "guest {name}: not started: the guest table is full ({MAX_GUESTS} guests at most)"
            );
            return;
        }
        let autostart = config.lifecycle.autostart;
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

    fn begin_shutdown(&mut self, action: PowerAction) {
        let now = Instant::now();
        if self.shutdown.is_some() {
            let running = running(&self.guests);
            let progress = self
                .shutdown
                .as_mut()
                .map(|s| s.again(action, &running, now));
            if let Some(progress) = progress {
                self.shutdown_step(progress);
            }
            return;
        }
        let timeout = Duration::from_secs(u64::from(self.host.shutdown_timeout_s));
        let (shutdown, notice) = Shutdown::begin(action, timeout, running(&self.guests).len(), now);
        notice.log();
        for g in &mut self.guests {
            g.cancel_provisioning();
            if let Some(pid) = g.sup.begin_shutdown() {
                if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
                    log::warn!("guest {}: SIGTERM: {e}", g.name());
                }
                log::info!("{}", g.status_line());
            }
        }
        self.shutdown = Some(shutdown);
    }

    /// Advances a shutdown; returns the action once every vmm is gone (or
    /// the kill grace ran out).
    fn shutdown_progress(&mut self, now: Instant) -> Option<PowerAction> {
        let running = running(&self.guests);
        let progress = self.shutdown.as_mut()?.progress(&running, now);
        self.shutdown_step(progress)
    }

    fn shutdown_step(&mut self, progress: Progress) -> Option<PowerAction> {
        match progress {
            Progress::Waiting => None,
            Progress::Kill(pids, notice) => {
                notice.log();
                for pid in pids {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                None
            }
            Progress::Done(action, notice) => {
                notice.log();
                Some(action)
            }
        }
    }

    fn finish_shutdown(mut self) {
        for g in &mut self.guests {
            g.abandon_provisioning();
        }
        nix::unistd::sync();
        data_mounts::unmount_all(&self.host_state.data_mounts);
        if let Some(m) = self.config.mounted() {
            data_mounts::unmount_all(std::slice::from_ref(&m.dir));
        }
        if let Some(wd) = self.watchdog {
            wd.disarm();
        }
    }
}

/// The vmms still running, by guest name and pid.
fn running(guests: &[Guest]) -> Vec<Running<'_>> {
    guests
        .iter()
        .filter_map(|g| {
            g.sup.state().pid().map(|pid| Running {
                name: g.name(),
                pid,
            })
        })
        .collect()
}

fn report_exit(guest: &Guest, exit: Exit, verdict: Verdict) {
    guest.exit_notice(exit, verdict).log();
    log::info!("{}", guest.status_line());
}
