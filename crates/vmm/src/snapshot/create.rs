//! Taking a snapshot of a paused microVM.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kindling_memory::{dump_memory, MemoryDump, Persist};
use kindling_virtio::MmioTransportState;

use super::state::{
    LegacyState, MemoryFileState, MemoryLayoutState, MicrovmState, SnapshotKind, VirtioDeviceState,
    VirtioSlotState,
};
use super::{encode_state, SnapshotError};
use crate::devices::{VirtioKind, VirtioSlot};
use crate::lifecycle::VmmHandle;
use crate::vmm::VmView;
use crate::{VmRunState, VmmError};

/// What to snapshot and where (Firecracker's `PUT /snapshot/create`:
/// `snapshot_type`, `snapshot_path`, `mem_file_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Full or diff.
    pub kind: SnapshotKind,
    /// The state file to write (replaced atomically: a temporary file in
    /// the same directory, renamed).
    pub state_path: PathBuf,
    /// The memory file to write (created or truncated; sparse).
    pub mem_path: PathBuf,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Full or diff.
    pub kind: SnapshotKind,
    /// 4 KiB pages written to the memory file.
    pub pages_written: u64,
    /// The memory file's logical size (guest RAM).
    pub mem_file_size: u64,
    /// The state file's size in bytes.
    pub state_bytes: u64,
}

fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VmmHandle {
    /// Snapshots the paused VM into `request.state_path` and
    /// `request.mem_path`; the VM stays paused.
    ///
    /// Before anything is saved: coalesced serial output is replayed and
    /// flushed, every vCPU is parked outside `KVM_RUN` (its state is saved
    /// on its own thread), and the device event loop is parked, so no
    /// device processes a queue. A disk with requests still at its I/O
    /// engine refuses to be saved (the synchronous engine never has any
    /// between two queue passes; an asynchronous engine must complete or
    /// cancel its requests when the loop parks).
    ///
    /// The files are written through the page cache and not synced: a
    /// restore on this host sees them at once; sync them (`fsync`,
    /// `sync -f`) if they must survive a host crash.
    ///
    /// A full snapshot writes every page the guest touched and resets the
    /// dirty tracking, so that a later diff is relative to it. A diff
    /// needs [`VmConfig::track_dirty_pages`](crate::VmConfig::track_dirty_pages)
    /// and a base (a full snapshot of this VM, or the snapshot it was
    /// restored from). If a snapshot fails after the dirty pages were
    /// read, the next diff is refused until a full snapshot is taken.
    pub fn snapshot(&self, request: &SnapshotRequest) -> Result<SnapshotInfo, VmmError> {
        let _guard = lock(&self.shared.snapshot_lock);
        let state = self.state();
        if state != VmRunState::Paused {
            return Err(SnapshotError::NotPaused { state }.into());
        }
        let Some(view) = self.shared.view.get() else {
            return Err(SnapshotError::NotPaused { state }.into());
        };
        if request.kind == SnapshotKind::Diff {
            if !view.vm.dirty_log_enabled() {
                return Err(SnapshotError::DirtyTrackingOff.into());
            }
            if !self.shared.diff_base.load(Ordering::SeqCst) {
                return Err(SnapshotError::NoDiffBase.into());
            }
        }
        if request.kind == SnapshotKind::Full && view.lazy_memory {
            return Err(SnapshotError::LazyMemory.into());
        }
        // Refuse unknown devices before any work.
        if let Some(slot) = view
            .devices
            .virtio
            .iter()
            .find(|s| matches!(s.kind, VirtioKind::Other))
        {
            return Err(SnapshotError::UnsupportedDevice {
                name: slot.name.clone(),
            }
            .into());
        }
        if let Some(coalesced) = &view.coalesced {
            coalesced.drain(&*view.handler);
        }
        // Console output is best effort; it never fails a snapshot.
        let _ = view.serial_flusher.flush_pending();

        let vcpus = {
            let handles = lock(&self.shared.vcpus);
            let mut states = Vec::with_capacity(handles.len());
            for handle in handles.iter() {
                let state = handle
                    .save_state()
                    .map_err(|source| SnapshotError::SaveVcpu {
                        id: handle.id(),
                        source,
                    })?;
                states.push(state);
            }
            states
        };
        let vm = view.vm.save().map_err(SnapshotError::SaveVm)?;
        let legacy = save_legacy(view)?;
        let virtio = view
            .devices
            .virtio
            .iter()
            .map(save_slot)
            .collect::<Result<Vec<_>, _>>()?;
        let options = view.vm.options();
        let cpu_vendor = vcpus
            .first()
            .map(|v| kindling_vcpu::x86_64::cpu_compat::vendor(&v.cpuid))
            .unwrap_or_default();

        // Memory: from here on the dirty pages are consumed.
        let memory = &view.memory.memory;
        let mem_file = create_file(&request.mem_path, "memory file")?;
        let (memory_file, dump) = match request.kind {
            SnapshotKind::Full => {
                let stats = dump_memory(memory, &mem_file, MemoryDump::Full);
                // Whatever happened, the dirty pages since the last
                // snapshot are gone; only a successful full dump is a base.
                self.shared.diff_base.store(false, Ordering::SeqCst);
                let reset = view
                    .vm
                    .dirty_pages(memory)
                    .map_err(SnapshotError::DirtyPages);
                let stats = stats.map_err(|source| SnapshotError::Memory {
                    path: request.mem_path.clone(),
                    source,
                })?;
                reset?;
                (
                    MemoryFileState {
                        kind: SnapshotKind::Full,
                        dirty: Vec::new(),
                    },
                    stats,
                )
            }
            SnapshotKind::Diff => {
                self.shared.diff_base.store(false, Ordering::SeqCst);
                let dirty = view
                    .vm
                    .dirty_pages(memory)
                    .map_err(SnapshotError::DirtyPages)?;
                let stats =
                    dump_memory(memory, &mem_file, MemoryDump::Diff(&dirty)).map_err(|source| {
                        SnapshotError::Memory {
                            path: request.mem_path.clone(),
                            source,
                        }
                    })?;
                (MemoryFileState::diff(&dirty), stats)
            }
        };
        let state = MicrovmState {
            memory: MemoryLayoutState {
                size_mib: view.memory.config.size_mib,
                track_dirty_pages: options.dirty_log,
                tss_address: options.tss_address,
                identity_map_address: options.identity_map_address,
            },
            memory_file,
            cpu_vendor,
            vm,
            vcpus,
            legacy,
            virtio,
        };
        let bytes = encode_state(&state).map_err(|source| SnapshotError::Format {
            path: request.state_path.clone(),
            source,
        })?;
        write_atomically(&request.state_path, &bytes)?;
        self.shared.diff_base.store(true, Ordering::SeqCst);
        Ok(SnapshotInfo {
            kind: request.kind,
            pages_written: dump.pages_written,
            mem_file_size: dump.file_size,
            state_bytes: bytes.len() as u64,
        })
    }
}

