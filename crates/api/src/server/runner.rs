//! API mode from start to end: [`serve`].

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kindling_vmm::seccomp::{SeccompError, SeccompPolicy, ThreadKind};
use kindling_vmm::{ExitReason, SerialConfig, StartTime, VmmError};

use super::http::Timeouts;
use super::listener::ApiServer;
use crate::config_file::{read_config, ConfigFileError};
use crate::controller::{Controller, ControllerError};
use crate::logger::LoggerError;
use crate::metrics::{Metrics, DEFAULT_FLUSH_INTERVAL};
use crate::models::ActionType;
use crate::request::ApiRequest;
use crate::resources::VmResources;

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Neither a socket nor a config file: nothing would ever start the VM.
    #[error("nothing to do: give an API socket (--api-sock) or a config file (--config-file)")]
    NothingToServe,
    /// The logger could not be installed.
    #[error(transparent)]
    Logger(#[from] LoggerError),
    /// The socket path is taken.
    #[error("cannot create the API socket {0}: the path exists (remove it first)")]
    SocketExists(PathBuf),
    /// The socket could not be created.
    #[error("cannot create the API socket {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// The accept thread could not be started.
    #[error("cannot start the API server thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The config file is invalid.
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
    /// A resource of the config file was refused.
    #[error("config file, {resource}: {source}")]
    ConfigResource {
        /// The resource (as in the metrics: `boot_source`, `drive`, ...).
        resource: &'static str,
        /// Why.
        source: ControllerError,
    },
    /// A seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The VM failed while it ran.
    #[error(transparent)]
    Vmm(#[from] VmmError),
}

/// What [`serve`] runs.
#[derive(Debug)]
pub struct ServeOptions {
    /// Serve the API on this socket (the VM waits for `InstanceStart`
    /// unless a config file is given too).
    pub api_socket: Option<PathBuf>,
    /// Configure from this file and boot at once.
    pub config_file: Option<PathBuf>,
    /// Configuration applied before the file and the API (the example's
    /// flags).
    pub resources: VmResources,
    /// The console when no `PUT /serial` names a file.
    pub serial: SerialConfig,
    /// The instance id (`GET /`, logs, metrics).
    pub id: String,
    /// When the process started.
    pub start_time: StartTime,
    /// How often metrics are written.
    pub metrics_interval: Duration,
    /// Connection time limits.
    pub timeouts: Timeouts,
    /// The seccomp filters of the API threads, the VM's threads, the
    /// metrics writer and the calling thread once the VM starts (off by
    /// default; `microvm` turns them on).
    pub seccomp: SeccompPolicy,
}

impl ServeOptions {
    /// Options with nothing configured, the console on standard output.
    pub fn new(start_time: StartTime) -> Self {
        Self {
            api_socket: None,
            config_file: None,
            resources: VmResources::default(),
            serial: SerialConfig::Stdout,
            id: "anonymous-instance".into(),
            start_time,
            metrics_interval: DEFAULT_FLUSH_INTERVAL,
            timeouts: Timeouts::default(),
            seccomp: SeccompPolicy::Off,
        }
    }
}

/// Runs a microVM in API mode: serves the API socket (if any), applies
/// the config file (if any) and starts the VM at once, otherwise waits
/// for `InstanceStart`; then waits for the VM to end and returns why.
/// The socket is removed at the end.
pub fn serve(options: ServeOptions) -> Result<ExitReason, ServeError> {
    if options.api_socket.is_none() && options.config_file.is_none() {
        return Err(ServeError::NothingToServe);
    }
    crate::logger::install(&options.id)?;
    let metrics = Metrics::new(&options.id, options.metrics_interval);
    metrics.set_seccomp(options.seccomp.clone());
    let (started_tx, started_rx) = mpsc::channel();
    let controller = Arc::new(Mutex::new(Controller::new(
        &options.id,
        options.resources,
        metrics.clone(),
        options.serial,
        options.start_time,
        Box::new(move |running| {
            // The receiver lives until the VM ends.
            let _ = started_tx.send(running);
        }),
    )));
    controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_seccomp(options.seccomp.clone());
    let server = match &options.api_socket {
        Some(path) => Some(ApiServer::bind_filtered(
            path,
            controller.clone(),
            metrics.clone(),
            options.timeouts,
            options.seccomp.clone(),
        )?),
        None => None,
    };
    metrics.set_value(
        "api_server",
        "process_startup_time_us",
        options.start_time.wall_elapsed().as_micros() as u64,
    );
    metrics.set_value(
        "api_server",
        "process_startup_time_cpu_us",
        options.start_time.cpu_elapsed().as_micros() as u64,
    );
    if let Some(path) = &options.config_file {
        let mut requests = read_config(path)?;
        requests.push(ApiRequest::Action(ActionType::InstanceStart));
        let mut controller = controller.lock().unwrap_or_else(|p| p.into_inner());
        for request in requests {
            let resource = request.metric_name().1;
            controller
                .handle(request)
                .map_err(|source| ServeError::ConfigResource { resource, source })?;
        }
    }
    // From here this thread waits for the VM, writes the last metrics and
    // removes the socket; with a config file it has built and started the
    // VM already.
    options.seccomp.install(ThreadKind::Api)?;
    // Only InstanceStart sends; the controller keeps the sender.
    let running = match started_rx.recv() {
        Ok(running) => running,
        Err(_) => return Err(ServeError::NothingToServe),
    };
    let reason = running.wait();
    if metrics.is_configured() {
        if let Err(e) = metrics.flush() {
            log::warn!("final metrics: {e}");
        }
    }
    drop(server);
    Ok(reason?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_needs_something_to_do() {
        let e = serve(ServeOptions::new(StartTime::now())).unwrap_err();
        assert!(matches!(e, ServeError::NothingToServe));
        let mut o = ServeOptions::new(StartTime::now());
        o.config_file = Some("/nonexistent/vm.json".into());
        let e = serve(o).unwrap_err();
        assert!(e.to_string().contains("cannot read the config file"), "{e}");
    }
}
