//! virtio-net driven by the test guest's driver on /dev/kvm, on a TAP
//! device in a network namespace of the test's own thread: the host side
//! of the TAP is an `AF_PACKET` socket that reads the guest's frames and
//! writes frames for the guest. Only frames on that TAP; no addresses, no
//! routes, nothing on the host's network.

mod common;
#[path = "common/tap.rs"]
mod tap;

use std::time::{Duration, Instant};

use common::{kvm_available, Capture};
use kindling::vmm::{
    ExitReason, KernelSource, NetConfig, RateLimiterConfig, SeccompPolicy, SerialConfig,
    TokenBucketConfig, VmConfig, Vmm,
};
use tap::{create_tap, host_frame, tap_available, tcp_frame, PacketSocket, Vnet, TSO_VNET};

const MAC: &str = "06:00:ac:10:00:02";

fn available(test: &str) -> bool {
    kvm_available(test) && tap_available(test)
}

fn config(cmdline: &str, serial: &Capture, net: Vec<NetConfig>) -> VmConfig {
    VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: cmdline.to_string(),
        memory_mib: 64,
        net,
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        debug_exit: true,
        // With the filters `microvm` uses (the event loop on a thread of
        // its own: this one goes on talking to the TAP or the sockets).
        seccomp: SeccompPolicy::Builtin,
        ..VmConfig::default()
    }
}

fn interface(tap: &str) -> NetConfig {
    NetConfig {
        guest_mac: Some(MAC.parse().unwrap()),
        ..NetConfig::new("eth0", tap)
    }
}

/// The frame `net-send` sends as number `i` of `len` bytes.
fn sent_frame(i: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[6, 0, 0xac, 0x10, 0, 2, 0x88, 0xb5]);
    f.extend_from_slice(&i.to_le_bytes());
    f.extend((18..len).map(|k| (i as usize + k) as u8));
    f
}

fn line(serial: &str, prefix: &str) -> String {
    serial
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{serial}"))
        .to_string()
}

#[test]
fn guest_frames_reach_the_tap() {
    if !available("guest_frames_reach_the_tap") {
        return;
    }
    let ifindex = create_tap("kdl0").unwrap();
    let sock = PacketSocket::new(ifindex, 500).unwrap();
    let serial = Capture::default();
    let vmm = Vmm::build(config(
        "kindling.test=virtio,net-info,net-send:50:600,net-send:3:1514,net-send:1:60",
        &serial,
        vec![interface("kdl0")],
    ))
    .unwrap();
    let net = vmm.devices().net[0].1.clone();
    assert_eq!(vmm.devices().net[0].0, "eth0");
    let reason = vmm.start().unwrap().wait().unwrap();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    assert_eq!(
        line(&serial, "net0: "),
        "net0: mac=06:00:ac:10:00:02 mac-feature=1 mrg-rxbuf=1 csum=1 guest-csum=1 event-idx=1 rxq=256 txq=256"
    );
    assert!(serial.contains("virtio0: base="), "{serial}");
    assert!(serial.contains(" type=net status=ok"), "{serial}");
    let expected: Vec<Vec<u8>> = (0..50)
        .map(|i| sent_frame(i, 600))
        .chain((0..3).map(|i| sent_frame(i, 1514)))
        .chain([sent_frame(0, 60)])
        .collect();
    for (i, want) in expected.iter().enumerate() {
        let (h, got) = sock.recv().unwrap_or_else(|| panic!("frame {i} missing"));
        assert_eq!(h, Vnet::default());
        assert_eq!(&got, want, "frame {i}");
    }
    assert!(sock.recv().is_none(), "no other frame");
    let c = net.lock().unwrap().counters();
    assert_eq!((c.tx_frames, c.tx_bytes), (54, 50 * 600 + 3 * 1514 + 60));
    assert_eq!(c.tx_malformed + c.tx_errors, 0);
}

