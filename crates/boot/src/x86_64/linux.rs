//! Every boot step in one call.

use kindling_memory::GuestMemoryMmap;

use crate::x86_64::{
    configure_pvh_with_layout, configure_zero_page_with_layout, load_cmdline_with_layout,
    load_initrd_with_layout, load_kernel_with_layout, mptable_bytes_with_layout,
    setup_mptable_with_layout, BootError, BootLayout, CmdlinePlacement, InitrdPlacement,
    LoadedKernel, ReadSeek,
};

/// What the VMM needs to start the boot vCPU through the 64-bit Linux
/// entry, and where things went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootInfo {
    /// Guest-physical address of the 64-bit entry point (`rip`).
    pub entry: u64,
    /// Guest-physical address of the zero page (`rsi`).
    pub zero_page: u64,
    /// The loaded kernel.
    pub kernel: LoadedKernel,
    /// Where the command line was written.
    pub cmdline: CmdlinePlacement,
    /// Where the initrd was loaded.
    pub initrd: Option<InitrdPlacement>,
}

/// What the VMM needs to start the boot vCPU through the PVH entry (32-bit
/// protected mode, paging off), and where things went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PvhBootInfo {
    /// Guest-physical address of the PVH entry point (`eip`).
    pub entry: u64,
    /// Guest-physical address of the `hvm_start_info` (`ebx`).
    pub start_info: u64,
    /// The loaded kernel.
    pub kernel: LoadedKernel,
    /// Where the command line was written.
    pub cmdline: CmdlinePlacement,
    /// Where the initrd was loaded.
    pub initrd: Option<InitrdPlacement>,
}

/// The steps both protocols share: check the vCPU count before writing
/// anything, then load the kernel, the initrd and the command line.
fn load_images(
    mem: &GuestMemoryMmap,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
    cmdline: &str,
    num_cpus: u8,
    pvh: bool,
    layout: &BootLayout,
) -> Result<(LoadedKernel, CmdlinePlacement, Option<InitrdPlacement>), BootError> {
    layout.validate_for(mem)?;
    mptable_bytes_with_layout(num_cpus, layout)?;
    let kernel = load_kernel_with_layout(mem, kernel, layout)?;
    if pvh && kernel.pvh_entry.is_none() {
        return Err(BootError::PvhUnavailable {
            format: kernel.format,
        });
    }
    let initrd = match initrd {
        Some(image) => Some(load_initrd_with_layout(mem, &kernel, image, layout)?),
        None => None,
    };
    let cmdline = load_cmdline_with_layout(mem, &kernel, cmdline, layout)?;
    Ok((kernel, cmdline, initrd))
}

/// Loads the kernel, the initrd and the command line, then writes the zero
/// page (with the E820 map) and the MP table for `num_cpus` vCPUs, for the
/// 64-bit Linux boot protocol.
///
/// The vCPU count is checked first, so nothing is written when it is
/// invalid. Other steps stop at the first error, and guest memory may then
/// hold part of the boot data.
///
/// # Example
///
/// ```
/// # use std::io::Cursor;
/// # use kindling_boot::load_linux;
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// # fn tiny_elf() -> Vec<u8> {
/// #     let mut elf = vec![0u8; 120];
/// #     elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
/// #     elf[18] = 62;
/// #     elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
/// #     elf[32] = 64;
/// #     elf[54] = 56;
/// #     elf[56] = 1;
/// #     let ph = &mut elf[64..120];
/// #     ph[0] = 1;
/// #     ph[8..16].copy_from_slice(&120u64.to_le_bytes());
/// #     ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
/// #     ph[32] = 2;
/// #     ph[40] = 2;
/// #     elf.extend_from_slice(&[0xf4, 0xf4]);
/// #     elf
/// # }
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 64, backing: Default::default() }).unwrap();
/// let mut kernel = Cursor::new(tiny_elf());
/// let mut initrd = Cursor::new(vec![0u8; 4096]);
/// let boot = load_linux(&ram.memory, &mut kernel, Some(&mut initrd), "console=ttyS0", 2).unwrap();
/// assert_eq!((boot.entry, boot.zero_page), (0x100_0000, 0x7000));
/// ```
pub fn load_linux(
    mem: &GuestMemoryMmap,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
    cmdline: &str,
    num_cpus: u8,
) -> Result<BootInfo, BootError> {
    load_linux_with_layout(
        mem,
        kernel,
        initrd,
        cmdline,
        num_cpus,
        &BootLayout::default(),
    )
}

