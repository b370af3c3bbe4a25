//! Creation of guest RAM on a chosen backing.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, GuestAddress};

use crate::{GuestMemoryMmap, GuestRegionMmap};

/// What backs guest RAM on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// Private anonymous memory, faulted in on first touch (the default).
    #[default]
    Anonymous,
    /// A shared memfd: the memory can be handed to another process or saved
    /// for a snapshot by reading the file.
    Memfd,
    /// 2 MiB huge pages from the hugetlbfs pool (a shared memfd with
    /// `MFD_HUGETLB`). The host must have enough pages reserved in
    /// `/proc/sys/vm/nr_hugepages`.
    Hugetlbfs2M,
    /// A snapshot's memory file mapped private (copy-on-write): made by
    /// [`restore_guest_memory`](crate::restore_guest_memory), not by
    /// [`create_guest_memory`].
    PrivateFile,
}

/// How much guest RAM to create, and on what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Size of guest RAM in MiB.
    pub size_mib: u64,
    /// The host backing.
    pub backing: Backing,
}

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A memory size of zero was requested.
    #[error("guest memory size must not be zero")]
    ZeroSize,
    /// The size overflows or its end is above the highest guest-physical
    /// address Kindling places RAM at.
    #[error("guest memory size of {size_mib} MiB does not fit in the guest-physical address space (at most {max_mib} MiB)")]
    TooLarge {
        /// Requested size in MiB.
        size_mib: u64,
        /// Largest size accepted in MiB.
        max_mib: u64,
    },
    /// The size is not a whole number of the backing's page size.
    #[error("guest memory size of {size_mib} MiB is not a multiple of the {page_mib} MiB pages of the {backing:?} backing")]
    NotPageMultiple {
        /// Requested size in MiB.
        size_mib: u64,
        /// The backing's page size in MiB.
        page_mib: u64,
        /// The backing.
        backing: Backing,
    },
    /// `memfd_create` failed.
    #[error("cannot create a memfd for guest memory: {0}")]
    Memfd(io::Error),
    /// Sizing the memfd failed.
    #[error("cannot size the guest memory memfd to {size} bytes: {source}")]
    MemfdSize {
        /// Requested size in bytes.
        size: u64,
        /// The error from `ftruncate`.
        source: io::Error,
    },
    /// mmap of a region failed.
    #[error("cannot map {size} bytes of guest memory at guest address {guest_addr:#x}: {source}")]
    Mmap {
        /// Guest address of the region.
        guest_addr: u64,
        /// Size of the region.
        size: u64,
        /// The mapping error.
        source: vm_memory::mmap::MmapRegionError,
    },
    /// More guest memory than the host has: the guest would be killed by
    /// the host's OOM killer once it used it.
    #[error(
        "guest memory of {size_mib} MiB is more than this host's {host_mib} MiB of RAM and swap"
    )]
    LargerThanHost {
        /// Requested size in MiB.
        size_mib: u64,
        /// The host's RAM plus swap in MiB.
        host_mib: u64,
    },
    /// The backing maps an existing file: use `restore_guest_memory`.
    #[error("the private-file backing maps a snapshot's memory file: use restore_guest_memory")]
    NeedsFile,
    /// The regions could not be assembled (a bug in the layout).
    #[error("cannot assemble guest memory regions: {0}")]
    Regions(String),
}

/// Guest RAM together with the host file that backs it, if any.
#[derive(Debug, Clone)]
pub struct GuestRam {
    /// The guest memory.
    pub memory: GuestMemoryMmap,
    /// The memfd backing the memory, for the shared backings.
    pub file: Option<Arc<File>>,
    /// The configuration it was made from.
    pub config: MemoryConfig,
}

impl Backing {
    fn page_mib(self) -> u64 {
        match self {
            Backing::Anonymous | Backing::Memfd | Backing::PrivateFile => 1,
            Backing::Hugetlbfs2M => 2,
        }
    }
}

