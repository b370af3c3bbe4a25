//! CPU time and time-stamped serial lines, for the benchmarks that
//! measure a guest's work by the lines it prints: each line is recorded
//! with the wall-clock instant and the process CPU time at its arrival.
//! Shared through `#[path]`.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// User plus system CPU time of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`).
fn rusage_time(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Process CPU time (user + system, all threads).
pub fn cpu_time() -> Duration {
    rusage_time(libc::RUSAGE_SELF)
}

/// The calling thread's CPU time.
pub fn thread_cpu_time() -> Duration {
    rusage_time(libc::RUSAGE_THREAD)
}

/// Records when each serial line arrived, with the CPU time then.
#[derive(Clone, Default)]
pub struct Stamper {
    pending: Arc<Mutex<Vec<u8>>>,
    /// Each complete line (without its line end), when it arrived, and
    /// the process CPU time then.
    pub lines: Arc<Mutex<Vec<(String, Instant, Duration)>>>,
}

impl Write for Stamper {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (now, cpu) = (Instant::now(), cpu_time());
        let mut pending = self.pending.lock().unwrap();
        pending.extend_from_slice(buf);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            self.lines.lock().unwrap().push((text, now, cpu));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
