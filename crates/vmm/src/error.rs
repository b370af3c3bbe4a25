//! Errors of the reference VMM.
//!
//! Every variant keeps the typed error it came from as its `source`, so a
//! caller can match on it (a misaligned disk image is
//! `VmmError::Block { source: BlockError::UnalignedSize { .. }, .. }`).

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
    /// A file given by the user is of the wrong kind.
    #[error("{what} {path} is {kind}, not a regular file")]
    NotARegularFile {
        /// What the file is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// One file given for two uses (a disk twice, the serial output on a disk).
    #[error("{path} is already used as {first} ({other}): refusing to use it twice")]
    FileUsedTwice {
        /// The path given second.
        path: PathBuf,
        /// What the file is already used as.
        first: &'static str,
        /// The path it was given as first.
        other: PathBuf,
    },
    /// Loading the kernel, initrd or command line failed.
    #[error(transparent)]
    Boot(#[from] kindling_boot::BootError),
    /// The virtio-mmio devices do not fit on the kernel command line.
    #[error(transparent)]
    Cmdline(#[from] kindling_virtio::CmdlineError),
    /// An MMIO window or interrupt line could not be allocated.
    #[error("cannot allocate resources for the {device}: {source}")]
    Allocate {
        /// Which device.
        device: String,
        /// What the allocator said.
        source: kindling_memory::AllocatorError,
    },
    /// A device could not be put on its bus.
    #[error("cannot put the {device} on its bus: {source}")]
    Bus {
        /// Which device.
        device: String,
        /// What the bus said.
        source: kindling_devices::BusError,
    },
    /// An eventfd or timerfd a device needs could not be created.
    #[error("cannot create the {what}: {source}")]
    EventFd {
        /// What it was for.
        what: String,
        /// The error from the kernel.
        source: io::Error,
    },
    /// The serial output could not be made coalesced.
    #[error(transparent)]
    CoalescedSerial(#[from] kindling_devices::legacy::CoalescedSerialError),
    /// A disk could not be opened or set up.
    #[error("disk {index}: {source}")]
    Block {
        /// The disk's position in the configuration.
        index: usize,
        /// What the block device said.
        source: kindling_virtio::block::BlockError,
    },
    /// The vsock device could not be created (a bad CID, or a socket path
    /// that is taken or in a missing directory).
    #[error("vsock: {0}")]
    Vsock(#[source] kindling_virtio::vsock::VsockError),
    /// A network interface could not be opened or set up.
    #[error("network interface {index} ({iface_id}): {source}")]
    Net {
        /// The interface's position in the configuration.
        index: usize,
        /// Its `iface_id`.
        iface_id: String,
        /// What the network device said.
        source: kindling_virtio::net::NetError,
    },
    /// Two network interfaces have the same `iface_id` or TAP device.
    #[error("network interfaces {first} and {second} both use {what} {value:?}")]
    NetDuplicate {
        /// The first interface's position.
        first: usize,
        /// The second one's.
        second: usize,
        /// "iface_id" or "host_dev_name".
        what: &'static str,
        /// The value they share.
        value: String,
    },
    /// A virtio device could not be put behind its transport.
    #[error("cannot set up the virtio transport of the {device}: {source}")]
    Transport {
        /// Which device.
        device: String,
        /// What the transport said.
        source: kindling_virtio::TransportError,
    },
    /// A disk could not be made durable when the VM ended: what the guest
    /// wrote may be lost.
    #[error("disk {index}: the final flush failed, data the guest wrote may be lost: {source}")]
    DiskFlush {
        /// The disk's position in the configuration.
        index: usize,
        /// What the engine said.
        source: kindling_virtio::block::BackendError,
    },
    /// The terminal on standard input could not be put in raw mode.
    #[error("cannot put the terminal on standard input in raw mode: {0}")]
    Console(#[source] io::Error),
    /// The device event loop failed.
    #[error("device event loop: {0}")]
    EventLoop(#[source] event_manager::Error),
    /// A seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The device event loop thread could not be started or panicked.
    #[error("device event loop thread: {0}")]
    EventLoopThread(String),
    /// A lifecycle request that the VM's current state does not allow.
    #[error("cannot {action} a VM that is {state}")]
    InvalidState {
        /// What was asked.
        action: &'static str,
        /// The state the VM is in.
        state: crate::VmRunState,
    },
    /// A snapshot could not be taken or restored.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}
