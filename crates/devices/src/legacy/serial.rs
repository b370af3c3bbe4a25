//! The 16550 UART on COM1, backed by vm-superio.

use std::io::{self, Write};

use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

use crate::{BusDevice, EventFdLine};

/// Guest-visible state of a [`SerialDevice`], for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SerialDeviceState {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable register.
    pub interrupt_enable: u8,
    /// Interrupt identification register.
    pub interrupt_identification: u8,
    /// Line control register.
    pub line_control: u8,
    /// Line status register.
    pub line_status: u8,
    /// Modem control register.
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Bytes received and not yet read by the guest.
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialDeviceState {
    fn from(s: SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialDeviceState> for SerialState {
    fn from(s: &SerialDeviceState) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// Where serial output goes.
pub type SerialOutput = Box<dyn Write + Send>;

/// A 16550 UART whose output goes to a writer and whose input comes from
/// [`SerialDevice::enqueue_input`].
pub struct SerialDevice {
    uart: Serial<EventFdLine, NoEvents, SerialOutput>,
    lost_output_bytes: u64,
    /// Shadow of the line control register (for the DLAB bit).
    line_control: u8,
    /// Whether the guest has the transmitter-empty interrupt enabled.
    tx_interrupt: bool,
    tx_interrupt_watch: Option<TxInterruptWatch>,
}

/// Called with the new value whenever the guest enables or disables the
/// transmitter-holding-register-empty interrupt (IER bit 1).
pub type TxInterruptWatch = Box<dyn FnMut(bool) + Send>;

/// Line control register offset, and its divisor-latch access bit.
const LCR_OFFSET: u64 = 3;
const LCR_DLAB: u8 = 0x80;
/// Interrupt enable register offset, and its THR-empty bit.
const IER_OFFSET: u64 = 1;
const IER_THRI: u8 = 0x02;

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("state", &self.state())
            .field("lost_output_bytes", &self.lost_output_bytes)
            .finish()
    }
}

impl SerialDevice {
    /// Creates a UART in its reset state raising `irq`, writing to `out`.
    pub fn new(irq: EventFdLine, out: SerialOutput) -> Self {
        Self {
            uart: Serial::new(irq, out),
            lost_output_bytes: 0,
            line_control: 0,
            tx_interrupt: false,
            tx_interrupt_watch: None,
        }
    }

    /// Rebuilds a UART from a saved state that
    /// [`Persist::restore`](kindling_memory::Persist::restore) has checked.
    /// Interrupts the saved state has pending and enabled are raised again.
    pub(super) fn from_checked_state(
        state: &SerialDeviceState,
        irq: EventFdLine,
        out: SerialOutput,
    ) -> Result<Self, vm_superio::serial::Error<io::Error>> {
        let uart = Serial::from_state(&SerialState::from(state), irq, NoEvents, out)?;
        Ok(Self {
            uart,
            lost_output_bytes: 0,
            line_control: state.line_control,
            tx_interrupt: state.interrupt_enable & IER_THRI != 0,
            tx_interrupt_watch: None,
        })
    }

    /// Calls `watch` whenever the guest turns the transmitter-empty
    /// interrupt on or off. A VMM that coalesces writes to the data port
    /// uses it to replay them periodically while the guest waits for that
    /// interrupt instead of polling the line status.
    pub fn set_tx_interrupt_watch(&mut self, mut watch: TxInterruptWatch) {
        watch(self.tx_interrupt);
        self.tx_interrupt_watch = Some(watch);
    }

    /// The guest-visible state.
    pub fn state(&self) -> SerialDeviceState {
        self.uart.state().into()
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.uart
            .enqueue_raw_bytes(bytes)
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Output bytes that could not be written to the output stream.
    pub fn lost_output_bytes(&self) -> u64 {
        self.lost_output_bytes
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.uart.writer_mut().flush()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data.len()) {
            (Ok(offset), 1) if offset < 8 => data[0] = self.uart.read(offset),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [value] = data else { return };
        if offset >= 8 {
            return;
        }
        if self.uart.write(offset as u8, *value).is_err() {
            self.lost_output_bytes += 1;
        }
        match offset {
            LCR_OFFSET => self.line_control = *value,
            IER_OFFSET if self.line_control & LCR_DLAB == 0 => {
                let enabled = *value & IER_THRI != 0;
                if enabled != self.tx_interrupt {
                    self.tx_interrupt = enabled;
                    if let Some(watch) = self.tx_interrupt_watch.as_mut() {
                        watch(enabled);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_reaches_the_writer() {
        let out = Shared::default();
        let mut s = SerialDevice::new(EventFdLine::new(4).unwrap(), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_is_readable_and_raises_the_irq() {
        let irq = EventFdLine::new(4).unwrap();
        let mut s = SerialDevice::new(irq.clone(), Box::new(io::sink()));
        // Enable the received-data interrupt.
        s.write(1, &[0x01]);
        assert_eq!(s.enqueue_input(b"ab").unwrap(), 2);
        assert_eq!(irq.event().read().unwrap(), 1);
        let mut b = [0u8];
        s.read(5, &mut b);
        assert_eq!(b[0] & 1, 1, "data ready");
        s.read(0, &mut b);
        assert_eq!(b[0], b'a');
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut s = SerialDevice::new(EventFdLine::new(4).unwrap(), Box::new(io::sink()));
        let mut wide = [0u8; 4];
        s.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        s.write(0, &[1, 2]);
        s.write(9, &[1]);
        s.write(u64::MAX, &[1]);
    }

    #[test]
    fn tx_interrupt_changes_are_reported() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut s = SerialDevice::new(EventFdLine::new(4).unwrap(), Box::new(io::sink()));
        let record = seen.clone();
        s.set_tx_interrupt_watch(Box::new(move |on| record.lock().unwrap().push(on)));
        s.write(1, &[0x02]); // THRI on
        s.write(1, &[0x03]); // still on: no report
        s.write(3, &[0x80]); // DLAB: offset 1 is the divisor latch now
        s.write(1, &[0x00]);
        s.write(3, &[0x03]);
        s.write(1, &[0x01]); // THRI off
        assert_eq!(*seen.lock().unwrap(), vec![false, true, false]);
    }
}
