//! Guest-driven virtio-vsock throughput and round-trip latency (not a
//! criterion benchmark: one guest run per measurement).
//!
//! - Throughput: the test guest's `vsock-connect:PORT:N` sends `N` bytes
//!   to a host listener at `<uds>_<PORT>`, which echoes them, while the
//!   guest reads the echo: `N` bytes each way at once. The host times the
//!   stream from its `accept` to end of file and samples the VMM
//!   process's CPU time (all threads) at both ends.
//! - Latency: the guest's `vsock-listen:PORT` echoes; a host process
//!   connects through `<uds>` with `CONNECT <PORT>\n` and sends 64-byte
//!   messages one at a time, waiting for each echo: the round-trip time
//!   host → device → guest → device → host.
//!
//! The guest's driver loop runs in ring 3 and polls (no interrupts): a
//! round trip is the event loop's wake-ups plus one queue notification
//! (an ioeventfd) for the guest's send.
//!
//! `cargo bench -p kindling-benches --bench virtio_vsock`;
//! `KINDLING_VSOCK_BENCH_MIB` (default 256) and
//! `KINDLING_VSOCK_BENCH_ROUND_TRIPS` (default 20000) size the runs. Under
//! `cargo test` it runs both with a little data, as a smoke test.
//!
//! With `KINDLING_COMPARE_VMM=/path/to/firecracker` it then runs both
//! workloads under two processes, Kindling's release `microvm` and that
//! VMM, configured by the same Firecracker config file (same guest, same
//! command line ending in `kindling.exit=reset`), interleaved,
//! `KINDLING_COMPARE_RUNS` times each (default 3). There CPU is the VMM
//! process's alone (all its threads, its CPU-time clock),
//! without the host program's echo.

#[path = "common/cpu_stamps.rs"]
mod cpu_stamps;
#[path = "common/vmm_process.rs"]
mod process;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cpu_stamps::cpu_time;
use kindling::vmm::{ExitReason, KernelSource, SerialConfig, VmConfig, Vmm, VsockConfig};

/// Serial output, kept for error messages.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the test guest with `cmdline` and a vsock device on `uds`, and
/// `host` on its own thread meanwhile.
fn run<T: Send + 'static>(
    cmdline: String,
    uds: &Path,
    host: impl FnOnce() -> T + Send + 'static,
) -> Option<(T, String)> {
    let serial = Capture::default();
    let vmm = match Vmm::build(VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline,
        memory_mib: 64,
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: uds.to_path_buf(),
        }),
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        debug_exit: true,
        ..VmConfig::default()
    }) {
        Ok(vmm) => vmm,
        Err(e) => {
            println!("virtio_vsock: skipped: {e}");
            return None;
        }
    };
    let host = thread::spawn(host);
    let reason = vmm.run().expect("running the benchmark guest");
    let text = String::from_utf8_lossy(&serial.0.lock().unwrap()).into_owned();
    let result = host.join().expect("the host side of the benchmark failed");
    assert_eq!(reason, ExitReason::Status(0), "{text}");
    Some((result, text))
}

fn throughput(dir: &Path, bytes: u64) -> Option<(Duration, Duration)> {
    let uds = dir.join("t.sock");
    let listener = UnixListener::bind(dir.join("t.sock_5000")).unwrap();
    let (timing, serial) = run(
        format!("kindling.test=virtio,vsock-connect:5000:{bytes}"),
        &uds,
        move || {
            let (mut stream, _) = listener.accept().unwrap();
            let (start, cpu) = (Instant::now(), cpu_time());
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).unwrap();
                total += n as u64;
            }
            (total, start.elapsed(), cpu_time().saturating_sub(cpu))
        },
    )?;
    let (total, elapsed, cpu) = timing;
    assert_eq!(total, bytes);
    assert!(
        serial.contains(&format!("sent={bytes} received={bytes}"))
            && serial.contains("mismatches=0"),
        "{serial}"
    );
    let _ = std::fs::remove_file(dir.join("t.sock_5000"));
    Some((elapsed, cpu))
}

fn latency(dir: &Path, round_trips: usize) -> Option<Vec<Duration>> {
    let uds = dir.join("l.sock");
    let path: PathBuf = uds.clone();
    let (times, serial) = run(
        "kindling.test=virtio,vsock-listen:6000".into(),
        &uds,
        move || {
            let mut stream = UnixStream::connect(&path).unwrap();
            stream.write_all(b"CONNECT 6000\n").unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while byte[0] != b'\n' {
                stream.read_exact(&mut byte).unwrap();
                line.push(byte[0]);
            }
            assert!(line.starts_with(b"OK "), "{line:?}");
            let message = [0x42u8; 64];
            let mut echo = [0u8; 64];
            let mut times = Vec::with_capacity(round_trips);
            for _ in 0..round_trips {
                let start = Instant::now();
                stream.write_all(&message).unwrap();
                stream.read_exact(&mut echo).unwrap();
                times.push(start.elapsed());
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            times
        },
    )?;
    assert!(serial.contains("overruns=0"), "{serial}");
    Some(times)
}

/// Starts `vmm` on the test guest with `action` and a vsock device on
/// `uds`.
fn start_process(vmm: &process::Vmm, work: &Path, action: &str, uds: &Path) -> process::Process {
    let _ = std::fs::remove_file(uds);
    let config = work.join("vsock.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": "kindling.test=virtio,{action} kindling.exit=reset"}}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}, "drives": [], "vsock": {{"guest_cid": 3, "uds_path": "{}"}}}}"#,
            work.join("guest.elf").display(),
            uds.display()
        ),
    )
    .expect("writing the config file");
    process::Process::with_config(vmm, &config, work)
}

