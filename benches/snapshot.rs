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
//!
//! With `KINDLING_COMPARE_VMM=/path/to/firecracker` (and the release
//! `microvm` built) it then measures the same things through
//! Firecracker's API on two processes, Kindling's `microvm --api-sock`
//! and that VMM, interleaved run by run: each VM boots the counting guest
//! (`PUT /boot-source`, `/machine-config`, `InstanceStart`), the host
//! writes the "touched" memory into the guest's memory through
//! `/proc/PID/mem`, and `PATCH /vm` pauses it; snapshot create is the
//! `PUT /snapshot/create` request to its answer; restore to running is a
//! fresh process's start to the answer of `PUT /snapshot/load` with
//! `resume_vm: true` (the guest runs again then; the load request alone
//! and the guest's next console line are reported too); the diff is
//! taken after the guest (`count-touch:1024`) rewrote 1 MiB of its
//! memory (a host write is in neither VMM's dirty log, so the guest
//! makes the change); per clone memory is four processes loading one
//! 128 MiB snapshot. `KINDLING_COMPARE_RUNS` (default 10) sets the runs.

#[path = "common/vmm_process.rs"]
mod process;

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

/// A VM of `vmm` booted through the API with the counting guest, paused.
struct ApiVm {
    vm: process::Process,
    api: std::os::unix::net::UnixStream,
}

impl ApiVm {
    /// Boots `vmm` with `mib` of memory through its API, the guest
    /// running `action` (`count` or `count-touch:KIB`), and waits for it
    /// to count, then writes `touched_mib` of data into its memory (from
    /// 16 MiB up) and pauses it.
    fn boot(
        vmm: &process::Vmm,
        work: &Path,
        mib: u64,
        touched_mib: u64,
        dirty: bool,
        action: &str,
    ) -> ApiVm {
        let socket = work.join(format!("{}-{mib}.sock", vmm.name));
        let vm = process::Process::with_api(vmm, &socket, work);
        let mut api = process::connect(&socket);
        let kernel = work.join("guest.elf");
        process::api(
            &mut api,
            "PUT",
            "/boot-source",
            &format!(
                r#"{{"kernel_image_path": "{}", "boot_args": "kindling.test={action}"}}"#,
                kernel.display()
            ),
        );
        process::api(
            &mut api,
            "PUT",
            "/machine-config",
            &format!(r#"{{"vcpu_count": 1, "mem_size_mib": {mib}, "track_dirty_pages": {dirty}}}"#),
        );
        process::api(
            &mut api,
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
        );
        vm.wait_lines("count:", 3, Duration::from_secs(20));
        let mut booted = ApiVm { vm, api };
        booted.touch(mib, touched_mib * MIB, 0x5a);
        booted.pause();
        booted
    }

    fn pause(&mut self) {
        process::api(&mut self.api, "PATCH", "/vm", r#"{"state": "Paused"}"#);
    }

    fn resume(&mut self) {
        process::api(&mut self.api, "PATCH", "/vm", r#"{"state": "Resumed"}"#);
    }

    /// Writes `bytes` of `fill` into guest memory from 16 MiB up, through
    /// `/proc/PID/mem` at the VMM's mapping of guest memory.
    fn touch(&self, mib: u64, bytes: u64, fill: u8) {
        use std::os::unix::fs::FileExt;
        if bytes == 0 {
            return;
        }
        let pid = self.vm.pid();
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .unwrap_or_else(|e| panic!("opening /proc/{pid}/mem: {e}"));
        let base = guest_memory_base(pid, &mem, (mib * MIB).min(3 << 30));
        let chunk = vec![fill; MIB as usize];
        for i in 0..bytes / MIB {
            mem.write_all_at(&chunk, base + 16 * MIB + i * MIB)
                .unwrap_or_else(|e| panic!("writing guest memory of {pid}: {e}"));
        }
    }

    /// `PUT /snapshot/create`: the request's time and the memory file's
    /// allocated size.
    fn snapshot(&mut self, state: &Path, mem: &Path, kind: &str) -> (Duration, u64) {
        let body = format!(
            r#"{{"snapshot_type": "{kind}", "snapshot_path": "{}", "mem_file_path": "{}"}}"#,
            state.display(),
            mem.display()
        );
        let start = Instant::now();
        process::api(&mut self.api, "PUT", "/snapshot/create", &body);
        let took = start.elapsed();
        (took, allocated(mem))
    }
}

/// The guest's physical address and bytes of the test guest's first
/// loaded segment (its code, which the VMM copies into guest memory).
fn guest_code() -> (u64, &'static [u8]) {
    let elf = kindling_test_guest::TEST_GUEST_ELF;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54), u16_at(56));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| {
            let offset = u64_at(ph + 8) as usize;
            (u64_at(ph + 24), &elf[offset..offset + 256])
        })
        .expect("the test guest has a PT_LOAD segment")
}

