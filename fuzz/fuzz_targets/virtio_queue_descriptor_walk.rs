//! Descriptor chain iteration over arbitrary guest memory: a queue laid
//! out where the input says, every available chain walked (direct and
//! indirect), then the same queue served by the entropy device, which
//! writes the used ring.

#![no_main]

use std::sync::Arc;

use kindling_fuzz::{memory_from, Input, NoInterrupt};
use kindling_virtio::chain::collect_descriptors;
use kindling_virtio::features::COMMON;
use kindling_virtio::rng::Entropy;
use kindling_virtio::{Activation, QueueConfig, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueOwnedT;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let size = 1u16 << (input.u8() % 9);
    let event_idx = input.u8() & 1 == 1;
    let config = QueueConfig {
        max_size: 256,
        size,
        ready: true,
        desc_table: u64::from(input.u16()) & !15,
        avail_ring: u64::from(input.u16()) & !1,
        used_ring: u64::from(input.u16()) & !3,
    };
    let mem = memory_from(input.0);
    let Ok(mut queue) = config.to_queue(&mem, event_idx) else {
        return;
    };

    let mut scratch = Vec::new();
    if let Ok(iter) = queue.iter(&mem) {
        for chain in iter {
            let total: u64 = chain.clone().map(|d| u64::from(d.len())).sum();
            assert!(total <= u64::from(u32::MAX));
            let readable = chain.clone().readable().count();
            let writable = chain.clone().writable().count();
            let _ = collect_descriptors(chain, &mut scratch);
            assert!(scratch.len() <= readable + writable);
        }
    }

    let Ok(queue) = config.to_queue(&mem, event_idx) else {
        return;
    };
    let mut rng = Entropy::with_queue_size(256).unwrap();
    rng.activate(Activation {
        memory: mem.clone(),
        interrupt: VirtioInterrupt::new(Arc::new(NoInterrupt)),
        queues: vec![queue],
        acked_features: COMMON,
    })
    .unwrap();
    let _ = rng.process_queue(0);
    let _ = rng.process_queue(0);
});
