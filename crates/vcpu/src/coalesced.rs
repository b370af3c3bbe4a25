//! The coalesced MMIO/PIO ring: guest writes KVM buffers instead of exiting.
//!
//! Writes to a registered coalesced zone (see
//! [`Vm::register_coalesced_pio`](crate::Vm::register_coalesced_pio)) do
//! not leave the kernel: KVM appends them to a ring page shared with user
//! space and lets the guest run on. User space must replay them, in order,
//! before it handles anything else the guest did: [`Vcpu::run_once`]
//! drains the ring after every `KVM_RUN`, and a VMM drains it from its event
//! loop too, for guests that write and then wait without exiting.
//!
//! [`Vcpu::run_once`]: crate::Vcpu::run_once

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring, KVM_COALESCED_MMIO_PAGE_OFFSET};

use crate::{Vcpu, VcpuError, VcpuExitHandler};

/// The VM's coalesced ring, mapped once and shared by every vCPU thread and
/// the event loop.
#[derive(Debug)]
pub struct CoalescedRing {
    ring: NonNull<kvm_coalesced_mmio_ring>,
    page_size: usize,
    /// Serialises consumers: entries are replayed exactly once, in order.
    consumer: Mutex<()>,
}

// SAFETY: the ring is a shared mapping owned by this struct; all accesses
// to it go through `drain`, which serialises consumers with a mutex and
// uses atomic accesses for the indices the kernel also touches.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above: `&CoalescedRing` only permits `drain`, which is
// internally synchronised.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Maps the ring through `vcpu` (any vCPU of the VM maps the same page).
    pub fn map(vcpu: &Vcpu) -> Result<Self, VcpuError> {
        use std::os::fd::AsRawFd;
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let offset = page_size as libc::off_t * KVM_COALESCED_MMIO_PAGE_OFFSET as libc::off_t;
        // SAFETY: a fresh shared mapping of one page of the vCPU fd at the
        // offset KVM documents for the coalesced ring; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.fd().as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(VcpuError::Ioctl {
                id: vcpu.id(),
                step: "map the coalesced MMIO ring",
                source: vmm_sys_util::errno::Error::last(),
            });
        }
        Ok(Self {
            ring: NonNull::new(addr.cast()).ok_or(VcpuError::Ioctl {
                id: vcpu.id(),
                step: "map the coalesced MMIO ring",
                source: vmm_sys_util::errno::Error::new(libc::EFAULT),
            })?,
            page_size,
            consumer: Mutex::new(()),
        })
    }

    /// How many entries the ring holds.
    fn capacity(&self) -> u32 {
        ((self.page_size - std::mem::size_of::<kvm_coalesced_mmio_ring>())
            / std::mem::size_of::<kvm_coalesced_mmio>()) as u32
    }

    /// Replays the buffered writes through `handler`, oldest first; returns
    /// how many there were. At most one ring's worth per call: every write
    /// buffered when the call began is replayed, but vCPUs that keep
    /// writing meanwhile cannot hold the caller (their later writes wait
    /// for the next drain).
    pub fn drain(&self, handler: &dyn VcpuExitHandler) -> usize {
        let _consumer = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        let ring = self.ring.as_ptr();
        // SAFETY: `first` and `last` are naturally aligned u32 fields of the
        // mapped page; the kernel writes `last` concurrently, so both are
        // accessed atomically.
        let (first, last) = unsafe {
            (
                AtomicU32::from_ptr(&raw mut (*ring).first),
                AtomicU32::from_ptr(&raw mut (*ring).last),
            )
        };
        let read_entry = |index: u32| {
            // SAFETY: `replay` only asks for entries below the ring's
            // capacity, which lie inside the mapped page; the kernel does
            // not touch entries between `first` and `last`.
            unsafe { std::ptr::read_volatile((*ring).coalesced_mmio.as_ptr().add(index as usize)) }
        };
        Self::replay(first, last, self.capacity(), read_entry, handler)
    }

    /// The ring walk of [`drain`](Self::drain), over any storage: replays
    /// the entries from the consumer index `first` up to the producer index
    /// `last` (exclusive, wrapping at `capacity`) through `handler`, oldest
    /// first, advancing `first` past each one; returns how many there were.
    /// It stops after `capacity` entries (more than the ring holds at
    /// once), so a producer that keeps writing cannot keep it looping.
    ///
    /// `read_entry(i)` returns entry `i`; it is only called with
    /// `i < capacity`. Indices outside the ring (KVM never writes them)
    /// replay nothing and are left as they are. A caller must serialise
    /// consumers, as [`drain`](Self::drain) does.
    pub fn replay(
        first: &AtomicU32,
        last: &AtomicU32,
        capacity: u32,
        mut read_entry: impl FnMut(u32) -> kvm_coalesced_mmio,
        handler: &dyn VcpuExitHandler,
    ) -> usize {
        let mut count = 0;
        while count < capacity as usize {
            let head = first.load(Ordering::Acquire);
            let tail = last.load(Ordering::Acquire);
            if head == tail || head >= capacity || tail >= capacity {
                return count;
            }
            let entry = read_entry(head);
            let len = (entry.len as usize).min(entry.data.len());
            // SAFETY: the entry was written by the kernel for a PIO or
            // MMIO zone; `pio` is the member it sets (both members are
            // plain u32s, so any bytes are a valid value).
            let is_pio = unsafe { entry.__bindgen_anon_1.pio } != 0;
            if is_pio {
                handler.coalesced_pio_write(entry.phys_addr as u16, &entry.data[..len]);
            } else {
                handler.coalesced_mmio_write(entry.phys_addr, &entry.data[..len]);
            }
            first.store((head + 1) % capacity, Ordering::Release);
            count += 1;
        }
        count
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `map` with this size and is not
        // used after this point.
        unsafe { libc::munmap(self.ring.as_ptr().cast(), self.page_size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the replayed writes as (is_pio, address, data).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(bool, u64, Vec<u8>)>>);

    impl VcpuExitHandler for Recorder {
        fn pio_read(&self, _port: u16, _data: &mut [u8]) {}
        fn pio_write(&self, port: u16, data: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push((true, u64::from(port), data.to_vec()));
        }
        fn mmio_read(&self, _addr: u64, _data: &mut [u8]) {}
        fn mmio_write(&self, addr: u64, data: &[u8]) {
            self.0.lock().unwrap().push((false, addr, data.to_vec()));
        }
    }

    fn entry(addr: u64, pio: bool, data: &[u8]) -> kvm_coalesced_mmio {
        let mut e = kvm_coalesced_mmio {
            phys_addr: addr,
            len: data.len() as u32,
            ..Default::default()
        };
        e.__bindgen_anon_1.pio = u32::from(pio);
        e.data[..data.len()].copy_from_slice(data);
        e
    }

    #[test]
    fn replay_walks_the_ring_in_order_and_wraps() {
        let entries: Vec<_> = (0..4u8)
            .map(|i| entry(0x3f8 + u64::from(i), i % 2 == 0, &[i; 2]))
            .collect();
        let (first, last) = (AtomicU32::new(3), AtomicU32::new(2));
        let rec = Recorder::default();
        let n = CoalescedRing::replay(&first, &last, 4, |i| entries[i as usize], &rec);
        assert_eq!(n, 3);
        assert_eq!(first.load(Ordering::Relaxed), 2);
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![
                (false, 0x3fb, vec![3, 3]),
                (true, 0x3f8, vec![0, 0]),
                (false, 0x3f9, vec![1, 1]),
            ]
        );
        // Nothing left: a second pass replays nothing.
        assert_eq!(
            CoalescedRing::replay(&first, &last, 4, |i| entries[i as usize], &rec),
            0
        );
    }

    #[test]
    fn replay_stops_after_one_ring_while_a_producer_keeps_writing() {
        let rec = Recorder::default();
        let first = AtomicU32::new(0);
        let last = AtomicU32::new(1);
        // Every entry read, a vCPU adds one more: the ring is never empty.
        let n = CoalescedRing::replay(
            &first,
            &last,
            4,
            |i| {
                last.store((last.load(Ordering::SeqCst) + 1) % 4, Ordering::SeqCst);
                entry(0x3f8, true, &[i as u8])
            },
            &rec,
        );
        assert_eq!(n, 4);
        assert_eq!(rec.0.lock().unwrap().len(), 4);
        // The rest waits for the next call.
        assert_ne!(first.load(Ordering::SeqCst), last.load(Ordering::SeqCst));
    }

    #[test]
    fn replay_clamps_the_length_and_ignores_out_of_range_indices() {
        let mut long = entry(0x1000, false, &[9; 8]);
        long.len = 1000;
        let entries = [long, long];
        let rec = Recorder::default();
        let (first, last) = (AtomicU32::new(0), AtomicU32::new(1));
        assert_eq!(
            CoalescedRing::replay(&first, &last, 2, |i| entries[i as usize], &rec),
            1
        );
        assert_eq!(rec.0.lock().unwrap()[0].2, vec![9; 8]);
        // A producer index past the ring used to make the walk go round
        // forever; a consumer index past it must not be read.
        for (head, tail) in [(0, 2), (0, u32::MAX), (2, 0), (u32::MAX, 1)] {
            let (first, last) = (AtomicU32::new(head), AtomicU32::new(tail));
            let mut reads = 0;
            let read = |i: u32| {
                reads += 1;
                assert!(reads < 10, "the walk goes round forever");
                entries[i as usize]
            };
            let n = CoalescedRing::replay(&first, &last, 2, read, &rec);
            assert_eq!(n, 0, "first {head}, last {tail}");
            assert_eq!(first.load(Ordering::Relaxed), head);
        }
        let (first, last) = (AtomicU32::new(0), AtomicU32::new(1));
        assert_eq!(
            CoalescedRing::replay(&first, &last, 0, |_| unreachable!(), &rec),
            0
        );
    }
}