/// Checks a requested memory size and returns it in bytes.
#[cfg(target_arch = "x86_64")]
pub fn validate_size(config: &MemoryConfig) -> Result<u64, MemoryError> {
    use crate::layout::{HIGH_RAM_START, MAX_PHYS_ADDR, MIB, MMIO_GAP_START};
    if config.size_mib == 0 {
        return Err(MemoryError::ZeroSize);
    }
    let max_bytes = MAX_PHYS_ADDR - (HIGH_RAM_START - MMIO_GAP_START);
    let too_large = MemoryError::TooLarge {
        size_mib: config.size_mib,
        max_mib: max_bytes / MIB,
    };
    let size = config.size_mib.checked_mul(MIB).ok_or(too_large)?;
    if size > max_bytes || usize::try_from(size).is_err() {
        return Err(MemoryError::TooLarge {
            size_mib: config.size_mib,
            max_mib: max_bytes / MIB,
        });
    }
    let page_mib = config.backing.page_mib();
    if config.size_mib % page_mib != 0 {
        return Err(MemoryError::NotPageMultiple {
            size_mib: config.size_mib,
            page_mib,
            backing: config.backing,
        });
    }
    Ok(size)
}

fn create_memfd(size: u64, hugetlb: bool) -> Result<File, MemoryError> {
    let name: &CStr = c"kindling-guest-ram";
    let mut flags = libc::MFD_CLOEXEC;
    if hugetlb {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `name` is a valid NUL-terminated string; the return value is
    // checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing
    // else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|source| MemoryError::MemfdSize { size, source })?;
    Ok(file)
}

/// The host's RAM plus swap in bytes, if the kernel says.
fn host_memory() -> Option<u64> {
    // SAFETY: `info` is a plain struct the kernel fills; the return value
    // is checked.
    let info = unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        (libc::sysinfo(&mut info) == 0).then_some(info)
    }?;
    let unit = u64::from(info.mem_unit.max(1));
    (info.totalram as u64)
        .checked_add(info.totalswap as u64)?
        .checked_mul(unit)
}

/// Refuses guest RAM larger than the host's RAM and swap: with
/// `MAP_NORESERVE` it would map fine and fail only when the guest used it.
pub fn check_host_memory(size_mib: u64) -> Result<(), MemoryError> {
    use crate::layout::MIB;
    match host_memory() {
        Some(host) if size_mib.saturating_mul(MIB) > host => Err(MemoryError::LargerThanHost {
            size_mib,
            host_mib: host / MIB,
        }),
        _ => Ok(()),
    }
}

/// Keeps guest RAM out of the VMM's core dumps: a crash must not write the
/// guest's memory (its secrets, and gigabytes) to disk.
pub(crate) fn exclude_from_core_dumps(region: &GuestRegionMmap) {
    // SAFETY: the range is exactly the region's own mapping; MADV_DONTDUMP
    // only changes what a core dump includes. A failure is harmless.
    unsafe {
        libc::madvise(region.as_ptr().cast(), region.size(), libc::MADV_DONTDUMP);
    }
}

