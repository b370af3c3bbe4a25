//! The reference composition of the Kindling crates.
//!
//! [`VmmBuilder`] turns a [`VmConfig`] into a ready microVM in steps:
//! [`VmmBuilder::new`] checks the configuration, creates guest memory and
//! opens every file it names; devices of the user's own (port I/O, MMIO,
//! virtio, event-loop subscribers) can then be added; [`VmmBuilder::build`]
//! loads the kernel, initrd and command line (`kindling-boot`), creates the
//! KVM VM and vCPUs (`kindling-vcpu`), and wires the legacy and virtio
//! devices (`kindling-devices`, `kindling-virtio`). [`Vmm::build`] does it
//! all in one call.
//!
//! A built [`Vmm`] either runs on the calling thread until the guest ends
//! it ([`Vmm::run`]), or starts in the background ([`Vmm::start`]) and
//! returns a [`RunningVmm`] that pauses, resumes, stops and waits for it;
//! [`VmmHandle`] does the same from any thread. [`VmmDevices`] gives typed
//! handles to every device.
//!
//! # Example
//!
//! ```no_run
//! use kindling_vmm::{KernelSource, SerialConfig, VmConfig, Vmm};
//!
//! let config = VmConfig {
//!     kernel: KernelSource::Path("vmlinux".into()),
//!     cmdline: "console=ttyS0 reboot=k panic=1".into(),
//!     serial: SerialConfig::Stdout,
//!     ..VmConfig::default()
//! };
//! let running = Vmm::build(config).expect("VM set-up").start().expect("VM start");
//! running.pause().unwrap();
//! running.resume().unwrap();
//! let reason = running.wait().expect("VM run");
//! std::process::exit(reason.exit_code());
//! ```

mod boot_setup;
mod builder;
mod config;
pub mod console;
mod device_manager;
mod devices;
mod error;
mod event_loop;
mod files;
mod lifecycle;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
mod virtio_devices;
mod vmm;

pub use builder::{UserSubscriber, VmmBuilder};
pub use config::{
    BootProtocol, DiskConfig, KernelSource, NetConfig, SerialConfig, VmConfig, VsockConfig,
    DEFAULT_LINUX_CMDLINE,
};
pub use device_manager::LegacyDevices;
pub use devices::{VirtioKind, VirtioSlot, VmmDevices};
pub use error::VmmError;
pub use kindling_devices::legacy::StartTime;
pub use kindling_devices::{BusExitHandler, ExitReason};
/// A disk's I/O engine ([`DiskConfig::engine`]).
pub use kindling_virtio::block::BlockEngine;
/// A guest MAC address ([`NetConfig::guest_mac`]).
pub use kindling_virtio::net::MacAddr;
/// A rate limiter's buckets ([`NetConfig::rx_rate_limiter`],
/// [`DiskConfig::rate_limiter`]), in Firecracker's JSON shape.
pub use kindling_virtio::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
pub use lifecycle::{VmRunState, VmmHandle};
pub use seccomp::SeccompPolicy;
pub use vmm::{RunningVmm, Vmm, MAX_VCPUS};

/// The rust-vmm `event-manager` crate the VMM's device event loop runs on
/// (devices and user event sources subscribe as `MutEventSubscriber`s),
/// re-exported so that users need not pin a matching version.
pub use event_manager;
/// The rust-vmm `vm-memory` crate (the guest memory the VMM hands out),
/// re-exported so that users need not pin a matching version.
pub use vm_memory;
