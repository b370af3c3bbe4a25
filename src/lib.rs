//! Kindling: building blocks for KVM microVM monitors.
//!
//! This facade re-exports the workspace crates so that a project can depend
//! on one package and pick what it needs:
//!
//! - [`memory`]: guest RAM, the x86_64 memory map and MMIO/IRQ allocation;
//! - [`vcpu`]: the KVM VM, vCPU set-up and the run loop;
//! - [`boot`]: kernel, initrd and command-line loading, zero page, MP table;
//! - [`devices`]: PIO/MMIO buses, interrupt lines and legacy devices;
//! - [`virtio`]: the virtio device trait, the virtio-mmio transport and the
//!   virtio devices (block, entropy);
//! - [`vmm`]: the reference composition used by the `microvm` example;
//! - [`api`]: the Firecracker-compatible control plane (`microvm --api-sock`).
//!
//! It also re-exports the rust-vmm crates whose types appear in those
//! crates' public APIs, at the versions the crates were built with, so that
//! a user need not pin matching versions by hand: [`vm_memory`],
//! [`kvm_ioctls`], [`kvm_bindings`], [`vmm_sys_util`], [`event_manager`],
//! [`virtio_queue`], [`virtio_bindings`], [`vm_superio`] and
//! [`linux_loader`].
//!
//! ```
//! use kindling::vm_memory::{Bytes, GuestAddress};
//!
//! let ram = kindling::memory::create_guest_memory(&kindling::memory::MemoryConfig {
//!     size_mib: 2,
//!     backing: Default::default(),
//! })
//! .unwrap();
//! ram.memory.write_obj(0x1234_5678u32, GuestAddress(0x1000)).unwrap();
//! assert_eq!(ram.memory.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0x1234_5678);
//! ```

pub use kindling_api as api;
pub use kindling_boot as boot;
pub use kindling_devices as devices;
pub use kindling_memory as memory;
pub use kindling_vcpu as vcpu;
pub use kindling_virtio as virtio;
pub use kindling_vmm as vmm;

/// The rust-vmm `linux-loader` crate (kernel loading, command lines).
pub use kindling_boot::linux_loader;
/// The rust-vmm `vm-superio` crate (the serial device model's `Trigger`).
pub use kindling_devices::vm_superio;
/// The rust-vmm `vmm-sys-util` crate (`EventFd` and other host helpers).
pub use kindling_devices::vmm_sys_util;
/// The rust-vmm `vm-memory` crate (guest memory, addresses, `Bytes`).
pub use kindling_memory::vm_memory;
/// The rust-vmm `kvm-bindings` crate (KVM structures in vCPU and VM state).
pub use kindling_vcpu::kvm_bindings;
/// The rust-vmm `kvm-ioctls` crate (the KVM, VM and vCPU file descriptors).
pub use kindling_vcpu::kvm_ioctls;
/// The rust-vmm `event-manager` crate (the event loop virtio devices and
/// the VMM subscribe to).
pub use kindling_virtio::event_manager;
/// The rust-vmm `virtio-bindings` crate (virtio constants and structures).
pub use kindling_virtio::virtio_bindings;
/// The rust-vmm `virtio-queue` crate (split queues and descriptor chains).
pub use kindling_virtio::virtio_queue;
