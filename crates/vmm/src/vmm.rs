//! A built microVM, and running it.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kindling_devices::legacy::{CoalescedSerial, OutputFlusher};
use kindling_devices::{BusExitHandler, ExitReason, VmExitHandle};
use kindling_memory::{GuestMemoryMmap, GuestRam};
use kindling_vcpu::{Kvm, Vcpu, VcpuHandle, VcpuStopReason, Vm};

use crate::config::SerialConfig;
use crate::event_loop::{
    CoalescedDrainSubscriber, ControlSubscriber, ExitSubscriber, SerialFlushSubscriber,
    StdinSubscriber,
};
use crate::lifecycle::Shared;
use crate::{UserSubscriber, VmRunState, VmmBuilder, VmmDevices, VmmError, VmmHandle};

/// The largest vCPU count a Kindling VM supports (the MP table's APIC ids
/// stop at 254, with the IOAPIC taking the next id).
pub const MAX_VCPUS: u8 = 254;

/// Everything [`VmmBuilder::build`] made.
pub(crate) struct Parts {
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) devices: VmmDevices,
    pub(crate) handler: Arc<BusExitHandler>,
    pub(crate) serial_flusher: OutputFlusher,
    pub(crate) coalesced: Option<Arc<CoalescedSerial>>,
    pub(crate) subscribers: Vec<UserSubscriber>,
    pub(crate) exit: VmExitHandle,
    pub(crate) stdin_input: bool,
    pub(crate) stop_on_signals: bool,
    pub(crate) console_escape: Option<crate::console::ConsoleEscape>,
    pub(crate) vm: Arc<Vm>,
    pub(crate) kvm: Arc<Kvm>,
    pub(crate) memory: GuestRam,
    /// Start with the vCPUs and the event loop parked (a restore with
    /// `resume: false`).
    pub(crate) start_paused: bool,
    /// The userfaultfd of a VM restored with the `Uffd` backend.
    pub(crate) uffd: Option<crate::snapshot::uffd::UffdSession>,
}

/// A built microVM, ready to run: [`Vmm::start`] runs it in the
/// background and returns a [`RunningVmm`]; [`Vmm::run`] runs it on the
/// calling thread until it ends.
pub struct Vmm {
    // Field order is drop order: vCPUs before the VM before memory.
    vcpus: Vec<Vcpu>,
    devices: VmmDevices,
    handler: Arc<BusExitHandler>,
    serial_flusher: OutputFlusher,
    coalesced: Option<Arc<CoalescedSerial>>,
    subscribers: Vec<UserSubscriber>,
    shared: Arc<Shared>,
    stdin_input: bool,
    stop_on_signals: bool,
    console_escape: Option<crate::console::ConsoleEscape>,
    vm: Arc<Vm>,
    kvm: Arc<Kvm>,
    memory: GuestRam,
    start_paused: bool,
    // Kept open while the VM lives (a restore with the Uffd backend).
    _uffd: Option<crate::snapshot::uffd::UffdSession>,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("vcpus", &self.vcpus.len())
            .field("devices", &self.devices)
            .field("subscribers", &self.subscribers.len())
            .field("vm", &self.vm)
            .finish_non_exhaustive()
    }
}

pub(crate) type SubscriberBox = Box<dyn MutEventSubscriber + Send>;

pub(crate) fn serial_output(
    config: SerialConfig,
) -> Result<(Box<dyn Write + Send>, bool), VmmError> {
    Ok(match config {
        SerialConfig::Stdout => (Box::new(std::io::stdout()), true),
        SerialConfig::Off => (Box::new(std::io::sink()), false),
        SerialConfig::File(path) => (Box::new(crate::files::open_serial_file(&path, &[])?), false),
        SerialConfig::Writer(w) => (w, false),
    })
}

impl Vmm {
    /// Builds the microVM described by `config`: memory, VM, kernel,
    /// devices and vCPUs. Nothing runs until [`Vmm::start`] or
    /// [`Vmm::run`]. To add devices of your own first, use
    /// [`VmmBuilder`].
    #[cfg(target_arch = "x86_64")]
    pub fn build(config: crate::VmConfig) -> Result<Self, VmmError> {
        VmmBuilder::new(config)?.build()
    }

