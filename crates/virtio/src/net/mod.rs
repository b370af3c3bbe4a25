//! The virtio network device (virtio 1.2 §5.1), backed by a TAP device.
//!
//! - [`tap`]: the host side, `/dev/net/tun` with the virtio header
//!   (`IFF_VNET_HDR`, 12 bytes) and the offloads the driver accepted
//!   (`TUNSETOFFLOAD`).
//! - [`tx`]: the transmit parser, a pure function from a descriptor chain
//!   (and the guest memory it points to) to the guest buffers of one frame
//!   and its checked header, with no host I/O, so that it can be fuzzed.
//! - [`rx`]: placing a received frame into the driver's receive buffers,
//!   one chain or several (`VIRTIO_NET_F_MRG_RXBUF`).
//! - [`Net`]: the [`crate::VirtioDevice`]. The TAP fd sits on the event
//!   loop ([`kindling_devices::DeviceEvents`], edge-triggered); a frame is
//!   read only when it can be delivered, and a frame read while the driver
//!   has no buffers is held (one at most) until the driver posts some and
//!   notifies the receive queue: the TAP keeps buffering the rest, nothing
//!   is dropped silently, the loop neither spins nor blocks. Each pass
//!   does a bounded amount of work. Optional [`RateLimiter`]s on each
//!   direction stop a queue and resume it from a timerfd on the loop.
//!
//! Snapshots ([`NetState`]) keep the configuration and the held frame; the
//! TAP is reopened by name or an override at restore (see `persist.rs`).
//!
//! Queue 0 receives, queue 1 transmits (no control queue, one pair).
//!
//! [`RateLimiter`]: crate::rate_limiter::RateLimiter

mod device;
mod mac;
mod persist;
pub mod rx;
pub mod tap;
pub mod tx;

pub use device::{Net, NetConfig, NetCounters};
pub use mac::{MacAddr, MacAddrError};
pub use persist::{HeldFrame, NetRestoreArgs, NetState};
pub use tap::{Tap, TapError};
pub use tx::{parse_tx, TxError, TxFrame, VnetHeader};

/// The virtio 1.x network header in front of every frame, both ways
/// (`struct virtio_net_hdr_v1`, with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame (without the header) the device transmits or
/// receives: 64 KiB, what TSO and UFO produce at most.
pub const MAX_FRAME_LEN: usize = 65536;
/// The default (and maximum offered) size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// The transmit queue's index.
pub const TX_QUEUE: usize = 1;

/// Network device feature bits, as 64-bit masks.
pub mod features {
    use virtio_bindings::virtio_net::*;

    /// The device accepts frames with a partial checksum.
    pub const CSUM: u64 = 1 << VIRTIO_NET_F_CSUM;
    /// The driver accepts frames with a partial checksum.
    pub const GUEST_CSUM: u64 = 1 << VIRTIO_NET_F_GUEST_CSUM;
    /// `mac` in the configuration space is valid.
    pub const MAC: u64 = 1 << VIRTIO_NET_F_MAC;
    /// The driver accepts TCPv4 segments larger than the MTU.
    pub const GUEST_TSO4: u64 = 1 << VIRTIO_NET_F_GUEST_TSO4;
    /// The driver accepts TCPv6 segments larger than the MTU.
    pub const GUEST_TSO6: u64 = 1 << VIRTIO_NET_F_GUEST_TSO6;
    /// The driver accepts UDP datagrams larger than the MTU (UFO).
    pub const GUEST_UFO: u64 = 1 << VIRTIO_NET_F_GUEST_UFO;
    /// The device segments TCPv4.
    pub const HOST_TSO4: u64 = 1 << VIRTIO_NET_F_HOST_TSO4;
    /// The device segments TCPv6.
    pub const HOST_TSO6: u64 = 1 << VIRTIO_NET_F_HOST_TSO6;
    /// The device fragments UDP.
    pub const HOST_UFO: u64 = 1 << VIRTIO_NET_F_HOST_UFO;
    /// A received frame may span several receive buffers.
    pub const MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
}

/// Errors creating or restoring a network device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP device could not be opened or set up.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The queue size is not a power of two between 2 and 32768.
    #[error("network queue size {0} is not a power of two between 2 and 32768")]
    InvalidQueueSize(u16),
    /// A saved held frame is shorter than the virtio header or longer
    /// than the largest frame (a damaged state).
    #[error("the saved network device holds a {len}-byte frame: a frame with its header is 12 to 65548 bytes")]
    HeldFrameLength {
        /// Its length in bytes, with the virtio header.
        len: usize,
    },
    /// A timerfd or eventfd for the event loop could not be created.
    #[error("cannot create the network device's {what}: {source}")]
    EventFd {
        /// Which one.
        what: &'static str,
        /// The error from the kernel.
        #[source]
        source: std::io::Error,
    },
}
