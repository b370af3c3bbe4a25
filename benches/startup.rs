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
//! Run with `cargo bench -p kindling-benches --bench startup` (it builds
//! the release example first). `KINDLING_STARTUP_VMM=/path/to/binary` and
//! `KINDLING_STARTUP_ARGS="..."` benchmark another command line.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        if line.trim_end() == HELLO {
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
}
