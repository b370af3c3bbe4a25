//! Guest-driven virtio-net throughput (not a criterion benchmark: one
//! guest run per workload), on a TAP device in a network namespace of the
//! benchmark's own (nothing reaches the host's network).
//!
//! Transmit: the test guest's `net-send:N:LEN` loop (ring 3) sends `N`
//! frames of `LEN` bytes; the VMM writes them to the TAP, where the
//! kernel drops them (nothing listens for EtherType 0x88b5). Receive: a
//! host thread writes `N` frames into the TAP through an `AF_PACKET`
//! socket, keeping at most 256 ahead of what the device has delivered (a
//! TAP drops what overflows its queue), and the guest's `net-recv:N:0`
//! takes them (without checksumming them: the guest's bytewise CRC-32
//! would cost more than the device). The host timestamps the guest's `start` and `done` lines
//! and samples the process's CPU time (all threads) then; for receive the
//! sender thread's own CPU time is taken out, so "host CPU per frame" is
//! the VMM's (vCPU thread, event loop, and the kernel work they do in the
//! TAP).
//!
//! TSO: the guest's `net-tso:N:65214` hands over TCP/IPv4 frames of 45
//! segments of 1448 bytes (64 KiB less 322 bytes) whole, asking for
//! segmentation; the VMM writes each into the TAP in one `writev` and the
//! kernel drops it unsegmented (not addressed to this host). The other
//! way, the host thread sends the same frames as GSO frames
//! (`PACKET_VNET_HDR`) once the guest took `GUEST_TSO4`, and the TAP hands
//! them over whole, each into 32 of the guest's mergeable 2 KiB buffers.
//! A quarter as many frames; MiB/s counts TCP payload.
//!
//! `cargo bench -p kindling-benches --bench virtio_net` (as root);
//! `KINDLING_NET_BENCH_FRAMES` sets the frames per workload (default
//! 200000). Under `cargo test` it runs each workload with a few frames,
//! as a smoke test.
//!
//! With `KINDLING_COMPARE_VMM=/path/to/firecracker` it then runs the same
//! guest workloads under two processes, Kindling's release `microvm` and
//! that VMM, both configured by the same Firecracker config file (same
//! guest, same TAP, same command line ending in `kindling.exit=reset`),
//! interleaved, `KINDLING_COMPARE_RUNS` times each (default 5). There the
//! host reads the guest's lines from the VMM's stdout, CPU is the VMM
//! process's (all its threads, its CPU-time clock), and
//! the receive sender keeps its window from the TAP's own transmit
//! counter (frames the VMM has read), as it cannot see the device.

#[path = "common/cpu_stamps.rs"]
mod cpu_stamps;
#[path = "common/vmm_process.rs"]
mod process;
#[path = "../tests/common/tap.rs"]
mod tap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpu_stamps::{thread_cpu_time, Stamper};
use kindling::vmm::{ExitReason, KernelSource, NetConfig, SerialConfig, VmConfig, Vmm};
use tap::{create_tap, tcp_frame, PacketSocket, Vnet, TSO_VNET};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Transmit,
    Receive,
    /// `net-tso`: TCP/IPv4 frames the guest hands over whole for TSO.
    TransmitTso,
    /// GSO TCP/IPv4 frames from the host, taken whole (`GUEST_TSO4`).
    ReceiveTso,
}

/// The TSO workloads' frame: 45 segments of 1448 bytes and 54 bytes of
/// headers, the largest such frame under 64 KiB.
const TSO_FRAME: usize = 54 + 45 * 1448;

/// Frames the host keeps in flight ahead of the device.
const WINDOW: u64 = 256;

