//! The boot GDT and identity page tables written into guest memory.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress};

use kindling_memory::GuestMemoryMmap;

use super::boot::BootCpuLayout;
use crate::VcpuError;

/// Builds a GDT descriptor from its flags, base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, 64-bit code (selector 0x08), data (0x10), TSS (0x18).
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The GDT for the PVH entry: null, 32-bit flat code (0x08), 32-bit flat
/// data (0x10), TSS (0x18).
pub const PVH_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

/// Decodes GDT entry number `index` into the segment register KVM expects.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        // With 4 KiB granularity the limit counts pages.
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(((entry >> 47) & 1) == 0),
    }
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    value: T,
    addr: u64,
    what: &'static str,
) -> Result<(), VcpuError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| VcpuError::GuestMemory { what, source })
}

/// Writes the boot GDT and an empty IDT where `layout` says.
pub fn write_gdt_and_idt(mem: &GuestMemoryMmap, layout: &BootCpuLayout) -> Result<(), VcpuError> {
    write_gdt(mem, &BOOT_GDT, layout)
}

/// Writes the PVH GDT and an empty IDT where `layout` says.
pub fn write_pvh_gdt_and_idt(
    mem: &GuestMemoryMmap,
    layout: &BootCpuLayout,
) -> Result<(), VcpuError> {
    write_gdt(mem, &PVH_GDT, layout)
}

fn write_gdt(
    mem: &GuestMemoryMmap,
    gdt: &[u64; 4],
    layout: &BootCpuLayout,
) -> Result<(), VcpuError> {
    for (i, entry) in gdt.iter().enumerate() {
        write(mem, *entry, layout.gdt + i as u64 * 8, "GDT")?;
    }
    write(mem, 0u64, layout.idt, "IDT")
}

/// Writes page tables identity-mapping the first GiB with 2 MiB pages: the
/// PML4, PDPT and page directory in the three pages at
/// `layout.page_tables`.
pub fn write_identity_page_tables(
    mem: &GuestMemoryMmap,
    layout: &BootCpuLayout,
) -> Result<(), VcpuError> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE_PAGE: u64 = 0x80;
    let (pml4, pdpt, pd_addr) = layout.page_table_pages();
    write(mem, pdpt | PRESENT_WRITABLE, pml4, "PML4")?;
    write(mem, pd_addr | PRESENT_WRITABLE, pdpt, "PDPT")?;
    let mut pd = [0u64; 512];
    for (i, entry) in pd.iter_mut().enumerate() {
        *entry = ((i as u64) << 21) | HUGE_PAGE | PRESENT_WRITABLE;
    }
    let bytes: Vec<u8> = pd.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(pd_addr))
        .map_err(|source| VcpuError::GuestMemory {
            what: "page directory",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_memory::layout::{BOOT_GDT_START, PDE_START, PDPTE_START, PML4_START};
    use kindling_memory::{create_guest_memory, Backing, MemoryConfig};

    #[test]
    fn code_segment_decodes_as_64_bit() {
        let cs = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(cs.selector, 0x08);
        assert_eq!(cs.l, 1);
        assert_eq!(cs.db, 0);
        assert_eq!(cs.present, 1);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!(ds.db, 1);
        assert_eq!(ds.type_, 0x3);
        let null = segment_from_gdt(BOOT_GDT[0], 0);
        assert_eq!(null.unusable, 1);
        let pvh_cs = segment_from_gdt(PVH_GDT[1], 1);
        assert_eq!((pvh_cs.l, pvh_cs.db, pvh_cs.g), (0, 1, 1));
        let pvh_tr = segment_from_gdt(PVH_GDT[3], 3);
        assert_eq!((pvh_tr.type_, pvh_tr.limit), (0xb, 0x67));
    }

    #[test]
    fn tables_land_in_memory() {
        let ram = create_guest_memory(&MemoryConfig {
            size_mib: 2,
            backing: Backing::Anonymous,
        })
        .unwrap();
        write_gdt_and_idt(&ram.memory, &BootCpuLayout::default()).unwrap();
        write_identity_page_tables(&ram.memory, &BootCpuLayout::default()).unwrap();
        let m = &ram.memory;
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(BOOT_GDT_START + 8)).unwrap(),
            BOOT_GDT[1]
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(PML4_START)).unwrap(),
            PDPTE_START | 3
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(PDE_START + 8 * 511))
                .unwrap(),
            (511 << 21) | 0x83
        );
    }

    #[test]
    fn tiny_memory_is_an_error_not_a_panic() {
        let tiny = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(write_identity_page_tables(&tiny, &BootCpuLayout::default()).is_err());
    }
}
