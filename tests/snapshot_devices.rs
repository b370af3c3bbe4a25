//! Snapshots of microVMs with a network interface, a vsock device, or a
//! disk on io_uring with a rate limiter, through the front door: the test
//! guest is snapshotted mid-exchange, the VM is stopped, and a new VM is
//! restored in this process (TAPs live in a network namespace of the
//! test's thread, which a new process would not share).

#[path = "api/client.rs"]
mod client;
mod common;
#[path = "common/tap.rs"]
mod tap;
#[path = "common/vsock.rs"]
mod vsock;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::ApiVm;
use common::{kvm_available, microvm_binary, wait_until, Capture, TempDir};
use kindling::vmm::snapshot::{
    decode_state, encode_state, MemBackend, MicrovmState, NetOverride, RestoreConfig, SnapshotKind,
    SnapshotRequest, VirtioDeviceState,
};
use kindling::vmm::{
    BlockEngine, DiskConfig, ExitReason, KernelSource, NetConfig, RateLimiterConfig, RunningVmm,
    SeccompPolicy, SerialConfig, TokenBucketConfig, VmConfig, Vmm, VmmError, VsockConfig,
};
use tap::{create_tap, host_frame, tap_available, PacketSocket, Vnet};
use vsock::{closed_by_the_device, echo_listener, host_connect, pattern};

const MAC: &str = "06:00:ac:10:00:02";

fn guest_config(cmdline: &str, serial: &Capture) -> VmConfig {
    VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: format!("{cmdline} kindling.exit=0"),
        memory_mib: 64,
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        debug_exit: true,
        seccomp: SeccompPolicy::Builtin,
        ..VmConfig::default()
    }
}

fn interface(tap: &str) -> NetConfig {
    NetConfig {
        guest_mac: Some(MAC.parse().unwrap()),
        ..NetConfig::new("eth0", tap)
    }
}

/// Pauses `running`, writes a full snapshot `name` into `dir`, stops the
/// VM and waits until its devices are gone (its TAP closed, its vsock
/// socket removed). Returns the state and memory files.
fn snapshot_and_stop(running: RunningVmm, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let state = dir.join(format!("{name}.state"));
    let mem = dir.join(format!("{name}.mem"));
    running.pause().unwrap();
    running
        .snapshot(&SnapshotRequest {
            kind: SnapshotKind::Full,
            state_path: state.clone(),
            mem_path: mem.clone(),
        })
        .unwrap();
    running.stop();
    running.wait().unwrap();
    (state, mem)
}

fn restore_config(state: &Path, mem: &Path, serial: &Capture) -> RestoreConfig {
    RestoreConfig {
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        debug_exit: true,
        seccomp: SeccompPolicy::Builtin,
        ..RestoreConfig::new(state, MemBackend::File(mem.to_path_buf()))
    }
}

/// Creates the TAP `name` and a packet socket on it that sends past the
/// queueing discipline: right after a VMM (re)attached a TAP, frames
/// through the discipline may be dropped until the kernel's link watcher
/// catches up with the carrier; past it they either reach the TAP's queue
/// or fail (and [`PacketSocket::send_when_attached`] tries again).
fn bypassing_socket(name: &str) -> PacketSocket {
    let sock = PacketSocket::new(create_tap(name).unwrap(), 3000).unwrap();
    sock.bypass_qdisc().unwrap();
    sock
}

/// Sends frames `range` into the TAP and checks each comes back, echoed
/// by the guest's `net-echo`, before the next is sent; the number of the
/// first frame whose echo did not come.
fn try_echo_frames(sock: &PacketSocket, range: std::ops::Range<u32>) -> Result<(), u32> {
    for i in range {
        let frame = host_frame(i, 60 + (i as usize * 37) % 1400);
        sock.send_when_attached(Vnet::default(), &frame).unwrap();
        let (_, got) = sock.recv().ok_or(i)?;
        assert_eq!(got, frame, "echo {i}");
    }
    Ok(())
}

/// [`try_echo_frames`], failing with what the guest printed.
fn echo_frames(sock: &PacketSocket, range: std::ops::Range<u32>, serial: &Capture) {
    if let Err(i) = try_echo_frames(sock, range) {
        panic!("echo {i} missing; guest:\n{}", serial.text());
    }
}

