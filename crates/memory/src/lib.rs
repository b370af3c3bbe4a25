//! Guest memory for Kindling microVMs.
//!
//! This crate owns:
//!
//! - the architecture's guest-physical memory map ([`layout`]), kept in one
//!   place so that the loader, the devices and the VMM agree on it;
//! - the creation of guest RAM for a requested size on a chosen
//!   [`Backing`] (private anonymous memory, a shareable memfd, or 2 MiB
//!   hugetlbfs pages), returned as a [`vm_memory::GuestMemoryMmap`];
//! - the allocation of MMIO windows and interrupt lines for devices
//!   ([`ResourceAllocator`]);
//! - dirty-page tracking ([`DirtyBitmap`]): every region carries a
//!   `vm-memory` [`AtomicBitmap`](vm_memory::bitmap::AtomicBitmap), so every
//!   write the VMM makes through `vm-memory` is recorded, and KVM's dirty
//!   log adds the guest's own writes;
//! - memory snapshot files ([`dump_memory`], [`apply_diff`],
//!   [`restore_guest_memory`]): sparse, full or diff, restored by a private
//!   mapping whose cost does not grow with the guest's size.
//! - the persist contract ([`Persist`]) that every stateful part of a VM
//!   (vCPUs, the VM, devices, virtio transports and queues) implements, so
//!   that a snapshot is a walk over the VM's parts. It lives here because
//!   every other Kindling crate depends on this one.
//!
//! # Example
//!
//! ```
//! use kindling_memory::{create_guest_memory, Backing, MemoryConfig};
//! use vm_memory::GuestMemoryBackend;
//!
//! let config = MemoryConfig { size_mib: 128, backing: Backing::Anonymous };
//! let memory = create_guest_memory(&config).unwrap();
//! assert_eq!(memory.memory.last_addr().0, 128 * 1024 * 1024 - 1);
//! ```

mod allocator;
mod backing;
mod dirty;
pub mod persist;
mod snapshot;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use x86_64::layout;

pub use allocator::{AllocatorError, MmioWindow, ResourceAllocator};
pub use backing::{
    check_host_memory, create_guest_memory, validate_size, Backing, GuestRam, MemoryConfig,
    MemoryError,
};

pub use dirty::{DirtyBitmap, RegionDirtyBitmap, DIRTY_PAGE_SIZE};
pub use persist::Persist;
#[cfg(target_arch = "x86_64")]
pub use snapshot::restore_guest_memory;
pub use snapshot::{apply_diff, dump_memory, DumpStats, MemoryDump, MemorySnapshotError};

/// The dirty bitmap every guest memory region carries: one bit per host
/// page, set by every write made through `vm-memory`.
pub type Bitmap = vm_memory::bitmap::AtomicBitmap;
/// The guest memory type used throughout Kindling: `vm-memory`'s mmap
/// backend with a dirty bitmap per region.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<Bitmap>;
/// One guest memory region.
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<Bitmap>;

/// The rust-vmm `vm-memory` crate this crate's API is built on
/// ([`GuestMemoryMmap`], `GuestAddress`, `Bytes`), re-exported so that
/// users need not pin a matching version.
pub use vm_memory;
