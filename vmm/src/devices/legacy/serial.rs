//! 16550A UART (COM1) backed by vm-superio; guest output goes to the VMM's
//! stdout, host input (if any) is fed in by the main loop.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use crate::devices::bus::BusDevice;
use crate::devices::irq::EdgeIrq;

pub struct SerialDevice {
    serial: Serial<EdgeIrq, NoEvents, Box<dyn Write + Send>>,
}

impl SerialDevice {
    pub fn new(irq: EdgeIrq, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            serial: Serial::new(irq, out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.serial.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(&bytes[..room]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial: cannot queue input: {e}");
                0
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(off)) => data[0] = self.serial.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let ([value], Ok(off)) = (data, u8::try_from(offset)) {
            if let Err(e) = self.serial.write(off, *value) {
                log::warn!("serial: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn device() -> (SerialDevice, Sink, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let sink = Sink::default();
        let dev = SerialDevice::new(EdgeIrq(irq.try_clone().unwrap()), Box::new(sink.clone()));
        (dev, sink, irq)
    }

    #[test]
    fn transmits_to_output() {
        let (mut dev, sink, _) = device();
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_raises_interrupt_when_enabled() {
        let (mut dev, _, irq) = device();
        dev.write(1, &[0x01]); // IER: received data available
        assert_eq!(dev.enqueue_input(b"ab"), 2);
        assert!(irq.read().unwrap() >= 1);
        let mut lsr = [0];
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rx = [0];
        dev.read(0, &mut rx);
        assert_eq!(rx[0], b'a');
    }

    #[test]
    fn wide_accesses_are_ignored() {
        let (mut dev, sink, _) = device();
        dev.write(0, b"xy");
        let mut data = [0u8; 2];
        dev.read(0, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        assert!(sink.0.lock().unwrap().is_empty());
    }
}
