//! The listening socket: one thread accepts, one thread per connection
//! (at most [`MAX_CONNECTIONS`]) serves it, requests go through
//! [`parse_request`] and the [`Controller`], one at a time.

use kindling_vmm::seccomp::{SeccompPolicy, ThreadKind};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::{serve_connection, HttpRequest, HttpResponse, Timeouts};
use super::ServeError;
use crate::controller::{ApiResponse, Controller};
use crate::metrics::Metrics;
use crate::request::{parse_request, Method};

/// The most connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;

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
        Self::bind_filtered(path, controller, metrics, timeouts, SeccompPolicy::Off)
    }

    /// Like [`ApiServer::bind`], with the accept thread installing the
    /// [`ThreadKind::Api`] filter of `seccomp` first thing (the connection
    /// threads it starts inherit it). If the filter cannot be installed,
    /// the server does not serve: it logs why and closes the socket.
    pub fn bind_filtered(
        path: &Path,
        controller: Arc<Mutex<Controller>>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
        seccomp: SeccompPolicy,
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
            .spawn(move || {
                if let Err(e) = seccomp.install(ThreadKind::Api) {
                    log::error!("API socket: not serving: {e}");
                    return;
                }
                accept_loop(listener, controller, metrics, timeouts)
            })
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
                // This thread runs under the accept thread's filter.
                kindling_vmm::seccomp::mark_thread(ThreadKind::Api);
                serve_connection(stream, timeouts, |req| dispatch(&controller, &metrics, req));
                active_conn.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            log::warn!("API socket: cannot start a connection thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::DEFAULT_FLUSH_INTERVAL;
    use crate::resources::VmResources;
    use kindling_vmm::{SerialConfig, StartTime};
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
}
