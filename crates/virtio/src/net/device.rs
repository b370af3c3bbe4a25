//! The network device: the transmit queue goes to the TAP, the TAP goes
//! to the receive queue, each direction optionally rate-limited.

use std::io;
use std::os::fd::AsRawFd;

use event_manager::EventSet;
use kindling_devices::{DeviceEvents, EventRegistry};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::rx::{has_buffers, needs_rx_interrupt, place_frame, Placement, RxScratch};
use super::tap::{offload, Tap};
use super::tx::{parse_tx, TxFrame};
use super::{
    features as net, MacAddr, NetError, MAX_FRAME_LEN, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN,
};
use crate::device::{ActivateError, Activation, Active, DeviceType, QueueProgress, VirtioDevice};
use crate::queue::{drain_queue, Handled, QueueError, MAX_QUEUE_SIZE};
use crate::rate_limiter::{RateLimiterConfig, Throttle};
use crate::{features, GuestMemoryMmap};

/// Frames received per pass before the device lets other events run.
const RX_FRAMES_PER_PASS: usize = 64;

/// Tokens of the device's fds on the event loop.
const TAP_TOKEN: u32 = 0;
const KICK_TOKEN: u32 = 1;
const RX_TIMER_TOKEN: u32 = 2;
const TX_TIMER_TOKEN: u32 = 3;

