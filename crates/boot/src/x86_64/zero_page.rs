//! The zero page (`struct boot_params`) of the Linux 64-bit boot protocol.

use kindling_memory::GuestMemoryMmap;
use linux_loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, E820_MAX_ENTRIES_ZEROPAGE,
};
use vm_memory::{Bytes, GuestAddress};

use crate::x86_64::{
    e820_map_with_layout, BootError, BootLayout, CmdlinePlacement, InitrdPlacement, LoadedKernel,
};

/// `boot_flag` of a valid setup header.
const BOOT_FLAG: u16 = 0xaa55;
/// `header` of a valid setup header: "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader` for a boot loader without an assigned id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `kernel_alignment` written for ELF kernels, which carry no setup header.
const ELF_KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// The setup header handed to an ELF kernel, which has none of its own.
fn elf_setup_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        kernel_alignment: ELF_KERNEL_ALIGNMENT,
        ..Default::default()
    }
}

/// Builds the zero page for `kernel`: its setup header (the bzImage's own,
/// or a minimal one for an ELF kernel) with the loader type, command line
/// and initrd filled in, and the E820 map of `mem`.
///
/// [`configure_zero_page`] writes the result to guest memory; build it
/// yourself to change a field first (for example `acpi_rsdp_addr`).
pub fn zero_page(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: CmdlinePlacement,
    initrd: Option<InitrdPlacement>,
) -> Result<boot_params, BootError> {
    zero_page_with_layout(mem, kernel, cmdline, initrd, &BootLayout::default())
}

/// Like [`zero_page`], with the E820 map of [`e820_map_with_layout`].
pub fn zero_page_with_layout(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: CmdlinePlacement,
    initrd: Option<InitrdPlacement>,
    layout: &BootLayout,
) -> Result<boot_params, BootError> {
    let mut params = boot_params {
        hdr: kernel.setup_header.unwrap_or_else(elf_setup_header),
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = cmdline.addr as u32;
    params.ext_cmd_line_ptr = (cmdline.addr >> 32) as u32;
    // `cmdline_size` is an input from the kernel; leave the bzImage's.
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.ext_ramdisk_image = (initrd.addr >> 32) as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
        params.ext_ramdisk_size = (initrd.size >> 32) as u32;
    } else {
        params.hdr.ramdisk_image = 0;
        params.hdr.ramdisk_size = 0;
    }

    let map = e820_map_with_layout(mem, layout);
    if map.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::TooManyE820Entries {
            count: map.len(),
            max: E820_MAX_ENTRIES_ZEROPAGE,
        });
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page for `kernel` at
/// [`ZERO_PAGE_START`](kindling_memory::layout::ZERO_PAGE_START) (the
/// default [`BootLayout`]) and
/// returns that address, which the boot vCPU gets in `rsi`.
///
/// # Example
///
/// ```
/// # use kindling_boot::{configure_zero_page, CmdlinePlacement, KernelFormat, LoadedKernel};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 64, backing: Default::default() }).unwrap();
/// # let kernel = LoadedKernel { format: KernelFormat::Elf, entry: 0x100_0000, start: 0x100_0000,
/// #     end: 0x110_0000, setup_header: None, cmdline_max_size: 2048, pvh_entry: None };
/// let cmdline = CmdlinePlacement { addr: 0x20000, len: 1 };
/// let rsi = configure_zero_page(&ram.memory, &kernel, cmdline, None).unwrap();
/// assert_eq!(rsi, 0x7000);
/// ```
pub fn configure_zero_page(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: CmdlinePlacement,
    initrd: Option<InitrdPlacement>,
) -> Result<u64, BootError> {
    configure_zero_page_with_layout(mem, kernel, cmdline, initrd, &BootLayout::default())
}

