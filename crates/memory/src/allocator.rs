//! Allocation of device MMIO windows and interrupt lines.

use vm_allocator::{AddressAllocator, AllocPolicy, IdAllocator};

/// Errors from [`ResourceAllocator`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocatorError {
    /// No MMIO window of the requested size is left.
    #[error("no free MMIO window of {size:#x} bytes is left in the device MMIO range")]
    MmioExhausted {
        /// Requested window size.
        size: u64,
    },
    /// The requested window size is zero or not a multiple of 4 KiB.
    #[error("MMIO window size {size:#x} is not a non-zero multiple of 4 KiB")]
    BadWindowSize {
        /// Requested window size.
        size: u64,
    },
    /// All device interrupt lines are in use.
    #[error("all {count} device interrupt lines are in use")]
    IrqExhausted {
        /// How many lines the allocator manages.
        count: u32,
    },
    /// The allocator's own ranges are invalid (a bug in the layout constants).
    #[error("invalid allocator range: {0}")]
    InvalidRange(vm_allocator::Error),
}

/// An MMIO window handed to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioWindow {
    /// Guest-physical base address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Hands out MMIO windows and interrupt lines to devices, never twice.
///
/// # Example
///
/// ```
/// use kindling_memory::ResourceAllocator;
///
/// let mut allocator = ResourceAllocator::new().unwrap();
/// let window = allocator.allocate_mmio(0x1000).unwrap();
/// let irq = allocator.allocate_irq().unwrap();
/// assert_eq!(window.size, 0x1000);
/// assert!(irq >= kindling_memory::layout::DEVICE_IRQ_START);
/// ```
#[derive(Debug)]
pub struct ResourceAllocator {
    mmio: AddressAllocator,
    irqs: IdAllocator,
    irq_count: u32,
}

impl ResourceAllocator {
    /// Creates an allocator over the architecture's device MMIO range and
    /// device IRQ lines.
    #[cfg(target_arch = "x86_64")]
    pub fn new() -> Result<Self, AllocatorError> {
        use crate::layout::*;
        Self::with_ranges(
            DEVICE_MMIO_START,
            DEVICE_MMIO_END - DEVICE_MMIO_START,
            DEVICE_IRQ_START,
            DEVICE_IRQ_END,
        )
    }

    /// Creates an allocator over `[mmio_base, mmio_base + mmio_size)` and the
    /// IRQ lines `first_irq..=last_irq`.
    pub fn with_ranges(
        mmio_base: u64,
        mmio_size: u64,
        first_irq: u32,
        last_irq: u32,
    ) -> Result<Self, AllocatorError> {
        Ok(Self {
            mmio: AddressAllocator::new(mmio_base, mmio_size)
                .map_err(AllocatorError::InvalidRange)?,
            irqs: IdAllocator::new(first_irq, last_irq).map_err(AllocatorError::InvalidRange)?,
            irq_count: last_irq.saturating_sub(first_irq) + 1,
        })
    }

    /// Allocates an MMIO window of `size` bytes, aligned to its size's
    /// 4 KiB granule.
    pub fn allocate_mmio(&mut self, size: u64) -> Result<MmioWindow, AllocatorError> {
        if size == 0 || size % 0x1000 != 0 {
            return Err(AllocatorError::BadWindowSize { size });
        }
        let range = self
            .mmio
            .allocate(size, 0x1000, AllocPolicy::FirstMatch)
            .map_err(|_| AllocatorError::MmioExhausted { size })?;
        Ok(MmioWindow {
            base: range.start(),
            size,
        })
    }

    /// Allocates one interrupt line.
    pub fn allocate_irq(&mut self) -> Result<u32, AllocatorError> {
        self.irqs
            .allocate_id()
            .map_err(|_| AllocatorError::IrqExhausted {
                count: self.irq_count,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_do_not_overlap() {
        let mut a = ResourceAllocator::new().unwrap();
        let w1 = a.allocate_mmio(0x1000).unwrap();
        let w2 = a.allocate_mmio(0x2000).unwrap();
        assert!(w1.base + w1.size <= w2.base || w2.base + w2.size <= w1.base);
        assert_eq!(w1.base, crate::layout::DEVICE_MMIO_START);
    }

    #[test]
    fn bad_window_sizes_are_refused() {
        let mut a = ResourceAllocator::new().unwrap();
        assert_eq!(
            a.allocate_mmio(0),
            Err(AllocatorError::BadWindowSize { size: 0 })
        );
        assert_eq!(
            a.allocate_mmio(0x800),
            Err(AllocatorError::BadWindowSize { size: 0x800 })
        );
    }

    #[test]
    fn mmio_runs_out() {
        let mut a = ResourceAllocator::with_ranges(0x1000, 0x2000, 5, 6).unwrap();
        a.allocate_mmio(0x2000).unwrap();
        assert_eq!(
            a.allocate_mmio(0x1000),
            Err(AllocatorError::MmioExhausted { size: 0x1000 })
        );
    }

    #[test]
    fn irqs_run_out() {
        let mut a = ResourceAllocator::with_ranges(0x1000, 0x2000, 5, 6).unwrap();
        assert_eq!(a.allocate_irq(), Ok(5));
        assert_eq!(a.allocate_irq(), Ok(6));
        assert_eq!(
            a.allocate_irq(),
            Err(AllocatorError::IrqExhausted { count: 2 })
        );
    }

    #[test]
    fn every_device_irq_is_usable() {
        let mut a = ResourceAllocator::new().unwrap();
        let n = crate::layout::DEVICE_IRQ_END - crate::layout::DEVICE_IRQ_START + 1;
        for _ in 0..n {
            a.allocate_irq().unwrap();
        }
        assert!(a.allocate_irq().is_err());
    }
}
