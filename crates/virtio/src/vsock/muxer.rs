//! The host side of the device: the listener, host connections waiting
//! for their `CONNECT` line, the connection table, and the packets the
//! guest sends and receives, all without virtqueues (the device moves
//! packets between them and this table).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use event_manager::EventSet;
use kindling_devices::{EventRegistry, MAX_DEVICE_TOKEN};

use super::connect::{ok_line, parse_connect_line, ConnectLine, MAX_CONNECT_LINE};
use super::connection::{Connection, Flush, State};
use super::packet::{
    classify, GuestPacket, Header, Op, Rejection, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND,
    TYPE_STREAM,
};
use super::{VsockCounters, CONNECT_TIMEOUT, FIRST_HOST_PORT, MAX_CONNECTIONS, MAX_PACKET_DATA};

/// The listener's token.
pub(crate) const LISTENER_TOKEN: u32 = 0;
/// The token of the device's wake-up eventfd.
pub(crate) const KICK_TOKEN: u32 = 1;
/// The token of the device's timer (the host-connect timeout).
pub(crate) const TIMER_TOKEN: u32 = 2;
/// The first token given to a host stream.
const FIRST_STREAM_TOKEN: u32 = 3;
/// Resets queued for packets that belong to no connection; past this,
/// more are dropped (a guest that posts no RX buffers while it sends junk
/// cannot grow the queue).
const MAX_QUEUED_RESETS: usize = 1024;
/// Host connections accepted per listener event.
const ACCEPTS_PER_EVENT: usize = 32;

/// A host connection that has not sent its `CONNECT` line yet.
#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Key of a connection: (host port, guest port).
type Key = (u32, u32);

/// What a stream token stands for.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Handshake,
    Connection(Key),
}

/// The connection table and the host sockets.
#[derive(Debug)]
pub(crate) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    pub(crate) listener: UnixListener,
    conns: HashMap<Key, Connection>,
    handshakes: HashMap<u32, Handshake>,
    slots: HashMap<u32, Slot>,
    /// Streams to take off the event loop and close.
    closing: Vec<UnixStream>,
    /// Resets for packets that belong to no connection.
    resets: VecDeque<Header>,
    next_token: u32,
    next_host_port: u32,
    round_robin: usize,
    pub(crate) counters: VsockCounters,
}

/// The reset that answers `h` (a packet from the guest).
fn reset_for(h: &Header) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: h.src_cid,
        src_port: h.dst_port,
        dst_port: h.src_port,
        type_: TYPE_STREAM,
        op: Op::Rst.value(),
        ..Header::default()
    }
}

/// `<uds_path>_<port>`.
pub(crate) fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut bytes = uds_path.as_os_str().to_owned().into_vec();
    bytes.extend(format!("_{port}").into_bytes());
    PathBuf::from(OsString::from_vec(bytes))
}

