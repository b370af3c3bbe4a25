//! Criterion benchmark of the seccomp filters' cost at start-up: compiling
//! each built-in list to BPF (what the first thread of a kind does once
//! per process), installing each compiled filter on a new thread (the
//! kernel's work: checking, converting and JIT-compiling the program, and
//! running it for every system call number; the vCPU thread does it on
//! the way to the guest), and the system call overhead a filter adds
//! (`gettid`, on every list, unfiltered against filtered, on a thread of
//! the benchmark).

use criterion::{criterion_group, criterion_main, Criterion};
use kindling::vmm::seccomp::{compile, install_filter, rules_for, ThreadKind};

fn compile_filters(c: &mut Criterion) {
    let mut group = c.benchmark_group("seccomp_compile");
    for kind in ThreadKind::ALL {
        group.bench_function(kind.name(), |b| {
            b.iter(|| compile(rules_for(kind)).expect("the built-in list compiles"))
        });
    }
    group.finish();
}

/// Nanoseconds per `gettid` on a new thread, after `setup` ran on it.
fn gettid_ns(setup: impl FnOnce() + Send) -> f64 {
    const CALLS: u32 = 1_000_000;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setup();
                let start = std::time::Instant::now();
                for _ in 0..CALLS {
                    // SAFETY: gettid has no arguments and cannot fail.
                    unsafe { libc::syscall(libc::SYS_gettid) };
                }
                start.elapsed().as_nanos() as f64 / f64::from(CALLS)
            })
            .join()
            .expect("the measuring thread")
    })
}

/// Not a criterion benchmark: criterion writes its results to files, which
/// the filter forbids; the filter stays on the measuring thread, which ends.
fn filtered_syscall(_: &mut Criterion) {
    for kind in [ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::Api] {
        let program = compile(rules_for(kind)).expect("compiles");
        let unfiltered = gettid_ns(|| {});
        let filtered = gettid_ns(|| install_filter(kind, &program).expect("installs"));
        println!(
            "seccomp_syscall/{}: gettid {unfiltered:.0} ns unfiltered, {filtered:.0} ns filtered",
            kind.name()
        );
    }
}

/// Microseconds of the calling thread's CPU time (which, unlike the wall
/// clock, a busy machine does not inflate by preempting the thread).
fn thread_cpu_us() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 * 1e6 + now.tv_nsec as f64 / 1e3
}

/// Not a criterion benchmark: each installation needs a new thread (a
/// filter cannot be removed). Median and 10th percentile of the thread
/// CPU time of `install_filter` over 200 new threads.
fn install_filters(_: &mut Criterion) {
    const THREADS: usize = 200;
    for kind in ThreadKind::ALL {
        let program = compile(rules_for(kind)).expect("compiles");
        let mut times: Vec<f64> = (0..THREADS)
            .map(|_| {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            let start = thread_cpu_us();
                            install_filter(kind, &program).expect("installs");
                            thread_cpu_us() - start
                        })
                        .join()
                        .expect("the installing thread")
                })
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "seccomp_install/{}: {} instructions, median {:.1} us, p10 {:.1} us of thread CPU time",
            kind.name(),
            program.len(),
            times[THREADS / 2],
            times[THREADS / 10]
        );
    }
}

criterion_group!(benches, compile_filters, install_filters, filtered_syscall);
criterion_main!(benches);
