//! Kicking a vCPU thread out of `KVM_RUN`.
//!
//! A kicker sends [`kick_signal`] to the vCPU thread. If the thread is
//! inside `KVM_RUN`, the ioctl returns `EINTR`. If it is about to enter,
//! the signal handler has set `immediate_exit` in the thread's `kvm_run`,
//! so `KVM_RUN` returns `EINTR` at once. Either way the run loop then sees
//! the request that came with the kick.

use std::cell::Cell;
use std::ptr;
use std::sync::OnceLock;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::VcpuError;

thread_local! {
    /// The `kvm_run` area of the vCPU running on this thread, if any.
    static THREAD_KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    THREAD_KVM_RUN.with(|cell| {
        let run = cell.get();
        if !run.is_null() {
            // SAFETY: the pointer was set by this thread's run loop to its
            // vCPU's mapped `kvm_run` area and is cleared before that mapping
            // goes away; writing one byte is async-signal-safe.
            unsafe { ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
        }
    });
}

/// Installs the kick signal handler for the process (idempotent).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| register_signal_handler(kick_signal(), handle_kick).map_err(|e| e.errno()))
        .map_err(|errno| VcpuError::KickHandler(vmm_sys_util::errno::Error::new(errno)))
}

/// Publishes this thread's `kvm_run` area to the kick handler; the guard
/// withdraws it when dropped.
pub(crate) struct KickTarget;

impl KickTarget {
    pub(crate) fn publish(run: *mut kvm_run) -> Self {
        THREAD_KVM_RUN.with(|cell| cell.set(run));
        KickTarget
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        THREAD_KVM_RUN.with(|cell| cell.set(ptr::null_mut()));
    }
}
