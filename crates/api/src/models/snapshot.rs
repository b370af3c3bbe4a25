//! `PUT /snapshot/create` and `PUT /snapshot/load`: Firecracker's bodies,
//! and the checked requests they become.

use std::path::PathBuf;

use kindling_vmm::snapshot::{DeviceRef, DiskOverride, MemBackend, NetOverride, SnapshotKind};
use serde::Deserialize;

/// Firecracker's `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SnapshotType {
    /// Every page the guest touched.
    #[default]
    Full,
    /// The pages written since the last snapshot (needs
    /// `track_dirty_pages`).
    Diff,
}

impl From<SnapshotType> for SnapshotKind {
    fn from(t: SnapshotType) -> Self {
        match t {
            SnapshotType::Full => SnapshotKind::Full,
            SnapshotType::Diff => SnapshotKind::Diff,
        }
    }
}

/// Firecracker's `SnapshotCreateParams` (`PUT /snapshot/create`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Full (the default) or Diff.
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    /// The state file to write.
    pub snapshot_path: String,
    /// The memory file to write.
    pub mem_file_path: String,
    /// The snapshot format version older Firecracker releases took:
    /// refused, Kindling writes one format.
    #[serde(default)]
    pub version: Option<String>,
}

/// Firecracker's `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BackendType {
    /// A memory file, mapped private.
    File,
    /// A userfaultfd page-fault handler listening on a Unix socket.
    Uffd,
}

/// Firecracker's `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// File or Uffd.
    pub backend_type: BackendType,
    /// The memory file, or the handler's socket.
    pub backend_path: String,
}

/// Firecracker's `NetworkOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface.
    pub iface_id: String,
    /// Its new TAP device.
    pub host_dev_name: String,
}

/// A Kindling extension of `SnapshotLoadParams`: another image for one of
/// the snapshot's drives (Firecracker has no such field: its users
/// `PATCH /drives` after the load).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveOverride {
    /// The drive, as it was put (`PUT /drives/{drive_id}`; `disk0`,
    /// `disk1`, ... for the example's `--disk` flags).
    pub drive_id: String,
    /// The image to open instead of the one the snapshot names.
    pub path_on_host: String,
}

/// Firecracker's `VsockOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// The new socket path.
    pub uds_path: String,
}

/// Firecracker's `SnapshotLoadParams` (`PUT /snapshot/load`), as sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// The state file.
    pub snapshot_path: String,
    /// Where guest memory comes from.
    #[serde(default)]
    pub mem_backend: Option<MemoryBackend>,
    /// The memory file (deprecated: a `File` backend).
    #[serde(default)]
    pub mem_file_path: Option<String>,
    /// Dirty page tracking (deprecated name).
    #[serde(default)]
    pub enable_diff_snapshots: Option<bool>,
    /// Dirty page tracking.
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM once loaded (otherwise it stays paused).
    #[serde(default)]
    pub resume_vm: bool,
    /// Other TAP devices for the snapshot's network interfaces.
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// Another socket path for the vsock device.
    #[serde(default)]
    pub vsock_override: Option<VsockOverride>,
    /// Other images for some drives (a Kindling extension).
    #[serde(default)]
    pub drive_overrides: Vec<DriveOverride>,
    /// Advance kvmclock by the time since the snapshot.
    #[serde(default)]
    pub clock_realtime: bool,
    /// The restored VM's huge pages: `Snapshot`, `None`, `Transparent`,
    /// `2M`.
    #[serde(default)]
    pub huge_pages: Option<String>,
}

/// A checked `PUT /snapshot/create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCreate {
    /// Full or diff.
    pub kind: SnapshotKind,
    /// The state file.
    pub state_path: PathBuf,
    /// The memory file.
    pub mem_path: PathBuf,
}

/// A checked `PUT /snapshot/load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLoad {
    /// The state file.
    pub state_path: PathBuf,
    /// Where guest memory comes from.
    pub memory: MemBackend,
    /// The dirty page tracking asked for (`None`: the snapshot's).
    pub track_dirty_pages: Option<bool>,
    /// Resume once loaded.
    pub resume: bool,
    /// Other TAPs for network interfaces, by `iface_id`.
    pub net_overrides: Vec<NetOverride>,
    /// Another socket path for the vsock device.
    pub vsock_override: Option<PathBuf>,
    /// Other images for some drives.
    pub disk_overrides: Vec<DiskOverride>,
}

