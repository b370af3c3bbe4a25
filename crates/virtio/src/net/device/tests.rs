//! Tests of the network device on a real TAP, in a network namespace of
//! the test's own thread (nothing touches the host's network), with the
//! driver's side made of virtio-queue's mock rings and the host's side an
//! `AF_PACKET` socket on the TAP.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::interrupt::tests::CountingLine;
use crate::net::tx::VnetHeader;
use crate::queue::tests::memory;
use crate::rate_limiter::TokenBucketConfig;
use crate::VirtioInterrupt;

const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;

thread_local! {
    static IN_NETNS: Cell<bool> = const { Cell::new(false) };
}

/// A TAP made for a test.
pub(crate) struct TestTap {
    pub(crate) name: String,
    /// The fd that made it, if it is not persistent.
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) ifindex: i32,
}

fn check(r: libc::c_int, what: &str) {
    assert!(r >= 0, "{what}: {}", io::Error::last_os_error());
}

/// Creates TAP `name` (up, IPv6 off so the kernel sends nothing on its
/// own) in a network namespace private to the calling thread, created at
/// its first call.
pub(crate) fn netns_tap(name: &str, persistent: bool) -> TestTap {
    if !IN_NETNS.get() {
        // SAFETY: unshare only changes this thread's namespaces.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, "unshare");
        IN_NETNS.set(true);
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    }
    // SAFETY: a plain open of a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    check(fd, "open /dev/net/tun");
    // SAFETY: `fd` was just opened and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `req` is a 40-byte `struct ifreq`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
    check(r, "TUNSETIFF");
    if persistent {
        // SAFETY: TUNSETPERSIST takes an integer argument.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
        check(r, "TUNSETPERSIST");
    }
    // SAFETY: a plain socket call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock, "socket");
    // SAFETY: `sock` was just created and is ours.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let up = (libc::IFF_UP as i16).to_ne_bytes();
    req[16..18].copy_from_slice(&up);
    // SAFETY: `req` is a 40-byte `struct ifreq` with the flags set.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, req.as_mut_ptr()) };
    check(r, "SIOCSIFFLAGS");
    let c_name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) } as i32;
    assert!(ifindex > 0);
    TestTap {
        name: name.to_string(),
        fd: (!persistent).then_some(fd),
        ifindex,
    }
}

/// An `AF_PACKET` socket on the TAP's host side, with the virtio header
/// (`PACKET_VNET_HDR`) in front of each frame.
pub(crate) struct PacketSocket(OwnedFd);

impl PacketSocket {
    pub(crate) fn new(ifindex: i32) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a plain socket call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        check(fd, "socket(AF_PACKET)");
        // SAFETY: just created, ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: PACKET_VNET_HDR takes an int.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        check(r, "PACKET_VNET_HDR");
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        check(r, "SO_RCVTIMEO");
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
        check(r, "bind");
        Self(fd)
    }

    /// Sends `header` + `frame` into the TAP (towards the device).
    pub(crate) fn send(&self, header: VnetHeader, frame: &[u8]) {
        let mut buf = header.to_bytes()[..10].to_vec();
        buf.extend_from_slice(frame);
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        assert_eq!(n, buf.len() as isize, "{}", io::Error::last_os_error());
    }

    /// The next frame the device wrote to the TAP (frames the socket sent
    /// itself are skipped), within the timeout.
    pub(crate) fn recv(&self) -> Option<(VnetHeader, Vec<u8>)> {
        let mut buf = vec![0u8; 70000];
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
            if n < 0 {
                return None;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut h = [0u8; VNET_HDR_LEN];
            h[..10].copy_from_slice(&buf[..10]);
            return Some((VnetHeader::from_bytes(&h), buf[10..n as usize].to_vec()));
        }
    }
}

/// A frame with a local-experimental EtherType and a recognisable body.
pub(crate) fn test_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5];
    f.extend((0..len.saturating_sub(14)).map(|i| (i as u8).wrapping_mul(7) ^ seed));
    f
}

struct Fixture<'m> {
    net: Net,
    rxq: MockSplitQueue<'m, GuestMemoryMmap>,
    txq: MockSplitQueue<'m, GuestMemoryMmap>,
    line: Arc<CountingLine>,
    sock: PacketSocket,
    _tap: TestTap,
}

