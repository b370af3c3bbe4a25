//! The seccomp filters end the process on a forbidden system call, with a
//! line that names the thread kind and the call; allowed calls go through.
//!
//! Each violation runs in a child process: this test binary again, with
//! `KINDLING_SECCOMP_CASE` telling it which filter to install on a thread
//! and which call to make there.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;

use common::{kvm_available, run_test_guest_with};
use kindling::vmm::seccomp::{
    builtin_filter, compile, install_filter, rules_for, SeccompFilters, SeccompPolicy, ThreadKind,
};
use kindling::vmm::ExitReason;

const CASE_VAR: &str = "KINDLING_SECCOMP_CASE";

/// In the child: installs the built-in filter of `kind` on a new thread
/// and runs `call` there.
fn on_filtered_thread(kind: ThreadKind, call: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        install_filter(kind, &builtin_filter(kind).unwrap()).unwrap();
        call();
    })
    .join()
    .unwrap();
}

/// Runs the case named `case` in the child, if this is the child.
fn child_case() -> Option<()> {
    let case = std::env::var(CASE_VAR).ok()?;
    match case.as_str() {
        "vcpu-openat" => on_filtered_thread(ThreadKind::Vcpu, || {
            // SAFETY: a NUL-terminated path; the call is trapped anyway.
            unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
        }),
        "vcpu-ioctl" => on_filtered_thread(ThreadKind::Vcpu, || {
            // KVM_CREATE_VM is not a vCPU ioctl.
            // SAFETY: fd -1; the call is trapped before the kernel runs it.
            unsafe { libc::ioctl(-1, 0xae01, 0) };
        }),
        "event-loop-socket" => on_filtered_thread(ThreadKind::EventLoop, || {
            // Only Unix sockets (vsock's host side) are allowed.
            // SAFETY: plain socket(2); trapped.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        }),
        "api-inherited-execve" => on_filtered_thread(ThreadKind::Api, || {
            // A thread started under the API filter inherits it.
            std::thread::spawn(|| {
                // SAFETY: NUL-terminated path, null argv and envp; trapped.
                unsafe {
                    libc::syscall(
                        libc::SYS_execve,
                        c"/bin/true".as_ptr(),
                        std::ptr::null::<*const libc::c_char>(),
                        std::ptr::null::<*const libc::c_char>(),
                    )
                };
            })
            .join()
            .unwrap();
        }),
        "vcpu-allowed" => {
            // Made before the filter: eventfd2 is not a vCPU-thread call.
            let fd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
            on_filtered_thread(ThreadKind::Vcpu, move || {
                fd.write(1).unwrap();
                assert_eq!(fd.read().unwrap(), 1);
                // The CMOS RTC's clock read: glibc's time zone was loaded
                // before the filter (a Linux guest reads the RTC at boot).
                // SAFETY: `tm` is plain data (all zeroes is a valid value);
                // both pointers are valid for the call.
                let tm = unsafe {
                    let mut tm: libc::tm = std::mem::zeroed();
                    libc::gmtime_r(&0, &mut tm);
                    tm
                };
                assert_eq!(tm.tm_year, 70);
                eprintln!("still alive");
                drop(fd);
            });
        }
        other => panic!("unknown case {other}"),
    }
    Some(())
}

/// Runs `test` of this binary in a child with `case`; returns its status
/// and standard error.
fn run_child(test: &str, case: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, case)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_killed(test: &str, case: &str, expected: &str) {
    let (status, stderr) = run_child(test, case);
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "{case}: {status}, stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "{case}: stderr lacks {expected:?}: {stderr}"
    );
    assert_eq!(
        stderr.matches("kindling: seccomp:").count(),
        1,
        "one line: {stderr}"
    );
}

#[test]
fn a_vcpu_thread_that_opens_a_file_dies_with_sigsys() {
    if child_case().is_some() {
        return;
    }
    assert_killed(
        "a_vcpu_thread_that_opens_a_file_dies_with_sigsys",
        "vcpu-openat",
        "kindling: seccomp: a thread of kind vcpu made a forbidden system call: 257 (openat);",
    );
}

#[test]
fn a_vcpu_thread_ioctl_is_checked_by_request_number() {
    if child_case().is_some() {
        return;
    }
    assert_killed(
        "a_vcpu_thread_ioctl_is_checked_by_request_number",
        "vcpu-ioctl",
        "a thread of kind vcpu made a forbidden system call: 16 (ioctl) request 0xae01;",
    );
}

#[test]
fn the_event_loop_may_open_unix_sockets_only() {
    if child_case().is_some() {
        return;
    }
    assert_killed(
        "the_event_loop_may_open_unix_sockets_only",
        "event-loop-socket",
        "a thread of kind event-loop made a forbidden system call: 41 (socket);",
    );
}

#[test]
fn a_thread_inherits_the_filter_of_its_parent() {
    if child_case().is_some() {
        return;
    }
    assert_killed(
        "a_thread_inherits_the_filter_of_its_parent",
        "api-inherited-execve",
        "a thread with an inherited filter made a forbidden system call: 59 (execve);",
    );
}

#[test]
fn allowed_calls_go_through() {
    if child_case().is_some() {
        return;
    }
    let (status, stderr) = run_child("allowed_calls_go_through", "vcpu-allowed");
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("still alive"), "{stderr}");
    assert!(!stderr.contains("seccomp"), "{stderr}");
}

