//! The io_uring block engine: reads, writes and flushes go through an
//! io_uring and finish asynchronously; the ring signals an eventfd
//! (registered with `IORING_REGISTER_EVENTFD_ASYNC`) when an operation
//! finishes after `io_uring_enter` returned, and the block device watches
//! that eventfd on the event loop.
//!
//! - Reads and writes are `readv`/`writev` over the guest buffers (one
//!   iovec per piece of a buffer in one guest memory region, at most
//!   [`MAX_IOVECS`] per operation). A short transfer is continued from
//!   where it stopped; one that makes no progress fails the request
//!   ([`BackendError::UnexpectedEof`] for a read, a write error for a
//!   write).
//! - Flush is `fsync` with `IORING_FSYNC_DATASYNC`.
//! - DISCARD and WRITE_ZEROES run synchronously through the
//!   [`SyncFileBackend`] (`fallocate`, which the kernel would run on an
//!   io_uring worker thread anyway); their completions are collected
//!   like the others.
//! - At most as many operations are in flight as the ring has submission
//!   entries (the device's queue size), so the submission and completion
//!   queues cannot overflow; one more is refused with
//!   [`BackendError::Busy`] and the device leaves the request in its
//!   available ring until completions free space.
//! - [`BlockBackend::quiesce`] (device reset) and dropping the engine wait
//!   for every operation in flight, so no I/O writes into guest memory
//!   after the device lets go of it.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{opcode, squeue, types, IoUring};
use vm_memory::bitmap::Bitmap;
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{BackendError, BlockBackend, BlockOp, Completion, SyncFileBackend};
use super::request::GuestBuffer;
use super::{BlockError, ID_BYTES};
use crate::GuestMemoryMmap;

/// The most iovecs one `readv`/`writev` takes (the kernel's `UIO_MAXIOV`);
/// a request with more is transferred in several operations.
pub const MAX_IOVECS: usize = 1024;

/// How many times a submission interrupted or refused for lack of
/// resources is retried on the spot, and an operation that completes with
/// EINTR or EAGAIN is resubmitted, before the error is reported.
const SUBMIT_RETRIES: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Flush => "flush",
        }
    }
}

/// iovecs pointing into guest memory.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the pointers are addresses in guest memory mappings that are not
// tied to a thread; the in-flight operation that owns them keeps a clone
// of the guest memory (`InFlight::memory`), so moving them to another
// thread together with that clone cannot make them dangle.
unsafe impl Send for IoVecs {}

/// An operation the ring owns.
struct InFlight {
    /// The device's token.
    token: u16,
    kind: Kind,
    /// The image offset of `iovecs[next]`.
    offset: u64,
    iovecs: IoVecs,
    /// The first iovec not transferred completely.
    next: usize,
    /// Times the kernel answered EINTR or EAGAIN for this operation.
    retries: u32,
    /// The guest buffers of a read, marked dirty when it completes.
    buffers: Vec<GuestBuffer>,
    /// Keeps the guest memory the iovecs point into mapped until the
    /// operation is over (an inactive device's memory may be dropped by
    /// everyone else).
    memory: Option<GuestMemoryMmap>,
}

impl InFlight {
    /// Records `n` more bytes transferred; returns whether the transfer
    /// is complete.
    fn advance(&mut self, mut n: usize) -> bool {
        self.offset += n as u64;
        while n > 0 && self.next < self.iovecs.0.len() {
            let iov = &mut self.iovecs.0[self.next];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                self.next += 1;
            } else {
                // Still inside the same mapped buffer.
                iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(n).cast();
                iov.iov_len -= n;
                n = 0;
            }
        }
        self.next == self.iovecs.0.len()
    }
}

/// The io_uring engine on a raw image file.
pub struct IoUringBackend {
    sync: SyncFileBackend,
    ring: IoUring,
    event: EventFd,
    /// Operations by slot (the `user_data` of their SQE).
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    in_flight: usize,
    ready: VecDeque<Completion>,
    /// Set while [`BlockBackend::quiesce`] drops completions.
    quiescing: bool,
}

