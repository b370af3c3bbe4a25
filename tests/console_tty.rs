//! The example VMM's interactive console, through a real pseudo-terminal:
//! raw mode while the guest runs, Ctrl-C to the guest rather than a
//! signal, Ctrl-A x quits with status 0 and one line, and the terminal's
//! settings are restored afterwards. Also: the escape bytes on a pipe are
//! guest input (no terminal, no escape); and, on a host whose /dev/kvm
//! emulates guest ring 0, the warning for user kernels and the pointer on
//! a KVM internal error.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{kvm_available, microvm_binary, TempDir};

/// A guest that prints its hello line and then runs until it is stopped.
const RUN_FOREVER: &str = "kindling.test=hello,pio-loop";
const HELLO: &str = "Hello from the Kindling test guest!";

/// A pseudo-terminal: the master side and the slave's path.
struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> Pty {
        // SAFETY: plain libc calls on a descriptor we own; results checked.
        unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(
                master >= 0,
                "posix_openpt: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
            let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            assert!(slave >= 0, "open pts: {}", std::io::Error::last_os_error());
            Pty {
                master: File::from_raw_fd(master),
                slave: OwnedFd::from_raw_fd(slave),
            }
        }
    }
}

fn termios(fd: RawFd) -> libc::termios {
    // SAFETY: termios is plain data; tcgetattr fills it.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd, &mut t), 0);
        t
    }
}

fn same_settings(a: &libc::termios, b: &libc::termios) -> bool {
    a.c_iflag == b.c_iflag
        && a.c_oflag == b.c_oflag
        && a.c_cflag == b.c_cflag
        && a.c_lflag == b.c_lflag
        && a.c_cc == b.c_cc
}

/// Reads the master side until `needle` shows up or `timeout` passes.
fn read_until(master: &mut File, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready > 0 {
            let mut buf = [0u8; 512];
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&seen).contains(needle) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Waits for `child` up to `timeout`; kills it and fails the test after.
fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: microvm still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn escape_quits_and_restores_the_terminal() {
    if !kvm_available("escape_quits_and_restores_the_terminal") {
        return;
    }
    let mut pty = Pty::open();
    let slave = pty.slave.as_raw_fd();
    let before = termios(slave);
    assert_ne!(before.c_lflag & libc::ICANON, 0, "a new pty starts cooked");
    let stdin = pty.slave.try_clone().unwrap();
    let stdout = pty.slave.try_clone().unwrap();
    let mut command = Command::new(microvm_binary());
    command
        .args(["--cmdline", RUN_FOREVER])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec. The pty
    // becomes the child's controlling terminal, so a Ctrl-C that the
    // terminal turned into SIGINT would kill it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawning microvm");
    let out = read_until(&mut pty.master, HELLO, Duration::from_secs(20));
    assert!(out.contains(HELLO), "no hello line on the pty: {out:?}");
    let during = termios(slave);
    assert_eq!(during.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
    assert_eq!(during.c_iflag & (libc::ICRNL | libc::IXON), 0);
    // Output processing stays on.
    assert_ne!(during.c_oflag & libc::OPOST, 0);

    // Ctrl-C goes to the guest (no SIGINT), then Ctrl-A Ctrl-A (a Ctrl-A
    // for the guest), then the escape.
    pty.master.write_all(b"\x03").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "Ctrl-C ended microvm: the terminal was not raw"
    );
    pty.master.write_all(b"\x01\x01").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "Ctrl-A Ctrl-A quit");
    pty.master.write_all(b"\x01x").unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(20), "after Ctrl-A x");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "microvm: quit by the console escape (Ctrl-A x); exit status 0\n"
    );
    let after = termios(slave);
    assert!(
        same_settings(&before, &after),
        "terminal settings not restored: lflag {:#x} -> {:#x}, iflag {:#x} -> {:#x}",
        before.c_lflag,
        after.c_lflag,
        before.c_iflag,
        after.c_iflag
    );
}

#[test]
fn escape_on_a_pipe_is_guest_input() {
    if !kvm_available("escape_on_a_pipe_is_guest_input") {
        return;
    }
    // No terminal: stdin is passed to the guest unchanged (scripts may
    // send any byte), so Ctrl-A x does not end the VM.
    let mut child = Command::new(microvm_binary())
        .args(["--cmdline", RUN_FOREVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning microvm");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x01x\x01X").unwrap();
    // Keep the pipe open: EOF is not a reason to stop either.
    std::thread::sleep(Duration::from_millis(1500));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        still_running,
        "Ctrl-A x on a pipe ended microvm; stderr: {stderr}"
    );
    assert!(!stderr.contains("console escape"), "{stderr}");
}

