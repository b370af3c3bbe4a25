//! The controller: applies requests to the pre-boot configuration and,
//! after `InstanceStart`, to the running microVM, with Firecracker's state
//! rules.
//!
//! | request | before InstanceStart | after |
//! | --- | --- | --- |
//! | `GET /`, `/version`, `/machine-config`, `/vm/config` | yes | yes |
//! | `PUT /boot-source`, `/machine-config`, `/drives/{id}`, `/network-interfaces/{id}`, `/vsock`, `/entropy`, `/serial`, `/logger`, `/metrics`; `PATCH /machine-config` | yes | no |
//! | `PATCH /drives/{id}` (swap the image, change the rate limiter) | no | yes |
//! | `PATCH /network-interfaces/{id}` (change the rate limiters) | no | yes |
//! | `PATCH /vm` (`Paused`, `Resumed`) | no | yes |
//! | `InstanceStart` | once, with a boot source | no |
//! | `SendCtrlAltDel` | no | yes |
//! | `FlushMetrics` | with `PUT /metrics` first | same |
//! | `PUT /snapshot/create` | no | while paused |
//! | `PUT /snapshot/load` | with no boot-specific resource configured | no |
//!
//! A loaded snapshot counts as started: after it, the pre-boot requests
//! and `InstanceStart` are refused and the others work on the restored
//! VM. The boot-specific resources are the boot source, the machine
//! configuration, drives, network interfaces, vsock and entropy devices
//! (set by a request, a config file or the example's flags); `PUT
//! /serial`, `/logger` and `/metrics` may come before a load (the serial
//! file is where the restored VM's console goes).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kindling_virtio::block::{BlockMetrics, ReplaceBackendError};
use kindling_vmm::snapshot::{load_state, RestoreConfig, SnapshotKind, SnapshotRequest};
use kindling_vmm::{
    RunningVmm, SerialConfig, StartTime, VirtioKind, VmRunState, Vmm, VmmDevices, VmmError,
    VmmHandle,
};

use crate::launch::{launch, LiveDrive};

use crate::logger::LoggerError;
use crate::metrics::{Metrics, MetricsError};
use crate::models::{
    ActionType, InstanceInfo, MachineConfig, PartialDrive, PartialNetworkInterface, SnapshotCreate,
    SnapshotLoad, VersionInfo, VmStateRequest,
};
use crate::request::ApiRequest;
use crate::resources::{ResourceError, VmResources};

/// Kindling's version, as `GET /` and `GET /version` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a successful request answers.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiResponse {
    /// 204, no body.
    NoContent,
    /// 200 with a JSON body.
    Json(serde_json::Value),
}

