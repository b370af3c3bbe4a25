//! The block request parser: descriptor chain in, typed [`Request`] out.
//!
//! A request is a 16-byte header (`le32 type, le32 reserved, le64
//! sector`) and any data in device-readable buffers, then data in
//! device-writable buffers and, last, the status byte the device writes
//! (virtio 1.2 §5.2.6). The layout of the buffers is free (any framing):
//! the header may span descriptors and the status byte is the last byte of
//! the last buffer.
//!
//! Everything here is hostile input. The parser reads guest memory (the
//! header and the discard/write-zeroes segments) but does no host I/O.
//! Failures come with the address of the status byte when there is a
//! valid one, so the device can end the request with
//! [`RequestError::status`]; otherwise the request can only be dropped.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{request_type, status, ID_BYTES, SECTOR_SIZE};
use crate::chain::{collect_descriptors, ChainError};
use crate::GuestMemoryMmap;

/// A guest buffer: an address and a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBuffer {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// One segment of a DISCARD or WRITE_ZEROES request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorRange {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// WRITE_ZEROES may deallocate the range.
    pub unmap: bool,
}

impl SectorRange {
    /// The byte offset of the range in the image.
    pub fn offset(&self) -> u64 {
        self.sector * SECTOR_SIZE
    }

    /// The length of the range in bytes.
    pub fn len(&self) -> u64 {
        u64::from(self.num_sectors) * SECTOR_SIZE
    }

    /// Whether the range covers no sector.
    pub fn is_empty(&self) -> bool {
        self.num_sectors == 0
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// Read `len` bytes from `sector` into `buffers`.
    Read {
        /// First sector.
        sector: u64,
        /// Where the data goes.
        buffers: Vec<GuestBuffer>,
        /// Total length, a multiple of 512.
        len: u32,
    },
    /// Write `len` bytes from `buffers` at `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// Where the data comes from.
        buffers: Vec<GuestBuffer>,
        /// Total length, a multiple of 512.
        len: u32,
    },
    /// Flush written data to stable storage.
    Flush,
    /// Write the 20-byte device id into `buffers` (at most 20 bytes).
    GetId {
        /// Where the id goes.
        buffers: Vec<GuestBuffer>,
        /// Bytes of the id to write (at most 20).
        len: u32,
    },
    /// Discard ranges.
    Discard {
        /// The ranges.
        ranges: Vec<SectorRange>,
    },
    /// Write zeroes to ranges.
    WriteZeroes {
        /// The ranges.
        ranges: Vec<SectorRange>,
    },
}

/// A parsed, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: RequestKind,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

impl Request {
    /// Whether the request modifies the image.
    pub fn is_write(&self) -> bool {
        matches!(
            self.kind,
            RequestKind::Write { .. }
                | RequestKind::Discard { .. }
                | RequestKind::WriteZeroes { .. }
        )
    }

    /// The bytes the device writes into the request's buffers when it
    /// succeeds (the used length): the data read or the id, plus the
    /// status byte.
    pub fn used_len(&self) -> u32 {
        match &self.kind {
            RequestKind::Read { len, .. } | RequestKind::GetId { len, .. } => len + 1,
            _ => 1,
        }
    }
}

/// The device's limits a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The disk size in sectors.
    pub capacity: u64,
    /// The most sectors in a DISCARD segment.
    pub max_discard_sectors: u32,
    /// The most segments in a DISCARD request.
    pub max_discard_seg: u32,
    /// The most sectors in a WRITE_ZEROES segment.
    pub max_write_zeroes_sectors: u32,
    /// The most segments in a WRITE_ZEROES request.
    pub max_write_zeroes_seg: u32,
    /// The most data bytes in a read or write request.
    pub max_data_bytes: u64,
}

impl Limits {
    /// The limits of the configuration space, for a disk of `capacity`
    /// sectors.
    pub fn new(capacity: u64) -> Self {
        use super::config::*;
        Self {
            capacity,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_discard_seg: MAX_DISCARD_SEG,
            max_write_zeroes_sectors: MAX_WRITE_ZEROES_SECTORS,
            max_write_zeroes_seg: MAX_WRITE_ZEROES_SEG,
            max_data_bytes: u64::from(MAX_REQUEST_BYTES),
        }
    }
}

