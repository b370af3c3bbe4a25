//! API mode from start to end: [`serve`].

use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kindling_vmm::signals::TERMINATION_SIGNALS;
use kindling_vmm::{ExitReason, RunningVmm, SerialConfig, StartTime, VmmError};

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
    /// Take SIGTERM, SIGINT and SIGHUP: before the VM starts, one ends
    /// the server ([`Served::SignalBeforeStart`]); once it runs (booted or
    /// loaded), one stops it in order ([`ExitReason::Signal`]). The
    /// process must have blocked them in every thread first
    /// ([`kindling_vmm::signals::block_termination_signals`], first thing
    /// in `main`).
    pub stop_on_signals: bool,
}

/// How API mode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The VM (booted or loaded) ran and ended, for this reason.
    VmEnded(ExitReason),
    /// A termination signal (its number) came before any VM ran: the
    /// server stopped and its socket is removed.
    SignalBeforeStart(i32),
}

impl Served {
    /// The process's exit status: the VM's ([`ExitReason::exit_code`]),
    /// or 128 + the signal's number.
    pub fn exit_code(self) -> i32 {
        match self {
            Served::VmEnded(reason) => reason.exit_code(),
            Served::SignalBeforeStart(signo) => ExitReason::Signal(signo).exit_code(),
        }
    }
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
            stop_on_signals: false,
        }
    }
}

/// How long the main thread waits for a signal before it looks whether
/// the VM started.
const SIGNAL_POLL: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 100_000_000,
};

/// Waits up to [`SIGNAL_POLL`] for a pending termination signal (blocked
/// in every thread) and takes it.
fn take_termination_signal() -> Option<i32> {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signo in TERMINATION_SIGNALS {
            libc::sigaddset(&mut set, signo);
        }
        set
    };
    // SAFETY: `set` is initialised; no siginfo is wanted; the timeout is a
    // valid timespec.
    let signo = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &SIGNAL_POLL) };
    (signo > 0).then_some(signo)
}

/// Waits until the controller hands over a running VM; with
/// `stop_on_signals`, a termination signal before that ends the wait
/// (`Err(signo)`). `None`: the controller is gone.
fn wait_for_vm(
    started: &mpsc::Receiver<RunningVmm>,
    controller: &Mutex<Controller>,
    stop_on_signals: bool,
) -> Option<Result<RunningVmm, i32>> {
    if !stop_on_signals {
        return started.recv().ok().map(Ok);
    }
    loop {
        match started.try_recv() {
            Ok(running) => return Some(Ok(running)),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let Some(signo) = take_termination_signal() else {
            continue;
        };
        // Under the controller's lock no VM starts meanwhile.
        let mut controller = controller.lock().unwrap_or_else(|p| p.into_inner());
        if !controller.is_started() {
            controller.stop_serving(kindling_vmm::signals::signal_name(signo));
            return Some(Err(signo));
        }
        // The VM started just now and its own watcher runs: give the
        // signal back for it (blocked everywhere, it waits pending), and
        // take the VM, which the controller sent before it unlocked.
        // SAFETY: kill(2) on this process with a valid signal number.
        unsafe { libc::kill(libc::getpid(), signo) };
    }
}

/// Runs a microVM in API mode: serves the API socket (if any), applies
/// the config file (if any) and starts the VM at once, otherwise waits
/// for `InstanceStart` or `PUT /snapshot/load`; then waits for the VM to
/// end and returns why. The socket is removed at the end.
pub fn serve(options: ServeOptions) -> Result<Served, ServeError> {
    if options.api_socket.is_none() && options.config_file.is_none() {
        return Err(ServeError::NothingToServe);
    }
    crate::logger::install(&options.id)?;
    let metrics = Metrics::new(&options.id, options.metrics_interval);
    let (started_tx, started_rx) = mpsc::channel();
    let mut controller = Controller::new(
        &options.id,
        options.resources,
        metrics.clone(),
        options.serial,
        options.start_time,
        Box::new(move |running| {
            // The receiver lives until the VM ends.
            let _ = started_tx.send(running);
        }),
    );
    controller.set_stop_on_signals(options.stop_on_signals);
    let controller = Arc::new(Mutex::new(controller));
    let server = match &options.api_socket {
        Some(path) => Some(ApiServer::bind(
            path,
            controller.clone(),
            metrics.clone(),
            options.timeouts,
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
    // Only InstanceStart and a load send; the controller keeps the
    // sender.
    let waited = wait_for_vm(&started_rx, &controller, options.stop_on_signals);
    let result = match waited {
        None => Err(ServeError::NothingToServe),
        Some(Err(signo)) => {
            log::info!(
                "{} before the microVM started: the API server stops",
                kindling_vmm::signals::signal_name(signo)
            );
            Ok(Served::SignalBeforeStart(signo))
        }
        Some(Ok(running)) => running.wait().map(Served::VmEnded).map_err(ServeError::Vmm),
    };
    if metrics.is_configured() {
        if let Err(e) = metrics.flush() {
            log::warn!("final metrics: {e}");
        }
    }
    drop(server);
    result
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
