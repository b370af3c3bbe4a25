//! Errors of the reference VMM.

use std::io;
use std::path::PathBuf;

/// Everything that can stop a microVM from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The vCPU count is out of range.
    #[error("invalid vCPU count {0}: it must be between 1 and {max}", max = crate::vmm::MAX_VCPUS)]
    VcpuCount(u8),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] kindling_memory::MemoryError),
    /// `/dev/kvm` is missing or unusable.
    #[error(transparent)]
    Kvm(#[from] kindling_vcpu::KvmError),
    /// VM set-up failed.
    #[error(transparent)]
    Vm(#[from] kindling_vcpu::VmError),
    /// A vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] kindling_vcpu::VcpuError),
    /// A file given by the user could not be opened.
    #[error("cannot open {what} {path}: {source}")]
    OpenFile {
        /// What the file is (kernel, initrd, serial output).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Loading the kernel, initrd or command line failed.
    #[error(transparent)]
    Boot(#[from] kindling_boot::BootError),
    /// The virtio-mmio devices do not fit on the kernel command line.
    #[error(transparent)]
    Cmdline(#[from] kindling_virtio::CmdlineError),
    /// Device set-up failed.
    #[error("cannot set up the {device}: {reason}")]
    Device {
        /// Which device.
        device: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A virtio device could not be created or wired.
    #[error("cannot set up the virtio {device}: {reason}")]
    Virtio {
        /// Which device.
        device: String,
        /// What went wrong.
        reason: String,
    },
    /// The device event loop failed.
    #[error("device event loop: {0}")]
    EventLoop(String),
}
