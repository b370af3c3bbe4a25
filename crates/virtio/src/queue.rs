//! Queues: the driver's configuration of each queue as the transport holds
//! it, its validation against guest memory, its serialisable snapshot (and
//! [`VirtQueue`], the queue with the persist contract), and the helpers
//! devices use to walk the available ring and notify the driver.

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueState, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::GuestMemoryMmap;

mod persist;

pub use persist::VirtQueue;

/// The largest queue size virtio allows for split queues.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// One queue's configuration as the driver wrote it through the
/// transport's registers, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    /// The maximum size the device offers (QueueNumMax).
    pub max_size: u16,
    /// The size the driver chose (QueueNum).
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// QueueDescLow/High: the descriptor table.
    pub desc_table: u64,
    /// QueueDriverLow/High: the available ring.
    pub avail_ring: u64,
    /// QueueDeviceLow/High: the used ring.
    pub used_ring: u64,
}

/// Which area of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueArea {
    /// The descriptor table.
    DescriptorTable,
    /// The available (driver) ring.
    AvailRing,
    /// The used (device) ring.
    UsedRing,
}

impl std::fmt::Display for QueueArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueArea::DescriptorTable => "descriptor table",
            QueueArea::AvailRing => "available ring",
            QueueArea::UsedRing => "used ring",
        })
    }
}

/// Why a queue configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueValidationError {
    /// The size is zero, not a power of two or above the maximum.
    #[error("queue size {size} is not a power of two between 1 and {max}")]
    InvalidSize {
        /// The size the driver set.
        size: u16,
        /// The device's maximum.
        max: u16,
    },
    /// An area is not aligned as virtio requires (16, 2 and 4 bytes).
    #[error("queue {area} at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The area.
        area: QueueArea,
        /// Its guest address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// An area is not (entirely) inside guest memory.
    #[error("queue {area} at {addr:#x} ({len:#x} bytes) is not inside guest memory")]
    OutsideMemory {
        /// The area.
        area: QueueArea,
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// The available ring is at guest address 0, which `virtio-queue`
    /// treats as "not configured".
    #[error("queue available ring at guest address 0 is not supported")]
    AvailRingAtZero,
    /// Two areas of the queue overlap.
    #[error("queue {0} and {1} overlap")]
    Overlap(QueueArea, QueueArea),
    /// The device's maximum size is not valid (a device bug, or a corrupt
    /// snapshot).
    #[error("queue maximum size {0} is not a power of two between 1 and 32768")]
    InvalidMaxSize(u16),
    /// A snapshot of a queue the driver never enabled has ring positions
    /// (only an enabled queue moves).
    #[error(
        "a disabled queue cannot be at available entry {next_avail} and used entry {next_used}"
    )]
    IdleQueuePositions {
        /// The saved next available entry.
        next_avail: u16,
        /// The saved next used entry.
        next_used: u16,
    },
}

/// Errors while processing a queue that the device cannot recover from.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue index does not exist on this device.
    #[error("queue {index} does not exist")]
    NoSuchQueue {
        /// The index asked for.
        index: usize,
    },
    /// The driver broke the ring protocol (for example an available index
    /// more than a queue's worth ahead) or a ring became unreadable. The
    /// device stops using the queue and asks for a reset.
    #[error("queue {index} is broken: {source}")]
    Ring {
        /// The queue.
        index: usize,
        /// What `virtio-queue` reported.
        #[source]
        source: virtio_queue::Error,
    },
}

