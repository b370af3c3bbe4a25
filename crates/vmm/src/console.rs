//! The interactive serial console: the escape sequence that quits the VMM
//! (Ctrl-A then `x`, as in QEMU) and the host terminal's raw mode.
//!
//! [`EscapeDetector`] is a pure state machine over the bytes read from the
//! VMM's standard input. [`RawTerminal`] puts a terminal in raw mode and
//! restores it when dropped. [`ConsoleEscape`] is what a VMM passes in
//! [`VmConfig::console_escape`](crate::VmConfig::console_escape) to turn the
//! escape on and to learn afterwards whether it ended the VM.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The escape prefix: Ctrl-A.
pub const ESCAPE_PREFIX: u8 = 0x01;
/// The key that quits after the prefix (`x`, or `X`).
pub const ESCAPE_QUIT: u8 = b'x';
/// How the escape sequence is written in messages.
pub const ESCAPE_HELP: &str = "Ctrl-A x";

/// Finds the escape sequence in console input.
///
/// - Ctrl-A then `x` (or `X`): quit; the bytes after it are dropped.
/// - Ctrl-A then Ctrl-A: one Ctrl-A goes to the guest.
/// - Ctrl-A then any other byte: both go to the guest.
///
/// Every other byte, Ctrl-C (0x03) included, goes to the guest as it is.
/// A Ctrl-A at the end of one read waits for the next read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EscapeDetector {
    after_prefix: bool,
}

impl EscapeDetector {
    /// A detector that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the last byte seen was an unanswered Ctrl-A (held back
    /// until the next byte says what it meant).
    pub fn pending(&self) -> bool {
        self.after_prefix
    }

    /// Filters `input`: appends to `out` the bytes for the guest and
    /// returns `true` when the escape sequence completed (the bytes after
    /// it are not looked at). `out` grows by at most `input.len() + 1`.
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &byte in input {
            if self.after_prefix {
                self.after_prefix = false;
                match byte {
                    ESCAPE_PREFIX => out.push(ESCAPE_PREFIX),
                    b if b.to_ascii_lowercase() == ESCAPE_QUIT => return true,
                    b => out.extend_from_slice(&[ESCAPE_PREFIX, b]),
                }
            } else if byte == ESCAPE_PREFIX {
                self.after_prefix = true;
            } else {
                out.push(byte);
            }
        }
        false
    }
}

/// Turns the console escape on and tells, after the run, whether the user
/// quit with it. Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct ConsoleEscape {
    pressed: Arc<AtomicBool>,
}

impl ConsoleEscape {
    /// An escape that has not been pressed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the escape sequence ended the VM.
    pub fn pressed(&self) -> bool {
        self.pressed.load(Ordering::SeqCst)
    }

    pub(crate) fn press(&self) {
        self.pressed.store(true, Ordering::SeqCst);
    }
}

/// The terminal settings saved by the first [`RawTerminal::enter`] of the
/// process, for [`restore_saved_terminal`] and the signal handler.
static SAVED: OnceLock<(RawFd, libc::termios)> = OnceLock::new();

/// A terminal in raw mode; dropping it restores the settings it found.
///
/// Input is raw (no echo, no line editing, no signals from Ctrl-C, Ctrl-Z
/// or Ctrl-\, no CR/NL translation, no flow control: every byte reaches
/// the guest). Output processing is kept, as QEMU does, so messages of the
/// VMM still start at the beginning of a line. While it is active,
/// SIGTERM, SIGHUP, SIGINT and SIGQUIT restore the terminal before they
/// end the process; with `panic = "abort"`, call
/// [`restore_saved_terminal`] from a panic hook.
#[derive(Debug)]
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Puts the terminal on `fd` in raw mode. `Ok(None)` when `fd` is not
    /// a terminal.
    pub fn enter(fd: RawFd) -> io::Result<Option<Self>> {
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: termios is plain old data; all-zero is a valid value that
        // tcgetattr overwrites.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write to.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        raw.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        raw.c_cflag &= !(libc::CSIZE | libc::PARENB);
        raw.c_cflag |= libc::CS8;
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        if SAVED.set((fd, saved)).is_ok() {
            install_signal_handlers();
        }
        // SAFETY: `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(Self { fd, saved }))
    }

    /// Restores the settings found by [`RawTerminal::enter`] (also done on
    /// drop).
    pub fn restore(&self) -> io::Result<()> {
        // SAFETY: `saved` is the valid termios tcgetattr returned.
        if unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // Nothing better to do if the terminal went away.
        let _ = self.restore();
    }
}