fn activated<'m>(
    mem: &'m GuestMemoryMmap,
    name: &str,
    acked: u64,
    config: NetConfig,
) -> Fixture<'m> {
    let tap = netns_tap(name, false);
    let sock = PacketSocket::new(tap.ifindex);
    let dup = tap.fd.as_ref().unwrap().try_clone().unwrap();
    let mut net = Net::with_tap(Tap::from_fd(dup, name).unwrap(), &config).unwrap();
    let rxq = MockSplitQueue::create(mem, GuestAddress(0x1000), 16);
    let txq = MockSplitQueue::create(mem, GuestAddress(0x8000), 16);
    let line = Arc::new(CountingLine::default());
    net.activate(Activation {
        memory: mem.clone(),
        interrupt: VirtioInterrupt::new(line.clone()),
        queues: vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
        acked_features: acked,
    })
    .unwrap();
    Fixture {
        net,
        rxq,
        txq,
        line,
        sock,
        _tap: tap,
    }
}

fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

fn acked_all() -> u64 {
    features::COMMON
        | net::CSUM
        | net::GUEST_CSUM
        | net::GUEST_TSO4
        | net::HOST_TSO4
        | net::MRG_RXBUF
}

#[test]
fn guest_frames_reach_the_tap_and_tap_frames_reach_the_guest() {
    let mem = memory(0x100_0000);
    let mut f = activated(&mem, "kdlt0", acked_all(), NetConfig::new("kdlt0"));
    // TX: header in one buffer, the frame in another.
    let frame = test_frame(1000, 3);
    mem.write_slice(&VnetHeader::default().to_bytes(), GuestAddress(0x20000))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(0x21000)).unwrap();
    f.txq
        .add_desc_chains(&[raw(0x20000, 12, N, 1), raw(0x21000, 1000, 0, 0)], 0)
        .unwrap();
    assert_eq!(f.net.process_queue(TX_QUEUE).unwrap(), QueueProgress::Done);
    assert_eq!(f.txq.used().idx().load(), 1);
    let (h, got) = f.sock.recv().expect("the frame on the TAP");
    assert_eq!((h.flags, got), (0, frame));
    assert_eq!(f.net.counters().tx_frames, 1);
    assert_eq!(f.net.counters().tx_bytes, 1000);

    // RX: two mergeable buffers of 1 KiB for a 1500-byte frame.
    f.rxq
        .add_desc_chains(&[raw(0x30000, 1024, W, 0), raw(0x31000, 1024, W, 0)], 0)
        .unwrap();
    let incoming = test_frame(1500, 9);
    f.sock.send(VnetHeader::default(), &incoming);
    std::thread::sleep(Duration::from_millis(20));
    f.net.process_queue(RX_QUEUE).unwrap();
    assert_eq!(f.rxq.used().idx().load(), 2);
    let mut got = vec![0u8; 12 + 1500];
    mem.read_slice(&mut got[..1024], GuestAddress(0x30000))
        .unwrap();
    mem.read_slice(&mut got[1024..], GuestAddress(0x31000))
        .unwrap();
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2, "num_buffers");
    assert_eq!(&got[12..], &incoming[..]);
    assert_eq!(f.net.counters().rx_frames, 1);
    assert!(f.line.count() >= 1);
    assert_eq!(f.net.counters().rx_dropped, 0);
}

