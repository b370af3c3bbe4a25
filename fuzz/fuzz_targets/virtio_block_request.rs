//! The block request parser over arbitrary guest memory, with the
//! descriptor table (and the head index) taken from the input.

#![no_main]

use kindling_fuzz::{memory_from, Input};
use kindling_virtio::block::{parse, Limits, RequestKind};
use kindling_virtio::QueueConfig;
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let head = input.u16();
    let capacity = u64::from(input.u16());
    // The descriptor table is the start of guest memory; the rest of the
    // input fills the memory the descriptors point into.
    let mem = memory_from(input.0);
    mem.write_obj(0u16, GuestAddress(AVAIL)).unwrap();
    mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
    mem.write_obj(head, GuestAddress(AVAIL + 4)).unwrap();
    let config = QueueConfig {
        max_size: QUEUE_SIZE,
        size: QUEUE_SIZE,
        ready: true,
        desc_table: DESC,
        avail_ring: AVAIL,
        used_ring: USED,
    };
    let mut queue = config.to_queue(&mem, false).unwrap();
    let Some(chain) = queue.iter(&mem).unwrap().next() else {
        return;
    };
    let limits = Limits::new(capacity);
    match parse(&mem, chain, &limits, &mut Vec::new()) {
        Ok(req) => {
            // Everything a valid request names is inside guest memory and
            // inside the disk.
            assert!(mem.check_range(req.status, 1));
            let check = |buffers: &[kindling_virtio::block::GuestBuffer], len: u32| {
                let total: u64 = buffers.iter().map(|b| u64::from(b.len)).sum();
                assert_eq!(total, u64::from(len));
                for b in buffers {
                    assert!(mem.check_range(b.addr, b.len as usize));
                }
            };
            match &req.kind {
                RequestKind::Read {
                    sector,
                    buffers,
                    len,
                }
                | RequestKind::Write {
                    sector,
                    buffers,
                    len,
                } => {
                    check(buffers, *len);
                    assert_eq!(len % 512, 0);
                    assert!(u64::from(*len) <= limits.max_data_bytes);
                    assert!(sector + u64::from(*len) / 512 <= capacity);
                }
                RequestKind::GetId { buffers, len } => {
                    check(buffers, *len);
                    assert!(*len <= 20);
                }
                RequestKind::Discard { ranges } | RequestKind::WriteZeroes { ranges } => {
                    assert!(!ranges.is_empty());
                    for r in ranges {
                        assert!(r.sector + u64::from(r.num_sectors) <= capacity);
                    }
                }
                RequestKind::Flush => {}
            }
        }
        Err(e) => {
            if let Some(status) = e.status {
                assert!(mem.check_range(status, 1));
            }
        }
    }
});
