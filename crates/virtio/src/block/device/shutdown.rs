//! Making a disk quiet and durable: before a snapshot, and when the VM
//! ends.

use super::Block;
use crate::block::backend::{BackendError, BlockOp};

/// The token of the final flush: never a descriptor head (queues hold at
/// most 32768 entries).
const SHUTDOWN_TOKEN: u16 = u16::MAX;

impl Block {
    /// Waits for every request the engine has in flight and returns them
    /// to the driver (status, used ring, interrupt), so the device holds
    /// no I/O and can be saved. For a paused VM about to be snapshotted.
    pub fn drain_in_flight(&mut self) {
        self.backend.quiesce();
        self.complete_requests();
    }

    /// Waits for every request the engine still has in flight, then makes
    /// everything written durable (`fdatasync`). For the end of the VM:
    /// the in-flight requests' completions are not returned to the guest.
    /// Guest memory must still be mapped (it is, while the device exists).
    pub fn flush_for_shutdown(&mut self) -> Result<(), BackendError> {
        self.backend.quiesce();
        while self.backend.next_completion().is_some() {}
        self.pending.iter_mut().for_each(|p| *p = None);
        let Some(memory) = self.active.as_ref().map(|a| a.memory.clone()) else {
            // Never activated: nothing was written through this device,
            // but flush anyway (a restored or swapped image may be dirty).
            return self.flush_without_memory();
        };
        self.backend
            .submit(&memory, SHUTDOWN_TOKEN, &BlockOp::Flush)?;
        self.final_flush_result()
    }

    fn flush_without_memory(&mut self) -> Result<(), BackendError> {
        // A flush touches no guest memory: any memory will do.
        let memory = crate::GuestMemoryMmap::default();
        self.backend
            .submit(&memory, SHUTDOWN_TOKEN, &BlockOp::Flush)?;
        self.final_flush_result()
    }

    fn final_flush_result(&mut self) -> Result<(), BackendError> {
        self.backend.push_submissions()?;
        self.backend.quiesce();
        while let Some(done) = self.backend.next_completion() {
            if done.token == SHUTDOWN_TOKEN {
                return done.result;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::block::{Block, BlockConfig, BlockEngine};
    use vmm_sys_util::tempfile::TempFile;

    #[test]
    fn an_idle_disk_flushes_on_either_engine() {
        for engine in [BlockEngine::Sync, BlockEngine::IoUring] {
            let tmp = TempFile::new().unwrap();
            std::fs::write(tmp.as_path(), [1u8; 4096]).unwrap();
            let mut block = match Block::new(&BlockConfig {
                engine,
                ..BlockConfig::new(tmp.as_path())
            }) {
                Ok(b) => b,
                // A build without io_uring refuses that engine.
                Err(_) if engine == BlockEngine::IoUring => continue,
                Err(e) => panic!("{e}"),
            };
            block.flush_for_shutdown().unwrap();
            block.flush_for_shutdown().unwrap();
        }
    }
}
