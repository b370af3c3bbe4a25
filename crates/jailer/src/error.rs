//! Every way jailing a VMM can fail, each with the path or value at fault.

use std::io;
use std::path::PathBuf;

/// A jailer failure. Each message is one line that names what was being
/// done and the path or value concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The jailer does not run as root.
    #[error(
        "must run as root (it creates namespaces, device nodes and cgroups); effective uid is {0}"
    )]
    NotRoot(u32),
    /// uid or gid 0 without `allow_root`.
    #[error("refusing to run the VMM as uid 0 or gid 0 (pass --allow-root to force it)")]
    RootUser,
    /// The exec file's path has no usable file name.
    #[error("the exec file {0} has no file name (or one that is not UTF-8)")]
    ExecFileName(PathBuf),
    /// A `--file` path has no usable file name.
    #[error("--file {0} has no file name (or one that is not UTF-8)")]
    FileName(PathBuf),
    /// A file that must exist does not (or cannot be looked at).
    #[error("{what} {path}: {source}")]
    Missing {
        /// Which argument named it.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why it could not be looked at.
        source: io::Error,
    },
    /// A file that must be a regular file is not.
    #[error("{what} {path} is not a regular file")]
    NotRegular {
        /// Which argument named it.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// Two files would get the same name in the jail, or a file would take
    /// a name the jailer uses.
    #[error("--file {path}: the name {name:?} is already taken in the jail (the exec file, another --file, dev or old_root)")]
    FileNameTaken {
        /// The file.
        path: PathBuf,
        /// Its name in the jail.
        name: String,
    },
    /// The network namespace to join cannot be opened.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The jail's directory exists already: another VM's, or a leftover.
    #[error(
        "the jail directory {0} exists already (another VM with this id, or a leftover to remove)"
    )]
    JailExists(PathBuf),
    /// A host device the VMM needs is missing.
    #[error("host device {path}: {source}")]
    HostDevice {
        /// The device node.
        path: PathBuf,
        /// Why it could not be looked at.
        source: io::Error,
    },
    /// Building the jail's directory tree failed.
    #[error("cannot {action} {path}: {source}")]
    Jail {
        /// What was being done ("create", "copy the exec file to", ...).
        action: &'static str,
        /// The path in the jail.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// No cgroup v2 file system is mounted.
    #[error(
        "cgroup settings given, but no cgroup v2 file system is mounted (see /proc/self/mountinfo)"
    )]
    CgroupV2NotMounted,
    /// A controller is not available in the cgroup v2 hierarchy.
    #[error("cgroup controller {controller:?} is not available in the cgroup v2 hierarchy at {mount} (it offers: {available}); on a hybrid host it may be bound to a cgroup v1 hierarchy")]
    CgroupControllerUnavailable {
        /// The controller.
        controller: String,
        /// The cgroup2 mount point.
        mount: PathBuf,
        /// What `cgroup.controllers` lists.
        available: String,
    },
    /// The VM's cgroup exists already.
    #[error("the cgroup {0} exists already (another VM with this id, or a leftover to remove)")]
    CgroupExists(PathBuf),
    /// Reading, writing or creating a cgroup file failed.
    #[error("cgroup: cannot {action} {path}: {source}")]
    Cgroup {
        /// What was being done.
        action: String,
        /// The cgroup file or directory.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A system call of the isolation sequence failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call and its argument, e.g. `pivot_root(/srv/jailer/...)`.
        call: String,
        /// The system's error.
        source: io::Error,
    },
    /// The user could get root back after dropping privileges.
    #[error("privileges were not dropped: setuid(0) succeeded after switching to uid {0}")]
    PrivilegesKept(u32),
    /// The jailed child failed before it could execute the VMM.
    #[error("{0}")]
    Child(String),
}

impl Error {
    /// An [`Error::Sys`] from `errno` for `call`.
    pub(crate) fn last_os(call: impl Into<String>) -> Self {
        Error::Sys {
            call: call.into(),
            source: io::Error::last_os_error(),
        }
    }
}

/// `Ok` when `ret` is not -1, else [`Error::Sys`] with `errno` for `call`.
pub(crate) fn check(ret: libc::c_int, call: impl FnOnce() -> String) -> Result<(), Error> {
    if ret == -1 {
        Err(Error::last_os(call()))
    } else {
        Ok(())
    }
}
