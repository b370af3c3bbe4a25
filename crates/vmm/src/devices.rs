//! Typed handles to a microVM's devices.

use std::sync::{Arc, Mutex};

use kindling_virtio::block::Block;
use kindling_virtio::net::Net;
use kindling_virtio::rng::Entropy;

use crate::LegacyDevices;

/// The devices of a microVM built from a [`VmConfig`](crate::VmConfig),
/// each as the concrete type it is (no downcasting). Devices added with
/// [`VmmBuilder`](crate::VmmBuilder) are returned to the caller when they
/// are added.
#[derive(Debug, Clone)]
pub struct VmmDevices {
    /// COM1, the i8042, the CMOS RTC, the ACPI PM registers and the boot
    /// timer.
    pub legacy: LegacyDevices,
    /// The virtio-block disks, in configuration order (the guest's vda,
    /// vdb, ...).
    pub disks: Vec<Arc<Mutex<Block>>>,
    /// The virtio-net interfaces, in configuration order, each with its
    /// `iface_id` (for the API's `PATCH /network-interfaces/{iface_id}`:
    /// [`Net::update_rate_limiters`]).
    pub net: Vec<(String, Arc<Mutex<Net>>)>,
    /// The virtio-rng device, if configured.
    pub entropy: Option<Arc<Mutex<Entropy>>>,
}
