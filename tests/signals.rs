//! Termination signals stop the example VMM in order: one line saying
//! why, the documented status (128 + the signal), the guest's disk writes
//! in the image.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{kvm_available, microvm_binary, TempDir};

fn stop_with(signo: libc::c_int, name: &str) {
    let dir = TempDir::new("signals");
    let disk = dir.file("disk.img", &[0u8; 8192]);
    let mut child = Command::new(microvm_binary())
        .args([
            "--disk",
            disk.to_str().unwrap(),
            "--cmdline",
            "kindling.test=virtio,blk-write:0:2:1:171,hello,pio-loop",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The hello line comes after the disk write: the guest is in its loop.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("Hello from the Kindling test guest!") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("status=OK"), "{seen}");
    // SAFETY: signalling our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signo) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + signo), "{stderr}");
    assert!(
        stderr.contains(&format!("microvm: stopped by {name}")),
        "{stderr}"
    );
    let image = std::fs::read(&disk).unwrap();
    assert!(image[1024..1536].iter().all(|&b| b == 171));
}

#[test]
fn sigterm_sigint_and_sighup_stop_the_vm_in_order() {
    if !kvm_available("sigterm_sigint_and_sighup_stop_the_vm_in_order") {
        return;
    }
    stop_with(libc::SIGTERM, "SIGTERM");
    stop_with(libc::SIGINT, "SIGINT");
    stop_with(libc::SIGHUP, "SIGHUP");
}
