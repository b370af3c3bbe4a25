//! A minimal MC146818 CMOS real-time clock at ports 0x70/0x71.
//!
//! Linux's `rtc_cmos` driver and its boot-time clock read go through these
//! ports; with nothing there every read returns 0xff, the "update in
//! progress" bit never clears, and a stock distribution kernel spends
//! seconds waiting for it. This device reports the host's UTC time in BCD,
//! 24-hour mode, never busy. Writes to the clock are accepted and ignored
//! (the guest cannot move the host clock); the other CMOS bytes are plain
//! storage.

use serde::{Deserialize, Serialize};

use crate::BusDevice;

/// The index port (offset 0); bit 7 of the value written there masks NMIs.
const INDEX_OFFSET: u64 = 0;
/// The data port (offset 1).
const DATA_OFFSET: u64 = 1;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
pub(super) const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status A: 32.768 kHz time base, 1024 Hz rate; bit 7 (update in
/// progress) is never set.
const STATUS_A: u8 = 0x26;
/// Status B: 24-hour mode (bit 1), BCD (bit 2 clear).
const STATUS_B_24H: u8 = 0x02;
/// Status D: the RAM and time are valid.
const STATUS_D_VALID: u8 = 0x80;

/// Guest-visible state of the CMOS RTC, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosRtcState {
    /// The selected register.
    pub index: u8,
    /// The 128 CMOS bytes (the clock registers are computed on read).
    pub cmos: Vec<u8>,
}

impl Default for CmosRtcState {
    fn default() -> Self {
        let mut cmos = vec![0u8; 128];
        cmos[usize::from(REG_STATUS_A)] = STATUS_A;
        cmos[usize::from(REG_STATUS_B)] = STATUS_B_24H;
        cmos[usize::from(REG_STATUS_D)] = STATUS_D_VALID;
        Self { index: 0, cmos }
    }
}

/// The CMOS RTC device.
#[derive(Debug, Default)]
pub struct CmosRtc {
    state: CmosRtcState,
}

fn bcd(value: i32) -> u8 {
    let v = value.rem_euclid(100) as u8;
    ((v / 10) << 4) | (v % 10)
}

/// The host's current UTC time, broken down.
fn utc_now() -> libc::tm {
    // SAFETY: an all-zero `tm` is a valid value; `time(NULL)` cannot fail
    // in a way that matters here and `gmtime_r` writes only into `tm`.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&now, &mut tm);
        tm
    }
}

impl CmosRtc {
    /// Creates the clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the clock around a state that
    /// [`Persist::restore`](kindling_memory::Persist::restore) has checked.
    pub(super) fn from_checked_state(state: CmosRtcState) -> Self {
        Self { state }
    }

    /// The guest-visible state.
    pub fn state(&self) -> CmosRtcState {
        self.state.clone()
    }

    fn read_register(&self, index: u8) -> u8 {
        let time_register = matches!(
            index,
            REG_SECONDS
                | REG_MINUTES
                | REG_HOURS
                | REG_DAY_OF_WEEK
                | REG_DAY_OF_MONTH
                | REG_MONTH
                | REG_YEAR
                | REG_CENTURY
        );
        if !time_register {
            return match index {
                REG_STATUS_A => STATUS_A,
                REG_STATUS_B => self.state.cmos[usize::from(REG_STATUS_B)] | STATUS_B_24H,
                // No interrupt flags are ever pending.
                REG_STATUS_C => 0,
                REG_STATUS_D => STATUS_D_VALID,
                _ => self.state.cmos[usize::from(index & 0x7f)],
            };
        }
        let tm = utc_now();
        match index {
            REG_SECONDS => bcd(tm.tm_sec),
            REG_MINUTES => bcd(tm.tm_min),
            REG_HOURS => bcd(tm.tm_hour),
            REG_DAY_OF_WEEK => bcd(tm.tm_wday + 1),
            REG_DAY_OF_MONTH => bcd(tm.tm_mday),
            REG_MONTH => bcd(tm.tm_mon + 1),
            REG_YEAR => bcd(tm.tm_year),
            _ => bcd((tm.tm_year + 1900) / 100),
        }
    }
}

