//! The virtio block device (virtio 1.2 §5.2), backed by a raw disk image.
//!
//! - [`request`]: the request parser, a pure function from a descriptor
//!   chain (and the guest memory it points to) to a typed [`Request`], with
//!   no host I/O, so that it can be fuzzed on its own.
//! - [`backend`]: the I/O engine behind the [`BlockBackend`] trait, in
//!   submit/complete form so that an asynchronous engine (io_uring) can be
//!   added without touching the parser or the device; [`SyncFileBackend`]
//!   does positioned reads and writes (`pread`/`pwrite`), `fdatasync` and
//!   `fallocate` on the image file.
//! - [`config`]: the configuration space layout.
//! - [`Block`]: the [`crate::VirtioDevice`] that ties them together.
//!
//! The image size must be a multiple of 512 bytes: an image of any other
//! size is refused when it is opened ([`BlockError::UnalignedSize`]), so
//! no part of the file is silently hidden from the guest.

pub mod backend;
pub mod config;
mod device;
pub mod metrics;
pub mod request;

pub use backend::{BackendError, BlockBackend, BlockOp, Completion, SyncFileBackend};
pub use device::{BackendSwap, Block, BlockConfig, BlockState, ReplaceBackendError};
pub use metrics::{BlockCounts, BlockMetrics, MeteredBackend};
pub use request::{parse, GuestBuffer, Limits, ParseError, Request, RequestError, RequestKind};

use std::io;
use std::path::PathBuf;

/// The size of a virtio block sector.
pub const SECTOR_SIZE: u64 = 512;
/// The length of a GET_ID answer.
pub const ID_BYTES: usize = 20;
/// The default (and maximum offered) queue size.
pub const QUEUE_SIZE: u16 = 256;

/// Request status codes (the byte the device writes last).
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const IOERR: u8 = 1;
    /// The request type (or a flag in it) is not supported.
    pub const UNSUPP: u8 = 2;
}

/// Request types.
pub mod request_type {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Read the device id (serial).
    pub const GET_ID: u32 = 8;
    /// Discard ranges of sectors.
    pub const DISCARD: u32 = 11;
    /// Write zeroes to ranges of sectors.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Block device feature bits, as 64-bit masks.
pub mod features {
    use virtio_bindings::virtio_blk::*;

    /// `seg_max` in the configuration space is valid.
    pub const SEG_MAX: u64 = 1 << VIRTIO_BLK_F_SEG_MAX;
    /// The device is read-only.
    pub const RO: u64 = 1 << VIRTIO_BLK_F_RO;
    /// `blk_size` in the configuration space is valid.
    pub const BLK_SIZE: u64 = 1 << VIRTIO_BLK_F_BLK_SIZE;
    /// FLUSH requests are supported.
    pub const FLUSH: u64 = 1 << VIRTIO_BLK_F_FLUSH;
    /// DISCARD requests are supported.
    pub const DISCARD: u64 = 1 << VIRTIO_BLK_F_DISCARD;
    /// WRITE_ZEROES requests are supported.
    pub const WRITE_ZEROES: u64 = 1 << VIRTIO_BLK_F_WRITE_ZEROES;
}

/// Errors creating or restoring a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image file could not be opened.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The image file's size could not be read.
    #[error("cannot read the size of disk image {path}: {source}")]
    Metadata {
        /// The image.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The image size is not a multiple of 512 bytes.
    #[error("disk image {path} is {size} bytes, not a multiple of 512-byte sectors")]
    UnalignedSize {
        /// The image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The queue size is not a power of two between 1 and 32768.
    #[error("block queue size {0} is not a power of two between 2 and 32768")]
    InvalidQueueSize(u16),
    /// The configured serial is longer than 20 bytes.
    #[error("block device serial {serial:?} is {len} bytes, longer than the 20 GET_ID allows")]
    SerialTooLong {
        /// The serial.
        serial: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The image no longer matches the snapshot.
    #[error("disk image {path} has {actual} sectors, the snapshot expects {expected}")]
    CapacityChanged {
        /// The image.
        path: PathBuf,
        /// Sectors in the snapshot.
        expected: u64,
        /// Sectors in the image now.
        actual: u64,
    },
}
