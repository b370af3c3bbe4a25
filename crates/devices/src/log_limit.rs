//! Rate-limited logging for messages a guest can trigger at will.
//!
//! A device that logs every malformed request lets a hostile guest flood
//! the host's log (and spend the VMM's time formatting lines). Each call
//! site of [`log_limited!`](crate::log_limited) owns a [`LogLimiter`]:
//! at most [`LOG_BURST`] lines per [`LOG_WINDOW`], then lines are counted
//! instead of written, and the first line of the next window says how
//! many were left out. [`suppressed_log_lines`] totals them for metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines one call site may write per window.
pub const LOG_BURST: u64 = 10;

/// The window over which [`LOG_BURST`] applies.
pub const LOG_WINDOW: Duration = Duration::from_secs(5);

/// Lines left out by every limiter of the process.
static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Lines [`log_limited!`](crate::log_limited) left out since the process
/// started (all call sites).
pub fn suppressed_log_lines() -> u64 {
    SUPPRESSED_TOTAL.load(Ordering::Relaxed)
}

/// The process's monotonic epoch, so windows fit in an `AtomicU64`.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a call site may do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPermit {
    /// Write it.
    Write,
    /// Write it, and say that this many lines before it were left out.
    WriteAfterSuppressed(u64),
    /// Leave it out (it is counted).
    Suppress,
}

/// The limiter of one call site. Lock-free; `const` so it can be a
/// `static`.
#[derive(Debug)]
pub struct LogLimiter {
    /// Start of the current window, in [`now_ms`] milliseconds, plus one
    /// (0: no window yet).
    window_start: AtomicU64,
    /// Lines in the current window.
    in_window: AtomicU64,
    /// Lines left out since the last written line.
    suppressed: AtomicU64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    /// A limiter with no lines yet.
    pub const fn new() -> Self {
        Self {
            window_start: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now.
    pub fn permit(&self) -> LogPermit {
        self.permit_at(now_ms())
    }

    fn permit_at(&self, now: u64) -> LogPermit {
        let window_ms = LOG_WINDOW.as_millis() as u64;
        let start = self.window_start.load(Ordering::Relaxed);
        if start == 0 || now + 1 >= start + window_ms {
            // A new window; one thread wins the reset, the others count
            // in whichever window they see.
            if self
                .window_start
                .compare_exchange(start, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.in_window.store(0, Ordering::Relaxed);
            }
        }
        if self.in_window.fetch_add(1, Ordering::Relaxed) < LOG_BURST {
            match self.suppressed.swap(0, Ordering::Relaxed) {
                0 => LogPermit::Write,
                n => LogPermit::WriteAfterSuppressed(n),
            }
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
            LogPermit::Suppress
        }
    }
}

/// Logs like `log::log!(level, ...)`, at most [`LOG_BURST`] lines per
/// [`LOG_WINDOW`] from this call site; use it for anything a guest can
/// make happen repeatedly.
///
/// ```
/// kindling_devices::log_limited!(log::Level::Warn, "virtio-blk: request {} dropped", 7);
/// ```
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {{
        static LIMITER: $crate::LogLimiter = $crate::LogLimiter::new();
        if $crate::__log::log_enabled!($level) {
            match LIMITER.permit() {
                $crate::LogPermit::Write => $crate::__log::log!($level, $($arg)+),
                $crate::LogPermit::WriteAfterSuppressed(n) => {
                    $crate::__log::log!($level, $($arg)+);
                    $crate::__log::log!($level, "({n} similar lines left out by the log rate limit)");
                }
                $crate::LogPermit::Suppress => {}
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_until_the_next_window() {
        let l = LogLimiter::new();
        let before = suppressed_log_lines();
        for _ in 0..LOG_BURST {
            assert_eq!(l.permit_at(1000), LogPermit::Write);
        }
        assert_eq!(l.permit_at(1000), LogPermit::Suppress);
        assert_eq!(l.permit_at(2000), LogPermit::Suppress);
        assert!(suppressed_log_lines() >= before + 2);
        let next = 1000 + LOG_WINDOW.as_millis() as u64;
        assert_eq!(l.permit_at(next), LogPermit::WriteAfterSuppressed(2));
        assert_eq!(l.permit_at(next), LogPermit::Write);
    }

    #[test]
    fn the_macro_compiles_for_every_level() {
        for _ in 0..(LOG_BURST * 2) {
            crate::log_limited!(log::Level::Warn, "w {}", 1);
            crate::log_limited!(log::Level::Error, "e");
        }
    }
}
