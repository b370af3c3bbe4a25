//! Process-level start-up benchmark of the `microvm` example (not a
//! criterion benchmark: it measures whole processes).
//!
//! Starts the release example VMM on its embedded test guest (1 vCPU,
//! 128 MiB) `KINDLING_STARTUP_RUNS` times (default 100) and reports the
//! median and 90th percentile of:
//! - the time from spawning the process to the guest's hello line arriving
//!   on the VMM's stdout;
//! - the time from spawning to process exit;
//! - the peak RSS of the VMM process (from `wait4`).
//!
//! Then the same guest through the API (`--api-sock`): process start to
//! the socket accepting a connection, the `InstanceStart` request to the
//! hello line (after `PUT /boot-source` and `/machine-config`), process
//! start to the hello line, and peak RSS; and through a config file
//! (`--no-api --config-file`), process start to the hello line.
//!
//! Run with `cargo bench -p kindling-benches --bench startup` (it builds the release example
//! first). `KINDLING_STARTUP_VMM=/path/to/binary` and
//! `KINDLING_STARTUP_ARGS="..."` benchmark another command line (the API
//! runs are skipped then, unless `KINDLING_STARTUP_API=1`: another VMM
//! with Firecracker's API, such as Firecracker itself);
//! `KINDLING_STARTUP_BOOT_ARGS` is the guest command line of the API and
//! config-file runs (default `kindling.test=hello`; Firecracker needs
//! `kindling.exit=reset` to end), `KINDLING_STARTUP_EXTRA_ARGS` more VMM
//! arguments for them (Firecracker: `--level Off`, so its log lines do not
//! split the guest's line on the shared stdout).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The guest's hello line (matched within a line: another VMM may log to
/// the same stdout, interleaved with the guest's output).
const HELLO: &str = "Hello from the Kindling test guest!";

/// The workspace root: this package is `benches/` in it.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}

/// The workspace's target directory (a relative `CARGO_TARGET_DIR` is
/// taken as relative to the workspace root).
fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|_| workspace_root().join("target"))
}

fn release_example() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "kindling",
            "--example",
            "microvm",
            "--quiet",
        ])
        .current_dir(workspace_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the release example failed");
    target_dir().join("x86_64-unknown-linux-gnu/release/examples/microvm")
}

struct Sample {
    hello: Duration,
    exit: Duration,
    max_rss_kib: i64,
}

// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(binary: &PathBuf, args: &[String]) -> Sample {
    let start = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the VMM");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut hello = None;
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        if line.contains(HELLO) {
            hello = Some(start.elapsed());
        }
        line.clear();
    }
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; the pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let exit = start.elapsed();
    assert_eq!(reaped, pid, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "the VMM failed: {status}");
    Sample {
        hello: hello.expect("the guest never printed its hello line"),
        exit,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// `KINDLING_STARTUP_EXTRA_ARGS`, split on white space.
fn extra_args() -> Vec<String> {
    std::env::var("KINDLING_STARTUP_EXTRA_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// One API-path run.
struct ApiSample {
    accepting: Duration,
    start_to_hello: Duration,
    hello: Duration,
    max_rss_kib: i64,
}

/// Sends one request on `stream` and reads the (body-less or short)
/// response; panics unless it is a 204.
fn api_request(stream: &mut UnixStream, method: &str, path: &str, body: &str) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the API closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 204"), "{method} {path}: {text}");
}

/// Waits for the child's stdout to carry the hello line.
fn wait_hello(stdout: &mut BufReader<std::process::ChildStdout>) -> bool {
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        if line.contains(HELLO) {
            return true;
        }
        line.clear();
    }
    false
}

/// Reaps `child` and returns its peak RSS in KiB.
#[allow(clippy::zombie_processes)]
fn reap(child: std::process::Child) -> i64 {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; the pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "the VMM failed: {status}");
    usage.ru_maxrss
}

// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_api_once(
    binary: &PathBuf,
    dir: &std::path::Path,
    kernel: &str,
    boot_args: &str,
) -> ApiSample {
    let socket = dir.join("api.sock");
    let _ = std::fs::remove_file(&socket);
    let start = Instant::now();
    let mut child = Command::new(binary)
        .arg("--api-sock")
        .arg(&socket)
        .arg("--debug-exit")
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the VMM");
    let mut stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break s,
            Err(_) => {
                assert!(start.elapsed() < Duration::from_secs(10), "no API socket");
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    };
    let accepting = start.elapsed();
    api_request(
        &mut stream,
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{kernel}", "boot_args": "{boot_args}"}}"#),
    );
    api_request(
        &mut stream,
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 128}"#,
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let instance_start = Instant::now();
    api_request(
        &mut stream,
        "PUT",
        "/actions",
        r#"{"action_type": "InstanceStart"}"#,
    );
    assert!(wait_hello(&mut stdout), "no hello line through the API");
    let hello = instance_start.elapsed();
    let start_to_hello = start.elapsed();
    while stdout.read_line(&mut String::new()).unwrap_or(0) > 0 {}
    ApiSample {
        accepting,
        start_to_hello,
        hello,
        max_rss_kib: reap(child),
    }
}

fn run_config_file_once(binary: &PathBuf, config: &std::path::Path) -> Sample {
    let start = Instant::now();
    let mut child = Command::new(binary)
        .args(["--no-api", "--debug-exit", "--config-file"])
        .arg(config)
        .args(extra_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the VMM");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    assert!(wait_hello(&mut stdout), "no hello line with a config file");
    let hello = start.elapsed();
    while stdout.read_line(&mut String::new()).unwrap_or(0) > 0 {}
    let max_rss_kib = reap(child);
    Sample {
        hello,
        exit: start.elapsed(),
        max_rss_kib,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The API and config-file paths, `runs` times each, interleaved with
/// the flag path (`flag_args`), so the differences are measured under the
/// same conditions.
fn api_runs(binary: &PathBuf, flag_args: &[String], runs: usize) {
    let dir = std::env::temp_dir().join(format!("kindling-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, kindling_test_guest::TEST_GUEST_ELF).unwrap();
    let kernel = kernel.to_str().unwrap().to_string();
    let boot_args = std::env::var("KINDLING_STARTUP_BOOT_ARGS")
        .unwrap_or_else(|_| "kindling.test=hello".into());
    let config = dir.join("vm.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{kernel}", "boot_args": "{boot_args}"}}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 128}}, "drives": []}}"#
        ),
    )
    .unwrap();
    run_api_once(binary, &dir, &kernel, &boot_args);
    let mut api = Vec::with_capacity(runs);
    let mut file = Vec::with_capacity(runs);
    let mut flags = Vec::with_capacity(runs);
    for _ in 0..runs {
        flags.push(run_once(binary, flag_args));
        api.push(run_api_once(binary, &dir, &kernel, &boot_args));
        file.push(run_config_file_once(binary, &config));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut accepting: Vec<Duration> = api.iter().map(|s| s.accepting).collect();
    let mut hello: Vec<Duration> = api.iter().map(|s| s.hello).collect();
    let mut total: Vec<Duration> = api.iter().map(|s| s.start_to_hello).collect();
    let mut rss: Vec<i64> = api.iter().map(|s| s.max_rss_kib).collect();
    let mut file_hello: Vec<Duration> = file.iter().map(|s| s.hello).collect();
    let mut file_rss: Vec<i64> = file.iter().map(|s| s.max_rss_kib).collect();
    let mut flag_hello: Vec<Duration> = flags.iter().map(|s| s.hello).collect();
    let mut flag_rss: Vec<i64> = flags.iter().map(|s| s.max_rss_kib).collect();
    println!(
        "startup: {runs} runs each of the flags, the API (--api-sock) and a config file, interleaved"
    );
    println!(
        "startup: flags: start -> hello           median {:>8.3} ms   p90 {:>8.3} ms",
        ms(percentile(&mut flag_hello, 50)),
        ms(percentile(&mut flag_hello, 90))
    );
    println!(
        "startup: flags: peak RSS                 median {:>8.2} MiB  max {:>8.2} MiB",
        percentile(&mut flag_rss, 50) as f64 / 1024.0,
        percentile(&mut flag_rss, 100) as f64 / 1024.0
    );
    println!(
        "startup: api: start -> socket accepting  median {:>8.3} ms   p90 {:>8.3} ms",
        ms(percentile(&mut accepting, 50)),
        ms(percentile(&mut accepting, 90))
    );
    println!(
        "startup: api: InstanceStart -> hello     median {:>8.3} ms   p90 {:>8.3} ms",
        ms(percentile(&mut hello, 50)),
        ms(percentile(&mut hello, 90))
    );
    println!(
        "startup: api: start -> hello (3 requests) median {:>8.3} ms   p90 {:>8.3} ms",
        ms(percentile(&mut total, 50)),
        ms(percentile(&mut total, 90))
    );
    println!(
        "startup: api: peak RSS                   median {:>8.2} MiB  max {:>8.2} MiB",
        percentile(&mut rss, 50) as f64 / 1024.0,
        percentile(&mut rss, 100) as f64 / 1024.0
    );
    println!(
        "startup: config file: start -> hello     median {:>8.3} ms   p90 {:>8.3} ms",
        ms(percentile(&mut file_hello, 50)),
        ms(percentile(&mut file_hello, 90))
    );
    println!(
        "startup: config file: peak RSS           median {:>8.2} MiB  max {:>8.2} MiB",
        percentile(&mut file_rss, 50) as f64 / 1024.0,
        percentile(&mut file_rss, 100) as f64 / 1024.0
    );
}

