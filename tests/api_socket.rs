//! The Firecracker-compatible API through a real HTTP client over the
//! socket of `microvm --api-sock`: every endpoint, firecracker-go-sdk's
//! boot sequence, pause/resume of a running guest, a live disk swap,
//! config files, and hostile clients.

#[path = "api/client.rs"]
mod client;
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use client::{ApiVm, Client};
use common::{kvm_available, microvm_binary, TempDir};

const HELLO: &str = "Hello from the Kindling test guest!";

/// The test guest as a kernel file.
fn guest_kernel(dir: &TempDir) -> String {
    dir.file("guest.elf", kindling_test_guest::TEST_GUEST_ELF)
        .to_str()
        .unwrap()
        .to_string()
}

fn boot_source(kernel: &str, args: &str) -> String {
    serde_json::json!({"kernel_image_path": kernel, "boot_args": args}).to_string()
}

fn metrics_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn firecracker_go_sdk_boot_sequence() {
    if !kvm_available("firecracker_go_sdk_boot_sequence") {
        return;
    }
    let dir = TempDir::new("api-sdk");
    let kernel = guest_kernel(&dir);
    let log = dir.file("fc.log", b"");
    let metrics = dir.file("fc.metrics", b"");
    let disk = dir.file("rootfs.img", &[0u8; 64 * 512]);
    let mut vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    // The order firecracker-go-sdk's default handlers use.
    c.ok(
        "PUT",
        "/logger",
        &serde_json::json!({"log_path": log, "level": "Debug", "show_level": true, "show_log_origin": false}).to_string(),
    );
    c.ok(
        "PUT",
        "/metrics",
        &serde_json::json!({"metrics_path": metrics}).to_string(),
    );
    c.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 64, "smt": false, "track_dirty_pages": false}"#,
    );
    c.ok(
        "PUT",
        "/boot-source",
        &boot_source(
            &kernel,
            "kindling.test=hello,smp,virtio,blk-info:0 kindling.exit=0",
        ),
    );
    c.ok(
        "PUT",
        "/drives/rootfs",
        &serde_json::json!({"drive_id": "rootfs", "path_on_host": disk, "is_root_device": true, "is_read_only": false}).to_string(),
    );
    // No TAP is created here: a missing one is refused at PUT.
    let r = c.put(
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "kdlnotap0"}"#,
    );
    assert_eq!(
        r.fault(),
        "network interface eth0: there is no network interface \"kdlnotap0\" (create the TAP device first: ip tuntap add kdlnotap0 mode tap)"
    );
    let r = c.put("/mmds/config", r#"{"network_interfaces": ["eth0"]}"#);
    assert!(r.fault().contains("metadata service"), "{r:?}");
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    vm.wait_for_line(HELLO);
    assert_eq!(vm.wait(), 0);
    let out = vm.stdout.lock().unwrap().join("\n");
    assert!(out.contains("smp: 2 of 2 cpus online"), "{out}");
    assert!(out.contains("blk0: capacity=64 ro=0"), "{out}");
    // Metrics are written at exit; the logger got the requests.
    let lines = metrics_lines(std::path::Path::new(&metrics));
    let last = lines.last().expect("a metrics line at exit");
    assert_eq!(last["put_api_requests"]["actions_count"], 1);
    assert_eq!(last["put_api_requests"]["drive_count"], 1);
    assert!(last["vcpu"]["exit_io_out"].as_u64().unwrap() > 0, "{last}");
    // The serial lines' bytes went out as exits or through the coalesced
    // ring, never both.
    let out_writes = last["vcpu"]["exit_io_out"].as_u64().unwrap()
        + last["vcpu"]["coalesced_writes"].as_u64().unwrap();
    assert!(out_writes >= out.len() as u64, "{last}");
    assert!(last["latencies_us"]["instance_start"].as_u64().unwrap() > 0);
    assert!(last["block_rootfs"].is_object(), "{last}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(":Info] The API server received a PUT request on \"/actions\""),
        "{log}"
    );
    assert!(log.contains("microVM started in"), "{log}");
}

