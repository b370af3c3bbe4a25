//! The transport's snapshot: its registers, the queues and the interrupt
//! state, and the restore path that reactivates the device.

use std::sync::{Arc, Mutex};

use kindling_devices::InterruptLine;

use super::{lock, MmioTransport, TransportError};
use crate::device::{Activation, VirtioDevice};
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

impl MmioTransport {
    /// The transport's state. While the device is active the queues'
    /// ring positions come from the device, so the device should not be
    /// processing (the event loop paused) when a snapshot is taken.
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

    /// Rebuilds a transport from a snapshot around `device`, which must be
    /// inactive (freshly created or restored from its own state). If the
    /// snapshot was taken while the device was active, the device is
    /// activated again with the saved queues, and every queue eventfd is
    /// signalled once so that requests the driver made available before
    /// the snapshot get processed.
    pub fn from_state(
        state: &MmioTransportState,
        memory: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        line: Arc<dyn InterruptLine>,
    ) -> Result<Self, TransportError> {
        let mut t = Self::new(memory, device, line)?;
        let state_queues: Vec<u16> = state.queues.iter().map(|q| q.config.max_size).collect();
        let device_queues: Vec<u16> = t.queues.iter().map(|q| q.max_size).collect();
        if state.device_id != t.device_type.id() || state_queues != device_queues {
            return Err(TransportError::StateMismatch {
                state_id: state.device_id,
                state_queues,
                device_id: t.device_type.id(),
                device_queues,
            });
        }
        t.interrupt = VirtioInterrupt::from_state(&state.interrupt, t.line.clone());
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
        Ok(t)
    }
}
