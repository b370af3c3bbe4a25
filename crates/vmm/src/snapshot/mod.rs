//! Snapshots of a microVM: a small versioned state file plus a sparse
//! memory file, full or diff; restore in any process with memory mapped
//! `MAP_PRIVATE` (or served lazily through userfaultfd).
//!
//! - [`VmmHandle::snapshot`](crate::VmmHandle::snapshot) (and
//!   [`RunningVmm::snapshot`](crate::RunningVmm::snapshot)) writes a
//!   [`SnapshotRequest`] of a paused VM.
//! - [`Vmm::restore`](crate::Vmm::restore) builds a VM from a
//!   [`RestoreConfig`].
//! - [`apply_diff_snapshot`] layers a diff's memory onto its base.
//! - [`load_state`] reads and checks a state file ([`MicrovmState`]).
//! - [`uffd`]: the userfaultfd backend's handler side.

mod create;
mod error;
mod format;
mod restore;
mod state;
pub mod uffd;

pub use create::{SnapshotInfo, SnapshotRequest};
pub use error::{DeviceError, SnapshotError};
pub use format::{
    decode_state, encode_state, SnapshotFormatError, MAX_STATE_FILE_SIZE, SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
};
pub use restore::{
    apply_diff_snapshot, load_state, DeviceRef, DiskOverride, DriveRef, MemBackend, NetOverride,
    RestoreConfig,
};
pub use state::{
    LegacyState, MemoryFileState, MemoryLayoutState, MicrovmState, SavedRegionBitmap, SnapshotKind,
    VirtioDeviceState, VirtioSlotState,
};
