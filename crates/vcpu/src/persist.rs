//! The persist contract ([`kindling_memory::Persist`]) for the VM (its
//! irqchip, PIT and clock) and its vCPUs.

use kindling_memory::{GuestMemoryMmap, Persist};
use kvm_bindings::{
    kvm_irqchip, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};

use crate::{Kvm, Vcpu, VcpuError, VcpuState, Vm, VmError, VmOptions, VmState};

/// What restoring a [`Vm`] needs: the host resources a new VM is built on.
///
/// The restore creates a VM over `memory` (which must hold the guest RAM
/// as it was when the state was saved, copied or mapped from a snapshot)
/// with `options`, then puts back the PIC, IOAPIC and PIT state and the
/// clock.
///
/// The clock: a save records the kvmclock value and a restore sets it, so
/// the guest's clock continues from the moment of the save; the time the
/// VM spent saved is not seen by the guest (as in Firecracker). Only the
/// value is restored, none of the flags. The TSC travels with each vCPU's
/// MSRs.
#[derive(Debug, Clone, Copy)]
pub struct VmRestoreArgs<'a> {
    /// The open `/dev/kvm`.
    pub kvm: &'a Kvm,
    /// The guest RAM, already filled with the saved contents.
    pub memory: &'a GuestMemoryMmap,
    /// How to create the VM (dirty logging, TSS and identity-map
    /// addresses; the TSS and identity map must be where the saved guest
    /// expects them).
    pub options: VmOptions,
}

fn state_err(step: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmError {
    move |source| VmError::State { step, source }
}

/// The chip slots of a [`VmState`]: name, expected chip id.
const CHIPS: [(&str, u32); 3] = [
    ("PIC master", KVM_IRQCHIP_PIC_MASTER),
    ("PIC slave", KVM_IRQCHIP_PIC_SLAVE),
    ("IOAPIC", KVM_IRQCHIP_IOAPIC),
];

impl VmState {
    fn chips(&self) -> [&kvm_irqchip; 3] {
        [&self.pic_master, &self.pic_slave, &self.ioapic]
    }

    /// Checks that each chip slot holds the chip it names.
    fn validate(&self) -> Result<(), VmError> {
        for (chip, (slot, expected)) in self.chips().into_iter().zip(CHIPS) {
            if chip.chip_id != expected {
                return Err(VmError::ChipIdMismatch {
                    slot,
                    expected,
                    found: chip.chip_id,
                });
            }
        }
        Ok(())
    }
}

impl<'a> Persist<'a> for Vm {
    type State = VmState;
    type ConstructorArgs = VmRestoreArgs<'a>;
    type Error = VmError;

    /// Saves the interrupt controllers, the PIT and the clock; no vCPU may
    /// be running.
    fn save(&self) -> Result<VmState, VmError> {
        let chip = |chip_id| -> Result<kvm_irqchip, VmError> {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd()
                .get_irqchip(&mut chip)
                .map_err(state_err("read the irqchip of"))?;
            Ok(chip)
        };
        let mut clock = self
            .fd()
            .get_clock()
            .map_err(state_err("read the clock of"))?;
        // Only the clock value is meaningful to restore.
        clock.flags = 0;
        Ok(VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.fd().get_pit2().map_err(state_err("read the PIT of"))?,
            clock,
        })
    }

    /// Creates a VM over `args.memory` and puts the saved state back. The
    /// state is checked before the VM is created.
    fn restore(args: VmRestoreArgs<'a>, state: &VmState) -> Result<Self, VmError> {
        state.validate()?;
        let vm = Vm::with_options(args.kvm, args.memory, &args.options)?;
        for chip in state.chips() {
            vm.fd()
                .set_irqchip(chip)
                .map_err(state_err("restore the irqchip of"))?;
        }
        vm.fd()
            .set_pit2(&state.pit)
            .map_err(state_err("restore the PIT of"))?;
        let mut clock = state.clock;
        clock.flags = 0;
        vm.fd()
            .set_clock(&clock)
            .map_err(state_err("restore the clock of"))?;
        Ok(vm)
    }
}

/// What restoring a [`Vcpu`] needs: the VM to create it in and the index
/// it must have.
///
/// The restore creates vCPU `id` in `vm` and puts the saved state back
/// (CPUID, registers, FPU/XSAVE, LAPIC, MSRs including the TSC, pending
/// events, MP state); the state must belong to vCPU `id`. The vCPU is not
/// configured again ([`Vcpu::configure`] would overwrite the state). Host
/// resources such as a [`CoalescedRing`](crate::CoalescedRing) are
/// attached to the restored vCPU afterwards.
///
/// The vCPU should be saved after any exit it took has been completed: a
/// paused [`VcpuHandle`](crate::VcpuHandle) guarantees it (the kick makes
/// KVM finish pending I/O before returning).
#[derive(Debug, Clone, Copy)]
pub struct VcpuRestoreArgs<'a> {
    /// The VM (restored first) to create the vCPU in.
    pub vm: &'a Vm,
    /// The vCPU index the state is restored as.
    pub id: u8,
}

impl<'a> Persist<'a> for Vcpu {
    type State = VcpuState;
    type ConstructorArgs = VcpuRestoreArgs<'a>;
    type Error = VcpuError;

    /// Saves the vCPU's KVM state; the vCPU must not be running.
    fn save(&self) -> Result<VcpuState, VcpuError> {
        crate::x86_64::state::save(self.fd(), self.id(), self.msrs_to_save())
    }

    /// Creates vCPU `args.id` in `args.vm` and restores `state` onto it.
    fn restore(args: VcpuRestoreArgs<'a>, state: &VcpuState) -> Result<Self, VcpuError> {
        let id = args.id;
        if state.id != id {
            return Err(VcpuError::InvalidState {
                id,
                reason: format!("the state belongs to vCPU {}", state.id),
            });
        }
        let vcpu = args
            .vm
            .create_vcpu(id)
            .map_err(|source| VcpuError::Create { id, source })?;
        crate::x86_64::state::restore(vcpu.fd(), id, state, vcpu.xsave2_size())?;
        Ok(vcpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed_state() -> VmState {
        let chip = |chip_id| kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER),
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE),
            ioapic: chip(KVM_IRQCHIP_IOAPIC),
            pit: Default::default(),
            clock: Default::default(),
        }
    }

    #[test]
    fn chip_ids_are_checked_before_anything_is_created() {
        assert!(zeroed_state().validate().is_ok());
        let mut state = zeroed_state();
        state.ioapic.chip_id = KVM_IRQCHIP_PIC_MASTER;
        let err = state.validate().unwrap_err();
        assert!(
            matches!(
                err,
                VmError::ChipIdMismatch {
                    slot: "IOAPIC",
                    expected: KVM_IRQCHIP_IOAPIC,
                    found: KVM_IRQCHIP_PIC_MASTER
                }
            ),
            "{err}"
        );
        let mut state = zeroed_state();
        state.pic_slave.chip_id = 99;
        assert!(state.validate().unwrap_err().to_string().contains("99"));
    }
}
