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
/// resources is retried on the spot before the error is reported.
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
            // SAFETY: the SQE points at `slots[slot]`'s iovec array, which
            // stays in place (it is not resized) until the operation's
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
            log::error!("virtio-blk io_uring: completion for slot {slot}, which is not in use");
            return;
        };
        let io_error = |op: &InFlight, source: io::Error, sync: &SyncFileBackend| {
            sync.io_error(op.kind.name(), op.offset, source)
        };
        if result < 0 {
            let errno = -result;
            if (errno == libc::EINTR || errno == libc::EAGAIN) && !self.quiescing {
                self.resubmit(slot, op);
                return;
            }
            let e = io_error(&op, io::Error::from_raw_os_error(errno), &self.sync);
            self.finish(slot, op, Err(e));
            return;
        }
        let mut op = op;
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
                log::warn!("virtio-blk io_uring: {e}; retried with the next submission")
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
        let (kind, offset, buffers) = match *op {
            BlockOp::Read { offset, buffers } => (Kind::Read, offset, buffers),
            BlockOp::Write { offset, buffers } => (Kind::Write, offset, buffers),
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
                        log::error!(
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
