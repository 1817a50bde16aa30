//! Per-vCPU CPUID, derived from what KVM supports on this host: each vCPU
//! gets its own APIC id and a consistent single-socket topology, and the
//! guest is told it runs under a hypervisor.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PERFMON: u32 = 0xa;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` APIC ids.
fn id_bits(count: u32) -> u32 {
    32 - count.saturating_sub(1).leading_zeros()
}

/// Adjusts `cpuid` (from KVM_GET_SUPPORTED_CPUID) for vCPU `id` of `count`.
pub fn filter(cpuid: &mut CpuId, id: u8, count: u8) {
    let (id, count) = (u32::from(id), u32::from(count));
    for entry in cpuid.as_mut_slice() {
        filter_entry(entry, id, count);
    }
}

fn filter_entry(e: &mut kvm_cpuid_entry2, id: u32, count: u32) {
    match e.function {
        LEAF_FEATURES => {
            // EBX: APIC id [31:24], logical processors [23:16], CLFLUSH size [15:8].
            e.ebx = (id << 24) | (count << 16) | (8 << 8) | (e.ebx & 0xff);
            e.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // EAX[31:26]: cores per package - 1. Threads sharing a cache
            // [25:14] stay as the host reports them.
            e.eax = (e.eax & 0x03ff_ffff) | ((count - 1) << 26);
        }
        // No PMU is exposed: perf counters would leak host activity and
        // cost exits for nothing on this appliance.
        LEAF_PERFMON => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
            // One thread per core, all cores in one package.
            e.edx = id;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                }
                1 => {
                    e.eax = id_bits(count);
                    e.ebx = count;
                    e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
        }
        LEAF_AMD_SIZE_IDS => {
            // ECX: APIC id size [15:12], cores - 1 [7:0].
            e.ecx = (id_bits(count) << 12) | (count - 1);
        }
        LEAF_AMD_EXT_APIC_ID => {
            e.eax = id;
            // One thread per compute unit; unit id is the core.
            e.ebx = id & 0xff;
            e.ecx = 0;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xffff_ffff,
            ..Default::default()
        }
    }

    #[test]
    fn apic_id_and_count_in_leaf1() {
        let mut e = entry(1, 0);
        filter_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn extended_topology() {
        let mut smt = entry(0xb, 0);
        let mut core = entry(0xb, 1);
        let mut end = entry(0xb, 2);
        for e in [&mut smt, &mut core, &mut end] {
            filter_entry(e, 2, 3);
            assert_eq!(e.edx, 2);
        }
        assert_eq!((smt.ebx, smt.ecx >> 8), (1, LEVEL_TYPE_SMT));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 3, LEVEL_TYPE_CORE));
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(8), 3);
        assert_eq!(id_bits(9), 4);
    }

    #[test]
    fn perfmon_hidden() {
        let mut e = entry(0xa, 0);
        e.eax = 0x0704_3004;
        filter_entry(&mut e, 0, 1);
        assert_eq!((e.eax, e.ebx), (0, 0));
    }
}