/// Connects to the Unix socket at `path` without blocking: a listener
/// whose backlog is full (it does not accept) refuses at once with
/// `EAGAIN` instead of stalling the event loop.
pub(crate) fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path does not fit a Unix socket address",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own; the stream closes
    // it when dropped (on the error paths below too).
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` covers the family
    // and the NUL-terminated path inside it.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

impl Muxer {
    pub(crate) fn new(guest_cid: u64, uds_path: PathBuf, listener: UnixListener) -> Self {
        Self {
            guest_cid,
            uds_path,
            listener,
            conns: HashMap::new(),
            handshakes: HashMap::new(),
            slots: HashMap::new(),
            closing: Vec::new(),
            resets: VecDeque::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_host_port: FIRST_HOST_PORT,
            round_robin: 0,
            counters: VsockCounters::default(),
        }
    }

    /// Connections and pending host connections.
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len() + self.handshakes.len()
    }

    /// Bytes held for host sockets that would block, over all
    /// connections.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.conns.values().map(Connection::buffered).sum()
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            let token = self.next_token;
            self.next_token = if token >= MAX_DEVICE_TOKEN {
                FIRST_STREAM_TOKEN
            } else {
                token + 1
            };
            if !self.slots.contains_key(&token) {
                return token;
            }
        }
    }

    fn alloc_host_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let port = self.next_host_port;
            self.next_host_port = port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.conns.contains_key(&(port, guest_port))
                && !self.conns.keys().any(|k| k.0 == port)
            {
                return port;
            }
        }
    }

    fn queue_reset(&mut self, h: &Header) {
        if self.resets.len() < MAX_QUEUED_RESETS {
            self.resets.push_back(reset_for(h));
        } else {
            self.counters.dropped_resets += 1;
        }
    }

    /// Ends a connection: a reset to the guest (unless it never heard of
    /// it), the stream closed.
    fn reset_connection(&mut self, key: Key) {
        if let Some(conn) = self.conns.remove(&key) {
            self.slots.remove(&conn.token);
            if conn.state == State::HostConnecting && conn.pending.request {
                self.closing.push(conn.stream);
                return;
            }
            let h = Header {
                src_cid: self.guest_cid,
                dst_cid: HOST_CID,
                src_port: conn.peer_port,
                dst_port: conn.local_port,
                ..Header::default()
            };
            self.queue_reset(&h);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            self.closing.push(conn.stream);
        }
    }

    /// Drops a connection without telling the guest (it sent a reset).
    fn drop_connection(&mut self, key: Key) {
        if let Some(conn) = self.conns.remove(&key) {
            self.slots.remove(&conn.token);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            self.closing.push(conn.stream);
        }
    }

    /// Closes every connection the guest knows about (device reset or
    /// restore): host peers see their socket closed; nothing is sent to
    /// the guest. Host connections the guest has not heard of yet (still
    /// sending their `CONNECT` line, or with their REQUEST not delivered)
    /// stay: the driver resets the device when it starts, and a host
    /// process may well have connected before that.
    pub(crate) fn close_all(&mut self) {
        let keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| !(c.state == State::HostConnecting && c.pending.request))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.drop_connection(key);
        }
        self.resets.clear();
    }

    /// Handles one packet from the guest, with its payload.
    pub(crate) fn on_guest_packet(&mut self, header: &Header, data: &[u8]) {
        self.counters.tx_packets += 1;
        let GuestPacket { header: h, op } = match classify(header, self.guest_cid, MAX_PACKET_DATA)
        {
            Ok(p) => p,
            Err(Rejection::Drop(e)) => {
                log::debug!("vsock: dropping a guest packet: {e}");
                self.counters.dropped_packets += 1;
                return;
            }
            Err(Rejection::Reset(e)) => {
                log::debug!("vsock: resetting a guest packet: {e}");
                self.counters.malformed_packets += 1;
                if header.op != Op::Rst.value() {
                    self.queue_reset(header);
                }
                return;
            }
        };
        let key = (h.dst_port, h.src_port);
        if op == Op::Request {
            self.guest_connect(&h);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if op != Op::Rst {
                self.queue_reset(&h);
            }
            return;
        };
        conn.update_peer_credit(&h);
        match op {
            // Handled before the lookup.
            Op::Request => {}
            Op::Rst => self.drop_connection(key),
            Op::Response => {
                if conn.state != State::HostConnecting {
                    self.reset_connection(key);
                    return;
                }
                conn.state = State::Established;
                let line = ok_line(conn.local_port);
                if conn.queue_to_host_control(&line).is_err()
                    || matches!(conn.flush_to_host(), Flush::Failed(_))
                {
                    self.reset_connection(key);
                }
            }
            Op::Rw => {
                if conn.state != State::Established || conn.guest_done_sending {
                    self.reset_connection(key);
                    return;
                }
                if conn
                    .queue_to_host(&data[..data.len().min(h.len as usize)])
                    .is_err()
                {
                    kindling_devices::log_limited!(
                        log::Level::Warn,
                        "vsock: guest port {} overran its credit to host port {}: reset",
                        h.src_port,
                        h.dst_port
                    );
                    self.counters.credit_overruns += 1;
                    self.reset_connection(key);
                    return;
                }
                if let Flush::Failed(kind) = conn.flush_to_host() {
                    log::debug!("vsock: host socket write failed ({kind:?}): reset");
                    self.reset_connection(key);
                }
            }
            Op::CreditUpdate => {}
            Op::CreditRequest => conn.pending.credit_update = true,
            Op::Shutdown => {
                conn.guest_shutdown(h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND));
                if let Flush::Failed(_) = conn.flush_to_host() {
                    self.reset_connection(key);
                }
            }
        }
    }

    /// A guest packet the device could not read whole (its header, if
    /// readable, says which stream it belonged to): that stream is reset.
    pub(crate) fn on_malformed_packet(&mut self, header: Option<&Header>) {
        self.counters.tx_packets += 1;
        self.counters.malformed_packets += 1;
        let Some(h) = header else {
            return;
        };
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            return;
        }
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) {
            self.reset_connection(key);
        } else if h.op != Op::Rst.value() {
            self.queue_reset(h);
        }
    }

    /// A guest REQUEST to host port `h.dst_port`.
    fn guest_connect(&mut self, h: &Header) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) {
            // A second REQUEST on a live connection: the guest lost
            // track of it; end both.
            self.reset_connection(key);
            self.queue_reset(h);
            return;
        }
        if self.connection_count() >= MAX_CONNECTIONS {
            self.counters.refused_connections += 1;
            self.queue_reset(h);
            return;
        }
        let path = port_path(&self.uds_path, h.dst_port);
        let stream = match connect_nonblocking(&path) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("vsock: guest connection to {}: {e}", path.display());
                self.counters.refused_connections += 1;
                self.queue_reset(h);
                return;
            }
        };
        let token = self.alloc_token();
        let mut conn = Connection::new(stream, token, h.dst_port, h.src_port, State::Established);
        conn.update_peer_credit(h);
        conn.pending.response = true;
        self.slots.insert(token, Slot::Connection(key));
        self.conns.insert(key, conn);
    }

    /// Accepts host connections (at most a few per call).
    pub(crate) fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    kindling_devices::log_limited!(
                        log::Level::Warn,
                        "vsock: accept on {}: {e}",
                        self.uds_path.display()
                    );
                    return;
                }
            };
            if self.connection_count() >= MAX_CONNECTIONS {
                self.counters.rejected_host_connections += 1;
                continue; // dropped: closed
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.alloc_token();
            self.slots.insert(token, Slot::Handshake);
            self.handshakes.insert(
                token,
                Handshake {
                    stream,
                    line: Vec::with_capacity(MAX_CONNECT_LINE),
                },
            );
        }
    }

    /// An event on a host stream.
    pub(crate) fn on_host_event(&mut self, token: u32, events: EventSet) {
        match self.slots.get(&token).copied() {
            None => log::debug!("vsock: event for unknown token {token}"),
            Some(Slot::Handshake) => self.on_handshake_event(token),
            Some(Slot::Connection(key)) => self.on_connection_event(key, events),
        }
    }

    fn close_handshake(&mut self, token: u32) {
        if let Some(hs) = self.handshakes.remove(&token) {
            self.slots.remove(&token);
            self.closing.push(hs.stream);
        }
    }

    fn on_handshake_event(&mut self, token: u32) {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return;
        };
        // One byte at a time: nothing after the newline is consumed (the
        // host must wait for `OK` before it sends data anyway).
        let port = loop {
            let mut byte = [0u8; 1];
            match hs.stream.read(&mut byte) {
                Ok(0) => {
                    self.close_handshake(token);
                    return;
                }
                Ok(_) => hs.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_handshake(token);
                    return;
                }
            }
            match parse_connect_line(&hs.line) {
                Ok(ConnectLine::Incomplete) => {}
                Ok(ConnectLine::Connect { port, .. }) => break port,
                Err(e) => {
                    log::debug!("vsock: host connection closed: {e}");
                    self.counters.rejected_host_connections += 1;
                    self.close_handshake(token);
                    return;
                }
            }
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return;
        };
        let local_port = self.alloc_host_port(port);
        let key = (local_port, port);
        let mut conn = Connection::new(hs.stream, token, local_port, port, State::HostConnecting);
        // Registered for IN as a handshake; the next sync adjusts it.
        conn.interest = Some(EventSet::IN);
        conn.pending.request = true;
        self.slots.insert(token, Slot::Connection(key));
        self.conns.insert(key, conn);
    }

    fn on_connection_event(&mut self, key: Key, events: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events.contains(EventSet::ERROR) {
            self.reset_connection(key);
            return;
        }
        if conn.state == State::HostConnecting {
            // The host must wait for `OK`: data or a hang-up before it
            // ends the attempt.
            self.reset_connection(key);
            return;
        }
        if events.contains(EventSet::HANG_UP) {
            // Read what is left, then end of file; the stream stays off
            // the event loop from now on (a hung-up socket is always
            // ready).
            conn.hung_up = true;
            conn.readable = true;
        }
        if events.contains(EventSet::IN) {
            conn.readable = true;
        }
        if events.contains(EventSet::OUT) || conn.hung_up {
            if let Flush::Failed(_) = conn.flush_to_host() {
                self.reset_connection(key);
            }
        }
    }

    /// Whether some packet is waiting for the guest.
    pub(crate) fn has_rx(&self) -> bool {
        !self.resets.is_empty() || self.conns.values().any(Connection::has_rx)
    }

    /// The next packet for the guest: its header, and for RW its payload
    /// in `buf[..len]`. `buf` empty: control packets only.
    pub(crate) fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.resets.pop_front() {
            self.counters.resets_sent += 1;
            return Some((
                Header {
                    dst_cid: self.guest_cid,
                    ..h
                },
                0,
            ));
        }
        let mut keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.has_rx())
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        let n = keys.len();
        for i in 0..n {
            let key = keys[(self.round_robin + i) % n];
            let cid = self.guest_cid;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            if let Some((op, flags)) = conn.take_control() {
                self.round_robin = self.round_robin.wrapping_add(1);
                return Some((conn.header(cid, op, 0, flags), 0));
            }
            let shutdown = conn.take_shutdown();
            if shutdown != 0 {
                self.round_robin = self.round_robin.wrapping_add(1);
                return Some((conn.header(cid, Op::Shutdown, 0, shutdown), 0));
            }
            if buf.is_empty() || !conn.readable || !conn.wants_host_data() {
                continue;
            }
            match conn.read_host(buf) {
                Ok(0) => {
                    let flags = conn.take_shutdown();
                    self.round_robin = self.round_robin.wrapping_add(1);
                    return Some((conn.header(cid, Op::Shutdown, 0, flags), 0));
                }
                Ok(len) => {
                    self.round_robin = self.round_robin.wrapping_add(1);
                    self.counters.rx_bytes += len as u64;
                    return Some((conn.header(cid, Op::Rw, len as u32, 0), len));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::debug!("vsock: host socket read failed: {e}: reset");
                    self.reset_connection(key);
                    return self.next_rx(buf);
                }
            }
        }
        None
    }

    /// Whether a host connection waits for the guest to answer its
    /// REQUEST.
    pub(crate) fn has_connecting(&self) -> bool {
        self.conns
            .values()
            .any(|c| c.state == State::HostConnecting && c.request_sent.is_some())
    }

    /// Gives up on host connections the guest has not accepted within
    /// [`CONNECT_TIMEOUT`] of `now`: the host socket is closed (and the
    /// guest, if it got the REQUEST, a reset).
    pub(crate) fn expire_connecting(&mut self, now: Instant) {
        let late: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.state == State::HostConnecting
                    && c.request_sent
                        .is_some_and(|t| now.saturating_duration_since(t) >= CONNECT_TIMEOUT)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.counters.connect_timeouts += 1;
            self.reset_connection(key);
        }
    }

    /// Ends (with a reset) the connections both sides have shut down.
    pub(crate) fn reap_finished(&mut self) {
        let done: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.finished())
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            self.reset_connection(key);
        }
    }

    /// Whether [`Muxer::sync`] has something to do.
    pub(crate) fn needs_sync(&self) -> bool {
        !self.closing.is_empty() || self.conns.values().any(|c| c.interest != Self::wanted(c))
    }

    fn wanted(c: &Connection) -> Option<EventSet> {
        (!c.hung_up).then(|| c.desired_interest())
    }

    /// Brings the event loop up to date: closed streams removed, new ones
    /// added, interests changed.
    pub(crate) fn sync(&mut self, ops: &mut EventRegistry<'_>) {
        for stream in self.closing.drain(..) {
            let fd = stream.as_raw_fd();
            if ops.is_registered(fd) {
                if let Err(e) = ops.remove(fd) {
                    kindling_devices::log_limited!(log::Level::Error, "vsock: {e}");
                }
            }
        }
        for (&token, hs) in &self.handshakes {
            let fd = hs.stream.as_raw_fd();
            if !ops.is_registered(fd) {
                if let Err(e) = ops.add(fd, token, EventSet::IN) {
                    kindling_devices::log_limited!(log::Level::Error, "vsock: {e}");
                }
            }
        }
        let mut failed = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let want = Self::wanted(conn);
            let fd = conn.stream.as_raw_fd();
            let registered = ops.is_registered(fd);
            let result = match (registered, want) {
                (false, Some(set)) => ops.add(fd, conn.token, set),
                (true, Some(set)) if conn.interest != want => ops.modify(fd, conn.token, set),
                (true, None) => ops.remove(fd),
                _ => Ok(()),
            };
            match result {
                Ok(()) => conn.interest = want,
                Err(e) => {
                    kindling_devices::log_limited!(log::Level::Error, "vsock: {e}");
                    failed.push(*key);
                }
            }
        }
        for key in failed {
            self.reset_connection(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connecting_never_blocks() {
        let dir =
            std::env::temp_dir().join(format!("kindling-vsock-connect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l");
        assert_eq!(
            connect_nonblocking(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let listener = UnixListener::bind(&path).unwrap();
        // A listener that never accepts: once its backlog is full,
        // connecting fails at once instead of blocking.
        let mut streams = Vec::new();
        let err = loop {
            match connect_nonblocking(&path) {
                Ok(s) => streams.push(s),
                Err(e) => break e,
            }
            assert!(streams.len() < 100_000);
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(!streams.is_empty());
        let (accepted, _) = listener.accept().unwrap();
        drop(accepted);
        let long = dir.join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            port_path(Path::new("/run/v.sock"), 52),
            PathBuf::from("/run/v.sock_52")
        );
        drop(streams);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn connections_are_limited() {
        let dir = std::env::temp_dir().join(format!("kindling-vsock-limit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut muxer = Muxer::new(3, path.clone(), listener);
        let extra = 10;
        let clients: Vec<UnixStream> = (0..MAX_CONNECTIONS + extra)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        for _ in 0..(MAX_CONNECTIONS + extra) / ACCEPTS_PER_EVENT + 2 {
            muxer.accept();
        }
        assert_eq!(muxer.connection_count(), MAX_CONNECTIONS);
        assert_eq!(muxer.counters.rejected_host_connections, extra as u64);
        // The last ones were closed.
        let mut last = clients.last().unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(last.read(&mut buf).unwrap(), 0);
        // A guest connection beyond the limit is refused with a reset.
        let request = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1,
            dst_port: 2,
            type_: TYPE_STREAM,
            op: Op::Request.value(),
            ..Header::default()
        };
        muxer.on_guest_packet(&request, &[]);
        assert_eq!(muxer.counters.refused_connections, 1);
        let (h, len) = muxer.next_rx(&mut []).unwrap();
        assert_eq!(
            (h.op, h.dst_port, h.src_port, len),
            (Op::Rst.value(), 1, 2, 0)
        );
        // A reset closes everything the guest knew about; connections it
        // never heard of stay.
        muxer.close_all();
        assert_eq!(muxer.connection_count(), MAX_CONNECTIONS);
        drop(clients);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn host_connections_the_guest_does_not_accept_time_out() {
        let dir =
            std::env::temp_dir().join(format!("kindling-vsock-timeout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut muxer = Muxer::new(3, path.clone(), listener);
        let mut client = UnixStream::connect(&path).unwrap();
        std::io::Write::write_all(&mut client, b"CONNECT 52\n").unwrap();
        muxer.accept();
        let token = *muxer.handshakes.keys().next().unwrap();
        muxer.on_host_event(token, EventSet::IN);
        // The timeout runs once the guest got the REQUEST.
        assert!(!muxer.has_connecting());
        muxer.expire_connecting(Instant::now() + 10 * CONNECT_TIMEOUT);
        assert_eq!(muxer.connection_count(), 1);
        let (h, _) = muxer.next_rx(&mut []).unwrap();
        assert!(muxer.has_connecting());
        assert_eq!((h.op, h.dst_port), (Op::Request.value(), 52));
        assert!(h.src_port >= FIRST_HOST_PORT);
        muxer.expire_connecting(Instant::now());
        assert!(muxer.has_connecting(), "expired too early");
        muxer.expire_connecting(Instant::now() + CONNECT_TIMEOUT);
        assert!(!muxer.has_connecting());
        assert_eq!(muxer.counters.connect_timeouts, 1);
        // The guest got the REQUEST, so it gets a reset; the host socket
        // is closed.
        let (h, _) = muxer.next_rx(&mut []).unwrap();
        assert_eq!(h.op, Op::Rst.value());
        drop(muxer);
        let mut buf = [0u8; 4];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
