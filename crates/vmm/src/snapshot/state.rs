//! What a snapshot's state file holds: every guest-visible state of a
//! microVM and the layout it was built with, as plain serialisable data,
//! and the consistency checks a restore runs before it creates anything.

use std::path::PathBuf;

use kindling_devices::legacy::{AcpiPmState, CmosRtcState, I8042State, SerialDeviceState};
use kindling_memory::{DirtyBitmap, RegionDirtyBitmap, DIRTY_PAGE_SIZE};
use kindling_vcpu::{VcpuState, VmState};
use kindling_virtio::block::BlockState;
use kindling_virtio::net::NetState;
use kindling_virtio::rng::EntropyState;
use kindling_virtio::vsock::VsockState;
use kindling_virtio::MmioTransportState;
use serde::{Deserialize, Serialize};

use super::SnapshotError;
use crate::MAX_VCPUS;

/// Whether a snapshot's memory file holds all of guest memory or only the
/// pages written since the previous snapshot (Firecracker's
/// `snapshot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Every page the guest touched (untouched pages are holes).
    Full,
    /// The pages dirtied since the last full snapshot (or restore), to be
    /// layered onto its memory file with
    /// [`apply_diff_snapshot`](super::apply_diff_snapshot).
    Diff,
}

/// Everything a snapshot saves of a microVM (the state file's payload).
#[derive(Debug, Serialize, Deserialize)]
pub struct MicrovmState {
    /// Guest memory and how the VM was created over it.
    pub memory: MemoryLayoutState,
    /// Full or diff, and for a diff the pages its memory file holds.
    pub memory_file: MemoryFileState,
    /// The CPU vendor the vCPUs were shown ("GenuineIntel",
    /// "AuthenticAMD"); each vCPU state carries its whole CPUID.
    pub cpu_vendor: String,
    /// The irqchip, PIT and clock.
    pub vm: VmState,
    /// Every vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// COM1, the i8042, the CMOS RTC and the ACPI PM registers.
    pub legacy: LegacyState,
    /// Every virtio device, in MMIO window order.
    pub virtio: Vec<VirtioSlotState>,
}

/// Guest memory's layout and the VM options that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayoutState {
    /// Guest RAM in MiB (the memory file's size is this many MiB).
    pub size_mib: u64,
    /// Whether KVM dirty logging was on (it stays on after a restore).
    pub track_dirty_pages: bool,
    /// Where KVM's TSS was.
    pub tss_address: u64,
    /// Where KVM's identity-map page was.
    pub identity_map_address: u64,
}

/// What the memory file of a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFileState {
    /// Full or diff.
    pub kind: SnapshotKind,
    /// For a diff, the dirty pages it holds, one bitmap per memory region.
    pub dirty: Vec<SavedRegionBitmap>,
}

/// The dirty pages of one region (see [`RegionDirtyBitmap`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRegionBitmap {
    /// Guest-physical start of the region.
    pub guest_addr: u64,
    /// Its length in bytes.
    pub len: u64,
    /// One bit per 4 KiB page.
    pub bits: Vec<u64>,
}

/// The legacy devices' states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyState {
    /// COM1.
    pub serial: SerialDeviceState,
    /// The i8042 controller.
    pub i8042: I8042State,
    /// The CMOS RTC.
    pub rtc: CmosRtcState,
    /// The ACPI PM registers.
    pub acpi_pm: AcpiPmState,
}

/// One virtio device: where the guest found it, its transport and the
/// device's own state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VirtioSlotState {
    /// The device's name (`disk 0`, `entropy device`): a drive override
    /// may name a disk by it.
    pub name: String,
    /// Base of its MMIO window.
    pub base: u64,
    /// Its interrupt line (GSI).
    pub irq: u32,
    /// The transport's registers, queues and interrupt state.
    pub transport: MmioTransportState,
    /// The device.
    pub device: VirtioDeviceState,
}

/// A virtio device's own state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VirtioDeviceState {
    /// A virtio-block disk.
    Block {
        /// Its image file when the snapshot was taken (a restore opens it
        /// again unless overridden).
        path: PathBuf,
        /// The device.
        state: BlockState,
    },
    /// The virtio-rng device.
    Entropy(EntropyState),
    /// A virtio-net interface.
    Net {
        /// Its `iface_id` (a network override may name it by it).
        iface_id: String,
        /// The device (its TAP's name is in `state.config.tap`).
        state: NetState,
    },
    /// The virtio-vsock device (its connections are not saved: a restore
    /// resets them).
    Vsock(VsockState),
}

impl VirtioDeviceState {
    /// The virtio device id the device's transport must hold, and what
    /// the device is called in errors.
    pub fn device_id(&self) -> (u32, &'static str) {
        match self {
            VirtioDeviceState::Block { .. } => (2, "block"),
            VirtioDeviceState::Entropy(_) => (4, "entropy"),
            VirtioDeviceState::Net { .. } => (1, "network"),
            VirtioDeviceState::Vsock(_) => (19, "vsock"),
        }
    }
}

