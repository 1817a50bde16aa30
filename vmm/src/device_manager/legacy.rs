//! The PC legacy devices on the I/O port bus: the serial console (COM1),
//! the i8042 (reset line, Ctrl-Alt-Del), the CMOS clock and the ACPI PM
//! registers (power-off, power button).

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;

use super::{insert, irqfd, Error};
use crate::arch::x86_64::layout::{
    CMOS_PORT, I8042_IRQ, I8042_PORT, PM1A_EVT_PORT, SCI_IRQ, SERIAL_IRQ, SERIAL_PORT,
};
use crate::devices::acpi_pm::{self, AcpiPm};
use crate::devices::bus::Bus;
use crate::devices::irq::{EdgeIrq, KvmIrqLine};
use crate::devices::legacy::{Cmos, SerialDevice, I8042};
use crate::exit::ExitHandle;

/// The legacy devices the main loop talks to (console input, shutdown
/// requests); the CMOS clock only answers the guest.
pub struct LegacyDevices {
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub pm: Arc<Mutex<AcpiPm>>,
}

/// Creates the legacy devices and maps them on `pio`.
pub fn attach(
    vm: &Arc<VmFd>,
    exit: &Arc<ExitHandle>,
    pio: &mut Bus,
) -> Result<LegacyDevices, Error> {
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        EdgeIrq(irqfd(vm, SERIAL_IRQ)?),
        stdout_writer(),
    )));
    insert(pio, serial.clone(), u64::from(SERIAL_PORT), 8)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(
        EdgeIrq(irqfd(vm, I8042_IRQ)?),
        exit.clone(),
    )));
    insert(pio, i8042.clone(), u64::from(I8042_PORT), 5)?;
    insert(
        pio,
        Arc::new(Mutex::new(Cmos::new())),
        u64::from(CMOS_PORT),
        2,
    )?;
    let sci = KvmIrqLine {
        vm: vm.clone(),
        gsi: SCI_IRQ,
    };
    let pm = Arc::new(Mutex::new(AcpiPm::new(Box::new(sci), exit.clone())));
    insert(
        pio,
        pm.clone(),
        u64::from(PM1A_EVT_PORT),
        acpi_pm::BLOCK_LEN,
    )?;
    Ok(LegacyDevices { serial, i8042, pm })
}

/// Guest output goes straight to fd 1, unbuffered: partial lines (shell
/// prompts) must show up immediately.
fn stdout_writer() -> Box<dyn Write + Send> {
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop
    // keeps the File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    struct Stdout(std::mem::ManuallyDrop<File>);
    impl Write for Stdout {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            (&*self.0).write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    Box::new(Stdout(file))
}
