//! Kernel loading: format detection and the description of a loaded kernel.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};

use kindling_memory::GuestMemoryMmap;
use linux_loader::bootparam::setup_header;
use vm_memory::{GuestAddress, GuestMemoryBackend, ReadVolatile};

use crate::x86_64::image::Image;
use crate::x86_64::{bzimage, elf, BootError, BootLayout, ReadSeek};

/// Where Linux lets an initrd end (inclusive) when the kernel does not say:
/// the default `initrd_addr_max` of the boot protocol.
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// How many bytes of an image are read to detect its format: everything up
/// to the end of the bzImage setup header.
const HEADER_PROBE_LEN: u64 = bzimage::SETUP_HEADER_END;

/// What the format-specific loaders read from: a [`ReadSeek`] wrapped in
/// an [`Image`](crate::x86_64::image::Image).
pub(crate) trait Source: Read + ReadVolatile + Seek {}

impl<T: Read + ReadVolatile + Seek> Source for T {}

/// The kind of kernel image that was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF64 `vmlinux`, entered at its ELF entry point.
    Elf,
    /// A compressed `bzImage`, entered at the 64-bit entry of the Linux boot
    /// protocol (load address + 0x200).
    BzImage,
}

impl fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelFormat::Elf => "ELF vmlinux",
            KernelFormat::BzImage => "bzImage",
        })
    }
}

/// A kernel loaded into guest memory, and what the next boot steps need to
/// know about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadedKernel {
    /// The image format.
    pub format: KernelFormat,
    /// Guest-physical address of the 64-bit entry point.
    pub entry: u64,
    /// Lowest guest-physical address the kernel occupies.
    pub start: u64,
    /// End (exclusive) of the memory the kernel needs. For a bzImage this
    /// includes the room its decompressor uses (`init_size` from the
    /// preferred load address), not only the compressed payload.
    pub end: u64,
    /// The bzImage setup header, with `code32_start` set to the load
    /// address; `None` for ELF kernels.
    pub setup_header: Option<setup_header>,
    /// Largest command line the kernel accepts, including the NUL.
    pub cmdline_max_size: usize,
    /// The 32-bit PVH entry point, when the ELF kernel carries a
    /// `XEN_ELFNOTE_PHYS32_ENTRY` note.
    pub pvh_entry: Option<u64>,
}

impl LoadedKernel {
    /// Highest address (inclusive) the initrd may occupy: the setup
    /// header's `initrd_addr_max` for a bzImage, else
    /// [`DEFAULT_INITRD_ADDR_MAX`].
    pub fn initrd_addr_max(&self) -> u64 {
        match self.setup_header {
            Some(hdr) => u64::from(hdr.initrd_addr_max),
            None => DEFAULT_INITRD_ADDR_MAX,
        }
    }
}

/// Loads an ELF64 `vmlinux` or a `bzImage` into guest memory.
///
/// The format is detected from the image's header. The image is checked
/// before anything is written: it must be a little-endian x86_64 ELF64 file
/// or a bzImage of boot protocol 2.06 or newer with a 64-bit entry point,
/// complete, loaded at or above
/// [`HIMEM_START`](kindling_memory::layout::HIMEM_START) (the default
/// [`BootLayout`]) and entirely in
/// guest RAM. linux-loader then copies it. The BSS of ELF segments is
/// zeroed, so that a kernel can be reloaded into used memory.
///
/// # Example
///
/// ```
/// # use std::io::Cursor;
/// # use kindling_boot::{load_kernel, BootError};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 16, backing: Default::default() }).unwrap();
/// let err = load_kernel(&ram.memory, &mut Cursor::new(vec![0u8; 4096])).unwrap_err();
/// assert!(matches!(err, BootError::BadMagic { .. }));
/// ```
pub fn load_kernel<F: ReadSeek + ?Sized>(
    mem: &GuestMemoryMmap,
    image: &mut F,
) -> Result<LoadedKernel, BootError> {
    load_kernel_with_layout(mem, image, &BootLayout::default())
}

