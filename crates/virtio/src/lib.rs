//! Virtio devices for Kindling microVMs: the device trait, the virtio-mmio
//! transport and the devices themselves.
//!
//! - [`VirtioDevice`]: what a device implements (its type, features,
//!   configuration space, activation with its queues, reset and queue
//!   processing). It knows nothing of the transport, so a PCI transport can
//!   be added later without touching the devices.
//! - [`MmioTransport`]: the virtio-mmio transport, version 2 (virtio 1.x,
//!   modern only). It implements [`kindling_devices::BusDevice`] and
//!   negotiates features, runs the device-status state machine, validates
//!   the queues and activates the device.
//! - [`VirtioInterrupt`]: how a device signals the driver (used buffers,
//!   configuration changes, "needs reset") through an
//!   [`kindling_devices::InterruptLine`].
//! - [`VirtioSubscriber`]: the event-loop side. Queue notifications arrive
//!   on one eventfd per queue (registered by the VMM as ioeventfds on
//!   QueueNotify); the subscriber drains the eventfd and processes the queue
//!   on the event-loop thread, never on a vCPU thread. Each pass over a
//!   queue has a work budget ([`QueueProgress`]), so a busy or hostile
//!   queue cannot hold the event loop.
//!   It also registers the device's own fds (every [`VirtioDevice`] is a
//!   [`kindling_devices::DeviceEvents`]: the block device's io_uring
//!   completion eventfd, say) and hands their events to the device.
//! - [`chain`]: walking a guest's descriptor chain as hostile input.
//! - Devices, each behind a cargo feature: [`block`] (feature `block`),
//!   [`net`] (feature `net`, on a TAP device), [`rng`] (feature `rng`) and
//!   [`vsock`] (feature `vsock`).
//! - [`rate_limiter`]: token buckets (Firecracker's `bandwidth`/`ops`
//!   shape) that the block and network devices apply to their queues.
//!
//! Guest-visible state lives in plain serde-serialisable structs
//! ([`MmioTransportState`], [`QueueSnapshot`], [`InterruptState`] and each
//! device's own `*State`), apart from host resources (files, eventfds).
//! The transport, the queues ([`VirtQueue`]), the interrupt and every
//! device implement [`kindling_memory::Persist`] with them, so that a
//! snapshot can capture a device mid-run and a restore, given the host
//! resources back, rebuild it; a restored active transport reactivates its
//! (restored, inactive) device with the saved queues.
//!
//! # Wiring a device into a VMM
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use kindling_devices::{BusDevice, EventFdLine};
//! use kindling_virtio::{rng::Entropy, MmioTransport, VirtioDevice};
//! use vm_memory::GuestAddress;
//!
//! let memory = kindling_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(Entropy::new()));
//! // The VMM registers `line.event()` as the irqfd of GSI 5.
//! let line = EventFdLine::new(5).unwrap();
//! let mut transport = MmioTransport::new(memory, device, Arc::new(line)).unwrap();
//! // The VMM registers `transport.queue_events()[i]` as an ioeventfd at
//! // `window + QUEUE_NOTIFY_OFFSET` with datamatch `i`, and adds
//! // `transport.subscriber()` to its event loop.
//! let _subscriber = transport.subscriber().unwrap();
//! let mut magic = [0u8; 4];
//! transport.read(0, &mut magic);
//! assert_eq!(&magic, b"virt");
//! // The VMM announces the window to Linux on its command line.
//! assert_eq!(
//!     kindling_virtio::cmdline_with_mmio_devices("console=ttyS0", 2048, &[(0xd000_0000, 5)])
//!         .unwrap(),
//!     "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
//! );
//! ```

#[cfg(feature = "block")]
pub mod block;
pub mod chain;
mod device;
pub mod features;
mod interrupt;
#[cfg(feature = "net")]
pub mod net;
mod queue;
pub mod rate_limiter;
#[cfg(feature = "rng")]
pub mod rng;
mod subscriber;
pub mod transport;
#[cfg(feature = "vsock")]
pub mod vsock;

pub use device::{ActivateError, Activation, DeviceType, QueueProgress, VirtioDevice};
pub use interrupt::{InterruptState, InterruptStateError, VirtioInterrupt, INT_CONFIG, INT_VRING};
pub use queue::{QueueConfig, QueueError, QueueSnapshot, QueueValidationError, VirtQueue};
pub use subscriber::{PassStats, VirtioSubscriber};
pub use transport::mmio::{
    add_mmio_cmdline_device, cmdline_with_mmio_devices, CmdlineError, MmioTransport,
    MmioTransportRestoreArgs, MmioTransportState, TransportError, MMIO_WINDOW_SIZE,
    QUEUE_NOTIFY_OFFSET,
};

/// The guest memory type the devices work on.
pub use kindling_memory::GuestMemoryMmap;
/// A virtio split queue, as handed to a device at activation.
pub use virtio_queue::Queue;

/// The rust-vmm `event-manager` crate, whose `MutEventSubscriber`
/// [`VirtioSubscriber`] implements, re-exported so that users need not pin
/// a matching version.
pub use event_manager;
/// The rust-vmm `linux-loader` crate, whose `Cmdline`
/// [`add_mmio_cmdline_device`] extends, re-exported so that users need not
/// pin a matching version.
pub use linux_loader;
/// The rust-vmm `virtio-bindings` crate (the virtio constants this crate's
/// names are defined from), re-exported so that users need not pin a
/// matching version.
pub use virtio_bindings;
/// The rust-vmm `virtio-queue` crate ([`Queue`] and the descriptor chains
/// devices walk), re-exported so that users need not pin a matching
/// version.
pub use virtio_queue;
/// The rust-vmm `vm-memory` crate (guest memory in this crate's API),
/// re-exported so that users need not pin a matching version.
pub use vm_memory;
/// The rust-vmm `vmm-sys-util` crate (the `EventFd`s in this crate's API),
/// re-exported so that users need not pin a matching version.
pub use vmm_sys_util;
