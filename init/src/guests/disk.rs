//! Opening a guest's disk for its vmm, as root, without letting the
//! definition name anything but a disk.
//!
//! A disk is either
//! - a block device that is not on the boot medium (unless read-only) and
//!   not mounted on the host, opened `O_EXCL` when writable; or
//! - a regular file beneath a data mount (a `[[mount]]` target of
//!   host.toml), opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
//!   | RESOLVE_NO_MAGICLINKS)` from the mount point, so no symlink or `..`
//!   leads out of it.
//!
//! Whatever the path went through, the type is checked on the opened fd.
//! Every disk then takes an OFD lock (`F_OFD_SETLK`) on its open file
//! description: a write lock when writable, a read lock when read-only. The
//! lock lives as long as some process holds that description: init drops
//! its copy once the vmm has been spawned, so the lock is held exactly as
//! long as the vmm runs, and a second guest (or a second vmm of the same
//! guest) naming the same image is refused.
//!
//! An image the definition asks to be created (`size_gib`, `base`) is made
//! by [`super::provision`] before this runs, with the same beneath-the-mount
//! opens ([`open_beneath`], [`open_file`]).

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use libc::dev_t;

use crate::boot::boot_medium::{self, BootMedium};

/// Why a disk was refused. Each names the path; the caller adds the
/// guest's name and the disk's number.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    #[error(
        "{}: {found}; a disk is a block device or a regular file beneath a data mount ({})",
        .path.display(), mounts_list(.mounts)
    )]
    NotADisk {
        path: PathBuf,
        found: &'static str,
        mounts: Vec<PathBuf>,
    },
    #[error("{}: {error}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error(
        "{}: leaves its data mount {} (a symlink, '..' or a magic link on the way)",
        .path.display(), .mount.display()
    )]
    Escapes { path: PathBuf, mount: PathBuf },
    #[error(
        "{}: is on the boot medium, which is never written; only read_only = true is allowed",
        .0.display()
    )]
    BootMedium(PathBuf),
    #[error("{}: is mounted on the host (device {major}:{minor})", .path.display())]
    Mounted {
        path: PathBuf,
        major: u32,
        minor: u32,
    },
    #[error(
        "{}: in use (mounted on the host or given to another guest)",
        .0.display()
    )]
    Busy(PathBuf),
    #[error("{}: in use by another guest's vmm (locked)", .0.display())]
    Locked(PathBuf),
}

fn mounts_list(mounts: &[PathBuf]) -> String {
    if mounts.is_empty() {
        return "host.toml mounts none".to_string();
    }
    let names: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
    names.join(", ")
}

/// What the host lets a guest's disk be.
pub struct Rules<'a> {
    pub boot_medium: &'a BootMedium,
    /// The mounted `[[mount]]` targets of host.toml.
    pub data_mounts: &'a [PathBuf],
    /// `/proc/self/mountinfo`, read when the guest starts.
    pub mountinfo: &'a str,
    /// `/sys`, to find a partition's disk.
    pub sys: &'a Path,
}

/// Opens `path` as a disk the rules allow, locked. The returned fd is
/// what the vmm gets; drop init's copy once the vmm has it.
pub fn open(path: &Path, read_only: bool, rules: &Rules) -> Result<File, DiskError> {
    if !path.is_absolute() {
        return Err(DiskError::NotAbsolute(path.to_path_buf()));
    }
    let file = match beneath_data_mount(path, rules.data_mounts) {
        Some((mount, rel)) => open_file(path, mount, rel, read_only)?,
        None => open_block(path, read_only, rules)?,
    };
    lock(&file, read_only).map_err(|e| match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => DiskError::Locked(path.to_path_buf()),
        _ => DiskError::Open {
            path: path.to_path_buf(),
            error: e,
        },
    })?;
    Ok(file)
}

/// The data mount `path` lies beneath, and the rest of the path.
pub(super) fn beneath_data_mount<'p>(
    path: &'p Path,
    mounts: &'p [PathBuf],
) -> Option<(&'p Path, &'p Path)> {
    mounts
        .iter()
        .filter_map(|m| {
            let rel = path.strip_prefix(m).ok()?;
            (rel.components().next().is_some()).then_some((m.as_path(), rel))
        })
        // The deepest mount owns the path.
        .max_by_key(|(m, _)| m.components().count())
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "a special file"
    }
}