/// Like [`load_linux`], with the addresses of `layout` instead of
/// kindling-memory's: the layout is checked against `mem` first
/// ([`BootLayout::validate_for`]), so an unusable one writes nothing.
///
/// # Example
///
/// ```
/// # use std::io::Cursor;
/// # use kindling_boot::{load_linux_with_layout, BootLayout};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// # fn tiny_elf() -> Vec<u8> {
/// #     let mut elf = vec![0u8; 120];
/// #     elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
/// #     elf[18] = 62;
/// #     elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
/// #     elf[32] = 64;
/// #     elf[54] = 56;
/// #     elf[56] = 1;
/// #     let ph = &mut elf[64..120];
/// #     ph[0] = 1;
/// #     ph[8..16].copy_from_slice(&120u64.to_le_bytes());
/// #     ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
/// #     ph[32] = 2;
/// #     ph[40] = 2;
/// #     elf.extend_from_slice(&[0xf4, 0xf4]);
/// #     elf
/// # }
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 64, backing: Default::default() }).unwrap();
/// let layout = BootLayout {
///     zero_page_start: 0x1_0000,
///     cmdline_start: 0x3_0000,
///     cmdline_max_size: 4096,
///     ..BootLayout::default()
/// };
/// let mut kernel = Cursor::new(tiny_elf());
/// let boot = load_linux_with_layout(&ram.memory, &mut kernel, None, "console=ttyS0", 1, &layout).unwrap();
/// assert_eq!((boot.zero_page, boot.cmdline.addr), (0x1_0000, 0x3_0000));
/// ```
pub fn load_linux_with_layout(
    mem: &GuestMemoryMmap,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
    cmdline: &str,
    num_cpus: u8,
    layout: &BootLayout,
) -> Result<BootInfo, BootError> {
    let (kernel, cmdline, initrd) =
        load_images(mem, kernel, initrd, cmdline, num_cpus, false, layout)?;
    let zero_page = configure_zero_page_with_layout(mem, &kernel, cmdline, initrd, layout)?;
    setup_mptable_with_layout(mem, num_cpus, layout)?;
    Ok(BootInfo {
        entry: kernel.entry,
        zero_page,
        kernel,
        cmdline,
        initrd,
    })
}

/// Like [`load_linux`], for the PVH boot protocol: the kernel must be an
/// ELF with a PVH note, and the `hvm_start_info` replaces the zero page.
pub fn load_linux_pvh(
    mem: &GuestMemoryMmap,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
    cmdline: &str,
    num_cpus: u8,
) -> Result<PvhBootInfo, BootError> {
    load_linux_pvh_with_layout(
        mem,
        kernel,
        initrd,
        cmdline,
        num_cpus,
        &BootLayout::default(),
    )
}

