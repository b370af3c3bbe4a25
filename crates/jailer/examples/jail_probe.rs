//! A probe the jailer's tests execute in place of a VMM: it prints what a
//! process sees from inside the jail, one `key: value` line each, then
//! optionally waits for standard input to close (`wait`) and exits with a
//! chosen status (`exit=N`). Arguments are echoed on the `args:` line.
//!
//! It reads no `/proc` (the jail has none) and links statically (the
//! workspace's `.cargo/config.toml`), so it runs in an empty root.

use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args: {}", args.join(" "));

    let mut root: Vec<String> = match std::fs::read_dir("/") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => vec![format!("error: {e}")],
    };
    root.sort();
    println!("root: {}", root.join(" "));

    // SAFETY: these calls take no arguments and cannot fail.
    let (pid, uid, euid, gid) = unsafe {
        (
            libc::getpid(),
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
        )
    };
    println!("pid: {pid}");
    println!("uid: {uid} {euid}");
    println!("gid: {gid}");
    // SAFETY: a zero-sized query: no buffer is written.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    println!("groups: {groups}");
    // SAFETY: setuid takes an integer; it must fail for a dropped user.
    let setuid = unsafe { libc::setuid(0) };
    println!(
        "setuid0: {}",
        if setuid == 0 { "succeeded" } else { "failed" }
    );

    println!("interfaces: {}", interfaces().join(" "));
    println!("env: {}", std::env::vars_os().count());

    let open_fds: Vec<String> = (3..1024)
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        .filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } != -1)
        .map(|fd| fd.to_string())
        .collect();
    println!("fds: {}", open_fds.join(" "));

    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill in.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    println!("nofile: {} {}", limit.rlim_cur, limit.rlim_max);

    for host_path in ["/etc/passwd", "/proc/self/status", "/tmp"] {
        match std::fs::metadata(host_path) {
            Ok(_) => println!("host {host_path}: reachable"),
            Err(e) => println!("host {host_path}: {}", e.kind()),
        }
    }
    for arg in &args {
        if let Some(path) = arg.strip_prefix("path=") {
            match std::fs::read_to_string(path) {
                Ok(text) => println!("read {path}: {}", text.trim()),
                Err(e) => println!("read {path}: {e}"),
            }
        }
    }

    if args.iter().any(|a| a == "wait") {
        println!("ready");
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
    let status = args
        .iter()
        .find_map(|a| a.strip_prefix("exit=")?.parse().ok())
        .unwrap_or(0);
    std::process::exit(status);
}

/// The network interfaces, through `if_nameindex` (netlink: no `/proc` or
/// `/sys` needed).
fn interfaces() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, or
    // NULL; it is read up to that entry and freed once.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return vec!["error".into()];
        }
        let mut entry = list;
        while (*entry).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*entry).if_name);
            names.push(name.to_string_lossy().into_owned());
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    names
}