/// What is wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The descriptor chain itself is unusable.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The last buffer is not a device-writable buffer that can hold the
    /// status byte.
    #[error("the last buffer is not device-writable, so there is no status byte")]
    NoStatus,
    /// The status byte is outside guest memory.
    #[error("the status byte at {0:#x} is outside guest memory")]
    StatusOutsideMemory(u64),
    /// A device-readable buffer follows a device-writable one.
    #[error("a device-readable buffer follows a device-writable one")]
    ReadableAfterWritable,
    /// A buffer is outside guest memory.
    #[error("buffer at {addr:#x} ({len} bytes) is outside guest memory")]
    BufferOutsideMemory {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The device-readable part is shorter than the 16-byte header.
    #[error("request header is {0} bytes, not 16")]
    ShortHeader(u64),
    /// The request type is not supported.
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    /// Data in the wrong direction for the request type.
    #[error(
        "request type {request_type} has {len} bytes of device-{direction} data it cannot have"
    )]
    UnexpectedData {
        /// The request type.
        request_type: u32,
        /// "readable" or "writable".
        direction: &'static str,
        /// The bytes found.
        len: u64,
    },
    /// Read or write data that is not a whole number of sectors.
    #[error("data length {0} is not a multiple of 512")]
    UnalignedLength(u64),
    /// The request reaches past the end of the disk.
    #[error("sectors {sector}+{sectors} are beyond the disk's {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u64,
        /// The disk size in sectors.
        capacity: u64,
    },
    /// GET_ID without a buffer for the id.
    #[error("GET_ID request has no buffer for the id")]
    NoIdBuffer,
    /// The discard/write-zeroes payload is not a whole number of 16-byte
    /// segments, or empty.
    #[error("discard/write-zeroes payload of {0} bytes is not one or more 16-byte segments")]
    BadSegments(u64),
    /// More segments than the device allows.
    #[error("{count} discard/write-zeroes segments, the device allows {max}")]
    TooManySegments {
        /// Segments in the request.
        count: u64,
        /// The limit.
        max: u32,
    },
    /// A segment covers more sectors than the device allows.
    #[error("discard/write-zeroes segment of {sectors} sectors, the device allows {max}")]
    SegmentTooLarge {
        /// Sectors in the segment.
        sectors: u32,
        /// The limit.
        max: u32,
    },
    /// A read or write moves more data than the device allows (more than
    /// `seg_max` segments of `size_max` bytes).
    #[error("read/write of {len} bytes, the device allows {max} per request")]
    TooLarge {
        /// The request's data bytes.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A segment has flags the request type does not allow.
    #[error("discard/write-zeroes segment flags {0:#x} are not supported")]
    UnsupportedFlags(u32),
}

impl RequestError {
    /// The status byte that reports this error to the driver.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::UnsupportedFlags(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

/// A request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ParseError {
    /// What is wrong.
    pub error: RequestError,
    /// Where to write the error status, if the request has a valid status
    /// byte; `None` means the request can only be returned unused.
    pub status: Option<GuestAddress>,
}

/// The segments of `buffers` after skipping `skip` bytes.
fn tail(buffers: &[Descriptor], mut skip: u64) -> (Vec<GuestBuffer>, u64) {
    let mut out = Vec::new();
    let mut total = 0u64;
    for d in buffers {
        let len = u64::from(d.len());
        if skip >= len {
            skip -= len;
            continue;
        }
        // `skip < len <= u32::MAX`, and the address range was checked.
        let addr = GuestAddress(d.addr().0 + skip);
        let len = len - skip;
        skip = 0;
        out.push(GuestBuffer {
            addr,
            len: len as u32,
        });
        total += len;
    }
    (out, total)
}

/// Reads `out.len()` bytes from the start of `buffers` into `out`;
/// returns how many were there.
fn gather(
    memory: &GuestMemoryMmap,
    buffers: &[GuestBuffer],
    out: &mut [u8],
) -> Result<usize, RequestError> {
    let mut done = 0;
    for b in buffers {
        if done == out.len() {
            break;
        }
        let n = (b.len as usize).min(out.len() - done);
        memory
            .read_slice(&mut out[done..done + n], b.addr)
            .map_err(|_| RequestError::BufferOutsideMemory {
                addr: b.addr.0,
                len: b.len,
            })?;
        done += n;
    }
    Ok(done)
}

