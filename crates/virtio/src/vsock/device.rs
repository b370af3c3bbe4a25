//! The vsock [`VirtioDevice`]: moves packets between the virtqueues and
//! the connection table ([`super::muxer`]), and puts the host sockets on
//! the event loop.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use event_manager::EventSet;
use kindling_devices::{DeviceEvents, EventRegistry};
use virtio_queue::{Queue, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::muxer::{port_path, Muxer, KICK_TOKEN, LISTENER_TOKEN, TIMER_TOKEN};
use super::packet::{Header, HEADER_SIZE};
use super::{
    VsockConfig, VsockError, CONNECT_TIMEOUT, EVENT_QUEUE, EVENT_TRANSPORT_RESET, MAX_PACKET_DATA,
    NUM_QUEUES, QUEUE_SIZE, RX_QUEUE, TX_QUEUE,
};
use crate::chain::collect_descriptors;
use crate::device::{ActivateError, Activation, Active, DeviceType, QueueProgress, VirtioDevice};
use crate::features;
use crate::queue::{drain_queue, Handled, QueueError, MAX_QUEUE_SIZE};

/// The longest path a Unix socket address holds (`sun_path` less its
/// NUL), and the room kept for the `_<port>` suffix of guest connections.
const SUN_PATH_MAX: usize = 107;
const PORT_SUFFIX_MAX: usize = "_4294967295".len();

/// What the device has seen, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VsockCounters {
    /// Packets taken from the TX queue.
    pub tx_packets: u64,
    /// Packets put on the RX queue.
    pub rx_packets: u64,
    /// Payload bytes sent to the guest.
    pub rx_bytes: u64,
    /// Resets sent to the guest.
    pub resets_sent: u64,
    /// Resets not queued because too many were waiting for RX buffers.
    pub dropped_resets: u64,
    /// Guest packets dropped without an answer (not addressed to the
    /// host, or from another CID).
    pub dropped_packets: u64,
    /// Guest packets that were malformed (descriptor layout, type,
    /// operation, length) and answered with a reset.
    pub malformed_packets: u64,
    /// Guest connections refused (no host listener, or too many
    /// connections).
    pub refused_connections: u64,
    /// Host connections closed before reaching the guest (a bad `CONNECT`
    /// line, or too many connections).
    pub rejected_host_connections: u64,
    /// Connections reset because the guest sent more than its credit.
    pub credit_overruns: u64,
    /// Host connections closed because the guest did not accept them in
    /// time.
    pub connect_timeouts: u64,
}

/// A virtio-vsock device backed by Unix sockets (Firecracker's protocol;
/// see the [module documentation](super)).
///
/// # Example
///
/// ```
/// use kindling_virtio::vsock::{Vsock, VsockConfig};
/// use kindling_virtio::{DeviceType, VirtioDevice};
///
/// let dir = std::env::temp_dir().join(format!("kindling-vsock-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let config = VsockConfig { guest_cid: 3, uds_path: dir.join("v.sock") };
/// let vsock = Vsock::new(&config).unwrap();
/// assert_eq!(vsock.device_type(), DeviceType::Vsock);
/// assert_eq!(vsock.queue_max_sizes().len(), 3);
/// // The path is taken while the device lives.
/// assert!(Vsock::new(&config).is_err());
/// drop(vsock);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct Vsock {
    config: VsockConfig,
    queue_sizes: [u16; NUM_QUEUES],
    muxer: Muxer,
    /// Wakes [`DeviceEvents::handle_event`] when a queue handler changed
    /// what the event loop must watch.
    kick: EventFd,
    /// Ticks while host connections wait for the guest.
    timer: TimerFd,
    timer_armed: bool,
    active: Option<Active>,
    /// A transport reset event is owed to the guest (after a restore).
    reset_event_pending: bool,
    scratch: Vec<u8>,
}

impl Vsock {
    /// A device for `config` with queues of [`QUEUE_SIZE`]; it listens on
    /// `config.uds_path` at once.
    pub fn new(config: &VsockConfig) -> Result<Self, VsockError> {
        Self::with_queue_sizes(config, [QUEUE_SIZE; NUM_QUEUES])
    }

