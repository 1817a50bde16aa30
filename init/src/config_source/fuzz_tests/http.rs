//! The HTTP response head parser (`read_head`) and the body framing
//! (`copy_body`: Content-Length, chunked, to the end) on generated and
//! mutated responses. A child module of `http`, so it reaches the private
//! parsers; the generator and run loop are `fuzz_tests`'.
//!
//! Invariants: no panic; a head is accepted only if it (each interim head
//! too) fits in 16 KiB, has at most 64 header fields, and every
//! Content-Length in it is digits; a Content-Length body is exactly that
//! many bytes of what followed the head, or an error; the body written
//! never exceeds the limit; a chunk-size line over 1 KiB is refused; an
//! unmutated generated response decodes to exactly its body.

use std::io::Cursor;

use super::{copy_body, read_head, Error, Head, MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS};
use crate::config_source::fuzz_tests::{mutate, run, Rng};

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"\n\n",
    b":",
    b" ",
    b"\t",
    b",",
    b";",
    b"\0",
    b"\x7f",
    b"\xff",
    b"HTTP/1.1 ",
    b"HTTP/1.0 100 Continue\r\n\r\n",
    b"200",
    b"100",
    b"Content-Length: ",
    b"content-length:",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Content-Encoding: gzip",
    b"Location: /x",
    b"0",
    b"00000000000000000000000000000000001",
    b"18446744073709551615",
    b"18446744073709551616",
    b"ffffffffffffffff",
    b"+5",
    b"-1",
    b"0x10",
    b"1;ext=\"x\"",
];

/// A generated response and what a correct client makes of it, if it is
/// left unmutated.
struct Response {
    bytes: Vec<u8>,
    /// `Some(body)` if the response is valid and must decode to `body`
    /// (with a limit of at least its length); `None` if it must be
    /// refused or may go either way.
    body: Option<Vec<u8>>,
    must_fail: bool,
}

fn eol(rng: &mut Rng) -> &'static [u8] {
    if rng.one_in(4) {
        b"\n"
    } else {
        b"\r\n"
    }
}

fn header(rng: &mut Rng, out: &mut Vec<u8>) {
    let line: Vec<u8> = match rng.below(6) {
        0 => b"Server: fuzz".to_vec(),
        1 => b"Location: /hv/guests/".to_vec(),
        2 => b"Content-Encoding: identity".to_vec(),
        3 => b"Cache-Control: no-cache".to_vec(),
        4 => format!("X-Pad: {}", "p".repeat(rng.below(200))).into_bytes(),
        _ => b"Date: Wed, 02 Dec 2026 05:00:00 GMT".to_vec(),
    };
    out.extend_from_slice(&line);
    out.extend_from_slice(eol(rng));
}

/// A chunked body: chunks of random sizes, maybe extensions, trailers.
fn chunked_body(rng: &mut Rng, out: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    let mut must_fail = false;
    for _ in 0..rng.below(6) {
        let max = if rng.one_in(8) { 70_000 } else { 300 };
        let data = rng.bytes_below(max);
        if data.is_empty() {
            continue;
        }
        let mut line = format!("{:x}", data.len()).into_bytes();
        if rng.one_in(4) {
            line.extend_from_slice(b";name=value");
        }
        if rng.one_in(16) {
            // A size line right at or just over the 1 KiB limit.
            let pad = (MAX_CHUNK_LINE - 2 - line.len()) + rng.below(3);
            line.push(b';');
            line.extend(std::iter::repeat_n(b'x', pad - 1));
        }
        line.extend_from_slice(b"\r\n");
        must_fail |= line.len() > MAX_CHUNK_LINE;
        out.extend_from_slice(&line);
        out.extend_from_slice(&data);
        out.extend_from_slice(eol(rng));
        body.extend_from_slice(&data);
    }
    out.extend_from_slice(b"0\r\n");
    let trailers = if rng.one_in(16) {
        MAX_HEADERS - 1 + rng.below(3)
    } else {
        rng.below(3)
    };
    for i in 0..trailers {
        out.extend_from_slice(format!("X-Trailer-{i}: 1\r\n").as_bytes());
    }
    must_fail |= trailers > MAX_HEADERS;
    out.extend_from_slice(eol(rng));
    must_fail
}

