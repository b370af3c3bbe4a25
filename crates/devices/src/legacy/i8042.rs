//! The i8042 PS/2 controller: enough for Linux to find a keyboard, for the
//! guest to reset the machine through it, and for the host to send
//! Ctrl-Alt-Del.
//!
//! Port 0x60 (offset 0) is the data port, port 0x64 (offset 4) the
//! status/command port.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{BusDevice, ExitReason, InterruptLine, VmExitHandle};

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

// Status register bits.
pub(super) const SB_OUT_DATA_AVAIL: u8 = 0x01;
pub(super) const SB_I8042_CMD_DATA: u8 = 0x08;
pub(super) const SB_SYS_FLAG: u8 = 0x04;
pub(super) const SB_KBD_ENABLED: u8 = 0x10;

// Controller command byte bits.
const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;
const CB_KBD_DISABLED: u8 = 0x10;

// Controller commands (written to port 0x64).
pub(super) const CMD_READ_CTR: u8 = 0x20;
pub(super) const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
pub(super) const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_INPUT_PORT: u8 = 0xc0;
const CMD_READ_OUTP: u8 = 0xd0;
pub(super) const CMD_WRITE_OUTP: u8 = 0xd1;
pub(super) const CMD_WRITE_KBD_BUF: u8 = 0xd2;
const CMD_RESET_CPU: u8 = 0xfe;

// Keyboard commands and answers (port 0x60).
const KBD_ACK: u8 = 0xfa;
const KBD_RESET: u8 = 0xff;
const KBD_RESET_OK: u8 = 0xaa;
const KBD_IDENTIFY: u8 = 0xf2;

/// Scan codes (set 2) of Ctrl, Alt and Del key presses, as Linux's atkbd
/// driver expects them from a Firecracker-style controller.
const CTRL_ALT_DEL: [u8; 5] = [0x14, 0x11, 0xe0, 0x71, 0x00];

/// Largest number of bytes the output buffer holds; further bytes are
/// dropped, like a real controller that the guest does not drain.
pub(super) const OUTPUT_CAPACITY: usize = 16;

/// Guest-visible state of the i8042, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Status register.
    pub status: u8,
    /// Controller command byte.
    pub control: u8,
    /// Output port.
    pub output_port: u8,
    /// The controller command waiting for its data byte, if any.
    pub pending_command: Option<u8>,
    /// Bytes waiting to be read from port 0x60.
    pub output: VecDeque<u8>,
}

impl Default for I8042State {
    fn default() -> Self {
        Self {
            status: SB_SYS_FLAG | SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            output_port: 0x01,
            pending_command: None,
            output: VecDeque::new(),
        }
    }
}

/// The i8042 controller device.
pub struct I8042Device {
    state: I8042State,
    irq: Box<dyn InterruptLine>,
    exit: VmExitHandle,
}

impl std::fmt::Debug for I8042Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042Device")
            .field("state", &self.state)
            .finish()
    }
}

impl I8042Device {
    /// Creates a controller raising `irq` (IRQ 1) when it has data, and
    /// ending the VM through `exit` on a reset command.
    pub fn new(irq: Box<dyn InterruptLine>, exit: VmExitHandle) -> Self {
        Self::from_checked_state(I8042State::default(), irq, exit)
    }

    /// Builds a controller around a state that is either the reset state
    /// or one [`Persist::restore`](kindling_memory::Persist::restore) has
    /// checked.
    pub(super) fn from_checked_state(
        state: I8042State,
        irq: Box<dyn InterruptLine>,
        exit: VmExitHandle,
    ) -> Self {
        Self { state, irq, exit }
    }

    /// The guest-visible state.
    pub fn state(&self) -> I8042State {
        self.state.clone()
    }

