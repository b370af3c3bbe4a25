//! Block device tests: requests through a mock driver queue against a
//! temporary image file.

use crate::block::{BackendError, SyncFileBackend};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use vm_memory::Address;
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::block::request_type as t;
use crate::interrupt::tests::CountingLine;
use crate::queue::tests::memory;
use crate::{QueueConfig, VirtioInterrupt};

const R: u16 = 0;
const W: u16 = VRING_DESC_F_WRITE as u16;
const HDR: u64 = 0x8000;
const DATA: u64 = 0x10000;
const STATUS: u64 = 0x9000;
const IMAGE_SECTORS: u64 = 128;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

struct Fixture {
    image: TempFile,
    block: Block,
    mem: GuestMemoryMmap,
    line: Arc<CountingLine>,
    next_desc: u16,
    requests: u16,
    avail: GuestAddress,
    used: GuestAddress,
}

fn fixture_with(config: impl FnOnce(&mut BlockConfig), acked_mask: u64) -> Fixture {
    fixture_sized(IMAGE_SECTORS, config, acked_mask)
}

fn fixture_sized(sectors: u64, config: impl FnOnce(&mut BlockConfig), acked_mask: u64) -> Fixture {
    let image = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..(sectors * 512) as usize).map(pattern).collect();
    std::fs::write(image.as_path(), bytes).unwrap();
    let mut cfg = BlockConfig::new(image.as_path());
    config(&mut cfg);
    let block = Block::new(&cfg).unwrap();
    let mem = memory(0x10_0000);
    let line = Arc::new(CountingLine::default());
    let mut f = Fixture {
        image,
        block,
        mem,
        line,
        next_desc: 0,
        requests: 0,
        avail: GuestAddress(0),
        used: GuestAddress(0),
    };
    f.activate(acked_mask);
    f
}

fn fixture() -> Fixture {
    fixture_with(|_| {}, u64::MAX)
}

impl Fixture {
    /// Takes the device out, leaving a spare on another image: the
    /// fixture's image is locked while a device has it open, so a restore
    /// onto it needs the original gone first.
    fn take_block(&mut self) -> Block {
        let spare_image = TempFile::new().unwrap();
        std::fs::write(spare_image.as_path(), [0u8; 512]).unwrap();
        let spare = Block::new(&BlockConfig::new(spare_image.as_path())).unwrap();
        std::mem::replace(&mut self.block, spare)
    }
}

impl Fixture {
    fn activate(&mut self, acked_mask: u64) {
        // A 64-entry queue with its three areas apart.
        let config = QueueConfig {
            max_size: 64,
            size: 64,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
        };
        let acked = self.block.device_features() & acked_mask;
        let queue = config
            .to_queue(&self.mem, acked & features::RING_EVENT_IDX != 0)
            .unwrap();
        self.avail = GuestAddress(config.avail_ring);
        self.used = GuestAddress(config.used_ring);
        self.block
            .activate(Activation {
                memory: self.mem.clone(),
                interrupt: VirtioInterrupt::new(self.line.clone()),
                queues: vec![queue],
                acked_features: acked,
            })
            .unwrap();
    }

