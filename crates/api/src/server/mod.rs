//! The API server: HTTP/1.1 on a Unix socket ([`http`]), one thread per
//! connection (so a slow client holds only its own), requests applied one
//! at a time by the [`Controller`]; and [`serve`], the API-mode runner of
//! the example VMM (`microvm --api-sock`, `--config-file`).

pub mod http;
mod preset;

pub use preset::{Preset, PresetError};

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use kindling_vmm::{ExitReason, SerialConfig, StartTime, VmmError};

use crate::config_file::{read_config, ConfigFileError};
use crate::controller::{ApiResponse, Controller, ControllerError};
use crate::logger::LoggerError;
use crate::metrics::{Metrics, DEFAULT_FLUSH_INTERVAL};
use crate::models::ActionType;
use crate::request::{parse_request, ApiRequest, Method};
use crate::resources::VmResources;
use http::{serve_connection, HttpRequest, HttpResponse, Timeouts};

/// The most connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;

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
        }
    }
}

/// Answers one HTTP request.
fn dispatch(controller: &Mutex<Controller>, metrics: &Metrics, req: &HttpRequest) -> HttpResponse {
    let parsed = Method::parse(&req.method).and_then(|m| parse_request(m, &req.path, &req.body));
    log::info!(
        "The API server received a {} request on {:?}.",
        req.method.escape_debug(),
        req.path.escape_debug().to_string()
    );
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            metrics.increment("api_server", "invalid_request_count");
            log::info!("Refused the request: {e}");
            return HttpResponse::fault(400, &e.to_string());
        }
    };
    let result = controller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .handle(request);
    match result {
        Ok(ApiResponse::NoContent) => HttpResponse {
            status: 204,
            body: None,
        },
        Ok(ApiResponse::Json(value)) => HttpResponse {
            status: 200,
            body: Some(value.to_string()),
        },
        Err(e) => {
            log::info!("Refused the request: {e}");
            HttpResponse::fault(400, &e.to_string())
        }
    }
}

/// The listening socket; removed when dropped.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
}

impl ApiServer {
    /// Creates the socket at `path` and serves it on a thread of its own.
    pub fn bind(
        path: &Path,
        controller: Arc<Mutex<Controller>>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
    ) -> Result<Self, ServeError> {
        if path.symlink_metadata().is_ok() {
            return Err(ServeError::SocketExists(path.to_path_buf()));
        }
        let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        let server = ApiServer {
            path: path.to_path_buf(),
        };
        std::thread::Builder::new()
            .name("kindling-api".into())
            .stack_size(256 * 1024)
            .spawn(move || accept_loop(listener, controller, metrics, timeouts))
            .map_err(ServeError::Thread)?;
        Ok(server)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: UnixListener,
    controller: Arc<Mutex<Controller>>,
    metrics: Arc<Metrics>,
    timeouts: Timeouts,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("API socket: accept failed: {e}");
                // Out of file descriptors: let some connections end.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let busy = HttpResponse::fault(
                503,
                &format!("too many connections (at most {MAX_CONNECTIONS})"),
            );
            let _ = std::io::Write::write_all(&mut stream, &busy.to_bytes(true));
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (controller, metrics, active_conn) =
            (controller.clone(), metrics.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("kindling-api-conn".into())
            // Untouched stack costs no RSS; JSON nesting (serde_json stops
            // at 128 levels) needs room in debug builds.
            .stack_size(1024 * 1024)
            .spawn(move || {
                serve_connection(stream, timeouts, |req| dispatch(&controller, &metrics, req));
                active_conn.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            log::warn!("API socket: cannot start a connection thread: {e}");
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
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn request(path: &Path, raw: &str) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_server_answers_and_removes_its_socket() {
        let dir = std::env::temp_dir().join(format!("kindling-api-srv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("api.sock");
        let metrics = Metrics::new("s", DEFAULT_FLUSH_INTERVAL);
        let controller = Arc::new(Mutex::new(Controller::new(
            "s",
            VmResources::default(),
            metrics.clone(),
            SerialConfig::Off,
            StartTime::now(),
            Box::new(|_| {}),
        )));
        let server = ApiServer::bind(
            &sock,
            controller.clone(),
            metrics.clone(),
            Timeouts::default(),
        )
        .unwrap();
        assert_eq!(server.path(), sock);
        let e =
            ApiServer::bind(&sock, controller, metrics.clone(), Timeouts::default()).unwrap_err();
        assert!(matches!(e, ServeError::SocketExists(_)), "{e}");
        let out = request(&sock, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains(r#""state":"Not started""#), "{out}");
        let out = request(
            &sock,
            "PUT /machine-config HTTP/1.1\r\nConnection: close\r\nContent-Length: 36\r\n\r\n{\"vcpu_count\":2,\"mem_size_mib\":256}\n",
        );
        assert!(out.starts_with("HTTP/1.1 204"), "{out}");
        let out = request(&sock, "DELETE / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("invalid HTTP method"), "{out}");
        assert_eq!(
            metrics.next_line()["api_server"]["invalid_request_count"],
            1
        );
        drop(server);
        assert!(!sock.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

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
