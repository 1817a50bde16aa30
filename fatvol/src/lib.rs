//! FAT volumes built in memory: the image's EFI system partition and
//! HVCONFIG partition (hv-image), and the cloud-init seed disk (vmm). One
//! FAT writer for the project, so every volume gets the same fix-ups.
//!
//! fatfs formats the volume and writes the files; the submodules then work
//! on the raw bytes: `dirs` finds every directory, `dots` repairs the
//! `.`/`..` entries fatfs 0.3 gets wrong, `times` restamps entries written
//! by other tools, and `clock` is the build time as FAT stores it.

// Linked into the vmm, which must not panic on an index.
#![warn(clippy::indexing_slicing)]

mod clock;
mod dirs;
mod dots;
pub mod times;

use std::io::{self, Cursor, Read, Write};

use fatfs::{FileSystem, FormatVolumeOptions, FsOptions};

/// The fatfs this crate builds on, for callers that read a volume back or
/// edit one in place; one version for the whole project.
pub use fatfs;

pub use clock::FatClock;
pub use dirs::DirError;

pub const MIB: u64 = 1024 * 1024;

/// 2024-01-01T00:00:00Z, for tests that need some fixed build time.
#[cfg(test)]
pub(crate) const TEST_EPOCH: u32 = 1_704_067_200;

/// Why a volume could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("invalid FAT volume label {0:?}")]
    InvalidLabel(String),
    #[error("volume {label}: {content} bytes of files do not fit in {max_mib} MiB")]
    DoesNotFit {
        label: String,
        content: u64,
        max_mib: u64,
    },
    #[error("volume {label}: {what}: {error}")]
    Io {
        label: String,
        what: String,
        #[source]
        error: io::Error,
    },
    #[error("volume {label}: {error}")]
    Dirs {
        label: String,
        #[source]
        error: DirError,
    },
    #[error("{path}: {error}")]
    Read {
        path: String,
        #[source]
        error: io::Error,
    },
}

/// A file to place on the volume; directories are created as needed.
pub struct FatFile<'a> {
    /// Path from the volume root, `/`-separated, no leading `/`.
    pub path: &'a str,
    pub data: &'a [u8],
}

pub struct VolumeSpec<'a> {
    /// Volume label; at most 11 characters, upper case by FAT convention.
    pub label: &'a str,
    pub volume_id: u32,
    /// The volume is never made smaller than this.
    pub min_size: u64,
    /// Free space to leave beyond the content, e.g. for a larger kernel later.
    pub slack: u64,
}

pub struct Volume {
    pub bytes: Vec<u8>,
    /// Bytes not available for new files: metadata plus allocated clusters.
    pub used: u64,
}

/// A volume never grows past this while searching for a size that fits; the
/// image budget is far below it, so hitting it means something is wrong.
/// It also keeps fatfs choosing FAT12/16, which `dots` relies on.
const MAX_SIZE: u64 = 256 * MIB;

/// Formats a FAT volume holding `files` and sized in whole MiB: the smallest
/// size that fits the content plus `slack`, but at least `min_size`. FAT
/// overhead depends on the size chosen (cluster size, FAT length), so the
/// estimate is verified by building the volume, growing it a MiB at a time
/// until the content and the slack fit.
pub fn build(
    files: &[FatFile<'_>],
    spec: &VolumeSpec<'_>,
    clock: &'static FatClock,
) -> Result<Volume, FatError> {
    let label = label_bytes(spec.label)?;
    let mut sorted: Vec<&FatFile<'_>> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));

    let content: u64 = sorted.iter().map(|f| f.data.len() as u64).sum();
    let mut size = round_up_mib((content + spec.slack).max(spec.min_size));
    loop {
        match try_build(&sorted, size, spec, label, clock) {
            Ok(volume) if volume.bytes.len() as u64 - volume.used >= spec.slack => {
                return Ok(volume)
            }
            Ok(_) | Err(Fit::TooSmall) if size < MAX_SIZE => size += MIB,
            Ok(_) | Err(Fit::TooSmall) => {
                return Err(FatError::DoesNotFit {
                    label: spec.label.into(),
                    content,
                    max_mib: MAX_SIZE / MIB,
                })
            }
            Err(Fit::Failed(e)) => return Err(e),
        }
    }
}

enum Fit {
    TooSmall,
    Failed(FatError),
}

fn try_build(
    files: &[&FatFile<'_>],
    size: u64,
    spec: &VolumeSpec<'_>,
    label: [u8; 11],
    clock: &'static FatClock,
) -> Result<Volume, Fit> {
    let failed = |what: &str, error: io::Error| {
        Fit::Failed(FatError::Io {
            label: spec.label.into(),
            what: what.into(),
            error,
        })
    };
    // At most MAX_SIZE.
    let len = usize::try_from(size).map_err(|_| Fit::TooSmall)?;
    let mut disk = Cursor::new(vec![0u8; len]);
    fatfs::format_volume(
        &mut disk,
        FormatVolumeOptions::new()
            .volume_id(spec.volume_id)
            .volume_label(label),
    )
    .map_err(|e| failed("format", e))?;
    disk.set_position(0);

    let fs = FileSystem::new(&mut disk, FsOptions::new().time_provider(clock))
        .map_err(|e| failed("mount", e))?;
    write_files(&fs, files).map_err(|e| match e {
        Failure::TooSmall => Fit::TooSmall,
        Failure::Io(what, error) => failed(&what, error),
    })?;
    let stats = fs.stats().map_err(|e| failed("stats", e))?;
    let free = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
    // Unmounting writes back the FS info and clears the dirty flag.
    fs.unmount().map_err(|e| failed("unmount", e))?;
    let mut bytes = disk.into_inner();
    dots::repair(&mut bytes).map_err(|error| {
        Fit::Failed(FatError::Dirs {
            label: spec.label.into(),
            error,
        })
    })?;
    Ok(Volume {
        bytes,
        used: size - free,
    })
}

/// A file that could not be written: the volume is full, or an I/O error
/// during the named step.
enum Failure {
    TooSmall,
    Io(String, io::Error),
}

fn write_files<T: fatfs::ReadWriteSeek>(
    fs: &FileSystem<T>,
    files: &[&FatFile<'_>],
) -> Result<(), Failure> {
    let root = fs.root_dir();
    for file in files {
        let (parents, name) = match file.path.rsplit_once('/') {
            Some((parents, name)) => (Some(parents), name),
            None => (None, file.path),
        };
        let mut dir = root.clone();
        for component in parents.into_iter().flat_map(|p| p.split('/')) {
            dir = dir
                .create_dir(component)
                .map_err(|e| too_small_or(e, &format!("mkdir for {}", file.path)))?;
        }
        let mut handle = dir
            .create_file(name)
            .map_err(|e| too_small_or(e, &format!("create {}", file.path)))?;
        handle
            .write_all(file.data)
            .and_then(|_| handle.flush())
            .map_err(|e| too_small_or(e, &format!("write {}", file.path)))?;
    }
    Ok(())
}

/// fatfs reports a full volume as an I/O error; anything else is a real
/// failure that growing the volume would not fix.
fn too_small_or(e: io::Error, what: &str) -> Failure {
    if e.to_string().contains("No space") || e.kind() == io::ErrorKind::UnexpectedEof {
        Failure::TooSmall
    } else {
        Failure::Io(what.into(), e)
    }
}

fn label_bytes(label: &str) -> Result<[u8; 11], FatError> {
    if label.len() > 11
        || !label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(FatError::InvalidLabel(label.into()));
    }
    let mut bytes = [b' '; 11];
    // At most 11 bytes, checked above.
    for (dst, src) in bytes.iter_mut().zip(label.bytes()) {
        *dst = src;
    }
    Ok(bytes)
}

pub fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).max(1) * MIB
}

