//! Boot loading for Kindling microVMs.
//!
//! This crate puts a Linux guest into guest memory and writes the tables it
//! reads at boot, in the order a VMM needs them:
//!
//! 1. [`load_kernel`] detects and loads the kernel with linux-loader: an
//!    ELF64 `vmlinux` (entered at its ELF entry point, or at its PVH entry
//!    when it has the PVH note) or a `bzImage` (entered at the 64-bit entry
//!    of the boot protocol). Hostile images are refused with a typed
//!    [`BootError`] before anything is written.
//! 2. [`load_initrd`] puts the initrd as high as the kernel allows, above
//!    the kernel and below the MMIO gap.
//! 3. [`load_cmdline`] writes the command line within the kernel's limit.
//! 4. [`configure_zero_page`] writes `struct boot_params` with the E820 map
//!    ([`e820_map`]) that matches `kindling_memory`'s layout, or
//!    [`configure_pvh`] writes the PVH `hvm_start_info` instead.
//! 5. [`setup_mptable`] writes the Intel MP table for the vCPU count.
//!
//! [`load_linux`] does all of it in one call and returns the [`BootInfo`]
//! the boot vCPU is set up from ([`load_linux_pvh`] for the PVH entry).
//! Images are anything [`ReadSeek`]: a [`std::fs::File`] is read straight
//! into guest memory. Addresses come from a [`BootLayout`], whose default
//! is `kindling_memory::layout`: each step has a `*_with_layout` variant
//! ([`load_linux_with_layout`], [`load_cmdline_with_layout`], ...) that
//! takes another, checked for overlapping areas and areas outside RAM
//! before anything is written. This crate knows nothing about devices.
//!
//! # Example
//!
//! ```
//! use std::io::Cursor;
//!
//! use kindling_boot::{load_linux, KernelFormat};
//! use kindling_memory::{create_guest_memory, Backing, MemoryConfig};
//!
//! /// A minimal ELF64 x86_64 kernel: one segment of two `hlt`s at 16 MiB.
//! fn tiny_elf() -> Vec<u8> {
//!     let mut elf = vec![0u8; 64 + 56];
//!     elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01"); // ELF64, little-endian
//!     elf[18] = 62; // EM_X86_64
//!     elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
//!     elf[32] = 64; // e_phoff
//!     elf[54] = 56; // e_phentsize
//!     elf[56] = 1; // e_phnum
//!     let phdr = &mut elf[64..];
//!     phdr[0] = 1; // PT_LOAD
//!     phdr[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
//!     phdr[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // p_paddr
//!     phdr[32] = 2; // p_filesz
//!     phdr[40] = 2; // p_memsz
//!     elf.extend_from_slice(&[0xf4, 0xf4]);
//!     elf
//! }
//!
//! let ram = create_guest_memory(&MemoryConfig { size_mib: 128, backing: Backing::Anonymous })
//!     .unwrap();
//! let mut kernel = Cursor::new(tiny_elf());
//! let mut initrd = Cursor::new(vec![0u8; 64 * 1024]);
//! let boot = load_linux(&ram.memory, &mut kernel, Some(&mut initrd), "console=ttyS0 panic=1", 2)
//!     .unwrap();
//!
//! assert_eq!(boot.kernel.format, KernelFormat::Elf);
//! // The boot vCPU starts at `entry` with `rsi` pointing at the zero page.
//! assert_eq!((boot.entry, boot.zero_page), (0x100_0000, 0x7000));
//! assert_eq!(boot.initrd.unwrap().addr, (128 << 20) - 64 * 1024);
//! ```

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

/// The rust-vmm `linux-loader` crate the loaders are built on (its errors
/// are the sources of `BootError`'s loader variants; its `Cmdline` builds
/// command lines), re-exported so that users need not pin a matching
/// version.
pub use linux_loader;
/// The rust-vmm `vm-memory` crate (guest memory in this crate's API),
/// re-exported so that users need not pin a matching version.
pub use vm_memory;
