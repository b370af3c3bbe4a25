//! The snapshot state-file parser: the container (magic, version, length,
//! checksum) and, because random bytes almost never carry a valid CRC,
//! also the payload wrapped in a valid container, decoded as a whole
//! `MicrovmState` and checked for consistency. Neither may panic.

#![no_main]

use kindling_vmm::snapshot::{decode_state, MicrovmState, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(state) = decode_state::<MicrovmState>(bytes) {
        let _ = state.validate();
        let _ = state.memory_file.dirty_bitmap(state.memory.size_mib);
    }
}

fuzz_target!(|data: &[u8]| {
    // As a whole file.
    check(data);
    // As the payload of a well-formed container.
    let mut file = Vec::with_capacity(data.len() + 24);
    file.extend_from_slice(&SNAPSHOT_MAGIC);
    file.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(data);
    let crc = crc32fast::hash(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    check(&file);
});
