//! Creating a guest's disk image on its first start, as `size_gib` and
//! `base` of its `[[disk]]` ask. An existing image is never touched: not
//! resized, not re-copied, not truncated.
//!
//! Crash safety: the new image is an `O_TMPFILE` inode in the target's
//! directory, filled (reflinked with `FICLONE`, or copied sparsely with
//! `SEEK_DATA`/`SEEK_HOLE` and `copy_file_range`, then sized with
//! `ftruncate`), fsynced, and only then given its name with `linkat`,
//! which fails if the name exists; the directory is fsynced last. A power
//! loss or an error on the way leaves no name at all (the unnamed inode is
//! freed), never a half-copied disk under the real one, and of two
//! creators racing for one name the second finds it taken and drops its
//! copy.
//!
//! Every path is opened beneath its data mount the way [`disk`] opens
//! disks (no symlink, no `..`), the base too, under a read lock so no
//! guest writes it while it is copied.
//!
//! A copy of a large base takes minutes, and init is PID 1: the work runs
//! on a thread ([`Pending`]), like the config fetch, and the event loop
//! learns of its end through a pipe.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use hvconfig::guest::Provision;

use super::disk::{self, DiskError};

/// One `copy_file_range` call at most: a cancel is seen between two.
const CHUNK: usize = 64 << 20;
/// The read/write fallback's buffer.
const BUF: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "{}: size_gib and base create an image only beneath a data mount ({})",
        .path.display(), mounts_list(.mounts)
    )]
    NotBeneath { path: PathBuf, mounts: Vec<PathBuf> },
    #[error(
        "base {}: not beneath a data mount ({}); a base is read from there only",
        .path.display(), mounts_list(.mounts)
    )]
    BaseNotBeneath { path: PathBuf, mounts: Vec<PathBuf> },
    #[error("{}: leaves its data mount {} (a symlink or '..' on the way)", .path.display(), .mount.display())]
    Escapes { path: PathBuf, mount: PathBuf },
    #[error("{}: directory {}: {error}", .path.display(), .dir.display())]
    Dir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{}: {error}", .path.display())]
    Stat {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("base {0}")]
    Base(#[source] DiskError),
    #[error("base {}: is empty", .0.display())]
    BaseEmpty(PathBuf),
    #[error(
        "base {}: is {base_len} bytes, larger than size_gib = {size_gib} ({} bytes); \
         raise size_gib or drop it to use the base's size",
        .base.display(), u64::from(*.size_gib) << 30
    )]
    BaseTooLarge {
        base: PathBuf,
        base_len: u64,
        size_gib: u32,
    },
    #[error(
        "{}: the data file system does not support unnamed files (O_TMPFILE), which a \
         crash-safe creation needs; create the image by hand: {error}",
        .path.display()
    )]
    NoTmpfile {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{}: creating: {step}: {error}", .path.display())]
    Create {
        path: PathBuf,
        step: &'static str,
        #[source]
        error: io::Error,
    },
    #[error("{}: creation cancelled: the host is shutting down", .0.display())]
    Cancelled(PathBuf),
}

fn mounts_list(mounts: &[PathBuf]) -> String {
    if mounts.is_empty() {
        return "host.toml mounts none".to_string();
    }
    let names: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
    names.join(", ")
}

/// One image to create, if missing.
#[derive(Clone, Debug)]
pub struct Request {
    /// The guest's disk number (0-based), for messages.
    pub disk: usize,
    pub path: PathBuf,
    pub provision: Provision,
}

/// How a new image got its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// All hole: `size_gib` and no base.
    Blank,
    /// Shared extents of the base (`FICLONE`): instant, no space used.
    Cloned,
    /// The base's data ranges copied; `bytes` is how much was data.
    Copied { bytes: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The image was there already and is used as it is.
    Existing {
        len: u64,
    },
    Created {
        len: u64,
        fill: Fill,
    },
    /// Another creator gave the name first; its image is used, this copy
    /// dropped.
    LostRace {
        len: u64,
    },
}

