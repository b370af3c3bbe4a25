//! The VM's cgroup v2: `<cgroup2 mount>/kindling/<id>`.
//!
//! [`Cgroup::create`] finds the cgroup2 mount, checks that every
//! controller the settings use is offered there, enables them in the
//! mount's and `kindling`'s `cgroup.subtree_control`, creates the VM's
//! cgroup and writes the settings. The jailed child then moves itself in
//! ([`Cgroup::join`]) before it leaves the host's mount namespace, and the
//! jailer removes the cgroup when the VMM has exited ([`Cgroup::remove`]).

use std::io;
use std::path::{Path, PathBuf};

use crate::{CgroupSetting, Error, JailId};

/// The directory under the cgroup2 mount that holds every VM's cgroup.
pub const PARENT: &str = "kindling";

/// A cgroup this process created.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

/// Where cgroup2 is mounted, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Result<PathBuf, Error> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Cgroup {
        action: "read".into(),
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    mount_from_mountinfo(&info).ok_or(Error::CgroupV2NotMounted)
}

/// The first cgroup2 mount point in a mountinfo text (fields: ... mount
/// point is the 5th; the file system type follows the `-` separator).
fn mount_from_mountinfo(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if fields.get(sep + 1) != Some(&"cgroup2") {
            return None;
        }
        Some(PathBuf::from(unescape(fields.get(4)?)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Cgroup {
        action: "read".into(),
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, value: &str, action: impl Into<String>) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|source| Error::Cgroup {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    })
}

/// The controllers `settings` use, each once, in order.
fn controllers(settings: &[CgroupSetting]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in settings {
        if !out.contains(&s.controller()) {
            out.push(s.controller());
        }
    }
    out
}

/// Checks that cgroup2 is mounted and offers every controller `settings`
/// use, without changing anything. Returns the mount point.
pub fn check(settings: &[CgroupSetting]) -> Result<PathBuf, Error> {
    let mount = cgroup2_mount()?;
    let available = read(&mount.join("cgroup.controllers"))?;
    for controller in controllers(settings) {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(Error::CgroupControllerUnavailable {
                controller: controller.to_string(),
                mount,
                available: match available.trim() {
                    "" => "nothing".to_string(),
                    list => list.to_string(),
                },
            });
        }
    }
    Ok(mount)
}

/// Enables `controller` in `dir`'s `cgroup.subtree_control` unless it is
/// on already.
fn enable(dir: &Path, controller: &str) -> Result<(), Error> {
    let file = dir.join("cgroup.subtree_control");
    if read(&file)?.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    write(
        &file,
        &format!("+{controller}"),
        format!("enable controller {controller} in"),
    )
}

impl Cgroup {
    /// Creates `<mount>/kindling/<id>` with `settings` written, enabling
    /// their controllers on the way. On failure the VM's cgroup is removed
    /// again (`kindling` stays: other VMs may use it).
    pub fn create(mount: &Path, id: &JailId, settings: &[CgroupSetting]) -> Result<Cgroup, Error> {
        let parent = mount.join(PARENT);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(Error::Cgroup {
                    action: "create".into(),
                    path: parent,
                    source,
                })
            }
        }
        for controller in controllers(settings) {
            enable(mount, controller)?;
            enable(&parent, controller)?;
        }
        let dir = parent.join(id.as_str());
        std::fs::create_dir(&dir).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => Error::CgroupExists(dir.clone()),
            _ => Error::Cgroup {
                action: "create".into(),
                path: dir.clone(),
                source,
            },
        })?;
        let cgroup = Cgroup { dir };
        for s in settings {
            let file = cgroup.dir.join(s.file());
            if let Err(e) = write(&file, s.value(), format!("write {:?} to", s.value())) {
                cgroup.remove();
                return Err(e);
            }
        }
        Ok(cgroup)
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the calling process into the cgroup.
    pub fn join(&self) -> Result<(), Error> {
        write(
            &self.dir.join("cgroup.procs"),
            "0",
            "move the jailed process into",
        )
    }

    /// Removes the cgroup. Its processes must have exited; a cgroup is
    /// busy for a moment after its last process was reaped, so this
    /// retries for up to a second.
    pub fn remove(&self) {
        for _ in 0..100 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_from_mountinfo(hybrid),
            Some("/sys/fs/cgroup/unified".into())
        );
        let optional = "29 23 0:26 / /my\\040cgroups rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(mount_from_mountinfo(optional), Some("/my cgroups".into()));
        assert_eq!(
            mount_from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn lists_controllers_once() {
        let settings: Vec<CgroupSetting> = ["cpu.max=1", "memory.max=2", "cpu.weight=3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(controllers(&settings), ["cpu", "memory"]);
    }
}