/// Runs one workload: (elapsed, VMM CPU time) between the guest's
/// `start` and `done` lines.
fn run(tap: &str, ifindex: i32, dir: Direction, len: usize, frames: u64) -> (Duration, Duration) {
    let stamper = Stamper::default();
    let (action, prefix) = match dir {
        Direction::Transmit => (format!("net-send:{frames}:{len}"), "net-send"),
        Direction::Receive | Direction::ReceiveTso => (format!("net-recv:{frames}:0"), "net-recv"),
        Direction::TransmitTso => (format!("net-tso:{frames}:{len}"), "net-tso"),
    };
    let vmm = Vmm::build(VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: format!("kindling.test=virtio,{action}"),
        memory_mib: 64,
        net: vec![NetConfig::new("eth0", tap)],
        serial: SerialConfig::Writer(Box::new(stamper.clone())),
        debug_exit: true,
        ..VmConfig::default()
    })
    .expect("building the benchmark VM");
    let net = vmm.devices().net[0].1.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let tso = matches!(dir, Direction::ReceiveTso);
    let sender = matches!(dir, Direction::Receive | Direction::ReceiveTso).then(|| {
        let sock = PacketSocket::new(ifindex, 100).expect("packet socket");
        if tso {
            // Room for the whole window of 64 KiB frames in the TAP.
            sock.set_send_buffer(64 << 20).expect("a send buffer");
        }
        let (net, stop, lines) = (net.clone(), stop.clone(), stamper.lines.clone());
        std::thread::spawn(move || {
            // GSO frames only once the guest took GUEST_TSO4 (the TAP
            // would segment them before): after its `start` line.
            while tso && !stop.load(Ordering::Relaxed) {
                if lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(l, _, _)| l.starts_with("net-recv: start"))
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let (mut frame, header) = receive_frame(len, tso);
            let mut sent = 0u64;
            let mut delivered = 0u64;
            while sent < frames && !stop.load(Ordering::Relaxed) {
                if sent - delivered >= WINDOW {
                    delivered = net.lock().unwrap().counters().rx_frames;
                    if sent - delivered >= WINDOW {
                        std::thread::yield_now();
                    }
                    continue;
                }
                if !tso {
                    frame[14..22].copy_from_slice(&sent.to_le_bytes());
                }
                sock.send(header, &frame).expect("sending a frame");
                sent += 1;
            }
            thread_cpu_time()
        })
    });
    let reason = vmm.run().expect("running the benchmark guest");
    stop.store(true, Ordering::Relaxed);
    let sender_cpu = sender.map_or(Duration::ZERO, |s| s.join().unwrap());
    let lines = stamper.lines.lock().unwrap();
    let find = |p: &str| lines.iter().find(|(l, _, _)| l.starts_with(p)).cloned();
    let (Some(start), Some(done)) = (
        find(&format!("{prefix}: start")),
        find(&format!("{prefix}: done")),
    ) else {
        panic!("the guest did not finish ({reason:?}): {:?}", *lines);
    };
    assert_eq!(reason, ExitReason::Status(0), "{:?}", *lines);
    assert!(
        done.0
            .starts_with(&format!("{prefix}: done frames={frames} ")),
        "{}",
        done.0
    );
    let c = net.lock().unwrap().counters();
    match dir {
        Direction::Transmit | Direction::TransmitTso => assert_eq!(c.tx_frames, frames),
        Direction::Receive | Direction::ReceiveTso => {
            assert_eq!((c.rx_frames, c.rx_dropped), (frames, 0))
        }
    }
    (
        done.1 - start.1,
        done.2.saturating_sub(start.2).saturating_sub(sender_cpu),
    )
}

/// Frames the VMM has read from the TAP `name` so far: the TAP's transmit
/// counter, from the calling thread's network namespace.
fn tap_frames_read(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|fields| fields.split_whitespace().nth(9)?.parse().ok())
        .unwrap_or(0)
}

/// A receive workload's frame of `len` bytes to the guest's MAC, and its
/// vnet header: a test-EtherType frame (its sequence number goes at byte
/// 14), or with `tso` a TCP/IPv4 frame for the guest to take whole.
fn receive_frame(len: usize, tso: bool) -> (Vec<u8>, Vnet) {
    let (guest, host) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
    if tso {
        let ips = [169, 254, 1, 1, 169, 254, 1, 2];
        return (tcp_frame(guest, host, ips, 0, 0, len - 54), TSO_VNET);
    }
    let mut frame = vec![0u8; len];
    frame[..6].copy_from_slice(&guest);
    frame[6..12].copy_from_slice(&host);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    (frame, Vnet::default())
}