#[test]
fn without_buffers_frames_wait_in_the_tap_and_nothing_is_lost() {
    let mem = memory(0x100_0000);
    let mut f = activated(&mem, "kdlt1", features::COMMON, NetConfig::new("kdlt1"));
    for i in 0..5 {
        f.sock.send(VnetHeader::default(), &test_frame(100, i));
    }
    std::thread::sleep(Duration::from_millis(20));
    // No buffers: the pass returns at once, reads nothing.
    for _ in 0..3 {
        f.net.process_queue(RX_QUEUE).unwrap();
    }
    assert_eq!(f.net.counters(), NetCounters::default());
    assert!(f.net.rx.held.is_none(), "nothing read without buffers");
    // Buffers for three frames (no mergeable buffers: one chain each).
    let chains: Vec<RawDescriptor> = (0..3)
        .map(|i| raw(0x30000 + i * 0x1000, 2048, W, 0))
        .collect();
    f.rxq.add_desc_chains(&chains, 0).unwrap();
    f.net.process_queue(RX_QUEUE).unwrap();
    assert_eq!(f.net.counters().rx_frames, 3);
    // The fourth frame is held, not dropped; two more buffers take both.
    let more: Vec<RawDescriptor> = (3..5)
        .map(|i| raw(0x30000 + i * 0x1000, 2048, W, 0))
        .collect();
    f.rxq.add_desc_chains(&more, 3).unwrap();
    f.net.process_queue(RX_QUEUE).unwrap();
    assert_eq!(f.net.counters().rx_frames, 5);
    assert_eq!(f.net.counters().rx_dropped, 0);
    for i in 0..5u64 {
        let mut body = vec![0u8; 100];
        mem.read_slice(&mut body, GuestAddress(0x30000 + i * 0x1000 + 12))
            .unwrap();
        assert_eq!(body, test_frame(100, i as u8));
    }
}

#[test]
fn a_frame_too_large_for_the_buffers_is_dropped_and_counted() {
    let mem = memory(0x100_0000);
    let mut f = activated(&mem, "kdlt2", features::COMMON, NetConfig::new("kdlt2"));
    f.rxq
        .add_desc_chains(&[raw(0x30000, 200, W, 0)], 0)
        .unwrap();
    f.sock.send(VnetHeader::default(), &test_frame(1000, 1));
    f.sock.send(VnetHeader::default(), &test_frame(100, 2));
    std::thread::sleep(Duration::from_millis(20));
    f.net.process_queue(RX_QUEUE).unwrap();
    let c = f.net.counters();
    assert_eq!((c.rx_dropped, c.rx_frames), (1, 1));
    assert_eq!(f.rxq.used().idx().load(), 1);
}

#[test]
fn malformed_transmit_chains_are_dropped_and_counted() {
    let mem = memory(0x100_0000);
    let mut f = activated(&mem, "kdlt3", features::COMMON, NetConfig::new("kdlt3"));
    let tso = VnetHeader {
        flags: 1,
        gso_type: 1,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    mem.write_slice(&tso.to_bytes(), GuestAddress(0x20000))
        .unwrap();
    f.txq
        .add_desc_chains(
            &[
                raw(0x20000, 8, 0, 0),    // shorter than the header
                raw(0x20000, 3000, 0, 0), // TSO not negotiated
                raw(0x20000, 100, W, 0),  // device-writable
            ],
            0,
        )
        .unwrap();
    f.net.process_queue(TX_QUEUE).unwrap();
    assert_eq!(f.txq.used().idx().load(), 3);
    let c = f.net.counters();
    assert_eq!((c.tx_malformed, c.tx_frames), (3, 0));
    assert!(f.sock.recv().is_none());
}

#[test]
fn partial_checksums_pass_both_ways_when_negotiated() {
    let mem = memory(0x100_0000);
    let mut f = activated(&mem, "kdlt4", acked_all(), NetConfig::new("kdlt4"));
    // A UDP/IPv4 frame whose checksum the receiver completes.
    let mut frame = test_frame(200, 0);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14] = 0x45;
    frame[23] = 17;
    let csum = VnetHeader {
        flags: 1,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    mem.write_slice(&csum.to_bytes(), GuestAddress(0x20000))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(0x2000c)).unwrap();
    f.txq
        .add_desc_chains(&[raw(0x20000, 212, 0, 0)], 0)
        .unwrap();
    f.net.process_queue(TX_QUEUE).unwrap();
    let (h, got) = f.sock.recv().expect("frame");
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (1, 34, 6));
    assert_eq!(got, frame);
    // Towards the guest: the TAP keeps the partial checksum (TUN_F_CSUM).
    f.rxq
        .add_desc_chains(&[raw(0x30000, 2048, W, 0)], 0)
        .unwrap();
    f.sock.send(csum, &frame);
    std::thread::sleep(Duration::from_millis(20));
    f.net.process_queue(RX_QUEUE).unwrap();
    let mut h = [0u8; 12];
    mem.read_slice(&mut h, GuestAddress(0x30000)).unwrap();
    let h = VnetHeader::from_bytes(&h);
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (1, 34, 6));
}