fn response(rng: &mut Rng) -> Response {
    let mut out = Vec::new();
    for _ in 0..(if rng.one_in(4) { rng.below(10) } else { 0 }) {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let interim = out.len() / b"HTTP/1.1 100 Continue\r\n\r\n".len();
    let mut must_fail = interim > 8;
    let head_start = out.len();
    let code = rng.pick(&[200u16, 200, 200, 302, 404, 503]);
    out.extend_from_slice(format!("HTTP/1.{} {code} Reason\r\n", rng.below(2)).as_bytes());
    let many = rng.one_in(10);
    let headers = if many {
        MAX_HEADERS - 2 + rng.below(4)
    } else {
        rng.below(6)
    };
    let framing = rng.below(3);
    let max = if rng.one_in(8) { 100_000 } else { 500 };
    let mut body = rng.bytes_below(max);
    // One framing header, among `headers` fields in all.
    let fields = headers.max(1);
    let framing_at = rng.below(fields);
    for i in 0..fields {
        if i == framing_at {
            match framing {
                0 => {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes())
                }
                1 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                _ => header(rng, &mut out),
            }
        } else {
            header(rng, &mut out);
        }
    }
    must_fail |= fields > MAX_HEADERS;
    if rng.one_in(10) {
        // Pad the head to land right around the 16 KiB limit.
        let used = out.len() - head_start;
        let target = MAX_HEAD - 3 + rng.below(6);
        let pad = target.saturating_sub(used + "X-Big: ".len() + 2 + 2);
        out.extend_from_slice(b"X-Big: ");
        out.extend(std::iter::repeat_n(b'b', pad));
        out.extend_from_slice(b"\r\n");
        must_fail |= fields + 1 > MAX_HEADERS;
    }
    let end = eol(rng);
    out.extend_from_slice(end);
    let head_len = out.len() - head_start;
    must_fail |= head_len > MAX_HEAD;
    if framing == 1 {
        let mut decoded = Vec::new();
        must_fail |= chunked_body(rng, &mut out, &mut decoded);
        body = decoded;
    } else {
        out.extend_from_slice(&body);
    }
    Response {
        bytes: out,
        body: (code == 200 && !must_fail).then_some(body),
        must_fail,
    }
}

/// Splits `input` at the first empty line, as a head ends; the head's
/// length including that line, or `None` if there is none.
fn head_len(input: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < input.len() {
        let line_end = input[at..].iter().position(|&b| b == b'\n')? + at + 1;
        let line = &input[at..line_end];
        if line == b"\n" || line == b"\r\n" {
            return Some(line_end);
        }
        at = line_end;
    }
    None
}

/// Header lines (not the status line, not the empty line) of one head.
fn header_lines(head: &[u8]) -> Vec<&[u8]> {
    let text = head.strip_suffix(b"\n").unwrap_or(head);
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // The status line, then the empty line (as split leaves it).
    lines.remove(0);
    lines.pop();
    lines
}

