//! The kernel command line: any text extended with `virtio_mmio.device=`
//! parameters (`cmdline_with_mmio_devices`, through linux-loader's
//! `Cmdline`) and then written to guest memory (`load_cmdline_with_layout`)
//! for a kernel limit and a layout taken from the input. Invariants:
//!
//! - an extended command line is the input's kernel arguments (without
//!   surrounding blanks), then one parameter per device in order, then the
//!   input's init arguments after ` -- `; with its NUL it fits the
//!   capacity; with no devices it is the input unchanged;
//! - a refusal is the typed error for the reason: the input is already
//!   too long, a device does not fit, or linux-loader cannot take it;
//! - a loaded command line is in guest memory at the layout's address,
//!   NUL-terminated, no longer than the kernel's and the layout's limits;
//!   refused only for an interior NUL (at the right position), too long
//!   (with the right lengths), an invalid layout, or memory that does not
//!   hold it.

#![no_main]

use kindling_boot::{load_cmdline_with_layout, BootError, BootLayout, KernelFormat, LoadedKernel};
use std::sync::OnceLock;

use kindling_fuzz::Input;
use kindling_virtio::{cmdline_with_mmio_devices, CmdlineError, GuestMemoryMmap};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// 1 MiB of guest memory: room for the default layout's command line.
fn memory() -> &'static GuestMemoryMmap {
    static MEMORY: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEMORY.get_or_init(|| GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap())
}

const SEPARATOR: &str = " -- ";

/// linux-loader's split: the first ` -- ` with an even number of double
/// quotes before it separates the kernel's arguments from init's.
fn split(cmdline: &str) -> (&str, &str) {
    cmdline
        .match_indices(SEPARATOR)
        .find(|&(i, _)| cmdline[..i].matches('"').count() % 2 == 0)
        .map_or((cmdline, ""), |(i, _)| {
            (&cmdline[..i], &cmdline[i + SEPARATOR.len()..])
        })
}

fn expected(cmdline: &str, devices: &[(u64, u32)]) -> String {
    let (boot, init) = split(cmdline);
    let mut parts: Vec<String> = Vec::new();
    if !boot.trim().is_empty() {
        parts.push(boot.trim().to_string());
    }
    for (base, irq) in devices {
        parts.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
    }
    let mut text = parts.join(" ");
    if !init.trim().is_empty() {
        text.push_str(SEPARATOR);
        text.push_str(init.trim());
    }
    text
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let capacity = usize::from(input.u16() % 4096);
    let count = usize::from(input.u8() % 4);
    let devices: Vec<(u64, u32)> = (0..count)
        .map(|_| (input.u64() & 0xffff_ffff_ffff_f000, u32::from(input.u8())))
        .collect();
    let kernel_max = usize::from(input.u16() % 4096);
    let layout = match input.u8() % 4 {
        0 => BootLayout {
            cmdline_start: u64::from(input.u16()),
            cmdline_max_size: usize::from(input.u16()),
            ..BootLayout::default()
        },
        1 => BootLayout {
            // Clear of the zero page at 0x7000.
            cmdline_start: 0x8000,
            cmdline_max_size: 0x8000,
            ..BootLayout::default()
        },
        _ => BootLayout::default(),
    };
    let text = String::from_utf8_lossy(input.0).into_owned();

    let built = cmdline_with_mmio_devices(&text, capacity, &devices);
    match &built {
        Ok(line) if devices.is_empty() => assert_eq!(line, &text),
        Ok(line) => {
            assert_eq!(line, &expected(&text, &devices));
            assert!(line.len() < capacity, "{} bytes and a NUL", line.len());
        }
        Err(CmdlineError::TooLong { len, capacity: c }) => {
            assert_eq!((*len, *c), (text.len() + 1, capacity));
            assert!(*len > capacity);
        }
        Err(CmdlineError::Device { base, irq, .. }) => {
            // The first device that does not fit is the one named.
            let at = (0..devices.len())
                .find(|&i| expected(&text, &devices[..=i]).len() >= capacity)
                .expect("every device fits");
            assert_eq!(devices[at], (*base, *irq));
        }
        Err(CmdlineError::Invalid { .. }) => assert!(text.contains('\0') || capacity == 0),
    }

    // The boot loader writes what the VMM built (or the input as it is).
    let line = built.unwrap_or(text);
    let mem = memory();
    let kernel = LoadedKernel {
        format: KernelFormat::Elf,
        entry: 0x10_0000,
        start: 0x10_0000,
        end: 0x20_0000,
        setup_header: None,
        cmdline_max_size: kernel_max,
        pvh_entry: None,
    };
    let max = kernel_max.min(layout.cmdline_max_size);
    match load_cmdline_with_layout(&mem, &kernel, &line, &layout) {
        Ok(p) => {
            assert_eq!((p.addr, p.len), (layout.cmdline_start, line.len() + 1));
            assert!(p.len <= max);
            let mut back = vec![0xffu8; p.len];
            mem.read_slice(&mut back, GuestAddress(p.addr)).unwrap();
            assert_eq!(&back[..line.len()], line.as_bytes());
            assert_eq!(back[line.len()], 0);
        }
        Err(BootError::Layout(_)) => assert!(layout.validate().is_err()),
        Err(BootError::CmdlineContainsNul { position }) => {
            assert_eq!(line.bytes().position(|b| b == 0), Some(position));
        }
        Err(BootError::CmdlineTooLong { len, max: m }) => {
            assert_eq!((len, m), (line.len() + 1, max));
            assert!(len > m);
            assert!(!line.contains('\0'));
        }
        Err(BootError::GuestMemory { addr, len, .. }) => {
            assert_eq!((addr, len), (layout.cmdline_start, line.len() as u64 + 1));
            assert!(!mem.check_range(GuestAddress(addr), len as usize));
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
});
