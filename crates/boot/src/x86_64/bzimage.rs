//! bzImage kernels: setup header checks, then loading with linux-loader.
//!
//! Offsets and flags are those of the Linux x86 boot protocol
//! (`Documentation/arch/x86/boot.rst`).

use kindling_memory::GuestMemoryMmap;
use linux_loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{ByteValued, GuestAddress};

use crate::x86_64::kernel::{check_fits, KernelFormat, LoadedKernel, Source};
use crate::x86_64::{BootError, BootLayout};

/// File offset of the setup header.
const SETUP_HEADER_START: u64 = 0x1f1;
/// File offset just past the setup header as linux-loader knows it (boot
/// protocol 2.15).
pub(crate) const SETUP_HEADER_END: u64 =
    SETUP_HEADER_START + std::mem::size_of::<setup_header>() as u64;
/// File offset of the "HdrS" magic.
const MAGIC_OFFSET: usize = 0x202;
/// The "HdrS" magic, as bytes.
const MAGIC: &[u8] = b"HdrS";
/// The `boot_flag` every boot sector ends with.
const BOOT_FLAG: u16 = 0xaa55;
/// Oldest boot protocol accepted: 2.06 added `cmdline_size`.
pub const MIN_BOOT_PROTOCOL: u16 = 0x0206;
/// Boot protocol 2.10 added `pref_address` and `init_size`.
const PROTOCOL_INIT_SIZE: u16 = 0x020a;
/// `loadflags`: the protected-mode kernel is loaded at 0x100000.
const LOADED_HIGH: u8 = 0x01;
/// `xloadflags`: the kernel has the 64-bit entry at offset 0x200.
const XLF_KERNEL_64: u16 = 0x01;
/// Offset of the 64-bit entry point from the load address.
pub const STARTUP_64_OFFSET: u64 = 0x200;
/// Sector size of the real-mode setup code.
const SECTOR_SIZE: u64 = 512;

/// Whether `header` (the start of an image) carries the bzImage magic.
pub(crate) fn has_magic(header: &[u8]) -> bool {
    header.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()) == Some(MAGIC)
}

fn invalid(reason: impl Into<String>) -> BootError {
    BootError::InvalidBzImage {
        reason: reason.into(),
    }
}

/// Checks the setup header and returns it.
fn parse_header(header: &[u8], len: u64) -> Result<setup_header, BootError> {
    let bytes = header
        .get(SETUP_HEADER_START as usize..SETUP_HEADER_END as usize)
        .ok_or_else(|| BootError::Truncated {
            what: "bzImage setup header".into(),
            needed: SETUP_HEADER_END,
            actual: len,
        })?;
    let mut hdr = setup_header::default();
    hdr.as_mut_slice().copy_from_slice(bytes);
    // The header ends at 0x202 plus the jump offset at 0x201; what follows
    // in an older kernel is setup code, not header fields.
    let header_end = MAGIC_OFFSET + usize::from(header[MAGIC_OFFSET - 1]);
    if let Some(tail) = header_end.checked_sub(SETUP_HEADER_START as usize) {
        if let Some(code) = hdr.as_mut_slice().get_mut(tail..) {
            code.fill(0);
        }
    }

    let boot_flag = hdr.boot_flag;
    if boot_flag != BOOT_FLAG {
        return Err(invalid(format!(
            "boot_flag is {boot_flag:#06x}, expected {BOOT_FLAG:#06x}"
        )));
    }
    let version = hdr.version;
    if version < MIN_BOOT_PROTOCOL {
        return Err(BootError::ProtocolTooOld {
            version,
            required: MIN_BOOT_PROTOCOL,
        });
    }
    let xloadflags = hdr.xloadflags;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::No64BitEntry { xloadflags });
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(invalid(
            "LOADED_HIGH is clear: the kernel wants to be loaded at 0x10000",
        ));
    }
    Ok(hdr)
}

/// Size of the real-mode part (boot sector and setup sectors) that precedes
/// the protected-mode kernel in the file.
fn setup_size(hdr: &setup_header) -> u64 {
    let sects = match hdr.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    (sects + 1) * SECTOR_SIZE
}