    /// Queues the Ctrl-Alt-Del key presses for the guest and raises the
    /// keyboard interrupt. Fails if the guest has not drained earlier input.
    pub fn send_ctrl_alt_del(&mut self) -> std::io::Result<()> {
        if self.state.output.len() + CTRL_ALT_DEL.len() - 1 > OUTPUT_CAPACITY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the i8042 output buffer is full: the guest is not reading its keyboard",
            ));
        }
        for &b in &CTRL_ALT_DEL[..CTRL_ALT_DEL.len() - 1] {
            self.state.output.push_back(b);
        }
        self.update_status();
        self.irq.trigger()
    }

    fn push(&mut self, byte: u8) {
        if self.state.output.len() < OUTPUT_CAPACITY {
            self.state.output.push_back(byte);
        }
        self.update_status();
        if self.state.control & CB_KBD_INT != 0 {
            // A lost edge only delays the guest until it polls the status.
            let _ = self.irq.trigger();
        }
    }

    fn update_status(&mut self) {
        if self.state.output.is_empty() {
            self.state.status &= !SB_OUT_DATA_AVAIL;
        } else {
            self.state.status |= SB_OUT_DATA_AVAIL;
        }
    }

    fn command(&mut self, cmd: u8) {
        self.state.status |= SB_I8042_CMD_DATA;
        match cmd {
            CMD_READ_CTR => self.push(self.state.control),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_BUF => {
                self.state.pending_command = Some(cmd)
            }
            CMD_READ_OUTP => self.push(self.state.output_port),
            CMD_READ_INPUT_PORT => self.push(0x00),
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST => self.push(0x00),
            CMD_DISABLE_KBD => self.state.control |= CB_KBD_DISABLED,
            CMD_ENABLE_KBD => self.state.control &= !CB_KBD_DISABLED,
            CMD_DISABLE_AUX | CMD_ENABLE_AUX => {}
            CMD_RESET_CPU => {
                self.exit.request(ExitReason::Reset);
            }
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        self.state.status &= !SB_I8042_CMD_DATA;
        match self.state.pending_command.take() {
            Some(CMD_WRITE_CTR) => self.state.control = value,
            Some(CMD_WRITE_OUTP) => self.state.output_port = value,
            Some(CMD_WRITE_KBD_BUF) => self.push(value),
            _ => match value {
                KBD_RESET => {
                    self.push(KBD_ACK);
                    self.push(KBD_RESET_OK);
                }
                KBD_IDENTIFY => {
                    self.push(KBD_ACK);
                    self.push(0xab);
                    self.push(0x83);
                }
                _ => self.push(KBD_ACK),
            },
        }
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => {
                let byte = self.state.output.pop_front().unwrap_or(0);
                self.update_status();
                byte
            }
            COMMAND_OFFSET => self.state.status,
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [value] = data else { return };
        match offset {
            DATA_OFFSET => self.data(*value),
            COMMAND_OFFSET => self.command(*value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventFdLine;

    fn device() -> (I8042Device, EventFdLine, VmExitHandle) {
        let irq = EventFdLine::new(1).unwrap();
        let exit = VmExitHandle::new().unwrap();
        (
            I8042Device::new(Box::new(irq.clone()), exit.clone()),
            irq,
            exit,
        )
    }

    fn read(d: &mut I8042Device, offset: u64) -> u8 {
        let mut b = [0u8];
        d.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_ends_the_vm() {
        let (mut d, _, exit) = device();
        d.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }

    #[test]
    fn self_test_and_command_byte() {
        let (mut d, _, _) = device();
        d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut d, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL, 1);
        assert_eq!(read(&mut d, DATA_OFFSET), 0x55);
        assert_eq!(read(&mut d, COMMAND_OFFSET) & SB_OUT_DATA_AVAIL, 0);
        d.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        d.write(DATA_OFFSET, &[0x45]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, DATA_OFFSET), 0x45);
    }

    #[test]
    fn keyboard_reset_is_acknowledged() {
        let (mut d, irq, _) = device();
        d.write(DATA_OFFSET, &[KBD_RESET]);
        assert_eq!(read(&mut d, DATA_OFFSET), KBD_ACK);
        assert_eq!(read(&mut d, DATA_OFFSET), KBD_RESET_OK);
        assert!(irq.event().read().unwrap() >= 1);
    }

    #[test]
    fn ctrl_alt_del_is_queued_until_full() {
        let (mut d, irq, _) = device();
        d.send_ctrl_alt_del().unwrap();
        assert_eq!(irq.event().read().unwrap(), 1);
        assert_eq!(read(&mut d, DATA_OFFSET), 0x14);
        while d.state().output.len() + 4 <= OUTPUT_CAPACITY {
            d.send_ctrl_alt_del().unwrap();
        }
        assert!(d.send_ctrl_alt_del().is_err());
    }

    #[test]
    fn output_buffer_is_bounded_and_odd_accesses_are_harmless() {
        let (mut d, _, _) = device();
        for _ in 0..100 {
            d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        assert_eq!(d.state().output.len(), OUTPUT_CAPACITY);
        d.write(2, &[1]);
        d.write(DATA_OFFSET, &[1, 2]);
        let mut wide = [0xaa; 4];
        d.read(COMMAND_OFFSET, &mut wide);
        assert_eq!(&wide[1..], &[0, 0, 0]);
        assert_eq!(read(&mut d, 3), 0xff);
    }
}
