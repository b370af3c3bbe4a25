//! The hardware-reduced ACPI power-management registers: sleep control,
//! sleep status and reset, through which a guest powers off and resets.
//!
//! The device covers the three I/O ports from [`ACPI_PM_PORT`]:
//!
//! | port | offset | register | guest write |
//! | --- | --- | --- | --- |
//! | [`ACPI_SLEEP_CONTROL_PORT`] | 0 | `SLEEP_CONTROL_REG` | `SLP_EN \| SLP_TYP << 2`: S5 ([`ACPI_S5_SLEEP_TYPE`]) powers off |
//! | [`ACPI_SLEEP_STATUS_PORT`] | 1 | `SLEEP_STATUS_REG` | 1 in `WAK_STS` (bit 7) clears it |
//! | [`ACPI_RESET_PORT`] | 2 | `RESET_REG` | [`ACPI_RESET_VALUE`] resets |
//!
//! The ACPI tables must advertise the same ports and values (the FADT's
//! registers and `RESET_VALUE`, the DSDT's `\_S5_` package);
//! `kindling_boot`'s defaults are these.
//!
//! Linux powers off (`poweroff`, with `\_S5_` present) by writing `WAK_STS`
//! to the status register and then `0x34` to the control register, and
//! resets (`reboot` without `reboot=` or with `reboot=a`) by writing the
//! reset value. Power-off ends the VM with [`ExitReason::PowerOff`], reset
//! with [`ExitReason::Reset`]; every other write changes nothing that ends
//! the VM.

use serde::{Deserialize, Serialize};

use crate::{BusDevice, ExitReason, VmExitHandle};

/// First I/O port of the device (the sleep control register).
///
/// 0x600 is where QEMU's PC machines put their ACPI power-management
/// block: no legacy ISA device and no Linux driver probes it.
pub const ACPI_PM_PORT: u16 = 0x600;
/// Number of I/O ports the device covers.
pub const ACPI_PM_PORT_LEN: u16 = 3;
/// I/O port of the FADT's `SLEEP_CONTROL_REG` (8 bits).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = ACPI_PM_PORT;
/// I/O port of the FADT's `SLEEP_STATUS_REG` (8 bits).
pub const ACPI_SLEEP_STATUS_PORT: u16 = ACPI_PM_PORT + 1;
/// I/O port of the FADT's `RESET_REG` (8 bits).
pub const ACPI_RESET_PORT: u16 = ACPI_PM_PORT + 2;
/// The FADT's `RESET_VALUE`: writing it to the reset register resets.
pub const ACPI_RESET_VALUE: u8 = 0x01;
/// The `SLP_TYP` of the DSDT's `\_S5_` package (soft off).
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;

const SLEEP_CONTROL_OFFSET: u64 = 0;
const SLEEP_STATUS_OFFSET: u64 = 1;
const RESET_OFFSET: u64 = 2;

/// `SLP_EN`: bit 5 of the sleep control register starts the transition.
const SLP_EN: u8 = 1 << 5;
/// `SLP_TYP`: bits 2 to 4 of the sleep control register.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
/// `WAK_STS`: bit 7 of the sleep status register; write 1 to clear.
pub const WAK_STS: u8 = 1 << 7;

/// Guest-visible state of the device, for snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiPmState {
    /// The sleep status register (only `WAK_STS` is ever set).
    pub sleep_status: u8,
}

/// The ACPI power-management device.
///
/// A sleep request for a state other than S5 (which Kindling's DSDT does
/// not offer) is a sleep that wakes at once: the device sets `WAK_STS`, so
/// a guest waiting for it goes on instead of spinning forever.
///
/// # Example
///
/// ```
/// use kindling_devices::legacy::AcpiPmDevice;
/// use kindling_devices::{BusDevice, ExitReason, VmExitHandle};
///
/// let exit = VmExitHandle::new().unwrap();
/// let mut pm = AcpiPmDevice::new(exit.clone());
/// pm.write(0, &[0x34]); // SLP_EN | S5 << 2 to the sleep control register
/// assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
/// ```
#[derive(Debug)]
pub struct AcpiPmDevice {
    state: AcpiPmState,
    exit: VmExitHandle,
}

impl AcpiPmDevice {
    /// Creates the device, ending the VM through `exit`.
    pub fn new(exit: VmExitHandle) -> Self {
        Self::from_checked_state(AcpiPmState::default(), exit)
    }

    /// Builds the device around a state that is either the reset state or
    /// one [`Persist::restore`](kindling_memory::Persist::restore) has
    /// checked.
    pub(super) fn from_checked_state(state: AcpiPmState, exit: VmExitHandle) -> Self {
        Self { state, exit }
    }

    /// The guest-visible state.
    pub fn state(&self) -> AcpiPmState {
        self.state
    }

