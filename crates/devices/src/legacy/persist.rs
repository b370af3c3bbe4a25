//! The persist contract ([`kindling_memory::Persist`]) for the legacy
//! devices: each saves its guest-visible `*State` and is rebuilt from it
//! with its host resources (interrupt line, exit handle, output writer).
//! A state is untrusted input: every restore checks it first.

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kindling_memory::Persist;
use serde::{Deserialize, Serialize};

use super::acpi_pm::{AcpiPmDevice, AcpiPmState, WAK_STS};
use super::boot_timer::{BootTimer, StartTime};
use super::cmos_rtc::{CmosRtc, CmosRtcState};
use super::debug_exit::DebugExit;
use super::i8042::{self, I8042Device, I8042State};
use super::serial::{SerialDevice, SerialDeviceState, SerialOutput};
use crate::{EventFdLine, InterruptLine, VmExitHandle};

/// The 16550's receive FIFO size (vm-superio's).
pub const SERIAL_FIFO_SIZE: usize = 64;
/// Interrupt enable bits a 16550 has (the rest read as zero).
const SERIAL_IER_BITS: u8 = 0x0f;
/// Interrupt identification: no interrupt pending.
const SERIAL_IIR_NONE: u8 = 0x01;
/// Interrupt identification: THR empty and received data available.
const SERIAL_IIR_SOURCES: u8 = 0x06;
/// Line status bits the UART sets: data ready, THR empty, idle.
const SERIAL_LSR_BITS: u8 = 0x61;
/// Line status: data ready.
const SERIAL_LSR_DATA_READY: u8 = 0x01;
/// The number of bytes of CMOS storage.
pub const CMOS_SIZE: usize = 128;

/// Why a saved legacy-device state cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum LegacyStateError {
    /// The serial state buffers more input than the UART's FIFO holds.
    #[error("serial state buffers {len} input bytes, more than the {capacity}-byte FIFO")]
    SerialInputOverflow {
        /// Bytes in the state.
        len: usize,
        /// The FIFO size.
        capacity: usize,
    },
    /// A serial register holds bits the UART never sets.
    #[error("serial state: {register} {value:#04x} has bits a 16550 never sets")]
    SerialRegister {
        /// The register.
        register: &'static str,
        /// Its saved value.
        value: u8,
    },
    /// The serial line status says "data ready" but no input is buffered,
    /// or the other way round.
    #[error("serial state: line status {line_status:#04x} contradicts the {buffered} buffered input bytes")]
    SerialDataReady {
        /// The saved line status.
        line_status: u8,
        /// Bytes in the saved input buffer.
        buffered: usize,
    },
    /// Raising the interrupts the serial state has pending failed.
    #[error("serial state: cannot raise its pending interrupt: {0}")]
    SerialInterrupt(#[source] std::io::Error),
    /// The i8042 state holds more output than the controller buffers.
    #[error(
        "i8042 state holds {len} output bytes, more than the {capacity} the controller buffers"
    )]
    I8042OutputOverflow {
        /// Bytes in the state.
        len: usize,
        /// The controller's buffer size.
        capacity: usize,
    },
    /// The i8042 state waits for the data byte of a command that takes
    /// none.
    #[error("i8042 state waits for the data byte of command {0:#04x}, which takes none")]
    I8042PendingCommand(u8),
    /// The i8042 status register has bits the controller never sets, or
    /// its output-full bit contradicts the output buffer.
    #[error("i8042 state: status {status:#04x} does not match the controller (with {buffered} output bytes)")]
    I8042Status {
        /// The saved status register.
        status: u8,
        /// Bytes in the saved output buffer.
        buffered: usize,
    },
    /// The CMOS image is not 128 bytes.
    #[error("CMOS state has {0} bytes of storage, not 128")]
    CmosSize(usize),
    /// The CMOS index register points past the 128 bytes (bit 7 is the
    /// NMI mask, which is not kept).
    #[error("CMOS state selects register {0:#04x}, past the 128 bytes")]
    CmosIndex(u8),
    /// The ACPI sleep status has bits other than `WAK_STS`.
    #[error("ACPI PM state: sleep status {0:#04x} has bits other than WAK_STS")]
    AcpiSleepStatus(u8),
}

