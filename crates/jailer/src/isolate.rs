//! The jailed child's side: from the host's view to an unprivileged VMM
//! in its own namespaces and root, in the order that keeps each step
//! possible (the cgroup is joined while its files are still reachable,
//! privileges are dropped last).

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::check;
use crate::{Cgroup, Error, ResourceLimit};

/// The directory, in the jail's root, the host's root is moved to by
/// `pivot_root` before it is unmounted and removed.
pub const OLD_ROOT: &str = "old_root";

/// What the child needs, all prepared by the parent before `fork`.
#[derive(Debug)]
pub(crate) struct Child<'a> {
    pub root: &'a Path,
    pub cgroup: Option<&'a Cgroup>,
    pub netns: Option<&'a OwnedFd>,
    pub resource_limits: &'a [ResourceLimit],
    pub uid: u32,
    pub gid: u32,
    pub exec_name: &'a str,
    pub vmm_args: &'a [OsString],
    /// The write end of the error pipe (close-on-exec): kept open across
    /// the fd sweep so a failure can still be reported.
    pub report_fd: RawFd,
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::Sys {
        call: format!("{what} holds a NUL byte"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

impl Child<'_> {
    /// Runs the whole sequence and executes the VMM; returns only on
    /// failure.
    pub fn enter(&self) -> Error {
        match self.try_enter() {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    fn try_enter(&self) -> Result<std::convert::Infallible, Error> {
        if let Some(cgroup) = self.cgroup {
            cgroup.join()?;
        }
        self.namespaces()?;
        self.pivot_root()?;
        self.set_limits()?;
        self.drop_privileges()?;
        self.close_fds()?;
        self.exec()
    }

    /// A new mount, IPC and UTS namespace; the given network namespace or
    /// a new, empty one. (The PID namespace was made by the parent.)
    fn namespaces(&self) -> Result<(), Error> {
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        match self.netns {
            Some(fd) => {
                // SAFETY: setns takes an fd we own and a flag; no memory.
                let ret = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                check(ret, || "setns(network namespace)".into())?;
            }
            None => flags |= libc::CLONE_NEWNET,
        }
        // SAFETY: unshare takes flags only.
        let ret = unsafe { libc::unshare(flags) };
        check(ret, || {
            "unshare(mount, IPC, UTS, network namespaces)".into()
        })
    }

    /// Makes the jail's root the process's `/` and drops every other mount.
    fn pivot_root(&self) -> Result<(), Error> {
        let root = cstring(self.root.as_os_str().as_bytes(), "the jail's root")?;
        let shown = self.root.display();
        // Private, so nothing below propagates back to the host.
        mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE)
            .map_err(|e| sys(e, "mount(/, MS_REC | MS_PRIVATE)".into()))?;
        // pivot_root needs the new root to be a mount point.
        mount(Some(&root), &root, libc::MS_BIND | libc::MS_REC)
            .map_err(|e| sys(e, format!("bind-mount {shown} on itself")))?;
        // SAFETY: `root` is a NUL-terminated path alive for the call.
        check(unsafe { libc::chdir(root.as_ptr()) }, || {
            format!("chdir({shown})")
        })?;
        let old = cstring(OLD_ROOT.as_bytes(), "old_root")?;
        // SAFETY: `old` is a NUL-terminated path alive for the call.
        check(unsafe { libc::mkdir(old.as_ptr(), 0o700) }, || {
            format!("mkdir({shown}/{OLD_ROOT})")
        })?;
        // SAFETY: pivot_root takes two NUL-terminated paths alive for the
        // call; glibc has no wrapper, so it is a raw system call.
        let ret = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), old.as_ptr()) };
        if ret == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // The current root cannot be pivoted away from: the initramfs's
            // rootfs (a mount without a parent: a system that never left
            // its initramfs, such as a nested runner's first level) or a
            // chroot that is not a mount point.
            // SAFETY: `old` is a NUL-terminated path alive for the call.
            check(unsafe { libc::rmdir(old.as_ptr()) }, || {
                format!("rmdir({shown}/{OLD_ROOT})")
            })?;
            return self.move_root();
        }
        check(ret as libc::c_int, || format!("pivot_root({shown})"))?;
        // SAFETY: a literal NUL-terminated path.
        check(unsafe { libc::chdir(c"/".as_ptr()) }, || "chdir(/)".into())?;
        let old_abs = c"/old_root";
        // SAFETY: a literal NUL-terminated path.
        let ret = unsafe { libc::umount2(old_abs.as_ptr(), libc::MNT_DETACH) };
        check(ret, || "umount2(/old_root, MNT_DETACH)".into())?;
        // SAFETY: a literal NUL-terminated path.
        check(unsafe { libc::rmdir(old_abs.as_ptr()) }, || {
            "rmdir(/old_root)".into()
        })
    }

    /// `pivot_root`'s fallback, as runc's `no_pivot` (the working
    /// directory is the jail's root): detaches every mount outside the
    /// jail's root, moves the jail's root onto `/` and makes it the
    /// process's root with `chroot`. What stays of the old root is under
    /// the moved mount, out of reach: the VMM cannot `chroot` again (it
    /// loses every capability with its uid, and gains none through exec).
    fn move_root(&self) -> Result<(), Error> {
        let shown = self.root.display();
        // Without a /proc (a chroot) there is nothing to read: the mounts
        // below the old root are out of reach after the chroot all the same.
        // The working directory is the jail's root: its absolute path as
        // mountinfo shows it (`root` may be relative).
        let here = std::env::current_dir().map_err(|e| sys(e, "getcwd".into()))?;
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            for point in mounts_to_detach(&info, &here) {
                let path = cstring(point.as_os_str().as_bytes(), "a mount point")?;
                // SAFETY: `path` is a NUL-terminated path alive for the call.
                let ret = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                let e = std::io::Error::last_os_error();
                // Gone already with a mount above it that was detached.
                if ret == -1 && !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                    return Err(sys(e, format!("umount2({}, MNT_DETACH)", point.display())));
                }
            }
        }
        mount(Some(&CString::from(c".")), c"/", libc::MS_MOVE)
            .map_err(|e| sys(e, format!("mount({shown}, /, MS_MOVE)")))?;
        // SAFETY: a literal NUL-terminated path.
        check(unsafe { libc::chroot(c".".as_ptr()) }, || {
            format!("chroot({shown})")
        })?;
        // SAFETY: a literal NUL-terminated path.
        check(unsafe { libc::chdir(c"/".as_ptr()) }, || "chdir(/)".into())
    }

    fn set_limits(&self) -> Result<(), Error> {
        for limit in self.resource_limits {
            let value = libc::rlimit {
                rlim_cur: limit.value,
                rlim_max: limit.value,
            };
            // SAFETY: `value` is a valid rlimit the call only reads.
            let ret = unsafe { libc::setrlimit(limit.resource.rlimit(), &value) };
            check(ret, || {
                format!("setrlimit({}={})", limit.resource.name(), limit.value)
            })?;
        }
        Ok(())
    }

    /// No supplementary groups, then gid, then uid (real, effective and
    /// saved), and no new privileges through exec; checks that root cannot
    /// be regained.
    fn drop_privileges(&self) -> Result<(), Error> {
        // SAFETY: an empty list: no pointer is read.
        check(unsafe { libc::setgroups(0, std::ptr::null()) }, || {
            "setgroups([])".into()
        })?;
        let (uid, gid) = (self.uid, self.gid);
        // SAFETY: plain ids.
        check(unsafe { libc::setresgid(gid, gid, gid) }, || {
            format!("setresgid({gid})")
        })?;
        // SAFETY: plain ids.
        check(unsafe { libc::setresuid(uid, uid, uid) }, || {
            format!("setresuid({uid})")
        })?;
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        check(ret, || "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
        // The VMM dies with the jailer (SIGKILL'd, say) instead of running
        // on unwatched. Set after the uid change, which clears it; it
        // survives the exec.
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        check(ret, || "prctl(PR_SET_PDEATHSIG)".into())?;
        // SAFETY: these calls take and return plain integers.
        let (now_uid, now_euid, now_gid) =
            unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
        if now_uid != uid || now_euid != uid || now_gid != gid {
            return Err(Error::PrivilegesKept(uid));
        }
        // SAFETY: as above; with uid != 0 this must fail.
        if uid != 0 && unsafe { libc::setuid(0) } == 0 {
            return Err(Error::PrivilegesKept(uid));
        }
        Ok(())
    }

    /// Closes every descriptor above 2 except the error pipe (which
    /// closes itself at exec).
    fn close_fds(&self) -> Result<(), Error> {
        let keep = self.report_fd as libc::c_uint;
        // (The pipe may be below 3 if the jailer was started without a
        // standard stream; 0 to 2 stay open regardless.)
        let ranges = [
            (3, keep.saturating_sub(1)),
            ((keep + 1).max(3), libc::c_uint::MAX),
        ];
        for (first, last) in ranges {
            if first > last {
                continue;
            }
            // SAFETY: close_range takes integers only and closes
            // descriptors that nothing in this process uses any more (the
            // child is single-threaded and about to exec).
            let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
            if ret == -1 {
                close_each(first, last);
            }
        }
        Ok(())
    }

    /// Executes `/<exec name>` with an empty environment.
    fn exec(&self) -> Result<std::convert::Infallible, Error> {
        let path = cstring(
            format!("/{}", self.exec_name).as_bytes(),
            "the exec file name",
        )?;
        let mut args = vec![cstring(self.exec_name.as_bytes(), "the exec file name")?];
        for arg in self.vmm_args {
            args.push(cstring(arg.as_bytes(), "a VMM argument")?);
        }
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // SAFETY: `path`, every `argv` string and both NULL-terminated
        // arrays outlive the call; execve returns only on failure.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Err(Error::last_os(format!(
            "execve(/{}) in the jail",
            self.exec_name
        )))
    }
}