    fn header(&self, request_type: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&request_type.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Makes the chain available (without processing it).
    fn push(&mut self, descs: &[(u64, u32, u16)]) {
        let base = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                let flags = if last {
                    flags
                } else {
                    flags | VRING_DESC_F_NEXT as u16
                };
                RawDescriptor::from(Descriptor::new(addr, len, flags, base + i as u16 + 1))
            })
            .collect();
        let desc_table = GuestAddress(0x1000);
        for (i, d) in raw.iter().enumerate() {
            self.mem
                .write_obj(
                    *d,
                    desc_table.unchecked_add(16 * u64::from(base + i as u16)),
                )
                .unwrap();
        }
        let avail = self.avail;
        let idx: u16 = self.mem.read_obj(avail.unchecked_add(2)).unwrap();
        self.mem
            .write_obj(base, avail.unchecked_add(4 + 2 * u64::from(idx % 64)))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), avail.unchecked_add(2))
            .unwrap();
        self.next_desc = (base + descs.len() as u16) % 60;
        self.requests += 1;
    }

    /// Submits one request and processes the queue; returns the status
    /// byte and the used length.
    fn run(&mut self, descs: &[(u64, u32, u16)]) -> (u8, u32) {
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        self.push(descs);
        self.block.process_queue(0).unwrap();
        let status: u8 = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        (status, self.last_used().1)
    }

    fn last_used(&self) -> (u32, u32) {
        let used = self.used;
        let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        assert_eq!(idx, self.requests, "every request is returned");
        let slot = u64::from(idx.wrapping_sub(1) % 64);
        let id: u32 = self.mem.read_obj(used.unchecked_add(4 + 8 * slot)).unwrap();
        let len: u32 = self.mem.read_obj(used.unchecked_add(8 + 8 * slot)).unwrap();
        (id, len)
    }

    fn file(&self) -> Vec<u8> {
        std::fs::read(self.image.as_path()).unwrap()
    }

    fn read(&mut self, sector: u64, len: u32) -> (u8, u32) {
        self.header(t::IN, sector);
        self.run(&[(HDR, 16, R), (DATA, len, W), (STATUS, 1, W)])
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> (u8, u32) {
        self.mem.write_slice(data, GuestAddress(DATA)).unwrap();
        self.header(t::OUT, sector);
        self.run(&[(HDR, 16, R), (DATA, data.len() as u32, R), (STATUS, 1, W)])
    }

    fn ranges(&mut self, request_type: u32, ranges: &[(u64, u32, u32)]) -> (u8, u32) {
        let mut bytes = Vec::new();
        for &(sector, n, flags) in ranges {
            bytes.extend_from_slice(&sector.to_le_bytes());
            bytes.extend_from_slice(&n.to_le_bytes());
            bytes.extend_from_slice(&flags.to_le_bytes());
        }
        self.mem.write_slice(&bytes, GuestAddress(DATA)).unwrap();
        self.header(request_type, 0);
        self.run(&[(HDR, 16, R), (DATA, bytes.len() as u32, R), (STATUS, 1, W)])
    }
}

#[test]
fn the_rate_limiter_holds_requests_until_its_timer_fires() {
    use crate::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
    let limit = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 1024,
            one_time_burst: 0,
            refill_time: 60_000,
        }),
        ops: None,
    };
    let mut f = fixture_with(|c| c.rate_limiter = Some(limit), u64::MAX);
    assert_eq!(f.block.rate_limiter(), Some(limit));
    assert_eq!(f.read(0, 1024).0, status::OK);
    // The next read waits in the ring: not returned, not failed.
    f.header(t::IN, 2);
    f.push(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    f.block.process_queue(0).unwrap();
    let used: u16 = f.mem.read_obj(f.used.unchecked_add(2)).unwrap();
    assert_eq!(used, 1);
    assert_eq!(f.block.throttled_count(), 1);
    // Notifications meanwhile change nothing.
    f.block.process_queue(0).unwrap();
    assert_eq!(f.block.throttled_count(), 1);
    // Lifting the limit fires the timer, which takes the queue up.
    f.block.update_rate_limiter(&RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig::default()),
        ops: None,
    });
    assert_eq!(f.block.rate_limiter(), None);
    std::thread::sleep(std::time::Duration::from_millis(5));
    f.block.on_limiter_timer();
    assert_eq!(f.last_used().1, 513);
}

#[test]
fn read_returns_the_file_contents() {
    let mut f = fixture();
    assert_eq!(f.read(1, 1024), (status::OK, 1025));
    let mut got = vec![0u8; 1024];
    f.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, f.file()[512..1536]);
    assert_eq!(f.line.count(), 1, "one interrupt");
    assert_eq!(f.last_used().0, 0);
}

#[test]
fn write_and_flush_reach_the_file() {
    let mut f = fixture();
    assert_eq!(f.write(2, &[0xab; 1024]), (status::OK, 1));
    let file = f.file();
    assert!(file[1024..2048].iter().all(|&b| b == 0xab));
    assert_eq!(file[1023], pattern(1023));
    assert_eq!(file[2048], pattern(2048));
    f.header(t::FLUSH, 0);
    assert_eq!(f.run(&[(HDR, 16, R), (STATUS, 1, W)]), (status::OK, 1));
}

#[test]
fn discard_and_write_zeroes_leave_zeroes() {
    let mut f = fixture();
    assert_eq!(
        f.ranges(t::DISCARD, &[(8, 8, 0), (64, 16, 0)]),
        (status::OK, 1)
    );
    assert_eq!(
        f.ranges(t::WRITE_ZEROES, &[(20, 1, 0), (30, 2, 1)]),
        (status::OK, 1)
    );
    let file = f.file();
    assert_eq!(file.len() as u64, IMAGE_SECTORS * 512);
    let zero = |a: usize, b: usize| file[a * 512..b * 512].iter().all(|&x| x == 0);
    assert!(zero(8, 16) && zero(64, 80) && zero(20, 21) && zero(30, 32));
    assert!(file[7 * 512..8 * 512].iter().all(|&x| x != 0));
    assert!(file[16 * 512..17 * 512].iter().all(|&x| x != 0));
    // Reads of discarded sectors return zeroes.
    assert_eq!(f.read(8, 512), (status::OK, 513));
    let mut got = [0xffu8; 512];
    f.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, [0; 512]);
}