impl fmt::Debug for IoUringBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoUringBackend")
            .field("file", &self.sync)
            .field("entries", &self.slots.len())
            .field("in_flight", &self.in_flight)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl IoUringBackend {
    /// Opens the image at `path` with a ring of `entries` submission
    /// entries (the device's queue size: at most that many operations are
    /// in flight). Fails with [`BlockError::IoUring`] when the host has
    /// no usable io_uring (an old kernel, or io_uring disabled by sysctl
    /// or a seccomp filter).
    pub fn open(path: &Path, read_only: bool, entries: u16) -> Result<Self, BlockError> {
        Self::new(SyncFileBackend::open(path, read_only)?, entries)
    }

    /// Uses the file of `sync` (which also runs DISCARD and WRITE_ZEROES)
    /// with a ring of `entries` submission entries.
    pub fn new(sync: SyncFileBackend, entries: u16) -> Result<Self, BlockError> {
        let setup = |source: io::Error| BlockError::IoUring {
            path: sync.path().to_path_buf(),
            source,
        };
        let ring = IoUring::new(u32::from(entries)).map_err(setup)?;
        let event = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
        ring.submitter()
            .register_eventfd_async(event.as_raw_fd())
            .map_err(setup)?;
        let entries = usize::from(entries);
        Ok(Self {
            sync,
            ring,
            event,
            slots: (0..entries).map(|_| None).collect(),
            free: (0..entries).rev().collect(),
            in_flight: 0,
            ready: VecDeque::new(),
            quiescing: false,
        })
    }

    /// Operations handed to the ring and not collected yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn entry(&self, slot: usize, op: &InFlight) -> squeue::Entry {
        let fd = types::Fd(self.sync.file().as_raw_fd());
        let iovecs = &op.iovecs.0[op.next..];
        let n = iovecs.len().min(MAX_IOVECS) as u32;
        let entry = match op.kind {
            Kind::Read => opcode::Readv::new(fd, iovecs.as_ptr(), n)
                .offset(op.offset)
                .build(),
            Kind::Write => opcode::Writev::new(fd, iovecs.as_ptr(), n)
                .offset(op.offset)
                .build(),
            Kind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        entry.user_data(slot as u64)
    }

    /// Puts the operation in `slot` (already stored there) on the
    /// submission queue.
    fn push(&mut self, slot: usize) -> Result<(), BackendError> {
        let Some(op) = self.slots[slot].as_ref() else {
            return Ok(());
        };
        let entry = self.entry(slot, op);
        for attempt in 0..2 {
            // SAFETY: the SQE points at the heap buffer of the slot's iovec
            // Vec, which stays in place (moving the `InFlight` does not
            // move it, and it is never resized) until the operation's
            // completion is collected, and the iovecs point into guest
            // memory that the slot keeps mapped (`InFlight::memory`); the
            // slot is only emptied when its completion has been reaped
            // (`complete`), and `quiesce`, which runs on reset and before
            // the ring is dropped, waits for every operation in flight.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            if attempt == 0 {
                // The queue is full of entries not handed over yet.
                self.push_submissions()?;
            }
        }
        Err(BackendError::Busy)
    }

    /// Takes a slot for `op`, or says the engine is full.
    fn start(&mut self, op: InFlight) -> Result<(), BackendError> {
        let Some(slot) = self.free.pop() else {
            return Err(BackendError::Busy);
        };
        self.slots[slot] = Some(op);
        self.in_flight += 1;
        if let Err(e) = self.push(slot) {
            self.slots[slot] = None;
            self.in_flight -= 1;
            self.free.push(slot);
            return Err(e);
        }
        Ok(())
    }

    /// Builds the iovecs of `buffers`.
    fn iovecs(
        memory: &GuestMemoryMmap,
        buffers: &[GuestBuffer],
    ) -> Result<Vec<libc::iovec>, BackendError> {
        let mut iovecs = Vec::with_capacity(buffers.len());
        for b in buffers {
            for slice in memory.get_slices(b.addr, b.len as usize) {
                let slice = slice.map_err(|_| BackendError::GuestMemory {
                    addr: b.addr.0,
                    len: b.len,
                })?;
                // For mmap-backed guest memory the guard is the mapping's
                // own address, valid as long as the mapping is.
                let guard = slice.ptr_guard_mut();
                iovecs.push(libc::iovec {
                    iov_base: guard.as_ptr().cast(),
                    iov_len: slice.len(),
                });
            }
        }
        Ok(iovecs)
    }

    fn finish(&mut self, slot: usize, op: InFlight, result: Result<(), BackendError>) {
        self.slots[slot] = None;
        self.free.push(slot);
        self.in_flight -= 1;
        if self.quiescing {
            return;
        }
        if result.is_ok() && op.kind == Kind::Read {
            if let Some(memory) = &op.memory {
                for b in &op.buffers {
                    for slice in memory.get_slices(b.addr, b.len as usize).flatten() {
                        slice.bitmap().mark_dirty(0, slice.len());
                    }
                }
            }
        }
        self.ready.push_back(Completion {
            token: op.token,
            result,
        });
    }

    /// Handles the completion of the operation in `slot` with the
    /// kernel's `result`.
    fn complete(&mut self, slot: usize, result: i32) {
        let Some(op) = self.slots.get_mut(slot).and_then(Option::take) else {
            kindling_devices::log_limited!(
                log::Level::Error,
                "virtio-blk io_uring: completion for slot {slot}, which is not in use"
            );
            return;
        };
        let io_error = |op: &InFlight, source: io::Error, sync: &SyncFileBackend| {
            sync.io_error(op.kind.name(), op.offset, source)
        };
        let mut op = op;
        if result < 0 {
            let errno = -result;
            if (errno == libc::EINTR || errno == libc::EAGAIN)
                && !self.quiescing
                && op.retries < SUBMIT_RETRIES
            {
                op.retries += 1;
                self.resubmit(slot, op);
                return;
            }
            let e = io_error(&op, io::Error::from_raw_os_error(errno), &self.sync);
            if op.kind == Kind::Flush {
                // Data may be lost: no later flush may succeed.
                self.sync.mark_flush_failed();
            }
            self.finish(slot, op, Err(e));
            return;
        }
        if op.kind == Kind::Flush || self.quiescing {
            self.finish(slot, op, Ok(()));
            return;
        }
        let n = result as usize;
        if n == 0 {
            let e = match op.kind {
                Kind::Read => BackendError::UnexpectedEof {
                    offset: op.offset,
                    path: self.sync.path().to_path_buf(),
                },
                _ => io_error(&op, io::ErrorKind::WriteZero.into(), &self.sync),
            };
            self.finish(slot, op, Err(e));
            return;
        }
        if op.advance(n) {
            self.finish(slot, op, Ok(()));
        } else {
            // A short transfer: continue with the rest.
            self.resubmit(slot, op);
        }
    }

    /// Puts `op` back on the ring in `slot`.
    fn resubmit(&mut self, slot: usize, op: InFlight) {
        self.slots[slot] = Some(op);
        let pushed = self.push(slot).and_then(|()| self.push_submissions());
        match pushed {
            Ok(()) => {}
            // Queued: it goes with the next submission.
            Err(e @ BackendError::Submit { .. }) => {
                kindling_devices::log_limited!(
                    log::Level::Warn,
                    "virtio-blk io_uring: {e}; retried with the next submission"
                )
            }
            Err(e) => {
                if let Some(op) = self.slots[slot].take() {
                    self.finish(slot, op, Err(e));
                }
            }
        }
    }

    /// Collects every completion the kernel has posted.
    fn reap(&mut self) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                return;
            };
            self.complete(cqe.user_data() as usize, cqe.result());
        }
    }
}

