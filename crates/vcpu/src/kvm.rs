//! Opening `/dev/kvm` and checking what it can do.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Cap;

use crate::KvmError;

/// Every KVM capability Kindling relies on.
pub const REQUIRED_CAPABILITIES: &[Cap] = &[
    Cap::Irqchip,
    Cap::UserMemory,
    Cap::SetTssAddr,
    Cap::SetIdentityMapAddr,
    Cap::Pit2,
    Cap::PitState2,
    Cap::Ioeventfd,
    Cap::Irqfd,
    Cap::ExtCpuid,
    Cap::ImmediateExit,
    Cap::MpState,
    Cap::VcpuEvents,
    Cap::Debugregs,
    Cap::Xsave,
    Cap::Xcrs,
    Cap::AdjustClock,
];

/// An open, checked `/dev/kvm`.
#[derive(Debug)]
pub struct Kvm {
    kvm: kvm_ioctls::Kvm,
    supported_cpuid: CpuId,
    max_vcpus: usize,
    msrs_to_save: Vec<u32>,
    xsave2_size: usize,
}

impl Kvm {
    /// The default KVM device.
    pub const DEFAULT_PATH: &'static str = "/dev/kvm";

    /// Opens `/dev/kvm` and checks it.
    pub fn new() -> Result<Self, KvmError> {
        Self::with_path(Self::DEFAULT_PATH)
    }

    /// Opens the KVM device at `path` and checks the API version and
    /// [`REQUIRED_CAPABILITIES`].
    pub fn with_path(path: &str) -> Result<Self, KvmError> {
        let kvm = kvm_ioctls::Kvm::new_with_path(std::ffi::CString::new(path).map_err(|_| {
            KvmError::NotFound {
                path: path.to_string(),
            }
        })?)
        .map_err(|source| match source.errno() {
            libc::ENOENT => KvmError::NotFound {
                path: path.to_string(),
            },
            libc::EACCES | libc::EPERM => KvmError::PermissionDenied {
                path: path.to_string(),
            },
            _ => KvmError::Open {
                path: path.to_string(),
                source,
            },
        })?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(KvmError::ApiVersion(version));
        }
        if let Some(cap) = REQUIRED_CAPABILITIES
            .iter()
            .find(|&&cap| !kvm.check_extension(cap))
        {
            return Err(KvmError::MissingCapability(*cap));
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::SupportedCpuid)?;
        let max_vcpus = kvm.get_max_vcpus();
        let msrs_to_save = kvm
            .get_msr_index_list()
            .map(|list| list.as_slice().to_vec())
            .unwrap_or_default();
        let xsave2_size = usize::try_from(kvm.check_extension_int(Cap::Xsave2)).unwrap_or(0);
        Ok(Self {
            kvm,
            supported_cpuid,
            max_vcpus,
            msrs_to_save,
            xsave2_size,
        })
    }

    /// The CPUID entries KVM can expose to guests.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.supported_cpuid
    }

    /// The largest number of vCPUs a VM may have.
    pub fn max_vcpus(&self) -> usize {
        self.max_vcpus
    }

    /// The MSRs a vCPU snapshot saves: KVM's list of MSRs to save.
    pub fn msrs_to_save(&self) -> &[u32] {
        &self.msrs_to_save
    }

    /// The XSAVE area size KVM needs (`KVM_CAP_XSAVE2`), or 0 if unknown.
    pub fn xsave2_size(&self) -> usize {
        self.xsave2_size
    }

    /// The underlying kvm-ioctls handle.
    pub fn fd(&self) -> &kvm_ioctls::Kvm {
        &self.kvm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_says_how_to_fix_it() {
        let err = Kvm::with_path("/nonexistent/kvm").unwrap_err();
        assert!(matches!(err, KvmError::NotFound { .. }));
        assert!(err.to_string().contains("load the kvm module"), "{err}");
    }

    #[test]
    fn a_non_kvm_device_is_refused() {
        // /dev/null opens but answers no KVM ioctl.
        let err = Kvm::with_path("/dev/null").unwrap_err();
        assert!(matches!(err, KvmError::ApiVersion(_)), "{err}");
    }

    #[test]
    fn nul_in_path_is_an_error() {
        assert!(Kvm::with_path("/dev/\0kvm").is_err());
    }
}
