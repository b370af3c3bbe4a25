//! Replacing a block device's backing image while the guest runs (what
//! Firecracker's `PATCH /drives/{id}` does, and Kata relies on).

use super::Block;
use crate::block::backend::BlockBackend;
use crate::block::{config, SECTOR_SIZE};

/// Why a backend could not be replaced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplaceBackendError {
    /// Requests handed to the old engine have not completed; replacing it
    /// now would lose them.
    #[error("{0} requests are still in flight on the current disk image")]
    RequestsInFlight(usize),
    /// The new image's size is not a multiple of 512 bytes.
    #[error("the new disk image is {0} bytes, not a multiple of 512-byte sectors")]
    UnalignedSize(u64),
}

/// What a replacement changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSwap {
    /// The capacity in sectors before.
    pub old_capacity: u64,
    /// The capacity in sectors now.
    pub new_capacity: u64,
    /// Whether the driver was sent a configuration-change interrupt (the
    /// device is active and the capacity changed).
    pub config_change_signalled: bool,
}

impl Block {
    /// Makes `backend` the device's I/O engine from the next request on;
    /// the old engine (and its file) is dropped. The read-only setting,
    /// the serial and the queue stay as they are, so the new backend must
    /// have been opened with the same read-only setting.
    ///
    /// When the capacity changes, the configuration space is updated and
    /// an active device signals a configuration change, so a Linux guest
    /// re-reads the size (as Firecracker does).
    ///
    /// Call it with the device's lock held, between two queue runs (the
    /// event loop holds the same lock while it processes the queue).
    pub fn replace_backend(
        &mut self,
        backend: Box<dyn BlockBackend>,
    ) -> Result<BackendSwap, ReplaceBackendError> {
        let size = backend.size();
        if size % SECTOR_SIZE != 0 {
            return Err(ReplaceBackendError::UnalignedSize(size));
        }
        // Between two queue runs the synchronous engine has nothing in
        // flight; an asynchronous one may, and its completions must reach
        // the guest through the engine that took the requests: finish them
        // first.
        self.drain_in_flight();
        let in_flight = self.pending.iter().flatten().count();
        if in_flight > 0 {
            return Err(ReplaceBackendError::RequestsInFlight(in_flight));
        }
        let old_capacity = self.capacity;
        let new_capacity = size / SECTOR_SIZE;
        self.backend = backend;
        self.capacity = new_capacity;
        let seg_max = u32::from(self.queue_sizes[0]).saturating_sub(2).max(1);
        self.config = config::config_space(new_capacity, seg_max);
        let mut config_change_signalled = false;
        if new_capacity != old_capacity {
            if let Some(active) = &self.active {
                // A lost interrupt only delays the guest noticing the size.
                config_change_signalled = active.interrupt.signal_config_change().is_ok();
            }
        }
        Ok(BackendSwap {
            old_capacity,
            new_capacity,
            config_change_signalled,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::block::backend::SyncFileBackend;
    use crate::block::BlockConfig;
    use crate::device::{Activation, VirtioDevice};
    use crate::interrupt::tests::CountingLine;
    use crate::queue::tests::memory;
    use crate::{features, QueueConfig, VirtioInterrupt, INT_CONFIG};

    fn image(sectors: u64) -> TempFile {
        let f = TempFile::new().unwrap();
        std::fs::write(f.as_path(), vec![0u8; (sectors * SECTOR_SIZE) as usize]).unwrap();
        f
    }

    fn backend(f: &TempFile) -> Box<dyn BlockBackend> {
        Box::new(SyncFileBackend::open(f.as_path(), false).unwrap())
    }

    fn capacity_in_config(block: &Block) -> u64 {
        let mut b = [0u8; 8];
        block.read_config(0, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn an_inactive_device_takes_the_new_size_without_an_interrupt() {
        let first = image(8);
        let mut block = Block::new(&BlockConfig::new(first.as_path())).unwrap();
        let serial = *block.serial();
        let second = image(16);
        let swap = block.replace_backend(backend(&second)).unwrap();
        assert_eq!(
            swap,
            BackendSwap {
                old_capacity: 8,
                new_capacity: 16,
                config_change_signalled: false
            }
        );
        assert_eq!(block.capacity(), 16);
        assert_eq!(capacity_in_config(&block), 16);
        assert_eq!(block.serial(), &serial, "the guest-visible id stays");
    }

    #[test]
    fn an_active_device_signals_a_size_change_only() {
        let first = image(8);
        let mut block = Block::new(&BlockConfig::new(first.as_path())).unwrap();
        let mem = memory(0x10_0000);
        let line = Arc::new(CountingLine::default());
        let interrupt = VirtioInterrupt::new(line.clone());
        let config = QueueConfig {
            max_size: 64,
            size: 64,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
        };
        let acked = block.device_features() & !features::RING_EVENT_IDX;
        block
            .activate(Activation {
                memory: mem.clone(),
                interrupt: interrupt.clone(),
                queues: vec![config.to_queue(&mem, false).unwrap()],
                acked_features: acked,
            })
            .unwrap();
        let same = image(8);
        let swap = block.replace_backend(backend(&same)).unwrap();
        assert!(!swap.config_change_signalled);
        assert_eq!(line.count(), 0);
        let bigger = image(32);
        let swap = block.replace_backend(backend(&bigger)).unwrap();
        assert!(swap.config_change_signalled);
        assert_eq!(line.count(), 1);
        assert_eq!(interrupt.status() & INT_CONFIG, INT_CONFIG);
        assert_eq!(interrupt.config_generation(), 1);
        assert_eq!(capacity_in_config(&block), 32);
    }

    /// A backend whose size is not a whole number of sectors.
    #[derive(Debug)]
    struct Odd;

    impl BlockBackend for Odd {
        fn size(&self) -> u64 {
            1000
        }
        fn default_serial(&self) -> [u8; crate::block::ID_BYTES] {
            [0; crate::block::ID_BYTES]
        }
        fn submit(
            &mut self,
            _: &crate::GuestMemoryMmap,
            _: u16,
            _: &crate::block::BlockOp<'_>,
        ) -> Result<(), crate::block::BackendError> {
            Ok(())
        }
        fn next_completion(&mut self) -> Option<crate::block::Completion> {
            None
        }
    }

    #[test]
    fn bad_replacements_are_refused_and_change_nothing() {
        let first = image(8);
        let mut block = Block::new(&BlockConfig::new(first.as_path())).unwrap();
        assert_eq!(
            block.replace_backend(Box::new(Odd)).unwrap_err(),
            ReplaceBackendError::UnalignedSize(1000)
        );
        assert_eq!(block.capacity(), 8);
        block.pending = vec![
            None,
            Some(super::super::Pending {
                status: vm_memory::GuestAddress(0),
                used_len: 1,
            }),
        ];
        let other = image(8);
        let err = block.replace_backend(backend(&other)).unwrap_err();
        assert_eq!(err, ReplaceBackendError::RequestsInFlight(1));
        assert!(err.to_string().contains("1 requests are still in flight"));
    }
}
