//! Placing and loading the initial ramdisk.

use std::io::{Seek, SeekFrom};

use kindling_memory::layout::{MMIO_GAP_START, PAGE_SIZE};
use kindling_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use crate::x86_64::image::Image;
use crate::x86_64::kernel::ram_end;
use crate::x86_64::{BootError, BootLayout, LoadedKernel, ReadSeek};

/// Where the initrd was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest-physical address of the first byte (page-aligned).
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Chooses where an initrd of `size` bytes goes: the highest page-aligned
/// address where it ends below both the kernel's `initrd_addr_max` and the
/// end of RAM below the MMIO gap, and starts above the kernel.
///
/// This is what [`load_initrd`] uses; it touches no memory.
pub fn place_initrd(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    size: u64,
) -> Result<InitrdPlacement, BootError> {
    place_initrd_with_layout(mem, kernel, size, &BootLayout::default())
}

/// Like [`place_initrd`], with the initrd at or above
/// `layout.himem_start`.
pub fn place_initrd_with_layout(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    size: u64,
    layout: &BootLayout,
) -> Result<InitrdPlacement, BootError> {
    layout.validate()?;
    let himem_start = layout.himem_start;
    if size == 0 {
        return Err(BootError::InitrdEmpty);
    }
    let limit = kernel
        .initrd_addr_max()
        .saturating_add(1)
        .min(ram_end(mem))
        .min(MMIO_GAP_START);
    let lowest = kernel
        .end
        .max(himem_start)
        .checked_next_multiple_of(PAGE_SIZE)
        .unwrap_or(u64::MAX);
    let room = limit.saturating_sub(lowest);
    let top = limit.saturating_sub(size) & !(PAGE_SIZE - 1);
    if size > limit || top < lowest {
        if size <= limit.saturating_sub(himem_start) {
            return Err(BootError::InitrdOverlapsKernel {
                size,
                kernel_end: kernel.end,
                limit,
            });
        }
        return Err(BootError::InitrdTooLarge {
            size,
            max: room,
            limit,
        });
    }
    Ok(InitrdPlacement { addr: top, size })
}

/// Loads an initrd into guest memory where [`place_initrd`] says, reading
/// it straight from `initrd`.
///
/// # Example
///
/// ```
/// # use std::io::Cursor;
/// # use kindling_boot::{load_initrd, KernelFormat, LoadedKernel};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 64, backing: Default::default() }).unwrap();
/// # let kernel = LoadedKernel { format: KernelFormat::Elf, entry: 0x100_0000, start: 0x100_0000,
/// #     end: 0x110_0000, setup_header: None, cmdline_max_size: 2048, pvh_entry: None };
/// let initrd = load_initrd(&ram.memory, &kernel, &mut Cursor::new(vec![7u8; 5000])).unwrap();
/// assert_eq!(initrd.addr, 64 * 1024 * 1024 - 0x2000);
/// assert_eq!(initrd.size, 5000);
/// ```
pub fn load_initrd<F: ReadSeek + ?Sized>(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    initrd: &mut F,
) -> Result<InitrdPlacement, BootError> {
    load_initrd_with_layout(mem, kernel, initrd, &BootLayout::default())
}

