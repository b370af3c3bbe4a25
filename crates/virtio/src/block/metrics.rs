//! Counters of a block device's I/O, kept by a [`MeteredBackend`] that
//! wraps any [`BlockBackend`], so the device and its engines stay
//! unchanged.
//!
//! The counters are atomics in an `Arc`: a metrics thread reads them
//! without taking the device's lock, and they survive a backend swap
//! ([`Block::replace_backend`](crate::block::Block::replace_backend)) when
//! the new backend is wrapped with the same [`BlockMetrics`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::backend::{BackendError, BlockBackend, BlockOp, Completion};
use super::ID_BYTES;
use crate::GuestMemoryMmap;

/// I/O counters of one block device (names as in Firecracker's `block`
/// metrics where the meaning is the same).
#[derive(Debug, Default)]
pub struct BlockMetrics {
    read_count: AtomicU64,
    write_count: AtomicU64,
    flush_count: AtomicU64,
    discard_count: AtomicU64,
    write_zeroes_count: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    io_errors: AtomicU64,
}

/// A copy of a device's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlockCounts {
    /// Read requests started.
    pub read_count: u64,
    /// Write requests started.
    pub write_count: u64,
    /// Flush requests started.
    pub flush_count: u64,
    /// Discard requests started.
    pub discard_count: u64,
    /// Write-zeroes requests started.
    pub write_zeroes_count: u64,
    /// Bytes requested by reads.
    pub read_bytes: u64,
    /// Bytes requested by writes.
    pub write_bytes: u64,
    /// Requests the engine failed (refused at submission or completed
    /// with an error).
    pub io_errors: u64,
}

impl BlockCounts {
    /// The counts of `self` and `other` added up (for totals over devices).
    pub fn add(&self, other: &BlockCounts) -> BlockCounts {
        BlockCounts {
            read_count: self.read_count + other.read_count,
            write_count: self.write_count + other.write_count,
            flush_count: self.flush_count + other.flush_count,
            discard_count: self.discard_count + other.discard_count,
            write_zeroes_count: self.write_zeroes_count + other.write_zeroes_count,
            read_bytes: self.read_bytes + other.read_bytes,
            write_bytes: self.write_bytes + other.write_bytes,
            io_errors: self.io_errors + other.io_errors,
        }
    }
}

impl BlockMetrics {
    /// New zeroed counters, shareable.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counts so far.
    pub fn counts(&self) -> BlockCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BlockCounts {
            read_count: get(&self.read_count),
            write_count: get(&self.write_count),
            flush_count: get(&self.flush_count),
            discard_count: get(&self.discard_count),
            write_zeroes_count: get(&self.write_zeroes_count),
            read_bytes: get(&self.read_bytes),
            write_bytes: get(&self.write_bytes),
            io_errors: get(&self.io_errors),
        }
    }

    fn record(&self, op: &BlockOp<'_>) {
        let bytes = |buffers: &[super::GuestBuffer]| -> u64 {
            buffers.iter().map(|b| u64::from(b.len)).sum()
        };
        match op {
            BlockOp::Read { buffers, .. } => {
                self.read_count.fetch_add(1, Ordering::Relaxed);
                self.read_bytes.fetch_add(bytes(buffers), Ordering::Relaxed);
            }
            BlockOp::Write { buffers, .. } => {
                self.write_count.fetch_add(1, Ordering::Relaxed);
                self.write_bytes
                    .fetch_add(bytes(buffers), Ordering::Relaxed);
            }
            BlockOp::Flush => {
                self.flush_count.fetch_add(1, Ordering::Relaxed);
            }
            BlockOp::Discard { .. } => {
                self.discard_count.fetch_add(1, Ordering::Relaxed);
            }
            BlockOp::WriteZeroes { .. } => {
                self.write_zeroes_count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count_error(&self) {
        self.io_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// A [`BlockBackend`] that counts what passes through it into a
/// [`BlockMetrics`].
#[derive(Debug)]
pub struct MeteredBackend<B> {
    inner: B,
    metrics: Arc<BlockMetrics>,
}

impl<B: BlockBackend> MeteredBackend<B> {
    /// Wraps `inner`, counting into `metrics`.
    pub fn new(inner: B, metrics: Arc<BlockMetrics>) -> Self {
        Self { inner, metrics }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }
}

impl<B: BlockBackend> BlockBackend for MeteredBackend<B> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn default_serial(&self) -> [u8; ID_BYTES] {
        self.inner.default_serial()
    }

    fn submit(
        &mut self,
        memory: &GuestMemoryMmap,
        token: u16,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError> {
        self.metrics.record(op);
        let result = self.inner.submit(memory, token, op);
        if result.is_err() {
            self.metrics.count_error();
        }
        result
    }

    fn next_completion(&mut self) -> Option<Completion> {
        let done = self.inner.next_completion()?;
        if done.result.is_err() {
            self.metrics.count_error();
        }
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::backend::SyncFileBackend;
    use crate::block::GuestBuffer;
    use crate::queue::tests::memory;
    use vm_memory::GuestAddress;
    use vmm_sys_util::tempfile::TempFile;

    #[test]
    fn operations_and_errors_are_counted() {
        let image = TempFile::new().unwrap();
        std::fs::write(image.as_path(), vec![7u8; 4096]).unwrap();
        let metrics = BlockMetrics::new();
        let backend = SyncFileBackend::open(image.as_path(), false).unwrap();
        let mut b = MeteredBackend::new(backend, metrics.clone());
        assert_eq!(b.size(), 4096);
        assert_eq!(b.default_serial(), b.inner.default_serial());
        let mem = memory(0x10_0000);
        let buf = [GuestBuffer {
            addr: GuestAddress(0x1000),
            len: 1024,
        }];
        b.submit(
            &mem,
            1,
            &BlockOp::Read {
                offset: 0,
                buffers: &buf,
            },
        )
        .unwrap();
        b.submit(
            &mem,
            2,
            &BlockOp::Write {
                offset: 512,
                buffers: &buf,
            },
        )
        .unwrap();
        b.submit(&mem, 3, &BlockOp::Flush).unwrap();
        // Past the end of guest memory: the engine fails it.
        let bad = [GuestBuffer {
            addr: GuestAddress(0x20_0000),
            len: 512,
        }];
        let _ = b.submit(
            &mem,
            4,
            &BlockOp::Read {
                offset: 0,
                buffers: &bad,
            },
        );
        let mut completions = 0;
        while b.next_completion().is_some() {
            completions += 1;
        }
        assert!(completions >= 3);
        let c = metrics.counts();
        assert_eq!((c.read_count, c.write_count, c.flush_count), (2, 1, 1));
        assert_eq!((c.read_bytes, c.write_bytes), (1536, 1024));
        assert_eq!(c.io_errors, 1);
        assert_eq!(b.metrics().counts(), c);
        assert_eq!(c.add(&c).read_count, 4);
    }
}
