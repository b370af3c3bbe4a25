//! Initrd placement and loading (`place_initrd_with_layout`,
//! `load_initrd_with_layout`) for any RAM size (with the MMIO gap below
//! 4 GiB, as the VMM lays RAM out), kernel extent, kernel `initrd_addr_max`,
//! lowest kernel address and initrd size. Invariants:
//!
//! - an accepted placement is page aligned, above the kernel and the
//!   layout's lowest kernel address, inside guest RAM, below the MMIO gap
//!   and ends at or below the kernel's `initrd_addr_max`, and it is the
//!   highest such address;
//! - a refused one is refused because no page-aligned placement satisfies
//!   all of that (or the initrd is empty, or the layout invalid), with the
//!   matching error;
//! - a loaded initrd is where `place_initrd` says and its bytes are in
//!   guest memory.

#![no_main]

use std::io::Cursor;

use kindling_boot::{
    linux_loader::bootparam::setup_header, load_initrd_with_layout, place_initrd_with_layout,
    BootError, BootLayout, KernelFormat, LoadedKernel,
};
use kindling_fuzz::Input;
use kindling_memory::layout::{MMIO_GAP_END, MMIO_GAP_START, PAGE_SIZE};
use kindling_memory::GuestMemoryMmap;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const GIB: u64 = 1 << 30;

/// RAM of `size` bytes laid out as the VMM does: up to the MMIO gap, the
/// rest above 4 GiB.
fn ram(size: u64) -> GuestMemoryMmap {
    let low = size.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(MMIO_GAP_END), (size - low) as usize));
    }
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

fn ram_end(size: u64) -> u64 {
    if size > MMIO_GAP_START {
        MMIO_GAP_END + size - MMIO_GAP_START
    } else {
        size
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    // Up to 6 GiB of RAM, page-granular, sometimes with a partial page.
    let mut size = (u64::from(input.u32()) * PAGE_SIZE) % (6 * GIB) + PAGE_SIZE;
    if flags & 1 != 0 {
        size += u64::from(input.u16() % 4096);
    }
    let end = match flags >> 6 {
        0 => u64::from(input.u32()),
        1 => u64::from(input.u16()) << 12,
        2 => u64::from(input.u32()) << 2,
        _ => input.u64(),
    };
    let setup = (flags & 2 != 0).then(|| setup_header {
        initrd_addr_max: input.u32(),
        ..Default::default()
    });
    let kernel = LoadedKernel {
        format: if setup.is_some() {
            KernelFormat::BzImage
        } else {
            KernelFormat::Elf
        },
        entry: end.saturating_sub(1),
        start: end.saturating_sub(1),
        end,
        setup_header: setup,
        cmdline_max_size: 2048,
        pvh_entry: None,
    };
    let mut layout = BootLayout::default();
    if flags & 4 != 0 {
        layout.himem_start = u64::from(input.u32());
    }
    let initrd_size = match (flags >> 3) & 3 {
        0 => u64::from(input.u16()),
        1 => u64::from(input.u32()),
        2 => input.u64(),
        _ => u64::from(input.u8()),
    };

    let mem = ram(size);
    assert_eq!(mem.last_addr().0 + 1, ram_end(size));
    let limit = kernel
        .initrd_addr_max()
        .saturating_add(1)
        .min(ram_end(size))
        .min(MMIO_GAP_START);
    let lowest = kernel.end.max(layout.himem_start);
    match place_initrd_with_layout(&mem, &kernel, initrd_size, &layout) {
        Ok(p) => {
            assert_eq!(p.size, initrd_size);
            assert!(layout.validate().is_ok());
            assert_eq!(p.addr % PAGE_SIZE, 0, "{p:?}");
            assert!(p.addr >= lowest, "{p:?} below the kernel");
            let p_end = p.addr.checked_add(p.size).expect("placement wraps");
            assert!(p_end <= MMIO_GAP_START, "{p:?} reaches the MMIO gap");
            assert!(p_end - 1 <= kernel.initrd_addr_max(), "{p:?} too high");
            assert!(mem.check_range(GuestAddress(p.addr), p.size as usize));
            // The highest such address: one page up does not fit.
            assert!(p_end + PAGE_SIZE > limit, "{p:?} is not the highest");
        }
        Err(BootError::InitrdEmpty) => assert_eq!(initrd_size, 0),
        Err(BootError::Layout(_)) => assert!(layout.validate().is_err()),
        Err(e @ (BootError::InitrdTooLarge { .. } | BootError::InitrdOverlapsKernel { .. })) => {
            // The highest page-aligned start that ends by the limit is below
            // the kernel, or there is none.
            if let Some(room) = limit.checked_sub(initrd_size) {
                let top = room & !(PAGE_SIZE - 1);
                assert!(top < lowest, "{e}: {top:#x} would fit");
            }
            assert!(layout.validate().is_ok());
            assert_ne!(initrd_size, 0);
        }
        Err(e) => panic!("unexpected error: {e}"),
    }

    // Loading: the rest of the input is the initrd.
    let bytes = input.0;
    let placed = place_initrd_with_layout(&mem, &kernel, bytes.len() as u64, &layout);
    match load_initrd_with_layout(&mem, &kernel, &mut Cursor::new(bytes), &layout) {
        Ok(p) => {
            assert_eq!(Some(p), placed.ok());
            let mut back = vec![0u8; bytes.len()];
            mem.read_slice(&mut back, GuestAddress(p.addr)).unwrap();
            assert_eq!(back, bytes);
        }
        Err(e) => assert!(placed.is_err(), "load failed where placement works: {e}"),
    }
});
