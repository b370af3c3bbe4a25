//! The persist contract for the block device: it saves what the guest saw
//! (capacity, read-only, serial, queue size) and is restored on an image
//! or an I/O engine, which must still have that capacity.

use std::path::PathBuf;

use kindling_memory::Persist;

use super::{Block, BlockConfig, BlockState};
use crate::block::backend::{BlockBackend, SyncFileBackend};
use crate::block::{BlockError, SECTOR_SIZE};

/// Where a restored [`Block`] reads and writes its disk.
#[derive(Debug)]
pub enum BlockRestoreArgs {
    /// Open this image with the synchronous engine (read-only if the saved
    /// device was).
    Path(PathBuf),
    /// Use this I/O engine, already open on the disk; `path` only names the
    /// disk in errors.
    Backend {
        /// The I/O engine.
        backend: Box<dyn BlockBackend>,
        /// The disk's name, for errors.
        path: PathBuf,
    },
}

impl Persist<'_> for Block {
    type State = BlockState;
    type ConstructorArgs = BlockRestoreArgs;
    type Error = BlockError;

    /// Saves the device. Refused while requests are with the I/O engine
    /// (never the case with the synchronous engine between two queue
    /// passes): their completions cannot be saved.
    fn save(&self) -> Result<BlockState, BlockError> {
        let requests = self.pending.iter().filter(|p| p.is_some()).count();
        if requests != 0 {
            return Err(BlockError::InFlight { requests });
        }
        Ok(self.state())
    }

    /// Recreates an (inactive) device from its state; the transport's
    /// restore reactivates it with its queues. The disk must still have
    /// the capacity the guest saw ([`BlockError::CapacityChanged`]).
    fn restore(args: BlockRestoreArgs, state: &BlockState) -> Result<Self, BlockError> {
        let (backend, path): (Box<dyn BlockBackend>, PathBuf) = match args {
            BlockRestoreArgs::Path(path) => (
                Box::new(SyncFileBackend::open(&path, state.read_only)?),
                path,
            ),
            BlockRestoreArgs::Backend { backend, path } => (backend, path),
        };
        let actual = backend.size() / SECTOR_SIZE;
        if actual != state.capacity {
            return Err(BlockError::CapacityChanged {
                path,
                expected: state.capacity,
                actual,
            });
        }
        let config = BlockConfig {
            path,
            read_only: state.read_only,
            serial: None,
            queue_size: state.queue_size,
            // The engine is host configuration, not guest state: a restore
            // that wants io_uring passes that backend in.
            engine: super::super::BlockEngine::Sync,
            // Host configuration too: set it again after the restore.
            rate_limiter: None,
        };
        let mut block = Block::with_backend(backend, &config)?;
        block.serial = state.serial;
        Ok(block)
    }
}
