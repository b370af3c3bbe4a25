//! Where the boot loaders put things in guest memory.
//!
//! [`BootLayout`] gathers the addresses the boot steps write to (command
//! line, zero page, MP table, ACPI tables) and the lowest address of the
//! kernel and initrd. Its [`Default`] is kindling-memory's
//! [`layout`](kindling_memory::layout), which is what every function
//! without `_with_layout` in its name uses.

use kindling_memory::layout::{
    ACPI_END, ACPI_START, CMDLINE_START, EBDA_START, HIMEM_START, PAGE_SIZE, ZERO_PAGE_START,
};
use kindling_memory::GuestMemoryMmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};

/// Alignment of the MP floating pointer and of the ACPI RSDP.
const TABLE_ALIGN: u64 = 16;

/// Where the boot steps put the guest's boot data, below the kernel.
///
/// The areas, all below [`himem_start`](Self::himem_start) and pairwise
/// disjoint:
///
/// | area | from | size |
/// | --- | --- | --- |
/// | command line | `cmdline_start` | `cmdline_max_size` |
/// | zero page / PVH start info | `zero_page_start` | one page |
/// | MP table (in the EBDA) | `ebda_start` | up to `acpi_start` |
/// | ACPI tables | `acpi_start` | up to `acpi_end` |
///
/// The E820 map reports `ebda_start..himem_start` as reserved, so the MP
/// and ACPI tables must lie in it (`ebda_start < acpi_start < acpi_end <=
/// himem_start`). Linux also finds the ACPI RSDP by scanning
/// `0xe0000..0x100000`; with the ACPI area elsewhere, pass the RSDP in
/// the zero page ([`set_acpi_rsdp`](crate::set_acpi_rsdp)) or the PVH start
/// info ([`set_pvh_rsdp`](crate::set_pvh_rsdp)).
///
/// The vCPU's boot GDT, page tables and stack (`kindling_vcpu`) are not
/// part of this layout: keep the areas clear of them.
///
/// # Example
///
/// ```
/// use kindling_boot::BootLayout;
///
/// let layout = BootLayout {
///     cmdline_start: 0x3_0000,
///     cmdline_max_size: 4096,
///     zero_page_start: 0x2_0000,
///     ..BootLayout::default()
/// };
/// layout.validate().unwrap();
/// let overlapping = BootLayout { zero_page_start: 0x3_0800, ..layout };
/// assert!(overlapping.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootLayout {
    /// Guest-physical address of the command line.
    pub cmdline_start: u64,
    /// Bytes reserved for the command line, including its NUL: the longest
    /// command line any kernel gets (an ELF kernel gets at most
    /// [`CMDLINE_MAX_SIZE`](kindling_memory::layout::CMDLINE_MAX_SIZE) of
    /// it, a bzImage at most its header's `cmdline_size`).
    pub cmdline_max_size: usize,
    /// Guest-physical address of the zero page (`boot_params`), or of the
    /// PVH start info with its module list and memory map. One page.
    pub zero_page_start: u64,
    /// Start of the extended BIOS data area, where the MP table goes; the
    /// E820 map reserves from here to `himem_start`. 16-byte aligned.
    pub ebda_start: u64,
    /// Start of the ACPI tables (and end of the MP table's room). 16-byte
    /// aligned.
    pub acpi_start: u64,
    /// End (exclusive) of the ACPI tables' room.
    pub acpi_end: u64,
    /// The lowest address the kernel and the initrd may occupy; RAM from
    /// here up is reported usable.
    pub himem_start: u64,
}

impl Default for BootLayout {
    /// kindling-memory's layout: command line at 0x20000 with room up to
    /// the EBDA at 0x9fc00, zero page at 0x7000, ACPI tables at
    /// 0xe0000..0x100000, kernel from 1 MiB.
    fn default() -> Self {
        Self {
            cmdline_start: CMDLINE_START,
            cmdline_max_size: (EBDA_START - CMDLINE_START) as usize,
            zero_page_start: ZERO_PAGE_START,
            ebda_start: EBDA_START,
            acpi_start: ACPI_START,
            acpi_end: ACPI_END,
            himem_start: HIMEM_START,
        }
    }
}