fn check_head(input: &[u8], head: &Head, consumed: usize) {
    // Walk the heads the parser must have read: interim ones, then this.
    let mut at = 0;
    let mut heads = 0;
    let last = loop {
        let len = head_len(&input[at..]).expect("an accepted head ends with an empty line");
        assert!(len <= MAX_HEAD, "accepted a {len}-byte head");
        heads += 1;
        let this = &input[at..at + len];
        at += len;
        if at == consumed {
            break this;
        }
        assert!(at < consumed, "read past the head it accepted");
    };
    assert!(heads <= 9, "accepted {heads} heads (8 interim at most)");
    assert!(!(100..200).contains(&head.code), "returned an interim head");
    let lines = header_lines(last);
    assert!(
        lines.len() <= MAX_HEADERS,
        "accepted {} header fields",
        lines.len()
    );
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = line[colon + 1..]
                .strip_suffix(b"\r")
                .unwrap_or(&line[colon + 1..]);
            let value = value.trim_ascii();
            assert!(
                !value.is_empty() && value.iter().all(u8::is_ascii_digit),
                "accepted Content-Length {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}

fn http_case(rng: &mut Rng) {
    let generated = response(rng);
    let mut input = generated.bytes;
    let mutated = match rng.below(8) {
        0 => {
            input = rng.bytes_below(600);
            if rng.one_in(2) {
                input.splice(0..0, b"HTTP/1.1 200 OK\r\n".iter().copied());
            }
            true
        }
        1..=4 => {
            for _ in 0..=rng.below(3) {
                mutate(rng, &mut input, TOKENS);
            }
            true
        }
        _ => false,
    };
    let mut r = Cursor::new(input.as_slice());
    let head = read_head(&mut r);
    let consumed = usize::try_from(r.position()).expect("small input");
    let head = match head {
        Ok(head) => head,
        Err(e) => {
            assert!(
                mutated || generated.must_fail,
                "refused a valid head: {e}\n{:?}",
                String::from_utf8_lossy(&input[..input.len().min(400)])
            );
            return;
        }
    };
    check_head(&input, &head, consumed);
    let limit = match rng.below(4) {
        0 => u64::try_from(rng.below(1000)).unwrap_or(0),
        1 => u64::MAX,
        _ => 1 << 20,
    };
    let mut out = Vec::new();
    let result = copy_body(&head, &mut r, &mut out, limit);
    let rest = &input[consumed..];
    assert!(
        out.len() as u64 <= limit,
        "wrote {} bytes with a limit of {limit}",
        out.len()
    );
    if let Ok(n) = result {
        assert_eq!(n, out.len() as u64, "reported size is not what was written");
    }
    if !head.chunked {
        if let Some(len) = head.length {
            match &result {
                Ok(n) => {
                    assert_eq!(*n, len, "Content-Length {len} not honoured");
                    assert_eq!(out, rest[..out.len()], "body is not what followed the head");
                }
                Err(Error::TooLarge { .. }) => assert!(len > limit),
                Err(_) => assert!(
                    (rest.len() as u64) < len,
                    "a complete {len}-byte body was refused"
                ),
            }
        } else if let Ok(n) = result {
            assert_eq!(out, rest, "a body to the end is everything after the head");
            assert!(n <= limit);
        }
    }
    if !mutated {
        if let (Some(body), true) = (&generated.body, head.code == 200) {
            if body.len() as u64 <= limit {
                let n = result.expect("a valid body was refused");
                assert_eq!(n, body.len() as u64);
                assert!(out == *body, "decoded body differs");
            } else {
                assert!(matches!(result, Err(Error::TooLarge { .. })));
            }
        } else if generated.must_fail && head.code == 200 {
            assert!(result.is_err(), "accepted an over-limit chunked body");
        }
    }
}

#[test]
fn fuzz_http_head_and_body_framing() {
    run("http", 8_000, http_case);
}

/// Inputs the fuzzer found, kept so they stay fixed.
#[test]
fn fuzz_http_regressions() {
    // A head ending in a bare LF just past 16 KiB: the read limit let one
    // more byte through once the head had reached exactly 16 KiB.
    let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'b', MAX_HEAD - head.len() - 2));
    head.extend_from_slice(b"\r\n");
    assert_eq!(head.len(), MAX_HEAD);
    head.push(b'\n');
    let e = read_head(&mut Cursor::new(head.as_slice())).expect_err("16 KiB + 1");
    assert!(e.to_string().contains("larger than 16 KiB"), "{e}");
    // Exactly 16 KiB is still fine.
    head.truncate(MAX_HEAD - 2);
    head.extend_from_slice(b"\n\n");
    assert!(read_head(&mut Cursor::new(head.as_slice())).is_ok());
    // Content-Length is digits (RFC 9110 section 8.6): u64's parser took
    // a sign, and Unicode trimming a no-break space.
    for value in [&b"+5193"[..], b"5\xc2\xa0", b"\xc2\xa05", b"5 5", b"-0"] {
        let mut text = b"HTTP/1.1 200 OK\r\nContent-Length: ".to_vec();
        text.extend_from_slice(value);
        text.extend_from_slice(b"\r\n\r\n");
        let e = read_head(&mut Cursor::new(text.as_slice())).expect_err("signed length");
        assert!(e.to_string().contains("Content-Length"), "{e}");
    }
    let h = read_head(&mut Cursor::new(
        &b"HTTP/1.1 200 OK\r\nContent-Length: \t 7 \r\n\r\n"[..],
    ));
    assert_eq!(h.expect("spaces around").length, Some(7));
}
