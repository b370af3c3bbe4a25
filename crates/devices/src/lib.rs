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
mod exit;
mod exit_counters;
mod exit_handler;
mod interrupt;
pub mod legacy;
mod timer;

pub use bus::{Bus, BusDevice, BusError, SharedDevice};
pub use exit::{ExitReason, VmExitHandle};
pub use exit_counters::{ExitCounters, ExitCounts};
pub use exit_handler::BusExitHandler;
pub use interrupt::{EventFdLine, InterruptLine};
pub use timer::nonblocking_timer;