/// Why a [`BootLayout`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An area is empty or wraps around the address space.
    #[error("boot layout: the {area} area [{start:#x}, {end:#x}) is empty or wraps around")]
    Empty {
        /// The area.
        area: &'static str,
        /// Its start.
        start: u64,
        /// Its end (exclusive), as computed.
        end: u64,
    },
    /// An area reaches into the kernel's memory.
    #[error("boot layout: the {area} area [{start:#x}, {end:#x}) reaches above the kernel's lowest address {himem_start:#x}")]
    AboveHimem {
        /// The area.
        area: &'static str,
        /// Its start.
        start: u64,
        /// Its end (exclusive).
        end: u64,
        /// The lowest kernel address.
        himem_start: u64,
    },
    /// Two areas overlap.
    #[error("boot layout: the {first} area [{first_start:#x}, {first_end:#x}) overlaps the {second} area [{second_start:#x}, {second_end:#x})")]
    Overlap {
        /// One area.
        first: &'static str,
        /// Its start.
        first_start: u64,
        /// Its end (exclusive).
        first_end: u64,
        /// The other area.
        second: &'static str,
        /// Its start.
        second_start: u64,
        /// Its end (exclusive).
        second_end: u64,
    },
    /// A table that must be aligned is not.
    #[error("boot layout: the {area} area at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The area.
        area: &'static str,
        /// Its start.
        addr: u64,
        /// The alignment it needs.
        align: u64,
    },
    /// An area is not (entirely) guest RAM.
    #[error("boot layout: the {area} area [{start:#x}, {end:#x}) is not guest RAM")]
    OutsideRam {
        /// The area.
        area: &'static str,
        /// Its start.
        start: u64,
        /// Its end (exclusive).
        end: u64,
    },
}

/// One named area of a layout.
#[derive(Debug, Clone, Copy)]
struct Area {
    name: &'static str,
    start: u64,
    end: u64,
}

impl BootLayout {
    /// The areas, in address order of the default layout.
    fn areas(&self) -> [Area; 4] {
        let size = u64::try_from(self.cmdline_max_size).unwrap_or(u64::MAX);
        [
            Area {
                name: "zero page",
                start: self.zero_page_start,
                end: self.zero_page_start.wrapping_add(PAGE_SIZE),
            },
            Area {
                name: "command line",
                start: self.cmdline_start,
                end: self.cmdline_start.wrapping_add(size),
            },
            Area {
                name: "MP table",
                start: self.ebda_start,
                end: self.acpi_start,
            },
            Area {
                name: "ACPI tables",
                start: self.acpi_start,
                end: self.acpi_end,
            },
        ]
    }

