//! The jailer end to end: the example VMM booting the test guest in a
//! jail, a probe showing what a jailed process can reach, bad input, and
//! cgroup limits. They need root (namespaces, mknod, cgroups) and print
//! `SKIPPED ...` without it; the microVM test also needs `/dev/kvm`
//! (`KINDLING_REQUIRE_KVM=1` makes its absence a failure).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const UID: u32 = 1000;
const GID: u32 = 1000;

fn jailer() -> &'static str {
    env!("CARGO_BIN_EXE_kindling-jailer")
}

/// The directory cargo puts examples in, next to the test binaries.
fn examples_dir() -> PathBuf {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples")
}

fn probe() -> PathBuf {
    let path = examples_dir().join("jail_probe");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test`",
        path.display()
    );
    path
}

/// The example VMM of the `kindling` package: built by `cargo test
/// --workspace` (the test command), or by `cargo build --example microvm`.
fn microvm() -> PathBuf {
    let path = examples_dir().join("microvm");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, or `cargo build --example microvm` first",
        path.display()
    );
    path
}

/// Whether the jailer can work here: root, and the namespaces it makes.
fn can_jail(test: &str) -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: the jailer needs root");
        return false;
    }
    let mut cmd = Command::new("/bin/true");
    // SAFETY: the closure only makes a system call (async-signal-safe)
    // between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let flags = libc::CLONE_NEWNS
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWPID;
            if libc::unshare(flags) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if let Err(e) = cmd.status() {
        eprintln!("SKIPPED {test}: cannot create namespaces here: {e}");
        return false;
    }
    true
}

