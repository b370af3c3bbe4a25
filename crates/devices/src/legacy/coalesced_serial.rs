//! Serial output at one VM exit per line: COM1's data port as a KVM
//! coalesced port-I/O zone.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kindling_vcpu::{CoalescedRing, Vcpu, VcpuError, VcpuExitHandler, Vm, VmError};
use vmm_sys_util::timerfd::TimerFd;

use super::{SerialDevice, COM1_PORT};

/// How often coalesced writes are replayed while the guest drives the UART
/// by interrupts: 16 bytes (one FIFO) per period, faster than a real
/// 115200-baud line.
pub const SERIAL_DRAIN_PERIOD: Duration = Duration::from_millis(1);

/// Errors making the serial output coalesced.
#[derive(Debug, thiserror::Error)]
pub enum CoalescedSerialError {
    /// KVM refused the coalesced zone.
    #[error("cannot make the serial data port coalesced: {0}")]
    Zone(#[source] VmError),
    /// The ring could not be mapped.
    #[error("cannot map the coalesced ring for the serial port: {0}")]
    Ring(#[source] VcpuError),
    /// The drain timer could not be created.
    #[error("cannot create the serial port's drain timer: {0}")]
    Timer(#[source] std::io::Error),
}

/// COM1's data port made a KVM coalesced zone: a guest line of output
/// costs one VM exit instead of one per byte (each about 27 µs on a nested
/// host).
///
/// KVM buffers the guest's writes to the port in a ring instead of
/// exiting. The writes must be replayed, in order, before anything else the
/// guest did is handled: every vCPU given to [`CoalescedSerial::setup`]
/// replays the ring before handling its next exit, which keeps a polling
/// driver's output in order. A guest that enables the transmitter-empty
/// interrupt (Linux's tty layer) waits for it without exiting, so while
/// that interrupt is on, a timer ([`CoalescedSerial::timer_fd`]) asks the
/// VMM's event loop to call [`CoalescedSerial::on_timer`] every
/// [`SERIAL_DRAIN_PERIOD`]. At the end of the VM, call
/// [`CoalescedSerial::drain`] once more so no output is lost.
#[derive(Debug)]
pub struct CoalescedSerial {
    ring: Arc<CoalescedRing>,
    timer: Arc<Mutex<TimerFd>>,
}

impl CoalescedSerial {
    /// Makes the guest's writes to COM1's data port (`serial`, at
    /// [`COM1_PORT`]) coalesced on `vm`, and attaches the ring to every
    /// vCPU in `vcpus` (all of the VM's vCPUs, created but not yet
    /// running). Returns `Ok(None)` where the host cannot coalesce port I/O
    /// or there is no vCPU: output then simply exits per byte.
    pub fn setup(
        vm: &Vm,
        vcpus: &mut [Vcpu],
        serial: &Arc<Mutex<SerialDevice>>,
    ) -> Result<Option<Self>, CoalescedSerialError> {
        let Some(first) = vcpus.first() else {
            return Ok(None);
        };
        if !vm
            .register_coalesced_pio(COM1_PORT as u16, 1)
            .map_err(CoalescedSerialError::Zone)?
        {
            return Ok(None);
        }
        let ring = Arc::new(CoalescedRing::map(first).map_err(CoalescedSerialError::Ring)?);
        for vcpu in vcpus.iter_mut() {
            vcpu.attach_coalesced_ring(ring.clone());
        }
        let timer = Arc::new(Mutex::new(
            crate::nonblocking_timer().map_err(CoalescedSerialError::Timer)?,
        ));
        let watch_timer = timer.clone();
        serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_tx_interrupt_watch(Box::new(move |enabled| {
                let mut timer = watch_timer.lock().unwrap_or_else(|p| p.into_inner());
                // A timer that cannot be armed leaves replay to vCPU exits.
                let _ = if enabled {
                    timer.reset(SERIAL_DRAIN_PERIOD, Some(SERIAL_DRAIN_PERIOD))
                } else {
                    timer.clear()
                };
            }));
        Ok(Some(Self { ring, timer }))
    }

    /// The timer to watch for readability on the event loop; call
    /// [`CoalescedSerial::on_timer`] when it fires.
    pub fn timer_fd(&self) -> RawFd {
        self.timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_raw_fd()
    }

    /// Consumes the timer's expirations and replays the buffered writes
    /// through `handler` (the VMM's exit handler, whose PIO bus holds the
    /// serial port).
    pub fn on_timer(&self, handler: &dyn VcpuExitHandler) {
        {
            let mut timer = self.timer.lock().unwrap_or_else(|p| p.into_inner());
            // Non-blocking: an expiration consumed by a racing re-arm is
            // simply gone.
            let _ = timer.wait();
        }
        self.drain(handler);
    }

    /// Replays every buffered write through `handler`.
    pub fn drain(&self, handler: &dyn VcpuExitHandler) {
        self.ring.drain(handler);
    }
}
