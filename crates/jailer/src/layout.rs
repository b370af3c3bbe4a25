//! The jail's directory tree on the host.
//!
//! ```text
//! <chroot base>/<exec name>/<id>/          root:root 0755
//! <chroot base>/<exec name>/<id>/root/     uid:gid   0755  (the VMM's /)
//!     <exec name>                          root:root 0755  (a copy)
//!     dev/  dev/net/                       root:root 0755
//!     dev/kvm, dev/net/tun                 uid:gid   0600  (mknod, the host's numbers)
//!     <file name> for every --file         uid:gid         (hard link, or a copy)
//! ```

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, JailConfig};

/// Host device nodes made in the jail: (host path, path in the jail's
/// root, required). `/dev/urandom` is not among them: the VMM draws
/// randomness with `getrandom(2)`.
pub const DEVICES: [(&str, &str, bool); 2] = [
    ("/dev/kvm", "dev/kvm", true),
    ("/dev/net/tun", "dev/net/tun", false),
];

/// A jail directory this process created; [`Jail::remove`] deletes it
/// (after a failure: a successful run leaves it for the operator, with
/// whatever the VMM wrote into it).
#[derive(Debug)]
pub struct Jail {
    dir: PathBuf,
    root: PathBuf,
    /// The directories above the jail this process created (`<base>/<exec
    /// name>`, perhaps `<base>` and above), deepest first: removed with the
    /// jail if they are empty then.
    created_parents: Vec<PathBuf>,
}

impl Jail {
    /// The jail's directory, `<base>/<exec name>/<id>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The jail's root, the VMM's `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the jail for `config` (already [checked](JailConfig::check)).
    /// On failure, whatever was created of `<id>` is removed again.
    pub fn create(config: &JailConfig) -> Result<Jail, Error> {
        let dir = config.jail_dir()?;
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let created_parents: Vec<PathBuf> = parent
            .ancestors()
            .take_while(|dir| !dir.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(jail_err("create", parent))?;
        // Not recursive: an existing directory (another VM's) fails here
        // even if it appeared after the check.
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => Error::JailExists(dir.clone()),
                _ => Error::Jail {
                    action: "create",
                    path: dir.clone(),
                    source,
                },
            })?;
        let jail = Jail {
            root: dir.join("root"),
            dir,
            created_parents,
        };
        if let Err(e) = jail.populate(config) {
            jail.remove();
            return Err(e);
        }
        Ok(jail)
    }

    fn populate(&self, config: &JailConfig) -> Result<(), Error> {
        let root = &self.root;
        // The root is given to the user last: until then nobody but root
        // can plant anything (a symbolic link) where the jailer writes.
        make_dir(root, 0o755)?;

        let exec = root.join(config.exec_name()?);
        std::fs::copy(&config.exec_file, &exec)
            .map_err(jail_err("copy the exec file to", &exec))?;
        std::fs::set_permissions(&exec, std::fs::Permissions::from_mode(0o755))
            .map_err(jail_err("set the mode of", &exec))?;

        make_dir(&root.join("dev"), 0o755)?;
        make_dir(&root.join("dev/net"), 0o755)?;
        for (host, jailed, required) in DEVICES {
            let meta = match std::fs::metadata(host) {
                Ok(meta) => meta,
                Err(source) if required || source.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::HostDevice {
                        path: host.into(),
                        source,
                    })
                }
                Err(_) => continue,
            };
            let node = root.join(jailed);
            mknod_char(&node, meta.rdev())?;
            chown(&node, config.uid, config.gid)?;
        }

        for file in &config.files {
            let name = file
                .file_name()
                .ok_or_else(|| Error::FileName(file.clone()))?;
            let target = root.join(name);
            // A symbolic link is resolved here: linked as it is, it would
            // point nowhere in the jail.
            let source = std::fs::canonicalize(file).map_err(|source| Error::Missing {
                what: "--file",
                path: file.clone(),
                source,
            })?;
            link_or_copy(&source, &target)?;
            chown(&target, config.uid, config.gid)?;
        }
        chown(root, config.uid, config.gid)
    }

    /// Deletes the jail's directory (hard links only lose a name; the
    /// host's files stay).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        for dir in &self.created_parents {
            // Fails, as it should, if another VM's jail is there now.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

fn jail_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Jail {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(jail_err("create", path))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(jail_err("set the mode of", path))
}

fn cstring(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Jail {
        action: "use",
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(jail_err("change the owner of", path))
}

fn mknod_char(path: &Path, rdev: u64) -> Result<(), Error> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; mknod
    // reads it and touches no memory of ours.
    let ret = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, rdev) };
    if ret == -1 {
        return Err(Error::Jail {
            action: "create the device node",
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(jail_err("set the mode of", path))
}

/// Hard-links `source` to `target`, or copies it when they are on
/// different file systems (or the link is refused).
fn link_or_copy(source: &Path, target: &Path) -> Result<(), Error> {
    match std::fs::hard_link(source, target) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {
            std::fs::copy(source, target)
                .map(drop)
                .map_err(jail_err("copy --file to", target))
        }
        Err(e) => Err(Error::Jail {
            action: "hard-link --file to",
            path: target.to_path_buf(),
            source: e,
        }),
    }
}
