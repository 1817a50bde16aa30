//! A PCI root bus for the guest: configuration spaces
//! ([`configuration`]), MSI-X ([`msix`]), the host bridge at 00:00.0, the
//! configuration access mechanism #1 on ports 0xCF8/0xCFC
//! ([`ConfigIo`]), the same spaces as memory ([`Ecam`]), and the memory
//! window the functions' BARs live in ([`MmioWindow`]).
//!
//! One bus (0), one function per device, conventional PCI: 256 bytes of
//! configuration space each (ECAM's extended space reads as all ones).

pub mod configuration;
pub mod msix;

use std::sync::{Arc, Mutex, MutexGuard};

pub use configuration::Configuration;

use crate::devices::bus::BusDevice;

/// Devices (slots) on the bus; slot 0 is the host bridge.
pub const MAX_SLOTS: usize = 32;
/// The CAM's address register and data window, 8 ports from 0xCF8.
pub const CONFIG_IO_LEN: u64 = 8;
const ADDRESS_ENABLE: u32 = 1 << 31;

/// A function on the bus.
pub trait PciDevice: Send {
    fn config(&self) -> &Configuration;
    /// A guest read of the configuration space at byte `offset`; devices
    /// with registers that act on reads override it.
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
    /// A guest write to the configuration space at byte `offset`; devices
    /// that react to their registers (BAR moves, MSI-X control) override it.
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// An access to BAR `bar` at `offset` from its base.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

fn lock(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    // Nothing panics while holding it (panic = abort); the state stays
    // usable either way.
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bus 0: its slots, fixed once the VM is built.
pub struct PciBus {
    slots: Vec<Option<SharedPciDevice>>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PciBus {
    /// A bus holding only the host bridge.
    pub fn new() -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; MAX_SLOTS];
        if let Some(slot) = slots.first_mut() {
            *slot = Some(Arc::new(Mutex::new(HostBridge::new())));
        }
        PciBus { slots }
    }

    /// Puts `device` in `slot`; false if the slot is taken or missing.
    pub fn insert(&mut self, slot: usize, device: SharedPciDevice) -> bool {
        match self.slots.get_mut(slot) {
            Some(s @ None) => {
                *s = Some(device);
                true
            }
            _ => false,
        }
    }

    fn device(&self, slot: usize) -> Option<&SharedPciDevice> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Finds the device whose decoded BAR holds `addr..addr + len` and runs
    /// `f` on it with (bar, offset); false when no BAR claims the access.
    fn with_bar(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&mut dyn PciDevice, usize, u64),
    ) -> bool {
        for dev in self.slots.iter().flatten() {
            let mut guard = lock(dev);
            let hit = guard.config().decoded_bars().find_map(|(bar, base, size)| {
                let offset = addr.checked_sub(base)?;
                (offset.checked_add(len as u64)? <= size).then_some((bar, offset))
            });
            if let Some((bar, offset)) = hit {
                f(&mut *guard, bar, offset);
                return true;
            }
        }
        false
    }
}

/// The host bridge at 00:00.0: identity only, so the guest (Linux's
/// `pci_sanity_check`) sees a PCI bus it may probe.
struct HostBridge {
    config: Configuration,
}

