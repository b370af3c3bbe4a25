//! The virtio block device (virtio 1.2 §5.2), backed by a raw disk image.
//!
//! - [`request`]: the request parser, a pure function from a descriptor
//!   chain (and the guest memory it points to) to a typed [`Request`], with
//!   no host I/O, so that it can be fuzzed on its own.
//! - [`backend`]: the I/O engine behind the [`BlockBackend`] trait, in
//!   submit/complete form so that an asynchronous engine (io_uring) can be
//!   added without touching the parser or the device; [`SyncFileBackend`]
//!   does positioned reads and writes (`pread`/`pwrite`), `fdatasync` and
//!   `fallocate` on the image file; [`IoUringBackend`] (feature
//!   `io-uring`, on by default) does reads, writes and flushes through an
//!   io_uring whose completions wake the event loop through an eventfd
//!   the device registers ([`kindling_devices::DeviceEvents`]).
//! - [`config`]: the configuration space layout.
//! - [`Block`]: the [`crate::VirtioDevice`] that ties them together.
//!
//! The image size must be a multiple of 512 bytes: an image of any other
//! size is refused when it is opened ([`BlockError::UnalignedSize`]), so
//! no part of the file is silently hidden from the guest.

pub mod backend;
pub mod config;
mod device;
mod engine;
mod image;
#[cfg(feature = "io-uring")]
mod io_uring;
pub mod metrics;
pub mod request;

pub use backend::{BackendError, BlockBackend, BlockOp, Completion, SyncFileBackend};
pub use device::{
    BackendSwap, Block, BlockConfig, BlockRestoreArgs, BlockState, ReplaceBackendError,
};
pub use engine::{BlockEngine, UnknownEngine};
#[cfg(feature = "io-uring")]
pub use io_uring::{IoUringBackend, MAX_IOVECS};
pub use metrics::{BlockCounts, BlockMetrics, MeteredBackend};
pub use request::{parse, GuestBuffer, Limits, ParseError, Request, RequestError, RequestKind};

use std::io;
use std::path::PathBuf;

use virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES;

/// The size of a virtio block sector.
pub const SECTOR_SIZE: u64 = 512;
/// The length of a GET_ID answer.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
/// The default (and maximum offered) queue size.
pub const QUEUE_SIZE: u16 = 256;

/// Request status codes (the byte the device writes last): virtio-bindings'
/// `VIRTIO_BLK_S_*` as bytes.
pub mod status {
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};

    /// Success.
    pub const OK: u8 = VIRTIO_BLK_S_OK as u8;
    /// The request failed.
    pub const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
    /// The request type (or a flag in it) is not supported.
    pub const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
}

/// Request types: virtio-bindings' `VIRTIO_BLK_T_*`.
pub mod request_type {
    use virtio_bindings::virtio_blk::{
        VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    };

    /// Read sectors.
    pub const IN: u32 = VIRTIO_BLK_T_IN;
    /// Write sectors.
    pub const OUT: u32 = VIRTIO_BLK_T_OUT;
    /// Flush the write cache.
    pub const FLUSH: u32 = VIRTIO_BLK_T_FLUSH;
    /// Read the device id (serial).
    pub const GET_ID: u32 = VIRTIO_BLK_T_GET_ID;
    /// Discard ranges of sectors.
    pub const DISCARD: u32 = VIRTIO_BLK_T_DISCARD;
    /// Write zeroes to ranges of sectors.
    pub const WRITE_ZEROES: u32 = VIRTIO_BLK_T_WRITE_ZEROES;
}

/// Block device feature bits, as 64-bit masks.
pub mod features {
    use virtio_bindings::virtio_blk::*;

    /// `size_max` in the configuration space is valid.
    pub const SIZE_MAX: u64 = 1 << VIRTIO_BLK_F_SIZE_MAX;
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
    /// io_uring could not be set up for the disk (the host kernel lacks
    /// it, or a sysctl or seccomp filter forbids it).
    #[error("cannot set up io_uring for disk image {path}: {source} (use the synchronous engine, engine=sync, on this host)")]
    IoUring {
        /// The image.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The engine was left out of this build.
    #[error("disk image {path}: the {engine} engine is not built in (kindling-virtio's `io-uring` feature is off)")]
    EngineUnavailable {
        /// The image.
        path: PathBuf,
        /// The engine.
        engine: BlockEngine,
    },
    /// The image is neither a regular file nor a block device.
    #[error("disk image {path} is {kind}: only regular files and block devices can be disks")]
    NotADisk {
        /// The image.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Another open file holds a conflicting lock on the image: another
    /// VMM uses it, or this VM was given it twice.
    #[error("disk image {path} is in use by another VMM or disk (it holds a lock on it); refusing to open it {}", if *write { "for writing" } else { "read-only while it is written" })]
    Locked {
        /// The image.
        path: PathBuf,
        /// Whether a write lock was wanted.
        write: bool,
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
    /// The rate limiter's timerfd could not be created.
    #[error("disk image {path}: cannot create the rate limiter's timerfd: {source}")]
    Timer {
        /// The image.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// A snapshot was asked for while requests were still with the I/O
    /// engine; their completions would be lost.
    #[error("cannot save the block device: {requests} requests are still in flight")]
    InFlight {
        /// Requests submitted and not completed.
        requests: usize,
    },
}