fn open_flags(read_only: bool) -> libc::c_int {
    // O_NONBLOCK so a FIFO does not hang PID 1; cleared once the type is
    // known. O_NOCTTY so a terminal never becomes init's.
    let access = if read_only {
        libc::O_RDONLY
    } else {
        libc::O_RDWR
    };
    access | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK
}

pub(super) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

pub(super) fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn openat(dir: RawFd, name: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = cstring(name)?;
    // SAFETY: a valid NUL-terminated path and a dir fd we hold.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    owned(libc::c_long::from(fd))
}

/// openat2 beneath `dir`, with no symlinks at all; ENOSYS where the
/// kernel lacks it.
fn openat2_beneath(dir: RawFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = cstring(rel)?;
    let mut how: libc::open_how = unsafe_zeroed_open_how();
    how.flags = u64::try_from(flags).unwrap_or_default();
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid path and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(fd)
}

fn unsafe_zeroed_open_how() -> libc::open_how {
    // SAFETY: open_how is plain integers; all zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The fallback: one component at a time, none of them a symlink.
fn walk_beneath(dir: RawFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::from_raw_os_error(libc::EXDEV)),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, dirs)) = parts.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    };
    let mut here: Option<OwnedFd> = None;
    for d in dirs {
        let at = here.as_ref().map_or(dir, AsRawFd::as_raw_fd);
        let next = openat(
            at,
            Path::new(d),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )?;
        here = Some(next);
    }
    let at = here.as_ref().map_or(dir, AsRawFd::as_raw_fd);
    openat(at, Path::new(last), flags | libc::O_NOFOLLOW)
}

/// `rel` opened beneath `dir` with `flags`, no symlink followed: with
/// openat2, or the component walk where the kernel lacks it. ELOOP or
/// EXDEV when the path would leave `dir`.
pub(super) fn open_beneath(dir: RawFd, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    match openat2_beneath(dir, rel, flags) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => walk_beneath(dir, rel, flags),
        other => other,
    }
}

/// Opens data mount `mount` itself, as the anchor of [`open_beneath`].
pub(super) fn open_mount(mount: &Path) -> io::Result<OwnedFd> {
    let root = cstring(mount)?;
    // SAFETY: a valid NUL-terminated path.
    let dir = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(libc::c_long::from(dir))
}

pub(super) fn open_file(
    path: &Path,
    mount: &Path,
    rel: &Path,
    read_only: bool,
) -> Result<File, DiskError> {
    let fail = |error: io::Error| match error.raw_os_error() {
        // openat2's answers for a symlink, '..' or a magic link.
        Some(libc::ELOOP | libc::EXDEV) => DiskError::Escapes {
            path: path.to_path_buf(),
            mount: mount.to_path_buf(),
        },
        _ => DiskError::Open {
            path: path.to_path_buf(),
            error,
        },
    };
    let dir = open_mount(mount).map_err(fail)?;
    let fd = open_beneath(dir.as_raw_fd(), rel, open_flags(read_only)).map_err(fail)?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(fail)?;
    if !meta.file_type().is_file() {
        return Err(DiskError::NotADisk {
            path: path.to_path_buf(),
            found: kind_of(&meta),
            mounts: vec![mount.to_path_buf()],
        });
    }
    clear_nonblock(&file).map_err(fail)?;
    Ok(file)
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Device numbers of the mounted block file systems in a mountinfo table
/// (field 3 is MAJ:MIN).
pub fn mounted_devices(mountinfo: &str) -> Vec<dev_t> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
            let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
            // Major 0 is the anonymous devices of tmpfs, proc, sysfs...
            (major != 0).then(|| libc::makedev(major, minor))
        })
        .collect()
}

/// Whether block device `dev` is mounted, holds a mounted partition, or is
/// a partition of a mounted whole disk.
fn mounted_as(dev: dev_t, rules: &Rules) -> Option<dev_t> {
    let disk = boot_medium::whole_disk(rules.sys, dev);
    mounted_devices(rules.mountinfo).into_iter().find(|&m| {
        m == dev || boot_medium::whole_disk(rules.sys, m) == Some(dev) || disk == Some(m)
    })
}

