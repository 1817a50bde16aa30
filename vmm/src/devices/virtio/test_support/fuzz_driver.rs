//! Turns arbitrary bytes into a guest driving a virtio-blk or virtio-rng
//! device over virtio-mmio or virtio-pci: register accesses (for PCI also
//! configuration space writes: BAR moves, MSI-X control), raw descriptor
//! and ring writes, and notifications, all against a small guest memory. Shared by the cargo-fuzz
//! target in vmm/fuzz (through the `fuzzing` feature, as `vmm::fuzz_driver`)
//! and a deterministic test.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::BusDevice;
use crate::devices::pci::msix::Vector;
use crate::devices::pci::PciDevice;
use crate::devices::virtio::pci::{
    common_cfg, vectors_needed, IntxLine, PciInterrupts, ISR_OFFSET, NOTIFY_MULTIPLIER,
    NOTIFY_OFFSET,
};
use crate::devices::virtio::{Block, MmioTransport, PciTransport, Rng, VirtioDevice};

/// Where the fuzzed PCI function's BAR starts.
const PCI_BAR: u64 = 0x1000_0000;
/// Bytes of BAR 0 the register accesses cover (every region, then some).
const PCI_REGS: u16 = 0x6000;

/// The transport under fuzz, with its register layout.
// One lives per input: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Dev {
    Mmio(MmioTransport),
    Pci(PciTransport),
}

impl Dev {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self {
            Dev::Mmio(t) => t.read(offset, data),
            Dev::Pci(t) => t.bar_read(0, offset, data),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match self {
            Dev::Mmio(t) => t.write(offset, data),
            Dev::Pci(t) => t.bar_write(0, offset, data),
        }
    }

    fn w32(&mut self, offset: u64, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }

    fn w16(&mut self, offset: u64, value: u16) {
        self.write(offset, &value.to_le_bytes());
    }

    fn notify(&mut self, queue: u16) {
        match self {
            Dev::Mmio(_) => self.w32(0x50, u32::from(queue)),
            Dev::Pci(_) => self.w16(
                NOTIFY_OFFSET + u64::from(queue) * u64::from(NOTIFY_MULTIPLIER),
                queue,
            ),
        }
    }

    fn set_status(&mut self, status: u8) {
        match self {
            Dev::Mmio(_) => self.w32(0x70, u32::from(status)),
            Dev::Pci(_) => self.write(common_cfg::DEVICE_STATUS, &[status]),
        }
    }

    fn status(&mut self) -> u32 {
        let mut word = [0u8; 4];
        match self {
            Dev::Mmio(_) => self.read(0x70, &mut word),
            Dev::Pci(_) => self.read(common_cfg::DEVICE_STATUS, &mut word[..1]),
        }
        u32::from_le_bytes(word)
    }

    fn interrupt_status(&mut self) -> u32 {
        let mut word = [0u8; 4];
        match self {
            Dev::Mmio(_) => self.read(0x60, &mut word),
            Dev::Pci(_) => self.read(ISR_OFFSET, &mut word[..1]),
        }
        u32::from_le_bytes(word)
    }

    fn register_span(&self) -> u16 {
        match self {
            Dev::Mmio(_) => 0x140,
            Dev::Pci(_) => PCI_REGS,
        }
    }
}

fn pci_transport(mem: &GuestMemoryMmap, device: Box<dyn VirtioDevice>) -> PciTransport {
    let eventfd = || EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let vectors = (0u32..)
        .take(vectors_needed(device.as_ref()))
        .map(|i| Vector::new(eventfd(), 24 + i))
        .collect();
    let irqs = PciInterrupts {
        vectors,
        router: None,
        intx: Some(IntxLine {
            irq: eventfd(),
            resample: eventfd(),
        }),
    };
    PciTransport::new_inline(mem.clone(), device, PCI_BAR, irqs).expect("transport")
}

const LOW_MEM: usize = 0x1_0000;
/// A second region past a hole, so buffers can straddle the gap.
const HIGH_MEM: (u64, usize) = (0x2_0000, 0x4000);
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x3000;
const USED: u64 = 0x4000;
const DISK_SIZE: usize = 64 * 1024;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
}

fn disk() -> File {
    // SAFETY: memfd_create with a valid NUL-terminated name; the returned fd
    // is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(DISK_SIZE as u64)
        .expect("sizing the fuzz disk");
    file
}

