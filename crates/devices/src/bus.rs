//! A bus maps guest address ranges (port I/O or MMIO) to devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers guest reads and writes in an address range.
///
/// `offset` is relative to the base address the device was inserted at.
/// `data` holds the access: its length is the access width (1, 2, 4 or 8
/// bytes). Reads fill `data`; bytes a device leaves alone read as what the
/// caller put there (the VMM zero-fills).
pub trait BusDevice: Send {
    /// Handles a guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus (vCPU threads) and its owner.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors from [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    #[error("invalid bus range: base {base:#x}, length {len:#x}")]
    InvalidRange {
        /// Base address.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Base of the refused range.
        base: u64,
        /// Length of the refused range.
        len: u64,
        /// Base of the device already there.
        other_base: u64,
        /// Length of the device already there.
        other_len: u64,
    },
    /// No device covers the whole access.
    #[error("no device at {addr:#x} for a {len}-byte access")]
    NoDevice {
        /// Address of the access.
        addr: u64,
        /// Width of the access.
        len: usize,
    },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Address ranges mapped to devices; used for both the PIO and the MMIO
/// address spaces.
///
/// # Example
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use kindling_devices::{Bus, BusDevice};
///
/// struct Scratch(u8);
/// impl BusDevice for Scratch {
///     fn read(&mut self, _offset: u64, data: &mut [u8]) { data[0] = self.0; }
///     fn write(&mut self, _offset: u64, data: &[u8]) { self.0 = data[0]; }
/// }
///
/// let mut bus = Bus::new();
/// bus.insert(0x80, 1, Arc::new(Mutex::new(Scratch(0)))).unwrap();
/// bus.write(0x80, &[7]).unwrap();
/// let mut byte = [0];
/// bus.read(0x80, &mut byte).unwrap();
/// assert_eq!(byte, [7]);
/// assert!(bus.insert(0x80, 1, Arc::new(Mutex::new(Scratch(0)))).is_err());
/// ```
#[derive(Default, Clone)]
pub struct Bus {
    devices: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.devices
                    .iter()
                    .map(|(base, e)| format!("{base:#x}+{:#x}", e.len)),
            )
            .finish()
    }
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let last = base + (len - 1);
        // The closest device at or below `last` is the only one that can
        // overlap, since existing ranges never overlap each other.
        if let Some((&other_base, other)) = self.devices.range(..=last).next_back() {
            if other_base + (other.len - 1) >= base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other_base,
                    other_len: other.len,
                });
            }
        }
        self.devices.insert(base, Entry { len, device });
        Ok(())
    }

    /// Finds the device whose range holds the whole access
    /// `[addr, addr + len)`, with the offset of `addr` inside it.
    pub fn resolve(&self, addr: u64, len: usize) -> Option<(u64, &SharedDevice)> {
        let (&base, entry) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        let end = offset.checked_add(len as u64)?;
        (end <= entry.len).then_some((offset, &entry.device))
    }

    /// Dispatches a guest read to the device at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), BusError> {
        let (offset, device) = self.resolve(addr, data.len()).ok_or(BusError::NoDevice {
            addr,
            len: data.len(),
        })?;
        lock(device).read(offset, data);
        Ok(())
    }

    /// Dispatches a guest write to the device at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), BusError> {
        let (offset, device) = self.resolve(addr, data.len()).ok_or(BusError::NoDevice {
            addr,
            len: data.len(),
        })?;
        lock(device).write(offset, data);
        Ok(())
    }
}

/// Locks a device, recovering it if another thread panicked while holding
/// the lock: device state stays usable, and a panic elsewhere is reported
/// by that thread.
pub(crate) fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = offset as u8 + i as u8;
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn dev() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn dispatch_uses_offsets() {
        let mut bus = Bus::new();
        let d = dev();
        bus.insert(0x1000, 0x100, d.clone()).unwrap();
        bus.write(0x1010, &[1, 2]).unwrap();
        let mut buf = [0u8; 4];
        bus.read(0x1004, &mut buf).unwrap();
        assert_eq!(buf, [4, 5, 6, 7]);
        assert_eq!(d.lock().unwrap().writes, vec![(0x10, vec![1, 2])]);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, dev()).unwrap();
        for (base, len) in [
            (0x1000, 1),
            (0xfff, 2),
            (0x10ff, 1),
            (0x800, 0x1000),
            (0x1050, 1),
        ] {
            assert!(
                matches!(bus.insert(base, len, dev()), Err(BusError::Overlap { .. })),
                "{base:#x}+{len:#x}"
            );
        }
        bus.insert(0x1100, 1, dev()).unwrap();
        bus.insert(0xfff, 1, dev()).unwrap();
    }

    #[test]
    fn invalid_ranges_are_refused() {
        let mut bus = Bus::new();
        assert_eq!(
            bus.insert(0x10, 0, dev()),
            Err(BusError::InvalidRange { base: 0x10, len: 0 })
        );
        assert!(bus.insert(u64::MAX, 2, dev()).is_err());
        bus.insert(u64::MAX, 1, dev()).unwrap();
    }

    #[test]
    fn accesses_outside_devices_fail() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x10, dev()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            bus.read(0xfff, &mut buf[..1]),
            Err(BusError::NoDevice {
                addr: 0xfff,
                len: 1
            })
        );
        // Straddles the end of the device.
        assert!(bus.read(0x100e, &mut buf).is_err());
        assert!(bus.write(0x1010, &[0]).is_err());
        assert!(bus.write(u64::MAX, &[0; 8]).is_err());
    }
}