#[test]
fn the_guest_echoes_frames_written_to_the_tap() {
    if !available("the_guest_echoes_frames_written_to_the_tap") {
        return;
    }
    let ifindex = create_tap("kdl1").unwrap();
    let sock = PacketSocket::new(ifindex, 2000).unwrap();
    let serial = Capture::default();
    let sizes: Vec<usize> = (0..40).map(|i| 60 + (i * 97) % 1455).collect();
    let vmm = Vmm::build(config(
        "kindling.test=virtio,net-echo:40",
        &serial,
        vec![interface("kdl1")],
    ))
    .unwrap();
    let net = vmm.devices().net[0].1.clone();
    // Frames written now wait in the TAP until the guest posts buffers.
    for (i, &len) in sizes.iter().enumerate() {
        sock.send(Vnet::default(), &host_frame(i as u32, len))
            .unwrap();
    }
    let reason = vmm.start().unwrap().wait().unwrap();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    let total: usize = sizes.iter().sum();
    assert_eq!(
        line(&serial, "net-echo: done"),
        format!("net-echo: done frames=40 bytes={total} csum=0 dropped=0")
    );
    for (i, &len) in sizes.iter().enumerate() {
        let (_, got) = sock.recv().unwrap_or_else(|| panic!("echo {i} missing"));
        assert_eq!(got, host_frame(i as u32, len), "echo {i}");
    }
    let c = net.lock().unwrap().counters();
    assert_eq!((c.rx_frames, c.rx_bytes), (40, total as u64));
    assert_eq!(c.rx_dropped, 0);
}

#[test]
fn the_guest_receives_what_the_tap_is_given() {
    if !available("the_guest_receives_what_the_tap_is_given") {
        return;
    }
    let ifindex = create_tap("kdl5").unwrap();
    let sock = PacketSocket::new(ifindex, 500).unwrap();
    let serial = Capture::default();
    let vmm = Vmm::build(config(
        "kindling.test=virtio,net-recv:300,net-recv:20:0",
        &serial,
        vec![interface("kdl5")],
    ))
    .unwrap();
    // More than the guest's 256 buffers: it posts them again as it goes.
    let frames: Vec<Vec<u8>> = (0..320)
        .map(|i| host_frame(i, 60 + (i as usize * 13) % 1400))
        .collect();
    for f in &frames {
        sock.send(Vnet::default(), f).unwrap();
    }
    let reason = vmm.start().unwrap().wait().unwrap();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    let first: Vec<u8> = frames[..300].concat();
    assert_eq!(
        line(&serial, "net-recv: done frames=300"),
        format!(
            "net-recv: done frames=300 bytes={} crc32={:#010x}",
            first.len(),
            common::crc32(&first)
        )
    );
    let rest: usize = frames[300..].iter().map(Vec::len).sum();
    assert_eq!(
        line(&serial, "net-recv: done frames=20"),
        format!("net-recv: done frames=20 bytes={rest}")
    );
}

#[test]
fn partial_checksums_cross_the_tap_both_ways() {
    if !available("partial_checksums_cross_the_tap_both_ways") {
        return;
    }
    let ifindex = create_tap("kdl2").unwrap();
    let sock = PacketSocket::new(ifindex, 2000).unwrap();
    let serial = Capture::default();
    let vmm = Vmm::build(config(
        "kindling.test=virtio,net-csum,net-echo:1",
        &serial,
        vec![interface("kdl2")],
    ))
    .unwrap();
    // A UDP frame whose checksum the receiver is to complete: the TAP
    // hands it over as is because the guest accepted GUEST_CSUM
    // (TUNSETOFFLOAD with TUN_F_CSUM).
    let mut udp = vec![6, 0, 0xac, 0x10, 0, 2, 2, 0, 0, 0, 0, 9, 8, 0];
    udp.extend_from_slice(&[0x45, 0, 0, 48, 0, 0, 0, 0, 64, 17, 0, 0]);
    udp.extend_from_slice(&[169, 254, 1, 1, 169, 254, 1, 2]);
    udp.extend_from_slice(&[0x16, 0x2e, 0x04, 0xd2, 0, 28, 0, 0]);
    udp.extend(0..20u8);
    let partial = Vnet {
        flags: 1,
        csum_start: 34,
        csum_offset: 6,
        ..Vnet::default()
    };
    let sender = sock.try_clone().unwrap();
    let delayed = std::thread::spawn(move || {
        // After the guest's own frame, so the order on the TAP is known.
        std::thread::sleep(Duration::from_millis(300));
        sender.send(partial, &udp).unwrap();
        udp
    });
    let reason = vmm.start().unwrap().wait().unwrap();
    let udp = delayed.join().unwrap();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    assert_eq!(line(&serial, "net-csum"), "net-csum: sent");
    assert!(
        line(&serial, "net-echo: done").ends_with(" csum=1 dropped=0"),
        "{serial}"
    );
    // The guest's frame: its checksum request reached the TAP.
    let (h, frame) = sock.recv().expect("the guest's frame");
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (1, 34, 6));
    assert_eq!(frame.len(), 74);
    assert_eq!((&frame[12..14], frame[23]), (&[8u8, 0][..], 17));
    // The echo keeps the request too.
    let (h, frame) = sock.recv().expect("the echo");
    assert_eq!((h.flags, h.csum_start, h.csum_offset), (1, 34, 6));
    assert_eq!(frame, udp);
}