    fn write_sleep_control(&mut self, value: u8) {
        if value & SLP_EN == 0 {
            return;
        }
        if (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == ACPI_S5_SLEEP_TYPE {
            self.exit.request(ExitReason::PowerOff);
        } else {
            self.state.sleep_status |= WAK_STS;
        }
    }

    fn write_register(&mut self, offset: u64, value: u8) {
        match offset {
            SLEEP_CONTROL_OFFSET => self.write_sleep_control(value),
            SLEEP_STATUS_OFFSET => self.state.sleep_status &= !(value & WAK_STS),
            RESET_OFFSET if value == ACPI_RESET_VALUE => {
                self.exit.request(ExitReason::Reset);
            }
            _ => {}
        }
    }

    fn read_register(&self, offset: u64) -> u8 {
        match offset {
            SLEEP_STATUS_OFFSET => self.state.sleep_status,
            // The control and reset registers are write-only.
            _ => 0,
        }
    }
}

/// Each byte of an access goes to the register at its own offset, so a
/// wider access touches consecutive registers.
impl BusDevice for AcpiPmDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .map_or(0, |at| self.read_register(at));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &byte) in data.iter().enumerate() {
            if let Some(at) = offset.checked_add(i as u64) {
                self.write_register(at, byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (AcpiPmDevice, VmExitHandle) {
        let exit = VmExitHandle::new().unwrap();
        (AcpiPmDevice::new(exit.clone()), exit)
    }

    fn status(d: &mut AcpiPmDevice) -> u8 {
        let mut b = [0xaa];
        d.read(SLEEP_STATUS_OFFSET, &mut b);
        b[0]
    }

    #[test]
    fn ports_and_values() {
        assert_eq!(
            (
                ACPI_SLEEP_CONTROL_PORT,
                ACPI_SLEEP_STATUS_PORT,
                ACPI_RESET_PORT
            ),
            (0x600, 0x601, 0x602)
        );
        assert_eq!(ACPI_PM_PORT + ACPI_PM_PORT_LEN - 1, ACPI_RESET_PORT);
        assert_eq!((ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE), (1, 5));
    }

    #[test]
    fn linux_poweroff_sequence_powers_off() {
        let (mut d, exit) = device();
        // acpi_hw_extended_sleep: clear WAK_STS, then SLP_EN | SLP_TYP.
        d.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        assert_eq!(exit.reason(), None);
        d.write(SLEEP_CONTROL_OFFSET, &[0x34]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
        assert_eq!(exit.event().read().unwrap(), 1);
        // It then polls WAK_STS, which stays clear: S5 does not wake.
        assert_eq!(status(&mut d), 0);
    }

    #[test]
    fn s5_without_slp_en_or_other_bits_set() {
        let (mut d, exit) = device();
        // SLP_TYP alone does nothing.
        d.write(SLEEP_CONTROL_OFFSET, &[ACPI_S5_SLEEP_TYPE << 2]);
        assert_eq!(exit.reason(), None);
        // Reserved bits around SLP_TYP and SLP_EN do not matter.
        d.write(SLEEP_CONTROL_OFFSET, &[0x34 | 0b1100_0011]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn other_sleep_states_wake_at_once() {
        let (mut d, exit) = device();
        assert_eq!(status(&mut d), 0);
        for slp_typ in [0u8, 1, 3, 4, 6, 7] {
            d.write(SLEEP_CONTROL_OFFSET, &[SLP_EN | (slp_typ << 2)]);
            assert_eq!(exit.reason(), None, "SLP_TYP {slp_typ}");
            assert_eq!(status(&mut d), WAK_STS);
            // Writing 0 changes nothing; writing WAK_STS clears it.
            d.write(SLEEP_STATUS_OFFSET, &[0x7f]);
            assert_eq!(status(&mut d), WAK_STS);
            d.write(SLEEP_STATUS_OFFSET, &[0xff]);
            assert_eq!(status(&mut d), 0);
        }
        assert_eq!(d.state(), AcpiPmState::default());
    }

    #[test]
    fn reset_value_resets_and_other_values_do_not() {
        let (mut d, exit) = device();
        for value in [0u8, 2, 0x06, 0xfe, 0xff] {
            d.write(RESET_OFFSET, &[value]);
            assert_eq!(exit.reason(), None, "value {value:#x}");
        }
        d.write(RESET_OFFSET, &[ACPI_RESET_VALUE]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
        // The first request wins.
        d.write(SLEEP_CONTROL_OFFSET, &[0x34]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }

    #[test]
    fn reads_of_write_only_registers_and_outside_the_device() {
        let (mut d, exit) = device();
        let mut b = [0xaau8; 4];
        d.read(SLEEP_CONTROL_OFFSET, &mut b);
        assert_eq!(b, [0; 4]);
        let mut b = [0xaau8; 2];
        d.read(u64::MAX, &mut b);
        assert_eq!(b, [0; 2]);
        d.write(u64::MAX, &[ACPI_RESET_VALUE; 4]);
        d.write(3, &[0x34, ACPI_RESET_VALUE]);
        d.write(0, &[]);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn wide_accesses_reach_consecutive_registers() {
        let (mut d, exit) = device();
        d.write(SLEEP_CONTROL_OFFSET, &[SLP_EN | (1 << 2)]);
        let mut b = [0u8; 3];
        d.read(SLEEP_CONTROL_OFFSET, &mut b);
        assert_eq!(b, [0, WAK_STS, 0]);
        // A 16-bit write at offset 1: clears WAK_STS, then resets.
        d.write(SLEEP_STATUS_OFFSET, &[WAK_STS, ACPI_RESET_VALUE]);
        assert_eq!(status(&mut d), 0);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
