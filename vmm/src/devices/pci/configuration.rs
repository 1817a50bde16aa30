//! A PCI function's 256-byte configuration space: the type 0 header, the
//! base address registers with their sizing protocol, and the
//! capabilities list.
//!
//! Every register has a mask of the bits the guest may change; a write only
//! touches those, byte lane by byte lane. BAR sizing falls out of that: a
//! BAR's address bits below its size are read-only zero, so writing all
//! ones reads back the size mask, as the spec's protocol expects.
// Register code splits wider values into their fields: the truncating
// casts are what it means.
#![allow(clippy::cast_possible_truncation)]

/// Size of the configuration space (no PCIe extended space).
pub const CONFIG_SIZE: usize = 256;
const NUM_REGS: usize = CONFIG_SIZE / 4;
/// First byte after the type 0 header: capabilities go from here.
const FIRST_CAPABILITY: usize = 0x40;

const COMMAND_REG: usize = 1;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Memory space, bus master, INTx disable (no I/O BARs, no SERR/parity).
const COMMAND_WRITABLE: u32 = 0x0406;
const STATUS_CAPABILITIES: u32 = 1 << 20;
const BAR0_REG: usize = 4;
const NUM_BARS: usize = 6;
const BAR_MEM64: u32 = 0b100;
const CAPABILITIES_PTR_REG: usize = 13;
const INTERRUPT_REG: usize = 15;

/// Why a configuration space cannot be built as asked; always the vmm's
/// own mistake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("BAR {index}: size {size:#x} is not a power of two of at least 16 bytes")]
    BarSize { index: usize, size: u64 },
    #[error("BAR {index}: address {addr:#x} is not aligned to its size {size:#x}")]
    BarAlignment { index: usize, addr: u64, size: u64 },
    #[error("BAR {index} does not exist or is taken")]
    BarIndex { index: usize },
    #[error("capability of {0} bytes does not fit the configuration space")]
    CapabilityFull(usize),
}

/// What the type 0 header says about the function.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub vendor_id: u16,
    pub device_id: u16,
    /// Base class, subclass and programming interface, in that order from
    /// the high byte: 0x06_00_00 is a host bridge.
    pub class: u32,
    pub revision: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
    /// 0 for none, 1 for INTA#.
    pub interrupt_pin: u8,
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    size: u64,
}

pub struct Configuration {
    regs: [u32; NUM_REGS],
    writable: [u32; NUM_REGS],
    bars: [Option<Bar>; NUM_BARS],
    /// Offset of the last capability's "next" byte, to chain the next one.
    last_next: usize,
    free: usize,
}

impl Configuration {
    pub fn new(h: &Header) -> Self {
        let mut regs = [0u32; NUM_REGS];
        let mut writable = [0u32; NUM_REGS];
        regs[0] = u32::from(h.device_id) << 16 | u32::from(h.vendor_id);
        regs[2] = (h.class & 0x00ff_ffff) << 8 | u32::from(h.revision);
        // Header type 0, single function; no BIST, latency timer, cache line.
        regs[11] = u32::from(h.subsystem_id) << 16 | u32::from(h.subsystem_vendor_id);
        regs[INTERRUPT_REG] = u32::from(h.interrupt_pin) << 8;
        writable[COMMAND_REG] = COMMAND_WRITABLE;
        // The interrupt line is the guest's scratch byte.
        writable[INTERRUPT_REG] = 0xff;
        Configuration {
            regs,
            writable,
            bars: [None; NUM_BARS],
            last_next: CAPABILITIES_PTR_REG * 4,
            free: FIRST_CAPABILITY,
        }
    }

    /// A 64-bit, non-prefetchable memory BAR at `index` and `index + 1`,
    /// assigned `addr` (as firmware would).
    pub fn add_mem64_bar(&mut self, index: usize, addr: u64, size: u64) -> Result<(), Error> {
        if !size.is_power_of_two() || size < 16 {
            return Err(Error::BarSize { index, size });
        }
        if addr % size != 0 {
            return Err(Error::BarAlignment { index, addr, size });
        }
        let free = |i: usize| self.bars.get(i).is_some_and(Option::is_none);
        if !free(index) || !free(index + 1) || self.bar_is_high_half(index) {
            return Err(Error::BarIndex { index });
        }
        let mask = !(size - 1);
        let (low, high) = (BAR0_REG + index, BAR0_REG + index + 1);
        self.set(low, (addr as u32 & !0xf) | BAR_MEM64);
        self.set(high, (addr >> 32) as u32);
        self.set_writable(low, mask as u32 & !0xf);
        self.set_writable(high, (mask >> 32) as u32);
        if let Some(bar) = self.bars.get_mut(index) {
            *bar = Some(Bar { size });
        }
        // The upper half is marked taken with a zero size.
        if let Some(bar) = self.bars.get_mut(index + 1) {
            *bar = Some(Bar { size: 0 });
        }
        Ok(())
    }

    fn bar_is_high_half(&self, index: usize) -> bool {
        index
            .checked_sub(1)
            .and_then(|i| self.bars.get(i).copied().flatten())
            .is_some_and(|b| b.size != 0)
    }

