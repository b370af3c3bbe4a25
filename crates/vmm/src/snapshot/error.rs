//! Why a snapshot could not be taken or restored.

use std::io;
use std::path::PathBuf;

use kindling_memory::MemorySnapshotError;
use kindling_vcpu::x86_64::cpu_compat::CpuMismatch;

use super::SnapshotFormatError;
use crate::VmRunState;

/// A boxed error from a device's [`Persist`](kindling_memory::Persist)
/// implementation.
pub type DeviceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a snapshot could not be taken or restored. A failed restore leaves
/// nothing behind: no VM, no thread.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Snapshots are taken of a paused VM only.
    #[error("cannot snapshot a VM that is {state}: pause it first")]
    NotPaused {
        /// What the VM is doing.
        state: VmRunState,
    },
    /// A diff snapshot needs KVM dirty logging.
    #[error("a diff snapshot needs dirty page tracking (VmConfig::track_dirty_pages), which this VM was built without")]
    DirtyTrackingOff,
    /// A diff snapshot needs a base: a full snapshot of this VM, or the
    /// snapshot it was restored from.
    #[error("a diff snapshot needs a base: take a full snapshot of this VM first (an earlier snapshot failed, or there was none)")]
    NoDiffBase,
    /// A full snapshot of a VM whose memory a userfaultfd handler fills
    /// lazily: the pages it never served are not in this process. (A diff
    /// snapshot works: layer it onto the memory file the handler serves.)
    #[error("a full snapshot of a VM restored with the userfaultfd backend is not supported: its untouched pages are only in the handler's memory file (take a diff snapshot and apply it to that file)")]
    LazyMemory,
    /// A virtio device the VMM cannot save.
    #[error("the virtio device '{name}' was added by the user and cannot be saved in a snapshot")]
    UnsupportedDevice {
        /// Its name.
        name: String,
    },
    /// A vCPU's state could not be saved.
    #[error("cannot save the state of vCPU {id}: {source}")]
    SaveVcpu {
        /// The vCPU.
        id: u8,
        /// What the vCPU said.
        source: kindling_vcpu::VcpuError,
    },
    /// The VM's state could not be saved.
    #[error("cannot save the VM state: {0}")]
    SaveVm(#[source] kindling_vcpu::VmError),
    /// A device's state could not be saved (for a disk: requests still
    /// in flight).
    #[error("cannot save the {device}: {source}")]
    SaveDevice {
        /// The device.
        device: String,
        /// What it said.
        source: DeviceError,
    },
    /// The dirty pages could not be read.
    #[error("cannot read the dirty pages for a diff snapshot: {0}")]
    DirtyPages(#[source] kindling_vcpu::VmError),
    /// A snapshot file could not be created, written, opened or read.
    #[error("cannot {op} the {what} {path}: {source}")]
    File {
        /// What was being done.
        op: &'static str,
        /// Which file (state file, memory file).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error from the kernel.
        source: io::Error,
    },
    /// Guest memory could not be written to or mapped from a memory file
    /// (a memory file shorter than the state says is refused here).
    #[error("memory file {path}: {source}")]
    Memory {
        /// The memory file.
        path: PathBuf,
        /// What went wrong.
        source: MemorySnapshotError,
    },
    /// The state file is damaged or not a state file.
    #[error("state file {path}: {source}")]
    Format {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        source: SnapshotFormatError,
    },
    /// The state contradicts itself or the VMM (a queue index past its
    /// size, a vCPU count out of range, a device of the wrong type).
    #[error("invalid snapshot state: {reason}")]
    InvalidState {
        /// What is wrong.
        reason: String,
    },
    /// A virtio device is at an MMIO window or interrupt line the VMM
    /// would not give it.
    #[error("the {device} is at {found_base:#x} (IRQ {found_irq}) in the snapshot, but this VMM places it at {expected_base:#x} (IRQ {expected_irq})")]
    Layout {
        /// The device.
        device: String,
        /// Its window in the snapshot.
        found_base: u64,
        /// Its line in the snapshot.
        found_irq: u32,
        /// Where the allocator puts it.
        expected_base: u64,
        /// The line the allocator gives it.
        expected_irq: u32,
    },
    /// The host CPU cannot run the saved vCPUs.
    #[error("vCPU {id} cannot run on this host: {source}")]
    Cpu {
        /// The vCPU.
        id: u8,
        /// What is missing.
        source: CpuMismatch,
    },
    /// A drive override names no disk of the snapshot.
    #[error("the drive override '{drive}' names no disk of the snapshot (it has {disks})")]
    UnknownDrive {
        /// The override's drive.
        drive: String,
        /// The disks the snapshot has.
        disks: String,
    },
    /// A network override names no interface of the snapshot.
    #[error(
        "the network override '{iface}' names no network interface of the snapshot (it has {nets})"
    )]
    UnknownNet {
        /// The override's interface.
        iface: String,
        /// The interfaces the snapshot has.
        nets: String,
    },
    /// Two overrides name the same device.
    #[error("two overrides name the {what} '{device}'")]
    DuplicateOverride {
        /// What kind of device.
        what: &'static str,
        /// The device.
        device: String,
    },
    /// A vsock override for a snapshot without a vsock device.
    #[error("a vsock override ({}) was given but the snapshot has no vsock device", path.display())]
    NoVsock {
        /// The override's socket path.
        path: PathBuf,
    },
    /// A part of the VM could not be restored from its state.
    #[error("cannot restore the {part}: {source}")]
    Restore {
        /// The part (a device, a vCPU, the VM).
        part: String,
        /// What it said.
        source: DeviceError,
    },
    /// The userfaultfd memory backend failed.
    #[error("userfaultfd memory backend: {0}")]
    Uffd(#[source] super::uffd::UffdError),
}
