//! The other legacy devices — i8042, CMOS RTC, ACPI PM, boot timer and
//! debug exit — driven by one interleaved sequence of reads and writes
//! (any offset, any width, including empty and 8-byte accesses) and
//! snapshot/restores, with these invariants after every step:
//!
//! - i8042: the status register has only the bits the controller sets, and
//!   "output full" exactly when bytes are waiting; at most 16 are; reads of
//!   the data port return them in order; a command waiting for its data
//!   byte is one that takes one; the only exit is a reset, and only after
//!   the reset command was written;
//! - CMOS: the index stays below 128; a read of a storage byte returns the
//!   last value written there; the clock and status A/C/D are read-only;
//! - ACPI PM: the sleep status holds only `WAK_STS`; the VM powers off or
//!   resets only on the S5 or reset values, the first request winning;
//! - boot timer: fires exactly on the magic byte at offset 0, logging one
//!   line the first time (and once more after each restore); debug exit: ends the VM with the first byte written;
//! - every device's state survives save → restore unchanged and its
//!   restore accepts every state the device reaches.

#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kindling_devices::legacy::{
    AcpiPmDevice, BootTimer, BootTimerRestoreArgs, CmosRtc, DebugExit, I8042Device,
    I8042RestoreArgs, StartTime, CMOS_SIZE, WAK_STS,
};
use kindling_devices::{BusDevice, ExitReason, VmExitHandle};
use kindling_fuzz::{Input, NoInterrupt, SharedBuf};
use kindling_memory::layout::BOOT_TIMER_MAGIC;
use kindling_memory::Persist;
use libfuzzer_sys::fuzz_target;

/// Registers whose reads do not come from the CMOS storage bytes: the clock
/// (0x00..=0x09, century 0x32) and status A to D.
fn cmos_computed(index: u8) -> bool {
    index <= 0x0d || index == 0x32
}

struct Devices {
    i8042: I8042Device,
    i8042_exit: VmExitHandle,
    cmos: CmosRtc,
    pm: AcpiPmDevice,
    pm_exit: VmExitHandle,
    timer: BootTimer,
    log: SharedBuf,
    debug: DebugExit,
    debug_exit: VmExitHandle,
}

struct Model {
    i8042_reset: bool,
    cmos: [Option<u8>; CMOS_SIZE],
    cmos_index: u8,
    pm_exit: Option<ExitReason>,
    wak_sts: bool,
    timer_fired: usize,
    timer_fired_here: bool,
    debug_exit: Option<ExitReason>,
}

fn log_of(log: &SharedBuf) -> Arc<Mutex<dyn std::io::Write + Send>> {
    Arc::new(Mutex::new(log.clone()))
}

fn check(d: &Devices, m: &Model) {
    let s = d.i8042.state();
    assert!(s.output.len() <= 16);
    assert_eq!(s.status & !0x1d, 0, "status {:#x}", s.status);
    assert_eq!(s.status & 0x01 != 0, !s.output.is_empty());
    assert!(matches!(s.pending_command, None | Some(0x60 | 0xd1 | 0xd2)));
    let reset = m.i8042_reset.then_some(ExitReason::Reset);
    assert_eq!(d.i8042_exit.reason(), reset);

    let c = d.cmos.state();
    assert_eq!(c.cmos.len(), CMOS_SIZE);
    assert_eq!(c.index, m.cmos_index);
    assert!(usize::from(c.index) < CMOS_SIZE);

    assert_eq!(
        d.pm.state().sleep_status,
        if m.wak_sts { WAK_STS } else { 0 }
    );
    assert_eq!(d.pm_exit.reason(), m.pm_exit);

    assert_eq!(d.timer.boot_time().is_some(), m.timer_fired_here);
    let log = d.log.contents();
    assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), m.timer_fired);
    assert_eq!(d.debug_exit.reason(), m.debug_exit);
}

fn round_trip(d: &mut Devices, m: &mut Model) {
    let state = d.i8042.save().unwrap();
    let args = I8042RestoreArgs {
        irq: Box::new(NoInterrupt),
        exit: d.i8042_exit.clone(),
    };
    d.i8042 = I8042Device::restore(args, &state).expect("i8042 state refused");
    assert_eq!(d.i8042.save().unwrap(), state);

    let state = d.cmos.save().unwrap();
    d.cmos = CmosRtc::restore((), &state).expect("CMOS state refused");
    assert_eq!(d.cmos.save().unwrap(), state);

    let state = d.pm.save().unwrap();
    d.pm = AcpiPmDevice::restore(d.pm_exit.clone(), &state).expect("ACPI PM state refused");
    assert_eq!(d.pm.save().unwrap(), state);

    // The measured boot time belongs to the process that started the VM:
    // a restored timer has not fired yet.
    let state = d.timer.save().unwrap();
    let args = BootTimerRestoreArgs {
        start: StartTime::now(),
        log: log_of(&d.log),
    };
    d.timer = BootTimer::restore(args, &state).unwrap();
    m.timer_fired_here = false;

    let state = d.debug.save().unwrap();
    d.debug = DebugExit::restore(d.debug_exit.clone(), &state).unwrap();
}

