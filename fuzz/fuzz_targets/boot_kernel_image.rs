//! The kernel loader over arbitrary images: format detection, ELF and
//! bzImage parsing, PVH notes, segment placement, then the command line and
//! the zero page. Any input must load or fail with a `BootError`, never
//! panic or write outside guest memory, and what loads must be where the
//! boot protocol says:
//!
//! - the kernel lies in guest RAM, at or above 1 MiB (`HIMEM_START`), and
//!   is not empty; a bzImage is entered 0x200 bytes into its 64-bit code,
//!   a PVH kernel at its note's entry;
//! - the command line is in guest memory at `CMDLINE_START`,
//!   NUL-terminated, and the zero page (or PVH start info) is at
//!   `ZERO_PAGE_START`.

#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use kindling_boot::{CmdlinePlacement, KernelFormat, LoadedKernel, STARTUP_64_OFFSET};
use kindling_memory::layout::{CMDLINE_START, HIMEM_START, ZERO_PAGE_START};
use kindling_memory::{create_guest_memory, Backing, GuestMemoryMmap, GuestRam, MemoryConfig};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const RAM: u64 = 64 << 20;

fn check_kernel(mem: &GuestMemoryMmap, k: &LoadedKernel) {
    assert!(k.start >= HIMEM_START, "{k:?}");
    assert!(k.start < k.end && k.end <= RAM, "{k:?}");
    assert!(mem.check_range(GuestAddress(k.start), (k.end - k.start) as usize));
    if k.format == KernelFormat::BzImage {
        assert_eq!(k.entry, k.start + STARTUP_64_OFFSET, "{k:?}");
        assert!(k.setup_header.is_some());
    }
}

fn check_cmdline(mem: &GuestMemoryMmap, placed: &CmdlinePlacement, cmdline: &str) {
    assert_eq!((placed.addr, placed.len), (CMDLINE_START, cmdline.len() + 1));
    let mut back = vec![0xffu8; placed.len];
    mem.read_slice(&mut back, GuestAddress(placed.addr)).unwrap();
    assert_eq!(&back[..cmdline.len()], cmdline.as_bytes());
    assert_eq!(back[cmdline.len()], 0);
}

fn memory() -> &'static GuestRam {
    static MEMORY: OnceLock<GuestRam> = OnceLock::new();
    MEMORY.get_or_init(|| {
        create_guest_memory(&MemoryConfig {
            size_mib: 64,
            backing: Backing::Anonymous,
        })
        .expect("64 MiB of guest memory")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the vCPU count and the command line length, the
    // rest is the image.
    let Some((&selector, image)) = data.split_first() else {
        return;
    };
    let mem = &memory().memory;
    let cmdline = "x".repeat(usize::from(selector) * 16);
    let mut kernel = Cursor::new(image);
    if let Ok(boot) = kindling_boot::load_linux(mem, &mut kernel, None, &cmdline, selector.max(1)) {
        check_kernel(mem, &boot.kernel);
        assert_eq!(boot.entry, boot.kernel.entry);
        assert_eq!(boot.zero_page, ZERO_PAGE_START);
        check_cmdline(mem, &boot.cmdline, &cmdline);
        assert!(boot.initrd.is_none());
    }
    let mut kernel = Cursor::new(image);
    if let Ok(boot) = kindling_boot::load_linux_pvh(mem, &mut kernel, None, &cmdline, 1) {
        check_kernel(mem, &boot.kernel);
        assert_eq!(boot.kernel.format, KernelFormat::Elf);
        assert_eq!(Some(boot.entry), boot.kernel.pvh_entry);
        assert_eq!(boot.start_info, ZERO_PAGE_START);
        check_cmdline(mem, &boot.cmdline, &cmdline);
    }
});
