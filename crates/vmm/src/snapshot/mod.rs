//! Snapshots of a microVM: the state file format (and, as the snapshot
//! issue lands, creating and restoring whole VMs).

mod format;

pub use format::{
    decode_state, encode_state, SnapshotFormatError, MAX_STATE_FILE_SIZE, SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
};
