//! The real block backend, `SyncFileBackend`, on a temporary image file
//! (in `/dev/shm` or the temporary directory, so that both the
//! `fallocate` paths and the tmpfs fallbacks run), driven by random reads,
//! writes, flushes, discards and write-zeroes with guest buffers anywhere
//! (also partly or wholly outside guest memory) and ranges anywhere (also
//! past the end of the disk), checked against an in-memory model of the
//! disk and of guest memory after every operation:
//!
//! - a read fills the guest buffers, in order, with what was last written
//!   there; a write stores them; discard and write-zeroes read back as
//!   zeroes; a zero-sector range changes nothing and succeeds;
//! - a request that reaches past the end of the disk fails and changes
//!   neither the disk, nor its size, nor guest memory;
//! - a guest buffer outside guest memory fails the request with a
//!   guest-memory error after the bytes before it were transferred;
//! - every completion comes back once, with its token, and the image file
//!   is the model disk byte for byte.

#![no_main]

use std::path::Path;

use kindling_fuzz::Input;
use kindling_virtio::block::{
    request::SectorRange, BackendError, BlockBackend, BlockOp, GuestBuffer, SyncFileBackend,
};
use kindling_virtio::vmm_sys_util::tempfile::TempFile;
use kindling_virtio::GuestMemoryMmap;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const SECTOR: u64 = 512;
/// Guest memory: one region of 16 KiB at 0.
const MEM: u64 = 0x4000;

/// Which byte ranges of guest memory a buffer reaches: the part inside
/// guest memory, and whether part of it is outside.
fn in_memory(b: &GuestBuffer) -> (std::ops::Range<usize>, bool) {
    let start = b.addr.0;
    let end = start + u64::from(b.len);
    if start >= MEM {
        return (0..0, b.len > 0);
    }
    (start as usize..end.min(MEM) as usize, end > MEM)
}

struct Model {
    disk: Vec<u8>,
    mem: Vec<u8>,
}

impl Model {
    /// Applies a transfer; returns whether it fails on guest memory.
    fn transfer(&mut self, offset: u64, buffers: &[GuestBuffer], write: bool) -> bool {
        let mut at = offset as usize;
        for b in buffers {
            let (range, outside) = in_memory(b);
            let n = range.len();
            if write {
                self.disk[at..at + n].copy_from_slice(&self.mem[range]);
            } else {
                self.mem[range].copy_from_slice(&self.disk[at..at + n]);
            }
            if outside {
                return true;
            }
            at += n;
        }
        false
    }
}

fn ranges_in_disk(ranges: &[SectorRange], size: u64) -> bool {
    ranges.iter().all(|r| {
        r.sector
            .checked_add(u64::from(r.num_sectors))
            .is_some_and(|end| end <= size / SECTOR)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    let sectors = u64::from(input.u8() % 64) + 1;
    let size = sectors * SECTOR;
    let shm = Path::new("/dev/shm");
    let tmp = if flags & 1 != 0 && shm.is_dir() {
        TempFile::new_in(shm)
    } else {
        TempFile::new()
    }
    .unwrap();
    let seed = input.u8();
    let disk: Vec<u8> = (0..size as usize)
        .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 9) as u8)
        .collect();
    std::fs::write(tmp.as_path(), &disk).unwrap();
    let mut backend = SyncFileBackend::open(tmp.as_path(), false).unwrap();
    assert_eq!(backend.size(), size);

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    let mut model = Model {
        disk,
        mem: (0..MEM as usize).map(|i| (i % 253) as u8).collect(),
    };
    mem.write_slice(&model.mem, GuestAddress(0)).unwrap();

    let mut token = 0u16;
    while !input.is_empty() && token < 64 {
        token += 1;
        let op = input.u8();
        let sector = match op >> 6 {
            0 | 1 => u64::from(input.u8()) % (sectors + 2),
            2 => u64::from(input.u8()) % sectors,
            _ => input.u64() >> (input.u8() % 64),
        };
        let count = usize::from(input.u8() % 4) + 1;
        let (result, expect_ok) = match op % 5 {
            0 | 1 => {
                let buffers: Vec<GuestBuffer> = (0..count)
                    .map(|_| {
                        let addr = u64::from(input.u16()) % (MEM + 0x800);
                        let len = match input.u8() % 4 {
                            0 => u32::from(input.u16() % 2048),
                            _ => u32::from(input.u8() % 4 + 1) * 512,
                        };
                        GuestBuffer {
                            addr: GuestAddress(addr & !0xf),
                            len,
                        }
                    })
                    .collect();
                let total: u64 = buffers.iter().map(|b| u64::from(b.len)).sum();
                let write = op % 5 == 1;
                // A byte offset anywhere (a huge sector wraps around).
                let offset = sector.wrapping_mul(SECTOR);
                let in_disk = offset.checked_add(total).is_some_and(|end| end <= size);
                let op = if write {
                    BlockOp::Write {
                        offset,
                        buffers: &buffers,
                    }
                } else {
                    BlockOp::Read {
                        offset,
                        buffers: &buffers,
                    }
                };
                backend.submit(&mem, token, &op).unwrap();
                let result = backend.next_completion().unwrap();
                let memory_error = in_disk && model.transfer(offset, &buffers, write);
                if memory_error {
                    assert!(
                        matches!(result.result, Err(BackendError::GuestMemory { .. })),
                        "{:?}",
                        result.result
                    );
                }
                (result, in_disk && !memory_error)
            }
            2 => {
                backend.submit(&mem, token, &BlockOp::Flush).unwrap();
                (backend.next_completion().unwrap(), true)
            }
            _ => {
                let ranges: Vec<SectorRange> = (0..count)
                    .map(|i| SectorRange {
                        sector: if i == 0 {
                            sector
                        } else {
                            u64::from(input.u8()) % (sectors + 2)
                        },
                        num_sectors: u32::from(input.u8() % 9),
                        unmap: input.u8() & 1 != 0,
                    })
                    .collect();
                let in_disk = ranges_in_disk(&ranges, size);
                let op = if op % 5 == 3 {
                    BlockOp::Discard { ranges: &ranges }
                } else {
                    BlockOp::WriteZeroes { ranges: &ranges }
                };
                backend.submit(&mem, token, &op).unwrap();
                if in_disk {
                    for r in &ranges {
                        let start = (r.sector * SECTOR) as usize;
                        let len = r.num_sectors as usize * SECTOR as usize;
                        model.disk[start..start + len].fill(0);
                    }
                }
                (backend.next_completion().unwrap(), in_disk)
            }
        };
        assert_eq!(result.token, token);
        assert!(backend.next_completion().is_none(), "one completion each");
        if expect_ok {
            assert!(result.result.is_ok(), "{:?}", result.result);
        } else {
            assert!(result.result.is_err(), "request {token} should fail");
        }

        let file = std::fs::read(tmp.as_path()).unwrap();
        assert_eq!(file.len() as u64, size, "the image changed size");
        assert!(file == model.disk, "the image differs from the model");
        let mut guest = vec![0u8; MEM as usize];
        mem.read_slice(&mut guest, GuestAddress(0)).unwrap();
        assert!(guest == model.mem, "guest memory differs from the model");
    }
});
