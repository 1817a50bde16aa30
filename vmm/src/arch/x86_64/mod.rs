//! x86_64 guest platform: memory layout, boot protocol, CPU state and
//! firmware tables.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod kernel;
pub mod layout;
pub mod regs;

// KVM runs x86_64 guests on x86_64 hosts only, where `usize` is 64 bits:
// a guest-physical size or offset always fits in one.
const _: () = assert!(usize::BITS == u64::BITS);

/// A guest-physical size or offset as a host `usize`.
#[allow(clippy::cast_possible_truncation)] // lossless: usize is 64 bits (asserted above)
pub const fn usize_from(x: u64) -> usize {
    x as usize
}