/// Like [`configure_zero_page`], at `layout.zero_page_start`, with the
/// E820 map of [`e820_map_with_layout`].
pub fn configure_zero_page_with_layout(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: CmdlinePlacement,
    initrd: Option<InitrdPlacement>,
    layout: &BootLayout,
) -> Result<u64, BootError> {
    layout.validate()?;
    let at = layout.zero_page_start;
    let params = zero_page_with_layout(mem, kernel, cmdline, initrd, layout)?;
    mem.write_obj(params, GuestAddress(at))
        .map_err(BootError::guest_memory(
            "zero page",
            at,
            std::mem::size_of::<boot_params>() as u64,
        ))?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::{CMDLINE_START, EBDA_START, HIMEM_START, MIB, ZERO_PAGE_START};

    use super::*;
    use crate::x86_64::test_images::guest_memory;
    use crate::x86_64::KernelFormat;

    fn elf_kernel() -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x100_0000,
            start: 0x100_0000,
            end: 0x110_0000,
            setup_header: None,
            cmdline_max_size: 2048,
            pvh_entry: None,
        }
    }

    const CMDLINE: CmdlinePlacement = CmdlinePlacement {
        addr: CMDLINE_START,
        len: 10,
    };

    #[test]
    fn elf_zero_page_fields() {
        let mem = guest_memory(128 * MIB);
        let initrd = InitrdPlacement {
            addr: 0x700_0000,
            size: 0x12345,
        };
        let addr = configure_zero_page(&mem, &elf_kernel(), CMDLINE, Some(initrd)).unwrap();
        assert_eq!(addr, ZERO_PAGE_START);
        let params: boot_params = mem.read_obj(GuestAddress(addr)).unwrap();
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.header }, u32::from_le_bytes(*b"HdrS"));
        assert_eq!({ params.hdr.kernel_alignment }, 0x0100_0000);
        assert_eq!(params.hdr.type_of_loader, 0xff);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ params.ext_cmd_line_ptr }, 0);
        assert_eq!({ params.hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ params.hdr.ramdisk_size }, 0x12345);
        assert_eq!(params.e820_entries, 3);
        let ram_high = params.e820_table[2];
        assert_eq!({ ram_high.addr }, HIMEM_START);
        assert_eq!({ ram_high.size }, 128 * MIB - HIMEM_START);
        assert_eq!({ ram_high.r#type }, 1);
        let reserved = params.e820_table[1];
        assert_eq!({ reserved.addr }, EBDA_START);
        assert_eq!({ reserved.r#type }, 2);
        // The raw bytes sit where the boot protocol says.
        let mut raw = [0u8; 4];
        mem.read_slice(&mut raw, GuestAddress(ZERO_PAGE_START + 0x202))
            .unwrap();
        assert_eq!(&raw, b"HdrS");
        let e820_count: u8 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x1e8)).unwrap();
        assert_eq!(e820_count, 3);
        let cmd_line_ptr: u32 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x228)).unwrap();
        assert_eq!(u64::from(cmd_line_ptr), CMDLINE_START);
    }

    #[test]
    fn bzimage_header_is_kept() {
        let mem = guest_memory(128 * MIB);
        let hdr = setup_header {
            boot_flag: 0xaa55,
            header: HDRS_MAGIC,
            version: 0x020f,
            code32_start: 0x10_0000,
            cmdline_size: 255,
            init_size: 0x1234,
            ramdisk_image: 0xdead,
            ..Default::default()
        };
        let kernel = LoadedKernel {
            format: KernelFormat::BzImage,
            setup_header: Some(hdr),
            ..elf_kernel()
        };
        let params = zero_page(&mem, &kernel, CMDLINE, None).unwrap();
        assert_eq!({ params.hdr.version }, 0x020f);
        assert_eq!({ params.hdr.init_size }, 0x1234);
        assert_eq!({ params.hdr.cmdline_size }, 255);
        assert_eq!({ params.hdr.kernel_alignment }, 0);
        assert_eq!(params.hdr.type_of_loader, 0xff);
        // No initrd: the image's stale fields are cleared.
        assert_eq!({ params.hdr.ramdisk_image }, 0);
        assert_eq!({ params.hdr.ramdisk_size }, 0);
    }

    #[test]
    fn too_many_regions_for_the_e820_table() {
        let ranges: Vec<(GuestAddress, usize)> = (0..130u64)
            .map(|i| (GuestAddress(HIMEM_START + i * 0x2000), 0x1000))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        let err = zero_page(&mem, &elf_kernel(), CMDLINE, None).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::TooManyE820Entries {
                    count: 130,
                    max: 128
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn memory_without_the_zero_page_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(HIMEM_START), 0x1000)]).unwrap();
        let err = configure_zero_page(&mem, &elf_kernel(), CMDLINE, None).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::GuestMemory {
                    addr: ZERO_PAGE_START,
                    len: 4096,
                    ..
                }
            ),
            "{err}"
        );
    }
}
