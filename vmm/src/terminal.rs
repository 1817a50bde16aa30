//! Console input: when stdin is a terminal it is switched to raw mode so
//! every key (including Ctrl-C) goes to the guest, and restored on exit.

use std::io;
use std::os::fd::RawFd;

pub struct RawTerminal {
    saved: libc::termios,
}

const STDIN: RawFd = 0;

impl RawTerminal {
    /// `None` when stdin is not a terminal (the usual case under init).
    pub fn stdin() -> Option<Self> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with valid pointers;
        // termios is plain data.
        unsafe {
            if libc::isatty(STDIN) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(STDIN, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            // Keep output processing so the host terminal's newlines work.
            raw.c_oflag = saved.c_oflag;
            if libc::tcsetattr(STDIN, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }

    pub fn fd(&self) -> RawFd {
        STDIN
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into a valid buffer of the given length.
        let n = unsafe { libc::read(STDIN, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes saved in `stdin`.
        unsafe {
            libc::tcsetattr(STDIN, libc::TCSANOW, &self.saved);
        }
    }
}
