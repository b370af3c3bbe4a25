//! The E820 memory map handed to the guest.

use kindling_memory::GuestMemoryMmap;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::x86_64::BootLayout;

/// The kind of an E820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM (`E820_TYPE_RAM`).
    Ram = 1,
    /// Reserved: present but not for the kernel's allocator
    /// (`E820_TYPE_RESERVED`).
    Reserved = 2,
}

/// One range of the guest's memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Guest-physical start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

impl E820Entry {
    /// End (exclusive) of the range.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The memory map of `mem`: its RAM, except the EBDA and the BIOS area
/// between [`EBDA_START`](kindling_memory::layout::EBDA_START) and 1 MiB (where the MP and ACPI tables live),
/// which is reported as reserved.
///
/// For memory created by `kindling_memory`, the RAM entries are exactly the
/// ranges of [`ram_ranges`](kindling_memory::layout::ram_ranges) with that
/// hole cut out.
///
/// # Example
///
/// ```
/// # use kindling_boot::{e820_map, E820Entry, E820Type};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 128, backing: Default::default() }).unwrap();
/// let map = e820_map(&ram.memory);
/// assert_eq!(map[0], E820Entry { addr: 0, size: 0x9fc00, kind: E820Type::Ram });
/// assert_eq!(map[2], E820Entry { addr: 0x10_0000, size: (128 << 20) - 0x10_0000, kind: E820Type::Ram });
/// ```
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<E820Entry> {
    e820_map_with_layout(mem, &BootLayout::default())
}

/// Like [`e820_map`], with `layout.ebda_start..layout.himem_start`
/// reserved.
pub fn e820_map_with_layout(mem: &GuestMemoryMmap, layout: &BootLayout) -> Vec<E820Entry> {
    let ranges: Vec<(u64, u64)> = mem
        .iter()
        .map(|region| (region.start_addr().0, region.len()))
        .collect();
    e820_from_ranges_with_layout(&ranges, layout)
}

/// The memory map for RAM made of the `(start, length)` ranges, as
/// [`e820_map`] builds it: sorted, adjacent ranges of the same kind merged.
pub fn e820_from_ranges(ranges: &[(u64, u64)]) -> Vec<E820Entry> {
    e820_from_ranges_with_layout(ranges, &BootLayout::default())
}

/// Like [`e820_from_ranges`], with `layout.ebda_start..layout.himem_start`
/// reserved.
pub fn e820_from_ranges_with_layout(ranges: &[(u64, u64)], layout: &BootLayout) -> Vec<E820Entry> {
    let (ebda_start, himem_start) = (layout.ebda_start, layout.himem_start);
    let mut pieces = Vec::new();
    for &(start, len) in ranges {
        let end = start.saturating_add(len);
        let mut push = |from: u64, to: u64, kind| {
            if from < to {
                pieces.push(E820Entry {
                    addr: from,
                    size: to - from,
                    kind,
                });
            }
        };
        push(start, end.min(ebda_start), E820Type::Ram);
        push(
            start.max(ebda_start),
            end.min(himem_start),
            E820Type::Reserved,
        );
        push(start.max(himem_start), end, E820Type::Ram);
    }
    pieces.sort_by_key(|e| e.addr);

    let mut map: Vec<E820Entry> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match map.last_mut() {
            Some(last) if last.kind == piece.kind && last.end() == piece.addr => {
                last.size += piece.size;
            }
            _ => map.push(piece),
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::{
        ram_ranges, EBDA_START, GIB, HIGH_RAM_START, HIMEM_START, MIB, MMIO_GAP_START,
    };

    use super::*;
    use crate::x86_64::test_images::guest_memory;

    /// The RAM ranges of `map`, with the reserved hole filled back in.
    fn ram_of(map: &[E820Entry]) -> Vec<(u64, u64)> {
        map.iter().fold(Vec::<(u64, u64)>::new(), |mut acc, e| {
            match acc.last_mut() {
                Some(last) if last.0 + last.1 == e.addr => last.1 += e.size,
                _ => acc.push((e.addr, e.size)),
            }
            acc
        })
    }

    #[test]
    fn matches_ram_ranges_for_many_sizes() {
        let sizes = [
            MIB,
            2 * MIB,
            128 * MIB,
            GIB,
            MMIO_GAP_START - MIB,
            MMIO_GAP_START,
            MMIO_GAP_START + MIB,
            4 * GIB,
            5 * GIB,
            64 * GIB,
        ];
        for size in sizes {
            let ranges = ram_ranges(size);
            let map = e820_from_ranges(&ranges);
            assert_eq!(ram_of(&map), ranges, "size {size:#x}");
            assert_eq!(
                map.iter()
                    .filter(|e| e.kind == E820Type::Reserved)
                    .collect::<Vec<_>>(),
                vec![&E820Entry {
                    addr: EBDA_START,
                    size: HIMEM_START - EBDA_START,
                    kind: E820Type::Reserved
                }],
                "size {size:#x}"
            );
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == E820Type::Ram)
                .map(|e| e.size)
                .sum();
            assert_eq!(ram, size - (HIMEM_START - EBDA_START), "size {size:#x}");
        }
    }

    #[test]
    fn five_gib_guest() {
        let mem = guest_memory(5 * GIB);
        assert_eq!(
            e820_map(&mem),
            vec![
                E820Entry {
                    addr: 0,
                    size: EBDA_START,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: EBDA_START,
                    size: HIMEM_START - EBDA_START,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    addr: HIMEM_START,
                    size: MMIO_GAP_START - HIMEM_START,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: HIGH_RAM_START,
                    size: 2 * GIB,
                    kind: E820Type::Ram
                },
            ]
        );
    }

    #[test]
    fn one_mib_guest_has_no_high_ram() {
        let map = e820_map(&guest_memory(MIB));
        assert_eq!(map.len(), 2);
        assert_eq!(map[1].end(), HIMEM_START);
    }

    #[test]
    fn tiny_and_split_memory() {
        // Less than the EBDA: only low RAM.
        assert_eq!(
            e820_from_ranges(&[(0, 0x8000)]),
            vec![E820Entry {
                addr: 0,
                size: 0x8000,
                kind: E820Type::Ram
            }]
        );
        // Adjacent regions merge; unsorted input is sorted.
        assert_eq!(
            e820_from_ranges(&[(2 * MIB, MIB), (HIMEM_START, MIB), (0, 0x1000)]),
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x1000,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: HIMEM_START,
                    size: 2 * MIB,
                    kind: E820Type::Ram
                },
            ]
        );
        // A region that starts inside the reserved hole.
        assert_eq!(
            e820_from_ranges(&[(0xf_0000, 0x2_0000)]),
            vec![
                E820Entry {
                    addr: 0xf_0000,
                    size: 0x1_0000,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    addr: HIMEM_START,
                    size: 0x1_0000,
                    kind: E820Type::Ram
                },
            ]
        );
        assert!(e820_from_ranges(&[]).is_empty());
    }
}
