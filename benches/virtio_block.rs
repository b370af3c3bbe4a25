//! Guest-driven virtio-block throughput (not a criterion benchmark: one
//! guest run per workload).
//!
//! The test guest's `blk-bench` action runs its virtio driver loop in ring 3
//! (native speed; see DESIGN.md §3) against a virtio-block device backed by
//! a file in the temp directory, keeping `QD` requests in flight. The host
//! timestamps the guest's `blk-bench: start` and `blk-bench: done` lines as
//! they arrive on the serial port and samples the VMM process's CPU time
//! (all threads: vCPU, device event loop) at the same moments, and reports
//! IOPS, MiB/s and host CPU time per request. Every workload runs with the
//! synchronous engine and then the io_uring engine (`engine=io_uring`).
//!
//! `cargo bench -p kindling-benches --bench virtio_block`; `KINDLING_BLOCK_BENCH_OPS` sets the
//! requests per workload (default 20000). Under `cargo test` it runs each
//! workload with a few requests, as a smoke test.

#[path = "common/cpu_stamps.rs"]
mod cpu_stamps;

use std::io::Write;
use std::time::Duration;

use cpu_stamps::Stamper;
use kindling::vmm::{
    BlockEngine, DiskConfig, ExitReason, KernelSource, SerialConfig, VmConfig, Vmm,
};

struct Workload {
    name: &'static str,
    mode: &'static str,
    block_size: u32,
    queue_depth: u32,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "4 KiB random read, QD 1",
        mode: "randread",
        block_size: 4096,
        queue_depth: 1,
    },
    Workload {
        name: "4 KiB random read, QD 32",
        mode: "randread",
        block_size: 4096,
        queue_depth: 32,
    },
    Workload {
        name: "64 KiB sequential read, QD 8",
        mode: "seqread",
        block_size: 65536,
        queue_depth: 8,
    },
    Workload {
        name: "64 KiB sequential write, QD 8",
        mode: "seqwrite",
        block_size: 65536,
        queue_depth: 8,
    },
];

fn run(
    disk: &std::path::Path,
    engine: BlockEngine,
    w: &Workload,
    ops: u32,
) -> Option<(Duration, Duration)> {
    let stamper = Stamper::default();
    let cmdline = format!(
        "kindling.test=virtio,blk-bench:0:{}:{}:{}:{}",
        w.mode, w.block_size, w.queue_depth, ops
    );
    let vmm = match Vmm::build(VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline,
        memory_mib: 256,
        disks: vec![DiskConfig {
            path: disk.to_path_buf(),
            read_only: false,
            engine,
            rate_limiter: None,
        }],
        serial: SerialConfig::Writer(Box::new(stamper.clone())),
        debug_exit: true,
        ..VmConfig::default()
    }) {
        Ok(vmm) => vmm,
        Err(e) => {
            println!("virtio_block: skipped: {e}");
            return None;
        }
    };
    let reason = vmm.run().expect("running the benchmark guest");
    let lines = stamper.lines.lock().unwrap();
    let find = |prefix: &str| {
        lines
            .iter()
            .find(|(l, _, _)| l.starts_with(prefix))
            .cloned()
    };
    let (Some(start), Some(done)) = (find("blk-bench: start"), find("blk-bench: done")) else {
        panic!("the guest did not finish ({reason:?}): {:?}", *lines);
    };
    assert_eq!(reason, ExitReason::Status(0), "{:?}", *lines);
    assert!(done.0.ends_with("errors=0"), "{}", done.0);
    Some((done.1 - start.1, done.2.saturating_sub(start.2)))
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let ops: u32 = if smoke {
        64
    } else {
        std::env::var("KINDLING_BLOCK_BENCH_OPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000)
    };
    let disk =
        std::env::temp_dir().join(format!("kindling-block-bench-{}.img", std::process::id()));
    // 64 MiB of non-zero data, so reads come from the page cache, not holes.
    {
        let mut file = std::fs::File::create(&disk).expect("creating the disk image");
        let chunk = vec![0xa5u8; 1 << 20];
        for _ in 0..64 {
            file.write_all(&chunk).expect("writing the disk image");
        }
    }
    println!(
        "virtio_block: {ops} requests per workload, 64 MiB image in {}",
        disk.display()
    );
    // Each workload with both engines in turn, on the same image, so
    // the two see the same page cache and the same machine load.
    'workloads: for w in WORKLOADS {
        for engine in [BlockEngine::Sync, BlockEngine::IoUring] {
            let Some((elapsed, cpu)) = run(&disk, engine, w, ops) else {
                break 'workloads;
            };
            let secs = elapsed.as_secs_f64();
            println!(
                "virtio_block: {:<32} {:<8} {:>9.0} IOPS {:>8.1} MiB/s {:>7.1} µs host CPU/request",
                w.name,
                engine.name(),
                f64::from(ops) / secs,
                f64::from(ops) * f64::from(w.block_size) / secs / (1 << 20) as f64,
                cpu.as_secs_f64() * 1e6 / f64::from(ops)
            );
        }
    }
    let _ = std::fs::remove_file(&disk);
}