/// The length of `path`, beneath its data mount, or `None` if there is
/// no such file yet. Any other problem (a symlink, a missing directory)
/// is an error here, before anything is created.
pub fn existing_len(path: &Path, mounts: &[PathBuf]) -> Result<Option<u64>, ProvisionError> {
    let (mount, rel) = beneath(path, mounts)?;
    let anchor = disk::open_mount(mount).map_err(|error| stat_err(path, mount, error))?;
    match disk::open_beneath(
        anchor.as_raw_fd(),
        rel,
        libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
    ) {
        Ok(fd) => {
            let meta = File::from(fd)
                .metadata()
                .map_err(|error| stat_err(path, mount, error))?;
            Ok(Some(meta.len()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(error) => Err(stat_err(path, mount, error)),
    }
}

fn stat_err(path: &Path, mount: &Path, error: io::Error) -> ProvisionError {
    match error.raw_os_error() {
        Some(libc::ELOOP | libc::EXDEV) => ProvisionError::Escapes {
            path: path.to_path_buf(),
            mount: mount.to_path_buf(),
        },
        _ => ProvisionError::Stat {
            path: path.to_path_buf(),
            error,
        },
    }
}

fn beneath<'p>(
    path: &'p Path,
    mounts: &'p [PathBuf],
) -> Result<(&'p Path, &'p Path), ProvisionError> {
    disk::beneath_data_mount(path, mounts).ok_or_else(|| ProvisionError::NotBeneath {
        path: path.to_path_buf(),
        mounts: mounts.to_vec(),
    })
}

/// Creates the image `req` asks for unless it exists. `cancel` stops a
/// copy between two chunks.
pub fn ensure(
    req: &Request,
    mounts: &[PathBuf],
    cancel: &AtomicBool,
) -> Result<Outcome, ProvisionError> {
    if let Some(len) = existing_len(&req.path, mounts)? {
        return Ok(Outcome::Existing { len });
    }
    let staged = Staged::new(req, mounts)?;
    let fill = staged.fill(cancel)?;
    staged.commit(fill)
}

/// A new image being made: an unnamed file in the target's directory.
pub struct Staged {
    path: PathBuf,
    name: PathBuf,
    dir: File,
    file: File,
    base: Option<(PathBuf, File, u64)>,
    len: u64,
}

impl Staged {
    /// Opens the directory, the base, and the unnamed file, and decides
    /// the size; nothing is named yet.
    pub fn new(req: &Request, mounts: &[PathBuf]) -> Result<Staged, ProvisionError> {
        let path = &req.path;
        let (mount, rel) = beneath(path, mounts)?;
        let (parent, name) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => (p, Path::new(n)),
            _ => {
                return Err(ProvisionError::NotBeneath {
                    path: path.clone(),
                    mounts: mounts.to_vec(),
                })
            }
        };
        let dir_path = mount.join(parent);
        let dir_err = |error: io::Error| match error.raw_os_error() {
            Some(libc::ELOOP | libc::EXDEV) => ProvisionError::Escapes {
                path: path.clone(),
                mount: mount.to_path_buf(),
            },
            _ => ProvisionError::Dir {
                path: path.clone(),
                dir: dir_path.clone(),
                error,
            },
        };
        let anchor = disk::open_mount(mount).map_err(dir_err)?;
        let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let dir = if parent.as_os_str().is_empty() {
            disk::openat(anchor.as_raw_fd(), Path::new("."), dir_flags)
        } else {
            disk::open_beneath(anchor.as_raw_fd(), parent, dir_flags)
        }
        .map_err(dir_err)?;
        let dir = File::from(dir);

        let base = match &req.provision.base {
            Some(b) => Some(open_base(b, mounts)?),
            None => None,
        };
        let size = req.provision.size_bytes();
        let len = match (&base, size) {
            (Some((b, _, base_len)), Some(size)) if *base_len > size => {
                return Err(ProvisionError::BaseTooLarge {
                    base: b.clone(),
                    base_len: *base_len,
                    size_gib: req.provision.size_gib.unwrap_or_default(),
                })
            }
            (_, Some(size)) => size,
            (Some((_, _, base_len)), None) => *base_len,
            // The config never gives a provision without either key.
            (None, None) => {
                return Err(ProvisionError::Create {
                    path: path.clone(),
                    step: "size",
                    error: io::Error::new(io::ErrorKind::InvalidInput, "no size_gib and no base"),
                })
            }
        };
        let file = tmpfile(&dir).map_err(|error| match error.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR) => ProvisionError::NoTmpfile {
                path: path.clone(),
                error,
            },
            _ => ProvisionError::Create {
                path: path.clone(),
                step: "O_TMPFILE",
                error,
            },
        })?;
        Ok(Staged {
            path: path.clone(),
            name: name.to_path_buf(),
            dir,
            file,
            base,
            len,
        })
    }

    fn err(&self, step: &'static str) -> impl Fn(io::Error) -> ProvisionError + '_ {
        move |error| ProvisionError::Create {
            path: self.path.clone(),
            step,
            error,
        }
    }

    /// Gives the unnamed file its contents and size, and syncs it.
    pub fn fill(&self, cancel: &AtomicBool) -> Result<Fill, ProvisionError> {
        let fill = match &self.base {
            None => Fill::Blank,
            Some((_, base, base_len)) => match ficlone(&self.file, base) {
                Ok(()) => Fill::Cloned,
                Err(e) if clone_unsupported(&e) => {
                    let bytes = copy_sparse(base, &self.file, *base_len, cancel).map_err(|e| {
                        if e.kind() == io::ErrorKind::Interrupted {
                            ProvisionError::Cancelled(self.path.clone())
                        } else {
                            self.err("copying the base")(e)
                        }
                    })?;
                    Fill::Copied { bytes }
                }
                Err(e) => return Err(self.err("FICLONE")(e)),
            },
        };
        // Grows to size_gib with a hole; a clone or copy is never longer.
        self.file.set_len(self.len).map_err(self.err("ftruncate"))?;
        self.file.sync_all().map_err(self.err("fsync"))?;
        Ok(fill)
    }

    /// Names the filled file, unless the name has been taken meanwhile,
    /// and makes the name durable.
    pub fn commit(self, fill: Fill) -> Result<Outcome, ProvisionError> {
        match link(&self.file, &self.dir, &self.name) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let len = self.dir_entry_len().map_err(self.err("stat"))?;
                return Ok(Outcome::LostRace { len });
            }
            Err(e) => return Err(self.err("linkat")(e)),
        }
        self.dir
            .sync_all()
            .map_err(self.err("fsync of the directory"))?;
        Ok(Outcome::Created {
            len: self.len,
            fill,
        })
    }

    fn dir_entry_len(&self) -> io::Result<u64> {
        let fd = disk::openat(
            self.dir.as_raw_fd(),
            &self.name,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )?;
        Ok(File::from(fd).metadata()?.len())
    }
}

