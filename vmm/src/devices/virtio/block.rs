//! virtio-blk backed by a raw image file or a host block device.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::complaints::Complaints;
use super::queue::{Chain, QueueContext, MAX_BYTES_PER_EVENT};
use super::{read_config_bytes, DeviceError, QueueProcessor, VirtioDevice};

pub const QUEUE_SIZE: u16 = 256;
const SECTOR_SIZE: u64 = 512;
const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;
/// Segments per request we accept; the header and status descriptors
/// share the queue with them.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest segment we accept (VIRTIO_BLK_F_SIZE_MAX), so no request the
/// driver builds carries more than `SEG_MAX * SIZE_MAX` bytes of data.
const SIZE_MAX: u32 = 64 * 1024;
/// Longest data transfer of one request; longer chains fail with IOERR
/// instead of holding the worker (and the disk) for the whole transfer.
const MAX_REQUEST_BYTES: usize = SEG_MAX as usize * SIZE_MAX as usize;
/// What a FLUSH costs against the worker's per-wake-up byte budget: a
/// few FLUSHes per wake-up, however many the guest queues.
const FLUSH_COST: u64 = MAX_BYTES_PER_EVENT / 4;
/// Bounce buffer between guest memory and the file.
const CHUNK: usize = 128 * 1024;
const REQUEST_HEADER_LEN: usize = 16;

/// The status byte's values (`VIRTIO_BLK_S_*`, which the bindings give
/// as `u32`).
const STATUS_OK: u8 = 0;
const STATUS_IOERR: u8 = 1;
const STATUS_UNSUPP: u8 = 2;
const _: () = assert!(
    STATUS_OK as u32 == VIRTIO_BLK_S_OK
        && STATUS_IOERR as u32 == VIRTIO_BLK_S_IOERR
        && STATUS_UNSUPP as u32 == VIRTIO_BLK_S_UNSUPP
);

/// A virtio block device.
pub struct Block {
    file: Arc<File>,
    capacity_bytes: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    config: [u8; 16],
}

impl Block {
    /// Opens `path` (read-write unless `read_only`).
    pub fn open(path: &Path, read_only: bool) -> io::Result<Block> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Block::new(file, read_only)
    }

    /// Uses an already-open image or block device. The capacity is its size
    /// rounded down to whole 512-byte sectors; the serial number defaults to
    /// one derived from the file's device and inode numbers.
    pub fn new(mut file: File, read_only: bool) -> io::Result<Block> {
        // Works for block devices too, where metadata reports length 0.
        let size = file.seek(SeekFrom::End(0))?;
        // The device only uses positioned I/O; the file offset goes back to
        // the start so a stray plain write(2) on the fd cannot grow the
        // image past its end.
        file.seek(SeekFrom::Start(0))?;
        let meta = file.metadata()?;
        let capacity_bytes = size - size % SECTOR_SIZE;
        let mut config = [0u8; 16];
        config[0..8].copy_from_slice(&(capacity_bytes / SECTOR_SIZE).to_le_bytes());
        config[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        let mut block = Block {
            file: Arc::new(file),
            capacity_bytes,
            read_only,
            id: [0; ID_LEN],
            config,
        };
        block.set_id(&format!("hv{:x}-{:x}", meta.dev(), meta.ino()));
        Ok(block)
    }

    /// Sets the serial number returned to GET_ID (at most 20 bytes are used;
    /// the guest sees it as /sys/block/vdX/serial).
    pub fn with_id(mut self, id: &str) -> Block {
        self.set_id(id);
        self
    }

    fn set_id(&mut self, id: &str) {
        self.id = [0; ID_LEN];
        for (dst, src) in self.id.iter_mut().zip(id.bytes()) {
            *dst = src;
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_bytes / SECTOR_SIZE
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut features = (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1u64 << VIRTIO_BLK_F_SIZE_MAX)
            | (1u64 << VIRTIO_RING_F_INDIRECT_DESC);
        if self.read_only {
            features |= 1u64 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn processor(&mut self) -> Box<dyn QueueProcessor> {
        Box::new(BlockProcessor {
            file: self.file.clone(),
            capacity_bytes: self.capacity_bytes,
            read_only: self.read_only,
            id: self.id,
            buf: vec![0; CHUNK],
            complaints: Complaints::new("virtio-blk"),
            io_errors: Complaints::new("virtio-blk"),
        })
    }
}

struct BlockProcessor {
    file: Arc<File>,
    capacity_bytes: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    buf: Vec<u8>,
    complaints: Complaints,
    /// Host I/O errors: a guest can re-read a bad sector forever. Counted
    /// apart so guest misbehaviour cannot hide them.
    io_errors: Complaints,
}

impl QueueProcessor for BlockProcessor {
    fn io_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&*self.file))
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = ctx.pop(index)? {
            let head = chain.head_index();
            let (used, cost) = self.handle(ctx.mem(), chain);
            ctx.add_used(index, head, used)?;
            ctx.charge(cost);
        }
        Ok(())
    }
}

