//! Per-vCPU CPUID, derived from what KVM supports on this host: each vCPU
//! gets its own APIC id and a consistent single-socket topology, and the
//! guest is told it runs under a hypervisor.
//!
//! The timer and clock leaves are what lets a guest trust its clocks
//! without calibrating them against each other (which fails when the host
//! is loaded and vCPUs are preempted mid-measurement): the TSC-deadline
//! timer (which KVM emulates but leaves out of the supported list, so it
//! is set here when KVM has the capability; Linux then skips calibrating
//! and verifying the LAPIC timer against the PIT), KVM's paravirtual clock
//! with its stable bit, and the TSC frequency in the hypervisor timing
//! leaf 0x40000010 (eax: TSC kHz, ebx: LAPIC timer kHz).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// What the host tells the guest about its timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    /// KVM_CAP_TSC_DEADLINE_TIMER.
    pub tsc_deadline: bool,
    /// KVM_GET_TSC_KHZ, when the host knows it (a stable host TSC).
    pub tsc_khz: Option<u32>,
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PERFMON: u32 = 0xa;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_FEATURES: u32 = 0x8000_0001;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_SVM: u32 = 0x8000_000a;
/// CPUID 0x80000001 ECX: AMD's virtualization extensions.
const ECX_SVM: u32 = 1 << 2;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
/// Hypervisor timing leaf (VMware's, also read by other guests under KVM).
const LEAF_TIMING: u32 = 0x4000_0010;

const ECX_VMX: u32 = 1 << 5;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
/// KVM_FEATURE_CLOCKSOURCE2 (new kvmclock MSRs) and
/// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: the host sets PVCLOCK_TSC_STABLE_BIT
/// when its clock is stable across vCPUs.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
/// KVM's LAPIC timer runs at 1 GHz (APIC_BUS_CYCLE_NS = 1).
const KVM_LAPIC_KHZ: u32 = 1_000_000;
const EDX_HTT: u32 = 1 << 28;