fn kvm_available(test: &str) -> bool {
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

/// A temporary chroot base directory, removed on drop.
struct Base(PathBuf);

impl Base {
    fn new(tag: &str) -> Base {
        let dir =
            std::env::temp_dir().join(format!("kindling-jailer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Base(dir)
    }

    fn id(&self, tag: &str) -> String {
        format!("{tag}-{}", std::process::id())
    }

    /// Everything under the base, relative, sorted.
    fn tree(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(base).unwrap().display().to_string());
                if path.is_dir() && !path.is_symlink() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &self.0, &mut out);
        out.sort();
        out
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn jail_cmd(base: &Base, id: &str, exec: &Path) -> Command {
    let mut cmd = Command::new(jailer());
    cmd.args(["--id", id, "--exec-file"])
        .arg(exec)
        .args(["--uid", &UID.to_string(), "--gid", &GID.to_string()])
        .arg("--chroot-base-dir")
        .arg(&base.0);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of the probe's `key: value` line.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} line in:\n{out}"))
}

#[test]
fn jailed_microvm_boots_the_test_guest() {
    if !can_jail("jailed_microvm_boots_the_test_guest")
        || !kvm_available("jailed_microvm_boots_the_test_guest")
    {
        return;
    }
    let base = Base::new("microvm");
    let id = base.id("vm");
    let out = jail_cmd(&base, &id, &microvm()).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Hello from the Kindling test guest!"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The jail stays, as documented.
    let jail = format!("microvm/{id}");
    assert_eq!(
        base.tree(),
        [
            "microvm".to_string(),
            jail.clone(),
            format!("{jail}/root"),
            format!("{jail}/root/dev"),
            format!("{jail}/root/dev/kvm"),
            format!("{jail}/root/dev/net"),
            format!("{jail}/root/dev/net/tun"),
            format!("{jail}/root/microvm"),
        ]
    );
    let root = base.0.join(&jail).join("root");
    let meta = std::fs::metadata(&root).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (UID, GID, 0o755)
    );
    for (host, jailed) in [("/dev/kvm", "dev/kvm"), ("/dev/net/tun", "dev/net/tun")] {
        let node = std::fs::metadata(root.join(jailed)).unwrap();
        assert!(node.file_type().is_char_device(), "{jailed}");
        assert_eq!(
            node.rdev(),
            std::fs::metadata(host).unwrap().rdev(),
            "{jailed}"
        );
        assert_eq!(
            (node.uid(), node.gid(), node.mode() & 0o7777),
            (UID, GID, 0o600)
        );
    }
    let exec = std::fs::metadata(root.join("microvm")).unwrap();
    assert_eq!((exec.uid(), exec.mode() & 0o7777), (0, 0o755));
    assert_eq!(exec.len(), std::fs::metadata(microvm()).unwrap().len());

    // The VMM's exit status passes through (the test guest chooses 7).
    let id2 = base.id("exit");
    let out = jail_cmd(&base, &id2, &microvm())
        .args(["--", "--cmdline", "kindling.test=hello kindling.exit=7"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Hello from the Kindling test guest!"),
        "{stdout}"
    );
}

#[test]
fn sigterm_to_the_jailer_stops_the_jailed_vm_in_order() {
    let test = "sigterm_to_the_jailer_stops_the_jailed_vm_in_order";
    if !can_jail(test) || !kvm_available(test) {
        return;
    }
    let base = Base::new("signal");
    let id = base.id("vm");
    let mut child = jail_cmd(&base, &id, &microvm())
        .args(["--", "--cmdline", "kindling.test=hello,pio-loop"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if line.contains("Hello from the Kindling test guest!") {
            break;
        }
        line.clear();
    }
    // The VMM is PID 1 of its namespace: it gets the signal only because
    // it handles it; the jailer forwards it.
    // SAFETY: signalling our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(stderr.contains("microvm: stopped by SIGTERM"), "{stderr}");
}

#[test]
fn the_jailed_vm_dies_with_the_jailer() {
    let test = "the_jailed_vm_dies_with_the_jailer";
    if !can_jail(test) || !kvm_available(test) {
        return;
    }
    let base = Base::new("sigkill");
    let id = base.id("vm");
    let mut child = jail_cmd(&base, &id, &microvm())
        .args(["--", "--cmdline", "kindling.test=hello,pio-loop"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if line.contains("Hello from the Kindling test guest!") {
            break;
        }
        line.clear();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The VMM holds the other end of stdout: end of file once it is gone.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut rest);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok(),
        "the jailed VMM outlived the jailer"
    );
}

#[test]
fn daemonized_jailer_returns_once_the_vmm_runs() {
    let test = "daemonized_jailer_returns_once_the_vmm_runs";
    if !can_jail(test) || !kvm_available(test) {
        return;
    }
    let base = Base::new("daemon");
    let id = base.id("vm");
    let out = jail_cmd(&base, &id, &microvm())
        .args(["--daemonize", "--", "--serial", "file=/serial.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    // The VM runs in the background and writes its console in the jail.
    let log = base.0.join(format!("microvm/{id}/root/serial.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let serial = std::fs::read_to_string(&log).unwrap_or_default();
        if serial.contains("Hello from the Kindling test guest!") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hello in {}: {serial:?}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A failure before the VMM runs still reaches the caller, and the
    // daemon removes the jail.
    let id = base.id("fail");
    let out = jail_cmd(&base, &id, &microvm())
        .args(["--daemonize", "--netns", "/etc/hostname"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("kindling-jailer: setns(network namespace)"),
        "{stderr}"
    );
    assert!(!base.0.join(format!("microvm/{id}")).exists());
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn joins_an_existing_network_namespace() {
    let test = "joins_an_existing_network_namespace";
    if !can_jail(test) {
        return;
    }
    let name = format!("kindling-jailer-{}", std::process::id());
    let ok = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["netns", "add", &name]) {
        eprintln!("SKIPPED {test}: `ip netns add` is not available");
        return;
    }
    let netns = NetNs(name);
    assert!(ok(&[
        "-n", &netns.0, "tuntap", "add", "kjtap0", "mode", "tap"
    ]));
    let base = Base::new("netns");
    let out = jail_cmd(&base, &base.id("net"), &probe())
        .arg("--netns")
        .arg(format!("/var/run/netns/{}", netns.0))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(field(&stdout, "interfaces"), "kjtap0 lo");
}

/// CRC-32/IEEE, as the test guest prints it.
fn crc32(data: &[u8]) -> u32 {
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

#[test]
fn jailed_microvm_boots_a_kernel_file_with_a_disk() {
    let test = "jailed_microvm_boots_a_kernel_file_with_a_disk";
    if !can_jail(test) || !kvm_available(test) {
        return;
    }
    let base = Base::new("kernel-disk");
    // The kernel on another file system where there is one (/dev/shm is
    // usually tmpfs): it is copied instead of hard-linked.
    let shm = Path::new("/dev/shm");
    let kernel_dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let kernel = kernel_dir.join(format!("kindling-jailer-vmlinux-{}", std::process::id()));
    std::fs::write(&kernel, kindling_test_guest::TEST_GUEST_ELF).unwrap();
    let data_dir = Base::new("kernel-disk-data");
    let disk = data_dir.0.join("disk.img");
    let data: Vec<u8> = (0..8 * 512u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&disk, &data).unwrap();

    let id = base.id("vm");
    let out = jail_cmd(&base, &id, &microvm())
        .arg("--file")
        .arg(&kernel)
        .arg("--file")
        .arg(&disk)
        .arg("--")
        .arg("--kernel")
        .arg(&kernel)
        .arg("--disk")
        .arg(format!("readonly,path={}", disk.display()))
        .args(["--cmdline", "kindling.test=virtio,blk-read:0:0:8"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&kernel);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let expected = format!(
        "blk0: read sector=0 count=8 status=OK crc32={:#010x}",
        crc32(&data)
    );
    assert!(
        stdout.lines().any(|l| l == expected),
        "{expected} not in:\n{stdout}"
    );

    let root = base.0.join(format!("microvm/{id}/root"));
    let name = kernel.file_name().unwrap();
    let jailed_kernel = std::fs::metadata(root.join(name)).unwrap();
    let jailed_disk = std::fs::metadata(root.join("disk.img")).unwrap();
    for meta in [&jailed_kernel, &jailed_disk] {
        assert_eq!((meta.uid(), meta.gid()), (UID, GID));
    }
    let host_disk = std::fs::metadata(&disk).unwrap();
    assert_eq!(
        jailed_disk.ino(),
        host_disk.ino(),
        "the disk is hard-linked"
    );
    assert_eq!(
        jailed_kernel.len(),
        kindling_test_guest::TEST_GUEST_ELF.len() as u64
    );
}

#[test]
fn the_host_is_out_of_reach() {
    if !can_jail("the_host_is_out_of_reach") {
        return;
    }
    let base = Base::new("probe");
    let data_dir = Base::new("probe-data");
    let data = data_dir.0.join("data.txt");
    std::fs::write(&data, "hello from the host\n").unwrap();
    // A --file given through a symbolic link: the jail gets the file.
    let other = data_dir.0.join("other.txt");
    std::fs::write(&other, "through a link\n").unwrap();
    let alias = data_dir.0.join("alias.txt");
    std::os::unix::fs::symlink(&other, &alias).unwrap();
    let id = base.id("probe");
    // A descriptor the jailer inherits (dup clears close-on-exec), which
    // the VMM must not.
    let file = std::fs::File::open("/etc/hostname").unwrap();
    // SAFETY: dup of a descriptor we own; the copy is closed below.
    let leak = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&file)) };
    assert!(leak > 2);
    let out = jail_cmd(&base, &id, &probe())
        .arg("--file")
        .arg(&data)
        .arg("--file")
        .arg(&alias)
        .args([
            "--resource-limit",
            "no-file=64",
            "--resource-limit",
            "fsize=1048576",
        ])
        .arg("--")
        .arg(format!("path={}", data.display()))
        .arg(format!("path={}", alias.display()))
        .arg("exit=7")
        .env("KINDLING_SECRET", "x")
        .output()
        .unwrap();
    // SAFETY: closes the copy made above, which nothing else uses.
    unsafe { libc::close(leak) };
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        field(&stdout, "args"),
        "path=/data.txt path=/alias.txt exit=7"
    );
    assert_eq!(field(&stdout, "root"), "alias.txt data.txt dev jail_probe");
    assert_eq!(field(&stdout, "pid"), "1");
    assert_eq!(field(&stdout, "uid"), format!("{UID} {UID}"));
    assert_eq!(field(&stdout, "gid"), GID.to_string());
    assert_eq!(field(&stdout, "groups"), "0");
    assert_eq!(field(&stdout, "setuid0"), "failed");
    assert_eq!(field(&stdout, "interfaces"), "lo");
    assert_eq!(field(&stdout, "env"), "0");
    assert_eq!(field(&stdout, "fds"), "");
    assert_eq!(field(&stdout, "nofile"), "64 64");
    assert_eq!(field(&stdout, "host /etc/passwd"), "entity not found");
    assert_eq!(field(&stdout, "host /proc/self/status"), "entity not found");
    assert_eq!(field(&stdout, "host /tmp"), "entity not found");
    assert_eq!(field(&stdout, "read /data.txt"), "hello from the host");
    assert_eq!(field(&stdout, "read /alias.txt"), "through a link");

    // The file was hard-linked (same file system) and given to the user.
    let linked = base.0.join(format!("jail_probe/{id}/root/data.txt"));
    let (a, b) = (
        std::fs::metadata(&data).unwrap(),
        std::fs::metadata(&linked).unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!((b.uid(), b.gid()), (UID, GID));
}

/// Runs the jailer with `args` and checks it fails with one
/// `kindling-jailer: ` line containing `expect`, exit status 1.
fn fails(args: &[&str], expect: &str) {
    let out = Command::new(jailer()).args(args).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("kindling-jailer: "),
        "{args:?}: {stderr}"
    );
    assert!(
        stderr.contains(expect),
        "{args:?}: expected {expect:?} in {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?}");
}

#[test]
fn bad_input_fails_with_one_line_and_leaves_nothing() {
    if !can_jail("bad_input_fails_with_one_line_and_leaves_nothing") {
        return;
    }
    let base = Base::new("bad");
    let b = base.0.to_str().unwrap();
    let probe = probe();
    let p = probe.to_str().unwrap();
    let common = |id: &str| {
        vec![
            "--id".to_string(),
            id.to_string(),
            "--exec-file".into(),
            p.into(),
            "--uid".into(),
            UID.to_string(),
            "--gid".into(),
            GID.to_string(),
            "--chroot-base-dir".into(),
            b.into(),
        ]
    };
    let run = |extra: &[&str], id: &str, expect: &str| {
        let mut args = common(id);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&args, expect);
    };

    run(&[], "a/b", "only letters, digits and '-'");
    run(&[], "..", "only letters, digits and '-'");
    run(&[], &"x".repeat(65), "at most 64");
    run(&[], "", "the id is empty");
    run(
        &["--file", "/nonexistent/vmlinux"],
        "ok",
        "--file /nonexistent/vmlinux",
    );
    run(
        &["--file", "/etc"],
        "ok",
        "--file /etc is not a regular file",
    );
    run(&["--file", p], "ok", "already taken");
    run(&["--cgroup", "cgroup.procs=1"], "ok", "cgroup core");
    run(&["--cgroup", "memory.max"], "ok", "is not FILE=VALUE");
    run(
        &["--cgroup", "../x.max=1"],
        "ok",
        "not a cgroup interface file",
    );
    run(
        &["--cgroup", "nosuch.max=1"],
        "ok",
        "\"nosuch\" is not available",
    );
    run(&["--resource-limit", "stack=1"], "ok", "unknown resource");
    run(
        &["--netns", "/nonexistent/netns"],
        "ok",
        "network namespace /nonexistent/netns",
    );
    // Fails in the child (setns on a file that is no namespace): reported
    // through the error pipe, and the jail is removed again.
    run(
        &["--netns", "/etc/hostname"],
        "ok",
        "setns(network namespace)",
    );
    // ... also the base directory, when the jailer made it.
    let fresh = base.0.join("fresh/base");
    let fresh = fresh.to_str().unwrap();
    fails(
        &[
            "--id",
            "ok",
            "--exec-file",
            p,
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--chroot-base-dir",
            fresh,
            "--netns",
            "/etc/hostname",
        ],
        "setns(network namespace)",
    );
    fails(
        &[
            "--id",
            "ok",
            "--exec-file",
            "/nonexistent/microvm",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--chroot-base-dir",
            b,
        ],
        "the exec file /nonexistent/microvm",
    );
    fails(
        &[
            "--id",
            "ok",
            "--exec-file",
            "/etc",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--chroot-base-dir",
            b,
        ],
        "the exec file /etc is not a regular file",
    );
    fails(
        &[
            "--id",
            "ok",
            "--exec-file",
            p,
            "--uid",
            "0",
            "--gid",
            "0",
            "--chroot-base-dir",
            b,
        ],
        "--allow-root",
    );
    fails(&["--id", "ok", "--exec-file", p], "--uid");
    assert!(base.tree().is_empty(), "left behind: {:?}", base.tree());

    // Another VM's jail is refused and left as it was.
    let taken = base.0.join("jail_probe/taken");
    std::fs::create_dir_all(taken.join("root")).unwrap();
    run(&[], "taken", "exists already");
    assert_eq!(
        base.tree(),
        ["jail_probe", "jail_probe/taken", "jail_probe/taken/root"]
    );
}

/// Expected contents of a cgroup file after writing `value`.
fn normalized(file: &str, value: &str) -> String {
    match (file, value) {
        ("memory.max", "256M") => (256u64 << 20).to_string(),
        _ => value.to_string(),
    }
}

#[test]
fn cgroup_limits_are_applied_and_removed() {
    let test = "cgroup_limits_are_applied_and_removed";
    if !can_jail(test) {
        return;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(sep + 1) == Some(&"cgroup2")).then(|| PathBuf::from(f[4]))
    }) else {
        eprintln!("SKIPPED {test}: cgroup v2 is not mounted");
        return;
    };
    let available = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    let mut settings: Vec<(&str, &str)> = Vec::new();
    if has("cpu") {
        settings.push(("cpu.max", "50000 100000"));
    }
    if has("memory") {
        settings.push(("memory.max", "256M"));
    }
    if has("pids") {
        settings.push(("pids.max", "64"));
    }
    // Hybrid hosts (this project's machines) offer only hugetlb in v2.
    if has("hugetlb") && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        settings.push(("hugetlb.2MB.max", "0"));
    }
    if settings.is_empty() {
        eprintln!(
            "SKIPPED {test}: cgroup v2 at {} offers no controller to limit",
            mount.display()
        );
        return;
    }
    eprintln!("{test}: {settings:?} in {}", mount.display());

    let base = Base::new("cgroup");
    let id = base.id("cg");
    let mut cmd = jail_cmd(&base, &id, &probe());
    for (file, value) in &settings {
        cmd.arg("--cgroup").arg(format!("{file}={value}"));
    }
    let mut child = cmd
        .args(["--", "wait", "exit=3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let out: Output = child.wait_with_output().unwrap();
            panic!(
                "the probe ended early:\n{seen}\nstderr: {}",
                text(&out.stderr)
            );
        }
        seen.push_str(&line);
        if line == "ready\n" {
            break;
        }
    }

    // While the probe runs: its cgroup holds the limits and the probe.
    let dir = mount.join("kindling").join(&id);
    for (file, value) in &settings {
        let now = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(now.trim(), normalized(file, value), "{file}");
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 1, "cgroup.procs: {procs}");
    assert_ne!(
        procs.trim(),
        child.id().to_string(),
        "the jailer itself stays outside"
    );

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(!dir.exists(), "{} was not removed", dir.display());

    // A controller v2 does not offer fails clearly, leaving nothing.
    if let Some(missing) = ["cpu", "memory", "pids"].into_iter().find(|c| !has(c)) {
        let id = base.id("cg-missing");
        let out = jail_cmd(&base, &id, &probe())
            .arg("--cgroup")
            .arg(format!("{missing}.max=1"))
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{missing:?} is not available")),
            "{stderr}"
        );
        assert!(!base.0.join("jail_probe").join(&id).exists());
    }
}

/// Where `pivot_root` cannot leave the current root (EINVAL: an
/// initramfs's rootfs, a mount without a parent, as in the nested
/// runner's first level) the jailer moves the jail's root onto `/` and
/// chroots into it, detaching the other mounts first. A test cannot make
/// its root the rootfs; pivot_root refuses as well when the current
/// root's parent mount is shared, which the jailer's own
/// `MS_REC | MS_PRIVATE` on `/` does not reach: here the jailer runs
/// chrooted into a bind mount whose parent is shared (in a mount
/// namespace of its own), with a /proc mounted in it and the chroot base
/// on a tmpfs of its own (a mount above the jail, which must stay).
#[test]
fn jails_where_pivot_root_cannot_leave_the_root() {
    let test = "jails_where_pivot_root_cannot_leave_the_root";
    if !can_jail(test) {
        return;
    }
    let Ok(kvm) = std::fs::metadata("/dev/kvm") else {
        eprintln!("SKIPPED {test}: no /dev/kvm node to copy into the chroot");
        return;
    };
    let top = Base::new("no-pivot");
    for dir in ["dev", "proc", "srv"] {
        std::fs::create_dir(top.0.join(dir)).unwrap();
    }
    std::fs::copy(jailer(), top.0.join("kindling-jailer")).unwrap();
    std::fs::copy(probe(), top.0.join("jail_probe")).unwrap();
    let cpath = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let node = cpath(&top.0.join("dev/kvm"));
    // SAFETY: a NUL-terminated path alive for the call.
    let ret = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, kvm.rdev()) };
    assert_eq!(ret, 0, "mknod: {}", std::io::Error::last_os_error());

    let root = cpath(&top.0);
    let proc_dir = cpath(&top.0.join("proc"));
    let srv_dir = cpath(&top.0.join("srv"));
    let id = top.id("no-pivot");
    let mut cmd = Command::new("/kindling-jailer");
    cmd.args(["--id", &id, "--exec-file", "/jail_probe"])
        .args(["--uid", &UID.to_string(), "--gid", &GID.to_string()])
        .args(["--chroot-base-dir", "/srv", "--", "exit=5"]);
    // SAFETY: the closure makes system calls only (async-signal-safe),
    // with strings built before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let fail = || Err(std::io::Error::last_os_error());
            let (none, no_data) = (std::ptr::null(), std::ptr::null());
            let mount = |src: *const libc::c_char, target: &std::ffi::CStr, fs, flags| {
                libc::mount(src, target.as_ptr(), fs, flags, no_data) == -1
            };
            if libc::unshare(libc::CLONE_NEWNS) == -1 {
                return fail();
            }
            // Private first (nothing reaches the host's namespace), then
            // shared within this namespace only.
            if mount(none, c"/", none, libc::MS_REC | libc::MS_PRIVATE)
                || mount(none, c"/", none, libc::MS_REC | libc::MS_SHARED)
                || mount(root.as_ptr(), &root, none, libc::MS_BIND)
                || mount(c"proc".as_ptr(), &proc_dir, c"proc".as_ptr(), 0)
                || mount(c"tmpfs".as_ptr(), &srv_dir, c"tmpfs".as_ptr(), 0)
            {
                return fail();
            }
            if libc::chroot(root.as_ptr()) == -1 || libc::chdir(c"/".as_ptr()) == -1 {
                return fail();
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(5),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(field(&stdout, "args"), "exit=5");
    assert_eq!(field(&stdout, "root"), "dev jail_probe");
    assert_eq!(field(&stdout, "pid"), "1");
    assert_eq!(field(&stdout, "uid"), format!("{UID} {UID}"));
    assert_eq!(field(&stdout, "setuid0"), "failed");
    assert_eq!(field(&stdout, "interfaces"), "lo");
    assert_eq!(field(&stdout, "fds"), "");
    assert_eq!(field(&stdout, "host /proc/self/status"), "entity not found");
    // The jail was made on the chroot's tmpfs, gone with its namespace.
    assert!(!top.0.join("srv/jail_probe").exists());
}