/// The host address where VMM process `pid` maps guest physical address
/// 0, in a read-write mapping of at least `len` bytes (anonymous mappings
/// next to each other may be merged into one, so every page-aligned start
/// in each such mapping is tried): the one where the guest's code is.
fn guest_memory_base(pid: u32, mem: &std::fs::File, len: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let (paddr, code) = guest_code();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/maps: {e}"));
    let mut buf = vec![0u8; code.len()];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if !perms.starts_with("rw") || hi - lo < len {
            continue;
        }
        for base in (lo..=hi - len).step_by(4096) {
            if mem.read_exact_at(&mut buf, base + paddr).is_ok() && buf == code {
                return base;
            }
        }
    }
    panic!("no mapping of {len} bytes of guest memory with the guest's code in /proc/{pid}/maps")
}

/// The bytes a file has on disk (holes not counted).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// One restore by a fresh process of `vmm`: (process start to the load's
/// answer, the load request alone, process start to the guest's next
/// line), and the process, still running.
fn api_restore(
    vmm: &process::Vmm,
    work: &Path,
    state: &Path,
    mem: &Path,
) -> ((Duration, Duration, Duration), process::Process) {
    let socket = work.join(format!("{}-restore.sock", vmm.name));
    let vm = process::Process::with_api(vmm, &socket, work);
    let mut api = process::connect(&socket);
    let body = format!(
        r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "File", "backend_path": "{}"}}, "resume_vm": true}}"#,
        state.display(),
        mem.display()
    );
    let request = Instant::now();
    process::api(&mut api, "PUT", "/snapshot/load", &body);
    let (to_running, load) = (vm.started.elapsed(), request.elapsed());
    vm.wait_lines("count:", 1, Duration::from_secs(20));
    let line = vm.find("count:").unwrap().at - vm.started;
    ((to_running, load, line), vm)
}

fn ms_of(v: &mut [Duration]) -> String {
    format!("{} (p90 {})", ms(process::median(v)), ms(process::p90(v)))
}

/// Restore to running at `mib`, both VMMs interleaved.
fn compare_restore(vmms: &[process::Vmm; 2], work: &Path, mib: u64, runs: usize) {
    let files: Vec<(PathBuf, PathBuf)> = vmms
        .iter()
        .map(|vmm| {
            let mut vm = ApiVm::boot(vmm, work, mib, 0, false, "count");
            let (state, mem) = (
                work.join(format!("{}-{mib}.state", vmm.name)),
                work.join(format!("{}-{mib}.mem", vmm.name)),
            );
            vm.snapshot(&state, &mem, "Full");
            (state, mem)
        })
        .collect();
    let mut samples: [Vec<(Duration, Duration, Duration)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, vmm) in vmms.iter().enumerate() {
            let (sample, _vm) = api_restore(vmm, work, &files[i].0, &files[i].1);
            samples[i].push(sample);
        }
    }
    for (i, vmm) in vmms.iter().enumerate() {
        let mut to_running: Vec<Duration> = samples[i].iter().map(|s| s.0).collect();
        let mut load: Vec<Duration> = samples[i].iter().map(|s| s.1).collect();
        let mut line: Vec<Duration> = samples[i].iter().map(|s| s.2).collect();
        println!(
            "snapshot: {:<11} restore {mib:>5} MiB: process start -> load answered (running) {} | load request alone {} | start -> next guest line {}",
            vmm.name,
            ms_of(&mut to_running),
            ms_of(&mut load),
            ms_of(&mut line)
        );
        let _ = std::fs::remove_file(&files[i].1);
    }
}

/// Full snapshot create of a `mib` guest that touched `touched_mib`, both
/// VMMs' VMs alive at once, requests interleaved.
fn compare_full(vmms: &[process::Vmm; 2], work: &Path, mib: u64, touched_mib: u64, runs: usize) {
    let mut vms: Vec<ApiVm> = vmms
        .iter()
        .map(|vmm| ApiVm::boot(vmm, work, mib, touched_mib, false, "count"))
        .collect();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut written = [0u64; 2];
    for _ in 0..runs {
        for (i, vmm) in vmms.iter().enumerate() {
            let mem = work.join(format!("{}-full.mem", vmm.name));
            let (took, bytes) =
                vms[i].snapshot(&work.join(format!("{}-full.state", vmm.name)), &mem, "Full");
            times[i].push(took);
            written[i] = bytes;
        }
    }
    for (i, vmm) in vmms.iter().enumerate() {
        println!(
            "snapshot: {:<11} full snapshot of a {mib} MiB guest that touched {touched_mib} MiB: {} ({:.1} MiB on disk)",
            vmm.name,
            ms_of(&mut times[i]),
            written[i] as f64 / MIB as f64
        );
        let _ = std::fs::remove_file(work.join(format!("{}-full.mem", vmm.name)));
    }
}

