//! How a device signals its driver: the interrupt status bits, the
//! configuration generation and the "needs reset" condition, shared between
//! the device (event-loop thread) and the transport (vCPU threads) without
//! a lock.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use kindling_devices::InterruptLine;

mod persist;

pub use persist::InterruptStateError;

/// InterruptStatus bit: the device used a buffer in at least one queue
/// (virtio-bindings' `VIRTIO_MMIO_INT_VRING`).
pub const INT_VRING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit: the device configuration changed
/// (virtio-bindings' `VIRTIO_MMIO_INT_CONFIG`).
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

struct Inner {
    status: AtomicU32,
    config_generation: AtomicU32,
    needs_reset: AtomicBool,
    line: Arc<dyn InterruptLine>,
}

/// A device's handle for signalling the driver. Cloning it is cheap; all
/// clones share the same status.
#[derive(Clone)]
pub struct VirtioInterrupt {
    inner: Arc<Inner>,
}

impl fmt::Debug for VirtioInterrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioInterrupt")
            .field("state", &self.state())
            .finish()
    }
}

/// The guest-visible part of a [`VirtioInterrupt`], for snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterruptState {
    /// The InterruptStatus register.
    pub status: u32,
    /// The ConfigGeneration register.
    pub config_generation: u32,
    /// Whether the device asked for a reset (DEVICE_NEEDS_RESET).
    pub needs_reset: bool,
}

impl VirtioInterrupt {
    /// Creates a handle that raises `line`.
    pub fn new(line: Arc<dyn InterruptLine>) -> Self {
        Self::from_checked_state(&InterruptState::default(), line)
    }

    /// Recreates a handle from a state that is either the initial one or
    /// one [`Persist::restore`](kindling_memory::Persist::restore) has
    /// checked.
    pub(crate) fn from_checked_state(state: &InterruptState, line: Arc<dyn InterruptLine>) -> Self {
        Self {
            inner: Arc::new(Inner {
                status: AtomicU32::new(state.status),
                config_generation: AtomicU32::new(state.config_generation),
                needs_reset: AtomicBool::new(state.needs_reset),
                line,
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> InterruptState {
        InterruptState {
            status: self.status(),
            config_generation: self.config_generation(),
            needs_reset: self.needs_reset(),
        }
    }

    /// Tells the driver that buffers were used.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.status.fetch_or(INT_VRING, Ordering::SeqCst);
        self.inner.line.trigger()
    }

    /// Tells the driver that the configuration space changed; bumps the
    /// configuration generation first.
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.inner.config_generation.fetch_add(1, Ordering::SeqCst);
        self.inner.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        self.inner.line.trigger()
    }

    /// Sets DEVICE_NEEDS_RESET in the device status and notifies the driver
    /// with a configuration-change interrupt (virtio 1.2 §2.1.2).
    pub fn signal_needs_reset(&self) -> io::Result<()> {
        self.inner.needs_reset.store(true, Ordering::SeqCst);
        self.inner.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        self.inner.line.trigger()
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.inner.status.load(Ordering::SeqCst)
    }

    /// The ConfigGeneration register.
    pub fn config_generation(&self) -> u32 {
        self.inner.config_generation.load(Ordering::SeqCst)
    }

    /// Whether the device asked for a reset.
    pub fn needs_reset(&self) -> bool {
        self.inner.needs_reset.load(Ordering::SeqCst)
    }

    /// Clears the bits the driver acknowledged (InterruptACK).
    pub(crate) fn acknowledge(&self, bits: u32) {
        self.inner.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Back to the initial state (device reset).
    pub(crate) fn reset(&self) {
        self.inner.status.store(0, Ordering::SeqCst);
        self.inner.config_generation.store(0, Ordering::SeqCst);
        self.inner.needs_reset.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An interrupt line that counts its triggers.
    #[derive(Debug, Default)]
    pub(crate) struct CountingLine(pub(crate) AtomicUsize);

    impl CountingLine {
        pub(crate) fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl InterruptLine for CountingLine {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn signals_set_bits_and_trigger() {
        let line = Arc::new(CountingLine::default());
        let irq = VirtioInterrupt::new(line.clone());
        irq.signal_used_queue().unwrap();
        assert_eq!(irq.status(), INT_VRING);
        irq.signal_config_change().unwrap();
        assert_eq!(irq.status(), INT_VRING | INT_CONFIG);
        assert_eq!(irq.config_generation(), 1);
        assert_eq!(line.count(), 2);
        irq.acknowledge(INT_VRING);
        assert_eq!(irq.status(), INT_CONFIG);
        irq.signal_needs_reset().unwrap();
        assert!(irq.needs_reset());
        assert_eq!(line.count(), 3);
        let state = irq.state();
        let copy = VirtioInterrupt::from_checked_state(&state, line.clone());
        assert_eq!(copy.state(), state);
        irq.reset();
        assert_eq!(irq.state(), InterruptState::default());
        assert!(format!("{irq:?}").contains("VirtioInterrupt"));
    }
}
