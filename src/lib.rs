//! Kindling: building blocks for KVM microVM monitors.
//!
//! This facade re-exports the workspace crates so that a project can depend
//! on one package and pick what it needs:
//!
//! - [`memory`]: guest RAM, the x86_64 memory map and MMIO/IRQ allocation;
//! - [`vcpu`]: the KVM VM, vCPU set-up and the run loop;
//! - [`boot`]: kernel, initrd and command-line loading, zero page, MP table;
//! - [`devices`]: PIO/MMIO buses, interrupt lines and legacy devices;
//! - [`vmm`]: the reference composition used by the `microvm` example;
//! - [`api`]: the Firecracker-compatible control plane (`microvm --api-sock`).

pub use kindling_api as api;
pub use kindling_boot as boot;
pub use kindling_devices as devices;
pub use kindling_memory as memory;
pub use kindling_vcpu as vcpu;
pub use kindling_virtio as virtio;
pub use kindling_vmm as vmm;
