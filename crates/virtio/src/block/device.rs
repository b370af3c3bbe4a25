//! The block device: parses requests from its queue, checks them against
//! the negotiated features and the read-only setting, and hands them to
//! its [`BlockBackend`].

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use event_manager::EventSet;
use kindling_devices::{DeviceEvents, EventRegistry};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::backend::{BackendError, BlockBackend, BlockOp};
use super::config::{self, CONFIG_SIZE};
use super::engine::{self, BlockEngine};
use super::request::{parse, GuestBuffer, Limits, ParseError, Request, RequestKind};
use super::{features as blk, status, BlockError, ID_BYTES, QUEUE_SIZE, SECTOR_SIZE};
use crate::device::{ActivateError, Activation, Active, DeviceType, QueueProgress, VirtioDevice};
use crate::queue::{drain_queue, needs_interrupt, Drained, Handled, QueueError, MAX_QUEUE_SIZE};
use crate::rate_limiter::{RateLimiterConfig, Throttle};
use crate::{features, GuestMemoryMmap};

/// How to create a block device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockConfig {
    /// The raw disk image.
    pub path: PathBuf,
    /// Open the image read-only and offer VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// The id GET_ID returns (at most 20 bytes); by default one derived
    /// from the image file's device and inode numbers.
    pub serial: Option<String>,
    /// The queue's maximum size (a power of two, at least 2).
    pub queue_size: u16,
    /// The I/O engine.
    #[serde(default)]
    pub engine: BlockEngine,
    /// Limits on the guest's requests (bytes and operations).
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl BlockConfig {
    /// A read-write device on `path` with the default serial and queue
    /// size.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            serial: None,
            queue_size: QUEUE_SIZE,
            engine: BlockEngine::Sync,
            rate_limiter: None,
        }
    }
}

/// The block device's guest-visible state, for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockState {
    /// The disk size in sectors the guest saw.
    pub capacity: u64,
    /// Whether the device is read-only.
    pub read_only: bool,
    /// The GET_ID answer.
    pub serial: [u8; ID_BYTES],
    /// The queue's maximum size.
    pub queue_size: u16,
    /// The I/O engine the device ran on (a restore that opens the image by
    /// path opens it with this engine again).
    pub engine: BlockEngine,
    /// The rate limits in force when saved (a restore sets them again; the
    /// token buckets start full, what they had used is not saved).
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// A request handed to the backend, waiting for its completion.
#[derive(Debug, Clone, Copy)]
struct Pending {
    status: GuestAddress,
    used_len: u32,
}

/// A virtio block device.
///
/// # Example
///
/// ```
/// use kindling_virtio::block::{Block, BlockConfig};
/// use kindling_virtio::VirtioDevice;
///
/// let dir = std::env::temp_dir().join(format!("kindling-doc-{}.img", std::process::id()));
/// std::fs::write(&dir, vec![0u8; 4096]).unwrap();
/// let mut config = BlockConfig::new(&dir);
/// config.serial = Some("disk0".into());
/// let block = Block::new(&config).unwrap();
/// assert_eq!(block.capacity(), 8);
/// let mut capacity = [0u8; 8];
/// block.read_config(0, &mut capacity);
/// assert_eq!(u64::from_le_bytes(capacity), 8);
/// std::fs::remove_file(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct Block {
    backend: Box<dyn BlockBackend>,
    read_only: bool,
    serial: [u8; ID_BYTES],
    capacity: u64,
    queue_sizes: [u16; 1],
    features: u64,
    config: [u8; CONFIG_SIZE],
    active: Option<Active>,
    scratch: Vec<Descriptor>,
    pending: Vec<Option<Pending>>,
    /// The backend was full: a request waits in the available ring until
    /// completions free space.
    stalled: bool,
    /// The rate limiter, and its timer.
    throttle: Throttle,
    /// The I/O engine `backend` is (as configured).
    engine: BlockEngine,
}

fn check_queue_size(q: u16) -> Result<(), BlockError> {
    if !(2..=MAX_QUEUE_SIZE).contains(&q) || !q.is_power_of_two() {
        return Err(BlockError::InvalidQueueSize(q));
    }
    Ok(())
}

