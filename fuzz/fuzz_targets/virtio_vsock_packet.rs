//! The vsock parsers: the host's `CONNECT <port>\n` line, the packet
//! header codec and its checks, and the device's TX and RX paths over
//! arbitrary guest memory (queues laid out where the input says, packets
//! from a guest whose CID, ports and lengths are the input's).

#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use kindling_fuzz::{memory_from, Input, NoInterrupt};
use kindling_virtio::features::COMMON;
use kindling_virtio::vsock::connect::{parse_connect_line, ConnectLine, MAX_CONNECT_LINE};
use kindling_virtio::vsock::packet::{classify, Header, Op, HEADER_SIZE};
use kindling_virtio::vsock::{Vsock, VsockConfig, MAX_PACKET_DATA, RX_QUEUE, TX_QUEUE};
use kindling_virtio::{Activation, QueueConfig, VirtioDevice, VirtioInterrupt};
use libfuzzer_sys::fuzz_target;

/// A directory for the device sockets of this process.
fn socket_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kindling-fuzz-vsock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn check_connect_line(bytes: &[u8]) {
    match parse_connect_line(bytes) {
        Ok(ConnectLine::Connect { port, consumed }) => {
            assert!(consumed <= MAX_CONNECT_LINE && consumed <= bytes.len());
            assert_eq!(bytes[consumed - 1], b'\n');
            let line = std::str::from_utf8(&bytes[..consumed]).unwrap();
            let digits = line
                .trim_end_matches('\n')
                .trim_end_matches('\r')
                .strip_prefix("CONNECT ")
                .unwrap();
            assert_eq!(digits.parse::<u32>().unwrap(), port);
        }
        Ok(ConnectLine::Incomplete) => {
            assert!(bytes.len() < MAX_CONNECT_LINE && !bytes.contains(&b'\n'));
        }
        Err(_) => {}
    }
}

fn check_header(bytes: &[u8], cid: u64) {
    let Ok(h) = Header::decode(bytes) else {
        assert!(bytes.len() < HEADER_SIZE);
        return;
    };
    assert_eq!(&h.encode()[..], &bytes[..HEADER_SIZE]);
    if let Ok(p) = classify(&h, cid, MAX_PACKET_DATA) {
        assert_eq!(Op::from_value(h.op), Some(p.op));
        assert!(h.len <= MAX_PACKET_DATA);
        assert!(p.op == Op::Rw || h.len == 0);
        assert_eq!((h.src_cid, h.dst_cid), (cid, 2));
    }
}

fn queue_config(input: &mut Input<'_>) -> QueueConfig {
    QueueConfig {
        max_size: 256,
        size: 1u16 << (input.u8() % 9),
        ready: true,
        desc_table: u64::from(input.u16()) & !15,
        avail_ring: u64::from(input.u16()) & !1,
        used_ring: u64::from(input.u16()) & !3,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let line_len = usize::from(input.u8() % 48);
    check_connect_line(input.bytes(line_len));
    let cid = 3 + u64::from(input.u8() % 4);
    check_header(input.0, cid);

    // The device's queue paths: RX, TX and event queues where the input
    // says, over memory the rest of the input fills.
    let configs = [
        queue_config(&mut input),
        queue_config(&mut input),
        queue_config(&mut input),
    ];
    let mem = memory_from(input.0);
    let mut queues = Vec::new();
    for c in &configs {
        let Ok(q) = c.to_queue(&mem, false) else {
            return;
        };
        queues.push(q);
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let path = socket_dir().join(format!("v{}.sock", N.fetch_add(1, Ordering::Relaxed)));
    let mut vsock = Vsock::new(&VsockConfig {
        guest_cid: cid,
        uds_path: path,
    })
    .unwrap();
    vsock
        .activate(Activation {
            memory: mem.clone(),
            interrupt: VirtioInterrupt::new(Arc::new(NoInterrupt)),
            queues,
            acked_features: COMMON,
        })
        .unwrap();
    let _ = vsock.process_queue(TX_QUEUE);
    let _ = vsock.process_queue(RX_QUEUE);
    let _ = vsock.process_queue(TX_QUEUE);
    // No host listens: nothing is connected or buffered.
    assert_eq!(vsock.connection_count(), 0);
    assert_eq!(vsock.buffered_bytes(), 0);
});