/// Diff snapshots of a 128 MiB guest after it rewrote 1 MiB of its
/// memory (`count-touch:1024`, one more line), both VMMs.
fn compare_diff(vmms: &[process::Vmm; 2], work: &Path, runs: usize) {
    let mut vms: Vec<ApiVm> = vmms
        .iter()
        .map(|vmm| {
            let mut vm = ApiVm::boot(vmm, work, 128, 10, true, "count-touch:1024");
            vm.snapshot(
                &work.join(format!("{}-base.state", vmm.name)),
                &work.join(format!("{}-base.mem", vmm.name)),
                "Full",
            );
            vm
        })
        .collect();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut written = [0u64; 2];
    for _ in 0..runs {
        for (i, vmm) in vmms.iter().enumerate() {
            // The guest rewrites its 1 MiB before each line: one more
            // line after the resume, and that 1 MiB is dirty.
            let lines = vms[i].vm.count("count:");
            vms[i].resume();
            vms[i]
                .vm
                .wait_lines("count:", lines + 1, Duration::from_secs(10));
            vms[i].pause();
            let mem = work.join(format!("{}-diff.mem", vmm.name));
            let _ = std::fs::remove_file(&mem);
            let (took, bytes) =
                vms[i].snapshot(&work.join(format!("{}-diff.state", vmm.name)), &mem, "Diff");
            times[i].push(took);
            written[i] = bytes;
        }
    }
    for (i, vmm) in vmms.iter().enumerate() {
        println!(
            "snapshot: {:<11} diff snapshot of a 128 MiB guest after it rewrote 1 MiB: {} ({:.2} MiB on disk)",
            vmm.name,
            ms_of(&mut times[i]),
            written[i] as f64 / MIB as f64
        );
    }
}

/// Four clones of one 128 MiB snapshot (10 MiB touched) per VMM: memory
/// per clone.
fn compare_clones(vmms: &[process::Vmm; 2], work: &Path) {
    const CLONES: usize = 4;
    for vmm in vmms {
        let (state, mem) = (
            work.join(format!("{}-clones.state", vmm.name)),
            work.join(format!("{}-clones.mem", vmm.name)),
        );
        ApiVm::boot(vmm, work, 128, 10, false, "count").snapshot(&state, &mem, "Full");
        let clones: Vec<process::Process> = (0..CLONES)
            .map(|_| api_restore(vmm, work, &state, &mem).1)
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let sum = |field| clones.iter().map(|c| c.smaps(field)).sum::<u64>() / CLONES as u64;
        println!(
            "snapshot: {:<11} {CLONES} clones of a 128 MiB snapshot (10 MiB touched): per clone RSS {} KiB, PSS {} KiB, private dirty {} KiB",
            vmm.name,
            sum("Rss:"),
            sum("Pss:"),
            sum("Private_Dirty:")
        );
        drop(clones);
        let _ = std::fs::remove_file(&mem);
    }
}

/// The process-level comparison with the VMM of `KINDLING_COMPARE_VMM`.
fn compare(runs: usize) {
    let what = format!("through the API, {runs} interleaved runs each");
    let Some(comparison) = process::Comparison::start("snapshot", &what) else {
        return;
    };
    let (vmms, work) = (&comparison.vmms, &comparison.work);
    for mib in [128, 1024, 4096] {
        compare_restore(vmms, work, mib, runs);
    }
    compare_full(vmms, work, 128, 10, runs);
    compare_full(vmms, work, 2048, 10, runs.min(5));
    compare_diff(vmms, work, runs);
    compare_clones(vmms, work);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this once
    // with no argument: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("snapshot benchmark: run it with cargo bench");
        return;
    }
    if std::env::var("KINDLING_COMPARE_ONLY").as_deref() == Ok("1") {
        compare(env_runs());
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
    compare(env_runs());
}

/// `KINDLING_COMPARE_RUNS`, default 10.
fn env_runs() -> usize {
    std::env::var("KINDLING_COMPARE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}
