//! virtio-vsock driven by the test guest's driver on /dev/kvm, with host
//! programs on the Unix sockets of Firecracker's protocol: a host
//! listener at `<uds>_<port>` the guest connects to, and host processes
//! that connect to `<uds>` with `CONNECT <port>\n`.

mod common;
#[path = "common/vsock.rs"]
mod vsock;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{crc32, kvm_available, microvm_binary, Capture, TempDir};
use kindling::virtio::vsock::{Vsock, VsockCounters, VsockError, FIRST_HOST_PORT};
use kindling::vmm::{
    ExitReason, KernelSource, SeccompPolicy, SerialConfig, VmConfig, Vmm, VmmError, VsockConfig,
};
use vsock::{closed_by_the_device, echo_listener, host_connect, pattern};

struct Run {
    reason: ExitReason,
    serial: String,
    counters: VsockCounters,
}

impl Run {
    fn line(&self, prefix: &str) -> &str {
        self.serial
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", self.serial))
    }
}

fn config(cmdline: &str, uds: &Path, serial: &Capture) -> VmConfig {
    VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: format!("{cmdline} kindling.exit=0"),
        memory_mib: 64,
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        vsock: Some(VsockConfig {
            guest_cid: 3,
            uds_path: uds.to_path_buf(),
        }),
        debug_exit: true,
        // With the filters `microvm` uses (the event loop on a thread of
        // its own: this one goes on talking to the TAP or the sockets).
        seccomp: SeccompPolicy::Builtin,
        ..VmConfig::default()
    }
}

/// Builds the VM (binding `uds`), runs `host` on its own thread while the
/// guest runs `cmdline`, and returns what the guest printed.
fn run_with_host<T: Send + 'static>(
    cmdline: &str,
    uds: &Path,
    host: impl FnOnce(PathBuf) -> T + Send + 'static,
) -> (Run, T) {
    run_with_device(cmdline, uds, |path, _| host(path))
}

/// Like [`run_with_host`], giving the host side the device too.
fn run_with_device<T: Send + 'static>(
    cmdline: &str,
    uds: &Path,
    host: impl FnOnce(PathBuf, Arc<Mutex<Vsock>>) -> T + Send + 'static,
) -> (Run, T) {
    let serial = Capture::default();
    let vmm = Vmm::build(config(cmdline, uds, &serial)).expect("building the VM");
    let vsock = vmm.devices().vsock.clone().expect("a vsock device");
    let path = uds.to_path_buf();
    let device = vsock.clone();
    let host = thread::spawn(move || host(path, device));
    let reason = vmm.start().unwrap().wait().expect("running the VM");
    let result = host.join().expect("the host side panicked");
    let counters = vsock.lock().unwrap().counters();
    (
        Run {
            reason,
            serial: serial.text(),
            counters,
        },
        result,
    )
}

#[test]
fn the_guest_connects_to_a_host_listener_and_gets_its_data_back() {
    if !kvm_available("the_guest_connects_to_a_host_listener_and_gets_its_data_back") {
        return;
    }
    let dir = TempDir::new("vsock");
    let uds = dir.0.join("v.sock");
    let echo = echo_listener(&uds, 5000);
    let size = 1_000_000;
    let (run, ()) = run_with_host(
        "kindling.test=virtio,vsock-connect:5000:1000000,vsock-connect:5001:10",
        &uds,
        |_| {},
    );
    assert_eq!(run.reason, ExitReason::Status(0), "{}", run.serial);
    assert!(
        run.serial.contains("type=vsock status=ok"),
        "{}",
        run.serial
    );
    assert_eq!(
        run.line("vsock: connect port=5000"),
        format!(
            "vsock: connect port=5000 sent={size} received={size} crc32={:#010x} mismatches=0",
            crc32(&pattern(size))
        )
    );
    assert_eq!(echo.join().unwrap(), size);
    // Nobody listens on port 5001: the guest gets a reset.
    assert_eq!(
        run.line("vsock: connect port=5001"),
        "vsock: connect port=5001 refused"
    );
    assert_eq!(run.counters.refused_connections, 1);
    assert!(run.counters.rx_bytes >= size as u64);
    assert_eq!(run.counters.malformed_packets, 0);
    assert_eq!(run.counters.credit_overruns, 0);
}

