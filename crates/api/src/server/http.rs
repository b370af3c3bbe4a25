//! HTTP/1.1 on one connection: requests parsed with `httparse`, bodies
//! by `Content-Length` (no chunked bodies, as in Firecracker), keep-alive,
//! `Expect: 100-continue`, pipelining, and time limits so a slow or
//! silent client only ever holds its own connection.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::request::MAX_BODY_BYTES;

/// The largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The most headers in a request.
pub const MAX_HEADERS: usize = 32;

/// Time limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a connection may wait for its next request.
    pub idle: Duration,
    /// How long a request may take to arrive, from its first byte.
    pub request: Duration,
    /// How long writing a response may take.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            request: Duration::from_secs(10),
            write: Duration::from_secs(10),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, as sent.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// A JSON body (none for 204).
    pub body: Option<String>,
}

impl HttpResponse {
    /// A 400 (or other) with `{"fault_message": message}`.
    pub fn fault(status: u16, message: &str) -> Self {
        Self {
            status,
            body: Some(serde_json::json!({ "fault_message": message }).to_string()),
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            100 => "Continue",
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            408 => "Request Timeout",
            413 => "Payload Too Large",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        }
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        // Every response names the API's one media type, a 204 too (the
        // OpenAPI document declares `produces: application/json`).
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: Kindling\r\nContent-Type: application/json\r\n",
            self.status,
            self.reason()
        );
        if let Some(body) = &self.body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(body) = &self.body {
            bytes.extend_from_slice(body.as_bytes());
        }
        bytes
    }
}

/// What reading the next request gave.
#[derive(Debug)]
enum Next {
    /// A whole request; `close` when the connection ends after it.
    Request(HttpRequest, bool),
    /// The client closed or went quiet between requests.
    Done,
    /// A request that cannot be answered normally: answer this and close.
    Refuse(HttpResponse),
}

/// The head of a request, owned.
struct Head {
    len: usize,
    method: String,
    path: String,
    content_length: usize,
    expect_continue: bool,
    close: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HttpResponse::fault(
                431,
                &format!("the request head is over {MAX_HEAD_BYTES} bytes"),
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpResponse::fault(
                431,
                &format!("the request has more than {MAX_HEADERS} headers"),
            ))
        }
        Err(e) => {
            return Err(HttpResponse::fault(
                400,
                &format!("malformed HTTP request: {e}"),
            ))
        }
    };
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| {
                HttpResponse::fault(400, &format!("invalid Content-Length {value:?}"))
            })?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HttpResponse::fault(
                    400,
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpResponse::fault(
                400,
                "Transfer-Encoding is not supported: send the body with a Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case("100-continue") {
                expect_continue = true;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    Ok(Some(Head {
        len,
        method,
        path,
        content_length: content_length.unwrap_or(0),
        expect_continue,
        close,
    }))
}

/// One connection's reader.
struct Connection<'a> {
    stream: &'a mut UnixStream,
    buf: Vec<u8>,
    timeouts: Timeouts,
}

impl Connection<'_> {
    /// Reads more bytes; `Ok(false)` at end of stream.
    fn fill(&mut self, deadline: Option<Instant>) -> std::io::Result<bool> {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.timeouts.idle,
        };
        if wait.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(wait))?;
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(ErrorKind::TimedOut.into())
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn next(&mut self) -> Next {
        let mut deadline = (!self.buf.is_empty()).then(|| Instant::now() + self.timeouts.request);
        let head = loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(refusal) => return Next::Refuse(refusal),
                }
            }
            match self.fill(deadline) {
                Ok(true) => {
                    deadline.get_or_insert_with(|| Instant::now() + self.timeouts.request);
                }
                Ok(false) => return Next::Done,
                Err(e) if e.kind() == ErrorKind::TimedOut && deadline.is_some() => {
                    return Next::Refuse(HttpResponse::fault(
                        408,
                        "the request did not arrive in time",
                    ))
                }
                Err(_) => return Next::Done,
            }
        };
        if head.content_length > MAX_BODY_BYTES {
            return Next::Refuse(HttpResponse::fault(
                400,
                &format!(
                    "the request body is {} bytes, more than the {MAX_BODY_BYTES} allowed",
                    head.content_length
                ),
            ));
        }
        let end = head.len + head.content_length;
        if head.expect_continue && self.buf.len() < end {
            let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.timeouts.request);
        while self.buf.len() < end {
            match self.fill(Some(deadline)) {
                Ok(true) => {}
                Ok(false) => return Next::Done,
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Next::Refuse(HttpResponse::fault(
                        408,
                        "the request body did not arrive in time",
                    ))
                }
                Err(_) => return Next::Done,
            }
        }
        let body = self.buf[head.len..end].to_vec();
        self.buf.drain(..end);
        Next::Request(
            HttpRequest {
                method: head.method,
                path: head.path,
                body,
            },
            head.close,
        )
    }
}

