//! Dirty-page tracking on /dev/kvm: a page the guest writes and a page the
//! VMM writes through vm-memory are both reported dirty; others are not.

mod common;

use common::kvm_available;
use kindling::memory::{create_guest_memory, Backing, MemoryConfig};
use kindling::vcpu::{Kvm, VcpuExitHandler, Vm, VmOptions};
use vm_memory::{Bytes, GuestAddress};

struct Ignore;

impl VcpuExitHandler for Ignore {
    fn pio_read(&self, _: u16, _: &mut [u8]) {}
    fn pio_write(&self, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: u64, _: &mut [u8]) {}
    fn mmio_write(&self, _: u64, _: &[u8]) {}
}

/// `mov byte [0x5000], 0x42; out 0xf5, al; cli; hlt; jmp $-2`
const WRITE_THEN_OUT: &[u8] = &[
    0xc6, 0x06, 0x00, 0x50, 0x42, 0xe6, 0xf5, 0xfa, 0xf4, 0xeb, 0xfd,
];

fn guest_and_vmm_writes(dirty_log: bool) -> kindling::memory::DirtyBitmap {
    let kvm = Kvm::new().unwrap();
    let ram = create_guest_memory(&MemoryConfig {
        size_mib: 2,
        backing: Backing::Anonymous,
    })
    .unwrap();
    ram.memory
        .write_slice(WRITE_THEN_OUT, GuestAddress(0x1000))
        .unwrap();
    let options = VmOptions {
        dirty_log,
        ..VmOptions::default()
    };
    let vm = Vm::with_options(&kvm, &ram.memory, &options).unwrap();
    assert_eq!(vm.dirty_log_enabled(), dirty_log);
    let mut vcpu = vm.create_vcpu(0).unwrap();
    vcpu.configure(&kvm, 1, None).unwrap();
    let mut sregs = vcpu.fd().get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    vcpu.fd().set_sregs(&sregs).unwrap();
    let mut regs = vcpu.fd().get_regs().unwrap();
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.fd().set_regs(&regs).unwrap();

    // Start clean: loading the code was a VMM write.
    let before = vm.dirty_pages(&ram.memory).unwrap();
    assert!(before.is_dirty(GuestAddress(0x1000)));
    assert_eq!(vm.dirty_pages(&ram.memory).unwrap().dirty_pages(), 0);

    // The guest writes 0x5000, then exits on the port write.
    assert_eq!(vcpu.run_once(&Ignore).unwrap(), None);
    assert_eq!(
        ram.memory.read_obj::<u8>(GuestAddress(0x5000)).unwrap(),
        0x42
    );
    // A device writes 0x7000 through vm-memory.
    ram.memory.write_obj(7u32, GuestAddress(0x7ffc)).unwrap();
    let dirty = vm.dirty_pages(&ram.memory).unwrap();
    // Both sources were reset.
    assert_eq!(vm.dirty_pages(&ram.memory).unwrap().dirty_pages(), 0);
    dirty
}

#[test]
fn guest_and_device_writes_are_both_dirty() {
    if !kvm_available("guest_and_device_writes_are_both_dirty") {
        return;
    }
    let dirty = guest_and_vmm_writes(true);
    assert!(dirty.is_dirty(GuestAddress(0x5000)), "guest write missed");
    assert!(dirty.is_dirty(GuestAddress(0x7000)), "VMM write missed");
    assert!(!dirty.is_dirty(GuestAddress(0x9000)), "clean page reported");
    assert!(!dirty.is_dirty(GuestAddress(0x1000)), "code was only read");
    assert_eq!(dirty.dirty_pages(), 2, "{dirty:?}");
}

#[test]
fn without_dirty_logging_only_vmm_writes_are_seen() {
    if !kvm_available("without_dirty_logging_only_vmm_writes_are_seen") {
        return;
    }
    let dirty = guest_and_vmm_writes(false);
    assert!(!dirty.is_dirty(GuestAddress(0x5000)));
    assert!(dirty.is_dirty(GuestAddress(0x7000)));
}
