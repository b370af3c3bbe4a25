//! Termination signals as an orderly stop: SIGTERM, SIGINT and SIGHUP end
//! the VM through the event loop (vCPUs stopped, in-flight disk requests
//! drained, disks flushed, serial output written) instead of killing the
//! process where it stands.
//!
//! The signals are blocked in every thread and taken by a small watcher
//! thread (so a paused VM stops too). Blocking must happen before the process starts
//! any thread (threads inherit the mask of their creator), so a program
//! calls [`block_termination_signals`] first thing in `main` and sets
//! [`VmConfig::stop_on_signals`](crate::VmConfig::stop_on_signals).

use std::io::{self, Write};
use std::sync::{Arc, Weak};

use kindling_devices::ExitReason;

use crate::lifecycle::Shared;

/// The signals that stop the VM in order.
pub const TERMINATION_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signo in TERMINATION_SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        set
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every
/// thread it starts from now on, so that they wait for the VMM's
/// `signalfd` instead of killing the process. Call it first thing in
/// `main`.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not
    // wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Undoes [`block_termination_signals`] for the calling thread (and the
/// threads it starts from now on): the signals get their default action
/// again.
pub fn unblock_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not
    // wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// The name of a signal, for the line a VMM prints.
pub fn signal_name(signo: i32) -> &'static str {
    match signo {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// How often the watcher looks whether its VM is still there.
const WATCH_PERIOD: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 200_000_000,
};

/// Starts a thread that waits for a termination signal (blocked by
/// [`block_termination_signals`]) and stops the VM with
/// [`ExitReason::Signal`] — a paused VM too. The thread ends with the VM.
pub(crate) fn spawn_signal_watcher(
    shared: &Arc<Shared>,
    seccomp: &crate::seccomp::SeccompPolicy,
) -> io::Result<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let seccomp = seccomp.clone();
    std::thread::Builder::new()
        .name("kindling-signals".into())
        .spawn(move || {
            let set = termination_set();
            let mut filtered = false;
            loop {
                // SAFETY: `set` is initialised; no siginfo is wanted; the
                // timeout is a valid timespec.
                let signo =
                    unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &WATCH_PERIOD) };
                // The filter goes on after the first wait, off the path to
                // the guest's first instruction (installing one costs tens
                // of microseconds of CPU): this thread runs no code the
                // guest drives.
                if !filtered {
                    filtered = true;
                    if let Err(e) = seccomp.install(crate::seccomp::ThreadKind::SignalWatcher) {
                        // Without its filter the watcher still does its
                        // job; the operator hears of it.
                        let _ = writeln!(std::io::stderr(), "kindling: {e}");
                    }
                }
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                if signo > 0 {
                    shared.exit.request(ExitReason::Signal(signo));
                    // Release a paused VM's event loop so the stop goes
                    // through.
                    crate::VmmHandle { shared }.stop();
                    return;
                }
                if matches!(shared.state(), crate::VmRunState::Stopped(_)) {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_exit_status() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGHUP), "SIGHUP");
        assert_eq!(signal_name(0), "a signal");
        assert_eq!(ExitReason::Signal(libc::SIGTERM).exit_code(), 143);
    }
}
