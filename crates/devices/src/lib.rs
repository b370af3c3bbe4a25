//! Buses, interrupt lines and legacy devices for Kindling microVMs.
//!
//! - [`Bus`]: maps guest port-I/O or MMIO address ranges to devices that
//!   implement [`BusDevice`]; overlapping ranges are refused at insertion.
//! - [`BusExitHandler`]: the vCPU exit handler that dispatches port I/O
//!   and MMIO exits to two buses; the whole exit path of a VMM.
//! - [`InterruptLine`]: how a device raises its interrupt; [`EventFdLine`]
//!   is backed by an eventfd that the VMM registers as a KVM irqfd.
//! - [`VmExitHandle`]: how a device asks the VMM to stop the VM (reset,
//!   power-off, a chosen exit status).
//! - [`DeviceEvents`]: how a device owns event sources (TAP, sockets,
//!   timers, async-I/O completions): it registers fds through an
//!   [`EventRegistry`] with tokens of its own and is called back on them;
//!   [`DeviceEventSubscriber`] puts any such device on an event loop.
//! - [`log_limited!`]: logging a guest can trigger, rate-limited per call
//!   site.
//! - [`legacy`]: the 16550 serial port (with [`legacy::CoalescedSerial`],
//!   which makes its output cost one VM exit per line), the i8042
//!   controller, the CMOS RTC, the ACPI power-management registers, the
//!   Firecracker-compatible boot timer and a debug-exit port.
//!
//! Device state that a guest can observe is kept in plain, serde-serialisable
//! `*State` structs, separate from host resources (file descriptors, output
//! streams), so that a snapshot can capture it and a restore can rebuild the
//! device from it.

mod bus;
mod events;
mod exit;
mod exit_counters;
mod exit_handler;
mod interrupt;
pub mod legacy;
mod log_limit;
mod timer;

pub use bus::{Bus, BusDevice, BusError, SharedDevice};
pub use events::{
    device_token, DeviceEventSubscriber, DeviceEvents, DeviceFds, EventRegistry,
    EventRegistryError, DEVICE_TOKEN_BASE, MAX_DEVICE_TOKEN,
};
pub use exit::{ExitReason, VmExitHandle};
pub use exit_counters::{ExitCounters, ExitCounts};
pub use exit_handler::BusExitHandler;
pub use interrupt::{EventFdLine, InterruptLine};
pub use log_limit::{suppressed_log_lines, LogLimiter, LogPermit, LOG_BURST, LOG_WINDOW};

/// The `log` crate, for [`log_limited!`]'s expansion in other crates.
#[doc(hidden)]
pub use log as __log;
pub use timer::nonblocking_timer;

/// The event-manager crate, whose types appear in [`DeviceEvents`].
pub use event_manager;
/// The rust-vmm `vm-superio` crate, whose `Trigger` [`EventFdLine`]
/// implements, re-exported so that users need not pin a matching version.
pub use vm_superio;
/// The rust-vmm `vmm-sys-util` crate (the `EventFd`s in this crate's API),
/// re-exported so that users need not pin a matching version.
pub use vmm_sys_util;
