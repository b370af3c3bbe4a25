//! `PUT|PATCH /drives/{drive_id}`: virtio-block disks.

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;

/// The longest drive id (Firecracker's limit).
pub const MAX_ID_LEN: usize = 64;

/// Firecracker's `cache_type`. Kindling always honours the guest's
/// flushes (`fdatasync`), which is what `Writeback` means; `Unsafe` (flushes
/// ignored) is accepted and gets the same, safer behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CacheType {
    /// Flushes may be ignored.
    #[default]
    Unsafe,
    /// Flushes reach the disk.
    Writeback,
}

/// Firecracker's `io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IoEngine {
    /// Synchronous `pread`/`pwrite`.
    #[default]
    Sync,
    /// io_uring: not in Kindling yet.
    Async,
}

/// Firecracker's `Drive` (for `PUT` and in `GET /vm/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The drive's id (alphanumeric and `_`, at most 64 bytes).
    pub drive_id: String,
    /// The root partition's UUID (root device only): the command line
    /// gets `root=PARTUUID=...` instead of `root=/dev/vda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Whether the guest mounts it as its root file system.
    pub is_root_device: bool,
    /// Flush handling.
    #[serde(default)]
    pub cache_type: CacheType,
    /// Read-only (required for virtio-block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// The raw image on the host (required for virtio-block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// Limits on the guest's requests (bytes and operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// The I/O engine: `Sync` only for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// A vhost-user-block socket: not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// Firecracker's `PartialDrive` (for `PATCH`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    /// The drive's id.
    pub drive_id: String,
    /// A new backing image.
    #[serde(default)]
    pub path_on_host: Option<String>,
    /// New limits for the running drive (a bucket given replaces the
    /// current one, a bucket of size 0 removes it).
    #[serde(default)]
    pub rate_limiter: Option<RateLimiter>,
}

/// Why a resource id is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("the id is empty")]
    Empty,
    /// The id is too long.
    #[error("the id is {0} bytes long, more than the {MAX_ID_LEN} allowed")]
    TooLong(usize),
    /// The id has a character other than ASCII letters, digits and `_`.
    #[error("the id {0:?} has characters other than ASCII letters, digits and '_'")]
    BadCharacter(String),
}

/// Checks a resource id as Firecracker does.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.len()));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(IdError::BadCharacter(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        check_id("rootfs").unwrap();
        check_id("disk_2").unwrap();
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id(&"a".repeat(65)), Err(IdError::TooLong(65)));
        check_id(&"a".repeat(64)).unwrap();
        assert!(matches!(check_id("a/b"), Err(IdError::BadCharacter(_))));
        assert!(matches!(check_id("a%20"), Err(IdError::BadCharacter(_))));
        assert!(matches!(check_id("é"), Err(IdError::BadCharacter(_))));
    }

    #[test]
    fn drives_parse_with_firecracker_names() {
        let d: Drive = serde_json::from_str(
            r#"{"drive_id": "rootfs", "path_on_host": "/a.img", "is_root_device": true,
                "is_read_only": false, "cache_type": "Writeback", "io_engine": "Sync"}"#,
        )
        .unwrap();
        assert_eq!(d.cache_type, CacheType::Writeback);
        assert_eq!(d.io_engine, Some(IoEngine::Sync));
        let back: Drive = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        for bad in [
            r#"{"drive_id": "x", "path_on_host": "/a"}"#,
            r#"{"is_root_device": true}"#,
            r#"{"drive_id": "x", "is_root_device": "yes"}"#,
            r#"{"drive_id": "x", "is_root_device": true, "cache_type": "None"}"#,
            r#"{"drive_id": "x", "is_root_device": true, "io_engine": "Uring"}"#,
            r#"{"drive_id": "x", "is_root_device": true, "readonly": true}"#,
        ] {
            assert!(serde_json::from_str::<Drive>(bad).is_err(), "{bad}");
        }
        let p: PartialDrive = serde_json::from_str(r#"{"drive_id": "x"}"#).unwrap();
        assert_eq!(p.path_on_host, None);
        assert!(serde_json::from_str::<PartialDrive>(r#"{"path_on_host": "/a"}"#).is_err());
        assert!(
            serde_json::from_str::<PartialDrive>(r#"{"drive_id": "x", "is_read_only": true}"#)
                .is_err()
        );
    }
}