/// Restores the terminal settings saved by the process's first
/// [`RawTerminal::enter`], if any. Async-signal-safe (one `tcsetattr`).
pub fn restore_saved_terminal() {
    if let Some((fd, saved)) = SAVED.get() {
        // SAFETY: `saved` is the valid termios tcgetattr returned.
        unsafe { libc::tcsetattr(*fd, libc::TCSANOW, saved) };
    }
}

extern "C" fn restore_and_reraise(signal: libc::c_int) {
    restore_saved_terminal();
    // SAFETY: resetting the disposition to the default and raising the
    // signal again are async-signal-safe; the default action ends the
    // process as the signal would have.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn install_signal_handlers() {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: the handler only calls async-signal-safe functions
        // (tcsetattr, signal, raise) and reads a OnceLock that was set
        // before the handler was installed.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = restore_and_reraise as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            // A handler that could not be installed leaves that signal's
            // default; the guard still restores on every normal path.
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(detector: &mut EscapeDetector, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let quit = detector.filter(input, &mut out);
        (out, quit)
    }

    #[test]
    fn plain_bytes_and_ctrl_c_pass_through() {
        let mut d = EscapeDetector::new();
        assert_eq!(
            run(&mut d, b"ls -l\r\x03x"),
            (b"ls -l\r\x03x".to_vec(), false)
        );
        assert!(!d.pending());
    }

    #[test]
    fn ctrl_a_x_quits_and_drops_the_rest() {
        let mut d = EscapeDetector::new();
        assert_eq!(run(&mut d, b"ab\x01xcd"), (b"ab".to_vec(), true));
        let mut d = EscapeDetector::new();
        assert_eq!(run(&mut d, b"\x01X"), (Vec::new(), true));
    }

    #[test]
    fn escape_split_across_reads() {
        let mut d = EscapeDetector::new();
        assert_eq!(run(&mut d, b"a\x01"), (b"a".to_vec(), false));
        assert!(d.pending());
        assert_eq!(run(&mut d, b"x"), (Vec::new(), true));
    }

    #[test]
    fn ctrl_a_twice_sends_one_ctrl_a() {
        let mut d = EscapeDetector::new();
        assert_eq!(run(&mut d, b"\x01\x01x"), (b"\x01x".to_vec(), false));
        assert!(!d.pending());
        // Held back across reads too.
        assert_eq!(run(&mut d, b"\x01"), (Vec::new(), false));
        assert_eq!(run(&mut d, b"\x01"), (b"\x01".to_vec(), false));
    }

    #[test]
    fn ctrl_a_then_other_byte_sends_both() {
        let mut d = EscapeDetector::new();
        assert_eq!(
            run(&mut d, b"\x01a\x01\x03"),
            (b"\x01a\x01\x03".to_vec(), false)
        );
        assert!(!d.pending());
    }

    #[test]
    fn output_bound() {
        // Worst case: a pending Ctrl-A from the last read and a full read.
        let mut d = EscapeDetector::new();
        run(&mut d, b"\x01");
        let (out, quit) = run(&mut d, b"bcd");
        assert!(!quit);
        assert_eq!(out, b"\x01bcd");
        assert!(out.len() <= 3 + 1);
    }

    #[test]
    fn escape_state_is_per_detector() {
        let e = ConsoleEscape::new();
        let clone = e.clone();
        assert!(!e.pressed());
        clone.press();
        assert!(e.pressed());
    }

    #[test]
    fn not_a_terminal() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(RawTerminal::enter(fds[0]).unwrap().is_none());
        // SAFETY: both fds were just created and are closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
