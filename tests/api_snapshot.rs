//! Snapshots and signals through the API socket of `microvm --api-sock`:
//! a counting test guest paused and snapshotted by one process and loaded
//! by another, where it goes on counting (full, diff, file and userfaultfd
//! memory); the state rules around both requests; and termination signals
//! before and after the VM starts.

#[path = "api/client.rs"]
mod client;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use client::{ApiVm, Client};
use common::{kvm_available, microvm_binary, TempDir};

/// The test guest as a kernel file.
fn guest_kernel(dir: &TempDir) -> String {
    dir.file("guest.elf", kindling_test_guest::TEST_GUEST_ELF)
        .to_str()
        .unwrap()
        .to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The numbers of the `count: N` lines of `lines`.
fn counts(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("count: ")?.parse().ok())
        .collect()
}

/// Waits until the VM printed `count: N` with N >= `n`.
fn wait_for_count(vm: &ApiVm, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts(&vm.stdout.lock().unwrap())
        .last()
        .is_none_or(|&c| c < n)
    {
        assert!(
            Instant::now() < deadline,
            "no count: {n}: {:?} (stderr {:?})",
            vm.stdout.lock().unwrap().last(),
            vm.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `signo` to the VM's process.
fn signal(vm: &ApiVm, signo: i32) {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(vm.child.id() as i32, signo) }, 0);
}

/// Stops a VM with SIGTERM: it ends in order with status 143 and one line
/// that says so. Returns everything it printed on stdout.
fn stop_with_sigterm(mut vm: ApiVm) -> Vec<String> {
    signal(&vm, libc::SIGTERM);
    assert_eq!(vm.wait(), 143, "{:?}", vm.stderr.lock().unwrap());
    // The pipe readers see the end of the output a moment after the exit.
    std::thread::sleep(Duration::from_millis(50));
    let err = vm.stderr.lock().unwrap().clone();
    assert!(
        err.iter()
            .any(|l| l == "microvm: stopped by SIGTERM: vCPUs stopped, disks flushed"),
        "{err:?}"
    );
    assert!(!vm.socket.exists(), "the API socket is left behind");
    let out = vm.stdout.lock().unwrap().clone();
    out
}

/// Checks the restored VM's counts continue the saved ones: the first is
/// the next number (or the one after, when the snapshot cut a line), and
/// none is skipped after it.
fn assert_counts_continue(saved: u64, restored: &[u64]) {
    let first = *restored
        .first()
        .expect("the restored guest printed no count");
    assert!(
        first > saved && first <= saved + 2,
        "the count went from {saved} to {first}"
    );
    for pair in restored.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{restored:?}");
    }
}

/// A PUT that must succeed; returns how long it took.
/// Whether an open-file-description write lock on `path` can be taken
/// (a running VMM holds one on each of its read-write images).
fn write_lock_is_free(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: a valid fd and a valid flock; F_OFD_GETLK only reads them
    // and writes the flock.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    assert_eq!(r, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
    lock.l_type == libc::F_UNLCK as i16
}

fn timed_put(c: &mut Client, path: &str, body: &str) -> Duration {
    let began = Instant::now();
    c.ok("PUT", path, body);
    began.elapsed()
}

