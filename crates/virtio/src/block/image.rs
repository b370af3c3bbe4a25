//! Opening a disk image as hostile input: only regular files and block
//! devices, sized correctly, never blocking on a FIFO, and locked so that
//! no two VMMs (or two disks of one VM) write the same image.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::BlockError;

/// `BLKGETSIZE64`: the size of a block device in bytes (`_IOR(0x12, 114,
/// size_t)`).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// What an image is on the host: its size and its identity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageInfo {
    pub(crate) size: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// Checks that `file` is a regular file or a block device, returns its
/// size, and takes an open-file-description lock on it: a write lock when
/// it is open for writing, a read lock otherwise. Another holder of a
/// conflicting lock (another VMM, or this one's other disk) makes it
/// [`BlockError::Locked`].
pub(crate) fn check_and_lock(file: &File, path: &Path) -> Result<ImageInfo, BlockError> {
    let meta = file.metadata().map_err(|source| BlockError::Metadata {
        path: path.to_path_buf(),
        source,
    })?;
    let size = if meta.is_file() {
        meta.len()
    } else if meta.file_type().is_block_device() {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which
        // points at `size`; the fd is a block device we own.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
        if r != 0 {
            return Err(BlockError::Metadata {
                path: path.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
        size
    } else {
        return Err(BlockError::NotADisk {
            path: path.to_path_buf(),
            kind: kind(&meta),
        });
    };
    // SAFETY: F_GETFL has no argument and only reads the fd's flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    let writable = flags >= 0 && flags & libc::O_ACCMODE != libc::O_RDONLY;
    lock(file, path, writable)?;
    Ok(ImageInfo {
        size,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

fn lock(file: &File, path: &Path, write: bool) -> Result<(), BlockError> {
    let lock = libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads one `struct flock`, which `lock` is; the
    // lock belongs to this open file description and goes with it.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if r == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    match source.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(BlockError::Locked {
            path: path.to_path_buf(),
            write,
        }),
        _ => Err(BlockError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use vmm_sys_util::tempfile::TempFile;

    fn open(path: &Path, write: bool) -> File {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .unwrap()
    }

    #[test]
    fn writers_exclude_everyone_readers_share() {
        let tmp = TempFile::new().unwrap();
        std::fs::write(tmp.as_path(), [0u8; 1024]).unwrap();
        let p = tmp.as_path();
        let first = open(p, true);
        assert_eq!(check_and_lock(&first, p).unwrap().size, 1024);
        let err = check_and_lock(&open(p, true), p).unwrap_err();
        assert!(
            matches!(err, BlockError::Locked { write: true, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(check_and_lock(&open(p, false), p).is_err());
        drop(first);
        let r1 = open(p, false);
        let r2 = open(p, false);
        check_and_lock(&r1, p).unwrap();
        check_and_lock(&r2, p).unwrap();
        assert!(check_and_lock(&open(p, true), p).is_err());
    }

    #[test]
    fn only_files_and_block_devices_are_disks() {
        let err =
            check_and_lock(&File::open("/dev/null").unwrap(), Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
        let dir = std::env::temp_dir();
        let err = check_and_lock(&File::open(&dir).unwrap(), &dir).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
    }
}
