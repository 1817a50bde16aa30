//! The legacy BIOS boot path: syslinux installed on the EFI system partition
//! next to the files systemd-boot uses.
//!
//! Debian's `syslinux` installer is the mtools variant: it writes
//! ldlinux.sys and ldlinux.c32 into a FAT image file, patches ldlinux.sys
//! with the sectors it landed on and puts the syslinux boot code into the
//! volume's boot sector, all without root or loop devices. It carries its
//! own copies of both files, so they always match each other.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};

use hvfat::fatfs::{FileSystem, FsOptions};

use hvfat::times;
use hvfat::{DirError, FatClock};

/// Where syslinux looks for its configuration and keeps its files.
pub const DIRECTORY: &str = "syslinux";
pub const CONFIG: &str = "syslinux/syslinux.cfg";
/// What the installer adds to [`DIRECTORY`].
const INSTALLED: [&str; 2] = ["ldlinux.sys", "ldlinux.c32"];

/// Room the ESP must leave for the installed files: 175 KiB with syslinux
/// 6.04, with margin for a later release. A release that outgrows it fails
/// the build with the installer's "disk full" message.
pub const ROOM: u64 = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Size of ldlinux.sys plus ldlinux.c32.
    pub loader: u64,
    /// Bytes of the volume in use afterwards, as in `hvfat::Volume::used`.
    pub used: u64,
}

/// Why syslinux could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SyslinuxError {
    #[error("writing {}: {error}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("syslinux installer {}: {error} (Debian package syslinux)", .installer.display())]
    Spawn {
        installer: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("syslinux installer {} failed ({status}): {stderr}", .installer.display())]
    Failed {
        installer: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("reading {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error(
        "syslinux installer {} changed the volume size from {before} to {after} bytes",
        .installer.display()
    )]
    Resized {
        installer: PathBuf,
        before: usize,
        after: usize,
    },
    #[error(transparent)]
    Restamp(#[from] DirError),
    #[error("after installing syslinux: {0}")]
    Check(#[from] InstalledError),
}

/// What is wrong with the volume after the installer ran.
#[derive(Debug, thiserror::Error)]
pub enum InstalledError {
    #[error("mount: {0}")]
    Mount(#[source] io::Error),
    #[error("/{DIRECTORY}: {0}")]
    Directory(#[source] io::Error),
    #[error("/{DIRECTORY}/{0} is missing")]
    Missing(&'static str),
    #[error("stats: {0}")]
    Stats(#[source] io::Error),
}

/// Installs syslinux into the FAT volume `volume`, which must already hold
/// [`CONFIG`]. The installer runs on a temporary copy; every timestamp it
/// writes is replaced by `clock` afterwards.
pub fn install(
    installer: &Path,
    volume: &mut Vec<u8>,
    epoch: u32,
    clock: &FatClock,
) -> Result<Installed, SyslinuxError> {
    let file = TempFile::new();
    std::fs::write(&file.0, &*volume).map_err(|error| SyslinuxError::Write {
        path: file.0.clone(),
        error,
    })?;
    let output = Command::new(installer)
        .args(["--install", "--directory"])
        .arg(format!("/{DIRECTORY}"))
        .arg(&file.0)
        // mtools stamps files from these, but in local time; the restamp
        // below makes the result independent of both anyway.
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .map_err(|error| SyslinuxError::Spawn {
            installer: installer.into(),
            error,
        })?;
    if !output.status.success() {
        return Err(SyslinuxError::Failed {
            installer: installer.into(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().into(),
        });
    }
    let installed = std::fs::read(&file.0).map_err(|error| SyslinuxError::Read {
        path: file.0.clone(),
        error,
    })?;
    if installed.len() != volume.len() {
        return Err(SyslinuxError::Resized {
            installer: installer.into(),
            before: volume.len(),
            after: installed.len(),
        });
    }
    *volume = installed;
    times::restamp(volume, clock)?;
    Ok(measure(volume)?)
}

/// Checks that the installer left its files where the boot sector expects
/// them and measures them.
fn measure(volume: &[u8]) -> Result<Installed, InstalledError> {
    let fs = FileSystem::new(Cursor::new(volume.to_vec()), FsOptions::new())
        .map_err(InstalledError::Mount)?;
    let dir = fs
        .root_dir()
        .open_dir(DIRECTORY)
        .map_err(InstalledError::Directory)?;
    let mut loader = 0;
    for name in INSTALLED {
        let entry = dir
            .iter()
            .filter_map(Result::ok)
            .find(|e| e.file_name().eq_ignore_ascii_case(name))
            .ok_or(InstalledError::Missing(name))?;
        loader += entry.len();
    }
    let stats = fs.stats().map_err(InstalledError::Stats)?;
    let free = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
    Ok(Installed {
        loader,
        used: volume.len() as u64 - free,
    })
}

/// A scratch file for the installer, removed when dropped. Named after the
/// process and a counter so that parallel builds (and tests) never share one.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hv-image-esp-{}-{n}.img", std::process::id()));
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MIB;
    use crate::epoch::DEFAULT_EPOCH;
    use hvfat::{build, FatClock, FatFile, VolumeSpec};

    const INSTALLER: &str = "/usr/bin/syslinux";

    fn esp() -> Vec<u8> {
        let files = [
            FatFile {
                path: CONFIG,
                data: b"DEFAULT hv\n",
            },
            FatFile {
                path: "vmlinuz",
                data: &[0x5a; 100_000],
            },
        ];
        let spec = VolumeSpec {
            label: "HVBOOT",
            volume_id: 7,
            min_size: 2 * MIB,
            slack: ROOM,
        };
        build(&files, &spec, FatClock::leak(DEFAULT_EPOCH))
            .unwrap()
            .bytes
    }

    #[test]
    fn installs_boot_sector_and_files_reproducibly() {
        // The image build needs the installer (scripts/build installs it),
        // so its absence is a failure, not a reason to skip.
        assert!(
            Path::new(INSTALLER).exists(),
            "{INSTALLER} is missing: install the Debian package syslinux"
        );
        let clock = FatClock::leak(DEFAULT_EPOCH);
        let before = esp();
        let mut a = before.clone();
        let installed = install(Path::new(INSTALLER), &mut a, DEFAULT_EPOCH, clock).unwrap();
        assert!(installed.loader > 100_000, "{installed:?}");
        // The boot sector now holds syslinux's code and OEM name; the BPB
        // after the name is untouched.
        assert_ne!(&a[62..510], &before[62..510]);
        assert_eq!(&a[3..11], b"SYSLINUX");
        assert_eq!(&a[11..62], &before[11..62]);

        // A different clock on the installer's side changes nothing.
        let mut b = before.clone();
        install(Path::new(INSTALLER), &mut b, 1_600_000_000, clock).unwrap();
        assert!(a == b, "installation depends on the installer's clock");
    }

    #[test]
    fn missing_installer_is_named() {
        let mut volume = esp();
        let clock = FatClock::leak(DEFAULT_EPOCH);
        let err = install(Path::new("/nonexistent/syslinux"), &mut volume, 0, clock)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/syslinux"), "{err}");
        assert!(err.contains("Debian package syslinux"), "{err}");
    }
}
