//! The block I/O engine.
//!
//! [`BlockBackend`] is in submit/complete form: the device submits each
//! parsed request with a token (the chain's head index) and later collects
//! completions. [`SyncFileBackend`] completes every operation before
//! `submit` returns; an asynchronous engine (the io_uring engine,
//! [`super::IoUringBackend`]) completes them later and signals its
//! [`BlockBackend::completion_event`], which the device watches on the
//! event loop.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vm_memory::bitmap::Bitmap;
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::eventfd::EventFd;

use super::request::{GuestBuffer, SectorRange};
use super::{BlockError, ID_BYTES, SECTOR_SIZE};
use crate::GuestMemoryMmap;

/// One operation on the disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp<'a> {
    /// Read from the image at byte `offset` into guest `buffers`.
    Read {
        /// Byte offset in the image.
        offset: u64,
        /// Guest buffers, filled in order.
        buffers: &'a [GuestBuffer],
    },
    /// Write guest `buffers` to the image at byte `offset`.
    Write {
        /// Byte offset in the image.
        offset: u64,
        /// Guest buffers, written in order.
        buffers: &'a [GuestBuffer],
    },
    /// Make written data durable.
    Flush,
    /// Deallocate ranges (reads return zeroes afterwards).
    Discard {
        /// The ranges.
        ranges: &'a [SectorRange],
    },
    /// Make ranges read as zeroes, deallocating them where `unmap` is set.
    WriteZeroes {
        /// The ranges.
        ranges: &'a [SectorRange],
    },
}

