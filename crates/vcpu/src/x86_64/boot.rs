//! Where and how the boot vCPU enters the guest, with the CPU structures
//! (GDT, IDT, identity page tables) that entry needs already in guest
//! memory.

use kindling_memory::GuestMemoryMmap;

use super::gdt;
use crate::VcpuError;

/// Where the boot vCPU's CPU structures live in guest memory. The default
/// is kindling-memory's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootCpuLayout {
    /// The boot GDT (four 8-byte entries).
    pub gdt: u64,
    /// The (empty) boot IDT (8 bytes).
    pub idt: u64,
    /// Three consecutive 4 KiB pages for the 64-bit entry's identity page
    /// tables: PML4, PDPT, page directory. Must be page aligned.
    pub page_tables: u64,
    /// The initial stack pointer of the 64-bit entry.
    pub stack_pointer: u64,
}

#[cfg(target_arch = "x86_64")]
impl Default for BootCpuLayout {
    fn default() -> Self {
        use kindling_memory::layout::{
            BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
        };
        const _: () = assert!(PDPTE_START == PML4_START + 0x1000);
        const _: () = assert!(PDE_START == PML4_START + 0x2000);
        Self {
            gdt: BOOT_GDT_START,
            idt: BOOT_IDT_START,
            page_tables: PML4_START,
            stack_pointer: BOOT_STACK_POINTER,
        }
    }
}

impl BootCpuLayout {
    /// The guest addresses of the PML4, PDPT and page directory.
    pub fn page_table_pages(&self) -> (u64, u64, u64) {
        (
            self.page_tables,
            self.page_tables.wrapping_add(0x1000),
            self.page_tables.wrapping_add(0x2000),
        )
    }

    fn check(&self) -> Result<(), VcpuError> {
        let bad = |what: &'static str, addr: u64| Err(VcpuError::BootLayout { what, addr });
        if self.page_tables % 0x1000 != 0 || self.page_tables.checked_add(0x3000).is_none() {
            return bad(
                "identity page tables (three 4 KiB-aligned pages)",
                self.page_tables,
            );
        }
        if self.gdt % 8 != 0 {
            return bad("GDT (8-byte aligned)", self.gdt);
        }
        if self.idt % 8 != 0 {
            return bad("IDT (8-byte aligned)", self.idt);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Linux64 { entry: u64, zero_page: u64 },
    Pvh { entry: u64, start_info: u64 },
}

/// Where and how the boot vCPU enters the guest.
///
/// It can only be made by the constructors below, which also write the GDT
/// (and for the 64-bit entry the identity page tables) into guest memory,
/// so a vCPU can never be started on an entry whose tables are missing (a
/// silent triple fault). Hand it to
/// [`Vcpu::configure`](crate::Vcpu::configure) for the boot vCPU.
///
/// # Example
///
/// ```
/// use kindling_memory::GuestMemoryMmap;
/// use kindling_vcpu::BootEntry;
/// use vm_memory::{Bytes, GuestAddress};
///
/// let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
/// let boot = BootEntry::linux64(&memory, 0x100_0000, 0x7000).unwrap();
/// assert_eq!(boot.entry_point(), 0x100_0000);
/// // The boot GDT's 64-bit code segment is in place.
/// let code: u64 = memory.read_obj(GuestAddress(0x508)).unwrap();
/// assert_ne!(code, 0);
/// // Memory too small for the tables is an error, not a triple fault later.
/// let tiny = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
/// assert!(BootEntry::linux64(&tiny, 0x100_0000, 0x7000).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    kind: EntryKind,
    layout: BootCpuLayout,
}

impl BootEntry {
    /// The 64-bit entry of the Linux boot protocol: long mode with an
    /// identity map of the first GiB, `rip` at `entry`, `rsi` at the zero
    /// page. Writes the boot GDT, IDT and page tables at kindling-memory's
    /// default addresses.
    #[cfg(target_arch = "x86_64")]
    pub fn linux64(
        memory: &GuestMemoryMmap,
        entry: u64,
        zero_page: u64,
    ) -> Result<Self, VcpuError> {
        Self::linux64_with_layout(memory, entry, zero_page, BootCpuLayout::default())
    }

    /// [`BootEntry::linux64`] with the CPU structures where `layout` says.
    pub fn linux64_with_layout(
        memory: &GuestMemoryMmap,
        entry: u64,
        zero_page: u64,
        layout: BootCpuLayout,
    ) -> Result<Self, VcpuError> {
        layout.check()?;
        gdt::write_gdt_and_idt(memory, &layout)?;
        gdt::write_identity_page_tables(memory, &layout)?;
        Ok(Self {
            kind: EntryKind::Linux64 { entry, zero_page },
            layout,
        })
    }