/// Why the controller refused a request. Every variant is a 400 with the
/// message as `fault_message`.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A pre-boot request after `InstanceStart`.
    #[error("{0} is not allowed after InstanceStart: the microVM is already running")]
    AfterStart(&'static str),
    /// A pre-boot request (or `InstanceStart`) after a snapshot was
    /// loaded.
    #[error("{0} is not allowed after a snapshot was loaded: the microVM is already running")]
    AfterLoad(&'static str),
    /// `PUT /snapshot/load` after boot-specific resources were configured.
    #[error("PUT /snapshot/load is only allowed before any boot-specific resource is configured (configured: {0}); start a new microvm process to load a snapshot")]
    LoadAfterConfig(String),
    /// `PUT /snapshot/create` while the VM is not paused.
    #[error("PUT /snapshot/create needs a paused microVM, and it is {0}: PATCH /vm with {{\"state\": \"Paused\"}} first")]
    SnapshotNotPaused(&'static str),
    /// A diff snapshot of a VM without dirty page tracking.
    #[error("a Diff snapshot needs dirty page tracking, which this microVM does not have: set track_dirty_pages: true in PUT /machine-config before InstanceStart (or load a snapshot taken with it), or take a Full snapshot")]
    DiffWithoutDirtyTracking,
    /// `track_dirty_pages` at load differs from the snapshot's.
    #[error("track_dirty_pages {asked} was asked for, but the snapshot was taken with dirty page tracking {taken} and a loaded microVM keeps the snapshot's setting: leave the field out or set it to {snapshot}", taken = if *snapshot { "on" } else { "off" })]
    DirtyTrackingMismatch {
        /// What the request asked for.
        asked: bool,
        /// What the snapshot has.
        snapshot: bool,
    },
    /// The server is stopping: no request is applied any more.
    #[error("the API server is stopping (it received {0}): no request is applied")]
    Stopping(&'static str),
    /// A snapshot file's directory does not exist.
    #[error("cannot create the snapshot: the directory of {field} {path} does not exist")]
    SnapshotDirectory {
        /// `snapshot_path` or `mem_file_path`.
        field: &'static str,
        /// The path.
        path: std::path::PathBuf,
    },
    /// A drive's image was replaced: a snapshot would name the old one.
    #[error("cannot snapshot the microVM: drive {id} now uses {image} (PATCH /drives), and a snapshot can only name the image the microVM started with, {started} (not supported yet; PATCH it back first)", image = image.display(), started = started.display())]
    SwappedDrive {
        /// The drive.
        id: String,
        /// Its image now.
        image: std::path::PathBuf,
        /// The image it started with.
        started: std::path::PathBuf,
    },
    /// Writing the snapshot failed.
    #[error("cannot create the snapshot: {0}")]
    CreateSnapshot(#[source] VmmError),
    /// Reading, restoring or starting the snapshot failed.
    #[error("cannot load the snapshot: {0}")]
    LoadSnapshot(#[source] VmmError),
    /// A request that needs a running microVM.
    #[error("{0} is only allowed after InstanceStart: the microVM is not started")]
    BeforeStart(&'static str),
    /// `InstanceStart` without `PUT /boot-source`.
    #[error("cannot start the microVM without a boot source: PUT /boot-source first")]
    NoBootSource,
    /// A second `InstanceStart`.
    #[error("the microVM is already started (InstanceStart can only be done once)")]
    AlreadyStarted,
    /// A resource was refused.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// Building or starting the VM failed.
    #[error("cannot start the microVM: {0}")]
    Start(#[source] VmmError),
    /// Pausing or resuming failed.
    #[error("cannot {action} the microVM: {source}")]
    Lifecycle {
        /// What was asked.
        action: &'static str,
        /// What the VMM said.
        source: VmmError,
    },
    /// `PATCH /network-interfaces/{id}` for an unknown interface.
    #[error("no network interface with iface_id {0:?}")]
    NoSuchInterface(String),
    /// `PATCH /drives/{id}` for an unknown drive.
    #[error("no drive with id {0:?}")]
    NoSuchDrive(String),
    /// The new image could not take the old one's place.
    #[error("drive {id}: cannot replace the disk image: {source}")]
    ReplaceBackend {
        /// The drive.
        id: String,
        /// What the block device said.
        source: ReplaceBackendError,
    },
    /// Ctrl-Alt-Del could not be delivered.
    #[error("cannot send Ctrl-Alt-Del: {0}")]
    CtrlAltDel(#[source] std::io::Error),
    /// The metrics system refused.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The logger refused.
    #[error(transparent)]
    Logger(#[from] LoggerError),
}

/// The running VM's handles.
#[derive(Debug)]
struct Started {
    handle: VmmHandle,
    devices: VmmDevices,
    drives: Vec<LiveDrive>,
    /// Loaded from a snapshot (not booted by `InstanceStart`).
    loaded: bool,
    /// KVM tracks the dirty pages (diff snapshots can be taken).
    dirty_tracking: bool,
}

/// What receives the running VM at `InstanceStart` (the runner waits on
/// it for the VM's end).
pub type OnStart = Box<dyn FnMut(RunningVmm) + Send>;

/// The state machine behind the API.
pub struct Controller {
    id: String,
    resources: VmResources,
    started: Option<Started>,
    metrics: Arc<Metrics>,
    default_serial: Option<SerialConfig>,
    start_time: StartTime,
    on_start: OnStart,
    stop_on_signals: bool,
    /// Boot-specific resources configured so far (they forbid a load).
    configured: Vec<&'static str>,
    /// Set when the server stops before a VM ran: what stops it.
    stopping: Option<&'static str>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.id)
            .field("resources", &self.resources)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller for instance `id` with `resources` pre-configured.
    /// `default_serial` is the console when no `PUT /serial` names a file;
    /// `on_start` receives the VM when it starts.
    pub fn new(
        id: &str,
        resources: VmResources,
        metrics: Arc<Metrics>,
        default_serial: SerialConfig,
        start_time: StartTime,
        on_start: OnStart,
    ) -> Self {
        let configured = preset_resources(&resources);
        Self {
            id: id.to_string(),
            configured,
            stop_on_signals: false,
            stopping: None,
            resources,
            started: None,
            metrics,
            default_serial: Some(default_serial),
            start_time,
            on_start,
        }
    }

    /// Makes the VM (booted or loaded) stop in order on SIGTERM, SIGINT
    /// and SIGHUP ([`VmConfig::stop_on_signals`](kindling_vmm::VmConfig::stop_on_signals)):
    /// the process must have blocked them in every thread
    /// ([`kindling_vmm::signals::block_termination_signals`]).
    pub fn set_stop_on_signals(&mut self, on: bool) {
        self.stop_on_signals = on;
    }

    /// The pre-boot configuration (after a load, the machine configuration
    /// is the snapshot's).
    pub fn resources(&self) -> &VmResources {
        &self.resources
    }

    /// Whether a VM runs: `InstanceStart` or `PUT /snapshot/load` has
    /// succeeded.
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// The VM's state as `GET /` names it: Firecracker's `"Not started"`,
    /// `"Running"` and `"Paused"`, and `"Stopped"` for a VM that has ended
    /// (the guest powered off, a signal): a name Firecracker's document
    /// does not have, answered only in the moment between the VM's end and
    /// the process's, which Firecracker never shows.
    pub fn state_name(&self) -> &'static str {
        match &self.started {
            None => "Not started",
            Some(s) => run_state_name(s.handle.state()),
        }
    }

    /// Refuses every request from now on, saying `why` (the server is
    /// stopping: a VM must not start on its way out).
    pub fn stop_serving(&mut self, why: &'static str) {
        self.stopping = Some(why);
    }

    /// Applies one request, counting it in the metrics.
    pub fn handle(&mut self, request: ApiRequest) -> Result<ApiResponse, ControllerError> {
        let (group, name) = request.metric_name();
        let result = match self.stopping {
            Some(why) => Err(ControllerError::Stopping(why)),
            None => self.apply(request),
        };
        self.metrics.count_request(group, name, result.is_err());
        result
    }

    fn preboot(&self, what: &'static str) -> Result<(), ControllerError> {
        match &self.started {
            None => Ok(()),
            Some(s) if s.loaded => Err(ControllerError::AfterLoad(what)),
            Some(_) => Err(ControllerError::AfterStart(what)),
        }
    }

    /// Notes that a boot-specific resource was configured (after the
    /// request succeeded): a load is refused from then on.
    fn configure(&mut self, what: &'static str) {
        if !self.configured.contains(&what) {
            self.configured.push(what);
        }
    }

    fn running(&self, what: &'static str) -> Result<&Started, ControllerError> {
        self.started
            .as_ref()
            .ok_or(ControllerError::BeforeStart(what))
    }

    fn apply(&mut self, request: ApiRequest) -> Result<ApiResponse, ControllerError> {
        use ApiResponse::{Json, NoContent};
        Ok(match request {
            ApiRequest::GetInstanceInfo => Json(serde_json::json!(InstanceInfo {
                app_name: "Kindling".into(),
                id: self.id.clone(),
                state: self.state_name().into(),
                vmm_version: VERSION.into(),
            })),
            ApiRequest::GetVersion => Json(serde_json::json!(VersionInfo {
                firecracker_version: VERSION.into(),
            })),
            ApiRequest::GetMachineConfig => Json(serde_json::json!(self.resources.machine)),
            ApiRequest::GetVmConfig => Json(self.resources.full_config()),
            ApiRequest::PutBootSource(boot) => {
                self.preboot("PUT /boot-source")?;
                self.resources.set_boot_source(boot)?;
                self.configure("boot-source");
                NoContent
            }
            ApiRequest::PutMachineConfig(machine) => {
                self.preboot("PUT /machine-config")?;
                self.resources.set_machine_config(machine)?;
                self.configure("machine-config");
                NoContent
            }
            ApiRequest::PatchMachineConfig(update) => {
                self.preboot("PATCH /machine-config")?;
                let machine = update.apply_to(&self.resources.machine);
                self.resources.set_machine_config(machine)?;
                self.configure("machine-config");
                NoContent
            }
            ApiRequest::PutDrive(drive) => {
                self.preboot("PUT /drives")?;
                self.resources.put_drive(drive)?;
                self.configure("drives");
                NoContent
            }
            ApiRequest::PatchDrive(patch) => {
                self.running("PATCH /drives")?;
                self.patch_drive(patch)?;
                NoContent
            }
            ApiRequest::PutNetworkInterface(iface) => {
                self.preboot("PUT /network-interfaces")?;
                self.resources.put_network_interface(iface)?;
                self.configure("network-interfaces");
                NoContent
            }
            ApiRequest::PatchNetworkInterface(patch) => {
                self.running("PATCH /network-interfaces")?;
                self.patch_network_interface(patch)?;
                NoContent
            }
            ApiRequest::PutVsock(vsock) => {
                self.preboot("PUT /vsock")?;
                self.resources.set_vsock(vsock)?;
                self.configure("vsock");
                NoContent
            }
            ApiRequest::PutEntropy(entropy) => {
                self.preboot("PUT /entropy")?;
                self.resources.set_entropy(entropy)?;
                self.configure("entropy");
                NoContent
            }
            ApiRequest::PutSerial(serial) => {
                self.preboot("PUT /serial")?;
                self.resources.set_serial(serial)?;
                NoContent
            }
            ApiRequest::PutLogger(logger) => {
                self.preboot("PUT /logger")?;
                crate::logger::configure(&logger)?;
                self.resources.logger = Some(logger);
                NoContent
            }
            ApiRequest::PutMetrics(metrics) => {
                self.preboot("PUT /metrics")?;
                self.metrics.configure(&metrics)?;
                self.resources.metrics = Some(metrics);
                NoContent
            }
            ApiRequest::Action(ActionType::InstanceStart) => {
                match &self.started {
                    Some(s) if s.loaded => return Err(ControllerError::AfterLoad("InstanceStart")),
                    Some(_) => return Err(ControllerError::AlreadyStarted),
                    None => {}
                }
                self.start()?;
                NoContent
            }
            ApiRequest::Action(ActionType::SendCtrlAltDel) => {
                let started = self.running("SendCtrlAltDel")?;
                started
                    .devices
                    .legacy
                    .i8042
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .send_ctrl_alt_del()
                    .map_err(ControllerError::CtrlAltDel)?;
                NoContent
            }
            ApiRequest::Action(ActionType::FlushMetrics) => {
                self.metrics.flush()?;
                NoContent
            }
            ApiRequest::PatchVm(state) => {
                let started = self.running("PATCH /vm")?;
                let (action, result) = match state {
                    VmStateRequest::Paused => ("pause", started.handle.pause()),
                    VmStateRequest::Resumed => ("resume", started.handle.resume()),
                };
                result.map_err(|source| ControllerError::Lifecycle { action, source })?;
                log::info!("microVM {action}d");
                NoContent
            }
            ApiRequest::CreateSnapshot(create) => {
                self.create_snapshot(create)?;
                NoContent
            }
            ApiRequest::LoadSnapshot(load) => {
                self.preboot("PUT /snapshot/load")?;
                if !self.configured.is_empty() {
                    return Err(ControllerError::LoadAfterConfig(self.configured.join(", ")));
                }
                self.load_snapshot(load)?;
                NoContent
            }
        })
    }

    /// `PUT /snapshot/create`: a snapshot of the paused VM, which stays
    /// paused.
    fn create_snapshot(&self, create: SnapshotCreate) -> Result<(), ControllerError> {
        let started = self.running("PUT /snapshot/create")?;
        let state = started.handle.state();
        if state != VmRunState::Paused {
            return Err(ControllerError::SnapshotNotPaused(run_state_name(state)));
        }
        if create.kind == SnapshotKind::Diff && !started.dirty_tracking {
            return Err(ControllerError::DiffWithoutDirtyTracking);
        }
        if let Some(drive) = started.drives.iter().find(|d| d.image != d.snapshot_image) {
            return Err(ControllerError::SwappedDrive {
                id: drive.id.clone(),
                image: drive.image.clone(),
                started: drive.snapshot_image.clone(),
            });
        }
        // Checked before anything is written: a snapshot that fails half
        // way leaves the next diff without a base.
        for (field, path) in [
            ("snapshot_path", &create.state_path),
            ("mem_file_path", &create.mem_path),
        ] {
            let dir = match path.parent() {
                Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
                Some(dir) => dir,
                None => Path::new("/"),
            };
            if !dir.is_dir() {
                return Err(ControllerError::SnapshotDirectory {
                    field,
                    path: path.clone(),
                });
            }
        }
        let began = Instant::now();
        let info = started
            .handle
            .snapshot(&SnapshotRequest {
                kind: create.kind,
                state_path: create.state_path.clone(),
                mem_path: create.mem_path.clone(),
            })
            .map_err(ControllerError::CreateSnapshot)?;
        let micros = began.elapsed().as_micros() as u64;
        let latency = match create.kind {
            SnapshotKind::Full => "full_create_snapshot",
            SnapshotKind::Diff => "diff_create_snapshot",
        };
        self.metrics.set_value("latencies_us", latency, micros);
        log::info!(
            "{:?} snapshot written in {micros} us: state {} ({} bytes), memory {} ({} pages)",
            create.kind,
            create.state_path.display(),
            info.state_bytes,
            create.mem_path.display(),
            info.pages_written
        );
        Ok(())
    }

    /// `PUT /snapshot/load`: restores the VM (its console where the API
    /// mode's goes), starts it running or paused, and hands it to the
    /// runner as `InstanceStart` does.
    fn load_snapshot(&mut self, load: SnapshotLoad) -> Result<(), ControllerError> {
        let began = Instant::now();
        // The state is read twice (here and by the restore): it is small,
        // and its settings are checked before anything is built.
        let state =
            load_state(&load.state_path).map_err(|e| ControllerError::LoadSnapshot(e.into()))?;
        let tracked = state.memory.track_dirty_pages;
        if let Some(asked) = load.track_dirty_pages {
            if asked != tracked {
                return Err(ControllerError::DirtyTrackingMismatch {
                    asked,
                    snapshot: tracked,
                });
            }
        }
        let serial = match self
            .resources
            .serial
            .as_ref()
            .and_then(|s| s.serial_out_path.as_ref())
        {
            Some(path) => SerialConfig::File(path.into()),
            None => self.next_serial(),
        };
        let config = RestoreConfig {
            serial,
            resume: load.resume,
            start_time: self.start_time,
            stop_on_signals: self.stop_on_signals,
            net_overrides: load.net_overrides.clone(),
            vsock_override: load.vsock_override.clone(),
            disk_overrides: load.disk_overrides.clone(),
            debug_exit: self.resources.debug_exit,
            ..RestoreConfig::new(load.state_path.clone(), load.memory.clone())
        };
        let vmm = Vmm::restore(config).map_err(ControllerError::LoadSnapshot)?;
        let exits = vmm.exit_handler().clone();
        let running = vmm.start().map_err(ControllerError::LoadSnapshot)?;
        // The restored disks are not metered: the metrics count the vCPU
        // exits only.
        self.metrics.set_vm_sources(exits, Vec::new());
        let drives = restored_drives(running.devices());
        self.resources.machine = MachineConfig {
            vcpu_count: u8::try_from(state.vcpus.len()).unwrap_or(u8::MAX),
            mem_size_mib: state.memory.size_mib,
            track_dirty_pages: tracked,
            ..MachineConfig::default()
        };
        let micros = began.elapsed().as_micros() as u64;
        self.metrics
            .set_value("latencies_us", "load_snapshot", micros);
        self.started = Some(Started {
            handle: running.handle(),
            devices: running.devices().clone(),
            drives,
            loaded: true,
            dirty_tracking: running.vm().dirty_log_enabled(),
        });
        log::info!(
            "snapshot {} loaded in {micros} us ({})",
            load.state_path.display(),
            if load.resume { "running" } else { "paused" }
        );
        (self.on_start)(running);
        Ok(())
    }

    fn patch_network_interface(
        &mut self,
        patch: PartialNetworkInterface,
    ) -> Result<(), ControllerError> {
        let started = self.running("PATCH /network-interfaces")?;
        let (_, net) = started
            .devices
            .net
            .iter()
            .find(|(id, _)| *id == patch.iface_id)
            .ok_or_else(|| ControllerError::NoSuchInterface(patch.iface_id.clone()))?;
        let rx = patch.rx_rate_limiter.as_ref().map(|r| r.to_config());
        let tx = patch.tx_rate_limiter.as_ref().map(|r| r.to_config());
        net.lock()
            .unwrap_or_else(|p| p.into_inner())
            .update_rate_limiters(rx.as_ref(), tx.as_ref());
        log::info!(
            "network interface {}: rate limiters updated",
            patch.iface_id
        );
        if let Some(iface) = self
            .resources
            .network_interfaces
            .iter_mut()
            .find(|n| n.iface_id == patch.iface_id)
        {
            if let Some(rx) = patch.rx_rate_limiter {
                iface.rx_rate_limiter = Some(rx);
            }
            if let Some(tx) = patch.tx_rate_limiter {
                iface.tx_rate_limiter = Some(tx);
            }
        }
        Ok(())
    }

    fn patch_drive(&mut self, patch: PartialDrive) -> Result<(), ControllerError> {
        let Some(started) = self.started.as_mut() else {
            return Err(ControllerError::BeforeStart("PATCH /drives"));
        };
        let live = started
            .drives
            .iter_mut()
            .find(|d| d.id == patch.drive_id)
            .ok_or_else(|| ControllerError::NoSuchDrive(patch.drive_id.clone()))?;
        if let Some(limiter) = &patch.rate_limiter {
            live.block
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .update_rate_limiter(&limiter.to_config());
            log::info!("drive {}: rate limiter updated", live.id);
            if let Some(drive) = self
                .resources
                .drives
                .iter_mut()
                .find(|d| d.drive_id == patch.drive_id)
            {
                drive.rate_limiter = Some(limiter.clone());
            }
        }
        let Some(path) = patch.path_on_host else {
            return Ok(());
        };
        if path.is_empty() {
            return Err(ResourceError::EmptyPath("path_on_host").into());
        }
        let swap = live.replace_image(Path::new(&path))?;
        live.image = path.clone().into();
        log::info!(
            "drive {}: now backed by {path} ({} sectors, was {})",
            live.id,
            swap.new_capacity,
            swap.old_capacity
        );
        if let Some(drive) = self
            .resources
            .drives
            .iter_mut()
            .find(|d| d.drive_id == patch.drive_id)
        {
            drive.path_on_host = Some(path);
        }
        Ok(())
    }

    /// The console for a start attempt: a copy of the default, so a failed
    /// attempt leaves it for the next (a caller's writer can only be used
    /// once).
    fn next_serial(&mut self) -> SerialConfig {
        match &self.default_serial {
            Some(SerialConfig::Stdout) => SerialConfig::Stdout,
            Some(SerialConfig::File(path)) => SerialConfig::File(path.clone()),
            Some(SerialConfig::Off) | None => SerialConfig::Off,
            Some(SerialConfig::Writer(_)) => {
                self.default_serial.take().unwrap_or(SerialConfig::Off)
            }
        }
    }

    /// Builds and starts the VM from the resources.
    fn start(&mut self) -> Result<(), ControllerError> {
        let began = Instant::now();
        if self.resources.boot_source.is_none() {
            return Err(ControllerError::NoBootSource);
        }
        let serial = self.next_serial();
        let Some(mut config) = self.resources.vm_config(serial, self.start_time) else {
            return Err(ControllerError::NoBootSource);
        };
        config.stop_on_signals = self.stop_on_signals;
        let launched = launch(&self.resources, config).map_err(ControllerError::Start)?;
        self.metrics.set_vm_sources(
            launched.exits,
            launched
                .drives
                .iter()
                .map(|d| (d.id.clone(), d.metrics.clone()))
                .collect(),
        );
        self.metrics.set_value(
            "latencies_us",
            "instance_start",
            began.elapsed().as_micros() as u64,
        );
        self.started = Some(Started {
            handle: launched.running.handle(),
            devices: launched.running.devices().clone(),
            drives: launched.drives,
            loaded: false,
            dirty_tracking: launched.running.vm().dirty_log_enabled(),
        });
        log::info!("microVM started in {} us", began.elapsed().as_micros());
        (self.on_start)(launched.running);
        Ok(())
    }
}

/// [`Controller::state_name`] for a VM that was started.
fn run_state_name(state: VmRunState) -> &'static str {
    match state {
        VmRunState::NotStarted => "Not started",
        VmRunState::Running => "Running",
        VmRunState::Paused => "Paused",
        VmRunState::Stopped(_) => "Stopped",
    }
}

/// The boot-specific resources a pre-configuration (the example's flags)
/// holds: a machine configuration other than the default counts.
fn preset_resources(resources: &VmResources) -> Vec<&'static str> {
    [
        ("boot-source", resources.boot_source.is_some()),
        (
            "machine-config",
            resources.machine != MachineConfig::default(),
        ),
        ("drives", !resources.drives.is_empty()),
        (
            "network-interfaces",
            !resources.network_interfaces.is_empty(),
        ),
        ("vsock", resources.vsock.is_some()),
        ("entropy", resources.entropy.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// The drives of a loaded VM that `PATCH /drives` can change: the disks
/// this API attached (named `drive <id>` in the snapshot). Their I/O is
/// not metered.
fn restored_drives(devices: &VmmDevices) -> Vec<LiveDrive> {
    devices
        .virtio
        .iter()
        .filter_map(|slot| match &slot.kind {
            VirtioKind::Block {
                device,
                read_only,
                path,
            } => Some(LiveDrive {
                id: slot.name.strip_prefix("drive ")?.to_string(),
                read_only: *read_only,
                block: device.clone(),
                metrics: BlockMetrics::new(),
                snapshot_image: path.clone(),
                image: path.clone(),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{BootSource, MachineConfigUpdate};
    use crate::request::{parse_request, Method};

    fn controller() -> Controller {
        Controller::new(
            "t",
            VmResources::default(),
            Metrics::new("t", crate::metrics::DEFAULT_FLUSH_INTERVAL),
            SerialConfig::Off,
            StartTime::now(),
            Box::new(|_| {}),
        )
    }

    fn run(
        c: &mut Controller,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<ApiResponse, String> {
        let request = parse_request(method, path, body.as_bytes()).map_err(|e| e.to_string())?;
        c.handle(request).map_err(|e| e.to_string())
    }

    #[test]
    fn preboot_rules() {
        let mut c = controller();
        let info = run(&mut c, Method::Get, "/", "").unwrap();
        let ApiResponse::Json(info) = info else {
            panic!()
        };
        assert_eq!(info["state"], "Not started");
        assert_eq!(info["app_name"], "Kindling");
        assert_eq!(info["vmm_version"], VERSION);
        let e = run(
            &mut c,
            Method::Put,
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
        )
        .unwrap_err();
        assert!(e.contains("without a boot source"), "{e}");
        // The console is kept for the next attempt.
        assert!(c.default_serial.is_some());
        let e = run(
            &mut c,
            Method::Put,
            "/actions",
            r#"{"action_type": "SendCtrlAltDel"}"#,
        )
        .unwrap_err();
        assert!(e.contains("only allowed after InstanceStart"), "{e}");
        let e = run(&mut c, Method::Patch, "/vm", r#"{"state": "Paused"}"#).unwrap_err();
        assert!(e.contains("only allowed after InstanceStart"), "{e}");
        let e = run(&mut c, Method::Patch, "/drives/a", r#"{"drive_id": "a"}"#).unwrap_err();
        assert!(e.contains("only allowed after InstanceStart"), "{e}");
        let e = run(
            &mut c,
            Method::Patch,
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "rx_rate_limiter": {}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "PATCH /network-interfaces is only allowed after InstanceStart: the microVM is not started"
        );
        let e = run(
            &mut c,
            Method::Put,
            "/network-interfaces/eth0",
            r#"{"iface_id": "eth0", "host_dev_name": "kdlnotap9"}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("network interface eth0: there is no network interface \"kdlnotap9\""),
            "{e}"
        );
        let e = run(
            &mut c,
            Method::Put,
            "/vsock",
            r#"{"guest_cid": 2, "uds_path": "/tmp/kindling-v.sock"}"#,
        )
        .unwrap_err();
        assert!(e.contains("guest_cid 2 is out of range"), "{e}");
        let e = run(
            &mut c,
            Method::Put,
            "/actions",
            r#"{"action_type": "FlushMetrics"}"#,
        )
        .unwrap_err();
        assert!(e.contains("PUT /metrics first"), "{e}");
        run(
            &mut c,
            Method::Patch,
            "/machine-config",
            r#"{"vcpu_count": 2}"#,
        )
        .unwrap();
        let e = run(
            &mut c,
            Method::Patch,
            "/machine-config",
            r#"{"vcpu_count": 0}"#,
        )
        .unwrap_err();
        assert!(e.contains("vcpu_count 0"), "{e}");
        let ApiResponse::Json(m) = run(&mut c, Method::Get, "/machine-config", "").unwrap() else {
            panic!()
        };
        assert_eq!(m["vcpu_count"], 2);
        assert_eq!(m["mem_size_mib"], 128);
        let e = run(
            &mut c,
            Method::Put,
            "/boot-source",
            r#"{"kernel_image_path": "/nonexistent"}"#,
        )
        .unwrap_err();
        assert!(e.contains("cannot open kernel image"), "{e}");
        run(&mut c, Method::Put, "/entropy", "{}").unwrap();
        run(
            &mut c,
            Method::Put,
            "/serial",
            r#"{"serial_out_path": "/tmp/x"}"#,
        )
        .unwrap();
        let ApiResponse::Json(full) = run(&mut c, Method::Get, "/vm/config", "").unwrap() else {
            panic!()
        };
        assert_eq!(full["machine-config"]["vcpu_count"], 2);
        assert!(full["entropy"].is_object());
        assert!(!c.is_started());
        assert_eq!(c.resources().machine.vcpu_count, 2);
        // Failed requests count as fails.
        let line = c.metrics.next_line();
        assert_eq!(line["put_api_requests"]["actions_fails"], 3);
        assert_eq!(line["put_api_requests"]["network_fails"], 1);
        assert_eq!(line["patch_api_requests"]["network_fails"], 1);
        assert_eq!(line["patch_api_requests"]["machine_cfg_count"], 2);
        let _ = MachineConfigUpdate::default();
    }

    #[test]
    fn snapshot_state_rules() {
        let mut c = controller();
        let create = r#"{"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"}"#;
        let e = run(&mut c, Method::Put, "/snapshot/create", create).unwrap_err();
        assert_eq!(
            e,
            "PUT /snapshot/create is only allowed after InstanceStart: the microVM is not started"
        );
        let missing = "/nonexistent/kindling/vm.state";
        let load =
            format!(r#"{{"snapshot_path": "{missing}", "mem_file_path": "/nonexistent/m"}}"#);
        // Serial, logger and metrics may come before a load; failed
        // requests configure nothing.
        run(
            &mut c,
            Method::Put,
            "/serial",
            r#"{"serial_out_path": "/tmp/x"}"#,
        )
        .unwrap();
        run(
            &mut c,
            Method::Put,
            "/boot-source",
            r#"{"kernel_image_path": "/nonexistent"}"#,
        )
        .unwrap_err();
        run(
            &mut c,
            Method::Put,
            "/entropy",
            r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#,
        )
        .unwrap_err();
        let e = run(&mut c, Method::Put, "/snapshot/load", &load).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "cannot load the snapshot: cannot open the state file {missing}: "
            )),
            "{e}"
        );
        // A state file that is not one.
        let dir = std::env::temp_dir().join(format!("kindling-api-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.state");
        std::fs::write(&junk, b"not a snapshot").unwrap();
        let body = serde_json::json!({"snapshot_path": junk, "mem_file_path": junk}).to_string();
        let e = run(&mut c, Method::Put, "/snapshot/load", &body).unwrap_err();
        assert!(
            e.starts_with("cannot load the snapshot: state file "),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!c.is_started());
        run(&mut c, Method::Put, "/entropy", "{}").unwrap();
        run(
            &mut c,
            Method::Patch,
            "/machine-config",
            r#"{"vcpu_count": 2}"#,
        )
        .unwrap();
        run(
            &mut c,
            Method::Patch,
            "/machine-config",
            r#"{"vcpu_count": 3}"#,
        )
        .unwrap();
        let e = run(&mut c, Method::Put, "/snapshot/load", &load).unwrap_err();
        assert_eq!(
            e,
            "PUT /snapshot/load is only allowed before any boot-specific resource is configured (configured: entropy, machine-config); start a new microvm process to load a snapshot"
        );
        let line = c.metrics.next_line();
        assert_eq!(line["put_api_requests"]["snapshot_load_fails"], 3);
        assert_eq!(line["put_api_requests"]["snapshot_create_fails"], 1);
    }

    #[test]
    fn pre_configured_resources_forbid_a_load() {
        let mut resources = VmResources::default();
        assert!(preset_resources(&resources).is_empty());
        resources.machine.mem_size_mib = 64;
        resources.entropy = Some(Default::default());
        assert_eq!(preset_resources(&resources), ["machine-config", "entropy"]);
        let mut c = Controller::new(
            "t",
            resources,
            Metrics::new("t", crate::metrics::DEFAULT_FLUSH_INTERVAL),
            SerialConfig::Off,
            StartTime::now(),
            Box::new(|_| {}),
        );
        let e = run(
            &mut c,
            Method::Put,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_file_path": "/m"}"#,
        )
        .unwrap_err();
        assert!(e.contains("(configured: machine-config, entropy);"), "{e}");
    }

    #[test]
    fn a_stopping_server_applies_nothing() {
        let mut c = controller();
        c.stop_serving("SIGTERM");
        for (method, path, body) in [
            (Method::Get, "/", ""),
            (Method::Put, "/entropy", "{}"),
            (
                Method::Put,
                "/actions",
                r#"{"action_type": "InstanceStart"}"#,
            ),
        ] {
            let e = run(&mut c, method, path, body).unwrap_err();
            assert_eq!(
                e,
                "the API server is stopping (it received SIGTERM): no request is applied"
            );
        }
        assert!(c.resources().entropy.is_none());
        assert_eq!(
            run_state_name(VmRunState::Stopped(kindling_vmm::ExitReason::PowerOff)),
            "Stopped"
        );
        assert_eq!(run_state_name(VmRunState::Paused), "Paused");
        assert_eq!(run_state_name(VmRunState::Running), "Running");
    }

    #[test]
    fn a_bad_kernel_fails_instance_start_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("kindling-api-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("k");
        std::fs::write(&kernel, [0x42u8; 4096]).unwrap();
        let mut c = controller();
        c.handle(ApiRequest::PutBootSource(BootSource {
            kernel_image_path: kernel.to_str().unwrap().into(),
            initrd_path: None,
            boot_args: None,
        }))
        .unwrap();
        let e = c
            .handle(ApiRequest::Action(ActionType::InstanceStart))
            .unwrap_err();
        assert!(e.to_string().starts_with("cannot start the microVM"), "{e}");
        assert!(!c.is_started());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
