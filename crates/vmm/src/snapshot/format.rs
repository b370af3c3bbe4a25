//! The snapshot state file: a small, versioned, checksummed container for
//! a serialised VM state.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "KNDLSNAP"
//!      8     4  format version (little endian)
//!     12     8  payload length N (little endian)
//!     20     N  payload: the state, serialised with postcard
//!   20+N     4  CRC-32 (IEEE) of bytes 0..20+N (little endian)
//! ```
//!
//! Everything read back is checked before it is decoded: a truncated file,
//! another file's magic, a version this build does not know, or a single
//! flipped bit is a [`SnapshotFormatError`], never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first eight bytes of every state file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KNDLSNAP";
/// The format version this build writes and reads (2: network and vsock
/// devices, and a disk's I/O engine and rate limits; version 1 files are
/// refused).
pub const SNAPSHOT_VERSION: u32 = 2;
/// The largest state file accepted (the state of a VM is kilobytes; the
/// bound keeps a hostile length from allocating gigabytes).
pub const MAX_STATE_FILE_SIZE: u64 = 64 << 20;

const HEADER_LEN: usize = 20;
const TRAILER_LEN: usize = 4;

/// Why a state file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    /// The file is shorter than its header and trailer, or than the
    /// payload its header announces.
    #[error("snapshot state file is truncated: {len} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        len: u64,
        /// Bytes needed.
        expected: u64,
    },
    /// The file is not a Kindling snapshot.
    #[error("not a Kindling snapshot state file (magic {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 8],
    },
    /// The file was written by a format version this build cannot read.
    #[error("snapshot format version {found} is not supported (this build reads version {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
    },
    /// The file is larger than any state file this build writes.
    #[error(
        "snapshot state file is {len} bytes, more than the {MAX_STATE_FILE_SIZE} bytes allowed"
    )]
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// Bytes after the checksum.
    #[error("snapshot state file has {extra} bytes after its checksum")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// The checksum does not match: the file was damaged.
    #[error("snapshot state file is corrupt: checksum {found:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the file.
        found: u32,
        /// The checksum of its contents.
        computed: u32,
    },
    /// The payload does not decode as a VM state.
    #[error("snapshot state does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// The state could not be encoded.
    #[error("cannot encode the snapshot state: {0}")]
    Encode(#[source] postcard::Error),
}

/// Serialises `state` into a state file's bytes.
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>, SnapshotFormatError> {
    let payload = postcard::to_stdvec(state).map_err(SnapshotFormatError::Encode)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Checks a state file's bytes and decodes its state.
pub fn decode_state<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotFormatError> {
    let len = bytes.len() as u64;
    if len > MAX_STATE_FILE_SIZE {
        return Err(SnapshotFormatError::TooLarge { len });
    }
    let minimum = (HEADER_LEN + TRAILER_LEN) as u64;
    if len < minimum {
        return Err(SnapshotFormatError::Truncated {
            len,
            expected: minimum,
        });
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[..8]);
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotFormatError::BadMagic { found: magic });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotFormatError::UnsupportedVersion { found: version });
    }
    let payload_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let expected = payload_len
        .checked_add(minimum)
        .ok_or(SnapshotFormatError::TooLarge { len: u64::MAX })?;
    if len < expected {
        return Err(SnapshotFormatError::Truncated { len, expected });
    }
    if len > expected {
        return Err(SnapshotFormatError::TrailingBytes {
            extra: len - expected,
        });
    }
    let body_end = HEADER_LEN + payload_len as usize;
    let found = u32::from_le_bytes(
        bytes[body_end..body_end + TRAILER_LEN]
            .try_into()
            .unwrap_or_default(),
    );
    let computed = crc32fast::hash(&bytes[..body_end]);
    if found != computed {
        return Err(SnapshotFormatError::Checksum { found, computed });
    }
    postcard::from_bytes(&bytes[HEADER_LEN..body_end]).map_err(SnapshotFormatError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        name: String,
        regs: Vec<u64>,
    }

    fn state() -> State {
        State {
            name: "vcpu0".into(),
            regs: vec![1, 2, u64::MAX],
        }
    }

    #[test]
    fn a_state_round_trips() {
        let bytes = encode_state(&state()).unwrap();
        assert_eq!(&bytes[..8], b"KNDLSNAP");
        assert_eq!(decode_state::<State>(&bytes).unwrap(), state());
    }

    #[test]
    fn every_damage_is_a_clear_error() {
        let good = encode_state(&state()).unwrap();
        // Truncated anywhere.
        for cut in [0, 7, 19, 23, good.len() - 1] {
            let err = decode_state::<State>(&good[..cut]).unwrap_err();
            assert!(
                matches!(err, SnapshotFormatError::Truncated { .. }),
                "{cut}: {err}"
            );
        }
        // Wrong magic.
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode_state::<State>(&bad),
            Err(SnapshotFormatError::BadMagic { .. })
        ));
        // Unknown version.
        let mut bad = good.clone();
        bad[8] = 9;
        let err = decode_state::<State>(&bad).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        // Every single flipped bit in the payload or checksum is caught.
        for i in 20..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(
                    decode_state::<State>(&bad),
                    Err(SnapshotFormatError::Checksum { .. })
                ),
                "byte {i}"
            );
        }
        // A huge announced length.
        let mut bad = good.clone();
        bad[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_state::<State>(&bad).is_err());
        // Trailing bytes.
        let mut bad = good.clone();
        bad.push(0);
        assert!(matches!(
            decode_state::<State>(&bad),
            Err(SnapshotFormatError::TrailingBytes { extra: 1 })
        ));
        // A valid container whose payload is another type.
        let other = encode_state(&(1u8, 2u8)).unwrap();
        assert!(matches!(
            decode_state::<State>(&other),
            Err(SnapshotFormatError::Decode(_))
        ));
    }
}
