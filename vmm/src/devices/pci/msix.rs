//! MSI-X: the vector table and pending-bit array a function exposes in a
//! BAR, and the KVM side that turns a vector into a guest interrupt.
//!
//! Each vector owns an eventfd registered as a KVM irqfd on a GSI of its
//! own; the GSI's routing entry (`KVM_SET_GSI_ROUTING`) carries the
//! message address and data the guest wrote into the table. Firing a
//! vector is one eventfd write, which a worker thread can do; the routes
//! change only on the vCPU thread, when the guest programs the table.
//! A masked vector (its entry or the whole function) does not fire: its
//! pending bit is set instead, and it fires when unmasked.
// The table is 32-bit registers over 64-bit addresses and 16-bit counts:
// the truncating casts are what it means.
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::Complaints;

/// Bytes per table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;
/// Vector control bit 0.
const ENTRY_MASKED: u32 = 1;
/// Message control bits in the capability.
pub const CONTROL_ENABLE: u16 = 1 << 15;
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Most vectors a function may have here: the pending bits fit a `u64`.
pub const MAX_VECTORS: usize = 64;
/// GSIs up to here are the IOAPIC's pins; MSI routes take the ones above.
const IRQCHIP_GSIS: u32 = 24;

/// Why an MSI route could not be set; the host's problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GSI left for an MSI route")]
    NoGsi,
    #[error("cannot build the GSI routing table: {0}")]
    Table(vmm_sys_util::fam::Error),
    #[error("KVM_SET_GSI_ROUTING: {0}")]
    SetRouting(kvm_ioctls::Error),
}

/// The VM's GSI routing table: KVM's default irqchip routes plus one MSI
/// route per programmed vector. `KVM_SET_GSI_ROUTING` replaces the whole
/// table, so it is always rebuilt from here.
pub struct MsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<RouterState>,
}

struct RouterState {
    next_gsi: u32,
    msi: BTreeMap<u32, (u64, u32)>,
}

impl MsiRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        MsiRouter {
            vm,
            state: Mutex::new(RouterState {
                next_gsi: IRQCHIP_GSIS,
                msi: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh GSI for one vector, not routed until [`MsiRouter::set`].
    pub fn allocate(&self) -> Result<u32, Error> {
        let mut state = self.lock();
        let gsi = state.next_gsi;
        if gsi as usize >= kvm_bindings::KVM_MAX_IRQ_ROUTES {
            return Err(Error::NoGsi);
        }
        state.next_gsi += 1;
        Ok(gsi)
    }

    /// Routes `gsi` to the MSI message (address, data).
    pub fn set(&self, gsi: u32, address: u64, data: u32) -> Result<(), Error> {
        let mut state = self.lock();
        state.msi.insert(gsi, (address, data));
        let table = routing_table(&state.msi)?;
        self.vm.set_gsi_routing(&table).map_err(Error::SetRouting)
    }
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
        },
        ..Default::default()
    }
}

/// KVM's default routes (what `KVM_CREATE_IRQCHIP` sets up: GSIs 0-15 on
/// both PICs and the IOAPIC, 16-23 on the IOAPIC), then the MSI routes.
fn routing_table(msi: &BTreeMap<u32, (u64, u32)>) -> Result<KvmIrqRouting, Error> {
    let mut table = KvmIrqRouting::new(0).map_err(Error::Table)?;
    for gsi in 0..IRQCHIP_GSIS {
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            table
                .push(irqchip(gsi, chip, gsi % 8))
                .map_err(Error::Table)?;
        }
        table
            .push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi))
            .map_err(Error::Table)?;
    }
    for (&gsi, &(address, data)) in msi {
        table
            .push(kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                u: kvm_irq_routing_entry__bindgen_ty_1 {
                    msi: kvm_irq_routing_msi {
                        address_lo: address as u32,
                        address_hi: (address >> 32) as u32,
                        data,
                        ..Default::default()
                    },
                },
                ..Default::default()
            })
            .map_err(Error::Table)?;
    }
    Ok(table)
}

/// One vector: its irqfd, the GSI it is registered on, and what that GSI
/// is routed to now.
pub struct Vector {
    pub irq: EventFd,
    pub gsi: u32,
    routed: Option<(u64, u32)>,
}

