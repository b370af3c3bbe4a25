//! Errors of the KVM, VM and vCPU layers.

use kvm_ioctls::Cap;
use vmm_sys_util::errno;

/// Errors opening and checking `/dev/kvm`.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` does not exist.
    #[error("{path} does not exist: load the kvm module (kvm_intel or kvm_amd) and enable hardware virtualization in the firmware")]
    NotFound {
        /// The device path.
        path: String,
    },
    /// No permission to open `/dev/kvm`.
    #[error("no permission to open {path}: add your user to the 'kvm' group (sudo usermod -aG kvm $USER) or run as root")]
    PermissionDenied {
        /// The device path.
        path: String,
    },
    /// Any other failure to open `/dev/kvm`.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device path.
        path: String,
        /// The error.
        source: errno::Error,
    },
    /// The KVM API version is not the stable one (12).
    #[error("KVM API version {0} is not supported (expected 12)")]
    ApiVersion(i32),
    /// A capability Kindling needs is missing.
    #[error("the host KVM lacks the capability {0:?}, which Kindling needs")]
    MissingCapability(Cap),
    /// Reading the supported CPUID failed.
    #[error("cannot read the CPUID KVM supports: {0}")]
    SupportedCpuid(errno::Error),
    /// Creating the VM failed.
    #[error("cannot create a KVM VM: {0}")]
    CreateVm(errno::Error),
}

/// Errors setting up the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM refused a VM-level set-up step.
    #[error("cannot {step}: {source}")]
    Setup {
        /// What was being done.
        step: &'static str,
        /// The error from KVM.
        source: errno::Error,
    },
    /// Registering a guest memory region failed.
    #[error("cannot register guest memory slot {slot} at {guest_addr:#x} ({size:#x} bytes) with KVM: {source}")]
    MemorySlot {
        /// Slot number.
        slot: u32,
        /// Guest-physical start.
        guest_addr: u64,
        /// Size in bytes.
        size: u64,
        /// The error from KVM.
        source: errno::Error,
    },
    /// Reading KVM's dirty log failed.
    #[error("cannot read KVM's dirty log of the memory slot at {guest_addr:#x}: {source}")]
    DirtyLog {
        /// Guest-physical start of the slot.
        guest_addr: u64,
        /// The error from KVM (ENOENT: the memory is not registered with this VM).
        source: errno::Error,
    },
    /// More vCPUs than KVM allows.
    #[error("{requested} vCPUs requested but this host's KVM allows at most {max}")]
    TooManyVcpus {
        /// Requested count.
        requested: usize,
        /// KVM's limit.
        max: usize,
    },
    /// Creating a vCPU failed.
    #[error("cannot create vCPU {id}: {source}")]
    CreateVcpu {
        /// vCPU index.
        id: u8,
        /// The error from KVM.
        source: errno::Error,
    },
    /// Registering an irqfd failed.
    #[error("cannot register an irqfd for GSI {gsi}: {source}")]
    Irqfd {
        /// The interrupt.
        gsi: u32,
        /// The error from KVM.
        source: errno::Error,
    },
    /// Registering an ioeventfd failed.
    #[error("cannot register an ioeventfd at {addr:#x}: {source}")]
    Ioeventfd {
        /// The address.
        addr: u64,
        /// The error from KVM.
        source: errno::Error,
    },
    /// A saved VM state names the wrong interrupt controller in one of
    /// its chip slots (the state is corrupt or was edited).
    #[error(
        "invalid saved VM state: the {slot} slot holds irqchip {found}, expected chip {expected}"
    )]
    ChipIdMismatch {
        /// Which slot of the state (PIC master, PIC slave, IOAPIC).
        slot: &'static str,
        /// The chip id that slot must hold.
        expected: u32,
        /// The chip id found.
        found: u32,
    },
    /// Saving or restoring VM-level state failed.
    #[error("cannot {step} the VM state: {source}")]
    State {
        /// What was being done.
        step: &'static str,
        /// The error from KVM.
        source: errno::Error,
    },
}

