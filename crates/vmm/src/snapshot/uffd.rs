//! Lazy restore through userfaultfd, Firecracker's `Uffd` memory backend.
//!
//! The VMM maps guest memory anonymous and private, registers it with a
//! userfaultfd for missing pages, and hands the userfaultfd and the
//! region mappings to a page fault handler listening on a Unix socket: one
//! message whose data is the JSON list of [`GuestRegionUffdMapping`]s
//! (Firecracker's field names) and whose `SCM_RIGHTS` ancillary data is
//! the userfaultfd. From then on the first touch of a page, by a vCPU, KVM
//! or a device, waits until the handler fills it (`UFFDIO_COPY`).
//!
//! The handler side is [`UffdHandler`]: it accepts that message and serves
//! each fault from a [`PageFaultHandler`], such as [`FilePages`] (the
//! snapshot's memory file). It can run in a thread or in another process
//! (`examples/uffd_handler.rs`).

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use kindling_memory::{create_guest_memory, GuestRam, MemoryConfig};
use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// Why the userfaultfd backend or a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    /// No userfaultfd could be created (neither the system call nor
    /// `/dev/userfaultfd`).
    #[error("cannot create a userfaultfd: {0}")]
    Create(#[source] io::Error),
    /// The userfaultfd API handshake failed.
    #[error("the userfaultfd API handshake failed: {0}")]
    Api(#[source] io::Error),
    /// Guest memory could not be registered.
    #[error(
        "cannot register guest memory at host address {addr:#x} with the userfaultfd: {source}"
    )]
    Register {
        /// Host address of the region.
        addr: u64,
        /// The error from the kernel.
        source: io::Error,
    },
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] kindling_memory::MemoryError),
    /// The handler's socket could not be reached or the hand-over failed.
    #[error("page fault handler socket {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The handler received a message it cannot use.
    #[error("bad hand-over message from the VMM: {0}")]
    Handover(String),
    /// Reading a fault or filling a page failed.
    #[error("cannot serve the page fault at {addr:#x}: {source}")]
    Serve {
        /// The faulting host address.
        addr: u64,
        /// The error.
        source: io::Error,
    },
}

/// One guest memory region as the handler sees it (Firecracker's
/// `GuestRegionUffdMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRegionUffdMapping {
    /// The region's address in the VMM's address space.
    pub base_host_virt_addr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its offset in the snapshot's memory file.
    pub offset: u64,
    /// The page size backing it, in KiB.
    pub page_size_kib: u64,
}

// The userfaultfd ABI (linux/userfaultfd.h).
const UFFD_API: u64 = 0xaa;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xaa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffd_msg` for a page fault: event, then the fault's flags and
/// address.
#[repr(C)]
#[derive(Default)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    feat: u64,
}

fn ioctl<T>(fd: RawFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure `request` takes, valid for reads and
    // writes for the call; the kernel checks the fd.
    let r = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new userfaultfd (close-on-exec, non-blocking: `poll` on a blocking
/// userfaultfd always reports an error), through the system call or, where
/// unprivileged use of the call is off, `/dev/userfaultfd`.
fn new_userfaultfd() -> Result<OwnedFd, UffdError> {
    const FLAGS: libc::c_int = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the syscall takes flags and returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, FLAGS) } as RawFd;
    let fd = if fd >= 0 {
        fd
    } else {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")
            .map_err(UffdError::Create)?;
        // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns
        // a new fd or -1.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, FLAGS) };
        if fd < 0 {
            return Err(UffdError::Create(io::Error::last_os_error()));
        }
        fd
    };
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api).map_err(UffdError::Api)?;
    Ok(fd)
}

/// The VMM's end of a userfaultfd restore: the userfaultfd, kept open for
/// as long as the VM runs.
///
/// Dropping it closes the connection to the handler, which tells the
/// handler that this VMM is gone.
#[derive(Debug)]
pub struct UffdSession {
    _uffd: OwnedFd,
    _stream: UnixStream,
}

/// Creates anonymous guest memory, registers it with a new userfaultfd and
/// hands both to the page fault handler listening on `socket`.
pub(crate) fn restore_with_uffd(
    config: &MemoryConfig,
    socket: &Path,
) -> Result<(GuestRam, UffdSession), UffdError> {
    let ram = create_guest_memory(config)?;
    let uffd = new_userfaultfd()?;
    let mut mappings = Vec::new();
    let mut offset = 0u64;
    for region in ram.memory.iter() {
        let host = ram
            .memory
            .get_host_address(region.start_addr())
            .map_err(|e| UffdError::Register {
                addr: 0,
                source: io::Error::other(e),
            })? as u64;
        let mut register = UffdioRegister {
            start: host,
            len: region.len(),
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut register)
            .map_err(|source| UffdError::Register { addr: host, source })?;
        mappings.push(GuestRegionUffdMapping {
            base_host_virt_addr: host,
            size: region.len(),
            offset,
            page_size_kib: 4,
        });
        offset += region.len();
    }
    let socket_err = |source| UffdError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(socket_err)?;
    let body = serde_json::to_vec(&mappings).map_err(|e| socket_err(io::Error::other(e)))?;
    send_with_fd(&stream, &body, uffd.as_raw_fd()).map_err(socket_err)?;
    Ok((
        ram,
        UffdSession {
            _uffd: uffd,
            _stream: stream,
        },
    ))
}

/// Sends `body` with `fd` as `SCM_RIGHTS` ancillary data.
fn send_with_fd(stream: &UnixStream, body: &[u8], fd: RawFd) -> io::Result<()> {
    let iov = [IoSlice::new(body)];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; the fields set below point at live
    // buffers for the duration of sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `control` has room for one header with one fd (CMSG_SPACE),
    // so CMSG_FIRSTHDR is non-null and CMSG_DATA points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` describes valid buffers (above).
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != body.len() {
        return Err(io::Error::other("short write of the region mappings"));
    }
    Ok(())
}