/// The token of the backend's completion eventfd on the event loop.
const COMPLETION_TOKEN: u32 = 0;
/// The token of the rate limiter's timerfd.
const LIMITER_TOKEN: u32 = 1;

impl Block {
    /// Opens `config.path` with the engine `config.engine`.
    pub fn new(config: &BlockConfig) -> Result<Self, BlockError> {
        check_queue_size(config.queue_size)?;
        let backend = engine::open(config)?;
        Self::with_backend(backend, config)
    }

    /// Uses `backend` as the I/O engine; `config.path` is not opened.
    pub fn with_backend(
        backend: Box<dyn BlockBackend>,
        config: &BlockConfig,
    ) -> Result<Self, BlockError> {
        let q = config.queue_size;
        check_queue_size(q)?;
        let serial = match &config.serial {
            Some(s) if s.len() > ID_BYTES => {
                return Err(BlockError::SerialTooLong {
                    serial: s.clone(),
                    len: s.len(),
                })
            }
            Some(s) => {
                let mut id = [0u8; ID_BYTES];
                id[..s.len()].copy_from_slice(s.as_bytes());
                id
            }
            None => backend.default_serial(),
        };
        let capacity = backend.size() / SECTOR_SIZE;
        let mut features =
            features::COMMON | blk::FLUSH | blk::SEG_MAX | blk::SIZE_MAX | blk::BLK_SIZE;
        features |= if config.read_only {
            blk::RO
        } else {
            blk::DISCARD | blk::WRITE_ZEROES
        };
        let seg_max = seg_max(q);
        let throttle =
            Throttle::new(config.rate_limiter.as_ref()).map_err(|source| BlockError::Timer {
                path: config.path.clone(),
                source,
            })?;
        Ok(Self {
            backend,
            read_only: config.read_only,
            serial,
            capacity,
            queue_sizes: [q],
            features,
            config: config::config_space(capacity, seg_max),
            active: None,
            scratch: Vec::new(),
            pending: Vec::new(),
            stalled: false,
            throttle,
            engine: config.engine,
        })
    }

    /// The rate limits in force (`None`: no limit).
    pub fn rate_limiter(&self) -> Option<RateLimiterConfig> {
        self.throttle.config()
    }

    /// Changes the rate limits while running (Firecracker's
    /// `PATCH /drives/{id}`): a bucket given replaces the current one (a
    /// bucket of size 0 removes it), one not given stays. A queue stopped
    /// by the old limits is taken up again through the timer.
    pub fn update_rate_limiter(&mut self, update: &RateLimiterConfig) {
        self.throttle.update(update);
    }

    /// How many times the rate limiter stopped the queue.
    pub fn throttled_count(&self) -> u64 {
        self.throttle.refusals()
    }

    /// The device's state (what [`Persist::save`](kindling_memory::Persist::save)
    /// returns while no request is in flight).
    pub fn state(&self) -> BlockState {
        BlockState {
            capacity: self.capacity,
            read_only: self.read_only,
            serial: self.serial,
            queue_size: self.queue_sizes[0],
            engine: self.engine,
            rate_limiter: self.throttle.config(),
        }
    }

    /// The I/O engine the device was created with.
    pub fn engine(&self) -> BlockEngine {
        self.engine
    }

    /// The disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The GET_ID answer.
    pub fn serial(&self) -> &[u8; ID_BYTES] {
        &self.serial
    }

    fn worker(&mut self) -> Option<(&mut Active, Worker<'_>)> {
        let active = self.active.as_mut()?;
        let acked = active.acked_features;
        Some((
            active,
            Worker {
                backend: &mut *self.backend,
                scratch: &mut self.scratch,
                pending: &mut self.pending,
                stalled: &mut self.stalled,
                throttle: &mut self.throttle,
                serial: &self.serial,
                read_only: self.read_only,
                acked,
                limits: Limits {
                    max_data_bytes: config::max_request_bytes(seg_max(self.queue_sizes[0])),
                    ..Limits::new(self.capacity)
                },
                pass_bytes: 0,
            },
        ))
    }