/// The host resources a restored [`SerialDevice`] needs.
pub struct SerialRestoreArgs {
    /// The UART's interrupt line (IRQ 4 for COM1).
    pub irq: EventFdLine,
    /// Where the guest's output goes.
    pub out: SerialOutput,
}

impl std::fmt::Debug for SerialRestoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialRestoreArgs")
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

fn check_serial(state: &SerialDeviceState) -> Result<(), LegacyStateError> {
    let len = state.in_buffer.len();
    if len > SERIAL_FIFO_SIZE {
        return Err(LegacyStateError::SerialInputOverflow {
            len,
            capacity: SERIAL_FIFO_SIZE,
        });
    }
    let register = |register, value| LegacyStateError::SerialRegister { register, value };
    if state.interrupt_enable & !SERIAL_IER_BITS != 0 {
        return Err(register("interrupt enable", state.interrupt_enable));
    }
    let iir = state.interrupt_identification;
    let iir_valid = iir == SERIAL_IIR_NONE || (iir != 0 && iir & !SERIAL_IIR_SOURCES == 0);
    if !iir_valid {
        return Err(register("interrupt identification", iir));
    }
    if state.line_status & !SERIAL_LSR_BITS != 0 {
        return Err(register("line status", state.line_status));
    }
    if (state.line_status & SERIAL_LSR_DATA_READY != 0) != (len != 0) {
        return Err(LegacyStateError::SerialDataReady {
            line_status: state.line_status,
            buffered: len,
        });
    }
    Ok(())
}

impl Persist<'_> for SerialDevice {
    type State = SerialDeviceState;
    type ConstructorArgs = SerialRestoreArgs;
    type Error = LegacyStateError;

    fn save(&self) -> Result<SerialDeviceState, LegacyStateError> {
        Ok(self.state())
    }

    /// Rebuilds the UART; interrupts pending and enabled in the state are
    /// raised again. A transmitter-interrupt watch is set again afterwards
    /// ([`SerialDevice::set_tx_interrupt_watch`]).
    fn restore(
        args: SerialRestoreArgs,
        state: &SerialDeviceState,
    ) -> Result<Self, LegacyStateError> {
        check_serial(state)?;
        SerialDevice::from_checked_state(state, args.irq, args.out).map_err(|e| match e {
            vm_superio::serial::Error::Trigger(e) | vm_superio::serial::Error::IOError(e) => {
                LegacyStateError::SerialInterrupt(e)
            }
            vm_superio::serial::Error::FullFifo => LegacyStateError::SerialInputOverflow {
                len: state.in_buffer.len(),
                capacity: SERIAL_FIFO_SIZE,
            },
        })
    }
}

/// The host resources a restored [`I8042Device`] needs.
pub struct I8042RestoreArgs {
    /// The keyboard interrupt (IRQ 1).
    pub irq: Box<dyn InterruptLine>,
    /// Where a reset command goes.
    pub exit: VmExitHandle,
}

impl std::fmt::Debug for I8042RestoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042RestoreArgs")
            .field("exit", &self.exit)
            .finish_non_exhaustive()
    }
}

fn check_i8042(state: &I8042State) -> Result<(), LegacyStateError> {
    let len = state.output.len();
    if len > i8042::OUTPUT_CAPACITY {
        return Err(LegacyStateError::I8042OutputOverflow {
            len,
            capacity: i8042::OUTPUT_CAPACITY,
        });
    }
    if let Some(cmd) = state.pending_command {
        if ![
            i8042::CMD_WRITE_CTR,
            i8042::CMD_WRITE_OUTP,
            i8042::CMD_WRITE_KBD_BUF,
        ]
        .contains(&cmd)
        {
            return Err(LegacyStateError::I8042PendingCommand(cmd));
        }
    }
    let known = i8042::SB_OUT_DATA_AVAIL
        | i8042::SB_I8042_CMD_DATA
        | i8042::SB_SYS_FLAG
        | i8042::SB_KBD_ENABLED;
    let full = state.status & i8042::SB_OUT_DATA_AVAIL != 0;
    if state.status & !known != 0 || full != (len != 0) {
        return Err(LegacyStateError::I8042Status {
            status: state.status,
            buffered: len,
        });
    }
    Ok(())
}

