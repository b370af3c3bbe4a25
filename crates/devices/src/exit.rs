//! How devices ask the VMM to end the VM.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    /// The guest asked for a reset (i8042 or ACPI reset register).
    Reset,
    /// The guest powered off (ACPI sleep state S5).
    PowerOff,
    /// The guest wrote its exit status to the debug-exit port.
    Status(u8),
    /// The VMM was asked to stop from the host side.
    Stopped,
    /// The VMM received a termination signal (SIGTERM, SIGINT, SIGHUP)
    /// and stopped the VM in order.
    Signal(i32),
}

impl ExitReason {
    /// The process exit status a VMM reports for this reason.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitReason::Reset | ExitReason::PowerOff | ExitReason::Stopped => 0,
            ExitReason::Status(s) => i32::from(s),
            // As a shell reports a process killed by the signal.
            ExitReason::Signal(signo) => 128 + signo,
        }
    }
}

#[derive(Debug)]
struct Inner {
    reason: Mutex<Option<ExitReason>>,
    /// Set with the first request: what vCPUs check after every exit.
    requested: AtomicBool,
    event: EventFd,
}

/// A cloneable handle through which devices request the end of the VM.
///
/// The first request wins; later ones are ignored. The VMM waits on
/// [`VmExitHandle::event`] (an eventfd) in its event loop.
#[derive(Debug, Clone)]
pub struct VmExitHandle(Arc<Inner>);

impl VmExitHandle {
    /// Creates a handle with its own non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self(Arc::new(Inner {
            reason: Mutex::new(None),
            requested: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })))
    }

    /// Requests the end of the VM for `reason`; returns whether this request
    /// was the first.
    pub fn request(&self, reason: ExitReason) -> bool {
        let mut slot = self
            .0
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        self.0.requested.store(true, Ordering::Release);
        // A failed write can only mean the counter is saturated, in which
        // case the event is already pending.
        let _ = self.0.event.write(1);
        true
    }

    /// Whether the end of the VM was requested: one atomic load, cheap
    /// enough for a vCPU to check after every exit.
    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::Acquire)
    }

    /// The reason requested so far, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        *self
            .0
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The eventfd that becomes readable on the first request.
    pub fn event(&self) -> &EventFd {
        &self.0.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins() {
        let h = VmExitHandle::new().unwrap();
        assert_eq!(h.reason(), None);
        assert!(!h.is_requested());
        assert!(h.clone().request(ExitReason::Status(3)));
        assert!(h.is_requested());
        assert!(!h.request(ExitReason::Reset));
        assert_eq!(h.reason(), Some(ExitReason::Status(3)));
        assert_eq!(h.event().read().unwrap(), 1);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitReason::Status(7).exit_code(), 7);
        assert_eq!(ExitReason::Reset.exit_code(), 0);
        assert_eq!(ExitReason::PowerOff.exit_code(), 0);
    }
}