/// Waits for `vm` to end well.
fn finish(vmm: &process::Vmm, vm: process::Process) -> String {
    let (status, console) = vm.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "{} ended with {status}:\n{console}",
        vmm.name
    );
    console
}

/// The stream echo under `vmm` as a process: (elapsed, VMM CPU time).
fn throughput_process(vmm: &process::Vmm, work: &Path, bytes: u64) -> (Duration, Duration) {
    let uds = work.join("t.sock");
    let listen_path = work.join("t.sock_5000");
    let _ = std::fs::remove_file(&listen_path);
    let listener = UnixListener::bind(&listen_path).expect("binding the host listener");
    let vm = start_process(vmm, work, &format!("vsock-connect:5000:{bytes}"), &uds);
    let (mut stream, _) = listener.accept().expect("accepting the guest's connection");
    let (start, cpu) = (Instant::now(), process::process_cpu(vm.pid()));
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).expect("reading the guest's stream");
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).expect("echoing to the guest");
        total += n as u64;
    }
    let (elapsed, cpu) = (
        start.elapsed(),
        process::process_cpu(vm.pid()).saturating_sub(cpu),
    );
    drop(stream);
    let console = finish(vmm, vm);
    assert_eq!(total, bytes, "{}: {console}", vmm.name);
    assert!(
        console.contains(&format!("sent={bytes} received={bytes}"))
            && console.contains("mismatches=0"),
        "{}: {console}",
        vmm.name
    );
    let _ = std::fs::remove_file(&listen_path);
    (elapsed, cpu)
}

/// Connects through `uds` to guest port `port` (`CONNECT`), retrying
/// while the device is not ready.
fn connect_guest(uds: &Path, port: u32) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "the guest's port {port} never answered"
        );
        let Ok(mut stream) = UnixStream::connect(uds) else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        if stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' && stream.read_exact(&mut byte).is_ok() {
            line.push(byte[0]);
        }
        if line.starts_with(b"OK ") {
            return stream;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The 64-byte round trips under `vmm` as a process.
fn latency_process(vmm: &process::Vmm, work: &Path, round_trips: usize) -> Vec<Duration> {
    let uds = work.join("l.sock");
    let vm = start_process(vmm, work, "vsock-listen:6000", &uds);
    let mut stream = connect_guest(&uds, 6000);
    let message = [0x42u8; 64];
    let mut echo = [0u8; 64];
    let mut times = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let start = Instant::now();
        stream.write_all(&message).expect("sending to the guest");
        stream
            .read_exact(&mut echo)
            .expect("reading the guest's echo");
        times.push(start.elapsed());
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutting down");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let console = finish(vmm, vm);
    assert!(console.contains("overruns=0"), "{}: {console}", vmm.name);
    times
}

/// Kindling's `microvm` and the VMM of `KINDLING_COMPARE_VMM` on both
/// workloads, interleaved.
fn compare(mib: u64, round_trips: usize, runs: usize) {
    let what = format!("{runs} interleaved runs each");
    let Some(comparison) = process::Comparison::start("virtio_vsock", &what) else {
        return;
    };
    let (vmms, work) = (&comparison.vmms, &comparison.work);
    let mut streams: [Vec<(Duration, Duration)>; 2] = [Vec::new(), Vec::new()];
    let mut trips: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, vmm) in vmms.iter().enumerate() {
            streams[i].push(throughput_process(vmm, work, mib << 20));
            trips[i].extend(latency_process(vmm, work, round_trips));
        }
    }
    for (i, vmm) in vmms.iter().enumerate() {
        let mut rates: Vec<u64> = streams[i]
            .iter()
            .map(|(t, _)| (mib as f64 / t.as_secs_f64() * 10.0) as u64)
            .collect();
        let mut cpu: Vec<Duration> = streams[i].iter().map(|(_, c)| *c).collect();
        let all = format!(
            "{:?}",
            rates.iter().map(|r| *r as f64 / 10.0).collect::<Vec<_>>()
        );
        let times = &mut trips[i];
        times.sort_unstable();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        println!(
            "virtio_vsock: {:<11} stream echo {mib} MiB: median {:.1} MiB/s each way (runs {all}), {:.2} s VMM CPU per GiB moved; 64-byte round trip median {:.1} µs, p99 {:.1} µs, min {:.1} µs",
            vmm.name,
            process::median(&mut rates) as f64 / 10.0,
            process::median(&mut cpu).as_secs_f64() / (2.0 * mib as f64 / 1024.0),
            at(0.5),
            at(0.99),
            at(0.0)
        );
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (mib, round_trips) = if smoke {
        (1, 100)
    } else {
        (
            env_or("KINDLING_VSOCK_BENCH_MIB", 256u64),
            env_or("KINDLING_VSOCK_BENCH_ROUND_TRIPS", 20_000usize),
        )
    };
    let dir = std::env::temp_dir().join(format!("kindling-vsock-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = mib << 20;
    if let Some((elapsed, cpu)) = throughput(&dir, bytes) {
        let secs = elapsed.as_secs_f64();
        println!(
            "virtio_vsock: stream echo, {mib} MiB each way: {:.1} MiB/s each way, {:.2} s host CPU per GiB moved (both directions counted)",
            mib as f64 / secs,
            cpu.as_secs_f64() / (2.0 * mib as f64 / 1024.0)
        );
    }
    if let Some(mut times) = latency(&dir, round_trips) {
        times.sort_unstable();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "virtio_vsock: 64-byte round trip host → guest → host, {round_trips} times: median {:.1} µs, p99 {:.1} µs, min {:.1} µs",
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6,
            times[0].as_secs_f64() * 1e6
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let runs = if smoke {
        1
    } else {
        env_or("KINDLING_COMPARE_RUNS", 3usize)
    };
    compare(mib, round_trips, runs);
}
