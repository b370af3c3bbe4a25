//! The host side of virtio-vsock tests: Firecracker's `CONNECT <port>`
//! protocol on the device's Unix socket, and the test guest's byte
//! pattern. Shared by tests/virtio_vsock.rs and tests/snapshot_devices.rs
//! (`#[path]`).

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// The test guest's pattern (virtio_vsock.c).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) + (i >> 12)) as u8)
        .collect()
}

/// Connects to the device's socket and asks for guest `port`.
pub fn host_connect(uds: &Path, port: u32) -> (UnixStream, Option<u32>) {
    let mut stream = UnixStream::connect(uds).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).unwrap() == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    let line = String::from_utf8(line).unwrap();
    let port = line
        .strip_prefix("OK ")
        .and_then(|p| p.strip_suffix('\n'))
        .map(|p| p.parse().unwrap());
    (stream, port)
}

/// Whether the device closes `stream` (end of file) soon.
pub fn closed_by_the_device(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    // Closed with bytes of ours unread, a Unix socket reports a reset.
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// A host listener at `<uds>_<port>` that echoes one connection until
/// end of file.
pub fn echo_listener(uds: &Path, port: u32) -> thread::JoinHandle<usize> {
    let mut path = uds.as_os_str().to_owned();
    path.push(format!("_{port}"));
    let listener = UnixListener::bind(PathBuf::from(path)).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            stream.write_all(&buf[..n]).unwrap();
            total += n;
        }
    })
}
