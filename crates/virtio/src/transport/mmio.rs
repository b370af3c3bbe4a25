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
use crate::interrupt::{InterruptState, VirtioInterrupt};
use crate::queue::{QueueConfig, QueueSnapshot, QueueValidationError};
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

/// The kernel command-line parameter that describes a virtio-mmio device
/// at `base` with interrupt `irq` to Linux (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`).
pub fn mmio_cmdline_device(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

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
    /// A queue in a snapshot is not valid for this guest memory.
    #[error("snapshot queue {index}: {source}")]
    InvalidQueue {
        /// The queue.
        index: usize,
        /// What is wrong.
        #[source]
        source: QueueValidationError,
    },
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
                EventFd::new(EFD_NONBLOCK)
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
            _ => log::warn!(
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
            log::warn!(
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
            log::warn!("{name}: {register} write ignored: there is no queue {sel}");
        }
        queue
    }

    /// Like [`Self::queue_for_setup`], and the queue is not enabled yet.
    fn configurable_queue(&mut self, register: &str) -> Option<&mut QueueConfig> {
        let name = self.name();
        let sel = self.queue_sel;
        let queue = self.queue_for_setup(register)?;
        if queue.ready {
            log::warn!("{name}: {register} write ignored: queue {sel} is enabled");
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
                _ => log::warn!("{name}: QueueReady write of {value:#x} ignored"),
            }
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status != status::ACKNOWLEDGE | status::DRIVER {
            log::warn!(
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
                    log::error!("{}: cannot signal queue {index}: {e}", self.name());
                }
            }
            None => log::warn!(
                "{}: notification of queue {index}, which does not exist",
                self.name()
            ),
        }
    }

    fn kick_queues(&self) {
        for (index, event) in self.queue_events.iter().enumerate() {
            if let Err(e) = event.write(1) {
                log::error!("{}: cannot signal queue {index}: {e}", self.name());
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        let step = match status::check_write(self.status, value) {
            Ok(step) => step,
            Err(e) => {
                log::warn!(
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
                Err(e) => log::warn!("{}: FEATURES_OK refused: {e}", self.name()),
            },
            StatusStep::DriverOk => {
                self.status |= status::DRIVER_OK;
                self.activate();
            }
            StatusStep::Failed => {
                self.status |= status::FAILED;
                log::warn!("{}: the driver set FAILED", self.name());
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
                    log::warn!(
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
                log::warn!(
                    "{}: activation failed: {e}; DEVICE_NEEDS_RESET set",
                    self.name()
                );
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&self) {
        if let Err(e) = self.interrupt.signal_needs_reset() {
            log::error!("{}: cannot raise the interrupt: {e}", self.name());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::tests::CountingLine;
    use crate::interrupt::{INT_CONFIG, INT_VRING};
    use crate::queue::tests::memory;
    use crate::queue::QueueError;
    use crate::transport::status::*;
    use virtio_queue::{Queue, QueueT};

    /// A device that records what the transport does to it.
    #[derive(Debug, Default)]
    struct MockDevice {
        config: [u8; 8],
        active: Option<(Vec<Queue>, u64)>,
        activations: usize,
        resets: usize,
        processed: Vec<usize>,
        refuse: bool,
    }

    const MOCK_FEATURES: u64 = features::COMMON | 0b101;

    impl VirtioDevice for MockDevice {
        fn device_type(&self) -> DeviceType {
            DeviceType::Other(42)
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn device_features(&self) -> u64 {
            MOCK_FEATURES
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = self.config.get_mut(offset as usize + i) {
                    *slot = *b;
                }
            }
        }
        fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
            if self.refuse {
                return Err(ActivateError::QueueNotReady {
                    device: self.device_type(),
                    index: 0,
                });
            }
            if self.active.is_some() {
                return Err(ActivateError::AlreadyActive(self.device_type()));
            }
            self.activations += 1;
            self.active = Some((activation.queues, activation.acked_features));
            Ok(())
        }
        fn is_activated(&self) -> bool {
            self.active.is_some()
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.active = None;
            self.config = [0; 8];
        }
        fn process_queue(&mut self, index: usize) -> Result<(), QueueError> {
            self.processed.push(index);
            Ok(())
        }
        fn queues(&self) -> &[Queue] {
            self.active.as_ref().map_or(&[], |(q, _)| q.as_slice())
        }
    }

    struct Fixture {
        transport: MmioTransport,
        device: Arc<Mutex<MockDevice>>,
        line: Arc<CountingLine>,
    }

    fn fixture() -> Fixture {
        let device = Arc::new(Mutex::new(MockDevice::default()));
        let line = Arc::new(CountingLine::default());
        let transport =
            MmioTransport::new(memory(0x10_0000), device.clone(), line.clone()).unwrap();
        Fixture {
            transport,
            device,
            line,
        }
    }

    fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
        t.write(offset, &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport, features: u64) {
        wr(t, reg::STATUS, 0);
        wr(t, reg::STATUS, ACKNOWLEDGE);
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(t, reg::DRIVER_FEATURES_SEL, 0);
        wr(t, reg::DRIVER_FEATURES, features as u32);
        wr(t, reg::DRIVER_FEATURES_SEL, 1);
        wr(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, base: u64) {
        wr(t, reg::QUEUE_SEL, index);
        wr(t, reg::QUEUE_NUM, size);
        wr(t, reg::QUEUE_DESC_LOW, base as u32);
        wr(t, reg::QUEUE_DESC_HIGH, (base >> 32) as u32);
        wr(t, reg::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
        wr(t, reg::QUEUE_DRIVER_HIGH, 0);
        wr(t, reg::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
        wr(t, reg::QUEUE_DEVICE_HIGH, 0);
        wr(t, reg::QUEUE_READY, 1);
    }

    const ALL: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

    fn bring_up(t: &mut MmioTransport, features: u64) {
        negotiate(t, features);
        setup_queue(t, 0, 16, 0x10000);
        setup_queue(t, 1, 8, 0x20000);
        wr(t, reg::STATUS, ALL);
    }

    #[test]
    fn identity_registers() {
        let mut f = fixture();
        let t = &mut f.transport;
        assert_eq!(rd(t, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(t, reg::VERSION), 2);
        assert_eq!(rd(t, reg::DEVICE_ID), 42);
        assert_eq!(rd(t, reg::VENDOR_ID), VENDOR_ID);
        assert_eq!(rd(t, reg::SHM_LEN_LOW), u32::MAX);
        assert_eq!(rd(t, reg::SHM_LEN_HIGH), u32::MAX);
        assert_eq!(rd(t, reg::CONFIG_GENERATION), 0);
        wr(t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(t, reg::DEVICE_FEATURES), MOCK_FEATURES as u32);
        wr(t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(t, reg::DEVICE_FEATURES), (MOCK_FEATURES >> 32) as u32);
        wr(t, reg::DEVICE_FEATURES_SEL, 2);
        assert_eq!(rd(t, reg::DEVICE_FEATURES), 0);
        wr(t, reg::QUEUE_SEL, 0);
        assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 16);
        wr(t, reg::QUEUE_SEL, 1);
        assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 8);
        wr(t, reg::QUEUE_SEL, 2);
        assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 0);
        assert_eq!(rd(t, reg::QUEUE_READY), 0);
        assert!(format!("{t:?}").contains("MmioTransport"));
        assert_eq!(t.device_type(), DeviceType::Other(42));
    }

    #[test]
    fn write_only_and_unknown_registers_read_zero_and_ignore_writes() {
        let mut f = fixture();
        let t = &mut f.transport;
        for offset in [
            reg::DEVICE_FEATURES_SEL,
            reg::DRIVER_FEATURES,
            reg::DRIVER_FEATURES_SEL,
            reg::QUEUE_SEL,
            reg::QUEUE_NUM,
            reg::QUEUE_NOTIFY,
            reg::INTERRUPT_ACK,
            reg::QUEUE_DESC_LOW,
            reg::QUEUE_DEVICE_HIGH,
            reg::SHM_SEL,
            reg::QUEUE_RESET,
            0x028,
            0x0f8,
        ] {
            assert_eq!(rd(t, offset), 0, "{offset:#x}");
        }
        let before = t.state();
        for offset in [
            reg::MAGIC_VALUE,
            reg::VERSION,
            reg::DEVICE_ID,
            reg::DEVICE_FEATURES,
            reg::QUEUE_NUM_MAX,
            reg::INTERRUPT_STATUS,
            reg::CONFIG_GENERATION,
            reg::QUEUE_RESET,
            0x0f8,
        ] {
            wr(t, offset, 0xffff_ffff);
        }
        assert_eq!(t.state(), before);
        assert_eq!(rd(t, reg::MAGIC_VALUE), 0x7472_6976);
    }

    #[test]
    fn non_32_bit_register_accesses_are_ignored() {
        let mut f = fixture();
        let t = &mut f.transport;
        for len in [1usize, 2, 3, 8] {
            let mut buf = vec![0xaa; len];
            t.read(reg::MAGIC_VALUE, &mut buf);
            assert!(buf.iter().all(|&b| b == 0), "{len}-byte read");
            t.write(reg::STATUS, &vec![1; len]);
        }
        // Misaligned 32-bit accesses too.
        let mut buf = [0xaa; 4];
        t.read(reg::MAGIC_VALUE + 1, &mut buf);
        assert_eq!(buf, [0; 4]);
        t.write(reg::STATUS + 2, &1u32.to_le_bytes());
        assert_eq!(rd(t, reg::STATUS), 0);
    }

    #[test]
    fn config_space_allows_byte_word_and_dword_accesses() {
        let mut f = fixture();
        let t = &mut f.transport;
        t.write(reg::CONFIG, &[1]);
        t.write(reg::CONFIG + 2, &[2, 3]);
        t.write(reg::CONFIG + 4, &[4, 5, 6, 7]);
        t.write(reg::CONFIG, &[9; 8]); // 8-byte: ignored
        t.write(reg::CONFIG + 1, &[9; 3]); // 3-byte: ignored
        assert_eq!(f.device.lock().unwrap().config, [1, 0, 2, 3, 4, 5, 6, 7]);
        let mut b1 = [0u8; 1];
        t.read(reg::CONFIG + 3, &mut b1);
        assert_eq!(b1, [3]);
        let mut b2 = [0u8; 2];
        t.read(reg::CONFIG + 2, &mut b2);
        assert_eq!(b2, [2, 3]);
        assert_eq!(rd(t, reg::CONFIG + 4), 0x0706_0504);
        let mut b8 = [0xffu8; 8];
        t.read(reg::CONFIG, &mut b8);
        assert_eq!(b8, [0; 8]);
        // Past the device's configuration space.
        assert_eq!(rd(t, reg::CONFIG + 0x100), 0);
        assert_eq!(rd(t, MMIO_WINDOW_SIZE - 4), 0);
    }

    #[test]
    fn full_initialisation_activates_the_device() {
        let mut f = fixture();
        let t = &mut f.transport;
        let features = features::VERSION_1 | features::RING_EVENT_IDX | 1;
        bring_up(t, features);
        assert_eq!(rd(t, reg::STATUS), ALL);
        assert!(t.is_activated());
        assert_eq!(t.driver_features(), features);
        let dev = f.device.lock().unwrap();
        let (queues, acked) = dev.active.as_ref().unwrap();
        assert_eq!(*acked, features);
        assert_eq!(queues.len(), 2);
        assert!(queues[0].ready() && queues[1].ready());
        assert_eq!(queues[0].size(), 16);
        assert_eq!(queues[1].size(), 8);
        assert_eq!(queues[0].desc_table(), 0x10000);
        assert_eq!(queues[0].avail_ring(), 0x11000);
        assert_eq!(queues[0].used_ring(), 0x12000);
        assert!(queues[0].event_idx_enabled());
        drop(dev);
        wr(t, reg::QUEUE_SEL, 1);
        assert_eq!(rd(t, reg::QUEUE_READY), 1);
        // Activation kicks every queue once.
        assert_eq!(t.queue_events()[0].read().unwrap(), 1);
        assert_eq!(t.queue_events()[1].read().unwrap(), 1);
    }

    #[test]
    fn a_queue_the_driver_leaves_disabled_is_passed_idle() {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, features::VERSION_1);
        setup_queue(t, 0, 4, 0x10000);
        wr(t, reg::STATUS, ALL);
        assert!(t.is_activated());
        let dev = f.device.lock().unwrap();
        let (queues, _) = dev.active.as_ref().unwrap();
        assert!(queues[0].ready());
        assert!(!queues[1].ready());
        assert!(!queues[0].event_idx_enabled());
    }

    #[test]
    fn driver_without_version_1_is_refused() {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, features::RING_EVENT_IDX);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
        // The driver gives up, as Linux does.
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FAILED);
        // Only a reset helps now.
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FAILED);
        wr(t, reg::STATUS, 0);
        assert_eq!(rd(t, reg::STATUS), 0);
    }

    #[test]
    fn features_not_offered_are_refused() {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, features::VERSION_1 | 0b10);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
        // Bits in windows past 64 are refused too.
        wr(t, reg::STATUS, 0);
        wr(t, reg::STATUS, ACKNOWLEDGE);
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(t, reg::DRIVER_FEATURES_SEL, 1);
        wr(t, reg::DRIVER_FEATURES, 1);
        wr(t, reg::DRIVER_FEATURES_SEL, 2);
        wr(t, reg::DRIVER_FEATURES, 1);
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
        // A zero in a high window is fine.
        negotiate(t, features::VERSION_1);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }

    #[test]
    fn driver_features_are_only_written_between_driver_and_features_ok() {
        let mut f = fixture();
        let t = &mut f.transport;
        wr(t, reg::DRIVER_FEATURES, 1);
        wr(t, reg::STATUS, ACKNOWLEDGE);
        wr(t, reg::DRIVER_FEATURES, 1);
        assert_eq!(t.driver_features(), 0);
        negotiate(t, features::VERSION_1);
        wr(t, reg::DRIVER_FEATURES_SEL, 0);
        wr(t, reg::DRIVER_FEATURES, 0b100);
        assert_eq!(t.driver_features(), features::VERSION_1);
    }

    #[test]
    fn out_of_order_status_writes_are_refused() {
        let mut f = fixture();
        let t = &mut f.transport;
        for v in [DRIVER, FEATURES_OK, DRIVER_OK, ALL, 0x10, 0x20, 0x100] {
            wr(t, reg::STATUS, v);
            assert_eq!(rd(t, reg::STATUS), 0, "{v:#x}");
        }
        wr(t, reg::STATUS, ACKNOWLEDGE);
        for v in [
            DRIVER,
            ACKNOWLEDGE | FEATURES_OK,
            ACKNOWLEDGE | DRIVER_OK,
            ACKNOWLEDGE | DRIVER | FEATURES_OK,
        ] {
            wr(t, reg::STATUS, v);
            assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE, "{v:#x}");
        }
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
        wr(t, reg::STATUS, ACKNOWLEDGE);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER, "clearing a bit");
        assert!(!f.device.lock().unwrap().is_activated());
    }

    #[test]
    fn queue_registers_outside_queue_setup_are_ignored() {
        let mut f = fixture();
        let t = &mut f.transport;
        // Before FEATURES_OK.
        wr(t, reg::STATUS, ACKNOWLEDGE);
        wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        setup_queue(t, 0, 4, 0x10000);
        wr(t, reg::QUEUE_SEL, 0);
        assert_eq!(rd(t, reg::QUEUE_READY), 0);
        assert_eq!(t.state().queues[0].config, QueueConfig::new(16));
        // A queue that does not exist.
        negotiate(t, features::VERSION_1);
        setup_queue(t, 7, 4, 0x10000);
        assert_eq!(rd(t, reg::QUEUE_READY), 0);
        // An enabled queue cannot be changed, but can be disabled.
        setup_queue(t, 0, 4, 0x10000);
        wr(t, reg::QUEUE_NUM, 8);
        wr(t, reg::QUEUE_DESC_LOW, 0x30000);
        assert_eq!(t.state().queues[0].config.size, 4);
        assert_eq!(t.state().queues[0].config.desc_table, 0x10000);
        wr(t, reg::QUEUE_READY, 2);
        assert_eq!(rd(t, reg::QUEUE_READY), 1);
        wr(t, reg::QUEUE_READY, 0);
        assert_eq!(rd(t, reg::QUEUE_READY), 0);
        wr(t, reg::QUEUE_NUM, 8);
        assert_eq!(t.state().queues[0].config.size, 8);
        wr(t, reg::QUEUE_NUM, 0x1_0000);
        assert_eq!(t.state().queues[0].config.size, u16::MAX);
        // After DRIVER_OK.
        setup_queue(t, 0, 4, 0x10000);
        wr(t, reg::STATUS, ALL);
        assert!(t.is_activated());
        wr(t, reg::QUEUE_SEL, 0);
        wr(t, reg::QUEUE_READY, 0);
        wr(t, reg::QUEUE_NUM, 2);
        assert_eq!(rd(t, reg::QUEUE_READY), 1);
        assert_eq!(t.state().queues[0].config.size, 4);
    }

    #[test]
    fn bad_queues_do_not_activate_the_device() {
        type Corrupt = fn(&mut MmioTransport);
        let cases: [(&str, Corrupt); 6] = [
            ("size not a power of two", |t| wr(t, reg::QUEUE_NUM, 5)),
            ("size above the maximum", |t| wr(t, reg::QUEUE_NUM, 32)),
            ("size zero", |t| wr(t, reg::QUEUE_NUM, 0)),
            ("misaligned descriptors", |t| {
                wr(t, reg::QUEUE_DESC_LOW, 0x10008)
            }),
            ("used ring outside memory", |t| {
                wr(t, reg::QUEUE_DEVICE_HIGH, 1)
            }),
            ("avail ring past the end", |t| {
                wr(t, reg::QUEUE_DRIVER_LOW, 0xffffe)
            }),
        ];
        for (what, corrupt) in cases {
            let mut f = fixture();
            let t = &mut f.transport;
            negotiate(t, features::VERSION_1);
            wr(t, reg::QUEUE_SEL, 0);
            wr(t, reg::QUEUE_NUM, 16);
            wr(t, reg::QUEUE_DESC_LOW, 0x10000);
            wr(t, reg::QUEUE_DRIVER_LOW, 0x11000);
            wr(t, reg::QUEUE_DEVICE_LOW, 0x12000);
            corrupt(t);
            wr(t, reg::QUEUE_READY, 1);
            wr(t, reg::STATUS, ALL);
            assert!(!t.is_activated(), "{what}");
            assert!(!f.device.lock().unwrap().is_activated(), "{what}");
            assert_eq!(rd(t, reg::STATUS), ALL | DEVICE_NEEDS_RESET, "{what}");
            assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_CONFIG, "{what}");
            assert_eq!(f.line.count(), 1, "{what}");
            // The driver resets and the device is usable again.
            wr(t, reg::STATUS, 0);
            assert_eq!(rd(t, reg::STATUS), 0);
            bring_up(t, features::VERSION_1);
            assert!(t.is_activated(), "{what}");
        }
    }

    #[test]
    fn a_device_refusing_activation_needs_reset() {
        let mut f = fixture();
        f.device.lock().unwrap().refuse = true;
        let t = &mut f.transport;
        bring_up(t, features::VERSION_1);
        assert!(!t.is_activated());
        assert_eq!(rd(t, reg::STATUS), ALL | DEVICE_NEEDS_RESET);
        // Writing back what was read (as Linux's add_status does) is fine.
        wr(t, reg::STATUS, ALL | DEVICE_NEEDS_RESET | FAILED);
        assert_eq!(rd(t, reg::STATUS), ALL | DEVICE_NEEDS_RESET | FAILED);
    }

    #[test]
    fn interrupt_status_and_acknowledge() {
        let mut f = fixture();
        let t = &mut f.transport;
        bring_up(t, features::VERSION_1);
        let irq = t.interrupt().clone();
        irq.signal_used_queue().unwrap();
        assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_VRING);
        irq.signal_config_change().unwrap();
        assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_VRING | INT_CONFIG);
        assert_eq!(rd(t, reg::CONFIG_GENERATION), 1);
        wr(t, reg::INTERRUPT_ACK, INT_VRING);
        assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_CONFIG);
        wr(t, reg::INTERRUPT_ACK, 0xffff_ffff);
        assert_eq!(rd(t, reg::INTERRUPT_STATUS), 0);
        assert_eq!(f.line.count(), 2);
    }

    #[test]
    fn queue_notify_signals_the_queue_eventfd() {
        let mut f = fixture();
        let t = &mut f.transport;
        bring_up(t, features::VERSION_1);
        for e in t.queue_events() {
            let _ = e.read();
        }
        wr(t, reg::QUEUE_NOTIFY, 1);
        wr(t, reg::QUEUE_NOTIFY, 1);
        wr(t, reg::QUEUE_NOTIFY, 9); // no such queue
        assert_eq!(t.queue_events()[1].read().unwrap(), 2);
        assert!(t.queue_events()[0].read().is_err());
        // The subscriber processes a notified queue.
        let mut sub = t.subscriber().unwrap();
        wr(t, reg::QUEUE_NOTIFY, 0);
        sub.handle_queue_event(0);
        sub.handle_queue_event(5);
        assert_eq!(f.device.lock().unwrap().processed, vec![0]);
    }

    #[test]
    fn reset_returns_everything_to_the_initial_state() {
        let mut f = fixture();
        let t = &mut f.transport;
        let initial = t.state();
        bring_up(t, features::VERSION_1 | features::RING_EVENT_IDX);
        wr(t, reg::DEVICE_FEATURES_SEL, 1);
        wr(t, reg::SHM_SEL, 3);
        t.write(reg::CONFIG, &[7]);
        t.interrupt().signal_config_change().unwrap();
        wr(t, reg::QUEUE_NOTIFY, 0);
        assert_ne!(t.state(), initial);
        let resets = f.device.lock().unwrap().resets;
        wr(t, reg::STATUS, 0);
        assert_eq!(t.state(), initial);
        assert!(!t.is_activated());
        let dev = f.device.lock().unwrap();
        assert!(!dev.is_activated());
        assert_eq!(dev.resets, resets + 1);
        assert_eq!(dev.config, [0; 8]);
        drop(dev);
        assert!(t.queue_events()[0].read().is_err(), "notification dropped");
        assert_eq!(rd(t, reg::INTERRUPT_STATUS), 0);
        assert_eq!(rd(t, reg::CONFIG_GENERATION), 0);
    }

    #[test]
    fn state_round_trips_through_serde_and_reactivates() {
        let mut f = fixture();
        let t = &mut f.transport;
        bring_up(t, features::VERSION_1 | features::RING_EVENT_IDX);
        {
            let mut dev = f.device.lock().unwrap();
            let (queues, _) = dev.active.as_mut().unwrap();
            queues[0].set_next_avail(3);
            queues[0].set_next_used(2);
        }
        t.interrupt().signal_used_queue().unwrap();
        let state = t.state();
        assert_eq!(state.queues[0].next_avail, 3);
        assert_eq!(state.queues[0].next_used, 2);
        assert!(state.queues[0].event_idx);
        let json = serde_json::to_string(&state).unwrap();
        let state: MmioTransportState = serde_json::from_str(&json).unwrap();

        let device = Arc::new(Mutex::new(MockDevice::default()));
        let line = Arc::new(CountingLine::default());
        let restored =
            MmioTransport::from_state(&state, memory(0x10_0000), device.clone(), line).unwrap();
        assert_eq!(restored.state(), state);
        assert!(restored.is_activated());
        let dev = device.lock().unwrap();
        let (queues, acked) = dev.active.as_ref().unwrap();
        assert_eq!(queues[0].next_avail(), 3);
        assert_eq!(*acked, features::VERSION_1 | features::RING_EVENT_IDX);
        assert_eq!(restored.interrupt().status(), INT_VRING);
        assert_eq!(restored.queue_events()[0].read().unwrap(), 1);
    }

    #[test]
    fn mismatched_or_invalid_state_is_refused() {
        let f = fixture();
        let mut state = f.transport.state();
        state.device_id = 2;
        let new_dev = || Arc::new(Mutex::new(MockDevice::default()));
        let line = Arc::new(CountingLine::default());
        assert!(matches!(
            MmioTransport::from_state(&state, memory(0x10_0000), new_dev(), line.clone()),
            Err(TransportError::StateMismatch { .. })
        ));
        let mut state = f.transport.state();
        state.activated = true;
        state.queues[0].config.ready = true;
        state.queues[0].config.desc_table = 0x3;
        let err = MmioTransport::from_state(&state, memory(0x10_0000), new_dev(), line.clone())
            .unwrap_err();
        assert!(matches!(err, TransportError::InvalidQueue { index: 0, .. }));
        assert!(err.to_string().contains("snapshot queue 0"), "{err}");
        // A device that is already active refuses to be reactivated.
        let mut state = f.transport.state();
        state.activated = true;
        let dev = new_dev();
        dev.lock().unwrap().active = Some((Vec::new(), 0));
        assert!(matches!(
            MmioTransport::from_state(&state, memory(0x10_0000), dev, line),
            Err(TransportError::Activate(ActivateError::AlreadyActive(_)))
        ));
    }

    #[test]
    fn devices_with_invalid_queue_sizes_are_refused() {
        #[derive(Debug)]
        struct Bad;
        impl VirtioDevice for Bad {
            fn device_type(&self) -> DeviceType {
                DeviceType::Rng
            }
            fn queue_max_sizes(&self) -> &[u16] {
                &[3]
            }
            fn device_features(&self) -> u64 {
                0
            }
            fn read_config(&self, _: u64, _: &mut [u8]) {}
            fn write_config(&mut self, _: u64, _: &[u8]) {}
            fn activate(&mut self, _: Activation) -> Result<(), ActivateError> {
                Ok(())
            }
            fn is_activated(&self) -> bool {
                false
            }
            fn reset(&mut self) {}
            fn process_queue(&mut self, _: usize) -> Result<(), QueueError> {
                Ok(())
            }
            fn queues(&self) -> &[Queue] {
                &[]
            }
        }
        let err = MmioTransport::new(
            memory(0x1000),
            Arc::new(Mutex::new(Bad)),
            Arc::new(CountingLine::default()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("maximum size 3"), "{err}");
    }

    #[test]
    fn cmdline_entry() {
        assert_eq!(
            mmio_cmdline_device(0xc000_1000, 12),
            "virtio_mmio.device=4K@0xc0001000:12"
        );
    }
}