/// Writes `frames` frames of `len` bytes into the TAP for a VMM in another
/// process, at most `WINDOW` ahead of what it has read.
fn send_frames(tap: &str, ifindex: i32, len: usize, frames: u64, tso: bool) {
    let sock = PacketSocket::new(ifindex, 100).expect("packet socket");
    let (mut frame, header) = receive_frame(len, tso);
    if tso {
        // Room for the whole window of 64 KiB frames in the TAP.
        sock.set_send_buffer(64 << 20).expect("a send buffer");
    }
    let base = tap_frames_read(tap);
    let mut delivered = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    for sent in 0..frames {
        while sent - delivered >= WINDOW {
            assert!(Instant::now() < deadline, "the VMM stopped reading the TAP");
            delivered = tap_frames_read(tap) - base;
            if sent - delivered >= WINDOW {
                std::thread::yield_now();
            }
        }
        if !tso {
            frame[14..22].copy_from_slice(&sent.to_le_bytes());
        }
        sock.send(header, &frame).expect("sending a frame");
    }
}

/// One workload under `vmm` as a separate process: (elapsed, VMM CPU
/// time) between the guest's `start` and `done` lines.
fn run_process(
    vmm: &process::Vmm,
    work: &std::path::Path,
    tap: &str,
    ifindex: i32,
    dir: Direction,
    len: usize,
    frames: u64,
) -> (Duration, Duration) {
    let (action, prefix) = match dir {
        Direction::Transmit => (format!("net-send:{frames}:{len}"), "net-send"),
        Direction::Receive | Direction::ReceiveTso => (format!("net-recv:{frames}:0"), "net-recv"),
        Direction::TransmitTso => (format!("net-tso:{frames}:{len}"), "net-tso"),
    };
    let kernel = work.join("guest.elf");
    let config = work.join("net.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": "kindling.test=virtio,{action} kindling.exit=reset"}}, "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}}, "drives": [], "network-interfaces": [{{"iface_id": "eth0", "host_dev_name": "{tap}", "guest_mac": "06:00:ac:10:00:02"}}]}}"#,
            kernel.display()
        ),
    )
    .expect("writing the config file");
    let vm = process::Process::with_config(vmm, &config, work);
    let timeout = Duration::from_secs(120);
    vm.wait_lines(&format!("{prefix}: start"), 1, timeout);
    // (After the guest's `start` line: by then it took GUEST_TSO4, so the
    // TAP hands GSO frames over whole.)
    if matches!(dir, Direction::Receive | Direction::ReceiveTso) {
        send_frames(tap, ifindex, len, frames, dir == Direction::ReceiveTso);
    }
    vm.wait_lines(&format!("{prefix}: done"), 1, timeout);
    let start = vm.find(&format!("{prefix}: start")).unwrap();
    let done = vm.find(&format!("{prefix}: done")).unwrap();
    assert!(
        done.text
            .contains(&format!("{prefix}: done frames={frames} ")),
        "{}: {}",
        vmm.name,
        done.text
    );
    let (status, console) = vm.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "{} ended with {status}:\n{console}",
        vmm.name
    );
    (done.at - start.at, done.cpu.saturating_sub(start.cpu))
}

