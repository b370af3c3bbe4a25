//! Register state for the 64-bit Linux boot protocol entry.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use super::boot::BootCpuLayout;
use super::gdt::{segment_from_gdt, BOOT_GDT, PVH_GDT};

/// CR0: protected mode.
pub const X86_CR0_PE: u64 = 1 << 0;
/// CR0: extension type (x87 present).
pub const X86_CR0_ET: u64 = 1 << 4;
/// CR0: paging.
pub const X86_CR0_PG: u64 = 1 << 31;
/// CR4: physical address extension.
pub const X86_CR4_PAE: u64 = 1 << 5;
/// EFER: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// General registers for the 64-bit entry: `rip` at the kernel entry,
/// `rsi` at the zero page, the boot stack of `layout`, interrupts off.
pub fn boot_regs(entry: u64, zero_page: u64, layout: &BootCpuLayout) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: layout.stack_pointer,
        rbp: layout.stack_pointer,
        rsi: zero_page,
        ..Default::default()
    }
}

/// Sets `sregs` up for long mode with the boot GDT, an empty IDT and the
/// boot identity page tables, where `layout` put them.
pub fn configure_long_mode_sregs(sregs: &mut kvm_sregs, layout: &BootCpuLayout) {
    load_gdt_segments(sregs, &BOOT_GDT, layout);
    sregs.cr3 = layout.page_tables;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
}

/// Points GDTR at `gdt` (written at `layout.gdt`), IDTR at the empty boot
/// IDT, and loads code (entry 1), data (entry 2) and TSS (entry 3)
/// segments from it.
fn load_gdt_segments(sregs: &mut kvm_sregs, gdt: &[u64; 4], layout: &BootCpuLayout) {
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    sregs.gdt.base = layout.gdt;
    sregs.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    sregs.idt.base = layout.idt;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], 3);
}

/// General registers for the PVH entry: `rip` at the PVH entry point,
/// `rbx` at the `hvm_start_info` structure, interrupts off.
pub fn pvh_regs(entry: u64, start_info: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rbx: start_info,
        ..Default::default()
    }
}

/// Sets `sregs` up for the PVH entry: 32-bit protected mode with flat
/// segments from the PVH GDT (written at `layout.gdt`), paging off.
pub fn configure_pvh_sregs(sregs: &mut kvm_sregs, layout: &BootCpuLayout) {
    load_gdt_segments(sregs, &PVH_GDT, layout);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
}

/// The FPU state at boot: default control word and MXCSR.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_memory::layout::PML4_START;

    #[test]
    fn long_mode_state() {
        let mut sregs = kvm_sregs::default();
        configure_long_mode_sregs(&mut sregs, &BootCpuLayout::default());
        assert_eq!(sregs.cs.selector, 0x08);
        assert_eq!(sregs.ss.selector, 0x10);
        assert_eq!(sregs.tr.selector, 0x18);
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        assert_eq!(sregs.gdt.limit, 31);
        let regs = boot_regs(0x100_0000, 0x7000, &BootCpuLayout::default());
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0x100_0000, 0x7000, 2));
        assert_eq!(boot_fpu().fcw, 0x37f);
    }

    #[test]
    fn pvh_state() {
        let mut sregs = kvm_sregs {
            cr0: X86_CR0_PG,
            efer: EFER_LME,
            ..Default::default()
        };
        configure_pvh_sregs(&mut sregs, &BootCpuLayout::default());
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!(sregs.efer, 0);
        assert_eq!(sregs.cs.db, 1);
        assert_eq!(sregs.cs.l, 0);
        let regs = pvh_regs(0x100_0000, 0x7000);
        assert_eq!((regs.rip, regs.rbx), (0x100_0000, 0x7000));
    }
}