#[test]
fn a_vm_on_a_tap_comes_back_on_its_tap_or_an_override_and_frames_flow_again() {
    let test = "a_vm_on_a_tap_comes_back_on_its_tap_or_an_override_and_frames_flow_again";
    if !kvm_available(test) || !tap_available(test) {
        return;
    }
    let dir = TempDir::new("snap-net");
    let first = bypassing_socket("kdlsa");
    let second = bypassing_socket("kdlsb");
    let serial = Capture::default();
    let config = VmConfig {
        net: vec![interface("kdlsa")],
        ..guest_config("kindling.test=virtio,net-echo:60", &serial)
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    wait_until("net-echo: start", || {
        serial.text().contains("net-echo: start")
    });
    echo_frames(&first, 0..20, &serial);
    // Frame 20 is on its way when the VM is paused: it is echoed once,
    // before the snapshot or after the restore. (The test waits until the
    // device took it from the TAP: a frame still queued in a TAP when its
    // VMM closes it is dropped by the kernel, and the guest would wait for
    // it.)
    let frame20 = host_frame(20, 100);
    first.send_when_attached(Vnet::default(), &frame20).unwrap();
    let net = running.devices().net[0].1.clone();
    wait_until("frame 20 taken", || {
        net.lock().unwrap().counters().rx_frames > 20
    });
    drop(net);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "a");

    // The same TAP, reopened by name.
    let start = Instant::now();
    let vmm = Vmm::restore(restore_config(&state, &mem, &serial)).unwrap();
    let restore_time = start.elapsed();
    assert_eq!(vmm.devices().net.len(), 1);
    assert_eq!(vmm.devices().net[0].0, "eth0");
    let running = vmm.start().unwrap();
    let (_, got) = first.recv().expect("frame 20 echoed exactly once");
    assert_eq!(got, frame20);
    echo_frames(&first, 21..40, &serial);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "b");

    // Another TAP (Firecracker's network_overrides): frames flow there.
    let config = RestoreConfig {
        net_overrides: vec!["eth0=kdlsb".parse::<NetOverride>().unwrap()],
        ..restore_config(&state, &mem, &serial)
    };
    let vmm = Vmm::restore(config).unwrap();
    assert_eq!(vmm.devices().net[0].1.lock().unwrap().tap_name(), "kdlsb");
    let running = vmm.start().unwrap();
    echo_frames(&second, 40..60, &serial);
    let reason = running.wait().unwrap();
    let text = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{text}");
    assert!(
        text.contains("net-echo: done frames=60 ") && text.contains(" dropped=0"),
        "{text}"
    );
    // Nothing went to the first TAP after the override.
    assert!(first.recv().is_none());
    eprintln!("restore with a network interface: {restore_time:?}");
}