impl HostBridge {
    fn new() -> Self {
        HostBridge {
            config: Configuration::new(&configuration::Header {
                // Intel's ID for a virtual PCIe host bridge, as Cloud
                // Hypervisor uses.
                vendor_id: 0x8086,
                device_id: 0x0d57,
                class: 0x06_00_00,
                revision: 0,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
                interrupt_pin: 0,
            }),
        }
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &Configuration {
        &self.config
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

/// Configuration access mechanism #1: a 32-bit address register at 0xCF8
/// (enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2)
/// and the selected dword at 0xCFC-0xCFF. Anything that selects no
/// function (enable clear, another bus or function, an empty slot) reads
/// all ones and ignores writes, as on real hardware.
pub struct ConfigIo {
    address: u32,
    bus: Arc<PciBus>,
}

impl ConfigIo {
    pub fn new(bus: Arc<PciBus>) -> Self {
        ConfigIo { address: 0, bus }
    }

    /// The selected device and the byte offset in its space, for an access
    /// `port_offset` bytes into the data window.
    fn target(&self, port_offset: u64) -> Option<(&SharedPciDevice, usize)> {
        let a = self.address;
        let (bus, device, function) = (a >> 16 & 0xff, a >> 11 & 0x1f, a >> 8 & 0x7);
        if a & ADDRESS_ENABLE == 0 || bus != 0 || function != 0 {
            return None;
        }
        let dev = self.bus.device(device as usize)?;
        let offset = (a & 0xfc) as usize + usize::try_from(port_offset).ok()?;
        Some((dev, offset))
    }
}

impl BusDevice for ConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            // The address register, byte lanes included (Linux's probe
            // writes 0xCFB and reads 0xCF8 back).
            let bytes = self.address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = usize::try_from(offset)
                    .ok()
                    .and_then(|o| bytes.get(o + i))
                    .copied()
                    .unwrap_or(0xff);
            }
            return;
        }
        match self.target(offset - 4) {
            // An access never crosses the dword: the data window is 4 bytes.
            Some((dev, at)) if offset - 4 + data.len() as u64 <= 4 => {
                lock(dev).config_read(at, data)
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset < 4 {
            let mut bytes = self.address.to_le_bytes();
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = usize::try_from(offset)
                    .ok()
                    .and_then(|o| bytes.get_mut(o + i))
                {
                    *slot = *b;
                }
            }
            // Bits 1:0 are reserved (0); bits 30:24 too.
            self.address = u32::from_le_bytes(bytes) & 0x80ff_fffc;
            return;
        }
        if let Some((dev, at)) = self.target(offset - 4) {
            if offset - 4 + data.len() as u64 <= 4 {
                lock(dev).config_write(at, data);
            }
        }
    }
}

/// Bytes of ECAM per function.
const ECAM_FUNCTION_SIZE: u64 = 0x1000;

/// ECAM: the configuration space of bus 0, 4 KiB per function at
/// `device << 15 | function << 12`. Accesses must stay inside one dword;
/// anything that selects no function reads all ones.
pub struct Ecam {
    bus: Arc<PciBus>,
}

impl Ecam {
    pub fn new(bus: Arc<PciBus>) -> Self {
        Ecam { bus }
    }

    fn target(&self, offset: u64, len: usize) -> Option<(&SharedPciDevice, usize)> {
        let (bus, device, function) = (offset >> 20, offset >> 15 & 0x1f, offset >> 12 & 0x7);
        let reg = usize::try_from(offset % ECAM_FUNCTION_SIZE).ok()?;
        if bus != 0 || function != 0 || reg % 4 + len > 4 || reg >= configuration::CONFIG_SIZE {
            return None;
        }
        Some((self.bus.device(usize::try_from(device).ok()?)?, reg))
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.target(offset, data.len()) {
            Some((dev, reg)) => lock(dev).config_read(reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((dev, reg)) = self.target(offset, data.len()) {
            lock(dev).config_write(reg, data);
        }
    }
}

/// The guest-physical window the BARs are placed in: one entry on the MMIO
/// bus, which hands each access to the function whose BAR holds it now
/// (BARs may move when the guest reprograms them).
pub struct MmioWindow {
    base: u64,
    bus: Arc<PciBus>,
}

impl MmioWindow {
    pub fn new(base: u64, bus: Arc<PciBus>) -> Self {
        MmioWindow { base, bus }
    }
}

impl BusDevice for MmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let addr = self.base + offset;
        let len = data.len();
        if !self
            .bus
            .with_bar(addr, len, |dev, bar, at| dev.bar_read(bar, at, data))
        {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let addr = self.base + offset;
        self.bus.with_bar(addr, data.len(), |dev, bar, at| {
            dev.bar_write(bar, at, data)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENABLE: u32 = 0x8000_0000;

    fn cam() -> ConfigIo {
        ConfigIo::new(Arc::new(PciBus::new()))
    }

    fn select(io: &mut ConfigIo, address: u32) {
        io.write(0, &address.to_le_bytes());
    }

    fn read32(io: &mut ConfigIo) -> u32 {
        let mut b = [0u8; 4];
        io.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_answers_at_00_00_0() {
        let mut io = cam();
        select(&mut io, ENABLE);
        assert_eq!(read32(&mut io), 0x0d57_8086);
        select(&mut io, ENABLE | 0x08);
        assert_eq!(read32(&mut io) >> 8, 0x06_00_00, "class: host bridge");
        // Byte and word reads of the data window pick the right lanes.
        select(&mut io, ENABLE);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0d57);
        let mut b = [0u8; 1];
        io.read(5, &mut b);
        assert_eq!(b, [0x80]);
    }

    #[test]
    fn address_register_reads_back() {
        let mut io = cam();
        // Linux's conf1 probe: a byte to 0xCFB, then the dword at 0xCF8.
        io.write(3, &[0x01]);
        select(&mut io, ENABLE);
        let mut b = [0u8; 4];
        io.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), ENABLE);
        // Reserved bits do not stick.
        select(&mut io, 0xffff_ffff);
        io.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x80ff_fffc);
    }

    #[test]
    fn nothing_selected_reads_all_ones() {
        let mut io = cam();
        // Enable bit clear.
        select(&mut io, 0);
        assert_eq!(read32(&mut io), u32::MAX);
        // Empty slot, another function, another bus.
        for address in [ENABLE | 3 << 11, ENABLE | 1 << 8, ENABLE | 1 << 16] {
            select(&mut io, address);
            assert_eq!(read32(&mut io), u32::MAX, "{address:#x}");
            io.write(4, &[0; 4]);
        }
        // A write with the enable bit clear changes nothing.
        select(&mut io, 0x04);
        io.write(4, &[0xff, 0xff]);
        select(&mut io, ENABLE | 0x04);
        assert_eq!(read32(&mut io) & 0xffff, 0);
        // Accesses that would cross the data window read all ones.
        select(&mut io, ENABLE);
        let mut b = [0u8; 4];
        io.read(6, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn ecam_reaches_the_same_spaces() {
        let mut ecam = Ecam::new(Arc::new(PciBus::new()));
        let mut b = [0u8; 4];
        ecam.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0d57_8086);
        ecam.read(0xa, &mut b[..2]);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x0600);
        // Command register writes land.
        ecam.write(4, &[2, 0]);
        ecam.read(4, &mut b[..2]);
        assert_eq!(b[..2], [2, 0]);
        // Extended space, other functions and buses, empty slots,
        // accesses across a dword: all ones.
        for offset in [0x100, 0xffc, 1 << 12, 1 << 20, 5 << 15, 2] {
            let mut b = [0u8; 4];
            ecam.read(offset, &mut b);
            assert_eq!(b, [0xff; 4], "{offset:#x}");
            ecam.write(offset, &[0; 4]);
        }
    }

    /// A function with one 4 KiB BAR whose bytes read as their offset.
    struct Probe {
        config: Configuration,
        writes: Vec<(usize, u64, Vec<u8>)>,
    }

    impl PciDevice for Probe {
        fn config(&self) -> &Configuration {
            &self.config
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) {
            self.config.write(offset, data);
        }
        fn bar_read(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
            data.fill(u8::try_from(offset % 256).unwrap());
        }
        fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.writes.push((bar, offset, data.to_vec()));
        }
    }

