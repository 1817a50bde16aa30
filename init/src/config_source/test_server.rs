//! A tiny HTTP server on 127.0.0.1 for the fetch tests: serves canned
//! responses by path, one request per connection, and counts requests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Clone)]
pub enum Reply {
    /// 200 with Content-Length.
    Body(Vec<u8>),
    /// 200 with chunked transfer encoding, in chunks of this many bytes.
    Chunked(Vec<u8>, usize),
    /// Any status with an empty body.
    Status(u16),
    /// A redirect to the given location.
    Redirect(String),
    /// `n` times 503, then the inner reply.
    FailFirst(u32, Box<Reply>),
}

#[derive(Clone, Default)]
pub struct Site {
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Site {
    pub fn put(&self, path: &str, reply: Reply) {
        self.replies
            .lock()
            .expect("lock")
            .insert(path.to_string(), reply);
    }

    pub fn requests(&self, path: &str) -> usize {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Serves on `listener` from a thread, until the test process ends.
    pub fn serve(&self, listener: TcpListener) {
        let site = self.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                site.answer(stream);
            }
        });
    }

    /// Binds 127.0.0.1 on a free port and serves; returns the port.
    pub fn start(&self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        self.serve(listener);
        port
    }

    fn answer(&self, stream: TcpStream) {
        let mut reader = BufReader::new(&stream);
        let mut first = String::new();
        if reader.read_line(&mut first).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let path = first.split(' ').nth(1).unwrap_or("").to_string();
        self.log.lock().expect("lock").push(path.clone());
        let reply = {
            let mut replies = self.replies.lock().expect("lock");
            match replies.get_mut(&path) {
                Some(Reply::FailFirst(n, inner)) if *n == 0 => (**inner).clone(),
                Some(Reply::FailFirst(n, _)) => {
                    *n -= 1;
                    Reply::Status(503)
                }
                Some(r) => r.clone(),
                None => Reply::Status(404),
            }
        };
        let mut out = &stream;
        let _ = match reply {
            Reply::Body(body) => out
                .write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
                )
                .and_then(|()| out.write_all(&body)),
            Reply::Chunked(body, size) => {
                let mut text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for chunk in body.chunks(size.max(1)) {
                    text.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    text.extend_from_slice(chunk);
                    text.extend_from_slice(b"\r\n");
                }
                text.extend_from_slice(b"0\r\n\r\n");
                out.write_all(&text)
            }
            Reply::Status(code) => out.write_all(
                format!("HTTP/1.1 {code} Canned\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            ),
            Reply::Redirect(to) => out.write_all(
                format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            ),
            Reply::FailFirst(..) => Ok(()),
        };
    }
}
