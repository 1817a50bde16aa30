//! i8042 PS/2 controller with a keyboard that has no keys, except the
//! Ctrl-Alt-Del the host injects to ask the guest to shut down. It answers
//! the probing Linux does (controller self-test, keyboard ID, ...) so the
//! guest's atkbd driver binds, and the reset line (command 0xFE) ends the VM.
//! There is no auxiliary (mouse) port.
//!
//! Occupies ports 0x60-0x64: offset 0 is data, offset 4 status/command.

use std::collections::VecDeque;
use std::sync::Arc;

use hvcontract::VmmExit;

use crate::devices::bus::BusDevice;
use crate::devices::irq::EdgeIrq;
use crate::devices::legacy::{read_bytes, write_bytes, ByteRegisters};
use crate::exit::ExitHandle;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

// Status register.
const SB_OUT_FULL: u8 = 0x01;
const SB_SYSTEM_FLAG: u8 = 0x04;
const SB_LAST_WAS_COMMAND: u8 = 0x08;
const SB_NOT_INHIBITED: u8 = 0x10;

// Controller configuration byte.
const CB_KBD_INT: u8 = 0x01;
const CB_SYSTEM_FLAG: u8 = 0x04;
const CB_AUX_DISABLED: u8 = 0x20;
const CB_TRANSLATE: u8 = 0x40;

// Controller commands (port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_AUX_LOOP: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

// Keyboard commands (port 0x60) and replies.
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCANCODE_SET: u8 = 0xf0;
const KBD_GET_ID: u8 = 0xf2;
const KBD_SET_REPEAT: u8 = 0xf3;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;
const KBD_ID: [u8; 2] = [0xab, 0x83];

const SELF_TEST_OK: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;
/// "Clock line stuck low": tells the guest there is no mouse port.
const AUX_TEST_FAILED: u8 = 0x01;
/// Output port with the reset line inactive (bit 0) and A20 enabled.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;

/// Ctrl-Alt-Del press and release, scancode set 2 (untranslated).
const CTRL_ALT_DEL_SET2: &[u8] = &[
    0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14,
];
/// The same in set 1, for a guest that enabled translation.
const CTRL_ALT_DEL_SET1: &[u8] = &[0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

/// Bounded so a guest that never reads cannot grow it.
const BUFFER_SIZE: usize = 16;

pub struct I8042 {
    ctr: u8,
    last_was_command: bool,
    /// Controller command waiting for its data byte.
    pending_cmd: Option<u8>,
    /// Keyboard command waiting for its argument.
    pending_kbd: Option<u8>,
    scancode_set: u8,
    buf: VecDeque<u8>,
    irq: EdgeIrq,
    exit: Arc<ExitHandle>,
}

impl I8042 {
    pub fn new(irq: EdgeIrq, exit: Arc<ExitHandle>) -> Self {
        I8042 {
            ctr: CB_KBD_INT | CB_SYSTEM_FLAG | CB_AUX_DISABLED,
            last_was_command: false,
            pending_cmd: None,
            pending_kbd: None,
            scancode_set: 2,
            buf: VecDeque::with_capacity(BUFFER_SIZE),
            irq,
            exit,
        }
    }

    /// Presses and releases Ctrl-Alt-Del.
    pub fn ctrl_alt_del(&mut self) {
        let codes = if self.ctr & CB_TRANSLATE != 0 {
            CTRL_ALT_DEL_SET1
        } else {
            CTRL_ALT_DEL_SET2
        };
        // Drop whatever the guest left unread so the whole sequence fits.
        self.buf.clear();
        for &code in codes {
            self.push(code);
        }
    }

    fn push(&mut self, byte: u8) {
        if self.buf.len() == BUFFER_SIZE {
            return;
        }
        let was_empty = self.buf.is_empty();
        self.buf.push_back(byte);
        if was_empty {
            self.notify();
        }
    }

    /// One edge per byte: the guest reads one byte per interrupt.
    fn notify(&self) {
        if self.ctr & CB_KBD_INT != 0 && !self.buf.is_empty() {
            self.irq.raise();
        }
    }

    fn status(&self) -> u8 {
        let mut s = SB_SYSTEM_FLAG | SB_NOT_INHIBITED;
        if !self.buf.is_empty() {
            s |= SB_OUT_FULL;
        }
        if self.last_was_command {
            s |= SB_LAST_WAS_COMMAND;
        }
        s
    }

    fn command(&mut self, cmd: u8) {
        self.pending_cmd = None;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT | CMD_AUX_LOOP | CMD_WRITE_AUX => {
                self.pending_cmd = Some(cmd)
            }
            CMD_AUX_DISABLE => self.ctr |= CB_AUX_DISABLED,
            CMD_AUX_ENABLE => self.ctr &= !CB_AUX_DISABLED,
            CMD_AUX_TEST => self.push(AUX_TEST_FAILED),
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_KBD_TEST => self.push(INTERFACE_OK),
            CMD_KBD_DISABLE | CMD_KBD_ENABLE => {}
            CMD_READ_OUTPUT_PORT => self.push(OUTPUT_PORT_DEFAULT),
            CMD_RESET_CPU => self.exit.request(VmmExit::Reboot),
            other => log::debug!("i8042: ignored controller command {other:#04x}"),
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => {
                self.ctr = value;
                self.notify();
            }
            Some(CMD_WRITE_OUTPUT_PORT) => {
                if value & 1 == 0 {
                    self.exit.request(VmmExit::Reboot);
                }
            }
            // Echoed as keyboard data, which the guest takes as "no
            // working aux loopback": there is no mouse behind us.
            Some(CMD_AUX_LOOP) => self.push(value),
            Some(_) => {} // bytes for the absent aux device
            None => self.keyboard(value),
        }
    }

    fn keyboard(&mut self, value: u8) {
        if let Some(cmd) = self.pending_kbd.take() {
            self.push(KBD_ACK);
            if cmd == KBD_SCANCODE_SET {
                match value {
                    0 => self.push(self.scancode_set),
                    1..=3 => self.scancode_set = value,
                    _ => {}
                }
            }
            return;
        }
        match value {
            KBD_SET_LEDS | KBD_SCANCODE_SET | KBD_SET_REPEAT => {
                self.pending_kbd = Some(value);
                self.push(KBD_ACK);
            }
            KBD_ECHO => self.push(KBD_ECHO),
            KBD_GET_ID => {
                self.push(KBD_ACK);
                KBD_ID.iter().for_each(|b| self.push(*b));
            }
            KBD_RESET => {
                self.push(KBD_ACK);
                self.push(KBD_SELF_TEST_OK);
            }
            _ => self.push(KBD_ACK),
        }
    }
}

