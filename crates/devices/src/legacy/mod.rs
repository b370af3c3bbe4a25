//! Legacy (non-virtio) devices of a microVM.
//!
//! Every device implements [`kindling_memory::Persist`]: it saves its
//! guest-visible `*State` and is rebuilt from it with its host resources
//! (see `persist.rs`).

mod acpi_pm;
mod boot_timer;
mod cmos_rtc;
mod coalesced_serial;
mod debug_exit;
mod i8042;
mod persist;
mod serial;
mod serial_output;

pub use acpi_pm::{
    AcpiPmDevice, AcpiPmState, ACPI_PM_PORT, ACPI_PM_PORT_LEN, ACPI_RESET_PORT, ACPI_RESET_VALUE,
    ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, WAK_STS,
};
pub use boot_timer::{BootTimer, StartTime};
pub use cmos_rtc::{CmosRtc, CmosRtcState};
pub use coalesced_serial::{CoalescedSerial, CoalescedSerialError, SERIAL_DRAIN_PERIOD};
pub use debug_exit::DebugExit;
pub use i8042::{I8042Device, I8042State};
pub use persist::{
    BootTimerRestoreArgs, BootTimerState, DebugExitState, I8042RestoreArgs, LegacyStateError,
    SerialRestoreArgs, CMOS_SIZE, SERIAL_FIFO_SIZE,
};
pub use serial::{SerialDevice, SerialDeviceState, SerialOutput, TxInterruptWatch};
pub use serial_output::{BufferedOutput, OutputFlusher, PARTIAL_LINE_DELAY};

/// COM1's I/O port base.
pub const COM1_PORT: u64 = 0x3f8;
/// Number of ports a 16550 occupies.
pub const SERIAL_PORT_LEN: u64 = 8;
/// The i8042's first port (data); its command/status port is at +4.
pub const I8042_PORT: u64 = 0x60;
/// Number of ports the i8042 range covers (0x60..=0x64).
pub const I8042_PORT_LEN: u64 = 5;
/// The CMOS RTC's index port; its data port follows.
pub const CMOS_RTC_PORT: u64 = 0x70;
/// Number of ports the CMOS RTC occupies.
pub const CMOS_RTC_PORT_LEN: u64 = 2;
/// The debug-exit port: a guest byte write ends the VM with that status.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