#[test]
fn tso_frames_cross_the_tap_whole_both_ways() {
    if !available("tso_frames_cross_the_tap_whole_both_ways") {
        return;
    }
    let ifindex = create_tap("kdl7").unwrap();
    let sock = PacketSocket::new(ifindex, 2000).unwrap();
    let serial = Capture::default();
    // 45 segments' worth, then one frame small enough not to need GSO.
    let (big, small) = (65214usize, 600usize);
    let vmm = Vmm::build(config(
        &format!("kindling.test=virtio,net-tso:3:{big},net-tso:1:{small},net-recv:2"),
        &serial,
        vec![interface("kdl7")],
    ))
    .unwrap();
    let net = vmm.devices().net[0].1.clone();
    let running = vmm.start().unwrap();
    // The guest's frames reach the host whole, with their GSO request:
    // the VMM wrote each into the TAP in one piece (the kernel would
    // segment them on their way out of this host, were they routed).
    let guest_mac = [6, 0, 0xac, 0x10, 0, 2];
    let out_ips = [169, 254, 1, 2, 169, 254, 1, 1];
    let payload = big - 54;
    for i in 0..3u16 {
        let (h, frame) = sock
            .recv()
            .unwrap_or_else(|| panic!("TSO frame {i} missing"));
        assert_eq!(
            (h.flags, h.gso_type, h.gso_size, h.csum_start, h.csum_offset),
            (1, 1, 1448, 34, 16),
            "frame {i}"
        );
        let want = tcp_frame(
            [0xff; 6],
            guest_mac,
            out_ips,
            i,
            u32::from(i) * payload as u32,
            payload,
        );
        assert!(
            frame == want,
            "TSO frame {i}: {} bytes, not the {} expected or different",
            frame.len(),
            want.len()
        );
    }
    let (h, frame) = sock.recv().expect("the small frame");
    assert_eq!(
        (h.flags, h.gso_type, h.csum_start, h.csum_offset),
        (1, 0, 34, 16)
    );
    assert_eq!(
        frame,
        tcp_frame([0xff; 6], guest_mac, out_ips, 0, 0, small - 54)
    );
    // The other way: the guest accepted GUEST_TSO4, so the TAP hands
    // over 64 KiB frames unsegmented, into mergeable buffers.
    let in_ips = [169, 254, 1, 1, 169, 254, 1, 2];
    let host_frames: Vec<Vec<u8>> = (0..2u16)
        .map(|i| {
            tcp_frame(
                guest_mac,
                [2, 0, 0, 0, 0, 9],
                in_ips,
                i,
                u32::from(i) * payload as u32,
                payload,
            )
        })
        .collect();
    for f in &host_frames {
        sock.send(TSO_VNET, f).unwrap();
    }
    let reason = running.wait().unwrap();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    assert_eq!(
        line(&serial, "net-tso: done frames=3"),
        format!("net-tso: done frames=3 bytes={}", 3 * payload)
    );
    assert_eq!(
        line(&serial, "net-tso: done frames=1"),
        format!("net-tso: done frames=1 bytes={}", small - 54)
    );
    let all = host_frames.concat();
    assert_eq!(
        line(&serial, "net-recv: done"),
        format!(
            "net-recv: done frames=2 bytes={} crc32={:#010x}",
            all.len(),
            common::crc32(&all)
        )
    );
    let c = net.lock().unwrap().counters();
    assert_eq!((c.tx_frames, c.tx_bytes), (4, (3 * big + small) as u64));
    assert_eq!(
        (c.rx_frames, c.rx_bytes, c.rx_dropped),
        (2, all.len() as u64, 0)
    );
    assert_eq!(c.tx_malformed + c.tx_errors, 0);
}

