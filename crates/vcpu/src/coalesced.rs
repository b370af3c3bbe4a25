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

    /// Replays every buffered write through `handler`, oldest first;
    /// returns how many there were.
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
        let capacity = self.capacity();
        let mut count = 0;
        loop {
            let head = first.load(Ordering::Acquire);
            if head == last.load(Ordering::Acquire) || head >= capacity {
                return count;
            }
            // SAFETY: `head` is below the ring's capacity, so the entry lies
            // inside the mapped page; the kernel does not touch entries
            // between `first` and `last`.
            let entry: kvm_coalesced_mmio = unsafe {
                std::ptr::read_volatile((*ring).coalesced_mmio.as_ptr().add(head as usize))
            };
            let len = (entry.len as usize).min(entry.data.len());
            // SAFETY: the entry was written by the kernel for a PIO or
            // MMIO zone; `pio` is the member it sets.
            let is_pio = unsafe { entry.__bindgen_anon_1.pio } != 0;
            if is_pio {
                handler.coalesced_pio_write(entry.phys_addr as u16, &entry.data[..len]);
            } else {
                handler.coalesced_mmio_write(entry.phys_addr, &entry.data[..len]);
            }
            first.store((head + 1) % capacity, Ordering::Release);
            count += 1;
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `map` with this size and is not
        // used after this point.
        unsafe { libc::munmap(self.ring.as_ptr().cast(), self.page_size) };
    }
}
