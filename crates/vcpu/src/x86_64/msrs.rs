//! Model-specific registers of a vCPU at boot.

use kvm_bindings::{kvm_msr_entry, Msrs};

/// `IA32_SYSENTER_CS`.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// `STAR`: syscall segment selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// `LSTAR`: 64-bit syscall entry.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// `CSTAR`: compat-mode syscall entry.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// `SYSCALL_MASK`: RFLAGS mask on syscall.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// `KERNEL_GS_BASE`: swapgs target.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// `IA32_TSC`.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_MISC_ENABLE`.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// `IA32_MISC_ENABLE` bit: fast string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// `IA32_MTRR_DEF_TYPE`.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back.
pub const MTRR_ENABLE_WRITE_BACK: u64 = (1 << 11) | 6;

fn entry(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

/// The MSR values a vCPU starts with: syscall MSRs cleared, TSC at zero,
/// fast strings on, MTRRs enabled with write-back as the default type.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITE_BACK),
    ]
}

/// Wraps MSR entries for the KVM ioctls.
pub fn to_msrs(entries: &[kvm_msr_entry]) -> Msrs {
    // The only failure is more entries than KVM_MAX_MSR_ENTRIES; callers
    // pass at most that many (state save/restore work in chunks of it), and
    // the slice is clamped so that this cannot fail.
    let n = entries.len().min(kvm_bindings::KVM_MAX_MSR_ENTRIES);
    match Msrs::from_entries(&entries[..n]) {
        Ok(msrs) => msrs,
        Err(_) => unreachable!("{n} MSR entries fit in KVM_MAX_MSR_ENTRIES"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_are_wrapped() {
        let entries = boot_msr_entries();
        let msrs = to_msrs(&entries);
        assert_eq!(msrs.as_slice().len(), entries.len());
        assert!(entries
            .iter()
            .any(|e| e.index == MSR_IA32_MISC_ENABLE && e.data == 1));
    }
}
