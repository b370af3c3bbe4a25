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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::memory;
    use crate::vsock::device::tests::{device, Fixture};
    use crate::VirtioDevice;
    use vm_memory::{Bytes, GuestAddress};

    fn through_json(s: &VsockState) -> VsockState {
        serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap()
    }

    #[test]
    fn a_restored_device_tells_the_guest_its_connections_are_gone() {
        let (vsock, dir) = device("persist");
        let state = through_json(&vsock.save().unwrap());
        assert_eq!(state.guest_cid, 3);
        assert_eq!(state.queue_sizes, [16; 3]);
        // The path is taken while the saved device lives.
        assert!(matches!(
            Vsock::restore(VsockRestoreArgs::default(), &state),
            Err(VsockError::AlreadyExists(_))
        ));
        // ... unless the restore names another one.
        let other = Vsock::restore(
            VsockRestoreArgs {
                uds_path: Some(dir.join("other.sock")),
            },
            &state,
        )
        .unwrap();
        assert_eq!(other.config().uds_path, dir.join("other.sock"));
        drop(other);
        drop(vsock);

        let mem = memory(0x10_0000);
        let mut f = Fixture::new(&mem);
        mem.write_obj(0xffff_ffffu32, GuestAddress(0x30000))
            .unwrap();
        f.ev.add(&[(0x30000, 8, true)]);
        let mut restored = Vsock::restore(VsockRestoreArgs::default(), &state).unwrap();
        restored.activate(f.activation()).unwrap();
        assert_eq!(f.ev.used(), vec![(0, 4)]);
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x30000)).unwrap(), 0);
        // Once only.
        f.ev.add(&[(0x30008, 8, true)]);
        restored.process_queue(crate::vsock::EVENT_QUEUE).unwrap();
        assert_eq!(f.ev.used().len(), 1);
        drop(restored);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_event_waits_for_a_buffer() {
        let (vsock, dir) = device("persist-late");
        let state = vsock.save().unwrap();
        drop(vsock);
        let mem = memory(0x10_0000);
        let mut f = Fixture::new(&mem);
        let mut restored = Vsock::restore(VsockRestoreArgs::default(), &state).unwrap();
        restored.activate(f.activation()).unwrap();
        assert!(f.ev.used().is_empty());
        // A buffer too small for the event is returned unused.
        f.ev.add(&[(0x30000, 2, true)]);
        f.ev.add(&[(0x30008, 8, true)]);
        restored.process_queue(crate::vsock::EVENT_QUEUE).unwrap();
        assert_eq!(f.ev.used(), vec![(0, 0), (1, 4)]);
        drop(restored);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
