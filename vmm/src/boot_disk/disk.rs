//! The disk as the finder sees it: a read-only byte array behind
//! [`ReadAt`], cut into partitions by [`Slice`]. Every read is bounded by
//! the slice it is made through, and the only call on the disk is
//! `read_at`, so under the vmm's seccomp filter the whole search is
//! `pread64` on the disk fd plus heap allocation.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::rc::Rc;

/// A read-only disk. Nothing here can write: there is no write method.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`, like `pread`; a short
    /// read or 0 at the end is allowed.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The disk's size in bytes. [`super::find_boot`] calls it once,
    /// before any read.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    /// `fstat`, and for a block device (whose `st_size` is 0) `lseek` to
    /// the end: the offset it moves is never used, every read is a
    /// `pread`. An error reads as 0, which `find_boot` refuses as too
    /// small; [`DiskFile`] reports it instead.
    fn len(&self) -> u64 {
        disk_size(self).unwrap_or(0)
    }
}

fn disk_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let mut file = file;
        file.seek(SeekFrom::End(0))
    } else {
        Ok(meta.len())
    }
}

/// A disk file whose size was taken once, when it was adopted: afterwards
/// `len` is free and `read_at` is the only system call, which is what a
/// seccomp filter allowing only `pread64` needs.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    len: u64,
}

impl DiskFile {
    /// Takes the size of `file` (a regular file or a block device).
    pub fn new(file: File) -> io::Result<Self> {
        let len = disk_size(&file)?;
        Ok(Self { file, len })
    }

    /// Gives the file back, for the block device model.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl ReadAt for DiskFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.file, buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(src) = self.get(start..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn len(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for &[u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
}

/// What one search may read, in bytes and in reads. A disk whose
/// structures loop (a FAT directory whose cluster chain points back at
/// itself, full of deleted entries) would otherwise keep fatfs reading
/// forever inside one call; once the budget is spent every read fails,
/// and the search ends with that error.
pub(super) struct Budget {
    bytes: Cell<u64>,
    reads: Cell<u64>,
}

impl Budget {
    pub(super) fn new(bytes: u64, reads: u64) -> Rc<Self> {
        Rc::new(Self {
            bytes: Cell::new(bytes),
            reads: Cell::new(reads),
        })
    }

    fn spend(&self, bytes: u64) -> io::Result<()> {
        match (
            self.bytes.get().checked_sub(bytes),
            self.reads.get().checked_sub(1),
        ) {
            (Some(b), Some(r)) => {
                self.bytes.set(b);
                self.reads.set(r);
                Ok(())
            }
            _ => Err(io::Error::other(
                "the read budget is spent: the disk's structures make the search read on \
                 (a loop?)",
            )),
        }
    }
}

/// A byte range of the disk: a partition, or the whole disk. Cloning is
/// cheap (the disk is shared), which the file system readers need: they
/// own their reader.
#[derive(Clone)]
pub(super) struct Slice {
    disk: Rc<dyn ReadAt>,
    budget: Rc<Budget>,
    start: u64,
    len: u64,
}

impl Slice {
    pub(super) fn whole(disk: Rc<dyn ReadAt>, len: u64, budget: Rc<Budget>) -> Self {
        Self {
            disk,
            budget,
            start: 0,
            len,
        }
    }

    /// The part `start..start + len` of this slice, or `None` if it does
    /// not fit inside.
    pub(super) fn sub(&self, start: u64, len: u64) -> Option<Self> {
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(Self {
            disk: Rc::clone(&self.disk),
            budget: Rc::clone(&self.budget),
            start: self.start.checked_add(start)?,
            len,
        })
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from `offset`, or fails: a read past the slice's end is
    /// an error, never a read of the next partition.
    pub(super) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} bytes at byte {offset} are past the end ({} bytes)",
                        buf.len(),
                        self.len
                    ),
                )
            })?;
        debug_assert!(end <= self.len);
        self.budget.spend(buf.len() as u64)?;
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..) {
            if rest.is_empty() {
                break;
            }
            let at = self.start + offset + done as u64;
            match self.disk.read_at(rest, at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the disk ends before byte {at}"),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A `Read + Seek` view, for gptman.
    pub(super) fn cursor(&self) -> Cursor {
        Cursor {
            slice: self.clone(),
            pos: 0,
        }
    }

    /// A `Read + Write + Seek` view for fatfs whose writes all fail.
    pub(super) fn read_only(&self) -> ReadOnly {
        ReadOnly {
            cursor: self.cursor(),
            writes: Rc::default(),
        }
    }
}

/// A position in a [`Slice`].
pub(super) struct Cursor {
    slice: Slice,
    pos: u64,
}

impl Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.slice.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let Some(dst) = buf.get_mut(..n) else {
            return Ok(0);
        };
        self.slice.read_exact_at(dst, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.slice.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// What fatfs mounts: reads through a [`Cursor`], refuses every write and
/// counts the attempts (none are expected: fatfs writes only to change
/// something, and a mount for reading changes nothing).
pub(super) struct ReadOnly {
    cursor: Cursor,
    writes: Rc<Cell<u64>>,
}

impl ReadOnly {
    /// Shares the counter of refused writes.
    #[cfg(test)]
    pub(super) fn write_attempts(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.writes)
    }
}

impl Read for ReadOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cursor.read(buf)
    }
}