/// Why a snapshot body is refused (its JSON was well formed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotParamsError {
    /// A path field is empty.
    #[error("{0} is empty")]
    EmptyPath(&'static str),
    /// `version` was given.
    #[error("version is not supported: Kindling writes a single snapshot format and takes no target version (leave the field out)")]
    Version,
    /// Neither `mem_backend` nor `mem_file_path`.
    #[error("PUT /snapshot/load needs the guest memory: give mem_backend (or the deprecated mem_file_path)")]
    NoMemory,
    /// Both `mem_backend` and `mem_file_path`.
    #[error("mem_backend and mem_file_path are both given: give only one (mem_file_path is the deprecated form of a File mem_backend)")]
    BothMemory,
    /// `enable_diff_snapshots` and `track_dirty_pages` disagree.
    #[error("enable_diff_snapshots ({0}) and track_dirty_pages ({1}) disagree: give only track_dirty_pages")]
    DirtyTrackingConflict(bool, bool),
    /// A load option Kindling does not support yet.
    #[error("{0} not supported yet")]
    Unsupported(&'static str),
    /// An unknown `huge_pages` value.
    #[error("huge_pages {0:?} is not Snapshot, None, Transparent or 2M")]
    HugePages(String),
}

fn non_empty(what: &'static str, path: String) -> Result<PathBuf, SnapshotParamsError> {
    if path.is_empty() {
        return Err(SnapshotParamsError::EmptyPath(what));
    }
    Ok(path.into())
}

impl SnapshotCreateParams {
    /// Checks the body: non-empty paths, no `version`.
    pub fn check(self) -> Result<SnapshotCreate, SnapshotParamsError> {
        if self.version.is_some() {
            return Err(SnapshotParamsError::Version);
        }
        Ok(SnapshotCreate {
            kind: self.snapshot_type.into(),
            state_path: non_empty("snapshot_path", self.snapshot_path)?,
            mem_path: non_empty("mem_file_path", self.mem_file_path)?,
        })
    }
}

impl SnapshotLoadParams {
    /// Checks the body: exactly one memory source, non-empty paths and
    /// override fields, one dirty-tracking setting, and nothing Kindling
    /// cannot do yet (`clock_realtime`, huge pages other than the
    /// snapshot's or none). Whether an override names an interface of the
    /// snapshot, and its TAP exists, is checked by the restore.
    ///
    /// ```
    /// use kindling_api::models::SnapshotLoadParams;
    /// use kindling_vmm::snapshot::MemBackend;
    ///
    /// let body = r#"{"snapshot_path": "vm.state", "mem_file_path": "vm.mem", "resume_vm": true}"#;
    /// let params: SnapshotLoadParams = serde_json::from_str(body).unwrap();
    /// let load = params.check().unwrap();
    /// assert_eq!(load.memory, MemBackend::File("vm.mem".into()));
    /// assert!(load.resume);
    ///
    /// let both = r#"{"snapshot_path": "s", "mem_file_path": "m",
    ///     "mem_backend": {"backend_type": "File", "backend_path": "m"}}"#;
    /// let params: SnapshotLoadParams = serde_json::from_str(both).unwrap();
    /// assert!(params.check().unwrap_err().to_string().contains("give only one"));
    /// ```
    pub fn check(self) -> Result<SnapshotLoad, SnapshotParamsError> {
        use SnapshotParamsError::Unsupported;
        let state_path = non_empty("snapshot_path", self.snapshot_path)?;
        let memory = match (self.mem_backend, self.mem_file_path) {
            (Some(_), Some(_)) => return Err(SnapshotParamsError::BothMemory),
            (None, None) => return Err(SnapshotParamsError::NoMemory),
            (None, Some(path)) => MemBackend::File(non_empty("mem_file_path", path)?),
            (Some(backend), None) => {
                let path = non_empty("mem_backend.backend_path", backend.backend_path)?;
                match backend.backend_type {
                    BackendType::File => MemBackend::File(path),
                    BackendType::Uffd => MemBackend::Uffd(path),
                }
            }
        };
        let track_dirty_pages = match (self.enable_diff_snapshots, self.track_dirty_pages) {
            (Some(a), Some(b)) if a != b => {
                return Err(SnapshotParamsError::DirtyTrackingConflict(a, b))
            }
            (a, b) => b.or(a),
        };
        let mut net_overrides = Vec::with_capacity(self.network_overrides.len());
        for o in self.network_overrides {
            if o.iface_id.is_empty() {
                return Err(SnapshotParamsError::EmptyPath(
                    "network_overrides[].iface_id",
                ));
            }
            if o.host_dev_name.is_empty() {
                return Err(SnapshotParamsError::EmptyPath(
                    "network_overrides[].host_dev_name",
                ));
            }
            net_overrides.push(NetOverride {
                iface: DeviceRef::Id(o.iface_id),
                tap: o.host_dev_name,
            });
        }
        let mut disk_overrides = Vec::with_capacity(self.drive_overrides.len());
        for o in self.drive_overrides {
            if o.drive_id.is_empty() {
                return Err(SnapshotParamsError::EmptyPath("drive_overrides[].drive_id"));
            }
            disk_overrides.push(DiskOverride {
                // The VMM names an API drive's device "drive <id>".
                drive: DeviceRef::Id(format!("drive {}", o.drive_id)),
                path: non_empty("drive_overrides[].path_on_host", o.path_on_host)?,
            });
        }
        let vsock_override = match self.vsock_override {
            Some(o) => Some(non_empty("vsock_override.uds_path", o.uds_path)?),
            None => None,
        };
        if self.clock_realtime {
            return Err(Unsupported("clock_realtime: true is"));
        }
        match self.huge_pages.as_deref() {
            None | Some("Snapshot") | Some("None") => {}
            Some("Transparent") | Some("2M") => {
                return Err(Unsupported(
                    "huge pages for a restored VM (huge_pages \"Transparent\" or \"2M\") are",
                ))
            }
            Some(other) => return Err(SnapshotParamsError::HugePages(other.to_string())),
        }
        Ok(SnapshotLoad {
            state_path,
            memory,
            track_dirty_pages,
            resume: self.resume_vm,
            net_overrides,
            vsock_override,
            disk_overrides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(body: &str) -> Result<SnapshotCreate, String> {
        serde_json::from_str::<SnapshotCreateParams>(body)
            .map_err(|e| e.to_string())?
            .check()
            .map_err(|e| e.to_string())
    }

    fn load(body: &str) -> Result<SnapshotLoad, String> {
        serde_json::from_str::<SnapshotLoadParams>(body)
            .map_err(|e| e.to_string())?
            .check()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn create_bodies() {
        let c = create(r#"{"snapshot_path": "/s", "mem_file_path": "/m"}"#).unwrap();
        assert_eq!(c.kind, SnapshotKind::Full);
        assert_eq!(c.state_path, PathBuf::from("/s"));
        assert_eq!(c.mem_path, PathBuf::from("/m"));
        let c = create(r#"{"snapshot_type": "Diff", "snapshot_path": "s", "mem_file_path": "m"}"#)
            .unwrap();
        assert_eq!(c.kind, SnapshotKind::Diff);
        for (bad, needle) in [
            (
                r#"{"mem_file_path": "/m"}"#,
                "missing field `snapshot_path`",
            ),
            (
                r#"{"snapshot_path": "/s"}"#,
                "missing field `mem_file_path`",
            ),
            (
                r#"{"snapshot_path": 1, "mem_file_path": "/m"}"#,
                "invalid type",
            ),
            (
                r#"{"snapshot_type": "full", "snapshot_path": "/s", "mem_file_path": "/m"}"#,
                "unknown variant `full`",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "compress": true}"#,
                "unknown field `compress`",
            ),
            (
                r#"{"snapshot_path": "", "mem_file_path": "/m"}"#,
                "snapshot_path is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": ""}"#,
                "mem_file_path is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "version": "1.0.0"}"#,
                "version is not supported",
            ),
        ] {
            let e = create(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn load_bodies() {
        let l = load(r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}"#)
            .unwrap();
        assert_eq!(l.memory, MemBackend::File("/m".into()));
        assert!(!l.resume);
        assert_eq!(l.track_dirty_pages, None);
        let l = load(r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u.sock"}, "resume_vm": true, "track_dirty_pages": true, "network_overrides": [], "clock_realtime": false, "huge_pages": "Snapshot"}"#)
            .unwrap();
        assert_eq!(l.memory, MemBackend::Uffd("/u.sock".into()));
        assert!(l.resume);
        assert_eq!(l.track_dirty_pages, Some(true));
        let l = load(r#"{"snapshot_path": "/s", "mem_file_path": "/m", "enable_diff_snapshots": false, "huge_pages": "None"}"#)
            .unwrap();
        assert_eq!(l.memory, MemBackend::File("/m".into()));
        assert_eq!(l.track_dirty_pages, Some(false));
        assert!(l.net_overrides.is_empty() && l.vsock_override.is_none());
        // Firecracker's overrides: interfaces by iface_id.
        let l = load(r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1"}, {"iface_id": "1", "host_dev_name": "tap2"}], "vsock_override": {"uds_path": "/v.sock"}}"#)
            .unwrap();
        assert_eq!(
            l.net_overrides,
            vec![
                NetOverride {
                    iface: DeviceRef::Id("eth0".into()),
                    tap: "tap1".into()
                },
                // An iface_id that looks like a number is still an id.
                NetOverride {
                    iface: DeviceRef::Id("1".into()),
                    tap: "tap2".into()
                },
            ]
        );
        assert_eq!(l.vsock_override, Some(PathBuf::from("/v.sock")));
        // The drive-override extension.
        let l = load(r#"{"snapshot_path": "/s", "mem_file_path": "/m", "drive_overrides": [{"drive_id": "rootfs", "path_on_host": "/clone.img"}]}"#)
            .unwrap();
        assert_eq!(
            l.disk_overrides,
            vec![DiskOverride {
                drive: DeviceRef::Id("drive rootfs".into()),
                path: PathBuf::from("/clone.img"),
            }]
        );
        for (body, why) in [
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "drive_overrides": [{"drive_id": "", "path_on_host": "/x"}]}"#,
                "drive_overrides[].drive_id is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "drive_overrides": [{"drive_id": "a", "path_on_host": ""}]}"#,
                "drive_overrides[].path_on_host is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "drive_overrides": [{"drive_id": "a"}]}"#,
                "missing field `path_on_host`",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "drive_overrides": [{"drive_id": "a", "path_on_host": "/x", "ro": true}]}"#,
                "unknown field `ro`",
            ),
        ] {
            let e = load(body).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
        for (bad, needle) in [
            (
                r#"{"mem_file_path": "/m"}"#,
                "missing field `snapshot_path`",
            ),
            (r#"{"snapshot_path": "/s"}"#, "give mem_backend"),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": {"backend_type": "File", "backend_path": "/m"}}"#,
                "both given",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Disk", "backend_path": "/m"}}"#,
                "unknown variant `Disk`",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File"}}"#,
                "missing field `backend_path`",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": ""}}"#,
                "mem_backend.backend_path is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "resume_vm": "yes"}"#,
                "invalid type",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "enable_diff_snapshots": true, "track_dirty_pages": false}"#,
                "disagree",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [{"iface_id": "", "host_dev_name": "tap1"}]}"#,
                "network_overrides[].iface_id is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [{"iface_id": "eth0", "host_dev_name": ""}]}"#,
                "network_overrides[].host_dev_name is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [{"iface_id": "eth0"}]}"#,
                "missing field `host_dev_name`",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "vsock_override": {"uds_path": ""}}"#,
                "vsock_override.uds_path is empty",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "vsock_override": {"uds_path": "/v", "x": 1}}"#,
                "unknown field `x`",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "clock_realtime": true}"#,
                "clock_realtime: true is not supported yet",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "huge_pages": "2M"}"#,
                "huge pages for a restored VM",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "huge_pages": "1G"}"#,
                "huge_pages \"1G\"",
            ),
            (
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "extra": 1}"#,
                "unknown field `extra`",
            ),
        ] {
            let e = load(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