/// The fallback for kernels before 5.9 (no `close_range`): close one by
/// one up to the descriptor limit.
fn close_each(first: libc::c_uint, last: libc::c_uint) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit the call fills in.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let top = if ok {
        limit.rlim_cur.min(1 << 20) as libc::c_uint
    } else {
        1024
    };
    for fd in first..=last.min(top) {
        // SAFETY: closing a descriptor nothing uses any more (see above);
        // EBADF for unused numbers is expected.
        unsafe { libc::close(fd as RawFd) };
    }
}

/// The mount points in a mountinfo text that are neither the jail's root
/// or below it, nor above it (`/`, or the file system the jail is on: a
/// lazy unmount of one would take the jail's root with it), in the order
/// to detach them: the last mounted first (children before their parents).
fn mounts_to_detach(mountinfo: &str, root: &Path) -> Vec<std::path::PathBuf> {
    let mut points: Vec<std::path::PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| std::path::PathBuf::from(crate::cgroup::unescape(field)))
        .filter(|point| !point.starts_with(root) && !root.starts_with(point))
        .collect();
    points.reverse();
    points.dedup();
    points
}

fn sys(source: std::io::Error, call: String) -> Error {
    Error::Sys { call, source }
}

fn mount(
    source: Option<&CString>,
    target: &std::ffi::CStr,
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let src = source.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string alive for
    // the call; no file system type or data is passed.
    let ret = unsafe {
        libc::mount(
            src,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if ret == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detaches_everything_outside_the_jail_children_first() {
        let info = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                    20 1 0:5 / /dev rw - devtmpfs devtmpfs rw\n\
                    21 1 0:20 / /proc rw - proc proc rw\n\
                    22 1 0:21 / /sys rw - sysfs sysfs rw\n\
                    23 22 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                    24 1 0:23 / /my\\040tmp rw - tmpfs tmpfs rw\n\
                    25 1 0:25 / /srv rw - tmpfs tmpfs rw\n\
                    26 25 0:26 / /srv/other rw - tmpfs tmpfs rw\n\
                    30 25 0:25 /vm/root /srv/vm/root rw - tmpfs tmpfs rw\n\
                    31 30 0:24 / /srv/vm/root/dev/shm rw - tmpfs tmpfs rw\n";
        let root = Path::new("/srv/vm/root");
        let got = mounts_to_detach(info, root);
        // (Not /srv, which holds the jail: detaching it would detach the
        // jail's root too.)
        let want: Vec<std::path::PathBuf> = [
            "/srv/other",
            "/my tmp",
            "/sys/fs/cgroup",
            "/sys",
            "/proc",
            "/dev",
        ]
        .iter()
        .map(Into::into)
        .collect();
        assert_eq!(got, want);
        // A path that merely starts with the same letters is outside.
        let other = "40 1 0:30 / /srv/vm/rootfs rw - tmpfs tmpfs rw\n";
        assert_eq!(mounts_to_detach(other, root), [Path::new("/srv/vm/rootfs")]);
    }
}
