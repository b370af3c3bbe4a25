//! Firecracker's host-side handshake: a host process connects to the
//! device's Unix socket and writes `CONNECT <port>\n` to reach the guest
//! listener on `<port>`; the device answers `OK <host_port>\n` once the
//! guest accepted. This module parses the line (a pure function, for
//! fuzzing) and formats the answer.

/// The longest `CONNECT` line accepted, newline included
/// (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_CONNECT_LINE: usize = 32;

/// Why a `CONNECT` line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectLineError {
    /// No newline within [`MAX_CONNECT_LINE`] bytes.
    #[error("CONNECT line longer than {MAX_CONNECT_LINE} bytes")]
    TooLong,
    /// The line does not start with `CONNECT `.
    #[error("the line does not start with \"CONNECT \"")]
    NotConnect,
    /// The port is not a decimal number below 2^32.
    #[error("the CONNECT port is not a decimal number below 2^32")]
    BadPort,
}

/// What [`parse_connect_line`] found in the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectLine {
    /// No newline yet: read more.
    Incomplete,
    /// A complete line asking for guest port `port`; it took `consumed`
    /// bytes (newline included). Bytes after it are stream data.
    Connect {
        /// The guest port.
        port: u32,
        /// Length of the line with its newline.
        consumed: usize,
    },
}

/// Parses the start of what a host process wrote: `CONNECT <port>\n`
/// (a `\r` before the newline is tolerated; the port is 1 to 10 decimal
/// digits).
///
/// ```
/// use kindling_virtio::vsock::connect::{parse_connect_line, ConnectLine, ConnectLineError};
///
/// assert_eq!(parse_connect_line(b"CONNECT 52\nhi"), Ok(ConnectLine::Connect { port: 52, consumed: 11 }));
/// assert_eq!(parse_connect_line(b"CONN"), Ok(ConnectLine::Incomplete));
/// assert_eq!(parse_connect_line(b"HELLO\n"), Err(ConnectLineError::NotConnect));
/// ```
pub fn parse_connect_line(bytes: &[u8]) -> Result<ConnectLine, ConnectLineError> {
    const PREFIX: &[u8] = b"CONNECT ";
    let Some(end) = bytes
        .iter()
        .take(MAX_CONNECT_LINE)
        .position(|&b| b == b'\n')
    else {
        if bytes.len() >= MAX_CONNECT_LINE {
            return Err(ConnectLineError::TooLong);
        }
        // Refuse early what can never become a CONNECT line.
        let n = bytes.len().min(PREFIX.len());
        if bytes[..n] != PREFIX[..n] {
            return Err(ConnectLineError::NotConnect);
        }
        return Ok(ConnectLine::Incomplete);
    };
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .strip_prefix(PREFIX)
        .ok_or(ConnectLineError::NotConnect)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ConnectLineError::BadPort);
    }
    let port = digits
        .iter()
        .try_fold(0u32, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })
        .ok_or(ConnectLineError::BadPort)?;
    Ok(ConnectLine::Connect {
        port,
        consumed: end + 1,
    })
}

/// The answer to an accepted `CONNECT`: `OK <host_port>\n`.
pub fn ok_line(host_port: u32) -> Vec<u8> {
    format!("OK {host_port}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines() {
        assert_eq!(
            parse_connect_line(b"CONNECT 0\n"),
            Ok(ConnectLine::Connect {
                port: 0,
                consumed: 10
            })
        );
        assert_eq!(
            parse_connect_line(b"CONNECT 4294967295\r\n"),
            Ok(ConnectLine::Connect {
                port: u32::MAX,
                consumed: 20
            })
        );
        assert_eq!(parse_connect_line(b""), Ok(ConnectLine::Incomplete));
        assert_eq!(
            parse_connect_line(b"CONNECT 12"),
            Ok(ConnectLine::Incomplete)
        );
        assert_eq!(ok_line(1073741824), b"OK 1073741824\n");
    }

    #[test]
    fn bad_lines() {
        for (line, err) in [
            (&b"CONNECT 4294967296\n"[..], ConnectLineError::BadPort),
            (b"CONNECT \n", ConnectLineError::BadPort),
            (b"CONNECT -1\n", ConnectLineError::BadPort),
            (b"CONNECT 1 2\n", ConnectLineError::BadPort),
            (b"CONNECT 00000000001\n", ConnectLineError::BadPort),
            (b"connect 1\n", ConnectLineError::NotConnect),
            (b"\n", ConnectLineError::NotConnect),
            (b"GET / HTTP", ConnectLineError::NotConnect),
            (
                b"CONNECT 1111111111111111111111111",
                ConnectLineError::TooLong,
            ),
        ] {
            assert_eq!(parse_connect_line(line), Err(err), "{line:?}");
        }
        // A newline past the limit does not count.
        let mut long = b"CONNECT ".to_vec();
        long.extend([b'1'; 40]);
        long.push(b'\n');
        assert_eq!(parse_connect_line(&long), Err(ConnectLineError::TooLong));
    }
}
