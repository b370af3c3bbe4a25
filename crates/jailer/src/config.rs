//! What one jail is made of, validated before anything is created.
//!
//! Parsing is pure: [`JailId`], [`CgroupSetting`] and [`ResourceLimit`] are
//! built from strings with `FromStr` and reject anything that could escape
//! the jail's directory or the cgroup's (a `/`, a `..`, a control file of
//! the cgroup core). [`JailConfig::check`] then looks at the host: the exec
//! file, the files to link in, the network namespace.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// The longest id accepted, as Firecracker's jailer.
pub const MAX_ID_LEN: usize = 64;

/// Names in the jail's root that the jailer uses itself, so a `--file`
/// cannot take them.
pub(crate) const RESERVED_NAMES: [&str; 2] = ["dev", crate::isolate::OLD_ROOT];

/// A microVM's id: 1 to 64 of `[A-Za-z0-9-]`, so it is a single path
/// component (no `/`, no `..`) in the jail's and the cgroup's paths.
///
/// # Example
///
/// ```
/// use kindling_jailer::JailId;
///
/// assert!("vm-42".parse::<JailId>().is_ok());
/// assert!("../etc".parse::<JailId>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailId(String);

impl JailId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JailId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("the id is empty".into());
        }
        if s.len() > MAX_ID_LEN {
            return Err(format!(
                "the id is {} characters long, at most {MAX_ID_LEN} are allowed",
                s.len()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "the id may hold only letters, digits and '-', not {c:?}"
            ));
        }
        Ok(JailId(s.to_string()))
    }
}

/// One cgroup v2 interface file and the value written to it, from
/// `FILE=VALUE` (`cpu.max=50000 100000`, `memory.max=256M`,
/// `pids.max=64`). The controller is the part of FILE before the first
/// dot; the jailer enables it for the VM's cgroup.
///
/// # Example
///
/// ```
/// use kindling_jailer::CgroupSetting;
///
/// let s: CgroupSetting = "cpu.max=50000 100000".parse().unwrap();
/// assert_eq!(s.controller(), "cpu");
/// assert_eq!(s.file(), "cpu.max");
/// assert_eq!(s.value(), "50000 100000");
/// assert!("cgroup.procs=1".parse::<CgroupSetting>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupSetting {
    file: String,
    value: String,
}

impl CgroupSetting {
    /// The interface file, e.g. `memory.max`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The value written to it.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The controller the file belongs to, e.g. `memory`.
    pub fn controller(&self) -> &str {
        self.file.split('.').next().unwrap_or_default()
    }
}

impl FromStr for CgroupSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (file, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not FILE=VALUE (e.g. memory.max=256M)"))?;
        let valid_name = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        };
        let (controller, rest) = file.split_once('.').unwrap_or((file, ""));
        if !valid_name(controller) || !valid_name(rest) || file.contains("..") {
            return Err(format!(
                "{file:?} is not a cgroup interface file (CONTROLLER.NAME, e.g. memory.max)"
            ));
        }
        if controller == "cgroup" {
            return Err(format!(
                "{file:?} belongs to the cgroup core, which the jailer manages itself"
            ));
        }
        if value.is_empty() || value.contains('\n') {
            return Err(format!("the value for {file} must be one non-empty line"));
        }
        Ok(CgroupSetting {
            file: file.to_string(),
            value: value.to_string(),
        })
    }
}

/// Which resource a [`ResourceLimit`] limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_NOFILE`: open file descriptors (`no-file`).
    NoFile,
    /// `RLIMIT_FSIZE`: the largest file the process may write, in bytes
    /// (`fsize`).
    FileSize,
}

impl Resource {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Resource::NoFile => "no-file",
            Resource::FileSize => "fsize",
        }
    }

    pub(crate) fn rlimit(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::NoFile => libc::RLIMIT_NOFILE,
            Resource::FileSize => libc::RLIMIT_FSIZE,
        }
    }
}

/// A resource limit set (soft and hard) before the VMM starts, from
/// `no-file=N` or `fsize=N`.
///
/// # Example
///
/// ```
/// use kindling_jailer::{Resource, ResourceLimit};
///
/// let l: ResourceLimit = "no-file=1024".parse().unwrap();
/// assert_eq!((l.resource, l.value), (Resource::NoFile, 1024));
/// assert!("stack=1".parse::<ResourceLimit>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLimit {
    /// The resource.
    pub resource: Resource,
    /// Its limit, soft and hard.
    pub value: u64,
}