fn percentile<T: Copy + Ord>(values: &mut [T], p: usize) -> T {
    values.sort();
    values[(values.len() - 1) * p / 100]
}

fn main() {
    // `cargo bench` passes "--bench"; `cargo test --benches` passes nothing
    // special: run a single quick iteration then, as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let runs: usize = if smoke {
        1
    } else {
        std::env::var("KINDLING_STARTUP_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    };
    let binary = match std::env::var("KINDLING_STARTUP_VMM") {
        Ok(path) => PathBuf::from(path),
        // Under `cargo test` cargo holds the build lock: use what is built.
        Err(_) if smoke => {
            let built = target_dir().join("x86_64-unknown-linux-gnu/release/examples/microvm");
            if !built.exists() {
                println!("startup: skipped, {} is not built", built.display());
                return;
            }
            built
        }
        Err(_) => release_example(),
    };
    let custom = std::env::var("KINDLING_STARTUP_ARGS").is_ok()
        || std::env::var("KINDLING_STARTUP_VMM").is_ok();
    let args: Vec<String> = std::env::var("KINDLING_STARTUP_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["--cpus".into(), "1".into(), "--memory".into(), "128".into()]);
    // Warm the page cache and the kernel's KVM module state.
    run_once(&binary, &args);
    let samples: Vec<Sample> = (0..runs).map(|_| run_once(&binary, &args)).collect();
    let mut hello: Vec<Duration> = samples.iter().map(|s| s.hello).collect();
    let mut exit: Vec<Duration> = samples.iter().map(|s| s.exit).collect();
    let mut rss: Vec<i64> = samples.iter().map(|s| s.max_rss_kib).collect();
    println!(
        "startup: {} runs of {} {}",
        runs,
        binary.display(),
        args.join(" ")
    );
    println!(
        "startup: hello line  median {:>8.3} ms   p90 {:>8.3} ms",
        percentile(&mut hello, 50).as_secs_f64() * 1e3,
        percentile(&mut hello, 90).as_secs_f64() * 1e3
    );
    println!(
        "startup: process exit median {:>8.3} ms   p90 {:>8.3} ms",
        percentile(&mut exit, 50).as_secs_f64() * 1e3,
        percentile(&mut exit, 90).as_secs_f64() * 1e3
    );
    println!(
        "startup: peak RSS     median {:>8.2} MiB  max {:>8.2} MiB",
        percentile(&mut rss, 50) as f64 / 1024.0,
        percentile(&mut rss, 100) as f64 / 1024.0
    );
    if !custom || std::env::var("KINDLING_STARTUP_API").as_deref() == Ok("1") {
        api_runs(&binary, &args, runs);
    }
}