    /// A device with the given queue sizes.
    pub fn with_queue_sizes(
        config: &VsockConfig,
        queue_sizes: [u16; NUM_QUEUES],
    ) -> Result<Self, VsockError> {
        if let Some(&bad) = queue_sizes
            .iter()
            .find(|&&s| s == 0 || s > MAX_QUEUE_SIZE || !s.is_power_of_two())
        {
            return Err(VsockError::InvalidQueueSize(bad));
        }
        let listener = listen(config)?;
        let kick = EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd)?;
        let timer = TimerFd::new().map_err(|e| VsockError::TimerFd(e.into()))?;
        Ok(Self {
            muxer: Muxer::new(config.guest_cid, config.uds_path.clone(), listener),
            config: config.clone(),
            queue_sizes,
            kick,
            timer,
            timer_armed: false,
            active: None,
            reset_event_pending: false,
            scratch: vec![0; MAX_PACKET_DATA as usize],
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VsockConfig {
        &self.config
    }

    /// The queue sizes offered.
    pub fn queue_sizes(&self) -> [u16; NUM_QUEUES] {
        self.queue_sizes
    }

    /// What the device has seen so far.
    pub fn counters(&self) -> VsockCounters {
        self.muxer.counters
    }

    /// Open connections, including host connections that have not sent
    /// their `CONNECT` line yet.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Guest data the device holds for host sockets that would block, over
    /// all connections: at most [`super::CONN_BUFFER_SIZE`] (plus an `OK`
    /// line) per connection.
    pub fn buffered_bytes(&self) -> usize {
        self.muxer.buffered_bytes()
    }

    /// The path a guest connection to host `port` reaches:
    /// `<uds_path>_<port>`.
    pub fn host_port_path(&self, port: u32) -> PathBuf {
        port_path(&self.config.uds_path, port)
    }

    /// Marks a transport reset event as owed to the guest (done by the
    /// restore path).
    pub(crate) fn owe_reset_event(&mut self) {
        self.reset_event_pending = true;
    }

    /// Wakes the event handler, which applies fd changes.
    fn wake(&self) {
        if let Err(e) = self.kick.write(1) {
            kindling_devices::log_limited!(
                log::Level::Error,
                "vsock: cannot wake the event handler: {e}"
            );
        }
    }

    /// Runs the timer while host connections wait for the guest, stops
    /// it otherwise.
    fn update_timer(&mut self) {
        let want = self.muxer.has_connecting();
        if want == self.timer_armed {
            return;
        }
        let tick = CONNECT_TIMEOUT / 4;
        let result = if want {
            self.timer.reset(tick, Some(tick))
        } else {
            self.timer.clear()
        };
        match result {
            Ok(()) => self.timer_armed = want,
            Err(e) => kindling_devices::log_limited!(
                log::Level::Error,
                "vsock: cannot set the connect timer: {e}"
            ),
        }
    }

    /// Fills RX buffers with what is waiting for the guest.
    fn fill_rx(&mut self) -> Result<QueueProgress, QueueError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(QueueProgress::Done);
        };
        let muxer = &mut self.muxer;
        let scratch = &mut self.scratch;
        active.run_queue(RX_QUEUE, |queue, memory| {
            drain_queue(queue, memory, |queue, head, mut chain| {
                if !muxer.has_rx() {
                    return Ok(Handled::PutBack);
                }
                let packet =
                    match VsockPacket::from_rx_virtq_chain(memory, &mut chain, MAX_PACKET_DATA) {
                        Ok(p) => p,
                        Err(e) => {
                            kindling_devices::log_limited!(
                                log::Level::Warn,
                                "vsock: unusable RX buffer: {e}"
                            );
                            muxer.counters.malformed_packets += 1;
                            queue.add_used(memory, head, 0)?;
                            return Ok(Handled::Returned);
                        }
                    };
                let room = packet.data_slice().map_or(0, |s| s.len());
                let room = room.min(scratch.len());
                let Some((header, len)) = muxer.next_rx(&mut scratch[..room]) else {
                    return Ok(Handled::PutBack);
                };
                let header = Header {
                    len: len as u32,
                    ..header
                };
                let mut written = packet
                    .header_slice()
                    .write_slice(&header.encode(), 0)
                    .is_ok();
                if len > 0 {
                    written &= packet
                        .data_slice()
                        .is_some_and(|s| s.write_slice(&scratch[..len], 0).is_ok());
                }
                if !written {
                    // The buffer checked out but could not be written:
                    // the packet is lost; its stream is now corrupt.
                    kindling_devices::log_limited!(
                        log::Level::Error,
                        "vsock: cannot write an RX packet into guest memory"
                    );
                }
                muxer.counters.rx_packets += 1;
                queue.add_used(memory, head, (HEADER_SIZE + len) as u32)?;
                Ok(Handled::Returned)
            })
        })
    }

