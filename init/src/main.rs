//! hv-init: PID 1 of the hypervisor image.
//!
//! Mounts the kernel file systems, finds the config partition, sets up
//! the host network, and runs one jailed vmm per guest, restarting them
//! by policy, until a power button, Ctrl-Alt-Del or signal shuts down.
//! PID 1 must never exit or panic: every error is logged and lived with.

#![warn(clippy::indexing_slicing)]

mod boot;
mod config_source;
mod event_loop;
mod guests;
mod host;

use std::io::Write;

use nix::sys::epoll::{Epoll, EpollCreateFlags};

fn banner() -> String {
    format!(
        "hv-init {} starting (pid {})\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

/// Makes sure fds 0-2 are open, on the console if possible. The kernel
/// opens /dev/console for init only if the initramfs has the node; fds
/// left closed would otherwise be handed out to the first files opened
/// and then clobbered as a child's stdio. Returns true if it had to.
fn ensure_std_fds() -> bool {
    // SAFETY: F_GETFD on a possibly closed fd has no side effects.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return false;
    }
    // SAFETY: plain open/dup2/close on fds this process owns.
    unsafe {
        let mut fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        }
        if fd < 0 {
            return false;
        }
        for target in 0..3 {
            if fd != target {
                libc::dup2(fd, target);
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    true
}

/// PID 1 has nowhere to go: if set-up fails this badly, idle forever
/// (exiting would panic the kernel) and let the operator power-cycle.
fn idle_forever() -> ! {
    loop {
        nix::unistd::pause();
    }
}

fn main() {
    let started = boot::logger::uptime();
    let banner = banner();
    let _ = std::io::stdout().write_all(banner.as_bytes());
    let mounts = boot::early_mounts::mount_all();
    if ensure_std_fds() {
        let _ = std::io::stdout().write_all(banner.as_bytes());
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let opts = boot::cmdline::parse(&cmdline);
    boot::logger::init(if opts.debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    for m in &mounts {
        if let Err(e) = m.result {
            log::error!("mount {}: {e}", m.target);
        }
    }
    for w in &opts.warnings {
        log::warn!("kernel command line: {w}");
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    boot::power::route_ctrl_alt_del_to_init();

    let signals = match boot::signals::open() {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("signalfd: {e}; cannot supervise");
            idle_forever();
        }
    };
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(ep) => ep,
        Err(e) => {
            log::error!("epoll: {e}; cannot supervise");
            idle_forever();
        }
    };
    let init = event_loop::Init::new(&opts, signals, epoll, started);
    let action = init.run();
    boot::power::finish(action);
}
