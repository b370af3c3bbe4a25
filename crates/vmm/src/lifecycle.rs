//! The lifecycle of a running microVM: pause, resume, stop, and its state,
//! from any thread.

use std::sync::{Arc, Condvar, Mutex};

use kindling_devices::{ExitReason, VmExitHandle};
use kindling_vcpu::VcpuHandle;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::VmmError;

/// What a microVM is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRunState {
    /// Built, not started yet.
    NotStarted,
    /// vCPUs and devices running.
    Running,
    /// vCPUs parked outside `KVM_RUN` and the device event loop parked:
    /// nothing in the VM changes until it is resumed.
    Paused,
    /// Ended, for this reason.
    Stopped(ExitReason),
}

impl std::fmt::Display for VmRunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmRunState::NotStarted => f.write_str("not started"),
            VmRunState::Running => f.write_str("running"),
            VmRunState::Paused => f.write_str("paused"),
            VmRunState::Stopped(reason) => write!(f, "stopped ({reason:?})"),
        }
    }
}

/// What the device event loop is asked to do, and what it does.
#[derive(Debug, Default)]
struct LoopState {
    /// The event loop should park.
    pause_requested: bool,
    /// The event loop is parked.
    parked: bool,
    /// The event loop has ended.
    finished: bool,
}

/// Parks and releases the device event loop.
#[derive(Debug)]
pub(crate) struct LoopControl {
    /// Wakes the loop so it looks at its state.
    pub(crate) wake: EventFd,
    state: Mutex<LoopState>,
    changed: Condvar,
}