impl BusDevice for CmosRtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            DATA_OFFSET => self.read_register(self.state.index),
            _ => 0xff,
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [value] = data else { return };
        match offset {
            INDEX_OFFSET => self.state.index = value & 0x7f,
            DATA_OFFSET => {
                let index = self.state.index;
                // Status A/C/D and the clock itself are not writable here.
                if !matches!(index, REG_STATUS_A | REG_STATUS_C | REG_STATUS_D) && index > REG_YEAR
                {
                    self.state.cmos[usize::from(index)] = *value;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut CmosRtc, index: u8) -> u8 {
        rtc.write(INDEX_OFFSET, &[index]);
        let mut b = [0u8];
        rtc.read(DATA_OFFSET, &mut b);
        b[0]
    }

    fn from_bcd(b: u8) -> u32 {
        u32::from(b >> 4) * 10 + u32::from(b & 0xf)
    }

    #[test]
    fn never_busy_and_valid() {
        let mut rtc = CmosRtc::new();
        assert_eq!(read(&mut rtc, REG_STATUS_A) & 0x80, 0);
        assert_eq!(read(&mut rtc, REG_STATUS_D), STATUS_D_VALID);
        assert_eq!(read(&mut rtc, REG_STATUS_B) & STATUS_B_24H, STATUS_B_24H);
        assert_eq!(read(&mut rtc, REG_STATUS_C), 0);
    }

    #[test]
    fn time_is_plausible_bcd() {
        let mut rtc = CmosRtc::new();
        let sec = read(&mut rtc, REG_SECONDS);
        let min = read(&mut rtc, REG_MINUTES);
        let hour = read(&mut rtc, REG_HOURS);
        let month = read(&mut rtc, REG_MONTH);
        let century = read(&mut rtc, REG_CENTURY);
        let year = read(&mut rtc, REG_YEAR);
        for b in [sec, min, hour, month, century, year] {
            assert!(b >> 4 <= 9 && b & 0xf <= 9, "{b:#x} is not BCD");
        }
        assert!(from_bcd(sec) < 60 && from_bcd(min) < 60 && from_bcd(hour) < 24);
        assert!((1..=12).contains(&from_bcd(month)));
        assert!(from_bcd(century) * 100 + from_bcd(year) >= 2024);
    }

    #[test]
    fn nmi_bit_is_ignored_and_storage_works() {
        let mut rtc = CmosRtc::new();
        rtc.write(INDEX_OFFSET, &[0x80 | 0x40]);
        rtc.write(DATA_OFFSET, &[0x5a]);
        assert_eq!(read(&mut rtc, 0x40), 0x5a);
        // The clock and read-only status registers do not change.
        rtc.write(INDEX_OFFSET, &[REG_STATUS_A]);
        rtc.write(DATA_OFFSET, &[0xff]);
        assert_eq!(read(&mut rtc, REG_STATUS_A), STATUS_A);
        rtc.write(INDEX_OFFSET, &[REG_SECONDS]);
        rtc.write(DATA_OFFSET, &[0x99]);
        assert_ne!(read(&mut rtc, REG_SECONDS), 0x99);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut rtc = CmosRtc::new();
        let mut wide = [0xaa; 4];
        rtc.read(INDEX_OFFSET, &mut wide);
        assert_eq!(wide, [0xff, 0, 0, 0]);
        rtc.write(5, &[1]);
        rtc.write(DATA_OFFSET, &[1, 2]);
        rtc.write(INDEX_OFFSET, &[0x50]);
        rtc.write(DATA_OFFSET, &[7]);
        assert_eq!(rtc.state().index, 0x50);
        assert_eq!(rtc.state().cmos[0x50], 7);
    }
}
