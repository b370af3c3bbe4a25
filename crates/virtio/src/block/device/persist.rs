//! The persist contract for the block device: it saves what the guest saw
//! (capacity, read-only, serial, queue size) and the host configuration a
//! restore needs to run it the same way (its I/O engine and rate limits),
//! and is restored on an image or an I/O engine, which must still have
//! that capacity.

use std::path::PathBuf;

use kindling_memory::Persist;

use super::{Block, BlockConfig, BlockState};
use crate::block::backend::BlockBackend;
use crate::block::{BlockError, SECTOR_SIZE};

/// Where a restored [`Block`] reads and writes its disk.
#[derive(Debug)]
pub enum BlockRestoreArgs {
    /// Open this image with the engine the saved device ran on (read-only
    /// if the saved device was).
    Path(PathBuf),
    /// Use this I/O engine, already open on the disk (it should be of the
    /// kind the state names: it is recorded as such); `path` only names
    /// the disk in errors.
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
    /// the capacity the guest saw ([`BlockError::CapacityChanged`]). The
    /// rate limits are set again with full token buckets (what the guest
    /// had used of them is not saved).
    fn restore(args: BlockRestoreArgs, state: &BlockState) -> Result<Self, BlockError> {
        let mut config = BlockConfig {
            path: PathBuf::new(),
            read_only: state.read_only,
            serial: None,
            queue_size: state.queue_size,
            engine: state.engine,
            rate_limiter: state.rate_limiter,
        };
        let backend: Box<dyn BlockBackend> = match args {
            BlockRestoreArgs::Path(path) => {
                config.path = path;
                // Check the queue size before an engine sizes its ring by
                // it.
                super::check_queue_size(state.queue_size)?;
                crate::block::engine::open(&config)?
            }
            BlockRestoreArgs::Backend { backend, path } => {
                config.path = path;
                backend
            }
        };
        let path = config.path.clone();
        let actual = backend.size() / SECTOR_SIZE;
        if actual != state.capacity {
            return Err(BlockError::CapacityChanged {
                path,
                expected: state.capacity,
                actual,
            });
        }
        let mut block = Block::with_backend(backend, &config)?;
        block.serial = state.serial;
        Ok(block)
    }
}
