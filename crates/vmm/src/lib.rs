//! The reference composition of the Kindling crates.
//!
//! [`Vmm::build`] turns a [`VmConfig`] into a ready microVM: guest memory
//! from `kindling-memory`, the KVM VM and vCPUs from `kindling-vcpu`, the
//! kernel, initrd, command line, zero page and MP table from
//! `kindling-boot`, and the legacy devices from `kindling-devices` on their
//! buses. [`Vmm::run`] starts one thread per vCPU, runs the device event
//! loop on the calling thread until the guest (or a [`VmmHandle`]) ends
//! the VM, and returns why it ended.
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
//! let vmm = Vmm::build(config).expect("VM set-up");
//! let reason = vmm.run().expect("VM run");
//! std::process::exit(reason.exit_code());
//! ```

mod config;
pub mod console;
mod device_manager;
mod error;
mod event_loop;
mod exit_handler;
mod virtio_devices;
mod vmm;

pub use config::{
    BootProtocol, DiskConfig, KernelSource, SerialConfig, VmConfig, DEFAULT_LINUX_CMDLINE,
};
pub use device_manager::LegacyDevices;
pub use error::VmmError;
pub use exit_handler::BusExitHandler;
pub use kindling_devices::legacy::StartTime;
pub use kindling_devices::ExitReason;
pub use vmm::{Vmm, VmmHandle};
