//! One vsock stream between a guest port and a host Unix socket: its
//! state, the credit accounting of both directions and the bounded buffer
//! of guest data on its way to the host socket.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use event_manager::EventSet;

use super::packet::{Header, Op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// The receive buffer each connection offers the guest (`buf_alloc`):
/// guest data not yet written to the host socket. A guest that sends more
/// than this (ignoring its credit) gets a reset.
pub const CONN_BUFFER_SIZE: u32 = 256 * 1024;
/// Send a credit update once the host has consumed this much since the
/// guest last heard about it.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUFFER_SIZE / 4;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// A host process asked for a guest port; the REQUEST is queued or
    /// sent and the guest has not answered.
    HostConnecting,
    /// Data flows.
    Established,
}

/// Control packets waiting for an RX buffer, in the order sent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) request: bool,
    pub(crate) response: bool,
    pub(crate) credit_update: bool,
    pub(crate) credit_request: bool,
    /// SHUTDOWN flags to send (0: none).
    pub(crate) shutdown: u32,
}

/// A connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) stream: UnixStream,
    /// The event-loop token of `stream`.
    pub(crate) token: u32,
    /// The host side's port (what the guest calls the destination).
    pub(crate) local_port: u32,
    /// The guest's port.
    pub(crate) peer_port: u32,
    pub(crate) state: State,
    /// When the REQUEST of a host-initiated connection reached the guest
    /// (the host-connect timeout runs from then, as in Firecracker).
    pub(crate) request_sent: Option<Instant>,
    pub(crate) pending: Pending,
    /// Guest data (and the `OK` line) not yet written to the host socket.
    to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are the device's own (the `OK`
    /// line), not guest data: writing them forwards nothing.
    control_bytes: usize,
    /// Guest bytes written to the host socket.
    fwd_cnt: u32,
    /// `fwd_cnt` as the guest last saw it.
    fwd_cnt_sent: u32,
    /// Host bytes sent to the guest.
    rx_cnt: u32,
    /// The guest's receive buffer and how much of it it has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The host socket has (probably) data to read.
    pub(crate) readable: bool,
    /// The host socket reached end of file (or hung up).
    pub(crate) host_eof: bool,
    /// The guest will send no more (SHUTDOWN with SEND).
    pub(crate) guest_done_sending: bool,
    /// The guest will receive no more (SHUTDOWN with RCV).
    pub(crate) guest_done_receiving: bool,
    /// The write side of the host socket was shut down.
    host_write_closed: bool,
    /// What the stream is registered for on the event loop (`None`: not
    /// registered).
    pub(crate) interest: Option<EventSet>,
    /// The stream hung up: it is off the event loop for good and read
    /// until end of file.
    pub(crate) hung_up: bool,
}

/// What flushing guest data to the host socket did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Progress (or nothing to do).
    Ok,
    /// The host socket failed: reset the connection.
    Failed(io::ErrorKind),
}

impl Connection {
    pub(crate) fn new(
        stream: UnixStream,
        token: u32,
        local_port: u32,
        peer_port: u32,
        state: State,
    ) -> Self {
        Self {
            stream,
            token,
            local_port,
            peer_port,
            state,
            request_sent: None,
            pending: Pending::default(),
            to_host: VecDeque::new(),
            control_bytes: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            readable: false,
            host_eof: false,
            guest_done_sending: false,
            guest_done_receiving: false,
            host_write_closed: false,
            interest: None,
            hung_up: false,
        }
    }

