//! Guest memory to and from snapshot files.
//!
//! A memory file holds guest RAM as one flat image: the regions in address
//! order, back to back (the same layout as the memfd backing), so the file
//! offset of a page is fixed by the memory size. Pages that are not written
//! are holes: a 2 GiB guest that touched 60 MiB writes about 60 MiB.
//!
//! - [`dump_memory`] writes every page the guest ever touched (a full
//!   snapshot) or only the pages of a [`DirtyBitmap`] (a diff snapshot).
//! - [`apply_diff`] layers a diff file onto a base file.
//! - [`restore_guest_memory`] maps a memory file `MAP_PRIVATE`: restore
//!   costs the same whatever the guest's size (pages fault in from the
//!   page cache on first touch), and every VM restored from one file shares
//!   its clean pages.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::dirty::{DirtyBitmap, DIRTY_PAGE_SIZE};
use crate::{Backing, GuestMemoryMmap, GuestRam, GuestRegionMmap, MemoryConfig, MemoryError};

/// What [`dump_memory`] writes.
#[derive(Debug, Clone, Copy)]
pub enum MemoryDump<'a> {
    /// Every page the guest or the VMM ever touched that is not all zeroes.
    Full,
    /// Exactly the pages set in the bitmap (zero pages included: they
    /// may overwrite older data in the base).
    Diff(&'a DirtyBitmap),
}

/// What [`dump_memory`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Pages written to the file.
    pub pages_written: u64,
    /// The file's logical size (guest RAM size).
    pub file_size: u64,
}

/// Errors writing or reading memory files.
#[derive(Debug, thiserror::Error)]
pub enum MemorySnapshotError {
    /// Writing or sizing the memory file failed.
    #[error("cannot {op} the memory file at byte {offset}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The byte offset in the file.
        offset: u64,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// `mincore` could not tell which pages are resident.
    #[error("cannot find the touched pages of the region at {guest_addr:#x}: {source}")]
    Residency {
        /// The region.
        guest_addr: u64,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// A dirty bitmap does not describe this guest memory.
    #[error("the dirty bitmap does not match guest memory (region {index})")]
    BitmapMismatch {
        /// The first region that differs.
        index: usize,
    },
    /// The memory file is shorter than the memory it should hold.
    #[error("memory file is {actual} bytes, smaller than the {expected} bytes of guest RAM")]
    FileTooSmall {
        /// Size the snapshot's memory needs.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The memory could not be mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

fn io_err(op: &'static str, offset: u64) -> impl FnOnce(io::Error) -> MemorySnapshotError {
    move |source| MemorySnapshotError::Io { op, offset, source }
}

/// The file offset of each region of `memory`, in address order.
fn region_offsets(memory: &GuestMemoryMmap) -> Vec<u64> {
    let mut offset = 0;
    memory
        .iter()
        .map(|r| {
            let at = offset;
            offset += r.len();
            at
        })
        .collect()
}

/// Which pages of `[addr, addr + len)` (a host mapping) are resident, one
/// byte per host page.
fn resident_pages(
    addr: *mut u8,
    len: usize,
    guest_addr: u64,
) -> Result<Vec<u8>, MemorySnapshotError> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr..addr+len` is one mapping owned by guest memory (page
    // aligned: mmap returned it); `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(MemorySnapshotError::Residency {
            guest_addr,
            source: io::Error::last_os_error(),
        });
    }
    Ok(vec)
}

/// Writes `len` bytes of guest memory at `guest` to `file` at `offset`.
fn write_range(
    file: &File,
    memory: &GuestMemoryMmap,
    guest: GuestAddress,
    len: u64,
    offset: u64,
) -> Result<(), MemorySnapshotError> {
    let mut done = 0u64;
    let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        vm_memory::Bytes::read_slice(memory, &mut buf[..n], GuestAddress(guest.0 + done)).map_err(
            |e| MemorySnapshotError::Io {
                op: "read guest memory for",
                offset: offset + done,
                source: io::Error::other(e),
            },
        )?;
        file.write_all_at(&buf[..n], offset + done)
            .map_err(io_err("write", offset + done))?;
        done += n as u64;
    }
    Ok(())
}

