//! The device event loop's subscribers.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use kindling_devices::legacy::{CoalescedSerial, OutputFlusher, SerialDevice};
use kindling_devices::{BusExitHandler, ExitReason, VmExitHandle};

use crate::console::{ConsoleEscape, EscapeDetector};
use crate::lifecycle::Shared;

/// Wakes the event loop when a device asks to end the VM.
#[derive(Debug)]
pub(crate) struct ExitSubscriber {
    pub(crate) exit: VmExitHandle,
}

impl MutEventSubscriber for ExitSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Drain the counter; the loop checks `exit.reason()`.
        let _ = self.exit.event().read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        // Registration can only fail for an invalid fd, which an EventFd
        // never is; the loop also polls the exit reason after every wake-up.
        let _ = ops.add(Events::new(self.exit.event(), EventSet::IN));
    }
}

/// Feeds the VMM's standard input to the serial port.
#[derive(Debug)]
pub(crate) struct StdinSubscriber {
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    pub(crate) fd: RawFd,
    /// Whether stdin is registered (it is removed at EOF or on error).
    pub(crate) active: bool,
    /// The console escape, when on: the detector, what to tell the VMM's
    /// user, and how to end the VM.
    pub(crate) escape: Option<(EscapeDetector, ConsoleEscape, VmExitHandle)>,
}

/// Reads from `fd` without the buffering of `std::io::Stdin`, which would
/// hide pending bytes from epoll.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the kernel
    // checks the fd.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl MutEventSubscriber for StdinSubscriber {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let mut room = serial.input_room().min(64);
        // A Ctrl-A held back by the escape detector comes out with the next
        // byte: keep room for it.
        if let Some((detector, ..)) = &self.escape {
            room = room.saturating_sub(usize::from(detector.pending()));
        }
        let mut buf = [0u8; 64];
        let read = if room == 0 {
            // The guest is not reading; drop this burst rather than spin
            // (the escape sequence still counts).
            read_fd(self.fd, &mut buf)
        } else {
            read_fd(self.fd, &mut buf[..room])
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = ops.remove(events);
                self.active = false;
                return;
            }
            Ok(n) => n,
        };
        let mut filtered = Vec::new();
        let input = match &mut self.escape {
            Some((detector, escape, exit)) => {
                if detector.filter(&buf[..n], &mut filtered) {
                    escape.press();
                    exit.request(ExitReason::Stopped);
                    return;
                }
                &filtered[..]
            }
            None => &buf[..n],
        };
        if room > 0 {
            let _ = serial.enqueue_input(input);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.active = ops.add(Events::new_raw(self.fd, EventSet::IN)).is_ok();
    }
}

/// Writes out a partial serial line once the guest has been quiet.
#[derive(Debug)]
pub(crate) struct SerialFlushSubscriber {
    pub(crate) flusher: OutputFlusher,
}

impl MutEventSubscriber for SerialFlushSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // A failed write drops console output; the guest keeps running.
        let _ = self.flusher.flush_pending();
    }

    fn init(&mut self, ops: &mut EventOps) {
        // Without the timer, partial lines still go out with the next
        // newline and at the end of the VM.
        let _ = ops.add(Events::new_raw(self.flusher.timer_fd(), EventSet::IN));
    }
}

/// Replays coalesced guest writes every millisecond while the guest waits
/// for the serial port's transmitter-empty interrupt (which only comes when
/// its buffered writes are replayed).
#[derive(Debug)]
pub(crate) struct CoalescedDrainSubscriber {
    pub(crate) serial: Arc<CoalescedSerial>,
    pub(crate) handler: Arc<BusExitHandler>,
}

impl MutEventSubscriber for CoalescedDrainSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        self.serial.on_timer(&*self.handler);
    }

    fn init(&mut self, ops: &mut EventOps) {
        // Without the timer, coalesced writes are still replayed at every
        // vCPU exit; only interrupt-driven serial output would be slower.
        let _ = ops.add(Events::new_raw(self.serial.timer_fd(), EventSet::IN));
    }
}

/// Parks the event loop while the VM is paused.
#[derive(Debug)]
pub(crate) struct ControlSubscriber {
    pub(crate) shared: Arc<Shared>,
}

impl MutEventSubscriber for ControlSubscriber {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        self.shared.control.park_if_asked(&self.shared.exit);
    }

    fn init(&mut self, ops: &mut EventOps) {
        // Registration can only fail for an invalid fd, which an EventFd
        // never is.
        let _ = ops.add(Events::new(&self.shared.control.wake, EventSet::IN));
    }
}