impl FromStr for ResourceLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=N (no-file=N or fsize=N)"))?;
        let resource = match name {
            "no-file" => Resource::NoFile,
            "fsize" => Resource::FileSize,
            _ => return Err(format!("unknown resource {name:?} (known: no-file, fsize)")),
        };
        let value = value
            .parse()
            .map_err(|_| format!("the limit for {name} must be a number, not {value:?}"))?;
        Ok(ResourceLimit { resource, value })
    }
}

/// Everything the jailer needs for one microVM.
#[derive(Clone, Debug)]
pub struct JailConfig {
    /// The VM's id: the jail is `<chroot_base_dir>/<exec file name>/<id>`
    /// and its cgroup `<cgroup2 mount>/kindling/<id>`.
    pub id: JailId,
    /// The VMM binary, copied into the jail's root.
    pub exec_file: PathBuf,
    /// The user the VMM runs as.
    pub uid: u32,
    /// The group the VMM runs as (and its only group).
    pub gid: u32,
    /// Where jails are made (`/srv/jailer` by default).
    pub chroot_base_dir: PathBuf,
    /// An existing network namespace to join (`/var/run/netns/NAME`);
    /// `None` gives the VMM a new, empty one.
    pub netns: Option<PathBuf>,
    /// cgroup v2 files to write; empty: no cgroup is made.
    pub cgroups: Vec<CgroupSetting>,
    /// Resource limits.
    pub resource_limits: Vec<ResourceLimit>,
    /// Files the VM needs (kernel, initrd, disks), hard-linked (or copied
    /// across file systems) into the jail's root under their file name.
    pub files: Vec<PathBuf>,
    /// Accept uid 0 or gid 0 (the VMM then keeps root's powers inside
    /// its namespaces; only for debugging).
    pub allow_root: bool,
    /// Run in the background: once the VMM has been executed, the calling
    /// process returns 0, and a daemon (a new session, standard streams on
    /// `/dev/null`) waits for the VMM and cleans up.
    pub daemonize: bool,
    /// The VMM's arguments. An argument equal to one of `files`, or a
    /// comma-separated part `KEY=PATH` of one, is rewritten to the file's
    /// path inside the jail.
    pub vmm_args: Vec<OsString>,
}

impl JailConfig {
    /// The exec file's name, which names the jail's parent directory and
    /// the binary inside it.
    pub fn exec_name(&self) -> Result<&str, Error> {
        self.exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "..")
            .ok_or_else(|| Error::ExecFileName(self.exec_file.clone()))
    }

    /// `<chroot_base_dir>/<exec file name>/<id>`, the directory the jail
    /// lives in (its root is the `root` directory in it).
    pub fn jail_dir(&self) -> Result<PathBuf, Error> {
        Ok(self
            .chroot_base_dir
            .join(self.exec_name()?)
            .join(self.id.as_str()))
    }

    /// Checks the configuration against the host without changing
    /// anything: ids, the exec file (a regular file), the files (regular
    /// files with distinct names that the jail does not use), the network
    /// namespace (exists), the user (not root unless `allow_root`).
    pub fn check(&self) -> Result<(), Error> {
        if (self.uid == 0 || self.gid == 0) && !self.allow_root {
            return Err(Error::RootUser);
        }
        let exec_name = self.exec_name()?;
        check_regular(&self.exec_file, "the exec file")?;
        let mut names: HashSet<&str> = HashSet::new();
        names.insert(exec_name);
        for file in &self.files {
            check_regular(file, "--file")?;
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::FileName(file.clone()))?;
            if RESERVED_NAMES.contains(&name) || !names.insert(name) {
                return Err(Error::FileNameTaken {
                    path: file.clone(),
                    name: name.to_string(),
                });
            }
        }
        if let Some(netns) = &self.netns {
            std::fs::metadata(netns).map_err(|source| Error::Netns {
                path: netns.clone(),
                source,
            })?;
        }
        let jail = self.jail_dir()?;
        if std::fs::symlink_metadata(&jail).is_ok() {
            return Err(Error::JailExists(jail));
        }
        Ok(())
    }

    /// The VMM's arguments with host paths of `files` replaced by their
    /// paths inside the jail.
    pub fn jailed_vmm_args(&self) -> Vec<OsString> {
        let map: Vec<(String, String)> = self
            .files
            .iter()
            .filter_map(|f| {
                let host = f.to_str()?;
                let name = f.file_name()?.to_str()?;
                Some((host.to_string(), format!("/{name}")))
            })
            .collect();
        self.vmm_args
            .iter()
            .map(|arg| match arg.to_str() {
                Some(text) => OsString::from(rewrite_arg(text, &map)),
                None => arg.clone(),
            })
            .collect()
    }
}