    pub(crate) fn assemble(parts: Parts) -> Result<Self, VmmError> {
        let shared = Shared::new(parts.exit)?;
        // A fresh Shared: the view is not set yet.
        let _ = shared.view.set(VmView {
            devices: parts.devices.clone(),
            memory: parts.memory.clone(),
            vm: parts.vm.clone(),
            kvm: parts.kvm.clone(),
            handler: parts.handler.clone(),
            coalesced: parts.coalesced.clone(),
            serial_flusher: parts.serial_flusher.clone(),
            lazy_memory: parts.uffd.is_some(),
        });
        // A restored VM's memory is the base its first diff snapshot is
        // relative to.
        let restored = parts.memory.config.backing == kindling_memory::Backing::PrivateFile
            || parts.uffd.is_some();
        shared
            .diff_base
            .store(restored, std::sync::atomic::Ordering::SeqCst);
        Ok(Self {
            shared,
            start_paused: parts.start_paused,
            _uffd: parts.uffd,
            vcpus: parts.vcpus,
            devices: parts.devices,
            handler: parts.handler,
            serial_flusher: parts.serial_flusher,
            coalesced: parts.coalesced,
            subscribers: parts.subscribers,
            stdin_input: parts.stdin_input,
            stop_on_signals: parts.stop_on_signals,
            console_escape: parts.console_escape,
            vm: parts.vm,
            kvm: parts.kvm,
            memory: parts.memory,
        })
    }

    /// A handle to pause, resume or stop the VM from another thread (it
    /// can be taken before the VM starts).
    pub fn handle(&self) -> VmmHandle {
        VmmHandle {
            shared: self.shared.clone(),
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory.memory
    }

    /// Guest memory with the host file that backs it, if any.
    pub fn guest_ram(&self) -> &GuestRam {
        &self.memory
    }

    /// Typed handles to the VM's devices.
    pub fn devices(&self) -> &VmmDevices {
        &self.devices
    }

    /// The KVM VM.
    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }

    /// The checked KVM handle.
    pub fn kvm(&self) -> &Arc<Kvm> {
        &self.kvm
    }

    /// The exit handler the vCPUs use (its buses hold every device).
    pub fn exit_handler(&self) -> &Arc<BusExitHandler> {
        &self.handler
    }

    /// The vCPUs, before they start.
    pub fn vcpus(&self) -> &[Vcpu] {
        &self.vcpus
    }

    /// Starts the VM: one thread per vCPU and one for the device event
    /// loop. Returns at once with a [`RunningVmm`] to control it and wait
    /// for its end.
    ///
    /// A VM restored with `resume: false` starts paused: its vCPU threads
    /// and the event loop park before they do anything, and
    /// [`RunningVmm::resume`] lets them go.
    pub fn start(mut self) -> Result<RunningVmm, VmmError> {
        let manager = self.start_vcpus()?;
        let handle = self.handle();
        let view = self.view().clone();
        let start_paused = self.start_paused;
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("kindling-events".into())
            .spawn(move || self.event_loop(manager))
            .map_err(|e| VmmError::EventLoopThread(e.to_string()))?;
        if start_paused {
            // The loop parks at its first wake-up (asked for before the
            // thread started); wait for it.
            shared.control.wait_parked();
        }
        Ok(RunningVmm {
            handle,
            view,
            thread,
        })
    }

    fn view(&self) -> &VmView {
        // Set by `assemble`, the only constructor.
        self.shared.view.get().expect("Vmm::assemble sets the view")
    }

    /// Runs the VM until the guest or a [`VmmHandle`] ends it: vCPUs on
    /// their own threads, the device event loop on this one. Returns why
    /// the VM ended, or the first vCPU error.
    pub fn run(mut self) -> Result<ExitReason, VmmError> {
        let manager = self.start_vcpus()?;
        self.event_loop(manager)
    }

