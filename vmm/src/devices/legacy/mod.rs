//! PC legacy devices on the I/O port bus.

pub mod cmos;
pub mod i8042;
pub mod serial;

pub use cmos::Cmos;
pub use i8042::I8042;
pub use serial::SerialDevice;

/// A device whose registers are all one byte wide, as the PC's ISA
/// peripherals are. The bus hands a device one access at a time (a string
/// `rep ins`/`outs` arrives as `count` accesses, see `Bus::read_each`); an
/// access wider than a byte (`inw`/`outw`) is split the way the ISA bus
/// splits it: one byte per register, at consecutive offsets, low byte
/// first.
pub trait ByteRegisters {
    fn read_byte(&mut self, offset: u64) -> u8;
    fn write_byte(&mut self, offset: u64, value: u8);
}

/// [`crate::devices::bus::BusDevice::read`] for a [`ByteRegisters`] device.
pub fn read_bytes(dev: &mut impl ByteRegisters, offset: u64, data: &mut [u8]) {
    for (at, byte) in (offset..).zip(data.iter_mut()) {
        *byte = dev.read_byte(at);
    }
}

/// [`crate::devices::bus::BusDevice::write`] for a [`ByteRegisters`] device.
pub fn write_bytes(dev: &mut impl ByteRegisters, offset: u64, data: &[u8]) {
    for (at, &byte) in (offset..).zip(data.iter()) {
        dev.write_byte(at, byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<(char, u64, u8)>);

    impl ByteRegisters for Log {
        fn read_byte(&mut self, offset: u64) -> u8 {
            self.0.push(('r', offset, 0));
            0x10 + u8::try_from(offset).unwrap()
        }
        fn write_byte(&mut self, offset: u64, value: u8) {
            self.0.push(('w', offset, value));
        }
    }

    #[test]
    fn wide_accesses_split_into_bytes_low_first() {
        let mut dev = Log::default();
        let mut word = [0u8; 2];
        read_bytes(&mut dev, 0, &mut word);
        assert_eq!(word, [0x10, 0x11]);
        write_bytes(&mut dev, 0, &0x0b0au16.to_le_bytes());
        assert_eq!(
            dev.0,
            vec![('r', 0, 0), ('r', 1, 0), ('w', 0, 0x0a), ('w', 1, 0x0b)]
        );
    }
}