/// How to create a network device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// The host TAP interface (Firecracker's `host_dev_name`).
    pub tap: String,
    /// The guest's MAC address (offered with `VIRTIO_NET_F_MAC`); without
    /// one the driver picks its own.
    pub mac: Option<MacAddr>,
    /// Each queue's maximum size (a power of two, at least 2).
    pub queue_size: u16,
    /// Limits on what the guest receives.
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Limits on what the guest sends.
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetConfig {
    /// A device on TAP `tap` with no fixed MAC, default queues and no
    /// limits.
    pub fn new(tap: impl Into<String>) -> Self {
        Self {
            tap: tap.into(),
            mac: None,
            queue_size: QUEUE_SIZE,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

/// What the device has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Their bytes (without the virtio header).
    pub rx_bytes: u64,
    /// Frames read from the TAP and not delivered: too large for the
    /// buffers, a malformed receive chain, a reset while held.
    pub rx_dropped: u64,
    /// Times reception stopped for the rate limiter.
    pub rx_throttled: u64,
    /// Frames the guest sent that reached the TAP.
    pub tx_frames: u64,
    /// Their bytes (without the virtio header).
    pub tx_bytes: u64,
    /// Transmit chains refused by the parser (malformed, too short, too
    /// large, bad header).
    pub tx_malformed: u64,
    /// Frames the TAP refused (an error from `writev`).
    pub tx_errors: u64,
    /// Times transmission stopped for the rate limiter.
    pub tx_throttled: u64,
}

/// The receive side's state.
#[derive(Debug)]
struct RxState {
    buf: Vec<u8>,
    /// A frame read from the TAP and not yet delivered: its length in
    /// `buf`, and whether the rate limiter already charged it.
    held: Option<(usize, bool)>,
    /// The TAP may have frames (it was readable and not read to EAGAIN).
    tap_readable: bool,
    scratch: RxScratch,
}

/// A virtio network device on a TAP interface.
///
/// # Example
///
/// ```no_run
/// use kindling_virtio::net::{Net, NetConfig};
/// use kindling_virtio::VirtioDevice;
///
/// let mut config = NetConfig::new("tap0");
/// config.mac = Some("06:00:ac:10:00:02".parse().unwrap());
/// let net = Net::new(&config).unwrap();
/// let mut mac = [0u8; 6];
/// net.read_config(0, &mut mac);
/// assert_eq!(mac, [6, 0, 0xac, 0x10, 0, 2]);
/// ```
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    config: NetConfig,
    pub(super) features: u64,
    queue_sizes: [u16; 2],
    active: Option<Active>,
    rx: RxState,
    tx_frame: TxFrame,
    tx_scratch: Vec<Descriptor>,
    /// The iovecs of the frame being sent (reused: no allocation per frame).
    tx_iovecs: IovecBuf,
    rx_throttle: Throttle,
    tx_throttle: Throttle,
    kick: EventFd,
    counters: NetCounters,
}

fn offered_features(mac: bool) -> u64 {
    let mut f = features::COMMON
        | net::CSUM
        | net::GUEST_CSUM
        | net::GUEST_TSO4
        | net::GUEST_TSO6
        | net::GUEST_UFO
        | net::HOST_TSO4
        | net::HOST_TSO6
        | net::HOST_UFO
        | net::MRG_RXBUF;
    if mac {
        f |= net::MAC;
    }
    f
}

/// The TAP offloads matching what the driver accepted.
fn tap_offloads(acked: u64) -> u32 {
    let mut flags = 0;
    if acked & net::GUEST_CSUM != 0 {
        flags |= offload::CSUM;
        if acked & net::GUEST_TSO4 != 0 {
            flags |= offload::TSO4;
        }
        if acked & net::GUEST_TSO6 != 0 {
            flags |= offload::TSO6;
        }
        if acked & net::GUEST_UFO != 0 {
            flags |= offload::UFO;
        }
    }
    flags
}

impl Net {
    /// Attaches to `config.tap`.
    pub fn new(config: &NetConfig) -> Result<Self, NetError> {
        check_queue_size(config.queue_size)?;
        let tap = Tap::open(&config.tap)?;
        Self::with_tap(tap, config)
    }

    /// Uses `tap`, already open (an fd handed in); `config.tap` is only
    /// recorded.
    pub fn with_tap(tap: Tap, config: &NetConfig) -> Result<Self, NetError> {
        check_queue_size(config.queue_size)?;
        let throttle = |config: Option<&RateLimiterConfig>, what| {
            Throttle::new(config).map_err(|source| NetError::EventFd { what, source })
        };
        Ok(Self {
            tap,
            features: offered_features(config.mac.is_some()),
            queue_sizes: [config.queue_size; 2],
            active: None,
            rx: RxState {
                buf: vec![0u8; VNET_HDR_LEN + MAX_FRAME_LEN],
                held: None,
                tap_readable: true,
                scratch: RxScratch::default(),
            },
            tx_frame: TxFrame::default(),
            tx_scratch: Vec::new(),
            tx_iovecs: IovecBuf::default(),
            rx_throttle: throttle(
                config.rx_rate_limiter.as_ref(),
                "receive rate-limiter timerfd",
            )?,
            tx_throttle: throttle(
                config.tx_rate_limiter.as_ref(),
                "transmit rate-limiter timerfd",
            )?,
            kick: EventFd::new(EFD_NONBLOCK).map_err(|source| NetError::EventFd {
                what: "receive eventfd",
                source,
            })?,
            counters: NetCounters::default(),
            config: config.clone(),
        })
    }

    /// The configuration the device was created with (with the limits in
    /// force now).
    pub fn config(&self) -> NetConfig {
        NetConfig {
            rx_rate_limiter: self.rx_throttle.config(),
            tx_rate_limiter: self.tx_throttle.config(),
            ..self.config.clone()
        }
    }

    /// The frame read from the TAP and not yet delivered (virtio header
    /// included), and whether the rate limiter charged it.
    pub(super) fn held_frame(&self) -> Option<(&[u8], bool)> {
        self.rx
            .held
            .map(|(len, charged)| (&self.rx.buf[..len], charged))
    }

    /// Holds `bytes` (a frame with its virtio header, at most
    /// `VNET_HDR_LEN + MAX_FRAME_LEN` bytes) for delivery before anything
    /// else the TAP has.
    pub(super) fn hold_frame(&mut self, bytes: &[u8], charged: bool) {
        let len = bytes.len().min(self.rx.buf.len());
        self.rx.buf[..len].copy_from_slice(&bytes[..len]);
        self.rx.held = Some((len, charged));
    }

    /// The TAP interface's name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// The counters so far.
    pub fn counters(&self) -> NetCounters {
        NetCounters {
            rx_throttled: self.rx_throttle.refusals(),
            tx_throttled: self.tx_throttle.refusals(),
            ..self.counters
        }
    }

    /// Changes the rate limits while running (Firecracker's
    /// `PATCH /network-interfaces/{id}`): a bucket given replaces the
    /// current one (a bucket of size 0 removes it), one not given stays.
    /// A queue stopped by the old limits is taken up again at once
    /// (through its timer, on the event loop).
    pub fn update_rate_limiters(
        &mut self,
        rx: Option<&RateLimiterConfig>,
        tx: Option<&RateLimiterConfig>,
    ) {
        if let Some(rx) = rx {
            self.rx_throttle.update(rx);
        }
        if let Some(tx) = tx {
            self.tx_throttle.update(tx);
        }
    }

    /// Asks the event loop to come back to the device (kick eventfd).
    fn wake(&self) {
        if let Err(e) = self.kick.write(1) {
            kindling_devices::log_limited!(
                log::Level::Error,
                "virtio-net: cannot signal the device's eventfd: {e}"
            );
        }
    }

    /// A rate limiter's timer fired: take its queue up again.
    fn on_timer(&mut self, token: u32) {
        if token == RX_TIMER_TOKEN {
            self.rx_throttle.on_timer();
            self.process_rx();
        } else {
            self.tx_throttle.on_timer();
            self.run_tx();
        }
    }

    /// [`Net::process_tx`] from the device's own events: more work comes
    /// back through the kick eventfd.
    fn run_tx(&mut self) {
        match self.process_tx() {
            Ok(QueueProgress::MoreWork) => self.wake(),
            Ok(QueueProgress::Done) => {}
            Err(e) => kindling_devices::log_limited!(log::Level::Error, "virtio-net: {e}"),
        }
    }

    /// Moves frames from the TAP to the receive queue, as many as the
    /// driver has buffers for, the limiter allows and the pass budget
    /// takes.
    fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if active.broken || self.rx_throttle.is_throttled() {
            return;
        }
        let mergeable = active.acked_features & net::MRG_RXBUF != 0;
        let Some(queue) = active.queues.get_mut(RX_QUEUE) else {
            return;
        };
        if !queue.ready() {
            return;
        }
        let memory = &active.memory;
        let old_used = queue.next_used();
        let result = rx_pass(
            queue,
            memory,
            &self.tap,
            &mut self.rx,
            &mut self.rx_throttle,
            &mut self.counters,
            mergeable,
        );
        let more = match result {
            Ok(more) => more,
            Err(source) => {
                active.broken = true;
                if let Err(e) = active.interrupt.signal_needs_reset() {
                    kindling_devices::log_limited!(
                        log::Level::Error,
                        "virtio-net: cannot raise the needs-reset interrupt: {e}"
                    );
                }
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "virtio-net: {}",
                    QueueError::Ring {
                        index: RX_QUEUE,
                        source
                    }
                );
                return;
            }
        };
        match needs_rx_interrupt(queue, memory, old_used) {
            Ok(true) => {
                if let Err(e) = active.interrupt.signal_used_queue() {
                    kindling_devices::log_limited!(
                        log::Level::Error,
                        "virtio-net: cannot raise the interrupt: {e}"
                    );
                }
            }
            Ok(false) => {}
            Err(e) => kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio-net: cannot read used_event: {e}"
            ),
        }
        if more {
            self.wake();
        }
    }

    /// Sends what the driver queued for transmission.
    fn process_tx(&mut self) -> Result<QueueProgress, QueueError> {
        if self.tx_throttle.is_throttled() {
            return Ok(QueueProgress::Done);
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(QueueProgress::Done);
        };
        let acked = active.acked_features;
        let tap = &self.tap;
        let frame = &mut self.tx_frame;
        let scratch = &mut self.tx_scratch;
        let iovecs = &mut self.tx_iovecs;
        let throttle = &mut self.tx_throttle;
        let counters = &mut self.counters;
        active.run_queue(TX_QUEUE, |queue, memory| {
            drain_queue(queue, memory, |queue, head, chain| {
                if let Err(e) = parse_tx(memory, chain, acked, scratch, frame) {
                    log::debug!("virtio-net: transmit chain {head} dropped: {e}");
                    counters.tx_malformed += 1;
                    queue.add_used(memory, head, 0)?;
                    return Ok(Handled::Returned);
                }
                if !throttle.admit(frame.frame_len as u64) {
                    return Ok(Handled::PutBack);
                }
                match write_frame(tap, memory, frame, iovecs) {
                    Ok(()) => {
                        counters.tx_frames += 1;
                        counters.tx_bytes += frame.frame_len as u64;
                    }
                    Err(e) => {
                        log::debug!("virtio-net: the TAP refused a frame: {e}");
                        counters.tx_errors += 1;
                    }
                }
                queue.add_used(memory, head, 0)?;
                Ok(Handled::Returned)
            })
        })
    }
}