/// An Ethernet + IPv4 + TCP frame with `payload` bytes of data.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    let ip_len = (20 + 20 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 169, 254, 1, 2, 169, 254, 1, 1]);
    f.extend_from_slice(&[
        0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

#[test]
fn tso_segments_cross_the_tap_whole_both_ways() {
    let mem = memory(0x100_0000);
    let mut f = activated(&mem, "kdlt8", acked_all(), NetConfig::new("kdlt8"));
    let frame = tcp_frame(4000);
    let tso = VnetHeader {
        flags: 1,
        gso_type: 1,
        hdr_len: 54,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    // Transmit: one 4054-byte TCPv4 segment for the TAP to cut up.
    mem.write_slice(&tso.to_bytes(), GuestAddress(0x20000))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(0x2000c)).unwrap();
    f.txq
        .add_desc_chains(&[raw(0x20000, 12 + frame.len() as u32, 0, 0)], 0)
        .unwrap();
    f.net.process_queue(TX_QUEUE).unwrap();
    assert_eq!(f.net.counters().tx_frames, 1, "{:?}", f.net.counters());
    let (h, got) = f.sock.recv().expect("the segment on the TAP");
    assert_eq!((h.gso_type, h.gso_size, h.flags), (1, 1000, 1));
    assert_eq!(got, frame);
    // Receive: the TAP hands the guest the large segment (GUEST_TSO4),
    // over two mergeable 2 KiB buffers.
    let chains: Vec<RawDescriptor> = (0..4)
        .map(|i| raw(0x30000 + i * 0x1000, 2048, W, 0))
        .collect();
    f.rxq.add_desc_chains(&chains, 0).unwrap();
    f.sock.send(tso, &frame);
    std::thread::sleep(Duration::from_millis(20));
    f.net.process_queue(RX_QUEUE).unwrap();
    assert_eq!(f.net.counters().rx_frames, 1);
    assert_eq!(
        f.rxq.used().idx().load(),
        2,
        "12 + 4054 bytes in two buffers"
    );
    let mut got = vec![0u8; 12 + frame.len()];
    let mut at = 0;
    for i in 0..2u64 {
        let n = (got.len() - at).min(2048);
        mem.read_slice(&mut got[at..at + n], GuestAddress(0x30000 + i * 0x1000))
            .unwrap();
        at += n;
    }
    let h = VnetHeader::from_bytes(got[..12].try_into().unwrap());
    assert_eq!((h.gso_type, h.gso_size, h.num_buffers), (1, 1000, 2));
    assert_eq!(&got[12..], &frame[..]);
}

#[test]
fn the_transmit_rate_limiter_stops_the_queue_and_an_update_lifts_it() {
    let mem = memory(0x100_0000);
    let mut config = NetConfig::new("kdlt5");
    config.tx_rate_limiter = Some(RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 2,
            one_time_burst: 0,
            refill_time: 60_000,
        }),
    });
    let mut f = activated(&mem, "kdlt5", features::COMMON, config);
    mem.write_slice(&VnetHeader::default().to_bytes(), GuestAddress(0x20000))
        .unwrap();
    let chains: Vec<RawDescriptor> = (0..4).map(|_| raw(0x20000, 72, 0, 0)).collect();
    f.txq.add_desc_chains(&chains, 0).unwrap();
    f.net.process_queue(TX_QUEUE).unwrap();
    let c = f.net.counters();
    assert_eq!((c.tx_frames, c.tx_throttled), (2, 1));
    assert_eq!(f.txq.used().idx().load(), 2, "the rest waits in the ring");
    // Notifications while throttled do nothing.
    f.net.process_queue(TX_QUEUE).unwrap();
    assert_eq!(f.net.counters().tx_frames, 2);
    // Lifting the limit fires the timer at once; its event takes the
    // queue up again.
    f.net.update_rate_limiters(
        None,
        Some(&RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig::default()),
        }),
    );
    assert_eq!(f.net.config().tx_rate_limiter, None);
    std::thread::sleep(Duration::from_millis(5));
    f.net.on_timer(TX_TIMER_TOKEN);
    assert_eq!(f.net.counters().tx_frames, 4);
    for _ in 0..4 {
        assert!(f.sock.recv().is_some());
    }
}

