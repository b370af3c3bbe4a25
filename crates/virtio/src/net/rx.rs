//! Placing a received frame (virtio header first) into the driver's
//! receive buffers.
//!
//! Without `VIRTIO_NET_F_MRG_RXBUF` a frame must fit in one chain; with
//! it, a frame takes as many chains as it needs and the header's
//! `num_buffers` says how many. The used entries of one frame are
//! published together (one store of the used index), so a driver polling
//! the ring never sees a frame's first buffer without the others.
//!
//! When the driver has not posted enough buffers, every chain taken goes
//! back to the available ring and the caller holds the frame until the
//! driver posts more ([`Placement::NoBuffers`]).

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::VNET_HDR_LEN;
use crate::chain::collect_descriptors;
use crate::queue::{needs_interrupt, pop_chain};
use crate::GuestMemoryMmap;

/// What happened to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The frame is in `buffers` chains, now used.
    Placed {
        /// Chains it took.
        buffers: u16,
    },
    /// Not enough buffers: nothing was consumed; wait for the driver.
    NoBuffers,
    /// The frame can never fit (one chain too small without mergeable
    /// buffers, or a whole queue too small): dropped, the chains stay
    /// available.
    TooLarge,
    /// A chain was malformed (device-readable, outside guest memory, cut
    /// short): the frame is dropped and the chains taken for it are
    /// returned unused (length 0).
    BadChain,
}

/// Buffers reused from one frame to the next.
#[derive(Debug, Default)]
pub struct RxScratch {
    descriptors: Vec<Descriptor>,
    all: Vec<Descriptor>,
    /// (head, first descriptor in `all`, end, capacity)
    chains: Vec<(u16, usize, usize, usize)>,
    /// (head, bytes written) of each chain used for the frame.
    used: Vec<(u16, u32)>,
}

fn chain_capacity(memory: &GuestMemoryMmap, descs: &[Descriptor]) -> Option<usize> {
    let mut cap: usize = 0;
    for d in descs {
        let inside = d.addr().0.checked_add(u64::from(d.len())).is_some()
            && memory.check_range(d.addr(), d.len() as usize);
        if !d.is_write_only() || !inside {
            return None;
        }
        cap = cap.saturating_add(d.len() as usize);
    }
    Some(cap)
}

/// Writes used entries `(head, len)` after the queue's next used entry
/// and publishes them with one store of the used index.
fn publish(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    entries: impl ExactSizeIterator<Item = (u16, u32)>,
) -> Result<(), virtio_queue::Error> {
    let size = queue.size();
    let start = Wrapping(queue.next_used());
    let n = entries.len() as u16;
    for (i, (head, len)) in entries.enumerate() {
        let slot = (start + Wrapping(i as u16)).0 % size;
        let addr = queue
            .used_ring()
            .checked_add(4 + 8 * u64::from(slot))
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        memory
            .write_slice(&elem, GuestAddress(addr))
            .map_err(virtio_queue::Error::GuestMemory)?;
    }
    let new = (start + Wrapping(n)).0;
    let idx = queue
        .used_ring()
        .checked_add(2)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    memory
        .store(u16::to_le(new), GuestAddress(idx), Ordering::Release)
        .map_err(virtio_queue::Error::GuestMemory)?;
    queue.set_next_used(new);
    Ok(())
}

