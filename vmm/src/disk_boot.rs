//! Booting what the guest's first disk holds ([`crate::boot_disk`] finds
//! it). The disk is hostile input, so the search runs on a thread of its
//! own under a seccomp filter that allows `pread64` on that disk and
//! memory management, nothing else (no open, no write, no exec), after
//! the privilege drop. What it found comes back as bytes, and the loaders
//! read them from sealed memfds exactly as they read kernel files.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::thread;

use crate::boot_disk::{self, BootFiles, DiskFile, Limits};
use crate::seccomp::{self, ThreadKind};

/// Why the disk could not be searched. `Search` is the disk's fault; the
/// rest are the host's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Search(boot_disk::Error),
    #[error("cannot size the disk: {0}")]
    Size(io::Error),
    #[error("boot loader thread: {0}")]
    Thread(io::Error),
    #[error("boot loader thread died")]
    ThreadDied,
    #[error("boot loader seccomp filter: {0}")]
    Seccomp(seccomp::Error),
    #[error("memfd for the {what}: {source}")]
    Memfd {
        what: &'static str,
        source: io::Error,
    },
}

/// The kernel and initrd found on the disk, as files the loaders read,
/// and the command line the distribution gave them.
pub struct Found {
    pub kernel: File,
    pub initrd: Option<File>,
    pub cmdline: String,
    /// Where they were found, for the log.
    pub found: String,
}

/// Searches `disk` for a kernel under its own filter (none when
/// `confine` is false: `--no-seccomp`).
pub fn find(disk: File, limits: Limits, confine: bool) -> Result<Found, Error> {
    let fd = disk.as_raw_fd();
    // Its size is taken here, where fstat and lseek are still allowed.
    let disk = DiskFile::new(disk).map_err(Error::Size)?;
    let filter = match confine {
        true => Some(
            seccomp::worker_filter(
                ThreadKind::BootLoader,
                &seccomp::WorkerFds {
                    disk: Some(fd),
                    write: vec![libc::STDERR_FILENO],
                    ..Default::default()
                },
            )
            .map_err(Error::Seccomp)?,
        ),
        false => None,
    };
    let search = thread::Builder::new()
        .name("boot-loader".into())
        .spawn(move || {
            if let Some(filter) = &filter {
                seccompiler::apply_filter(filter)
                    .map_err(|e| Error::Thread(io::Error::other(e.to_string())))?;
            }
            // The thread keeps the disk: it is closed (an allowed `close`)
            // when the search is over.
            boot_disk::find_boot(Rc::new(disk), &limits).map_err(Error::Search)
        })
        .map_err(Error::Thread)?;
    let files: BootFiles = search.join().map_err(|_| Error::ThreadDied)??;
    Ok(Found {
        kernel: memfd("kernel", &files.kernel)?,
        initrd: files
            .initrd
            .as_deref()
            .map(|initrd| memfd("initrd", initrd))
            .transpose()?,
        cmdline: files.cmdline,
        found: files.found,
    })
}

/// A sealed, rewound memfd holding `bytes`.
fn memfd(what: &'static str, bytes: &[u8]) -> Result<File, Error> {
    let fail = |source| Error::Memfd { what, source };
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name and plain flags; the fd returned is
    // checked and owned by the File below.
    let fd = unsafe { libc::memfd_create(c"hv-boot".as_ptr(), flags) };
    if fd < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else
    // owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes).map_err(fail)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an fd we own, with an integer argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    file.rewind().map_err(fail)?;
    Ok(file)
}