/// Runs one input. Panics only if the device model misbehaves.
pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let Some(selector) = input.u8() else {
        return;
    };
    let device: Box<dyn VirtioDevice> = if selector & 1 == 0 {
        Box::new(Block::new(disk(), selector & 2 != 0).expect("fuzz disk"))
    } else {
        Box::new(Rng::new())
    };
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), LOW_MEM),
        (GuestAddress(HIGH_MEM.0), HIGH_MEM.1),
    ])
    .expect("fuzz guest memory");
    let mut dev = if selector & 4 == 0 {
        let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        Dev::Mmio(MmioTransport::new_inline(mem.clone(), device, irq).expect("transport"))
    } else {
        Dev::Pci(pci_transport(&mem, device))
    };
    let mut avail_idx: u16 = 0;
    let mut queue_size: u16 = 256;

    while let Some(op) = input.u8() {
        // Weighted towards queue traffic; register and status writes are
        // rarer because they mostly end in a reset or a broken device.
        let done = match op % 16 {
            0 => register_write(&mut dev, &mut input),
            1 => register_read(&mut dev, &mut input),
            2 => memory_write(&mem, &mut input),
            3 => init(&mut dev, &mut input, &mut queue_size),
            4..=7 => descriptor_write(&mem, &mut input),
            8..=10 => input.u16().map(|head| {
                // Publish `head` in the available ring, then notify.
                let slot = u64::from(avail_idx % queue_size.max(1));
                avail_idx = avail_idx.wrapping_add(1);
                let head = if head & 0x8000 != 0 {
                    head
                } else {
                    head % queue_size.max(1)
                };
                let _ = mem.write_obj(head, GuestAddress(AVAIL + 4 + slot * 2));
                let _ = mem.write_obj(avail_idx, GuestAddress(AVAIL + 2));
                dev.notify(0);
            }),
            11 => input.u8().map(|delta| {
                // Small moves of the available index, in both directions.
                let idx = avail_idx.wrapping_add(i16::from(delta as i8) as u16);
                avail_idx = idx;
                let _ = mem.write_obj(idx, GuestAddress(AVAIL + 2));
            }),
            12 => input.u8().map(|q| dev.notify(u16::from(q % 4))),
            13 => input.u8().map(|s| dev.set_status(s)),
            _ => block_header(&mem, &mut input),
        };
        if done.is_none() {
            break;
        }
    }

    // Whatever happened, a reset must bring the device back to a clean state.
    dev.set_status(0);
    assert_eq!(dev.status(), 0, "status after reset");
    assert_eq!(dev.interrupt_status(), 0, "interrupt status after reset");
}

fn register_write(dev: &mut Dev, input: &mut Input) -> Option<()> {
    let raw = input.u16()?;
    let value = input.u32()?;
    let choice = input.u8()?;
    let width = [4usize, 4, 4, 1, 2, 8]
        .get(usize::from(choice % 6))
        .copied()?;
    let bytes = u64::from(value).to_le_bytes();
    let data = bytes.get(..width)?;
    match dev {
        // A quarter of PCI writes go to the configuration space: BARs,
        // the command register, the MSI-X message control.
        Dev::Pci(t) if choice & 0x80 != 0 && choice & 0x40 != 0 => {
            t.config_write(usize::from(raw % 0x100), data);
        }
        _ => {
            let span = dev.register_span();
            dev.write(u64::from(raw % span), data);
        }
    }
    Some(())
}

fn register_read(dev: &mut Dev, input: &mut Input) -> Option<()> {
    let offset = u64::from(input.u16()?);
    let width = [4usize, 1, 2, 8]
        .get(usize::from(input.u8()? % 4))
        .copied()?;
    let mut buf = [0u8; 8];
    dev.read(offset, buf.get_mut(..width)?);
    Some(())
}

fn memory_write(mem: &GuestMemoryMmap, input: &mut Input) -> Option<()> {
    let addr = u64::from(input.u16()?) * 2;
    let len = usize::from(input.u8()?).min(input.0.len());
    let (bytes, rest) = input.0.split_at(len);
    input.0 = rest;
    // Writes that fall outside guest memory are simply lost, as on hardware.
    let _ = mem.write_slice(bytes, GuestAddress(addr));
    Some(())
}

