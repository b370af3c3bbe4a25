//! Block request benchmarks: one 4 KiB read and one 4 KiB write through
//! the request parser and the synchronous engine on a temporary image
//! file, and the same read through the whole device (available ring,
//! parser, engine, used ring) on the synchronous and the io_uring engines.

use criterion::{criterion_group, criterion_main, Criterion};
use kindling_virtio::block::{
    parse, request_type, Block, BlockBackend, BlockConfig, BlockEngine, BlockOp, Limits,
    RequestKind, SyncFileBackend,
};
use kindling_virtio::{Activation, GuestMemoryMmap, QueueConfig, VirtioDevice, VirtioInterrupt};
use std::hint::black_box;
use std::sync::Arc;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const IMAGE: usize = 16 << 20;

struct NoIrq;
impl kindling_devices::InterruptLine for NoIrq {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn header(mem: &GuestMemoryMmap, request_type: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&request_type.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
}

fn chain(data_flags: u16) -> [Descriptor; 3] {
    let n = VRING_DESC_F_NEXT as u16;
    let w = VRING_DESC_F_WRITE as u16;
    [
        Descriptor::new(HDR, 16, n, 1),
        Descriptor::new(DATA, 4096, n | data_flags, 2),
        Descriptor::new(STATUS, 1, w, 0),
    ]
}

/// Parses one request and runs it on the engine, as the device does.
fn one_request(
    mem: &GuestMemoryMmap,
    backend: &mut SyncFileBackend,
    limits: &Limits,
    scratch: &mut Vec<Descriptor>,
    descs: [Descriptor; 3],
) {
    let req = parse(mem, descs, limits, scratch).unwrap();
    let op = match &req.kind {
        RequestKind::Read {
            sector, buffers, ..
        } => BlockOp::Read {
            offset: sector * 512,
            buffers,
        },
        RequestKind::Write {
            sector, buffers, ..
        } => BlockOp::Write {
            offset: sector * 512,
            buffers,
        },
        _ => unreachable!(),
    };
    backend.submit(mem, 0, &op).unwrap();
    backend.next_completion().unwrap().result.unwrap();
    mem.write_obj(0u8, req.status).unwrap();
}

fn parser_and_engine(c: &mut Criterion) {
    let image = TempFile::new().unwrap();
    std::fs::write(image.as_path(), vec![0x5a; IMAGE]).unwrap();
    let mut backend = SyncFileBackend::open(image.as_path(), false).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let limits = Limits::new(backend.size() / 512);
    let mut scratch = Vec::new();

    c.bench_function("block_read_4k_parse_and_sync_engine", |b| {
        header(&mem, request_type::IN, 8);
        b.iter(|| {
            one_request(
                &mem,
                &mut backend,
                &limits,
                &mut scratch,
                black_box(chain(VRING_DESC_F_WRITE as u16)),
            )
        })
    });
    c.bench_function("block_write_4k_parse_and_sync_engine", |b| {
        header(&mem, request_type::OUT, 16);
        b.iter(|| {
            one_request(
                &mem,
                &mut backend,
                &limits,
                &mut scratch,
                black_box(chain(0)),
            )
        })
    });
}

fn whole_device(c: &mut Criterion) {
    device_read(c, "block_read_4k_through_the_device", BlockEngine::Sync);
    #[cfg(feature = "io-uring")]
    device_read(
        c,
        "block_read_4k_through_the_device_io_uring",
        BlockEngine::IoUring,
    );
}

/// One 4 KiB read through the whole device on `engine`; a read from the
/// page cache finishes within the queue pass on either engine.
fn device_read(c: &mut Criterion, name: &str, engine: BlockEngine) {
    let image = TempFile::new().unwrap();
    std::fs::write(image.as_path(), vec![0x5a; IMAGE]).unwrap();
    let mut config = BlockConfig::new(image.as_path());
    config.engine = engine;
    let mut block = Block::new(&config).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let (desc_table, avail, used) = (0x1000, 0x2000, 0x3000);
    let queue = QueueConfig {
        max_size: 256,
        size: 256,
        ready: true,
        desc_table,
        avail_ring: avail,
        used_ring: used,
    }
    .to_queue(&mem, true)
    .unwrap();
    block
        .activate(Activation {
            memory: mem.clone(),
            interrupt: VirtioInterrupt::new(Arc::new(NoIrq)),
            queues: vec![queue],
            acked_features: block.device_features(),
        })
        .unwrap();
    header(&mem, request_type::IN, 8);
    for (i, d) in chain(VRING_DESC_F_WRITE as u16).into_iter().enumerate() {
        mem.write_obj(
            RawDescriptor::from(d),
            GuestAddress(desc_table + 16 * i as u64),
        )
        .unwrap();
    }
    let mut idx: u16 = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            // The driver makes chain 0 available again, and the device
            // serves it: ring, parser, engine, used ring, notification check.
            let slot = GuestAddress(avail + 4 + 2 * u64::from(idx % 256));
            mem.write_obj(0u16, slot).unwrap();
            idx = idx.wrapping_add(1);
            mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
            block.process_queue(0).unwrap();
        })
    });
    let used_idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
    assert_eq!(used_idx, idx, "every request completed");
    let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(status, 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = parser_and_engine, whole_device
}
criterion_main!(benches);
