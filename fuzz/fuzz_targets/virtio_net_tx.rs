//! The network transmit parser over arbitrary guest memory, with the
//! descriptor table, the head index and the negotiated features taken
//! from the input.

#![no_main]

use kindling_fuzz::{memory_from, Input};
use kindling_virtio::net::{parse_tx, TxError, TxFrame, MAX_FRAME_LEN, VNET_HDR_LEN};
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
    let acked = input.u64();
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
    let mut frame = TxFrame::default();
    match parse_tx(&mem, chain, acked, &mut Vec::new(), &mut frame) {
        Ok(()) => {
            // What a valid frame names is inside guest memory, adds up to
            // the header and the frame, and is not too large.
            let total: usize = frame.buffers.iter().map(|b| b.1).sum();
            assert_eq!(total, VNET_HDR_LEN + frame.frame_len);
            assert!(frame.frame_len <= MAX_FRAME_LEN);
            for &(addr, len) in &frame.buffers {
                assert!(mem.check_range(addr, len));
            }
        }
        Err(TxError::TooShort(n)) => assert!(n < VNET_HDR_LEN),
        Err(TxError::TooLarge(n)) => assert!(n > MAX_FRAME_LEN),
        Err(_) => {}
    }
});
