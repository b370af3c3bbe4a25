//! The virtio entropy device (virtio-rng, virtio 1.2 §5.4): it fills the
//! guest's device-writable buffers with bytes from the host's
//! `getrandom(2)`.

use std::io;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::chain::collect_descriptors;
use crate::device::{ActivateError, Activation, Active, DeviceType, QueueProgress, VirtioDevice};
use crate::queue::{drain_queue, QueueError, MAX_QUEUE_SIZE};
use crate::{features, GuestMemoryMmap};

/// The default (and maximum offered) queue size.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes served per request; the driver is told how many it got
/// and asks again for more.
pub const MAX_BYTES_PER_REQUEST: u32 = 64 * 1024;

/// Errors creating an entropy device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntropyError {
    /// The queue size is not a power of two between 1 and 32768.
    #[error("entropy queue size {0} is not a power of two between 1 and 32768")]
    InvalidQueueSize(u16),
}

/// The entropy device's state, for snapshots. It has no guest-visible
/// state of its own beyond its queue (which the transport records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntropyState {
    /// The maximum queue size offered.
    pub queue_size: u16,
}

/// A virtio entropy device.
///
/// # Example
///
/// ```
/// use kindling_memory::Persist;
/// use kindling_virtio::rng::Entropy;
/// use kindling_virtio::{DeviceType, VirtioDevice};
///
/// let rng = Entropy::new();
/// assert_eq!(rng.device_type(), DeviceType::Rng);
/// let copy = Entropy::restore((), &rng.save().unwrap()).unwrap();
/// assert_eq!(copy.queue_max_sizes(), &[256]);
/// ```
#[derive(Debug)]
pub struct Entropy {
    queue_sizes: [u16; 1],
    active: Option<Active>,
    scratch: Vec<Descriptor>,
}

impl Default for Entropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy {
    /// An entropy device with a queue of [`QUEUE_SIZE`].
    pub fn new() -> Self {
        Self {
            queue_sizes: [QUEUE_SIZE],
            active: None,
            scratch: Vec::new(),
        }
    }

    /// An entropy device with a queue of `queue_size` entries.
    pub fn with_queue_size(queue_size: u16) -> Result<Self, EntropyError> {
        if queue_size == 0 || queue_size > MAX_QUEUE_SIZE || !queue_size.is_power_of_two() {
            return Err(EntropyError::InvalidQueueSize(queue_size));
        }
        Ok(Self {
            queue_sizes: [queue_size],
            ..Self::new()
        })
    }
}

/// Fills `[addr, addr + len)` of guest memory from `getrandom`.
fn fill_random(memory: &GuestMemoryMmap, addr: GuestAddress, len: usize) -> io::Result<()> {
    for slice in memory.get_slices(addr, len) {
        let slice = slice.map_err(io::Error::other)?;
        let guard = slice.ptr_guard_mut();
        let mut done = 0;
        while done < slice.len() {
            // SAFETY: the pointer and length describe a mapped region of
            // guest memory (`slice`) that outlives the call; the guest may
            // race with the write, which is harmless for plain bytes.
            let n =
                unsafe { libc::getrandom(guard.as_ptr().add(done).cast(), slice.len() - done, 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            done += n as usize;
        }
        slice.bitmap().mark_dirty(0, slice.len());
    }
    Ok(())
}

/// Serves one request: every descriptor must be device-writable. Returns
/// the number of bytes written (0 for a malformed request).
fn serve(
    memory: &GuestMemoryMmap,
    descriptors: impl IntoIterator<Item = Descriptor>,
    scratch: &mut Vec<Descriptor>,
) -> u32 {
    if let Err(e) = collect_descriptors(descriptors, scratch) {
        kindling_devices::log_limited!(log::Level::Warn, "virtio-rng: request dropped: {e}");
        return 0;
    }
    if scratch.iter().any(|d| !d.is_write_only()) {
        kindling_devices::log_limited!(
            log::Level::Warn,
            "virtio-rng: request dropped: it has a device-readable buffer"
        );
        return 0;
    }
    let mut written: u32 = 0;
    for desc in scratch.iter() {
        let len = desc.len().min(MAX_BYTES_PER_REQUEST - written);
        if len == 0 {
            break;
        }
        if let Err(e) = fill_random(memory, desc.addr(), len as usize) {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio-rng: buffer at {:#x} ({len} bytes): {e}",
                desc.addr().0
            );
            return 0;
        }
        written += len;
    }
    written
}

/// The entropy device has no event source besides its queue.
impl kindling_devices::DeviceEvents for Entropy {}

impl VirtioDevice for Entropy {
    fn device_type(&self) -> DeviceType {
        DeviceType::Rng
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        features::COMMON
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive(DeviceType::Rng));
        }
        self.active = Some(Active::new(DeviceType::Rng, activation, 1, &[])?);
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(QueueProgress::Done);
        };
        let scratch = &mut self.scratch;
        active.run_queue(index, |queue, memory| {
            drain_queue(queue, memory, |queue, head, chain| {
                let len = serve(memory, chain, scratch);
                queue.add_used(memory, head, len)?;
                Ok(true)
            })
        })
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| a.queues.as_slice())
    }
}

