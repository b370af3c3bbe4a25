//! A small HTTP/1.1 client over a Unix socket, and a `microvm --api-sock`
//! process to talk to, for the API tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One keep-alive connection.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub close: bool,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// The `fault_message` of a 400.
    pub fn fault(&self) -> String {
        assert_eq!(self.status, 400, "{self:?}");
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fault_message in {:?}", self.body))
            .to_string()
    }
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        Client::from_stream(UnixStream::connect(path).expect("connecting to the API socket"))
    }

    pub fn from_stream(stream: UnixStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one response.
    pub fn read_response(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut length = 0;
        let mut close = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            if name.eq_ignore_ascii_case("connection") && value.trim() == "close" {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        Response {
            status,
            body: String::from_utf8(body).unwrap(),
            close,
        }
    }

    pub fn request(&mut self, method: &str, path: &str, body: &str) -> Response {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send_raw(head.as_bytes());
        self.send_raw(body.as_bytes());
        self.read_response()
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, "")
    }

    pub fn put(&mut self, path: &str, body: &str) -> Response {
        self.request("PUT", path, body)
    }

    pub fn patch(&mut self, path: &str, body: &str) -> Response {
        self.request("PATCH", path, body)
    }

    /// A request that must succeed with 204.
    pub fn ok(&mut self, method: &str, path: &str, body: &str) {
        let r = self.request(method, path, body);
        assert_eq!(r.status, 204, "{method} {path} {body}: {r:?}");
    }
}

/// A `microvm` process in API mode; killed on drop.
pub struct ApiVm {
    pub child: Child,
    pub socket: PathBuf,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(l) => sink.lock().unwrap().push(l),
                Err(_) => return,
            }
        }
    });
    lines
}

impl ApiVm {
    /// Starts `microvm --api-sock DIR/api.sock --debug-exit ARGS` (the
    /// test guest ends through the debug-exit port) and waits for the
    /// socket.
    pub fn start(binary: &Path, dir: &Path, args: &[&str]) -> ApiVm {
        let socket = dir.join("api.sock");
        let mut child = Command::new(binary)
            .arg("--api-sock")
            .arg(&socket)
            .arg("--debug-exit")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting microvm");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        // The socket file appears at bind(), a moment before listen():
        // wait until a connection is accepted, not only for the file.
        while UnixStream::connect(&socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("microvm ended with {status}: {:?}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "the API socket never accepted");
            std::thread::sleep(Duration::from_millis(1));
        }
        ApiVm {
            child,
            socket,
            stdout,
            stderr,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
    }

    /// Waits until stdout has a line equal to `line`.
    pub fn wait_for_line(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stdout.lock().unwrap().iter().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no {line:?} on stdout: {:?} (stderr {:?})",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the process to end; returns its exit code.
    pub fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "microvm did not end");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for ApiVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