    #[test]
    fn mmio_window_follows_the_bars() {
        let mut config = Configuration::new(&configuration::Header {
            vendor_id: 0x1af4,
            device_id: 0x1044,
            class: 0xff_00_00,
            revision: 1,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
            interrupt_pin: 1,
        });
        config.add_mem64_bar(0, 0x1000_2000, 0x1000).unwrap();
        config.set_command(configuration::COMMAND_MEMORY);
        let probe = Arc::new(Mutex::new(Probe {
            config,
            writes: Vec::new(),
        }));
        let mut bus = PciBus::new();
        assert!(bus.insert(3, probe.clone()));
        assert!(!bus.insert(3, probe.clone()), "slot taken");
        assert!(!bus.insert(32, probe.clone()), "no such slot");
        let bus = Arc::new(bus);
        let mut window = MmioWindow::new(0x1000_0000, bus.clone());
        let mut b = [0u8; 2];
        window.read(0x2010, &mut b);
        assert_eq!(b, [0x10, 0x10]);
        window.read(0x3010, &mut b);
        assert_eq!(b, [0xff, 0xff], "past the BAR");
        window.read(0x2fff, &mut b);
        assert_eq!(b, [0xff, 0xff], "straddling the BAR's end");
        window.write(0x2004, &[1, 2]);
        assert_eq!(probe.lock().unwrap().writes, vec![(0, 4, vec![1, 2])]);
        // The guest moves the BAR (through the CAM, slot 3).
        let mut io = ConfigIo::new(bus);
        select(&mut io, ENABLE | 3 << 11 | 0x10);
        io.write(4, &0x1000_5000u32.to_le_bytes());
        window.read(0x2010, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        window.read(0x5020, &mut b);
        assert_eq!(b, [0x20, 0x20]);
        // Memory decoding off: the BAR is gone.
        select(&mut io, ENABLE | 3 << 11 | 0x04);
        io.write(4, &[0, 0]);
        window.read(0x5020, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }
}