#[test]
fn read_only_devices_refuse_writes_and_leave_the_file_unchanged() {
    let mut f = fixture_with(|c| c.read_only = true, u64::MAX);
    assert!(f.block.read_only());
    let features = f.block.device_features();
    assert_ne!(features & blk::RO, 0);
    assert_eq!(features & (blk::DISCARD | blk::WRITE_ZEROES), 0);
    let before = f.file();
    assert_eq!(f.write(0, &[0; 512]), (status::IOERR, 1));
    assert_eq!(f.ranges(t::DISCARD, &[(0, 8, 0)]), (status::IOERR, 1));
    assert_eq!(f.ranges(t::WRITE_ZEROES, &[(0, 8, 0)]), (status::IOERR, 1));
    assert_eq!(f.file(), before);
    // Reads still work.
    assert_eq!(f.read(0, 512), (status::OK, 513));
}

#[test]
fn out_of_range_requests_get_ioerr() {
    let mut f = fixture();
    assert_eq!(f.read(IMAGE_SECTORS - 1, 512), (status::OK, 513));
    assert_eq!(f.read(IMAGE_SECTORS - 1, 1024), (status::IOERR, 1));
    assert_eq!(f.read(IMAGE_SECTORS, 512), (status::IOERR, 1));
    assert_eq!(f.read(u64::MAX, 512), (status::IOERR, 1));
    let before = f.file();
    assert_eq!(f.write(IMAGE_SECTORS, &[1; 512]), (status::IOERR, 1));
    assert_eq!(
        f.ranges(t::DISCARD, &[(IMAGE_SECTORS, 1, 0)]),
        (status::IOERR, 1)
    );
    assert_eq!(f.file(), before);
}

#[test]
fn unsupported_types_get_unsupp() {
    let mut f = fixture();
    for request_type in [2, 3, 10, 14, 99] {
        f.header(request_type, 0);
        assert_eq!(
            f.run(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]),
            (status::UNSUPP, 1),
            "type {request_type}"
        );
    }
}

#[test]
fn discard_and_write_zeroes_need_their_features() {
    let mut f = fixture_with(|_| {}, !(blk::DISCARD | blk::WRITE_ZEROES));
    let before = f.file();
    assert_eq!(f.ranges(t::DISCARD, &[(0, 8, 0)]), (status::UNSUPP, 1));
    assert_eq!(f.ranges(t::WRITE_ZEROES, &[(0, 8, 0)]), (status::UNSUPP, 1));
    assert_eq!(f.file(), before);
}

#[test]
fn get_id_returns_the_serial() {
    let mut f = fixture_with(|c| c.serial = Some("kindling-disk-0".into()), u64::MAX);
    f.header(t::GET_ID, 0);
    f.mem.write_slice(&[0xff; 32], GuestAddress(DATA)).unwrap();
    assert_eq!(
        f.run(&[(HDR, 16, R), (DATA, 32, W), (STATUS, 1, W)]),
        (status::OK, 21)
    );
    let mut id = [0u8; 32];
    f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..15], b"kindling-disk-0");
    assert_eq!(id[15..20], [0; 5]);
    assert_eq!(id[20], 0xff, "nothing past 20 bytes");
    // A smaller buffer, split in two, gets what fits.
    assert_eq!(
        f.run(&[
            (HDR, 16, R),
            (DATA, 4, W),
            (DATA + 0x100, 4, W),
            (STATUS, 1, W)
        ]),
        (status::OK, 9)
    );
    let mut part = [0u8; 4];
    f.mem
        .read_slice(&mut part, GuestAddress(DATA + 0x100))
        .unwrap();
    assert_eq!(&part, b"ling");

    // The default serial comes from the image file.
    let mut f = fixture();
    f.header(t::GET_ID, 0);
    assert_eq!(
        f.run(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]),
        (status::OK, 21)
    );
    let mut id = [0u8; 20];
    f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, f.block.serial());
    assert_ne!(id, [0; 20]);
}

