//! A minimal HTTP/1.1 client for the configuration server: one GET per
//! connection, the response head parsed by httparse, bodies framed by
//! Content-Length, chunked encoding or the end of the connection, a few
//! redirects, timeouts, a deadline and a size limit. No TLS, no keep-alive.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config_source::url::HttpUrl;

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// A chunk-size line is a hex number plus optional extensions.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_REDIRECTS: usize = 5;
/// `100 Continue` and friends before the real answer; a server sending
/// them endlessly would otherwise never be done with its head.
const MAX_INTERIM: usize = 8;
const READ_BUFFER: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// For every read and write, not the whole transfer: a big kernel on
    /// a slow link takes as long as it takes while data keeps flowing.
    pub io: Duration,
    /// Each request (each redirect hop) may take `grace` plus the time its
    /// bytes so far take at `min_rate` bytes/s: a trickle of a byte every
    /// few seconds, which `io` never catches, fails within about `grace`.
    pub grace: Duration,
    pub min_rate: u64,
}

pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    io: Duration::from_secs(30),
    grace: Duration::from_secs(60),
    // 128 kbit/s: far below any link worth booting from, yet it still
    // bounds a 512 MiB initrd (9 h) where no rate would be endless.
    min_rate: 16 * 1024,
};

#[derive(Debug)]
pub enum Error {
    /// No connection, or it broke: the server may be down or restarting.
    Net(io::Error),
    /// Storing the body failed (the RAM copy is full, say).
    Sink(io::Error),
    Status {
        code: u16,
        reason: String,
    },
    TooLarge {
        limit: u64,
    },
    BadResponse(String),
}

impl Error {
    /// Worth retrying: the server may come (back) up or recover.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Net(_) => true,
            Error::Status { code, .. } => (500..=599).contains(code),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Status {
                code: 404 | 410,
                ..
            }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Net(e) => write!(f, "{e}"),
            Error::Sink(e) => write!(f, "storing the file: {e}"),
            Error::Status { code, reason } if reason.is_empty() => write!(f, "HTTP {code}"),
            Error::Status { code, reason } => write!(f, "HTTP {code} {reason}"),
            Error::TooLarge { limit } => write!(f, "larger than the limit of {limit} bytes"),
            Error::BadResponse(m) => write!(f, "bad response: {m}"),
        }
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadResponse(msg.into())
}

/// The connection, read against the request's deadline; timeouts come
/// out said plainly (the OS reports EAGAIN). Too slow is an `Error::Net`,
/// so retried: the server may be overloaded, not broken.
struct Paced {
    stream: TcpStream,
    t: Timeouts,
    start: Instant,
    got: u64,
}

impl Paced {
    fn allowed(&self) -> Duration {
        let earned = self.got.saturating_mul(1000) / self.t.min_rate.max(1);
        self.t.grace.saturating_add(Duration::from_millis(earned))
    }

