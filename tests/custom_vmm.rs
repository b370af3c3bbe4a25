//! The compose-your-own-VMM example (examples/custom_vmm.rs) boots the test
//! guest with its own port device and a virtio-block disk.

mod common;

use common::{crc32, example_binary, kvm_available, TempDir};

#[test]
fn the_custom_vmm_example_reads_its_disk_and_reports_through_its_own_port() {
    if !kvm_available("the_custom_vmm_example_reads_its_disk_and_reports_through_its_own_port") {
        return;
    }
    let dir = TempDir::new("custom-vmm");
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 256) as u8).collect();
    let image = dir.file("disk.img", &data);
    let out = std::process::Command::new(example_binary("custom_vmm"))
        .arg(&image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Hello from the Kindling test guest!"),
        "{stdout}"
    );
    let expected = format!("status=OK crc32={:#010x}", crc32(&data[..4096]));
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(stderr.contains("the guest reported status 0"), "{stderr}");

    // A bad disk image is a clear error, not a panic.
    let out = std::process::Command::new(example_binary("custom_vmm"))
        .arg(dir.0.join("missing.img"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.img"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
