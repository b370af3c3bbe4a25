//! Criterion benchmark of the VM-exit path on /dev/kvm.
//!
//! The embedded test guest runs in its `pio-loop` mode: from ring 3 (native
//! speed on these machines, see DESIGN.md §3) it writes to port 0xf5
//! forever, so every benchmark iteration is exactly one port-I/O exit.
//!
//! - `pio_exit/raw_kvm_run`: one bare `KVM_RUN` round trip, the exit
//!   ignored;
//! - `pio_exit/bus_dispatch`: one round trip through `Vcpu::run_once`, the
//!   reference VMM's `BusExitHandler` and the PIO bus to a device.
//!
//! The difference is what Kindling adds on top of KVM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion};
use kindling::devices::BusDevice;
use kindling::memory::{create_guest_memory, Backing, GuestRam, MemoryConfig};
use kindling::vcpu::{BootEntry, Kvm, Vcpu, Vm};
use kindling::vmm::BusExitHandler;

const BENCH_PORT: u64 = kindling_test_guest::BENCH_PORT as u64;

/// Counts the writes it receives.
#[derive(Default)]
struct Sink(Arc<AtomicU64>);

impl BusDevice for Sink {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn pio_loop_vm() -> Option<(Kvm, Vm, Vcpu, GuestRam)> {
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            eprintln!("exit_path: skipped: {e}");
            return None;
        }
    };
    let ram = create_guest_memory(&MemoryConfig {
        size_mib: 128,
        backing: Backing::Anonymous,
    })
    .unwrap();
    let mut kernel = std::io::Cursor::new(kindling_test_guest::TEST_GUEST_ELF);
    let boot =
        kindling::boot::load_linux(&ram.memory, &mut kernel, None, "kindling.test=pio-loop", 1)
            .unwrap();
    let vm = Vm::new(&kvm, &ram.memory).unwrap();
    let entry = BootEntry::linux64(&ram.memory, boot.entry, boot.zero_page).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    vcpu.configure(&kvm, 1, Some(entry)).unwrap();
    Some((kvm, vm, vcpu, ram))
}

fn bench_exits(c: &mut Criterion) {
    let Some((_kvm, _vm, mut vcpu, _ram)) = pio_loop_vm() else {
        return;
    };
    let count = Arc::new(AtomicU64::new(0));
    let mut handler = BusExitHandler::default();
    handler
        .pio
        .insert(BENCH_PORT, 1, Arc::new(Mutex::new(Sink(count.clone()))))
        .unwrap();
    // Run through the ring-0 prologue until the loop is reached.
    while count.load(Ordering::Relaxed) < 10 {
        vcpu.run_once(&handler).unwrap();
    }
    let mut group = c.benchmark_group("pio_exit");
    group.bench_function("raw_kvm_run", |b| {
        b.iter(|| {
            vcpu.fd_mut().run().unwrap();
        })
    });
    group.bench_function("bus_dispatch", |b| {
        b.iter(|| {
            vcpu.run_once(&handler).unwrap();
        })
    });
    group.finish();
    assert!(count.load(Ordering::Relaxed) > 10);
}

criterion_group!(benches, bench_exits);
criterion_main!(benches);
