//! The host side of a virtio-net device: a TAP interface opened through
//! `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking,
//! with the 12-byte virtio 1.x header in front of every frame in both
//! directions.
//!
//! As in Firecracker, the interface is created (and configured) by the
//! host beforehand (`ip tuntap add NAME mode tap`); [`Tap::open`] only
//! attaches to it, and refuses a name that is too long or names no
//! interface instead of creating one.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// The TAP offload flags (`TUN_F_*`) that `TUNSETOFFLOAD` takes.
pub mod offload {
    /// The kernel may hand over frames with a partial checksum.
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    /// TCP over IPv4 segmentation offload.
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    /// TCP over IPv6 segmentation offload.
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    /// UDP fragmentation offload.
    pub const UFO: u32 = libc::TUN_F_UFO;
}

/// Why a TAP device could not be opened or set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty.
    #[error("TAP interface name is empty")]
    EmptyName,
    /// The name is longer than Linux allows.
    #[error(
        "TAP interface name {name:?} is {len} bytes, longer than the {MAX_IFNAME_LEN} Linux allows"
    )]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name has a character Linux refuses in interface names.
    #[error("TAP interface name {0:?} has a '/', ':', NUL or whitespace character")]
    InvalidName(String),
    /// No interface has this name (it must be created beforehand, e.g.
    /// `ip tuntap add NAME mode tap`).
    #[error("there is no network interface {0:?} (create the TAP device first: ip tuntap add {0} mode tap)")]
    NoSuchInterface(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// An ioctl on the TAP failed.
    #[error("TAP interface {name:?}: {op} failed: {source}")]
    Ioctl {
        /// The interface.
        name: String,
        /// The ioctl.
        op: &'static str,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
}

/// `struct ifreq` with the flags member (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// Checks an interface name the way Linux's `dev_valid_name` does.
pub fn check_name(name: &str) -> Result<(), TapError> {
    if name.is_empty() {
        return Err(TapError::EmptyName);
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(TapError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(TapError::InvalidName(name.to_string()));
    }
    Ok(())
}

impl Tap {
    /// Attaches to the existing TAP interface `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        check_name(name)?;
        let c_name = CString::new(name).map_err(|_| TapError::InvalidName(name.to_string()))?;
        // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(TapError::NoSuchInterface(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let tap = Self {
            file,
            name: name.to_string(),
        };
        // SAFETY: TUNSETIFF reads (and writes back) a `struct ifreq`, which
        // `req` is laid out as; the fd is ours.
        let r = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        tap.check(r, "TUNSETIFF")?;
        tap.setup()?;
        Ok(tap)
    }

    /// Uses `fd`, a TAP device already attached (with `IFF_VNET_HDR`) by
    /// whoever handed it in; `name` names it in errors and snapshots.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Result<Self, TapError> {
        let tap = Self {
            file: File::from(fd),
            name: name.to_string(),
        };
        let fd = tap.file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on an fd we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        tap.check(flags, "F_GETFL")?;
        // SAFETY: as above.
        let r = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        tap.check(r, "F_SETFL O_NONBLOCK")?;
        tap.setup()?;
        Ok(tap)
    }

    /// The 12-byte header, and no offloads until a driver asks for them.
    fn setup(&self) -> Result<(), TapError> {
        let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int from the pointer.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        self.check(r, "TUNSETVNETHDRSZ")?;
        self.set_offload(0)
    }

    fn check(&self, r: libc::c_int, op: &'static str) -> Result<(), TapError> {
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Which offloads (`offload::*`) the kernel may use in frames it
    /// hands to us.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes the flags as the argument itself.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(r, "TUNSETOFFLOAD")
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (virtio header first) into `buf`.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes one frame (virtio header first) gathered from `iovs`.
    pub fn write_frame(&self, iovs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`, and every
        // slice is valid for reads of its length for this call.
        unsafe { self.write_iovecs(iovs.as_ptr().cast(), iovs.len()) }
    }

    /// [`Tap::write_frame`] from raw `iovec`s (the device's transmit path
    /// reuses one array of them for every frame, with no allocation).
    ///
    /// # Safety
    ///
    /// `iovs` must point to `count` `iovec`s, each describing memory valid
    /// for reads of its length until the call returns.
    pub(crate) unsafe fn write_iovecs(
        &self,
        iovs: *const libc::iovec,
        count: usize,
    ) -> io::Result<usize> {
        let count = count.min(libc::c_int::MAX as usize) as libc::c_int;
        loop {
            // SAFETY: the caller guarantees `count` valid iovecs at `iovs`.
            let n = unsafe { libc::writev(self.file.as_raw_fd(), iovs, count) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_opened() {
        assert!(matches!(check_name(""), Err(TapError::EmptyName)));
        let e = Tap::open("a-name-much-too-long").unwrap_err();
        assert!(matches!(e, TapError::NameTooLong { len: 20, .. }));
        assert!(e.to_string().contains("longer than the 15"), "{e}");
        assert!(matches!(check_name("a/b"), Err(TapError::InvalidName(_))));
        assert!(matches!(check_name("a b"), Err(TapError::InvalidName(_))));
        assert!(matches!(check_name(".."), Err(TapError::InvalidName(_))));
        check_name("tap0").unwrap();
        check_name("exactly15chars_").unwrap();
    }

    #[test]
    fn a_missing_interface_is_a_clear_error() {
        let e = Tap::open("kdl-nosuch0").unwrap_err();
        assert!(matches!(e, TapError::NoSuchInterface(_)), "{e}");
        assert!(e.to_string().contains("ip tuntap add kdl-nosuch0"), "{e}");
    }

    #[test]
    fn an_fd_that_is_not_a_tap_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = Tap::from_fd(OwnedFd::from(a), "sock").unwrap_err();
        assert!(
            matches!(
                e,
                TapError::Ioctl {
                    op: "TUNSETVNETHDRSZ",
                    ..
                }
            ),
            "{e}"
        );
    }
}
