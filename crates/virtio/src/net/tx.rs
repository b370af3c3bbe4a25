//! The transmit parser: one descriptor chain of the transmit queue is the
//! 12-byte virtio header followed by an Ethernet frame, in any number of
//! device-readable buffers. [`parse_tx`] checks the chain and the header
//! against the negotiated features and returns where the bytes are; it
//! does no host I/O (fuzz target `virtio_net_tx`).
//!
//! Refused (the device drops the frame, counts it and returns the chain):
//! a chain that is malformed ([`crate::chain::ChainError`]), has a
//! device-writable buffer or one outside guest memory, is shorter than the
//! header, carries a frame larger than [`MAX_FRAME_LEN`], or has a header
//! asking for an offload the driver did not negotiate (a partial checksum
//! without `VIRTIO_NET_F_CSUM`, a GSO type without the matching
//! `HOST_TSO4`/`HOST_TSO6`/`HOST_UFO`, ECN, which is not offered) or that
//! is inconsistent (a checksum position outside the frame).
//!
//! The header is read once from guest memory for the checks; the bytes
//! written to the TAP are read again from guest memory, so a guest that
//! changes them in between only fools itself: the kernel checks the
//! header it is given.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{features as net, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::chain::{collect_descriptors, ChainError};
use crate::GuestMemoryMmap;

/// The virtio 1.x network header, decoded (little-endian fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHeader {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with the ECN bit.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Segment size.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Buffers a received frame spans (receive only).
    pub num_buffers: u16,
}

impl VnetHeader {
    /// Decodes the 12 bytes.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    /// Encodes the 12 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }
}

/// Why a transmit chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The chain itself is malformed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A buffer is device-writable.
    #[error("transmit chain has a device-writable buffer")]
    WritableBuffer,
    /// A buffer is not inside guest memory.
    #[error("transmit buffer at {addr:#x} ({len} bytes) is outside guest memory")]
    OutsideMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain is shorter than the virtio header.
    #[error("transmit chain of {0} bytes is shorter than the 12-byte virtio header")]
    TooShort(usize),
    /// The frame is larger than [`MAX_FRAME_LEN`].
    #[error("transmit frame of {0} bytes is larger than {MAX_FRAME_LEN}")]
    TooLarge(usize),
    /// The header asks for an offload that was not negotiated, or is
    /// inconsistent.
    #[error("transmit header {header:?} refused: {why}")]
    BadHeader {
        /// The header.
        header: VnetHeader,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// One frame to transmit: its header and where its bytes are (the header
/// first, then the frame, as the TAP wants them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxFrame {
    /// The decoded header.
    pub header: VnetHeader,
    /// The guest buffers, header included, in order.
    pub buffers: Vec<(GuestAddress, usize)>,
    /// The frame's length without the header.
    pub frame_len: usize,
}

fn check_header(h: &VnetHeader, frame_len: usize, acked: u64) -> Result<(), &'static str> {
    let known = (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) as u8;
    if h.flags & !known != 0 {
        return Err("unknown flags");
    }
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0 {
        if acked & net::CSUM == 0 {
            return Err("partial checksum without VIRTIO_NET_F_CSUM");
        }
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if end > frame_len {
            return Err("checksum position outside the frame");
        }
    }
    if h.gso_type & VIRTIO_NET_HDR_GSO_ECN as u8 != 0 {
        return Err("ECN is not offered");
    }
    let needs = match u32::from(h.gso_type) {
        VIRTIO_NET_HDR_GSO_NONE => return Ok(()),
        VIRTIO_NET_HDR_GSO_TCPV4 => net::HOST_TSO4,
        VIRTIO_NET_HDR_GSO_TCPV6 => net::HOST_TSO6,
        VIRTIO_NET_HDR_GSO_UDP => net::HOST_UFO,
        _ => return Err("unknown GSO type"),
    };
    if acked & needs == 0 {
        return Err("GSO type not negotiated");
    }
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 == 0 {
        return Err("GSO without a partial checksum");
    }
    if h.gso_size == 0 {
        return Err("GSO with a segment size of 0");
    }
    Ok(())
}

