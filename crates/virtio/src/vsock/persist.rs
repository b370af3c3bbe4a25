//! The persist contract for the vsock device: its configuration and queue
//! sizes are saved; connections are not. As in Firecracker, a restored
//! device starts with no connections, listens on its socket path again,
//! and tells the guest with a transport reset event on the event queue
//! (the guest then drops its own connection state).

use std::path::PathBuf;

use kindling_memory::Persist;

use super::{Vsock, VsockConfig, VsockError, NUM_QUEUES};

/// The vsock device's state, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VsockState {
    /// The guest's CID.
    pub guest_cid: u64,
    /// The host socket path.
    pub uds_path: PathBuf,
    /// The queue sizes offered.
    pub queue_sizes: [u16; NUM_QUEUES],
}

/// What a restore may change: the socket path (`None`: the saved one,
/// which must be free again, e.g. because the saved VM's process ended).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VsockRestoreArgs {
    /// A socket path to use instead of the saved one.
    pub uds_path: Option<PathBuf>,
}

impl Persist<'_> for Vsock {
    type State = VsockState;
    type ConstructorArgs = VsockRestoreArgs;
    type Error = VsockError;

    fn save(&self) -> Result<VsockState, VsockError> {
        Ok(VsockState {
            guest_cid: self.config().guest_cid,
            uds_path: self.config().uds_path.clone(),
            queue_sizes: self.queue_sizes(),
        })
    }

    /// Recreates an (inactive) device listening on its socket path again,
    /// owing the guest a transport reset event; the transport's restore
    /// reactivates it, which delivers the event.
    fn restore(args: VsockRestoreArgs, state: &VsockState) -> Result<Self, VsockError> {
        let config = VsockConfig {
            guest_cid: state.guest_cid,
            uds_path: args.uds_path.unwrap_or_else(|| state.uds_path.clone()),
        };
        let mut vsock = Vsock::with_queue_sizes(&config, state.queue_sizes)?;
        vsock.owe_reset_event();
        Ok(vsock)
    }
}