    /// Takes the guest's packets off the TX queue.
    fn drain_tx(&mut self) -> Result<QueueProgress, QueueError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(QueueProgress::Done);
        };
        let muxer = &mut self.muxer;
        let scratch = &mut self.scratch;
        active.run_queue(TX_QUEUE, |queue, memory| {
            drain_queue(queue, memory, |queue, head, mut chain| {
                let mut first = chain.clone();
                match VsockPacket::from_tx_virtq_chain(memory, &mut chain, MAX_PACKET_DATA) {
                    Ok(packet) => {
                        let mut bytes = [0u8; HEADER_SIZE];
                        let header = packet
                            .header_slice()
                            .read_slice(&mut bytes, 0)
                            .ok()
                            .and_then(|()| Header::decode(&bytes).ok());
                        let len = header.map_or(0, |h| h.len as usize).min(scratch.len());
                        let data_ok = len == 0
                            || packet.data_slice().is_some_and(|s| {
                                s.len() >= len && s.read_slice(&mut scratch[..len], 0).is_ok()
                            });
                        match header {
                            Some(h) if data_ok => muxer.on_guest_packet(&h, &scratch[..len]),
                            _ => muxer.on_malformed_packet(header.as_ref()),
                        }
                    }
                    Err(e) => {
                        // A layout the device does not take (a payload
                        // over several descriptors, say): the stream it
                        // belongs to cannot go on.
                        log::debug!("vsock: malformed TX packet: {e}");
                        let mut bytes = [0u8; HEADER_SIZE];
                        let header = first
                            .next()
                            .filter(|d| !d.is_write_only() && d.len() as usize >= HEADER_SIZE)
                            .and_then(|d| memory.read_slice(&mut bytes, d.addr()).ok())
                            .and_then(|()| Header::decode(&bytes).ok());
                        muxer.on_malformed_packet(header.as_ref());
                    }
                }
                queue.add_used(memory, head, 0)?;
                Ok(true)
            })
        })
    }

    /// Puts a transport reset event on the event queue, if one is owed
    /// and the guest gave a buffer.
    fn deliver_reset_event(&mut self) -> Result<QueueProgress, QueueError> {
        if !self.reset_event_pending {
            return Ok(QueueProgress::Done);
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(QueueProgress::Done);
        };
        let pending = &mut self.reset_event_pending;
        let mut descriptors = Vec::new();
        active.run_queue(EVENT_QUEUE, |queue, memory| {
            drain_queue(queue, memory, |queue, head, chain| {
                if !*pending {
                    return Ok(Handled::PutBack);
                }
                let mut used = 0;
                if collect_descriptors(chain, &mut descriptors).is_ok() {
                    if let Some(d) = descriptors
                        .first()
                        .filter(|d| d.is_write_only() && d.len() >= 4)
                    {
                        if memory
                            .write_slice(&EVENT_TRANSPORT_RESET.to_le_bytes(), d.addr())
                            .is_ok()
                        {
                            used = 4;
                            *pending = false;
                        }
                    }
                }
                queue.add_used(memory, head, used)?;
                Ok(Handled::Returned)
            })
        })
    }

    /// After queue work: closes finished connections and wakes the event
    /// handler if fds must change.
    fn after_queue_work(&mut self, rx: Result<QueueProgress, QueueError>) {
        self.muxer.reap_finished();
        let more = match rx {
            Ok(p) => p == QueueProgress::MoreWork,
            Err(e) => {
                kindling_devices::log_limited!(log::Level::Error, "vsock: {e}");
                false
            }
        };
        if more || self.muxer.needs_sync() || (self.muxer.has_rx() && self.active.is_some()) {
            self.wake();
        }
        self.update_timer();
    }
}

