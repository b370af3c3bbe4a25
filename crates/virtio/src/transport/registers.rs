//! Offsets of the virtio-mmio version 2 registers (virtio 1.2 §4.2.2).
//!
//! Every register is 32 bits wide and must be accessed with aligned
//! 32-bit reads and writes; the device-specific configuration space starts
//! at [`CONFIG`].
//!
//! The values are virtio-bindings' `VIRTIO_MMIO_*` (Linux's
//! `uapi/linux/virtio_mmio.h`) as `u64` bus offsets, under the register
//! names of the virtio specification (`QueueDriver`/`QueueDevice` are
//! Linux's `QUEUE_AVAIL`/`QUEUE_USED`).

use virtio_bindings::virtio_mmio::*;

/// "virt" (0x74726976), read-only.
pub const MAGIC_VALUE: u64 = VIRTIO_MMIO_MAGIC_VALUE as u64;
/// The transport version (2), read-only.
pub const VERSION: u64 = VIRTIO_MMIO_VERSION as u64;
/// The virtio device type, read-only.
pub const DEVICE_ID: u64 = VIRTIO_MMIO_DEVICE_ID as u64;
/// The vendor id, read-only.
pub const VENDOR_ID: u64 = VIRTIO_MMIO_VENDOR_ID as u64;
/// The 32-bit window of the device's features chosen by
/// [`DEVICE_FEATURES_SEL`], read-only.
pub const DEVICE_FEATURES: u64 = VIRTIO_MMIO_DEVICE_FEATURES as u64;
/// Selects the window of [`DEVICE_FEATURES`], write-only.
pub const DEVICE_FEATURES_SEL: u64 = VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
/// The 32-bit window of the driver's features chosen by
/// [`DRIVER_FEATURES_SEL`], write-only.
pub const DRIVER_FEATURES: u64 = VIRTIO_MMIO_DRIVER_FEATURES as u64;
/// Selects the window of [`DRIVER_FEATURES`], write-only.
pub const DRIVER_FEATURES_SEL: u64 = VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
/// Selects the queue the queue registers refer to, write-only.
pub const QUEUE_SEL: u64 = VIRTIO_MMIO_QUEUE_SEL as u64;
/// The selected queue's maximum size (0 if it does not exist), read-only.
pub const QUEUE_NUM_MAX: u64 = VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
/// The selected queue's size, write-only.
pub const QUEUE_NUM: u64 = VIRTIO_MMIO_QUEUE_NUM as u64;
/// Whether the selected queue is enabled, read-write.
pub const QUEUE_READY: u64 = VIRTIO_MMIO_QUEUE_READY as u64;
/// Queue notification: the value is the queue index, write-only.
pub const QUEUE_NOTIFY: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;
/// The interrupt status bits, read-only.
pub const INTERRUPT_STATUS: u64 = VIRTIO_MMIO_INTERRUPT_STATUS as u64;
/// Clears interrupt status bits, write-only.
pub const INTERRUPT_ACK: u64 = VIRTIO_MMIO_INTERRUPT_ACK as u64;
/// The device status, read-write.
pub const STATUS: u64 = VIRTIO_MMIO_STATUS as u64;
/// Low 32 bits of the selected queue's descriptor table, write-only.
pub const QUEUE_DESC_LOW: u64 = VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
/// High 32 bits of the selected queue's descriptor table, write-only.
pub const QUEUE_DESC_HIGH: u64 = VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
/// Low 32 bits of the selected queue's available ring, write-only.
pub const QUEUE_DRIVER_LOW: u64 = VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
/// High 32 bits of the selected queue's available ring, write-only.
pub const QUEUE_DRIVER_HIGH: u64 = VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
/// Low 32 bits of the selected queue's used ring, write-only.
pub const QUEUE_DEVICE_LOW: u64 = VIRTIO_MMIO_QUEUE_USED_LOW as u64;
/// High 32 bits of the selected queue's used ring, write-only.
pub const QUEUE_DEVICE_HIGH: u64 = VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
/// Selects a shared memory region, write-only.
pub const SHM_SEL: u64 = VIRTIO_MMIO_SHM_SEL as u64;
/// Low 32 bits of the selected shared memory region's length, read-only.
pub const SHM_LEN_LOW: u64 = VIRTIO_MMIO_SHM_LEN_LOW as u64;
/// High 32 bits of the selected shared memory region's length, read-only.
pub const SHM_LEN_HIGH: u64 = VIRTIO_MMIO_SHM_LEN_HIGH as u64;
/// Low 32 bits of the selected shared memory region's base, read-only.
pub const SHM_BASE_LOW: u64 = VIRTIO_MMIO_SHM_BASE_LOW as u64;
/// High 32 bits of the selected shared memory region's base, read-only.
pub const SHM_BASE_HIGH: u64 = VIRTIO_MMIO_SHM_BASE_HIGH as u64;
/// Queue reset (VIRTIO_F_RING_RESET, not offered), read-write.
/// virtio-bindings has no constant for it (Linux's `virtio_mmio.h` does
/// not define it either), so the offset comes from virtio 1.2 §4.2.2.
pub const QUEUE_RESET: u64 = 0x0c0;
/// The configuration generation, read-only.
pub const CONFIG_GENERATION: u64 = VIRTIO_MMIO_CONFIG_GENERATION as u64;
/// The start of the device-specific configuration space.
pub const CONFIG: u64 = VIRTIO_MMIO_CONFIG as u64;