/// Puts `frame` (its first [`VNET_HDR_LEN`] bytes the virtio header, whose
/// `num_buffers` this sets) into the available chains of `queue`.
pub fn place_frame(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    frame: &mut [u8],
    mergeable: bool,
    scratch: &mut RxScratch,
) -> Result<Placement, virtio_queue::Error> {
    let need = frame.len();
    scratch.all.clear();
    scratch.chains.clear();
    let mut capacity = 0usize;
    let max_chains = if mergeable {
        usize::from(queue.size())
    } else {
        1
    };
    while capacity < need && scratch.chains.len() < max_chains {
        let Some(chain) = pop_chain(queue, memory)? else {
            for _ in 0..scratch.chains.len() {
                queue.go_to_previous_position();
            }
            return Ok(Placement::NoBuffers);
        };
        let head = chain.head_index();
        let cap = if head < queue.size() {
            collect_descriptors(chain, &mut scratch.descriptors)
                .ok()
                .and_then(|()| chain_capacity(memory, &scratch.descriptors))
        } else {
            None
        };
        let Some(cap) = cap else {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio-net: malformed receive chain {head}; frame dropped"
            );
            let returned: Vec<(u16, u32)> = scratch
                .chains
                .iter()
                .map(|c| (c.0, 0))
                .chain((head < queue.size()).then_some((head, 0)))
                .collect();
            publish(queue, memory, returned.into_iter())?;
            return Ok(Placement::BadChain);
        };
        let start = scratch.all.len();
        scratch.all.extend_from_slice(&scratch.descriptors);
        scratch.chains.push((head, start, scratch.all.len(), cap));
        capacity = capacity.saturating_add(cap);
    }
    if capacity < need {
        for _ in 0..scratch.chains.len() {
            queue.go_to_previous_position();
        }
        return Ok(Placement::TooLarge);
    }
    let buffers = scratch.chains.len() as u16;
    if frame.len() >= VNET_HDR_LEN {
        frame[10..12].copy_from_slice(&buffers.to_le_bytes());
    }
    let mut at = 0usize;
    let used = &mut scratch.used;
    used.clear();
    for &(head, start, end, _) in &scratch.chains {
        let before = at;
        for d in &scratch.all[start..end] {
            if at == need {
                break;
            }
            let n = (d.len() as usize).min(need - at);
            memory
                .write_slice(&frame[at..at + n], d.addr())
                .map_err(virtio_queue::Error::GuestMemory)?;
            at += n;
        }
        used.push((head, (at - before) as u32));
    }
    publish(queue, memory, used.iter().copied())?;
    Ok(Placement::Placed { buffers })
}

