//! Host signals as file descriptor events. SIGTERM and SIGINT are blocked
//! in every thread (the mask is set before any thread exists and inherited)
//! and read from a signalfd by the main loop, so no thread is ever
//! interrupted by them and no handler races with the VM's state.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const SHUTDOWN_SIGNALS: &[i32] = &[libc::SIGTERM, libc::SIGINT];

pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` for the calling thread (and threads it creates
    /// later) and returns a non-blocking fd that reports them.
    pub fn block(signals: &[i32]) -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; all calls get valid pointers and
        // their results are checked.
        unsafe {
            let mut set: libc::sigset_t = mem::zeroed();
            libc::sigemptyset(&mut set);
            for &sig in signals {
                libc::sigaddset(&mut set, sig);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The next pending signal, if any.
    pub fn read(&self) -> io::Result<Option<i32>> {
        // SAFETY: signalfd_siginfo is plain data, and read gets a buffer of
        // exactly its size.
        unsafe {
            let mut info: libc::signalfd_siginfo = mem::zeroed();
            let size = mem::size_of::<libc::signalfd_siginfo>();
            let n = libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            );
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    _ => Err(e),
                };
            }
            Ok((n as usize == size).then_some(info.ssi_signo as i32))
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_blocked_signal() {
        // SIGUSR2 is not used by the test harness.
        let fd = SignalFd::block(&[libc::SIGUSR2]).unwrap();
        assert_eq!(fd.read().unwrap(), None);
        // SAFETY: raising a signal that is blocked in this thread; the
        // thread-directed variant keeps it from going to another thread.
        unsafe {
            libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2);
        }
        assert_eq!(fd.read().unwrap(), Some(libc::SIGUSR2));
        assert_eq!(fd.read().unwrap(), None);
    }
}
