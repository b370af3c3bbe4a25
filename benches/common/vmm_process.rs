//! Runs a VMM as a separate process, for the benchmarks that compare
//! Kindling's `microvm` with another VMM that has Firecracker's
//! interface (Firecracker itself): the same config-file format and API,
//! the guest's serial console on the process's stdout.
//!
//! The other VMM's binary comes from `KINDLING_COMPARE_VMM`; without it
//! the comparisons are skipped with a message. `KINDLING_COMPARE_ARGS`
//! replaces the arguments both VMMs get besides the config file or API
//! socket (default `--level Off --no-seccomp`: no log lines on the
//! console, and no seccomp filters in either, so both run the same system
//! calls unfiltered). Shared through `#[path]`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One VMM under comparison: a name for the report and its binary.
#[derive(Clone, Debug)]
pub struct Vmm {
    /// "kindling" or "firecracker" (the report's label).
    pub name: &'static str,
    /// The executable.
    pub binary: PathBuf,
}

/// The workspace root: this package is `benches/` in it.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}

/// The release `microvm` example; it must have been built (`cargo build
/// --release --examples`): a bench cannot run cargo while cargo holds the
/// build lock under `cargo test`.
pub fn kindling_binary() -> Option<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|_| workspace_root().join("target"));
    let path = target.join("x86_64-unknown-linux-gnu/release/examples/microvm");
    path.exists().then_some(path)
}

/// A process-level comparison under way: the two VMMs and a work
/// directory holding the guest kernel. Made by [`Comparison::start`]; when
/// dropped it prints the load average and removes the directory.
pub struct Comparison {
    /// Kindling's `microvm` and the other VMM, in that order.
    pub vmms: [Vmm; 2],
    /// The work directory, with the guest kernel in it.
    pub work: PathBuf,
    bench: &'static str,
}