/// End (exclusive) of the memory the kernel's decompressor uses when the
/// payload is loaded at `load`, as `arch/x86/boot/compressed/head_64.S`
/// computes it: it decompresses to the load address rounded up to
/// `kernel_alignment` (or to `pref_address` when that is higher, and always
/// for a non-relocatable kernel) and needs `init_size` bytes there.
fn decompression_end(hdr: &setup_header, load: u64) -> Option<u64> {
    if hdr.version < PROTOCOL_INIT_SIZE {
        return Some(load);
    }
    let pref = hdr.pref_address;
    let base = if hdr.relocatable_kernel != 0 {
        let align = u64::from(hdr.kernel_alignment);
        let aligned = if align.is_power_of_two() {
            load.checked_next_multiple_of(align)?
        } else {
            load
        };
        aligned.max(pref)
    } else {
        pref
    };
    base.checked_add(u64::from(hdr.init_size))
}

/// Validates and loads a bzImage whose first bytes are `header` and whose
/// length is `len`.
pub(crate) fn load<F: Source>(
    mem: &GuestMemoryMmap,
    image: &mut F,
    header: &[u8],
    len: u64,
    layout: &BootLayout,
) -> Result<LoadedKernel, BootError> {
    let hdr = parse_header(header, len)?;
    let setup = setup_size(&hdr);
    if len <= setup {
        return Err(BootError::Truncated {
            what: "bzImage protected-mode kernel".into(),
            needed: setup + 1,
            actual: len,
        });
    }
    let start = u64::from(hdr.code32_start);
    if start < layout.himem_start {
        return Err(BootError::KernelBelowHimem {
            addr: start,
            himem: layout.himem_start,
        });
    }
    let payload_end = start.saturating_add(len - setup);
    let end = decompression_end(&hdr, start).map_or(u64::MAX, |e| e.max(payload_end));
    check_fits(mem, start, end)?;

    let result = BzImage::load(mem, None, image, Some(GuestAddress(layout.himem_start))).map_err(
        |source| BootError::Loader {
            format: KernelFormat::BzImage,
            source,
        },
    )?;
    // linux-loader's copy of the header has the setup code past the
    // header's end; keep ours, with the load address it used.
    let mut setup_header = hdr;
    setup_header.code32_start = result.kernel_load.0 as u32;

    let cmdline_room = layout.cmdline_max_size;
    let cmdline_max_size = usize::try_from(hdr.cmdline_size).map_or(cmdline_room, |size| {
        size.saturating_add(1).min(cmdline_room)
    });

    Ok(LoadedKernel {
        format: KernelFormat::BzImage,
        entry: start + STARTUP_64_OFFSET,
        start,
        end,
        setup_header: Some(setup_header),
        cmdline_max_size,
        pvh_entry: None,
    })
}

#[cfg(test)]
mod tests {

    use kindling_memory::layout::{CMDLINE_START, EBDA_START, HIMEM_START};
    use vm_memory::Bytes;

    use super::*;
    use crate::x86_64::test_images::{guest_memory, load_bytes, BzImageBuilder};

    const MIB: u64 = 1 << 20;

    #[test]
    fn loads_the_payload_at_code32_start() {
        let mem = guest_memory(64 * MIB);
        let image = BzImageBuilder::new().payload(b"compressed-kernel").build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.format, KernelFormat::BzImage);
        assert_eq!(kernel.start, HIMEM_START);
        assert_eq!(kernel.entry, HIMEM_START + 0x200);
        assert_eq!(kernel.cmdline_max_size, 2048);
        let hdr = kernel.setup_header.unwrap();
        assert_eq!({ hdr.code32_start }, HIMEM_START as u32);
        assert_eq!({ hdr.version }, 0x020f);
        assert_eq!(kernel.initrd_addr_max(), 0x7fff_ffff);
        assert_eq!(kernel.pvh_entry, None);
        let mut payload = [0u8; 17];
        mem.read_slice(&mut payload, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(&payload, b"compressed-kernel");
    }

    #[test]
    fn end_covers_the_decompression_area() {
        let mem = guest_memory(64 * MIB);
        // Relocatable, 16 MiB alignment, 1 MiB load: decompresses at 16 MiB.
        let image = BzImageBuilder::new().init_size(0x80_0000).build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.end, 0x100_0000 + 0x80_0000);