impl Persist<'_> for I8042Device {
    type State = I8042State;
    type ConstructorArgs = I8042RestoreArgs;
    type Error = LegacyStateError;

    fn save(&self) -> Result<I8042State, LegacyStateError> {
        Ok(self.state())
    }

    fn restore(args: I8042RestoreArgs, state: &I8042State) -> Result<Self, LegacyStateError> {
        check_i8042(state)?;
        Ok(I8042Device::from_checked_state(
            state.clone(),
            args.irq,
            args.exit,
        ))
    }
}

impl Persist<'_> for CmosRtc {
    type State = CmosRtcState;
    type ConstructorArgs = ();
    type Error = LegacyStateError;

    fn save(&self) -> Result<CmosRtcState, LegacyStateError> {
        Ok(self.state())
    }

    /// Rebuilds the clock. The time registers are not part of the state:
    /// they always read the host's current UTC time.
    fn restore(_: (), state: &CmosRtcState) -> Result<Self, LegacyStateError> {
        if state.cmos.len() != CMOS_SIZE {
            return Err(LegacyStateError::CmosSize(state.cmos.len()));
        }
        if usize::from(state.index) >= CMOS_SIZE {
            return Err(LegacyStateError::CmosIndex(state.index));
        }
        Ok(CmosRtc::from_checked_state(state.clone()))
    }
}

impl Persist<'_> for AcpiPmDevice {
    type State = AcpiPmState;
    type ConstructorArgs = VmExitHandle;
    type Error = LegacyStateError;

    fn save(&self) -> Result<AcpiPmState, LegacyStateError> {
        Ok(self.state())
    }

    fn restore(exit: VmExitHandle, state: &AcpiPmState) -> Result<Self, LegacyStateError> {
        if state.sleep_status & !WAK_STS != 0 {
            return Err(LegacyStateError::AcpiSleepStatus(state.sleep_status));
        }
        Ok(AcpiPmDevice::from_checked_state(*state, exit))
    }
}

/// The boot timer's state: it has none the guest can observe (reads
/// return zero; the boot time it measured belongs to the host process
/// that started the VM, not to a restored one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimerState {}

/// The host resources a restored [`BootTimer`] needs.
#[derive(Clone)]
pub struct BootTimerRestoreArgs {
    /// The start of the restoring process, to measure from.
    pub start: StartTime,
    /// Where the boot time is logged.
    pub log: Arc<Mutex<dyn Write + Send>>,
}

impl std::fmt::Debug for BootTimerRestoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootTimerRestoreArgs")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl Persist<'_> for BootTimer {
    type State = BootTimerState;
    type ConstructorArgs = BootTimerRestoreArgs;
    type Error = Infallible;

    fn save(&self) -> Result<BootTimerState, Infallible> {
        Ok(BootTimerState {})
    }

    fn restore(args: BootTimerRestoreArgs, _: &BootTimerState) -> Result<Self, Infallible> {
        Ok(BootTimer::new(args.start, args.log))
    }
}

/// The debug-exit port's state: it has none (a write ends the VM at once;
/// reads return zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugExitState {}

