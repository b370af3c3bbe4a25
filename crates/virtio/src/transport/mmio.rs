//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2).
//!
//! The transport sits on the MMIO bus (it implements [`BusDevice`]) and is
//! called on vCPU threads. It never processes queues itself: a queue
//! notification is an eventfd (registered by the VMM as an ioeventfd on
//! QueueNotify, or written by the transport when a QueueNotify write
//! reaches it), and the event loop's [`VirtioSubscriber`] does the work.
//! The transport only locks the device for configuration-space accesses,
//! activation and reset; the interrupt status is shared without a lock.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use kindling_devices::{BusDevice, InterruptLine};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::registers as reg;
use super::status::{self, StatusStep};
use crate::device::{ActivateError, Activation, DeviceType, VirtioDevice};
use crate::features;
use crate::interrupt::VirtioInterrupt;
use crate::queue::{QueueConfig, QueueValidationError};
use crate::subscriber::VirtioSubscriber;
use crate::GuestMemoryMmap;

/// The size of a virtio-mmio window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// The offset of the QueueNotify register in the window: the VMM registers
/// each queue's eventfd as an ioeventfd at `window + QUEUE_NOTIFY_OFFSET`
/// with the queue index as datamatch (4 bytes).
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// virtio-mmio version 2: virtio 1.x, no legacy interface.
const VERSION: u32 = 2;
/// The vendor id the devices report: "KNDL", little-endian.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"KNDL");

