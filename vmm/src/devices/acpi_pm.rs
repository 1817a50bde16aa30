//! ACPI fixed-hardware power management registers (PM1a event and control
//! blocks, ports 0x600-0x605): the guest powers off by writing
//! SLP_TYP=S5|SLP_EN, and the host "presses" the power button by setting
//! PWRBTN_STS, which raises the SCI until the guest clears it.

use std::sync::Arc;

use hvcontract::VmmExit;

use crate::arch::x86_64::acpi::S5_SLP_TYP;
use crate::devices::bus::BusDevice;
use crate::devices::irq::LevelIrq;
use crate::devices::virtio::Complaints;
use crate::exit::ExitHandle;

/// Offsets within the 6-byte block: PM1a_STS, PM1a_EN (event block, 4
/// bytes) followed by PM1a_CNT.
const STS: usize = 0;
const EN: usize = 2;
const CNT: usize = 4;
pub const BLOCK_LEN: u64 = 6;

const PWRBTN: u16 = 1 << 8;
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// Bits of PM1_STS this device can ever set.
const STS_IMPLEMENTED: u16 = PWRBTN;

pub struct AcpiPm {
    regs: [u16; 3],
    sci: Box<dyn LevelIrq>,
    exit: Arc<ExitHandle>,
    /// The guest can ask for an unsupported sleep state in a loop.
    complaints: Complaints,
}

impl AcpiPm {
    pub fn new(sci: Box<dyn LevelIrq>, exit: Arc<ExitHandle>) -> Self {
        AcpiPm {
            // Always in ACPI mode: there is no SMI command port.
            regs: [0, 0, SCI_EN],
            sci,
            exit,
            complaints: Complaints::new("acpi"),
        }
    }

    pub fn press_power_button(&mut self) {
        self.regs[STS / 2] |= PWRBTN;
        self.update_sci();
    }

    fn update_sci(&self) {
        self.sci
            .set_level(self.regs[STS / 2] & self.regs[EN / 2] != 0);
    }

    fn store(&mut self, reg: usize, value: u16, mask: u16) {
        let value = value & mask;
        match reg {
            STS => self.regs[0] &= !value, // write 1 to clear
            EN => self.regs[1] = (self.regs[1] & !mask) | value,
            CNT => {
                let cnt = (self.regs[2] & !mask) | value | SCI_EN;
                self.regs[2] = cnt & !SLP_EN;
                if cnt & SLP_EN != 0 {
                    self.sleep((cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT);
                }
            }
            _ => {}
        }
        self.update_sci();
    }

    fn sleep(&mut self, typ: u16) {
        if typ == u16::from(S5_SLP_TYP) {
            self.exit.request(VmmExit::PoweredOff);
        } else {
            self.complaints.warn(format_args!(
                "guest asked for unsupported sleep type {typ}; ignored"
            ));
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Bytes past the block read as all ones.
        let base = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, byte) in data.iter_mut().enumerate() {
            let at = base.saturating_add(i);
            let reg = self.regs.get(at / 2).copied().unwrap_or(0xffff);
            let reg = if at / 2 == 0 {
                reg & STS_IMPLEMENTED
            } else {
                reg
            };
            let [low, high] = reg.to_le_bytes();
            *byte = if at % 2 == 0 { low } else { high };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Group bytes per 16-bit register so a 2- or 4-byte access updates
        // each register once (SLP_TYP and SLP_EN arrive together).
        let Ok(base) = usize::try_from(offset) else {
            return;
        };
        let mut bytes = (base..).zip(data).peekable();
        while let Some(&(at, _)) = bytes.peek() {
            let reg = at & !1;
            if reg > CNT {
                return;
            }
            let (mut value, mut mask) = (0u16, 0u16);
            while let Some((at, &byte)) = bytes.next_if(|&(at, _)| at & !1 == reg) {
                let shift = 8 * (at % 2);
                value |= u16::from(byte) << shift;
                mask |= 0xff << shift;
            }
            self.store(reg, value, mask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Line(Arc<AtomicBool>);
    impl LevelIrq for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    fn device() -> (AcpiPm, Arc<AtomicBool>, Arc<ExitHandle>) {
        let line = Arc::new(AtomicBool::new(false));
        let exit = Arc::new(ExitHandle::new().unwrap());
        (
            AcpiPm::new(Box::new(Line(line.clone())), exit.clone()),
            line,
            exit,
        )
    }

    fn read16(dev: &mut AcpiPm, offset: u64) -> u16 {
        let mut b = [0; 2];
        dev.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn s5_powers_off() {
        let (mut dev, _, exit) = device();
        // ACPICA first writes SLP_TYP alone, then with SLP_EN.
        dev.write(
            CNT as u64,
            &(u16::from(S5_SLP_TYP) << SLP_TYP_SHIFT).to_le_bytes(),
        );
        assert_eq!(exit.reason(), None);
        dev.write(
            CNT as u64,
            &((u16::from(S5_SLP_TYP) << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes(),
        );
        assert_eq!(exit.reason(), Some(VmmExit::PoweredOff));
        assert_eq!(read16(&mut dev, CNT as u64) & SLP_EN, 0);
    }

    #[test]
    fn other_sleep_states_ignored() {
        let (mut dev, _, exit) = device();
        dev.write(CNT as u64, &((3 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
        assert_eq!(exit.reason(), None);
        assert_eq!(read16(&mut dev, CNT as u64) & SCI_EN, SCI_EN);
    }

    #[test]
    fn a_sleep_request_flood_logs_a_bounded_number_of_lines() {
        use crate::devices::virtio::complaints_test_log::lines_logged_by;
        let (mut dev, _, exit) = device();
        let lines = lines_logged_by(|| {
            for _ in 0..10_000 {
                dev.write(CNT as u64, &((3 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
            }
        });
        assert!((1..=16).contains(&lines), "{lines} lines logged");
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn power_button_raises_sci_until_cleared() {
        let (mut dev, line, _) = device();
        dev.press_power_button();
        assert!(!line.load(Ordering::SeqCst), "masked while PWRBTN_EN clear");
        dev.write(EN as u64, &PWRBTN.to_le_bytes());
        assert!(line.load(Ordering::SeqCst));
        assert_eq!(read16(&mut dev, STS as u64), PWRBTN);
        // 32-bit access covering STS and EN, clearing the status.
        let mut word = [0u8; 4];
        word[..2].copy_from_slice(&PWRBTN.to_le_bytes());
        word[2..].copy_from_slice(&PWRBTN.to_le_bytes());
        dev.write(STS as u64, &word);
        assert!(!line.load(Ordering::SeqCst));
        assert_eq!(read16(&mut dev, STS as u64), 0);
        assert_eq!(read16(&mut dev, EN as u64), PWRBTN);
    }
}
