//! Walking a descriptor chain that the guest wrote, which is hostile
//! input: it can loop, point outside guest memory, claim lengths that
//! overflow, or nest indirect tables.
//!
//! `virtio-queue`'s [`virtio_queue::DescriptorChain`] stops yielding
//! descriptors when the chain is longer than its table, when a `next`
//! index is out of range, when a descriptor cannot be read, when the total
//! length passes 4 GiB, or at an invalid indirect table. It does not say
//! which; [`collect_descriptors`] tells a complete chain (the last
//! descriptor has no NEXT flag) from one cut short.

use virtio_queue::desc::split::Descriptor;

/// The most descriptors a request may have. Longer chains are refused
/// rather than buffered.
pub const MAX_CHAIN_LEN: usize = 1024;

/// Why a chain cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The chain yielded no descriptor (bad head or indirect table).
    #[error("descriptor chain is empty or its first descriptor is invalid")]
    Empty,
    /// The chain stopped at a descriptor that still has NEXT set: a loop, a
    /// `next` index out of range, an unreadable descriptor or a total
    /// length above 4 GiB.
    #[error("descriptor chain cut short after {count} descriptors (a loop, a bad next index or a length overflow)")]
    Truncated {
        /// Descriptors read before the chain stopped.
        count: usize,
    },
    /// The chain has more than [`MAX_CHAIN_LEN`] descriptors.
    #[error("descriptor chain longer than {MAX_CHAIN_LEN} descriptors")]
    TooLong,
}

/// Reads a whole chain into `out` (cleared first), checking that it ends
/// properly.
///
/// # Example
///
/// ```
/// use kindling_virtio::chain::{collect_descriptors, ChainError};
/// use virtio_queue::desc::split::Descriptor;
///
/// let mut out = Vec::new();
/// let ok = [Descriptor::new(0x1000, 16, 1, 1), Descriptor::new(0x2000, 1, 2, 0)];
/// collect_descriptors(ok, &mut out).unwrap();
/// assert_eq!(out.len(), 2);
/// // A chain whose last descriptor still has NEXT (flag 1) was cut short.
/// let cut = [Descriptor::new(0x1000, 16, 1, 1)];
/// assert_eq!(collect_descriptors(cut, &mut out), Err(ChainError::Truncated { count: 1 }));
/// ```
pub fn collect_descriptors<I>(descriptors: I, out: &mut Vec<Descriptor>) -> Result<(), ChainError>
where
    I: IntoIterator<Item = Descriptor>,
{
    out.clear();
    for desc in descriptors {
        if out.len() == MAX_CHAIN_LEN {
            return Err(ChainError::TooLong);
        }
        out.push(desc);
    }
    match out.last() {
        None => Err(ChainError::Empty),
        Some(last) if last.has_next() => Err(ChainError::Truncated { count: out.len() }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::memory;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress};

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    /// Writes `descs` at the start of the table, makes descriptor 0
    /// available and collects the chain.
    fn walk(descs: &[RawDescriptor]) -> Result<Vec<(u64, u32)>, ChainError> {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        for (i, d) in descs.iter().enumerate() {
            vq.desc_table().store(i as u16, *d).unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut out = Vec::new();
        collect_descriptors(chain, &mut out)
            .map(|()| out.iter().map(|d| (d.addr().0, d.len())).collect())
    }

    #[test]
    fn a_proper_chain_is_collected() {
        let out = walk(&[raw(0x8000, 16, NEXT, 1), raw(0x9000, 1, 2, 0)]).unwrap();
        assert_eq!(out, vec![(0x8000, 16), (0x9000, 1)]);
    }

    #[test]
    fn loops_are_cut_short() {
        assert_eq!(
            walk(&[raw(0x8000, 16, NEXT, 1), raw(0x9000, 1, NEXT, 0)]),
            Err(ChainError::Truncated { count: 16 })
        );
        assert_eq!(
            walk(&[raw(0x8000, 16, NEXT, 0)]),
            Err(ChainError::Truncated { count: 16 })
        );
    }

    #[test]
    fn out_of_range_next_and_overflowing_lengths_are_cut_short() {
        assert_eq!(
            walk(&[raw(0x8000, 16, NEXT, 99)]),
            Err(ChainError::Truncated { count: 1 })
        );
        assert_eq!(
            walk(&[raw(0x8000, u32::MAX, NEXT, 1), raw(0x9000, 2, 0, 0)]),
            Err(ChainError::Truncated { count: 1 })
        );
    }

    #[test]
    fn bad_indirect_tables_are_refused() {
        let indirect = VRING_DESC_F_INDIRECT as u16;
        // Length not a multiple of 16.
        assert_eq!(
            walk(&[raw(0x8000, 17, indirect, 0)]),
            Err(ChainError::Empty)
        );
        // A nested indirect descriptor.
        let mem = memory(0x10_0000);
        mem.write_obj(raw(0x9000, 16, indirect, 0), GuestAddress(0x8000))
            .unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        vq.desc_table()
            .store(0, raw(0x8000, 16, indirect, 0))
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(&mem).unwrap().next().unwrap();
        let mut out = Vec::new();
        assert_eq!(collect_descriptors(chain, &mut out), Err(ChainError::Empty));
        // An indirect table outside guest memory.
        assert_eq!(
            walk(&[raw(0x1_0000_0000, 32, indirect, 0)]),
            Err(ChainError::Empty)
        );
    }

    #[test]
    fn too_long_chains_are_refused() {
        let descs = (0..=MAX_CHAIN_LEN).map(|_| Descriptor::new(0, 1, 0, 0));
        let mut out = Vec::new();
        assert_eq!(
            collect_descriptors(descs, &mut out),
            Err(ChainError::TooLong)
        );
        assert_eq!(
            collect_descriptors(std::iter::empty(), &mut out),
            Err(ChainError::Empty)
        );
    }
}
