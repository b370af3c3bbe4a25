//! The kernel loader over arbitrary images: format detection, ELF and
//! bzImage parsing, PVH notes, segment placement, then the command line and
//! the zero page. Any input must load or fail with a `BootError`, never
//! panic or write outside guest memory.

#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use kindling_memory::{create_guest_memory, Backing, GuestRam, MemoryConfig};
use libfuzzer_sys::fuzz_target;

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
    let _ = kindling_boot::load_linux(mem, &mut kernel, None, &cmdline, selector.max(1));
    let mut kernel = Cursor::new(image);
    let _ = kindling_boot::load_linux_pvh(mem, &mut kernel, None, &cmdline, 1);
});
