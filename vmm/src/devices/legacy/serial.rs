//! 16550A UART (COM1). Guest output goes through a bounded buffer to a
//! writer thread that owns the VMM's stdout; host input (if any) is fed in
//! by the main loop.
//!
//! Two rules keep the console from losing or stalling a byte:
//!
//! - **The vCPU never waits for stdout.** A byte written to THR lands in
//!   the buffer and the vCPU returns to the guest; the writer thread does
//!   the (blocking) writes. When the buffer is full the transmitter reads
//!   as busy (LSR.THRE clear, no THRE interrupt): a polling driver waits
//!   and an interrupt-driven one gets its THRE interrupt once the writer
//!   has made room. That is backpressure, as a real UART with flow control
//!   would exert, and no byte is dropped on the way. Only a guest that
//!   writes on although the transmitter says busy can overflow the slack
//!   behind the buffer; what it loses is counted and reported, as is
//!   output left undelivered when the VM stops or stdout fails for good.
//! - **The interrupt is a level, delivered as edges.** The UART's INTR
//!   output is computed from the enabled, pending conditions after every
//!   register access (and after the writer makes room); each rise is one
//!   edge on the irqfd. A THRE condition is re-armed whenever the
//!   transmitter becomes empty after a THR write and whenever IER is
//!   written with ETBEI while it is empty (which drivers rely on), and is
//!   cleared by an IIR read that reports it or by a THR write. An edge can
//!   still get lost on its way (KVM's IOAPIC drops one that reaches a
//!   masked pin), so while INTR stays up and the guest does not touch the
//!   UART, the writer thread raises it again, with a growing period.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use seccompiler::BpfProgram;

use crate::devices::bus::BusDevice;
use crate::devices::irq::EdgeIrq;
use crate::devices::legacy::{read_bytes, write_bytes, ByteRegisters};

// Register offsets.
const DATA: u64 = 0; // RBR (read), THR (write), DLL with DLAB
const IER: u64 = 1; // DLM with DLAB
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IER_VALID: u8 = 0x0f;

const IIR_NONE: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
/// IIR bits 7:6 when the FIFOs are enabled: what makes Linux see a 16550A.
const IIR_FIFO_ENABLED: u8 = 0xc0;

const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;

const LCR_DLAB: u8 = 0x80;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
const MCR_VALID: u8 = 0x1f;

const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;

/// The receive FIFO: what the host can queue at once.
const RX_FIFO: usize = 64;
/// The 16550A's transmit FIFO: after a THRE a driver may write this many
/// bytes without looking at LSR again (Linux does), so the transmitter
/// reads as empty only while that much room is left.
const TX_FIFO: usize = 16;
/// Guest output buffered on its way to stdout.
pub const TX_CAPACITY: usize = 64 * 1024;
/// Room behind the buffer for a guest that writes on while the transmitter
/// reads busy: one `rep outsb` (KVM hands over at most a page per exit)
/// plus a FIFO load. Only beyond this is output dropped, and counted.
const TX_SLACK: usize = 4096 + TX_FIFO;

/// How long a stopping VM waits for its buffered output to reach stdout.
pub const STOP_FLUSH: Duration = Duration::from_secs(2);
/// How long the writer, once woken, lets output gather before it writes:
/// a byte-at-a-time guest would otherwise cost a wake-up and a write per
/// byte. Short enough that a prompt still shows up at once.
const GATHER: Duration = Duration::from_millis(1);
/// An interrupt the guest leaves unanswered this long (no register access
/// while INTR is up) is raised again, then after twice as long, and so on.
const KICK_FIRST: Duration = Duration::from_millis(100);
const KICK_MAX: Duration = Duration::from_secs(2);
/// Back-off when stdout is non-blocking and full.
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(20);

