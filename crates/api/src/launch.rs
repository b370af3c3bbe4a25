//! `InstanceStart`: the VM built from the pre-boot resources, its disks
//! on metered backends (so metrics can count their I/O), started in the
//! background; and the live drives `PATCH /drives` changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kindling_devices::BusExitHandler;
use kindling_virtio::block::{
    BackendSwap, Block, BlockConfig, BlockMetrics, MeteredBackend, SyncFileBackend,
};
use kindling_vmm::{RunningVmm, VmConfig, VmmBuilder, VmmError};

use crate::controller::ControllerError;
use crate::models::Drive;
use crate::resources::{ResourceError, VmResources};

/// A drive of the running VM.
#[derive(Debug)]
pub(crate) struct LiveDrive {
    /// The drive id.
    pub(crate) id: String,
    /// Whether it was opened read-only (a new image is opened the same way).
    pub(crate) read_only: bool,
    /// The device.
    pub(crate) block: Arc<Mutex<Block>>,
    /// Its I/O counters, kept across image swaps.
    pub(crate) metrics: Arc<BlockMetrics>,
    /// The image the VM started with: the one a snapshot names.
    pub(crate) snapshot_image: PathBuf,
    /// The image it uses now (another after `PATCH /drives`).
    pub(crate) image: PathBuf,
}

impl LiveDrive {
    /// Makes the image at `path` the drive's backing file from the next
    /// request on.
    pub(crate) fn replace_image(&self, path: &Path) -> Result<BackendSwap, ControllerError> {
        let backend =
            SyncFileBackend::open(path, self.read_only).map_err(|source| ResourceError::Block {
                id: self.id.clone(),
                source,
            })?;
        let backend = MeteredBackend::new(backend, self.metrics.clone());
        self.block
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace_backend(Box::new(backend))
            .map_err(|source| ControllerError::ReplaceBackend {
                id: self.id.clone(),
                source,
            })
    }
}

/// A started VM and what the controller keeps of it.
#[derive(Debug)]
pub(crate) struct Launched {
    /// The running VM (its waiter goes to the runner).
    pub(crate) running: RunningVmm,
    /// The exit handler, for the vCPU exit counters.
    pub(crate) exits: Arc<BusExitHandler>,
    /// The drives, in the guest's order.
    pub(crate) drives: Vec<LiveDrive>,
}

/// Builds the VM from `config` (made by [`VmResources::vm_config`], which
/// holds the network interfaces and the vsock device) and the drives and
/// entropy device of `resources`, and starts it.
pub(crate) fn launch(resources: &VmResources, mut config: VmConfig) -> Result<Launched, VmmError> {
    // Disks and the entropy device are added here: disks on metered
    // backends, in the guest's order, then the entropy device.
    config.entropy = false;
    let mut builder = VmmBuilder::new(config)?;
    let mut drives = Vec::with_capacity(resources.drives.len());
    for (index, drive) in resources.drives.iter().enumerate() {
        drives.push(add_drive(&mut builder, index, drive)?);
    }
    if resources.entropy.is_some() {
        builder.add_virtio_device("entropy device", kindling_virtio::rng::Entropy::new())?;
    }
    let vmm = builder.build()?;
    let exits = vmm.exit_handler().clone();
    let running = vmm.start()?;
    Ok(Launched {
        running,
        exits,
        drives,
    })
}

/// Opens a drive with a metered backend and adds it to the builder.
fn add_drive(builder: &mut VmmBuilder, index: usize, drive: &Drive) -> Result<LiveDrive, VmmError> {
    let read_only = drive.is_read_only.unwrap_or(false);
    let path = drive.path_on_host.as_deref().unwrap_or("");
    let config = BlockConfig {
        read_only,
        rate_limiter: drive.rate_limiter.as_ref().map(|r| r.to_config()),
        ..BlockConfig::new(path)
    };
    let block_err = |source| VmmError::Block { index, source };
    let metrics = BlockMetrics::new();
    let backend = SyncFileBackend::open(Path::new(path), read_only).map_err(block_err)?;
    let block = Block::with_backend(
        Box::new(MeteredBackend::new(backend, metrics.clone())),
        &config,
    )
    .map_err(block_err)?;
    // As a disk of the VM: flushed when it stops, saved by snapshots.
    let block = builder.add_block_device(
        &format!("drive {}", drive.drive_id),
        block,
        path.into(),
        read_only,
    )?;
    Ok(LiveDrive {
        id: drive.drive_id.clone(),
        read_only,
        block,
        metrics,
        snapshot_image: path.into(),
        image: path.into(),
    })
}
