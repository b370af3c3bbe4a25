//! The block device's configuration space (`struct virtio_blk_config`,
//! virtio 1.2 §5.2.4), little-endian, up to `write_zeroes_may_unmap`.

/// Bytes of configuration space the device exposes.
pub const CONFIG_SIZE: usize = 60;

/// The most bytes of data one read or write request may move (4 MiB):
/// the device advertises `size_max` so that `seg_max` segments of
/// `size_max` bytes stay within it, and refuses a larger request. With
/// the per-pass byte budget this bounds how long one guest's I/O holds the
/// event loop (and every other device on it).
pub const MAX_REQUEST_BYTES: u32 = 4 << 20;
/// The most sectors one DISCARD segment may cover (4 MiB): where the file
/// system cannot punch holes, discard falls back to writing zeroes, and
/// this bounds that write.
pub const MAX_DISCARD_SECTORS: u32 = MAX_REQUEST_BYTES / 512;
/// The most segments in one DISCARD request (so the zero-writing fallback
/// moves at most 16 MiB per request).
pub const MAX_DISCARD_SEG: u32 = 4;
/// The most sectors one WRITE_ZEROES segment may cover (4 MiB, as
/// discard).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = MAX_REQUEST_BYTES / 512;
/// The most segments in one WRITE_ZEROES request.
pub const MAX_WRITE_ZEROES_SEG: u32 = 4;
/// The discard granularity the guest should use, in sectors (4 KiB).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;

/// Field offsets, from virtio-bindings' `struct virtio_blk_config`.
mod offset {
    use std::mem::offset_of;
    use virtio_bindings::virtio_blk::virtio_blk_config as C;

    pub const CAPACITY: usize = offset_of!(C, capacity);
    pub const SIZE_MAX: usize = offset_of!(C, size_max);
    pub const SEG_MAX: usize = offset_of!(C, seg_max);
    pub const BLK_SIZE: usize = offset_of!(C, blk_size);
    pub const NUM_QUEUES: usize = offset_of!(C, num_queues);
    pub const MAX_DISCARD_SECTORS: usize = offset_of!(C, max_discard_sectors);
    pub const MAX_DISCARD_SEG: usize = offset_of!(C, max_discard_seg);
    pub const DISCARD_SECTOR_ALIGNMENT: usize = offset_of!(C, discard_sector_alignment);
    pub const MAX_WRITE_ZEROES_SECTORS: usize = offset_of!(C, max_write_zeroes_sectors);
    pub const MAX_WRITE_ZEROES_SEG: usize = offset_of!(C, max_write_zeroes_seg);
    pub const WRITE_ZEROES_MAY_UNMAP: usize = offset_of!(C, write_zeroes_may_unmap);
}

fn put32(space: &mut [u8; CONFIG_SIZE], at: usize, value: u32) {
    space[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The largest segment (`size_max`, a multiple of 4 KiB and at least one
/// page, as Linux requires) such that `seg_max` of them stay within
/// [`MAX_REQUEST_BYTES`] where possible.
pub fn size_max(seg_max: u32) -> u32 {
    ((MAX_REQUEST_BYTES / seg_max.max(1)) & !0xfff).max(0x1000)
}

/// The most data bytes a request may move on a device with `seg_max`
/// segments: what a driver that follows `seg_max` and `size_max` can send.
pub fn max_request_bytes(seg_max: u32) -> u64 {
    (u64::from(seg_max.max(1)) * u64::from(size_max(seg_max))).max(u64::from(MAX_REQUEST_BYTES))
}

/// The configuration space of a device with `capacity` sectors and
/// `seg_max` data segments per request.
pub fn config_space(capacity: u64, seg_max: u32) -> [u8; CONFIG_SIZE] {
    let mut s = [0u8; CONFIG_SIZE];
    s[offset::CAPACITY..offset::CAPACITY + 8].copy_from_slice(&capacity.to_le_bytes());
    put32(&mut s, offset::SIZE_MAX, size_max(seg_max));
    put32(&mut s, offset::SEG_MAX, seg_max);
    put32(&mut s, offset::BLK_SIZE, super::SECTOR_SIZE as u32);
    s[offset::NUM_QUEUES..offset::NUM_QUEUES + 2].copy_from_slice(&1u16.to_le_bytes());
    put32(&mut s, offset::MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS);
    put32(&mut s, offset::MAX_DISCARD_SEG, MAX_DISCARD_SEG);
    put32(
        &mut s,
        offset::DISCARD_SECTOR_ALIGNMENT,
        DISCARD_SECTOR_ALIGNMENT,
    );
    put32(
        &mut s,
        offset::MAX_WRITE_ZEROES_SECTORS,
        MAX_WRITE_ZEROES_SECTORS,
    );
    put32(&mut s, offset::MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SEG);
    // Write zeroes with the unmap flag punches holes.
    s[offset::WRITE_ZEROES_MAY_UNMAP] = 1;
    s
}

/// Reads `data.len()` bytes at `offset` of `space`; bytes past its end
/// read as zero.
pub fn read(space: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| space.get(at))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use virtio_bindings::virtio_blk::virtio_blk_config as C;

    #[test]
    fn offsets_match_the_linux_layout() {
        // The offsets come from the bindings; the values the device's
        // readers rely on (and the end of the exposed space) stay put.
        assert_eq!(offset::CAPACITY, 0);
        assert_eq!(offset::SEG_MAX, 12);
        assert_eq!(offset::NUM_QUEUES, 34);
        assert_eq!(offset::WRITE_ZEROES_MAY_UNMAP, 56);
        assert_eq!(offset_of!(C, unused1) + 3, CONFIG_SIZE);
    }

    #[test]
    fn size_max_keeps_a_whole_request_within_the_cap() {
        for seg_max in [1, 2, 126, 254, 1022, 32766] {
            let size = size_max(seg_max);
            assert_eq!(size % 4096, 0, "{seg_max}");
            assert!(size >= 4096, "{seg_max}");
            assert!(
                u64::from(seg_max) * u64::from(size) <= max_request_bytes(seg_max),
                "{seg_max}"
            );
        }
        assert_eq!(size_max(254), 16384);
        assert_eq!(max_request_bytes(254), 4 << 20);
        let s = config_space(8, 254);
        let mut v = [0u8; 4];
        read(&s, 8, &mut v);
        assert_eq!(u32::from_le_bytes(v), 16384);
    }

    #[test]
    fn fields_and_reads() {
        let s = config_space(0x1_0000_0002, 254);
        let mut cap = [0u8; 8];
        read(&s, 0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 0x1_0000_0002);
        let mut seg = [0u8; 4];
        read(&s, 12, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), 254);
        let mut tail = [0xffu8; 4];
        read(&s, 58, &mut tail);
        assert_eq!(tail, [0; 4]);
        read(&s, u64::MAX, &mut tail);
        assert_eq!(tail, [0; 4]);
        assert_eq!(s[56], 1);
    }
}