/// Writes guest memory into `file` (created empty or truncated by the
/// caller): its size becomes the size of guest RAM, and only the pages
/// `what` selects are written; the rest are holes.
///
/// For [`MemoryDump::Full`], the pages that were never touched (not
/// resident: `mincore`) and resident pages that are all zeroes are left as
/// holes, so the cost follows what the guest used, not its size. Guest
/// memory must not change during the call (pause the VM first).
pub fn dump_memory(
    memory: &GuestMemoryMmap,
    file: &File,
    what: MemoryDump<'_>,
) -> Result<DumpStats, MemorySnapshotError> {
    let total: u64 = memory.iter().map(|r| r.len()).sum();
    file.set_len(0).map_err(io_err("truncate", 0))?;
    file.set_len(total).map_err(io_err("size", total))?;
    let offsets = region_offsets(memory);
    let mut stats = DumpStats {
        pages_written: 0,
        file_size: total,
    };
    match what {
        MemoryDump::Full => {
            for (region, &offset) in memory.iter().zip(&offsets) {
                let guest = region.start_addr().0;
                let host = memory.get_host_address(region.start_addr()).map_err(|e| {
                    MemorySnapshotError::Residency {
                        guest_addr: guest,
                        source: io::Error::other(e),
                    }
                })?;
                let mut resident = resident_pages(host, region.len() as usize, guest)?;
                if let Some(backing) = region.file_offset() {
                    // A file mapping (a restored snapshot's memory, a
                    // memfd): pages with data in the file hold guest
                    // contents even when they are not resident.
                    mark_file_data(backing.file(), backing.start(), region.len(), &mut resident)
                        .map_err(io_err("find the data of", backing.start()))?;
                }
                let host_page = (region.len() as usize).div_ceil(resident.len().max(1)) as u64;
                // Runs of consecutive pages to write go out in one write
                // each (a system call per 4 KiB page costs more than the
                // copy on nested hosts).
                let mut run: Option<(u64, u64)> = None;
                let flush = |run: (u64, u64)| -> Result<(), MemorySnapshotError> {
                    let (start, len) = run;
                    // SAFETY: the run is inside the region's mapping and
                    // resident; the VM is paused, so nothing writes it.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(host.add(start as usize), len as usize)
                    };
                    file.write_all_at(bytes, offset + start)
                        .map_err(io_err("write", offset + start))
                };
                for (index, &flags) in resident.iter().enumerate() {
                    let page_offset = index as u64 * host_page;
                    let len = host_page.min(region.len() - page_offset);
                    let keep = flags & 1 != 0 && {
                        // SAFETY: as above, for this page.
                        let bytes = unsafe {
                            std::slice::from_raw_parts(host.add(page_offset as usize), len as usize)
                        };
                        !bytes.iter().all(|&b| b == 0)
                    };
                    if !keep {
                        if let Some(done) = run.take() {
                            flush(done)?;
                        }
                        continue;
                    }
                    stats.pages_written += len.div_ceil(DIRTY_PAGE_SIZE);
                    run = match run {
                        Some((start, run_len)) if start + run_len == page_offset => {
                            Some((start, run_len + len))
                        }
                        Some(done) => {
                            flush(done)?;
                            Some((page_offset, len))
                        }
                        None => Some((page_offset, len)),
                    };
                }
                if let Some(done) = run {
                    flush(done)?;
                }
            }
        }
        MemoryDump::Diff(dirty) => {
            check_bitmap(memory, dirty)?;
            for ((region, bits), &offset) in memory.iter().zip(&dirty.regions).zip(&offsets) {
                for (addr, len) in bits.dirty_ranges() {
                    let at = offset + (addr.0 - region.start_addr().0);
                    write_range(file, memory, addr, len, at)?;
                    stats.pages_written += len.div_ceil(DIRTY_PAGE_SIZE);
                }
            }
        }
    }
    Ok(stats)
}

/// Sets bit 0 of `pages[i]` for every page `i` of `[start, start + len)`
/// of `file` that holds data (is not a hole), found with
/// `SEEK_DATA`/`SEEK_HOLE`.
fn mark_file_data(file: &File, start: u64, len: u64, pages: &mut [u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if pages.is_empty() {
        return Ok(());
    }
    let page = len.div_ceil(pages.len() as u64).max(1);
    let end = start + len;
    let fd = file.as_raw_fd();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on an fd the mapping keeps open; no memory is
        // touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            // ENXIO: no data past `pos`.
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(()),
                _ => Err(err),
            };
        }
        let data = data as u64;
        if data >= end {
            return Ok(());
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let hole = (hole as u64).min(end);
        let first = (data - start) / page;
        let last = (hole - start).div_ceil(page).min(pages.len() as u64);
        for flag in &mut pages[first as usize..last as usize] {
            *flag |= 1;
        }
        pos = hole.max(data + 1);
    }
    Ok(())
}

fn check_bitmap(memory: &GuestMemoryMmap, dirty: &DirtyBitmap) -> Result<(), MemorySnapshotError> {
    if dirty.regions.len() != memory.num_regions() {
        return Err(MemorySnapshotError::BitmapMismatch {
            index: dirty.regions.len().min(memory.num_regions()),
        });
    }
    for (index, (region, bits)) in memory.iter().zip(&dirty.regions).enumerate() {
        if bits.guest_addr != region.start_addr().0 || bits.len != region.len() {
            return Err(MemorySnapshotError::BitmapMismatch { index });
        }
    }
    Ok(())
}

