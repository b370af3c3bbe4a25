//! ELF64 `vmlinux` kernels: validation, then loading with linux-loader.

use std::io::SeekFrom;

use kindling_memory::layout::CMDLINE_MAX_SIZE;
use kindling_memory::GuestMemoryMmap;
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress};

use crate::x86_64::kernel::{check_fits, KernelFormat, LoadedKernel, Source};
use crate::x86_64::{BootError, BootLayout};

/// The four bytes every ELF file starts with.
pub(crate) const ELF_MAGIC: &[u8] = b"\x7fELF";

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// The ELF header fields the loader needs.
#[derive(Debug, Clone, Copy)]
struct ElfHeader {
    entry: u64,
    phoff: u64,
    phnum: u16,
}

/// The program header fields the loader needs.
#[derive(Debug, Clone, Copy)]
struct ProgramHeader {
    p_type: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([buf[off], buf[off + 1]])
}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(b)
}

fn invalid(reason: impl Into<String>) -> BootError {
    BootError::InvalidElf {
        reason: reason.into(),
    }
}

/// Checks the ELF header, which `header` holds the start of.
fn parse_header(header: &[u8], len: u64) -> Result<ElfHeader, BootError> {
    if header.len() < EHDR_SIZE {
        return Err(BootError::Truncated {
            what: "ELF header".into(),
            needed: EHDR_SIZE as u64,
            actual: len,
        });
    }
    if header[4] != ELFCLASS64 {
        return Err(BootError::Not64Bit { class: header[4] });
    }
    if header[5] != ELFDATA2LSB {
        return Err(BootError::NotLittleEndian { data: header[5] });
    }
    let machine = u16_at(header, 18);
    if machine != EM_X86_64 {
        return Err(BootError::NotX86_64 { machine });
    }
    let phentsize = u16_at(header, 54);
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(invalid(format!(
            "program header entries are {phentsize} bytes, expected {PHDR_SIZE}"
        )));
    }
    let ehdr = ElfHeader {
        entry: u64_at(header, 24),
        phoff: u64_at(header, 32),
        phnum: u16_at(header, 56),
    };
    if ehdr.phnum == 0 {
        return Err(invalid("it has no program headers"));
    }
    if ehdr.phoff < EHDR_SIZE as u64 {
        return Err(invalid(format!(
            "program headers at offset {:#x} overlap the ELF header",
            ehdr.phoff
        )));
    }
    let table_len = u64::from(ehdr.phnum) * PHDR_SIZE as u64;
    let table_end = ehdr.phoff.saturating_add(table_len);
    if table_end > len {
        return Err(BootError::Truncated {
            what: "ELF program header table".into(),
            needed: table_end,
            actual: len,
        });
    }
    Ok(ehdr)
}

fn read_program_headers<F: Source>(
    image: &mut F,
    ehdr: &ElfHeader,
) -> Result<Vec<ProgramHeader>, BootError> {
    let mut table = vec![0u8; usize::from(ehdr.phnum) * PHDR_SIZE];
    image
        .seek(SeekFrom::Start(ehdr.phoff))
        .and_then(|_| image.read_exact(&mut table))
        .map_err(BootError::io("ELF program headers"))?;
    Ok(table
        .chunks_exact(PHDR_SIZE)
        .map(|p| ProgramHeader {
            p_type: u32_at(p, 0),
            offset: u64_at(p, 8),
            paddr: u64_at(p, 24),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        })
        .collect())
}

