//! Transports: how a driver reaches a [`crate::VirtioDevice`].
//!
//! - [`mmio`]: virtio-mmio, version 2 (virtio 1.x, modern only).
//! - [`status`]: the device-status state machine every transport shares.
//! - [`registers`]: the virtio-mmio register offsets.

pub mod mmio;
pub mod registers;
pub mod status;
