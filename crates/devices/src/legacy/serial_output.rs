//! Line-buffered serial output.
//!
//! vm-superio writes and flushes every byte the guest sends, which costs a
//! system call per byte. [`BufferedOutput`] collects bytes and writes whole
//! lines; a partial line (a shell prompt, say) is written when the guest
//! has been quiet for [`PARTIAL_LINE_DELAY`]: the first buffered byte arms
//! a timerfd, and the VMM's event loop calls
//! [`OutputFlusher::flush_pending`] when it fires.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::timerfd::TimerFd;

/// How long a partial line may wait in the buffer.
pub const PARTIAL_LINE_DELAY: Duration = Duration::from_millis(5);
/// Buffered bytes that force a write even without a newline.
const MAX_BUFFERED: usize = 4096;

struct Inner {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    timer: TimerFd,
    timer_armed: bool,
}

impl Inner {
    fn write_out(&mut self, len: usize) -> io::Result<()> {
        let result = self
            .out
            .write_all(&self.buf[..len])
            .and_then(|_| self.out.flush());
        // Bytes that could not be written are dropped rather than retried
        // forever: the guest must never block on its console.
        self.buf.drain(..len);
        result
    }

    fn flush_all(&mut self) -> io::Result<()> {
        if self.timer_armed {
            let _ = self.timer.clear();
            self.timer_armed = false;
        }
        let len = self.buf.len();
        if len == 0 {
            return Ok(());
        }
        self.write_out(len)
    }
}

/// The writer handed to the serial device.
pub struct BufferedOutput {
    inner: Arc<Mutex<Inner>>,
}

/// Flushes the partial line of a [`BufferedOutput`] from the event loop.
#[derive(Clone)]
pub struct OutputFlusher {
    inner: Arc<Mutex<Inner>>,
    timer_fd: std::os::fd::RawFd,
}

impl std::fmt::Debug for BufferedOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BufferedOutput")
    }
}

impl std::fmt::Debug for OutputFlusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFlusher")
            .field("timer_fd", &self.timer_fd)
            .finish()
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl BufferedOutput {
    /// Wraps `out`; returns the writer and its flusher.
    pub fn new(out: Box<dyn Write + Send>) -> io::Result<(Self, OutputFlusher)> {
        use std::os::fd::AsRawFd;
        let timer = crate::nonblocking_timer()?;
        let timer_fd = timer.as_raw_fd();
        let inner = Arc::new(Mutex::new(Inner {
            out,
            buf: Vec::with_capacity(256),
            timer,
            timer_armed: false,
        }));
        Ok((
            Self {
                inner: inner.clone(),
            },
            OutputFlusher { inner, timer_fd },
        ))
    }
}

impl Write for BufferedOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut inner = lock(&self.inner);
        inner.buf.extend_from_slice(data);
        let complete = match inner.buf.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) => last_newline + 1,
            None if inner.buf.len() >= MAX_BUFFERED => inner.buf.len(),
            None => 0,
        };
        if complete > 0 {
            inner.write_out(complete)?;
        }
        if inner.buf.is_empty() {
            if inner.timer_armed {
                let _ = inner.timer.clear();
                inner.timer_armed = false;
            }
        } else if !inner.timer_armed {
            inner.timer_armed = inner.timer.reset(PARTIAL_LINE_DELAY, None).is_ok();
        }
        Ok(data.len())
    }

    /// Does nothing: vm-superio flushes after every byte; lines are written
    /// as they complete and partial lines by the [`OutputFlusher`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl OutputFlusher {
    /// The timerfd that becomes readable when a partial line is due.
    pub fn timer_fd(&self) -> std::os::fd::RawFd {
        self.timer_fd
    }

    /// Writes out whatever is buffered and disarms the timer.
    pub fn flush_pending(&self) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        // Consume the expiration count so the fd stops being readable.
        if inner.timer_armed {
            let _ = inner.timer.wait();
            inner.timer_armed = false;
        }
        inner.flush_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn whole_lines_are_written_at_once() {
        let rec = Recorder::default();
        let (mut out, _flusher) = BufferedOutput::new(Box::new(rec.clone())).unwrap();
        for b in b"hello\nwor" {
            out.write_all(&[*b]).unwrap();
            out.flush().unwrap();
        }
        assert_eq!(*rec.0.lock().unwrap(), vec![b"hello\n".to_vec()]);
    }

    #[test]
    fn partial_lines_wait_for_the_flusher() {
        let rec = Recorder::default();
        let (mut out, flusher) = BufferedOutput::new(Box::new(rec.clone())).unwrap();
        out.write_all(b"$ ").unwrap();
        assert!(rec.0.lock().unwrap().is_empty());
        // The timer fires within the delay.
        let mut pfd = libc::pollfd {
            fd: flusher.timer_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert_eq!(ready, 1);
        flusher.flush_pending().unwrap();
        assert_eq!(*rec.0.lock().unwrap(), vec![b"$ ".to_vec()]);
        // Nothing left: a second flush writes nothing.
        flusher.flush_pending().unwrap();
        assert_eq!(rec.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn long_output_without_newlines_is_bounded() {
        let rec = Recorder::default();
        let (mut out, _flusher) = BufferedOutput::new(Box::new(rec.clone())).unwrap();
        out.write_all(&vec![b'x'; MAX_BUFFERED + 1]).unwrap();
        assert_eq!(rec.0.lock().unwrap()[0].len(), MAX_BUFFERED + 1);
    }
}