fn write(d: &mut Devices, m: &mut Model, device: u8, offset: u64, bytes: &[u8]) {
    match device {
        0 => {
            d.i8042.write(offset, bytes);
            if offset == 4 && bytes == [0xfe] {
                m.i8042_reset = true;
            }
        }
        1 => {
            let before = d.cmos.state();
            d.cmos.write(offset, bytes);
            if let [value] = *bytes {
                match offset {
                    0 => m.cmos_index = value & 0x7f,
                    1 => {
                        let i = before.index;
                        if i > 0x09 && !matches!(i, 0x0a | 0x0c | 0x0d) {
                            m.cmos[usize::from(i)] = Some(value);
                        }
                    }
                    _ => {}
                }
            }
        }
        2 => {
            d.pm.write(offset, bytes);
            for (i, &b) in bytes.iter().enumerate() {
                let request = |m: &mut Model, r| {
                    m.pm_exit.get_or_insert(r);
                };
                match offset.checked_add(i as u64) {
                    Some(0) if b & 0x20 != 0 => {
                        if (b >> 2) & 7 == 5 {
                            request(m, ExitReason::PowerOff);
                        } else {
                            m.wak_sts = true;
                        }
                    }
                    Some(1) if b & WAK_STS != 0 => m.wak_sts = false,
                    Some(2) if b == 1 => request(m, ExitReason::Reset),
                    _ => {}
                }
            }
        }
        3 => {
            d.timer.write(offset, bytes);
            // Only the first signal logs (a restored timer has not fired).
            if offset == 0 && bytes.first() == Some(&BOOT_TIMER_MAGIC) && !m.timer_fired_here {
                m.timer_fired += 1;
                m.timer_fired_here = true;
            }
        }
        _ => {
            d.debug.write(offset, bytes);
            if let (0, Some(&status)) = (offset, bytes.first()) {
                m.debug_exit.get_or_insert(ExitReason::Status(status));
            }
        }
    }
}

fn read(d: &mut Devices, m: &Model, device: u8, offset: u64, len: usize) {
    let mut buf = vec![0xa5u8; len];
    match device {
        0 => {
            let before = d.i8042.state();
            d.i8042.read(offset, &mut buf);
            if let Some(&first) = buf.first() {
                let expected: u8 = match offset {
                    0 => before.output.front().copied().unwrap_or(0),
                    4 => before.status,
                    _ => 0xff,
                };
                assert_eq!(first, expected);
                assert!(buf[1..].iter().all(|&b| b == 0));
                let mut after: VecDeque<u8> = before.output.clone();
                if offset == 0 {
                    after.pop_front();
                }
                assert_eq!(d.i8042.state().output, after);
            }
        }
        1 => {
            let index = d.cmos.state().index;
            d.cmos.read(offset, &mut buf);
            if let Some(&first) = buf.first() {
                assert!(buf[1..].iter().all(|&b| b == 0));
                if offset != 1 {
                    assert_eq!(first, 0xff);
                } else if let (false, Some(v)) = (cmos_computed(index), m.cmos[usize::from(index)])
                {
                    assert_eq!(first, v, "CMOS byte {index:#x}");
                } else if index == 0x0b {
                    // Status B: 24-hour mode is always on.
                    assert_eq!(first & 0x02, 0x02);
                }
            }
        }
        2 => {
            d.pm.read(offset, &mut buf);
            for (i, &b) in buf.iter().enumerate() {
                let expected = match offset.checked_add(i as u64) {
                    Some(1) if m.wak_sts => WAK_STS,
                    _ => 0,
                };
                assert_eq!(b, expected);
            }
        }
        3 => {
            d.timer.read(offset, &mut buf);
            assert!(buf.iter().all(|&b| b == 0));
        }
        _ => {
            d.debug.read(offset, &mut buf);
            assert!(buf.iter().all(|&b| b == 0));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (i8042_exit, pm_exit, debug_exit) = (
        VmExitHandle::new().unwrap(),
        VmExitHandle::new().unwrap(),
        VmExitHandle::new().unwrap(),
    );
    let log = SharedBuf::default();
    let mut d = Devices {
        i8042: I8042Device::new(Box::new(NoInterrupt), i8042_exit.clone()),
        i8042_exit,
        cmos: CmosRtc::new(),
        pm: AcpiPmDevice::new(pm_exit.clone()),
        pm_exit,
        timer: BootTimer::new(StartTime::now(), log_of(&log)),
        log,
        debug: DebugExit::new(debug_exit.clone()),
        debug_exit,
    };
    let mut m = Model {
        i8042_reset: false,
        cmos: [None; CMOS_SIZE],
        cmos_index: 0,
        pm_exit: None,
        wak_sts: false,
        timer_fired: 0,
        timer_fired_here: false,
        debug_exit: None,
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 1024 {
        steps += 1;
        let op = input.u8();
        let device = (op >> 2) % 5;
        // Mostly the device's own ports, sometimes anywhere.
        let offset = match input.u8() {
            o @ 0..=0xef => u64::from(o % 6),
            o @ 0xf0..=0xfd => u64::from(o),
            0xfe => u64::MAX - 1,
            _ => input.u64(),
        };
        let len = [1usize, 1, 1, 1, 2, 4, 8, 0][usize::from(input.u8() % 8)];
        match op % 4 {
            0 | 1 => {
                let bytes = input.bytes(len).to_vec();
                write(&mut d, &mut m, device, offset, &bytes);
            }
            2 => read(&mut d, &m, device, offset, len),
            _ => round_trip(&mut d, &mut m),
        }
        check(&d, &m);
    }
});