fn save_legacy(view: &VmView) -> Result<LegacyState, SnapshotError> {
    let legacy = &view.devices.legacy;
    let err = |device: &str| {
        let device = device.to_string();
        move |e: kindling_devices::legacy::LegacyStateError| SnapshotError::SaveDevice {
            device,
            source: Box::new(e),
        }
    };
    Ok(LegacyState {
        serial: lock(&legacy.serial).save().map_err(err("serial port"))?,
        i8042: lock(&legacy.i8042).save().map_err(err("i8042"))?,
        rtc: lock(&legacy.rtc).save().map_err(err("CMOS RTC"))?,
        acpi_pm: lock(&legacy.acpi_pm)
            .save()
            .map_err(err("ACPI PM registers"))?,
    })
}

fn save_slot(slot: &VirtioSlot) -> Result<VirtioSlotState, SnapshotError> {
    let save_err = |source: Box<dyn std::error::Error + Send + Sync>| SnapshotError::SaveDevice {
        device: slot.name.clone(),
        source,
    };
    let device = match &slot.kind {
        VirtioKind::Block { device, path, .. } => VirtioDeviceState::Block {
            path: path.clone(),
            state: {
                let mut device = lock(device);
                // An asynchronous engine may still hold requests: finish
                // them (the guest sees them completed) before saving.
                device.drain_in_flight();
                device.save().map_err(|e| save_err(Box::new(e)))?
            },
        },
        VirtioKind::Entropy(device) => {
            VirtioDeviceState::Entropy(lock(device).save().map_err(|e| save_err(Box::new(e)))?)
        }
        VirtioKind::Net { device, iface_id } => VirtioDeviceState::Net {
            iface_id: iface_id.clone(),
            state: lock(device).save().map_err(|e| save_err(Box::new(e)))?,
        },
        VirtioKind::Vsock(device) => {
            VirtioDeviceState::Vsock(lock(device).save().map_err(|e| save_err(Box::new(e)))?)
        }
        VirtioKind::Other => {
            return Err(SnapshotError::UnsupportedDevice {
                name: slot.name.clone(),
            })
        }
    };
    let transport: MmioTransportState = lock(&slot.transport)
        .save()
        .map_err(|e| save_err(Box::new(e)))?;
    Ok(VirtioSlotState {
        name: slot.name.clone(),
        base: slot.base,
        irq: slot.irq,
        transport,
        device,
    })
}

fn file_err<'a>(
    op: &'static str,
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::File {
        op,
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn create_file(path: &Path, what: &'static str) -> Result<File, SnapshotError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(file_err("create", what, path))
}

/// Writes `bytes` to a temporary file next to `path` and renames it over
/// `path`: a reader sees the old file or the new one, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let result = (|| {
        let mut file = create_file(&tmp, "temporary state file")?;
        file.write_all(bytes)
            .map_err(file_err("write", "temporary state file", &tmp))?;
        std::fs::rename(&tmp, path).map_err(file_err("rename into place", "state file", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_is_replaced_whole() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("vm.state");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.as_path()).unwrap().count(), 1);
        // A directory that does not exist: a clear error naming the file.
        let err = write_atomically(&dir.as_path().join("no/such/dir"), b"x").unwrap_err();
        assert!(err.to_string().contains("temporary state file"), "{err}");
    }
}
