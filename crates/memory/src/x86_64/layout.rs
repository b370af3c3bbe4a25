//! The x86_64 guest-physical memory map used by every Kindling crate.
//!
//! ```text
//! 0x0000_0000 ┬ real-mode IVT / BDA (unused)
//! 0x0000_0500 │ boot GDT, then boot IDT
//! 0x0000_7000 │ zero page (struct boot_params)
//! 0x0000_8ff0 │ boot stack top
//! 0x0000_9000 │ boot page tables (PML4, PDPT, PD)
//! 0x0002_0000 │ kernel command line
//! 0x0009_fc00 │ EBDA: MP table
//! 0x000e_0000 │ ACPI tables (RSDP and friends)
//! 0x0010_0000 │ kernel (HIMEM_START)
//!      ...    │ RAM
//! 0xc000_0000 ┼ MMIO gap: boot timer, then device windows, IOAPIC, LAPIC
//! 0x1_0000_0000 ┴ RAM continues above 4 GiB for guests larger than 3 GiB
//! ```

/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 0x1000;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// Guest RAM starts at address zero.
pub const RAM_START: u64 = 0;
/// Start of the MMIO gap below 4 GiB; RAM stops here.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO gap: the first address past 32 bits.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Size of the MMIO gap.
pub const MMIO_GAP_SIZE: u64 = MMIO_GAP_END - MMIO_GAP_START;
/// RAM that does not fit below the gap resumes here.
pub const HIGH_RAM_START: u64 = MMIO_GAP_END;
/// Highest guest-physical address (exclusive) Kindling will place RAM at:
/// 46 bits, the smallest physical address width of current x86_64 hosts
/// that run KVM.
pub const MAX_PHYS_ADDR: u64 = 1 << 46;

/// Location of the GDT set up for the 64-bit boot entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// Location of the (empty) IDT set up for the 64-bit boot entry.
pub const BOOT_IDT_START: u64 = 0x520;
/// The zero page (`struct boot_params`) handed to the kernel in `rsi`.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory of the boot identity map (2 MiB pages over the first GiB).
pub const PDE_START: u64 = 0xb000;
/// Where the kernel command line is written.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line (including the NUL) for kernels that do not say
/// otherwise: Linux's x86 `COMMAND_LINE_SIZE`.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where the MP table goes. E820 RAM
/// below 1 MiB stops here.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the ACPI tables (RSDP first) are written.
pub const ACPI_START: u64 = 0xe0000;
/// End (exclusive) of the region reserved for ACPI tables below 1 MiB.
pub const ACPI_END: u64 = 0x100000;
/// Kernels are loaded at or above this address.
pub const HIMEM_START: u64 = 0x100000;

/// Firecracker-compatible boot timer: a guest byte write of
/// [`BOOT_TIMER_MAGIC`] here logs the boot time.
pub const BOOT_TIMER_START: u64 = MMIO_GAP_START;
/// Size of the boot timer's MMIO window.
pub const BOOT_TIMER_SIZE: u64 = PAGE_SIZE;
/// The byte a guest writes to the boot timer to signal that it booted.
pub const BOOT_TIMER_MAGIC: u8 = 123;
/// First address handed out for device MMIO windows.
pub const DEVICE_MMIO_START: u64 = BOOT_TIMER_START + BOOT_TIMER_SIZE;
/// Base of the IOAPIC's registers; device windows stop below it.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Base of the local APIC's registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// End (exclusive) of the range handed out for device MMIO windows.
pub const DEVICE_MMIO_END: u64 = IOAPIC_START;
/// KVM's three-page TSS region (Intel VMX needs it; it must not be RAM).
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// KVM's identity-map page for real mode on Intel (one page below the TSS).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;

/// Number of IOAPIC pins, i.e. legacy GSIs the guest can route.
pub const IOAPIC_PINS: u32 = 24;
/// IRQ of the i8042 keyboard controller.
pub const I8042_IRQ: u32 = 1;
/// IRQ of COM1.
pub const SERIAL_IRQ: u32 = 4;
/// First IRQ handed out to devices (virtio and friends).
pub const DEVICE_IRQ_START: u32 = 5;
/// Last IRQ handed out to devices.
pub const DEVICE_IRQ_END: u32 = IOAPIC_PINS - 1;

// The fixed regions must not overlap; checked at compile time.
const _: () = {
    assert!(ZERO_PAGE_START + PAGE_SIZE <= BOOT_STACK_POINTER);
    assert!(PDE_START + PAGE_SIZE <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(EBDA_START < ACPI_START && ACPI_END <= HIMEM_START);
    assert!(DEVICE_MMIO_END <= LAPIC_START);
    assert!(KVM_TSS_START >= LAPIC_START);
};

/// Guest-physical RAM ranges `(start, length)` for `size` bytes of RAM:
/// everything below the MMIO gap first, the rest from 4 GiB up.
///
/// `size` is assumed already validated (non-zero).
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(RAM_START, size)]
    } else {
        vec![
            (RAM_START, MMIO_GAP_START),
            (HIGH_RAM_START, size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128 * MIB), vec![(0, 128 * MIB)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
    }

    #[test]
    fn large_guest_resumes_above_4g() {
        assert_eq!(
            ram_ranges(5 * GIB),
            vec![(0, MMIO_GAP_START), (HIGH_RAM_START, 2 * GIB)]
        );
    }
}