/// Receives one message and the fd in its `SCM_RIGHTS` data.
fn recv_with_fd(stream: &UnixStream) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut body = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr().cast(),
        iov_len: body.len(),
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; the pointers set below stay live
    // for recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes valid buffers.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    body.truncate(n as usize);
    let mut fd = None;
    // SAFETY: the kernel filled `control` up to msg_controllen; the CMSG
    // macros walk it within those bounds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
    }
    Ok((body, fd))
}

/// Where a page fault handler gets page contents.
pub trait PageFaultHandler: Send {
    /// Fills `page` with the bytes at `offset` in the snapshot's memory
    /// file (the offset of the faulting page).
    fn page(&mut self, offset: u64, page: &mut [u8]) -> io::Result<()>;
}

/// Serves pages from a snapshot's memory file (holes read as zeroes).
#[derive(Debug)]
pub struct FilePages(pub File);

impl PageFaultHandler for FilePages {
    fn page(&mut self, offset: u64, page: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < page.len() {
            let n = self.0.read_at(&mut page[done..], offset + done as u64)?;
            if n == 0 {
                // Past the end: zeroes (the restore checked the size).
                page[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }
}

/// The handler's end: the userfaultfd of one VMM and its regions.
#[derive(Debug)]
pub struct UffdHandler {
    uffd: OwnedFd,
    mappings: Vec<GuestRegionUffdMapping>,
    /// The connection the VMM keeps open while it lives.
    stream: UnixStream,
}

impl UffdHandler {
    /// Accepts one VMM on `listener` and receives its userfaultfd and
    /// region mappings.
    pub fn accept(listener: &UnixListener) -> Result<Self, UffdError> {
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_default();
        let socket_err = |source| UffdError::Socket {
            path: path.clone(),
            source,
        };
        let (stream, _) = listener.accept().map_err(socket_err)?;
        let (body, fd) = recv_with_fd(&stream).map_err(socket_err)?;
        let uffd = fd.ok_or_else(|| UffdError::Handover("no userfaultfd attached".into()))?;
        let mappings: Vec<GuestRegionUffdMapping> = serde_json::from_slice(&body)
            .map_err(|e| UffdError::Handover(format!("region mappings: {e}")))?;
        if mappings.is_empty() {
            return Err(UffdError::Handover("no region mappings".into()));
        }
        Ok(Self {
            uffd,
            mappings,
            stream,
        })
    }

    /// The VMM's guest memory regions.
    pub fn mappings(&self) -> &[GuestRegionUffdMapping] {
        &self.mappings
    }

    /// Serves page faults from `pages` until the VMM goes away (it closes
    /// its connection when its VM ends, or its process exits). Returns the
    /// number of pages served.
    pub fn run(&self, pages: &mut dyn PageFaultHandler) -> Result<u64, UffdError> {
        let mut page = vec![0u8; 4096];
        let mut served = 0u64;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.uffd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(UffdError::Serve {
                    addr: 0,
                    source: err,
                });
            }
            if fds[0].revents & libc::POLLIN == 0 {
                if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 || fds[1].revents != 0 {
                    // The VMM closed its end (it never writes more).
                    return Ok(served);
                }
                continue;
            }
            let mut msg = UffdMsg::default();
            // SAFETY: `msg` is a writable uffd_msg of the kernel's size.
            let n = unsafe {
                libc::read(
                    self.uffd.as_raw_fd(),
                    (&mut msg as *mut UffdMsg).cast(),
                    std::mem::size_of::<UffdMsg>(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                    _ => {
                        return Err(UffdError::Serve {
                            addr: 0,
                            source: err,
                        })
                    }
                }
            }
            if n == 0 {
                return Ok(served);
            }
            if msg.event != UFFD_EVENT_PAGEFAULT {
                continue;
            }
            let addr = msg.address & !4095;
            let Some(region) = self
                .mappings
                .iter()
                .find(|m| addr >= m.base_host_virt_addr && addr - m.base_host_virt_addr < m.size)
            else {
                return Err(UffdError::Serve {
                    addr,
                    source: io::Error::other("fault outside every region"),
                });
            };
            let offset = region.offset + (addr - region.base_host_virt_addr);
            pages
                .page(offset, &mut page)
                .map_err(|source| UffdError::Serve { addr, source })?;
            let mut copy = UffdioCopy {
                dst: addr,
                src: page.as_ptr() as u64,
                len: page.len() as u64,
                mode: 0,
                copy: 0,
            };
            match ioctl(self.uffd.as_raw_fd(), UFFDIO_COPY, &mut copy) {
                Ok(()) => served += 1,
                // Another thread of the VMM filled it first (EEXIST), or
                // the VMM is exiting (ESRCH).
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(served),
                Err(source) => return Err(UffdError::Serve { addr, source }),
            }
        }
    }
}

/// Starts a page fault handler thread listening on `socket` that serves
/// one VMM from the memory file `mem_file` (the in-process form of
/// `examples/uffd_handler.rs`). The thread returns the pages it served
/// once that VMM is gone.
pub fn spawn_file_handler(
    socket: &Path,
    mem_file: File,
) -> Result<std::thread::JoinHandle<Result<u64, UffdError>>, UffdError> {
    let listener = UnixListener::bind(socket).map_err(|source| UffdError::Socket {
        path: socket.to_path_buf(),
        source,
    })?;
    std::thread::Builder::new()
        .name("kindling-uffd".into())
        .spawn(move || {
            let handler = UffdHandler::accept(&listener)?;
            handler.run(&mut FilePages(mem_file))
        })
        .map_err(|source| UffdError::Socket {
            path: socket.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Accepts one connection on a fresh socket whose client runs `send`.
    fn handover(send: impl FnOnce(UnixStream) + Send + 'static) -> Result<UffdHandler, UffdError> {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("uffd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = std::thread::spawn(move || send(UnixStream::connect(&path).unwrap()));
        let result = UffdHandler::accept(&listener);
        client.join().unwrap();
        result
    }

    #[test]
    fn a_bad_handover_is_a_clear_error() {
        // No file descriptor.
        let err = handover(|mut s| s.write_all(b"[]").unwrap()).unwrap_err();
        assert!(err.to_string().contains("no userfaultfd attached"), "{err}");
        // A descriptor, but mappings that do not parse, or none.
        let event = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
        let fd = event.as_raw_fd();
        let err = handover(move |s| send_with_fd(&s, b"{not json", fd).unwrap()).unwrap_err();
        assert!(err.to_string().contains("region mappings"), "{err}");
        let err = handover(move |s| send_with_fd(&s, b"[]", fd).unwrap()).unwrap_err();
        assert!(err.to_string().contains("no region mappings"), "{err}");
        // A good one.
        let mappings = serde_json::to_vec(&[GuestRegionUffdMapping {
            base_host_virt_addr: 0x7f00_0000_0000,
            size: 1 << 20,
            offset: 0,
            page_size_kib: 4,
        }])
        .unwrap();
        let handler = handover(move |s| send_with_fd(&s, &mappings, fd).unwrap()).unwrap();
        assert_eq!(handler.mappings()[0].size, 1 << 20);
        drop(event);
    }

    #[test]
    fn file_pages_reads_holes_and_the_end_as_zeroes() {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        file.write_all_at(&[7u8; 4096], 4096).unwrap();
        let mut pages = FilePages(file);
        let mut page = vec![1u8; 4096];
        pages.page(0, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0));
        pages.page(4096, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 7));
        page.fill(1);
        pages.page(1 << 20, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0));
    }
}
