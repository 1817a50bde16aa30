//! The ACPI power button (and any keyboard's power key) as seen through
//! evdev: a KEY_POWER press asks for an orderly power-off.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const EV_KEY: u16 = EV_KEY_NR as u16;
/// EV_KEY as the ioctl number wants it (`EVIOCGBIT(EV_KEY, ...)`).
const EV_KEY_NR: u8 = 0x01;
const KEY_POWER: u16 = 116;
/// Bytes of the EV_KEY capability bitmap needed to reach KEY_POWER.
const KEY_BITS_LEN: usize = (KEY_POWER as usize) / 8 + 1;
/// struct input_event on 64-bit: timeval (16), type, code (2 each), value (4).
const INPUT_EVENT_LEN: usize = 24;

nix::ioctl_read_buf!(eviocgbit_key, b'E', 0x20 + EV_KEY_NR, u8);

/// Opens every input device that can report KEY_POWER.
pub fn open_all(input_dir: &Path) -> Vec<File> {
    let Ok(entries) = fs::read_dir(input_dir) else {
        return Vec::new();
    };
    let mut buttons = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("event") {
            continue;
        }
        let Ok(dev) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(entry.path())
        else {
            continue;
        };
        let mut bits = [0u8; KEY_BITS_LEN];
        // SAFETY: the kernel writes at most `bits.len()` bytes.
        let ok = unsafe { eviocgbit_key(dev.as_raw_fd(), &mut bits) }.is_ok();
        if ok && has_bit(&bits, KEY_POWER) {
            log::info!("power button: {}", entry.path().display());
            buttons.push(dev);
        }
    }
    buttons
}

fn has_bit(bits: &[u8], bit: u16) -> bool {
    bits.get(usize::from(bit / 8))
        .is_some_and(|b| b & (1 << (bit % 8)) != 0)
}

/// Drains pending events; true if the power key was pressed.
pub fn pressed(mut dev: &File) -> bool {
    let mut buf = [0u8; INPUT_EVENT_LEN * 16];
    let mut pressed = false;
    while let Ok(n) = dev.read(&mut buf) {
        if n == 0 {
            break;
        }
        let events = buf.get(..n).unwrap_or_default();
        pressed |= events.chunks_exact(INPUT_EVENT_LEN).any(is_power_press);
    }
    pressed
}

fn is_power_press(event: &[u8]) -> bool {
    let field = |off: usize| -> Option<u16> {
        Some(u16::from_ne_bytes(
            event.get(off..off + 2)?.try_into().ok()?,
        ))
    };
    let value = event
        .get(20..24)
        .and_then(|v| v.try_into().ok())
        .map(i32::from_ne_bytes);
    field(16) == Some(EV_KEY) && field(18) == Some(KEY_POWER) && value == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 30, 1)), "KEY_A");
        assert!(!is_power_press(&event(0, KEY_POWER, 1)), "EV_SYN");
    }

    #[test]
    fn capability_bits() {
        let mut bits = [0u8; KEY_BITS_LEN];
        assert!(!has_bit(&bits, KEY_POWER));
        bits[14] = 1 << 4;
        assert!(has_bit(&bits, KEY_POWER));
    }
}