/// The contents of the file at `path` (from the root, `/`-separated) of the
/// FAT volume `volume`.
pub fn read_file(volume: &[u8], path: &str) -> Result<Vec<u8>, FatError> {
    let fail = |error| FatError::Read {
        path: path.into(),
        error,
    };
    // fatfs wants a writable volume even to read one.
    let fs = FileSystem::new(Cursor::new(volume.to_vec()), FsOptions::new()).map_err(fail)?;
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path)
        .and_then(|mut file| file.read_to_end(&mut data))
        .map_err(fail)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> &'static FatClock {
        FatClock::leak(crate::TEST_EPOCH)
    }

    fn spec(min_size: u64, slack: u64) -> VolumeSpec<'static> {
        VolumeSpec {
            label: "HVCONFIG",
            volume_id: 0xdead_beef,
            min_size,
            slack,
        }
    }

    #[test]
    fn files_read_back_with_label_and_id() {
        let big = vec![0x5a; 300_000];
        let files = [
            FatFile {
                path: "guests/example.toml",
                data: b"[machine]\n",
            },
            FatFile {
                path: "example/bzImage",
                data: &big,
            },
            FatFile {
                path: "README.txt",
                data: b"hello",
            },
        ];
        let volume = build(&files, &spec(2 * MIB, 0), clock()).unwrap();
        assert_eq!(volume.bytes.len() as u64, 2 * MIB);
        assert_eq!(read_file(&volume.bytes, "README.txt").unwrap(), b"hello");
        assert_eq!(read_file(&volume.bytes, "example/bzImage").unwrap(), big);
        assert_eq!(
            read_file(&volume.bytes, "guests/example.toml").unwrap(),
            b"[machine]\n"
        );
        assert!(
            volume.used > 300_000 && volume.used < MIB,
            "used {}",
            volume.used
        );

        let fs = FileSystem::new(Cursor::new(volume.bytes.clone()), FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "HVCONFIG");
        assert_eq!(fs.volume_id(), 0xdead_beef);
        let entry = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "README.txt")
            .unwrap();
        assert_eq!(entry.modified().date.year, 2024);
    }

    #[test]
    fn grows_to_fit_content_and_slack() {
        let big = vec![1u8; 3 << 20];
        let files = [FatFile {
            path: "vmlinuz",
            data: &big,
        }];
        let volume = build(&files, &spec(MIB, MIB), clock()).unwrap();
        let size = volume.bytes.len() as u64;
        assert_eq!(size % MIB, 0);
        assert!(size - volume.used >= MIB, "slack kept");
        assert!(size <= 6 * MIB, "no needless growth: {size}");
        assert_eq!(read_file(&volume.bytes, "vmlinuz").unwrap(), big);
    }

    #[test]
    fn deterministic() {
        let files = [FatFile {
            path: "a/b/c.txt",
            data: b"x",
        }];
        let a = build(&files, &spec(MIB, 0), clock()).unwrap();
        let b = build(&files, &spec(MIB, 0), clock()).unwrap();
        assert!(a.bytes == b.bytes);
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let volume = build(&[], &spec(MIB, 0), clock()).unwrap();
        let err = read_file(&volume.bytes, "no/such.txt").unwrap_err();
        assert!(err.to_string().starts_with("no/such.txt: "), "{err}");
    }

    #[test]
    fn rejects_bad_label() {
        let spec = VolumeSpec {
            label: "hvconfig",
            volume_id: 0,
            min_size: MIB,
            slack: 0,
        };
        assert!(build(&[], &spec, clock()).is_err());
    }
}