impl Vector {
    pub fn new(irq: EventFd, gsi: u32) -> Self {
        Vector {
            irq,
            gsi,
            routed: None,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

/// A function's MSI-X state.
pub struct Msix {
    entries: Vec<Entry>,
    vectors: Vec<Vector>,
    pending: u64,
    enabled: bool,
    function_masked: bool,
    /// `None` in the unit tests, which have no VM.
    router: Option<Arc<MsiRouter>>,
    /// The guest decides how often the routes change.
    complaints: Complaints,
}

impl Msix {
    /// At most [`MAX_VECTORS`] vectors; every entry starts masked, as the
    /// spec says.
    pub fn new(vectors: Vec<Vector>, router: Option<Arc<MsiRouter>>) -> Self {
        let mut vectors = vectors;
        vectors.truncate(MAX_VECTORS);
        let entries = vec![
            Entry {
                control: ENTRY_MASKED,
                ..Default::default()
            };
            vectors.len()
        ];
        Msix {
            entries,
            vectors,
            pending: 0,
            enabled: false,
            function_masked: false,
            router,
            complaints: Complaints::new("MSI-X"),
        }
    }

    pub fn table_size(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The eventfds [`Msix::signal`] writes, for a seccomp filter.
    pub fn irq_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.vectors
            .iter()
            .map(|v| std::os::fd::AsRawFd::as_raw_fd(&v.irq))
            .collect()
    }

    /// The message control bits the guest wrote into the capability.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.update();
    }

    fn deliverable(&self, vector: usize) -> bool {
        self.enabled
            && !self.function_masked
            && self
                .entries
                .get(vector)
                .is_some_and(|e| e.control & ENTRY_MASKED == 0)
    }

    /// Fires `vector`, or records it pending while it is masked.
    pub fn signal(&mut self, vector: u16) {
        let vector = usize::from(vector);
        if vector >= self.vectors.len() {
            return;
        }
        if self.deliverable(vector) {
            self.fire(vector);
        } else {
            self.pending |= 1 << vector;
        }
    }

    fn fire(&mut self, vector: usize) {
        if let Some(v) = self.vectors.get(vector) {
            if let Err(e) = v.irq.write(1) {
                self.complaints
                    .error(format_args!("cannot raise vector {vector}: {e}"));
            }
        }
    }

    /// Reads from the table; `offset` is relative to its start. Dword
    /// accesses only (and qwords, as two dwords); anything else reads 0.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset % 4 != 0 || !(data.len() == 4 || data.len() == 8) {
            return;
        }
        for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
            let at = offset + 4 * i as u64;
            let Some(entry) = usize::try_from(at / ENTRY_SIZE)
                .ok()
                .and_then(|i| self.entries.get(i))
            else {
                return;
            };
            let v = match at % ENTRY_SIZE {
                0 => entry.address as u32,
                4 => (entry.address >> 32) as u32,
                8 => entry.data,
                _ => entry.control,
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        if offset % 4 != 0 || !(data.len() == 4 || data.len() == 8) {
            return;
        }
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let at = offset + 4 * i as u64;
            let mut word = [0u8; 4];
            word.copy_from_slice(chunk);
            let v = u32::from_le_bytes(word);
            let Some(entry) = usize::try_from(at / ENTRY_SIZE)
                .ok()
                .and_then(|i| self.entries.get_mut(i))
            else {
                return;
            };
            match at % ENTRY_SIZE {
                0 => entry.address = (entry.address & !0xffff_ffff) | u64::from(v),
                4 => entry.address = (entry.address & 0xffff_ffff) | (u64::from(v) << 32),
                8 => entry.data = v,
                // Only the mask bit of vector control is defined.
                _ => entry.control = v & ENTRY_MASKED,
            }
        }
        self.update();
    }