#[test]
fn pause_and_resume_a_running_guest() {
    if !kvm_available("pause_and_resume_a_running_guest") {
        return;
    }
    let dir = TempDir::new("api-pause");
    let kernel = guest_kernel(&dir);
    let metrics = dir.file("m", b"");
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &["--memory", "64"]);
    let mut c = vm.client();
    c.ok(
        "PUT",
        "/boot-source",
        &boot_source(&kernel, "kindling.test=hello,pio-loop"),
    );
    c.ok(
        "PUT",
        "/metrics",
        &serde_json::json!({"metrics_path": metrics}).to_string(),
    );
    assert_eq!(c.get("/").json()["state"], "Not started");
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    vm.wait_for_line(HELLO);
    assert_eq!(c.get("/").json()["state"], "Running");
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(c.get("/").json()["state"], "Paused");
    // Paused: no vCPU exits between two flushes.
    c.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    std::thread::sleep(Duration::from_millis(50));
    c.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    c.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(c.get("/").json()["state"], "Paused");
    c.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert_eq!(c.get("/").json()["state"], "Running");
    std::thread::sleep(Duration::from_millis(50));
    c.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    let lines = metrics_lines(&metrics);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["vcpu"]["exit_io_out"], 0, "{}", lines[1]);
    assert!(
        lines[2]["vcpu"]["exit_io_out"].as_u64().unwrap() > 0,
        "{}",
        lines[2]
    );
    assert_eq!(lines[2]["patch_api_requests"]["vm_count"], 2);
    // After the start: pre-boot resources are refused, the VM keeps going.
    for (path, body) in [
        (
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 64}"#,
        ),
        ("/boot-source", &boot_source(&kernel, "")),
        ("/entropy", "{}"),
        ("/logger", "{}"),
    ] {
        let r = c.put(path, body);
        assert!(
            r.fault().contains("not allowed after InstanceStart"),
            "{path}: {r:?}"
        );
    }
    let r = c.patch("/machine-config", r#"{"vcpu_count": 2}"#);
    assert!(
        r.fault().contains("not allowed after InstanceStart"),
        "{r:?}"
    );
    let r = c.put("/actions", r#"{"action_type": "InstanceStart"}"#);
    assert!(r.fault().contains("already started"), "{r:?}");
    c.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    assert_eq!(c.get("/").json()["state"], "Running");
    assert_eq!(
        c.get("/vm/config").json()["machine-config"]["mem_size_mib"],
        64
    );
}

#[test]
fn a_drive_is_swapped_while_the_guest_runs() {
    if !kvm_available("a_drive_is_swapped_while_the_guest_runs") {
        return;
    }
    let dir = TempDir::new("api-swap");
    let kernel = guest_kernel(&dir);
    let first = dir.file("a.img", &[1u8; 16 * 512]);
    let second = dir.file("b.img", &[2u8; 32 * 512]);
    let odd = dir.file("odd.img", &[0u8; 1000]);
    let metrics = dir.file("m", b"");
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    c.ok(
        "PUT",
        "/metrics",
        &serde_json::json!({"metrics_path": metrics}).to_string(),
    );
    c.ok(
        "PUT",
        "/boot-source",
        &boot_source(
            &kernel,
            "kindling.test=hello,virtio,blk-read:0:0:8,pio-loop",
        ),
    );
    c.ok(
        "PUT",
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": first, "is_root_device": false})
            .to_string(),
    );
    let r = c.patch(
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": second}).to_string(),
    );
    assert!(
        r.fault().contains("only allowed after InstanceStart"),
        "{r:?}"
    );
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    vm.wait_for_line(HELLO);
    let crc = common::crc32(&[1u8; 8 * 512]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !vm
        .stdout
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(&format!("{crc:08x}")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            vm.stdout.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    c.ok(
        "PATCH",
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": second}).to_string(),
    );
    assert_eq!(
        c.get("/vm/config").json()["drives"][0]["path_on_host"],
        second.to_str().unwrap()
    );
    let r = c.patch(
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": odd}).to_string(),
    );
    assert!(r.fault().contains("not a multiple of 512"), "{r:?}");
    let r = c.patch(
        "/drives/data",
        r#"{"drive_id": "data", "path_on_host": "/nonexistent.img"}"#,
    );
    assert!(
        r.fault()
            .contains("cannot open disk image /nonexistent.img"),
        "{r:?}"
    );
    let r = c.patch(
        "/drives/other",
        r#"{"drive_id": "other", "path_on_host": "/x"}"#,
    );
    assert!(r.fault().contains("no drive with id \"other\""), "{r:?}");
    let r = c.put(
        "/drives/data",
        &serde_json::json!({"drive_id": "data", "path_on_host": second, "is_root_device": false})
            .to_string(),
    );
    assert!(
        r.fault().contains("not allowed after InstanceStart"),
        "{r:?}"
    );
    c.ok("PATCH", "/drives/data", r#"{"drive_id": "data"}"#);
    c.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
    let line = &metrics_lines(&metrics)[0];
    assert_eq!(line["block_data"]["read_count"], 1, "{line}");
    assert_eq!(line["block_data"]["read_bytes"], 8 * 512, "{line}");
    assert_eq!(line["block"]["read_count"], 1, "{line}");
    assert_eq!(line["patch_api_requests"]["drive_count"], 6, "{line}");
    assert_eq!(line["patch_api_requests"]["drive_fails"], 4, "{line}");
    assert_eq!(c.get("/").json()["state"], "Running");
}

#[test]
fn config_file_boots_at_once() {
    if !kvm_available("config_file_boots_at_once") {
        return;
    }
    let dir = TempDir::new("api-config");
    let kernel = guest_kernel(&dir);
    let disk = dir.file("d.img", &[0u8; 8 * 512]);
    let config = dir.file(
        "vm.json",
        serde_json::json!({
            "boot-source": {"kernel_image_path": kernel, "boot_args": "kindling.test=hello,virtio,blk-info:0,rng:8 kindling.exit=5"},
            "drives": [{"drive_id": "d", "path_on_host": disk, "is_root_device": false, "is_read_only": true}],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
            "entropy": {},
            "network-interfaces": []
        })
        .to_string()
        .as_bytes(),
    );
    let out = std::process::Command::new(microvm_binary())
        .args([
            "--no-api",
            "--debug-exit",
            "--config-file",
            config.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(HELLO), "{stdout}");
    assert!(stdout.contains("blk0: capacity=8 ro=1"), "{stdout}");
    assert!(stdout.contains("rng: "), "{stdout}");
    // With a socket too: the API answers while the configured VM runs.
    let looping = dir.file(
        "loop.json",
        serde_json::json!({"boot-source": {"kernel_image_path": kernel, "boot_args": "kindling.test=hello,pio-loop"}})
            .to_string()
            .as_bytes(),
    );
    let vm = ApiVm::start(
        &microvm_binary(),
        &dir.0,
        &["--config-file", looping.to_str().unwrap()],
    );
    vm.wait_for_line(HELLO);
    let mut c = vm.client();
    assert_eq!(c.get("/").json()["state"], "Running");
    let cfg = c.get("/vm/config").json();
    assert_eq!(
        cfg["boot-source"]["boot_args"],
        "kindling.test=hello,pio-loop"
    );
}

#[test]
fn flags_pre_configure_api_mode() {
    if !kvm_available("flags_pre_configure_api_mode") {
        return;
    }
    let dir = TempDir::new("api-flags");
    let kernel = guest_kernel(&dir);
    let mut vm = ApiVm::start(
        &microvm_binary(),
        &dir.0,
        &[
            "--kernel",
            &kernel,
            "--cmdline",
            "kindling.test=hello,smp kindling.exit=3",
            "--cpus",
            "3",
        ],
    );
    let mut c = vm.client();
    assert_eq!(c.get("/machine-config").json()["vcpu_count"], 3);
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(vm.wait(), 3);
    assert!(vm
        .stdout
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "smp: 3 of 3 cpus online"));
}

/// Bad input of every kind: each gets a clear 400 (or the connection is
/// dropped), and afterwards the VM still boots and the server still
/// answers. Needs no KVM until the final boot.
#[test]
fn hostile_clients_get_clear_errors_and_the_server_keeps_going() {
    let dir = TempDir::new("api-hostile");
    let kernel = guest_kernel(&dir);
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("PUT", "/boot-source", "{", "invalid body for /boot-source"),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "/k", "bogus": 1}"#,
            "unknown field `bogus`",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": "two", "mem_size_mib": 64}"#,
            "invalid type",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 64, "mem_size_mib": 64}"#,
            "vcpu_count 64 is out of range",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 64, "smt": true}"#,
            "SMT",
        ),
        ("PATCH", "/machine-config", "{}", "names no field"),
        ("PUT", "/boot-source", "", "needs a JSON body"),
        ("GET", "/nowhere", "", "no such resource"),
        ("DELETE", "/", "", "invalid HTTP method"),
        ("POST", "/actions", "{}", "invalid HTTP method"),
        ("PATCH", "/boot-source", "{}", "not allowed on /boot-source"),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "InstanceStart"}"#,
            "without a boot source",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "Reboot"}"#,
            "unknown variant `Reboot`",
        ),
        (
            "PATCH",
            "/vm",
            r#"{"state": "Paused"}"#,
            "only allowed after InstanceStart",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "FlushMetrics"}"#,
            "PUT /metrics first",
        ),
        ("PUT", "/drives/a-b", "{}", "invalid id"),
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id": "b", "is_root_device": false, "path_on_host": "/x"}"#,
            "does not match",
        ),
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id": "a", "is_root_device": false, "path_on_host": "/nonexistent"}"#,
            "cannot open disk image",
        ),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "/nonexistent"}"#,
            "cannot open kernel image",
        ),
        (
            "PUT",
            "/logger",
            r#"{"log_path": "/nonexistent/log"}"#,
            "cannot open the log file",
        ),
        (
            "PUT",
            "/metrics",
            r#"{"metrics_path": "/nonexistent/m"}"#,
            "cannot open the metrics file",
        ),
        (
            "PUT",
            "/balloon",
            r#"{"amount_mib": 1}"#,
            "does not support the memory balloon",
        ),
        (
            "PUT",
            "/snapshot/load",
            "{}",
            "missing field `snapshot_path`",
        ),
        ("PUT", "/cpu-config", "{}", "CPU configuration"),
        ("PUT", "/pmem/p", "{}", "pmem"),
        ("PATCH", "/hotplug/memory", "{}", "hotplug"),
        ("GET", "/", "{}", "takes no body"),
        (
            "PUT",
            "/boot-source",
            &"[".repeat(50_000),
            "recursion limit exceeded",
        ),
        (
            "PUT",
            "/metrics",
            &"{\"a\":".repeat(10_000),
            "recursion limit exceeded",
        ),
        ("PUT", "/boot-source", "\u{feff}{}", "invalid body"),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "\u0000"}"#,
            "cannot open kernel image",
        ),
    ];
    for (method, path, body, needle) in cases {
        let r = c.request(method, path, body);
        let fault = r.fault();
        assert!(
            fault.contains(needle),
            "{method} {path} {body}: {fault:?} lacks {needle:?}"
        );
        assert!(!r.close, "{method} {path}: a 400 keeps the connection");
    }
    // A huge body: refused from its Content-Length, connection closed.
    let mut big = Client::connect(&vm.socket);
    big.send_raw(b"PUT /boot-source HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n");
    let r = big.read_response();
    assert!(r.fault().contains("more than the 51200 allowed"), "{r:?}");
    assert!(r.close);
    // Malformed HTTP: 400 and closed.
    let mut bad = Client::connect(&vm.socket);
    bad.send_raw(b"\x00\x01\x02 nonsense\r\n\r\n");
    let r = bad.read_response();
    assert!(r.fault().contains("malformed HTTP request"), "{r:?}");
    // Byte by byte, while another client is served in between.
    let mut slow = UnixStream::connect(&vm.socket).unwrap();
    let request = b"GET /version HTTP/1.1\r\n\r\n";
    for (i, byte) in request.iter().enumerate() {
        slow.write_all(&[*byte]).unwrap();
        if i == 5 {
            assert_eq!(c.get("/").status, 200, "a slow client blocks nobody");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut slow = Client::from_stream(slow);
    let r = slow.read_response();
    assert_eq!(r.status, 200);
    assert!(r.json()["firecracker_version"].is_string());
    // A client that disconnects mid-request, and one that never speaks.
    {
        let mut gone = UnixStream::connect(&vm.socket).unwrap();
        gone.write_all(b"PUT /boot-source HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"ker")
            .unwrap();
    }
    let _silent = UnixStream::connect(&vm.socket).unwrap();
    // Concurrent clients, each with several keep-alive requests.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let socket = vm.socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket);
                for _ in 0..20 {
                    assert_eq!(c.get("/machine-config").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Pipelined requests on one connection.
    let mut p = Client::connect(&vm.socket);
    p.send_raw(b"GET / HTTP/1.1\r\n\r\nGET /version HTTP/1.1\r\n\r\n");
    assert_eq!(p.read_response().status, 200);
    assert_eq!(p.read_response().status, 200);
    // Connection: close is honoured.
    let mut raw = UnixStream::connect(&vm.socket).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    raw.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("HTTP/1.1 200") && all.contains("Connection: close"),
        "{all}"
    );
    // The server is still there, and the VM still boots.
    if !kvm_available("hostile_clients_get_clear_errors_and_the_server_keeps_going (boot)") {
        return;
    }
    c.ok(
        "PUT",
        "/boot-source",
        &boot_source(&kernel, "kindling.test=hello,pio-loop"),
    );
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    vm.wait_for_line(HELLO);
    assert_eq!(c.get("/").json()["state"], "Running");
}

#[test]
fn api_mode_command_line_errors() {
    let dir = TempDir::new("api-cli");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(microvm_binary())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--no-api"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("give an API socket (--api-sock) or a config file (--config-file)"),
        "{err}"
    );
    let (code, err) = run(&["--no-api", "--api-sock", "/tmp/x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot be used with"), "{err}");
    let sock = dir.file("taken.sock", b"");
    let (code, err) = run(&["--api-sock", sock.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("the path exists"), "{err}");
    let bad = dir.file(
        "bad.json",
        br#"{"boot-source": {"kernel_image_path": "/nonexistent"}}"#,
    );
    let (code, err) = run(&["--config-file", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("microvm: config file, boot_source: cannot open kernel image /nonexistent"),
        "{err}"
    );
    let kernel = guest_kernel(&dir);
    let nets = dir.file(
        "nets.json",
        serde_json::json!({
            "boot-source": {"kernel_image_path": kernel},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "kdlnotap0"}]
        })
        .to_string()
        .as_bytes(),
    );
    let (code, err) = run(&["--config-file", nets.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("network interface eth0: there is no network interface \"kdlnotap0\""),
        "{err}"
    );
    let (code, err) = run(&[
        "--api-sock",
        dir.0.join("s").to_str().unwrap(),
        "--cmdline",
        "x",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--cmdline needs --kernel"), "{err}");
    assert!(!dir.0.join("s").exists());
}

#[test]
fn vsock_and_rate_limiters_through_the_api() {
    if !kvm_available("vsock_and_rate_limiters_through_the_api") {
        return;
    }
    let dir = TempDir::new("api-vsock");
    let kernel = guest_kernel(&dir);
    let disk = dir.file("disk.img", &[0u8; 64 * 512]);
    let uds = dir.0.join("v.sock");
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &["--memory", "64"]);
    let mut c = vm.client();
    c.ok(
        "PUT",
        "/boot-source",
        &boot_source(&kernel, "kindling.test=hello,pio-loop"),
    );
    let r = c.put(
        "/vsock",
        &serde_json::json!({"guest_cid": 1, "uds_path": uds}).to_string(),
    );
    assert!(r.fault().contains("guest_cid 1 is out of range"), "{r:?}");
    let r = c.put(
        "/vsock",
        &serde_json::json!({"guest_cid": 3, "uds_path": dir.0.join("no/v.sock")}).to_string(),
    );
    assert!(r.fault().contains("does not exist"), "{r:?}");
    c.ok(
        "PUT",
        "/vsock",
        &serde_json::json!({"vsock_id": "vsock0", "guest_cid": 3, "uds_path": uds}).to_string(),
    );
    c.ok(
        "PUT",
        "/drives/data",
        &serde_json::json!({
            "drive_id": "data", "path_on_host": disk, "is_root_device": false, "is_read_only": true,
            "rate_limiter": {"ops": {"size": 1000, "refill_time": 100}}
        })
        .to_string(),
    );
    let r = c.patch(
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "rx_rate_limiter": {}}"#,
    );
    assert!(
        r.fault().contains("only allowed after InstanceStart"),
        "{r:?}"
    );
    let cfg = c.get("/vm/config").json();
    assert_eq!(cfg["vsock"]["guest_cid"], 3, "{cfg}");
    assert_eq!(cfg["network-interfaces"], serde_json::json!([]), "{cfg}");
    assert!(!uds.exists());
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    vm.wait_for_line(HELLO);
    // The device listens on its socket while the VM runs.
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(&uds).expect("the vsock socket exists");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    UnixStream::connect(&uds).expect("the vsock socket takes connections");
    let r = c.put(
        "/vsock",
        &serde_json::json!({"guest_cid": 4, "uds_path": dir.0.join("w.sock")}).to_string(),
    );
    assert!(
        r.fault().contains("not allowed after InstanceStart"),
        "{r:?}"
    );
    let r = c.put(
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "kdlnotap0"}"#,
    );
    assert!(
        r.fault().contains("not allowed after InstanceStart"),
        "{r:?}"
    );
    let r = c.patch(
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}"#,
    );
    assert_eq!(r.fault(), "no network interface with iface_id \"eth0\"");
    // A running drive's limits change.
    c.ok(
        "PATCH",
        "/drives/data",
        r#"{"drive_id": "data", "rate_limiter": {"ops": {"size": 0, "refill_time": 0}}}"#,
    );
    assert_eq!(c.get("/").json()["state"], "Running");
}

#[test]
fn serial_file_and_entropy_through_the_api() {
    if !kvm_available("serial_file_and_entropy_through_the_api") {
        return;
    }
    let dir = TempDir::new("api-serial");
    let kernel = guest_kernel(&dir);
    let console = dir.0.join("console.log");
    let mut vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    c.ok(
        "PUT",
        "/boot-source",
        &boot_source(&kernel, "kindling.test=hello,virtio,rng:16 kindling.exit=9"),
    );
    c.ok("PUT", "/entropy", "{}");
    c.ok(
        "PUT",
        "/serial",
        &serde_json::json!({"serial_out_path": console}).to_string(),
    );
    let r = c.put(
        "/serial",
        r#"{"rate_limiter": {"size": 1, "refill_time": 1}}"#,
    );
    assert!(
        r.fault().contains("rate limiting the serial console"),
        "{r:?}"
    );
    let r = c.put(
        "/entropy",
        r#"{"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}"#,
    );
    assert!(
        r.fault().contains("rate limiters on the entropy device"),
        "{r:?}"
    );
    let cfg = c.get("/vm/config").json();
    assert!(cfg["entropy"].is_object(), "{cfg}");
    c.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    assert_eq!(vm.wait(), 9);
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(text.contains(HELLO), "{text}");
    assert!(text.contains("type=rng status=ok"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("rng: ")), "{text}");
    assert!(
        !vm.stdout.lock().unwrap().iter().any(|l| l.contains(HELLO)),
        "the console went to the file, not stdout"
    );
}