/// Like [`load_initrd`], placed by [`place_initrd_with_layout`].
pub fn load_initrd_with_layout<F: ReadSeek + ?Sized>(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    initrd: &mut F,
    layout: &BootLayout,
) -> Result<InitrdPlacement, BootError> {
    let mut initrd = Image::new(initrd);
    let size = initrd
        .seek(SeekFrom::End(0))
        .map_err(BootError::io("initrd"))?;
    initrd.rewind().map_err(BootError::io("initrd"))?;
    let placement = place_initrd_with_layout(mem, kernel, size, layout)?;
    // The placement ends below the MMIO gap, so `size` fits in a usize.
    mem.read_exact_volatile_from(GuestAddress(placement.addr), &mut initrd, size as usize)
        .map_err(BootError::guest_memory("initrd", placement.addr, size))?;
    Ok(placement)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use kindling_memory::layout::HIMEM_START;

    use super::*;
    use crate::x86_64::test_images::guest_memory;
    use crate::x86_64::KernelFormat;

    const MIB: u64 = 1 << 20;

    fn elf_kernel(start: u64, end: u64) -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::Elf,
            entry: start,
            start,
            end,
            setup_header: None,
            cmdline_max_size: 2048,
            pvh_entry: None,
        }
    }

    fn bz_kernel(initrd_addr_max: u32) -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::BzImage,
            setup_header: Some(linux_loader::bootparam::setup_header {
                initrd_addr_max,
                ..Default::default()
            }),
            ..elf_kernel(HIMEM_START, 2 * MIB)
        }
    }

    #[test]
    fn goes_to_the_top_of_ram() {
        let mem = guest_memory(128 * MIB);
        let kernel = elf_kernel(16 * MIB, 20 * MIB);
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let placed = load_initrd(&mem, &kernel, &mut Cursor::new(data.clone())).unwrap();
        assert_eq!(placed.size, 10_000);
        assert_eq!(placed.addr, 128 * MIB - 3 * PAGE_SIZE);
        assert_eq!(placed.addr % PAGE_SIZE, 0);
        let mut back = vec![0u8; data.len()];
        mem.read_slice(&mut back, GuestAddress(placed.addr))
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn respects_initrd_addr_max() {
        // ELF default: the initrd must end by 0x37ffffff.
        let mem = guest_memory(2048 * MIB);
        let placed = place_initrd(&mem, &elf_kernel(16 * MIB, 20 * MIB), 4096).unwrap();
        assert_eq!(placed.addr, 0x3800_0000 - 4096);
        // A bzImage's own limit.
        let placed = place_initrd(&mem, &bz_kernel(0x0fff_ffff), 100).unwrap();
        assert_eq!(placed.addr, 0x1000_0000 - 4096);
    }

    #[test]
    fn stays_below_the_mmio_gap() {
        let mem = guest_memory(5 * 1024 * MIB);
        let placed = place_initrd(&mem, &bz_kernel(u32::MAX), 4096).unwrap();
        assert_eq!(placed.addr, MMIO_GAP_START - 4096);
    }

    #[test]
    fn fills_the_room_above_the_kernel_exactly() {
        let mem = guest_memory(32 * MIB);
        let kernel = elf_kernel(16 * MIB, 20 * MIB + 1);
        let room = 32 * MIB - (20 * MIB + PAGE_SIZE);
        let placed = place_initrd(&mem, &kernel, room).unwrap();
        assert_eq!(placed.addr, 20 * MIB + PAGE_SIZE);
        let err = place_initrd(&mem, &kernel, room + 1).unwrap_err();
        assert!(
            matches!(err, BootError::InitrdOverlapsKernel { size, kernel_end, limit }
                if size == room + 1 && kernel_end == 20 * MIB + 1 && limit == 32 * MIB),
            "{err}"
        );
    }

    #[test]
    fn too_large_for_memory() {
        let mem = guest_memory(32 * MIB);
        let kernel = elf_kernel(16 * MIB, 20 * MIB);
        let err = place_initrd(&mem, &kernel, 64 * MIB).unwrap_err();
        assert!(
            matches!(err, BootError::InitrdTooLarge { size, max, limit }
                if size == 64 * MIB && max == 12 * MIB && limit == 32 * MIB),
            "{err}"
        );
        let err = place_initrd(&mem, &kernel, u64::MAX).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooLarge { .. }), "{err}");
    }

    #[test]
    fn kernel_above_the_limit_leaves_no_room() {
        let mem = guest_memory(64 * MIB);
        let err = place_initrd(&mem, &bz_kernel(0x10_0fff), PAGE_SIZE).unwrap_err();
        // 4 KiB would fit between 1 MiB and the limit, but the kernel is there.
        assert!(
            matches!(err, BootError::InitrdOverlapsKernel { .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_initrd_is_refused() {
        let mem = guest_memory(32 * MIB);
        let err = load_initrd(
            &mem,
            &elf_kernel(16 * MIB, 20 * MIB),
            &mut Cursor::new(Vec::new()),
        )
        .unwrap_err();
        assert!(matches!(err, BootError::InitrdEmpty), "{err}");
    }
}
