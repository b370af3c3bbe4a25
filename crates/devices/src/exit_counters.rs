//! Counts of the vCPU exits a [`BusExitHandler`](crate::BusExitHandler)
//! dispatched, for metrics.
//!
//! One relaxed atomic increment per exit: a few nanoseconds against the
//! tens of microseconds an exit costs, and no lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Exit counters, shared by every vCPU of a VM.
#[derive(Debug, Default)]
pub struct ExitCounters {
    pio_in: AtomicU64,
    pio_out: AtomicU64,
    mmio_read: AtomicU64,
    mmio_write: AtomicU64,
    coalesced: AtomicU64,
}

/// The exits counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Port-I/O reads (`KVM_EXIT_IO`, in), string accesses counted once.
    pub pio_in: u64,
    /// Port-I/O writes (`KVM_EXIT_IO`, out).
    pub pio_out: u64,
    /// MMIO reads (`KVM_EXIT_MMIO`).
    pub mmio_read: u64,
    /// MMIO writes (`KVM_EXIT_MMIO`).
    pub mmio_write: u64,
    /// Writes KVM buffered in a coalesced ring instead of exiting,
    /// replayed to their device.
    pub coalesced: u64,
}

impl ExitCounters {
    pub(crate) fn count_pio_in(&self) {
        self.pio_in.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_pio_out(&self) {
        self.pio_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_mmio_read(&self) {
        self.mmio_read.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_mmio_write(&self) {
        self.mmio_write.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn counts(&self) -> ExitCounts {
        ExitCounts {
            pio_in: self.pio_in.load(Ordering::Relaxed),
            pio_out: self.pio_out.load(Ordering::Relaxed),
            mmio_read: self.mmio_read.load(Ordering::Relaxed),
            mmio_write: self.mmio_write.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_counted_on_its_own() {
        let c = ExitCounters::default();
        c.count_pio_in();
        c.count_pio_out();
        c.count_pio_out();
        c.count_mmio_read();
        c.count_mmio_write();
        c.count_mmio_write();
        c.count_mmio_write();
        c.count_coalesced();
        assert_eq!(
            c.counts(),
            ExitCounts {
                pio_in: 1,
                pio_out: 2,
                mmio_read: 1,
                mmio_write: 3,
                coalesced: 1
            }
        );
    }
}