#[test]
fn a_host_process_reaches_the_guest_listener_with_connect() {
    if !kvm_available("a_host_process_reaches_the_guest_listener_with_connect") {
        return;
    }
    let dir = TempDir::new("vsock");
    let uds = dir.0.join("v.sock");
    let size = 700_000;
    let (run, echoed) = run_with_host("kindling.test=virtio,vsock-listen:6000", &uds, move |uds| {
        let (stream, port) = host_connect(&uds, 6000);
        let port = port.expect("OK <port>");
        assert!(port >= FIRST_HOST_PORT);
        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            writer.write_all(&pattern(size)).unwrap();
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut reader = stream;
        let mut echoed = Vec::new();
        reader.read_to_end(&mut echoed).unwrap();
        sender.join().unwrap();
        echoed
    });
    assert_eq!(run.reason, ExitReason::Status(0), "{}", run.serial);
    assert_eq!(echoed.len(), size);
    assert!(echoed == pattern(size), "the echo differs");
    assert_eq!(
        run.line("vsock: listen port=6000"),
        format!(
            "vsock: listen port=6000 echoed={size} crc32={:#010x} overruns=0",
            crc32(&pattern(size))
        )
    );
}

#[test]
fn bad_connect_lines_and_unknown_guest_ports_close_the_host_connection() {
    if !kvm_available("bad_connect_lines_and_unknown_guest_ports_close_the_host_connection") {
        return;
    }
    let dir = TempDir::new("vsock");
    let uds = dir.0.join("v.sock");
    let (run, ()) = run_with_host("kindling.test=virtio,vsock-listen:6001", &uds, |uds| {
        for bad in [
            &b"HELLO\n"[..],
            b"CONNECT 99999999999\n",
            b"CONNECT \n",
            b"CONNECT 1111111111111111111111111111111111111111",
        ] {
            let mut s = UnixStream::connect(&uds).unwrap();
            s.write_all(bad).unwrap();
            assert!(closed_by_the_device(&mut s), "{bad:?} was not refused");
        }
        // A well-formed line for a port the guest does not listen on: the
        // guest answers with a reset and the device closes the socket.
        let (mut s, port) = host_connect(&uds, 7000);
        assert_eq!(port, None);
        assert!(closed_by_the_device(&mut s));
        // The guest's listener still works.
        let (mut s, port) = host_connect(&uds, 6001);
        assert!(port.is_some());
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
    assert_eq!(run.reason, ExitReason::Status(0), "{}", run.serial);
    assert!(run
        .line("vsock: listen port=6001")
        .starts_with("vsock: listen port=6001 echoed=4 "));
    assert!(
        run.counters.rejected_host_connections >= 4,
        "{:?}",
        run.counters
    );
}

#[test]
fn a_host_peer_that_floods_without_reading_is_held_back() {
    if !kvm_available("a_host_peer_that_floods_without_reading_is_held_back") {
        return;
    }
    let dir = TempDir::new("vsock");
    let uds = dir.0.join("v.sock");
    let (run, (flooded, held, second_closed_in)) = run_with_device(
        "kindling.test=virtio,vsock-listen:6002",
        &uds,
        |uds, device| {
            let (stream, port) = host_connect(&uds, 6002);
            assert!(port.is_some());
            stream.set_nonblocking(true).unwrap();
            let mut stream = stream;
            // Write without ever reading the echo, until writes have
            // blocked for half a second.
            let chunk = vec![0x5au8; 64 * 1024];
            let mut flooded = 0usize;
            let mut blocked_since = None;
            loop {
                match stream.write(&chunk) {
                    Ok(n) => {
                        flooded += n;
                        blocked_since = None;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        let since = *blocked_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(500) {
                            break;
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("flooding: {e}"),
                }
                assert!(flooded < 64 << 20, "the device took 64 MiB without bound");
            }
            let held = device.lock().unwrap().buffered_bytes();
            // The event loop still serves others meanwhile.
            let start = Instant::now();
            let mut s = UnixStream::connect(&uds).unwrap();
            s.write_all(b"NOPE\n").unwrap();
            assert!(closed_by_the_device(&mut s));
            let second_closed_in = start.elapsed();
            // Let the guest give up (it cannot send its echo), then go.
            drop(stream);
            (flooded, held, second_closed_in)
        },
    );
    eprintln!(
        "flooded {flooded} bytes; the device held {held}; guest: {}",
        run.serial
    );
    // The device held at most its own buffer (guest data on its way to
    // the host: 256 KiB) plus the guest's 64 KiB echo ring plus what the
    // kernel's socket buffers took.
    assert!(flooded < 4 << 20, "flooded {flooded} bytes");
    assert!(held <= 256 * 1024 + 64, "the device held {held} bytes");
    assert!(second_closed_in < Duration::from_secs(5));
    // The host closing its end resets the connection (the device had
    // guest data for it), which ends the guest's echo.
    assert_eq!(run.reason, ExitReason::Status(0), "{}", run.serial);
    let line = run.line("vsock: listen port=6002");
    assert!(line.ends_with(" overruns=0 reset"), "{line}");
    assert_eq!(run.counters.credit_overruns, 0);
}

#[test]
fn bad_vsock_configurations_are_refused_before_the_vm_starts() {
    let dir = TempDir::new("vsock");
    let serial = Capture::default();
    let with = |cid: u64, path: PathBuf| {
        let mut c = config("", &path, &serial);
        c.vsock.as_mut().unwrap().guest_cid = cid;
        Vmm::build(c).expect_err("refused")
    };
    let err = with(2, dir.0.join("a.sock"));
    assert!(
        matches!(err, VmmError::Vsock(VsockError::InvalidCid(2))),
        "{err}"
    );
    let err = with(3, dir.0.join("missing/a.sock"));
    assert!(
        matches!(err, VmmError::Vsock(VsockError::MissingDirectory { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");
    let taken = dir.0.join("taken.sock");
    let _listener = UnixListener::bind(&taken).unwrap();
    let err = with(3, taken.clone());
    assert!(
        matches!(err, VmmError::Vsock(VsockError::AlreadyExists(_))),
        "{err}"
    );
    // A failed build does not remove someone else's socket.
    assert!(taken.exists());
    let long = dir.0.join("x".repeat(120));
    assert!(matches!(
        with(3, long),
        VmmError::Vsock(VsockError::PathTooLong(_))
    ));
    // A device holds its path until it is dropped.
    let ok = dir.0.join("ok.sock");
    let device = Vsock::new(&kindling::virtio::vsock::VsockConfig {
        guest_cid: 3,
        uds_path: ok.clone(),
    })
    .unwrap();
    assert!(matches!(
        with(4, ok.clone()),
        VmmError::Vsock(VsockError::AlreadyExists(_))
    ));
    drop(device);
    assert!(!ok.exists());
}

#[test]
fn the_cli_reports_bad_vsock_options() {
    let dir = TempDir::new("vsock-cli");
    for (arg, expected) in [
        (
            "cid=2,uds=/tmp/x".to_string(),
            "vsock guest CID 2 is reserved",
        ),
        (
            format!("cid=3,uds={}/missing/v.sock", dir.0.display()),
            "does not exist",
        ),
        ("cid=3".to_string(), "needs both cid= and uds="),
        ("cid=x,uds=/tmp/x".to_string(), "is not a number"),
    ] {
        let out = Command::new(microvm_binary())
            .args(["--vsock", &arg])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{arg}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{arg}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