/// Parses one transmit chain into `out` (reused between calls, like
/// `scratch`), checking it against `memory` and the `acked` features.
///
/// # Example
///
/// ```
/// use kindling_virtio::net::{parse_tx, TxError, TxFrame};
/// use virtio_queue::desc::split::Descriptor;
/// use vm_memory::{Bytes, GuestAddress};
///
/// let memory = kindling_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// memory.write_slice(&[0u8; 12], GuestAddress(0x1000)).unwrap();
/// let mut out = TxFrame::default();
/// let mut scratch = Vec::new();
/// let chain = [Descriptor::new(0x1000, 12 + 60, 0, 0)];
/// parse_tx(&memory, chain, 0, &mut scratch, &mut out).unwrap();
/// assert_eq!(out.frame_len, 60);
/// let short = [Descriptor::new(0x1000, 8, 0, 0)];
/// assert_eq!(parse_tx(&memory, short, 0, &mut scratch, &mut out), Err(TxError::TooShort(8)));
/// ```
pub fn parse_tx<I>(
    memory: &GuestMemoryMmap,
    descriptors: I,
    acked: u64,
    scratch: &mut Vec<Descriptor>,
    out: &mut TxFrame,
) -> Result<(), TxError>
where
    I: IntoIterator<Item = Descriptor>,
{
    out.buffers.clear();
    out.frame_len = 0;
    collect_descriptors(descriptors, scratch)?;
    let mut total: usize = 0;
    for d in scratch.iter() {
        if d.is_write_only() {
            return Err(TxError::WritableBuffer);
        }
        let (addr, len) = (d.addr(), d.len());
        let inside =
            addr.0.checked_add(u64::from(len)).is_some() && memory.check_range(addr, len as usize);
        if !inside {
            return Err(TxError::OutsideMemory { addr: addr.0, len });
        }
        total += len as usize;
        if total > VNET_HDR_LEN + MAX_FRAME_LEN {
            return Err(TxError::TooLarge(total - VNET_HDR_LEN));
        }
        if len != 0 {
            out.buffers.push((addr, len as usize));
        }
    }
    if total < VNET_HDR_LEN {
        return Err(TxError::TooShort(total));
    }
    let mut raw = [0u8; VNET_HDR_LEN];
    let mut at = 0;
    for &(addr, len) in &out.buffers {
        let n = len.min(VNET_HDR_LEN - at);
        memory
            .read_slice(&mut raw[at..at + n], addr)
            .map_err(|_| TxError::OutsideMemory {
                addr: addr.0,
                len: len as u32,
            })?;
        at += n;
        if at == VNET_HDR_LEN {
            break;
        }
    }
    let header = VnetHeader::from_bytes(&raw);
    let frame_len = total - VNET_HDR_LEN;
    check_header(&header, frame_len, acked).map_err(|why| TxError::BadHeader { header, why })?;
    out.header = header;
    out.frame_len = frame_len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::memory;

    const NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    fn parse(mem: &GuestMemoryMmap, chain: &[Descriptor], acked: u64) -> Result<TxFrame, TxError> {
        let mut out = TxFrame::default();
        parse_tx(mem, chain.iter().copied(), acked, &mut Vec::new(), &mut out).map(|()| out)
    }

    fn put_header(mem: &GuestMemoryMmap, at: u64, h: VnetHeader) {
        mem.write_slice(&h.to_bytes(), GuestAddress(at)).unwrap();
    }

    #[test]
    fn header_round_trips() {
        let h = VnetHeader {
            flags: 1,
            gso_type: 4,
            hdr_len: 0x1234,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        assert_eq!(VnetHeader::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn a_header_split_over_buffers_is_read_whole() {
        let mem = memory(0x10_0000);
        let h = VnetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let b = h.to_bytes();
        mem.write_slice(&b[..5], GuestAddress(0x1000)).unwrap();
        mem.write_slice(&b[5..], GuestAddress(0x2000)).unwrap();
        let chain = [
            Descriptor::new(0x1000, 5, NEXT, 1),
            Descriptor::new(0x2000, 7, NEXT, 2),
            Descriptor::new(0x3000, 0, NEXT, 3),
            Descriptor::new(0x4000, 60, 0, 0),
        ];
        let f = parse(&mem, &chain, net::CSUM).unwrap();
        assert_eq!(f.header, h);
        assert_eq!(f.frame_len, 60);
        assert_eq!(f.buffers.len(), 3, "the empty buffer is skipped");
        // Without CSUM negotiated: refused.
        assert!(matches!(
            parse(&mem, &chain, 0),
            Err(TxError::BadHeader {
                why: "partial checksum without VIRTIO_NET_F_CSUM",
                ..
            })
        ));
    }

    #[test]
    fn short_large_writable_and_outside_chains_are_refused() {
        let mem = memory(0x10_0000);
        put_header(&mem, 0x1000, VnetHeader::default());
        assert_eq!(
            parse(&mem, &[Descriptor::new(0x1000, 11, 0, 0)], 0),
            Err(TxError::TooShort(11))
        );
        assert_eq!(
            parse(&mem, &[Descriptor::new(0x1000, 12, 0, 0)], 0)
                .unwrap()
                .frame_len,
            0
        );
        assert_eq!(
            parse(&mem, &[Descriptor::new(0x1000, 12 + 65537, 0, 0)], 0),
            Err(TxError::TooLarge(65537))
        );
        parse(&mem, &[Descriptor::new(0x1000, 12 + 65536, 0, 0)], 0).unwrap();
        assert_eq!(
            parse(&mem, &[Descriptor::new(0x1000, 64, WRITE, 0)], 0),
            Err(TxError::WritableBuffer)
        );
        assert_eq!(
            parse(&mem, &[Descriptor::new(0xff000, 0x2000, 0, 0)], 0),
            Err(TxError::OutsideMemory {
                addr: 0xff000,
                len: 0x2000
            })
        );
        assert_eq!(
            parse(&mem, &[Descriptor::new(u64::MAX - 4, 12, 0, 0)], 0),
            Err(TxError::OutsideMemory {
                addr: u64::MAX - 4,
                len: 12
            })
        );
        assert_eq!(
            parse(&mem, &[Descriptor::new(0x1000, 64, NEXT, 0)], 0),
            Err(TxError::Chain(ChainError::Truncated { count: 1 }))
        );
        // Many buffers adding up past the limit stop at the limit.
        let many: Vec<Descriptor> = (0..40)
            .map(|i| Descriptor::new(0x1000, 4096, if i < 39 { NEXT } else { 0 }, 0))
            .collect();
        assert!(matches!(parse(&mem, &many, 0), Err(TxError::TooLarge(_))));
    }

    #[test]
    fn gso_needs_its_feature_a_checksum_and_a_segment_size() {
        let mem = memory(0x10_0000);
        let chain = [Descriptor::new(0x1000, 12 + 9000, 0, 0)];
        let tso = VnetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 as u8,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        put_header(&mem, 0x1000, tso);
        let all = net::CSUM | net::HOST_TSO4 | net::HOST_TSO6 | net::HOST_UFO;
        parse(&mem, &chain, all).unwrap();
        let why = |h: VnetHeader, acked| {
            put_header(&mem, 0x1000, h);
            match parse(&mem, &chain, acked) {
                Err(TxError::BadHeader { why, .. }) => why,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            why(tso, net::CSUM | net::HOST_TSO6),
            "GSO type not negotiated"
        );
        assert_eq!(
            why(VnetHeader { flags: 0, ..tso }, all),
            "GSO without a partial checksum"
        );
        assert_eq!(
            why(VnetHeader { gso_size: 0, ..tso }, all),
            "GSO with a segment size of 0"
        );
        assert_eq!(
            why(
                VnetHeader {
                    gso_type: 0x81,
                    ..tso
                },
                all
            ),
            "ECN is not offered"
        );
        assert_eq!(
            why(VnetHeader { gso_type: 2, ..tso }, all),
            "unknown GSO type"
        );
        assert_eq!(why(VnetHeader { flags: 0x80, ..tso }, all), "unknown flags");
        assert_eq!(
            why(
                VnetHeader {
                    csum_start: 9000,
                    ..tso
                },
                all
            ),
            "checksum position outside the frame"
        );
        put_header(
            &mem,
            0x1000,
            VnetHeader {
                gso_type: VIRTIO_NET_HDR_GSO_UDP as u8,
                ..tso
            },
        );
        parse(&mem, &chain, all).unwrap();
    }
}