/// The transmit path's reused `iovec` array. Its pointers are only
/// meaningful during one [`write_frame`]; between frames they are stale
/// and never read.
#[derive(Debug, Default)]
struct IovecBuf(Vec<libc::iovec>);

// SAFETY: the raw pointers are only dereferenced (by the kernel, in
// `writev`) during `write_frame`, on the thread that filled them, while the
// guest memory they point into is borrowed; moving the stale array to
// another thread between frames dereferences nothing.
unsafe impl Send for IovecBuf {}

/// Writes one parsed frame to the TAP, straight from guest memory, through
/// `iovecs` (cleared and refilled: kept by the device so that a frame
/// costs no allocation).
fn write_frame(
    tap: &Tap,
    memory: &GuestMemoryMmap,
    frame: &TxFrame,
    iovecs: &mut IovecBuf,
) -> io::Result<()> {
    let iovec_of = |slice: &vm_memory::VolatileSlice<'_, _>| libc::iovec {
        iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
        iov_len: slice.len(),
    };
    let iovecs = &mut iovecs.0;
    iovecs.clear();
    for &(addr, len) in &frame.buffers {
        // One lookup for a buffer inside one region (the usual case); a
        // buffer across regions is split.
        match memory.get_slice(addr, len) {
            Ok(slice) => iovecs.push(iovec_of(&slice)),
            Err(_) => {
                for slice in memory.get_slices(addr, len) {
                    iovecs.push(iovec_of(&slice.map_err(io::Error::other)?));
                }
            }
        }
    }
    // SAFETY: each iovec points into a region of `memory`, mmap'ed for as
    // long as `memory` lives (its pointer guards hold nothing to release),
    // and `memory` outlives the call; the guest may change the bytes
    // meanwhile, which only changes what it sends.
    let n = unsafe { tap.write_iovecs(iovecs.as_ptr(), iovecs.len()) }?;
    if n != VNET_HDR_LEN + frame.frame_len {
        return Err(io::Error::other(format!(
            "short write of {n} bytes for a {}-byte frame",
            frame.frame_len
        )));
    }
    Ok(())
}