const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` APIC ids.
fn id_bits(count: u32) -> u32 {
    32 - count.saturating_sub(1).leading_zeros()
}

/// Adjusts `cpuid` (from KVM_GET_SUPPORTED_CPUID) for vCPU `id` of `count`.
pub fn filter(cpuid: &mut CpuId, id: u8, count: u8, timers: Timers) -> Result<(), String> {
    let (id, count) = (u32::from(id), u32::from(count));
    // KVM reports only subleaf 0 (all zero) of the extended topology
    // leaves. Without the core level in subleaf 1 a guest reads every APIC
    // id as a package of its own; Linux then counts as many packages as
    // vCPUs and, on AMD, marks the TSC unstable ("TSCs unsynchronized").
    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
        if !cpuid.as_slice().iter().any(|e| e.function == leaf) {
            continue;
        }
        for index in 0..=2 {
            let present = cpuid
                .as_slice()
                .iter()
                .any(|e| e.function == leaf && e.index == index);
            if !present {
                let sub = kvm_cpuid_entry2 {
                    function: leaf,
                    index,
                    flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                    ..Default::default()
                };
                cpuid
                    .push(sub)
                    .map_err(|e| format!("cannot add CPUID leaf {leaf:#x}.{index}: {e:?}"))?;
            }
        }
    }
    let has_kvm_leaves = cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == LEAF_KVM_FEATURES);
    if let (Some(khz), true) = (timers.tsc_khz, has_kvm_leaves) {
        let timing = kvm_cpuid_entry2 {
            function: LEAF_TIMING,
            eax: khz,
            ebx: KVM_LAPIC_KHZ,
            ..Default::default()
        };
        match cpuid
            .as_mut_slice()
            .iter_mut()
            .find(|e| e.function == LEAF_TIMING)
        {
            Some(e) => *e = timing,
            None => cpuid
                .push(timing)
                .map_err(|e| format!("cannot add the CPUID timing leaf: {e:?}"))?,
        }
    }
    for entry in cpuid.as_mut_slice() {
        filter_entry(entry, id, count, timers);
    }
    Ok(())
}

fn filter_entry(e: &mut kvm_cpuid_entry2, id: u32, count: u32, timers: Timers) {
    match e.function {
        LEAF_FEATURES => {
            // EBX: APIC id [31:24], logical processors [23:16], CLFLUSH size [15:8].
            e.ebx = (id << 24) | (count << 16) | (8 << 8) | (e.ebx & 0xff);
            e.ecx |= ECX_HYPERVISOR;
            // No nested virtualization (see LEAF_AMD_FEATURES).
            e.ecx &= !ECX_VMX;
            if timers.tsc_deadline {
                e.ecx |= ECX_TSC_DEADLINE;
            }
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
        // No nested virtualization: the vmm does not offer it, and a guest
        // that sees SVM or VMX loads its KVM module, which probes and
        // enables the extension for nothing (and slowly, when this host
        // is itself nested).
        LEAF_AMD_FEATURES => e.ecx &= !ECX_SVM,
        LEAF_AMD_SVM => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = 0;
            e.edx = 0;
        }
        LEAF_AMD_SIZE_IDS => {
            // ECX: APIC id size [15:12], cores - 1 [7:0].
            e.ecx = (id_bits(count) << 12) | (count - 1);
        }
        // Our leaves end at the timing leaf when we fill it in.
        LEAF_HYPERVISOR if timers.tsc_khz.is_some() => e.eax = e.eax.max(LEAF_TIMING),
        LEAF_KVM_FEATURES => {
            // KVM offers these whenever it has kvmclock; keep them even if
            // a future filter narrows the leaf.
            e.eax |= KVM_FEATURE_CLOCKSOURCE2 | KVM_FEATURE_CLOCKSOURCE_STABLE_BIT;
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
        filter_entry(&mut e, 3, 4, Timers::default());
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
            filter_entry(e, 2, 3, Timers::default());
            assert_eq!(e.edx, 2);
        }
        assert_eq!((smt.ebx, smt.ecx >> 8), (1, LEVEL_TYPE_SMT));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 3, LEVEL_TYPE_CORE));
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
    }

    #[test]
    fn no_nested_virtualization() {
        let mut intel = entry(LEAF_FEATURES, 0);
        let mut amd = entry(LEAF_AMD_FEATURES, 0);
        let mut svm = entry(LEAF_AMD_SVM, 0);
        intel.ecx = u32::MAX;
        amd.ecx = u32::MAX;
        svm.eax = 1;
        for e in [&mut intel, &mut amd, &mut svm] {
            filter_entry(e, 0, 1, Timers::default());
        }
        assert_eq!(intel.ecx & ECX_VMX, 0);
        assert_ne!(intel.ecx & ECX_HYPERVISOR, 0);
        assert_eq!(amd.ecx & ECX_SVM, 0);
        assert_eq!(amd.ecx, !ECX_SVM, "the other AMD feature bits stay");
        assert_eq!((svm.eax, svm.ebx, svm.ecx, svm.edx), (0, 0, 0, 0));
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
        filter_entry(&mut e, 0, 1, Timers::default());
        assert_eq!((e.eax, e.ebx), (0, 0));
    }

    #[test]
    fn tsc_deadline_only_when_kvm_has_it() {
        let mut e = entry(1, 0);
        filter_entry(&mut e, 0, 1, Timers::default());
        assert_eq!(e.ecx & ECX_TSC_DEADLINE, 0);
        let timers = Timers {
            tsc_deadline: true,
            tsc_khz: None,
        };
        filter_entry(&mut e, 0, 1, timers);
        assert_ne!(e.ecx & ECX_TSC_DEADLINE, 0);
    }

    fn kvm_leaves() -> CpuId {
        let base = kvm_cpuid_entry2 {
            function: LEAF_HYPERVISOR,
            eax: LEAF_KVM_FEATURES,
            ..Default::default()
        };
        let features = kvm_cpuid_entry2 {
            function: LEAF_KVM_FEATURES,
            eax: 1 << 3,
            ..Default::default()
        };
        CpuId::from_entries(&[entry(1, 0), base, features]).unwrap()
    }

    #[test]
    fn timing_leaf_carries_the_tsc_frequency() {
        let mut cpuid = kvm_leaves();
        let timers = Timers {
            tsc_deadline: true,
            tsc_khz: Some(2_345_678),
        };
        filter(&mut cpuid, 1, 2, timers).unwrap();
        // Twice: the leaf is replaced, not added again.
        filter(&mut cpuid, 1, 2, timers).unwrap();
        let leaf = |f: u32| {
            let all: Vec<_> = cpuid
                .as_slice()
                .iter()
                .filter(|e| e.function == f)
                .collect();
            assert_eq!(all.len(), 1, "leaf {f:#x}");
            *all[0]
        };
        assert_eq!(leaf(LEAF_HYPERVISOR).eax, LEAF_TIMING);
        assert_eq!(
            (leaf(LEAF_TIMING).eax, leaf(LEAF_TIMING).ebx),
            (2_345_678, KVM_LAPIC_KHZ)
        );
        assert_ne!(
            leaf(LEAF_KVM_FEATURES).eax & KVM_FEATURE_CLOCKSOURCE_STABLE_BIT,
            0
        );
    }

    #[test]
    fn no_timing_leaf_without_a_known_tsc_frequency_or_kvm_leaves() {
        let mut cpuid = kvm_leaves();
        filter(&mut cpuid, 0, 1, Timers::default()).unwrap();
        assert!(cpuid.as_slice().iter().all(|e| e.function != LEAF_TIMING));
        assert!(cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == LEAF_HYPERVISOR && e.eax == LEAF_KVM_FEATURES));
        let mut plain = CpuId::from_entries(&[entry(1, 0)]).unwrap();
        let timers = Timers {
            tsc_deadline: false,
            tsc_khz: Some(1000),
        };
        filter(&mut plain, 0, 1, timers).unwrap();
        assert_eq!(plain.as_slice().len(), 1);
    }

    /// What KVM_GET_SUPPORTED_CPUID gives for leaf 0xb: subleaf 0 only.
    #[test]
    fn extended_topology_gets_its_core_level() {
        let kvm_0xb = kvm_cpuid_entry2 {
            function: LEAF_EXT_TOPOLOGY,
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            ..Default::default()
        };
        let mut cpuid = CpuId::from_entries(&[entry(1, 0), kvm_0xb]).unwrap();
        filter(&mut cpuid, 1, 2, Timers::default()).unwrap();
        let sub = |i: u32| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == LEAF_EXT_TOPOLOGY && e.index == i)
                .unwrap_or_else(|| panic!("subleaf {i} missing"))
        };
        // SMT: 1 thread; core: shift 1 covers both APIC ids, 2 of them;
        // then the invalid level that ends the list.
        assert_eq!(
            (sub(0).eax, sub(0).ebx, sub(0).ecx >> 8),
            (0, 1, LEVEL_TYPE_SMT)
        );
        assert_eq!(
            (sub(1).eax, sub(1).ebx, sub(1).ecx >> 8),
            (1, 2, LEVEL_TYPE_CORE)
        );
        assert_eq!((sub(2).ebx, sub(2).ecx >> 8), (0, 0));
        assert!((0..3).all(|i| sub(i).edx == 1 && sub(i).flags == KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
        // No 0x1f from KVM, none added.
        assert!(cpuid
            .as_slice()
            .iter()
            .all(|e| e.function != LEAF_V2_EXT_TOPOLOGY));
    }
}