#[test]
fn malformed_requests_do_not_stop_the_device() {
    let mut f = fixture();
    // No status byte: returned unused.
    f.header(t::IN, 0);
    f.push(&[(HDR, 16, R), (DATA, 512, R)]);
    // Wrong direction: IOERR.
    f.header(t::IN, 0);
    f.push(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    f.block.process_queue(0).unwrap();
    assert_eq!(f.last_used().1, 1);
    assert_eq!(
        f.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        status::IOERR
    );
    // Data outside guest memory: IOERR, nothing written.
    f.header(t::IN, 0);
    assert_eq!(
        f.run(&[(HDR, 16, R), (0x20_0000, 512, W), (STATUS, 1, W)]),
        (status::IOERR, 1)
    );
    // And a good request still works.
    assert_eq!(f.read(0, 512), (status::OK, 513));
}

#[test]
fn the_first_of_two_dropped_requests_is_returned_empty() {
    let mut f = fixture();
    f.header(t::IN, 0);
    f.push(&[(HDR, 16, R), (DATA, 512, R)]);
    f.block.process_queue(0).unwrap();
    assert_eq!(f.last_used(), (0, 0));
}

#[test]
fn event_idx_suppresses_interrupts() {
    let mut f = fixture();
    // used_event (after the 64-entry avail ring) = 1: interrupt when the
    // used index passes 1, that is after the second request.
    let used_event = f.avail.unchecked_add(4 + 2 * 64);
    f.mem.write_obj(1u16, used_event).unwrap();
    f.read(0, 512);
    assert_eq!(f.line.count(), 0);
    f.read(0, 512);
    assert_eq!(f.line.count(), 1);
    f.read(0, 512);
    assert_eq!(f.line.count(), 1);
}

#[test]
fn configuration_space_and_features() {
    let f = fixture();
    let mut buf = [0u8; 8];
    f.block.read_config(0, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), IMAGE_SECTORS);
    let mut seg_max = [0u8; 4];
    f.block.read_config(12, &mut seg_max);
    assert_eq!(u32::from_le_bytes(seg_max), u32::from(QUEUE_SIZE) - 2);
    let mut b = [0u8; 1];
    f.block.read_config(56, &mut b);
    assert_eq!(b, [1]);
    let feats = f.block.device_features();
    for bit in [
        features::VERSION_1,
        features::RING_EVENT_IDX,
        blk::FLUSH,
        blk::DISCARD,
        blk::WRITE_ZEROES,
        blk::SEG_MAX,
    ] {
        assert_ne!(feats & bit, 0, "{bit:#x}");
    }
    assert_eq!(feats & blk::RO, 0);
    assert_eq!(f.block.device_type(), DeviceType::Block);
    assert_eq!(f.block.queue_max_sizes(), &[QUEUE_SIZE]);
}

#[test]
fn config_writes_are_ignored() {
    let mut f = fixture();
    f.block.write_config(0, &[0xff; 4]);
    let mut buf = [0u8; 8];
    f.block.read_config(0, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), IMAGE_SECTORS);
}