/// Errors setting up or running a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed during set-up or state save/restore.
    #[error("vCPU {id}: cannot {step}: {source}")]
    Ioctl {
        /// vCPU index.
        id: u8,
        /// What was being done.
        step: &'static str,
        /// The error from KVM.
        source: errno::Error,
    },
    /// KVM accepted fewer MSRs than were given.
    #[error("vCPU {id}: KVM refused MSR {index:#x} ({step})")]
    Msr {
        /// vCPU index.
        id: u8,
        /// The first MSR KVM did not take.
        index: u32,
        /// What was being done.
        step: &'static str,
    },
    /// A boot CPU structure would be at an address it cannot be at.
    #[error("the boot {what} cannot be at guest address {addr:#x}")]
    BootLayout {
        /// Which structure, and the rule it breaks.
        what: &'static str,
        /// The address asked for.
        addr: u64,
    },
    /// Writing the boot page tables or GDT into guest memory failed.
    #[error("cannot write the boot {what} into guest memory: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The error.
        source: vm_memory::GuestMemoryError,
    },
    /// `KVM_RUN` failed.
    #[error("vCPU {id}: KVM_RUN failed: {source}")]
    Run {
        /// vCPU index.
        id: u8,
        /// The error from KVM.
        source: errno::Error,
    },
    /// KVM could not handle something the guest did.
    #[error("vCPU {id}: KVM internal error (suberror {suberror}): KVM's instruction emulator could not handle a guest instruction")]
    InternalError {
        /// vCPU index.
        id: u8,
        /// KVM's suberror code.
        suberror: u32,
    },
    /// Entering the guest failed.
    #[error("vCPU {id}: VM entry failed (hardware reason {reason:#x})")]
    FailEntry {
        /// vCPU index.
        id: u8,
        /// Hardware failure reason.
        reason: u64,
    },
    /// An exit this VMM does not handle.
    #[error("vCPU {id}: unexpected exit {exit}")]
    UnexpectedExit {
        /// vCPU index.
        id: u8,
        /// The exit, as text.
        exit: String,
    },
    /// Starting the vCPU thread failed.
    #[error("cannot start the thread of vCPU {id}: {source}")]
    Spawn {
        /// vCPU index.
        id: u8,
        /// The error.
        source: std::io::Error,
    },
    /// The set-up a vCPU thread runs first (see
    /// [`VcpuHandle::spawn_with_init`](crate::VcpuHandle::spawn_with_init),
    /// for example installing a seccomp filter) failed; the vCPU never ran.
    #[error("vCPU {id}: thread set-up failed: {reason}")]
    ThreadInit {
        /// vCPU index.
        id: u8,
        /// What failed.
        reason: String,
    },
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickHandler(errno::Error),
    /// The vCPU thread panicked.
    #[error("the thread of vCPU {id} panicked")]
    ThreadPanicked {
        /// vCPU index.
        id: u8,
    },
    /// Creating the vCPU to restore a state into failed.
    #[error("cannot create vCPU {id} to restore its state: {source}")]
    Create {
        /// vCPU index.
        id: u8,
        /// The error from the VM.
        #[source]
        source: VmError,
    },
    /// A saved state does not fit this vCPU.
    #[error("vCPU {id}: invalid saved state: {reason}")]
    InvalidState {
        /// vCPU index.
        id: u8,
        /// What is wrong.
        reason: String,
    },
    /// A request that needs the vCPU thread parked (such as saving its
    /// state) was made while it runs or after it ended.
    #[error("vCPU {id} is {state}: pause it first")]
    NotParked {
        /// vCPU index.
        id: u8,
        /// What the thread is doing.
        state: &'static str,
    },
    /// The vCPU thread ended before it ran a request given to it.
    #[error("the thread of vCPU {id} ended before it ran the request")]
    ThreadGone {
        /// vCPU index.
        id: u8,
    },
}