fn open_base(base: &Path, mounts: &[PathBuf]) -> Result<(PathBuf, File, u64), ProvisionError> {
    let (mount, rel) =
        disk::beneath_data_mount(base, mounts).ok_or_else(|| ProvisionError::BaseNotBeneath {
            path: base.to_path_buf(),
            mounts: mounts.to_vec(),
        })?;
    let file = disk::open_file(base, mount, rel, true).map_err(ProvisionError::Base)?;
    // A read lock: a guest that has the base as its writable disk holds a
    // write lock, and a copy of a disk being written is not a copy.
    disk::lock(&file, true).map_err(|e| {
        ProvisionError::Base(match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EACCES) => DiskError::Locked(base.to_path_buf()),
            _ => DiskError::Open {
                path: base.to_path_buf(),
                error: e,
            },
        })
    })?;
    let len = file
        .metadata()
        .map_err(|e| {
            ProvisionError::Base(DiskError::Open {
                path: base.to_path_buf(),
                error: e,
            })
        })?
        .len();
    if len == 0 {
        return Err(ProvisionError::BaseEmpty(base.to_path_buf()));
    }
    Ok((base.to_path_buf(), file, len))
}

fn tmpfile(dir: &File) -> io::Result<File> {
    let name = disk::cstring(Path::new("."))?;
    // SAFETY: a valid path and a dir fd we hold; the mode is an int.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    disk::owned(libc::c_long::from(fd)).map(File::from)
}

