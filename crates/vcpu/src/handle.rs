//! Running a vCPU on its own thread, and pausing, resuming or stopping it
//! from another.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
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

/// Work handed to a parked vCPU thread (see [`VcpuHandle::run_parked`]).
type ParkedTask = Box<dyn FnOnce(&mut Vcpu) + Send>;

struct Control {
    /// What the host wants; read by the vCPU thread after every exit.
    request: AtomicU8,
    /// What the thread is doing, for handshakes.
    state: Mutex<VcpuRunState>,
    changed: Condvar,
    /// Work for the parked thread; guarded by its own lock, taken only
    /// while `state` is held.
    task: Mutex<Option<ParkedTask>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("request", &self.request)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Control {
    fn set_state(&self, state: VcpuRunState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.changed.notify_all();
    }
}

/// Called once when a vCPU thread ends, with the vCPU id and its result.
pub type OnVcpuStop = Box<dyn FnOnce(u8, &Result<VcpuStopReason, VcpuError>) + Send>;

/// Called first thing on a new vCPU thread, with the vCPU id, before the
/// vCPU enters the guest (for example to install a seccomp filter once the
/// thread's own set-up is done). An error ends the thread with
/// [`VcpuError::ThreadInit`].
pub type OnVcpuStart = Box<dyn FnOnce(u8) -> Result<(), String> + Send>;

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
        vcpu: Vcpu,
        handler: Arc<dyn VcpuExitHandler>,
        on_stop: OnVcpuStop,
    ) -> Result<Self, VcpuError> {
        Self::spawn_with(vcpu, handler, on_stop, false, None)
    }

    /// Like [`VcpuHandle::spawn`], but the thread parks before it first
    /// enters the guest: the vCPU does not run until
    /// [`VcpuHandle::resume`] (a VM restored paused starts this way).
    pub fn spawn_paused(
        vcpu: Vcpu,
        handler: Arc<dyn VcpuExitHandler>,
        on_stop: OnVcpuStop,
    ) -> Result<Self, VcpuError> {
        Self::spawn_with(vcpu, handler, on_stop, true, None)
    }

    /// Like [`VcpuHandle::spawn`] (or [`VcpuHandle::spawn_paused`] when
    /// `paused`), but the new thread first runs `init` with the vCPU id,
    /// before it parks or enters the guest; if `init` fails the thread
    /// ends with [`VcpuError::ThreadInit`] (and `on_stop` sees it). The
    /// Kindling VMM installs the vCPU seccomp filter this way.
    pub fn spawn_with_init(
        vcpu: Vcpu,
        handler: Arc<dyn VcpuExitHandler>,
        on_stop: OnVcpuStop,
        paused: bool,
        init: OnVcpuStart,
    ) -> Result<Self, VcpuError> {
        Self::spawn_with(vcpu, handler, on_stop, paused, Some(init))
    }

    fn spawn_with(
        mut vcpu: Vcpu,
        handler: Arc<dyn VcpuExitHandler>,
        on_stop: OnVcpuStop,
        paused: bool,
        init: Option<OnVcpuStart>,
    ) -> Result<Self, VcpuError> {
        install_kick_handler()?;
        let id = vcpu.id();
        let control = Arc::new(Control {
            request: AtomicU8::new(if paused { REQ_PAUSE } else { REQ_RUN }),
            state: Mutex::new(VcpuRunState::Running),
            changed: Condvar::new(),
            task: Mutex::new(None),
        });
        let thread_control = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let result = match init.map_or(Ok(()), |init| init(id)) {
                    Ok(()) => run_loop(&mut vcpu, &*handler, &thread_control),
                    Err(reason) => Err(VcpuError::ThreadInit { id, reason }),
                };
                // A task given too late is dropped: its caller sees
                // `ThreadGone`.
                drop(
                    thread_control
                        .task
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take(),
                );
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

    /// Runs `task` on the vCPU's own thread while it is parked (after
    /// [`VcpuHandle::pause`], or from [`VcpuHandle::spawn_paused`]) and
    /// returns its result, as Firecracker's `VcpuEvent::SaveState` does.
    /// The vCPU stays parked. Fails if the vCPU is not parked or its thread
    /// ends first.
    pub fn run_parked<R, F>(&self, task: F) -> Result<R, VcpuError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Vcpu) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        {
            let state = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
            let request = self.control.request.load(Ordering::SeqCst);
            let parked = *state == VcpuRunState::Paused && request == REQ_PAUSE;
            if !parked {
                let state = match (*state, request) {
                    (VcpuRunState::Finished, _) | (_, REQ_STOP) => "stopped",
                    (VcpuRunState::Running, REQ_PAUSE) => "being paused",
                    _ => "running",
                };
                return Err(VcpuError::NotParked { id: self.id, state });
            }
            *self.control.task.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Box::new(move |vcpu: &mut Vcpu| {
                    // The receiver waits below; if it is gone there is no
                    // one left to tell.
                    let _ = tx.send(task(vcpu));
                }));
            self.control.changed.notify_all();
        }
        rx.recv().map_err(|_| VcpuError::ThreadGone { id: self.id })
    }

    /// Saves the vCPU's state on its own (parked) thread: see
    /// [`VcpuHandle::run_parked`] and [`kindling_memory::Persist`].
    #[cfg(target_arch = "x86_64")]
    pub fn save_state(&self) -> Result<crate::VcpuState, VcpuError> {
        use kindling_memory::Persist;
        self.run_parked(|vcpu| vcpu.save())?
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
                    let task = control
                        .task
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    if let Some(task) = task {
                        // The state lock stays held: nothing can resume or
                        // stop the vCPU under the task's feet.
                        task(vcpu);
                        continue;
                    }
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
        // The exit just handled may have ended the VM (a power-off, a
        // reset, an exit status): the guest runs no further.
        if handler.vm_ending() {
            return Ok(VcpuStopReason::Stopped);
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
