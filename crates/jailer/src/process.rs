//! The jailer's parent side: prepare, fork into a new PID namespace,
//! forward signals, wait, clean up.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::check;
use crate::isolate::Child;
use crate::{cgroup, Cgroup, Error, Jail, JailConfig};

/// The VMM's PID (in the jailer's namespace), for the signal forwarder.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Signals the jailer passes on to the VMM.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // A signal the kernel generated (Ctrl-C on the terminal: SI_KERNEL)
    // reached the VMM in the same process group already; forward only
    // those sent to the jailer (kill: SI_USER, sigqueue, tgkill: <= 0).
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 && code <= 0 {
        // SAFETY: kill is async-signal-safe and takes integers only.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Jails and runs the VMM as `config` says, and returns its exit status
/// (128 + N if signal N killed it). Everything is checked before anything
/// is created; on a failure before the VMM starts, what was created is
/// removed again. A run that starts the VMM leaves the jail directory (it
/// may hold what the VMM wrote) and removes the cgroup.
///
/// # Example
///
/// ```no_run
/// use kindling_jailer::{run, JailConfig};
///
/// let config = JailConfig {
///     id: "vm-1".parse().unwrap(),
///     exec_file: "/usr/local/bin/microvm".into(),
///     uid: 1000,
///     gid: 1000,
///     chroot_base_dir: "/srv/jailer".into(),
///     netns: None,
///     cgroups: vec!["memory.max=256M".parse().unwrap()],
///     resource_limits: vec!["no-file=1024".parse().unwrap()],
///     files: vec![],
///     allow_root: false,
///     vmm_args: vec![],
/// };
/// let status = run(&config)?;
/// std::process::exit(status);
/// # Ok::<(), kindling_jailer::Error>(())
/// ```
pub fn run(config: &JailConfig) -> Result<i32, Error> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Error::NotRoot(euid));
    }
    config.check()?;
    let mount = if config.cgroups.is_empty() {
        None
    } else {
        Some(cgroup::check(&config.cgroups)?)
    };
    let netns = match &config.netns {
        Some(path) => Some(OwnedFd::from(File::open(path).map_err(|source| {
            Error::Netns {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };

    let jail = Jail::create(config)?;
    let cgroup = match &mount {
        Some(mount) => match Cgroup::create(mount, &config.id, &config.cgroups) {
            Ok(cgroup) => Some(cgroup),
            Err(e) => {
                jail.remove();
                return Err(e);
            }
        },
        None => None,
    };
    let cleanup = |status: Result<i32, Error>| {
        if let Some(cgroup) = &cgroup {
            cgroup.remove();
        }
        if status.is_err() {
            jail.remove();
        }
        status
    };
    match spawn(config, &jail, cgroup.as_ref(), netns.as_ref()) {
        Ok(child) => match wait(child) {
            Ok(status) => cleanup(Ok(status)),
            Err(e) => cleanup(Err(e)),
        },
        Err(e) => cleanup(Err(e)),
    }
}

/// A forked child and the read end of its error pipe.
struct Spawned {
    pid: libc::pid_t,
    report: File,
}

fn spawn(
    config: &JailConfig,
    jail: &Jail,
    cgroup: Option<&Cgroup>,
    netns: Option<&OwnedFd>,
) -> Result<Spawned, Error> {
    let exec_name = config.exec_name()?;
    let vmm_args = config.jailed_vmm_args();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret, || "pipe2".into())?;
    // SAFETY: pipe2 just returned these two descriptors; each is owned once.
    let (read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: unshare takes flags only; CLONE_NEWPID affects the children
    // forked from here on.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    check(ret, || "unshare(CLONE_NEWPID)".into())?;
    // SAFETY: the jailer is single-threaded, so the child may run
    // arbitrary code after fork; it ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(Error::last_os("fork"));
    }
    if pid == 0 {
        drop(read_end);
        let child = Child {
            root: jail.root(),
            cgroup,
            netns,
            resource_limits: &config.resource_limits,
            uid: config.uid,
            gid: config.gid,
            exec_name,
            vmm_args: &vmm_args,
            report_fd: write_end.as_raw_fd(),
        };
        let error = child.enter();
        let mut message = error.to_string().into_bytes();
        message.truncate(4096);
        // SAFETY: writes our own buffer to the pipe we own, then ends the
        // child without running the parent's destructors or atexit hooks.
        unsafe {
            libc::write(
                write_end.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
            );
            libc::_exit(1);
        }
    }
    drop(write_end);
    CHILD.store(pid, Ordering::Relaxed);
    for signal in FORWARDED {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags);
        // `forward` is an async-signal-safe SA_SIGINFO handler.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    Ok(Spawned {
        pid,
        report: read_end,
    })
}

/// Reads the child's error report (empty when the VMM was executed),
/// waits for it, and returns its exit status.
fn wait(mut child: Spawned) -> Result<i32, Error> {
    let mut report = Vec::new();
    loop {
        match child.report.read_to_end(&mut report) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill in.
        let ret = unsafe { libc::waitpid(child.pid, &mut status, 0) };
        if ret == child.pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Sys {
                call: format!("waitpid({})", child.pid),
                source: e,
            });
        }
    }
    CHILD.store(0, Ordering::Relaxed);
    if !report.is_empty() {
        return Err(Error::Child(String::from_utf8_lossy(&report).into_owned()));
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Ok(1)
    }
}