#[test]
fn the_receive_rate_limiter_holds_frames_in_the_tap() {
    let mem = memory(0x100_0000);
    let mut config = NetConfig::new("kdlt7");
    config.rx_rate_limiter = Some(RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 1000,
            one_time_burst: 0,
            refill_time: 60_000,
        }),
        ops: None,
    });
    let mut f = activated(&mem, "kdlt7", features::COMMON, config);
    let chains: Vec<RawDescriptor> = (0..4)
        .map(|i| raw(0x30000 + i * 0x1000, 2048, W, 0))
        .collect();
    f.rxq.add_desc_chains(&chains, 0).unwrap();
    for i in 0..4 {
        f.sock.send(VnetHeader::default(), &test_frame(400, i));
    }
    std::thread::sleep(Duration::from_millis(20));
    f.net.process_queue(RX_QUEUE).unwrap();
    // 1000 bytes: two frames of 400, the third waits (held, not dropped).
    let c = f.net.counters();
    assert_eq!((c.rx_frames, c.rx_throttled, c.rx_dropped), (2, 1, 0));
    f.net.process_queue(RX_QUEUE).unwrap();
    assert_eq!(f.net.counters().rx_frames, 2);
    f.net.update_rate_limiters(
        Some(&RateLimiterConfig {
            bandwidth: Some(TokenBucketConfig::default()),
            ops: None,
        }),
        None,
    );
    std::thread::sleep(Duration::from_millis(5));
    f.net.on_timer(RX_TIMER_TOKEN);
    let c = f.net.counters();
    assert_eq!((c.rx_frames, c.rx_dropped), (4, 0));
    for i in 0..4u64 {
        let mut body = vec![0u8; 400];
        mem.read_slice(&mut body, GuestAddress(0x30000 + i * 0x1000 + 12))
            .unwrap();
        assert_eq!(body, test_frame(400, i as u8));
    }
}

#[test]
fn config_space_features_and_reset() {
    let tap = netns_tap("kdlt6", false);
    let mut config = NetConfig::new("kdlt6");
    config.mac = Some("02:11:22:33:44:55".parse().unwrap());
    let dup = tap.fd.as_ref().unwrap().try_clone().unwrap();
    let mut net = Net::with_tap(Tap::from_fd(dup, "kdlt6").unwrap(), &config).unwrap();
    assert_eq!(net.device_type(), DeviceType::Net);
    assert_eq!(net.queue_max_sizes(), &[256, 256]);
    assert_ne!(net.device_features() & net::MAC, 0);
    let mut b = [0xffu8; 8];
    net.read_config(0, &mut b);
    assert_eq!(b, [2, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0]);
    let mut b = [0u8; 2];
    net.read_config(4, &mut b);
    assert_eq!(b, [0x44, 0x55]);
    net.write_config(0, &[0; 6]);
    net.read_config(u64::MAX, &mut b);
    assert_eq!(b, [0, 0]);
    let no_mac = Net::with_tap(
        Tap::from_fd(tap.fd.as_ref().unwrap().try_clone().unwrap(), "kdlt6").unwrap(),
        &NetConfig::new("kdlt6"),
    )
    .unwrap();
    assert_eq!(no_mac.device_features() & net::MAC, 0);
    assert!(matches!(
        Net::with_tap(
            Tap::from_fd(tap.fd.as_ref().unwrap().try_clone().unwrap(), "x").unwrap(),
            &NetConfig {
                queue_size: 3,
                ..NetConfig::new("x")
            }
        ),
        Err(NetError::InvalidQueueSize(3))
    ));
    let mem = memory(0x10_0000);
    let act = |queues| Activation {
        memory: mem.clone(),
        interrupt: VirtioInterrupt::new(Arc::new(CountingLine::default())),
        queues,
        acked_features: features::COMMON,
    };
    assert!(matches!(
        net.activate(act(vec![])),
        Err(ActivateError::QueueCount { expected: 2, .. })
    ));
    net.activate(act(vec![Queue::new(16).unwrap(), Queue::new(16).unwrap()]))
        .unwrap();
    assert!(net.is_activated());
    assert!(matches!(
        net.process_queue(2),
        Err(QueueError::NoSuchQueue { index: 2 })
    ));
    net.reset();
    assert!(!net.is_activated());
    assert!(net.queues().is_empty());
}

