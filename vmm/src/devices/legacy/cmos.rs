//! MC146818-style CMOS RTC at ports 0x70 (index) / 0x71 (data): enough for
//! the guest to read the wall-clock time at boot. The clock is the host's
//! (UTC); writes to the time registers are ignored, everything else is
//! plain CMOS RAM.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::devices::bus::BusDevice;
use crate::devices::legacy::{read_bytes, write_bytes, ByteRegisters};

const INDEX_OFFSET: u64 = 0;
const DATA_OFFSET: u64 = 1;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Register A: 32.768 kHz time base, update not in progress.
const REG_A_DEFAULT: u8 = 0x26;
const REG_B_24H: u8 = 0x02;
const REG_B_BINARY: u8 = 0x04;
/// Register D: battery good.
const REG_D_VALID: u8 = 0x80;

/// Broken-down UTC time, as the RTC registers hold it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct DateTime {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 1 = Sunday, as the RTC counts.
    pub weekday: u32,
}

impl DateTime {
    /// The civil date of `secs` seconds since the Unix epoch, by libc's
    /// `gmtime_r`. A time libc cannot represent reads as the epoch.
    pub fn from_unix(secs: u64) -> Self {
        let Some(tm) = gmtime(secs).or_else(|| gmtime(0)) else {
            return DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 5,
            };
        };
        let field = |v: libc::c_int| u32::try_from(v).unwrap_or(0);
        DateTime {
            year: field(tm.tm_year.saturating_add(1900)),
            month: field(tm.tm_mon.saturating_add(1)),
            day: field(tm.tm_mday),
            hour: field(tm.tm_hour),
            minute: field(tm.tm_min),
            second: field(tm.tm_sec),
            // tm_wday counts from 0 = Sunday.
            weekday: field(tm.tm_wday.saturating_add(1)),
        }
    }
}

/// libc's `gmtime_r`; `None` for a time it cannot represent.
// libc flags musl's time_t as deprecated ahead of musl 1.2's switch to 64
// bits; on x86_64 it is 64 bits on both musl and glibc already.
#[allow(deprecated)]
fn gmtime(secs: u64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone
    // pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; gmtime_r is re-entrant
    // and writes only `tm`.
    let ok = !unsafe { libc::gmtime_r(&t, &mut tm) }.is_null();
    ok.then_some(tm)
}

pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    now: Box<dyn Fn() -> u64 + Send>,
}

impl Cmos {
    pub fn new() -> Self {
        Self::with_clock(Box::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        }))
    }

    pub fn with_clock(now: Box<dyn Fn() -> u64 + Send>) -> Self {
        let mut cmos = Cmos {
            index: 0,
            ram: [0u8; 128],
            now,
        };
        cmos.set(REG_A, REG_A_DEFAULT);
        cmos.set(REG_B, REG_B_24H);
        cmos.set(REG_D, REG_D_VALID);
        cmos
    }

    /// CMOS RAM byte `reg` (the index is 7 bits wide, the RAM 128 bytes).
    fn get(&self, reg: u8) -> u8 {
        self.ram.get(usize::from(reg)).copied().unwrap_or(0xff)
    }

    fn set(&mut self, reg: u8, value: u8) {
        if let Some(byte) = self.ram.get_mut(usize::from(reg)) {
            *byte = value;
        }
    }

    fn encode(&self, value: u32) -> u8 {
        let value = (value % 100) as u8;
        if self.get(REG_B) & REG_B_BINARY != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let t = || DateTime::from_unix((self.now)());
        match reg {
            REG_SECONDS => self.encode(t().second),
            REG_MINUTES => self.encode(t().minute),
            REG_HOURS => self.encode(t().hour),
            REG_WEEKDAY => self.encode(t().weekday),
            REG_DAY => self.encode(t().day),
            REG_MONTH => self.encode(t().month),
            REG_YEAR => self.encode(t().year),
            REG_CENTURY => self.encode(t().year / 100),
            // Interrupt flags clear on read; we never raise any.
            REG_C => 0,
            REG_B => self.get(REG_B) | REG_B_24H,
            _ => self.get(reg),
        }
    }

    fn write_reg(&mut self, reg: u8, value: u8) {
        match reg {
            REG_SECONDS..=REG_YEAR | REG_CENTURY | REG_C | REG_D => {}
            // Keep the update-in-progress bit clear: the guest waits on it.
            REG_A => self.set(REG_A, value & 0x7f),
            _ => self.set(reg, value),
        }
    }
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

impl ByteRegisters for Cmos {
    fn read_byte(&mut self, offset: u64) -> u8 {
        match offset {
            INDEX_OFFSET => self.index,
            DATA_OFFSET => self.read_reg(self.index),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            // Bit 7 is the NMI mask on a PC, not part of the index.
            INDEX_OFFSET => self.index = value & 0x7f,
            DATA_OFFSET => self.write_reg(self.index, value),
            _ => {}
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(self, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(self, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29 13:45:07 UTC, a Thursday.
    const LEAP_DAY: u64 = 1_709_214_307;

    fn reg(dev: &mut Cmos, r: u8) -> u8 {
        dev.write(INDEX_OFFSET, &[r | 0x80]);
        let mut b = [0];
        dev.read(DATA_OFFSET, &mut b);
        b[0]
    }

    #[test]
    fn civil_dates() {
        let epoch = DateTime::from_unix(0);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday),
            (1970, 1, 1, 5)
        );
        let t = DateTime::from_unix(LEAP_DAY);
        assert_eq!(
            t,
            DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 13,
                minute: 45,
                second: 7,
                weekday: 5
            }
        );
        let y2k = DateTime::from_unix(946_684_800);
        assert_eq!((y2k.year, y2k.month, y2k.day), (2000, 1, 1));
    }

    #[test]
    fn reads_time_in_bcd() {
        let mut dev = Cmos::with_clock(Box::new(|| LEAP_DAY));
        assert_eq!(reg(&mut dev, REG_SECONDS), 0x07);
        assert_eq!(reg(&mut dev, REG_MINUTES), 0x45);
        assert_eq!(reg(&mut dev, REG_HOURS), 0x13);
        assert_eq!(reg(&mut dev, REG_DAY), 0x29);
        assert_eq!(reg(&mut dev, REG_MONTH), 0x02);
        assert_eq!(reg(&mut dev, REG_YEAR), 0x24);
        assert_eq!(reg(&mut dev, REG_CENTURY), 0x20);
        assert_eq!(reg(&mut dev, REG_D), REG_D_VALID);
        assert_eq!(reg(&mut dev, REG_A) & 0x80, 0, "no update in progress");
    }

    #[test]
    fn binary_mode_and_ram() {
        let mut dev = Cmos::with_clock(Box::new(|| LEAP_DAY));
        dev.write(INDEX_OFFSET, &[REG_B]);
        dev.write(DATA_OFFSET, &[REG_B_BINARY | REG_B_24H]);
        assert_eq!(reg(&mut dev, REG_MINUTES), 45);
        dev.write(INDEX_OFFSET, &[0x40]);
        dev.write(DATA_OFFSET, &[0x5a]);
        assert_eq!(reg(&mut dev, 0x40), 0x5a);
        dev.write(INDEX_OFFSET, &[REG_SECONDS]);
        dev.write(DATA_OFFSET, &[0x59]);
        assert_eq!(reg(&mut dev, REG_SECONDS), 7);
    }
}