/// Serves requests on `stream` until the client closes it, goes quiet,
/// breaks the protocol or asks to close; `handle` answers each request.
pub fn serve_connection(
    mut stream: UnixStream,
    timeouts: Timeouts,
    mut handle: impl FnMut(&HttpRequest) -> HttpResponse,
) {
    // A client that does not read its responses cannot hold the thread.
    if stream.set_write_timeout(Some(timeouts.write)).is_err() {
        return;
    }
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut conn = Connection {
        stream: &mut stream,
        buf: Vec::new(),
        timeouts,
    };
    loop {
        match conn.next() {
            Next::Request(request, close) => {
                let response = handle(&request);
                if writer.write_all(&response.to_bytes(close)).is_err() || close {
                    return;
                }
            }
            Next::Refuse(response) => {
                let _ = writer.write_all(&response.to_bytes(true));
                return;
            }
            Next::Done => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(req: &HttpRequest) -> HttpResponse {
        HttpResponse {
            status: 200,
            body: Some(
                serde_json::json!({"m": req.method, "p": req.path, "b": String::from_utf8_lossy(&req.body)})
                    .to_string(),
            ),
        }
    }

    fn quick() -> Timeouts {
        Timeouts {
            idle: Duration::from_millis(500),
            request: Duration::from_millis(300),
            write: Duration::from_millis(300),
        }
    }

    /// Sends `input` (in `chunks`, with a pause between) and returns all
    /// the server wrote before closing.
    fn exchange(chunks: &[&[u8]], pause: Duration) -> String {
        let (client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_connection(server, quick(), echo));
        let mut client = client;
        for c in chunks {
            client.write_all(c).unwrap();
            std::thread::sleep(pause);
        }
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        t.join().unwrap();
        out
    }

    #[test]
    fn keep_alive_pipelining_and_bodies() {
        let out = exchange(
            &[b"GET /a?x=1 HTTP/1.1\r\nHost: x\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"],
            Duration::ZERO,
        );
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert!(out.contains(r#""p":"/a""#), "{out}");
        assert!(out.contains(r#""b":"{}""#), "{out}");
        assert!(!out.contains("Connection: close"), "{out}");
    }

    #[test]
    fn byte_by_byte() {
        let req = b"PUT /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let chunks: Vec<&[u8]> = req.chunks(1).collect();
        let out = exchange(&chunks, Duration::from_millis(1));
        assert!(out.contains(r#""b":"abc""#), "{out}");
    }

    #[test]
    fn refusals_close_the_connection() {
        let out = exchange(&[b"GARBAGE\r\n\r\n"], Duration::ZERO);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("malformed HTTP request"), "{out}");
        assert!(out.contains("Connection: close"), "{out}");
        let out = exchange(
            &[b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
            Duration::ZERO,
        );
        assert!(out.contains("Transfer-Encoding is not supported"), "{out}");
        let out = exchange(
            &[b"PUT / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"],
            Duration::ZERO,
        );
        assert!(out.contains("more than the 51200 allowed"), "{out}");
        let out = exchange(
            &[b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"],
            Duration::ZERO,
        );
        assert!(out.contains("invalid Content-Length"), "{out}");
        let out = exchange(
            &[b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
            Duration::ZERO,
        );
        assert!(out.contains("conflicting Content-Length"), "{out}");
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "y".repeat(MAX_HEAD_BYTES));
        let out = exchange(&[big.as_bytes()], Duration::ZERO);
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        let many: String = (0..40).map(|i| format!("X{i}: 1\r\n")).collect();
        let out = exchange(
            &[format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()],
            Duration::ZERO,
        );
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    }

    #[test]
    fn connection_close_http_1_0_and_expect_continue() {
        let out = exchange(
            &[b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"],
            Duration::ZERO,
        );
        assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
        assert!(out.contains("Connection: close"));
        let out = exchange(&[b"GET / HTTP/1.0\r\n\r\n"], Duration::ZERO);
        assert!(out.contains("Connection: close"), "{out}");
        // The client waits for the 100 before it sends the body.
        let (mut client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_connection(server, quick(), echo));
        client
            .write_all(b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .unwrap();
        let mut interim = [0u8; 25];
        client.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"{}").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        t.join().unwrap();
    }

    #[test]
    fn slow_and_silent_clients_time_out() {
        // Half a request, then silence: 408 after the request timeout.
        let (mut client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_connection(server, quick(), echo));
        client
            .write_all(b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
            .unwrap();
        let start = Instant::now();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        // An idle connection is closed without a word.
        let (mut client, server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve_connection(server, quick(), echo));
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert_eq!(out, "");
        t.join().unwrap();
        // A client that disconnects mid-request: nothing to answer.
        let out = exchange(&[b"PUT /x HTTP/1.1\r\nContent-Len"], Duration::ZERO);
        assert_eq!(out, "");
    }

    #[test]
    fn responses() {
        let r = HttpResponse {
            status: 204,
            body: None,
        };
        assert_eq!(
            String::from_utf8(r.to_bytes(false)).unwrap(),
            "HTTP/1.1 204 No Content\r\nServer: Kindling\r\nContent-Type: application/json\r\n\r\n"
        );
        let f = HttpResponse::fault(400, "bad \"x\"");
        let text = String::from_utf8(f.to_bytes(true)).unwrap();
        assert!(text.ends_with(r#"{"fault_message":"bad \"x\""}"#), "{text}");
        assert!(text.contains("Content-Length: 29\r\n"), "{text}");
        assert_eq!(
            HttpResponse::fault(999, "").reason(),
            "Internal Server Error"
        );
    }
}