/// Kindling's `microvm` and the VMM of `KINDLING_COMPARE_VMM` on the same
/// workloads, interleaved.
fn compare(tap: &str, ifindex: i32, frames: u64, runs: usize) {
    let what = format!("{frames} frames, {runs} interleaved runs each");
    let Some(comparison) = process::Comparison::start("virtio_net", &what) else {
        return;
    };
    let (vmms, work) = (&comparison.vmms, &comparison.work);
    // (direction, label, frame length, frames, payload bytes per frame):
    // the TSO frames are 64 KiB TCP/IPv4 ones, a quarter as many, and
    // MiB/s counts their TCP payload.
    let tso_frames = (frames / 4).max(1);
    let workloads = [
        (Direction::Transmit, "TX", 64, frames, 64),
        (Direction::Transmit, "TX", 1500, frames, 1500),
        (Direction::Receive, "RX", 64, frames, 64),
        (Direction::Receive, "RX", 1500, frames, 1500),
        (
            Direction::TransmitTso,
            "TX TSO",
            TSO_FRAME,
            tso_frames,
            TSO_FRAME - 54,
        ),
        (
            Direction::ReceiveTso,
            "RX TSO",
            TSO_FRAME,
            tso_frames,
            TSO_FRAME - 54,
        ),
    ];
    for (dir, name, len, frames, payload) in workloads {
        let mut results: [Vec<(Duration, Duration)>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (vmm, out) in vmms.iter().zip(results.iter_mut()) {
                out.push(run_process(vmm, work, tap, ifindex, dir, len, frames));
            }
        }
        for (vmm, out) in vmms.iter().zip(results) {
            let mut fps: Vec<u64> = out
                .iter()
                .map(|(t, _)| (frames as f64 / t.as_secs_f64()) as u64)
                .collect();
            let mut cpu: Vec<Duration> = out.iter().map(|(_, c)| *c).collect();
            let fps_all = format!("{fps:?}");
            let fps = process::median(&mut fps);
            println!(
                "virtio_net: {:<11} {name} {len:>5} B median {fps:>9} frames/s {:>8.1} MiB/s {:>6.2} µs host CPU/frame (runs: {fps_all} frames/s)",
                vmm.name,
                fps as f64 * payload as f64 / (1 << 20) as f64,
                process::median(&mut cpu).as_secs_f64() * 1e6 / frames as f64,
            );
        }
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    if !std::path::Path::new("/dev/kvm").exists() || unsafe { libc::geteuid() } != 0 {
        println!("virtio_net: skipped: needs /dev/kvm and root (for a TAP in a namespace)");
        return;
    }
    let frames: u64 = if smoke {
        500
    } else {
        std::env::var("KINDLING_NET_BENCH_FRAMES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000)
    };
    let ifindex = create_tap("kdlbench0").expect("creating the TAP");
    println!("virtio_net: {frames} frames per workload, TAP in a private network namespace");
    for (dir, name) in [(Direction::Transmit, "TX"), (Direction::Receive, "RX")] {
        for len in [64usize, 1500] {
            let (elapsed, cpu) = run("kdlbench0", ifindex, dir, len, frames);
            let secs = elapsed.as_secs_f64();
            println!(
                "virtio_net: {name} {len:>4} B {:>10.0} frames/s {:>8.1} MiB/s {:>6.2} µs host CPU/frame",
                frames as f64 / secs,
                frames as f64 * len as f64 / secs / (1 << 20) as f64,
                cpu.as_secs_f64() * 1e6 / frames as f64
            );
        }
    }
    // TSO: 64 KiB TCP/IPv4 frames, a quarter as many; MiB/s counts TCP
    // payload, segments are the 1448-byte ones the frames stand for.
    let tso_frames = (frames / 4).max(1);
    for (dir, name) in [
        (Direction::TransmitTso, "TX"),
        (Direction::ReceiveTso, "RX"),
    ] {
        let (elapsed, cpu) = run("kdlbench0", ifindex, dir, TSO_FRAME, tso_frames);
        let (secs, n) = (elapsed.as_secs_f64(), tso_frames as f64);
        let mib = n * (TSO_FRAME - 54) as f64 / (1 << 20) as f64;
        println!(
            "virtio_net: {name} TSO 64 KiB {:>7.0} frames/s {:>8.0} segments/s {:>8.1} MiB/s {:>6.2} µs host CPU/frame {:>6.1} µs host CPU/MiB",
            n / secs,
            n * 45.0 / secs,
            mib / secs,
            cpu.as_secs_f64() * 1e6 / n,
            cpu.as_secs_f64() * 1e6 / mib
        );
    }
    let runs = if smoke {
        1
    } else {
        std::env::var("KINDLING_COMPARE_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    };
    compare("kdlbench0", ifindex, frames, runs);
}