/// A well-behaved initialisation with fuzzed features and queue size, so
/// the interesting paths are reachable from short inputs.
fn init(dev: &mut Dev, input: &mut Input, queue_size: &mut u16) -> Option<()> {
    let raw = input.u64()?;
    let size = input.u16()?;
    // Mostly a feature set a real driver would pick (VERSION_1 plus some of
    // SEG_MAX, FLUSH, INDIRECT_DESC), sometimes garbage.
    let features = if raw & 3 != 0 {
        (1u64 << 32) | (raw & ((1 << 2) | (1 << 9) | (1 << 28)))
    } else {
        raw
    };
    if let Dev::Pci(_) = dev {
        use common_cfg::*;
        for status in [0, 1, 3] {
            dev.set_status(status);
        }
        dev.w32(DRIVER_FEATURE_SELECT, 0);
        dev.w32(DRIVER_FEATURE, low_half(features));
        dev.w32(DRIVER_FEATURE_SELECT, 1);
        dev.w32(DRIVER_FEATURE, low_half(features >> 32));
        dev.set_status(0xb);
        dev.w16(QUEUE_SELECT, 0);
        dev.w16(QUEUE_SIZE, size);
        dev.w32(QUEUE_DESC, low_half(DESC));
        dev.w32(QUEUE_DRIVER, low_half(AVAIL));
        dev.w32(QUEUE_DEVICE, low_half(USED));
        dev.w16(QUEUE_ENABLE, 1);
        dev.set_status(0xf);
        *queue_size = size;
        return Some(());
    }
    let mut w = |offset: u64, value: u32| dev.w32(offset, value);
    w(0x70, 0);
    w(0x70, 1);
    w(0x70, 3);
    w(0x24, 0);
    w(0x20, low_half(features));
    w(0x24, 1);
    w(0x20, (features >> 32) as u32);
    w(0x70, 0xb);
    w(0x30, 0);
    w(0x38, u32::from(size));
    w(0x80, low_half(DESC));
    w(0x90, low_half(AVAIL));
    w(0xa0, low_half(USED));
    w(0x44, 1);
    w(0x70, 0xf);
    *queue_size = size;
    Some(())
}

/// The low 32 bits, for a register that takes half of a 64-bit value.
fn low_half(value: u64) -> u32 {
    let [a, b, c, d, ..] = value.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// A virtio-blk request header (IN, OUT, FLUSH, GET_ID, DISCARD or
/// anything) with a small sector number.
fn block_header(mem: &GuestMemoryMmap, input: &mut Input) -> Option<()> {
    let addr = u64::from(input.u16()?) * 4;
    let kind = match input.u8()? % 6 {
        0 => 0,
        1 => 1,
        2 => 4,
        3 => 8,
        4 => 11,
        _ => input.u32()?,
    };
    let sector = u64::from(input.u8()?);
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    let _ = mem.write_slice(&header, GuestAddress(addr));
    Some(())
}

fn descriptor_write(mem: &GuestMemoryMmap, input: &mut Input) -> Option<()> {
    let index = u64::from(input.u8()?);
    let kind = input.u8()?;
    // Mostly addresses inside guest memory, sometimes anything at all.
    let addr = if kind & 0x80 != 0 {
        input.u64()?
    } else {
        u64::from(input.u16()?) * 4
    };
    let len = if kind & 0x40 != 0 {
        input.u32()?
    } else {
        u32::from(input.u16()?)
    };
    let flags = u16::from(kind & 0x7);
    let next = u16::from(input.u8()?);
    let at = GuestAddress(DESC + index * 16);
    let _ = mem.write_obj(addr, at);
    let _ = mem.write_obj(len, GuestAddress(at.0 + 8));
    let _ = mem.write_obj(flags, GuestAddress(at.0 + 12));
    let _ = mem.write_obj(next, GuestAddress(at.0 + 14));
    Some(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    /// xorshift64*: fixed seed, so failures reproduce.
    struct Prng(u64);

    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Inputs biased towards meaningful requests: an initialisation, blk
    /// headers in memory, then random operations.
    fn input(rng: &mut Prng) -> Vec<u8> {
        let mut v = vec![rng.next().to_le_bytes()[0]];
        if rng.next() % 4 != 0 {
            v.push(3);
            v.extend_from_slice(&1u64.to_le_bytes());
            let size = [16u16, 256, 8, 3, 0][usize::try_from(rng.next() % 5).unwrap()];
            v.extend_from_slice(&size.to_le_bytes());
        }
        let len = rng.next() % 512;
        for _ in 0..len {
            v.push(rng.next().to_le_bytes()[0]);
        }
        v
    }

    #[test]
    fn survives_pseudo_random_guests() {
        let iterations: u32 = std::env::var("VIRTIO_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_000);
        let mut rng = Prng(0x5eed_1234_abcd_0001);
        let start = Instant::now();
        for _ in 0..iterations {
            super::run(&input(&mut rng));
        }
        eprintln!(
            "virtio fuzz driver: {iterations} inputs in {:?}",
            start.elapsed()
        );
    }
}
