//! ext2/3/4 through ext4-view: read-only by construction (the crate has
//! no write path), and it replays the journal in memory only.

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use super::disk::Slice;
use super::fs::{buffer_for, DirItem, FileError, Fs};

const SUPERBLOCK: u64 = 1024;
const MAGIC_OFFSET: u64 = SUPERBLOCK + 56;
const MAGIC: [u8; 2] = [0x53, 0xef];

/// True if the ext2/3/4 superblock magic is where it belongs.
pub(super) fn looks_like(slice: &Slice) -> bool {
    let mut magic = [0u8; 2];
    slice.read_exact_at(&mut magic, MAGIC_OFFSET).is_ok() && magic == MAGIC
}

/// The partition as ext4-view reads it: every read bounded by the slice.
struct Reader(Slice);

impl Ext4Read for Reader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(dst, start_byte).map_err(Into::into)
    }
}

pub(super) struct Ext4Fs {
    fs: Ext4,
}

impl Ext4Fs {
    pub(super) fn mount(slice: &Slice) -> Result<Self, String> {
        let fs = Ext4::load(Box::new(Reader(slice.clone()))).map_err(|e| e.to_string())?;
        Ok(Self { fs })
    }
}

fn file_error(path: &str, e: Ext4Error) -> FileError {
    match e {
        Ext4Error::NotFound => FileError::NotFound(path.into()),
        Ext4Error::IsADirectory | Ext4Error::IsASpecialFile => FileError::NotAFile(path.into()),
        Ext4Error::NotADirectory => FileError::NotADir(path.into()),
        Ext4Error::TooManySymlinks => FileError::Loop(path.into()),
        e => FileError::Fs {
            path: path.into(),
            reason: e.to_string(),
        },
    }
}

impl Fs for Ext4Fs {
    fn kind(&self) -> &'static str {
        "ext4"
    }

    fn uuid(&self) -> Option<String> {
        let uuid = self.fs.uuid();
        (uuid.as_bytes() != &[0; 16]).then(|| uuid.to_string())
    }

    fn read(&self, path: &str, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
        let mut file = self.fs.open(path).map_err(|e| file_error(path, e))?;
        let size = file.metadata().len();
        let mut data = buffer_for(path, what, size, limit)?;
        let size = data.len();
        let mut done = 0;
        while let Some(rest) = data.get_mut(done..) {
            if rest.is_empty() {
                break;
            }
            match file.read_bytes(rest).map_err(|e| file_error(path, e))? {
                0 => {
                    return Err(FileError::Fs {
                        path: path.into(),
                        reason: format!("ends after {done} of its {size} bytes"),
                    })
                }
                n => done += n,
            }
        }
        Ok(data)
    }

    fn read_link(&self, path: &str) -> Result<Option<String>, FileError> {
        let meta = self
            .fs
            .symlink_metadata(path)
            .map_err(|e| file_error(path, e))?;
        if !meta.is_symlink() {
            return Ok(None);
        }
        let target = self.fs.read_link(path).map_err(|e| file_error(path, e))?;
        let target = target.to_str().map_err(|_| FileError::Fs {
            path: path.into(),
            reason: "its link target is not UTF-8".into(),
        })?;
        Ok(Some(target.to_owned()))
    }

    fn list(&self, path: &str, max: usize) -> Result<Vec<DirItem>, FileError> {
        let dir = self.fs.read_dir(path).map_err(|e| file_error(path, e))?;
        let mut items = Vec::new();
        for entry in dir {
            if items.len() >= max {
                return Err(FileError::DirTooLarge {
                    path: path.into(),
                    max,
                });
            }
            let entry = entry.map_err(|e| file_error(path, e))?;
            // A name that is not UTF-8 names no boot file we look for.
            let Ok(name) = entry.file_name().as_str().map(str::to_owned) else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let is_file = entry
                .file_type()
                .map(|t| t.is_regular_file() || t.is_symlink())
                .unwrap_or(false);
            items.push(DirItem { name, is_file });
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }
}