    /// The rate limiter's timer fired: take the queue up where the limiter
    /// stopped it.
    fn on_limiter_timer(&mut self) {
        self.throttle.on_timer();
        self.stalled = true;
        self.complete_requests();
    }

    /// Returns the requests the backend finished to the driver, and takes
    /// up the queue again if it stopped because the backend was full.
    fn complete_requests(&mut self) {
        let resume = self.stalled;
        let Some((active, mut worker)) = self.worker() else {
            return;
        };
        let progress = active.run_queue(0, |queue, memory| {
            let mut drained = if resume {
                *worker.stalled = false;
                worker.drain(queue, memory)?
            } else {
                Drained {
                    notify: false,
                    more: false,
                }
            };
            if worker.reap(queue, memory)? {
                drained.notify |= needs_interrupt(queue, memory)?;
            }
            Ok(drained)
        });
        match progress {
            Ok(QueueProgress::Done) => {}
            Ok(QueueProgress::MoreWork) => {
                // Come back through the completion eventfd after the other
                // ready events.
                self.stalled = true;
                if let Some(event) = self.backend.completion_event() {
                    if let Err(e) = event.write(1) {
                        kindling_devices::log_limited!(
                            log::Level::Error,
                            "virtio-blk: cannot re-signal the completion eventfd: {e}"
                        );
                    }
                }
            }
            Err(e) => kindling_devices::log_limited!(log::Level::Error, "virtio-blk: {e}"),
        }
    }
}

/// The block device's own event source: the completion eventfd of an
/// asynchronous engine (none for the synchronous one).
impl DeviceEvents for Block {
    fn register_events(&mut self, ops: &mut EventRegistry<'_>) {
        if let Some(event) = self.backend.completion_event() {
            if let Err(e) = ops.add(event.as_raw_fd(), COMPLETION_TOKEN, EventSet::IN) {
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "virtio-blk: cannot watch the I/O engine's completions: {e}"
                );
            }
        }
        if let Err(e) = ops.add(self.throttle.as_raw_fd(), LIMITER_TOKEN, EventSet::IN) {
            kindling_devices::log_limited!(
                log::Level::Error,
                "virtio-blk: cannot watch the rate limiter's timer: {e}"
            );
        }
    }

    fn handle_event(&mut self, token: u32, _events: EventSet, _ops: &mut EventRegistry<'_>) {
        if token == LIMITER_TOKEN {
            self.on_limiter_timer();
            return;
        }
        if token != COMPLETION_TOKEN {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio-blk: event for token {token}, which is not registered"
            );
            return;
        }
        if let Some(event) = self.backend.completion_event() {
            // Clear it before collecting, so a completion posted meanwhile
            // signals it again. EAGAIN: a spurious wake-up.
            let _ = event.read();
        }
        self.complete_requests();
    }
}

/// The request loop, borrowing what it needs from the device.
struct Worker<'a> {
    backend: &'a mut dyn BlockBackend,
    scratch: &'a mut Vec<Descriptor>,
    pending: &'a mut [Option<Pending>],
    stalled: &'a mut bool,
    throttle: &'a mut Throttle,
    serial: &'a [u8; ID_BYTES],
    read_only: bool,
    acked: u64,
    limits: Limits,
    /// Data bytes started in this pass, against [`PASS_BYTE_BUDGET`].
    pass_bytes: u64,
}

/// Data bytes one pass over the queue may start before it yields to the
/// rest of the event loop (the request count is bounded by the queue's
/// own pass budget): with the sync engine the pass does the I/O itself,
/// so this bounds how long one guest's disk holds the loop.
pub const PASS_BYTE_BUDGET: u64 = 4 << 20;

/// The `seg_max` of a queue of `queue_size`: room for the header and the
/// status descriptors.
fn seg_max(queue_size: u16) -> u32 {
    (u32::from(queue_size).saturating_sub(2)).max(1)
}

