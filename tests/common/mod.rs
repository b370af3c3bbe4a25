//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kindling::vmm::{ExitReason, KernelSource, SerialConfig, VmConfig, Vmm};

/// Whether tests that need KVM can run. Without `/dev/kvm` they are skipped
/// with a message, unless `KINDLING_REQUIRE_KVM=1`, which makes them fail.
pub fn kvm_available(test: &str) -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        if std::env::var("KINDLING_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("{test}: /dev/kvm is not usable and KINDLING_REQUIRE_KVM=1");
        }
        eprintln!("SKIPPED {test}: /dev/kvm is not usable on this machine");
    }
    usable
}

/// A `Write` whose bytes the test can read afterwards.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// What a test-guest run produced.
pub struct GuestRun {
    pub reason: ExitReason,
    pub serial: String,
    pub boot_timer_log: String,
}

impl GuestRun {
    pub fn lines(&self) -> Vec<&str> {
        self.serial.lines().collect()
    }
}

/// Boots the embedded test guest in-process with `cmdline`.
pub fn run_test_guest(cmdline: &str, vcpus: u8, memory_mib: u64) -> GuestRun {
    run_test_guest_with(cmdline, vcpus, memory_mib, |_| {})
}

/// Like [`run_test_guest`], letting `adjust` change the configuration
/// (disks, entropy, ...) first.
pub fn run_test_guest_with(
    cmdline: &str,
    vcpus: u8,
    memory_mib: u64,
    adjust: impl FnOnce(&mut VmConfig),
) -> GuestRun {
    let serial = Capture::default();
    let log = Capture::default();
    let mut config = VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: cmdline.to_string(),
        vcpus,
        memory_mib,
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(log.clone())),
        debug_exit: true,
        ..VmConfig::default()
    };
    adjust(&mut config);
    let vmm = Vmm::build(config).expect("building the VM");
    let reason = vmm.run().expect("running the VM");
    GuestRun {
        reason,
        serial: serial.text(),
        boot_timer_log: log.text(),
    }
}

/// The example VMM binary, built by `cargo test` next to the test binaries.
pub fn microvm_binary() -> PathBuf {
    example_binary("microvm")
}

/// The binary of example `name`, built by `cargo test` next to the test
/// binaries.
pub fn example_binary(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    path.push("examples");
    path.push(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test`, which builds the examples",
        path.display()
    );
    path
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kindling-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CRC-32/IEEE, as the test guest prints it (Python's `zlib.crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Waits (up to 20 s, then fails the test naming `what`) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
