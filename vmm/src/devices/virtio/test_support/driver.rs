//! A minimal virtio driver for tests: it owns guest memory and programs a
//! transport through its registers, as the guest's virtio_mmio or
//! virtio_pci driver would.
// Test drivers split 64-bit addresses into 32-bit registers and build
// small test patterns and lengths: the truncation is what they mean.
#![allow(clippy::cast_possible_truncation)]

use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::BusDevice;
use crate::devices::pci::msix::Vector;
use crate::devices::pci::PciDevice;
use crate::devices::virtio::pci::{
    common_cfg, vectors_needed, PciInterrupts, ISR_OFFSET, NOTIFY_MULTIPLIER, NOTIFY_OFFSET,
};
use crate::devices::virtio::{MmioTransport, PciTransport, VirtioDevice};

/// Which transport a [`Driver`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mmio,
    Pci,
}

pub const KINDS: [Kind; 2] = [Kind::Mmio, Kind::Pci];

/// Where the tests put a PCI function's BAR 0.
pub const TEST_BAR: u64 = 0x1_0000_0000;

/// The transport under test; as a [`BusDevice`] it is the mmio window, or
/// BAR 0 of the PCI function.
// Tests hold one at a time: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    Mmio(MmioTransport),
    Pci(PciTransport),
}

impl BusDevice for Transport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self {
            Transport::Mmio(t) => t.read(offset, data),
            Transport::Pci(t) => t.bar_read(0, offset, data),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        match self {
            Transport::Mmio(t) => t.write(offset, data),
            Transport::Pci(t) => t.bar_write(0, offset, data),
        }
    }
}

impl Transport {
    pub fn pci(&mut self) -> &mut PciTransport {
        match self {
            Transport::Pci(t) => t,
            Transport::Mmio(_) => panic!("not a PCI transport"),
        }
    }
}

/// MSI-X vectors for a test function: eventfds on made-up GSIs, no VM,
/// and clones of them to watch. INTx is `irq` itself, so a driver that
/// stays on INTx sees it.
pub fn pci_interrupts(device: &dyn VirtioDevice, irq: &EventFd) -> (PciInterrupts, Vec<EventFd>) {
    let fds: Vec<EventFd> = (0..vectors_needed(device))
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let watch = fds.iter().map(|e| e.try_clone().unwrap()).collect();
    let vectors = (0u32..)
        .zip(fds)
        .map(|(i, evt)| Vector::new(evt, 24 + i))
        .collect();
    let irqs = PciInterrupts {
        vectors,
        router: None,
        intx: Some(crate::devices::virtio::pci::IntxLine {
            irq: irq.try_clone().unwrap(),
            resample: EventFd::new(EFD_NONBLOCK).unwrap(),
        }),
    };
    (irqs, watch)
}

pub const MEM_SIZE: usize = 0x20_0000;
/// Rings of queue `q` live at `RINGS + q * RING_STRIDE`.
const RINGS: u64 = 0x1_0000;
const RING_STRIDE: u64 = 0x4000;
/// First byte tests may use for data buffers.
pub const DATA: u64 = 0x4_0000;
pub const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A scratch file, already unlinked; `len` bytes of a recognisable pattern.
pub fn scratch_file(len: usize) -> File {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "vmm-virtio-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i / 512) as u8 ^ (i as u8)).collect();
    std::os::unix::fs::FileExt::write_all_at(&file, &data, 0).unwrap();
    file
}

#[derive(Clone, Copy)]
pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub dev: Transport,
    /// The mmio transport's interrupt, or the PCI function's INTx.
    pub irq: EventFd,
    pub rings: Vec<Ring>,
    pub kind: Kind,
    /// PCI: watchers of the MSI-X vectors' eventfds.
    pub vectors: Vec<EventFd>,
    threaded: bool,
}

impl Driver {
    /// A virtio-mmio transport with its own worker thread, as in production.
    pub fn new(device: Box<dyn VirtioDevice>) -> Driver {
        Driver::of(Kind::Mmio, device)
    }

    /// A transport of `kind` with its own worker thread.
    pub fn of(kind: Kind, device: Box<dyn VirtioDevice>) -> Driver {
        let mem = guest_memory();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut vectors = Vec::new();
        let dev = match kind {
            Kind::Mmio => {
                let mut t =
                    MmioTransport::new(mem.clone(), device, irq.try_clone().unwrap()).unwrap();
                t.take_worker_gate().unwrap().open(None).unwrap();
                Transport::Mmio(t)
            }
            Kind::Pci => {
                let (irqs, watch) = pci_interrupts(device.as_ref(), &irq);
                vectors = watch;
                let mut t = PciTransport::new(mem.clone(), device, TEST_BAR, irqs).unwrap();
                t.take_worker_gate().unwrap().open(None).unwrap();
                Transport::Pci(t)
            }
        };
        let mut d = Driver::with(mem, dev, irq, kind, true);
        d.vectors = vectors;
        d
    }