#[test]
fn a_full_snapshot_taken_over_the_api_is_loaded_by_another_process() {
    if !kvm_available("a_full_snapshot_taken_over_the_api_is_loaded_by_another_process") {
        return;
    }
    let dir = TempDir::new("api-snap-full");
    let dir2 = TempDir::new("api-snap-full-2");
    let kernel = guest_kernel(&dir);
    let state = dir.0.join("vm.state");
    let mem = dir.0.join("vm.mem");
    let create = serde_json::json!({
        "snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem
    })
    .to_string();

    let vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    let r = c.put("/snapshot/create", &create);
    assert_eq!(
        r.fault(),
        "PUT /snapshot/create is only allowed after InstanceStart: the microVM is not started"
    );
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 64}"#,
    );
    c.ok(
        "PUT",
        "/boot-source",
        &serde_json::json!({"kernel_image_path": kernel, "boot_args": "kindling.test=count"})
            .to_string(),
    );
    // A drive the guest does not use: the loaded VM finds it again.
    let disk = dir.file("data.img", &[0u8; 64 * 512]);
    c.ok(
        "PUT",
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": disk, "is_root_device": false})
            .to_string(),
    );
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    wait_for_count(&vm, 20);
    let r = c.put("/snapshot/create", &create);
    assert_eq!(
        r.fault(),
        "PUT /snapshot/create needs a paused microVM, and it is Running: PATCH /vm with {\"state\": \"Paused\"} first"
    );
    let r = c.put(
        "/snapshot/load",
        &serde_json::json!({"snapshot_path": state, "mem_file_path": mem}).to_string(),
    );
    assert_eq!(
        r.fault(),
        "PUT /snapshot/load is not allowed after InstanceStart: the microVM is already running"
    );
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let r = c.put(
        "/snapshot/create",
        &serde_json::json!({"snapshot_type": "Diff", "snapshot_path": state, "mem_file_path": mem})
            .to_string(),
    );
    assert!(
        r.fault()
            .starts_with("a Diff snapshot needs dirty page tracking"),
        "{r:?}"
    );
    let r = c.put(
        "/snapshot/create",
        &serde_json::json!({"snapshot_path": "/nonexistent/dir/s", "mem_file_path": mem})
            .to_string(),
    );
    assert_eq!(
        r.fault(),
        "cannot create the snapshot: the directory of snapshot_path /nonexistent/dir/s does not exist"
    );
    // A directory where the memory file should be.
    let r = c.put(
        "/snapshot/create",
        &serde_json::json!({"snapshot_path": state, "mem_file_path": dir.0}).to_string(),
    );
    assert!(
        r.fault()
            .starts_with("cannot create the snapshot: cannot create the memory file"),
        "{r:?}"
    );
    let took = timed_put(&mut c, "/snapshot/create", &create);
    eprintln!("api snapshot: Full create of a 64 MiB guest took {took:?}");
    assert_eq!(c.get("/").json()["state"], "Paused");
    // A paused VM stops in order too.
    let out = stop_with_sigterm(vm);
    let saved = *counts(&out).last().unwrap();

    let vm2 = ApiVm::start(&microvm_binary(), &dir2.0, &[]);
    let mut c = vm2.client();
    let metrics = dir2.file("metrics", b"");
    c.ok(
        "PUT",
        "/metrics",
        &serde_json::json!({"metrics_path": metrics}).to_string(),
    );
    for (body, needle) in [
        (
            serde_json::json!({"snapshot_path": dir.0.join("nope"), "mem_file_path": mem}),
            "cannot load the snapshot: cannot open the state file",
        ),
        (
            serde_json::json!({"snapshot_path": state, "mem_file_path": dir.0.join("nope")}),
            "cannot load the snapshot: cannot open the memory file",
        ),
        (
            serde_json::json!({"snapshot_path": mem, "mem_file_path": mem}),
            "cannot load the snapshot: state file",
        ),
        (
            serde_json::json!({"snapshot_path": state, "mem_file_path": mem, "track_dirty_pages": true}),
            "track_dirty_pages true was asked for, but the snapshot was taken with dirty page tracking off",
        ),
        (
            serde_json::json!({"snapshot_path": state, "mem_backend": {"backend_type": "Uffd", "backend_path": dir.0.join("nobody.sock")}}),
            "cannot load the snapshot: ",
        ),
    ] {
        let r = c.put("/snapshot/load", &body.to_string());
        assert!(r.fault().starts_with(needle), "{body}: {r:?}");
    }
    // Drive overrides (a Kindling extension): an unknown drive or a
    // missing image is refused.
    let clone = dir2.file("clone.img", &[0u8; 64 * 512]);
    for (overrides, needle) in [
        (
            serde_json::json!([{"drive_id": "nope", "path_on_host": clone}]),
            "nope",
        ),
        (
            serde_json::json!([{"drive_id": "data", "path_on_host": dir2.0.join("missing.img")}]),
            "missing.img",
        ),
    ] {
        let body = serde_json::json!({"snapshot_path": state, "mem_file_path": mem, "drive_overrides": overrides});
        let r = c.put("/snapshot/load", &body.to_string());
        assert!(
            r.fault().starts_with("cannot load the snapshot") && r.fault().contains(needle),
            "{body}: {r:?}"
        );
    }
    // Failed loads leave the process ready for a good one.
    assert_eq!(c.get("/").json()["state"], "Not started");
    let took = timed_put(
        &mut c,
        "/snapshot/load",
        &serde_json::json!({
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": true,
            "network_overrides": [],
            "drive_overrides": [{"drive_id": "data", "path_on_host": clone}]
        })
        .to_string(),
    );
    // The loaded VM holds the clone, not the image the snapshot names: the
    // clone's lock is taken, the original's is free.
    assert!(
        write_lock_is_free(&disk),
        "the original image is still open"
    );
    assert!(
        !write_lock_is_free(&clone),
        "the override image is not open"
    );
    eprintln!("api snapshot: load (File backend, resumed) took {took:?}");
    wait_for_count(&vm2, saved + 30);
    assert_eq!(c.get("/").json()["state"], "Running");
    let config = c.get("/vm/config").json();
    assert_eq!(config["machine-config"]["mem_size_mib"], 64, "{config}");
    assert_eq!(config["machine-config"]["vcpu_count"], 1, "{config}");
    // Loaded counts as started.
    let r = c.put(
        "/boot-source",
        &serde_json::json!({"kernel_image_path": kernel}).to_string(),
    );
    assert_eq!(
        r.fault(),
        "PUT /boot-source is not allowed after a snapshot was loaded: the microVM is already running"
    );
    let r = c.put("/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(
        r.fault(),
        "InstanceStart is not allowed after a snapshot was loaded: the microVM is already running"
    );
    let r = c.put(
        "/snapshot/load",
        &serde_json::json!({"snapshot_path": state, "mem_file_path": mem}).to_string(),
    );
    assert!(
        r.fault()
            .starts_with("PUT /snapshot/load is not allowed after a snapshot was loaded"),
        "{r:?}"
    );
    // Its drive can be swapped; unknown ones are refused.
    let other = dir2.file("other.img", &[0u8; 64 * 512]);
    c.ok(
        "PATCH",
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": other}).to_string(),
    );
    let r = c.patch(
        "/drives/nope",
        r#"{"drive_id": "nope", "path_on_host": "/x"}"#,
    );
    assert_eq!(r.fault(), "no drive with id \"nope\"");
    c.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(
        line["latencies_us"]["load_snapshot"].as_u64().unwrap() > 0,
        "{line}"
    );
    assert_eq!(line["put_api_requests"]["snapshot_load_count"], 9, "{line}");
    assert_eq!(line["put_api_requests"]["snapshot_load_fails"], 8, "{line}");
    // The restored VM pauses, snapshots and resumes like a booted one
    // (with the drive on the image it was loaded with).
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(c.get("/").json()["state"], "Paused");
    let again = serde_json::json!({"snapshot_path": dir2.0.join("again.state"), "mem_file_path": dir2.0.join("again.mem")})
        .to_string();
    let r = c.put("/snapshot/create", &again);
    assert_eq!(
        r.fault(),
        format!(
            "cannot snapshot the microVM: drive data now uses {} (PATCH /drives), and a snapshot can only name the image the microVM started with, {} (not supported yet; PATCH it back first)",
            other.display(),
            clone.display()
        )
    );
    c.ok(
        "PATCH",
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": clone}).to_string(),
    );
    c.ok("PUT", "/snapshot/create", &again);
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    let at = *counts(&vm2.stdout.lock().unwrap()).last().unwrap();
    wait_for_count(&vm2, at + 5);
    let out = stop_with_sigterm(vm2);
    assert_counts_continue(saved, &counts(&out));
}

