//! The PVH boot protocol's `hvm_start_info`, for ELF kernels with a PVH
//! entry note.
//!
//! PVH replaces the zero page, so its data goes in the zero page's place:
//! the start info, then the module list, then the memory map, all within
//! the page at [`ZERO_PAGE_START`](kindling_memory::layout::ZERO_PAGE_START)
//! (or the layout's `zero_page_start`).

use kindling_memory::layout::PAGE_SIZE;
use kindling_memory::GuestMemoryMmap;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use crate::x86_64::{
    e820_map_with_layout, BootError, BootLayout, CmdlinePlacement, InitrdPlacement,
};

/// `magic` of `hvm_start_info` ("xEn3" with the top bit set).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1 of `hvm_start_info` carries the memory map.
const START_INFO_VERSION: u32 = 1;
/// Where the module list goes, after the start info.
const MODLIST_OFFSET: u64 = 0x40;
/// Where the memory map goes, after the module list.
const MEMMAP_OFFSET: u64 = 0x80;
/// How many memory map entries fit in the rest of the page.
const MEMMAP_MAX_ENTRIES: usize =
    (PAGE_SIZE - MEMMAP_OFFSET) as usize / std::mem::size_of::<hvm_memmap_table_entry>();

/// Writes the PVH start info (with the command line, the initrd as the
/// only module, and the E820 map of `mem`) at
/// [`ZERO_PAGE_START`](kindling_memory::layout::ZERO_PAGE_START) (the
/// default [`BootLayout`]) and returns that address, which the boot vCPU
/// gets in `ebx`.
pub fn configure_pvh(
    mem: &GuestMemoryMmap,
    cmdline: CmdlinePlacement,
    initrd: Option<InitrdPlacement>,
) -> Result<u64, BootError> {
    configure_pvh_with_layout(mem, cmdline, initrd, &BootLayout::default())
}

/// Like [`configure_pvh`], in the page at `layout.zero_page_start`, with
/// the E820 map of [`e820_map_with_layout`].
pub fn configure_pvh_with_layout(
    mem: &GuestMemoryMmap,
    cmdline: CmdlinePlacement,
    initrd: Option<InitrdPlacement>,
    layout: &BootLayout,
) -> Result<u64, BootError> {
    layout.validate()?;
    let start_info_at = layout.zero_page_start;
    let modlist_at = start_info_at + MODLIST_OFFSET;
    let memmap_at = start_info_at + MEMMAP_OFFSET;
    let map = e820_map_with_layout(mem, layout);
    if map.len() > MEMMAP_MAX_ENTRIES {
        return Err(BootError::TooManyE820Entries {
            count: map.len(),
            max: MEMMAP_MAX_ENTRIES,
        });
    }
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (i, entry) in map.iter().enumerate() {
        let at = memmap_at + i as u64 * entry_size;
        let raw = hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind as u32,
            reserved: 0,
        };
        mem.write_obj(raw, GuestAddress(at))
            .map_err(BootError::guest_memory("PVH memory map", at, entry_size))?;
    }

    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        cmdline_paddr: cmdline.addr,
        memmap_paddr: memmap_at,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.addr,
            size: initrd.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(modlist_at))
            .map_err(BootError::guest_memory(
                "PVH module list",
                modlist_at,
                std::mem::size_of::<hvm_modlist_entry>() as u64,
            ))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_at;
    }
    mem.write_obj(info, GuestAddress(start_info_at))
        .map_err(BootError::guest_memory(
            "PVH start info",
            start_info_at,
            std::mem::size_of::<hvm_start_info>() as u64,
        ))?;
    Ok(start_info_at)
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::{CMDLINE_START, EBDA_START, HIMEM_START, MIB, ZERO_PAGE_START};

    use super::*;
    use crate::x86_64::test_images::guest_memory;

    const CMDLINE: CmdlinePlacement = CmdlinePlacement {
        addr: CMDLINE_START,
        len: 5,
    };

    #[test]
    fn start_info_with_initrd() {
        let mem = guest_memory(64 * MIB);
        let initrd = InitrdPlacement {
            addr: 0x300_0000,
            size: 0x4321,
        };
        let addr = configure_pvh(&mem, CMDLINE, Some(initrd)).unwrap();
        assert_eq!(addr, ZERO_PAGE_START);
        let info: hvm_start_info = mem.read_obj(GuestAddress(addr)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 0x4321));
        assert_eq!(info.memmap_entries, 3);
        let entries: Vec<hvm_memmap_table_entry> = (0..3)
            .map(|i| {
                mem.read_obj(GuestAddress(info.memmap_paddr + i * 24))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            (entries[0].addr, entries[0].size, entries[0].type_),
            (0, EBDA_START, 1)
        );
        assert_eq!(entries[1].type_, 2);
        assert_eq!(
            (entries[2].addr, entries[2].size, entries[2].type_),
            (HIMEM_START, 64 * MIB - HIMEM_START, 1)
        );
        // Everything stays within the zero page.
        assert!(info.memmap_paddr + 3 * 24 <= ZERO_PAGE_START + PAGE_SIZE);
    }

    #[test]
    fn start_info_without_initrd() {
        let mem = guest_memory(64 * MIB);
        configure_pvh(&mem, CMDLINE, None).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(info.nr_modules, 0);
        assert_eq!(info.modlist_paddr, 0);
    }

    #[test]
    fn too_many_regions() {
        let ranges: Vec<(GuestAddress, usize)> = (0..200u64)
            .map(|i| (GuestAddress(HIMEM_START + i * 0x2000), 0x1000))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        let err = configure_pvh(&mem, CMDLINE, None).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::TooManyE820Entries {
                    count: 200,
                    max: 165
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn memory_without_the_page_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(HIMEM_START), 0x1000)]).unwrap();
        let err = configure_pvh(&mem, CMDLINE, None).unwrap_err();
        assert!(matches!(err, BootError::GuestMemory { .. }), "{err}");
    }
}