impl QueueConfig {
    /// The reset state of a queue whose maximum size is `max_size`.
    pub fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
        }
    }

    /// Checks the configuration against the virtio rules and `memory`:
    /// the size is a power of two no larger than the maximum, the three
    /// areas are aligned and lie inside guest memory.
    pub fn validate(&self, memory: &GuestMemoryMmap) -> Result<(), QueueValidationError> {
        let max = self.max_size;
        if max == 0 || max > MAX_QUEUE_SIZE || !max.is_power_of_two() {
            return Err(QueueValidationError::InvalidMaxSize(max));
        }
        let size = self.size;
        if size == 0 || size > max || !size.is_power_of_two() {
            return Err(QueueValidationError::InvalidSize { size, max });
        }
        let n = u64::from(size);
        let areas = [
            (QueueArea::DescriptorTable, self.desc_table, 16, 16 * n),
            (QueueArea::AvailRing, self.avail_ring, 2, 6 + 2 * n),
            (QueueArea::UsedRing, self.used_ring, 4, 6 + 8 * n),
        ];
        for (area, addr, align, len) in areas {
            if addr % align != 0 {
                return Err(QueueValidationError::Misaligned { area, addr, align });
            }
            let inside = addr.checked_add(len).is_some()
                && memory.check_range(GuestAddress(addr), len as usize);
            if !inside {
                return Err(QueueValidationError::OutsideMemory { area, addr, len });
            }
        }
        for (i, a) in areas.iter().enumerate() {
            for b in &areas[i + 1..] {
                // Both ranges are inside memory, so the ends do not wrap.
                if a.1 < b.1 + b.3 && b.1 < a.1 + a.3 {
                    return Err(QueueValidationError::Overlap(a.0, b.0));
                }
            }
        }
        if self.avail_ring == 0 {
            return Err(QueueValidationError::AvailRingAtZero);
        }
        Ok(())
    }

    /// Builds the device's queue: validated if the driver enabled it, an
    /// idle queue otherwise.
    pub fn to_queue(
        &self,
        memory: &GuestMemoryMmap,
        event_idx: bool,
    ) -> Result<Queue, QueueValidationError> {
        if !self.ready {
            let mut queue = Queue::new(self.max_size)
                .map_err(|_| QueueValidationError::InvalidMaxSize(self.max_size))?;
            queue.set_event_idx(event_idx);
            return Ok(queue);
        }
        self.validate(memory)?;
        QueueSnapshot {
            config: *self,
            next_avail: 0,
            next_used: 0,
            event_idx,
        }
        .to_queue(memory)
    }
}

/// A queue's full state, configuration and ring positions, for snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// The configuration.
    pub config: QueueConfig,
    /// The next available-ring entry the device will read.
    pub next_avail: u16,
    /// The next used-ring entry the device will write.
    pub next_used: u16,
    /// Whether VIRTIO_RING_F_EVENT_IDX was negotiated.
    pub event_idx: bool,
}

impl From<&Queue> for QueueSnapshot {
    fn from(queue: &Queue) -> Self {
        let s = queue.state();
        Self {
            config: QueueConfig {
                max_size: s.max_size,
                size: s.size,
                ready: s.ready,
                desc_table: s.desc_table,
                avail_ring: s.avail_ring,
                used_ring: s.used_ring,
            },
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
        }
    }
}

impl QueueSnapshot {
    /// Rebuilds the queue, validating a ready queue against `memory` as
    /// activation does (a snapshot is untrusted input too): a disabled
    /// queue must be at its start, and the maximum size must be valid.
    pub fn to_queue(&self, memory: &GuestMemoryMmap) -> Result<Queue, QueueValidationError> {
        if self.config.ready {
            self.config.validate(memory)?;
        } else if self.next_avail != 0 || self.next_used != 0 {
            return Err(QueueValidationError::IdleQueuePositions {
                next_avail: self.next_avail,
                next_used: self.next_used,
            });
        }
        let c = &self.config;
        let state = QueueState {
            max_size: c.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: if c.ready { c.size } else { c.max_size },
            ready: c.ready,
            desc_table: if c.ready { c.desc_table } else { 0 },
            avail_ring: if c.ready { c.avail_ring } else { 0 },
            used_ring: if c.ready { c.used_ring } else { 0 },
        };
        Queue::try_from(state).map_err(|_| QueueValidationError::InvalidMaxSize(c.max_size))
    }
}

/// Takes the next available descriptor chain. An error means the driver
/// broke the ring protocol.
#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
pub(crate) fn pop_chain<'m>(
    queue: &mut Queue,
    memory: &'m GuestMemoryMmap,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, virtio_queue::Error> {
    let mut iter = queue.iter(memory)?;
    Ok(iter.next())
}