#[test]
fn offloads_follow_the_driver() {
    assert_eq!(tap_offloads(0), 0);
    assert_eq!(tap_offloads(net::GUEST_TSO4), 0, "TSO needs the checksum");
    assert_eq!(
        tap_offloads(net::GUEST_CSUM | net::GUEST_TSO4 | net::GUEST_TSO6 | net::GUEST_UFO),
        offload::CSUM | offload::TSO4 | offload::TSO6 | offload::UFO
    );
}

/// A frame the device held when it was saved (read from the TAP, the
/// driver out of buffers) is in its state and is the first frame the
/// restored device delivers; a damaged held frame is refused.
#[test]
fn a_held_frame_survives_save_and_restore() {
    use crate::net::{HeldFrame, NetRestoreArgs};
    use kindling_memory::Persist;

    let mem = memory(0x100_0000);
    let acked = features::COMMON | net::MRG_RXBUF;
    let mut f = activated(&mem, "kdlt9", acked, NetConfig::new("kdlt9"));
    f.sock.send(VnetHeader::default(), &test_frame(100, 0));
    f.sock.send(VnetHeader::default(), &test_frame(1500, 1));
    f.sock.send(VnetHeader::default(), &test_frame(100, 2));
    std::thread::sleep(Duration::from_millis(20));
    // Two 1 KiB buffers: frame 0 takes one, frame 1 needs two and is
    // held.
    f.rxq
        .add_desc_chains(&[raw(0x30000, 1024, W, 0), raw(0x31000, 1024, W, 0)], 0)
        .unwrap();
    f.net.process_queue(RX_QUEUE).unwrap();
    assert_eq!(f.net.counters().rx_frames, 1);
    let state = f.net.save().unwrap();
    let state: crate::net::NetState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let held = state.held_frame.clone().expect("a held frame in the state");
    assert_eq!(&held.bytes[VNET_HDR_LEN..], &test_frame(1500, 1)[..]);
    assert!(held.charged, "no limiter: nothing left to charge");

    let dup = f._tap.fd.as_ref().unwrap().try_clone().unwrap();
    let mut restored = Net::restore(
        NetRestoreArgs::Tap(Tap::from_fd(dup, "kdlt9").unwrap()),
        &state,
    )
    .unwrap();
    assert_eq!(restored.save().unwrap(), state);
    drop(std::mem::replace(&mut f.net, {
        // The fixture's device goes; the restored one takes fresh queues.
        let rxq = MockSplitQueue::create(&mem, GuestAddress(0x40000), 16);
        let txq = MockSplitQueue::create(&mem, GuestAddress(0x48000), 16);
        rxq.add_desc_chains(&[raw(0x50000, 2048, W, 0), raw(0x51000, 2048, W, 0)], 0)
            .unwrap();
        restored
            .activate(Activation {
                memory: mem.clone(),
                interrupt: VirtioInterrupt::new(f.line.clone()),
                queues: vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
                acked_features: acked,
            })
            .unwrap();
        restored.process_queue(RX_QUEUE).unwrap();
        assert_eq!(rxq.used().idx().load(), 2);
        restored
    }));
    // The held frame first, then the one still in the TAP: none lost.
    for (at, len, seed) in [(0x50000u64, 1500, 1u8), (0x51000, 100, 2)] {
        let mut body = vec![0u8; len];
        mem.read_slice(&mut body, GuestAddress(at + 12)).unwrap();
        assert_eq!(body, test_frame(len, seed), "frame {seed}");
    }
    assert_eq!(f.net.counters().rx_dropped, 0);

    for len in [0usize, 11, VNET_HDR_LEN + MAX_FRAME_LEN + 1] {
        let mut bad = state.clone();
        bad.held_frame = Some(HeldFrame {
            bytes: vec![0; len],
            charged: false,
        });
        let e = Net::restore(NetRestoreArgs::SameTap, &bad).unwrap_err();
        assert!(
            e.to_string().contains(&format!("holds a {len}-byte frame")),
            "{e}"
        );
    }
}