/// Checks one loadable segment against the image and guest memory.
fn check_segment(
    mem: &GuestMemoryMmap,
    index: usize,
    phdr: &ProgramHeader,
    len: u64,
    himem_start: u64,
) -> Result<(), BootError> {
    if phdr.filesz > phdr.memsz {
        return Err(invalid(format!(
            "segment {index} has more bytes in the file ({:#x}) than in memory ({:#x})",
            phdr.filesz, phdr.memsz
        )));
    }
    let file_end = phdr.offset.saturating_add(phdr.filesz);
    if file_end > len {
        return Err(BootError::Truncated {
            what: format!("ELF segment {index}"),
            needed: file_end,
            actual: len,
        });
    }
    if phdr.paddr < himem_start {
        return Err(BootError::KernelBelowHimem {
            addr: phdr.paddr,
            himem: himem_start,
        });
    }
    // A segment that wraps around the address space does not fit; its
    // saturated end must not make it look empty.
    let Some(end) = phdr.paddr.checked_add(phdr.memsz) else {
        return Err(BootError::DoesNotFit {
            start: phdr.paddr,
            end: u64::MAX,
            ram_end: crate::x86_64::kernel::ram_end(mem),
        });
    };
    check_fits(mem, phdr.paddr, end)
}

/// Writes zeros over `[addr, addr + len)`.
fn zero_fill(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), BootError> {
    static ZEROS: [u8; 0x1_0000] = [0; 0x1_0000];
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(ZEROS.len() as u64);
        let at = addr + done;
        mem.write_slice(&ZEROS[..chunk as usize], GuestAddress(at))
            .map_err(BootError::guest_memory("kernel BSS", at, chunk))?;
        done += chunk;
    }
    Ok(())
}