impl BlockOp<'_> {
    /// Checks that every byte the operation touches is inside a disk of
    /// `size` bytes.
    pub fn check_range(&self, size: u64) -> Result<(), BackendError> {
        let out = |op, offset, len| BackendError::OutOfRange {
            op,
            offset,
            len,
            size,
        };
        match *self {
            BlockOp::Read { offset, buffers } | BlockOp::Write { offset, buffers } => {
                let op = if matches!(self, BlockOp::Read { .. }) {
                    "read"
                } else {
                    "write"
                };
                let len = buffers.iter().map(|b| u64::from(b.len)).sum::<u64>();
                match offset.checked_add(len) {
                    Some(end) if end <= size => Ok(()),
                    _ => Err(out(op, offset, len)),
                }
            }
            BlockOp::Flush => Ok(()),
            BlockOp::Discard { ranges } | BlockOp::WriteZeroes { ranges } => {
                let op = if matches!(self, BlockOp::Discard { .. }) {
                    "discard"
                } else {
                    "write zeroes"
                };
                for r in ranges {
                    let len = u64::from(r.num_sectors) * SECTOR_SIZE;
                    let end = r
                        .sector
                        .checked_mul(SECTOR_SIZE)
                        .and_then(|offset| offset.checked_add(len));
                    if end.is_none_or(|end| end > size) {
                        return Err(out(op, r.sector.saturating_mul(SECTOR_SIZE), len));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The token given to [`BlockBackend::submit`].
    pub token: u16,
    /// Its outcome.
    pub result: Result<(), BackendError>,
}

/// Errors of block I/O.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// An I/O system call failed.
    #[error("{op} at byte {offset} of {path} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The byte offset in the image.
        offset: u64,
        /// The image.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The image ended before a read was complete (it shrank).
    #[error("read at byte {offset} of {path} hit the end of the file")]
    UnexpectedEof {
        /// The byte offset in the image.
        offset: u64,
        /// The image.
        path: PathBuf,
    },
    /// The operation reaches past the end of the disk (the request parser
    /// never submits one; the backend refuses it without touching the
    /// image rather than growing it).
    #[error("{op} of {len} bytes at byte {offset} reaches past the end of the {size}-byte disk")]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// Its byte offset in the image.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// The size of the disk.
        size: u64,
    },
    /// A guest buffer is not in guest memory.
    #[error("guest buffer at {addr:#x} ({len} bytes) is not in guest memory")]
    GuestMemory {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// An earlier flush failed: written data may have been lost, so no
    /// later flush can promise durability.
    #[error("an earlier flush of {path} failed: data written before it may be lost, so every later flush fails")]
    FlushFailedBefore {
        /// The image.
        path: PathBuf,
    },
    /// The engine cannot take more requests now; the request is not
    /// started and may be submitted again once completions free space.
    #[error("the I/O engine is full")]
    Busy,
    /// Queued operations could not be handed to the kernel; they stay
    /// queued and are handed over at the next attempt.
    #[error("cannot submit I/O for {path} to io_uring: {source}")]
    Submit {
        /// The image.
        path: PathBuf,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
}

/// An I/O engine for a block device.
pub trait BlockBackend: Send + fmt::Debug {
    /// The size of the disk image in bytes, a multiple of 512.
    fn size(&self) -> u64;

    /// A 20-byte device id derived from the storage's identity, used for
    /// GET_ID when no serial is configured.
    fn default_serial(&self) -> [u8; ID_BYTES];

    /// Starts `op` for the request identified by `token`. The result comes
    /// back through [`BlockBackend::next_completion`]; an error here means
    /// the operation was not started.
    fn submit(
        &mut self,
        memory: &GuestMemoryMmap,
        token: u16,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError>;

    /// Takes the next finished operation, if any.
    fn next_completion(&mut self) -> Option<Completion>;

    /// An eventfd the engine signals when operations finish after
    /// `submit` returned (an asynchronous engine). The device watches it on
    /// the event loop, reads it, then collects completions with
    /// [`BlockBackend::next_completion`]. `None`, the default, for an
    /// engine that finishes every operation within `submit`.
    fn completion_event(&self) -> Option<&EventFd> {
        None
    }

    /// Hands the operations queued by `submit` to the kernel; the device
    /// calls it after each pass over its queue, so an engine can batch
    /// them. An error leaves them queued for the next call. The default
    /// does nothing (for engines that start operations in `submit`).
    fn push_submissions(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Returns once no operation is in flight, waiting for those that are
    /// and dropping every completion not collected yet. The device calls
    /// it before it lets go of guest memory (reset), so no I/O writes into
    /// guest memory after that. The default drops the collected
    /// completions (enough for an engine that finishes operations in
    /// `submit`).
    fn quiesce(&mut self) {
        while self.next_completion().is_some() {}
    }
}

/// Synchronous I/O on a raw image file: `pread`/`pwrite` into and out of
/// guest memory, `fdatasync`, and `fallocate` hole punching and zeroing
/// (with a fallback to writing zeroes where the file system has neither).
#[derive(Debug)]
pub struct SyncFileBackend {
    file: File,
    path: PathBuf,
    size: u64,
    serial: [u8; ID_BYTES],
    completions: VecDeque<Completion>,
    /// A flush failed: the data it covered may be lost, so every later
    /// flush fails too (a later `fdatasync` can succeed after the kernel
    /// dropped the dirty pages).
    flush_failed: std::cell::Cell<bool>,
}

/// A serial from the file's device and inode numbers: stable for the same
/// file across runs, different between files.
fn serial_from_identity(dev: u64, ino: u64) -> [u8; ID_BYTES] {
    let text = format!("{dev:x}-{ino:x}");
    let mut serial = [0u8; ID_BYTES];
    let n = text.len().min(ID_BYTES);
    serial[..n].copy_from_slice(&text.as_bytes()[..n]);
    serial
}

impl SyncFileBackend {
    /// Opens the image at `path`, read-only or read-write. Its size must
    /// be a multiple of 512 bytes.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            // Never wait for a FIFO's writer; close on exec.
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_file(file, path)
    }

    /// Uses an open image file (a regular file or a block device); `path`
    /// names it in errors. The file is locked (an OFD lock: for writing
    /// when it is open for writing) for as long as it is open.
    pub fn from_file(file: File, path: &Path) -> Result<Self, BlockError> {
        let info = super::image::check_and_lock(&file, path)?;
        let size = info.size;
        if size % SECTOR_SIZE != 0 {
            return Err(BlockError::UnalignedSize {
                path: path.to_path_buf(),
                size,
            });
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            size,
            serial: serial_from_identity(info.dev, info.ino),
            completions: VecDeque::with_capacity(1),
            flush_failed: std::cell::Cell::new(false),
        })
    }

    /// The image file.
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The image's path.
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn io_error(
        &self,
        op: &'static str,
        offset: u64,
        source: io::Error,
    ) -> BackendError {
        BackendError::Io {
            op,
            offset,
            path: self.path.clone(),
            source,
        }
    }

    /// Reads (`write == false`) or writes the buffers at `offset`.
    fn transfer(
        &self,
        memory: &GuestMemoryMmap,
        mut offset: u64,
        buffers: &[GuestBuffer],
        write: bool,
    ) -> Result<(), BackendError> {
        let fd = self.file.as_raw_fd();
        let op = if write { "write" } else { "read" };
        for b in buffers {
            for slice in memory.get_slices(b.addr, b.len as usize) {
                let slice = slice.map_err(|_| BackendError::GuestMemory {
                    addr: b.addr.0,
                    len: b.len,
                })?;
                let len = slice.len();
                let mut done = 0;
                while done < len {
                    let at = offset + done as u64;
                    let pos = libc::off64_t::try_from(at)
                        .map_err(|_| self.io_error(op, at, io::ErrorKind::InvalidInput.into()))?;
                    let n = if write {
                        let guard = slice.ptr_guard();
                        // SAFETY: `guard` points at `len` mapped bytes of
                        // guest memory that stay mapped for the call; the
                        // kernel only reads them.
                        unsafe {
                            libc::pwrite64(fd, guard.as_ptr().add(done).cast(), len - done, pos)
                        }
                    } else {
                        let guard = slice.ptr_guard_mut();
                        // SAFETY: `guard` points at `len` mapped, writable
                        // bytes of guest memory that stay mapped for the
                        // call; the guest racing with the write only sees
                        // plain bytes change.
                        unsafe {
                            libc::pread64(fd, guard.as_ptr().add(done).cast(), len - done, pos)
                        }
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(self.io_error(op, at, e));
                    }
                    if n == 0 {
                        return Err(BackendError::UnexpectedEof {
                            offset: at,
                            path: self.path.clone(),
                        });
                    }
                    done += n as usize;
                }
                if !write {
                    slice.bitmap().mark_dirty(0, len);
                }
                offset += len as u64;
            }
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        loop {
            // SAFETY: plain system call on a file descriptor we own.
            let r = unsafe { libc::fallocate64(self.file.as_raw_fd(), mode, off, len) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn write_zero_bytes(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZEROES.len() as u64) as usize;
            let at = offset + done;
            std::os::unix::fs::FileExt::write_all_at(&self.file, &ZEROES[..n], at)
                .map_err(|e| self.io_error("write zeroes", at, e))?;
            done += n as u64;
        }
        Ok(())
    }

    /// Zeroes or deallocates one range; falls back to writing zeroes where
    /// the file system supports neither hole punching nor zeroing.
    fn zero_range(&self, range: &SectorRange, punch: bool) -> Result<(), BackendError> {
        if range.is_empty() {
            // Nothing to do (and `fallocate` refuses a zero length).
            return Ok(());
        }
        let (offset, len) = (range.offset(), range.len());
        let mode = if punch {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                if !punch
                    && self
                        .fallocate(
                            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                            offset,
                            len,
                        )
                        .is_ok()
                {
                    return Ok(());
                }
                self.write_zero_bytes(offset, len)
            }
            Err(e) => {
                Err(self.io_error(if punch { "punch hole" } else { "zero range" }, offset, e))
            }
        }
    }

    /// `fdatasync`, failing for good once it failed.
    fn flush(&self) -> Result<(), BackendError> {
        if self.flush_failed.get() {
            return Err(self.flush_failed_error());
        }
        self.file.sync_data().map_err(|e| {
            self.flush_failed.set(true);
            self.io_error("flush", 0, e)
        })
    }

    /// Remembers that a flush failed (see [`BackendError::FlushFailedBefore`]).
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(crate) fn mark_flush_failed(&self) {
        self.flush_failed.set(true);
    }

    /// Whether a flush ever failed.
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(crate) fn flush_failed(&self) -> bool {
        self.flush_failed.get()
    }

    /// The error every flush after a failed one returns.
    pub(crate) fn flush_failed_error(&self) -> BackendError {
        BackendError::FlushFailedBefore {
            path: self.path.clone(),
        }
    }

    /// Runs `op` to completion.
    pub(crate) fn execute(
        &self,
        memory: &GuestMemoryMmap,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError> {
        match *op {
            BlockOp::Read { offset, buffers } => self.transfer(memory, offset, buffers, false),
            BlockOp::Write { offset, buffers } => self.transfer(memory, offset, buffers, true),
            BlockOp::Flush => self.flush(),
            BlockOp::Discard { ranges } => ranges.iter().try_for_each(|r| self.zero_range(r, true)),
            BlockOp::WriteZeroes { ranges } => {
                ranges.iter().try_for_each(|r| self.zero_range(r, r.unmap))
            }
        }
    }
}

impl BlockBackend for SyncFileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn default_serial(&self) -> [u8; ID_BYTES] {
        self.serial
    }

    fn submit(
        &mut self,
        memory: &GuestMemoryMmap,
        token: u16,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError> {
        // The parser only submits operations inside the disk; refuse any
        // other before touching the image rather than growing it.
        let result = op
            .check_range(self.size)
            .and_then(|()| self.execute(memory, op));
        self.completions.push_back(Completion { token, result });
        Ok(())
    }

    fn next_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::memory;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::tempfile::TempFile;

    fn image(size: usize) -> (TempFile, SyncFileBackend) {
        let tmp = TempFile::new().unwrap();
        let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(tmp.as_path(), &pattern).unwrap();
        let backend = SyncFileBackend::open(tmp.as_path(), false).unwrap();
        (tmp, backend)
    }

    fn buf(addr: u64, len: u32) -> GuestBuffer {
        GuestBuffer {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn open_checks_the_size() {
        let tmp = TempFile::new().unwrap();
        std::fs::write(tmp.as_path(), [0u8; 1000]).unwrap();
        let err = SyncFileBackend::open(tmp.as_path(), false).unwrap_err();
        assert!(matches!(err, BlockError::UnalignedSize { size: 1000, .. }));
        assert!(err.to_string().contains("not a multiple of 512"), "{err}");
        let err = SyncFileBackend::open(Path::new("/nonexistent/disk.img"), true).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/disk.img"), "{err}");
        let (_tmp, b) = image(4096);
        assert_eq!(b.size(), 4096);
        let serial = b.default_serial();
        assert!(serial.iter().any(|&c| c != 0));
        assert!(std::str::from_utf8(&serial).is_ok());
    }

    #[test]
    fn reads_and_writes_cross_guest_regions() {
        let (_tmp, mut b) = image(8192);
        // Two guest regions with a hole between them.
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
        ])
        .unwrap();
        let bufs = [buf(0xf00, 0x200), buf(0x1800, 0x200)];
        b.submit(
            &mem,
            3,
            &BlockOp::Read {
                offset: 512,
                buffers: &bufs,
            },
        )
        .unwrap();
        let c = b.next_completion().unwrap();
        assert_eq!(c.token, 3);
        c.result.unwrap();
        let mut got = [0u8; 0x200];
        mem.read_slice(&mut got, GuestAddress(0xf00)).unwrap();
        assert_eq!(got[0], (512 % 251) as u8);
        assert_eq!(got[0x1ff], ((512 + 0x1ff) % 251) as u8);
        assert!(b.next_completion().is_none());

        mem.write_slice(&[0xab; 0x200], GuestAddress(0x1800))
            .unwrap();
        b.submit(
            &mem,
            4,
            &BlockOp::Write {
                offset: 0,
                buffers: &bufs[1..],
            },
        )
        .unwrap();
        b.next_completion().unwrap().result.unwrap();
        b.submit(&mem, 5, &BlockOp::Flush).unwrap();
        b.next_completion().unwrap().result.unwrap();
        let data = std::fs::read(_tmp.as_path()).unwrap();
        assert!(data[..0x200].iter().all(|&x| x == 0xab));

        // A buffer outside guest memory.
        b.submit(
            &mem,
            6,
            &BlockOp::Read {
                offset: 0,
                buffers: &[buf(0x3000, 16)],
            },
        )
        .unwrap();
        let e = b.next_completion().unwrap().result.unwrap_err();
        assert!(matches!(e, BackendError::GuestMemory { addr: 0x3000, .. }));
    }

    #[test]
    fn reads_past_a_shrunk_file_fail() {
        let (tmp, mut b) = image(4096);
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.as_path())
            .unwrap()
            .set_len(512)
            .unwrap();
        let mem = memory(0x10000);
        b.submit(
            &mem,
            0,
            &BlockOp::Read {
                offset: 1024,
                buffers: &[buf(0, 512)],
            },
        )
        .unwrap();
        let e = b.next_completion().unwrap().result.unwrap_err();
        assert!(
            matches!(e, BackendError::UnexpectedEof { offset: 1024, .. }),
            "{e}"
        );
    }

    #[test]
    fn discard_and_write_zeroes_leave_zeroes() {
        let (tmp, mut b) = image(64 * 1024);
        let mem = memory(0x1000);
        let r = |sector, num_sectors, unmap| SectorRange {
            sector,
            num_sectors,
            unmap,
        };
        b.submit(
            &mem,
            0,
            &BlockOp::Discard {
                ranges: &[r(8, 8, false)],
            },
        )
        .unwrap();
        b.next_completion().unwrap().result.unwrap();
        b.submit(
            &mem,
            1,
            &BlockOp::WriteZeroes {
                ranges: &[r(32, 1, false), r(40, 8, true)],
            },
        )
        .unwrap();
        b.next_completion().unwrap().result.unwrap();
        let data = std::fs::read(tmp.as_path()).unwrap();
        assert_eq!(data.len(), 64 * 1024, "size kept");
        let zero = |from: usize, to: usize| data[from..to].iter().all(|&x| x == 0);
        assert!(zero(4096, 8192));
        assert!(zero(32 * 512, 33 * 512));
        assert!(zero(40 * 512, 48 * 512));
        assert!(!zero(33 * 512, 34 * 512));
        assert!(!zero(0, 512) || data[1] != 0);
        // The zero-writing fallback.
        b.write_zero_bytes(0, 100_000).unwrap();
        assert_eq!(std::fs::metadata(tmp.as_path()).unwrap().len(), 100_000);
    }

    #[test]
    fn a_failed_flush_fails_every_later_flush() {
        let (_tmp, mut b) = image(4096);
        let mem = memory(0x1000);
        b.submit(&mem, 0, &BlockOp::Flush).unwrap();
        b.next_completion().unwrap().result.unwrap();
        // As if fdatasync had reported EIO: the kernel may have dropped
        // the dirty pages, so a later fdatasync could "succeed".
        b.mark_flush_failed();
        for token in 1..3 {
            b.submit(&mem, token, &BlockOp::Flush).unwrap();
            let e = b.next_completion().unwrap().result.unwrap_err();
            assert!(matches!(e, BackendError::FlushFailedBefore { .. }), "{e}");
            assert!(e.to_string().contains("may be lost"), "{e}");
        }
    }

    #[test]
    fn read_only_files_refuse_writes() {
        let tmp = TempFile::new().unwrap();
        std::fs::write(tmp.as_path(), [7u8; 1024]).unwrap();
        let mut b = SyncFileBackend::open(tmp.as_path(), true).unwrap();
        let mem = memory(0x1000);
        b.submit(
            &mem,
            0,
            &BlockOp::Write {
                offset: 0,
                buffers: &[buf(0, 512)],
            },
        )
        .unwrap();
        let e = b.next_completion().unwrap().result.unwrap_err();
        assert!(e.to_string().contains("write at byte 0"), "{e}");
        assert_eq!(std::fs::read(tmp.as_path()).unwrap(), vec![7u8; 1024]);
    }

    /// Found by the `block_file_backend` fuzz target: a write past the end
    /// of the disk grew the image, and a read past it filled guest memory
    /// up to the end before failing.
    #[test]
    fn requests_past_the_end_fail_without_touching_anything() {
        let (tmp, mut b) = image(4096);
        let before = std::fs::read(tmp.as_path()).unwrap();
        let mem = memory(0x2000);
        mem.write_slice(&[0x5a; 0x2000], GuestAddress(0)).unwrap();
        let r = |sector, num_sectors| SectorRange {
            sector,
            num_sectors,
            unmap: false,
        };
        let ops = [
            BlockOp::Write {
                offset: 3584,
                buffers: &[buf(0, 1024)],
            },
            BlockOp::Write {
                offset: 4096,
                buffers: &[buf(0, 512)],
            },
            BlockOp::Read {
                offset: 3584,
                buffers: &[buf(0, 512), buf(0x1000, 512)],
            },
            BlockOp::Read {
                offset: u64::MAX - 10,
                buffers: &[buf(0, 512)],
            },
            BlockOp::Discard {
                ranges: &[r(0, 1), r(7, 2)],
            },
            BlockOp::WriteZeroes {
                ranges: &[r(u64::MAX / 256, 1)],
            },
        ];
        for (token, op) in ops.iter().enumerate() {
            b.submit(&mem, token as u16, op).unwrap();
            let err = b.next_completion().unwrap().result.unwrap_err();
            assert!(
                matches!(err, BackendError::OutOfRange { size: 4096, .. }),
                "{op:?}: {err}"
            );
            assert!(err.to_string().contains("past the end"), "{err}");
        }
        assert_eq!(std::fs::read(tmp.as_path()).unwrap(), before);
        let mut guest = vec![0u8; 0x2000];
        mem.read_slice(&mut guest, GuestAddress(0)).unwrap();
        assert!(guest.iter().all(|&x| x == 0x5a));
        // The last sector itself is fine.
        b.submit(
            &mem,
            9,
            &BlockOp::Write {
                offset: 3584,
                buffers: &[buf(0, 512)],
            },
        )
        .unwrap();
        b.next_completion().unwrap().result.unwrap();
    }

    /// Found by the `block_file_backend` fuzz target: `fallocate` refuses
    /// a zero length, so a zero-sector segment failed the whole request.
    #[test]
    fn zero_sector_ranges_are_no_ops() {
        let (tmp, mut b) = image(4096);
        let before = std::fs::read(tmp.as_path()).unwrap();
        let mem = memory(0x1000);
        let empty = SectorRange {
            sector: 2,
            num_sectors: 0,
            unmap: false,
        };
        for op in [
            BlockOp::Discard { ranges: &[empty] },
            BlockOp::WriteZeroes { ranges: &[empty] },
            BlockOp::WriteZeroes {
                ranges: &[SectorRange {
                    unmap: true,
                    ..empty
                }],
            },
        ] {
            b.submit(&mem, 0, &op).unwrap();
            b.next_completion().unwrap().result.unwrap();
        }
        assert_eq!(std::fs::read(tmp.as_path()).unwrap(), before);
    }

    #[test]
    fn serials_differ_between_files() {
        assert_ne!(serial_from_identity(1, 2), serial_from_identity(1, 3));
        let long = serial_from_identity(u64::MAX, u64::MAX);
        assert!(long.iter().all(|&c| c != 0));
    }
}