    /// Checks that every area is non-empty, below
    /// [`himem_start`](Self::himem_start) and clear of the others, and that
    /// the MP and ACPI tables are 16-byte aligned.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let areas = self.areas();
        for area in &areas {
            if area.end <= area.start {
                return Err(LayoutError::Empty {
                    area: area.name,
                    start: area.start,
                    end: area.end,
                });
            }
            if area.end > self.himem_start {
                return Err(LayoutError::AboveHimem {
                    area: area.name,
                    start: area.start,
                    end: area.end,
                    himem_start: self.himem_start,
                });
            }
        }
        for (i, a) in areas.iter().enumerate() {
            for b in &areas[i + 1..] {
                if a.start < b.end && b.start < a.end {
                    return Err(LayoutError::Overlap {
                        first: a.name,
                        first_start: a.start,
                        first_end: a.end,
                        second: b.name,
                        second_start: b.start,
                        second_end: b.end,
                    });
                }
            }
        }
        for (name, addr) in [
            ("MP table", self.ebda_start),
            ("ACPI tables", self.acpi_start),
        ] {
            if addr % TABLE_ALIGN != 0 {
                return Err(LayoutError::Misaligned {
                    area: name,
                    addr,
                    align: TABLE_ALIGN,
                });
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate), and every area is guest RAM of `mem`.
    pub fn validate_for(&self, mem: &GuestMemoryMmap) -> Result<(), LayoutError> {
        self.validate()?;
        for area in self.areas() {
            let in_ram = usize::try_from(area.end - area.start)
                .is_ok_and(|len| mem.check_range(GuestAddress(area.start), len));
            if !in_ram {
                return Err(LayoutError::OutsideRam {
                    area: area.name,
                    start: area.start,
                    end: area.end,
                });
            }
        }
        Ok(())
    }

    /// The largest command line, with its NUL, for a kernel that accepts
    /// `kernel_max` bytes.
    pub(crate) fn cmdline_limit(&self, kernel_max: usize) -> usize {
        kernel_max.min(self.cmdline_max_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::test_images::{guest_memory, moved_layout as moved};
    use kindling_memory::layout::MIB;

    #[test]
    fn the_default_is_kindling_memory_layout_and_valid() {
        let layout = BootLayout::default();
        assert_eq!(layout.cmdline_start, CMDLINE_START);
        assert_eq!(layout.zero_page_start, ZERO_PAGE_START);
        assert_eq!(layout.ebda_start, EBDA_START);
        assert_eq!((layout.acpi_start, layout.acpi_end), (ACPI_START, ACPI_END));
        assert_eq!(layout.himem_start, HIMEM_START);
        layout.validate().unwrap();
        layout.validate_for(&guest_memory(16 * MIB)).unwrap();
        moved().validate_for(&guest_memory(16 * MIB)).unwrap();
    }

    #[test]
    fn overlapping_areas_are_refused() {
        let layout = BootLayout {
            zero_page_start: 0x4_0800,
            ..moved()
        };
        let err = layout.validate().unwrap_err();
        assert_eq!(
            err,
            LayoutError::Overlap {
                first: "zero page",
                first_start: 0x4_0800,
                first_end: 0x4_1800,
                second: "command line",
                second_start: 0x4_0000,
                second_end: 0x4_1000,
            }
        );
        assert!(err.to_string().contains("overlaps"), "{err}");
        let layout = BootLayout {
            cmdline_start: 0x8_0f00,
            ..moved()
        };
        assert!(matches!(
            layout.validate(),
            Err(LayoutError::Overlap {
                first: "command line",
                second: "MP table",
                ..
            })
        ));
    }

    #[test]
    fn areas_above_himem_empty_or_misaligned_are_refused() {
        let layout = BootLayout {
            himem_start: 0x8_8000,
            ..moved()
        };
        assert!(matches!(
            layout.validate(),
            Err(LayoutError::AboveHimem {
                area: "ACPI tables",
                ..
            })
        ));
        let layout = BootLayout {
            acpi_end: 0x8_1000,
            ..moved()
        };
        assert!(matches!(
            layout.validate(),
            Err(LayoutError::Empty {
                area: "ACPI tables",
                ..
            })
        ));
        let layout = BootLayout {
            cmdline_max_size: 0,
            ..moved()
        };
        assert!(matches!(
            layout.validate(),
            Err(LayoutError::Empty {
                area: "command line",
                ..
            })
        ));
        let layout = BootLayout {
            cmdline_start: u64::MAX - 10,
            ..moved()
        };
        assert!(matches!(
            layout.validate(),
            Err(LayoutError::Empty {
                area: "command line",
                ..
            })
        ));
        let layout = BootLayout {
            ebda_start: 0x8_0008,
            ..moved()
        };
        assert_eq!(
            layout.validate(),
            Err(LayoutError::Misaligned {
                area: "MP table",
                addr: 0x8_0008,
                align: 16
            })
        );
    }

    #[test]
    fn areas_outside_ram_are_refused() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8_8000)]).unwrap();
        let err = moved().validate_for(&mem).unwrap_err();
        assert_eq!(
            err,
            LayoutError::OutsideRam {
                area: "ACPI tables",
                start: 0x8_1000,
                end: 0x9_0000
            }
        );
        assert!(err.to_string().contains("not guest RAM"), "{err}");
    }
}
