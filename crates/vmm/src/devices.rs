//! Typed handles to a microVM's devices.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kindling_virtio::block::Block;
use kindling_virtio::net::Net;
use kindling_virtio::rng::Entropy;
use kindling_virtio::vsock::Vsock;
use kindling_virtio::MmioTransport;

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
    /// [`Net::update_rate_limiters`]). After a restore: every network
    /// interface of the snapshot, those once added with
    /// [`VmmBuilder::add_virtio_device`](crate::VmmBuilder::add_virtio_device)
    /// too (with the name they were given as `iface_id`).
    pub net: Vec<(String, Arc<Mutex<Net>>)>,
    /// The virtio-rng device, if configured.
    pub entropy: Option<Arc<Mutex<Entropy>>>,
    /// The virtio-vsock device, if configured (after a restore: the
    /// snapshot's, however it was added).
    pub vsock: Option<Arc<Mutex<Vsock>>>,
    /// Every virtio device (the configured ones and those added with
    /// [`VmmBuilder::add_virtio_device`](crate::VmmBuilder::add_virtio_device)),
    /// in MMIO window order, with its transport.
    pub virtio: Vec<VirtioSlot>,
}

/// One virtio-mmio device of a microVM: where the guest finds it, its
/// transport and what it is.
#[derive(Debug, Clone)]
pub struct VirtioSlot {
    /// The device's name (`disk 0`, `entropy device`, or the name given to
    /// [`VmmBuilder::add_virtio_device`](crate::VmmBuilder::add_virtio_device)).
    pub name: String,
    /// Base of its 4 KiB MMIO window.
    pub base: u64,
    /// The IOAPIC pin (GSI) it raises.
    pub irq: u32,
    /// Its virtio-mmio transport, as the MMIO bus holds it.
    pub transport: Arc<Mutex<MmioTransport>>,
    /// How long its queue passes and events held the event loop.
    pub pass_stats: Arc<kindling_virtio::PassStats>,
    /// What the device is.
    pub kind: VirtioKind,
}

/// What a virtio device is, as far as snapshots are concerned.
#[derive(Debug, Clone)]
pub enum VirtioKind {
    /// A virtio-block disk on a raw image.
    Block {
        /// The device.
        device: Arc<Mutex<Block>>,
        /// Its image file (a restore opens it again, or an override).
        path: PathBuf,
        /// Whether the guest may not write it.
        read_only: bool,
    },
    /// The virtio-rng device.
    Entropy(Arc<Mutex<Entropy>>),
    /// A virtio-net interface on a TAP.
    Net {
        /// The device.
        device: Arc<Mutex<Net>>,
        /// Its `iface_id` (a network override may name it by it).
        iface_id: String,
    },
    /// The virtio-vsock device.
    Vsock(Arc<Mutex<Vsock>>),
    /// A device added by the user, of a type the VMM does not know how to
    /// save: a snapshot of the VM is refused.
    Other,
}