/// Rewrites `arg` when it is, or when one of its comma-separated parts is
/// `KEY=`, a host path in `map`.
fn rewrite_arg(arg: &str, map: &[(String, String)]) -> String {
    let lookup = |s: &str| map.iter().find(|(host, _)| host == s).map(|(_, j)| j);
    if let Some(jailed) = lookup(arg) {
        return jailed.clone();
    }
    arg.split(',')
        .map(|part| match part.split_once('=') {
            Some((key, value)) => match lookup(value) {
                Some(jailed) => format!("{key}={jailed}"),
                None => part.to_string(),
            },
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn check_regular(path: &Path, what: &'static str) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Missing {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::NotRegular {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "vm-1", "ABC-def-09", &"x".repeat(64)] {
            assert!(good.parse::<JailId>().is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "a.b", "a b", "é", &"x".repeat(65)] {
            assert!(bad.parse::<JailId>().is_err(), "{bad}");
        }
        assert_eq!("vm".parse::<JailId>().unwrap().to_string(), "vm");
    }

    #[test]
    fn cgroup_settings() {
        let s: CgroupSetting = "memory.max=256M".parse().unwrap();
        assert_eq!(
            (s.controller(), s.file(), s.value()),
            ("memory", "memory.max", "256M")
        );
        let s: CgroupSetting = "hugetlb.2MB.max=0".parse().unwrap();
        assert_eq!(s.controller(), "hugetlb");
        for bad in [
            "memory.max",
            "memory.max=",
            "=1",
            "memory=1",
            "../x.max=1",
            "memory..max=1",
            "memory/x.max=1",
            "cgroup.procs=1",
            "cgroup.subtree_control=+cpu",
            "pids.max=1\n2",
        ] {
            assert!(bad.parse::<CgroupSetting>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resource_limits() {
        let l: ResourceLimit = "fsize=4096".parse().unwrap();
        assert_eq!((l.resource, l.value), (Resource::FileSize, 4096));
        assert_eq!(l.resource.name(), "fsize");
        assert_eq!(Resource::NoFile.name(), "no-file");
        for bad in ["no-file", "no-file=x", "nofile=1", "fsize=-1"] {
            assert!(bad.parse::<ResourceLimit>().is_err(), "{bad}");
        }
    }

    fn config(files: &[&str], args: &[&str]) -> JailConfig {
        JailConfig {
            id: "t".parse().unwrap(),
            exec_file: "/bin/true".into(),
            uid: 1000,
            gid: 1000,
            chroot_base_dir: "/nonexistent-kindling-base".into(),
            netns: None,
            cgroups: vec![],
            resource_limits: vec![],
            files: files.iter().map(PathBuf::from).collect(),
            allow_root: false,
            daemonize: false,
            vmm_args: args.iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn vmm_args_get_jail_paths() {
        let c = config(
            &["/img/vmlinux", "/img/rootfs.ext4"],
            &[
                "--kernel",
                "/img/vmlinux",
                "--disk",
                "readonly,path=/img/rootfs.ext4",
                "--cmdline",
                "root=/img/vmlinux2",
            ],
        );
        let args: Vec<String> = c
            .jailed_vmm_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--kernel",
                "/vmlinux",
                "--disk",
                "readonly,path=/rootfs.ext4",
                "--cmdline",
                "root=/img/vmlinux2"
            ]
        );
    }

    #[test]
    fn checks() {
        let c = config(&[], &[]);
        assert_eq!(c.exec_name().unwrap(), "true");
        assert_eq!(
            c.jail_dir().unwrap(),
            PathBuf::from("/nonexistent-kindling-base/true/t")
        );
        c.check().unwrap();
        let mut root = config(&[], &[]);
        root.uid = 0;
        assert!(matches!(root.check(), Err(Error::RootUser)));
        root.allow_root = true;
        root.check().unwrap();
        let dir = config(&["/"], &[]);
        assert!(matches!(dir.check(), Err(Error::NotRegular { .. })));
        let missing = config(&["/nonexistent/kernel"], &[]);
        assert!(matches!(missing.check(), Err(Error::Missing { .. })));
        let clash = config(&["/bin/true"], &[]);
        assert!(matches!(clash.check(), Err(Error::FileNameTaken { .. })));
        let mut netns = config(&[], &[]);
        netns.netns = Some("/nonexistent/netns".into());
        assert!(matches!(netns.check(), Err(Error::Netns { .. })));
    }
}
