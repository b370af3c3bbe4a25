//! The persist contract for a queue: [`VirtQueue`], a `virtio-queue`
//! [`Queue`] that saves itself as a [`QueueSnapshot`].

use std::ops::{Deref, DerefMut};

use kindling_memory::Persist;
use virtio_queue::Queue;

use super::{QueueSnapshot, QueueValidationError};
use crate::GuestMemoryMmap;

/// A split queue with the persist contract.
///
/// `virtio-queue`'s [`Queue`] is another crate's type, so it cannot
/// implement [`Persist`] itself; this thin wrapper does, and derefs to the
/// queue. Its state is a [`QueueSnapshot`] (configuration, ring positions,
/// EVENT_IDX); a restore takes the guest memory the rings live in and
/// validates the snapshot against it as a driver's configuration is
/// validated at activation.
///
/// # Example
///
/// ```
/// use kindling_memory::Persist;
/// use kindling_virtio::{QueueConfig, VirtQueue};
/// use virtio_queue::QueueT;
/// use vm_memory::GuestAddress;
///
/// let memory = kindling_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// let config = QueueConfig {
///     max_size: 16,
///     size: 16,
///     ready: true,
///     desc_table: 0x1000,
///     avail_ring: 0x2000,
///     used_ring: 0x3000,
/// };
/// let mut queue = VirtQueue::from(config.to_queue(&memory, false).unwrap());
/// queue.set_next_avail(7);
/// let state = queue.save().unwrap();
/// let restored = VirtQueue::restore(&memory, &state).unwrap();
/// assert_eq!(restored.next_avail(), 7);
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct VirtQueue(pub Queue);

impl VirtQueue {
    /// The wrapped queue.
    pub fn into_inner(self) -> Queue {
        self.0
    }
}

impl From<Queue> for VirtQueue {
    fn from(queue: Queue) -> Self {
        Self(queue)
    }
}

impl Deref for VirtQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        &self.0
    }
}

impl DerefMut for VirtQueue {
    fn deref_mut(&mut self) -> &mut Queue {
        &mut self.0
    }
}

impl<'a> Persist<'a> for VirtQueue {
    type State = QueueSnapshot;
    type ConstructorArgs = &'a GuestMemoryMmap;
    type Error = QueueValidationError;

    fn save(&self) -> Result<QueueSnapshot, QueueValidationError> {
        Ok(QueueSnapshot::from(&self.0))
    }

    fn restore(
        memory: &'a GuestMemoryMmap,
        state: &QueueSnapshot,
    ) -> Result<Self, QueueValidationError> {
        state.to_queue(memory).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::QueueT;

    use super::*;
    use crate::queue::tests::{config, memory, Rings};
    use crate::queue::{drain_queue, QueueConfig};

    fn through_json(state: &QueueSnapshot) -> QueueSnapshot {
        serde_json::from_str(&serde_json::to_string(state).unwrap()).unwrap()
    }

    #[test]
    fn a_restored_queue_continues_where_the_saved_one_stopped() {
        let mem = memory(0x10000);
        let rings = Rings::new(&mem, 16);
        let mut q = VirtQueue::from(rings.config.to_queue(&mem, true).unwrap());
        let desc = |i: u16| {
            RawDescriptor::from(Descriptor::new(
                0x8000 + u64::from(i) * 0x100,
                8,
                VRING_DESC_F_WRITE as u16,
                0,
            ))
        };
        let serve = |q: &mut Queue| {
            drain_queue(q, &mem, |q, head, _| {
                q.add_used(&mem, head, 8)?;
                Ok(true)
            })
            .unwrap()
        };
        rings.add_chain(0, &[desc(0)]);
        rings.add_chain(1, &[desc(1)]);
        serve(&mut q);
        let state = q.save().unwrap();
        assert_eq!((state.next_avail, state.next_used), (2, 2));
        assert!(state.event_idx);
        let mut restored = VirtQueue::restore(&mem, &through_json(&state)).unwrap();
        assert_eq!(restored, q);
        // The driver adds one more request: the restored queue serves it as
        // the third, like the original would.
        rings.add_chain(2, &[desc(2)]);
        serve(&mut restored);
        assert_eq!(rings.used.idx().load(), 3);
        assert_eq!(rings.used_entry(2), (2, 8));
        assert_eq!(restored.into_inner().next_avail(), 3);
    }

    #[test]
    fn bad_snapshots_are_refused() {
        let mem = memory(0x10000);
        let good = VirtQueue::from(config(64).to_queue(&mem, false).unwrap())
            .save()
            .unwrap();
        let mut size = good;
        size.config.size = 48;
        assert!(matches!(
            VirtQueue::restore(&mem, &size),
            Err(QueueValidationError::InvalidSize { size: 48, max: 256 })
        ));
        let mut outside = good;
        outside.config.used_ring = 0xfff0;
        assert!(matches!(
            VirtQueue::restore(&mem, &outside),
            Err(QueueValidationError::OutsideMemory { .. })
        ));
        let mut idle = good;
        idle.config.ready = false;
        idle.next_avail = 5;
        assert_eq!(
            VirtQueue::restore(&mem, &idle).unwrap_err(),
            QueueValidationError::IdleQueuePositions {
                next_avail: 5,
                next_used: 0
            }
        );
        let mut max = good;
        max.config = QueueConfig::new(0);
        assert_eq!(
            VirtQueue::restore(&mem, &max).unwrap_err(),
            QueueValidationError::InvalidMaxSize(0)
        );
    }
}