/// Errors creating or restoring a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An eventfd for a queue notification could not be created.
    #[error("cannot create the notification eventfd of queue {index}: {source}")]
    QueueEvent {
        /// The queue.
        index: usize,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// A queue's eventfd could not be duplicated for the event loop.
    #[error("cannot duplicate the notification eventfd of queue {index}: {source}")]
    CloneQueueEvent {
        /// The queue.
        index: usize,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The device offers an invalid queue maximum size (a device bug).
    #[error("{device:?} device: {source}")]
    InvalidDevice {
        /// The device.
        device: DeviceType,
        /// What is wrong.
        #[source]
        source: QueueValidationError,
    },
    /// A snapshot does not describe this device.
    #[error("snapshot of device id {state_id} with queue sizes {state_queues:?} does not match this device (id {device_id}, queue sizes {device_queues:?})")]
    StateMismatch {
        /// The device id in the snapshot.
        state_id: u32,
        /// The queue maximum sizes in the snapshot.
        state_queues: Vec<u16>,
        /// This device's id.
        device_id: u32,
        /// This device's queue maximum sizes.
        device_queues: Vec<u16>,
    },
    /// A restored transport with an interrupt pending could not raise its
    /// interrupt line again.
    #[error("cannot raise the interrupt pending at the snapshot again: {source}")]
    RaisePending {
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// A queue in a snapshot is not valid for this guest memory.
    #[error("snapshot queue {index}: {source}")]
    InvalidQueue {
        /// The queue.
        index: usize,
        /// What is wrong.
        #[source]
        source: QueueValidationError,
    },
    /// A snapshot's Status register is not one the driver can reach
    /// (unknown bits, or steps out of order).
    #[error("snapshot status {status:#x} is not a status the initialisation sequence reaches")]
    InvalidStatus {
        /// The saved status.
        status: u32,
    },
    /// A snapshot says the device is active but the driver never set
    /// DRIVER_OK.
    #[error("snapshot has the device active with status {status:#x}, without DRIVER_OK")]
    ActiveWithoutDriverOk {
        /// The saved status.
        status: u32,
    },
    /// A snapshot past FEATURES_OK holds driver features the transport
    /// would have refused.
    #[error("snapshot driver features {driver:#x} (past the 64 bits: {high}) cannot have been accepted: the device offers {offered:#x} and VIRTIO_F_VERSION_1 is required")]
    InvalidFeatures {
        /// The saved driver features.
        driver: u64,
        /// Whether the driver wrote features past the first 64 bits.
        high: bool,
        /// What the device offers.
        offered: u64,
    },
    /// A queue of an active snapshot disagrees with the negotiated
    /// VIRTIO_RING_F_EVENT_IDX.
    #[error("snapshot queue {index}: EVENT_IDX {queue} but the driver negotiated {negotiated}")]
    EventIdxMismatch {
        /// The queue.
        index: usize,
        /// The queue's setting.
        queue: bool,
        /// Whether the feature was negotiated.
        negotiated: bool,
    },
    /// The interrupt state in a snapshot is invalid.
    #[error("snapshot interrupt state: {0}")]
    InvalidInterrupt(#[from] crate::interrupt::InterruptStateError),
    /// The device refused to be reactivated from a snapshot.
    #[error("cannot reactivate the device from the snapshot: {0}")]
    Activate(#[from] ActivateError),
}

/// Why FEATURES_OK was refused.
#[derive(Debug, thiserror::Error)]
enum FeatureError {
    #[error("the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")]
    NoVersion1,
    #[error("the driver accepted features {0:#x} the device does not offer")]
    NotOffered(u64),
    #[error("the driver accepted features in window {0}, past the 64 feature bits")]
    HighWindow(u32),
}

/// A virtio device on a virtio-mmio window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    memory: GuestMemoryMmap,
    line: Arc<dyn InterruptLine>,
    interrupt: VirtioInterrupt,
    queue_events: Vec<EventFd>,
    device_type: DeviceType,
    device_features: u64,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    driver_features_high: bool,
    queue_sel: u32,
    shm_sel: u32,
    queues: Vec<QueueConfig>,
    activated: bool,
}

impl fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("activated", &self.activated)
            .field("interrupt", &self.interrupt)
            .finish_non_exhaustive()
    }
}

/// Locks a device, recovering it if a thread panicked while holding it.
fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

impl MmioTransport {
    /// Puts `device` behind a virtio-mmio transport. `line` is the device's
    /// interrupt (for a VMM, an [`kindling_devices::EventFdLine`] whose
    /// eventfd it registers as an irqfd). One notification eventfd is
    /// created per queue ([`MmioTransport::queue_events`]).
    pub fn new(
        memory: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        line: Arc<dyn InterruptLine>,
    ) -> Result<Self, TransportError> {
        let interrupt = VirtioInterrupt::new(line.clone());
        let (device_type, device_features, max_sizes) = {
            let d = lock(&device);
            (
                d.device_type(),
                d.device_features(),
                d.queue_max_sizes().to_vec(),
            )
        };
        let mut queues = Vec::with_capacity(max_sizes.len());
        let mut queue_events = Vec::with_capacity(max_sizes.len());
        for (index, &max) in max_sizes.iter().enumerate() {
            if max == 0 || max > crate::queue::MAX_QUEUE_SIZE || !max.is_power_of_two() {
                return Err(TransportError::InvalidDevice {
                    device: device_type,
                    source: QueueValidationError::InvalidMaxSize(max),
                });
            }
            queues.push(QueueConfig::new(max));
            queue_events.push(
                EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)
                    .map_err(|source| TransportError::QueueEvent { index, source })?,
            );
        }
        Ok(Self {
            device,
            memory,
            line,
            interrupt,
            queue_events,
            device_type,
            device_features,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_high: false,
            queue_sel: 0,
            shm_sel: 0,
            queues,
            activated: false,
        })
    }

    /// The notification eventfd of each queue, in queue order. Register
    /// `queue_events()[i]` as an ioeventfd at `window + QUEUE_NOTIFY_OFFSET`,
    /// 4 bytes, datamatch `i`.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The event-loop subscriber that processes this device's queues when
    /// their eventfds fire. Add it to the device event loop.
    pub fn subscriber(&self) -> Result<VirtioSubscriber, TransportError> {
        let events = self
            .queue_events
            .iter()
            .enumerate()
            .map(|(index, e)| {
                e.try_clone()
                    .map_err(|source| TransportError::CloneQueueEvent { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VirtioSubscriber::new(self.device.clone(), events))
    }

    /// The device behind the transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The device type.
    pub fn device_type(&self) -> DeviceType {
        self.device_type
    }

    /// The interrupt handle shared with the device.
    pub fn interrupt(&self) -> &VirtioInterrupt {
        &self.interrupt
    }

    /// The Status register as the driver reads it.
    pub fn status(&self) -> u32 {
        if self.interrupt.needs_reset() {
            self.status | status::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// Whether the device was activated (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    fn name(&self) -> String {
        format!("virtio-mmio {:?}", self.device_type)
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_type.id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                features::window(self.device_features, self.device_features_sel)
            }
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            // No shared memory regions: their length reads as -1.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                log::debug!(
                    "{}: read of write-only or unknown register {offset:#x} returns 0",
                    self.name()
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.configurable_queue("QueueNum") {
                    // Validated at DRIVER_OK, where a bad size refuses the
                    // activation; 16 bits is all a queue size can be.
                    q.size = value.min(u32::from(u16::MAX)) as u16;
                }
            }
            reg::QUEUE_READY => self.write_queue_ready(value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.interrupt.acknowledge(value),
            reg::STATUS => self.write_status(value),
            reg::QUEUE_DESC_LOW => self.set_queue_address(value, |q| &mut q.desc_table, false),
            reg::QUEUE_DESC_HIGH => self.set_queue_address(value, |q| &mut q.desc_table, true),
            reg::QUEUE_DRIVER_LOW => self.set_queue_address(value, |q| &mut q.avail_ring, false),
            reg::QUEUE_DRIVER_HIGH => self.set_queue_address(value, |q| &mut q.avail_ring, true),
            reg::QUEUE_DEVICE_LOW => self.set_queue_address(value, |q| &mut q.used_ring, false),
            reg::QUEUE_DEVICE_HIGH => self.set_queue_address(value, |q| &mut q.used_ring, true),
            reg::SHM_SEL => self.shm_sel = value,
            _ => kindling_devices::log_limited!(
                log::Level::Warn,
                "{}: write of {value:#x} to read-only or unknown register {offset:#x} ignored",
                self.name()
            ),
        }
    }

    fn selected_queue(&self) -> Option<&QueueConfig> {
        self.queues.get(self.queue_sel as usize)
    }

    /// The selected queue, if the driver may configure queues now (between
    /// FEATURES_OK and DRIVER_OK, virtio 1.2 §3.1.1) and the queue exists.
    fn queue_for_setup(&mut self, register: &str) -> Option<&mut QueueConfig> {
        let allowed = self.status & status::FEATURES_OK != 0
            && self.status & (status::DRIVER_OK | status::FAILED) == 0;
        if !allowed {
            kindling_devices::log_limited!(log::Level::Warn,
                "{}: {register} write ignored: queues are set up after FEATURES_OK and before DRIVER_OK (status {:#x})",
                self.name(),
                self.status
            );
            return None;
        }
        let name = self.name();
        let sel = self.queue_sel;
        let queue = self.queues.get_mut(sel as usize);
        if queue.is_none() {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "{name}: {register} write ignored: there is no queue {sel}"
            );
        }
        queue
    }

    /// Like [`Self::queue_for_setup`], and the queue is not enabled yet.
    fn configurable_queue(&mut self, register: &str) -> Option<&mut QueueConfig> {
        let name = self.name();
        let sel = self.queue_sel;
        let queue = self.queue_for_setup(register)?;
        if queue.ready {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "{name}: {register} write ignored: queue {sel} is enabled"
            );
            return None;
        }
        Some(queue)
    }

    fn set_queue_address(
        &mut self,
        value: u32,
        field: fn(&mut QueueConfig) -> &mut u64,
        high: bool,
    ) {
        if let Some(q) = self.configurable_queue("queue address") {
            let addr = field(q);
            *addr = if high {
                (*addr & 0xffff_ffff) | (u64::from(value) << 32)
            } else {
                (*addr & !0xffff_ffff) | u64::from(value)
            };
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let name = self.name();
        if let Some(q) = self.queue_for_setup("QueueReady") {
            match value {
                0 => q.ready = false,
                1 => q.ready = true,
                _ => kindling_devices::log_limited!(
                    log::Level::Warn,
                    "{name}: QueueReady write of {value:#x} ignored"
                ),
            }
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status != status::ACKNOWLEDGE | status::DRIVER {
            kindling_devices::log_limited!(log::Level::Warn,
                "{}: DriverFeatures write ignored: features are negotiated after DRIVER and before FEATURES_OK (status {:#x})",
                self.name(),
                self.status
            );
            return;
        }
        if self.driver_features_sel > 1 {
            if value != 0 {
                self.driver_features_high = true;
            }
            return;
        }
        self.driver_features =
            features::set_window(self.driver_features, self.driver_features_sel, value);
    }

    fn check_features(&self) -> Result<(), FeatureError> {
        if self.driver_features_high {
            return Err(FeatureError::HighWindow(self.driver_features_sel));
        }
        if self.driver_features & features::VERSION_1 == 0 {
            return Err(FeatureError::NoVersion1);
        }
        let extra = self.driver_features & !self.device_features;
        if extra != 0 {
            return Err(FeatureError::NotOffered(extra));
        }
        Ok(())
    }

    fn notify(&mut self, index: u32) {
        match self.queue_events.get(index as usize) {
            Some(event) => {
                if let Err(e) = event.write(1) {
                    kindling_devices::log_limited!(
                        log::Level::Error,
                        "{}: cannot signal queue {index}: {e}",
                        self.name()
                    );
                }
            }
            None => kindling_devices::log_limited!(
                log::Level::Warn,
                "{}: notification of queue {index}, which does not exist",
                self.name()
            ),
        }
    }

    fn kick_queues(&self) {
        for (index, event) in self.queue_events.iter().enumerate() {
            if let Err(e) = event.write(1) {
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "{}: cannot signal queue {index}: {e}",
                    self.name()
                );
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        let step = match status::check_write(self.status, value) {
            Ok(step) => step,
            Err(e) => {
                kindling_devices::log_limited!(
                    log::Level::Warn,
                    "{}: status write refused: {e}; status stays {:#x}",
                    self.name(),
                    self.status()
                );
                return;
            }
        };
        match step {
            StatusStep::Reset => self.reset(),
            StatusStep::Acknowledge => self.status |= status::ACKNOWLEDGE,
            StatusStep::Driver => self.status |= status::DRIVER,
            StatusStep::FeaturesOk => match self.check_features() {
                Ok(()) => self.status |= status::FEATURES_OK,
                Err(e) => kindling_devices::log_limited!(
                    log::Level::Warn,
                    "{}: FEATURES_OK refused: {e}",
                    self.name()
                ),
            },
            StatusStep::DriverOk => {
                self.status |= status::DRIVER_OK;
                self.activate();
            }
            StatusStep::Failed => {
                self.status |= status::FAILED;
                kindling_devices::log_limited!(
                    log::Level::Warn,
                    "{}: the driver set FAILED",
                    self.name()
                );
            }
            StatusStep::Unchanged => {}
        }
    }

    /// DRIVER_OK: validate the queues and start the device; on failure the
    /// device stays inactive and DEVICE_NEEDS_RESET is set.
    fn activate(&mut self) {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, config) in self.queues.iter().enumerate() {
            match config.to_queue(&self.memory, event_idx) {
                Ok(q) => queues.push(q),
                Err(e) => {
                    kindling_devices::log_limited!(
                        log::Level::Warn,
                        "{}: queue {index}: {e}; device not activated, DEVICE_NEEDS_RESET set",
                        self.name()
                    );
                    self.needs_reset();
                    return;
                }
            }
        }
        let result = lock(&self.device).activate(Activation {
            memory: self.memory.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            acked_features: self.driver_features,
        });
        match result {
            Ok(()) => {
                self.activated = true;
                self.kick_queues();
            }
            Err(e) => {
                kindling_devices::log_limited!(
                    log::Level::Warn,
                    "{}: activation failed: {e}; DEVICE_NEEDS_RESET set",
                    self.name()
                );
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&self) {
        if let Err(e) = self.interrupt.signal_needs_reset() {
            kindling_devices::log_limited!(
                log::Level::Error,
                "{}: cannot raise the interrupt: {e}",
                self.name()
            );
        }
    }

    /// Status 0: the device and the transport return to their initial
    /// state.
    fn reset(&mut self) {
        lock(&self.device).reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_high = false;
        self.queue_sel = 0;
        self.shm_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.activated = false;
        self.interrupt.reset();
        for event in &self.queue_events {
            // Drop notifications that were not processed; EAGAIN when
            // there were none.
            let _ = event.read();
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= reg::CONFIG {
            if matches!(data.len(), 1 | 2 | 4) {
                lock(&self.device).read_config(offset - reg::CONFIG, data);
            } else {
                log::debug!(
                    "{}: {}-byte configuration read at {offset:#x} ignored",
                    self.name(),
                    data.len()
                );
            }
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            log::debug!(
                "{}: {}-byte register read at {offset:#x} ignored: registers are 32-bit",
                self.name(),
                data.len()
            );
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if matches!(data.len(), 1 | 2 | 4) {
                lock(&self.device).write_config(offset - reg::CONFIG, data);
            } else {
                log::debug!(
                    "{}: {}-byte configuration write at {offset:#x} ignored",
                    self.name(),
                    data.len()
                );
            }
            return;
        }
        if offset % 4 != 0 {
            log::debug!(
                "{}: misaligned register write at {offset:#x} ignored",
                self.name()
            );
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "{}: {}-byte register write at {offset:#x} ignored: registers are 32-bit",
                self.name(),
                data.len()
            );
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

mod cmdline;
mod persist;
#[cfg(test)]
mod tests;

pub use cmdline::{add_mmio_cmdline_device, cmdline_with_mmio_devices, CmdlineError};
pub use persist::{MmioTransportRestoreArgs, MmioTransportState};