/// Like [`load_kernel`], with the kernel at or above
/// `layout.himem_start`; a bzImage's command line gets at most
/// `layout.cmdline_max_size` bytes.
pub fn load_kernel_with_layout<F: ReadSeek + ?Sized>(
    mem: &GuestMemoryMmap,
    image: &mut F,
    layout: &BootLayout,
) -> Result<LoadedKernel, BootError> {
    layout.validate()?;
    let mut image = Image::new(image);
    let len = image
        .seek(SeekFrom::End(0))
        .map_err(BootError::io("kernel image"))?;
    image.rewind().map_err(BootError::io("kernel image"))?;
    let mut header = Vec::with_capacity(HEADER_PROBE_LEN as usize);
    Read::by_ref(&mut image)
        .take(HEADER_PROBE_LEN)
        .read_to_end(&mut header)
        .map_err(BootError::io("kernel image"))?;

    if header.starts_with(elf::ELF_MAGIC) {
        elf::load(mem, &mut image, &header, len, layout)
    } else if bzimage::has_magic(&header) {
        bzimage::load(mem, &mut image, &header, len, layout)
    } else {
        Err(BootError::BadMagic {
            found: header.iter().take(4).copied().collect(),
        })
    }
}

/// Checks that `[start, end)` is guest RAM, for the `DoesNotFit` error.
pub(crate) fn check_fits(mem: &GuestMemoryMmap, start: u64, end: u64) -> Result<(), BootError> {
    let fits = end >= start
        && usize::try_from(end - start)
            .is_ok_and(|len| len == 0 || mem.check_range(GuestAddress(start), len));
    if fits {
        Ok(())
    } else {
        Err(BootError::DoesNotFit {
            start,
            end,
            ram_end: ram_end(mem),
        })
    }
}

/// End (exclusive) of the highest guest RAM region.
pub(crate) fn ram_end(mem: &GuestMemoryMmap) -> u64 {
    if mem.num_regions() == 0 {
        0
    } else {
        mem.last_addr().0.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::x86_64::test_images::{guest_memory, BzImageBuilder, ElfBuilder};

    #[test]
    fn empty_image_is_bad_magic() {
        let mem = guest_memory(16 << 20);
        let err = load_kernel(&mem, &mut Cursor::new(Vec::new())).unwrap_err();
        match err {
            BootError::BadMagic { found } => assert!(found.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn random_bytes_are_bad_magic() {
        let mem = guest_memory(16 << 20);
        let image: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        let err = load_kernel(&mem, &mut Cursor::new(image)).unwrap_err();
        assert!(matches!(err, BootError::BadMagic { found } if found == [3, 10, 17, 24]));
        assert!(load_kernel(&mem, &mut Cursor::new(b"MZ".to_vec())).is_err());
    }

    /// A reader whose every operation fails.
    struct Broken;

    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }

    impl Seek for Broken {
        fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
            Err(std::io::Error::other("disk on fire"))
        }
    }

    impl ReadSeek for Broken {}

    #[test]
    fn io_errors_are_reported() {
        let mem = guest_memory(16 << 20);
        let err = load_kernel(&mem, &mut Broken).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Io {
                    what: "kernel image",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("disk on fire"));
    }

    #[test]
    fn mutated_images_never_panic() {
        let mem = guest_memory(32 << 20);
        let elf = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 64], 0x1000)
            .segment(0x110_0000, &[2; 16], 0x20)
            .pvh_note(0x100_0000)
            .build();
        let bz = BzImageBuilder::new().build();
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut loaded = 0;
        for base in [elf, bz] {
            for _ in 0..3000 {
                let mut image = base.clone();
                for _ in 0..next() % 4 + 1 {
                    let r = next();
                    let at = (r as usize) % image.len().min(0x270);
                    image[at] = (r >> 32) as u8;
                }
                if next() % 8 == 0 {
                    let keep = next() as usize % image.len();
                    image.truncate(keep);
                }
                if load_kernel(&mem, &mut Cursor::new(image)).is_ok() {
                    loaded += 1;
                }
            }
        }
        // Some mutations hit bytes that do not matter.
        assert!(loaded > 0);
    }

    #[test]
    fn format_is_displayed() {
        assert_eq!(KernelFormat::Elf.to_string(), "ELF vmlinux");
        assert_eq!(KernelFormat::BzImage.to_string(), "bzImage");
    }

    #[test]
    fn elf_initrd_limit_is_the_protocol_default() {
        let mem = guest_memory(32 << 20);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[0x90; 16], 16)
            .build();
        let kernel = load_kernel(&mem, &mut Cursor::new(image)).unwrap();
        assert_eq!(kernel.initrd_addr_max(), DEFAULT_INITRD_ADDR_MAX);
    }
}
