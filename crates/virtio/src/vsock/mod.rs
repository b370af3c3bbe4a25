//! The virtio socket device (virtio-vsock, virtio 1.2 §5.10) with
//! Firecracker's host-side protocol over Unix sockets.
//!
//! - The device listens on a Unix socket at `uds_path`. A host process
//!   connects to it and writes `CONNECT <port>\n` to reach the guest
//!   listener on `<port>`; the device answers `OK <host_port>\n` once the
//!   guest accepted (a locally unique host port), and closes the
//!   connection when the guest refuses or the line is malformed
//!   ([`connect`]).
//! - A guest connection to host port `P` reaches the host listener at
//!   `<uds_path>_<P>`; when nobody listens there the guest gets a reset.
//! - Streams follow the virtio credit scheme: the device offers each
//!   connection a receive buffer of [`CONN_BUFFER_SIZE`] bytes (guest data
//!   on its way to a host socket that would block; a guest that overruns
//!   its credit gets a reset) and reads a host socket only while the guest
//!   has credit and an RX buffer for it, so a peer that stops reading
//!   never makes the device buffer without bound.
//! - Every socket is non-blocking on the event loop through
//!   [`kindling_devices::DeviceEvents`]: the listener, each connection
//!   (added and removed as connections come and go), an eventfd the
//!   queue handlers use to hand fd changes to the event handler, and a
//!   timer that closes host connections the guest has not accepted within
//!   [`CONNECT_TIMEOUT`].
//! - [`packet`]: the header codec and checks, and [`connect`]: the
//!   `CONNECT` line parser, are pure functions (fuzz targets).
//!
//! Snapshots: as in Firecracker, connections do not survive a restore;
//! the restored device tells the guest with a
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` on the event queue.

pub mod connect;
mod connection;
mod device;
mod muxer;
pub mod packet;
mod persist;

pub use connection::CONN_BUFFER_SIZE;
pub use device::{Vsock, VsockCounters};
pub use persist::{VsockRestoreArgs, VsockState};

use std::io;
use std::path::PathBuf;

/// The default (and maximum offered) size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The number of queues: RX, TX and event.
pub const NUM_QUEUES: usize = 3;
/// The RX queue (device to driver packets).
pub const RX_QUEUE: usize = 0;
/// The TX queue (driver to device packets).
pub const TX_QUEUE: usize = 1;
/// The event queue.
pub const EVENT_QUEUE: usize = 2;
/// The most connections (established, being set up, or host connections
/// that have not sent their `CONNECT` line yet) at once; more are refused
/// (a reset to the guest, a closed socket to the host).
pub const MAX_CONNECTIONS: usize = 256;
/// The largest payload of one packet in either direction.
pub const MAX_PACKET_DATA: u32 = 64 * 1024;
/// The first host port handed to host-initiated connections (as in
/// Firecracker, high enough not to collide with the ports guests connect
/// to).
pub const FIRST_HOST_PORT: u32 = 1 << 30;
/// How long a host connection waits for the guest to accept it (as in
/// Firecracker); then its socket is closed.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The event id of a transport reset (`VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// The configuration of a vsock device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VsockConfig {
    /// The guest's context id (3 or more: 0-2 are reserved, and
    /// 0xffffffff is VMADDR_CID_ANY).
    pub guest_cid: u64,
    /// Where the device listens for host connections; guest connections
    /// to port `P` go to `<uds_path>_<P>`.
    pub uds_path: PathBuf,
}

/// Errors creating a vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The CID is reserved (0, 1, 2, or 32-bit VMADDR_CID_ANY and above).
    #[error("vsock guest CID {0} is reserved: use a CID between 3 and 4294967294")]
    InvalidCid(u64),
    /// The socket path's directory does not exist.
    #[error("vsock socket {path}: the directory {dir} does not exist")]
    MissingDirectory {
        /// The path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// Something already exists at the socket path (a socket another
    /// process listens on, or a stale one: remove it first).
    #[error("vsock socket {0} already exists (in use, or left over: remove it first)")]
    AlreadyExists(PathBuf),
    /// The socket path is longer than a Unix socket address allows (with
    /// room for the `_<port>` suffix of guest connections).
    #[error("vsock socket path {0} is too long for a Unix socket address")]
    PathTooLong(PathBuf),
    /// Binding or configuring the listener failed.
    #[error("cannot listen on vsock socket {path}: {source}")]
    Listen {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The eventfd the device uses to wake its event handler could not be
    /// created.
    #[error("cannot create the vsock device's eventfd: {0}")]
    EventFd(#[source] io::Error),
    /// The timer of the host-connect timeout could not be created.
    #[error("cannot create the vsock device's timer: {0}")]
    TimerFd(#[source] io::Error),
    /// A queue size is not a power of two between 1 and 32768.
    #[error("vsock queue size {0} is not a power of two between 1 and 32768")]
    InvalidQueueSize(u16),
}
