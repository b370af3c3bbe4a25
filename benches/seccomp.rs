//! Criterion benchmark of the seccomp filters' cost at start-up: compiling
//! each built-in list to BPF (what the first thread of a kind does once
//! per process), and the system call overhead a filter adds (`getppid`, not
//! on any list, measured unfiltered, against `gettid`, on every list, under
//! the vCPU filter on a thread of the benchmark).

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

criterion_group!(benches, compile_filters, filtered_syscall);
criterion_main!(benches);