    /// Where BAR `index` currently is and how big it is; `None` for a
    /// missing BAR (or the upper half of a 64-bit one).
    pub fn bar(&self, index: usize) -> Option<(u64, u64)> {
        let bar = self.bars.get(index).copied().flatten()?;
        if bar.size == 0 {
            return None;
        }
        let low = u64::from(self.reg(BAR0_REG + index) & !0xf);
        let high = u64::from(self.reg(BAR0_REG + index + 1));
        Some((high << 32 | low, bar.size))
    }

    /// The BARs that decode right now: (index, base, size).
    pub fn decoded_bars(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let enabled = self.command() & COMMAND_MEMORY != 0;
        (0..NUM_BARS)
            .filter(move |_| enabled)
            .filter_map(|i| self.bar(i).map(|(base, size)| (i, base, size)))
    }

    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND_REG * 4)
    }

    /// Sets the command register as firmware leaves it.
    pub fn set_command(&mut self, value: u16) {
        let v = (self.reg(COMMAND_REG) & !0xffff) | u32::from(value);
        self.set(COMMAND_REG, v);
    }

    /// Appends a capability: `body` follows the ID and next-pointer bytes.
    /// Returns its offset. Its bytes are read-only unless
    /// [`Configuration::set_writable_bytes`] says otherwise.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, Error> {
        let len = body.len() + 2;
        let offset = self.free;
        let end = offset + len;
        if end > CONFIG_SIZE {
            return Err(Error::CapabilityFull(len));
        }
        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (i, b) in body.iter().enumerate() {
            self.set_byte(offset + 2 + i, *b);
        }
        // `offset` is below 256, so it fits the pointer byte.
        self.set_byte(self.last_next, offset as u8);
        self.last_next = offset + 1;
        self.free = end.next_multiple_of(4);
        let status = self.reg(COMMAND_REG) | STATUS_CAPABILITIES;
        self.set(COMMAND_REG, status);
        Ok(offset)
    }

    /// Lets the guest change the `mask` bits of the `u16` at `offset`.
    pub fn set_writable_u16(&mut self, offset: usize, mask: u16) {
        let shift = (offset % 4) * 8;
        if let Some(w) = self.writable.get_mut(offset / 4) {
            *w |= u32::from(mask) << shift;
        }
    }

    /// Lets the guest change all bits of `len` bytes from `offset`.
    pub fn set_writable_bytes(&mut self, offset: usize, len: usize) {
        for at in offset..offset.saturating_add(len) {
            let shift = (at % 4) * 8;
            if let Some(w) = self.writable.get_mut(at / 4) {
                *w |= 0xff << shift;
            }
        }
    }

    /// The guest's view of the `u32` at `offset` (dword aligned).
    pub fn read_u32(&self, offset: usize) -> u32 {
        self.reg(offset / 4)
    }

    /// The guest's view of the `u16` at `offset` (which must not cross a
    /// dword).
    pub fn read_u16(&self, offset: usize) -> u16 {
        (self.reg(offset / 4) >> ((offset % 4) * 8)) as u16
    }

    /// Reads `data.len()` bytes from `offset`; bytes past the end read as
    /// all ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i);
            *b = if at < CONFIG_SIZE {
                (self.reg(at / 4) >> ((at % 4) * 8)) as u8
            } else {
                0xff
            };
        }
    }

    /// A guest write: only writable bits change; bytes past the end are
    /// dropped.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = offset.saturating_add(i);
            if at >= CONFIG_SIZE {
                break;
            }
            let (reg, shift) = (at / 4, (at % 4) * 8);
            let mask = (self.writable.get(reg).copied().unwrap_or(0) >> shift) & 0xff;
            let old = self.reg(reg);
            let new = old & !(mask << shift) | ((u32::from(b) & mask) << shift);
            self.set(reg, new);
        }
    }

    fn reg(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    fn set(&mut self, reg: usize, v: u32) {
        if let Some(r) = self.regs.get_mut(reg) {
            *r = v;
        }
    }

    fn set_writable(&mut self, reg: usize, mask: u32) {
        if let Some(w) = self.writable.get_mut(reg) {
            *w = mask;
        }
    }

    fn set_byte(&mut self, at: usize, b: u8) {
        let shift = (at % 4) * 8;
        let v = self.reg(at / 4) & !(0xff << shift) | (u32::from(b) << shift);
        self.set(at / 4, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            class: 0x01_80_00,
            revision: 1,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
            interrupt_pin: 1,
        }
    }

    fn dword(c: &Configuration, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn header_fields() {
        let c = Configuration::new(&header());
        assert_eq!(dword(&c, 0), 0x1042_1af4);
        assert_eq!(dword(&c, 8), 0x0180_0001);
        assert_eq!(dword(&c, 0x2c), 0x1100_1af4);
        assert_eq!(dword(&c, 0x3c), 0x0100);
        assert_eq!(dword(&c, 0xc) >> 16 & 0x7f, 0, "header type 0");
        let mut b = [0u8; 2];
        c.read(0xfe, &mut b);
        assert_eq!(b, [0, 0]);
        let mut past = [0u8; 4];
        c.read(0xfe, &mut past);
        assert_eq!(past, [0, 0, 0xff, 0xff]);
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut c = Configuration::new(&header());
        c.write(0, &[0xff; 16]);
        assert_eq!(dword(&c, 0), 0x1042_1af4);
        assert_eq!(dword(&c, 8), 0x0180_0001);
        // Only memory, bus master and INTx disable stick in the command.
        c.write(4, &[0xff, 0xff]);
        assert_eq!(c.command(), 0x0406);
        c.write(0x3c, &[11, 7]);
        assert_eq!(dword(&c, 0x3c), 0x010b, "line writable, pin not");
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = Configuration::new(&header());
        c.add_mem64_bar(0, 0xc000_8000, 0x8000).unwrap();
        assert_eq!(dword(&c, 0x10), 0xc000_8004);
        assert_eq!(dword(&c, 0x14), 0);
        c.write(0x10, &[0xff; 4]);
        assert_eq!(dword(&c, 0x10), 0xffff_8004);
        c.write(0x14, &[0xff; 4]);
        assert_eq!(dword(&c, 0x14), 0xffff_ffff);
        // Restoring the address, as the sizing protocol ends.
        c.write(0x10, &0xc000_8000u32.to_le_bytes());
        c.write(0x14, &[0; 4]);
        assert_eq!(c.bar(0), Some((0xc000_8000, 0x8000)));
        // The guest may move it, to an address aligned to its size.
        c.write(0x10, &0xc123_4567u32.to_le_bytes());
        c.write(0x14, &1u32.to_le_bytes());
        assert_eq!(c.bar(0), Some((0x1_c123_0000, 0x8000)));
        // No other BAR exists: all of them read 0 whatever is written.
        for off in [0x18, 0x1c, 0x20, 0x24] {
            c.write(off, &[0xff; 4]);
            assert_eq!(dword(&c, off), 0, "BAR at {off:#x}");
        }
        assert_eq!(c.bar(1), None);
        assert_eq!(c.bar(2), None);
    }

    #[test]
    fn bars_decode_only_with_memory_enabled() {
        let mut c = Configuration::new(&header());
        c.add_mem64_bar(0, 0xc000_0000, 0x1000).unwrap();
        assert_eq!(c.decoded_bars().count(), 0);
        c.write(4, &[2, 0]);
        assert_eq!(
            c.decoded_bars().collect::<Vec<_>>(),
            vec![(0, 0xc000_0000, 0x1000)]
        );
    }

    #[test]
    fn bad_bars_are_refused() {
        let mut c = Configuration::new(&header());
        assert!(c.add_mem64_bar(0, 0, 0x3000).is_err());
        assert!(c.add_mem64_bar(0, 0x800, 0x1000).is_err());
        assert!(c.add_mem64_bar(5, 0, 0x1000).is_err());
        c.add_mem64_bar(0, 0, 0x1000).unwrap();
        assert!(c.add_mem64_bar(1, 0x1000, 0x1000).is_err());
        assert!(c.add_mem64_bar(0, 0x1000, 0x1000).is_err());
        c.add_mem64_bar(2, 0x1000, 0x1000).unwrap();
    }

    /// Walks the list the way a guest does: pointer at 0x34, then each
    /// capability's next byte, until 0.
    fn walk(c: &Configuration) -> Vec<(usize, u8)> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        c.read(0x34, &mut b);
        let mut at = usize::from(b[0]);
        while at != 0 {
            assert!(out.len() < 48, "capability loop");
            let mut cap = [0u8; 2];
            c.read(at, &mut cap);
            out.push((at, cap[0]));
            at = usize::from(cap[1]);
        }
        out
    }

    #[test]
    fn capability_chain_walks() {
        let mut c = Configuration::new(&header());
        assert_eq!(dword(&c, 4) & STATUS_CAPABILITIES, 0);
        assert!(walk(&c).is_empty());
        let a = c.add_capability(0x09, &[14, 1, 2, 3]).unwrap();
        let b = c.add_capability(0x11, &[0; 10]).unwrap();
        let d = c.add_capability(0x09, &[3]).unwrap();
        assert_eq!(dword(&c, 4) & STATUS_CAPABILITIES, STATUS_CAPABILITIES);
        assert_eq!(walk(&c), vec![(0x40, 0x09), (0x48, 0x11), (0x54, 0x09)]);
        assert_eq!((a, b, d), (0x40, 0x48, 0x54));
        let mut body = [0u8; 4];
        c.read(a + 2, &mut body);
        assert_eq!(body, [14, 1, 2, 3]);
        // Capabilities are read-only unless made writable.
        c.write(a, &[0xff; 6]);
        assert_eq!(walk(&c).len(), 3);
        c.set_writable_u16(b + 2, 0xc000);
        c.write(b + 2, &[0xff, 0xff]);
        assert_eq!(c.read_u16(b + 2), 0xc000);
        // The space runs out cleanly.
        assert_eq!(
            c.add_capability(0x09, &[0; 200]),
            Err(Error::CapabilityFull(202))
        );
    }
}