/// The UART registers and the transmit buffer, shared by the vCPUs (through
/// the bus), the main loop (input) and the writer thread.
struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fcr: u8,
    rx: VecDeque<u8>,
    /// The THRE interrupt condition.
    thre_pending: bool,
    /// A THRE condition is owed once the transmitter has room: set by a
    /// THR write, settled at the next register access or when the writer
    /// makes room.
    tx_owed: bool,
    /// The level of INTR after the last update; a rise is an edge.
    line: bool,
    irq: EdgeIrq,
    tx: VecDeque<u8>,
    /// Bytes the writer took and has not finished writing: they still
    /// occupy the buffer.
    in_flight: usize,
    writer_idle: bool,
    /// Guest register accesses so far: tells the writer whether the guest
    /// has looked at the UART since INTR went up.
    accesses: u64,
    /// The VM is stopping: the writer ends once the buffer is empty.
    stopping: bool,
    /// stdout failed for good: output is discarded (and counted).
    broken: bool,
    /// Bytes that will never reach stdout.
    lost: u64,
}

impl Uart {
    fn new(irq: EdgeIrq) -> Self {
        Uart {
            ier: 0,
            lcr: 0x03, // 8N1
            mcr: MCR_OUT2,
            scr: 0,
            dll: 0x0c, // 9600 baud
            dlm: 0,
            fcr: 0,
            rx: VecDeque::with_capacity(RX_FIFO),
            thre_pending: false,
            tx_owed: false,
            line: false,
            irq,
            tx: VecDeque::new(),
            in_flight: 0,
            writer_idle: false,
            accesses: 0,
            stopping: false,
            broken: false,
            lost: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.tx.len() + self.in_flight
    }

    /// THR (and the transmitter) read as empty: a FIFO load fits.
    fn tx_ready(&self) -> bool {
        self.broken || self.buffered() + TX_FIFO <= TX_CAPACITY
    }

    /// Pays the owed THRE once there is room.
    fn settle_tx(&mut self) {
        if self.tx_owed && self.tx_ready() {
            self.tx_owed = false;
            self.thre_pending = true;
        }
    }

    /// The highest-priority enabled condition, as IIR encodes it.
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            IIR_RDA
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else {
            IIR_NONE
        }
    }