#[test]
fn a_diff_snapshot_over_the_api_is_loaded_through_userfaultfd() {
    if !kvm_available("a_diff_snapshot_over_the_api_is_loaded_through_userfaultfd") {
        return;
    }
    let dir = TempDir::new("api-snap-diff");
    let dir2 = TempDir::new("api-snap-diff-2");
    let kernel = guest_kernel(&dir);
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 64, "track_dirty_pages": true}"#,
    );
    c.ok(
        "PUT",
        "/boot-source",
        &serde_json::json!({"kernel_image_path": kernel, "boot_args": "kindling.test=count"})
            .to_string(),
    );
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    wait_for_count(&vm, 5);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let (base_state, base_mem) = (dir.0.join("base.state"), dir.0.join("base.mem"));
    c.ok(
        "PUT",
        "/snapshot/create",
        &serde_json::json!({"snapshot_path": base_state, "mem_file_path": base_mem}).to_string(),
    );
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    let at_base = *counts(&vm.stdout.lock().unwrap()).last().unwrap();
    wait_for_count(&vm, at_base + 30);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let (diff_state, diff_mem) = (dir.0.join("diff.state"), dir.0.join("diff.mem"));
    let took = timed_put(
        &mut c,
        "/snapshot/create",
        &serde_json::json!({"snapshot_type": "Diff", "snapshot_path": diff_state, "mem_file_path": diff_mem})
            .to_string(),
    );
    eprintln!("api snapshot: Diff create of a 64 MiB guest took {took:?}");
    let out = stop_with_sigterm(vm);
    let saved = *counts(&out).last().unwrap();
    assert!(saved >= at_base + 30);

    // The diff layered onto (a copy of) its base is the memory to load.
    let merged = dir.0.join("merged.mem");
    std::fs::copy(&base_mem, &merged).unwrap();
    kindling::vmm::snapshot::apply_diff_snapshot(&diff_state, &merged, &diff_mem).unwrap();
    let socket = dir2.0.join("uffd.sock");
    let handler = kindling::vmm::snapshot::uffd::spawn_file_handler(
        &socket,
        std::fs::File::open(&merged).unwrap(),
    )
    .unwrap();

    let vm2 = ApiVm::start(&microvm_binary(), &dir2.0, &[]);
    let mut c = vm2.client();
    let load = |dirty: bool| {
        serde_json::json!({
            "snapshot_path": diff_state,
            "mem_backend": {"backend_type": "Uffd", "backend_path": socket},
            "enable_diff_snapshots": dirty,
            "resume_vm": false
        })
        .to_string()
    };
    let r = c.put("/snapshot/load", &load(false));
    assert!(
        r.fault().starts_with(
            "track_dirty_pages false was asked for, but the snapshot was taken with dirty page tracking on"
        ),
        "{r:?}"
    );
    let took = timed_put(&mut c, "/snapshot/load", &load(true));
    eprintln!("api snapshot: load (Uffd backend, paused) took {took:?}");
    assert_eq!(c.get("/").json()["state"], "Paused");
    assert_eq!(
        c.get("/vm/config").json()["machine-config"]["track_dirty_pages"],
        true
    );
    // Its untouched pages are only in the handler's file.
    let r = c.put(
        "/snapshot/create",
        &serde_json::json!({"snapshot_path": dir2.0.join("s"), "mem_file_path": dir2.0.join("m")})
            .to_string(),
    );
    assert!(
        r.fault()
            .starts_with("cannot create the snapshot: a full snapshot of a VM restored with the userfaultfd backend is not supported"),
        "{r:?}"
    );
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    wait_for_count(&vm2, saved + 30);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    c.ok(
        "PUT",
        "/snapshot/create",
        &serde_json::json!({"snapshot_type": "Diff", "snapshot_path": dir2.0.join("s"), "mem_file_path": dir2.0.join("m")})
            .to_string(),
    );
    let out = stop_with_sigterm(vm2);
    assert_counts_continue(saved, &counts(&out));
    assert!(handler.join().unwrap().unwrap() > 0);
}