impl ByteRegisters for I8042 {
    fn read_byte(&mut self, offset: u64) -> u8 {
        match offset {
            DATA_OFFSET => {
                let v = self.buf.pop_front().unwrap_or(0);
                self.notify();
                v
            }
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            DATA_OFFSET => {
                self.last_was_command = false;
                self.data(value);
            }
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.command(value);
            }
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
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
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn device() -> (I8042, EventFd, Arc<ExitHandle>) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let exit = Arc::new(ExitHandle::new().unwrap());
        let dev = I8042::new(EdgeIrq(irq.try_clone().unwrap()), exit.clone());
        (dev, irq, exit)
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0];
        dev.read(offset, &mut b);
        b[0]
    }

    fn drain(dev: &mut I8042) -> Vec<u8> {
        let mut out = vec![];
        while read(dev, COMMAND_OFFSET) & SB_OUT_FULL != 0 {
            out.push(read(dev, DATA_OFFSET));
        }
        out
    }

    #[test]
    fn reset_command_requests_reboot() {
        let (mut dev, _, exit) = device();
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(VmmExit::Reboot));
    }

    #[test]
    fn output_port_reset_line_requests_reboot() {
        let (mut dev, _, exit) = device();
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        dev.write(DATA_OFFSET, &[0x03]);
        assert_eq!(exit.reason(), None);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        dev.write(DATA_OFFSET, &[0x02]);
        assert_eq!(exit.reason(), Some(VmmExit::Reboot));
    }

    #[test]
    fn controller_probe_sequence() {
        let (mut dev, _, _) = device();
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(drain(&mut dev), vec![SELF_TEST_OK]);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[0x45]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(drain(&mut dev), vec![0x45]);
        assert_ne!(read(&mut dev, COMMAND_OFFSET) & SB_LAST_WAS_COMMAND, 0);
        dev.write(COMMAND_OFFSET, &[CMD_AUX_TEST]);
        assert_eq!(drain(&mut dev), vec![AUX_TEST_FAILED]);
    }

    #[test]
    fn keyboard_identifies_itself() {
        let (mut dev, _, _) = device();
        dev.write(DATA_OFFSET, &[KBD_GET_ID]);
        assert_eq!(drain(&mut dev), vec![KBD_ACK, 0xab, 0x83]);
        dev.write(DATA_OFFSET, &[KBD_SCANCODE_SET]);
        dev.write(DATA_OFFSET, &[0]);
        assert_eq!(drain(&mut dev), vec![KBD_ACK, KBD_ACK, 2]);
        dev.write(DATA_OFFSET, &[KBD_RESET]);
        assert_eq!(drain(&mut dev), vec![KBD_ACK, KBD_SELF_TEST_OK]);
    }

    #[test]
    fn ctrl_alt_del_in_active_scancode_set() {
        let (mut dev, irq, _) = device();
        dev.ctrl_alt_del();
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(drain(&mut dev), CTRL_ALT_DEL_SET2);

        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[CB_KBD_INT | CB_TRANSLATE]);
        dev.ctrl_alt_del();
        assert_eq!(drain(&mut dev), CTRL_ALT_DEL_SET1);
    }

    #[test]
    fn no_interrupt_when_disabled_and_buffer_bounded() {
        let (mut dev, irq, _) = device();
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[0]);
        for _ in 0..100 {
            dev.write(DATA_OFFSET, &[KBD_ECHO]);
        }
        assert!(irq.read().is_err(), "no interrupt with KBD_INT clear");
        assert_eq!(drain(&mut dev).len(), BUFFER_SIZE);
    }
}