fn open_block(path: &Path, read_only: bool, rules: &Rules) -> Result<File, DiskError> {
    let fail = |error: io::Error| DiskError::Open {
        path: path.to_path_buf(),
        error,
    };
    // O_PATH opens nothing: no driver's open runs, whatever the node is.
    let c = cstring(path).map_err(fail)?;
    // SAFETY: a valid NUL-terminated path.
    let probe = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    let probe = File::from(owned(libc::c_long::from(probe)).map_err(fail)?);
    let meta = probe.metadata().map_err(fail)?;
    if !meta.file_type().is_block_device() {
        return Err(DiskError::NotADisk {
            path: path.to_path_buf(),
            found: kind_of(&meta),
            mounts: rules.data_mounts.to_vec(),
        });
    }
    check_block(path, &meta, read_only, rules)?;
    // Reopened through the O_PATH fd: the very node checked above.
    let again = PathBuf::from(format!("/proc/self/fd/{}", probe.as_raw_fd()));
    let mut flags = open_flags(read_only) & !libc::O_NONBLOCK;
    if !read_only {
        flags |= libc::O_EXCL;
    }
    let fd = openat(libc::AT_FDCWD, &again, flags).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            DiskError::Busy(path.to_path_buf())
        } else {
            fail(e)
        }
    })?;
    let file = File::from(fd);
    let opened = file.metadata().map_err(fail)?;
    if !opened.file_type().is_block_device() || opened.rdev() != meta.rdev() {
        return Err(DiskError::NotADisk {
            path: path.to_path_buf(),
            found: kind_of(&opened),
            mounts: rules.data_mounts.to_vec(),
        });
    }
    check_block(path, &opened, read_only, rules)?;
    Ok(file)
}

fn check_block(
    path: &Path,
    meta: &fs::Metadata,
    read_only: bool,
    rules: &Rules,
) -> Result<(), DiskError> {
    if !read_only && rules.boot_medium.holds_node(meta) {
        return Err(DiskError::BootMedium(path.to_path_buf()));
    }
    if let Some(m) = mounted_as(meta.rdev(), rules) {
        // The config partition is mounted read-only and is on the boot
        // medium: a read-only guest disk may share it.
        if !(read_only && rules.boot_medium.holds(m)) {
            return Err(DiskError::Mounted {
                path: path.to_path_buf(),
                major: libc::major(m),
                minor: libc::minor(m),
            });
        }
    }
    Ok(())
}