    /// Sets the event loop up and starts the vCPU threads.
    fn start_vcpus(&mut self) -> Result<EventManager<SubscriberBox>, VmmError> {
        let mut manager: EventManager<SubscriberBox> =
            EventManager::new().map_err(VmmError::EventLoop)?;
        let exit = self.shared.exit.clone();
        manager.add_subscriber(Box::new(ExitSubscriber { exit: exit.clone() }));
        manager.add_subscriber(Box::new(ControlSubscriber {
            shared: self.shared.clone(),
        }));
        manager.add_subscriber(Box::new(SerialFlushSubscriber {
            flusher: self.serial_flusher.clone(),
        }));
        for subscriber in self.subscribers.drain(..) {
            manager.add_subscriber(subscriber);
        }
        if let Some(coalesced) = &self.coalesced {
            manager.add_subscriber(Box::new(CoalescedDrainSubscriber {
                serial: coalesced.clone(),
                handler: self.handler.clone(),
            }));
        }
        if self.stdin_input {
            manager.add_subscriber(Box::new(StdinSubscriber {
                serial: self.devices.legacy.serial.clone(),
                fd: libc::STDIN_FILENO,
                active: false,
                escape: self.console_escape.take().map(|escape| {
                    (
                        crate::console::EscapeDetector::new(),
                        escape,
                        self.shared.exit.clone(),
                    )
                }),
            }));
        }

        let vcpus: Vec<Vcpu> = self.vcpus.drain(..).collect();
        if self.start_paused {
            self.shared.control.request_pause();
            self.shared.set_state(VmRunState::Paused);
        } else {
            self.shared.set_state(VmRunState::Running);
        }
        let spawn = if self.start_paused {
            VcpuHandle::spawn_paused
        } else {
            VcpuHandle::spawn
        };
        for vcpu in vcpus {
            let vcpu_exit = exit.clone();
            let on_stop = Box::new(move |id: u8, result: &Result<VcpuStopReason, _>| {
                // Why the VM ends is always in the log: a guest that resets
                // unexpectedly looks like a clean exit (status 0) otherwise.
                let reason = match result {
                    Ok(VcpuStopReason::Stopped) => return,
                    Ok(VcpuStopReason::Reset) => {
                        log::info!("vCPU {id}: the guest asked for a reset");
                        ExitReason::Reset
                    }
                    Ok(VcpuStopReason::TripleFault) => {
                        log::warn!("vCPU {id}: triple fault (KVM_EXIT_SHUTDOWN); the VM resets");
                        ExitReason::Reset
                    }
                    Ok(VcpuStopReason::PowerOff) => {
                        log::info!("vCPU {id}: the guest powered off");
                        ExitReason::PowerOff
                    }
                    Ok(VcpuStopReason::Halted) => {
                        log::info!("vCPU {id}: halted with interrupts off; the VM ends");
                        ExitReason::PowerOff
                    }
                    Err(e) => {
                        // The run returns the error itself: no second line.
                        log::debug!("{e}; the VM stops");
                        ExitReason::Stopped
                    }
                };
                vcpu_exit.request(reason);
            });
            match spawn(vcpu, self.handler.clone(), on_stop) {
                Ok(handle) => self
                    .shared
                    .vcpus
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(handle),
                Err(e) => {
                    exit.request(ExitReason::Stopped);
                    let _ = self.stop_vcpus();
                    self.shared
                        .set_state(VmRunState::Stopped(ExitReason::Stopped));
                    return Err(e.into());
                }
            }
        }
        // After the vCPUs, off the path to the guest's first instruction:
        // a signal that comes meanwhile waits, blocked, for the watcher.
        if self.stop_on_signals {
            if let Err(source) = crate::signals::spawn_signal_watcher(&self.shared) {
                exit.request(ExitReason::Stopped);
                let _ = self.stop_vcpus();
                self.shared
                    .set_state(VmRunState::Stopped(ExitReason::Stopped));
                return Err(VmmError::EventFd {
                    what: "termination-signal watcher".into(),
                    source,
                });
            }
        }
        Ok(manager)
    }