/// linkat of an unnamed file: by fd (AT_EMPTY_PATH, which wants
/// CAP_DAC_READ_SEARCH), else through /proc/self/fd.
fn link(file: &File, dir: &File, name: &Path) -> io::Result<()> {
    let target = disk::cstring(name)?;
    let empty = disk::cstring(Path::new(""))?;
    // SAFETY: valid fds and NUL-terminated paths.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            empty.as_ptr(),
            dir.as_raw_fd(),
            target.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) {
        return Err(e);
    }
    let proc = disk::cstring(Path::new(OsStr::from_bytes(
        format!("/proc/self/fd/{}", file.as_raw_fd()).as_bytes(),
    )))?;
    // SAFETY: as above.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            dir.as_raw_fd(),
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ficlone(dst: &File, src: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What FICLONE answers where reflinks do not exist (ext4, tmpfs), across
/// file systems, or for layouts it cannot share.
fn clone_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EXDEV | libc::EINVAL | libc::ENOSYS)
    )
}

fn lseek(file: &File, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a valid fd.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data at or past `off`.
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(u64::try_from(r).ok())
}

/// Copies the data ranges of `src`'s first `len` bytes into `dst` at the
/// same offsets, leaving its holes holes. Returns the bytes copied; an
/// `Interrupted` error when cancelled.
fn copy_sparse(src: &File, dst: &File, len: u64, cancel: &AtomicBool) -> io::Result<u64> {
    let mut off = 0u64;
    let mut copied = 0u64;
    let mut plain = false;
    while off < len {
        let data = match lseek(src, off, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            // A file system without SEEK_DATA: all of it is data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => off,
            Err(e) => return Err(e),
        };
        if data >= len {
            break;
        }
        let hole = match lseek(src, data, libc::SEEK_HOLE) {
            Ok(Some(h)) => h.min(len),
            Ok(None) => len,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => len,
            Err(e) => return Err(e),
        };
        copy_range(
            src,
            dst,
            data,
            hole.saturating_sub(data),
            cancel,
            &mut plain,
        )?;
        copied = copied.saturating_add(hole.saturating_sub(data));
        off = hole.max(data.saturating_add(1));
    }
    Ok(copied)
}

fn cancelled(cancel: &AtomicBool) -> io::Result<()> {
    if cancel.load(Ordering::Relaxed) {
        Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"))
    } else {
        Ok(())
    }
}

/// `[at, at + n)` of `src` to the same place in `dst`: copy_file_range,
/// or read/write once it is refused (`plain` remembers that).
fn copy_range(
    src: &File,
    dst: &File,
    at: u64,
    n: u64,
    cancel: &AtomicBool,
    plain: &mut bool,
) -> io::Result<()> {
    let end = at.saturating_add(n);
    let mut pos = at;
    let mut buf: Vec<u8> = Vec::new();
    while pos < end {
        cancelled(cancel)?;
        let want = usize::try_from(end - pos).unwrap_or(usize::MAX);
        let done = if *plain {
            if buf.is_empty() {
                buf = vec![0u8; BUF];
            }
            read_write(src, dst, pos, want.min(BUF), &mut buf)?
        } else {
            match copy_file_range(src, dst, pos, want.min(CHUNK)) {
                Ok(done) => done,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
                    ) =>
                {
                    *plain = true;
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        if done == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the base became shorter while it was copied",
            ));
        }
        pos = pos.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
    }
    Ok(())
}