/// Writes the status byte and returns the chain to the driver.
fn finish(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    head: u16,
    status_addr: GuestAddress,
    code: u8,
    used_len: u32,
) -> Result<(), virtio_queue::Error> {
    if let Err(e) = memory.write_obj(code, status_addr) {
        // The parser checked the address; only a memory change gets here.
        kindling_devices::log_limited!(
            log::Level::Warn,
            "virtio-blk: cannot write the status byte at {:#x}: {e}",
            status_addr.0
        );
    }
    queue.add_used(memory, head, used_len)
}

/// The bytes a request moves, for the rate limiter's bandwidth bucket.
fn request_bytes(request: &Request) -> u64 {
    match &request.kind {
        RequestKind::Read { len, .. } | RequestKind::Write { len, .. } => u64::from(*len),
        _ => 0,
    }
}

fn write_id(
    memory: &GuestMemoryMmap,
    buffers: &[GuestBuffer],
    serial: &[u8; ID_BYTES],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut at = 0;
    for b in buffers {
        let len = (b.len as usize).min(ID_BYTES - at);
        memory.write_slice(&serial[at..at + len], b.addr)?;
        at += len;
    }
    Ok(())
}

impl Worker<'_> {
    /// Drains the queue, hands what it started to the kernel and returns
    /// what is already finished.
    fn drain(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
    ) -> Result<Drained, virtio_queue::Error> {
        let mut drained = drain_queue(queue, memory, |queue, head, chain| {
            let handled = self.handle(queue, memory, head, chain)?;
            if matches!(handled, Handled::PutBack | Handled::Yield) {
                return Ok(handled);
            }
            Ok(Handled::from(
                self.reap(queue, memory)? || handled == Handled::Returned,
            ))
        })?;
        if let Err(e) = self.backend.push_submissions() {
            kindling_devices::log_limited!(log::Level::Error, "virtio-blk: {e}");
        }
        // Operations that finished while they were handed over.
        if self.reap(queue, memory)? {
            drained.notify |= needs_interrupt(queue, memory)?;
        }
        Ok(drained)
    }

    /// Parses and starts one request; says whether it was already
    /// returned to the driver, or must wait in the available ring.
    fn handle(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        head: u16,
        chain: impl IntoIterator<Item = Descriptor>,
    ) -> Result<Handled, virtio_queue::Error> {
        if self.pass_bytes >= PASS_BYTE_BUDGET {
            return Ok(Handled::Yield);
        }
        self.start(queue, memory, head, chain)
            .map(|returned| match returned {
                Some(returned) => Handled::from(returned),
                None => Handled::PutBack,
            })
    }

    /// [`Worker::handle`], with `None` for a request the backend cannot
    /// take now.
    fn start(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        head: u16,
        chain: impl IntoIterator<Item = Descriptor>,
    ) -> Result<Option<bool>, virtio_queue::Error> {
        let request = match parse(memory, chain, &self.limits, self.scratch) {
            Ok(r) => r,
            Err(ParseError {
                error,
                status: Some(addr),
            }) => {
                log::debug!("virtio-blk: request {head} refused: {error}");
                finish(queue, memory, head, addr, error.status(), 1)?;
                return Ok(Some(true));
            }
            Err(ParseError {
                error,
                status: None,
            }) => {
                kindling_devices::log_limited!(
                    log::Level::Warn,
                    "virtio-blk: request {head} dropped: {error}"
                );
                queue.add_used(memory, head, 0)?;
                return Ok(Some(true));
            }
        };
        if let Some(code) = self.refusal(&request) {
            log::debug!("virtio-blk: request {head} refused with status {code}");
            finish(queue, memory, head, request.status, code, 1)?;
            return Ok(Some(true));
        }
        // The rate limiter: a refused request waits in the available ring
        // until the limiter's timer fires.
        if !self.throttle.admit(request_bytes(&request)) {
            return Ok(None);
        }
        self.pass_bytes += request_bytes(&request);
        let op = match &request.kind {
            RequestKind::Read {
                sector, buffers, ..
            } => BlockOp::Read {
                offset: sector * SECTOR_SIZE,
                buffers,
            },
            RequestKind::Write {
                sector, buffers, ..
            } => BlockOp::Write {
                offset: sector * SECTOR_SIZE,
                buffers,
            },
            RequestKind::Flush => BlockOp::Flush,
            RequestKind::Discard { ranges } => BlockOp::Discard { ranges },
            RequestKind::WriteZeroes { ranges } => BlockOp::WriteZeroes { ranges },
            RequestKind::GetId { buffers, .. } => {
                let code = match write_id(memory, buffers, self.serial) {
                    Ok(()) => status::OK,
                    Err(_) => status::IOERR,
                };
                finish(
                    queue,
                    memory,
                    head,
                    request.status,
                    code,
                    request.used_len(),
                )?;
                return Ok(Some(true));
            }
        };
        let Some(slot) = self.pending.get_mut(usize::from(head)) else {
            return Ok(Some(false));
        };
        if slot.is_some() {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio-blk: request {head} submitted again while in flight; dropped"
            );
            return Ok(Some(false));
        }
        *slot = Some(Pending {
            status: request.status,
            used_len: request.used_len(),
        });
        match self.backend.submit(memory, head, &op) {
            Ok(()) => Ok(Some(false)),
            // Completions will free space and wake the device up: the
            // request waits in the available ring until then.
            Err(BackendError::Busy) if self.backend.completion_event().is_some() => {
                *slot = None;
                *self.stalled = true;
                Ok(None)
            }
            Err(e) => {
                kindling_devices::log_limited!(log::Level::Warn, "virtio-blk: request {head}: {e}");
                *slot = None;
                finish(queue, memory, head, request.status, status::IOERR, 1)?;
                Ok(Some(true))
            }
        }
    }

    /// The status a valid request is refused with, if it is.
    fn refusal(&self, request: &Request) -> Option<u8> {
        if request.is_write() && self.read_only {
            return Some(status::IOERR);
        }
        let needs = match request.kind {
            RequestKind::Discard { .. } => blk::DISCARD,
            RequestKind::WriteZeroes { .. } => blk::WRITE_ZEROES,
            _ => 0,
        };
        (self.acked & needs != needs).then_some(status::UNSUPP)
    }

    /// Returns finished requests to the driver; returns whether there were
    /// any.
    fn reap(
        &mut self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
    ) -> Result<bool, virtio_queue::Error> {
        let mut any = false;
        while let Some(done) = self.backend.next_completion() {
            let Some(p) = self
                .pending
                .get_mut(usize::from(done.token))
                .and_then(Option::take)
            else {
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "virtio-blk: completion for request {} that is not in flight",
                    done.token
                );
                continue;
            };
            let (code, len) = match done.result {
                Ok(()) => (status::OK, p.used_len),
                Err(e) => {
                    kindling_devices::log_limited!(
                        log::Level::Warn,
                        "virtio-blk: request {}: {e}",
                        done.token
                    );
                    (status::IOERR, 1)
                }
            };
            finish(queue, memory, done.token, p.status, code, len)?;
            any = true;
        }
        Ok(any)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> DeviceType {
        DeviceType::Block
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        config::read(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // No writable field is offered (VIRTIO_BLK_F_CONFIG_WCE is not).
        log::debug!(
            "virtio-blk: {}-byte configuration write at {offset:#x} ignored",
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive(DeviceType::Block));
        }
        let active = Active::new(DeviceType::Block, activation, 1, &[0])?;
        self.pending = vec![None; usize::from(active.queues[0].size())];
        self.active = Some(active);
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        // No I/O may touch guest memory once the device lets go of it.
        self.backend.quiesce();
        self.active = None;
        self.pending.clear();
        self.stalled = false;
    }

    fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError> {
        if self.throttle.is_throttled() {
            // The limiter's timer takes the queue up again.
            return Ok(QueueProgress::Done);
        }
        let Some((active, mut worker)) = self.worker() else {
            return Ok(QueueProgress::Done);
        };
        active.run_queue(index, |queue, memory| worker.drain(queue, memory))
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| a.queues.as_slice())
    }
}

mod persist;
mod shutdown;
mod swap;
pub use swap::{BackendSwap, ReplaceBackendError};

#[cfg(test)]
mod tests;

pub use persist::BlockRestoreArgs;