mod persist;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupt::tests::CountingLine;
    use crate::queue::tests::memory;
    use crate::VirtioInterrupt;
    use std::sync::Arc;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;

    const W: u16 = VRING_DESC_F_WRITE as u16;
    const N: u16 = VRING_DESC_F_NEXT as u16;

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    struct Fixture {
        rng: Entropy,
        mem: GuestMemoryMmap,
        line: Arc<CountingLine>,
    }

    fn activated(mem: &GuestMemoryMmap, vq: &MockSplitQueue<'_, GuestMemoryMmap>) -> Fixture {
        let line = Arc::new(CountingLine::default());
        let mut rng = Entropy::with_queue_size(16).unwrap();
        rng.activate(Activation {
            memory: mem.clone(),
            interrupt: VirtioInterrupt::new(line.clone()),
            queues: vec![vq.create_queue().unwrap()],
            acked_features: features::COMMON,
        })
        .unwrap();
        Fixture {
            rng,
            mem: mem.clone(),
            line,
        }
    }

    fn used(vq: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> (u32, u32) {
        let e = vq.used().ring().ref_at(i).unwrap().load();
        (e.id(), e.len())
    }

    #[test]
    fn fills_write_only_buffers_with_random_bytes() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut f = activated(&mem, &vq);
        vq.add_desc_chains(&[raw(0x8000, 64, W | N, 1), raw(0x9000, 64, W, 0)], 0)
            .unwrap();
        f.rng.process_queue(0).unwrap();
        assert_eq!(used(&vq, 0), (0, 128));
        assert_eq!(f.line.count(), 1);
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        f.mem.read_slice(&mut a, GuestAddress(0x8000)).unwrap();
        f.mem.read_slice(&mut b, GuestAddress(0x9000)).unwrap();
        assert!(a.iter().any(|&x| x != 0) && b.iter().any(|&x| x != 0));
        assert_ne!(a, b);
    }

    #[test]
    fn large_requests_are_capped() {
        let mem = memory(0x40_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut f = activated(&mem, &vq);
        vq.add_desc_chains(&[raw(0x10_0000, 0x20_0000, W, 0)], 0)
            .unwrap();
        f.rng.process_queue(0).unwrap();
        assert_eq!(used(&vq, 0), (0, MAX_BYTES_PER_REQUEST));
    }

    #[test]
    fn malformed_requests_are_returned_empty_and_the_device_keeps_working() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut f = activated(&mem, &vq);
        // A device-readable buffer, a buffer outside memory, a loop.
        vq.add_desc_chains(&[raw(0x8000, 64, 0, 0)], 0).unwrap();
        vq.add_desc_chains(&[raw(0x20_0000, 64, W, 0)], 1).unwrap();
        vq.add_desc_chains(&[raw(0x8000, 8, W | N, 2)], 2).unwrap();
        vq.add_desc_chains(&[raw(0x9000, 8, W, 0)], 3).unwrap();
        f.rng.process_queue(0).unwrap();
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (1, 0));
        assert_eq!(used(&vq, 2), (2, 0));
        assert_eq!(used(&vq, 3), (3, 8));
        assert_eq!(vq.used().idx().load(), 4);
    }

    #[test]
    fn a_broken_ring_asks_for_reset_and_reset_deactivates() {
        let mem = memory(0x10_0000);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let mut f = activated(&mem, &vq);
        vq.avail().idx().store(100);
        assert!(matches!(
            f.rng.process_queue(0),
            Err(QueueError::Ring { index: 0, .. })
        ));
        let irq = f.rng.active.as_ref().unwrap().interrupt.clone();
        assert!(irq.needs_reset());
        // Broken: further notifications do nothing.
        f.rng.process_queue(0).unwrap();
        assert!(matches!(
            f.rng.process_queue(3),
            Ok(QueueProgress::Done) // broken devices ignore everything
        ));
        f.rng.reset();
        assert!(!f.rng.is_activated());
        assert!(f.rng.queues().is_empty());
        f.rng.process_queue(0).unwrap();
    }

    #[test]
    fn identity_config_and_activation_rules() {
        let mut rng = Entropy::default();
        assert_eq!(rng.device_features(), features::COMMON);
        let mut buf = [0xffu8; 4];
        rng.read_config(0, &mut buf);
        assert_eq!(buf, [0; 4]);
        rng.write_config(0, &[1]);
        assert_eq!(
            Entropy::with_queue_size(3).unwrap_err().to_string(),
            "entropy queue size 3 is not a power of two between 1 and 32768"
        );
        let mem = memory(0x10000);
        let line = Arc::new(CountingLine::default());
        let act = |queues| Activation {
            memory: mem.clone(),
            interrupt: VirtioInterrupt::new(line.clone()),
            queues,
            acked_features: 0,
        };
        assert_eq!(
            rng.activate(act(vec![])),
            Err(ActivateError::QueueCount {
                device: DeviceType::Rng,
                expected: 1,
                got: 0
            })
        );
        rng.activate(act(vec![Queue::new(16).unwrap()])).unwrap();
        // An idle queue: nothing to do.
        rng.process_queue(0).unwrap();
        assert!(matches!(
            rng.process_queue(1),
            Err(QueueError::NoSuchQueue { index: 1 })
        ));
        assert_eq!(
            rng.activate(act(vec![Queue::new(16).unwrap()])),
            Err(ActivateError::AlreadyActive(DeviceType::Rng))
        );
    }
}