/// The first `max` bytes of `buffers`.
fn truncate(buffers: Vec<GuestBuffer>, max: u32) -> Vec<GuestBuffer> {
    let mut left = max;
    buffers
        .into_iter()
        .map_while(|mut b| {
            if left == 0 {
                return None;
            }
            b.len = b.len.min(left);
            left -= b.len;
            Some(b)
        })
        .collect()
}

fn check_sectors(sector: u64, sectors: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

fn parse_segments(
    memory: &GuestMemoryMmap,
    payload: &[GuestBuffer],
    len: u64,
    discard: bool,
    limits: &Limits,
) -> Result<Vec<SectorRange>, RequestError> {
    if len == 0 || len % 16 != 0 {
        return Err(RequestError::BadSegments(len));
    }
    let (max_seg, max_sectors) = if discard {
        (limits.max_discard_seg, limits.max_discard_sectors)
    } else {
        (limits.max_write_zeroes_seg, limits.max_write_zeroes_sectors)
    };
    let count = len / 16;
    if count > u64::from(max_seg) {
        return Err(RequestError::TooManySegments {
            count,
            max: max_seg,
        });
    }
    let mut bytes = vec![0u8; len as usize];
    gather(memory, payload, &mut bytes)?;
    bytes
        .chunks_exact(16)
        .map(|seg| {
            let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
            let num_sectors = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
            // Bit 0 is "unmap"; it is only allowed for WRITE_ZEROES
            // (virtio 1.2 §5.2.6.2), every other bit is reserved.
            if flags & !1 != 0 || (discard && flags != 0) {
                return Err(RequestError::UnsupportedFlags(flags));
            }
            if num_sectors > max_sectors {
                return Err(RequestError::SegmentTooLarge {
                    sectors: num_sectors,
                    max: max_sectors,
                });
            }
            check_sectors(sector, u64::from(num_sectors), limits.capacity)?;
            Ok(SectorRange {
                sector,
                num_sectors,
                unmap: flags & 1 != 0,
            })
        })
        .collect()
}

/// Parses the request in `descriptors` (a descriptor chain). `scratch` is
/// a buffer the parser reuses between calls.
///
/// # Example
///
/// ```
/// use kindling_virtio::block::{parse, Limits, RequestKind};
/// use kindling_virtio::GuestMemoryMmap;
/// use virtio_queue::desc::split::Descriptor;
/// use vm_memory::{Bytes, GuestAddress};
///
/// let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// // Header: type 0 (read), sector 2.
/// mem.write_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0], GuestAddress(0x1000)).unwrap();
/// let chain = [
///     Descriptor::new(0x1000, 16, 1, 1),     // header, device-readable
///     Descriptor::new(0x2000, 512, 1 | 2, 2), // data, device-writable
///     Descriptor::new(0x3000, 1, 2, 0),      // status
/// ];
/// let req = parse(&mem, chain, &Limits::new(8), &mut Vec::new()).unwrap();
/// assert!(matches!(req.kind, RequestKind::Read { sector: 2, len: 512, .. }));
/// assert_eq!(req.status, GuestAddress(0x3000));
/// ```
pub fn parse<I>(
    memory: &GuestMemoryMmap,
    descriptors: I,
    limits: &Limits,
    scratch: &mut Vec<Descriptor>,
) -> Result<Request, ParseError>
where
    I: IntoIterator<Item = Descriptor>,
{
    let no_status = |error: RequestError| ParseError {
        error,
        status: None,
    };
    collect_descriptors(descriptors, scratch).map_err(|e| no_status(e.into()))?;
    let last = scratch
        .last()
        .filter(|d| d.is_write_only() && d.len() > 0)
        .ok_or_else(|| no_status(RequestError::NoStatus))?;
    let status_addr = last
        .addr()
        .0
        .checked_add(u64::from(last.len()) - 1)
        .map(GuestAddress)
        .filter(|&a| memory.check_range(a, 1))
        .ok_or_else(|| no_status(RequestError::StatusOutsideMemory(last.addr().0)))?;
    let fail = |error: RequestError| ParseError {
        error,
        status: Some(status_addr),
    };
    parse_body(memory, scratch, limits, status_addr).map_err(fail)
}

fn parse_body(
    memory: &GuestMemoryMmap,
    descriptors: &[Descriptor],
    limits: &Limits,
    status_addr: GuestAddress,
) -> Result<Request, RequestError> {
    // Device-readable buffers come first, then device-writable ones.
    let split = descriptors
        .iter()
        .position(|d| d.is_write_only())
        .unwrap_or(descriptors.len());
    let (readable, writable) = descriptors.split_at(split);
    if writable.iter().any(|d| !d.is_write_only()) {
        return Err(RequestError::ReadableAfterWritable);
    }
    for d in descriptors {
        let inside = d.addr().0.checked_add(u64::from(d.len())).is_some()
            && memory.check_range(d.addr(), d.len() as usize);
        if !inside {
            return Err(RequestError::BufferOutsideMemory {
                addr: d.addr().0,
                len: d.len(),
            });
        }
    }

    let (readable_all, _) = tail(readable, 0);
    let mut header = [0u8; 16];
    let got = gather(memory, &readable_all, &mut header)?;
    if got < header.len() {
        return Err(RequestError::ShortHeader(got as u64));
    }
    let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);

    let (in_data, in_len) = tail(readable, 16);
    // All of the writable part but the status byte.
    let writable_len: u64 = writable.iter().map(|d| u64::from(d.len())).sum();
    let (out_data, out_len) = {
        let (all, _) = tail(writable, 0);
        let keep = writable_len - 1;
        (truncate(all, keep as u32), keep)
    };
    let no_data = |direction: &'static str, len: u64| {
        if len == 0 {
            Ok(())
        } else {
            Err(RequestError::UnexpectedData {
                request_type,
                direction,
                len,
            })
        }
    };
    let data_len = |len: u64| -> Result<u32, RequestError> {
        if len % SECTOR_SIZE != 0 {
            return Err(RequestError::UnalignedLength(len));
        }
        if len > limits.max_data_bytes {
            return Err(RequestError::TooLarge {
                len,
                max: limits.max_data_bytes,
            });
        }
        check_sectors(sector, len / SECTOR_SIZE, limits.capacity)?;
        // A chain's total length is below 4 GiB, so this fits.
        u32::try_from(len).map_err(|_| RequestError::UnalignedLength(len))
    };

    let kind = match request_type {
        request_type::IN => {
            no_data("readable", in_len)?;
            let len = data_len(out_len)?;
            RequestKind::Read {
                sector,
                buffers: out_data,
                len,
            }
        }
        request_type::OUT => {
            no_data("writable", out_len)?;
            let len = data_len(in_len)?;
            RequestKind::Write {
                sector,
                buffers: in_data,
                len,
            }
        }
        request_type::FLUSH => {
            no_data("readable", in_len)?;
            no_data("writable", out_len)?;
            RequestKind::Flush
        }
        request_type::GET_ID => {
            no_data("readable", in_len)?;
            if out_len == 0 {
                return Err(RequestError::NoIdBuffer);
            }
            let len = out_len.min(ID_BYTES as u64) as u32;
            RequestKind::GetId {
                buffers: truncate(out_data, len),
                len,
            }
        }
        request_type::DISCARD | request_type::WRITE_ZEROES => {
            no_data("writable", out_len)?;
            let discard = request_type == request_type::DISCARD;
            let ranges = parse_segments(memory, &in_data, in_len, discard, limits)?;
            if discard {
                RequestKind::Discard { ranges }
            } else {
                RequestKind::WriteZeroes { ranges }
            }
        }
        other => return Err(RequestError::Unsupported(other)),
    };
    Ok(Request {
        kind,
        status: status_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::memory;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};

    const R: u16 = 0;
    const W: u16 = VRING_DESC_F_WRITE as u16;
    const HDR: u64 = 0x8000;
    const DATA: u64 = 0x9000;
    const STATUS: u64 = 0xa000;

    fn header(mem: &GuestMemoryMmap, request_type: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&request_type.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Builds the chain `(addr, len, flags)` in a mock queue and parses it.
    fn parse_chain(
        mem: &GuestMemoryMmap,
        descs: &[(u64, u32, u16)],
        limits: &Limits,
    ) -> Result<Request, ParseError> {
        let vq = MockSplitQueue::create(mem, GuestAddress(0x1000), 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .map(|&(a, l, f)| RawDescriptor::from(Descriptor::new(a, l, f, 0)))
            .collect();
        let chain = vq.build_desc_chain(&raw).unwrap();
        parse(mem, chain, limits, &mut Vec::new())
    }

    fn limits() -> Limits {
        Limits::new(16)
    }

    fn read_req(mem: &GuestMemoryMmap, sector: u64, len: u32) -> Result<Request, ParseError> {
        header(mem, request_type::IN, sector);
        parse_chain(
            mem,
            &[(HDR, 16, R), (DATA, len, W), (STATUS, 1, W)],
            &limits(),
        )
    }

    fn err(r: Result<Request, ParseError>) -> (RequestError, Option<u64>) {
        let e = r.unwrap_err();
        (e.error, e.status.map(|a| a.0))
    }

    #[test]
    fn reads_and_writes() {
        let mem = memory(0x10_0000);
        let req = read_req(&mem, 3, 1024).unwrap();
        assert_eq!(
            req.kind,
            RequestKind::Read {
                sector: 3,
                buffers: vec![GuestBuffer {
                    addr: GuestAddress(DATA),
                    len: 1024
                }],
                len: 1024
            }
        );
        assert_eq!(req.status, GuestAddress(STATUS));
        assert_eq!(req.used_len(), 1025);
        assert!(!req.is_write());

        header(&mem, request_type::OUT, 0);
        let req = parse_chain(
            &mem,
            &[
                (HDR, 16, R),
                (DATA, 512, R),
                (DATA + 512, 512, R),
                (STATUS, 1, W),
            ],
            &limits(),
        )
        .unwrap();
        assert!(req.is_write());
        assert_eq!(req.used_len(), 1);
        assert!(
            matches!(req.kind, RequestKind::Write { len: 1024, ref buffers, .. } if buffers.len() == 2)
        );
    }

    #[test]
    fn any_framing_is_accepted() {
        let mem = memory(0x10_0000);
        // Header, data and status in one readable and one writable buffer:
        // the write's data follows the header in the same buffer.
        header(&mem, request_type::OUT, 1);
        let req = parse_chain(&mem, &[(HDR, 16 + 512, R), (STATUS, 1, W)], &limits()).unwrap();
        assert_eq!(
            req.kind,
            RequestKind::Write {
                sector: 1,
                buffers: vec![GuestBuffer {
                    addr: GuestAddress(HDR + 16),
                    len: 512
                }],
                len: 512
            }
        );
        // A read whose data and status share one writable buffer, and a
        // header split in two.
        header(&mem, request_type::IN, 1);
        let req = parse_chain(
            &mem,
            &[(HDR, 4, R), (HDR + 4, 12, R), (DATA, 513, W)],
            &limits(),
        )
        .unwrap();
        assert_eq!(req.status, GuestAddress(DATA + 512));
        assert!(matches!(req.kind, RequestKind::Read { len: 512, .. }));
    }

    #[test]
    fn flush_get_id_discard_write_zeroes() {
        let mem = memory(0x10_0000);
        header(&mem, request_type::FLUSH, 0);
        let req = parse_chain(&mem, &[(HDR, 16, R), (STATUS, 1, W)], &limits()).unwrap();
        assert_eq!(req.kind, RequestKind::Flush);

        header(&mem, request_type::GET_ID, 0);
        let req = parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 64, W), (STATUS, 1, W)],
            &limits(),
        )
        .unwrap();
        assert_eq!(
            req.kind,
            RequestKind::GetId {
                buffers: vec![GuestBuffer {
                    addr: GuestAddress(DATA),
                    len: 20
                }],
                len: 20
            }
        );
        assert_eq!(req.used_len(), 21);

        let mut segs = Vec::new();
        for (sector, n, flags) in [(0u64, 4u32, 0u32), (8, 8, 1)] {
            segs.extend_from_slice(&sector.to_le_bytes());
            segs.extend_from_slice(&n.to_le_bytes());
            segs.extend_from_slice(&flags.to_le_bytes());
        }
        mem.write_slice(&segs, GuestAddress(DATA)).unwrap();
        header(&mem, request_type::WRITE_ZEROES, 0);
        let req = parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 32, R), (STATUS, 1, W)],
            &limits(),
        )
        .unwrap();
        let RequestKind::WriteZeroes { ranges } = req.kind else {
            panic!("{req:?}");
        };
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[1].offset(), ranges[1].len()), (4096, 4096));
        assert!(ranges[1].unmap && !ranges[0].unmap && !ranges[0].is_empty());

        // DISCARD refuses the unmap flag: UNSUPP.
        header(&mem, request_type::DISCARD, 0);
        let r = parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 32, R), (STATUS, 1, W)],
            &limits(),
        );
        let (e, s) = err(r);
        assert_eq!(e, RequestError::UnsupportedFlags(1));
        assert_eq!(e.status(), status::UNSUPP);
        assert_eq!(s, Some(STATUS));
        let req = parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 16, R), (STATUS, 1, W)],
            &limits(),
        )
        .unwrap();
        assert!(matches!(req.kind, RequestKind::Discard { ref ranges } if ranges.len() == 1));
    }

    #[test]
    fn unsupported_types_get_unsupp() {
        let mem = memory(0x10_0000);
        for t in [2, 3, 5, 10, 14, 15, 0x8000_0000, u32::MAX] {
            header(&mem, t, 0);
            let (e, s) = err(parse_chain(
                &mem,
                &[(HDR, 16, R), (STATUS, 1, W)],
                &limits(),
            ));
            assert_eq!(e, RequestError::Unsupported(t));
            assert_eq!(e.status(), status::UNSUPP);
            assert_eq!(s, Some(STATUS));
        }
    }

    #[test]
    fn malformed_layouts_end_with_ioerr() {
        let mem = memory(0x10_0000);
        header(&mem, request_type::IN, 0);
        type Chain = Vec<(u64, u32, u16)>;
        let cases: Vec<(Chain, RequestError)> = vec![
            (
                vec![(HDR, 8, R), (STATUS, 1, W)],
                RequestError::ShortHeader(8),
            ),
            (vec![(STATUS, 1, W)], RequestError::ShortHeader(0)),
            (
                vec![(HDR, 16, R), (DATA, 512, W), (DATA, 512, R), (STATUS, 1, W)],
                RequestError::ReadableAfterWritable,
            ),
            (
                vec![(HDR, 16, R), (DATA, 100, W), (STATUS, 1, W)],
                RequestError::UnalignedLength(100),
            ),
            (
                vec![(HDR, 16, R), (0x20_0000, 512, W), (STATUS, 1, W)],
                RequestError::BufferOutsideMemory {
                    addr: 0x20_0000,
                    len: 512,
                },
            ),
            (
                vec![(HDR, 16, R), (0xf_fe00, 0x400, W), (STATUS, 1, W)],
                RequestError::BufferOutsideMemory {
                    addr: 0xf_fe00,
                    len: 0x400,
                },
            ),
            (
                vec![(HDR, 16, R), (u64::MAX - 10, 512, W), (STATUS, 1, W)],
                RequestError::BufferOutsideMemory {
                    addr: u64::MAX - 10,
                    len: 512,
                },
            ),
            (
                vec![(HDR, 16 + 512, R), (DATA, 512, W), (STATUS, 1, W)],
                RequestError::UnexpectedData {
                    request_type: 0,
                    direction: "readable",
                    len: 512,
                },
            ),
        ];
        for (descs, expected) in cases {
            let (e, s) = err(parse_chain(&mem, &descs, &limits()));
            assert_eq!(e, expected, "{descs:x?}");
            assert_eq!(e.status(), status::IOERR);
            assert_eq!(s, Some(STATUS), "{descs:x?}");
        }
        // Wrong direction for a write, flush and GET_ID.
        header(&mem, request_type::OUT, 0);
        let (e, _) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)],
            &limits(),
        ));
        assert!(matches!(
            e,
            RequestError::UnexpectedData {
                direction: "writable",
                ..
            }
        ));
        header(&mem, request_type::FLUSH, 0);
        let (e, _) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)],
            &limits(),
        ));
        assert!(matches!(e, RequestError::UnexpectedData { .. }));
        header(&mem, request_type::GET_ID, 0);
        let (e, _) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (STATUS, 1, W)],
            &limits(),
        ));
        assert_eq!(e, RequestError::NoIdBuffer);
    }

    #[test]
    fn requests_beyond_the_end_get_ioerr() {
        let mem = memory(0x10_0000);
        assert!(read_req(&mem, 15, 512).is_ok());
        let (e, _) = err(read_req(&mem, 15, 1024));
        assert_eq!(
            e,
            RequestError::OutOfRange {
                sector: 15,
                sectors: 2,
                capacity: 16
            }
        );
        let (e, _) = err(read_req(&mem, u64::MAX, 512));
        assert!(matches!(e, RequestError::OutOfRange { .. }));
        assert!(read_req(&mem, 16, 0).is_ok());
        let (e, _) = err(read_req(&mem, 17, 0));
        assert!(e.to_string().contains("beyond"), "{e}");
    }

    #[test]
    fn bad_segments() {
        let mem = memory(0x10_0000);
        let seg = |sector: u64, n: u32, flags: u32| {
            let mut s = Vec::new();
            s.extend_from_slice(&sector.to_le_bytes());
            s.extend_from_slice(&n.to_le_bytes());
            s.extend_from_slice(&flags.to_le_bytes());
            s
        };
        header(&mem, request_type::WRITE_ZEROES, 0);
        let run = |bytes: Vec<u8>, limits: &Limits| {
            mem.write_slice(&bytes, GuestAddress(DATA)).unwrap();
            err(parse_chain(
                &mem,
                &[(HDR, 16, R), (DATA, bytes.len() as u32, R), (STATUS, 1, W)],
                limits,
            ))
            .0
        };
        assert_eq!(run(vec![0; 8], &limits()), RequestError::BadSegments(8));
        assert_eq!(
            run(seg(0, 1, 2), &limits()),
            RequestError::UnsupportedFlags(2)
        );
        assert!(matches!(
            run(seg(15, 2, 0), &limits()),
            RequestError::OutOfRange { .. }
        ));
        assert!(matches!(
            run(seg(u64::MAX, 1, 0), &limits()),
            RequestError::OutOfRange { .. }
        ));
        let mut small = limits();
        small.max_write_zeroes_sectors = 2;
        small.max_write_zeroes_seg = 1;
        assert_eq!(
            run(seg(0, 3, 0), &small),
            RequestError::SegmentTooLarge { sectors: 3, max: 2 }
        );
        let two = [seg(0, 1, 0), seg(1, 1, 0)].concat();
        assert_eq!(
            run(two, &small),
            RequestError::TooManySegments { count: 2, max: 1 }
        );
        let (e, _) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (STATUS, 1, W)],
            &limits(),
        ));
        assert_eq!(e, RequestError::BadSegments(0));
    }

    #[test]
    fn requests_without_a_status_byte_are_dropped() {
        let mem = memory(0x10_0000);
        header(&mem, request_type::IN, 0);
        // Last buffer device-readable.
        let (e, s) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (DATA, 512, R)],
            &limits(),
        ));
        assert_eq!((e, s), (RequestError::NoStatus, None));
        // Zero-length status buffer.
        let (e, s) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (STATUS, 0, W)],
            &limits(),
        ));
        assert_eq!((e, s), (RequestError::NoStatus, None));
        // Status outside memory, or at an address that wraps.
        let (e, s) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (0x20_0000, 1, W)],
            &limits(),
        ));
        assert_eq!((e, s), (RequestError::StatusOutsideMemory(0x20_0000), None));
        let (e, _) = err(parse_chain(
            &mem,
            &[(HDR, 16, R), (u64::MAX, 2, W)],
            &limits(),
        ));
        assert_eq!(e, RequestError::StatusOutsideMemory(u64::MAX));
    }

    #[test]
    fn looping_chains_are_dropped() {
        let mem = memory(0x10_0000);
        header(&mem, request_type::IN, 0);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let n = VRING_DESC_F_NEXT as u16;
        vq.desc_table()
            .store(0, RawDescriptor::from(Descriptor::new(HDR, 16, n, 1)))
            .unwrap();
        vq.desc_table()
            .store(1, RawDescriptor::from(Descriptor::new(STATUS, 1, n | W, 0)))
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let e = parse(&mem, chain, &limits(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.status, None);
        assert_eq!(
            e.error,
            RequestError::Chain(ChainError::Truncated { count: 16 })
        );
        assert!(e.to_string().contains("cut short"), "{e}");
    }
}
