//! A small static-file HTTP server for tests of configuration over HTTP.
//!
//! It listens on 127.0.0.1 only; a machine on QEMU's user network reaches
//! it at `10.0.2.2:PORT`. Every request is recorded, so a test can check
//! what the host asked for (e.g. that `${mac}` became the NIC's address).
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use hv_tests::http::HttpServer;
//!
//! let files = BTreeMap::from([("/cfg/host.toml".to_string(), b"guests = []\n".to_vec())]);
//! let server = HttpServer::start(0, files)?;
//! println!("hv.config=http://10.0.2.2:{}/cfg/", server.port());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A client that stops talking (or reading) for this long is dropped, so a
/// stuck connection cannot outlive the test.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Request heads beyond this are refused; ours are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path as sent, query string included, before percent-decoding.
    pub path: String,
    /// The status code answered.
    pub status: u16,
}

/// Serves a fixed set of files until dropped.
pub struct HttpServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `127.0.0.1:port` (0 picks a free port) and serves `files`,
    /// keyed by URL path (`/cfg/host.toml`). Anything else is a 404.
    pub fn start(port: u16, files: BTreeMap<String, Vec<u8>>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(files);
        let acceptor = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("http-{port}"))
                .spawn(move || accept_loop(listener, files, requests, stop))?
        };
        Ok(Self {
            port,
            requests,
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The paths of [`HttpServer::requests`].
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it up.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    files: Arc<BTreeMap<String, Vec<u8>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (files, requests) = (Arc::clone(&files), Arc::clone(&requests));
        // One thread per connection: a slow download (a kernel through
        // slirp) must not hold up the next request.
        let _ = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let _ = serve(stream, &files, &requests);
            });
    }
}

/// Answers one request and closes the connection.
fn serve(
    stream: TcpStream,
    files: &BTreeMap<String, Vec<u8>>,
    requests: &Mutex<Vec<Request>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some((method, path)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let found = files.get(&percent_decode(path.split('?').next().unwrap_or_default()));
    let (status, reason, body): (u16, &str, &[u8]) = match (method.as_str(), found) {
        ("GET" | "HEAD", Some(body)) => (200, "OK", body),
        ("GET" | "HEAD", None) => (404, "Not Found", b"not found\n"),
        _ => (405, "Method Not Allowed", b"only GET\n"),
    };
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Request {
            method: method.clone(),
            path,
            status,
        });
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(body)?;
    }
    out.flush()?;
    stream.shutdown(Shutdown::Write)
}

/// The method and path of the request line; the header lines are read
/// and ignored. `None` when the client closed before a complete head.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<(String, String)>> {
    let mut request_line = String::new();
    let mut total = 0;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        total += n;
        if n == 0 {
            return Ok(None);
        }
        if total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
        } else if line.trim_end().is_empty() {
            break;
        }
    }
    let mut words = request_line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(method), Some(path)) => Ok(Some((method.to_string(), path.to_string()))),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad request line {request_line:?}"),
        )),
    }
}

/// `%XX` escapes decoded; a malformed escape is kept as it is.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(port: u16, request: &str) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    fn server() -> HttpServer {
        let files = BTreeMap::from([
            ("/cfg/host.toml".to_string(), b"guests = []\n".to_vec()),
            ("/cfg/52:54:00:12:34:56/a b".to_string(), b"x".to_vec()),
        ]);
        HttpServer::start(0, files).unwrap()
    }

    #[test]
    fn serves_files_and_records_requests() {
        let server = server();
        let answer = get(
            server.port(),
            "GET /cfg/host.toml HTTP/1.1\r\nHost: 10.0.2.2\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Content-Length: 12\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nguests = []\n"), "{answer}");

        let answer = get(server.port(), "GET /cfg/guests/x.toml HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

        let answer = get(server.port(), "POST /cfg/host.toml HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");

        let seen: Vec<(String, u16)> = server
            .requests()
            .into_iter()
            .map(|r| (r.path, r.status))
            .collect();
        assert_eq!(
            seen,
            [
                ("/cfg/host.toml".to_string(), 200),
                ("/cfg/guests/x.toml".to_string(), 404),
                ("/cfg/host.toml".to_string(), 405),
            ]
        );
    }

    #[test]
    fn paths_are_percent_decoded_for_lookup_but_recorded_as_sent() {
        let server = server();
        let answer = get(
            server.port(),
            "GET /cfg/52%3A54%3A00%3A12%3A34%3A56/a%20b?x=1 HTTP/1.1\r\n\r\n",
        );
        assert!(answer.ends_with("\r\n\r\nx"), "{answer}");
        assert_eq!(
            server.paths(),
            ["/cfg/52%3A54%3A00%3A12%3A34%3A56/a%20b?x=1"]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn dropping_the_server_frees_its_port() {
        let port = server().port();
        let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        // The port can be taken again, as a test that starts its server
        // late on a port chosen early does.
        drop(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap());
    }
}