#[test]
fn a_load_is_refused_once_the_microvm_is_configured() {
    let dir = TempDir::new("api-snap-rules");
    let kernel = guest_kernel(&dir);
    let load = serde_json::json!({
        "snapshot_path": dir.0.join("s"), "mem_file_path": dir.0.join("m")
    })
    .to_string();
    // The flags pre-configure the machine.
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &["--memory", "64"]);
    let r = vm.client().put("/snapshot/load", &load);
    assert_eq!(
        r.fault(),
        "PUT /snapshot/load is only allowed before any boot-specific resource is configured (configured: machine-config); start a new microvm process to load a snapshot"
    );
    drop(vm);
    // A killed process leaves its socket: a new one in a new directory.
    let dir2 = TempDir::new("api-snap-rules-2");
    let vm = ApiVm::start(&microvm_binary(), &dir2.0, &[]);
    let mut c = vm.client();
    // Logger, metrics and serial may come first; a failed request
    // configures nothing.
    c.ok(
        "PUT",
        "/serial",
        &serde_json::json!({"serial_out_path": dir.0.join("serial")}).to_string(),
    );
    let r = c.put("/boot-source", r#"{"kernel_image_path": "/nonexistent/k"}"#);
    assert!(r.fault().starts_with("cannot open kernel image"), "{r:?}");
    let r = c.put("/snapshot/load", &load);
    assert!(
        r.fault()
            .starts_with("cannot load the snapshot: cannot open the state file"),
        "{r:?}"
    );
    c.ok(
        "PUT",
        "/boot-source",
        &serde_json::json!({"kernel_image_path": kernel}).to_string(),
    );
    c.ok("PUT", "/entropy", "{}");
    let r = c.put("/snapshot/load", &load);
    assert!(
        r.fault().contains("(configured: boot-source, entropy);"),
        "{r:?}"
    );
    let r = c.put(
        "/snapshot/load",
        &serde_json::json!({"snapshot_path": "s", "mem_file_path": "m", "network_overrides": [{"iface_id": "eth0", "host_dev_name": ""}]})
            .to_string(),
    );
    assert_eq!(
        r.fault(),
        "invalid body for /snapshot/load: network_overrides[].host_dev_name is empty"
    );
    assert_eq!(c.get("/").json()["state"], "Not started");
}

#[test]
fn a_signal_before_instance_start_ends_the_server_cleanly() {
    for (signo, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = TempDir::new("api-snap-sig");
        let mut vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
        assert_eq!(vm.client().get("/").json()["state"], "Not started");
        signal(&vm, signo);
        assert_eq!(vm.wait(), 128 + signo);
        std::thread::sleep(Duration::from_millis(50));
        let err = vm.stderr.lock().unwrap().clone();
        assert_eq!(
            err,
            [format!(
                "microvm: stopped by {name} before any microVM ran, API socket {} removed",
                vm.socket.display()
            )]
        );
        assert!(!vm.socket.exists());
    }
}

#[test]
fn restore_flags_point_api_mode_to_the_load_request() {
    let dir = TempDir::new("api-snap-cli");
    let out = std::process::Command::new(microvm_binary())
        .args(["--api-sock", path(&dir.0.join("s")), "--restore", "x.state"])
        .args(["--restore-mem", "x.mem"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "microvm: --restore is not available with --api-sock/--config-file: load the snapshot with PUT /snapshot/load instead\n"
    );
    assert!(!dir.0.join("s").exists());
}