    /// A virtio-mmio transport that processes queues inside the notify write.
    pub fn new_inline(device: Box<dyn VirtioDevice>) -> Driver {
        Driver::inline_of(Kind::Mmio, device)
    }

    pub fn inline_of(kind: Kind, device: Box<dyn VirtioDevice>) -> Driver {
        let mem = guest_memory();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut vectors = Vec::new();
        let dev = match kind {
            Kind::Mmio => Transport::Mmio(
                MmioTransport::new_inline(mem.clone(), device, irq.try_clone().unwrap()).unwrap(),
            ),
            Kind::Pci => {
                let (irqs, watch) = pci_interrupts(device.as_ref(), &irq);
                vectors = watch;
                Transport::Pci(
                    PciTransport::new_inline(mem.clone(), device, TEST_BAR, irqs).unwrap(),
                )
            }
        };
        let mut d = Driver::with(mem, dev, irq, kind, false);
        d.vectors = vectors;
        d
    }

    fn with(
        mem: GuestMemoryMmap,
        dev: Transport,
        irq: EventFd,
        kind: Kind,
        threaded: bool,
    ) -> Driver {
        Driver {
            mem,
            dev,
            irq,
            rings: Vec::new(),
            kind,
            vectors: Vec::new(),
            threaded,
        }
    }

    /// A `width`-byte read of BAR 0 (PCI) or the window (mmio).
    pub fn read_n(&mut self, offset: u64, width: usize) -> u64 {
        let mut data = [0u8; 8];
        self.dev.read(offset, &mut data[..width]);
        u64::from_le_bytes(data)
    }

    pub fn write_n(&mut self, offset: u64, width: usize, value: u64) {
        self.dev.write(offset, &value.to_le_bytes()[..width]);
    }

    /// Writes the device status register; 0 resets the device.
    pub fn set_status(&mut self, status: u32) {
        match self.kind {
            Kind::Mmio => self.write(VIRTIO_MMIO_STATUS, status),
            Kind::Pci => self.write_n(common_cfg::DEVICE_STATUS, 1, u64::from(status)),
        }
    }

    /// InterruptStatus (mmio) or the ISR (PCI, which the read clears).
    pub fn interrupt_status(&mut self) -> u32 {
        match self.kind {
            Kind::Mmio => self.read(VIRTIO_MMIO_INTERRUPT_STATUS),
            Kind::Pci => self.read_n(ISR_OFFSET, 1) as u32,
        }
    }

    pub fn read(&mut self, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        self.dev.read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write(&mut self, offset: u32, value: u32) {
        self.dev.write(u64::from(offset), &value.to_le_bytes());
    }

    pub fn status(&mut self) -> u32 {
        match self.kind {
            Kind::Mmio => self.read(VIRTIO_MMIO_STATUS),
            Kind::Pci => self.read_n(common_cfg::DEVICE_STATUS, 1) as u32,
        }
    }

    /// (select, value) registers of the device and driver feature words.
    fn feature_regs(&self) -> [u64; 4] {
        match self.kind {
            Kind::Mmio => [
                VIRTIO_MMIO_DEVICE_FEATURES_SEL,
                VIRTIO_MMIO_DEVICE_FEATURES,
                VIRTIO_MMIO_DRIVER_FEATURES_SEL,
                VIRTIO_MMIO_DRIVER_FEATURES,
            ]
            .map(u64::from),
            Kind::Pci => [
                common_cfg::DEVICE_FEATURE_SELECT,
                common_cfg::DEVICE_FEATURE,
                common_cfg::DRIVER_FEATURE_SELECT,
                common_cfg::DRIVER_FEATURE,
            ],
        }
    }

    pub fn device_features(&mut self) -> u64 {
        let [sel, value, _, _] = self.feature_regs();
        self.write_n(sel, 4, 0);
        let low = self.read_n(value, 4);
        self.write_n(sel, 4, 1);
        let high = self.read_n(value, 4);
        low | (high << 32)
    }

    /// ACKNOWLEDGE, DRIVER, features, FEATURES_OK; true if the device
    /// accepted the features.
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.set_status(0);
        self.set_status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.set_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        let [_, _, sel, value] = self.feature_regs();
        self.write_n(sel, 4, 0);
        self.write_n(value, 4, features & 0xffff_ffff);
        self.write_n(sel, 4, 1);
        self.write_n(value, 4, features >> 32);
        let status = self.status() | VIRTIO_CONFIG_S_FEATURES_OK;
        self.set_status(status);
        self.status() & VIRTIO_CONFIG_S_FEATURES_OK != 0
    }

