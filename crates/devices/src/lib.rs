//! Buses, interrupt lines and legacy devices for Kindling microVMs.
//!
//! - [`Bus`]: maps guest port-I/O or MMIO address ranges to devices that
//!   implement [`BusDevice`]; overlapping ranges are refused at insertion.
//! - [`InterruptLine`]: how a device raises its interrupt; [`EventFdLine`]
//!   is backed by an eventfd that the VMM registers as a KVM irqfd.
//! - [`VmExitHandle`]: how a device asks the VMM to stop the VM (reset,
//!   power-off, a chosen exit status).
//! - [`DeviceEvents`]: how a device owns event sources (TAP, sockets,
//!   timers, async-I/O completions): it registers fds through an
//!   [`EventRegistry`] with tokens of its own and is called back on them;
//!   [`DeviceEventSubscriber`] puts any such device on an event loop.
//! - [`legacy`]: the 16550 serial port, the i8042 controller, the
//!   Firecracker-compatible boot timer and a debug-exit port.
//!
//! Device state that a guest can observe is kept in plain, serde-serialisable
//! `*State` structs, separate from host resources (file descriptors, output
//! streams), so that a snapshot can capture it and a restore can rebuild the
//! device from it.

mod bus;
mod events;
mod exit;
mod interrupt;
pub mod legacy;
mod timer;

pub use bus::{Bus, BusDevice, BusError, SharedDevice};
pub use events::{
    device_token, DeviceEventSubscriber, DeviceEvents, DeviceFds, EventRegistry,
    EventRegistryError, DEVICE_TOKEN_BASE, MAX_DEVICE_TOKEN,
};
pub use exit::{ExitReason, VmExitHandle};
pub use interrupt::{EventFdLine, InterruptLine};
pub use timer::nonblocking_timer;

/// The event-manager crate, whose types appear in [`DeviceEvents`].
pub use event_manager;