/// Checks `config` and binds its listener.
fn listen(config: &VsockConfig) -> Result<UnixListener, VsockError> {
    let cid = config.guest_cid;
    if cid < 3 || cid >= u64::from(u32::MAX) {
        return Err(VsockError::InvalidCid(cid));
    }
    let path = &config.uds_path;
    if path.as_os_str().len() + PORT_SUFFIX_MAX > SUN_PATH_MAX {
        return Err(VsockError::PathTooLong(path.clone()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    if !dir.is_dir() {
        return Err(VsockError::MissingDirectory {
            path: path.clone(),
            dir,
        });
    }
    if fs::symlink_metadata(path).is_ok() {
        return Err(VsockError::AlreadyExists(path.clone()));
    }
    let listener = UnixListener::bind(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            VsockError::AlreadyExists(path.clone())
        } else {
            VsockError::Listen {
                path: path.clone(),
                source,
            }
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| VsockError::Listen {
            path: path.clone(),
            source,
        })?;
    Ok(listener)
}

impl Drop for Vsock {
    fn drop(&mut self) {
        // The socket file is ours: remove it so the path can be used again
        // (by a restored VM, say).
        let _ = fs::remove_file(&self.config.uds_path);
    }
}

impl DeviceEvents for Vsock {
    fn register_events(&mut self, ops: &mut EventRegistry<'_>) {
        for (fd, token, what) in [
            (self.muxer.listener.as_raw_fd(), LISTENER_TOKEN, "listener"),
            (self.kick.as_raw_fd(), KICK_TOKEN, "eventfd"),
            (self.timer.as_raw_fd(), TIMER_TOKEN, "timer"),
        ] {
            if let Err(e) = ops.add(fd, token, EventSet::IN) {
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "vsock: cannot watch the {what}: {e}"
                );
            }
        }
        self.muxer.sync(ops);
    }

    fn handle_event(&mut self, token: u32, events: EventSet, ops: &mut EventRegistry<'_>) {
        match token {
            LISTENER_TOKEN => self.muxer.accept(),
            KICK_TOKEN => {
                let _ = self.kick.read();
            }
            TIMER_TOKEN => {
                if let Err(e) = self.timer.wait() {
                    kindling_devices::log_limited!(log::Level::Warn, "vsock: connect timer: {e}");
                }
                self.muxer.expire_connecting(std::time::Instant::now());
            }
            _ => self.muxer.on_host_event(token, events),
        }
        self.muxer.reap_finished();
        let mut rx = self.fill_rx();
        // Connections the pass finished (end of file met, shutdown sent)
        // owe the guest a reset: send it now if buffers are left.
        self.muxer.reap_finished();
        if rx.as_ref().is_ok_and(|p| *p == QueueProgress::Done) && self.muxer.has_rx() {
            rx = self.fill_rx();
        }
        self.muxer.sync(ops);
        self.update_timer();
        match rx {
            Ok(QueueProgress::MoreWork) => self.wake(),
            Ok(QueueProgress::Done) => {}
            Err(e) => kindling_devices::log_limited!(log::Level::Error, "vsock: {e}"),
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> DeviceType {
        DeviceType::Vsock
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        features::COMMON
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        let config = self.config.guest_cid.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|at| config.get(usize::try_from(at).ok()?))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The guest CID is read-only.
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive(DeviceType::Vsock));
        }
        self.active = Some(Active::new(
            DeviceType::Vsock,
            activation,
            NUM_QUEUES,
            &[RX_QUEUE, TX_QUEUE],
        )?);
        if let Err(e) = self.deliver_reset_event() {
            kindling_devices::log_limited!(log::Level::Error, "vsock: {e}");
        }
        // Host connections may be waiting for the guest.
        self.wake();
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.muxer.close_all();
        self.wake();
    }

    fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError> {
        if self.active.is_none() {
            return Ok(QueueProgress::Done);
        }
        match index {
            RX_QUEUE => {
                // New RX buffers: the subscriber comes back on MoreWork.
                let rx = self.fill_rx();
                self.after_queue_work(Ok(QueueProgress::Done));
                rx
            }
            TX_QUEUE => {
                let tx = self.drain_tx();
                let rx = self.fill_rx();
                self.after_queue_work(rx);
                tx
            }
            EVENT_QUEUE => self.deliver_reset_event(),
            _ => Err(QueueError::NoSuchQueue { index }),
        }
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| a.queues.as_slice())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::interrupt::tests::CountingLine;
    use crate::queue::tests::memory;
    use crate::vsock::packet::{Op, HOST_CID, TYPE_STREAM};
    use crate::vsock::CONN_BUFFER_SIZE;
    use crate::QueueConfig;
    use crate::{GuestMemoryMmap, VirtioInterrupt};
    use std::io::Read;
    use std::sync::Arc;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::{AvailRing, DescriptorTable, UsedRing};
    use vm_memory::GuestAddress;

    pub(crate) const SIZE: u16 = 16;

    /// The driver side of one queue: descriptors at `base`, the available
    /// ring at `base + 0x400`, the used ring at `base + 0x800`
    /// (`MockSplitQueue::create` lays the used ring over the available
    /// one).
    pub(crate) struct Ring<'a> {
        desc: DescriptorTable<'a, GuestMemoryMmap>,
        avail: AvailRing<'a, GuestMemoryMmap>,
        used: UsedRing<'a, GuestMemoryMmap>,
        config: QueueConfig,
        next_desc: u16,
    }

    impl<'a> Ring<'a> {
        pub(crate) fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
            let config = QueueConfig {
                max_size: SIZE,
                size: SIZE,
                ready: true,
                desc_table: base,
                avail_ring: base + 0x400,
                used_ring: base + 0x800,
            };
            Self {
                desc: DescriptorTable::new(mem, GuestAddress(config.desc_table), SIZE),
                avail: AvailRing::new(mem, GuestAddress(config.avail_ring), SIZE),
                used: UsedRing::new(mem, GuestAddress(config.used_ring), SIZE),
                config,
                next_desc: 0,
            }
        }

        pub(crate) fn queue(&self, mem: &GuestMemoryMmap) -> Queue {
            self.config.to_queue(mem, false).unwrap()
        }

        /// Makes a chain of (address, length, device-writable) buffers
        /// available; returns its head.
        pub(crate) fn add(&mut self, buffers: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc;
            for (i, &(addr, len, write)) in buffers.iter().enumerate() {
                let index = (head + i as u16) % SIZE;
                let last = i + 1 == buffers.len();
                let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = (index + 1) % SIZE;
                self.desc
                    .store(
                        index,
                        RawDescriptor::from(Descriptor::new(addr, len, flags, next)),
                    )
                    .unwrap();
            }
            self.next_desc = (head + buffers.len() as u16) % SIZE;
            let idx = self.avail.idx().load();
            self.avail
                .ring()
                .ref_at(usize::from(idx % SIZE))
                .unwrap()
                .store(head);
            self.avail.idx().store(idx.wrapping_add(1));
            head
        }

        /// The used entries so far: (head, length).
        pub(crate) fn used(&self) -> Vec<(u32, u32)> {
            let n = self.used.idx().load();
            (0..n)
                .map(|i| {
                    let e = self
                        .used
                        .ring()
                        .ref_at(usize::from(i % SIZE))
                        .unwrap()
                        .load();
                    (e.id(), e.len())
                })
                .collect()
        }
    }

    pub(crate) struct Fixture<'a> {
        pub(crate) mem: &'a GuestMemoryMmap,
        pub(crate) rx: Ring<'a>,
        pub(crate) tx: Ring<'a>,
        pub(crate) ev: Ring<'a>,
        pub(crate) line: Arc<CountingLine>,
    }

    impl<'a> Fixture<'a> {
        pub(crate) fn new(mem: &'a GuestMemoryMmap) -> Self {
            Self {
                mem,
                rx: Ring::new(mem, 0x1000),
                tx: Ring::new(mem, 0x4000),
                ev: Ring::new(mem, 0x7000),
                line: Arc::new(CountingLine::default()),
            }
        }

        pub(crate) fn activation(&self) -> Activation {
            Activation {
                memory: self.mem.clone(),
                interrupt: VirtioInterrupt::new(self.line.clone()),
                queues: vec![
                    self.rx.queue(self.mem),
                    self.tx.queue(self.mem),
                    self.ev.queue(self.mem),
                ],
                acked_features: features::COMMON,
            }
        }

        /// Sends a packet from the guest (header at 0x10000, payload at
        /// 0x20000).
        fn send(&mut self, vsock: &mut Vsock, header: Header, data: &[u8]) {
            let header = Header {
                len: data.len() as u32,
                ..header
            };
            self.mem
                .write_slice(&header.encode(), GuestAddress(0x10000))
                .unwrap();
            if data.is_empty() {
                self.tx.add(&[(0x10000, HEADER_SIZE as u32, false)]);
            } else {
                self.mem.write_slice(data, GuestAddress(0x20000)).unwrap();
                self.tx.add(&[
                    (0x10000, HEADER_SIZE as u32, false),
                    (0x20000, data.len() as u32, false),
                ]);
            }
            vsock.process_queue(TX_QUEUE).unwrap();
        }

        /// Posts an RX buffer (4 KiB at 0x40000 + 0x1000 * slot).
        fn post_rx(&mut self, vsock: &mut Vsock, slot: u64) {
            self.rx.add(&[(0x40000 + 0x1000 * slot, 0x1000, true)]);
            vsock.process_queue(RX_QUEUE).unwrap();
        }

        /// The header in RX buffer `slot`.
        fn rx_header(&self, slot: u64) -> Header {
            let mut b = [0u8; HEADER_SIZE];
            self.mem
                .read_slice(&mut b, GuestAddress(0x40000 + 0x1000 * slot))
                .unwrap();
            Header::decode(&b).unwrap()
        }
    }

    fn guest(op: Op, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op: op.value(),
            buf_alloc: 0x10000,
            ..Header::default()
        }
    }

    pub(crate) fn device(tag: &str) -> (Vsock, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("kindling-vsock-unit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let config = VsockConfig {
            guest_cid: 3,
            uds_path: dir.join("v.sock"),
        };
        (Vsock::with_queue_sizes(&config, [SIZE; 3]).unwrap(), dir)
    }

    #[test]
    fn config_space_holds_the_guest_cid() {
        let (vsock, dir) = device("config");
        let mut b = [0xffu8; 8];
        vsock.read_config(0, &mut b);
        assert_eq!(b, 3u64.to_le_bytes());
        let mut b = [0xffu8; 4];
        vsock.read_config(6, &mut b);
        assert_eq!(b, [0; 4]);
        vsock.read_config(u64::MAX, &mut b);
        assert_eq!(b, [0; 4]);
        assert_eq!(vsock.device_features(), features::COMMON);
        assert_eq!(vsock.host_port_path(52), dir.join("v.sock_52"));
        drop(vsock);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_queue_sizes_and_cids_are_refused() {
        let config = VsockConfig {
            guest_cid: u64::from(u32::MAX),
            uds_path: "/nonexistent/v.sock".into(),
        };
        assert!(matches!(
            Vsock::new(&config),
            Err(VsockError::InvalidCid(0xffff_ffff))
        ));
        assert!(matches!(
            Vsock::with_queue_sizes(&config, [16, 3, 16]),
            Err(VsockError::InvalidQueueSize(3))
        ));
        let config = VsockConfig {
            guest_cid: 3,
            ..config
        };
        let e = Vsock::new(&config).unwrap_err();
        assert!(
            e.to_string()
                .contains("directory /nonexistent does not exist"),
            "{e}"
        );
    }

    #[test]
    fn a_request_to_a_port_nobody_listens_on_is_reset() {
        let mem = memory(0x10_0000);
        let mut f = Fixture::new(&mem);
        let (mut vsock, dir) = device("refused");
        vsock.activate(f.activation()).unwrap();
        assert!(vsock.activate(f.activation()).is_err());
        f.send(&mut vsock, guest(Op::Request, 1234, 99), &[]);
        assert_eq!(f.tx.used(), vec![(0, 0)]);
        f.post_rx(&mut vsock, 0);
        assert_eq!(f.rx.used(), vec![(0, HEADER_SIZE as u32)]);
        let h = f.rx_header(0);
        assert_eq!(
            (h.op, h.src_cid, h.dst_cid, h.src_port, h.dst_port),
            (Op::Rst.value(), HOST_CID, 3, 99, 1234)
        );
        let c = vsock.counters();
        assert_eq!(
            (c.refused_connections, c.resets_sent, c.rx_packets),
            (1, 1, 1)
        );
        // Packets for no connection are reset too, RSTs are not answered,
        // and misaddressed packets are dropped.
        f.send(&mut vsock, guest(Op::Rw, 1234, 99), b"x");
        f.send(&mut vsock, guest(Op::Rst, 1234, 99), &[]);
        f.send(
            &mut vsock,
            Header {
                src_cid: 9,
                ..guest(Op::Request, 1, 2)
            },
            &[],
        );
        f.post_rx(&mut vsock, 1);
        f.post_rx(&mut vsock, 2);
        assert_eq!(f.rx.used().len(), 2, "one reset for the RW, none else");
        assert_eq!(f.rx_header(1).op, Op::Rst.value());
        assert_eq!(vsock.counters().dropped_packets, 1);
        vsock.reset();
        assert!(!vsock.is_activated());
        drop(vsock);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn guest_data_reaches_the_host_and_an_overrun_resets_the_connection() {
        let mem = memory(0x10_0000);
        let mut f = Fixture::new(&mem);
        let (mut vsock, dir) = device("data");
        let listener = std::os::unix::net::UnixListener::bind(vsock.host_port_path(77)).unwrap();
        vsock.activate(f.activation()).unwrap();
        f.send(&mut vsock, guest(Op::Request, 5000, 77), &[]);
        let (mut host, _) = listener.accept().unwrap();
        f.post_rx(&mut vsock, 0);
        let h = f.rx_header(0);
        assert_eq!(
            (h.op, h.buf_alloc, h.fwd_cnt),
            (Op::Response.value(), CONN_BUFFER_SIZE, 0)
        );
        f.send(&mut vsock, guest(Op::Rw, 5000, 77), b"hello");
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(vsock.connection_count(), 1);
        // The host stops reading; a guest that ignores its credit is
        // reset once the device's buffer is full, and no more is kept.
        let chunk = vec![1u8; 0x8000];
        for i in 0..200 {
            f.send(&mut vsock, guest(Op::Rw, 5000, 77), &chunk);
            assert_eq!(vsock.counters().malformed_packets, 0, "packet {i}");
            assert!(vsock.buffered_bytes() <= CONN_BUFFER_SIZE as usize);
            if vsock.counters().credit_overruns > 0 {
                break;
            }
        }
        assert_eq!(
            vsock.counters().credit_overruns,
            1,
            "{:?}",
            vsock.counters()
        );
        assert_eq!(vsock.connection_count(), 0);
        assert_eq!(vsock.buffered_bytes(), 0);
        f.post_rx(&mut vsock, 1);
        assert_eq!(f.rx_header(1).op, Op::Rst.value());
        drop(vsock);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_payload_the_device_cannot_read_resets_its_stream() {
        let mem = memory(0x10_0000);
        let mut f = Fixture::new(&mem);
        let (mut vsock, dir) = device("fragmented");
        let listener = std::os::unix::net::UnixListener::bind(vsock.host_port_path(79)).unwrap();
        vsock.activate(f.activation()).unwrap();
        f.send(&mut vsock, guest(Op::Request, 5002, 79), &[]);
        let (_host, _) = listener.accept().unwrap();
        f.post_rx(&mut vsock, 0);
        assert_eq!(vsock.connection_count(), 1);
        // The payload over two descriptors.
        let h = Header {
            len: 8,
            ..guest(Op::Rw, 5002, 79)
        };
        mem.write_slice(&h.encode(), GuestAddress(0x10000)).unwrap();
        f.tx.add(&[
            (0x10000, HEADER_SIZE as u32, false),
            (0x20000, 4, false),
            (0x20004, 4, false),
        ]);
        vsock.process_queue(TX_QUEUE).unwrap();
        assert_eq!(vsock.counters().malformed_packets, 1);
        assert_eq!(vsock.connection_count(), 0);
        f.post_rx(&mut vsock, 1);
        assert_eq!(f.rx_header(1).op, Op::Rst.value());
        // A chain without even a header is only counted.
        f.tx.add(&[(0x10000, 8, false)]);
        vsock.process_queue(TX_QUEUE).unwrap();
        assert_eq!(vsock.counters().malformed_packets, 2);
        drop(vsock);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shutdown_from_both_sides_ends_with_a_reset() {
        let mem = memory(0x10_0000);
        let mut f = Fixture::new(&mem);
        let (mut vsock, dir) = device("shutdown");
        let listener = std::os::unix::net::UnixListener::bind(vsock.host_port_path(78)).unwrap();
        vsock.activate(f.activation()).unwrap();
        f.send(&mut vsock, guest(Op::Request, 5001, 78), &[]);
        let (mut host, _) = listener.accept().unwrap();
        f.post_rx(&mut vsock, 0);
        f.send(&mut vsock, guest(Op::CreditRequest, 5001, 78), &[]);
        f.post_rx(&mut vsock, 1);
        assert_eq!(f.rx_header(1).op, Op::CreditUpdate.value());
        f.send(
            &mut vsock,
            Header {
                flags: 3,
                ..guest(Op::Shutdown, 5001, 78)
            },
            &[],
        );
        f.post_rx(&mut vsock, 2);
        assert_eq!(f.rx_header(2).op, Op::Rst.value());
        assert_eq!(vsock.connection_count(), 0);
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        drop(vsock);
        fs::remove_dir_all(dir).unwrap();
    }
}