#[test]
fn reset_deactivates_and_state_round_trips() {
    let mut f = fixture_with(|c| c.serial = Some("abc".into()), u64::MAX);
    assert!(f.block.is_activated());
    assert_eq!(f.block.queues().len(), 1);
    assert!(matches!(
        f.block.activate(Activation {
            memory: f.mem.clone(),
            interrupt: VirtioInterrupt::new(f.line.clone()),
            queues: vec![],
            acked_features: 0,
        }),
        Err(ActivateError::AlreadyActive(DeviceType::Block))
    ));
    f.block.reset();
    assert!(!f.block.is_activated());
    assert!(f.block.queues().is_empty());
    f.block.process_queue(0).unwrap();

    let state = through_json(&f.block.state());
    let features = f.block.device_features();
    drop(f.take_block());
    let restored = <Block as kindling_memory::Persist>::restore(
        BlockRestoreArgs::Path(f.image.as_path().into()),
        &state,
    )
    .unwrap();
    assert_eq!(restored.state(), state);
    assert_eq!(&restored.serial()[..3], b"abc");
    assert_eq!(restored.device_features(), features);
    drop(restored);

    // The image changed size: refused.
    std::fs::write(f.image.as_path(), [0u8; 512]).unwrap();
    let err = <Block as kindling_memory::Persist>::restore(
        BlockRestoreArgs::Path(f.image.as_path().into()),
        &state,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BlockError::CapacityChanged {
                expected: 128,
                actual: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn activation_needs_queue_zero() {
    let image = TempFile::new().unwrap();
    std::fs::write(image.as_path(), [0u8; 4096]).unwrap();
    let mut block = Block::new(&BlockConfig::new(image.as_path())).unwrap();
    let line = Arc::new(CountingLine::default());
    let err = block
        .activate(Activation {
            memory: memory(0x10000),
            interrupt: VirtioInterrupt::new(line),
            queues: vec![Queue::new(16).unwrap()],
            acked_features: 0,
        })
        .unwrap_err();
    assert_eq!(
        err,
        ActivateError::QueueNotReady {
            device: DeviceType::Block,
            index: 0
        }
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let image = TempFile::new().unwrap();
    std::fs::write(image.as_path(), [0u8; 4096]).unwrap();
    let mut c = BlockConfig::new(image.as_path());
    c.queue_size = 100;
    assert!(matches!(
        Block::new(&c),
        Err(BlockError::InvalidQueueSize(100))
    ));
    c.queue_size = 1;
    assert!(matches!(
        Block::new(&c),
        Err(BlockError::InvalidQueueSize(1))
    ));
    c.queue_size = 16;
    c.serial = Some("x".repeat(21));
    let err = Block::new(&c).unwrap_err();
    assert!(err.to_string().contains("longer than the 20"), "{err}");
    std::fs::write(image.as_path(), [0u8; 4097]).unwrap();
    assert!(matches!(
        Block::new(&BlockConfig::new(image.as_path())),
        Err(BlockError::UnalignedSize { size: 4097, .. })
    ));
}

fn through_json(state: &BlockState) -> BlockState {
    serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap()
}

/// A device saved mid-run (the transport's part done by hand: the queue is
/// saved and restored with it) goes on serving requests from the same
/// queue: reads see what was written before the snapshot.
#[test]
fn a_restored_device_continues_serving_its_queue() {
    use crate::VirtQueue;
    use kindling_memory::Persist;

    let mut f = fixture_with(|c| c.serial = Some("snap".into()), u64::MAX);
    // Write sector 3 with a marker before the snapshot.
    f.header(t::OUT, 3);
    f.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    let (status, _) = f.run(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!(status, status::OK);

    let state = through_json(&f.block.save().unwrap());
    let queue = crate::QueueSnapshot::from(&f.block.queues()[0]);
    let acked = f.block.device_features();
    drop(f.take_block());
    let mut restored =
        Block::restore(BlockRestoreArgs::Path(f.image.as_path().into()), &state).unwrap();
    assert_eq!(restored.save().unwrap(), state);
    assert_eq!(&restored.serial()[..4], b"snap");
    restored
        .activate(Activation {
            memory: f.mem.clone(),
            interrupt: VirtioInterrupt::new(f.line.clone()),
            queues: vec![VirtQueue::restore(&f.mem, &queue).unwrap().into_inner()],
            acked_features: acked,
        })
        .unwrap();
    f.block = restored;
    // The next request goes through the restored device and queue.
    f.header(t::IN, 3);
    let (status, len) = f.run(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!((status, len), (status::OK, 513));
    let mut data = [0u8; 512];
    f.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(data, [0x5a; 512]);
    f.header(t::GET_ID, 0);
    let (status, _) = f.run(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]);
    assert_eq!(status, status::OK);
    let mut id = [0u8; 4];
    f.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"snap");
    assert_eq!(f.block.queues()[0].next_used(), 3);
}

#[test]
fn bad_block_states_are_refused() {
    use kindling_memory::Persist;

    let mut f = fixture();
    let good = f.block.save().unwrap();
    drop(f.take_block());
    let path = || BlockRestoreArgs::Path(f.image.as_path().into());
    let mut queue = good;
    queue.queue_size = 3;
    assert!(matches!(
        Block::restore(path(), &queue),
        Err(BlockError::InvalidQueueSize(3))
    ));
    let mut bigger = good;
    bigger.capacity += 1;
    assert!(matches!(
        Block::restore(path(), &bigger),
        Err(BlockError::CapacityChanged {
            expected: 129,
            actual: 128,
            ..
        })
    ));
    let backend = SyncFileBackend::open(f.image.as_path(), false).unwrap();
    let restored = Block::restore(
        BlockRestoreArgs::Backend {
            backend: Box::new(backend),
            path: "disk0".into(),
        },
        &good,
    )
    .unwrap();
    assert_eq!(restored.save().unwrap(), good);
    assert!(matches!(
        Block::restore(
            BlockRestoreArgs::Path("/nonexistent/disk.img".into()),
            &good
        ),
        Err(BlockError::Open { .. })
    ));
}

/// The engine and the rate limits are saved and come back with a restore
/// that opens the image by path (buckets full again).
#[test]
fn the_engine_and_the_rate_limits_survive_a_restore() {
    use crate::rate_limiter::TokenBucketConfig;
    use kindling_memory::Persist;

    let limits = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 1 << 20,
            one_time_burst: 0,
            refill_time: 100,
        }),
        ops: Some(TokenBucketConfig {
            size: 50,
            one_time_burst: 10,
            refill_time: 1000,
        }),
    };
    #[cfg(feature = "io-uring")]
    let engine = BlockEngine::IoUring;
    #[cfg(not(feature = "io-uring"))]
    let engine = BlockEngine::Sync;
    let mut f = fixture_with(
        |c| {
            c.engine = engine;
            c.rate_limiter = Some(limits);
        },
        u64::MAX,
    );
    let state = through_json(&f.block.save().unwrap());
    assert_eq!((state.engine, state.rate_limiter), (engine, Some(limits)));
    drop(f.take_block());
    let restored =
        Block::restore(BlockRestoreArgs::Path(f.image.as_path().into()), &state).unwrap();
    assert_eq!(restored.engine(), engine);
    assert_eq!(restored.rate_limiter(), Some(limits));
    // io_uring has a completion eventfd, the synchronous engine none.
    assert_eq!(
        restored.backend.completion_event().is_some(),
        engine == BlockEngine::IoUring
    );
    assert_eq!(restored.save().unwrap(), state);
    // An engine this build lacks is a clear error, not a silent fallback.
    #[cfg(not(feature = "io-uring"))]
    {
        let mut uring = state;
        uring.engine = BlockEngine::IoUring;
        assert!(matches!(
            Block::restore(BlockRestoreArgs::Path(f.image.as_path().into()), &uring),
            Err(BlockError::EngineUnavailable { .. })
        ));
    }
}

/// Writes a request header at `at`.
fn header_at(mem: &GuestMemoryMmap, at: u64, request_type: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&request_type.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).unwrap();
}