    /// Recomputes INTR; a rise is an edge to the guest.
    fn update_irq(&mut self) {
        let level = self.interrupt_id() != IIR_NONE;
        if level && !self.line {
            self.irq.raise();
        }
        self.line = level;
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// Returns whether the writer thread needs waking.
    fn transmit(&mut self, value: u8) -> bool {
        self.thre_pending = false;
        self.tx_owed = true;
        if self.loopback() {
            if self.rx.len() < RX_FIFO {
                self.rx.push_back(value);
            }
            return false;
        }
        if self.broken {
            self.lost += 1;
            return false;
        }
        if self.buffered() >= TX_CAPACITY + TX_SLACK {
            if self.lost == 0 {
                log::warn!(
                    "serial: the guest writes although the transmitter is busy; \
                     output is being dropped (counted, reported at exit)"
                );
            }
            self.lost += 1;
            return false;
        }
        let wake = self.tx.is_empty() && self.writer_idle;
        self.tx.push_back(value);
        wake
    }

    fn read_reg(&mut self, offset: u64) -> u8 {
        match offset {
            DATA if self.dlab() => self.dll,
            IER if self.dlab() => self.dlm,
            DATA => self.rx.pop_front().unwrap_or(0),
            IER => self.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                // Reading IIR acknowledges THRE when that is what it says;
                // received data stays pending until it is read.
                if id == IIR_THRE {
                    self.thre_pending = false;
                }
                let fifo = if self.fcr & FCR_ENABLE != 0 {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let mut lsr = 0;
                if !self.rx.is_empty() {
                    lsr |= LSR_DR;
                }
                if self.tx_ready() {
                    lsr |= LSR_THRE | LSR_TEMT;
                }
                lsr
            }
            MSR => {
                if self.loopback() {
                    // The modem inputs are wired to the outputs.
                    let wired = [
                        (MCR_DTR, MSR_DSR),
                        (MCR_RTS, MSR_CTS),
                        (MCR_OUT1, MSR_RI),
                        (MCR_OUT2, MSR_DCD),
                    ];
                    wired
                        .iter()
                        .filter(|&&(out, _)| self.mcr & out != 0)
                        .fold(0, |msr, &(_, input)| msr | input)
                } else {
                    MSR_DCD | MSR_DSR | MSR_CTS
                }
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }

    /// Returns whether the writer thread needs waking.
    fn write_reg(&mut self, offset: u64, value: u8) -> bool {
        match offset {
            DATA if self.dlab() => self.dll = value,
            IER if self.dlab() => self.dlm = value,
            DATA => return self.transmit(value),
            IER => {
                self.ier = value & IER_VALID;
                // A 16550 re-asserts THRE whenever ETBEI is written while
                // the transmitter is empty; drivers rely on it after
                // masking IER around a polled console write.
                if self.ier & IER_THRE != 0 {
                    if self.tx_ready() {
                        self.thre_pending = true;
                    } else {
                        self.tx_owed = true;
                    }
                }
            }
            IIR_FCR => {
                self.fcr = value;
                if value & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
                // Clearing the transmit FIFO cannot take back what already
                // went to the host.
            }
            LCR => self.lcr = value,
            MCR => self.mcr = value & MCR_VALID,
            SCR => self.scr = value,
            _ => {}
        }
        false
    }
}

/// The state and the writer's wake-up, shared with the writer thread.
struct Shared {
    uart: Mutex<Uart>,
    /// Signalled when there is output for the writer, and when the writer
    /// has finished a write (for [`SerialDevice::flush`]).
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Uart> {
        self.uart.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct SerialDevice {
    shared: Arc<Shared>,
    /// stdout until the writer thread takes it.
    out: Option<Box<dyn Write + Send>>,
    writer_started: bool,
}

impl SerialDevice {
    /// A UART raising `irq`, whose output goes to `out` once
    /// [`SerialDevice::start_output`] has started the writer thread;
    /// until then (at most [`TX_CAPACITY`] bytes of) it is buffered.
    pub fn new(irq: EdgeIrq, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            shared: Arc::new(Shared {
                uart: Mutex::new(Uart::new(irq)),
                wake: Condvar::new(),
            }),
            out: Some(out),
            writer_started: false,
        }
    }

    /// Starts the thread that writes guest output to stdout. It installs
    /// `filter` first thing; nothing else runs unfiltered.
    pub fn start_output(&mut self, filter: Option<Arc<BpfProgram>>) -> io::Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let shared = self.shared.clone();
        thread::Builder::new()
            .name("serial-out".into())
            .spawn(move || {
                if let Some(filter) = filter {
                    if let Err(e) = seccompiler::apply_filter(&filter) {
                        log::error!("serial: cannot install seccomp filter: {e}");
                        stdout_failed(&shared, "no seccomp filter");
                        return;
                    }
                }
                writer(&shared, out);
            })?;
        self.writer_started = true;
        Ok(())
    }

    /// Queues host input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let mut uart = self.shared.lock();
        let room = RX_FIFO.saturating_sub(uart.rx.len()).min(bytes.len());
        uart.rx.extend(bytes.iter().take(room));
        uart.update_irq();
        room
    }

    /// Waits until everything the guest wrote so far has been written to
    /// stdout, or `timeout` has passed; returns the bytes still pending.
    pub fn flush(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut uart = self.shared.lock();
        while uart.buffered() > 0 && !uart.broken && self.writer_started {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            uart = self
                .shared
                .wake
                .wait_timeout(uart, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        uart.buffered()
    }

    fn access<T>(&self, f: impl FnOnce(&mut Uart) -> (T, bool)) -> T {
        let mut uart = self.shared.lock();
        uart.accesses = uart.accesses.wrapping_add(1);
        uart.settle_tx();
        let (value, wake) = f(&mut uart);
        uart.update_irq();
        drop(uart);
        if wake {
            self.shared.wake.notify_all();
        }
        value
    }
}

impl Drop for SerialDevice {
    /// The VM has stopped: give the writer a bounded time to deliver what
    /// is buffered, and say what did not make it.
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        let pending = self.flush(STOP_FLUSH);
        let lost = self.shared.lock().lost;
        if pending > 0 {
            log::warn!(
                "serial: {pending} bytes of guest console output not written: stdout is not being read"
            );
        }
        if lost > 0 {
            log::warn!("serial: {lost} bytes of guest console output were lost");
        }
    }
}

impl ByteRegisters for SerialDevice {
    fn read_byte(&mut self, offset: u64) -> u8 {
        self.access(|uart| (uart.read_reg(offset), false))
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        self.access(|uart| ((), uart.write_reg(offset, value)));
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(self, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(self, offset, data);
    }
}

/// The writer thread: takes what the guest wrote and writes it out, for as
/// long as the VM runs and stdout works.
fn writer(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut chunk = Vec::new();
    loop {
        let mut uart = shared.lock();
        if uart.tx.is_empty() && !uart.stopping {
            let mut kick = KICK_FIRST;
            let mut seen = uart.accesses;
            while uart.tx.is_empty() && !uart.stopping {
                uart.writer_idle = true;
                let (guard, waited) = shared
                    .wake
                    .wait_timeout(uart, kick)
                    .unwrap_or_else(|e| e.into_inner());
                uart = guard;
                if !waited.timed_out() {
                    continue;
                }
                if uart.line && uart.accesses == seen {
                    // INTR has been up for a whole period and the guest has
                    // not looked: its edge went missing somewhere (an edge
                    // that reaches a masked IOAPIC pin is dropped). Send
                    // another; a spurious one costs the guest an IIR read.
                    log::debug!("serial: interrupt unanswered for {kick:?}; raising it again");
                    uart.irq.raise();
                    kick = (kick * 2).min(KICK_MAX);
                } else {
                    kick = KICK_FIRST;
                }
                seen = uart.accesses;
            }
            uart.writer_idle = false;
            if !uart.stopping && uart.buffered() < TX_CAPACITY / 2 {
                // Not idle: the vCPU does not wake us for each byte.
                drop(uart);
                thread::sleep(GATHER);
                uart = shared.lock();
            }
        }
        {
            if uart.tx.is_empty() {
                return; // stopping, and everything is out
            }
            chunk.clear();
            chunk.extend(uart.tx.drain(..));
            uart.in_flight = chunk.len();
            drop(uart);
        }
        if let Err(e) = write_out(&mut *out, &chunk) {
            stdout_failed(shared, &e.to_string());
            return;
        }
        let mut uart = shared.lock();
        uart.in_flight = 0;
        // The transmitter may have room again: pay an owed THRE.
        uart.settle_tx();
        uart.update_irq();
        drop(uart);
        shared.wake.notify_all();
    }
}

/// Writes all of `buf`, waiting out a full non-blocking stdout; fails only
/// when stdout is gone for good.
fn write_out(out: &mut dyn Write, mut buf: &[u8]) -> io::Result<()> {
    let mut backoff = RETRY_MIN;
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = buf.get(n..).unwrap_or_default();
                backoff = RETRY_MIN;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// stdout is gone: from now on output is counted and discarded, and the
/// guest sees a transmitter that is always ready, so it does not wait.
fn stdout_failed(shared: &Shared, why: &str) {
    let mut uart = shared.lock();
    let pending = uart.buffered();
    log::error!("serial: cannot write guest console output ({why}); discarding it from now on");
    uart.broken = true;
    uart.lost += pending as u64;
    uart.tx.clear();
    uart.in_flight = 0;
    uart.settle_tx();
    uart.update_irq();
    drop(uart);
    shared.wake.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn device_with(out: Box<dyn Write + Send>) -> (SerialDevice, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(EdgeIrq(irq.try_clone().unwrap()), out);
        dev.start_output(None).unwrap();
        (dev, irq)
    }

    fn device() -> (SerialDevice, Sink, EventFd) {
        let sink = Sink::default();
        let (dev, irq) = device_with(Box::new(sink.clone()));
        (dev, sink, irq)
    }

    fn reg(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut b = [0];
        dev.read(offset, &mut b);
        b[0]
    }

    /// Edges raised since the last call.
    fn edges(irq: &EventFd) -> u64 {
        irq.read().unwrap_or(0)
    }

    #[test]
    fn transmits_to_output() {
        let (mut dev, sink, _) = device();
        for b in b"hi\n" {
            dev.write(DATA, &[*b]);
        }
        assert_eq!(dev.flush(Duration::from_secs(10)), 0);
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_raises_interrupt_when_enabled() {
        let (mut dev, _, irq) = device();
        dev.write(IER, &[IER_RDA]);
        assert_eq!(dev.enqueue_input(b"ab"), 2);
        assert_eq!(edges(&irq), 1);
        assert_eq!(reg(&mut dev, LSR) & LSR_DR, LSR_DR, "data ready");
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_RDA);
        assert_eq!(reg(&mut dev, DATA), b'a');
        assert_eq!(reg(&mut dev, DATA), b'b');
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_NONE);
    }

    #[test]
    fn wide_accesses_split_into_registers() {
        let (mut dev, sink, _) = device();
        // outw to THR: the low byte is transmitted, the high byte is IER.
        dev.write(DATA, &[b'x', IER_THRE]);
        assert_eq!(reg(&mut dev, IER), IER_THRE);
        dev.flush(Duration::from_secs(10));
        assert_eq!(&*sink.0.lock().unwrap(), b"x");
    }

    /// What Linux's 8250 driver does with THRE: enable it (start_tx), take
    /// the interrupt, read IIR, write a FIFO load, read IIR again until it
    /// says no interrupt, disable it when out of data (stop_tx).
    #[test]
    fn thre_interrupt_follows_the_8250_protocol() {
        let (mut dev, sink, irq) = device();
        dev.write(IER, &[IER_RDA]);
        assert_eq!(edges(&irq), 0);
        dev.write(IER, &[IER_RDA | IER_THRE]);
        assert_eq!(edges(&irq), 1, "enabling THRE while empty interrupts");
        let mut sent = Vec::new();
        for round in 0..3u8 {
            assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_THRE, "round {round}");
            for i in 0..16u8 {
                let b = b'a' + (round * 16 + i) % 26;
                dev.write(DATA, &[b]);
                sent.push(b);
            }
        }
        // The handler loops: the transmitter emptied, so IIR says THRE
        // again without another edge being needed.
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_THRE);
        dev.write(IER, &[IER_RDA]); // stop_tx
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_NONE);
        assert_eq!(edges(&irq), 0, "no spurious edges inside the handler");
        // start_tx again: a fresh edge, although the guest never read the
        // IIR that the stop_tx left behind.
        dev.write(IER, &[IER_RDA | IER_THRE]);
        assert_eq!(edges(&irq), 1);
        dev.flush(Duration::from_secs(10));
        assert_eq!(*sink.0.lock().unwrap(), sent);
    }

    /// A driver that writes THR from its handler without reading IIR must
    /// still get its next THRE interrupt.
    #[test]
    fn thr_write_rearms_thre_without_an_iir_read() {
        let (mut dev, _, irq) = device();
        dev.write(IER, &[IER_THRE]);
        assert_eq!(edges(&irq), 1);
        for _ in 0..3 {
            dev.write(DATA, b"z");
            // The next access finds the transmitter empty again.
            let lsr = reg(&mut dev, LSR);
            assert_eq!(lsr & LSR_THRE, LSR_THRE);
            assert_eq!(edges(&irq), 1, "one edge per byte sent");
        }
    }

    /// The polled console path (IER masked) never interrupts, and the
    /// restore of IER re-arms THRE as a 16550 does.
    #[test]
    fn polled_console_write_then_ier_restore() {
        let (mut dev, sink, irq) = device();
        dev.write(IER, &[IER_RDA | IER_THRE]);
        assert_eq!(edges(&irq), 1);
        // The pending THRE is not acknowledged: the console masks IER.
        dev.write(IER, &[0]);
        for b in b"console\n" {
            while reg(&mut dev, LSR) & LSR_THRE == 0 {}
            dev.write(DATA, &[*b]);
        }
        assert_eq!(edges(&irq), 0);
        dev.write(IER, &[IER_RDA | IER_THRE]);
        assert_eq!(edges(&irq), 1, "the restore interrupts again");
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_THRE);
        dev.flush(Duration::from_secs(10));
        assert_eq!(&*sink.0.lock().unwrap(), b"console\n");
    }

