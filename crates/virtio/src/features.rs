//! Feature bits shared by every device (virtio 1.2 §6) as 64-bit masks.
//!
//! Device-specific bits live with their device (for example
//! [`crate::block::features`]).

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// The device follows virtio 1.x (modern). The transport refuses a driver
/// that does not accept it.
pub const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
/// Indirect descriptor tables (handled by `virtio-queue`'s chain walker).
pub const RING_INDIRECT_DESC: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC;
/// `used_event`/`avail_event` notification suppression.
pub const RING_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;

/// The transport and ring features every Kindling device offers.
pub const COMMON: u64 = VERSION_1 | RING_INDIRECT_DESC | RING_EVENT_IDX;

/// The 32-bit window `select` of a 64-bit feature set (windows past the
/// second read as zero).
pub fn window(features: u64, select: u32) -> u32 {
    match select {
        0 => features as u32,
        1 => (features >> 32) as u32,
        _ => 0,
    }
}

/// `features` with the 32-bit window `select` replaced by `value`.
/// Windows past the second do not exist and leave `features` unchanged.
pub fn set_window(features: u64, select: u32, value: u32) -> u64 {
    match select {
        0 => (features & !0xffff_ffff) | u64::from(value),
        1 => (features & 0xffff_ffff) | (u64::from(value) << 32),
        _ => features,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_and_join() {
        let f = 0x1234_5678_9abc_def0;
        assert_eq!(window(f, 0), 0x9abc_def0);
        assert_eq!(window(f, 1), 0x1234_5678);
        assert_eq!(window(f, 2), 0);
        assert_eq!(window(f, u32::MAX), 0);
        let g = set_window(set_window(0, 1, 0x1234_5678), 0, 0x9abc_def0);
        assert_eq!(g, f);
        assert_eq!(set_window(f, 7, 1), f);
        assert_eq!(COMMON >> 32, 1);
    }
}
