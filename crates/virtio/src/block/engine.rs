//! Choosing a block I/O engine per disk.

use std::fmt;
use std::str::FromStr;

use super::backend::{BlockBackend, SyncFileBackend};
use super::{BlockConfig, BlockError};

/// The I/O engine behind a block device.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum BlockEngine {
    /// Positioned reads and writes on the event-loop thread
    /// ([`SyncFileBackend`]), the default.
    #[default]
    Sync,
    /// io_uring ([`super::IoUringBackend`], kindling-virtio's `io-uring`
    /// feature): operations complete asynchronously and wake the event
    /// loop.
    IoUring,
}

impl BlockEngine {
    /// The engine's name as `FromStr` reads it: `sync` or `io_uring`.
    pub fn name(self) -> &'static str {
        match self {
            BlockEngine::Sync => "sync",
            BlockEngine::IoUring => "io_uring",
        }
    }
}

impl fmt::Display for BlockEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A block engine name that is neither `sync` nor `io_uring`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown block engine {0:?}: expected sync or io_uring")]
pub struct UnknownEngine(pub String);

impl FromStr for BlockEngine {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(BlockEngine::Sync),
            "io_uring" => Ok(BlockEngine::IoUring),
            other => Err(UnknownEngine(other.to_string())),
        }
    }
}

/// Opens `config.path` with `config.engine`.
pub(crate) fn open(config: &BlockConfig) -> Result<Box<dyn BlockBackend>, BlockError> {
    let sync = SyncFileBackend::open(&config.path, config.read_only)?;
    match config.engine {
        BlockEngine::Sync => Ok(Box::new(sync)),
        #[cfg(feature = "io-uring")]
        BlockEngine::IoUring => Ok(Box::new(super::IoUringBackend::new(
            sync,
            config.queue_size,
        )?)),
        #[cfg(not(feature = "io-uring"))]
        BlockEngine::IoUring => Err(BlockError::EngineUnavailable {
            path: config.path.clone(),
            engine: BlockEngine::IoUring,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for engine in [BlockEngine::Sync, BlockEngine::IoUring] {
            assert_eq!(engine.to_string().parse::<BlockEngine>(), Ok(engine));
        }
        assert_eq!(BlockEngine::default(), BlockEngine::Sync);
        let e = "bogus".parse::<BlockEngine>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown block engine \"bogus\": expected sync or io_uring"
        );
        assert!("IO_URING".parse::<BlockEngine>().is_err());
    }

    #[test]
    fn each_engine_opens_or_says_why_not() {
        let tmp = vmm_sys_util::tempfile::TempFile::new().unwrap();
        std::fs::write(tmp.as_path(), [0u8; 4096]).unwrap();
        let mut config = BlockConfig::new(tmp.as_path());
        assert!(open(&config).unwrap().completion_event().is_none());
        config.engine = BlockEngine::IoUring;
        #[cfg(feature = "io-uring")]
        assert!(open(&config).unwrap().completion_event().is_some());
        #[cfg(not(feature = "io-uring"))]
        {
            let e = open(&config).unwrap_err();
            assert!(matches!(e, BlockError::EngineUnavailable { .. }), "{e}");
            assert!(
                e.to_string().contains("io_uring engine is not built in"),
                "{e}"
            );
        }
    }
}