#[test]
fn a_vm_runs_under_custom_filters() {
    if child_case().is_some() || !kvm_available("a_vm_runs_under_custom_filters") {
        return;
    }
    let mut filters = SeccompFilters::builtin().unwrap();
    // A vCPU filter of our own: the built-in list, rebuilt.
    filters.set(
        ThreadKind::Vcpu,
        compile(rules_for(ThreadKind::Vcpu)).unwrap(),
    );
    let run = run_test_guest_with("kindling.test=hello,smp,timer", 2, 64, |config| {
        config.seccomp = SeccompPolicy::Custom(Arc::new(filters));
    });
    assert_eq!(run.reason, ExitReason::Status(0), "{}", run.serial);
    assert!(run.serial.contains("smp: 2 of 2"), "{}", run.serial);
}

#[test]
fn the_metrics_writer_keeps_writing_under_its_filter() {
    if child_case().is_some() {
        return;
    }
    use kindling::api::metrics::Metrics;
    use kindling::api::models::MetricsConfig;
    let dir = common::TempDir::new("seccomp-metrics");
    let path = dir.file("metrics.json", b"");
    let metrics = Metrics::new("seccomp", std::time::Duration::from_millis(5));
    metrics.set_seccomp(SeccompPolicy::Builtin);
    metrics
        .configure(&MetricsConfig {
            metrics_path: path.to_str().unwrap().into(),
            emit_id: None,
            properties: None,
        })
        .unwrap();
    // A violation on the writer's thread would end this whole process.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&path).unwrap().lines().count() < 3 {
        assert!(std::time::Instant::now() < deadline, "no periodic lines");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(metrics);
}

#[test]
fn microvm_runs_with_and_without_its_filters() {
    if child_case().is_some() || !kvm_available("microvm_runs_with_and_without_its_filters") {
        return;
    }
    for extra in [&[][..], &["--no-seccomp"][..]] {
        let out = Command::new(common::microvm_binary())
            .args(extra)
            .args(["--cpus", "2", "--cmdline", "kindling.test=hello,smp,timer"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra:?}: {}: {stderr}", out.status);
        assert!(stdout.contains("smp: 2 of 2"), "{extra:?}: {stdout}");
        assert!(!stderr.contains("seccomp"), "{extra:?}: {stderr}");
    }
}

#[test]
fn the_signal_watcher_stops_the_vm_under_its_filter() {
    if child_case().is_some() || !kvm_available("the_signal_watcher_stops_the_vm_under_its_filter")
    {
        return;
    }
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(common::microvm_binary())
        .args(["--cmdline", "kindling.test=hello,pio-loop"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 && !line.contains("Hello") {
        line.clear();
    }
    // The watcher installs its filter after its first 200 ms wait.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{}: {stderr}", out.status);
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    assert!(!stderr.contains("seccomp"), "{stderr}");
}

#[test]
fn microvm_with_a_vsock_device_removes_its_socket_under_the_filters() {
    if child_case().is_some()
        || !kvm_available("microvm_with_a_vsock_device_removes_its_socket_under_the_filters")
    {
        return;
    }
    let dir = common::TempDir::new("seccomp-vsock");
    let uds = dir.0.join("v.sock");
    let out = Command::new(common::microvm_binary())
        .args(["--vsock", &format!("cid=3,uds={}", uds.display())])
        .args(["--cmdline", "kindling.test=hello"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(!stderr.contains("seccomp"), "{stderr}");
    assert!(!uds.exists(), "the vsock socket is left behind");
}