impl Persist<'_> for DebugExit {
    type State = DebugExitState;
    type ConstructorArgs = VmExitHandle;
    type Error = Infallible;

    fn save(&self) -> Result<DebugExitState, Infallible> {
        Ok(DebugExitState {})
    }

    fn restore(exit: VmExitHandle, _: &DebugExitState) -> Result<Self, Infallible> {
        Ok(DebugExit::new(exit))
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::{BusDevice, ExitReason};

    /// save → JSON → restore, checking the JSON round trip.
    fn round_trip<'a, P: Persist<'a>>(part: &P, args: P::ConstructorArgs) -> (P, P::State)
    where
        P::State: PartialEq + std::fmt::Debug,
    {
        let state = part.save().unwrap();
        let json = serde_json::to_string(&state).unwrap();
        let back: P::State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        let restored = P::restore(args, &back).unwrap();
        assert_eq!(restored.save().unwrap(), state);
        (restored, state)
    }

    fn read(d: &mut dyn BusDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        d.read(offset, &mut b);
        b[0]
    }

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

    fn serial_args(irq: &EventFdLine, out: &Shared) -> SerialRestoreArgs {
        SerialRestoreArgs {
            irq: irq.clone(),
            out: Box::new(out.clone()),
        }
    }

    #[test]
    fn serial_keeps_its_registers_and_buffered_input() {
        let irq = EventFdLine::new(4).unwrap();
        let mut s = SerialDevice::new(irq.clone(), Box::new(io::sink()));
        s.write(3, &[0x03]); // LCR: 8N1
        s.write(1, &[0x01]); // IER: received-data interrupt
        s.write(7, &[0x5a]); // scratch
        s.enqueue_input(b"xy").unwrap();
        assert_eq!(irq.event().read().unwrap(), 1);

        let new_irq = EventFdLine::new(4).unwrap();
        let out = Shared::default();
        let (mut r, state) = round_trip(&s, serial_args(&new_irq, &out));
        assert_eq!(
            (state.line_control, state.interrupt_enable, state.scratch),
            (0x03, 0x01, 0x5a)
        );
        assert_eq!(state.in_buffer, b"xy");
        // The pending received-data interrupt is raised again.
        assert_eq!(new_irq.event().read().unwrap(), 1);
        // Same behaviour as the original from here on.
        for d in [&mut s as &mut dyn BusDevice, &mut r] {
            assert_eq!(read(d, 7), 0x5a);
            assert_eq!(read(d, 3), 0x03);
            assert_eq!(read(d, 1), 0x01);
            assert_eq!(read(d, 5) & 1, 1, "data ready");
            assert_eq!(read(d, 0), b'x');
            assert_eq!(read(d, 0), b'y');
            assert_eq!(read(d, 5) & 1, 0, "drained");
        }
        r.write(0, b"!");
        assert_eq!(&*out.0.lock().unwrap(), b"!");
    }

    #[test]
    fn bad_serial_states_are_refused() {
        let irq = EventFdLine::new(4).unwrap();
        let out = Shared::default();
        let good = SerialDevice::new(irq.clone(), Box::new(io::sink()))
            .save()
            .unwrap();
        let cases: Vec<(SerialDeviceState, &str)> = vec![
            (
                SerialDeviceState {
                    in_buffer: vec![0; 4096],
                    line_status: 0x61,
                    ..good.clone()
                },
                "4096",
            ),
            (
                SerialDeviceState {
                    interrupt_enable: 0xf1,
                    ..good.clone()
                },
                "interrupt enable",
            ),
            (
                SerialDeviceState {
                    interrupt_identification: 0x03,
                    ..good.clone()
                },
                "interrupt identification",
            ),
            (
                SerialDeviceState {
                    interrupt_identification: 0,
                    ..good.clone()
                },
                "interrupt identification",
            ),
            (
                SerialDeviceState {
                    line_status: 0xff,
                    ..good.clone()
                },
                "line status",
            ),
            (
                SerialDeviceState {
                    line_status: 0x61,
                    ..good.clone()
                },
                "0 buffered",
            ),
            (
                SerialDeviceState {
                    in_buffer: vec![1],
                    ..good.clone()
                },
                "1 buffered",
            ),
        ];
        for (state, text) in cases {
            let err = SerialDevice::restore(serial_args(&irq, &out), &state).unwrap_err();
            assert!(err.to_string().contains(text), "{err} lacks {text:?}");
        }
        assert!(SerialDevice::restore(serial_args(&irq, &out), &good).is_ok());
    }

    fn i8042_args(exit: &VmExitHandle) -> I8042RestoreArgs {
        I8042RestoreArgs {
            irq: Box::new(EventFdLine::new(1).unwrap()),
            exit: exit.clone(),
        }
    }

    #[test]
    fn i8042_keeps_its_command_byte_and_pending_command() {
        let exit = VmExitHandle::new().unwrap();
        let mut d = I8042Device::new(Box::new(EventFdLine::new(1).unwrap()), exit.clone());
        d.write(4, &[i8042::CMD_WRITE_CTR]);
        d.write(0, &[0x45]);
        d.write(4, &[i8042::CMD_SELF_TEST]);
        d.write(4, &[i8042::CMD_WRITE_CTR]); // waits for its data byte
        let (mut r, state) = round_trip(&d, i8042_args(&exit));
        assert_eq!(state.control, 0x45);
        assert_eq!(state.pending_command, Some(i8042::CMD_WRITE_CTR));
        for d in [&mut d as &mut dyn BusDevice, &mut r] {
            assert_eq!(read(d, 4) & i8042::SB_OUT_DATA_AVAIL, 1);
            assert_eq!(read(d, 0), 0x55, "self-test answer survives");
            d.write(0, &[0x07]); // completes the pending command
            d.write(4, &[i8042::CMD_READ_CTR]);
            assert_eq!(read(d, 0), 0x07);
        }
    }

    #[test]
    fn bad_i8042_states_are_refused() {
        let exit = VmExitHandle::new().unwrap();
        let good = I8042State::default();
        let mut over = good.clone();
        over.output = (0..17).collect();
        over.status |= i8042::SB_OUT_DATA_AVAIL;
        let mut pending = good.clone();
        pending.pending_command = Some(i8042::CMD_SELF_TEST);
        let mut status = good.clone();
        status.status = 0xff;
        let mut full_but_empty = good.clone();
        full_but_empty.status |= i8042::SB_OUT_DATA_AVAIL;
        for state in [over, pending, status, full_but_empty] {
            assert!(
                I8042Device::restore(i8042_args(&exit), &state).is_err(),
                "{state:?}"
            );
        }
        assert!(matches!(
            I8042Device::restore(
                i8042_args(&exit),
                &I8042State {
                    pending_command: Some(0xaa),
                    ..good
                }
            ),
            Err(LegacyStateError::I8042PendingCommand(0xaa))
        ));
    }

    #[test]
    fn cmos_keeps_its_index_and_storage() {
        let mut rtc = CmosRtc::new();
        rtc.write(0, &[0x40]);
        rtc.write(1, &[0x5a]);
        rtc.write(0, &[0x41]);
        rtc.write(1, &[0xa5]);
        let (mut r, state) = round_trip(&rtc, ());
        assert_eq!(state.index, 0x41);
        for d in [&mut rtc as &mut dyn BusDevice, &mut r] {
            assert_eq!(read(d, 1), 0xa5, "the selected register");
            d.write(0, &[0x40]);
            assert_eq!(read(d, 1), 0x5a);
        }
        let short = CmosRtcState {
            index: 0,
            cmos: vec![0; 2],
        };
        assert!(matches!(
            CmosRtc::restore((), &short),
            Err(LegacyStateError::CmosSize(2))
        ));
        let far = CmosRtcState {
            index: 0x80,
            ..state
        };
        assert!(matches!(
            CmosRtc::restore((), &far),
            Err(LegacyStateError::CmosIndex(0x80))
        ));
    }

    #[test]
    fn acpi_pm_keeps_wak_sts() {
        let exit = VmExitHandle::new().unwrap();
        let mut d = AcpiPmDevice::new(exit.clone());
        d.write(0, &[1 << 5]); // SLP_EN, S0: wakes at once
        let new_exit = VmExitHandle::new().unwrap();
        let (mut r, state) = round_trip(&d, new_exit.clone());
        assert_eq!(state.sleep_status, WAK_STS);
        assert_eq!(read(&mut r, 1), WAK_STS);
        r.write(0, &[0x34]); // S5: powers off through the new handle
        assert_eq!(new_exit.reason(), Some(ExitReason::PowerOff));
        assert_eq!(exit.reason(), None);
        assert!(matches!(
            AcpiPmDevice::restore(exit, &AcpiPmState { sleep_status: 0xff }),
            Err(LegacyStateError::AcpiSleepStatus(0xff))
        ));
    }

    #[test]
    fn stateless_devices_restore_with_their_new_resources() {
        let log = Arc::new(Mutex::new(Vec::<u8>::new()));
        let timer = BootTimer::new(StartTime::now(), log.clone());
        let args = BootTimerRestoreArgs {
            start: StartTime::now(),
            log: log.clone(),
        };
        assert!(format!("{args:?}").contains("BootTimerRestoreArgs"));
        let (mut t, _) = round_trip(&timer, args);
        t.write(0, &[kindling_memory::layout::BOOT_TIMER_MAGIC]);
        assert!(t.boot_time().is_some());
        assert!(!log.lock().unwrap().is_empty());

        let exit = VmExitHandle::new().unwrap();
        let d = DebugExit::new(VmExitHandle::new().unwrap());
        let (mut r, _) = round_trip(&d, exit.clone());
        r.write(0, &[3]);
        assert_eq!(exit.reason(), Some(ExitReason::Status(3)));
    }
}
