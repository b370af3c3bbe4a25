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

use kindling_vmm::SeccompPolicy;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kindling_virtio::block::ReplaceBackendError;
use kindling_vmm::{
    RunningVmm, SerialConfig, StartTime, VmRunState, VmmDevices, VmmError, VmmHandle,
};

use crate::launch::{launch, LiveDrive};

use crate::logger::LoggerError;
use crate::metrics::{Metrics, MetricsError};
use crate::models::{
    ActionType, InstanceInfo, PartialDrive, PartialNetworkInterface, VersionInfo, VmStateRequest,
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
    seccomp: SeccompPolicy,
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
        Self {
            id: id.to_string(),
            resources,
            started: None,
            metrics,
            default_serial: Some(default_serial),
            start_time,
            on_start,
            seccomp: SeccompPolicy::Off,
        }
    }

    /// The seccomp filters of the VM `InstanceStart` builds
    /// ([`VmConfig::seccomp`](kindling_vmm::VmConfig::seccomp)); off by
    /// default.
    pub fn set_seccomp(&mut self, policy: SeccompPolicy) {
        self.seccomp = policy;
    }

    /// The pre-boot configuration.
    pub fn resources(&self) -> &VmResources {
        &self.resources
    }

    /// Whether `InstanceStart` has succeeded.
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// The VM's state as `GET /` names it.
    pub fn state_name(&self) -> &'static str {
        match &self.started {
            None => "Not started",
            Some(s) => match s.handle.state() {
                VmRunState::Paused => "Paused",
                VmRunState::NotStarted => "Not started",
                // A VM that has ended is about to take the process with it;
                // Firecracker's document has no name for that state.
                VmRunState::Running | VmRunState::Stopped(_) => "Running",
            },
        }
    }

    /// Applies one request, counting it in the metrics.
    pub fn handle(&mut self, request: ApiRequest) -> Result<ApiResponse, ControllerError> {
        let (group, name) = request.metric_name();
        let result = self.apply(request);
        self.metrics.count_request(group, name, result.is_err());
        result
    }

    fn preboot(&self, what: &'static str) -> Result<(), ControllerError> {
        if self.started.is_some() {
            return Err(ControllerError::AfterStart(what));
        }
        Ok(())
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
                NoContent
            }
            ApiRequest::PutMachineConfig(machine) => {
                self.preboot("PUT /machine-config")?;
                self.resources.set_machine_config(machine)?;
                NoContent
            }
            ApiRequest::PatchMachineConfig(update) => {
                self.preboot("PATCH /machine-config")?;
                let machine = update.apply_to(&self.resources.machine);
                self.resources.set_machine_config(machine)?;
                NoContent
            }
            ApiRequest::PutDrive(drive) => {
                self.preboot("PUT /drives")?;
                self.resources.put_drive(drive)?;
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
                NoContent
            }
            ApiRequest::PutEntropy(entropy) => {
                self.preboot("PUT /entropy")?;
                self.resources.set_entropy(entropy)?;
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
                if self.started.is_some() {
                    return Err(ControllerError::AlreadyStarted);
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
        })
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
        let Some(started) = self.started.as_ref() else {
            return Err(ControllerError::BeforeStart("PATCH /drives"));
        };
        let live = started
            .drives
            .iter()
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
        config.seccomp = self.seccomp.clone();
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
        });
        log::info!("microVM started in {} us", began.elapsed().as_micros());
        (self.on_start)(launched.running);
        Ok(())
    }
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