impl BlockBackend for IoUringBackend {
    fn size(&self) -> u64 {
        self.sync.size()
    }

    fn default_serial(&self) -> [u8; ID_BYTES] {
        self.sync.default_serial()
    }

    fn submit(
        &mut self,
        memory: &GuestMemoryMmap,
        token: u16,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError> {
        // Never past the end of the disk (the parser checks too; this is
        // the engine's own line of defence, as in the sync engine).
        if let Err(e) = op.check_range(BlockBackend::size(&self.sync)) {
            self.ready.push_back(Completion {
                token,
                result: Err(e),
            });
            return Ok(());
        }
        let (kind, offset, buffers) = match *op {
            BlockOp::Read { offset, buffers } => (Kind::Read, offset, buffers),
            BlockOp::Write { offset, buffers } => (Kind::Write, offset, buffers),
            BlockOp::Flush if self.sync.flush_failed() => {
                let result = Err(self.sync.flush_failed_error());
                self.ready.push_back(Completion { token, result });
                return Ok(());
            }
            BlockOp::Flush => (Kind::Flush, 0, &[][..]),
            BlockOp::Discard { .. } | BlockOp::WriteZeroes { .. } => {
                let result = self.sync.execute(memory, op);
                self.ready.push_back(Completion { token, result });
                return Ok(());
            }
        };
        if self.free.is_empty() {
            return Err(BackendError::Busy);
        }
        let iovecs = match Self::iovecs(memory, buffers) {
            Ok(iovecs) => iovecs,
            Err(e) => {
                self.ready.push_back(Completion {
                    token,
                    result: Err(e),
                });
                return Ok(());
            }
        };
        if kind != Kind::Flush && iovecs.is_empty() {
            self.ready.push_back(Completion {
                token,
                result: Ok(()),
            });
            return Ok(());
        }
        self.start(InFlight {
            token,
            kind,
            offset,
            iovecs: IoVecs(iovecs),
            next: 0,
            retries: 0,
            buffers: if kind == Kind::Read {
                buffers.to_vec()
            } else {
                Vec::new()
            },
            memory: (kind != Kind::Flush).then(|| memory.clone()),
        })
    }

    fn next_completion(&mut self) -> Option<Completion> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Some(c);
            }
            let cqe = self.ring.completion().next()?;
            self.complete(cqe.user_data() as usize, cqe.result());
        }
    }

    fn completion_event(&self) -> Option<&EventFd> {
        Some(&self.event)
    }

    fn push_submissions(&mut self) -> Result<(), BackendError> {
        let mut retries = 0;
        while !self.ring.submission().is_empty() {
            match self.ring.submit() {
                Ok(_) => retries = 0,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) && retries < SUBMIT_RETRIES =>
                {
                    retries += 1;
                    // EBUSY: the completion queue is full; make room.
                    self.reap();
                    std::thread::yield_now();
                }
                Err(source) => {
                    return Err(BackendError::Submit {
                        path: self.sync.path().to_path_buf(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn quiesce(&mut self) {
        self.quiescing = true;
        let mut reported = false;
        loop {
            self.reap();
            if self.in_flight == 0 {
                break;
            }
            // Hands over anything still queued and waits for a completion.
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    if !reported {
                        kindling_devices::log_limited!(log::Level::Error,
                            "virtio-blk io_uring: cannot wait for I/O on {} in flight: {e}; polling",
                            self.sync.path().display()
                        );
                        reported = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        self.ready.clear();
        self.quiescing = false;
    }
}

impl Drop for IoUringBackend {
    fn drop(&mut self) {
        // The ring's operations point into guest memory that the slots
        // keep mapped: let them finish before both go.
        self.quiesce();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::request::SectorRange;
    use crate::queue::tests::memory;
    use kindling_memory::DirtyBitmap;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::tempfile::TempFile;

    fn image(size: usize, entries: u16) -> (TempFile, IoUringBackend) {
        let tmp = TempFile::new().unwrap();
        let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(tmp.as_path(), &pattern).unwrap();
        let backend = IoUringBackend::open(tmp.as_path(), false, entries).unwrap();
        (tmp, backend)
    }

    fn buf(addr: u64, len: u32) -> GuestBuffer {
        GuestBuffer {
            addr: GuestAddress(addr),
            len,
        }
    }

    /// Hands the queued operations over and waits for `n` completions.
    fn wait(b: &mut IoUringBackend, n: usize) -> Vec<Completion> {
        b.push_submissions().unwrap();
        let mut done = Vec::new();
        while done.len() < n {
            match b.next_completion() {
                Some(c) => done.push(c),
                None => {
                    b.ring.submit_and_wait(1).unwrap();
                }
            }
        }
        done
    }

    /// Waits until the completion eventfd is readable.
    fn wait_for_event(b: &IoUringBackend) {
        let mut pfd = libc::pollfd {
            fd: b.completion_event().unwrap().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(n, 1, "the completion eventfd was not signalled");
    }

    #[test]
    fn reads_writes_and_flushes_cross_guest_regions() {
        let (tmp, mut b) = image(8192, 8);
        assert_eq!(b.size(), 8192);
        assert!(b.default_serial().iter().any(|&c| c != 0));
        assert!(format!("{b:?}").contains("IoUringBackend"));
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
        ])
        .unwrap();
        // The first buffer spans both regions.
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
        assert_eq!(b.in_flight(), 1);
        let c = wait(&mut b, 1);
        assert_eq!(c[0].token, 3);
        c[0].result.as_ref().unwrap();
        assert_eq!(b.in_flight(), 0);
        let mut got = [0u8; 0x400];
        mem.read_slice(&mut got[..0x200], GuestAddress(0xf00))
            .unwrap();
        mem.read_slice(&mut got[0x200..], GuestAddress(0x1800))
            .unwrap();
        for (i, &x) in got.iter().enumerate() {
            assert_eq!(x, ((512 + i) % 251) as u8, "byte {i}");
        }
        // The VMM's writes are in the dirty bitmap, pages of both regions.
        let dirty = DirtyBitmap::take_vmm_writes(&mem);
        assert!(dirty.is_dirty(GuestAddress(0xf00)));
        assert!(dirty.is_dirty(GuestAddress(0x1800)));
        assert_eq!(dirty.dirty_pages(), 2);

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
        wait(&mut b, 1)[0].result.as_ref().unwrap();
        // A flush finishes on an io_uring worker: it signals the eventfd
        // (cleared first: the write may have finished on a worker too).
        let _ = b.completion_event().unwrap().read();
        b.submit(&mem, 5, &BlockOp::Flush).unwrap();
        b.push_submissions().unwrap();
        wait_for_event(&b);
        b.completion_event().unwrap().read().unwrap();
        let c = b.next_completion().unwrap();
        assert_eq!(c.token, 5);
        c.result.unwrap();
        let data = std::fs::read(tmp.as_path()).unwrap();
        assert!(data[..0x200].iter().all(|&x| x == 0xab));
        assert_eq!(data[0x200], (0x200 % 251) as u8);
    }

    #[test]
    fn requests_past_the_end_of_the_disk_fail_and_change_nothing() {
        let (tmp, mut b) = image(4096, 4);
        let mem = memory(0x2000);
        b.submit(
            &mem,
            1,
            &BlockOp::Write {
                offset: 3584,
                buffers: &[buf(0, 1024)],
            },
        )
        .unwrap();
        let e = b.next_completion().unwrap().result.unwrap_err();
        assert!(matches!(e, BackendError::OutOfRange { .. }), "{e}");
        assert_eq!(std::fs::metadata(tmp.as_path()).unwrap().len(), 4096);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn bad_buffers_and_empty_transfers_complete_at_once() {
        let (_tmp, mut b) = image(4096, 4);
        let mem = memory(0x1000);
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
        b.submit(
            &mem,
            7,
            &BlockOp::Write {
                offset: 0,
                buffers: &[],
            },
        )
        .unwrap();
        let c = b.next_completion().unwrap();
        assert_eq!(c.token, 7);
        c.result.unwrap();
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn a_short_read_continues_then_fails_at_the_end_of_the_file() {
        let (tmp, mut b) = image(4096, 4);
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.as_path())
            .unwrap()
            .set_len(1024)
            .unwrap();
        let mem = memory(0x10000);
        mem.write_slice(&[0xee; 2048], GuestAddress(0)).unwrap();
        b.submit(
            &mem,
            0,
            &BlockOp::Read {
                offset: 512,
                buffers: &[buf(0, 2048)],
            },
        )
        .unwrap();
        let c = wait(&mut b, 1);
        // 512 bytes came, then nothing: the read fails where the file
        // ended, after the part that was there was transferred.
        let e = c[0].result.as_ref().unwrap_err();
        assert!(
            matches!(e, BackendError::UnexpectedEof { offset: 1024, .. }),
            "{e}"
        );
        let mut got = [0u8; 2];
        mem.read_slice(&mut got, GuestAddress(511)).unwrap();
        assert_eq!(got, [((512 + 511) % 251) as u8, 0xee]);
    }

    #[test]
    fn requests_with_more_iovecs_than_readv_takes_are_split() {
        let n = MAX_IOVECS + 40;
        let (tmp, mut b) = image(n * 512, 4);
        let mem = memory((n * 1024) as u64);
        // Every other 512-byte block of guest memory: one iovec each.
        let bufs: Vec<GuestBuffer> = (0..n).map(|i| buf(i as u64 * 1024, 512)).collect();
        b.submit(
            &mem,
            1,
            &BlockOp::Read {
                offset: 0,
                buffers: &bufs,
            },
        )
        .unwrap();
        wait(&mut b, 1)[0].result.as_ref().unwrap();
        let mut last = [0u8; 512];
        mem.read_slice(&mut last, GuestAddress((n as u64 - 1) * 1024))
            .unwrap();
        assert_eq!(last[0], (((n - 1) * 512) % 251) as u8);
        // And back, shifted by one block.
        b.submit(
            &mem,
            2,
            &BlockOp::Write {
                offset: 512,
                buffers: &bufs[..n - 1],
            },
        )
        .unwrap();
        wait(&mut b, 1)[0].result.as_ref().unwrap();
        let data = std::fs::read(tmp.as_path()).unwrap();
        assert_eq!(data[(n - 1) * 512], (((n - 2) * 512) % 251) as u8);
        assert_eq!(data[512], 0);
    }

    #[test]
    fn a_full_engine_refuses_more_until_completions_free_space() {
        let (_tmp, mut b) = image(4096, 2);
        let mem = memory(0x1000);
        b.submit(&mem, 0, &BlockOp::Flush).unwrap();
        b.submit(&mem, 1, &BlockOp::Flush).unwrap();
        assert!(matches!(
            b.submit(&mem, 2, &BlockOp::Flush),
            Err(BackendError::Busy)
        ));
        let mut tokens: Vec<u16> = wait(&mut b, 2).iter().map(|c| c.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, vec![0, 1]);
        b.submit(&mem, 2, &BlockOp::Flush).unwrap();
        assert_eq!(wait(&mut b, 1)[0].token, 2);
    }

    #[test]
    fn discard_and_write_zeroes_run_synchronously() {
        let (tmp, mut b) = image(64 * 1024, 4);
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
        b.submit(
            &mem,
            1,
            &BlockOp::WriteZeroes {
                ranges: &[r(40, 8, true)],
            },
        )
        .unwrap();
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.next_completion().unwrap().token, 0);
        b.next_completion().unwrap().result.unwrap();
        let data = std::fs::read(tmp.as_path()).unwrap();
        assert!(data[4096..8192].iter().all(|&x| x == 0));
        assert!(data[40 * 512..48 * 512].iter().all(|&x| x == 0));
        assert_ne!(data[48 * 512 + 1], 0);
    }

    #[test]
    fn quiesce_waits_for_requests_in_flight() {
        let (_tmp, mut b) = image(256 * 1024, 64);
        let mem = memory(0x40000);
        for i in 0..63u16 {
            b.submit(
                &mem,
                i,
                &BlockOp::Read {
                    offset: u64::from(i) * 4096,
                    buffers: &[buf(u64::from(i) * 4096, 4096)],
                },
            )
            .unwrap();
        }
        b.submit(&mem, 63, &BlockOp::Flush).unwrap();
        b.push_submissions().unwrap();
        assert_eq!(b.in_flight(), 64);
        b.quiesce();
        // Nothing is in flight and nothing is left to collect: the device
        // can let go of guest memory.
        assert_eq!(b.in_flight(), 0);
        assert!(b.next_completion().is_none());
        // Every read had finished writing guest memory.
        let mut last = [0u8; 1];
        mem.read_slice(&mut last, GuestAddress(62 * 4096 + 4095))
            .unwrap();
        assert_eq!(last[0], ((62 * 4096 + 4095) % 251) as u8);
        // Operations queued but never handed over are waited for too.
        b.submit(&mem, 1, &BlockOp::Flush).unwrap();
        b.quiesce();
        assert_eq!(b.in_flight(), 0);
        assert!(b.next_completion().is_none());
        // And the engine works afterwards.
        b.submit(&mem, 2, &BlockOp::Flush).unwrap();
        assert_eq!(wait(&mut b, 1)[0].token, 2);
    }

    #[test]
    fn dropping_the_engine_waits_for_its_requests() {
        let (_tmp, mut b) = image(64 * 1024, 16);
        let mem = memory(0x10000);
        for i in 0..16u16 {
            b.submit(
                &mem,
                i,
                &BlockOp::Read {
                    offset: u64::from(i) * 4096,
                    buffers: &[buf(u64::from(i) * 4096, 4096)],
                },
            )
            .unwrap();
        }
        b.push_submissions().unwrap();
        drop(b);
        let mut last = [0u8; 1];
        mem.read_slice(&mut last, GuestAddress(0xffff)).unwrap();
        assert_eq!(last[0], (0xffff % 251) as u8);
    }

    #[test]
    fn writes_to_a_read_only_image_fail_and_setup_errors_name_the_disk() {
        let tmp = TempFile::new().unwrap();
        std::fs::write(tmp.as_path(), [7u8; 1024]).unwrap();
        let mut b = IoUringBackend::open(tmp.as_path(), true, 2).unwrap();
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
        let e = wait(&mut b, 1).remove(0).result.unwrap_err();
        assert!(e.to_string().contains("write at byte 0"), "{e}");
        assert_eq!(std::fs::read(tmp.as_path()).unwrap(), vec![7u8; 1024]);
        // A ring the kernel refuses (zero entries), as when io_uring is
        // unavailable: a setup error naming the image.
        let e = IoUringBackend::open(tmp.as_path(), true, 0).unwrap_err();
        assert!(matches!(e, BlockError::IoUring { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&tmp.as_path().display().to_string()),
            "{text}"
        );
        assert!(text.contains("engine=sync"), "{text}");
    }

    #[test]
    fn short_transfers_advance_the_iovecs() {
        let mut data = [0u8; 64];
        let mut op = InFlight {
            token: 0,
            kind: Kind::Read,
            offset: 100,
            iovecs: IoVecs(vec![
                libc::iovec {
                    iov_base: data.as_mut_ptr().cast(),
                    iov_len: 16,
                },
                libc::iovec {
                    // SAFETY: 16 is inside `data`.
                    iov_base: unsafe { data.as_mut_ptr().add(16) }.cast(),
                    iov_len: 48,
                },
            ]),
            next: 0,
            retries: 0,
            buffers: Vec::new(),
            memory: None,
        };
        assert!(!op.advance(20));
        assert_eq!((op.next, op.offset, op.iovecs.0[1].iov_len), (1, 120, 44));
        assert_eq!(op.iovecs.0[1].iov_base, data[20..].as_mut_ptr().cast());
        assert!(!op.advance(43));
        assert!(op.advance(1));
        assert_eq!(op.offset, 164);
    }
}
