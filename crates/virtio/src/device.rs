//! The transport-independent device trait.

use kindling_devices::DeviceEvents;
use virtio_queue::Queue;

use crate::queue::{Drained, QueueError};
use crate::{GuestMemoryMmap, VirtioInterrupt};
use virtio_queue::QueueT;

/// A virtio device type (virtio 1.2 §5), as read from the DeviceID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceType {
    /// A network card (id 1).
    Net,
    /// A block device (id 2).
    Block,
    /// An entropy source (id 4).
    Rng,
    /// A memory balloon (id 5).
    Balloon,
    /// A vsock device (id 19).
    Vsock,
    /// Any other device id.
    Other(u32),
}

impl DeviceType {
    /// The numeric device id.
    pub fn id(self) -> u32 {
        match self {
            DeviceType::Net => virtio_bindings::virtio_ids::VIRTIO_ID_NET,
            DeviceType::Block => virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK,
            DeviceType::Rng => virtio_bindings::virtio_ids::VIRTIO_ID_RNG,
            DeviceType::Balloon => virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON,
            DeviceType::Vsock => virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK,
            DeviceType::Other(id) => id,
        }
    }
}

/// Everything a device receives when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct Activation {
    /// Guest memory, for the queues and the buffers they point to.
    pub memory: GuestMemoryMmap,
    /// How the device signals the driver.
    pub interrupt: VirtioInterrupt,
    /// One queue per entry of [`VirtioDevice::queue_max_sizes`], in order,
    /// validated by the transport. A queue the driver did not enable is
    /// present with `ready() == false`.
    pub queues: Vec<Queue>,
    /// The features the driver accepted (a subset of the device's).
    pub acked_features: u64,
}

/// Why a device refused to activate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivateError {
    /// The transport passed a different number of queues than the device
    /// has.
    #[error("{device:?} device expects {expected} queues, got {got}")]
    QueueCount {
        /// The device.
        device: DeviceType,
        /// Queues the device has.
        expected: usize,
        /// Queues it was given.
        got: usize,
    },
    /// A queue the device cannot work without was not enabled by the
    /// driver.
    #[error(
        "{device:?} device cannot work without queue {index}, which the driver did not enable"
    )]
    QueueNotReady {
        /// The device.
        device: DeviceType,
        /// The queue.
        index: usize,
    },
    /// The device is already active (activation without a reset).
    #[error("{0:?} device is already active")]
    AlreadyActive(DeviceType),
}

/// What a call to [`VirtioDevice::process_queue`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueProgress {
    /// The queue had nothing more to do.
    Done,
    /// The device stopped at its work budget with buffers possibly still
    /// available; process the queue again after other events.
    MoreWork,
}

/// A virtio device, independent of its transport.
///
/// The transport reads the device's identity, features and configuration
/// space, hands it its queues, guest memory and interrupt at activation,
/// and resets it. Queue processing is driven by the event loop
/// ([`crate::VirtioSubscriber`]) through [`VirtioDevice::process_queue`].
///
/// Implementations must treat everything in guest memory as hostile: a
/// malformed request ends with an error status (or is returned unused)
/// and the device keeps working.
///
/// Every device is also a [`DeviceEvents`]: besides its queues it may
/// register fds of its own (a TAP device, a socket, a timer, an async-I/O
/// completion eventfd), which the [`crate::VirtioSubscriber`] registers
/// when it joins the event loop and dispatches to
/// [`DeviceEvents::handle_event`]. A device with no such fds implements it
/// with the default (empty) methods.
pub trait VirtioDevice: DeviceEvents + Send {
    /// The device type (the DeviceID register).
    fn device_type(&self) -> DeviceType;

    /// The maximum size of each queue; its length is the number of queues.
    /// Every size is a power of two no larger than 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// The features the device offers (including [`crate::features::COMMON`]
    /// bits it supports).
    fn device_features(&self) -> u64;

