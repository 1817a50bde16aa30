//! FAT12/16/32 (an ESP, or a /boot of its own) through fatfs, mounted over
//! [`ReadOnly`]: fatfs wants a writable disk, and gets one whose writes
//! all fail. It writes only when something changes (a file written, the
//! dirty flag set, FSInfo updated) and reading changes nothing; the
//! access-date update that would is off by default and stays off.

use std::io::{self, Read, Seek, SeekFrom};

use fatfs::{FileSystem, FsOptions};

use super::disk::{ReadOnly, Slice};
use super::fs::{buffer_for, DirItem, FileError, Fs};

/// True if sector 0 is a FAT boot sector: the 0x55AA signature and "FAT"
/// in the FAT12/16 or the FAT32 file system type field.
pub(super) fn looks_like(slice: &Slice) -> bool {
    let mut boot = [0u8; 512];
    if slice.read_exact_at(&mut boot, 0).is_err() {
        return false;
    }
    boot.get(510..512) == Some(&[0x55, 0xaa])
        && (boot.get(0x36..0x39) == Some(b"FAT") || boot.get(0x52..0x55) == Some(b"FAT"))
}

pub(super) struct FatFs {
    fs: FileSystem<ReadOnly>,
}

impl FatFs {
    pub(super) fn mount(slice: &Slice) -> Result<Self, String> {
        Self::mount_view(slice.read_only())
    }

    pub(super) fn mount_view(view: ReadOnly) -> Result<Self, String> {
        let fs = FileSystem::new(view, FsOptions::new().update_accessed_date(false))
            .map_err(|e| e.to_string())?;
        Ok(Self { fs })
    }
}

/// fatfs takes paths without the leading slash.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn file_error(path: &str, e: &io::Error) -> FileError {
    match e.kind() {
        io::ErrorKind::NotFound => FileError::NotFound(path.into()),
        _ => FileError::Fs {
            path: path.into(),
            reason: e.to_string(),
        },
    }
}

impl Fs for FatFs {
    fn kind(&self) -> &'static str {
        "vfat"
    }

    /// The volume serial number as blkid prints it, `ABCD-1234`.
    fn uuid(&self) -> Option<String> {
        let id = self.fs.volume_id();
        (id != 0).then(|| format!("{:04X}-{:04X}", id >> 16, id & 0xffff))
    }

    fn read(&self, path: &str, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
        let mut file = self
            .fs
            .root_dir()
            .open_file(relative(path))
            .map_err(|e| file_error(path, &e))?;
        let size = file
            .seek(SeekFrom::End(0))
            .and_then(|size| file.seek(SeekFrom::Start(0)).map(|_| size))
            .map_err(|e| file_error(path, &e))?;
        let mut data = buffer_for(path, what, size, limit)?;
        let size = data.len();
        file.read_exact(&mut data).map_err(|e| FileError::Fs {
            path: path.into(),
            reason: format!("cannot read its {size} bytes: {e}"),
        })?;
        Ok(data)
    }

    /// FAT has no symbolic links.
    fn read_link(&self, path: &str) -> Result<Option<String>, FileError> {
        let rel = relative(path);
        let root = self.fs.root_dir();
        match root.open_file(rel) {
            Ok(_) => Ok(None),
            Err(_) if rel.is_empty() || root.open_dir(rel).is_ok() => Ok(None),
            Err(e) => Err(file_error(path, &e)),
        }
    }

    fn list(&self, path: &str, max: usize) -> Result<Vec<DirItem>, FileError> {
        let root = self.fs.root_dir();
        let rel = relative(path);
        let dir = if rel.is_empty() {
            root
        } else {
            root.open_dir(rel).map_err(|e| file_error(path, &e))?
        };
        let mut items = Vec::new();
        // A looping cluster chain makes a directory endless: the count
        // ends it.
        for entry in dir.iter() {
            if items.len() >= max {
                return Err(FileError::DirTooLarge {
                    path: path.into(),
                    max,
                });
            }
            let entry = entry.map_err(|e| file_error(path, &e))?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            items.push(DirItem {
                name,
                is_file: entry.is_file(),
            });
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }
}