#[test]
fn a_guest_that_stops_receiving_does_not_hang_the_loop_or_lose_frames() {
    if !available("a_guest_that_stops_receiving_does_not_hang_the_loop_or_lose_frames") {
        return;
    }
    let ifindex = create_tap("kdl3").unwrap();
    let sock = PacketSocket::new(ifindex, 500).unwrap();
    let serial = Capture::default();
    // The guest posts its 256 receive buffers and never reposts them; it
    // only sends. The host writes 400 frames meanwhile.
    let vmm = Vmm::build(config(
        "kindling.test=virtio,net-send:1:60,net-send:200:1000",
        &serial,
        vec![interface("kdl3")],
    ))
    .unwrap();
    let net = vmm.devices().net[0].1.clone();
    for i in 0..400 {
        sock.send(Vnet::default(), &host_frame(i, 100)).unwrap();
    }
    let start = Instant::now();
    let reason = vmm.start().unwrap().wait().unwrap();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(
        line(&serial, "net-send: done frames=200"),
        "net-send: done frames=200 bytes=200000"
    );
    let c = net.lock().unwrap().counters();
    // Every buffer filled, nothing dropped: the rest waits in the TAP.
    assert_eq!((c.rx_frames, c.rx_dropped), (256, 0));
    assert_eq!(c.tx_frames, 201);
}

#[test]
fn a_transmit_rate_limit_paces_the_guest() {
    if !available("a_transmit_rate_limit_paces_the_guest") {
        return;
    }
    let ifindex = create_tap("kdl4").unwrap();
    let sock = PacketSocket::new(ifindex, 500).unwrap();
    let serial = Capture::default();
    let mut iface = interface("kdl4");
    // 10 frames per 100 ms: 40 frames take at least 300 ms after the
    // first 10.
    iface.tx_rate_limiter = Some(RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 10,
            one_time_burst: 0,
            refill_time: 100,
        }),
    });
    let vmm = Vmm::build(config(
        "kindling.test=virtio,net-send:40:100",
        &serial,
        vec![iface],
    ))
    .unwrap();
    let net = vmm.devices().net[0].1.clone();
    let start = Instant::now();
    let reason = vmm.start().unwrap().wait().unwrap();
    let elapsed = start.elapsed();
    let serial = serial.text();
    assert_eq!(reason, ExitReason::Status(0), "{serial}");
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    for i in 0..40 {
        let (_, f) = sock.recv().unwrap_or_else(|| panic!("frame {i}"));
        assert_eq!(f, sent_frame(i, 100));
    }
    let c = net.lock().unwrap().counters();
    assert_eq!(c.tx_frames, 40);
    assert!(c.tx_throttled >= 3, "{c:?}");
}

#[test]
fn bad_tap_names_are_clear_errors() {
    for (name, want) in [
        (
            "kdl-this-is-too-long",
            "TAP interface name \"kdl-this-is-too-long\" is 20 bytes, longer than the 15 Linux allows",
        ),
        ("kdl-missing9", "there is no network interface \"kdl-missing9\""),
    ] {
        let serial = Capture::default();
        let err = Vmm::build(config("kindling.test=hello", &serial, vec![interface(name)]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("network interface 0 (eth0): "), "{err}");
        assert!(err.contains(want), "{err}");
    }
    let serial = Capture::default();
    let err = Vmm::build(config(
        "kindling.test=hello",
        &serial,
        vec![interface("a"), interface("b")],
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(err, "network interfaces 0 and 1 both use iface_id \"eth0\"");
}
