//! Dirty-page tracking: which pages of guest RAM changed since the last
//! look.
//!
//! Two sources write guest memory. The guest itself, whose writes KVM
//! records when a memory slot is registered with dirty logging (see
//! `kindling_vcpu::VmOptions::dirty_log`), and the VMM, whose writes go
//! through `vm-memory` and are recorded in each region's
//! [`AtomicBitmap`](vm_memory::bitmap::AtomicBitmap). A [`DirtyBitmap`]
//! holds the union of both, one bit per 4 KiB page, region by region.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::GuestMemoryMmap;

/// The page size dirty bitmaps count in (KVM's dirty log uses the host
/// page size, 4 KiB on x86_64).
pub const DIRTY_PAGE_SIZE: u64 = 4096;
const PAGE_SIZE: u64 = DIRTY_PAGE_SIZE;

/// The dirty pages of one guest memory region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionDirtyBitmap {
    /// Guest-physical start of the region.
    pub guest_addr: u64,
    /// Length of the region in bytes.
    pub len: u64,
    /// One bit per page, page `i` in bit `i % 64` of word `i / 64`.
    pub bits: Vec<u64>,
}

impl RegionDirtyBitmap {
    /// A clean bitmap for a region of `len` bytes at `guest_addr`.
    pub fn clean(guest_addr: u64, len: u64) -> Self {
        let pages = len.div_ceil(PAGE_SIZE);
        Self {
            guest_addr,
            len,
            bits: vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// Number of pages in the region.
    pub fn pages(&self) -> u64 {
        self.len.div_ceil(PAGE_SIZE)
    }

    /// Adds the pages set in `other` (a bitmap of the same layout, such as
    /// KVM's dirty log for this region). Extra words are ignored.
    pub fn merge(&mut self, other: &[u64]) {
        for (word, extra) in self.bits.iter_mut().zip(other) {
            *word |= extra;
        }
        self.clear_tail();
    }

    /// Whether page number `page` of the region is dirty.
    pub fn is_page_dirty(&self, page: u64) -> bool {
        page < self.pages()
            && self
                .bits
                .get((page / 64) as usize)
                .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Number of dirty pages.
    pub fn dirty_pages(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The dirty ranges as `(guest address, length in bytes)`, adjacent
    /// dirty pages merged into one range.
    pub fn dirty_ranges(&self) -> Vec<(GuestAddress, u64)> {
        let mut ranges: Vec<(GuestAddress, u64)> = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for page in 0..self.pages() {
            if self.is_page_dirty(page) {
                run = Some(match run {
                    Some((start, n)) => (start, n + 1),
                    None => (page, 1),
                });
            } else if let Some((start, n)) = run.take() {
                ranges.push(self.range(start, n));
            }
        }
        if let Some((start, n)) = run {
            ranges.push(self.range(start, n));
        }
        ranges
    }

    fn range(&self, first_page: u64, pages: u64) -> (GuestAddress, u64) {
        let offset = first_page * PAGE_SIZE;
        let len = (pages * PAGE_SIZE).min(self.len - offset);
        (GuestAddress(self.guest_addr + offset), len)
    }

    /// Clears bits past the last page, which a merged bitmap may carry.
    fn clear_tail(&mut self) {
        let pages = self.pages();
        if pages % 64 != 0 {
            if let Some(last) = self.bits.last_mut() {
                *last &= (1u64 << (pages % 64)) - 1;
            }
        }
    }
}

/// The dirty pages of all of guest RAM, region by region in address
/// order.
///
/// # Example
///
/// ```
/// use kindling_memory::{DirtyBitmap, GuestMemoryMmap};
/// use vm_memory::{Bytes, GuestAddress};
///
/// let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
/// memory.write_obj(7u8, GuestAddress(0x3000)).unwrap();
/// let dirty = DirtyBitmap::take_vmm_writes(&memory);
/// assert!(dirty.is_dirty(GuestAddress(0x3000)));
/// assert!(!dirty.is_dirty(GuestAddress(0x4000)));
/// // Taking the writes resets them.
/// assert_eq!(DirtyBitmap::take_vmm_writes(&memory).dirty_pages(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    /// One entry per region of guest memory.
    pub regions: Vec<RegionDirtyBitmap>,
}

impl DirtyBitmap {
    /// A bitmap with every page of `memory` clean.
    pub fn clean(memory: &GuestMemoryMmap) -> Self {
        Self {
            regions: memory
                .iter()
                .map(|r| RegionDirtyBitmap::clean(r.start_addr().0, r.len()))
                .collect(),
        }
    }

    /// The pages the VMM wrote through `vm-memory` since the last call,
    /// resetting them. The guest's own writes are not in it: KVM records
    /// those (`kindling_vcpu::Vm::dirty_pages` merges both).
    pub fn take_vmm_writes(memory: &GuestMemoryMmap) -> Self {
        let mut dirty = Self::clean(memory);
        for (region, bits) in memory.iter().zip(dirty.regions.iter_mut()) {
            let bitmap: &crate::Bitmap = std::ops::Deref::deref(region).bitmap();
            let map = bitmap.get_and_reset();
            bits.merge(&Self::repack(&map, bitmap.len(), bits.pages()));
        }
        dirty
    }

    /// Converts a bitmap at the host page size to 4 KiB pages (they are the
    /// same on x86_64; this keeps the contract on hosts with larger pages).
    fn repack(map: &[u64], host_pages: usize, pages: u64) -> Vec<u64> {
        if host_pages as u64 == pages || host_pages == 0 {
            return map.to_vec();
        }
        let ratio = pages.div_ceil(host_pages as u64);
        let mut out = vec![0u64; pages.div_ceil(64) as usize];
        for host_page in 0..host_pages as u64 {
            if map[(host_page / 64) as usize] & (1 << (host_page % 64)) != 0 {
                for p in host_page * ratio..((host_page + 1) * ratio).min(pages) {
                    out[(p / 64) as usize] |= 1 << (p % 64);
                }
            }
        }
        out
    }

    /// Whether the page holding `addr` is dirty (false outside RAM).
    pub fn is_dirty(&self, addr: GuestAddress) -> bool {
        self.regions.iter().any(|r| {
            addr.0 >= r.guest_addr
                && addr.0 - r.guest_addr < r.len
                && r.is_page_dirty((addr.0 - r.guest_addr) / PAGE_SIZE)
        })
    }

    /// Number of dirty pages in all regions.
    pub fn dirty_pages(&self) -> u64 {
        self.regions
            .iter()
            .map(RegionDirtyBitmap::dirty_pages)
            .sum()
    }

    /// Adds every page dirty in `other`, which must describe the same
    /// regions; regions that do not match are ignored.
    pub fn merge(&mut self, other: &DirtyBitmap) {
        for (mine, theirs) in self.regions.iter_mut().zip(&other.regions) {
            if mine.guest_addr == theirs.guest_addr && mine.len == theirs.len {
                mine.merge(&theirs.bits);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn two_regions() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x100000), 0x5000),
        ])
        .unwrap()
    }

    #[test]
    fn vmm_writes_are_recorded_per_page_and_reset() {
        let mem = two_regions();
        assert_eq!(DirtyBitmap::take_vmm_writes(&mem).dirty_pages(), 0);
        mem.write_obj(1u32, GuestAddress(0x2ffe)).unwrap(); // straddles two pages
        mem.write_slice(&[1; 10], GuestAddress(0x101000)).unwrap();
        let dirty = DirtyBitmap::take_vmm_writes(&mem);
        assert_eq!(dirty.dirty_pages(), 3);
        assert!(dirty.is_dirty(GuestAddress(0x2000)));
        assert!(dirty.is_dirty(GuestAddress(0x3000)));
        assert!(!dirty.is_dirty(GuestAddress(0x4000)));
        assert!(dirty.is_dirty(GuestAddress(0x101fff)));
        assert!(!dirty.is_dirty(GuestAddress(0x200000)));
        assert_eq!(
            dirty.regions[0].dirty_ranges(),
            vec![(GuestAddress(0x2000), 0x2000)]
        );
        assert_eq!(DirtyBitmap::take_vmm_writes(&mem).dirty_pages(), 0);
    }

    #[test]
    fn merging_keeps_the_union_and_ignores_bits_past_the_end() {
        let mem = two_regions();
        let mut a = DirtyBitmap::clean(&mem);
        let mut b = DirtyBitmap::clean(&mem);
        a.regions[0].merge(&[0b1]);
        b.regions[0].merge(&[0b100]);
        // Region 1 has 5 pages: bit 63 is past its end.
        b.regions[1].merge(&[(1 << 63) | (1 << 4)]);
        a.merge(&b);
        assert_eq!(a.dirty_pages(), 3);
        assert!(a.regions[1].is_page_dirty(4));
        assert!(!a.regions[1].is_page_dirty(63));
        assert_eq!(
            a.regions[1].dirty_ranges(),
            vec![(GuestAddress(0x104000), 0x1000)]
        );
        // A bitmap of other regions is not merged.
        let other = DirtyBitmap {
            regions: vec![RegionDirtyBitmap {
                guest_addr: 0x5000,
                len: 0x1000,
                bits: vec![1],
            }],
        };
        a.merge(&other);
        assert_eq!(a.dirty_pages(), 3);
    }

    #[test]
    fn repacking_larger_host_pages_marks_every_small_page() {
        // Two 8 KiB host pages over four 4 KiB pages; the second is dirty.
        assert_eq!(DirtyBitmap::repack(&[0b10], 2, 4), vec![0b1100]);
        assert_eq!(DirtyBitmap::repack(&[0b10], 4, 4), vec![0b10]);
    }
}
