//! Helpers shared by the fuzz targets: guest memory filled from the input,
//! a byte reader over the input, an in-memory block backend, an interrupt
//! line that does nothing, a shared output buffer and an exit handler that
//! records what it is given.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use kindling_devices::InterruptLine;
use kindling_virtio::block::{BackendError, BlockBackend, BlockOp, Completion};
use kindling_virtio::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

/// The size of the fuzzed guest memory.
pub const MEM_SIZE: usize = 0x1_0000;

/// Guest memory of [`MEM_SIZE`] bytes at address 0, starting with `bytes`.
pub fn memory_from(bytes: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = bytes.len().min(MEM_SIZE);
    mem.write_slice(&bytes[..n], GuestAddress(0)).unwrap();
    mem
}

/// Reads numbers off the front of the fuzz input; zeroes once it is used up.
#[derive(Debug)]
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// An interrupt line that does nothing.
#[derive(Debug)]
pub struct NoInterrupt;

impl InterruptLine for NoInterrupt {
    fn trigger(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A block backend over a vector, completing every operation at once.
#[derive(Debug)]
pub struct MemBackend {
    data: Vec<u8>,
    done: VecDeque<Completion>,
}

impl MemBackend {
    /// A disk of `sectors` 512-byte sectors.
    pub fn new(sectors: usize) -> Self {
        Self {
            data: vec![0; sectors * 512],
            done: VecDeque::new(),
        }
    }

    fn run(&mut self, mem: &GuestMemoryMmap, op: &BlockOp<'_>) -> Result<(), BackendError> {
        let oob = |addr: GuestAddress, len: u32| BackendError::GuestMemory { addr: addr.0, len };
        match *op {
            BlockOp::Read { offset, buffers } => {
                let mut at = offset as usize;
                for b in buffers {
                    let len = b.len as usize;
                    mem.write_slice(&self.data[at..at + len], b.addr)
                        .map_err(|_| oob(b.addr, b.len))?;
                    at += len;
                }
            }
            BlockOp::Write { offset, buffers } => {
                let mut at = offset as usize;
                for b in buffers {
                    let len = b.len as usize;
                    mem.read_slice(&mut self.data[at..at + len], b.addr)
                        .map_err(|_| oob(b.addr, b.len))?;
                    at += len;
                }
            }
            BlockOp::Flush => {}
            BlockOp::Discard { ranges } | BlockOp::WriteZeroes { ranges } => {
                for r in ranges {
                    let (start, len) = (r.offset() as usize, r.len() as usize);
                    self.data[start..start + len].fill(0);
                }
            }
        }
        Ok(())
    }
}

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn default_serial(&self) -> [u8; 20] {
        *b"kindling-fuzz-disk\0\0"
    }

    fn submit(
        &mut self,
        mem: &GuestMemoryMmap,
        token: u16,
        op: &BlockOp<'_>,
    ) -> Result<(), BackendError> {
        // The parser guarantees that ranges are inside the disk; indexing
        // out of range here would be a parser bug the fuzzer must report.
        let result = self.run(mem, op);
        self.done.push_back(Completion { token, result });
        Ok(())
    }

    fn next_completion(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }
}

/// A writer whose bytes stay readable through its clones.
#[derive(Debug, Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