    /// Reads the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        let bytes = self.pending.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|at| bytes.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Routes every unmasked vector to its current message and fires the
    /// pending ones that became deliverable.
    fn update(&mut self) {
        for i in 0..self.vectors.len() {
            if !self.deliverable(i) {
                continue;
            }
            let (Some(entry), Some(vector)) = (self.entries.get(i), self.vectors.get_mut(i)) else {
                continue;
            };
            let message = (entry.address, entry.data);
            if vector.routed != Some(message) {
                if let Some(router) = &self.router {
                    if let Err(e) = router.set(vector.gsi, message.0, message.1) {
                        self.complaints.error(format_args!("vector {i}: {e}"));
                    }
                }
                vector.routed = Some(message);
            }
            if self.pending & (1 << i) != 0 {
                self.pending &= !(1 << i);
                self.fire(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    fn msix(n: u32) -> Msix {
        let vectors = (0..n)
            .map(|i| Vector::new(EventFd::new(EFD_NONBLOCK).unwrap(), 24 + i))
            .collect();
        Msix::new(vectors, None)
    }

    fn fired(m: &Msix, vector: usize) -> bool {
        m.vectors[vector].irq.read().is_ok()
    }

    fn write(m: &mut Msix, offset: u64, v: u32) {
        m.table_write(offset, &v.to_le_bytes());
    }

    fn read(m: &Msix, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        m.table_read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn pba(m: &Msix) -> u64 {
        let mut b = [0u8; 8];
        m.pba_read(0, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn entries_start_masked_and_read_back() {
        let mut m = msix(3);
        assert_eq!(m.table_size(), 3);
        for v in 0..3 {
            assert_eq!(read(&m, v * 16 + 12), 1);
        }
        write(&mut m, 16, 0xfee0_1000);
        write(&mut m, 20, 0x1);
        write(&mut m, 24, 0x4041);
        write(&mut m, 28, 0xffff_ffff);
        assert_eq!(
            (read(&m, 16), read(&m, 20), read(&m, 24), read(&m, 28)),
            (0xfee0_1000, 1, 0x4041, 1)
        );
        let mut q = [0u8; 8];
        m.table_read(16, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
        // Past the table, misaligned or odd-sized: zero, no panic.
        assert_eq!(read(&m, 48), 0);
        let mut b = [0xffu8; 2];
        m.table_read(16, &mut b);
        assert_eq!(b, [0, 0]);
        m.table_write(2, &[1, 2, 3, 4]);
        m.table_write(u64::MAX - 3, &[1, 2, 3, 4]);
        assert_eq!(read(&m, 0), 0);
    }

    #[test]
    fn masked_vectors_do_not_fire_but_become_pending() {
        let mut m = msix(2);
        // MSI-X disabled: nothing fires, the bit is pending.
        m.signal(1);
        assert!(!fired(&m, 1));
        assert_eq!(pba(&m), 0b10);
        m.set_control(CONTROL_ENABLE);
        // Still masked by its entry.
        assert!(!fired(&m, 1));
        write(&mut m, 16 + 12, 0);
        assert!(fired(&m, 1), "unmasking delivers the pending vector");
        assert_eq!(pba(&m), 0);
        m.signal(1);
        assert!(fired(&m, 1));
        // Function mask holds everything back.
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        m.signal(1);
        assert!(!fired(&m, 1));
        assert_eq!(pba(&m), 0b10);
        m.set_control(CONTROL_ENABLE);
        assert!(fired(&m, 1));
        // Vector 0 is still masked; out-of-range vectors are ignored.
        m.signal(0);
        m.signal(7);
        assert!(!fired(&m, 0));
        assert_eq!(pba(&m), 0b01);
        let mut high = [0xffu8; 4];
        m.pba_read(8, &mut high);
        assert_eq!(high, [0; 4]);
    }

    #[test]
    fn routes_follow_unmasked_entries() {
        let mut m = msix(1);
        m.set_control(CONTROL_ENABLE);
        write(&mut m, 0, 0xfee0_0000);
        write(&mut m, 8, 0x30);
        assert_eq!(m.vectors[0].routed, None, "masked: not routed yet");
        write(&mut m, 12, 0);
        assert_eq!(m.vectors[0].routed, Some((0xfee0_0000, 0x30)));
        write(&mut m, 8, 0x31);
        assert_eq!(m.vectors[0].routed, Some((0xfee0_0000, 0x31)));
    }

    /// KVM takes the table (irqchip routes plus MSI) on a VM with the
    /// in-kernel irqchip, and irqfds on the routed GSIs.
    #[test]
    fn kvm_accepts_the_routes() {
        let kvm = kvm_ioctls::Kvm::new()
            .unwrap_or_else(|e| panic!("/dev/kvm is not usable here ({e}); this test needs it"));
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let vm = Arc::new(vm);
        let router = Arc::new(MsiRouter::new(vm.clone()));
        let gsi = router.allocate().unwrap();
        assert_eq!(gsi, 24);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        vm.register_irqfd(&irq, gsi).unwrap();
        let mut m = Msix::new(vec![Vector::new(irq, gsi)], Some(router.clone()));
        m.set_control(CONTROL_ENABLE);
        write(&mut m, 0, 0xfee0_0000);
        write(&mut m, 8, 0x41);
        write(&mut m, 12, 0);
        assert_eq!(m.vectors[0].routed, Some((0xfee0_0000, 0x41)));
        router
            .set(router.allocate().unwrap(), 0xfee0_1000, 0x42)
            .unwrap();
        assert_eq!(router.lock().msi.len(), 2);
    }

    #[test]
    fn routing_table_keeps_the_irqchip_routes() {
        let mut msi = BTreeMap::new();
        msi.insert(24, (0xfee0_0000u64, 0x41u32));
        let t = routing_table(&msi).unwrap();
        let entries = t.as_slice();
        assert_eq!(entries.len(), 16 * 2 + 8 + 1);
        let ioapic: Vec<u32> = entries
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP)
            // SAFETY: irqchip entries carry the irqchip member.
            .filter(|e| unsafe { e.u.irqchip.irqchip } == KVM_IRQCHIP_IOAPIC)
            .map(|e| e.gsi)
            .collect();
        assert_eq!(ioapic, (0..24).collect::<Vec<_>>());
        let last = entries.last().unwrap();
        assert_eq!((last.gsi, last.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: MSI entries carry the msi member.
        let m = unsafe { last.u.msi };
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_0000, 0, 0x41));
    }
}