/// Validates and loads an ELF kernel whose first bytes are `header` and
/// whose length is `len`.
pub(crate) fn load<F: Source>(
    mem: &GuestMemoryMmap,
    image: &mut F,
    header: &[u8],
    len: u64,
    layout: &BootLayout,
) -> Result<LoadedKernel, BootError> {
    let ehdr = parse_header(header, len)?;
    let phdrs = read_program_headers(image, &ehdr)?;

    let mut extent: Option<(u64, u64)> = None;
    for (index, phdr) in phdrs.iter().enumerate() {
        if phdr.p_type == PT_NOTE {
            // linux-loader reads notes looking for the PVH entry.
            let file_end = phdr.offset.saturating_add(phdr.filesz);
            if file_end > len {
                return Err(BootError::Truncated {
                    what: format!("ELF note segment {index}"),
                    needed: file_end,
                    actual: len,
                });
            }
        }
        if phdr.p_type != PT_LOAD || (phdr.memsz == 0 && phdr.filesz == 0) {
            continue;
        }
        check_segment(mem, index, phdr, len, layout.himem_start)?;
        if phdr.memsz == 0 {
            continue;
        }
        let end = phdr.paddr + phdr.memsz;
        extent = Some(match extent {
            Some((start, old_end)) => (start.min(phdr.paddr), old_end.max(end)),
            None => (phdr.paddr, end),
        });
    }
    let (start, end) = extent.ok_or_else(|| invalid("it has no loadable segment"))?;
    if !(start..end).contains(&ehdr.entry) {
        return Err(invalid(format!(
            "entry point {:#x} is outside the loaded segments [{start:#x}, {end:#x})",
            ehdr.entry
        )));
    }

    let result =
        Elf::load(mem, None, image, Some(GuestAddress(layout.himem_start))).map_err(|source| {
            BootError::Loader {
                format: KernelFormat::Elf,
                source,
            }
        })?;
    // linux-loader copies only the file bytes; clear the rest of each
    // segment in case the memory held an earlier guest.
    for phdr in phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
        if phdr.memsz > phdr.filesz {
            zero_fill(mem, phdr.paddr + phdr.filesz, phdr.memsz - phdr.filesz)?;
        }
    }

    let pvh_entry = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => {
            if !(start..end).contains(&addr.0) {
                return Err(invalid(format!(
                    "PVH entry point {:#x} is outside the loaded segments [{start:#x}, {end:#x})",
                    addr.0
                )));
            }
            Some(addr.0)
        }
        PvhBootCapability::PvhEntryNotPresent | PvhBootCapability::PvhEntryIgnored => None,
    };

    Ok(LoadedKernel {
        format: KernelFormat::Elf,
        entry: ehdr.entry,
        start,
        end,
        setup_header: None,
        cmdline_max_size: layout.cmdline_limit(CMDLINE_MAX_SIZE),
        pvh_entry,
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::x86_64::test_images::{guest_memory, load_bytes, ElfBuilder};

    const MIB: u64 = 1 << 20;

    #[test]
    fn loads_segments_and_reports_the_extent() {
        let mem = guest_memory(32 * MIB);
        // Dirty the BSS area first: it must come back zeroed.
        mem.write_slice(&[0xaa; 64], GuestAddress(0x120_0010))
            .unwrap();
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, b"text-segment", 0x1000)
            .segment(0x120_0000, b"data", 0x100)
            .build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.format, KernelFormat::Elf);
        assert_eq!(kernel.entry, 0x100_0000);
        assert_eq!(kernel.start, 0x100_0000);
        assert_eq!(kernel.end, 0x120_0100);
        assert_eq!(kernel.setup_header, None);
        assert_eq!(kernel.cmdline_max_size, CMDLINE_MAX_SIZE);
        assert_eq!(kernel.pvh_entry, None);

        let mut text = [0u8; 12];
        mem.read_slice(&mut text, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(&text, b"text-segment");
        let mut data = [0u8; 4];
        mem.read_slice(&mut data, GuestAddress(0x120_0000)).unwrap();
        assert_eq!(&data, b"data");
        let mut bss = [0xffu8; 0xfc];
        mem.read_slice(&mut bss, GuestAddress(0x120_0004)).unwrap();
        assert!(bss.iter().all(|&b| b == 0));
    }

    /// Found by the `boot_kernel_image` fuzz target (with overflow checks
    /// on): a BSS-only segment ending past the top of the address space
    /// passed the checks (its saturated end made it look empty) and then
    /// overflowed computing the kernel's extent.
    #[test]
    fn segment_wrapping_around_the_address_space_is_refused() {
        let mem = guest_memory(32 * MIB);
        for (paddr, memsz) in [(u64::MAX, 0x3e), (u64::MAX - 0xf, 0x20)] {
            let image = ElfBuilder::new(0x100_0000)
                .segment(paddr, &[], memsz)
                .build();
            let err = load_bytes(&mem, image).unwrap_err();
            assert!(
                matches!(err, BootError::DoesNotFit { start, end: u64::MAX, .. } if start == paddr),
                "{err}"
            );
        }
    }

    #[test]
    fn bss_only_segment_counts_and_is_zeroed() {
        let mem = guest_memory(32 * MIB);
        mem.write_slice(&[0x55; 16], GuestAddress(0x140_0000))
            .unwrap();
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[0x90; 8], 8)
            .segment(0x140_0000, &[], 0x2_0000)
            .build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.end, 0x142_0000);
        let word: u64 = mem.read_obj(GuestAddress(0x140_0000)).unwrap();
        assert_eq!(word, 0);
    }

    #[test]
    fn pvh_note_gives_the_pvh_entry() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[0x90; 64], 0x1000)
            .pvh_note(0x100_0020)
            .build();
        let kernel = load_bytes(&mem, image).unwrap();
        assert_eq!(kernel.pvh_entry, Some(0x100_0020));
        assert_eq!(kernel.entry, 0x100_0000);
    }

    #[test]
    fn pvh_entry_outside_the_kernel_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[0x90; 64], 0x1000)
            .pvh_note(0x10)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidElf { ref reason } if reason.contains("PVH")),
            "{err}"
        );
    }

    #[test]
    fn truncated_header() {
        let mem = guest_memory(32 * MIB);
        let err = load_bytes(&mem, b"\x7fELF\x02\x01".to_vec()).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Truncated {
                    needed: 64,
                    actual: 6,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_program_headers() {
        let mem = guest_memory(32 * MIB);
        let mut image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .build();
        image.truncate(64 + 20);
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::Truncated { ref what, needed: 120, actual: 84 } if what.contains("program header")),
            "{err}"
        );
    }

    #[test]
    fn truncated_segment() {
        let mem = guest_memory(32 * MIB);
        let mut image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 256], 256)
            .build();
        let full = image.len() as u64;
        image.truncate(image.len() - 10);
        let err = load_bytes(&mem, image).unwrap_err();
        match err {
            BootError::Truncated {
                what,
                needed,
                actual,
            } => {
                assert_eq!(what, "ELF segment 0");
                assert_eq!(needed, full);
                assert_eq!(actual, full - 10);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn elf32_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .class(1)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(matches!(err, BootError::Not64Bit { class: 1 }), "{err}");
    }

    #[test]
    fn big_endian_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .data(2)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::NotLittleEndian { data: 2 }),
            "{err}"
        );
    }

    #[test]
    fn arm_elf_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .machine(183)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::NotX86_64 { machine: 183 }),
            "{err}"
        );
        assert!(err.to_string().contains("EM_X86_64"));
    }

    #[test]
    fn bad_program_header_size_is_refused() {
        let mem = guest_memory(32 * MIB);
        let mut image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .build();
        image[54] = 32;
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(matches!(err, BootError::InvalidElf { .. }), "{err}");
    }

    #[test]
    fn program_headers_over_the_elf_header_are_refused() {
        let mem = guest_memory(32 * MIB);
        let mut image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .build();
        image[32..40].copy_from_slice(&8u64.to_le_bytes());
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidElf { ref reason } if reason.contains("overlap")),
            "{err}"
        );
    }

    #[test]
    fn no_program_headers_is_refused() {
        let mem = guest_memory(32 * MIB);
        let mut image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .build();
        image[56..58].copy_from_slice(&0u16.to_le_bytes());
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(matches!(err, BootError::InvalidElf { .. }), "{err}");
    }

    #[test]
    fn no_loadable_segment_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000).pvh_note(0x100_0000).build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidElf { ref reason } if reason.contains("no loadable")),
            "{err}"
        );
    }

    #[test]
    fn filesz_above_memsz_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 64], 8)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(matches!(err, BootError::InvalidElf { .. }), "{err}");
        // Even with no memory size at all (linux-loader would copy it).
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .segment(0x7000, &[1; 64], 0)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(matches!(err, BootError::InvalidElf { .. }), "{err}");
    }

    #[test]
    fn huge_memsz_does_not_fit() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], u64::MAX - 0x1000)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::DoesNotFit { start: 0x100_0000, ram_end, .. } if ram_end == 32 * MIB),
            "{err}"
        );
    }

    #[test]
    fn segment_past_the_end_of_ram_does_not_fit() {
        let mem = guest_memory(16 * MIB);
        let image = ElfBuilder::new(0xff_f000)
            .segment(0xff_f000, &[1; 8], 0x2000)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::DoesNotFit {
                    start: 0xff_f000,
                    end: 0x100_1000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn segment_below_himem_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x7000).segment(0x7000, &[1; 8], 8).build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::KernelBelowHimem { addr: 0x7000, .. }),
            "{err}"
        );
    }

    #[test]
    fn entry_outside_segments_is_refused() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x300_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::InvalidElf { ref reason } if reason.contains("entry")),
            "{err}"
        );
    }

    #[test]
    fn truncated_note_is_refused() {
        let mem = guest_memory(32 * MIB);
        let mut image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .pvh_note(0x100_0000)
            .build();
        // The note is the last thing in the image; cut it in half.
        image.truncate(image.len() - 12);
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(err, BootError::Truncated { ref what, .. } if what == "ELF note segment 1"),
            "{err}"
        );
    }

    #[test]
    fn malformed_pvh_note_is_a_loader_error() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .note(18, b"Xen\0", &[1, 2])
            .build();
        let err = load_bytes(&mem, image).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::Loader {
                    format: KernelFormat::Elf,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("PVH"), "{err}");
    }

    #[test]
    fn other_notes_are_skipped() {
        let mem = guest_memory(32 * MIB);
        let image = ElfBuilder::new(0x100_0000)
            .segment(0x100_0000, &[1; 8], 8)
            .note(3, b"GNU\0", &[0xab; 20])
            .build();
        assert_eq!(load_bytes(&mem, image).unwrap().pvh_entry, None);
    }
}