    /// Runs the device event loop until the VM ends, then stops the vCPUs
    /// and flushes the serial output.
    fn event_loop(self, mut manager: EventManager<SubscriberBox>) -> Result<ExitReason, VmmError> {
        let exit = self.shared.exit.clone();
        let mut loop_error = None;
        while exit.reason().is_none() {
            if let Err(e) = manager.run() {
                loop_error = Some(VmmError::EventLoop(e));
                exit.request(ExitReason::Stopped);
                break;
            }
        }
        self.shared.control.finish();
        let vcpu_error = self.stop_vcpus();
        if let Some(coalesced) = &self.coalesced {
            coalesced.drain(&*self.handler);
        }
        let _ = self.serial_flusher.flush_pending();
        // Whatever ended the VM, what the guest wrote reaches the disks.
        let mut flush_error = None;
        for (index, disk) in self.devices.disks.iter().enumerate() {
            let mut disk = disk.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(source) = disk.flush_for_shutdown() {
                flush_error.get_or_insert(VmmError::DiskFlush { index, source });
            }
        }
        let reason = exit.reason().unwrap_or(ExitReason::Stopped);
        log::info!("the VM ended: {reason:?}");
        self.shared.set_state(VmRunState::Stopped(reason));
        if let Some(e) = vcpu_error {
            return Err(e.into());
        }
        if let Some(e) = loop_error {
            return Err(e);
        }
        if let Some(e) = flush_error {
            return Err(e);
        }
        Ok(reason)
    }

    /// Stops and joins every vCPU; returns the first vCPU error.
    fn stop_vcpus(&self) -> Option<kindling_vcpu::VcpuError> {
        let handles: Vec<VcpuHandle> =
            std::mem::take(&mut *self.shared.vcpus.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in &handles {
            handle.stop();
        }
        let mut first_error = None;
        for handle in handles {
            let (_vcpu, result) = handle.join();
            if let (Err(e), None) = (result, &first_error) {
                first_error = Some(e);
            }
        }
        first_error
    }
}

/// What stays reachable of a VM while it runs in the background (for the
/// accessors and for snapshots).
#[derive(Debug, Clone)]
pub(crate) struct VmView {
    pub(crate) devices: VmmDevices,
    pub(crate) memory: GuestRam,
    pub(crate) vm: Arc<Vm>,
    pub(crate) kvm: Arc<Kvm>,
    pub(crate) handler: Arc<BusExitHandler>,
    pub(crate) coalesced: Option<Arc<CoalescedSerial>>,
    pub(crate) serial_flusher: OutputFlusher,
    /// Guest memory is filled lazily by a userfaultfd handler: pages never
    /// touched live only in the handler's file.
    pub(crate) lazy_memory: bool,
}

/// A microVM running in the background (from [`Vmm::start`]).
#[derive(Debug)]
pub struct RunningVmm {
    handle: VmmHandle,
    view: VmView,
    thread: JoinHandle<Result<ExitReason, VmmError>>,
}

impl RunningVmm {
    /// A handle to control the VM from other threads.
    pub fn handle(&self) -> VmmHandle {
        self.handle.clone()
    }

    /// Pauses the VM (see [`VmmHandle::pause`]).
    pub fn pause(&self) -> Result<(), VmmError> {
        self.handle.pause()
    }

    /// Resumes the VM (see [`VmmHandle::resume`]).
    pub fn resume(&self) -> Result<(), VmmError> {
        self.handle.resume()
    }

    /// Asks the VM to stop; [`RunningVmm::wait`] then returns.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// What the VM is doing.
    pub fn state(&self) -> VmRunState {
        self.handle.state()
    }

    /// Typed handles to the VM's devices.
    pub fn devices(&self) -> &VmmDevices {
        &self.view.devices
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.view.memory.memory
    }

    /// The KVM VM (for example to read its dirty pages while paused).
    pub fn vm(&self) -> &Arc<Vm> {
        &self.view.vm
    }

    /// The checked KVM handle.
    pub fn kvm(&self) -> &Arc<Kvm> {
        &self.view.kvm
    }

    /// Snapshots the paused VM (see [`VmmHandle::snapshot`]).
    pub fn snapshot(
        &self,
        request: &crate::snapshot::SnapshotRequest,
    ) -> Result<crate::snapshot::SnapshotInfo, VmmError> {
        self.handle.snapshot(request)
    }

    /// Waits until the VM ends and returns why, or the first vCPU or
    /// event-loop error.
    pub fn wait(self) -> Result<ExitReason, VmmError> {
        self.thread
            .join()
            .map_err(|_| VmmError::EventLoopThread("the event loop thread panicked".into()))?
    }
}
