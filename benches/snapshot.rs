//! Snapshot benchmarks (not criterion: each run builds or restores whole
//! VMs, and the numbers wanted are medians of wall-clock times and RSS).
//!
//! - restore-to-running: `Vmm::restore` + `Vmm::start` of a snapshot of the
//!   counting test guest at 128 MiB, 1 GiB and 4 GiB (memory mapped
//!   `MAP_PRIVATE` from the snapshot's file);
//! - full snapshot create of a 128 MiB guest that touched about 10 MiB,
//!   and of a 2 GiB guest that touched about 10 MiB and 60 MiB;
//! - diff snapshot create after the guest's memory changed by 1 MiB;
//! - extra memory per clone: four `microvm --restore` processes of one
//!   snapshot, their RSS, PSS and private dirty memory.
//!
//! Run with `cargo bench -p kindling-benches --bench snapshot`;
//! `KINDLING_SNAPSHOT_RUNS` (default 20) sets the runs per measurement.
//! Files go to a directory under the system temporary directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kindling::vmm::snapshot::{MemBackend, RestoreConfig, SnapshotKind, SnapshotRequest};
use kindling::vmm::vm_memory::{Bytes, GuestAddress};
use kindling::vmm::{KernelSource, RunningVmm, SerialConfig, VmConfig, Vmm};

const MIB: u64 = 1 << 20;

fn runs() -> usize {
    std::env::var("KINDLING_SNAPSHOT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Serial output the benchmark can wait on.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn count_lines(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
}

/// Boots the counting guest with `mib` of memory and waits for a few
/// lines.
fn counting_guest(mib: u64, track_dirty_pages: bool) -> RunningVmm {
    let serial = Lines::default();
    let config = VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: "kindling.test=count".into(),
        memory_mib: mib,
        track_dirty_pages,
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        debug_exit: true,
        ..VmConfig::default()
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while serial.count_lines() < 3 {
        assert!(Instant::now() < deadline, "the guest does not count");
        std::thread::sleep(Duration::from_millis(1));
    }
    running
}

/// Writes `bytes` of non-zero data into guest memory from 16 MiB up (the
/// guest's own pages are below 16 MiB).
fn touch(running: &RunningVmm, bytes: u64, fill: u8) {
    let chunk = vec![fill; MIB as usize];
    for i in 0..bytes / MIB {
        running
            .memory()
            .write_slice(&chunk, GuestAddress(16 * MIB + i * MIB))
            .unwrap();
    }
}

fn request(dir: &Path, name: &str, kind: SnapshotKind) -> SnapshotRequest {
    SnapshotRequest {
        kind,
        state_path: dir.join(format!("{name}.state")),
        mem_path: dir.join(format!("{name}.mem")),
    }
}

fn restore_latency(dir: &Path, mib: u64) {
    let running = counting_guest(mib, false);
    running.pause().unwrap();
    let req = request(dir, &format!("restore-{mib}"), SnapshotKind::Full);
    running.snapshot(&req).unwrap();
    running.stop();
    running.wait().unwrap();
    let mut restore = Vec::new();
    let mut to_running = Vec::new();
    let mut first_line = Vec::new();
    for _ in 0..runs() {
        let serial = Lines::default();
        let config = RestoreConfig {
            serial: SerialConfig::Writer(Box::new(serial.clone())),
            boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
            ..RestoreConfig::new(&req.state_path, MemBackend::File(req.mem_path.clone()))
        };
        let start = Instant::now();
        let vmm = Vmm::restore(config).unwrap();
        restore.push(start.elapsed());
        let running = vmm.start().unwrap();
        to_running.push(start.elapsed());
        while serial.count_lines() == 0 {
            std::hint::spin_loop();
        }
        first_line.push(start.elapsed());
        running.stop();
        running.wait().unwrap();
    }
    println!(
        "restore {mib:>5} MiB: Vmm::restore median {} | to running (restore + start) median {} p90 {} | to the guest's next line median {}",
        ms(median(restore)),
        ms(median(to_running.clone())),
        ms(p90(to_running)),
        ms(median(first_line)),
    );
    let _ = std::fs::remove_file(&req.mem_path);
}

fn full_create(dir: &Path, mib: u64, touched_mib: u64) {
    let running = counting_guest(mib, false);
    running.pause().unwrap();
    touch(&running, touched_mib * MIB, 0x5a);
    let req = request(dir, &format!("full-{mib}"), SnapshotKind::Full);
    let mut times = Vec::new();
    let mut written = 0;
    for _ in 0..runs() {
        let start = Instant::now();
        let info = running.snapshot(&req).unwrap();
        times.push(start.elapsed());
        written = info.pages_written * 4096;
    }
    println!(
        "full snapshot of a {mib} MiB guest that touched {touched_mib} MiB: median {} p90 {} ({:.1} MiB written)",
        ms(median(times.clone())),
        ms(p90(times)),
        written as f64 / MIB as f64
    );
    running.stop();
    running.wait().unwrap();
    let _ = std::fs::remove_file(&req.mem_path);
}

fn diff_create(dir: &Path) {
    let running = counting_guest(128, true);
    running.pause().unwrap();
    touch(&running, 10 * MIB, 0x11);
    running
        .snapshot(&request(dir, "diff-base", SnapshotKind::Full))
        .unwrap();
    let req = request(dir, "diff", SnapshotKind::Diff);
    let mut times = Vec::new();
    let mut written = 0;
    for i in 0..runs() {
        // The guest runs a little (it dirties its counter and stack), and
        // 1 MiB changes.
        running.resume().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        running.pause().unwrap();
        touch(&running, MIB, i as u8 + 1);
        let start = Instant::now();
        let info = running.snapshot(&req).unwrap();
        times.push(start.elapsed());
        written = info.pages_written * 4096;
    }
    println!(
        "diff snapshot of a 128 MiB guest after 1 MiB changed: median {} p90 {} ({:.2} MiB written)",
        ms(median(times.clone())),
        ms(p90(times)),
        written as f64 / MIB as f64
    );
    running.stop();
    running.wait().unwrap();
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
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
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|_| workspace_root().join("target"));
    target.join("x86_64-unknown-linux-gnu/release/examples/microvm")
}

