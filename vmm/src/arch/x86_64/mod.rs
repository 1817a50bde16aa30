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
