//! Firecracker-compatible boot timer.
//!
//! A guest writes the byte 123 to the device's first byte once it has
//! booted (Firecracker's test init does it from `/sbin/init`); the device
//! then logs the wall-clock and CPU time since the VMM process started, in
//! Firecracker's format:
//!
//! ```text
//! Guest-boot-time =   1234 us 1 ms,    567 CPU us 0 CPU ms
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kindling_memory::layout::BOOT_TIMER_MAGIC;

use crate::BusDevice;

/// The moment the VMM process started, as wall-clock and process CPU time.
#[derive(Debug, Clone, Copy)]
pub struct StartTime {
    wall: Instant,
    cpu: Duration,
}

fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID is
    // always available on Linux. On failure `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl StartTime {
    /// Records now as the start. Call it first thing in `main`.
    pub fn now() -> Self {
        Self {
            wall: Instant::now(),
            cpu: process_cpu_time(),
        }
    }

    /// Wall-clock time elapsed since the start.
    pub fn wall_elapsed(&self) -> Duration {
        self.wall.elapsed()
    }

    /// Process CPU time used since the start.
    pub fn cpu_elapsed(&self) -> Duration {
        process_cpu_time().saturating_sub(self.cpu)
    }
}

/// The boot-timer MMIO device.
pub struct BootTimer {
    start: StartTime,
    log: Arc<Mutex<dyn Write + Send>>,
    fired: Option<Duration>,
}

impl std::fmt::Debug for BootTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootTimer")
            .field("start", &self.start)
            .field("fired", &self.fired)
            .finish()
    }
}

impl BootTimer {
    /// Creates a timer measuring from `start`, logging to `log`.
    pub fn new(start: StartTime, log: Arc<Mutex<dyn Write + Send>>) -> Self {
        Self {
            start,
            log,
            fired: None,
        }
    }

    /// The wall-clock boot time of the guest's signal, if it came (only
    /// the first one counts).
    pub fn boot_time(&self) -> Option<Duration> {
        self.fired
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Once per VM: a guest that writes the magic again (in a loop, say)
        // must not fill the log.
        if offset != 0 || data.first() != Some(&BOOT_TIMER_MAGIC) || self.fired.is_some() {
            return;
        }
        let wall = self.start.wall_elapsed();
        let cpu = self.start.cpu_elapsed();
        self.fired = Some(wall);
        let line = format!(
            "Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms\n",
            wall.as_micros(),
            wall.as_millis(),
            cpu.as_micros(),
            cpu.as_millis()
        );
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        // Logging is best effort: a closed log must not stop the guest.
        let _ = log.write_all(line.as_bytes());
        let _ = log.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_magic_byte_at_offset_zero_fires() {
        let log = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut t = BootTimer::new(StartTime::now(), log.clone());
        t.write(0, &[1]);
        t.write(1, &[BOOT_TIMER_MAGIC]);
        t.write(0, &[]);
        assert!(t.boot_time().is_none());
        assert!(log.lock().unwrap().is_empty());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(t.boot_time().is_some());
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("Guest-boot-time = "), "{text}");
        assert!(text.contains(" CPU us "), "{text}");
        let mut b = [7u8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn it_logs_once_however_often_the_guest_writes() {
        let log = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut t = BootTimer::new(StartTime::now(), log.clone());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        let first = t.boot_time();
        for _ in 0..100 {
            t.write(0, &[BOOT_TIMER_MAGIC]);
        }
        assert_eq!(t.boot_time(), first);
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
