//! x86_64 vCPU set-up: CPUID, MSRs, boot registers, LAPIC, and state.

pub mod boot;
pub mod cpu_compat;
pub mod cpuid;
pub mod gdt;
pub mod lapic;
pub mod msrs;
pub mod regs;
pub mod state;