        // Not relocatable: decompresses at pref_address.
        let image = BzImageBuilder::new()
            .relocatable(false)
            .pref_address(0x200_0000)
            .init_size(0x10_0000)
            .build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.end, 0x210_0000);
    }

    #[test]
    fn decompression_area_beyond_ram_does_not_fit() {
        let mem = guest_memory(32 * MIB);
        let image = BzImageBuilder::new().init_size(0x200_0000).build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::DoesNotFit {
                    start: HIMEM_START,
                    end: 0x300_0000,
                    ..
                }
            ),
            "{err}"
        );
        let image = BzImageBuilder::new()
            .pref_address(u64::MAX - 8)
            .init_size(0x100)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::DoesNotFit { end: u64::MAX, .. }),
            "{err}"
        );
    }

    #[test]
    fn payload_beyond_ram_does_not_fit() {
        let mem = guest_memory(2 * MIB);
        let image = BzImageBuilder::new()
            .init_size(0)
            .pref_address(0)
            .payload(&vec![0u8; 2 * MIB as usize])
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::DoesNotFit { ram_end, .. } if ram_end == 2 * MIB),
            "{err}"
        );
    }

    #[test]
    fn cmdline_limit_comes_from_the_header() {
        let mem = guest_memory(64 * MIB);
        let image = BzImageBuilder::new().cmdline_size(255).build();
        assert_eq!(load_bytes(&mem, image).unwrap().cmdline_max_size, 256);
        let image = BzImageBuilder::new().cmdline_size(u32::MAX).build();
        assert_eq!(
            load_bytes(&mem, image).unwrap().cmdline_max_size,
            (EBDA_START - CMDLINE_START) as usize
        );
    }

    #[test]
    fn old_protocol_is_refused() {
        let mem = guest_memory(64 * MIB);
        let image = BzImageBuilder::new().version(0x0205).build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::ProtocolTooOld {
                    version: 0x0205,
                    required: 0x0206
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn protocol_2_06_loads_without_init_size() {
        let mem = guest_memory(64 * MIB);
        let image = BzImageBuilder::new()
            .version(0x0206)
            .init_size(0x4000_0000)
            .build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.end, kernel.start + 16);
    }

    #[test]
    fn no_64bit_entry_is_refused() {
        let mem = guest_memory(64 * MIB);
        let image = BzImageBuilder::new().xloadflags(0x2).build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::No64BitEntry { xloadflags: 0x2 }),
            "{err}"
        );
    }

    #[test]
    fn bad_boot_flag_and_loaded_low_are_refused() {
        let mem = guest_memory(64 * MIB);
        let mut image = BzImageBuilder::new().build();
        image[0x1fe] = 0;
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidBzImage { ref reason } if reason.contains("boot_flag")),
            "{err}"
        );

        let mut image = BzImageBuilder::new().build();
        image[0x211] = 0;
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidBzImage { ref reason } if reason.contains("LOADED_HIGH")),
            "{err}"
        );
    }

    #[test]
    fn truncated_setup_header() {
        let mem = guest_memory(64 * MIB);
        let mut image = BzImageBuilder::new().build();
        image.truncate(0x210);
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Truncated {
                    needed: 0x26c,
                    actual: 0x210,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn image_without_payload_is_truncated() {
        let mem = guest_memory(64 * MIB);
        let mut image = BzImageBuilder::new().setup_sects(0).build();
        image.truncate(5 * 512);
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::Truncated { ref what, needed: 2561, actual: 2560 } if what.contains("protected-mode")),
            "{err}"
        );
    }

    #[test]
    fn load_address_below_himem_is_refused() {
        let mem = guest_memory(64 * MIB);
        let image = BzImageBuilder::new().code32_start(0x1_0000).build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::KernelBelowHimem { addr: 0x1_0000, .. }),
            "{err}"
        );
    }

    #[test]
    fn bytes_past_the_header_end_are_not_header_fields() {
        let mem = guest_memory(64 * MIB);
        let mut image = BzImageBuilder::new().build();
        // A 2.12-sized header ends at 0x268; put "setup code" after it.
        image[0x201] = 0x66;
        image[0x268..0x26c].copy_from_slice(&[0xe8, 0x12, 0x34, 0x56]);
        let kernel = load_bytes(&mem, image).unwrap();
        let hdr = kernel.setup_header.unwrap();
        assert_eq!({ hdr.kernel_info_offset }, 0);
        assert_eq!({ hdr.init_size }, 0x20_0000);
    }

    #[test]
    fn odd_alignment_is_ignored() {
        let hdr = setup_header {
            version: 0x020f,
            relocatable_kernel: 1,
            kernel_alignment: 3,
            init_size: 0x1000,
            ..Default::default()
        };
        assert_eq!(decompression_end(&hdr, 0x10_0000), Some(0x10_1000));
        let hdr = setup_header {
            kernel_alignment: 0x8000_0000,
            ..hdr
        };
        assert_eq!(decompression_end(&hdr, u64::MAX - 1), None);
    }
}
