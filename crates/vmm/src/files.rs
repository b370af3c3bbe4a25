//! Opening the files a user names, as hostile input: a FIFO must not
//! block the VMM, a directory must not pass for a kernel, and the serial
//! console must never overwrite a disk image.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::VmmError;

/// A file's identity on the host: device and inode numbers.
pub(crate) type FileId = (u64, u64);

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading as a regular file. The open never blocks (a
/// FIFO is refused instead of waiting for a writer).
pub(crate) fn open_regular(what: &'static str, path: &Path) -> Result<File, VmmError> {
    let open_err = |source| VmmError::OpenFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(VmmError::NotARegularFile {
            what,
            path: path.to_path_buf(),
            kind: kind(&meta),
        });
    }
    Ok(file)
}

/// The identity of the file at `path`, if it exists.
pub(crate) fn identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Opens the serial console's output file: created if missing, never
/// through a symbolic link, never a file the VM also uses (`in_use`: the
/// kernel, initrd and disks), and only a regular file or a character
/// device (a terminal, `/dev/null`) — then emptied if regular.
pub(crate) fn open_serial_file(
    path: &Path,
    in_use: &[(FileId, &'static str, PathBuf)],
) -> Result<File, VmmError> {
    let open_err = |source| VmmError::OpenFile {
        what: "serial output file",
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                VmmError::OpenFile {
                    what: "serial output file",
                    path: path.to_path_buf(),
                    source: io::Error::other("it is a symbolic link, which is not followed"),
                }
            } else {
                open_err(e)
            }
        })?;
    let meta = file.metadata().map_err(open_err)?;
    let id = (meta.dev(), meta.ino());
    if let Some((_, what, other)) = in_use.iter().find(|(used, _, _)| *used == id) {
        return Err(VmmError::FileUsedTwice {
            path: path.to_path_buf(),
            first: what,
            other: other.clone(),
        });
    }
    if meta.is_file() {
        file.set_len(0).map_err(open_err)?;
    } else if !meta.file_type().is_char_device() {
        return Err(VmmError::NotARegularFile {
            what: "serial output file",
            path: path.to_path_buf(),
            kind: kind(&meta),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("kindling-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let d = dir();
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_regular("kernel image", &fifo).unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        let err = open_regular("initrd", &d).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let _ = std::fs::remove_file(&fifo);
    }

    #[test]
    fn the_serial_file_never_overwrites_a_disk_or_follows_a_link() {
        let d = dir();
        let disk = d.join("disk.img");
        std::fs::write(&disk, [7u8; 512]).unwrap();
        let used = [(identity(&disk).unwrap(), "disk 0", disk.clone())];
        let err = open_serial_file(&disk, &used).unwrap_err();
        assert!(err.to_string().contains("disk 0"), "{err}");
        assert_eq!(std::fs::read(&disk).unwrap(), [7u8; 512], "disk touched");
        let link = d.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&disk, &link).unwrap();
        let err = open_serial_file(&link, &[]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&disk).unwrap(), [7u8; 512], "disk touched");
        let log = d.join("console.log");
        std::fs::write(&log, b"old").unwrap();
        open_serial_file(&log, &used).unwrap();
        assert!(std::fs::read(&log).unwrap().is_empty());
        open_serial_file(Path::new("/dev/null"), &used).unwrap();
    }
}