impl MemoryFileState {
    /// The diff's dirty pages as a [`DirtyBitmap`] (empty for a full
    /// snapshot), checked against the memory layout of `size_mib`.
    pub fn dirty_bitmap(&self, size_mib: u64) -> Result<DirtyBitmap, SnapshotError> {
        let ranges = ram_ranges(size_mib)?;
        if self.kind == SnapshotKind::Full {
            return Ok(DirtyBitmap {
                regions: ranges
                    .into_iter()
                    .map(|(addr, len)| RegionDirtyBitmap::clean(addr, len))
                    .collect(),
            });
        }
        if self.dirty.len() != ranges.len() {
            return Err(invalid(format!(
                "the diff's dirty bitmap has {} regions, guest memory has {}",
                self.dirty.len(),
                ranges.len()
            )));
        }
        let mut regions = Vec::with_capacity(ranges.len());
        for (saved, (addr, len)) in self.dirty.iter().zip(ranges) {
            let words = len.div_ceil(DIRTY_PAGE_SIZE).div_ceil(64);
            if saved.guest_addr != addr || saved.len != len || saved.bits.len() as u64 != words {
                return Err(invalid(format!(
                    "the diff's dirty bitmap describes {:#x}+{:#x}, guest memory has {addr:#x}+{len:#x}",
                    saved.guest_addr, saved.len
                )));
            }
            regions.push(RegionDirtyBitmap {
                guest_addr: addr,
                len,
                bits: saved.bits.clone(),
            });
        }
        Ok(DirtyBitmap { regions })
    }

    /// The state of a diff's `dirty` pages.
    pub fn diff(dirty: &DirtyBitmap) -> Self {
        Self {
            kind: SnapshotKind::Diff,
            dirty: dirty
                .regions
                .iter()
                .map(|r| SavedRegionBitmap {
                    guest_addr: r.guest_addr,
                    len: r.len,
                    bits: r.bits.clone(),
                })
                .collect(),
        }
    }
}

fn invalid(reason: String) -> SnapshotError {
    SnapshotError::InvalidState { reason }
}

/// The RAM regions of a guest of `size_mib` MiB, or why that size is not
/// one Kindling builds.
fn ram_ranges(size_mib: u64) -> Result<Vec<(u64, u64)>, SnapshotError> {
    let size = kindling_memory::validate_size(&kindling_memory::MemoryConfig {
        size_mib,
        backing: kindling_memory::Backing::Anonymous,
    })
    .map_err(|e| invalid(format!("guest memory of {size_mib} MiB: {e}")))?;
    Ok(kindling_memory::layout::ram_ranges(size))
}

impl MicrovmState {
    /// Checks what can be checked without the host: the memory size, the
    /// vCPU count and indices, one CPU vendor, the diff bitmap, and that
    /// each virtio device's transport is the device it claims to be.
    /// (Queue contents are checked against guest memory, the device layout
    /// against the allocator and the CPU against the host by the restore.)
    pub fn validate(&self) -> Result<(), SnapshotError> {
        self.memory_file.dirty_bitmap(self.memory.size_mib)?;
        let count = self.vcpus.len();
        if count == 0 || count > usize::from(MAX_VCPUS) {
            return Err(invalid(format!(
                "{count} vCPU states (a VM has 1 to {MAX_VCPUS})"
            )));
        }
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            if usize::from(vcpu.id) != index {
                return Err(invalid(format!(
                    "vCPU state {index} belongs to vCPU {}",
                    vcpu.id
                )));
            }
            let vendor = kindling_vcpu::x86_64::cpu_compat::vendor(&vcpu.cpuid);
            if vendor != self.cpu_vendor {
                return Err(invalid(format!(
                    "vCPU {index} was shown a {vendor} CPU, the snapshot says {}",
                    self.cpu_vendor
                )));
            }
        }
        for slot in &self.virtio {
            let (expected, what) = slot.device.device_id();
            if slot.transport.device_id != expected {
                return Err(invalid(format!(
                    "the {} is a {what} device but its transport holds device id {}",
                    slot.name, slot.transport.device_id
                )));
            }
            if !slot.transport.activated {
                continue;
            }
            for (index, queue) in slot.transport.queues.iter().enumerate() {
                // Free-running indices: the device can never be more
                // than a queue's size ahead of what it has used.
                let in_flight = queue.next_avail.wrapping_sub(queue.next_used);
                if in_flight > queue.config.size {
                    return Err(invalid(format!(
                        "queue {index} of the {}: next_avail {} is {in_flight} entries past next_used {}, more than its size {}",
                        slot.name, queue.next_avail, queue.next_used, queue.config.size
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_bitmap_must_fit_guest_memory() {
        let mut state = MemoryFileState {
            kind: SnapshotKind::Diff,
            dirty: vec![SavedRegionBitmap {
                guest_addr: 0,
                len: 128 << 20,
                bits: vec![0; (128 << 20) / 4096 / 64],
            }],
        };
        assert_eq!(state.dirty_bitmap(128).unwrap().regions.len(), 1);
        // The wrong size.
        let err = state.dirty_bitmap(256).unwrap_err();
        assert!(err.to_string().contains("describes"), "{err}");
        // Too few words.
        state.dirty[0].bits.pop();
        assert!(state.dirty_bitmap(128).is_err());
        // A memory size Kindling cannot build.
        let err = state.dirty_bitmap(0).unwrap_err();
        assert!(err.to_string().contains("0 MiB"), "{err}");
        // A full snapshot has no bitmap to check.
        state.kind = SnapshotKind::Full;
        assert_eq!(state.dirty_bitmap(128).unwrap().dirty_pages(), 0);
    }
}