/// A `microvm --restore` process: it is forked from the test's thread,
/// so it shares the thread's network namespace and sees its TAPs.
fn spawn_restore(state: &Path, mem: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(microvm_binary())
        .arg("--restore")
        .arg(state)
        .arg("--restore-mem")
        .arg(mem)
        .arg("--debug-exit")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_vm_on_a_tap_restored_in_a_new_process_on_an_override_tap_exchanges_frames() {
    let test = "a_vm_on_a_tap_restored_in_a_new_process_on_an_override_tap_exchanges_frames";
    if !kvm_available(test) || !tap_available(test) {
        return;
    }
    let dir = TempDir::new("snap-net-process");
    let first = bypassing_socket("kdlpa");
    let second = bypassing_socket("kdlpb");
    let serial = Capture::default();
    let config = VmConfig {
        net: vec![interface("kdlpa")],
        ..guest_config("kindling.test=virtio,net-echo:30", &serial)
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    wait_until("net-echo: start", || {
        serial.text().contains("net-echo: start")
    });
    echo_frames(&first, 0..10, &serial);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "a");

    let child = spawn_restore(&state, &mem, &["--net-override", "0=kdlpb"]);
    let echoed = try_echo_frames(&second, 10..30);
    let out = child.wait_with_output().unwrap();
    if let Err(i) = echoed {
        panic!(
            "echo {i} missing; the restored VM printed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("net-echo: done frames=30 ") && stdout.contains(" dropped=0"),
        "{stdout}"
    );
}

#[test]
fn put_snapshot_load_with_network_overrides_reattaches_the_interface() {
    let test = "put_snapshot_load_with_network_overrides_reattaches_the_interface";
    if !kvm_available(test) || !tap_available(test) {
        return;
    }
    let dir = TempDir::new("snap-net-api");
    let first = bypassing_socket("kdlqa");
    let second = bypassing_socket("kdlqb");
    let serial = Capture::default();
    let config = VmConfig {
        net: vec![interface("kdlqa")],
        ..guest_config("kindling.test=virtio,net-echo:20", &serial)
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    wait_until("net-echo: start", || {
        serial.text().contains("net-echo: start")
    });
    echo_frames(&first, 0..5, &serial);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "a");

    // Forked from this thread: the API process sees the thread's TAPs.
    let mut vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let mut c = vm.client();
    let load = |overrides: serde_json::Value| {
        serde_json::json!({
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": true,
            "network_overrides": overrides,
        })
        .to_string()
    };
    for (overrides, needle) in [
        (
            serde_json::json!([{"iface_id": "eth9", "host_dev_name": "kdlqb"}]),
            "the network override 'eth9' names no network interface of the snapshot (it has 0 'eth0')",
        ),
        (
            serde_json::json!([{"iface_id": "eth0", "host_dev_name": "kdl-none"}]),
            "no network interface \"kdl-none\"",
        ),
    ] {
        let r = c.put("/snapshot/load", &load(overrides));
        assert!(r.fault().contains(needle), "{r:?}");
    }
    let r = c.put(
        "/snapshot/load",
        &load(serde_json::json!([{"iface_id": "eth0", "host_dev_name": "kdlqb"}])),
    );
    assert_eq!(r.status, 204, "{r:?}");
    if let Err(i) = try_echo_frames(&second, 5..20) {
        panic!(
            "echo {i} missing; the loaded VM printed {:?} {:?}",
            vm.stdout.lock().unwrap(),
            vm.stderr.lock().unwrap()
        );
    }
    assert_eq!(vm.wait(), 0, "{:?}", vm.stderr.lock().unwrap());
    let out = vm.stdout.lock().unwrap().join("\n");
    assert!(out.contains("net-echo: done frames=20 "), "{out}");
}

#[test]
fn a_vsock_connection_is_reset_by_a_restore_and_new_ones_work() {
    if !kvm_available("a_vsock_connection_is_reset_by_a_restore_and_new_ones_work") {
        return;
    }
    let dir = TempDir::new("snap-vsock");
    let uds = dir.0.join("v.sock");
    let serial = Capture::default();
    let config = VmConfig {
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: uds.clone(),
        }),
        ..guest_config(
            "kindling.test=virtio,vsock-listen:5000,vsock-listen:5001,vsock-listen:5002,vsock-connect:6000:4000",
            &serial,
        )
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    let (mut old, port) = host_connect(&uds, 5000);
    assert!(port.is_some(), "the guest accepts port 5000");
    old.write_all(&pattern(3000)).unwrap();
    let mut echo = vec![0u8; 3000];
    old.read_exact(&mut echo).unwrap();
    assert_eq!(echo, pattern(3000));
    // Snapshot with the connection open.
    let (state, mem) = snapshot_and_stop(running, &dir.0, "a");
    assert!(
        closed_by_the_device(&mut old),
        "the old VM's connection ends"
    );
    assert!(!uds.exists(), "the stopped VM's socket is removed");

    let start = Instant::now();
    let vmm = Vmm::restore(restore_config(&state, &mem, &serial)).unwrap();
    let restore_time = start.elapsed();
    assert!(vmm.devices().vsock.is_some());
    let running = vmm.start().unwrap();
    // The guest is told: its connection is gone.
    wait_until("the guest's connection reset", || {
        serial
            .text()
            .contains("vsock: listen port=5000 echoed=3000 ")
    });
    let text = serial.text();
    assert!(text.contains("vsock: transport reset\n"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("vsock: listen port=5000 "))
        .unwrap();
    assert!(line.ends_with(" reset"), "{line}");
    // A new host connection, on the same socket path.
    let (mut new, port) = host_connect(&uds, 5001);
    assert!(
        port.is_some(),
        "the guest accepts port 5001:\n{}",
        serial.text()
    );
    new.write_all(&pattern(5000)).unwrap();
    new.shutdown(Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    new.read_to_end(&mut echo).unwrap();
    assert_eq!(echo, pattern(5000));
    wait_until("port 5001 done", || {
        serial
            .text()
            .contains("vsock: listen port=5001 echoed=5000 ")
    });
    let (state, mem) = snapshot_and_stop(running, &dir.0, "b");

    // Again on another socket path; the guest waits for a connection, then
    // connects to host port 6000: at `<override>_6000`.
    let other = dir.0.join("other.sock");
    let host_listener = echo_listener(&other, 6000);
    let config = RestoreConfig {
        vsock_override: Some(other.clone()),
        ..restore_config(&state, &mem, &serial)
    };
    let running = Vmm::restore(config).unwrap().start().unwrap();
    assert!(!uds.exists(), "only the override's socket is bound");
    // The guest reads the transport-reset event on its own time, and it
    // ends every connection it has then: connect once it has (a real guest
    // has the same race, so do host agents that reconnect at once).
    wait_until("the guest saw the second transport reset", || {
        serial.text().matches("vsock: transport reset\n").count() >= 2
    });
    let (mut third, port) = host_connect(&other, 5002);
    assert!(port.is_some(), "the guest accepts port 5002");
    third.write_all(&pattern(100)).unwrap();
    third.shutdown(Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    third.read_to_end(&mut echo).unwrap();
    assert_eq!(echo, pattern(100), "the guest printed:\n{}", serial.text());
    let reason = running.wait().unwrap();
    let text = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{text}");
    assert_eq!(
        text.matches("vsock: transport reset\n").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("vsock: listen port=5002 echoed=100 "),
        "{text}"
    );
    assert_eq!(host_listener.join().unwrap(), 4000);
    let line = text
        .lines()
        .find(|l| l.starts_with("vsock: connect port=6000 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(" sent=4000 received=4000 ") && line.ends_with(" mismatches=0"),
        "{line}"
    );
    eprintln!("restore with a vsock device: {restore_time:?}");
}

#[test]
fn a_vsock_vm_restored_in_a_new_process_listens_on_the_override_socket() {
    if !kvm_available("a_vsock_vm_restored_in_a_new_process_listens_on_the_override_socket") {
        return;
    }
    let dir = TempDir::new("snap-vsock-process");
    let uds = dir.0.join("v.sock");
    let serial = Capture::default();
    let config = VmConfig {
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: uds.clone(),
        }),
        ..guest_config("kindling.test=virtio,count,vsock-listen:5000", &serial)
    };
    // The guest counts forever: the snapshot is taken while it does, and
    // the restored guest goes on counting (vsock-listen is never reached:
    // the point is the device, listening in the new process).
    let running = Vmm::build(config).unwrap().start().unwrap();
    wait_until("count: 2", || counts(&serial.text()).len() > 2);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "a");
    // A file left at the saved path (as by a killed VMM) is refused...
    std::fs::write(&uds, b"").unwrap();
    let out = spawn_restore(&state, &mem, &["--serial", "off"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already exists (in use, or left over"),
        "{err}"
    );
    // ... an override is not in its way.
    let other = dir.0.join("other.sock");
    let mut child = spawn_restore(
        &state,
        &mem,
        &[
            "--vsock-override",
            other.to_str().unwrap(),
            "--serial",
            "off",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !other.exists() {
        assert!(Instant::now() < deadline, "the restored VM never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The device answers on its socket: a CONNECT to a port nobody
    // listens on in the guest is closed, not hung.
    let (mut stream, port) = host_connect(&other, 7777);
    assert_eq!(port, None);
    assert!(closed_by_the_device(&mut stream));
    child.kill().unwrap();
    child.wait().unwrap();

    // The same through the API's PUT /snapshot/load and vsock_override.
    let _ = std::fs::remove_file(&other);
    let third = dir.0.join("third.sock");
    let vm = ApiVm::start(&microvm_binary(), &dir.0, &[]);
    let r = vm.client().put(
        "/snapshot/load",
        &serde_json::json!({
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": true,
            "vsock_override": {"uds_path": third},
        })
        .to_string(),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert!(third.exists(), "the loaded VM listens on the override");
    let (mut stream, port) = host_connect(&third, 7777);
    assert_eq!(port, None);
    assert!(closed_by_the_device(&mut stream));
}

/// The `count: N` numbers of the complete lines the guest printed.
fn counts(text: &str) -> Vec<u64> {
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("count: "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn a_disk_keeps_its_io_uring_engine_and_rate_limits_across_a_restore() {
    if !kvm_available("a_disk_keeps_its_io_uring_engine_and_rate_limits_across_a_restore") {
        return;
    }
    let dir = TempDir::new("snap-engine");
    let disk = dir.file("disk.img", &vec![0u8; 64 * 512]);
    let limits = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 8 << 20,
            one_time_burst: 0,
            refill_time: 100,
        }),
        ops: Some(TokenBucketConfig {
            size: 20_000,
            one_time_burst: 0,
            refill_time: 1000,
        }),
    };
    let serial = Capture::default();
    let config = VmConfig {
        disks: vec![DiskConfig {
            engine: BlockEngine::IoUring,
            rate_limiter: Some(limits),
            ..format!("{}", disk.display()).parse::<DiskConfig>().unwrap()
        }],
        ..guest_config("kindling.test=count:0", &serial)
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    wait_until("count: 3", || counts(&serial.text()).len() > 3);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "a");
    let saved: MicrovmState = decode_state(&std::fs::read(&state).unwrap()).unwrap();
    let VirtioDeviceState::Block { state: block, .. } = &saved.virtio[0].device else {
        panic!("slot 0 is not the disk");
    };
    assert_eq!(
        (block.engine, block.rate_limiter),
        (BlockEngine::IoUring, Some(limits))
    );
    let before = counts(&serial.text()).len();

    let vmm = Vmm::restore(restore_config(&state, &mem, &serial)).unwrap();
    {
        let disk = vmm.devices().disks[0].lock().unwrap();
        assert_eq!(disk.engine(), BlockEngine::IoUring);
        assert_eq!(disk.rate_limiter(), Some(limits));
    }
    let running = vmm.start().unwrap();
    // The guest goes on writing through the restored engine.
    wait_until("more counts after the restore", || {
        counts(&serial.text()).len() > before + 3
    });
    running.stop();
    running.wait().unwrap();
    let seen = counts(&serial.text());
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "the count goes on where it was: {seen:?}"
    );
}

/// A VM with a disk (io_uring, rate-limited), a network interface and a
/// vsock device, snapshotted (the guest counting), for the bad-input
/// checks.
fn net_and_vsock_snapshot(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let uds = dir.0.join("v.sock");
    let serial = Capture::default();
    let disk = dir.file("disk.img", &vec![0u8; 64 * 512]);
    let config = VmConfig {
        disks: vec![DiskConfig {
            engine: BlockEngine::IoUring,
            rate_limiter: Some(RateLimiterConfig {
                bandwidth: None,
                ops: Some(TokenBucketConfig {
                    size: 100,
                    one_time_burst: 0,
                    refill_time: 1000,
                }),
            }),
            ..format!("{}", disk.display()).parse::<DiskConfig>().unwrap()
        }],
        net: vec![interface("kdlsc")],
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: uds.clone(),
        }),
        ..guest_config("kindling.test=virtio,count", &serial)
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    wait_until("count: 2", || counts(&serial.text()).len() > 2);
    let (state, mem) = snapshot_and_stop(running, &dir.0, "nv");
    (state, mem, uds)
}

fn restore_err(config: RestoreConfig) -> String {
    let e: VmmError = Vmm::restore(config).expect_err("restored");
    e.to_string()
}

#[test]
fn bad_overrides_and_damaged_device_states_are_clear_errors() {
    let test = "bad_overrides_and_damaged_device_states_are_clear_errors";
    if !kvm_available(test) || !tap_available(test) {
        return;
    }
    let dir = TempDir::new("snap-net-bad");
    create_tap("kdlsc").unwrap();
    let (state, mem, uds) = net_and_vsock_snapshot(&dir);
    let serial = Capture::default();
    let config = || restore_config(&state, &mem, &serial);

    // An override naming an interface the snapshot does not have.
    let e = restore_err(RestoreConfig {
        net_overrides: vec!["eth7=kdlsc".parse().unwrap()],
        ..config()
    });
    assert_eq!(
        e,
        "the network override 'eth7' names no network interface of the snapshot (it has 0 'eth0')"
    );
    let e = restore_err(RestoreConfig {
        net_overrides: vec!["1=kdlsc".parse().unwrap()],
        ..config()
    });
    assert!(e.contains("override '1' names no network interface"), "{e}");
    // A TAP that does not exist.
    let e = restore_err(RestoreConfig {
        net_overrides: vec!["0=kdl-none".parse().unwrap()],
        ..config()
    });
    assert!(
        e.starts_with("cannot restore the network interface eth0: ")
            && e.contains("no network interface \"kdl-none\""),
        "{e}"
    );
    // A stale file at the vsock path: refused as at a normal start.
    std::fs::write(&uds, b"stale").unwrap();
    let e = restore_err(config());
    assert!(
        e.starts_with("cannot restore the vsock device: ")
            && e.contains("already exists (in use, or left over: remove it first)"),
        "{e}"
    );
    std::fs::remove_file(&uds).unwrap();
    // A vsock override whose directory does not exist.
    let e = restore_err(RestoreConfig {
        vsock_override: Some(dir.0.join("no/such/dir/v.sock")),
        ..config()
    });
    assert!(e.contains("does not exist"), "{e}");

    // The same through the example VMM: one line on stderr, exit 1.
    for (flags, expected) in [
        (
            &["--net-override", "eth7=kdlsc"][..],
            "the network override 'eth7' names no network interface",
        ),
        (
            &["--net-override", "0=kdl-none"][..],
            "no network interface \"kdl-none\"",
        ),
        (&["--net-override", "kdlsc"][..], "is not IFACE=TAP"),
    ] {
        let out = spawn_restore(&state, &mem, flags)
            .wait_with_output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {err}");
        assert!(err.contains(expected), "{flags:?}: {err}");
        if !flags[1].starts_with("kdlsc") {
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    // Damaged state files: truncated, a flipped bit, a held frame of an
    // impossible length, a device whose transport is of another type.
    let good = std::fs::read(&state).unwrap();
    let bad = dir.0.join("bad.state");
    let with_file = |bytes: &[u8]| {
        std::fs::write(&bad, bytes).unwrap();
        restore_err(restore_config(&bad, &mem, &serial))
    };
    for cut in [10, good.len() / 2, good.len() - 1] {
        let e = with_file(&good[..cut]);
        assert!(e.contains("is truncated"), "{cut}: {e}");
    }
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    assert!(with_file(&flipped).contains("corrupt: checksum"));
    let edit = |f: &dyn Fn(&mut MicrovmState)| {
        let mut s: MicrovmState = decode_state(&good).unwrap();
        f(&mut s);
        with_file(&encode_state(&s).unwrap())
    };
    let e = edit(&|s| {
        for slot in &mut s.virtio {
            if let VirtioDeviceState::Net { state, .. } = &mut slot.device {
                state.held_frame = Some(kindling::virtio::net::HeldFrame {
                    bytes: vec![0; 5],
                    charged: false,
                });
            }
        }
    });
    assert!(e.contains("holds a 5-byte frame"), "{e}");
    let e = edit(&|s| {
        for slot in &mut s.virtio {
            if matches!(slot.device, VirtioDeviceState::Vsock(_)) {
                slot.transport.device_id = 1;
            }
        }
    });
    assert!(
        e.contains("is a vsock device but its transport holds device id 1"),
        "{e}"
    );
    // A version-1 file (before network and vsock devices): refused.
    let mut old = good.clone();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    let e = with_file(&old);
    assert!(e.contains("format version 1 is not supported"), "{e}");
    // `KINDLING_WRITE_FUZZ_SEED=DIR` keeps this state's payload as a seed
    // of the fuzz target snapshot_state_file (fuzz/README.md).
    if let Some(seeds) = std::env::var_os("KINDLING_WRITE_FUZZ_SEED") {
        let payload = &good[20..good.len() - 4];
        std::fs::write(Path::new(&seeds).join("net-vsock-disk"), payload).unwrap();
    }
    // After all that, the snapshot still restores.
    let running = Vmm::restore(config()).unwrap().start().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    running.stop();
    running.wait().unwrap();
}