    /// Programs queue `q` with `size` entries at the standard test layout.
    pub fn setup_queue(&mut self, q: u32, size: u32) {
        let base = RINGS + u64::from(q) * RING_STRIDE;
        let ring = Ring {
            size: size as u16,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        };
        // Fresh rings, as a driver allocates them.
        self.write_mem(base, &[0; RING_STRIDE as usize]);
        self.setup_queue_at(q, size, ring.desc, ring.avail, ring.used);
        let q = q as usize;
        if self.rings.len() <= q {
            self.rings.resize(q + 1, ring);
        }
        self.rings[q] = ring;
    }

    pub fn setup_queue_at(&mut self, q: u32, size: u32, desc: u64, avail: u64, used: u64) {
        if self.kind == Kind::Pci {
            use common_cfg::*;
            self.write_n(QUEUE_SELECT, 2, u64::from(q));
            // The register is 16 bits: larger sizes are cut, as a
            // driver's iowrite16 would.
            self.write_n(QUEUE_SIZE, 2, u64::from(size));
            for (reg, addr) in [
                (QUEUE_DESC, desc),
                (QUEUE_DRIVER, avail),
                (QUEUE_DEVICE, used),
            ] {
                // Two halves, the way Linux's vp_iowrite64_twopart does.
                self.write_n(reg, 4, addr & 0xffff_ffff);
                self.write_n(reg + 4, 4, addr >> 32);
            }
            self.write_n(QUEUE_ENABLE, 2, 1);
            return;
        }
        self.write(VIRTIO_MMIO_QUEUE_SEL, q);
        self.write(VIRTIO_MMIO_QUEUE_NUM, size);
        self.write(VIRTIO_MMIO_QUEUE_DESC_LOW, desc as u32);
        self.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail as u32);
        self.write(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
        self.write(VIRTIO_MMIO_QUEUE_USED_LOW, used as u32);
        self.write(VIRTIO_MMIO_QUEUE_USED_HIGH, (used >> 32) as u32);
        self.write(VIRTIO_MMIO_QUEUE_READY, 1);
    }

    pub fn driver_ok(&mut self) {
        let status = self.status() | VIRTIO_CONFIG_S_DRIVER_OK;
        self.set_status(status);
    }

    /// Full initialisation with VERSION_1 plus `features`, every queue at
    /// `size` entries.
    pub fn start(&mut self, features: u64, queues: u32, size: u32) {
        assert!(self.negotiate(VERSION_1 | features));
        for q in 0..queues {
            self.setup_queue(q, size);
        }
        self.driver_ok();
        assert_eq!(self.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    pub fn write_desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.rings[q].desc + u64::from(index) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Writes a chain of (address, length, device-writable) buffers into the
    /// next free descriptors; returns its head.
    pub fn add_chain(&mut self, q: usize, buffers: &[(u64, u32, bool)]) -> u16 {
        let size = self.rings[q].size;
        let head = self.rings[q].next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % size;
            let next = (index + 1) % size;
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if i + 1 < buffers.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.write_desc(q, index, addr, len, flags, next);
        }
        self.rings[q].next_desc = (head + buffers.len() as u16) % size;
        head
    }

    /// Publishes `head` in the available ring (without notifying).
    pub fn push_avail(&mut self, q: usize, head: u16) {
        let ring = &mut self.rings[q];
        let slot = u64::from(ring.avail_idx % ring.size);
        let avail = ring.avail;
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        let idx = ring.avail_idx;
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + slot * 2))
            .unwrap();
        self.mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    }

    /// Sets the available index directly (for corrupt-ring tests).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        self.rings[q].avail_idx = idx;
        self.mem
            .write_obj(idx, GuestAddress(self.rings[q].avail + 2))
            .unwrap();
    }

    pub fn kick(&mut self, q: u32) {
        match self.kind {
            Kind::Mmio => self.write(VIRTIO_MMIO_QUEUE_NOTIFY, q),
            Kind::Pci => {
                let doorbell = NOTIFY_OFFSET + u64::from(q) * u64::from(NOTIFY_MULTIPLIER);
                self.write_n(doorbell, 2, u64::from(q));
            }
        }
    }

    pub fn submit(&mut self, q: usize, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.add_chain(q, buffers);
        self.push_avail(q, head);
        self.kick(q as u32);
        head
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.rings[q].used + 2))
            .unwrap()
    }

    /// Next used element (id, len) of queue `q`, waiting for the worker.
    pub fn wait_used(&mut self, q: usize) -> (u32, u32) {
        self.try_wait_used(q, Duration::from_secs(5))
            .expect("device did not complete the request")
    }

    pub fn try_wait_used(&mut self, q: usize, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        let seen = self.rings[q].used_seen;
        while self.used_idx(q) == seen {
            if !self.threaded || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let ring = &mut self.rings[q];
        let at = ring.used + 4 + u64::from(seen % ring.size) * 8;
        ring.used_seen = seen.wrapping_add(1);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        Some((id, len))
    }

    /// Waits until the device sets NEEDS_RESET.
    pub fn wait_needs_reset(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.status() & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
                return true;
            }
            if !self.threaded || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
}