    /// Reads `data.len()` bytes of the configuration space at `offset`.
    /// Bytes past the end of the configuration space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the configuration space at `offset`. Read-only fields and
    /// bytes past the end are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device with its queues, guest memory and interrupt.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// Whether the device has been activated (and not reset since).
    fn is_activated(&self) -> bool;

    /// Returns the device to its initial, inactive state: its queues, guest
    /// memory and interrupt are dropped, and any guest-visible state is
    /// back to what it was when the device was created.
    fn reset(&mut self);

    /// Processes the available buffers of queue `index`. Called on the
    /// event loop when the driver notified the queue; does nothing while
    /// the device is not active.
    ///
    /// A call does a bounded amount of work so one queue cannot hold the
    /// event loop; [`QueueProgress::MoreWork`] asks the caller to call again
    /// later (the subscriber re-signals the queue's eventfd).
    ///
    /// An error is a condition the device cannot recover from by itself
    /// (the device has already asked the driver for a reset through
    /// [`VirtioInterrupt::signal_needs_reset`]); per-request errors are
    /// reported to the driver in the request's status instead.
    fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError>;

    /// The live queues while the device is active (empty otherwise), so a
    /// snapshot can record their positions.
    fn queues(&self) -> &[Queue];
}

/// The resources of an active device, with the queue-processing logic
/// every device shares.
#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) memory: GuestMemoryMmap,
    pub(crate) interrupt: VirtioInterrupt,
    pub(crate) queues: Vec<Queue>,
    #[cfg_attr(not(feature = "block"), allow(dead_code))]
    pub(crate) acked_features: u64,
    /// Set once a queue broke; the device then waits for a reset.
    pub(crate) broken: bool,
}

#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
impl Active {
    /// Takes over the resources of an activation after checking that
    /// the `required` queues are there and enabled.
    pub(crate) fn new(
        device: DeviceType,
        activation: Activation,
        queue_count: usize,
        required: &[usize],
    ) -> Result<Self, ActivateError> {
        if activation.queues.len() != queue_count {
            return Err(ActivateError::QueueCount {
                device,
                expected: queue_count,
                got: activation.queues.len(),
            });
        }
        if let Some(&index) = required.iter().find(|&&i| !activation.queues[i].ready()) {
            return Err(ActivateError::QueueNotReady { device, index });
        }
        Ok(Self {
            memory: activation.memory,
            interrupt: activation.interrupt,
            queues: activation.queues,
            acked_features: activation.acked_features,
            broken: false,
        })
    }

    /// Runs `work` on queue `index` if it is enabled, interrupts the
    /// driver when `work` says so, and on a ring error marks the device
    /// broken and asks the driver for a reset.
    pub(crate) fn run_queue<F>(
        &mut self,
        index: usize,
        work: F,
    ) -> Result<QueueProgress, QueueError>
    where
        F: FnOnce(&mut Queue, &GuestMemoryMmap) -> Result<Drained, virtio_queue::Error>,
    {
        if self.broken {
            return Ok(QueueProgress::Done);
        }
        let queue = self
            .queues
            .get_mut(index)
            .ok_or(QueueError::NoSuchQueue { index })?;
        if !queue.ready() {
            return Ok(QueueProgress::Done);
        }
        match work(queue, &self.memory) {
            Ok(drained) => {
                if drained.notify {
                    if let Err(e) = self.interrupt.signal_used_queue() {
                        kindling_devices::log_limited!(
                            log::Level::Error,
                            "virtio: cannot raise the interrupt for queue {index}: {e}"
                        );
                    }
                }
                Ok(if drained.more {
                    QueueProgress::MoreWork
                } else {
                    QueueProgress::Done
                })
            }
            Err(source) => {
                self.broken = true;
                if let Err(e) = self.interrupt.signal_needs_reset() {
                    kindling_devices::log_limited!(
                        log::Level::Error,
                        "virtio: cannot raise the needs-reset interrupt: {e}"
                    );
                }
                Err(QueueError::Ring { index, source })
            }
        }
    }
}