/// Creates guest RAM of `config.size_mib` MiB laid out by the architecture's
/// memory map, on the requested backing. Nothing is pre-faulted; the memory
/// is left out of core dumps. More memory than the host has is refused.
#[cfg(target_arch = "x86_64")]
pub fn create_guest_memory(config: &MemoryConfig) -> Result<GuestRam, MemoryError> {
    let size = validate_size(config)?;
    check_host_memory(config.size_mib)?;
    let file = match config.backing {
        Backing::Anonymous => None,
        Backing::Memfd => Some(Arc::new(create_memfd(size, false)?)),
        Backing::Hugetlbfs2M => Some(Arc::new(create_memfd(size, true)?)),
        Backing::PrivateFile => return Err(MemoryError::NeedsFile),
    };
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let mut regions = Vec::new();
    let mut file_offset = 0u64;
    for (guest_addr, len) in crate::layout::ram_ranges(size) {
        let (offset, flags) = match &file {
            None => (
                None,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            ),
            Some(f) => (
                Some(FileOffset::from_arc(f.clone(), file_offset)),
                libc::MAP_SHARED | libc::MAP_NORESERVE,
            ),
        };
        // `len` fits in usize: validate_size checked the total.
        let mapping = MmapRegion::build(offset, len as usize, prot, flags).map_err(|source| {
            MemoryError::Mmap {
                guest_addr,
                size: len,
                source,
            }
        })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(guest_addr)).ok_or_else(|| {
            MemoryError::Regions(format!("region at {guest_addr:#x} wraps the address space"))
        })?;
        exclude_from_core_dumps(&region);
        regions.push(region);
        file_offset += len;
    }
    let memory =
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Regions(e.to_string()))?;
    Ok(GuestRam {
        memory,
        file,
        config: *config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{GIB, HIGH_RAM_START, MIB, MMIO_GAP_START};
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    fn cfg(size_mib: u64, backing: Backing) -> MemoryConfig {
        MemoryConfig { size_mib, backing }
    }

    #[test]
    fn zero_size_is_refused() {
        assert!(matches!(
            create_guest_memory(&cfg(0, Backing::Anonymous)),
            Err(MemoryError::ZeroSize)
        ));
    }

    #[test]
    fn huge_size_is_refused() {
        let err = create_guest_memory(&cfg(u64::MAX, Backing::Anonymous)).unwrap_err();
        assert!(matches!(err, MemoryError::TooLarge { .. }), "{err}");
        let err = create_guest_memory(&cfg(1 << 27, Backing::Anonymous)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn more_memory_than_the_host_is_refused() {
        let host_mib = host_memory().unwrap() / MIB;
        let err = create_guest_memory(&cfg(host_mib + 1024, Backing::Anonymous)).unwrap_err();
        assert!(matches!(err, MemoryError::LargerThanHost { .. }), "{err}");
        assert!(err.to_string().contains("RAM and swap"), "{err}");
    }

    #[test]
    fn guest_ram_is_left_out_of_core_dumps() {
        let ram = create_guest_memory(&cfg(8, Backing::Anonymous)).unwrap();
        let start = ram.memory.get_host_address(GuestAddress(0)).unwrap() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{start:x}-");
        let section = smaps
            .split("\n")
            .skip_while(|l| !l.starts_with(&header))
            .take_while(|l| !l.starts_with("VmFlags"))
            .count();
        let flags = smaps
            .split("\n")
            .skip_while(|l| !l.starts_with(&header))
            .nth(section)
            .unwrap_or_default();
        assert!(flags.contains(" dd"), "{flags}");
    }

    #[test]
    fn hugetlb_needs_even_mib() {
        let err = create_guest_memory(&cfg(3, Backing::Hugetlbfs2M)).unwrap_err();
        assert!(matches!(
            err,
            MemoryError::NotPageMultiple { page_mib: 2, .. }
        ));
    }

    #[test]
    fn small_anonymous_memory_is_one_region() {
        let ram = create_guest_memory(&cfg(128, Backing::Anonymous)).unwrap();
        assert_eq!(ram.memory.num_regions(), 1);
        assert_eq!(ram.memory.last_addr().0, 128 * MIB - 1);
        assert!(ram.file.is_none());
        ram.memory
            .write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            ram.memory.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
    }

    #[test]
    fn large_memory_skips_the_gap() {
        let ram = create_guest_memory(&cfg(5 * 1024, Backing::Anonymous)).unwrap();
        let regions: Vec<_> = ram
            .memory
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        assert_eq!(
            regions,
            vec![
                (0, MMIO_GAP_START),
                (HIGH_RAM_START, 5 * GIB - MMIO_GAP_START)
            ]
        );
        assert!(ram
            .memory
            .address_in_range(GuestAddress(MMIO_GAP_START - 1)));
        assert!(!ram.memory.address_in_range(GuestAddress(MMIO_GAP_START)));
    }

    #[test]
    fn memfd_backing_is_shared_with_the_file() {
        use std::os::unix::fs::FileExt;
        let ram = create_guest_memory(&cfg(4, Backing::Memfd)).unwrap();
        ram.memory
            .write_obj(0x1234_5678u32, GuestAddress(0x2000))
            .unwrap();
        let file = ram.file.as_ref().unwrap();
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, 0x2000).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0x1234_5678);
        assert_eq!(file.metadata().unwrap().len(), 4 * MIB);
    }

    #[test]
    fn hugetlb_backing_fails_cleanly_or_works() {
        // Hosts without reserved huge pages fail at mmap/ftruncate time with
        // a typed error rather than a panic.
        match create_guest_memory(&cfg(2, Backing::Hugetlbfs2M)) {
            Ok(ram) => assert_eq!(ram.memory.last_addr().0, 2 * MIB - 1),
            Err(e) => assert!(
                matches!(
                    e,
                    MemoryError::Memfd(_)
                        | MemoryError::MemfdSize { .. }
                        | MemoryError::Mmap { .. }
                ),
                "{e}"
            ),
        }
    }
}
