//! The persist contract for the transport: its registers, the queues and
//! the interrupt state, and the restore path that reactivates the device.

use std::sync::{Arc, Mutex};

use kindling_devices::InterruptLine;
use kindling_memory::Persist;

use super::{lock, MmioTransport, TransportError};
use crate::device::{Activation, VirtioDevice};
use crate::features;
use crate::interrupt::{InterruptState, VirtioInterrupt};
use crate::queue::QueueSnapshot;
use crate::transport::status;
use crate::GuestMemoryMmap;

/// The transport's guest-visible state, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MmioTransportState {
    /// The device id, to check the snapshot against the device.
    pub device_id: u32,
    /// The Status register (without DEVICE_NEEDS_RESET, which is in
    /// `interrupt`).
    pub status: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// The features the driver wrote.
    pub driver_features: u64,
    /// Whether the driver wrote features past the first 64 bits.
    pub driver_features_high: bool,
    /// QueueSel.
    pub queue_sel: u32,
    /// SHMSel.
    pub shm_sel: u32,
    /// Each queue: the driver's configuration and, while the device is
    /// active, its ring positions.
    pub queues: Vec<QueueSnapshot>,
    /// Interrupt status, configuration generation, needs-reset.
    pub interrupt: InterruptState,
    /// Whether the device is active.
    pub activated: bool,
}

/// The host resources a restored [`MmioTransport`] needs.
///
/// `device` must be inactive: freshly created, or restored from its own
/// state (the device's state is saved and restored separately, through its
/// own [`Persist`] implementation, because the transport only knows it as a
/// `dyn VirtioDevice`).
pub struct MmioTransportRestoreArgs {
    /// Guest memory, holding the saved contents (the queues live there).
    pub memory: GuestMemoryMmap,
    /// The device behind the transport.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// The device's interrupt line.
    pub line: Arc<dyn InterruptLine>,
}

impl std::fmt::Debug for MmioTransportRestoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransportRestoreArgs")
            .finish_non_exhaustive()
    }
}

/// The statuses the initialisation sequence reaches, before FAILED.
const REACHABLE: [u32; 5] = [
    0,
    status::ACKNOWLEDGE,
    status::ACKNOWLEDGE | status::DRIVER,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
];

impl MmioTransport {
    /// The transport's state (what [`Persist::save`] returns). While the
    /// device is active the queues' ring positions come from the device,
    /// so the device should not be processing (the event loop paused) when
    /// a snapshot is taken.
    pub fn state(&self) -> MmioTransportState {
        let mut queues: Vec<QueueSnapshot> = self
            .queues
            .iter()
            .map(|config| QueueSnapshot {
                config: *config,
                next_avail: 0,
                next_used: 0,
                event_idx: false,
            })
            .collect();
        if self.activated {
            let device = lock(&self.device);
            let live = device.queues();
            if live.len() == queues.len() {
                queues = live.iter().map(QueueSnapshot::from).collect();
            }
        }
        MmioTransportState {
            device_id: self.device_type.id(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            driver_features_high: self.driver_features_high,
            queue_sel: self.queue_sel,
            shm_sel: self.shm_sel,
            queues,
            interrupt: self.interrupt.state(),
            activated: self.activated,
        }
    }

    /// Checks the registers of `state` against what the driver can reach
    /// with this device.
    fn check_state(&self, state: &MmioTransportState) -> Result<(), TransportError> {
        let state_queues: Vec<u16> = state.queues.iter().map(|q| q.config.max_size).collect();
        let device_queues: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        if state.device_id != self.device_type.id() || state_queues != device_queues {
            return Err(TransportError::StateMismatch {
                state_id: state.device_id,
                state_queues,
                device_id: self.device_type.id(),
                device_queues,
            });
        }
        let status = state.status & !status::DEVICE_NEEDS_RESET;
        if !REACHABLE.contains(&(status & !status::FAILED)) {
            return Err(TransportError::InvalidStatus {
                status: state.status,
            });
        }
        if state.activated && status & status::DRIVER_OK == 0 {
            return Err(TransportError::ActiveWithoutDriverOk {
                status: state.status,
            });
        }
        let offered = self.device_features;
        let accepted = !state.driver_features_high
            && state.driver_features & features::VERSION_1 != 0
            && state.driver_features & !offered == 0;
        if status & status::FEATURES_OK != 0 && !accepted {
            return Err(TransportError::InvalidFeatures {
                driver: state.driver_features,
                high: state.driver_features_high,
                offered,
            });
        }
        if state.activated {
            let negotiated = state.driver_features & features::RING_EVENT_IDX != 0;
            if let Some((index, q)) = state
                .queues
                .iter()
                .enumerate()
                .find(|(_, q)| q.config.ready && q.event_idx != negotiated)
            {
                return Err(TransportError::EventIdxMismatch {
                    index,
                    queue: q.event_idx,
                    negotiated,
                });
            }
        }
        Ok(())
    }
}

impl Persist<'_> for MmioTransport {
    type State = MmioTransportState;
    type ConstructorArgs = MmioTransportRestoreArgs;
    type Error = TransportError;

    fn save(&self) -> Result<MmioTransportState, TransportError> {
        Ok(self.state())
    }

    /// Rebuilds a transport from a snapshot around `args.device`. If the
    /// snapshot was taken while the device was active, the device is
    /// activated again with the saved queues (validated against
    /// `args.memory`), and every queue eventfd is signalled once so that
    /// requests the driver made available before the snapshot get
    /// processed. The state is checked first: device identity, a status
    /// the driver can reach, accepted features, queues.
    fn restore(
        args: MmioTransportRestoreArgs,
        state: &MmioTransportState,
    ) -> Result<Self, TransportError> {
        let mut t = Self::new(args.memory, args.device, args.line)?;
        t.check_state(state)?;
        t.interrupt = VirtioInterrupt::restore(t.line.clone(), &state.interrupt)?;
        t.status = state.status & !status::DEVICE_NEEDS_RESET;
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        t.driver_features = state.driver_features;
        t.driver_features_high = state.driver_features_high;
        t.queue_sel = state.queue_sel;
        t.shm_sel = state.shm_sel;
        t.queues = state.queues.iter().map(|q| q.config).collect();
        if state.activated {
            let queues = state
                .queues
                .iter()
                .enumerate()
                .map(|(index, q)| {
                    q.to_queue(&t.memory)
                        .map_err(|source| TransportError::InvalidQueue { index, source })
                })
                .collect::<Result<Vec<_>, _>>()?;
            lock(&t.device).activate(Activation {
                memory: t.memory.clone(),
                interrupt: t.interrupt.clone(),
                queues,
                acked_features: t.driver_features,
            })?;
            t.activated = true;
            t.kick_queues();
        }
        // An interrupt the device raised just before the snapshot may not
        // have reached the saved interrupt controller (KVM injects an
        // irqfd's interrupt from a worker, after the write): raised once
        // more, so the guest's handler reads InterruptStatus and finds the
        // work. A guest that had taken it already sees one spurious
        // interrupt, which virtio drivers handle.
        if t.interrupt.status() != 0 {
            t.line
                .trigger()
                .map_err(|source| TransportError::RaisePending { source })?;
        }
        Ok(t)
    }
}