impl LoopControl {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            wake: EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            state: Mutex::new(LoopState::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoopState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the loop to park and waits until it is (or has ended).
    fn pause(&self) {
        let mut state = self.lock();
        state.pause_requested = true;
        // A failed write leaves the loop to notice at its next wake-up.
        let _ = self.wake.write(1);
        while !state.parked && !state.finished {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Asks the loop to park at its first wake-up, without waiting (for a
    /// VM that starts paused: called before the loop's thread exists).
    pub(crate) fn request_pause(&self) {
        self.lock().pause_requested = true;
        // A failed write leaves the loop to notice at its next wake-up.
        let _ = self.wake.write(1);
    }

    /// Waits until the loop is parked (or has ended).
    pub(crate) fn wait_parked(&self) {
        let mut state = self.lock();
        while !state.parked && !state.finished && state.pause_requested {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Releases a parked loop and waits until it runs again (or has
    /// ended).
    fn resume(&self) {
        let mut state = self.lock();
        state.pause_requested = false;
        self.changed.notify_all();
        while state.parked && !state.finished {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Called on the loop's thread when `wake` fired: parks while a pause
    /// is requested and `keep_parked` says so.
    pub(crate) fn park_if_asked(&self, exit: &VmExitHandle) {
        let _ = self.wake.read();
        let mut state = self.lock();
        if !state.pause_requested {
            return;
        }
        state.parked = true;
        self.changed.notify_all();
        while state.pause_requested && exit.reason().is_none() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.parked = false;
        self.changed.notify_all();
    }

    /// Called when the loop has ended.
    pub(crate) fn finish(&self) {
        self.lock().finished = true;
        self.changed.notify_all();
    }
}

/// The state shared by every handle to one microVM.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) exit: VmExitHandle,
    pub(crate) control: LoopControl,
    pub(crate) vcpus: Mutex<Vec<VcpuHandle>>,
    run_state: Mutex<VmRunState>,
    /// What snapshots need of the VM (set once it is assembled).
    pub(crate) view: std::sync::OnceLock<crate::vmm::VmView>,
    /// Whether the dirty pages since the last full snapshot (or since the
    /// restore) are all known, so that a diff snapshot can be taken.
    pub(crate) diff_base: std::sync::atomic::AtomicBool,
    /// Held while a snapshot is taken: a resume waits for it.
    pub(crate) snapshot_lock: Mutex<()>,
}

impl Shared {
    pub(crate) fn new(exit: VmExitHandle) -> Result<Arc<Self>, VmmError> {
        Ok(Arc::new(Self {
            exit,
            control: LoopControl::new().map_err(|source| VmmError::EventFd {
                what: "event loop control event".into(),
                source,
            })?,
            vcpus: Mutex::new(Vec::new()),
            run_state: Mutex::new(VmRunState::NotStarted),
            view: std::sync::OnceLock::new(),
            diff_base: std::sync::atomic::AtomicBool::new(false),
            snapshot_lock: Mutex::new(()),
        }))
    }

    pub(crate) fn set_state(&self, state: VmRunState) {
        *self.run_state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub(crate) fn state(&self) -> VmRunState {
        let state = *self.run_state.lock().unwrap_or_else(|p| p.into_inner());
        match (state, self.exit.reason()) {
            // The guest ended the VM; the loop may not have noticed yet.
            (VmRunState::Running | VmRunState::Paused, Some(reason)) => VmRunState::Stopped(reason),
            (state, _) => state,
        }
    }
}

/// Controls a microVM from any thread: pause, resume, stop, and its state.
/// Cheap to clone; every clone controls the same VM.
#[derive(Debug, Clone)]
pub struct VmmHandle {
    pub(crate) shared: Arc<Shared>,
}

impl VmmHandle {
    /// Asks the VM to stop (a paused VM too); the run returns
    /// [`ExitReason::Stopped`]. Does not wait.
    pub fn stop(&self) {
        self.shared.exit.request(ExitReason::Stopped);
        // Release a parked event loop so it can see the exit.
        self.shared.control.resume();
    }

    /// What the VM is doing.
    pub fn state(&self) -> VmRunState {
        self.shared.state()
    }

    /// Pauses a running VM: every vCPU is parked outside `KVM_RUN`, then
    /// the device event loop is parked, so neither the guest nor a device
    /// changes guest memory or device state until [`VmmHandle::resume`].
    /// Returns once both are parked. Pausing a paused VM does nothing.
    pub fn pause(&self) -> Result<(), VmmError> {
        match self.state() {
            VmRunState::Running => {}
            VmRunState::Paused => return Ok(()),
            state => {
                return Err(VmmError::InvalidState {
                    action: "pause",
                    state,
                })
            }
        }
        {
            let vcpus = self.shared.vcpus.lock().unwrap_or_else(|p| p.into_inner());
            for vcpu in vcpus.iter() {
                vcpu.pause();
            }
        }
        self.shared.control.pause();
        self.shared.set_state(VmRunState::Paused);
        if let VmRunState::Stopped(_) = self.state() {
            // The VM ended while it was being paused.
            self.shared.control.resume();
        }
        Ok(())
    }

    /// Resumes a paused VM: the device event loop first, then the vCPUs.
    /// Resuming a running VM does nothing.
    pub fn resume(&self) -> Result<(), VmmError> {
        // Never under a snapshot being taken.
        let _snapshot = self
            .shared
            .snapshot_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match self.state() {
            VmRunState::Paused => {}
            VmRunState::Running => return Ok(()),
            state => {
                return Err(VmmError::InvalidState {
                    action: "resume",
                    state,
                })
            }
        }
        self.shared.control.resume();
        {
            let vcpus = self.shared.vcpus.lock().unwrap_or_else(|p| p.into_inner());
            for vcpu in vcpus.iter() {
                vcpu.resume();
            }
        }
        self.shared.set_state(VmRunState::Running);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_requests_check_the_state() {
        let shared = Shared::new(VmExitHandle::new().unwrap()).unwrap();
        let handle = VmmHandle { shared };
        assert_eq!(handle.state(), VmRunState::NotStarted);
        let err = handle.pause().unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot pause a VM that is not started"),
            "{err}"
        );
        assert!(matches!(
            handle.resume(),
            Err(VmmError::InvalidState {
                action: "resume",
                ..
            })
        ));
        handle.shared.set_state(VmRunState::Running);
        handle.resume().unwrap();
        handle.stop();
        assert_eq!(handle.state(), VmRunState::Stopped(ExitReason::Stopped));
        assert!(handle.pause().is_err());
    }

    #[test]
    fn a_parked_loop_is_released_by_resume_and_by_stop() {
        let exit = VmExitHandle::new().unwrap();
        let shared = Shared::new(exit.clone()).unwrap();
        shared.set_state(VmRunState::Running);
        let handle = VmmHandle {
            shared: shared.clone(),
        };
        let looper = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                // The loop: wait for wake-ups until the VM ends.
                let mut parks = 0;
                while shared.exit.reason().is_none() {
                    let mut fds = [libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(&shared.control.wake),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(fds.as_mut_ptr(), 1, 50) };
                    if fds[0].revents != 0 {
                        shared.control.park_if_asked(&shared.exit);
                        parks += 1;
                    }
                }
                shared.control.finish();
                parks
            })
        };
        handle.pause().unwrap();
        assert_eq!(handle.state(), VmRunState::Paused);
        handle.resume().unwrap();
        assert_eq!(handle.state(), VmRunState::Running);
        // Let the loop leave its park: a pause before that would find it
        // still parked (correctly) and the count below would be 1.
        while shared.control.lock().parked {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        handle.pause().unwrap();
        handle.stop();
        assert!(looper.join().unwrap() >= 2);
        assert_eq!(handle.state(), VmRunState::Stopped(ExitReason::Stopped));
    }
}
