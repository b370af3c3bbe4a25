//! Whether a vCPU state saved on one host can run on another: the CPU
//! vendor and the feature bits the guest was shown.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// The feature registers compared: `(leaf, subleaf, register name)`. A
/// guest may have used any bit it was shown in them.
const FEATURE_WORDS: &[(u32, u32, Register)] = &[
    (0x1, 0, Register::Ecx),
    (0x1, 0, Register::Edx),
    (0x7, 0, Register::Ebx),
    (0x7, 0, Register::Ecx),
    (0x7, 0, Register::Edx),
    (0xd, 1, Register::Eax),
    (0x8000_0001, 0, Register::Ecx),
    (0x8000_0001, 0, Register::Edx),
];

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl Register {
    fn of(self, entry: &kvm_cpuid_entry2) -> u32 {
        match self {
            Register::Eax => entry.eax,
            Register::Ebx => entry.ebx,
            Register::Ecx => entry.ecx,
            Register::Edx => entry.edx,
        }
    }
}

/// Why a saved vCPU cannot run on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuMismatch {
    /// The CPU vendor differs.
    #[error("the snapshot was taken on a {saved} CPU, this host is {host}")]
    Vendor {
        /// The vendor string of the saved CPUID.
        saved: String,
        /// The host's vendor string.
        host: String,
    },
    /// The guest was shown features this host's KVM cannot offer.
    #[error("this host's CPU lacks features the snapshot's guest was shown: CPUID leaf {leaf:#x} subleaf {subleaf} {register:?} bits {missing:#010x}")]
    MissingFeatures {
        /// The leaf.
        leaf: u32,
        /// The subleaf.
        subleaf: u32,
        /// The register.
        register: Register,
        /// The bits set in the snapshot and clear on the host.
        missing: u32,
    },
}

fn find(entries: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == leaf && (e.index == subleaf || leaf != 0x7 && leaf != 0xd))
}

/// The 12-character vendor string of a CPUID list ("AuthenticAMD",
/// "GenuineIntel"), or "unknown".
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> String {
    match find(entries, 0, 0) {
        Some(e) => {
            let mut bytes = Vec::with_capacity(12);
            for r in [e.ebx, e.edx, e.ecx] {
                bytes.extend_from_slice(&r.to_le_bytes());
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => "unknown".into(),
    }
}

/// Checks that the CPUID a vCPU was saved with (`saved`, from its state)
/// can be offered by this host (`host`, KVM's supported CPUID): same
/// vendor, and no feature bit the guest was shown that the host lacks.
pub fn check_compatible(saved: &[kvm_cpuid_entry2], host: &CpuId) -> Result<(), CpuMismatch> {
    let host = host.as_slice();
    let (saved_vendor, host_vendor) = (vendor(saved), vendor(host));
    if saved_vendor != host_vendor {
        return Err(CpuMismatch::Vendor {
            saved: saved_vendor,
            host: host_vendor,
        });
    }
    for &(leaf, subleaf, register) in FEATURE_WORDS {
        let shown = find(saved, leaf, subleaf).map_or(0, |e| register.of(e));
        let offered = find(host, leaf, subleaf).map_or(0, |e| register.of(e));
        // Leaf 1 ECX bit 31 (hypervisor) is set by Kindling, not the host.
        let ignore = if (leaf, register) == (0x1, Register::Ecx) {
            1 << 31
        } else {
            0
        };
        let missing = shown & !offered & !ignore;
        if missing != 0 {
            return Err(CpuMismatch::MissingFeatures {
                leaf,
                subleaf,
                register,
                missing,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn amd(features: u32) -> Vec<kvm_cpuid_entry2> {
        let [b, d, c] = [*b"Auth", *b"enti", *b"cAMD"].map(u32::from_le_bytes);
        vec![
            entry(0, 0, [0xd, b, c, d]),
            entry(1, 0, [0, 0, features, 0]),
            entry(7, 0, [0, 0b1010, 0, 0]),
        ]
    }

    #[test]
    fn same_or_fewer_features_are_compatible() {
        let host = CpuId::from_entries(&amd(0b111)).unwrap();
        assert_eq!(vendor(host.as_slice()), "AuthenticAMD");
        check_compatible(&amd(0b101), &host).unwrap();
        // The hypervisor bit is Kindling's own.
        check_compatible(&amd(0b101 | 1 << 31), &host).unwrap();
    }

    #[test]
    fn a_missing_feature_or_another_vendor_is_named() {
        let host = CpuId::from_entries(&amd(0b011)).unwrap();
        let err = check_compatible(&amd(0b111), &host).unwrap_err();
        assert_eq!(
            err,
            CpuMismatch::MissingFeatures {
                leaf: 1,
                subleaf: 0,
                register: Register::Ecx,
                missing: 0b100
            }
        );
        assert!(err.to_string().contains("bits 0x00000004"), "{err}");
        let mut intel = amd(0b011);
        intel[0].ebx = u32::from_le_bytes(*b"Genu");
        let err = check_compatible(&intel, &host).unwrap_err();
        assert!(matches!(err, CpuMismatch::Vendor { .. }), "{err}");
        // An empty saved list names an unknown vendor.
        assert!(check_compatible(&[], &host).is_err());
    }
}