    /// An edge lost on the way (the IOAPIC drops edges while a pin is
    /// masked) must not leave the line up for good: the UART raises it
    /// again while the guest does not look, and stops once it does.
    #[test]
    fn an_unanswered_interrupt_is_raised_again() {
        let (mut dev, _, irq) = device();
        dev.write(IER, &[IER_THRE]);
        assert_eq!(edges(&irq), 1);
        // The guest never sees that edge.
        let started = Instant::now();
        while edges(&irq) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "no second edge");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(started.elapsed() >= KICK_FIRST / 2);
        // The guest answers: no more re-raising.
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_THRE);
        dev.write(IER, &[0]);
        thread::sleep(KICK_FIRST * 3);
        assert_eq!(edges(&irq), 0);
    }

    #[test]
    fn fifo_bits_and_loopback() {
        let (mut dev, sink, _) = device();
        assert_eq!(reg(&mut dev, IIR_FCR) & IIR_FIFO_ENABLED, 0);
        dev.write(IIR_FCR, &[FCR_ENABLE]);
        assert_eq!(reg(&mut dev, IIR_FCR) & IIR_FIFO_ENABLED, IIR_FIFO_ENABLED);
        dev.write(MCR, &[MCR_LOOP | MCR_RTS]);
        dev.write(DATA, &[0x5a]);
        assert_eq!(reg(&mut dev, MSR), MSR_CTS);
        assert_eq!(reg(&mut dev, LSR) & LSR_DR, LSR_DR);
        assert_eq!(reg(&mut dev, DATA), 0x5a);
        dev.write(LCR, &[LCR_DLAB]);
        dev.write(DATA, &[0x01]);
        assert_eq!(reg(&mut dev, DATA), 0x01);
        dev.flush(Duration::from_secs(10));
        assert!(sink.0.lock().unwrap().is_empty(), "loopback stays inside");
    }

    fn digit(i: usize) -> u8 {
        b"0123456789"[i % 10]
    }

    /// A pipe: (read end, write end).
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just created and are owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    /// Nobody reads stdout: the transmitter turns busy instead of dropping
    /// bytes, THRE waits for room, and stopping the VM does not hang.
    #[test]
    fn undrained_stdout_is_backpressure_not_loss_and_stop_still_works() {
        let (mut rx, tx) = pipe();
        let (mut dev, irq) = device_with(Box::new(tx));
        dev.write(IER, &[IER_THRE]);
        edges(&irq);
        let mut written = 0usize;
        let started = Instant::now();
        // A polled writer, as the kernel console: wait for THRE (bounded),
        // then write.
        'outer: loop {
            let mut waited = 0;
            while reg(&mut dev, LSR) & LSR_THRE == 0 {
                waited += 1;
                if waited > 1000 {
                    break 'outer;
                }
                thread::sleep(Duration::from_millis(1));
            }
            dev.write(DATA, &[digit(written)]);
            written += 1;
            assert!(started.elapsed() < Duration::from_secs(60));
        }
        // The pipe (64 KiB) and the buffer are full; nothing was dropped.
        assert!(written >= TX_CAPACITY, "{written}");
        assert_eq!(dev.shared.lock().lost, 0);
        let pending = dev.flush(Duration::from_millis(100));
        assert!(pending >= TX_CAPACITY - TX_FIFO, "{pending}");
        // Draining the pipe frees the writer, and the guest gets THRE.
        edges(&irq);
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            rx.read_to_end(&mut all).unwrap();
            all
        });
        assert_eq!(dev.flush(Duration::from_secs(30)), 0);
        assert!(edges(&irq) >= 1, "THRE once there was room");
        assert_eq!(reg(&mut dev, IIR_FCR) & 0x0f, IIR_THRE);
        drop(dev);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), written);
        assert!(all.iter().enumerate().all(|(i, &b)| b == digit(i)));
    }

    #[test]
    fn stop_with_a_wedged_stdout_is_bounded() {
        let (_rx, tx) = pipe();
        let (mut dev, _) = device_with(Box::new(tx));
        // This guest ignores LSR.
        for i in 0..(TX_CAPACITY * 2) {
            dev.write(DATA, &[digit(i)]);
        }
        let lost = dev.shared.lock().lost;
        assert!(lost > 0, "a guest ignoring THRE loses bytes, counted");
        let started = Instant::now();
        drop(dev);
        assert!(started.elapsed() < STOP_FLUSH + Duration::from_secs(5));
    }

    #[test]
    fn broken_stdout_discards_and_never_blocks_the_guest() {
        let (rx, tx) = pipe();
        drop(rx);
        let (mut dev, _) = device_with(Box::new(tx));
        for _ in 0..(TX_CAPACITY * 2) {
            dev.write(DATA, b"x");
        }
        dev.flush(Duration::from_secs(10));
        assert_eq!(reg(&mut dev, LSR) & LSR_THRE, LSR_THRE);
        assert!(dev.shared.lock().broken);
    }
}