impl BlockProcessor {
    /// Executes one request; returns the number of bytes written into the
    /// chain (data plus the status byte) and what the request cost against
    /// the wake-up's byte budget.
    fn handle(&mut self, mem: &GuestMemoryMmap, chain: Chain) -> (u32, u64) {
        let mut data_out = match Writer::new(mem, chain.clone()) {
            Ok(w) => w,
            Err(e) => {
                self.complaints
                    .warn(format_args!("request with bad writable buffers: {e}"));
                return (0, 0);
            }
        };
        // The status byte is the last device-writable byte of the chain.
        let Some(status_at) = data_out.available_bytes().checked_sub(1) else {
            self.complaints
                .warn(format_args!("request without room for a status byte"));
            return (0, 0);
        };
        let Ok(mut status_out) = data_out.split_at(status_at) else {
            return (0, 0);
        };
        let mut cost = 0;
        let status = match self.execute(mem, chain, &mut data_out, &mut cost) {
            Ok(()) => STATUS_OK,
            Err(status) => status,
        };
        // A chain cannot describe more than 4 GiB (virtio-queue stops
        // iterating there), so the saturation never happens.
        let written = u32::try_from(data_out.bytes_written()).unwrap_or(u32::MAX);
        if status_out.write_all(&[status]).is_err() {
            return (written, cost);
        }
        (written.saturating_add(1), cost)
    }

    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: Chain,
        data_out: &mut Writer,
        cost: &mut u64,
    ) -> Result<(), u8> {
        let mut data_in = Reader::new(mem, chain).map_err(|e| {
            self.complaints
                .warn(format_args!("request with bad readable buffers: {e}"));
            STATUS_IOERR
        })?;
        let mut header = [0u8; REQUEST_HEADER_LEN];
        if data_in.read_exact(&mut header).is_err() {
            self.complaints
                .warn(format_args!("request header shorter than 16 bytes"));
            return Err(STATUS_IOERR);
        }
        let (kind, sector) = parse_header(&header);
        match kind {
            VIRTIO_BLK_T_IN => {
                self.expect_no_data("read", data_in.available_bytes())?;
                self.read(sector, data_out, cost)
            }
            VIRTIO_BLK_T_OUT => {
                self.expect_no_data("write", data_out.available_bytes())?;
                self.write(sector, &mut data_in, cost)
            }
            VIRTIO_BLK_T_FLUSH => {
                *cost = FLUSH_COST;
                self.file.sync_data().map_err(|e| {
                    self.io_errors.error(format_args!("flush failed: {e}"));
                    STATUS_IOERR
                })
            }
            VIRTIO_BLK_T_GET_ID => {
                if data_out.available_bytes() == 0 {
                    self.complaints
                        .warn(format_args!("GET_ID without a writable buffer"));
                    return Err(STATUS_IOERR);
                }
                let n = data_out.available_bytes().min(ID_LEN);
                let id = self.id.get(..n).unwrap_or_default();
                data_out.write_all(id).map_err(|_| STATUS_IOERR)
            }
            _ => Err(STATUS_UNSUPP),
        }
    }

    /// Rejects data buffers pointing the wrong way (device-readable buffers
    /// in a read, device-writable ones in a write).
    fn expect_no_data(&mut self, what: &str, wrong_way: usize) -> Result<(), u8> {
        if wrong_way == 0 {
            return Ok(());
        }
        self.complaints.warn(format_args!(
            "{what} request with {wrong_way} bytes of buffers in the wrong direction"
        ));
        Err(STATUS_IOERR)
    }

    /// Byte offset of a `len`-byte transfer at `sector`, if it is whole
    /// sectors and lies inside the disk.
    fn check_range(&mut self, sector: u64, len: usize) -> Result<u64, u8> {
        if len > MAX_REQUEST_BYTES {
            self.complaints.warn(format_args!(
                "{len}-byte transfer is longer than the {MAX_REQUEST_BYTES} bytes a request may move"
            ));
            return Err(STATUS_IOERR);
        }
        let len = len as u64;
        let offset = sector.checked_mul(SECTOR_SIZE);
        let end = offset.and_then(|o| o.checked_add(len));
        match (offset, end) {
            (Some(offset), Some(end)) if len % SECTOR_SIZE == 0 && end <= self.capacity_bytes => {
                Ok(offset)
            }
            _ => {
                self.complaints.warn(format_args!(
                    "{len}-byte transfer at sector {sector} is outside the {}-byte disk \
                     or not whole sectors",
                    self.capacity_bytes
                ));
                Err(STATUS_IOERR)
            }
        }
    }

    fn read(&mut self, sector: u64, out: &mut Writer, cost: &mut u64) -> Result<(), u8> {
        let mut left = out.available_bytes();
        let mut offset = self.check_range(sector, left)?;
        *cost = left as u64;
        while left > 0 {
            let n = left.min(self.buf.len());
            let Some(chunk) = self.buf.get_mut(..n) else {
                return Err(STATUS_IOERR);
            };
            if let Err(e) = self.file.read_exact_at(chunk, offset) {
                self.io_errors
                    .error(format_args!("read at byte {offset} failed: {e}"));
                return Err(STATUS_IOERR);
            }
            out.write_all(chunk).map_err(|_| STATUS_IOERR)?;
            left -= n;
            offset += n as u64;
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, data: &mut Reader, cost: &mut u64) -> Result<(), u8> {
        if self.read_only {
            self.complaints
                .warn(format_args!("write to a read-only disk refused"));
            return Err(STATUS_IOERR);
        }
        let mut left = data.available_bytes();
        let mut offset = self.check_range(sector, left)?;
        *cost = left as u64;
        while left > 0 {
            let n = left.min(self.buf.len());
            let Some(chunk) = self.buf.get_mut(..n) else {
                return Err(STATUS_IOERR);
            };
            data.read_exact(chunk).map_err(|_| STATUS_IOERR)?;
            if let Err(e) = self.file.write_all_at(chunk, offset) {
                self.io_errors
                    .error(format_args!("write at byte {offset} failed: {e}"));
                return Err(STATUS_IOERR);
            }
            left -= n;
            offset += n as u64;
        }
        Ok(())
    }
}

