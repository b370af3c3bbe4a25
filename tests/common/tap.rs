//! A TAP device for tests, in a network namespace private to the calling
//! thread (nothing touches the host's network), and an `AF_PACKET` socket
//! on its host side that reads what the VMM writes to the TAP and writes
//! what the VMM should read. Shared by tests/virtio_net.rs and
//! benches/virtio_net.rs (`#[path]`).

#![allow(dead_code)]

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

thread_local! {
    static IN_NETNS: Cell<bool> = const { Cell::new(false) };
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Whether this machine lets the tests make namespaces and TAP devices
/// (root, /dev/net/tun). Tests are skipped with a message otherwise.
pub fn tap_available(test: &str) -> bool {
    let ok = std::path::Path::new("/dev/net/tun").exists()
        // SAFETY: geteuid has no preconditions.
        && unsafe { libc::geteuid() } == 0;
    if !ok {
        eprintln!("SKIPPED {test}: needs root and /dev/net/tun");
    }
    ok
}

/// Moves the calling thread into a network namespace of its own (once),
/// with IPv6 off so that the kernel sends nothing on its own.
pub fn enter_netns() -> io::Result<()> {
    if !IN_NETNS.get() {
        // SAFETY: unshare only changes this thread's namespaces.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, "unshare")?;
        IN_NETNS.set(true);
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    }
    Ok(())
}

/// Creates the persistent TAP `name` in the thread's namespace, up, as
/// `ip tuntap add NAME mode tap; ip link set NAME up` would. Returns its
/// interface index. It disappears with the namespace.
pub fn create_tap(name: &str) -> io::Result<i32> {
    enter_netns()?;
    // SAFETY: a plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check(fd, "open /dev/net/tun")?;
    // SAFETY: `fd` was just opened and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `req` is a 40-byte `struct ifreq`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
    check(r, "TUNSETIFF")?;
    // SAFETY: TUNSETPERSIST takes an integer argument.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    check(r, "TUNSETPERSIST")?;
    drop(fd);
    // SAFETY: a plain socket call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock, "socket")?;
    // SAFETY: just created, ours.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    req[16..18].copy_from_slice(&(libc::IFF_UP as i16).to_ne_bytes());
    // SAFETY: `req` is a 40-byte `struct ifreq` with the flags set.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, req.as_mut_ptr()) };
    check(r, "SIOCSIFFLAGS")?;
    let c_name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    Ok(unsafe { libc::if_nametoindex(c_name.as_ptr()) } as i32)
}

/// A frame for the guest (whose MAC is 06:00:ac:10:00:02): number `i`,
/// `len` bytes, local-experimental EtherType, recognisable body.
pub fn host_frame(i: u32, len: usize) -> Vec<u8> {
    let mut f = vec![6, 0, 0xac, 0x10, 0, 2, 2, 0, 0, 0, 0, 9, 0x88, 0xb5];
    f.extend_from_slice(&i.to_le_bytes());
    f.extend((18..len).map(|k| (k as u32 ^ i.wrapping_mul(31)) as u8));
    f
}

/// One's-complement sum of `data` as big-endian 16-bit words, not folded.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for pair in data.chunks(2) {
        sum += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A TCP/IPv4 frame as the test guest's `net-tso` builds it (and as a
/// sender leaves it for TSO): `dst`, `src` MACs, IPv4 `ips[..4]` to
/// `ips[4..]` (don't fragment, id `id`, header checksum done), TCP 1234
/// to 5678, sequence number `seq`, flags ACK, window 65535, the checksum
/// field holding the pseudo-header sum, then `payload` bytes, byte `j`
/// being `j mod 251`.
pub fn tcp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ips: [u8; 8],
    id: u16,
    seq: u32,
    payload: usize,
) -> Vec<u8> {
    let len = 54 + payload;
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[8, 0, 0x45, 0]);
    f.extend_from_slice(&((len - 14) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&ips);
    let ip_sum = !fold(sum16(&f[14..34], 0));
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    f.extend_from_slice(&1234u16.to_be_bytes());
    f.extend_from_slice(&5678u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff]);
    let pseudo = fold(sum16(&ips, 6 + (len - 34) as u32));
    f.extend_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|j| (j % 251) as u8));
    f
}

/// The virtio header for a [`tcp_frame`] handed over whole for TCP
/// segmentation into 1448-byte segments (`NEEDS_CSUM`, `GSO_TCPV4`).
pub const TSO_VNET: Vnet = Vnet {
    flags: 1,
    gso_type: 1,
    hdr_len: 54,
    gso_size: 1448,
    csum_start: 34,
    csum_offset: 16,
};

