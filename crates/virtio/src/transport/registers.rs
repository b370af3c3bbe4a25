//! Offsets of the virtio-mmio version 2 registers (virtio 1.2 §4.2.2).
//!
//! Every register is 32 bits wide and must be accessed with aligned
//! 32-bit reads and writes; the device-specific configuration space starts
//! at [`CONFIG`].

/// "virt" (0x74726976), read-only.
pub const MAGIC_VALUE: u64 = 0x000;
/// The transport version (2), read-only.
pub const VERSION: u64 = 0x004;
/// The virtio device type, read-only.
pub const DEVICE_ID: u64 = 0x008;
/// The vendor id, read-only.
pub const VENDOR_ID: u64 = 0x00c;
/// The 32-bit window of the device's features chosen by
/// [`DEVICE_FEATURES_SEL`], read-only.
pub const DEVICE_FEATURES: u64 = 0x010;
/// Selects the window of [`DEVICE_FEATURES`], write-only.
pub const DEVICE_FEATURES_SEL: u64 = 0x014;
/// The 32-bit window of the driver's features chosen by
/// [`DRIVER_FEATURES_SEL`], write-only.
pub const DRIVER_FEATURES: u64 = 0x020;
/// Selects the window of [`DRIVER_FEATURES`], write-only.
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
/// Selects the queue the queue registers refer to, write-only.
pub const QUEUE_SEL: u64 = 0x030;
/// The selected queue's maximum size (0 if it does not exist), read-only.
pub const QUEUE_NUM_MAX: u64 = 0x034;
/// The selected queue's size, write-only.
pub const QUEUE_NUM: u64 = 0x038;
/// Whether the selected queue is enabled, read-write.
pub const QUEUE_READY: u64 = 0x044;
/// Queue notification: the value is the queue index, write-only.
pub const QUEUE_NOTIFY: u64 = 0x050;
/// The interrupt status bits, read-only.
pub const INTERRUPT_STATUS: u64 = 0x060;
/// Clears interrupt status bits, write-only.
pub const INTERRUPT_ACK: u64 = 0x064;
/// The device status, read-write.
pub const STATUS: u64 = 0x070;
/// Low 32 bits of the selected queue's descriptor table, write-only.
pub const QUEUE_DESC_LOW: u64 = 0x080;
/// High 32 bits of the selected queue's descriptor table, write-only.
pub const QUEUE_DESC_HIGH: u64 = 0x084;
/// Low 32 bits of the selected queue's available ring, write-only.
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
/// High 32 bits of the selected queue's available ring, write-only.
pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
/// Low 32 bits of the selected queue's used ring, write-only.
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
/// High 32 bits of the selected queue's used ring, write-only.
pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
/// Selects a shared memory region, write-only.
pub const SHM_SEL: u64 = 0x0ac;
/// Low 32 bits of the selected shared memory region's length, read-only.
pub const SHM_LEN_LOW: u64 = 0x0b0;
/// High 32 bits of the selected shared memory region's length, read-only.
pub const SHM_LEN_HIGH: u64 = 0x0b4;
/// Low 32 bits of the selected shared memory region's base, read-only.
pub const SHM_BASE_LOW: u64 = 0x0b8;
/// High 32 bits of the selected shared memory region's base, read-only.
pub const SHM_BASE_HIGH: u64 = 0x0bc;
/// Queue reset (VIRTIO_F_RING_RESET, not offered), read-write.
pub const QUEUE_RESET: u64 = 0x0c0;
/// The configuration generation, read-only.
pub const CONFIG_GENERATION: u64 = 0x0fc;
/// The start of the device-specific configuration space.
pub const CONFIG: u64 = 0x100;
