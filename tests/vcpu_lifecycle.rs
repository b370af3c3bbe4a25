//! vCPU threads on /dev/kvm: pause, resume and stop never wait on the
//! guest. (vCPU and VM state save and restore: tests/persist.rs.)

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kvm_available, wait_until};
use kindling::memory::{create_guest_memory, Backing, GuestRam, MemoryConfig};
use kindling::vcpu::{Kvm, Vcpu, VcpuExitHandler, VcpuHandle, VcpuRunState, VcpuStopReason, Vm};
use vm_memory::{Bytes, GuestAddress};

/// Counts port writes.
#[derive(Default)]
struct Counter(AtomicU64);

impl VcpuExitHandler for Counter {
    fn pio_read(&self, _: u16, _: &mut [u8]) {}
    fn pio_write(&self, _: u16, _: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn mmio_read(&self, _: u64, _: &mut [u8]) {}
    fn mmio_write(&self, _: u64, _: &[u8]) {}
}

/// A VM whose only vCPU runs 16-bit `code` at 0x1000 in real mode.
fn real_mode_vm(code: &[u8]) -> (Kvm, Vm, Vcpu, GuestRam) {
    let kvm = Kvm::new().unwrap();
    let ram = create_guest_memory(&MemoryConfig {
        size_mib: 2,
        backing: Backing::Anonymous,
    })
    .unwrap();
    ram.memory.write_slice(code, GuestAddress(0x1000)).unwrap();
    let vm = Vm::new(&kvm, &ram.memory).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    vcpu.configure(&kvm, 1, None).unwrap();
    let mut sregs = vcpu.fd().get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.fd().set_sregs(&sregs).unwrap();
    let mut regs = vcpu.fd().get_regs().unwrap();
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.fd().set_regs(&regs).unwrap();
    (kvm, vm, vcpu, ram)
}

/// `out 0xf5, al; cli; hlt; jmp $-2`: one exit, then halted for good.
const OUT_THEN_HLT: &[u8] = &[0xe6, 0xf5, 0xfa, 0xf4, 0xeb, 0xfd];
/// `out 0xf5, al; jmp $-4`: exits forever.
const OUT_LOOP: &[u8] = &[0xe6, 0xf5, 0xeb, 0xfc];

#[test]
fn stopping_a_halted_vcpu_does_not_wait_for_the_guest() {
    if !kvm_available("stopping_a_halted_vcpu_does_not_wait_for_the_guest") {
        return;
    }
    let (_kvm, _vm, vcpu, _ram) = real_mode_vm(OUT_THEN_HLT);
    let counter = Arc::new(Counter::default());
    let handle = VcpuHandle::spawn(vcpu, counter.clone(), Box::new(|_, _| {})).unwrap();
    wait_until("the first exit", || counter.0.load(Ordering::SeqCst) == 1);
    // The guest now sits in HLT with interrupts off, forever.
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    let (vcpu, result) = handle.join();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(result.unwrap(), VcpuStopReason::Stopped);
    assert!(vcpu.is_some());
}

#[test]
fn pause_and_resume_a_busy_vcpu() {
    if !kvm_available("pause_and_resume_a_busy_vcpu") {
        return;
    }
    let (_kvm, _vm, vcpu, _ram) = real_mode_vm(OUT_LOOP);
    let counter = Arc::new(Counter::default());
    let stopped = Arc::new(AtomicU64::new(0));
    let stopped_in_cb = stopped.clone();
    let handle = VcpuHandle::spawn(
        vcpu,
        counter.clone(),
        Box::new(move |_, _| {
            stopped_in_cb.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    wait_until("exits", || counter.0.load(Ordering::SeqCst) > 10);
    handle.pause();
    assert_eq!(handle.state(), VcpuRunState::Paused);
    let frozen = counter.0.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(counter.0.load(Ordering::SeqCst), frozen, "paused vCPU ran");
    handle.resume();
    wait_until("exits after resume", || {
        counter.0.load(Ordering::SeqCst) > frozen + 10
    });
    let (_vcpu, result) = handle.join();
    assert_eq!(result.unwrap(), VcpuStopReason::Stopped);
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "on_stop runs once");
}

#[test]
fn a_parked_vcpu_saves_its_state_on_its_own_thread() {
    if !kvm_available("a_parked_vcpu_saves_its_state_on_its_own_thread") {
        return;
    }
    let (_kvm, _vm, vcpu, _ram) = real_mode_vm(OUT_LOOP);
    let counter = Arc::new(Counter::default());
    // Spawned paused: the guest does not run until resumed.
    let handle = VcpuHandle::spawn_paused(vcpu, counter.clone(), Box::new(|_, _| {})).unwrap();
    wait_until("parked", || handle.state() == VcpuRunState::Paused);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(counter.0.load(Ordering::SeqCst), 0, "a paused spawn ran");
    let before = handle.save_state().unwrap();
    assert_eq!(before.regs.rip, 0x1000);
    let thread = handle
        .run_parked(|_| std::thread::current().name().map(str::to_string))
        .unwrap();
    assert_eq!(thread.as_deref(), Some("vcpu0"));

    handle.resume();
    wait_until("exits", || counter.0.load(Ordering::SeqCst) > 10);
    // Not parked: refused, with the reason.
    let err = handle.save_state().unwrap_err();
    assert!(err.to_string().contains("pause it first"), "{err}");
    handle.pause();
    let after = handle.save_state().unwrap();
    assert!(
        (0x1000..0x1004).contains(&after.regs.rip),
        "{:#x}",
        after.regs.rip
    );
    // The vCPU is still parked after a save.
    let frozen = counter.0.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(counter.0.load(Ordering::SeqCst), frozen);
    handle.stop();
    wait_until("finished", || handle.state() == VcpuRunState::Finished);
    assert!(handle.save_state().is_err());
    let (_vcpu, result) = handle.join();
    assert_eq!(result.unwrap(), VcpuStopReason::Stopped);
}

#[test]
fn a_vcpus_fault_report_says_where_it_is() {
    if !kvm_available("a_vcpus_fault_report_says_where_it_is") {
        return;
    }
    // (A real triple fault is not provoked: this host's nested KVM
    // emulates real mode and spins on one instead of exiting.)
    let (_kvm, _vm, vcpu, _ram) = real_mode_vm(OUT_LOOP);
    let report = vcpu.fault_report();
    assert!(report.contains("rip=0x1000 "), "{report}");
    assert!(report.contains("cs=0x0 "), "{report}");
    assert!(report.contains("exception=0/0 pending=0"), "{report}");
    assert!(!report.contains("reset state"), "{report}");
}

#[test]
fn a_fault_report_in_the_reset_state_says_the_faulting_state_is_lost() {
    if !kvm_available("a_fault_report_in_the_reset_state_says_the_faulting_state_is_lost") {
        return;
    }
    // A vCPU as KVM creates it is in the reset state, as an AMD host's KVM
    // leaves one after a triple fault.
    let (_kvm, _vm, vcpu, _ram) = real_mode_vm(OUT_LOOP);
    let mut sregs = vcpu.fd().get_sregs().unwrap();
    sregs.cs.selector = 0xf000;
    sregs.cs.base = 0xffff_0000;
    vcpu.fd().set_sregs(&sregs).unwrap();
    let mut regs = vcpu.fd().get_regs().unwrap();
    regs.rip = 0xfff0;
    vcpu.fd().set_regs(&regs).unwrap();
    let report = vcpu.fault_report();
    assert!(report.starts_with("rip=0xfff0 "), "{report}");
    assert!(
        report.ends_with("so where the guest faulted is lost)"),
        "{report}"
    );
}

/// Ends the VM at the first port write, as a debug-exit or power-off
/// device does.
#[derive(Default)]
struct EndsAtFirstWrite(AtomicU64);

impl VcpuExitHandler for EndsAtFirstWrite {
    fn pio_read(&self, _: u16, _: &mut [u8]) {}
    fn pio_write(&self, _: u16, _: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn mmio_read(&self, _: u64, _: &mut [u8]) {}
    fn mmio_write(&self, _: u64, _: &[u8]) {}
    fn vm_ending(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

#[test]
fn a_vcpu_runs_no_guest_code_after_the_exit_that_ended_the_vm() {
    if !kvm_available("a_vcpu_runs_no_guest_code_after_the_exit_that_ended_the_vm") {
        return;
    }
    // The guest writes the port in a loop: without the check it would
    // exit again and again until stopped from outside.
    let (_kvm, _vm, vcpu, _ram) = real_mode_vm(OUT_LOOP);
    let handler = Arc::new(EndsAtFirstWrite::default());
    let handle = VcpuHandle::spawn(vcpu, handler.clone(), Box::new(|_, _| {})).unwrap();
    wait_until("the vCPU thread ends by itself", || {
        handle.state() == VcpuRunState::Finished
    });
    let (_vcpu, result) = handle.join();
    assert_eq!(result.unwrap(), VcpuStopReason::Stopped);
    assert_eq!(handler.0.load(Ordering::SeqCst), 1, "guest code ran on");
}