/// Whether the driver has a chain available.
pub fn has_buffers(queue: &Queue, memory: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error> {
    let avail = queue.avail_idx(memory, Ordering::Acquire)?;
    Ok(avail.0 != queue.next_avail())
}

/// Whether the driver wants an interrupt now that the used index moved
/// from `old` to the queue's next used entry (`used_event` with
/// `VIRTIO_RING_F_EVENT_IDX`, the NO_INTERRUPT flag otherwise).
pub fn needs_rx_interrupt(
    queue: &mut Queue,
    memory: &GuestMemoryMmap,
    old: u16,
) -> Result<bool, virtio_queue::Error> {
    let new = queue.next_used();
    if new == old {
        return Ok(false);
    }
    if !queue.event_idx_enabled() {
        return needs_interrupt(queue, memory);
    }
    fence(Ordering::SeqCst);
    let addr = queue
        .avail_ring()
        .checked_add(4 + 2 * u64::from(queue.size()))
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    let used_event: u16 = memory
        .load(GuestAddress(addr), Ordering::Acquire)
        .map(u16::from_le)
        .map_err(virtio_queue::Error::GuestMemory)?;
    Ok(new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::memory;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend((0..len).map(|i| i as u8));
        f
    }

    fn used(vq: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> (u32, u32) {
        let e = vq.used().ring().ref_at(i).unwrap().load();
        (e.id(), e.len())
    }

    #[test]
    fn a_frame_fills_one_chain_without_mergeable_buffers() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        vq.add_desc_chains(&[raw(0x8000, 12, W | N, 1), raw(0x9000, 2048, W, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut f = frame(100);
        let mut s = RxScratch::default();
        assert_eq!(
            place_frame(&mut q, &mem, &mut f, false, &mut s).unwrap(),
            Placement::Placed { buffers: 1 }
        );
        assert_eq!(used(&vq, 0), (0, 112));
        assert_eq!(vq.used().idx().load(), 1);
        let mut got = [0u8; 100];
        mem.read_slice(&mut got, GuestAddress(0x9000)).unwrap();
        assert_eq!(&got[..], &f[12..]);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x8000 + 10)).unwrap(), 1);
        // No more buffers: nothing consumed.
        assert_eq!(
            place_frame(&mut q, &mem, &mut frame(10), false, &mut s).unwrap(),
            Placement::NoBuffers
        );
        assert_eq!(q.next_avail(), 1);
    }

    #[test]
    fn a_chain_too_small_drops_the_frame_and_keeps_the_chain() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        vq.add_desc_chains(&[raw(0x8000, 64, W, 0)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut s = RxScratch::default();
        assert_eq!(
            place_frame(&mut q, &mem, &mut frame(100), false, &mut s).unwrap(),
            Placement::TooLarge
        );
        assert_eq!(q.next_avail(), 0);
        assert_eq!(
            place_frame(&mut q, &mem, &mut frame(52), false, &mut s).unwrap(),
            Placement::Placed { buffers: 1 }
        );
    }

    #[test]
    fn mergeable_buffers_spread_a_frame_and_publish_it_at_once() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        vq.add_desc_chains(
            &[
                raw(0x8000, 1000, W, 0),
                raw(0x9000, 1000, W, 0),
                raw(0xa000, 1000, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut s = RxScratch::default();
        // Too large for what is posted: wait, nothing consumed.
        assert_eq!(
            place_frame(&mut q, &mem, &mut frame(3000), true, &mut s).unwrap(),
            Placement::NoBuffers
        );
        assert_eq!((q.next_avail(), vq.used().idx().load()), (0, 0));
        let mut f = frame(2500);
        assert_eq!(
            place_frame(&mut q, &mem, &mut f, true, &mut s).unwrap(),
            Placement::Placed { buffers: 3 }
        );
        assert_eq!(vq.used().idx().load(), 3);
        assert_eq!(used(&vq, 0), (0, 1000));
        assert_eq!(used(&vq, 1), (1, 1000));
        assert_eq!(used(&vq, 2), (2, 512));
        assert_eq!(mem.read_obj::<u16>(GuestAddress(0x8000 + 10)).unwrap(), 3);
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(0xa000)).unwrap();
        assert_eq!(got, f[2000..]);
    }

    #[test]
    fn a_bad_chain_drops_the_frame_and_returns_the_chains() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        vq.add_desc_chains(
            &[
                raw(0x8000, 100, W, 0),
                raw(0x9000, 100, 0, 0),
                raw(0xa000, 100, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut s = RxScratch::default();
        assert_eq!(
            place_frame(&mut q, &mem, &mut frame(250), true, &mut s).unwrap(),
            Placement::BadChain
        );
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (1, 0));
        // The next frame uses the chain left.
        assert_eq!(
            place_frame(&mut q, &mem, &mut frame(10), true, &mut s).unwrap(),
            Placement::Placed { buffers: 1 }
        );
        assert_eq!(used(&vq, 2), (2, 22));
    }

    #[test]
    fn interrupts_follow_used_event() {
        let mem = memory(0x10_0000);
        // virtio-queue's mock rings overlap used_event with the used ring:
        // use separate areas.
        let rings = crate::queue::tests::Rings::new(&mem, 16);
        rings.add_chain(0, &[raw(0x8000, 100, W, 0)]);
        rings.add_chain(1, &[raw(0x9000, 100, W, 0)]);
        let mut q = rings.config.to_queue(&mem, true).unwrap();
        assert!(has_buffers(&q, &mem).unwrap());
        let mut s = RxScratch::default();
        // used_event (after the 16 ring entries) = 1: interrupt when the
        // index passes 1.
        let used_event = GuestAddress(rings.config.avail_ring + 4 + 2 * 16);
        mem.write_obj(1u16, used_event).unwrap();
        place_frame(&mut q, &mem, &mut frame(10), true, &mut s).unwrap();
        assert!(!needs_rx_interrupt(&mut q, &mem, 0).unwrap());
        place_frame(&mut q, &mem, &mut frame(10), true, &mut s).unwrap();
        assert!(needs_rx_interrupt(&mut q, &mem, 1).unwrap());
        assert!(!needs_rx_interrupt(&mut q, &mem, 2).unwrap());
        assert!(!has_buffers(&q, &mem).unwrap());
        assert_eq!(rings.used_entry(1), (1, 22));
    }
}