    /// The PVH entry (Xen's direct boot ABI, which Linux supports with
    /// `CONFIG_PVH`): 32-bit protected mode, paging off, `rip` at the entry
    /// from the ELF note, `rbx` at the `hvm_start_info`. Writes the PVH GDT
    /// and IDT at kindling-memory's default addresses.
    #[cfg(target_arch = "x86_64")]
    pub fn pvh(memory: &GuestMemoryMmap, entry: u64, start_info: u64) -> Result<Self, VcpuError> {
        Self::pvh_with_layout(memory, entry, start_info, BootCpuLayout::default())
    }

    /// [`BootEntry::pvh`] with the GDT and IDT where `layout` says.
    pub fn pvh_with_layout(
        memory: &GuestMemoryMmap,
        entry: u64,
        start_info: u64,
        layout: BootCpuLayout,
    ) -> Result<Self, VcpuError> {
        layout.check()?;
        gdt::write_pvh_gdt_and_idt(memory, &layout)?;
        Ok(Self {
            kind: EntryKind::Pvh { entry, start_info },
            layout,
        })
    }

    /// The guest-physical address the vCPU starts at.
    pub fn entry_point(&self) -> u64 {
        match self.kind {
            EntryKind::Linux64 { entry, .. } | EntryKind::Pvh { entry, .. } => entry,
        }
    }

    /// Whether this is the PVH entry (else the 64-bit Linux entry).
    pub fn is_pvh(&self) -> bool {
        matches!(self.kind, EntryKind::Pvh { .. })
    }

    /// Where the entry's CPU structures are.
    pub fn layout(&self) -> &BootCpuLayout {
        &self.layout
    }

    /// The special and general registers of this entry, starting from the
    /// vCPU's current special registers.
    pub(crate) fn registers(
        &self,
        mut sregs: kvm_bindings::kvm_sregs,
    ) -> (kvm_bindings::kvm_sregs, kvm_bindings::kvm_regs) {
        use super::regs;
        let regs = match self.kind {
            EntryKind::Linux64 { entry, zero_page } => {
                regs::configure_long_mode_sregs(&mut sregs, &self.layout);
                regs::boot_regs(entry, zero_page, &self.layout)
            }
            EntryKind::Pvh { entry, start_info } => {
                regs::configure_pvh_sregs(&mut sregs, &self.layout);
                regs::pvh_regs(entry, start_info)
            }
        };
        (sregs, regs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    #[test]
    fn a_custom_layout_moves_the_tables_and_registers() {
        let mem = memory();
        let layout = BootCpuLayout {
            gdt: 0x1000,
            idt: 0x1100,
            page_tables: 0x20_0000,
            stack_pointer: 0x3000,
        };
        let boot = BootEntry::linux64_with_layout(&mem, 0x10_0000, 0x5000, layout).unwrap();
        assert!(!boot.is_pvh());
        assert_eq!(boot.layout(), &layout);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(0x1008)).unwrap(),
            gdt::BOOT_GDT[1]
        );
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(),
            0x20_1000 | 3
        );
        let (sregs, regs) = boot.registers(Default::default());
        assert_eq!(
            (sregs.gdt.base, sregs.idt.base, sregs.cr3),
            (0x1000, 0x1100, 0x20_0000)
        );
        assert_eq!((regs.rip, regs.rsi, regs.rsp), (0x10_0000, 0x5000, 0x3000));
    }

    #[test]
    fn pvh_writes_only_the_gdt() {
        let mem = memory();
        let boot = BootEntry::pvh(&mem, 0x10_0000, 0x6000).unwrap();
        assert!(boot.is_pvh());
        assert_eq!(boot.entry_point(), 0x10_0000);
        let default = BootCpuLayout::default();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(default.gdt + 8)).unwrap(),
            gdt::PVH_GDT[1]
        );
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(default.page_tables))
                .unwrap(),
            0
        );
        let (sregs, regs) = boot.registers(Default::default());
        assert_eq!(sregs.cr0 & 1, 1);
        assert_eq!(regs.rbx, 0x6000);
    }

    #[test]
    fn bad_layouts_and_small_memory_are_errors() {
        let mem = memory();
        let misaligned = BootCpuLayout {
            page_tables: 0x20_0800,
            ..BootCpuLayout::default()
        };
        let err = BootEntry::linux64_with_layout(&mem, 0, 0, misaligned).unwrap_err();
        assert!(err.to_string().contains("0x200800"), "{err}");
        let gdt = BootCpuLayout {
            gdt: 0x501,
            ..BootCpuLayout::default()
        };
        assert!(BootEntry::pvh_with_layout(&mem, 0, 0, gdt).is_err());
        let outside = BootCpuLayout {
            page_tables: 0x100_0000,
            ..BootCpuLayout::default()
        };
        let err = BootEntry::linux64_with_layout(&mem, 0, 0, outside).unwrap_err();
        assert!(matches!(err, VcpuError::GuestMemory { .. }), "{err}");
    }
}