    fn too_slow(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "server too slow: {} bytes in {} s",
                self.got,
                self.start.elapsed().as_secs()
            ),
        )
    }
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .allowed()
            .checked_sub(self.start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| self.too_slow())?;
        let deadline_first = left < self.t.io;
        self.stream.set_read_timeout(Some(left.min(self.t.io)))?;
        match self.stream.read(buf) {
            Ok(n) => {
                self.got += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(if deadline_first {
                    self.too_slow()
                } else {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data for {} s", self.t.io.as_secs()),
                    )
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// The parts of a response head that matter to a download.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    code: u16,
    reason: String,
    length: Option<u64>,
    chunked: bool,
    location: Option<String>,
}

/// GETs `url` into `sink`, following redirects; returns the body size.
/// On error `sink` may hold part of the body.
pub fn get(url: &HttpUrl, sink: &mut dyn Write, limit: u64, t: &Timeouts) -> Result<u64, Error> {
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let stream = connect(&url, t)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hv-init/{}\r\nAccept: */*\r\n\
             Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
            url.request_target(),
            url.authority(),
            env!("CARGO_PKG_VERSION")
        );
        (&stream)
            .write_all(request.as_bytes())
            .map_err(Error::Net)?;
        let paced = Paced {
            stream,
            t: *t,
            start: Instant::now(),
            got: 0,
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, paced);
        let head = read_head(&mut reader)?;
        match head.code {
            200 => return copy_body(&head, &mut reader, sink, limit),
            301 | 302 | 303 | 307 | 308 => {
                let location = head
                    .location
                    .ok_or_else(|| bad(format!("HTTP {} without a Location", head.code)))?;
                let next = url
                    .resolve(&location)
                    .map_err(|e| bad(format!("redirect to {e}")))?;
                // Whoever answers for one server must not be able to send
                // init to another.
                if !next.same_origin(&url) {
                    return Err(bad(format!(
                        "redirect to {next} refused: redirects must stay on {}",
                        url.authority()
                    )));
                }
                log::debug!("{url}: redirected to {next}");
                url = next;
            }
            code => {
                return Err(Error::Status {
                    code,
                    reason: head.reason,
                })
            }
        }
    }
    Err(bad(format!("more than {MAX_REDIRECTS} redirects")))
}

fn connect(url: &HttpUrl, t: &Timeouts) -> Result<TcpStream, Error> {
    let addrs = (url.host(), url.port())
        .to_socket_addrs()
        .map_err(|e| Error::Net(io::Error::new(e.kind(), format!("{}: {e}", url.host()))))?;
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no address", url.host()),
    );
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, t.connect) {
            Ok(stream) => {
                stream.set_write_timeout(Some(t.io)).map_err(Error::Net)?;
                return Ok(stream);
            }
            Err(e) => last = io::Error::new(e.kind(), format!("connect to {addr}: {e}")),
        }
    }
    Err(Error::Net(last))
}

/// Reads one line (up to and including `\n`) of at most `max` bytes.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> Result<(), Error> {
    let start = buf.len();
    let n = r
        .by_ref()
        .take(max as u64)
        .read_until(b'\n', buf)
        .map_err(Error::Net)?;
    if buf.get(start..).is_some_and(|l| l.ends_with(b"\n")) {
        return Ok(());
    }
    if n == max {
        return Err(bad(format!("line longer than {max} bytes")));
    }
    Err(Error::Net(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection early",
    )))
}

fn read_head<R: BufRead>(r: &mut R) -> Result<Head, Error> {
    for _ in 0..=MAX_INTERIM {
        let mut buf = Vec::new();
        loop {
            let start = buf.len();
            read_line(r, &mut buf, MAX_HEAD.saturating_sub(start)).map_err(|e| match e {
                Error::BadResponse(_) => bad("response head larger than 16 KiB"),
                e => e,
            })?;
            if matches!(buf.get(start..), Some(b"\r\n" | b"\n")) {
                break;
            }
        }
        let head = parse_head(&buf)?;
        // 1xx are interim answers; the real one follows.
        if !(100..200).contains(&head.code) {
            return Ok(head);
        }
    }
    Err(bad(format!(
        "more than {MAX_INTERIM} interim (1xx) responses"
    )))
}

fn parse_head(buf: &[u8]) -> Result<Head, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete response head")),
        Err(e) => return Err(bad(format!("response head: {e}"))),
    }
    let mut head = Head {
        code: resp.code.unwrap_or(0),
        reason: resp.reason.unwrap_or("").to_string(),
        length: None,
        chunked: false,
        location: None,
    };
    for h in resp.headers.iter() {
        // Optional whitespace is spaces and tabs (RFC 9110 section 5.6.3).
        let value = std::str::from_utf8(h.value)
            .unwrap_or("")
            .trim_matches([' ', '\t']);
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only: u64's parser would take "+5" too.
            let n = Some(value)
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad(format!("Content-Length {value:?}")))?;
            if head.length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length headers"));
            }
            head.length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || value.contains(',') {
                return Err(bad(format!("Transfer-Encoding {value} is not supported")));
            }
            head.chunked = true;
        } else if h.name.eq_ignore_ascii_case("content-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err(bad(format!(
                "Content-Encoding {value} is not supported (init asks for identity)"
            )));
        } else if h.name.eq_ignore_ascii_case("location") {
            head.location = Some(value.to_string());
        }
    }
    Ok(head)
}

fn copy_body<R: BufRead>(
    head: &Head,
    r: &mut R,
    sink: &mut dyn Write,
    limit: u64,
) -> Result<u64, Error> {
    if head.chunked {
        return copy_chunked(r, sink, limit);
    }
    match head.length {
        Some(n) if n > limit => Err(Error::TooLarge { limit }),
        Some(n) => copy_exact(r, sink, n).map(|()| n),
        None => copy_to_end(r, sink, limit),
    }
}

fn copy_exact<R: BufRead>(r: &mut R, sink: &mut dyn Write, len: u64) -> Result<(), Error> {
    let mut left = len;
    while left > 0 {
        let buf = r.fill_buf().map_err(Error::Net)?;
        if buf.is_empty() {
            return Err(Error::Net(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the server closed the connection after {} of {len} bytes",
                    len - left
                ),
            )));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink.write_all(buf.get(..n).unwrap_or_default())
            .map_err(Error::Sink)?;
        r.consume(n);
        left -= n as u64;
    }
    Ok(())
}

fn copy_to_end<R: BufRead>(r: &mut R, sink: &mut dyn Write, limit: u64) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        let buf = r.fill_buf().map_err(Error::Net)?;
        if buf.is_empty() {
            return Ok(total);
        }
        let n = buf.len();
        total += n as u64;
        if total > limit {
            return Err(Error::TooLarge { limit });
        }
        sink.write_all(buf).map_err(Error::Sink)?;
        r.consume(n);
    }
}

fn copy_chunked<R: BufRead>(r: &mut R, sink: &mut dyn Write, limit: u64) -> Result<u64, Error> {
    let mut total = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        read_line(r, &mut line, MAX_CHUNK_LINE)?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(bad("bad chunk size line")),
        };
        if size == 0 {
            break;
        }
        total = total.saturating_add(size);
        if total > limit {
            return Err(Error::TooLarge { limit });
        }
        copy_exact(r, sink, size)?;
        line.clear();
        match read_line(r, &mut line, 2) {
            Ok(()) if line == b"\r\n" || line == b"\n" => {}
            Err(Error::Net(e)) => return Err(Error::Net(e)),
            _ => return Err(bad("chunk not followed by CRLF")),
        }
    }
    // Trailer fields, up to the empty line.
    let mut trailers = 0;
    loop {
        line.clear();
        read_line(r, &mut line, MAX_HEAD)?;
        if line == b"\r\n" || line == b"\n" {
            return Ok(total);
        }
        trailers += 1;
        if trailers > MAX_HEADERS {
            return Err(bad("too many trailer fields"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::thread;

    fn head(text: &str) -> Result<Head, Error> {
        read_head(&mut Cursor::new(text.as_bytes()))
    }

    fn body(response: &str, limit: u64) -> Result<Vec<u8>, Error> {
        let mut r = Cursor::new(response.as_bytes().to_vec());
        let h = read_head(&mut r)?;
        let mut out = Vec::new();
        let n = copy_body(&h, &mut r, &mut out, limit)?;
        assert_eq!(n, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn parses_status_and_framing_headers() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\n").expect("head");
        assert_eq!(
            h,
            Head {
                code: 200,
                reason: "OK".into(),
                length: Some(12),
                chunked: false,
                location: None
            }
        );
        let h = head("HTTP/1.0 302 Found\nlocation: /b\ntransfer-encoding: Chunked\n\n")
            .expect("lf-only head");
        assert_eq!((h.code, h.chunked), (302, true));
        assert_eq!(h.location.as_deref(), Some("/b"));
        // Interim 100 Continue answers are skipped.
        let h = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n").expect("404");
        assert_eq!((h.code, h.reason.as_str()), (404, "Not Found"));
    }

    #[test]
    fn content_length_bodies() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more";
        assert_eq!(body(ok, 5).expect("body"), b"hello");
        let short = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
        let e = body(short, 100).expect_err("short body");
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("after 5 of 10 bytes"), "{e}");
        let big = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!";
        assert!(matches!(body(big, 5), Err(Error::TooLarge { limit: 5 })));
    }

    #[test]
    fn chunked_bodies() {
        let ok = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\nA;ext=1\r\n, chunked!\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(body(ok, 100).expect("chunked"), b"hello, chunked!");
        // Chunked wins over a Content-Length (RFC 9112 section 6.3).
        let both = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(body(both, 100).expect("both"), b"abc");
        let too_big = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        assert!(matches!(
            body(too_big, 5),
            Err(Error::TooLarge { limit: 5 })
        ));
        for (broken, why) in [
            ("zz\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
            ("3\r\nabcd\r\n0\r\n\r\n", "CRLF"),
            ("3\r\nabc\r\n", "closed the connection early"),
            ("5\r\nab", "after 2 of 5 bytes"),
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{broken}");
            let e = body(&text, 100).expect_err(broken).to_string();
            assert!(e.contains(why), "{broken:?}: {e}");
        }
    }

    #[test]
    fn bodies_without_framing_end_with_the_connection() {
        let ok = "HTTP/1.0 200 OK\r\n\r\nuntil the end";
        assert_eq!(body(ok, 100).expect("eof body"), b"until the end");
        assert!(matches!(body(ok, 4), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for (text, why) in [
            ("", "closed the connection early"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",
                "closed the connection early",
            ),
            ("SSH-2.0-OpenSSH\r\n\r\n", "response head"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "not supported",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n",
                "not supported",
            ),
        ] {
            let e = head(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let e = head(&huge).expect_err("huge").to_string();
        assert!(e.contains("larger than 16 KiB"), "{e}");
    }

    /// Serves one connection on 127.0.0.1 with `script`; returns its URL.
    fn serve_once(script: impl FnOnce(TcpStream) + Send + 'static) -> HttpUrl {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                script(stream);
            }
        });
        HttpUrl::parse(&format!("http://127.0.0.1:{port}/k")).expect("url")
    }

    const QUICK: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(30),
        grace: Duration::from_millis(300),
        min_rate: 1000,
    };

    #[test]
    fn endless_interim_responses_are_an_error() {
        let url = serve_once(
            |mut s| {
                while s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_ok() {}
            },
        );
        let e = get(&url, &mut Vec::new(), 100, &QUICK).expect_err("endless 100");
        assert!(e.to_string().contains("more than 8 interim (1xx)"), "{e}");
        let h = head(&"HTTP/1.1 100 Continue\r\n\r\n".repeat(8)).expect_err("8, no answer");
        assert!(h.to_string().contains("closed the connection early"), "{h}");
    }

    #[test]
    fn trickling_and_stalled_servers_miss_the_deadline() {
        let trickle = serve_once(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
            while s.write_all(b"x").is_ok() {
                thread::sleep(Duration::from_millis(50));
            }
        });
        let stall = serve_once(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxy");
            thread::sleep(Duration::from_secs(3));
        });
        for url in [trickle, stall] {
            let start = Instant::now();
            let e = get(&url, &mut Vec::new(), 100, &QUICK).expect_err("too slow");
            assert!(start.elapsed() < Duration::from_secs(2), "{e}");
            assert!(e.to_string().starts_with("server too slow: "), "{e}");
            assert!(e.is_transient(), "{e}");
        }
        // The same body at full speed is fine.
        let fast = serve_once(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        });
        let mut out = Vec::new();
        assert_eq!(get(&fast, &mut out, 100, &QUICK).expect("fast"), 3);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn redirects_to_another_host_or_port_are_refused() {
        for to in [
            "http://127.0.0.2:1/k",
            "//localhost/k",
            "https://127.0.0.1/k",
        ] {
            let to = to.to_string();
            let url = serve_once(move |mut s| {
                let _ = s.write_all(
                    format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                        .as_bytes(),
                );
            });
            let e = get(&url, &mut Vec::new(), 100, &QUICK).expect_err("cross-host");
            assert!(!e.is_transient(), "{e}");
            let e = e.to_string();
            assert!(
                e.contains("refused: redirects must stay on 127.0.0.1:")
                    || e.contains("https is not supported"),
                "{e}"
            );
        }
    }

    #[test]
    fn which_errors_are_retried() {
        let status = |code| Error::Status {
            code,
            reason: String::new(),
        };
        assert!(status(503).is_transient());
        assert!(status(500).is_transient());
        assert!(!status(404).is_transient());
        assert!(status(404).is_not_found());
        assert!(!status(403).is_transient());
        assert!(Error::Net(io::ErrorKind::ConnectionRefused.into()).is_transient());
        assert!(!Error::TooLarge { limit: 1 }.is_transient());
        assert!(!bad("x").is_transient());
        assert!(!Error::Sink(io::ErrorKind::StorageFull.into()).is_transient());
        assert_eq!(status(503).to_string(), "HTTP 503");
    }
}

/// Seeded fuzzing of the parsers above (see `fuzz_tests`).
#[cfg(test)]
#[path = "fuzz_tests/http.rs"]
mod fuzz;
