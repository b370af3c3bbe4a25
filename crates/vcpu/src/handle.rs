//! Running a vCPU on its own thread, and pausing, resuming or stopping it
//! from another.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::kick::{install_kick_handler, kick_signal, KickTarget};
use crate::{Vcpu, VcpuError, VcpuExitHandler, VcpuStopReason};

/// What a vCPU thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuRunState {
    /// Running guest code (or about to).
    Running,
    /// Parked outside `KVM_RUN` until resumed or stopped.
    Paused,
    /// The thread has finished.
    Finished,
}

const REQ_RUN: u8 = 0;
const REQ_PAUSE: u8 = 1;
const REQ_STOP: u8 = 2;

#[derive(Debug)]
struct Control {
    /// What the host wants; read by the vCPU thread after every exit.
    request: AtomicU8,
    /// What the thread is doing, for handshakes.
    state: Mutex<VcpuRunState>,
    changed: Condvar,
}

impl Control {
    fn set_state(&self, state: VcpuRunState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.changed.notify_all();
    }
}

/// Called once when a vCPU thread ends, with the vCPU id and its result.
pub type OnVcpuStop = Box<dyn FnOnce(u8, &Result<VcpuStopReason, VcpuError>) + Send>;

/// A vCPU running on its own thread.
#[derive(Debug)]
pub struct VcpuHandle {
    id: u8,
    control: Arc<Control>,
    thread: Option<JoinHandle<(Vcpu, Result<VcpuStopReason, VcpuError>)>>,
}

impl VcpuHandle {
    /// Starts `vcpu` on a new thread named `vcpu<N>`, handling its exits
    /// with `handler`. `on_stop` runs on that thread when it ends.
    pub fn spawn(
        mut vcpu: Vcpu,
        handler: Arc<dyn VcpuExitHandler>,
        on_stop: OnVcpuStop,
    ) -> Result<Self, VcpuError> {
        install_kick_handler()?;
        let id = vcpu.id();
        let control = Arc::new(Control {
            request: AtomicU8::new(REQ_RUN),
            state: Mutex::new(VcpuRunState::Running),
            changed: Condvar::new(),
        });
        let thread_control = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let result = run_loop(&mut vcpu, &*handler, &thread_control);
                on_stop(id, &result);
                thread_control.set_state(VcpuRunState::Finished);
                (vcpu, result)
            })
            .map_err(|source| VcpuError::Spawn { id, source })?;
        Ok(Self {
            id,
            control,
            thread: Some(thread),
        })
    }

    /// The vCPU index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// What the thread is doing now.
    pub fn state(&self) -> VcpuRunState {
        *self.control.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kick(&self) {
        if let Some(thread) = &self.thread {
            // SAFETY: the thread has not been joined (we still hold its
            // handle), so its pthread_t is valid; the signal has a handler
            // that only sets `immediate_exit`.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
        }
    }

    /// Pauses the vCPU outside `KVM_RUN` and waits until it is parked (or
    /// has finished).
    pub fn pause(&self) {
        if self
            .control
            .request
            .compare_exchange(REQ_RUN, REQ_PAUSE, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        self.kick();
        let mut state = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        while *state == VcpuRunState::Running {
            state = self
                .control
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Resumes a paused vCPU.
    pub fn resume(&self) {
        if self
            .control
            .request
            .compare_exchange(REQ_PAUSE, REQ_RUN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let _guard = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
            self.control.changed.notify_all();
        }
    }

    /// Asks the vCPU to stop, kicking it out of the guest; does not wait.
    pub fn stop(&self) {
        self.control.request.store(REQ_STOP, Ordering::SeqCst);
        self.kick();
        let _guard = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        self.control.changed.notify_all();
    }

    /// Stops the vCPU if it is still running, waits for its thread, and
    /// returns the vCPU with the reason it stopped.
    pub fn join(mut self) -> (Option<Vcpu>, Result<VcpuStopReason, VcpuError>) {
        self.stop();
        let id = self.id;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok((vcpu, result))) => (Some(vcpu), result),
            _ => (None, Err(VcpuError::ThreadPanicked { id })),
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.control.request.store(REQ_STOP, Ordering::SeqCst);
            // SAFETY: as in `kick`: the thread is not joined yet.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
            {
                let _guard = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
                self.control.changed.notify_all();
            }
            let _ = thread.join();
        }
    }
}

fn run_loop(
    vcpu: &mut Vcpu,
    handler: &dyn VcpuExitHandler,
    control: &Control,
) -> Result<VcpuStopReason, VcpuError> {
    let _kick_target = KickTarget::publish(vcpu_run_ptr(vcpu));
    loop {
        match control.request.load(Ordering::SeqCst) {
            REQ_STOP => return Ok(VcpuStopReason::Stopped),
            REQ_PAUSE => {
                let mut state = control.state.lock().unwrap_or_else(|p| p.into_inner());
                *state = VcpuRunState::Paused;
                control.changed.notify_all();
                while control.request.load(Ordering::SeqCst) == REQ_PAUSE {
                    state = control
                        .changed
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                *state = VcpuRunState::Running;
                continue;
            }
            _ => {}
        }
        if let Some(reason) = vcpu.run_once(handler)? {
            return Ok(reason);
        }
    }
}

fn vcpu_run_ptr(vcpu: &mut Vcpu) -> *mut kvm_bindings::kvm_run {
    vcpu.kvm_run_ptr()
}

impl Vcpu {
    pub(crate) fn kvm_run_ptr(&mut self) -> *mut kvm_bindings::kvm_run {
        self.fd_mut().get_kvm_run() as *mut _
    }
}