impl Seek for ReadOnly {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.cursor.seek(pos)
    }
}

impl io::Write for ReadOnly {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        self.writes.set(self.writes.get().saturating_add(1));
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the guest's disk is read-only while its boot files are looked for",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(bytes: &[u8]) -> Slice {
        let disk: Rc<dyn ReadAt> = Rc::new(bytes.to_vec());
        Slice::whole(disk, bytes.len() as u64, Budget::new(1 << 20, 1000))
    }

    #[test]
    fn reads_stay_inside_the_slice() {
        let whole = slice(&[0, 1, 2, 3, 4, 5, 6, 7]);
        let part = whole.sub(2, 4).unwrap();
        let mut buf = [0u8; 4];
        part.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [2, 3, 4, 5]);
        assert!(part.read_exact_at(&mut buf, 1).is_err());
        assert!(part.read_exact_at(&mut buf, u64::MAX).is_err());
        assert!(whole.sub(6, 4).is_none());
        assert!(whole.sub(u64::MAX, 2).is_none());
    }

    #[test]
    fn a_short_disk_is_an_error_not_a_loop() {
        // The disk claims more than it holds: the read must end.
        struct Liar;
        impl ReadAt for Liar {
            fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
                Ok(0)
            }
            fn len(&self) -> u64 {
                1 << 20
            }
        }
        let s = Slice::whole(Rc::new(Liar), 1 << 20, Budget::new(1 << 20, 1000));
        let mut buf = [0u8; 16];
        let err = s.read_exact_at(&mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reads_end_when_the_budget_is_spent() {
        let disk: Rc<dyn ReadAt> = Rc::new(vec![0u8; 64]);
        let s = Slice::whole(disk, 64, Budget::new(40, 3));
        let mut buf = [0u8; 16];
        s.read_exact_at(&mut buf, 0).unwrap();
        s.read_exact_at(&mut buf, 16).unwrap();
        assert!(s.read_exact_at(&mut buf, 32).is_err(), "bytes spent");
        let s = Slice::whole(Rc::new(vec![0u8; 64]), 64, Budget::new(1000, 2));
        let mut one = [0u8; 1];
        s.read_exact_at(&mut one, 0).unwrap();
        s.read_exact_at(&mut one, 0).unwrap();
        let err = s.read_exact_at(&mut one, 0).unwrap_err();
        assert!(err.to_string().contains("budget"), "{err}");
    }

    #[test]
    fn the_read_only_view_refuses_and_counts_writes() {
        use std::io::Write;
        let mut ro = slice(&[9; 16]).read_only();
        let writes = ro.write_attempts();
        assert!(ro.write(&[1]).is_err());
        assert_eq!(writes.get(), 1);
        let mut buf = [0u8; 4];
        ro.seek(SeekFrom::End(-4)).unwrap();
        ro.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [9; 4]);
        assert!(ro.seek(SeekFrom::Current(-100)).is_err());
    }

    #[test]
    fn a_file_reads_like_pread() {
        let path = std::env::temp_dir().join(format!("hv-boot-disk-{}", std::process::id()));
        std::fs::write(&path, b"hello world").unwrap();
        let file = DiskFile::new(File::open(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.len(), 11);
        let mut buf = [0u8; 5];
        assert_eq!(file.read_at(&mut buf, 6).unwrap(), 5);
        assert_eq!(&buf, b"world");
    }
}
