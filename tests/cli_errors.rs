//! Bad input through the example binary: every error is one clear line on
//! stderr and exit status 1, never a panic or a backtrace.

mod common;

use std::process::{Command, Stdio};

use common::{kvm_available, microvm_binary, TempDir};

/// Runs `microvm` with `args`; returns (status, stdout, stderr).
fn microvm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(microvm_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running microvm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failed run: status 1, one stderr line containing `needle`.
fn assert_error(args: &[&str], needle: &str) {
    let (status, _stdout, stderr) = microvm(args);
    assert_eq!(status, 1, "{args:?}: stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line, got {stderr:?}"
    );
    assert!(lines[0].starts_with("microvm: "), "{args:?}: {stderr:?}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

/// A minimal ELF64 header with the given class, data and machine fields.
fn elf_header(class: u8, data: u8, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

#[test]
fn missing_kernel_file() {
    assert_error(
        &["--kernel", "/nonexistent/vmlinux"],
        "cannot open kernel image /nonexistent/vmlinux",
    );
}

#[test]
fn kernel_with_bad_magic() {
    let dir = TempDir::new("cli");
    let kernel = dir.file("kernel", &[0x42; 4096]);
    assert_error(&["--kernel", kernel.to_str().unwrap()], "magic");
}

#[test]
fn truncated_kernel() {
    let dir = TempDir::new("cli");
    let kernel = dir.file("kernel", &kindling_test_guest::TEST_GUEST_ELF[..200]);
    assert_error(&["--kernel", kernel.to_str().unwrap()], "truncated");
}

#[test]
fn kernel_for_another_architecture() {
    let dir = TempDir::new("cli");
    // EM_AARCH64 = 183.
    let kernel = dir.file("kernel", &elf_header(2, 1, 183));
    assert_error(
        &["--kernel", kernel.to_str().unwrap()],
        "not an x86_64 image",
    );
    let kernel32 = dir.file("kernel32", &elf_header(1, 1, 62));
    assert_error(&["--kernel", kernel32.to_str().unwrap()], "not 64-bit");
}

#[test]
fn kernel_that_does_not_fit_in_memory() {
    // The test guest loads at 1 MiB; 1 MiB of RAM cannot hold it.
    assert_error(&["--memory", "1"], "does not fit in guest memory");
}

#[test]
fn initrd_too_large_for_memory() {
    let dir = TempDir::new("cli");
    let initrd = dir.file("initrd", &vec![0u8; 24 << 20]);
    assert_error(
        &["--memory", "16", "--initrd", initrd.to_str().unwrap()],
        "initrd of 25165824 bytes",
    );
}

#[test]
fn missing_initrd_file() {
    assert_error(&["--initrd", "/nonexistent/initrd"], "cannot open initrd");
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(5000);
    assert_error(&["--cmdline", &long], "command line is too long");
}

#[test]
fn no_room_on_the_command_line_for_a_device() {
    // Fits the kernel's 2048 bytes alone, not with the device's parameter.
    let long = "x".repeat(2040);
    assert_error(
        &["--cmdline", &long, "--entropy"],
        "cannot add the virtio-mmio device",
    );
}

#[test]
fn bad_memory_sizes() {
    assert_error(&["--memory", "0"], "must not be zero");
    assert_error(&["--memory", "99999999999"], "does not fit");
    assert_error(&["--memory", "-5"], "--memory");
    assert_error(&["--memory", "lots"], "--memory");
}

#[test]
fn bad_vcpu_counts() {
    assert_error(&["--cpus", "0"], "invalid vCPU count 0");
    assert_error(&["--cpus", "255"], "invalid vCPU count 255");
    assert_error(&["--cpus", "300"], "--cpus");
}

#[test]
fn bad_serial_option() {
    assert_error(&["--serial", "tty"], "is not stdout, off or file=PATH");
    assert_error(&["--serial", "file="], "is not stdout, off or file=PATH");
    assert_error(
        &["--serial", "file=/nonexistent/dir/out"],
        "cannot open serial output file",
    );
}

#[test]
fn unknown_flag() {
    assert_error(&["--frobnicate"], "--frobnicate");
}

#[test]
fn help_goes_to_stdout() {
    let (status, stdout, stderr) = microvm(&["--help"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("--kernel"));
    assert!(stderr.is_empty());
}

#[test]
fn default_run_prints_hello_and_exits_zero() {
    if !kvm_available("default_run_prints_hello_and_exits_zero") {
        return;
    }
    let (status, stdout, stderr) = microvm(&[]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stdout, "Hello from the Kindling test guest!\n");
}

#[test]
fn guest_exit_status_becomes_the_process_status() {
    if !kvm_available("guest_exit_status_becomes_the_process_status") {
        return;
    }
    let (status, stdout, _) = microvm(&["--cmdline", "kindling.test=hello kindling.exit=9"]);
    assert_eq!(status, 9);
    assert_eq!(stdout.lines().count(), 1);
}

#[test]
fn serial_to_file_and_off() {
    if !kvm_available("serial_to_file_and_off") {
        return;
    }
    let dir = TempDir::new("cli");
    let out = dir.0.join("console.log");
    let arg = format!("file={}", out.display());
    let (status, stdout, _) = microvm(&["--serial", &arg, "--cpus", "2"]);
    assert_eq!(status, 0);
    assert!(stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "Hello from the Kindling test guest!\n"
    );
    let (status, stdout, _) = microvm(&["--serial", "off"]);
    assert_eq!(status, 0);
    assert!(stdout.is_empty());
}

#[test]
fn pvh_needs_the_pvh_note() {
    // The test guest is an ELF without a PVH note.
    assert_error(&["--pvh"], "has no PVH entry note");
}

#[test]
fn bad_disk_options() {
    assert_error(
        &["--disk", "/nonexistent/disk.img"],
        "/nonexistent/disk.img",
    );
    assert_error(&["--disk", "a.img,rw"], "unknown disk option 'rw'");
    assert_error(
        &["--disk", "x,engine=bogus"],
        "unknown block engine \"bogus\": expected sync or io_uring",
    );
    // A valid engine on a missing image: the image is named.
    assert_error(
        &["--disk", "/nonexistent/disk.img,engine=io_uring"],
        "/nonexistent/disk.img",
    );
}

#[test]
fn files_of_the_wrong_kind_are_refused_without_blocking() {
    let dir = TempDir::new("file-kinds");
    let fifo = dir.0.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A FIFO as the kernel used to block in open() forever.
    assert_error(
        &["--kernel", fifo.to_str().unwrap()],
        "is a FIFO, not a regular file",
    );
    let kernel = dir.file("k", kindling_test_guest::TEST_GUEST_ELF);
    assert_error(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            dir.0.to_str().unwrap(),
        ],
        "is a directory, not a regular file",
    );
}

#[test]
fn one_file_for_two_uses_is_refused_and_left_untouched() {
    let dir = TempDir::new("file-twice");
    let disk = dir.file("v.img", &[0x5a; 4096]);
    let disk = disk.to_str().unwrap();
    assert_error(
        &["--disk", disk, "--disk", disk],
        "refusing to use it twice",
    );
    // The serial output on a disk image destroyed the image once.
    let serial = format!("file={disk}");
    assert_error(
        &["--disk", disk, "--serial", &serial],
        "already used as a disk image",
    );
    assert_eq!(std::fs::read(disk).unwrap(), vec![0x5a; 4096]);
    // Nor through a symbolic link.
    let link = dir.0.join("console.log");
    std::os::unix::fs::symlink(disk, &link).unwrap();
    let serial = format!("file={}", link.display());
    assert_error(&["--serial", &serial], "symbolic link");
    assert_eq!(std::fs::read(disk).unwrap(), vec![0x5a; 4096]);
}

#[test]
fn a_disk_locked_by_another_process_is_refused() {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("disk-lock");
    let disk = dir.file("shared.img", &[0; 4096]);
    // Another VMM's lock: an OFD write lock on the image.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads one valid struct flock.
    let locked = unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    assert_eq!(locked, 0);
    let disk = disk.to_str().unwrap();
    assert_error(&["--disk", disk], "is in use by another VMM");
    let read_only = format!("{disk},readonly");
    assert_error(&["--disk", &read_only], "is in use by another VMM");
    drop(holder);
    // A character device is no disk.
    assert_error(
        &["--disk", "/dev/null"],
        "only regular files and block devices",
    );
}

#[test]
fn bad_network_interfaces() {
    assert_error(
        &["--net", "tap=kdl-name-too-long0"],
        "TAP interface name \"kdl-name-too-long0\" is 18 bytes, longer than the 15 Linux allows",
    );
    assert_error(
        &["--net", "tap=kdl-absent7"],
        "there is no network interface \"kdl-absent7\" (create the TAP device first",
    );
    assert_error(
        &["--net", "tap=x,mac=06:00"],
        "invalid MAC address \"06:00\"",
    );
    assert_error(&["--net", "mac=06:00:00:00:00:01"], "names no TAP device");
    assert_error(
        &["--net", "tap=a", "--net", "tap=a"],
        "network interfaces 0 and 1 both use iface_id \"a\"",
    );
}

#[test]
fn net_with_the_api_socket_is_refused_not_dropped() {
    // The API's devices come from its requests (or the config file); a
    // --net flag beside --api-sock was silently ignored before, and the VMM
    // went on serving the socket: wait for it with a deadline, not forever.
    let dir = TempDir::new("cli-api-net");
    let sock = dir.file("placeholder", b"").with_file_name("api.sock");
    let mut child = Command::new(microvm_binary())
        .args([
            "--api-sock",
            sock.to_str().unwrap(),
            "--net",
            "tap=kdl-absent8",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running microvm");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("microvm --api-sock --net is still running after 20 s: --net was ignored");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "microvm: --net, --vsock and --snapshot-on-line are not available with --api-sock"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!sock.exists(), "no API socket is served");
}

#[test]
fn bad_log_options() {
    assert_error(&["--level", "loud"], "unknown log level \"loud\"");
    assert_error(
        &["--log-path", "/nonexistent/kindling/log"],
        "cannot open the log file /nonexistent/kindling/log",
    );
}

#[test]
fn the_log_says_why_the_vm_ended() {
    if !kvm_available("the_log_says_why_the_vm_ended") {
        return;
    }
    // Quiet by default: only the guest's line.
    let (status, _, stderr) = microvm(&[]);
    assert_eq!(status, 0);
    assert!(stderr.is_empty(), "{stderr:?}");
    // At Info, one line on stderr gives the reason; to a file with
    // --log-path.
    let (status, _, stderr) = microvm(&[
        "--level",
        "Info",
        "--cmdline",
        "kindling.test=hello kindling.exit=5",
    ]);
    assert_eq!(status, 5);
    assert!(stderr.contains("the VM ended: Status(5)"), "{stderr:?}");
    let dir = TempDir::new("cli-log");
    let log = dir.0.join("vmm.log");
    std::fs::write(&log, "").unwrap();
    let path = log.to_str().unwrap();
    let (status, _, stderr) = microvm(&[
        "--level",
        "info",
        "--log-path",
        path,
        "--cmdline",
        "kindling.test=hello kindling.exit=reset",
    ]);
    assert_eq!(status, 0);
    assert!(stderr.is_empty(), "{stderr:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the VM ended: Reset"), "{text:?}");
}

#[test]
fn the_debug_exit_port_is_opt_in_for_a_kernel_the_user_gives() {
    if !kvm_available("the_debug_exit_port_is_opt_in_for_a_kernel_the_user_gives") {
        return;
    }
    let dir = TempDir::new("cli-debug-exit");
    let kernel = dir.0.join("guest.elf");
    std::fs::write(&kernel, kindling_test_guest::TEST_GUEST_ELF).unwrap();
    let kernel = kernel.to_str().unwrap();
    let cmdline = "kindling.test=hello kindling.exit=9";
    // The guest cannot choose microvm's status: its write to port 0xf4
    // goes nowhere, it says so and resets (status 0).
    let (status, stdout, _) = microvm(&["--kernel", kernel, "--cmdline", cmdline]);
    assert_eq!(status, 0, "{stdout}");
    assert!(
        stdout.contains("exit: no debug-exit device at port 0xf4, status 9 lost; resetting"),
        "{stdout}"
    );
    // Asked for, the port is there.
    let (status, stdout, _) = microvm(&["--kernel", kernel, "--cmdline", cmdline, "--debug-exit"]);
    assert_eq!(status, 9, "{stdout}");
    assert!(!stdout.contains("no debug-exit device"), "{stdout}");
}