    /// Records the guest's credit from any header it sent.
    pub(crate) fn update_peer_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
    }

    /// How many bytes the guest can take now.
    pub(crate) fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Bytes buffered for the host.
    pub(crate) fn buffered(&self) -> usize {
        self.to_host.len()
    }

    /// Queues guest data for the host socket. Fails when the guest
    /// overran the credit it was given.
    pub(crate) fn queue_to_host(&mut self, data: &[u8]) -> Result<(), usize> {
        let guest_bytes = self.to_host.len() - self.control_bytes;
        if guest_bytes + data.len() > CONN_BUFFER_SIZE as usize {
            return Err(guest_bytes + data.len());
        }
        self.to_host.extend(data);
        Ok(())
    }

    /// Queues the device's own bytes (the `OK` line) for the host socket,
    /// ahead of any guest data. Fails if guest data is already queued.
    pub(crate) fn queue_to_host_control(&mut self, line: &[u8]) -> Result<(), usize> {
        if self.to_host.len() != self.control_bytes {
            return Err(self.to_host.len());
        }
        self.to_host.extend(line);
        self.control_bytes += line.len();
        Ok(())
    }

    /// Writes buffered guest data to the host socket until it would block.
    pub(crate) fn flush_to_host(&mut self) -> Flush {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Flush::Failed(io::ErrorKind::WriteZero),
                Ok(n) => {
                    self.to_host.drain(..n);
                    let control = n.min(self.control_bytes);
                    self.control_bytes -= control;
                    self.fwd_cnt = self.fwd_cnt.wrapping_add((n - control) as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Flush::Failed(e.kind()),
            }
        }
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD {
            self.pending.credit_update = true;
        }
        if self.to_host.is_empty() && self.guest_done_sending && !self.host_write_closed {
            self.host_write_closed = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Flush::Ok
    }

    /// Whether both directions are finished and the connection can go
    /// (with a reset to the guest, which ends it on its side too).
    pub(crate) fn finished(&self) -> bool {
        let guest_to_host_done = self.guest_done_sending && self.to_host.is_empty();
        let host_to_guest_done = self.host_eof || self.guest_done_receiving;
        guest_to_host_done && host_to_guest_done && self.pending.shutdown == 0
    }

    /// Whether the device wants to read the host socket for the guest.
    pub(crate) fn wants_host_data(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && !self.guest_done_receiving
            && self.peer_credit() > 0
    }

    /// The events the stream should be watched for.
    pub(crate) fn desired_interest(&self) -> EventSet {
        let mut set = EventSet::empty();
        // Watch for readability only when not already known readable
        // (level-triggered epoll would fire until read, and reading waits
        // for guest RX buffers).
        if self.state == State::HostConnecting || (self.wants_host_data() && !self.readable) {
            set |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        set
    }

    /// Whether the connection has a packet for the guest right now.
    pub(crate) fn has_rx(&self) -> bool {
        let p = &self.pending;
        p.request
            || p.response
            || p.credit_update
            || p.credit_request
            || p.shutdown != 0
            || (self.readable && self.wants_host_data())
    }

    /// A header from the host side of this connection.
    pub(crate) fn header(&mut self, guest_cid: u64, op: Op, len: u32, flags: u32) -> Header {
        self.fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op: op.value(),
            flags,
            buf_alloc: CONN_BUFFER_SIZE,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The next control packet, if any, taken off the pending set.
    pub(crate) fn take_control(&mut self) -> Option<(Op, u32)> {
        let p = &mut self.pending;
        if std::mem::take(&mut p.request) {
            self.request_sent = Some(Instant::now());
            return Some((Op::Request, 0));
        }
        if std::mem::take(&mut p.response) {
            return Some((Op::Response, 0));
        }
        if std::mem::take(&mut p.credit_update) {
            return Some((Op::CreditUpdate, 0));
        }
        if std::mem::take(&mut p.credit_request) {
            return Some((Op::CreditRequest, 0));
        }
        None
    }

    /// Reads host data for the guest into `buf` (at most the guest's
    /// credit). `Ok(0)` is end of file; `WouldBlock` clears `readable`.
    pub(crate) fn read_host(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf.len().min(self.peer_credit() as usize);
        loop {
            match self.stream.read(&mut buf[..max]) {
                Ok(0) => {
                    self.host_eof = true;
                    self.readable = false;
                    self.pending.shutdown |= SHUTDOWN_SEND;
                    return Ok(0);
                }
                Ok(n) => {
                    self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                    if self.peer_credit() == 0 {
                        // Ask once per stall; the guest answers when it
                        // has consumed data.
                        self.pending.credit_request = true;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.readable = false;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Applies a SHUTDOWN from the guest.
    pub(crate) fn guest_shutdown(&mut self, flags: u32) {
        if flags & SHUTDOWN_SEND != 0 {
            self.guest_done_sending = true;
        }
        if flags & SHUTDOWN_RCV != 0 {
            self.guest_done_receiving = true;
        }
    }

    /// Takes the pending SHUTDOWN flags.
    pub(crate) fn take_shutdown(&mut self) -> u32 {
        std::mem::take(&mut self.pending.shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Connection::new(a, 9, 1000, 2000, State::Established), b)
    }

    #[test]
    fn credit_follows_the_guest_headers() {
        let (mut c, mut peer) = pair();
        assert_eq!(c.peer_credit(), 0);
        assert!(!c.wants_host_data());
        c.update_peer_credit(&Header {
            buf_alloc: 8,
            fwd_cnt: 0,
            ..Header::default()
        });
        assert_eq!(c.peer_credit(), 8);
        peer.write_all(b"0123456789").unwrap();
        c.readable = true;
        let mut buf = [0u8; 64];
        assert_eq!(c.read_host(&mut buf).unwrap(), 8);
        assert_eq!(&buf[..8], b"01234567");
        assert_eq!(c.peer_credit(), 0);
        assert!(c.pending.credit_request);
        assert!(!c.wants_host_data());
        // The guest consumed 4 bytes.
        c.update_peer_credit(&Header {
            buf_alloc: 8,
            fwd_cnt: 4,
            ..Header::default()
        });
        assert_eq!(c.peer_credit(), 4);
        assert_eq!(c.read_host(&mut buf).unwrap(), 2);
        let e = c.read_host(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(!c.readable);
        assert!(c.desired_interest().contains(EventSet::IN));
        drop(peer);
        assert_eq!(c.read_host(&mut buf).unwrap(), 0);
        assert!(c.host_eof);
        assert_eq!(c.take_shutdown(), SHUTDOWN_SEND);
    }

    #[test]
    fn guest_data_is_bounded_and_flushed() {
        let (mut c, mut peer) = pair();
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..4 {
            c.queue_to_host(&chunk).unwrap();
        }
        assert!(c.queue_to_host(&chunk).is_err());
        assert!(c.queue_to_host_control(b"OK 1\n").is_err());
        assert!(c.desired_interest().contains(EventSet::OUT));
        assert_eq!(c.flush_to_host(), Flush::Ok);
        // The socket buffer took some, not all.
        assert!(c.buffered() > 0);
        assert!(c.pending.credit_update || c.fwd_cnt < CREDIT_UPDATE_THRESHOLD);
        peer.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let mut total = 0;
        while c.buffered() > 0 {
            if let Ok(n) = peer.read(&mut sink) {
                total += n;
            }
            c.flush_to_host();
        }
        while let Ok(n) = peer.read(&mut sink) {
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 256 * 1024);
        assert!(c.pending.credit_update);
        let h = c.header(3, Op::CreditUpdate, 0, 0);
        assert_eq!(h.fwd_cnt, 256 * 1024);
        assert_eq!(
            (h.src_cid, h.dst_cid, h.src_port, h.dst_port),
            (2, 3, 1000, 2000)
        );
    }

    #[test]
    fn shutdown_in_both_directions_finishes() {
        let (mut c, peer) = pair();
        assert!(!c.finished());
        c.guest_shutdown(SHUTDOWN_SEND);
        c.flush_to_host();
        drop(peer);
        assert!(!c.finished());
        c.guest_shutdown(SHUTDOWN_RCV);
        assert!(c.finished());
        c.pending.request = true;
        c.pending.response = true;
        assert_eq!(c.take_control(), Some((Op::Request, 0)));
        assert_eq!(c.take_control(), Some((Op::Response, 0)));
        assert_eq!(c.take_control(), None);
    }
}
