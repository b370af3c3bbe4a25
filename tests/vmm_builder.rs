//! The open VMM on /dev/kvm: devices of the user's own next to the
//! configured ones, typed device handles, pause/resume/stop of a running
//! guest from another thread, and typed errors.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{kvm_available, wait_until, Capture, TempDir};
use kindling::devices::BusDevice;
use kindling::virtio::block::{Block, BlockConfig, BlockError};
use kindling::vmm::{
    DiskConfig, ExitReason, KernelSource, SerialConfig, VmConfig, VmRunState, Vmm, VmmBuilder,
    VmmError,
};

/// Counts the guest's writes to its port.
struct PortCounter(Arc<AtomicU64>);

impl BusDevice for PortCounter {
    fn read(&mut self, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, _: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn guest_config(cmdline: &str, serial: &Capture) -> VmConfig {
    VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: cmdline.into(),
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        debug_exit: true,
        ..VmConfig::default()
    }
}

#[test]
fn a_user_port_device_sees_the_guest_and_the_vm_pauses_resumes_and_stops() {
    if !kvm_available("a_user_port_device_sees_the_guest_and_the_vm_pauses_resumes_and_stops") {
        return;
    }
    let serial = Capture::default();
    let mut builder =
        VmmBuilder::new(guest_config("kindling.test=hello,pio-loop", &serial)).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    builder
        .add_pio_device(
            "bench port",
            kindling_test_guest::BENCH_PORT,
            1,
            Arc::new(Mutex::new(PortCounter(count.clone()))),
        )
        .unwrap();
    let entropy = builder
        .add_virtio_device("entropy", kindling::virtio::rng::Entropy::new())
        .unwrap();
    let vmm = builder.build().unwrap();
    let handle = vmm.handle();
    assert_eq!(handle.state(), VmRunState::NotStarted);
    let running = vmm.start().unwrap();
    assert_eq!(running.state(), VmRunState::Running);
    wait_until("the guest's port writes", || {
        count.load(Ordering::SeqCst) > 50
    });

    // Paused from another thread: the guest stops writing.
    std::thread::spawn(move || handle.pause().unwrap())
        .join()
        .unwrap();
    assert_eq!(running.state(), VmRunState::Paused);
    let at_pause = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(count.load(Ordering::SeqCst), at_pause, "a paused guest ran");
    // A typed handle, no downcasting; the guest never activated it.
    assert!(!kindling::virtio::VirtioDevice::is_activated(
        &*entropy.lock().unwrap()
    ));
    running.pause().unwrap(); // pausing twice is harmless

    running.resume().unwrap();
    assert_eq!(running.state(), VmRunState::Running);
    wait_until("writes after resume", || {
        count.load(Ordering::SeqCst) > at_pause + 50
    });
    running.pause().unwrap();
    running.stop(); // stopping a paused VM
    assert_eq!(running.wait().unwrap(), ExitReason::Stopped);
    assert!(serial.text().contains("Hello from"), "{}", serial.text());
}

#[test]
fn a_virtio_disk_added_by_the_user_is_found_by_the_guest() {
    if !kvm_available("a_virtio_disk_added_by_the_user_is_found_by_the_guest") {
        return;
    }
    let dir = TempDir::new("user-disk");
    let image = dir.file("user.img", &[0x5a; 4096]);
    let serial = Capture::default();
    let mut builder =
        VmmBuilder::new(guest_config("kindling.test=virtio,blk-read:0:0:8", &serial)).unwrap();
    let disk = builder
        .add_virtio_device("user disk", Block::new(&BlockConfig::new(&image)).unwrap())
        .unwrap();
    let reason = builder.build().unwrap().run().unwrap();
    assert_eq!(reason, ExitReason::Status(0), "{}", serial.text());
    let expected = format!("crc32={:#010x}", common::crc32(&[0x5a; 4096]));
    assert!(serial.text().contains(&expected), "{}", serial.text());
    assert_eq!(disk.lock().unwrap().capacity(), 8);
}

#[test]
fn typed_errors_keep_their_source() {
    let dir = TempDir::new("typed-errors");
    let image = dir.file("odd.img", &[0; 1000]);
    let serial = Capture::default();
    let mut config = guest_config("kindling.test=hello", &serial);
    config.disks = vec![DiskConfig {
        path: image,
        read_only: false,
        engine: Default::default(),
        rate_limiter: None,
    }];
    let err = Vmm::build(config).unwrap_err();
    assert!(
        matches!(
            err,
            VmmError::Block {
                index: 0,
                source: BlockError::UnalignedSize { size: 1000, .. }
            }
        ),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_user_device_over_a_builtin_one_is_refused_at_build() {
    if !kvm_available("a_user_device_over_a_builtin_one_is_refused_at_build") {
        return;
    }
    let serial = Capture::default();
    let mut builder = VmmBuilder::new(guest_config("kindling.test=hello", &serial)).unwrap();
    builder
        .add_pio_device(
            "rogue",
            0x3f8,
            1,
            Arc::new(Mutex::new(PortCounter(Arc::default()))),
        )
        .unwrap();
    let err = builder.build().unwrap_err();
    assert!(
        matches!(err, VmmError::Bus { ref device, .. } if device == "rogue"),
        "{err:?}"
    );
    assert!(err.to_string().contains("overlaps"), "{err}");

    let mut builder = VmmBuilder::new(guest_config("kindling.test=hello", &serial)).unwrap();
    let err = builder
        .add_pio_device(
            "past the end",
            0xffff,
            2,
            Arc::new(Mutex::new(PortCounter(Arc::default()))),
        )
        .unwrap_err();
    assert!(err.to_string().contains("invalid bus range"), "{err}");
    let window = builder
        .add_mmio_device(
            "user mmio",
            0x1000,
            Arc::new(Mutex::new(PortCounter(Arc::default()))),
        )
        .unwrap();
    assert!(window.base >= kindling::memory::layout::DEVICE_MMIO_START);
    let line = builder.add_irq_line("user irq").unwrap();
    assert!(line.gsi() >= kindling::memory::layout::DEVICE_IRQ_START);
    builder.build().unwrap();
}