/// Takes the OFD lock for the whole file: shared when read-only.
pub(super) fn lock(file: &File, read_only: bool) -> io::Result<()> {
    // SAFETY: flock is plain integers; all zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    let kind = if read_only {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    };
    fl.l_type = libc::c_short::try_from(kind).unwrap_or_default();
    fl.l_whence = libc::c_short::try_from(libc::SEEK_SET).unwrap_or_default();
    // SAFETY: fcntl on a valid fd with a valid flock.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rules<'a>(boot: &'a BootMedium, mounts: &'a [PathBuf], mountinfo: &'a str) -> Rules<'a> {
        Rules {
            boot_medium: boot,
            data_mounts: mounts,
            mountinfo,
            sys: Path::new("/sys"),
        }
    }

    fn data() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounts = vec![dir.path().to_path_buf()];
        fs::write(dir.path().join("a.img"), [0u8; 4096]).expect("write");
        (dir, mounts)
    }

    #[test]
    fn files_beneath_a_data_mount_open_and_lock() {
        let (dir, mounts) = data();
        let boot = BootMedium::default();
        let r = rules(&boot, &mounts, "");
        let img = dir.path().join("a.img");
        let first = open(&img, false, &r).expect("opens");
        // A second writer, or a reader, of the same image is refused
        // while the first description is open: two guests, or two vmms
        // of one guest.
        for read_only in [false, true] {
            let err = open(&img, read_only, &r).expect_err("locked");
            assert_eq!(
                err.to_string(),
                format!("{}: in use by another guest's vmm (locked)", img.display())
            );
        }
        drop(first);
        let a = open(&img, true, &r).expect("reader");
        let b = open(&img, true, &r).expect("readers share");
        assert!(open(&img, false, &r).is_err());
        drop((a, b));
        open(&img, false, &r).expect("free again once closed");
    }

    #[test]
    fn a_lock_lives_with_the_description_not_the_fd() {
        let (dir, mounts) = data();
        let boot = BootMedium::default();
        let r = rules(&boot, &mounts, "");
        let img = dir.path().join("a.img");
        let first = open(&img, false, &r).expect("opens");
        // What a spawned vmm holds: a copy of the same description.
        let vmm_copy = first.try_clone().expect("dup");
        drop(first);
        assert!(open(&img, false, &r).is_err(), "the vmm's copy holds it");
        drop(vmm_copy);
        open(&img, false, &r).expect("released when the vmm exits");
    }

    #[test]
    fn symlinks_and_specials_under_a_data_mount_are_refused() {
        let (dir, mounts) = data();
        let boot = BootMedium::default();
        let r = rules(&boot, &mounts, "");
        let outside = tempfile::NamedTempFile::new().expect("tmp");
        let link = dir.path().join("out.img");
        symlink(outside.path(), &link).expect("symlink");
        let err = open(&link, false, &r).expect_err("symlink out");
        assert!(
            matches!(err, DiskError::Escapes { .. }),
            "{err}: expected an escape"
        );
        assert!(err.to_string().contains("leaves its data mount"), "{err}");
        // A symlink inside is refused as well: none is followed.
        let inside = dir.path().join("in.img");
        symlink(dir.path().join("a.img"), &inside).expect("symlink");
        assert!(matches!(
            open(&inside, false, &r),
            Err(DiskError::Escapes { .. })
        ));
        // A directory symlink on the way.
        let sub = dir.path().join("sub");
        symlink("/proc/self", &sub).expect("symlink");
        assert!(open(&sub.join("environ"), true, &r).is_err());
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        let err = open(&dir.path().join("d"), true, &r).expect_err("dir");
        assert!(err.to_string().contains("a directory"), "{err}");
        let fifo = dir.path().join("f");
        let c = cstring(&fifo).expect("c");
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open(&fifo, true, &r).expect_err("fifo, and no hang");
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn the_fallback_walk_refuses_what_openat2_does() {
        let (dir, _) = data();
        let root = File::open(dir.path()).expect("dir");
        let flags = open_flags(true);
        walk_beneath(root.as_raw_fd(), Path::new("a.img"), flags).expect("plain file");
        symlink("/etc", dir.path().join("etc")).expect("symlink");
        symlink("/etc/hostname", dir.path().join("h")).expect("symlink");
        for rel in ["etc/hostname", "h", "../a.img", "/etc/hostname"] {
            assert!(
                walk_beneath(root.as_raw_fd(), Path::new(rel), flags).is_err(),
                "{rel}"
            );
        }
    }

    #[test]
    fn outside_the_data_mounts_only_block_devices_are_disks() {
        let (dir, mounts) = data();
        let boot = BootMedium::default();
        let r = rules(&boot, &mounts, "");
        let listed = dir.path().display().to_string();
        for (path, found) in [
            ("/dev/null", "a character device"),
            ("/dev/zero", "a character device"),
            ("/proc/self/environ", "a regular file"),
            (
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "a regular file",
            ),
            ("/run", "a directory"),
        ] {
            if !Path::new(path).exists() {
                continue;
            }
            let err = open(Path::new(path), false, &r).expect_err(path);
            assert_eq!(
                err.to_string(),
                format!(
                    "{path}: {found}; a disk is a block device or a regular file beneath a \
                     data mount ({listed})"
                )
            );
        }
        // A file of another guest's run directory, as init makes them.
        let run = tempfile::NamedTempFile::new().expect("tmp");
        let err = open(run.path(), false, &rules(&boot, &[], "")).expect_err("not beneath");
        assert!(
            err.to_string().ends_with("(host.toml mounts none)"),
            "{err}"
        );
        let err = open(Path::new("data/a.img"), false, &r).expect_err("relative");
        assert_eq!(err.to_string(), "data/a.img: not an absolute path");
    }

    #[test]
    fn mountinfo_gives_block_devices_only() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    30 1 8:2 / /mnt/config ro - vfat /dev/sda2 ro\n\
                    31 1 253:1 / /data rw - ext4 /dev/vdb rw\n";
        assert_eq!(
            mounted_devices(info),
            vec![libc::makedev(8, 2), libc::makedev(253, 1)]
        );
    }

    #[test]
    fn mounted_block_devices_are_refused() {
        let lo = crate::boot::boot_medium::tests::LoopDevice::new();
        let rdev = fs::metadata(&lo.node).expect("stat").rdev();
        let info = format!(
            "31 1 {}:{} / /data rw - ext4 x rw\n",
            libc::major(rdev),
            libc::minor(rdev)
        );
        let boot = BootMedium::default();
        let err = open(&lo.node, false, &rules(&boot, &[], &info)).expect_err("mounted");
        assert!(err.to_string().contains("is mounted on the host"), "{err}");
        let file = open(&lo.node, false, &rules(&boot, &[], "")).expect("unmounted");
        // O_EXCL and the lock: never twice.
        assert!(open(&lo.node, false, &rules(&boot, &[], "")).is_err());
        drop(file);
    }
}