impl Fixture {
    /// Makes request `i` available: `request_type` on `sectors` sectors
    /// from `sector`, with its own header, data and status addresses.
    fn push_nth(&mut self, i: u64, request_type: u32, sector: u64, sectors: u32) {
        let (hdr, data, st) = (HDR + 16 * i, DATA + 0x1_0000 * i, STATUS + i);
        header_at(&self.mem, hdr, request_type, sector);
        self.mem.write_obj(0xeeu8, GuestAddress(st)).unwrap();
        let data_flags = if request_type == t::IN { W } else { R };
        if sectors == 0 {
            self.push(&[(hdr, 16, R), (st, 1, W)]);
        } else {
            self.push(&[(hdr, 16, R), (data, sectors * 512, data_flags), (st, 1, W)]);
        }
    }

    fn status_of(&self, i: u64) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS + i)).unwrap()
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(self.used.unchecked_add(2)).unwrap()
    }

    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    /// Waits for the engine's completion eventfd and lets the device
    /// collect completions, until every request is returned.
    fn settle(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.used_idx() != self.requests {
            assert!(
                std::time::Instant::now() < deadline,
                "requests never completed"
            );
            let fd = self.block.backend.completion_event().unwrap().as_raw_fd();
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd for the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            let _ = self.block.backend.completion_event().unwrap().read();
            self.block.complete_requests();
        }
    }
}

#[cfg(feature = "io-uring")]
fn io_uring_fixture() -> Fixture {
    fixture_with(|c| c.engine = BlockEngine::IoUring, u64::MAX)
}

#[cfg(feature = "io-uring")]
#[test]
fn the_io_uring_engine_serves_every_request_type() {
    let mut f = io_uring_fixture();
    assert!(f.block.backend.completion_event().is_some());
    // Many requests in flight at once, each with its own buffers.
    for i in 0..8u64 {
        f.mem
            .write_slice(&[0x40 + i as u8; 1024], GuestAddress(DATA + 0x1_0000 * i))
            .unwrap();
        f.push_nth(i, t::OUT, 2 * i, 2);
    }
    f.push_nth(8, t::FLUSH, 0, 0);
    f.block.process_queue(0).unwrap();
    f.settle();
    for i in 0..9 {
        assert_eq!(f.status_of(i), status::OK, "request {i}");
    }
    let file = f.file();
    for i in 0..8usize {
        assert!(file[i * 1024..(i + 1) * 1024]
            .iter()
            .all(|&x| x == 0x40 + i as u8));
    }
    assert!(f.line.count() >= 1);
    // Reads, and discard and write-zeroes through the sync fallback.
    for i in 0..4u64 {
        f.push_nth(i, t::IN, 64 + i, 1);
    }
    f.block.process_queue(0).unwrap();
    f.settle();
    for i in 0..4u64 {
        assert_eq!(f.status_of(i), status::OK);
        let mut got = [0u8; 512];
        f.mem
            .read_slice(&mut got, GuestAddress(DATA + 0x1_0000 * i))
            .unwrap();
        assert_eq!(&got[..], &file[(64 + i as usize) * 512..][..512]);
    }
    assert_eq!(f.ranges(t::DISCARD, &[(8, 8, 0)]), (status::OK, 1));
    assert!(f.file()[4096..8192].iter().all(|&x| x == 0));
}