#[test]
fn warning_for_user_kernels_on_an_emulating_kvm() {
    if !kvm_available("warning_for_user_kernels_on_an_emulating_kvm") {
        return;
    }
    let dir = TempDir::new("console-warning");
    let kernel = dir.file("guest.elf", kindling_test_guest::TEST_GUEST_ELF);
    let run = |args: &[&str]| {
        let out = Command::new(microvm_binary())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running microvm");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let emulating = std::path::Path::new("/sys/module/kvm_pvm").exists();
    let (status, stdout, stderr) = run(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        "kindling.test=hello",
    ]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains(HELLO), "{stdout}");
    if emulating {
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one warning line expected: {stderr:?}");
        assert!(lines[0].starts_with("microvm: warning: "), "{stderr}");
        assert!(lines[0].contains("docs/nested-kvm.md"), "{stderr}");
    } else {
        assert!(stderr.is_empty(), "no warning expected here: {stderr}");
    }
    // Never for the embedded test guest.
    let (status, _, stderr) = run(&[]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A minimal ELF64 `vmlinux` whose 64-bit entry (at 1 MiB) runs `code` in
/// ring 0.
fn ring0_kernel(code: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 0x1000];
    elf[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut elf[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
    ph[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_vaddr
    ph[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(code);
    elf
}

#[test]
fn internal_error_points_to_the_nested_docs() {
    if !kvm_available("internal_error_points_to_the_nested_docs") {
        return;
    }
    // `movsd xmm0, [rsi]` in ring 0 (rsi: the zero page), then the exit
    // status 5 to the debug-exit port. KVM's instruction emulator cannot
    // handle an SSE load, so on a /dev/kvm that emulates ring 0 this is a
    // KVM internal error, as it is for a Linux kernel.
    let code = [
        0xf2, 0x0f, 0x10, 0x06, // movsd xmm0, [rsi]
        0xb0, 0x05, 0xe6, 0xf4, // mov al, 5; out 0xf4, al
        0xf4, 0xeb, 0xfd, // hlt; jmp to the hlt
    ];
    let dir = TempDir::new("console-internal-error");
    let kernel = dir.file("ring0.elf", &ring0_kernel(&code));
    let mut child = Command::new(microvm_binary())
        .args(["--kernel", kernel.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running microvm");
    let status = wait_or_kill(&mut child, Duration::from_secs(30), "ring-0 SSE kernel");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert_eq!(lines.len(), 2, "the warning and the error: {stderr:?}");
        assert!(lines[0].starts_with("microvm: warning: "), "{stderr}");
        assert!(
            lines[1].starts_with("microvm: vCPU 0: KVM internal error"),
            "{stderr}"
        );
        assert!(lines[1].contains("docs/nested-kvm.md"), "{stderr}");
    } else {
        // Hardware runs the load (status 5), or the guest has no SSE
        // enabled and triple-faults (a reset: status 0).
        assert!(
            matches!(status.code(), Some(5) | Some(0)),
            "{status:?}: {stderr}"
        );
        assert!(!stderr.contains("internal error"), "{stderr}");
    }
}

#[test]
fn sigquit_restores_the_terminal_under_the_seccomp_filters() {
    if !kvm_available("sigquit_restores_the_terminal_under_the_seccomp_filters") {
        return;
    }
    let mut pty = Pty::open();
    let slave = pty.slave.as_raw_fd();
    let before = termios(slave);
    let mut child = Command::new(microvm_binary())
        .args(["--cmdline", RUN_FOREVER])
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning microvm");
    let out = read_until(&mut pty.master, HELLO, Duration::from_secs(20));
    assert!(out.contains(HELLO), "no hello line on the pty: {out:?}");
    assert_eq!(termios(slave).c_lflag & libc::ICANON, 0, "raw mode");
    // SIGQUIT is not one of the signals the VMM stops on in order: the
    // console's handler restores the terminal and re-raises it, on
    // whichever (filtered) thread takes it.
    // SAFETY: signalling our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) }, 0);
    let status = wait_or_kill(&mut child, Duration::from_secs(20), "after SIGQUIT");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGQUIT), "{status}: {stderr}");
    assert!(!stderr.contains("seccomp"), "{stderr}");
    assert!(
        same_settings(&before, &termios(slave)),
        "terminal settings not restored"
    );
}