fn parse_header(header: &[u8; REQUEST_HEADER_LEN]) -> (u32, u64) {
    let mut kind = [0u8; 4];
    let mut sector = [0u8; 8];
    kind.copy_from_slice(&header[0..4]);
    sector.copy_from_slice(&header[8..16]);
    (u32::from_le_bytes(kind), u64::from_le_bytes(sector))
}

#[cfg(test)]
// Test drivers split 64-bit addresses into 32-bit registers and build
// small test patterns and lengths: the truncation is what they mean.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::virtio::test_support::driver::{scratch_file, Driver, DATA};
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_CONFIG;

    const DISK: usize = 64 * 1024;
    const HDR: u64 = DATA;
    const BUF: u64 = DATA + 0x1000;
    const STATUS: u64 = DATA + 0x100;

    fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    fn disk(read_only: bool) -> (Driver, File) {
        let file = scratch_file(DISK);
        let block = Block::new(file.try_clone().unwrap(), read_only).unwrap();
        let mut d = Driver::new(Box::new(block));
        d.start(1 << VIRTIO_BLK_F_FLUSH, 1, 256);
        (d, file)
    }

    /// Sends a request laid out the way Linux does (header, data, status);
    /// returns (status, used length).
    fn request(d: &mut Driver, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        d.write_mem(HDR, &header(kind, sector));
        d.write_mem(STATUS, &[0xff]);
        let mut chain = vec![(HDR, 16, false)];
        if let Some((len, writable)) = data {
            chain.push((BUF, len, writable));
        }
        chain.push((STATUS, 1, true));
        let head = d.submit(0, &chain);
        let (id, len) = d.wait_used(0);
        assert_eq!(id, u32::from(head));
        (d.read_mem(STATUS, 1)[0], len)
    }

    #[test]
    fn config_reports_capacity_and_features() {
        let (mut d, _file) = disk(true);
        let mut cap = [0u8; 8];
        d.dev.read(u64::from(VIRTIO_MMIO_CONFIG), &mut cap);
        assert_eq!(u64::from_le_bytes(cap), (DISK / 512) as u64);
        let features = d.device_features();
        assert_ne!(features & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(features & (1 << VIRTIO_BLK_F_FLUSH), 0);
    }

    #[test]
    fn read_write_flush_get_id() {
        let (mut d, file) = disk(false);
        // Read sectors 2..4.
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 2, Some((1024, true))),
            (STATUS_OK, 1025)
        );
        let mut expected = vec![0u8; 1024];
        file.read_exact_at(&mut expected, 1024).unwrap();
        assert_eq!(d.read_mem(BUF, 1024), expected);

        // Write sector 5 and see it on the host.
        let pattern: Vec<u8> = (0..512).map(|i| (i * 7) as u8).collect();
        d.write_mem(BUF, &pattern);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 5, Some((512, false))),
            (STATUS_OK, 1)
        );
        let mut on_disk = vec![0u8; 512];
        file.read_exact_at(&mut on_disk, 5 * 512).unwrap();
        assert_eq!(on_disk, pattern);

        assert_eq!(request(&mut d, VIRTIO_BLK_T_FLUSH, 0, None), (STATUS_OK, 1));

        let block = Block::new(scratch_file(512), false)
            .unwrap()
            .with_id("disk-0");
        let mut d2 = Driver::new(Box::new(block));
        d2.start(0, 1, 256);
        assert_eq!(
            request(&mut d2, VIRTIO_BLK_T_GET_ID, 0, Some((20, true))),
            (STATUS_OK, 21)
        );
        assert_eq!(&d2.read_mem(BUF, 20)[..8], b"disk-0\0\0");
    }

    #[test]
    fn indirect_request_as_linux_sends_it() {
        let (mut d, file) = disk(false);
        assert_ne!(d.device_features() & (1 << VIRTIO_RING_F_INDIRECT_DESC), 0);
        let table = DATA + 0x8000;
        let desc = |addr: u64, len: u32, flags: u32, next: u16| {
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&(flags as u16).to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            b
        };
        use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT as N, VRING_DESC_F_WRITE as W};
        d.write_mem(HDR, &header(VIRTIO_BLK_T_IN, 8));
        d.write_mem(table, &desc(HDR, 16, N, 1));
        d.write_mem(table + 16, &desc(BUF, 512, N | W, 2));
        d.write_mem(table + 32, &desc(BUF + 0x1000, 512, N | W, 3));
        d.write_mem(table + 48, &desc(STATUS, 1, W, 0));
        d.write_desc(
            0,
            0,
            table,
            64,
            virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
            0,
        );
        d.push_avail(0, 0);
        d.kick(0);
        assert_eq!(d.wait_used(0), (0, 1025));
        assert_eq!(d.read_mem(STATUS, 1), [STATUS_OK]);
        let mut expected = vec![0u8; 1024];
        file.read_exact_at(&mut expected, 8 * 512).unwrap();
        assert_eq!(d.read_mem(BUF, 512), expected[..512]);
        assert_eq!(d.read_mem(BUF + 0x1000, 512), expected[512..]);
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let (mut d, file) = disk(true);
        d.write_mem(BUF, &[0xaa; 512]);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((512, false))).0,
            STATUS_IOERR
        );
        let mut first = [0u8; 512];
        file.read_exact_at(&mut first, 0).unwrap();
        assert_ne!(first, [0xaa; 512]);
    }

    #[test]
    fn out_of_range_and_partial_sectors_fail() {
        let (mut d, _file) = disk(false);
        let last = (DISK / 512) as u64;
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, last - 1, Some((512, true))).0,
            STATUS_OK
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, last, Some((512, true))).0,
            STATUS_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, last - 1, Some((1024, true))).0,
            STATUS_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, u64::MAX / 256, Some((512, false))).0,
            STATUS_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 0, Some((100, true))).0,
            STATUS_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_DISCARD, 0, Some((16, false))).0,
            STATUS_UNSUPP
        );
    }

    #[test]
    fn wrong_direction_buffers_fail() {
        let (mut d, _file) = disk(false);
        // Read whose data buffer is device-readable.
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 0, Some((512, false))).0,
            STATUS_IOERR
        );
        // Write whose data buffer is device-writable.
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((512, true))).0,
            STATUS_IOERR
        );
        // Header in a device-writable buffer: no header to read.
        d.write_mem(HDR, &header(VIRTIO_BLK_T_IN, 0));
        d.submit(0, &[(HDR, 16, true), (STATUS, 1, true)]);
        assert_eq!(d.wait_used(0).1, 1);
        assert_eq!(d.read_mem(STATUS, 1)[0], STATUS_IOERR);
        // Status byte in a device-readable buffer: nothing can be reported,
        // but the chain still comes back.
        d.submit(0, &[(HDR, 16, false), (STATUS, 1, false)]);
        assert_eq!(d.wait_used(0).1, 0);
        assert_eq!(d.status() & 0x40, 0);
    }

    #[test]
    fn bad_addresses_and_huge_lengths_fail() {
        let (mut d, _file) = disk(false);
        d.write_mem(HDR, &header(VIRTIO_BLK_T_IN, 0));
        // Data buffer beyond the end of guest memory.
        d.write_mem(STATUS, &[0xff]);
        d.submit(
            0,
            &[
                (HDR, 16, false),
                (0xffff_0000_0000, 512, true),
                (STATUS, 1, true),
            ],
        );
        // The writable part is unusable, so nothing (not even the status)
        // is written.
        assert_eq!(d.wait_used(0).1, 0);
        // Huge data length straddling the end of memory.
        d.submit(
            0,
            &[(HDR, 16, false), (BUF, u32::MAX, true), (STATUS, 1, true)],
        );
        assert_eq!(d.wait_used(0).1, 0);
        // Header outside memory, valid status: IOERR.
        d.submit(0, &[(u64::MAX - 8, 16, false), (STATUS, 1, true)]);
        assert_eq!(d.wait_used(0).1, 1);
        assert_eq!(d.read_mem(STATUS, 1)[0], STATUS_IOERR);
        // A large read inside memory but beyond the disk: IOERR.
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 0, Some((1 << 20, true))).0,
            STATUS_IOERR
        );
        assert_eq!(
            d.status() & 0x40,
            0,
            "request errors must not break the device"
        );
    }

    const BIG_DISK: usize = 1 << 20;
    /// Where each whole-disk read lands: the top MiB of guest memory.
    const BIG_BUF: u64 = 0x10_0000;

    /// Queues 256 reads of the whole 1 MiB disk (indirect chains: header,
    /// data, status), published with a single kick.
    fn flood_of_whole_disk_reads() -> Driver {
        use crate::devices::virtio::test_support::driver::MEM_SIZE;
        use virtio_bindings::virtio_ring::{
            VRING_DESC_F_INDIRECT as I, VRING_DESC_F_NEXT as N, VRING_DESC_F_WRITE as W,
        };
        assert_eq!(BIG_BUF as usize + BIG_DISK, MEM_SIZE);
        let block = Block::new(scratch_file(BIG_DISK), false).unwrap();
        let mut d = Driver::new(Box::new(block));
        d.start(0, 1, 256);
        d.write_mem(HDR, &header(VIRTIO_BLK_T_IN, 0));
        let desc = |addr: u64, len: u32, flags: u32, next: u16| {
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&addr.to_le_bytes());
            b[8..12].copy_from_slice(&len.to_le_bytes());
            b[12..14].copy_from_slice(&(flags as u16).to_le_bytes());
            b[14..16].copy_from_slice(&next.to_le_bytes());
            b
        };
        for i in 0..256u16 {
            let table = DATA + 0x8000 + u64::from(i) * 48;
            d.write_mem(table, &desc(HDR, 16, N, 1));
            d.write_mem(table + 16, &desc(BIG_BUF, BIG_DISK as u32, N | W, 2));
            d.write_mem(table + 32, &desc(STATUS + u64::from(i), 1, W, 0));
            d.write_desc(0, i, table, 48, I as u16, 0);
            d.push_avail(0, i);
        }
        d.kick(0);
        d
    }

    #[test]
    fn a_flood_of_whole_disk_reads_is_spread_over_wake_ups() {
        let mut d = flood_of_whole_disk_reads();
        for _ in 0..256 {
            assert_eq!(d.wait_used(0).1, BIG_DISK as u32 + 1);
        }
        assert!(d.read_mem(STATUS, 256).iter().all(|&s| s == STATUS_OK));
        // One interrupt per wake-up that completed something: at most
        // MAX_BYTES_PER_EVENT of reads each, so at least 32 of them, all
        // from the one kick (the worker re-armed itself).
        let wake_ups = d.irq.read().unwrap();
        let per_wake_up = MAX_BYTES_PER_EVENT / BIG_DISK as u64;
        assert!(wake_ups >= 256 / per_wake_up, "{wake_ups} wake-ups");
        assert_eq!(d.status() & 0x40, 0);
    }

    #[test]
    fn a_reset_is_handled_before_a_flood_ends() {
        let mut d = flood_of_whole_disk_reads();
        d.wait_used(0);
        let started = std::time::Instant::now();
        d.write(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
        let waited = started.elapsed();
        assert_eq!(d.status(), 0);
        // After the reset returns the worker no longer touches the rings.
        let done = d.used_idx(0);
        assert!(done < 256, "the reset waited for all {done} reads");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(d.used_idx(0), done);
        eprintln!("reset after {done} of 256 reads, in {waited:?}");
    }

    #[test]
    fn requests_longer_than_the_advertised_limit_fail() {
        let (mut d, _file) = disk(false);
        assert_ne!(d.device_features() & (1 << VIRTIO_BLK_F_SIZE_MAX), 0);
        let mut size_max = [0u8; 4];
        d.dev.read(u64::from(VIRTIO_MMIO_CONFIG) + 8, &mut size_max);
        assert_eq!(u32::from_le_bytes(size_max), SIZE_MAX);
        // 17 segments of 1 MiB (all over the same guest memory): more
        // than SEG_MAX * SIZE_MAX bytes in one request.
        let mut chain = vec![(HDR, 16, false)];
        chain.extend([(BIG_BUF, 1 << 20, true); 17]);
        chain.push((STATUS, 1, true));
        const { assert!(17 << 20 > MAX_REQUEST_BYTES) };
        d.write_mem(HDR, &header(VIRTIO_BLK_T_IN, 0));
        d.write_mem(STATUS, &[0xff]);
        d.submit(0, &chain);
        assert_eq!(d.wait_used(0).1, 1, "only the status byte is written");
        assert_eq!(d.read_mem(STATUS, 1)[0], STATUS_IOERR);
        assert_eq!(d.status() & 0x40, 0);
    }

    #[test]
    fn new_leaves_the_file_offset_at_the_start() {
        let file = scratch_file(4096);
        let probe = file.try_clone().unwrap();
        let _block = Block::new(file, false).unwrap();
        let mut probe = probe;
        assert_eq!(probe.stream_position().unwrap(), 0);
    }

    #[test]
    fn opens_by_path() {
        let path = std::env::temp_dir().join(format!("vmm-blk-open-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 4096 + 100]).unwrap();
        let block = Block::open(&path, true).unwrap();
        assert_eq!(block.capacity_sectors(), 8);
        std::fs::remove_file(&path).unwrap();
        let err = match Block::open(&path, true) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a missing file"),
        };
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