/// A field of /proc/PID/smaps_rollup in KiB.
fn smaps(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn clone_memory(dir: &Path) {
    const CLONES: usize = 4;
    let binary = release_example();
    let running = counting_guest(128, false);
    running.pause().unwrap();
    touch(&running, 10 * MIB, 0x77);
    let req = request(dir, "clones", SnapshotKind::Full);
    running.snapshot(&req).unwrap();
    running.stop();
    running.wait().unwrap();
    let mut children = Vec::new();
    for _ in 0..CLONES {
        let mut child = Command::new(&binary)
            .arg("--restore")
            .arg(&req.state_path)
            .arg("--restore-mem")
            .arg(&req.mem_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        children.push((child, out));
    }
    // Let every clone run and read a page of the snapshot's 10 MiB.
    std::thread::sleep(Duration::from_millis(500));
    let (mut rss, mut pss, mut private) = (0, 0, 0);
    for (child, _) in &children {
        rss += smaps(child.id(), "Rss:");
        pss += smaps(child.id(), "Pss:");
        private += smaps(child.id(), "Private_Dirty:");
    }
    let n = CLONES as u64;
    println!(
        "{CLONES} clones of a 128 MiB snapshot (10 MiB touched): per clone RSS {} KiB, PSS {} KiB, private dirty {} KiB",
        rss / n,
        pss / n,
        private / n
    );
    for (mut child, _) in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this once
    // with no argument: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("snapshot benchmark: run it with cargo bench");
        return;
    }
    let dir = std::env::temp_dir().join(format!("kindling-snapshot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mib in [128, 1024, 4096] {
        restore_latency(&dir, mib);
    }
    full_create(&dir, 128, 10);
    full_create(&dir, 2048, 10);
    full_create(&dir, 2048, 60);
    diff_create(&dir);
    clone_memory(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
