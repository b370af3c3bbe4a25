//! The complete KVM state of an x86_64 vCPU, as a plain struct.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::msrs::to_msrs;
use crate::VcpuError;

/// Everything KVM holds for one vCPU. Saved and restored through the
/// vCPU's [`Persist`](kindling_memory::Persist) implementation, while the
/// vCPU is not running (see [`VcpuRestoreArgs`](crate::VcpuRestoreArgs)).
///
/// The TSC is among the saved MSRs (`IA32_TSC`, in KVM's list of MSRs to
/// save), so a restored vCPU's TSC continues from the saved value.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU index (also its APIC id).
    pub id: u8,
    /// CPUID as set on the vCPU.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Multiprocessing state (runnable, waiting for SIPI, halted).
    pub mp_state: kvm_mp_state,
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE and AVX state.
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Model-specific registers.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts and NMIs.
    pub vcpu_events: kvm_vcpu_events,
}

fn ioctl_err(id: u8, step: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VcpuError {
    move |source| VcpuError::Ioctl { id, step, source }
}

/// Reads every MSR in `indices` that KVM can read, skipping the ones it
/// refuses.
fn read_msrs(fd: &VcpuFd, id: u8, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    while !rest.is_empty() {
        let chunk_len = rest.len().min(kvm_bindings::KVM_MAX_MSR_ENTRIES);
        let mut msrs = to_msrs(&rest[..chunk_len]);
        let read = fd.get_msrs(&mut msrs).map_err(ioctl_err(id, "read MSRs"))?;
        out.extend_from_slice(&msrs.as_slice()[..read]);
        // KVM stops at the first MSR it cannot read; skip that one.
        let consumed = if read < chunk_len { read + 1 } else { read };
        rest.drain(..consumed);
    }
    Ok(out)
}

/// Saves the state of `fd`. `msr_indices` lists the MSRs to save (from
/// [`Kvm::msrs_to_save`](crate::Kvm::msrs_to_save)).
pub(crate) fn save(fd: &VcpuFd, id: u8, msr_indices: &[u32]) -> Result<VcpuState, VcpuError> {
    Ok(VcpuState {
        id,
        cpuid: fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err(id, "read CPUID"))?
            .as_slice()
            .to_vec(),
        mp_state: fd
            .get_mp_state()
            .map_err(ioctl_err(id, "read the MP state"))?,
        regs: fd.get_regs().map_err(ioctl_err(id, "read registers"))?,
        sregs: fd
            .get_sregs()
            .map_err(ioctl_err(id, "read special registers"))?,
        xsave: fd.get_xsave().map_err(ioctl_err(id, "read XSAVE state"))?,
        xcrs: fd.get_xcrs().map_err(ioctl_err(id, "read XCRs"))?,
        debugregs: fd
            .get_debug_regs()
            .map_err(ioctl_err(id, "read debug registers"))?,
        lapic: fd.get_lapic().map_err(ioctl_err(id, "read the LAPIC"))?,
        msrs: read_msrs(fd, id, msr_indices)?,
        vcpu_events: fd
            .get_vcpu_events()
            .map_err(ioctl_err(id, "read vCPU events"))?,
    })
}

/// Puts `state` back on `fd`, whose KVM must not need more XSAVE space than
/// `kvm_xsave` holds (`xsave2_size` is KVM's `KVM_CAP_XSAVE2` answer).
pub(crate) fn restore(
    fd: &VcpuFd,
    id: u8,
    state: &VcpuState,
    xsave2_size: usize,
) -> Result<(), VcpuError> {
    if state.id != id {
        return Err(VcpuError::InvalidState {
            id,
            reason: format!("the state belongs to vCPU {}", state.id),
        });
    }
    if state.cpuid.len() > KVM_MAX_CPUID_ENTRIES {
        return Err(VcpuError::InvalidState {
            id,
            reason: format!(
                "{} CPUID entries (at most {KVM_MAX_CPUID_ENTRIES})",
                state.cpuid.len()
            ),
        });
    }
    if state.msrs.len() > kvm_bindings::KVM_MAX_MSR_ENTRIES * 4 {
        return Err(VcpuError::InvalidState {
            id,
            reason: format!("{} MSRs", state.msrs.len()),
        });
    }
    if xsave2_size > std::mem::size_of::<kvm_xsave>() {
        return Err(VcpuError::InvalidState {
            id,
            reason: format!(
                "this host's XSAVE area needs {xsave2_size} bytes, more than the {} saved",
                std::mem::size_of::<kvm_xsave>()
            ),
        });
    }
    let cpuid = CpuId::from_entries(&state.cpuid).map_err(|_| VcpuError::InvalidState {
        id,
        reason: "bad CPUID list".into(),
    })?;
    fd.set_cpuid2(&cpuid).map_err(ioctl_err(id, "set CPUID"))?;
    fd.set_mp_state(state.mp_state)
        .map_err(ioctl_err(id, "set the MP state"))?;
    fd.set_regs(&state.regs)
        .map_err(ioctl_err(id, "set registers"))?;
    fd.set_sregs(&state.sregs)
        .map_err(ioctl_err(id, "set special registers"))?;
    // SAFETY: KVM reads at most its XSAVE size from the struct, and we
    // checked above that this size fits in `kvm_xsave`.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(ioctl_err(id, "set XSAVE state"))?;
    fd.set_xcrs(&state.xcrs)
        .map_err(ioctl_err(id, "set XCRs"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(ioctl_err(id, "set debug registers"))?;
    fd.set_lapic(&state.lapic)
        .map_err(ioctl_err(id, "set the LAPIC"))?;
    for chunk in state.msrs.chunks(kvm_bindings::KVM_MAX_MSR_ENTRIES) {
        let msrs = to_msrs(chunk);
        let written = fd.set_msrs(&msrs).map_err(ioctl_err(id, "set MSRs"))?;
        if written < chunk.len() {
            return Err(VcpuError::Msr {
                id,
                index: chunk[written].index,
                step: "restoring state",
            });
        }
    }
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(ioctl_err(id, "set vCPU events"))?;
    Ok(())
}