/// Whether the driver wants an interrupt for the buffers used since the
/// last call: `used_event` with VIRTIO_RING_F_EVENT_IDX, otherwise the
/// available ring's NO_INTERRUPT flag.
#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
pub(crate) fn needs_interrupt(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    if queue.event_idx_enabled() {
        return queue.needs_notification(memory);
    }
    // Order the used-ring writes before reading the driver's flags.
    fence(Ordering::SeqCst);
    let flags: u16 = memory
        .load(GuestAddress(queue.avail_ring()), Ordering::Relaxed)
        .map_err(virtio_queue::Error::GuestMemory)?;
    Ok(u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0)
}

/// What one pass over a queue did.
#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drained {
    /// The driver should be interrupted.
    pub(crate) notify: bool,
    /// The pass stopped at its budget with work possibly left.
    pub(crate) more: bool,
}

/// What a queue handler did with a chain.
#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// The chain is in flight; the device returns it later.
    Kept,
    /// The chain was returned to the driver.
    Returned,
    /// The device cannot take the chain now: it goes back to the
    /// available ring and the pass stops, with driver notifications off;
    /// the device comes back to the queue when it can take work again.
    PutBack,
    /// The device has done its share of work for this pass (its byte
    /// budget is spent): the chain goes back to the available ring and
    /// the pass ends with `more` set, so the caller comes back after the
    /// event loop has served everything else.
    Yield,
}

impl From<bool> for Handled {
    fn from(returned: bool) -> Self {
        if returned {
            Handled::Returned
        } else {
            Handled::Kept
        }
    }
}

