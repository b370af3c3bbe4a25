//! The jailer's parent side: prepare, fork into a new PID namespace,
//! forward signals, wait, clean up.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
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
///     daemonize: false,
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

    let mut notify = None;
    if config.daemonize {
        match daemonize()? {
            Daemonized::Original(mut started) => {
                // EOF: the VMM was executed; a message: the daemon failed
                // (and cleaned up).
                let message = read_all(&mut started);
                return match message {
                    None => Ok(0),
                    Some(message) => Err(Error::Child(message)),
                };
            }
            Daemonized::Daemon(started) => notify = Some(started),
        }
    }
    let result = run_jailed(config, mount.as_deref(), netns.as_ref(), &mut notify);
    if let (Err(e), Some(started)) = (&result, notify.as_mut()) {
        let _ = started.write_all(e.to_string().as_bytes());
    }
    result
}

/// Builds the jail and cgroup, runs the VMM in them, waits, cleans up.
/// `notify` (with `--daemonize`) is closed once the VMM was executed.
fn run_jailed(
    config: &JailConfig,
    mount: Option<&Path>,
    netns: Option<&OwnedFd>,
    notify: &mut Option<File>,
) -> Result<i32, Error> {
    let jail = Jail::create(config)?;
    let cgroup = match mount {
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
    let mut child = match spawn(config, &jail, cgroup.as_ref(), netns) {
        Ok(child) => child,
        Err(e) => return cleanup(Err(e)),
    };
    let report = read_all(&mut child.report);
    if report.is_none() {
        drop(notify.take());
    }
    let status = reap(child.pid);
    match (report, status) {
        (Some(message), _) => cleanup(Err(Error::Child(message))),
        (None, status) => cleanup(status),
    }
}

/// The two processes `--daemonize` makes.
enum Daemonized {
    /// The process that was started: it waits on this pipe and exits.
    Original(File),
    /// The daemon (new session, standard streams on `/dev/null`): it
    /// closes this pipe once the VMM runs, or writes why it failed.
    Daemon(File),
}

fn daemonize() -> Result<Daemonized, Error> {
    let (rx, mut tx) = pipe()?;
    // SAFETY: the jailer is single-threaded, so the child may run
    // arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(Error::last_os("fork (--daemonize)"));
    }
    if pid > 0 {
        drop(tx);
        return Ok(Daemonized::Original(rx));
    }
    drop(rx);
    if let Err(e) = detach() {
        let _ = tx.write_all(e.to_string().as_bytes());
        // SAFETY: ends the daemon without running the original's
        // destructors; the message was written.
        unsafe { libc::_exit(1) };
    }
    Ok(Daemonized::Daemon(tx))
}

/// A new session, and `/dev/null` as standard input, output and error.
fn detach() -> Result<(), Error> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }, || "setsid (--daemonize)".into())?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| Error::Sys {
            call: "open /dev/null (--daemonize)".into(),
            source,
        })?;
    for fd in 0..3 {
        // SAFETY: dup2 of a descriptor we own onto a standard stream.
        let ret = unsafe { libc::dup2(null.as_raw_fd(), fd) };
        check(ret, || format!("dup2(/dev/null, {fd}) (--daemonize)"))?;
    }
    Ok(())
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(File, File), Error> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret, || "pipe2".into())?;
    // SAFETY: pipe2 just returned these two descriptors; each is owned once.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Everything until EOF; `None` when that is nothing.
fn read_all(pipe: &mut File) -> Option<String> {
    let mut bytes = Vec::new();
    loop {
        match pipe.read_to_end(&mut bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
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
    let (read_end, write_end) = pipe()?;
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

/// Waits for the VMM and returns its exit status (128 + N for signal N).
fn reap(pid: libc::pid_t) -> Result<i32, Error> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill in.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Sys {
                call: format!("waitpid({pid})"),
                source: e,
            });
        }
    }
    CHILD.store(0, Ordering::Relaxed);
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Ok(1)
    }
}
