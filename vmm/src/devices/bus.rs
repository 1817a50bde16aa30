/// A device on the MMIO or port-I/O bus. Offsets are relative to the device's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Distinct unmapped addresses reported before going quiet: a guest probing
/// for hardware (or misbehaving) must not flood the host log.
const MAX_UNMAPPED_REPORTS: usize = 16;

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, PartialEq, Eq)]
pub struct OverlapError {
    pub base: u64,
    pub len: u64,
}

impl fmt::Display for OverlapError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "bus range {:#x}+{:#x} overlaps another device",
            self.base, self.len
        )
    }
}

/// Address space (I/O ports or MMIO) routing guest accesses to devices.
/// Accesses that hit no device read as all-ones and are otherwise ignored.
pub struct Bus {
    name: &'static str,
    /// Keyed by base address; value is (length, device).
    devices: BTreeMap<u64, (u64, SharedDevice)>,
    reported: Mutex<BTreeSet<u64>>,
}

impl Bus {
    pub fn new(name: &'static str) -> Self {
        Bus {
            name,
            devices: BTreeMap::new(),
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn insert(
        &mut self,
        device: SharedDevice,
        base: u64,
        len: u64,
    ) -> Result<(), OverlapError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let overlaps = |end: u64| {
            self.devices
                .range(..end)
                .next_back()
                .is_some_and(|(b, (l, _))| b + l > base)
        };
        match end {
            Some(end) if !overlaps(end) => {
                self.devices.insert(base, (len, device));
                Ok(())
            }
            _ => Err(OverlapError { base, len }),
        }
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset + size as u64 <= *len).then_some((offset, dev))
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => lock(dev).read(offset, data),
            None => {
                data.fill(0xff);
                self.report_unmapped("read", addr, data.len());
            }
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => lock(dev).write(offset, data),
            None => self.report_unmapped("write", addr, data.len()),
        }
    }

    /// A string read (`rep ins`): `data` is `count` items of `size` bytes,
    /// each read from `addr` in turn, as `count` separate accesses. One
    /// access (`in`) is the case `data.len() == size`. The device is held
    /// for the whole string, so the items come from consecutive accesses.
    pub fn read_each(&self, addr: u64, size: usize, data: &mut [u8]) {
        if size == 0 || data.len() % size != 0 {
            self.report_malformed(addr, size, data.len());
            data.fill(0xff);
            return;
        }
        match self.find(addr, size) {
            Some((offset, dev)) => {
                let mut dev = lock(dev);
                for item in data.chunks_exact_mut(size) {
                    dev.read(offset, item);
                }
            }
            None => {
                data.fill(0xff);
                self.report_unmapped("read", addr, size);
            }
        }
    }

    /// A string write (`rep outs`): `count` writes of `size` bytes to `addr`,
    /// in order; see [`Bus::read_each`].
    pub fn write_each(&self, addr: u64, size: usize, data: &[u8]) {
        if size == 0 || data.len() % size != 0 {
            self.report_malformed(addr, size, data.len());
            return;
        }
        match self.find(addr, size) {
            Some((offset, dev)) => {
                let mut dev = lock(dev);
                for item in data.chunks_exact(size) {
                    dev.write(offset, item);
                }
            }
            None => self.report_unmapped("write", addr, size),
        }
    }

    fn report_malformed(&self, addr: u64, size: usize, len: usize) {
        log::warn!(
            "{} access at {addr:#x} of {len} bytes is not a whole number of {size}-byte items; ignored",
            self.name
        );
    }

    fn report_unmapped(&self, op: &str, addr: u64, size: usize) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.len() < MAX_UNMAPPED_REPORTS && reported.insert(addr) {
            log::debug!(
                "guest {op} of {size} bytes at unmapped {} {addr:#x} ignored",
                self.name
            );
            if reported.len() == MAX_UNMAPPED_REPORTS {
                log::debug!("further unmapped {} accesses are not reported", self.name);
            }
        }
    }
}

fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    // A poisoned lock only means another vCPU panicked mid-access; with
    // panic=abort that cannot happen, and the device state is still usable.
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Scratch {
        bytes: [u8; 8],
    }

    impl BusDevice for Scratch {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            let o = usize::try_from(offset).unwrap();
            data.copy_from_slice(&self.bytes[o..o + data.len()]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            let o = usize::try_from(offset).unwrap();
            self.bytes[o..o + data.len()].copy_from_slice(data);
        }
    }

    fn scratch() -> SharedDevice {
        Arc::new(Mutex::new(Scratch::default()))
    }

    #[test]
    fn routes_with_relative_offsets() {
        let mut bus = Bus::new("port");
        bus.insert(scratch(), 0x100, 8).unwrap();
        bus.write(0x104, &[0xaa, 0xbb]);
        let mut out = [0u8; 2];
        bus.read(0x104, &mut out);
        assert_eq!(out, [0xaa, 0xbb]);
    }

    #[test]
    fn unmapped_reads_are_all_ones() {
        let mut bus = Bus::new("port");
        bus.insert(scratch(), 0x100, 8).unwrap();
        let mut out = [0u8; 4];
        bus.read(0x200, &mut out);
        assert_eq!(out, [0xff; 4]);
        // Straddling the end of a device is also unmapped.
        bus.read(0x106, &mut out);
        assert_eq!(out, [0xff; 4]);
        bus.write(0x0, &[1]);
        for addr in 0..100 {
            bus.read(0x1000 + addr, &mut out);
        }
        assert_eq!(bus.reported.lock().unwrap().len(), MAX_UNMAPPED_REPORTS);
    }

    /// Records every access it sees, in order.
    #[derive(Default)]
    struct Recorder {
        accesses: Vec<(char, u64, Vec<u8>)>,
        next: u8,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for b in data.iter_mut() {
                self.next += 1;
                *b = self.next;
            }
            self.accesses.push(('r', offset, data.to_vec()));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.accesses.push(('w', offset, data.to_vec()));
        }
    }

    fn recorder_bus() -> (Bus, Arc<Mutex<Recorder>>) {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new("port");
        bus.insert(rec.clone(), 0x3f8, 8).unwrap();
        (bus, rec)
    }

    #[test]
    fn rep_outsb_is_one_write_per_byte() {
        let (bus, rec) = recorder_bus();
        bus.write_each(0x3f8, 1, b"hello");
        let seen = &rec.lock().unwrap().accesses;
        let expected: Vec<_> = b"hello".iter().map(|&b| ('w', 0, vec![b])).collect();
        assert_eq!(*seen, expected);
    }

    #[test]
    fn rep_outsw_is_one_write_per_word() {
        let (bus, rec) = recorder_bus();
        bus.write_each(0x3fa, 2, &[1, 2, 3, 4, 5, 6]);
        let seen = &rec.lock().unwrap().accesses;
        assert_eq!(
            *seen,
            vec![
                ('w', 2, vec![1, 2]),
                ('w', 2, vec![3, 4]),
                ('w', 2, vec![5, 6])
            ]
        );
    }

    #[test]
    fn rep_insb_reads_each_byte_in_turn() {
        let (bus, rec) = recorder_bus();
        let mut data = [0u8; 4];
        bus.read_each(0x3f8, 1, &mut data);
        assert_eq!(data, [1, 2, 3, 4], "four reads, not one read of four bytes");
        assert_eq!(rec.lock().unwrap().accesses.len(), 4);
        // A single `in` is the one-item case.
        let mut one = [0u8; 1];
        bus.read_each(0x3fd, 1, &mut one);
        assert_eq!(one, [5]);
        assert_eq!(rec.lock().unwrap().accesses.last().unwrap().1, 5);
    }

    #[test]
    fn strings_to_unmapped_or_malformed_are_ignored() {
        let (bus, rec) = recorder_bus();
        let mut data = [0u8; 6];
        bus.read_each(0x2f8, 1, &mut data);
        assert_eq!(data, [0xff; 6]);
        bus.write_each(0x2f8, 1, b"lost");
        // The last item would straddle the device's end.
        bus.write_each(0x3ff, 2, &[1, 2]);
        bus.write_each(0x3f8, 4, &[1, 2, 3]);
        bus.write_each(0x3f8, 0, &[1]);
        assert!(rec.lock().unwrap().accesses.is_empty());
    }

    #[test]
    fn rejects_overlaps() {
        let mut bus = Bus::new("mmio");
        bus.insert(scratch(), 0x1000, 0x1000).unwrap();
        assert!(bus.insert(scratch(), 0x1800, 0x1000).is_err());
        assert!(bus.insert(scratch(), 0x800, 0x1000).is_err());
        assert!(bus.insert(scratch(), 0x0, 0).is_err());
        assert!(bus.insert(scratch(), u64::MAX, 2).is_err());
        bus.insert(scratch(), 0x2000, 0x1000).unwrap();
        bus.insert(scratch(), 0x0, 0x1000).unwrap();
    }
}