/// Drains a queue: calls `handle` for each available chain whose head is
/// a valid index (`handle` returns the chain to the driver itself, and
/// says whether it did, or puts it back with [`Handled::PutBack`]),
/// keeping driver notifications off while it works.
///
/// A pass handles at most about two queues' worth of chains: a driver
/// that keeps the ring busy (or lays its rings out so that the device's
/// own writes look like new work) cannot hold the event loop. When the
/// budget runs out the pass stops with `more` set and notifications still
/// off; the caller comes back later.
#[cfg_attr(
    not(any(feature = "block", feature = "net", feature = "rng", feature = "vsock")),
    allow(dead_code)
)]
pub(crate) fn drain_queue<F, R>(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    mut handle: F,
) -> Result<Drained, virtio_queue::Error>
where
    F: FnMut(&mut Queue, u16, DescriptorChain<&GuestMemoryMmap>) -> Result<R, virtio_queue::Error>,
    R: Into<Handled>,
{
    let mut budget = 2 * usize::from(queue.size()) + 2;
    let mut used = false;
    let more = 'pass: loop {
        queue.disable_notification(memory)?;
        loop {
            if budget == 0 {
                break 'pass true;
            }
            budget -= 1;
            let Some(chain) = pop_chain(queue, memory)? else {
                break;
            };
            let head = chain.head_index();
            if head >= queue.size() {
                kindling_devices::log_limited!(
                    log::Level::Warn,
                    "virtio: dropping a chain with head {head}, outside a queue of {}",
                    queue.size()
                );
                continue;
            }
            match handle(queue, head, chain)?.into() {
                Handled::Kept => {}
                Handled::Returned => used = true,
                handled @ (Handled::PutBack | Handled::Yield) => {
                    queue.go_to_previous_position();
                    let notify = used && needs_interrupt(queue, memory)?;
                    return Ok(Drained {
                        notify,
                        more: handled == Handled::Yield,
                    });
                }
            }
        }
        if !queue.enable_notification(memory)? {
            break false;
        }
    };
    let notify = used && needs_interrupt(queue, memory)?;
    Ok(Drained { notify, more })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Address;

    /// Drains `q`, returning every chain with `len` bytes used.
    fn drain(q: &mut Queue, mem: &GuestMemoryMmap, len: u32) -> Drained {
        drain_queue(q, mem, |q, head, _| {
            q.add_used(mem, head, len)?;
            Ok(true)
        })
        .unwrap()
    }

    pub(crate) fn memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    pub(crate) fn config(size: u16) -> QueueConfig {
        QueueConfig {
            max_size: 256,
            size,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
        }
    }

    /// A driver's side of a queue, made of virtio-queue's mock rings, laid
    /// out as [`config`] says (`MockSplitQueue` lays its rings out
    /// overlapping, which validation refuses).
    pub(crate) struct Rings<'a> {
        pub(crate) desc: virtio_queue::mock::DescriptorTable<'a, GuestMemoryMmap>,
        pub(crate) avail: virtio_queue::mock::AvailRing<'a, GuestMemoryMmap>,
        pub(crate) used: virtio_queue::mock::UsedRing<'a, GuestMemoryMmap>,
        pub(crate) config: QueueConfig,
    }

    impl<'a> Rings<'a> {
        /// Rings of `size` entries at 0x1000 (descriptors), 0x2000
        /// (available) and 0x3000 (used).
        pub(crate) fn new(mem: &'a GuestMemoryMmap, size: u16) -> Self {
            let mut config = config(size);
            config.max_size = size;
            Self {
                desc: virtio_queue::mock::DescriptorTable::new(
                    mem,
                    GuestAddress(config.desc_table),
                    size,
                ),
                avail: virtio_queue::mock::AvailRing::new(
                    mem,
                    GuestAddress(config.avail_ring),
                    size,
                ),
                used: virtio_queue::mock::UsedRing::new(mem, GuestAddress(config.used_ring), size),
                config,
            }
        }

        /// Makes the chain `descs`, stored from descriptor `head` on,
        /// available.
        pub(crate) fn add_chain(&self, head: u16, descs: &[RawDescriptor]) {
            for (i, d) in descs.iter().enumerate() {
                self.desc.store(head + i as u16, *d).unwrap();
            }
            let idx = self.avail.idx().load();
            let slot = usize::from(idx % self.config.size);
            self.avail.ring().ref_at(slot).unwrap().store(head);
            self.avail.idx().store(idx.wrapping_add(1));
        }

        /// The used-ring entry `i`: (descriptor id, length).
        pub(crate) fn used_entry(&self, i: u16) -> (u32, u32) {
            let slot = usize::from(i % self.config.size);
            let e = self.used.ring().ref_at(slot).unwrap().load();
            (e.id(), e.len())
        }
    }

    #[test]
    fn valid_configuration_builds_a_queue() {
        let mem = memory(0x10000);
        let q = config(256).to_queue(&mem, true).unwrap();
        assert!(q.ready());
        assert_eq!(q.size(), 256);
        assert!(q.event_idx_enabled());
        assert_eq!(q.desc_table(), 0x1000);
        let idle = QueueConfig::new(16).to_queue(&mem, false).unwrap();
        assert!(!idle.ready());
        assert_eq!(idle.max_size(), 16);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let mem = memory(0x10000);
        for size in [0, 3, 100, 512] {
            assert_eq!(
                config(size).validate(&mem),
                Err(QueueValidationError::InvalidSize { size, max: 256 }),
                "size {size}"
            );
        }
        let cases = [
            (QueueArea::DescriptorTable, 0x1008, 16),
            (QueueArea::AvailRing, 0x2001, 2),
            (QueueArea::UsedRing, 0x3002, 4),
        ];
        for (area, addr, align) in cases {
            let mut c = config(16);
            match area {
                QueueArea::DescriptorTable => c.desc_table = addr,
                QueueArea::AvailRing => c.avail_ring = addr,
                QueueArea::UsedRing => c.used_ring = addr,
            }
            assert_eq!(
                c.validate(&mem),
                Err(QueueValidationError::Misaligned { area, addr, align })
            );
        }
        // Partly or wholly outside memory, and wrapping the address space.
        let mut c = config(256);
        c.desc_table = 0xf800;
        assert_eq!(
            c.validate(&mem),
            Err(QueueValidationError::OutsideMemory {
                area: QueueArea::DescriptorTable,
                addr: 0xf800,
                len: 0x1000
            })
        );
        let mut c = config(16);
        c.used_ring = u64::MAX - 3;
        assert!(matches!(
            c.validate(&mem),
            Err(QueueValidationError::OutsideMemory { .. })
        ));
        let mut c = config(16);
        c.avail_ring = 0x20000;
        assert!(matches!(
            c.validate(&mem),
            Err(QueueValidationError::OutsideMemory { .. })
        ));
        let mut c = config(16);
        c.avail_ring = 0;
        assert_eq!(c.validate(&mem), Err(QueueValidationError::AvailRingAtZero));
        let mut c = config(16);
        c.max_size = 3;
        assert_eq!(
            c.validate(&mem),
            Err(QueueValidationError::InvalidMaxSize(3))
        );
        assert!(c.to_queue(&mem, false).is_err());
        c.ready = false;
        assert!(c.to_queue(&mem, false).is_err());
    }

    #[test]
    fn overlapping_areas_are_refused() {
        let mem = memory(0x10000);
        let mut c = config(16);
        c.used_ring = 0x2004; // inside the available ring
        assert_eq!(
            c.validate(&mem),
            Err(QueueValidationError::Overlap(
                QueueArea::AvailRing,
                QueueArea::UsedRing
            ))
        );
        let mut c = config(16);
        c.avail_ring = 0x10f0; // the end of the descriptor table
        assert_eq!(
            c.validate(&mem),
            Err(QueueValidationError::Overlap(
                QueueArea::DescriptorTable,
                QueueArea::AvailRing
            ))
        );
        // Adjacent areas are fine.
        let mut c = config(16);
        c.avail_ring = 0x1100;
        c.used_ring = 0x1100 + 6 + 32 + 2;
        assert_eq!(c.validate(&mem), Ok(()));
    }

    /// The rings overlap so that every device write to the used ring
    /// changes the available index: without a budget the device would
    /// spin forever (found by the descriptor-walk fuzz target).
    #[test]
    fn a_pass_is_bounded() {
        let mem = memory(0x10000);
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_ready(true);
        q.set_desc_table_address(Some(0), Some(0));
        q.set_avail_ring_address(Some(2), Some(0));
        q.set_used_ring_address(Some(4), Some(0));
        mem.write_obj(10u16, GuestAddress(4)).unwrap();
        let mut calls = 0;
        let d = drain_queue(&mut q, &mem, |q, head, _| {
            calls += 1;
            q.add_used(&mem, head, 0)?;
            Ok(true)
        })
        .unwrap();
        assert!(d.more);
        assert!(calls <= 34);
        // And a well-behaved queue with more than a budget of work gets
        // it done over several passes.
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 4);
        let mut q: Queue = vq.create_queue().unwrap();
        let descs: Vec<RawDescriptor> = (0..4)
            .map(|i| RawDescriptor::from(Descriptor::new(0x8000, 8, VRING_DESC_F_WRITE as u16, i)))
            .collect();
        vq.add_desc_chains(&descs, 0).unwrap();
        assert!(!drain(&mut q, &mem, 1).more);
        assert_eq!(vq.used().idx().load(), 4);
    }

    #[test]
    fn snapshots_round_trip() {
        let mem = memory(0x10000);
        let mut q = config(64).to_queue(&mem, true).unwrap();
        q.set_next_avail(5);
        q.set_next_used(4);
        let snap = QueueSnapshot::from(&q);
        let json = serde_json::to_string(&snap).unwrap();
        let back: QueueSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        let q2 = back.to_queue(&mem).unwrap();
        assert_eq!(q2, q);
        // A snapshot is validated like a driver's configuration.
        let mut bad = snap;
        bad.config.used_ring = 0x3001;
        assert!(bad.to_queue(&mem).is_err());
        // An idle queue restores idle.
        let idle = QueueSnapshot::from(&Queue::new(8).unwrap());
        assert!(!idle.to_queue(&mem).unwrap().ready());
    }

    #[test]
    fn drain_returns_chains_and_honours_no_interrupt() {
        let mem = memory(0x10000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        let descs = [
            RawDescriptor::from(Descriptor::new(0x8000, 8, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(Descriptor::new(0x9000, 8, VRING_DESC_F_WRITE as u16, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut seen = Vec::new();
        let d = drain_queue(&mut q, &mem, |q, head, chain| {
            seen.push(chain.head_index());
            q.add_used(&mem, head, 7)?;
            Ok(true)
        })
        .unwrap();
        assert_eq!(
            d,
            Drained {
                notify: true,
                more: false
            }
        );
        assert_eq!(seen, vec![0]);
        assert_eq!(vq.used().idx().load(), 1);
        let elem = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!((elem.id(), elem.len()), (0, 7));

        // The driver sets VRING_AVAIL_F_NO_INTERRUPT: no interrupt.
        mem.write_obj(VRING_AVAIL_F_NO_INTERRUPT as u16, vq.avail_addr())
            .unwrap();
        vq.add_desc_chains(&descs, 2).unwrap();
        assert!(!drain(&mut q, &mem, 0).notify);
        assert_eq!(vq.used().idx().load(), 2);
        // Nothing to do: no interrupt either.
        assert!(!drain(&mut q, &mem, 0).notify);
    }

    #[test]
    fn drain_skips_out_of_range_heads_and_reports_bad_avail_index() {
        let mem = memory(0x10000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        // An available entry naming descriptor 99 in a 16-entry queue.
        vq.avail().ring().ref_at(0).unwrap().store(99);
        vq.avail().idx().store(1);
        let mut calls = 0;
        let d = drain_queue(&mut q, &mem, |_, _, _| {
            calls += 1;
            Ok(true)
        })
        .unwrap();
        assert!(!d.notify);
        assert_eq!(calls, 0);
        assert_eq!(q.next_avail(), 1);
        // The driver claims 100 new entries in a 16-entry ring.
        vq.avail().idx().store(101);
        assert!(matches!(
            drain_queue(&mut q, &mem, |_, _, _| Ok(false)),
            Err(virtio_queue::Error::InvalidAvailRingIndex)
        ));
    }

    #[test]
    fn a_put_back_chain_stays_available() {
        let mem = memory(0x10000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        let descs: Vec<RawDescriptor> = (0..3)
            .map(|i| RawDescriptor::from(Descriptor::new(0x8000, 8, VRING_DESC_F_WRITE as u16, i)))
            .collect();
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut seen = Vec::new();
        // The first chain is returned, the second cannot be taken.
        let d = drain_queue(&mut q, &mem, |q, head, _| {
            seen.push(head);
            if seen.len() == 2 {
                return Ok(Handled::PutBack);
            }
            q.add_used(&mem, head, 1)?;
            Ok(Handled::Returned)
        })
        .unwrap();
        assert_eq!(
            d,
            Drained {
                notify: true,
                more: false
            }
        );
        assert_eq!(q.next_avail(), 1);
        assert_eq!(vq.used().idx().load(), 1);
        // The next pass starts with the chain that was put back.
        assert!(!drain(&mut q, &mem, 1).more);
        assert_eq!(seen, vec![0, 1]);
        assert_eq!(vq.used().idx().load(), 3);
        assert_eq!(vq.used().ring().ref_at(1).unwrap().load().id(), 1);
    }

    /// EVENT_IDX: the device interrupts only when the used index passes the
    /// driver's `used_event`.
    #[test]
    fn event_idx_suppresses_interrupts() {
        let mem = memory(0x10000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_event_idx(true);
        let used_event_addr = vq.avail_addr().unchecked_add(4 + 2 * 16);
        let desc = |i: u16| {
            RawDescriptor::from(Descriptor::new(
                0x8000 + u64::from(i) * 0x100,
                8,
                VRING_DESC_F_WRITE as u16,
                0,
            ))
        };
        // used_event = 1: the driver wants an interrupt once entry 1 is used.
        mem.write_obj(1u16, used_event_addr).unwrap();
        vq.add_desc_chains(&[desc(0)], 0).unwrap();
        assert!(!drain(&mut q, &mem, 1).notify, "used idx 1");
        vq.add_desc_chains(&[desc(1)], 1).unwrap();
        assert!(drain(&mut q, &mem, 1).notify, "used idx 2");
        vq.add_desc_chains(&[desc(2)], 2).unwrap();
        assert!(!drain(&mut q, &mem, 1).notify, "used idx 3");
        // The device wrote avail_event = next_avail when it re-enabled
        // notifications.
        let avail_event_addr = vq.used_addr().unchecked_add(4 + 8 * 16);
        assert_eq!(mem.read_obj::<u16>(avail_event_addr).unwrap(), 3);
    }
}