/// The 12-byte virtio header as `PACKET_VNET_HDR` gives it (10 bytes,
/// without `num_buffers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vnet {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl Vnet {
    fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }
}

/// An `AF_PACKET` socket bound to the TAP's host side.
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// With `PACKET_VNET_HDR` (each frame with its virtio header) and a
    /// receive timeout of `timeout_ms`.
    pub fn new(ifindex: i32, timeout_ms: u32) -> io::Result<Self> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a plain socket call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        check(fd, "socket(AF_PACKET)")?;
        // SAFETY: just created, ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let set = |level, name, value: &[u8], what| {
            // SAFETY: `value` is valid for reads of its length.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    name,
                    value.as_ptr().cast(),
                    value.len() as u32,
                )
            };
            check(r, what)
        };
        set(
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            &1i32.to_ne_bytes(),
            "PACKET_VNET_HDR",
        )?;
        set(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &(64i32 << 20).to_ne_bytes(),
            "SO_RCVBUFFORCE",
        )?;
        let tv = libc::timeval {
            tv_sec: (timeout_ms / 1000) as i64,
            tv_usec: ((timeout_ms % 1000) * 1000) as i64,
        };
        // SAFETY: a timeval is plain bytes.
        let tv_bytes = unsafe {
            std::slice::from_raw_parts(
                (&tv as *const libc::timeval).cast::<u8>(),
                std::mem::size_of::<libc::timeval>(),
            )
        };
        set(libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv_bytes, "SO_RCVTIMEO")?;
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        check(r, "bind")?;
        Ok(Self(fd))
    }

    /// Another handle on the same socket (for a sender thread).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self(self.0.try_clone()?))
    }

    /// Writes `frame` into the TAP, towards the VMM.
    pub fn send(&self, header: Vnet, frame: &[u8]) -> io::Result<()> {
        self.send_raw(header, frame).map_err(|e| {
            let kind = e.kind();
            io::Error::new(kind, format!("send: {e}"))
        })
    }

    /// One `send`, its error as the kernel gave it.
    fn send_raw(&self, header: Vnet, frame: &[u8]) -> io::Result<()> {
        let mut buf = header.to_bytes().to_vec();
        buf.extend_from_slice(frame);
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Lets `bytes` of sent frames wait in the TAP before `send` blocks
    /// (`SO_SNDBUFFORCE`; the default, about 200 KiB, is three 64 KiB
    /// frames).
    pub fn set_send_buffer(&self, bytes: i32) -> io::Result<()> {
        let value = bytes.to_ne_bytes();
        // SAFETY: `value` is valid for reads of its length.
        let r = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                value.as_ptr().cast(),
                value.len() as u32,
            )
        };
        check(r, "SO_SNDBUFFORCE")
    }

    /// Sends straight to the TAP's driver, past the queueing discipline
    /// (`PACKET_QDISC_BYPASS`): a frame the TAP cannot take (no VMM has it
    /// open) fails with `ENOBUFS` instead of vanishing. (Through the
    /// discipline a frame sent while a TAP is being reattached, before the
    /// kernel's link watcher caught up with its carrier, is dropped
    /// silently.)
    pub fn bypass_qdisc(&self) -> io::Result<()> {
        let one = 1i32.to_ne_bytes();
        // SAFETY: `one` is valid for reads of its length.
        let r = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                one.as_ptr().cast(),
                one.len() as u32,
            )
        };
        check(r, "PACKET_QDISC_BYPASS")
    }

    /// [`PacketSocket::send`], again every 10 ms for up to 5 s while the
    /// TAP refuses the frame (on a socket with [`PacketSocket::bypass_qdisc`]:
    /// until a VMM has the TAP open).
    pub fn send_when_attached(&self, header: Vnet, frame: &[u8]) -> io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match self.send_raw(header, frame) {
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOBUFS)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("send: {e}"))),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// The next frame the VMM wrote to the TAP (frames this host sent are
    /// skipped); `None` after the timeout.
    pub fn recv(&self) -> Option<(Vnet, Vec<u8>)> {
        let mut buf = vec![0u8; 70_000];
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are valid for writes of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 10 {
                return None;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Some((Vnet::from_bytes(&buf[..10]), buf[10..n as usize].to_vec()));
        }
    }
}
