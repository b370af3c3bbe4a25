//! The virtio-vsock packet header (virtio 1.2 §5.10.6) as a pure parser:
//! the guest wrote it, so every field is hostile until checked.
//!
//! The layout is the one of the `virtio-vsock` crate's
//! [`virtio_vsock::packet::PacketHeader`] (44 bytes, little endian); the
//! device uses that crate to find the header and payload in a descriptor
//! chain and this module to decode and validate the header bytes.

use virtio_vsock::packet::PKT_HEADER_SIZE;

/// The size of a packet header in bytes.
pub const HEADER_SIZE: usize = PKT_HEADER_SIZE;
/// The CID of the host (virtio 1.2 §5.10.4: "the host CID is 2").
pub const HOST_CID: u64 = 2;
/// The only socket type this device supports (`VIRTIO_VSOCK_TYPE_STREAM`).
pub const TYPE_STREAM: u16 = 1;

/// Shutdown flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations (`VIRTIO_VSOCK_OP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Connection request (1).
    Request,
    /// Connection accepted (2).
    Response,
    /// Connection reset (3).
    Rst,
    /// Shutdown of one or both directions (4); the flags say which.
    Shutdown,
    /// Stream data (5).
    Rw,
    /// The sender's credit (buf_alloc, fwd_cnt) changed (6).
    CreditUpdate,
    /// The sender asks for a credit update (7).
    CreditRequest,
}

impl Op {
    /// The wire value.
    pub fn value(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }

    /// The operation with wire value `value`, if there is one.
    pub fn from_value(value: u16) -> Option<Self> {
        Some(match value {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// A decoded packet header. `op` is still the raw value: an unknown one
/// is answered with a reset, which needs the rest of the header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1: stream).
    pub type_: u16,
    /// Operation (see [`Op`]).
    pub op: u16,
    /// Operation flags (shutdown flags).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

/// Why a packet from the guest is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer than [`HEADER_SIZE`] bytes.
    #[error("vsock packet header is {0} bytes, expected {HEADER_SIZE}")]
    ShortHeader(usize),
    /// The payload length is above the device's limit.
    #[error("vsock packet payload of {len} bytes is above the limit of {max}")]
    TooLong {
        /// The length in the header.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The source CID is not the guest's.
    #[error("vsock packet from CID {got}, but the guest's CID is {expected}")]
    WrongSourceCid {
        /// The CID in the header.
        got: u64,
        /// The guest's CID.
        expected: u64,
    },
    /// The destination is not the host.
    #[error("vsock packet for CID {0}, but only the host (CID 2) can be reached")]
    WrongDestinationCid(u64),
    /// A socket type other than stream.
    #[error("vsock socket type {0} is not supported (only stream, 1)")]
    UnsupportedType(u16),
    /// An unknown operation.
    #[error("vsock operation {0} is unknown")]
    UnknownOp(u16),
    /// A payload on a packet other than RW.
    #[error("vsock {op:?} packet carries a payload of {len} bytes")]
    UnexpectedPayload {
        /// The operation.
        op: Op,
        /// The payload length.
        len: u32,
    },
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | u64::from(le_u32(b, at + 4)) << 32
}

impl Header {
    /// Decodes the first [`HEADER_SIZE`] bytes of `bytes`.
    ///
    /// ```
    /// use kindling_virtio::vsock::packet::{Header, HEADER_SIZE};
    ///
    /// let h = Header { src_cid: 3, dst_cid: 2, op: 5, len: 7, ..Header::default() };
    /// assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    /// assert!(Header::decode(&[0; HEADER_SIZE - 1]).is_err());
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, PacketError> {
        if bytes.len() < HEADER_SIZE {
            return Err(PacketError::ShortHeader(bytes.len()));
        }
        Ok(Self {
            src_cid: le_u64(bytes, 0),
            dst_cid: le_u64(bytes, 8),
            src_port: le_u32(bytes, 16),
            dst_port: le_u32(bytes, 20),
            len: le_u32(bytes, 24),
            type_: le_u16(bytes, 28),
            op: le_u16(bytes, 30),
            flags: le_u32(bytes, 32),
            buf_alloc: le_u32(bytes, 36),
            fwd_cnt: le_u32(bytes, 40),
        })
    }

    /// The header's wire form.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A guest packet that passed [`classify`]: its operation is known, and
/// it is a stream packet from the guest to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPacket {
    /// The header.
    pub header: Header,
    /// Its operation.
    pub op: Op,
}

/// What the device does with a guest packet that failed [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Drop it silently (not addressed to us: answering could reach
    /// nobody, or a spoofed address).
    Drop(PacketError),
    /// Answer it with a reset.
    Reset(PacketError),
}

/// Checks a guest packet's header against the guest's CID and the
/// payload limit `max_len`.
///
/// ```
/// use kindling_virtio::vsock::packet::{classify, Header, Op, Rejection};
///
/// let h = Header { src_cid: 3, dst_cid: 2, type_: 1, op: 1, ..Header::default() };
/// assert_eq!(classify(&h, 3, 4096).unwrap().op, Op::Request);
/// assert!(matches!(classify(&Header { op: 99, ..h }, 3, 4096), Err(Rejection::Reset(_))));
/// assert!(matches!(classify(&Header { dst_cid: 7, ..h }, 3, 4096), Err(Rejection::Drop(_))));
/// ```
pub fn classify(header: &Header, guest_cid: u64, max_len: u32) -> Result<GuestPacket, Rejection> {
    if header.src_cid != guest_cid {
        return Err(Rejection::Drop(PacketError::WrongSourceCid {
            got: header.src_cid,
            expected: guest_cid,
        }));
    }
    if header.dst_cid != HOST_CID {
        return Err(Rejection::Drop(PacketError::WrongDestinationCid(
            header.dst_cid,
        )));
    }
    if header.len > max_len {
        return Err(Rejection::Reset(PacketError::TooLong {
            len: header.len,
            max: max_len,
        }));
    }
    if header.type_ != TYPE_STREAM {
        return Err(Rejection::Reset(PacketError::UnsupportedType(header.type_)));
    }
    let op =
        Op::from_value(header.op).ok_or(Rejection::Reset(PacketError::UnknownOp(header.op)))?;
    if op != Op::Rw && header.len != 0 {
        return Err(Rejection::Reset(PacketError::UnexpectedPayload {
            op,
            len: header.len,
        }));
    }
    Ok(GuestPacket {
        header: *header,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1024,
            dst_port: 52,
            type_: TYPE_STREAM,
            op: Op::Request.value(),
            buf_alloc: 4096,
            ..Header::default()
        }
    }

    #[test]
    fn headers_round_trip_in_little_endian() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xaabb_ccdd,
            dst_port: 1,
            len: 9,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 0x1000,
            fwd_cnt: 77,
        };
        let bytes = h.encode();
        assert_eq!(bytes[0], 0x08);
        assert_eq!(bytes[30], 5);
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        // Extra bytes after the header are ignored.
        let mut longer = bytes.to_vec();
        longer.push(0xff);
        assert_eq!(Header::decode(&longer).unwrap(), h);
        assert_eq!(
            Header::decode(&bytes[..10]),
            Err(PacketError::ShortHeader(10))
        );
    }

    #[test]
    fn classify_accepts_every_known_op() {
        for v in 1..=7 {
            let op = Op::from_value(v).unwrap();
            assert_eq!(op.value(), v);
            let len = if op == Op::Rw { 10 } else { 0 };
            let h = Header {
                op: v,
                len,
                ..request()
            };
            assert_eq!(classify(&h, 3, 4096), Ok(GuestPacket { header: h, op }));
        }
        assert_eq!(Op::from_value(0), None);
        assert_eq!(Op::from_value(8), None);
    }

    #[test]
    fn classify_drops_misaddressed_packets_and_resets_bad_ones() {
        let h = request();
        assert_eq!(
            classify(&Header { src_cid: 4, ..h }, 3, 4096),
            Err(Rejection::Drop(PacketError::WrongSourceCid {
                got: 4,
                expected: 3
            }))
        );
        assert_eq!(
            classify(&Header { dst_cid: 3, ..h }, 3, 4096),
            Err(Rejection::Drop(PacketError::WrongDestinationCid(3)))
        );
        assert_eq!(
            classify(&Header { type_: 2, ..h }, 3, 4096),
            Err(Rejection::Reset(PacketError::UnsupportedType(2)))
        );
        assert_eq!(
            classify(&Header { op: 0, ..h }, 3, 4096),
            Err(Rejection::Reset(PacketError::UnknownOp(0)))
        );
        assert_eq!(
            classify(
                &Header {
                    op: 5,
                    len: 5000,
                    ..h
                },
                3,
                4096
            ),
            Err(Rejection::Reset(PacketError::TooLong {
                len: 5000,
                max: 4096
            }))
        );
        assert_eq!(
            classify(&Header { len: 1, ..h }, 3, 4096),
            Err(Rejection::Reset(PacketError::UnexpectedPayload {
                op: Op::Request,
                len: 1
            }))
        );
        assert!(PacketError::WrongDestinationCid(9)
            .to_string()
            .contains("CID 9"));
    }
}
