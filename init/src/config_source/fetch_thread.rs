//! Runs the network configuration fetch beside the event loop, which
//! must keep answering signals, the power button and the watchdog while
//! a server is down for minutes. The thread's end is seen by epoll: it
//! holds the write end of a pipe, and dropping it makes the read end
//! readable.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, RawFd};
use std::path::Path;
use std::thread::{self, JoinHandle};

use hvconfig::{ConfigError, HostConfig};

use crate::config_source::fetch::{self, Backoff, Remote};
use crate::config_source::signed::Trust;
use crate::config_source::Loaded;

/// A fetch in progress.
pub struct Pending {
    done: File,
    thread: JoinHandle<(Loaded, Option<Remote>)>,
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// What the fetch gives when the `hv.config=` URL itself is unusable.
fn bad_source(message: String) -> Loaded {
    Loaded {
        host: HostConfig::default(),
        guests: Vec::new(),
        errors: vec![ConfigError::new(Path::new("hv.config"), None, message)],
        host_toml_found: false,
        integrity: crate::config_source::Integrity::default(),
    }
}

/// The whole fetch, run on the thread: the URL, then the files.
pub fn run(
    source: &str,
    mirror_root: &Path,
    backoff: Backoff,
    trust: &Trust,
) -> (Loaded, Option<Remote>) {
    let base = match fetch::resolve_source(source, backoff) {
        Ok(base) => base,
        Err(e) => return (bad_source(e.to_string()), None),
    };
    let mut remote = Remote::new(&base, mirror_root);
    remote.backoff = backoff;
    log::info!(
        "config: fetching {}host.toml into {}",
        remote.base,
        remote.dir().display()
    );
    (fetch::fetch_all(&remote, trust), Some(remote))
}

impl Pending {
    /// Starts fetching. The thread inherits init's blocked signal mask,
    /// so signals still reach the signalfd and nothing else.
    pub fn spawn(source: &str, mirror_root: &Path, trust: Trust) -> io::Result<Pending> {
        let (done, writer) = pipe()?;
        let source = source.to_string();
        let root = mirror_root.to_path_buf();
        let thread = thread::Builder::new()
            .name("config-fetch".into())
            .spawn(move || {
                let result = run(&source, &root, fetch::BACKOFF, &trust);
                drop(writer);
                result
            })?;
        Ok(Pending { done, thread })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// The result, once the fd has become readable.
    pub fn finish(self) -> (Loaded, Option<Remote>) {
        match self.thread.join() {
            Ok(result) => result,
            // Unreachable with panic=abort; in tests it fails loudly.
            Err(_) => (bad_source("the fetch thread failed".to_string()), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_source::test_server::{Reply, Site};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn wait_readable(pending: &Pending) -> bool {
        let mut fds = [PollFd::new(pending.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(10_000u16)).unwrap_or(0) == 1
    }

    #[test]
    fn the_fd_wakes_the_loop_when_the_thread_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pending = Pending::spawn("http://h:0/", dir.path(), Trust::Any).expect("spawn");
        assert!(wait_readable(&pending));
        let (loaded, remote) = pending.finish();
        assert!(remote.is_none());
        let e = loaded.errors.first().expect("error").to_string();
        assert!(e.starts_with("hv.config: http://h:0/: port"), "{e}");
    }

    #[test]
    fn fetches_in_the_background() {
        let site = Site::default();
        site.put(
            "/cfg/host.toml",
            Reply::Body(b"guests = [\"a\"]\n".to_vec()),
        );
        site.put(
            "/cfg/guests/a.toml",
            Reply::Body(b"[boot]\nkernel = \"a/bzImage\"\n".to_vec()),
        );
        site.put("/cfg/guests/a/bzImage", Reply::Body(b"kernel".to_vec()));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let pending = Pending::spawn(
            &format!("http://127.0.0.1:{port}/cfg/"),
            dir.path(),
            Trust::Any,
        )
        .expect("spawn");
        assert!(wait_readable(&pending));
        let (loaded, remote) = pending.finish();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(remote.expect("remote").dir(), dir.path().join("cfg/"));
        let guest = loaded.guests.first().expect("guest");
        assert_eq!(
            guest.boot.kernel().expect("kernel"),
            dir.path().join("cfg/guests/a/bzImage")
        );
        assert!(guest.boot.kernel().expect("kernel").is_file());
    }
}