/// One receive pass; returns whether work is left for another pass.
#[allow(clippy::too_many_arguments)]
fn rx_pass(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    tap: &Tap,
    rx: &mut RxState,
    throttle: &mut Throttle,
    counters: &mut NetCounters,
    mergeable: bool,
) -> Result<bool, virtio_queue::Error> {
    // While buffers last the driver need not notify the queue (each
    // notification is a VM exit); they are asked for again when the
    // buffers run out. (A no-op with event-idx, where `avail_event` is only
    // moved when they run out.)
    queue.disable_notification(memory)?;
    for _ in 0..RX_FRAMES_PER_PASS {
        let (len, paid) = match rx.held {
            Some(held) => held,
            None => {
                if !rx.tap_readable {
                    return Ok(false);
                }
                // Read only what can be delivered: with no buffer posted,
                // ask the driver to notify the queue and leave the frames
                // in the TAP.
                if !has_buffers(queue, memory)? && !queue.enable_notification(memory)? {
                    return Ok(false);
                }
                match tap.read_frame(&mut rx.buf) {
                    Ok(n) if n < VNET_HDR_LEN => {
                        kindling_devices::log_limited!(
                            log::Level::Warn,
                            "virtio-net: {n}-byte read from the TAP, shorter than the header"
                        );
                        counters.rx_dropped += 1;
                        continue;
                    }
                    Ok(n) => (n, false),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        rx.tap_readable = false;
                        return Ok(false);
                    }
                    Err(e) => {
                        kindling_devices::log_limited!(
                            log::Level::Error,
                            "virtio-net: reading the TAP: {e}"
                        );
                        rx.tap_readable = false;
                        return Ok(false);
                    }
                }
            }
        };
        rx.held = Some((len, paid));
        if !paid {
            if !throttle.admit((len - VNET_HDR_LEN) as u64) {
                return Ok(false);
            }
            rx.held = Some((len, true));
        }
        match place_frame(
            queue,
            memory,
            &mut rx.buf[..len],
            mergeable,
            &mut rx.scratch,
        )? {
            Placement::Placed { .. } => {
                counters.rx_frames += 1;
                counters.rx_bytes += (len - VNET_HDR_LEN) as u64;
            }
            Placement::NoBuffers => {
                // Come back when the driver posts buffers; if it did
                // meanwhile, go on.
                if queue.enable_notification(memory)? {
                    continue;
                }
                return Ok(false);
            }
            Placement::TooLarge | Placement::BadChain => {
                log::debug!("virtio-net: received frame of {len} bytes dropped");
                counters.rx_dropped += 1;
            }
        }
        rx.held = None;
    }
    Ok(true)
}

