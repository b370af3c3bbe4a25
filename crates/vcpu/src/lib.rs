//! The KVM VM and its vCPUs, for Kindling microVMs.
//!
//! - [`Kvm`] opens `/dev/kvm` and checks the API version and every
//!   capability Kindling relies on, naming what is missing.
//! - [`Vm`] owns the KVM VM: memory slots, the in-kernel irqchip and PIT,
//!   irqfds and ioeventfds, and creates [`Vcpu`]s.
//! - [`Vcpu`] sets a vCPU up (CPUID, MSRs, FPU, LAPIC, and for the boot
//!   vCPU the 64-bit Linux boot-protocol entry state) and runs it, turning
//!   port-I/O and MMIO exits into calls on a [`VcpuExitHandler`].
//! - [`VcpuHandle`] runs a vCPU on its own thread and pauses, resumes or
//!   stops it from another thread, kicking it out of `KVM_RUN` with a
//!   signal and `immediate_exit`, so that stopping never waits on a guest.
//! - [`VcpuState`] is everything KVM holds for a vCPU and [`VmState`]
//!   the VM-wide part (irqchip, PIT, clock), as plain serialisable structs;
//!   [`Vcpu`] and [`Vm`] implement [`kindling_memory::Persist`] with them
//!   ([`VcpuRestoreArgs`], [`VmRestoreArgs`]).
//!
//! This crate knows nothing about devices: the VMM connects its buses to
//! the exit handler trait.

mod coalesced;
mod error;
mod exit;
mod handle;
mod kick;
mod kvm;
#[cfg(target_arch = "x86_64")]
mod persist;
mod vcpu;
mod vm;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use coalesced::CoalescedRing;
pub use error::{KvmError, VcpuError, VmError};
pub use exit::{VcpuExitHandler, VcpuStopReason};
pub use handle::{OnVcpuStart, OnVcpuStop, VcpuHandle, VcpuRunState};
pub use kick::{install_kick_handler, kick_signal};
pub use kvm::{Kvm, REQUIRED_CAPABILITIES};
#[cfg(target_arch = "x86_64")]
pub use persist::{VcpuRestoreArgs, VmRestoreArgs};
pub use vcpu::Vcpu;
pub use vm::{Vm, VmOptions, VmState};
#[cfg(target_arch = "x86_64")]
pub use x86_64::boot::{BootCpuLayout, BootEntry};
#[cfg(target_arch = "x86_64")]
pub use x86_64::state::VcpuState;

/// The rust-vmm `kvm-bindings` crate, whose KVM structures appear in this
/// crate's API (vCPU and VM states), re-exported so that users need not pin
/// a matching version.
pub use kvm_bindings;
/// The rust-vmm `kvm-ioctls` crate, whose `Kvm`, `VmFd` and `VcpuFd` this
/// crate hands out, re-exported so that users need not pin a matching
/// version.
pub use kvm_ioctls;
/// The rust-vmm `vm-memory` crate (guest memory in this crate's API),
/// re-exported so that users need not pin a matching version.
pub use vm_memory;
/// The rust-vmm `vmm-sys-util` crate (the `EventFd`s in this crate's API),
/// re-exported so that users need not pin a matching version.
pub use vmm_sys_util;
