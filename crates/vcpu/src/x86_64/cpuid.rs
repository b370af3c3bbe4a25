//! CPUID normalisation: KVM's supported list, adjusted per vCPU.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1 ECX: the guest runs under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;

fn vendor_is_amd(cpuid: &CpuId) -> bool {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        // "AuthenticAMD": EBX = "Auth".
        .is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Auth"))
}

/// Number of bits needed to hold `count` distinct ids.
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Adjusts KVM's supported CPUID for vCPU `id` of `count`: APIC ids, the
/// topology (one socket, one thread per core, `count` cores), the
/// hypervisor bit, and no performance monitoring.
pub fn normalize(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    let amd = vendor_is_amd(supported);
    let count32 = u32::from(count.max(1));
    let apic_id = u32::from(id);
    for entry in cpuid.as_mut_slice() {
        normalize_entry(entry, apic_id, count32, amd);
    }
    cpuid
}

fn normalize_entry(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32, amd: bool) {
    match entry.function {
        0x1 => {
            // EBX: [31:24] initial APIC id, [23:16] logical processors per
            // package, [15:8] CLFLUSH line size in quadwords.
            entry.ebx = (apic_id << 24) | (count << 16) | (8 << 8);
            entry.ecx |= LEAF1_ECX_HYPERVISOR;
            if count > 1 {
                entry.edx |= LEAF1_EDX_HTT;
            } else {
                entry.edx &= !LEAF1_EDX_HTT;
            }
        }
        0x4 if !amd => {
            // Deterministic cache parameters: [31:26] cores per package - 1,
            // [25:14] logical processors sharing this cache - 1.
            let level = (entry.eax >> 5) & 0x7;
            let sharing = if level >= 3 { count - 1 } else { 0 };
            entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | ((count - 1) << 26);
        }
        0x6 => {
            // No power management the guest could try to drive.
            entry.ecx &= !1; // hardware coordination feedback
        }
        0xa => {
            // No virtual PMU.
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        0xb | 0x1f => {
            // Extended topology: level 0 is SMT (1 thread per core), level
            // 1 is the core level (all vCPUs), then the end marker.
            entry.edx = apic_id;
            match entry.index {
                0 => {
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = (1 << 8) | entry.index;
                }
                1 => {
                    entry.eax = id_bits(count);
                    entry.ebx = count;
                    entry.ecx = (2 << 8) | entry.index;
                }
                _ => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = entry.index;
                }
            }
        }
        0x8000_0008 if amd => {
            // ECX: [15:12] APIC id size, [7:0] cores per package - 1.
            entry.ecx = (id_bits(count) << 12) | (count - 1);
        }
        0x8000_001e if amd => {
            // Extended APIC id, one thread per core, core id = APIC id.
            entry.eax = apic_id;
            entry.ebx = apic_id & 0xff;
            entry.ecx = 0;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::KVM_MAX_CPUID_ENTRIES;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn sample(amd: bool) -> CpuId {
        let mut vendor = leaf(0, 0);
        vendor.ebx = u32::from_le_bytes(if amd { *b"Auth" } else { *b"Genu" });
        let mut l4 = leaf(4, 0);
        l4.eax = 3 << 5 | 0x1;
        CpuId::from_entries(&[
            vendor,
            leaf(1, 0),
            l4,
            leaf(0xa, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn apic_ids_and_counts_per_vcpu() {
        for amd in [false, true] {
            let c = normalize(&sample(amd), 3, 4);
            let l1 = find(&c, 1, 0);
            assert_eq!(l1.ebx >> 24, 3);
            assert_eq!((l1.ebx >> 16) & 0xff, 4);
            assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
            assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
            assert_eq!(find(&c, 0xb, 1).ebx, 4);
            assert_eq!(find(&c, 0xb, 1).eax, 2);
            assert_eq!(find(&c, 0xb, 0).edx, 3);
            assert_eq!(find(&c, 0xb, 2).ebx, 0);
            assert_eq!(find(&c, 0xa, 0).eax, 0);
        }
        let intel = normalize(&sample(false), 0, 4);
        assert_eq!(find(&intel, 4, 0).eax >> 26, 3);
        assert_eq!((find(&intel, 4, 0).eax >> 14) & 0xfff, 3);
        let amd = normalize(&sample(true), 2, 4);
        assert_eq!(find(&amd, 0x8000_0008, 0).ecx & 0xff, 3);
        assert_eq!(find(&amd, 0x8000_001e, 0).eax, 2);
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let c = normalize(&sample(false), 0, 1);
        assert_eq!(find(&c, 1, 0).edx & LEAF1_EDX_HTT, 0);
        assert_eq!(find(&c, 0xb, 1).eax, 0);
        let _ = KVM_MAX_CPUID_ENTRIES;
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
        assert_eq!(id_bits(255), 8);
    }
}