#[cfg(feature = "io-uring")]
#[test]
fn reset_waits_for_io_uring_requests_in_flight() {
    let mut f = io_uring_fixture();
    // Flushes always finish on an io_uring worker: they are in flight
    // when the queue pass ends.
    for i in 0..8u64 {
        f.push_nth(
            i,
            if i % 2 == 0 { t::FLUSH } else { t::IN },
            i,
            u32::from(i % 2 == 1),
        );
    }
    f.block.process_queue(0).unwrap();
    f.block.reset();
    assert!(!f.block.is_activated());
    // Nothing is left in flight or waiting to be collected, so nothing
    // can be written into guest memory any more.
    assert!(f.block.backend.next_completion().is_none());
    let used = f.used_idx();
    let statuses: Vec<u8> = (0..8).map(|i| f.status_of(i)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    f.block.complete_requests();
    assert_eq!(f.used_idx(), used);
    assert_eq!((0..8).map(|i| f.status_of(i)).collect::<Vec<_>>(), statuses);
    // The device comes back after the reset.
    f.activate(u64::MAX);
    f.requests = 0;
    f.mem.write_obj(0u16, f.used.unchecked_add(2)).unwrap();
    f.mem.write_obj(0u16, f.avail.unchecked_add(2)).unwrap();
    f.push_nth(0, t::FLUSH, 0, 0);
    f.block.process_queue(0).unwrap();
    f.settle();
    assert_eq!(f.status_of(0), status::OK);
}

/// An engine that holds at most `capacity` operations until the test
/// releases them, like a full io_uring.
#[derive(Debug)]
struct Holding {
    inner: SyncFileBackend,
    state: Arc<std::sync::Mutex<HoldingState>>,
    event: EventFd,
}

#[derive(Debug, Default)]
struct HoldingState {
    capacity: usize,
    held: Vec<crate::block::Completion>,
    released: Vec<crate::block::Completion>,
    busy: usize,
}

impl BlockBackend for Holding {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn default_serial(&self) -> [u8; ID_BYTES] {
        self.inner.default_serial()
    }
    fn submit(
        &mut self,
        memory: &GuestMemoryMmap,
        token: u16,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError> {
        let mut state = self.state.lock().unwrap();
        if state.held.len() >= state.capacity {
            state.busy += 1;
            return Err(BackendError::Busy);
        }
        self.inner.submit(memory, token, op)?;
        state.held.push(self.inner.next_completion().unwrap());
        Ok(())
    }
    fn next_completion(&mut self) -> Option<crate::block::Completion> {
        self.state.lock().unwrap().released.pop()
    }
    fn completion_event(&self) -> Option<&EventFd> {
        Some(&self.event)
    }
}

#[test]
fn a_full_engine_leaves_requests_in_the_ring_until_completions() {
    let image = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..(IMAGE_SECTORS * 512) as usize).map(pattern).collect();
    std::fs::write(image.as_path(), bytes).unwrap();
    let state = Arc::new(std::sync::Mutex::new(HoldingState {
        capacity: 1,
        ..HoldingState::default()
    }));
    let backend = Holding {
        inner: SyncFileBackend::open(image.as_path(), false).unwrap(),
        state: state.clone(),
        event: EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    };
    let block = Block::with_backend(Box::new(backend), &BlockConfig::new(image.as_path())).unwrap();
    let mut f = fixture();
    f.block = block;
    f.activate(u64::MAX);
    for i in 0..3 {
        f.push_nth(i, t::IN, i, 1);
    }
    f.block.process_queue(0).unwrap();
    // One taken, one refused and put back; the third not even looked at.
    assert_eq!(state.lock().unwrap().held.len(), 1);
    assert_eq!(state.lock().unwrap().busy, 1);
    assert!(f.block.stalled);
    assert_eq!(f.used_idx(), 0);
    assert_eq!(f.block.queues()[0].next_avail(), 1);
    // A notification while stalled does not lose or repeat anything.
    f.block.process_queue(0).unwrap();
    assert_eq!(state.lock().unwrap().held.len(), 1);
    for round in 1..=3u16 {
        {
            let mut s = state.lock().unwrap();
            let done = std::mem::take(&mut s.held);
            s.released.extend(done);
        }
        f.block.complete_requests();
        assert_eq!(f.used_idx(), round);
    }
    for i in 0..3 {
        assert_eq!(f.status_of(i), status::OK);
    }
    assert!(!f.block.stalled);
    // EVENT_IDX with used_event 0: only the first completion interrupts.
    assert_eq!(f.line.count(), 1);
}

#[test]
fn the_sync_engine_registers_no_event_source() {
    let f = fixture();
    assert!(f.block.backend.completion_event().is_none());
}

#[cfg(feature = "io-uring")]
#[test]
fn the_completion_eventfd_is_on_the_event_loop() {
    use crate::VirtioSubscriber;
    use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
    use std::sync::Mutex;

    let mut f = io_uring_fixture();
    for i in 0..4u64 {
        f.push_nth(i, t::FLUSH, 0, 0);
    }
    // Move the device behind the subscriber, leaving a spare in the
    // fixture.
    let block = f.take_block();
    let device: Arc<Mutex<dyn crate::VirtioDevice>> = Arc::new(Mutex::new(block));
    let queue_event = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
    let notify = queue_event.try_clone().unwrap();
    let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
    manager.add_subscriber(Box::new(VirtioSubscriber::new(
        device.clone(),
        vec![queue_event],
    )));
    notify.write(1).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut wakeups = 0;
    while f.used_idx() != 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "flushes never completed"
        );
        wakeups += manager.run_with_timeout(100).unwrap();
    }
    // The queue notification, then at least one completion wake-up (the
    // flushes finish on io_uring workers).
    assert!(wakeups >= 2, "{wakeups}");
    for i in 0..4 {
        assert_eq!(f.status_of(i), status::OK);
    }
    assert!(f.line.count() >= 1);
}