/// Like [`load_linux_pvh`], with the addresses of `layout` (see
/// [`load_linux_with_layout`]).
pub fn load_linux_pvh_with_layout(
    mem: &GuestMemoryMmap,
    kernel: &mut dyn ReadSeek,
    initrd: Option<&mut dyn ReadSeek>,
    cmdline: &str,
    num_cpus: u8,
    layout: &BootLayout,
) -> Result<PvhBootInfo, BootError> {
    let (kernel, cmdline, initrd) =
        load_images(mem, kernel, initrd, cmdline, num_cpus, true, layout)?;
    let start_info = configure_pvh_with_layout(mem, cmdline, initrd, layout)?;
    setup_mptable_with_layout(mem, num_cpus, layout)?;
    Ok(PvhBootInfo {
        // `load_images` checked that the entry is there.
        entry: kernel.pvh_entry.unwrap_or(kernel.entry),
        start_info,
        kernel,
        cmdline,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use kindling_memory::layout::{CMDLINE_START, EBDA_START, ZERO_PAGE_START};
    use kindling_memory::{create_guest_memory, Backing, MemoryConfig};
    use linux_loader::bootparam::boot_params;
    use linux_loader::loader::elf::start_info::hvm_start_info;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::x86_64::test_images::{moved_layout, BzImageBuilder, ElfBuilder};
    use crate::x86_64::{KernelFormat, LayoutError};

    fn memory(size_mib: u64) -> GuestMemoryMmap {
        create_guest_memory(&MemoryConfig {
            size_mib,
            backing: Backing::Anonymous,
        })
        .unwrap()
        .memory
    }

    fn elf() -> Vec<u8> {
        ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[0xf4; 32], 0x10_0000)
            .pvh_note(0x100_0010)
            .build()
    }

    #[test]
    fn elf_with_initrd_end_to_end() {
        let mem = memory(128);
        let mut kernel = Cursor::new(elf());
        let mut initrd = Cursor::new(vec![0x42u8; 3 * 4096 + 1]);
        let boot = load_linux(
            &mem,
            &mut kernel,
            Some(&mut initrd),
            "console=ttyS0 panic=1",
            4,
        )
        .unwrap();
        assert_eq!(boot.entry, 0x100_0000);
        assert_eq!(boot.zero_page, ZERO_PAGE_START);
        assert_eq!(boot.kernel.format, KernelFormat::Elf);
        assert_eq!(
            boot.cmdline,
            CmdlinePlacement {
                addr: CMDLINE_START,
                len: 22
            }
        );
        let initrd = boot.initrd.unwrap();
        assert_eq!(initrd.addr, (128 << 20) - 4 * 4096);

        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.ramdisk_image }, initrd.addr as u32);
        assert_eq!({ params.hdr.ramdisk_size }, 3 * 4096 + 1);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!(params.e820_entries, 3);
        let mut mp = [0u8; 4];
        mem.read_slice(&mut mp, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&mp, b"_MP_");
        let mut cmdline = [0u8; 22];
        mem.read_slice(&mut cmdline, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&cmdline, b"console=ttyS0 panic=1\0");
    }

    #[test]
    fn bzimage_from_a_file() {
        let path =
            std::env::temp_dir().join(format!("kindling-boot-test-{}.bzImage", std::process::id()));
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&BzImageBuilder::new().cmdline_size(15).build())
            .unwrap();
        drop(file);
        let mut kernel = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        let mem = memory(64);
        let boot = load_linux(&mem, &mut kernel, None, "root=/dev/vda", 1).unwrap();
        assert_eq!(boot.kernel.format, KernelFormat::BzImage);
        assert_eq!(boot.entry, 0x10_0200);
        assert_eq!(boot.initrd, None);
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.version }, 0x020f);
        assert_eq!(params.hdr.type_of_loader, 0xff);
        assert_eq!({ params.hdr.ramdisk_size }, 0);
    }

    #[test]
    fn bzimage_initrd_respects_the_header() {
        let mem = memory(64);
        let image = BzImageBuilder::new()
            .initrd_addr_max(0x1ff_ffff)
            .init_size(0x40_0000)
            .build();
        let mut kernel = Cursor::new(image);
        let mut initrd = Cursor::new(vec![9u8; 0x1000]);
        let boot = load_linux(&mem, &mut kernel, Some(&mut initrd), "", 1).unwrap();
        // Below initrd_addr_max, above the decompression area at 16 MiB.
        assert_eq!(boot.kernel.end, 0x140_0000);
        assert_eq!(
            boot.initrd,
            Some(InitrdPlacement {
                addr: 0x1ff_f000,
                size: 0x1000
            })
        );
    }

    #[test]
    fn bzimage_cmdline_too_long() {
        let mem = memory(64);
        let mut kernel = Cursor::new(BzImageBuilder::new().cmdline_size(8).build());
        let err = load_linux(&mem, &mut kernel, None, "console=ttyS0", 1).unwrap_err();
        assert!(
            matches!(err, BootError::CmdlineTooLong { len: 14, max: 9 }),
            "{err}"
        );
    }

    #[test]
    fn pvh_end_to_end() {
        let mem = memory(64);
        let mut kernel = Cursor::new(elf());
        let mut initrd = Cursor::new(vec![1u8; 100]);
        let boot = load_linux_pvh(&mem, &mut kernel, Some(&mut initrd), "", 1).unwrap();
        assert_eq!(boot.entry, 0x100_0010);
        assert_eq!(boot.start_info, ZERO_PAGE_START);
        let info: hvm_start_info = mem.read_obj(GuestAddress(boot.start_info)).unwrap();
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
    }

    #[test]
    fn pvh_needs_the_note() {
        let mem = memory(64);
        let mut kernel = Cursor::new(BzImageBuilder::new().build());
        let err = load_linux_pvh(&mem, &mut kernel, None, "", 1).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::PvhUnavailable {
                    format: KernelFormat::BzImage
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_cpu_count_writes_nothing() {
        let mem = memory(64);
        let mut kernel = Cursor::new(elf());
        let err = load_linux(&mem, &mut kernel, None, "", 0).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidCpuCount { num_cpus: 0, .. }),
            "{err}"
        );
        let first: u64 = mem.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(first, 0);
    }

    #[test]
    fn initrd_too_large_for_a_small_guest() {
        let mem = memory(32);
        let mut kernel = Cursor::new(elf());
        let mut initrd = Cursor::new(vec![0u8; 40 << 20]);
        let err = load_linux(&mem, &mut kernel, Some(&mut initrd), "", 1).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }), "{err}");
    }

    #[test]
    fn elf_with_a_moved_layout() {
        let mem = memory(128);
        let layout = moved_layout();
        let mut kernel = Cursor::new(elf());
        let mut initrd = Cursor::new(vec![0x42u8; 4096]);
        let boot = load_linux_with_layout(
            &mem,
            &mut kernel,
            Some(&mut initrd),
            "console=ttyS0",
            2,
            &layout,
        )
        .unwrap();
        assert_eq!(boot.zero_page, layout.zero_page_start);
        assert_eq!(
            boot.cmdline,
            CmdlinePlacement {
                addr: layout.cmdline_start,
                len: 14
            }
        );
        let params: boot_params = mem.read_obj(GuestAddress(layout.zero_page_start)).unwrap();
        assert_eq!({ params.hdr.cmd_line_ptr }, layout.cmdline_start as u32);
        assert_eq!(
            { params.hdr.ramdisk_image },
            boot.initrd.unwrap().addr as u32
        );
        let mut cmdline = [0u8; 14];
        mem.read_slice(&mut cmdline, GuestAddress(layout.cmdline_start))
            .unwrap();
        assert_eq!(&cmdline, b"console=ttyS0\0");
        let mut mp = [0u8; 4];
        mem.read_slice(&mut mp, GuestAddress(layout.ebda_start))
            .unwrap();
        assert_eq!(&mp, b"_MP_");
        // Nothing at the default addresses.
        let default: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ default.hdr.cmd_line_ptr }, 0);
        mem.read_slice(&mut mp, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(mp, [0; 4]);
        // The E820 map reserves the layout's EBDA..HIMEM hole.
        let e820: Vec<(u64, u64, u32)> = params.e820_table[..usize::from(params.e820_entries)]
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect();
        assert_eq!(
            e820,
            vec![
                (0, layout.ebda_start, 1),
                (layout.ebda_start, layout.himem_start - layout.ebda_start, 2),
                (layout.himem_start, (128 << 20) - layout.himem_start, 1),
            ]
        );
    }

    #[test]
    fn pvh_with_a_moved_layout() {
        let mem = memory(64);
        let layout = moved_layout();
        let mut kernel = Cursor::new(elf());
        let boot =
            load_linux_pvh_with_layout(&mem, &mut kernel, None, "panic=1", 1, &layout).unwrap();
        assert_eq!(boot.start_info, layout.zero_page_start);
        let info: hvm_start_info = mem.read_obj(GuestAddress(boot.start_info)).unwrap();
        assert_eq!(info.cmdline_paddr, layout.cmdline_start);
        assert_eq!(info.memmap_paddr, layout.zero_page_start + 0x80);
        assert_eq!(info.memmap_entries, 3);
    }

    #[test]
    fn kernels_below_the_moved_himem_are_refused() {
        let mem = memory(64);
        let layout = BootLayout {
            himem_start: 0x200_0000,
            ..moved_layout()
        };
        let mut kernel = Cursor::new(elf());
        let err = load_linux_with_layout(&mem, &mut kernel, None, "", 1, &layout).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::KernelBelowHimem {
                    addr: 0x100_0000,
                    himem: 0x200_0000
                }
            ),
            "{err}"
        );
        // A bzImage at its preferred 1 MiB too; one at 2 MiB loads there.
        let mut kernel = Cursor::new(BzImageBuilder::new().build());
        let err =
            load_linux_with_layout(&mem, &mut kernel, None, "", 1, &moved_layout()).unwrap_err();
        assert!(matches!(err, BootError::KernelBelowHimem { .. }), "{err}");
        let mut kernel = Cursor::new(BzImageBuilder::new().code32_start(0x20_0000).build());
        let boot = load_linux_with_layout(&mem, &mut kernel, None, "", 1, &moved_layout()).unwrap();
        assert_eq!(boot.kernel.start, 0x20_0000);
    }

    #[test]
    fn a_moved_layout_limits_the_command_line() {
        let mem = memory(64);
        let layout = BootLayout {
            cmdline_max_size: 8,
            ..moved_layout()
        };
        let mut kernel = Cursor::new(elf());
        let err = load_linux_with_layout(&mem, &mut kernel, None, "console=ttyS0", 1, &layout)
            .unwrap_err();
        assert!(
            matches!(err, BootError::CmdlineTooLong { len: 14, max: 8 }),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_layout_writes_nothing() {
        let mem = memory(64);
        let overlapping = BootLayout {
            zero_page_start: moved_layout().cmdline_start,
            ..moved_layout()
        };
        let mut kernel = Cursor::new(elf());
        let err = load_linux_with_layout(&mem, &mut kernel, None, "", 1, &overlapping).unwrap_err();
        assert!(
            matches!(err, BootError::Layout(LayoutError::Overlap { .. })),
            "{err}"
        );
        let first: u64 = mem.read_obj(GuestAddress(0x100_0000)).unwrap();
        assert_eq!(first, 0);

        // Areas past the end of a small guest's RAM.
        let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8_8000)]).unwrap();
        let err = load_linux_pvh_with_layout(&small, &mut kernel, None, "", 1, &moved_layout())
            .unwrap_err();
        assert!(
            matches!(err, BootError::Layout(LayoutError::OutsideRam { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("not guest RAM"), "{err}");
    }
}