fn check_queue_size(q: u16) -> Result<(), NetError> {
    if !(2..=MAX_QUEUE_SIZE).contains(&q) || !q.is_power_of_two() {
        return Err(NetError::InvalidQueueSize(q));
    }
    Ok(())
}

/// The network device's own event sources: the TAP (edge-triggered), an
/// eventfd it signals to come back after a bounded pass, and the two
/// rate-limiter timers.
impl DeviceEvents for Net {
    fn register_events(&mut self, ops: &mut EventRegistry<'_>) {
        let fds = [
            (
                self.tap.as_raw_fd(),
                TAP_TOKEN,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ),
            (self.kick.as_raw_fd(), KICK_TOKEN, EventSet::IN),
            (self.rx_throttle.as_raw_fd(), RX_TIMER_TOKEN, EventSet::IN),
            (self.tx_throttle.as_raw_fd(), TX_TIMER_TOKEN, EventSet::IN),
        ];
        for (fd, token, events) in fds {
            if let Err(e) = ops.add(fd, token, events) {
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "virtio-net: cannot watch fd {fd} (token {token}): {e}"
                );
            }
        }
    }

    fn handle_event(&mut self, token: u32, events: EventSet, _ops: &mut EventRegistry<'_>) {
        match token {
            TAP_TOKEN => {
                if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    kindling_devices::log_limited!(
                        log::Level::Warn,
                        "virtio-net: TAP {} reports {events:?}",
                        self.tap.name()
                    );
                }
                self.rx.tap_readable = true;
                self.process_rx();
            }
            KICK_TOKEN => {
                let _ = self.kick.read();
                self.process_rx();
                self.run_tx();
            }
            RX_TIMER_TOKEN | TX_TIMER_TOKEN => self.on_timer(token),
            _ => kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio-net: event for token {token}, which is not registered"
            ),
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> DeviceType {
        DeviceType::Net
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6], then fields for features not
        // offered (status, max_virtqueue_pairs, mtu), which read as zero.
        let mac = self.config.mac.map(|m| m.bytes()).unwrap_or_default();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *byte = if at < 6 { mac[at as usize] } else { 0 };
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is read-only in virtio 1.x (no CTRL_MAC_ADDR).
        log::debug!(
            "virtio-net: {}-byte configuration write at {offset:#x} ignored",
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive(DeviceType::Net));
        }
        let active = Active::new(DeviceType::Net, activation, 2, &[])?;
        if let Err(e) = self.tap.set_offload(tap_offloads(active.acked_features)) {
            // The driver gets frames without offloads, which it accepts
            // too: go on.
            kindling_devices::log_limited!(log::Level::Error, "virtio-net: {e}");
        }
        self.active = Some(active);
        // Frames may be waiting in the TAP already.
        self.rx.tap_readable = true;
        self.wake();
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        if self.rx.held.take().is_some() {
            self.counters.rx_dropped += 1;
        }
        if let Err(e) = self.tap.set_offload(0) {
            kindling_devices::log_limited!(log::Level::Error, "virtio-net: {e}");
        }
    }

    fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError> {
        match index {
            RX_QUEUE => {
                self.process_rx();
                Ok(QueueProgress::Done)
            }
            TX_QUEUE => self.process_tx(),
            _ => Err(QueueError::NoSuchQueue { index }),
        }
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| a.queues.as_slice())
    }
}

#[cfg(test)]
pub(crate) mod tests;