impl Comparison {
    /// Sets up a comparison for the benchmark `bench` and prints its first
    /// line (`<bench>: <microvm> vs <other>, <what>, load average ...`);
    /// `None`, after saying why, when there is no VMM to compare with.
    pub fn start(bench: &'static str, what: &str) -> Option<Self> {
        let vmms = match compared_vmms() {
            Ok(vmms) => vmms,
            Err(why) => {
                println!("{bench}: comparison skipped: {why}");
                return None;
            }
        };
        let work =
            std::env::temp_dir().join(format!("kindling-{bench}-compare-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("creating the work directory");
        guest_kernel(&work);
        println!(
            "{bench}: {} vs {}, {what}, load average {}",
            vmms[0].binary.display(),
            vmms[1].binary.display(),
            load_average()
        );
        Some(Self { vmms, work, bench })
    }
}

impl Drop for Comparison {
    fn drop(&mut self) {
        println!(
            "{}: load average after the comparison {}",
            self.bench,
            load_average()
        );
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Kindling's `microvm` and the VMM named by `KINDLING_COMPARE_VMM`, or
/// an error saying which is missing.
pub fn compared_vmms() -> Result<[Vmm; 2], String> {
    let other = std::env::var("KINDLING_COMPARE_VMM")
        .map_err(|_| "KINDLING_COMPARE_VMM is not set (the path of a Firecracker binary)")?;
    let other = PathBuf::from(other);
    if !other.exists() {
        return Err(format!(
            "KINDLING_COMPARE_VMM={} does not exist",
            other.display()
        ));
    }
    let kindling = kindling_binary()
        .ok_or("the release microvm example is not built (cargo build --release --examples)")?;
    Ok([
        Vmm {
            name: "kindling",
            binary: kindling,
        },
        Vmm {
            name: "firecracker",
            binary: other,
        },
    ])
}

/// Arguments both VMMs get besides the config file or API socket.
pub fn common_args() -> Vec<String> {
    std::env::var("KINDLING_COMPARE_ARGS")
        .unwrap_or_else(|_| "--level Off --no-seccomp".into())
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// CPU time of process `pid` so far, all its threads, ended ones too:
/// its CPU-time clock (`clock_getcpuclockid`), which counts to the
/// nanosecond, including the running threads' current slices. Zero if the
/// process is gone.
pub fn process_cpu(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } != 0 {
        return Duration::ZERO;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A line of the guest's console with when it arrived and the VMM's CPU
/// time then.
#[derive(Clone, Debug)]
pub struct Line {
    /// The line, trimmed.
    pub text: String,
    /// When the host read it.
    pub at: Instant,
    /// The VMM process's CPU time (all threads) when the host read it.
    pub cpu: Duration,
}

/// A VMM process whose stdout is read, line by line, on a thread of its
/// own.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// When the process was spawned.
    pub started: Instant,
}

impl Process {
    /// Spawns `binary` with `args`; stdout is read and stamped, stderr
    /// goes to `stderr_path` (for error messages).
    pub fn spawn(binary: &Path, args: &[String], stderr_path: &Path) -> Process {
        let stderr = std::fs::File::create(stderr_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", stderr_path.display()));
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let pid = child.id();
        let stdout = child.stdout.take().expect("a piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut text = String::new();
            while stdout.read_line(&mut text).unwrap_or(0) > 0 {
                let (at, cpu) = (Instant::now(), process_cpu(pid));
                sink.lock().unwrap().push(Line {
                    text: text.trim_end().to_string(),
                    at,
                    cpu,
                });
                text.clear();
            }
        });
        Process {
            child,
            lines,
            reader: Some(reader),
            started,
        }
    }

    /// Starts `vmm` with the config file `config` and no API.
    pub fn with_config(vmm: &Vmm, config: &Path, dir: &Path) -> Process {
        let mut args: Vec<String> = vec!["--no-api".into(), "--config-file".into()];
        args.push(config.display().to_string());
        args.extend(common_args());
        Process::spawn(
            &vmm.binary,
            &args,
            &dir.join(format!("{}.stderr", vmm.name)),
        )
    }

    /// Starts `vmm` serving its API on `socket` (removed first).
    pub fn with_api(vmm: &Vmm, socket: &Path, dir: &Path) -> Process {
        let _ = std::fs::remove_file(socket);
        let mut args: Vec<String> = vec!["--api-sock".into(), socket.display().to_string()];
        args.extend(common_args());
        Process::spawn(
            &vmm.binary,
            &args,
            &dir.join(format!("{}.stderr", vmm.name)),
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line so far that contains `needle`.
    pub fn find(&self, needle: &str) -> Option<Line> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.text.contains(needle))
            .cloned()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.text.contains(needle))
            .count()
    }

    /// Everything the console printed so far (for error messages).
    pub fn console(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `count(needle) >= n`; panics with the console after
    /// `timeout`.
    pub fn wait_lines(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(needle) < n {
            assert!(
                Instant::now() < deadline,
                "no {n} lines with {needle:?} within {timeout:?}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits for the process to end on its own (panics after `timeout`);
    /// returns its status and everything its console printed.
    pub fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the VMM") {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, self.console());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the VMM did not end; console:\n{}", self.console());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A field of `/proc/PID/smaps_rollup`, in KiB.
    pub fn smaps(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid()))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Connects to an API socket, retrying until it accepts (10 s at most).
pub fn connect(socket: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the API socket {} does not accept: {e}",
                    socket.display()
                );
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Sends one request and reads its response; panics unless the status is
/// 2xx, with the response's text.
pub fn api(stream: &mut UnixStream, method: &str, path: &str, body: &str) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: sending: {e}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
        assert!(n > 0, "{method} {path}: the API closed the connection");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..header_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while got.len() < header_end + length {
        let n = stream.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "{method} {path}: the response body was cut short");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with("HTTP/1.1 2"),
        "{method} {path}: {}",
        String::from_utf8_lossy(&got)
    );
}

/// Writes the embedded test guest to `dir/guest.elf` and returns its
/// path: both VMMs load the same file.
pub fn guest_kernel(dir: &Path) -> PathBuf {
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, kindling_test_guest::TEST_GUEST_ELF)
        .unwrap_or_else(|e| panic!("writing {}: {e}", kernel.display()));
    kernel
}

/// The machine's load averages, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The median of `v`.
pub fn median<T: Copy + Ord>(v: &mut [T]) -> T {
    v.sort();
    v[v.len() / 2]
}

/// The 90th percentile of `v`.
pub fn p90<T: Copy + Ord>(v: &mut [T]) -> T {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}