#[test]
fn a_read_larger_than_the_advertised_maximum_fails_without_any_io() {
    let mut f = fixture_sized(16 << 11, |_| {}, u64::MAX);
    let mut size_max = [0u8; 4];
    f.block.read_config(8, &mut size_max);
    let size_max = u32::from_le_bytes(size_max);
    assert_eq!(size_max, 16 << 10);
    assert_ne!(f.block.device_features() & blk::SIZE_MAX, 0);
    // Five 960 KiB buffers over the same guest memory: 4.7 MiB in one
    // request, past the 4 MiB a driver may send.
    f.header(t::IN, 0);
    f.mem.write_slice(&[0x5a; 64], GuestAddress(DATA)).unwrap();
    let mut chain = vec![(HDR, 16, R)];
    chain.extend(std::iter::repeat_n((DATA, 0xf_0000, W), 5));
    chain.push((STATUS, 1, W));
    assert_eq!(f.run(&chain), (status::IOERR, 1));
    let mut untouched = [0u8; 64];
    f.mem
        .read_slice(&mut untouched, GuestAddress(DATA))
        .unwrap();
    assert_eq!(untouched, [0x5a; 64], "nothing was read");
    // Exactly the maximum is served.
    let mut chain = vec![(HDR, 16, R)];
    chain.extend(std::iter::repeat_n((DATA, 0x8_0000, W), 8));
    chain.push((STATUS, 1, W));
    assert_eq!(f.run(&chain), (status::OK, (4 << 20) + 1));
}

#[test]
fn one_pass_stops_at_its_byte_budget_and_the_rest_follows_in_the_next() {
    let mut f = fixture_sized(16 << 11, |_| {}, u64::MAX);
    // Three 2 MiB reads (four 512 KiB buffers each, over the same memory).
    for i in 0..3u64 {
        f.header(t::IN, i * 4096);
        let mut chain = vec![(HDR, 16, R)];
        chain.extend(std::iter::repeat_n((DATA, 0x8_0000, W), 4));
        chain.push((STATUS, 1, W));
        f.push(&chain);
    }
    let used_idx = |f: &Fixture| -> u16 { f.mem.read_obj(f.used.unchecked_add(2)).unwrap() };
    // 4 MiB is the budget: two reads, then the pass yields.
    assert_eq!(f.block.process_queue(0).unwrap(), QueueProgress::MoreWork);
    assert_eq!(used_idx(&f), 2);
    assert_eq!(f.block.process_queue(0).unwrap(), QueueProgress::Done);
    assert_eq!(used_idx(&f), 3);
    assert_eq!(f.last_used().1, (2 << 20) + 1);
}