fn copy_file_range(src: &File, dst: &File, at: u64, n: usize) -> io::Result<usize> {
    let mut off_in =
        libc::loff_t::try_from(at).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    let mut off_out = off_in;
    // SAFETY: valid fds, and offsets we own for the call.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            n,
            0,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

fn read_write(src: &File, dst: &File, at: u64, n: usize, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let buf = buf.get_mut(..n).unwrap_or_default();
    let got = loop {
        match src.read_at(buf, at) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    let data = buf.get(..got).unwrap_or_default();
    dst.write_all_at(data, at)?;
    Ok(got)
}

/// The provisioning of one guest's images, on its own thread. The thread
/// holds the write end of a pipe; its end makes the read end readable.
pub struct Pending {
    done: File,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Request, Result<Outcome, ProvisionError>)>>,
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [r, w] = fds;
    Ok((
        File::from(disk::owned(libc::c_long::from(r))?),
        File::from(disk::owned(libc::c_long::from(w))?),
    ))
}

impl Pending {
    /// Starts creating what `requests` name, in order, stopping at the
    /// first failure: the guest cannot start without all of them.
    pub fn spawn(requests: Vec<Request>, mounts: Vec<PathBuf>) -> io::Result<Pending> {
        let (done, writer) = pipe()?;
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let thread = thread::Builder::new()
            .name("disk-provision".into())
            .spawn(move || {
                let mut results = Vec::with_capacity(requests.len());
                for req in requests {
                    let r = ensure(&req, &mounts, &flag);
                    let failed = r.is_err();
                    results.push((req, r));
                    if failed {
                        break;
                    }
                }
                drop(writer);
                results
            })?;
        Ok(Pending {
            done,
            cancel,
            thread,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// Asks the thread to stop at its next chunk; its unnamed file is
    /// dropped.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// What was done, each with its request; `None` if the thread died.
    /// Blocks until the thread has ended: call it once the fd is
    /// readable, or after [`Pending::cancel`].
    pub fn finish(self) -> Option<Vec<(Request, Result<Outcome, ProvisionError>)>> {
        // Unreachable with panic=abort; in tests it fails loudly.
        self.thread.join().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, FileExt, MetadataExt};
    use std::process::Command;

    fn request(path: &Path, size_gib: Option<u32>, base: Option<&Path>) -> Request {
        Request {
            disk: 0,
            path: path.to_path_buf(),
            provision: Provision {
                size_gib,
                base: base.map(Path::to_path_buf),
            },
        }
    }

    fn go() -> AtomicBool {
        AtomicBool::new(false)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A sparse 8 MiB base: 4 KiB of 0xaa at 0, 4 KiB of 0x55 at 5 MiB.
    fn sparse_base(path: &Path) -> Vec<u8> {
        let f = File::create(path).expect("base");
        f.set_len(8 << 20).expect("size");
        f.write_all_at(&[0xaa; 4096], 0).expect("write");
        f.write_all_at(&[0x55; 4096], 5 << 20).expect("write");
        f.sync_all().expect("sync");
        fs::read(path).expect("read base")
    }

    /// Where the data ranges of `f` start, from 0.
    fn data_starts(f: &File) -> Vec<u64> {
        let mut starts = Vec::new();
        let mut off = 0;
        while let Ok(Some(d)) = lseek(f, off, libc::SEEK_DATA) {
            starts.push(d);
            off = lseek(f, d, libc::SEEK_HOLE).expect("hole").expect("end");
        }
        starts
    }

    #[test]
    fn a_blank_image_is_created_sparse_and_named_only_when_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let img = dir.path().join("web.img");
        let out = ensure(&request(&img, Some(3), None), &mounts, &go()).expect("created");
        assert_eq!(
            out,
            Outcome::Created {
                len: 3 << 30,
                fill: Fill::Blank
            }
        );
        let meta = fs::metadata(&img).expect("stat");
        assert_eq!(meta.len(), 3 << 30);
        assert!(meta.blocks() < 64, "not sparse: {} blocks", meta.blocks());
        assert_eq!(meta.mode() & 0o777, 0o600);
        // No temporary name anywhere, then or now.
        assert_eq!(names(dir.path()), ["web.img"]);
        // And disk.rs opens it like any image.
        let boot = crate::boot::boot_medium::BootMedium::default();
        let rules = disk::Rules {
            boot_medium: &boot,
            data_mounts: &mounts,
            mountinfo: "",
            sys: Path::new("/sys"),
        };
        disk::open(&img, false, &rules).expect("opens");
    }

    #[test]
    fn an_existing_image_is_never_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let base = dir.path().join("base.img");
        sparse_base(&base);
        let img = dir.path().join("web.img");
        fs::write(&img, b"the guest's data").expect("write");
        // Smaller than size_gib, different from the base: used as it is.
        for req in [
            request(&img, Some(1), None),
            request(&img, Some(1), Some(&base)),
            request(&img, None, Some(&base)),
        ] {
            let out = ensure(&req, &mounts, &go()).expect("existing");
            assert_eq!(out, Outcome::Existing { len: 16 });
            assert_eq!(fs::read(&img).expect("read"), b"the guest's data");
        }
        assert_eq!(existing_len(&img, &mounts).expect("stat"), Some(16));
        assert_eq!(
            existing_len(&dir.path().join("none"), &mounts).expect("stat"),
            None
        );
    }

    #[test]
    fn a_base_is_copied_byte_exact_with_its_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let base = dir.path().join("base.img");
        let want = sparse_base(&base);

        // base alone: the base's size.
        let img = dir.path().join("same.img");
        let out = ensure(&request(&img, None, Some(&base)), &mounts, &go()).expect("copy");
        match out {
            Outcome::Created {
                len,
                fill: Fill::Copied { bytes },
            } => {
                assert_eq!(len, 8 << 20);
                assert!(bytes < 1 << 20, "the holes were copied: {bytes} bytes");
            }
            // On a file system with reflinks (btrfs, xfs) the clone path runs.
            Outcome::Created {
                fill: Fill::Cloned, ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&img).expect("read"), want);

        // size_gib larger: the copy, then a hole to the end.
        let img = dir.path().join("grown.img");
        ensure(&request(&img, Some(1), Some(&base)), &mounts, &go()).expect("copy");
        let f = File::open(&img).expect("open");
        let meta = f.metadata().expect("stat");
        assert_eq!(meta.len(), 1 << 30);
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
        let mut head = vec![0u8; want.len()];
        f.read_exact_at(&mut head, 0).expect("read");
        assert_eq!(head, want);
        let mut tail = [1u8; 4096];
        f.read_exact_at(&mut tail, (1 << 30) - 4096).expect("read");
        assert_eq!(tail, [0u8; 4096]);
        assert_eq!(
            data_starts(&f),
            [0, 5 << 20],
            "holes kept where the base has them"
        );
    }

    #[test]
    fn the_fallback_copy_keeps_holes_too() {
        // copy_range's read/write path, which runs where copy_file_range
        // is refused.
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base.img");
        let want = sparse_base(&base);
        let src = File::open(&base).expect("open");
        let dst = tempfile::tempfile_in(dir.path()).expect("tmp");
        let mut plain = true;
        for at in data_starts(&src) {
            copy_range(&src, &dst, at, 4096, &go(), &mut plain).expect("copy");
        }
        dst.set_len(8 << 20).expect("size");
        let mut got = vec![0u8; want.len()];
        dst.read_exact_at(&mut got, 0).expect("read");
        assert_eq!(got, want);
        assert_eq!(data_starts(&dst), [0, 5 << 20]);
    }

    #[test]
    fn a_base_larger_than_size_gib_is_refused_and_nothing_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let base = dir.path().join("base.img");
        File::create(&base)
            .and_then(|f| f.set_len((1 << 30) + 1))
            .expect("base");
        let img = dir.path().join("web.img");
        let err = ensure(&request(&img, Some(1), Some(&base)), &mounts, &go()).expect_err("big");
        assert_eq!(
            err.to_string(),
            format!(
                "base {}: is 1073741825 bytes, larger than size_gib = 1 (1073741824 bytes); \
                 raise size_gib or drop it to use the base's size",
                base.display()
            )
        );
        assert_eq!(names(dir.path()), ["base.img"]);
    }

    #[test]
    fn a_second_creator_loses_harmlessly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        fs::write(&a, [b'a'; 4096]).expect("write");
        fs::write(&b, [b'b'; 4096]).expect("write");
        let img = dir.path().join("web.img");
        // Two starts, both finding no image, both filling their own.
        let first = Staged::new(&request(&img, None, Some(&a)), &mounts).expect("stage");
        let second = Staged::new(&request(&img, None, Some(&b)), &mounts).expect("stage");
        let f1 = first.fill(&go()).expect("fill");
        let f2 = second.fill(&go()).expect("fill");
        assert!(matches!(
            first.commit(f1).expect("commit"),
            Outcome::Created { .. }
        ));
        assert_eq!(
            second.commit(f2).expect("no error"),
            Outcome::LostRace { len: 4096 }
        );
        assert_eq!(fs::read(&img).expect("read"), [b'a'; 4096]);
        assert_eq!(names(dir.path()), ["a.img", "b.img", "web.img"]);
    }

    #[test]
    fn a_cancelled_copy_leaves_no_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let base = dir.path().join("base.img");
        sparse_base(&base);
        let img = dir.path().join("web.img");
        let staged = Staged::new(&request(&img, Some(1), Some(&base)), &mounts).expect("stage");
        match staged.fill(&AtomicBool::new(true)) {
            Err(ProvisionError::Cancelled(p)) => assert_eq!(p, img),
            // A reflink is one call: nothing to cancel.
            Ok(Fill::Cloned) => {}
            other => panic!("{other:?}"),
        }
        drop(staged);
        assert_eq!(names(dir.path()), ["base.img"]);
    }

    /// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn new(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().expect("tempdir");
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .expect("this test needs mount(8) and root");
            assert!(st.success(), "this test needs root to mount a tmpfs");
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0.path()).status();
        }
    }

    #[test]
    fn a_full_data_file_system_fails_cleanly() {
        let small = Tmpfs::new("1m");
        let bases = tempfile::tempdir().expect("tempdir");
        let mounts = vec![small.0.path().to_path_buf(), bases.path().to_path_buf()];
        let base = bases.path().join("base.img");
        let f = File::create(&base).expect("base");
        f.write_all_at(&[7u8; 4 << 20], 0).expect("write");
        let img = small.0.path().join("web.img");
        let err = ensure(&request(&img, Some(1), Some(&base)), &mounts, &go()).expect_err("full");
        assert!(
            matches!(&err, ProvisionError::Create { error, .. }
                if error.raw_os_error() == Some(libc::ENOSPC)),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: creating: copying the base: ", img.display())),
            "{err}"
        );
        // Nothing named, and the space is given back.
        assert!(names(small.0.path()).is_empty());
        // SAFETY: statvfs into a zeroed struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let c = disk::cstring(small.0.path()).expect("c");
        // SAFETY: a valid path and struct.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        assert_eq!(
            st.f_bfree, st.f_blocks,
            "the unnamed file's blocks are freed"
        );
    }

    #[test]
    fn paths_outside_the_rules_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().join("data")];
        fs::create_dir(dir.path().join("data")).expect("mkdir");
        let outside = dir.path().join("outside.img");
        fs::write(&outside, [1u8; 512]).expect("write");
        let listed = mounts[0].display().to_string();

        let err = ensure(&request(&outside, Some(1), None), &mounts, &go()).expect_err("out");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: size_gib and base create an image only beneath a data mount ({listed})",
                outside.display()
            )
        );
        let img = mounts[0].join("web.img");
        let err = ensure(&request(&img, None, Some(&outside)), &mounts, &go()).expect_err("base");
        assert_eq!(
            err.to_string(),
            format!(
                "base {}: not beneath a data mount ({listed}); a base is read from there only",
                outside.display()
            )
        );
        // A symlinked directory on the way out of the mount.
        symlink(dir.path(), mounts[0].join("up")).expect("symlink");
        let err = ensure(
            &request(&mounts[0].join("up/x.img"), Some(1), None),
            &mounts,
            &go(),
        )
        .expect_err("escape");
        assert!(matches!(err, ProvisionError::Escapes { .. }), "{err}");
        assert!(!dir.path().join("x.img").exists());
        // A symlinked base.
        symlink(&outside, mounts[0].join("b.img")).expect("symlink");
        let err = ensure(
            &request(&img, None, Some(&mounts[0].join("b.img"))),
            &mounts,
            &go(),
        )
        .expect_err("base link");
        assert!(err.to_string().contains("leaves its data mount"), "{err}");
        // A missing directory is not created.
        let err = ensure(
            &request(&mounts[0].join("vm/x.img"), Some(1), None),
            &mounts,
            &go(),
        )
        .expect_err("no dir");
        assert!(
            err.to_string()
                .contains(&format!("directory {}/vm: ", listed)),
            "{err}"
        );
        // A missing base, a directory as base, an empty base.
        let err = ensure(
            &request(&img, None, Some(&mounts[0].join("nope"))),
            &mounts,
            &go(),
        )
        .expect_err("missing");
        assert!(
            err.to_string().starts_with("base ") && err.to_string().contains("No such file"),
            "{err}"
        );
        fs::create_dir(mounts[0].join("d")).expect("mkdir");
        let err = ensure(
            &request(&img, None, Some(&mounts[0].join("d"))),
            &mounts,
            &go(),
        )
        .expect_err("dir");
        assert!(err.to_string().contains("a directory"), "{err}");
        fs::write(mounts[0].join("empty"), b"").expect("write");
        let err = ensure(
            &request(&img, None, Some(&mounts[0].join("empty"))),
            &mounts,
            &go(),
        )
        .expect_err("empty");
        assert!(err.to_string().ends_with("empty: is empty"), "{err}");
        assert_eq!(names(&mounts[0]), ["b.img", "d", "empty", "up"]);
    }

    #[test]
    fn a_base_a_guest_writes_is_not_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let base = dir.path().join("base.img");
        sparse_base(&base);
        let boot = crate::boot::boot_medium::BootMedium::default();
        let rules = disk::Rules {
            boot_medium: &boot,
            data_mounts: &mounts,
            mountinfo: "",
            sys: Path::new("/sys"),
        };
        let writer = disk::open(&base, false, &rules).expect("a guest's disk");
        let img = dir.path().join("web.img");
        let err = ensure(&request(&img, None, Some(&base)), &mounts, &go()).expect_err("locked");
        assert!(
            err.to_string().contains("in use by another guest's vmm"),
            "{err}"
        );
        drop(writer);
        ensure(&request(&img, None, Some(&base)), &mounts, &go()).expect("free");
    }

    #[test]
    fn the_thread_reports_through_its_fd() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        let reqs = vec![
            request(&dir.path().join("a.img"), Some(1), None),
            request(&dir.path().join("nodir/b.img"), Some(1), None),
            request(&dir.path().join("c.img"), Some(1), None),
        ];
        let pending = Pending::spawn(reqs, mounts).expect("spawn");
        let mut fds = [PollFd::new(pending.fd(), PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll"),
            1
        );
        let results = pending.finish().expect("joined");
        // It stops at the first failure: c.img is not made.
        assert_eq!(results.len(), 2);
        assert!(matches!(
            results.first(),
            Some((_, Ok(Outcome::Created { .. })))
        ));
        assert!(matches!(
            results.get(1),
            Some((_, Err(ProvisionError::Dir { .. })))
        ));
        assert_eq!(names(dir.path()), ["a.img"]);
    }

    /// A btrfs on a loop file, mounted on a temporary directory.
    struct Btrfs {
        mnt: tempfile::TempDir,
        _image: tempfile::NamedTempFile,
    }

    impl Btrfs {
        fn new() -> Btrfs {
            let image = tempfile::NamedTempFile::new().expect("tmp");
            image.as_file().set_len(256 << 20).expect("size");
            let st = Command::new("mkfs.btrfs")
                .arg("-q")
                .arg(image.path())
                .status()
                .expect("this test needs mkfs.btrfs (btrfs-progs)");
            assert!(st.success(), "mkfs.btrfs failed");
            let mnt = tempfile::tempdir().expect("tempdir");
            let st = Command::new("mount")
                .args(["-o", "loop"])
                .arg(image.path())
                .arg(mnt.path())
                .status()
                .expect("this test needs mount(8)");
            assert!(st.success(), "this test needs root, loop devices and btrfs");
            Btrfs { mnt, _image: image }
        }
    }

    impl Drop for Btrfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.mnt.path()).status();
        }
    }

    #[test]
    #[ignore = "needs root, loop devices, btrfs in the kernel and mkfs.btrfs: run with --ignored"]
    fn on_btrfs_a_base_is_reflinked() {
        let fs = Btrfs::new();
        let mounts = vec![fs.mnt.path().to_path_buf()];
        let base = fs.mnt.path().join("base.img");
        let want = sparse_base(&base);
        let img = fs.mnt.path().join("web.img");
        let out = ensure(&request(&img, Some(1), Some(&base)), &mounts, &go()).expect("clone");
        assert_eq!(
            out,
            Outcome::Created {
                len: 1 << 30,
                fill: Fill::Cloned
            }
        );
        let mut head = vec![0u8; want.len()];
        File::open(&img)
            .and_then(|f| f.read_exact_at(&mut head, 0))
            .expect("read");
        assert_eq!(head, want);
        assert_eq!(fs::metadata(&img).expect("stat").len(), 1 << 30);
    }
}
