//! Connects vCPU exits to the PIO and MMIO buses.

use kindling_vcpu::VcpuExitHandler;

use crate::{Bus, ExitCounters, VmExitHandle};

/// Dispatches port-I/O and MMIO exits to the devices on two buses.
///
/// Accesses that hit no device are ignored; reads of them return all ones,
/// as on real hardware with nothing decoding the address.
///
/// This is the whole exit path of a VMM: hand it (in an `Arc`) to
/// [`kindling_vcpu::VcpuHandle::spawn`] or to
/// [`kindling_vcpu::Vcpu::run_once`].
///
/// # Example
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use kindling_devices::{BusDevice, BusExitHandler};
/// use kindling_vcpu::VcpuExitHandler;
///
/// struct Latch(u8);
/// impl BusDevice for Latch {
///     fn read(&mut self, _offset: u64, data: &mut [u8]) { data[0] = self.0; }
///     fn write(&mut self, _offset: u64, data: &[u8]) { self.0 = data[0]; }
/// }
///
/// let mut handler = BusExitHandler::default();
/// handler.pio.insert(0x80, 1, Arc::new(Mutex::new(Latch(0)))).unwrap();
/// handler.pio_write(0x80, &[42]);
/// let mut byte = [0u8];
/// handler.pio_read(0x80, &mut byte);
/// assert_eq!(byte, [42]);
/// handler.pio_read(0x81, &mut byte); // nothing there
/// assert_eq!(byte, [0xff]);
/// ```
#[derive(Debug, Default)]
pub struct BusExitHandler {
    /// The port-I/O bus.
    pub pio: Bus,
    /// The MMIO bus.
    pub mmio: Bus,
    /// How many exits of each kind were dispatched.
    pub counters: ExitCounters,
    /// The VM's exit handle, when its vCPUs should stop right after the
    /// exit that ended the VM ([`VcpuExitHandler::vm_ending`]) rather
    /// than run guest code until the VMM stops them.
    pub exit: Option<VmExitHandle>,
}

impl VcpuExitHandler for BusExitHandler {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.counters.count_pio_in();
        if self.pio.read(u64::from(port), data).is_err() {
            data.fill(0xff);
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        self.counters.count_pio_out();
        let _ = self.pio.write(u64::from(port), data);
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        self.counters.count_mmio_read();
        if self.mmio.read(addr, data).is_err() {
            data.fill(0xff);
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.counters.count_mmio_write();
        let _ = self.mmio.write(addr, data);
    }

    fn coalesced_pio_write(&self, port: u16, data: &[u8]) {
        self.counters.count_coalesced();
        let _ = self.pio.write(u64::from(port), data);
    }

    fn coalesced_mmio_write(&self, addr: u64, data: &[u8]) {
        self.counters.count_coalesced();
        let _ = self.mmio.write(addr, data);
    }

    fn vm_ending(&self) -> bool {
        self.exit.as_ref().is_some_and(VmExitHandle::is_requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusDevice;
    use std::sync::{Arc, Mutex};

    struct Latch(u8);
    impl BusDevice for Latch {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data[0] = self.0;
        }
        fn write(&mut self, _: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn unmapped_reads_are_all_ones() {
        let h = BusExitHandler::default();
        let mut b = [0u8; 2];
        h.pio_read(0x80, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        h.pio_write(0x80, &[1]);
        let mut m = [0u8; 4];
        h.mmio_read(0xd000_0000, &mut m);
        assert_eq!(m, [0xff; 4]);
        h.mmio_write(0xd000_0000, &[1; 4]);
        let counts = h.counters.counts();
        assert_eq!(
            (
                counts.pio_in,
                counts.pio_out,
                counts.mmio_read,
                counts.mmio_write
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn mapped_accesses_reach_devices() {
        let mut h = BusExitHandler::default();
        h.pio
            .insert(0x80, 1, Arc::new(Mutex::new(Latch(0))))
            .unwrap();
        h.mmio
            .insert(0x1000, 1, Arc::new(Mutex::new(Latch(0))))
            .unwrap();
        h.pio_write(0x80, &[9]);
        h.mmio_write(0x1000, &[7]);
        let mut b = [0u8];
        h.pio_read(0x80, &mut b);
        assert_eq!(b, [9]);
        h.mmio_read(0x1000, &mut b);
        assert_eq!(b, [7]);
    }

    #[test]
    fn the_vm_ends_for_the_vcpus_once_its_exit_is_requested() {
        let mut handler = BusExitHandler::default();
        assert!(!handler.vm_ending(), "no exit handle: never ending");
        let exit = VmExitHandle::new().unwrap();
        handler.exit = Some(exit.clone());
        assert!(!handler.vm_ending());
        exit.request(crate::ExitReason::PowerOff);
        assert!(handler.vm_ending());
    }
}