/// Copies the pages of a diff memory file (written by
/// [`dump_memory`] with `dirty`) into `base`, so `base` becomes the memory
/// of the later snapshot. Returns the number of bytes copied.
pub fn apply_diff(
    base: &File,
    diff: &File,
    dirty: &DirtyBitmap,
) -> Result<u64, MemorySnapshotError> {
    let mut offset = 0u64;
    let mut copied = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let diff_len = diff.metadata().map_err(io_err("stat", 0))?.len();
    for region in &dirty.regions {
        for (addr, len) in region.dirty_ranges() {
            let start = offset + (addr.0 - region.guest_addr);
            let end = start + len;
            if end > diff_len {
                return Err(MemorySnapshotError::FileTooSmall {
                    expected: end,
                    actual: diff_len,
                });
            }
            let mut at = start;
            while at < end {
                let n = (end - at).min(buf.len() as u64) as usize;
                diff.read_exact_at(&mut buf[..n], at)
                    .map_err(io_err("read", at))?;
                base.write_all_at(&buf[..n], at)
                    .map_err(io_err("write", at))?;
                at += n as u64;
            }
            copied += len;
        }
        offset += region.len;
    }
    Ok(copied)
}

/// Maps `file` (a memory file of a snapshot of `config.size_mib` MiB) as
/// guest RAM, private copy-on-write: nothing is read until the guest
/// touches a page, and the guest's writes never reach the file.
#[cfg(target_arch = "x86_64")]
pub fn restore_guest_memory(
    config: &MemoryConfig,
    file: File,
) -> Result<GuestRam, MemorySnapshotError> {
    let size = crate::validate_size(config)?;
    let actual = file.metadata().map_err(io_err("stat", 0))?.len();
    if actual < size {
        return Err(MemorySnapshotError::FileTooSmall {
            expected: size,
            actual,
        });
    }
    let file = Arc::new(file);
    let mut regions = Vec::new();
    let mut file_offset = 0u64;
    for (guest_addr, len) in crate::layout::ram_ranges(size) {
        let mapping = MmapRegion::build(
            Some(FileOffset::from_arc(file.clone(), file_offset)),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|source| MemoryError::Mmap {
            guest_addr,
            size: len,
            source,
        })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(guest_addr)).ok_or_else(|| {
            MemoryError::Regions(format!("region at {guest_addr:#x} wraps the address space"))
        })?;
        crate::backing::exclude_from_core_dumps(&region);
        regions.push(region);
        file_offset += len;
    }
    let memory =
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Regions(e.to_string()))?;
    Ok(GuestRam {
        memory,
        file: Some(file),
        config: MemoryConfig {
            size_mib: config.size_mib,
            backing: Backing::PrivateFile,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create_guest_memory;
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    use vm_memory::Bytes;
    use vmm_sys_util::tempfile::TempFile;

    fn ram(mib: u64) -> GuestRam {
        create_guest_memory(&MemoryConfig {
            size_mib: mib,
            backing: Backing::Anonymous,
        })
        .unwrap()
    }

    /// Bytes of the file that are data, not holes (SEEK_DATA/SEEK_HOLE).
    fn data_bytes(file: &mut File) -> u64 {
        let fd = file.as_raw_fd();
        let len = file.seek(SeekFrom::End(0)).unwrap() as i64;
        let mut pos = 0i64;
        let mut data = 0u64;
        while pos < len {
            // SAFETY: plain lseek calls on an fd we own.
            let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if start < 0 {
                break;
            }
            // SAFETY: as above.
            let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
            data += (end - start) as u64;
            pos = end;
        }
        data
    }

    #[test]
    fn a_full_dump_writes_only_touched_pages_and_restores() {
        let ram = ram(64);
        ram.memory
            .write_obj(0xfeed_u64, GuestAddress(0x1000))
            .unwrap();
        ram.memory
            .write_slice(&[7u8; 8192], GuestAddress(40 << 20))
            .unwrap();
        // Touched but zero: not written.
        ram.memory.write_obj(0u64, GuestAddress(0x9000)).unwrap();
        let tmp = TempFile::new().unwrap();
        let mut file = tmp.into_file();
        let stats = dump_memory(&ram.memory, &file, MemoryDump::Full).unwrap();
        assert_eq!(stats.file_size, 64 << 20);
        assert_eq!(stats.pages_written, 3);
        assert!(data_bytes(&mut file) <= 3 * 4096 + 65536, "not sparse");

        let restored = restore_guest_memory(
            &MemoryConfig {
                size_mib: 64,
                backing: Backing::Anonymous,
            },
            file.try_clone().unwrap(),
        )
        .unwrap();
        assert_eq!(restored.config.backing, Backing::PrivateFile);
        let m = &restored.memory;
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x1000)).unwrap(), 0xfeed);
        assert_eq!(
            m.read_obj::<u8>(GuestAddress((40 << 20) + 8191)).unwrap(),
            7
        );
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x9000)).unwrap(), 0);
        // Private: a write to the restored memory does not reach the file.
        m.write_obj(1u64, GuestAddress(0x1000)).unwrap();
        let mut buf = [0u8; 8];
        file.read_exact_at(&mut buf, 0x1000).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 0xfeed);
    }

    #[test]
    fn a_full_dump_of_restored_memory_keeps_pages_never_faulted_in() {
        let ram = ram(8);
        ram.memory
            .write_obj(0xabcd_u64, GuestAddress(0x3000))
            .unwrap();
        let first = tempfile_file();
        dump_memory(&ram.memory, &first, MemoryDump::Full).unwrap();
        let config = MemoryConfig {
            size_mib: 8,
            backing: Backing::Anonymous,
        };
        // Drop the file's pages from the page cache (where the file
        // system allows it), so mincore calls them not resident.
        first.sync_all().unwrap();
        // SAFETY: an advisory call on an fd we own.
        unsafe { libc::posix_fadvise(first.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let restored = restore_guest_memory(&config, first.try_clone().unwrap()).unwrap();
        // Never touch 0x3000 through the mapping (nor near it: a fault
        // reads ahead into the page cache).
        restored
            .memory
            .write_obj(7u64, GuestAddress(6 << 20))
            .unwrap();
        let second = tempfile_file();
        let stats = dump_memory(&restored.memory, &second, MemoryDump::Full).unwrap();
        assert!(stats.pages_written >= 2, "{stats:?}");
        let mut buf = [0u8; 8];
        second.read_exact_at(&mut buf, 0x3000).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 0xabcd);
        second.read_exact_at(&mut buf, 6 << 20).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 7);
    }

    #[test]
    fn a_diff_layers_onto_its_base() {
        let ram = ram(8);
        ram.memory.write_obj(1u64, GuestAddress(0x1000)).unwrap();
        ram.memory.write_obj(2u64, GuestAddress(0x2000)).unwrap();
        let base = tempfile_file();
        dump_memory(&ram.memory, &base, MemoryDump::Full).unwrap();
        let _ = DirtyBitmap::take_vmm_writes(&ram.memory);

        ram.memory.write_obj(3u64, GuestAddress(0x2000)).unwrap();
        ram.memory.write_obj(0u64, GuestAddress(0x1000)).unwrap();
        let dirty = DirtyBitmap::take_vmm_writes(&ram.memory);
        let diff = tempfile_file();
        let stats = dump_memory(&ram.memory, &diff, MemoryDump::Diff(&dirty)).unwrap();
        assert_eq!(stats.pages_written, 2);
        assert_eq!(apply_diff(&base, &diff, &dirty).unwrap(), 2 * 4096);
        let mut buf = [0u8; 8];
        base.read_exact_at(&mut buf, 0x2000).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 3);
        base.read_exact_at(&mut buf, 0x1000).unwrap();
        assert_eq!(
            u64::from_le_bytes(buf),
            0,
            "a zeroed page must reach the base"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ram = ram(4);
        let other = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let dirty = DirtyBitmap::clean(&other);
        let file = tempfile_file();
        let err = dump_memory(&ram.memory, &file, MemoryDump::Diff(&dirty)).unwrap_err();
        assert!(
            matches!(err, MemorySnapshotError::BitmapMismatch { index: 0 }),
            "{err}"
        );

        let short = tempfile_file();
        short.set_len(1 << 20).unwrap();
        let config = MemoryConfig {
            size_mib: 4,
            backing: Backing::Anonymous,
        };
        let err = restore_guest_memory(&config, short).unwrap_err();
        assert!(err.to_string().contains("smaller than"), "{err}");

        // A diff file shorter than its bitmap says.
        let mut dirty = DirtyBitmap::clean(&ram.memory);
        dirty.regions[0].merge(&[1 << 63]);
        let diff = tempfile_file();
        diff.set_len(4096).unwrap();
        assert!(matches!(
            apply_diff(&file, &diff, &dirty),
            Err(MemorySnapshotError::FileTooSmall { .. })
        ));
    }

    fn tempfile_file() -> File {
        TempFile::new().unwrap().into_file()
    }
}
