//! `http://` URLs of the network configuration source: parsing, the
//! `${mac}` placeholder, resolving references (redirects), and the
//! one-to-one mapping between a URL and its copy in RAM.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Stands for the MAC address of the NIC the host booted from.
pub const MAC_PLACEHOLDER: &str = "${mac}";

/// An `http://` URL without query or fragment. The path is kept decoded
/// (as a file name on disk would be) and encoded again on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    host: String,
    port: u16,
    /// Always starts with `/`; no `.` or `..` segments.
    path: String,
}

/// Why a URL (or a local path standing for one) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0}: https is not supported (init has no TLS); use http://")]
    Https(String),
    #[error("{0}: not an http:// URL")]
    NotHttp(String),
    #[error("{0}: query strings and fragments are not supported")]
    QueryOrFragment(String),
    #[error("{text}: {bad:?} is not allowed in a URL")]
    BadChar { text: String, bad: char },
    #[error("{text}: {problem}")]
    Authority {
        text: String,
        problem: AuthorityError,
    },
    #[error("{text}: {problem}")]
    Path { text: String, problem: PathError },
    #[error(
        "{} is not below the configuration URL; use a path relative to the guest file",
        .0.display()
    )]
    Outside(PathBuf),
}

/// What is wrong with the `host:port` part of a URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("user names and passwords are not supported")]
    UserInfo,
    #[error("missing ']' after the IPv6 address")]
    UnclosedIpv6,
    #[error("unexpected {0:?} after ']'")]
    AfterIpv6(String),
    #[error("no host name")]
    NoHost,
    #[error("{0:?} is not a host name or address")]
    BadHost(String),
    #[error("port {0:?} is not a number in 1..=65535")]
    BadPort(String),
}

/// What is wrong with the (percent-encoded) path of a URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("bad %-escape (expected %XX with two hex digits)")]
    BadEscape,
    #[error("%{0:02X} is not allowed in a path")]
    Forbidden(u8),
    #[error("the decoded path is not UTF-8")]
    NotUtf8,
}

/// Replaces every `${mac}` in `text` with `mac`.
pub fn substitute_mac(text: &str, mac: &str) -> String {
    text.replace(MAC_PLACEHOLDER, mac)
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(UrlError::Https(text.to_string()));
        }
        let rest = if lower.starts_with("http://") {
            text.get(7..).unwrap_or_default()
        } else {
            return Err(UrlError::NotHttp(text.to_string()));
        };
        if rest.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment(text.to_string()));
        }
        if let Some(bad) = rest.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadChar {
                text: text.to_string(),
                bad,
            });
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (host, port) = split_authority(authority).map_err(|problem| UrlError::Authority {
            text: text.to_string(),
            problem,
        })?;
        let path = percent_decode(path).map_err(|problem| UrlError::Path {
            text: text.to_string(),
            problem,
        })?;
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: remove_dot_segments(&path),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The path as sent in the request line: percent-encoded.
    pub fn request_target(&self) -> String {
        percent_encode(&self.path)
    }

    /// The same URL as a directory (ending in `/`), for a base URL given
    /// without its trailing slash.
    pub fn as_dir(&self) -> HttpUrl {
        let mut dir = self.clone();
        if !dir.path.ends_with('/') {
            dir.path.push('/');
        }
        dir
    }

    /// Resolves `reference` (an absolute `http://` URL, an absolute path
    /// or a relative path, as in a `Location` header) against this URL.
    pub fn resolve(&self, reference: &str) -> Result<HttpUrl, UrlError> {
        // The query is dropped: nothing init fetches needs one.
        let reference = reference.split(['?', '#']).next().unwrap_or_default();
        if reference.contains("://") {
            return HttpUrl::parse(reference);
        }
        if reference.starts_with("//") {
            return HttpUrl::parse(&format!("http:{reference}"));
        }
        let decoded = percent_decode(reference).map_err(|problem| UrlError::Path {
            text: reference.to_string(),
            problem,
        })?;
        let joined = if decoded.starts_with('/') {
            decoded
        } else {
            let dir_end = self.path.rfind('/').map_or(0, |i| i + 1);
            format!("{}{decoded}", self.path.get(..dir_end).unwrap_or("/"))
        };
        Ok(HttpUrl {
            host: self.host.clone(),
            port: self.port,
            path: remove_dot_segments(&joined),
        })
    }
}

impl HttpUrl {
    /// Same scheme (always http), host and port: where a redirect may go.
    pub fn same_origin(&self, other: &HttpUrl) -> bool {
        self.host.eq_ignore_ascii_case(&other.host) && self.port == other.port
    }

    /// This URL's path below `base` (taken as a directory), as SHA256SUMS
    /// lists it; `None` when it is not below.
    pub fn relative_to(&self, base: &HttpUrl) -> Option<String> {
        if !self.same_origin(base) {
            return None;
        }
        let rest = self.path.strip_prefix(base.as_dir().path.as_str())?;
        (!rest.is_empty()).then(|| rest.to_string())
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.request_target())
    }
}

fn split_authority(authority: &str) -> Result<(&str, u16), AuthorityError> {
    if authority.contains('@') {
        return Err(AuthorityError::UserInfo);
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(AuthorityError::UnclosedIpv6)?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| AuthorityError::AfterIpv6(p.to_string()))?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(AuthorityError::NoHost);
    }
    // Brackets only around an IPv6 address: `[[x]` would print as `[x`.
    if host.contains(['[', ']']) {
        return Err(AuthorityError::BadHost(host.to_string()));
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| AuthorityError::BadPort(p.to_string()))?,
    };
    Ok((host, port))
}

/// Decodes `%XX` escapes. Escaped `/` and NUL, and raw NUL (which only
/// `resolve` lets through), are refused: they would change the meaning
/// of the path once it names a local file.
fn percent_decode(text: &str) -> Result<String, PathError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == 0 {
            return Err(PathError::Forbidden(0));
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(PathError::BadEscape)?;
        if hex == b'/' || hex == 0 {
            return Err(PathError::Forbidden(hex));
        }
        out.push(hex);
        i += 3;
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 3986 section 5.2.4, on whole segments: `..` never climbs above `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    segments.pop();
                }
                // A trailing dot segment still names a directory.
                if i == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Where fetched files live in RAM: the URL `http://SERVER/a/b` is the
/// file `ROOT/a/b`, so a guest file's relative paths mean the same on
/// the server and in the copy, exactly as on a config partition.
#[derive(Clone, Debug)]
pub struct Mirror {
    root: PathBuf,
    server: HttpUrl,
}

impl Mirror {
    pub fn new(root: &Path, server: &HttpUrl) -> Mirror {
        Mirror {
            root: root.to_path_buf(),
            server: server.clone(),
        }
    }

    pub fn local_path(&self, url: &HttpUrl) -> PathBuf {
        self.root.join(url.path.trim_start_matches('/'))
    }

    /// The URL of a local path a guest file names. The path is taken
    /// apart lexically (like the server resolves `..`), and must stay
    /// inside the copy: absolute paths elsewhere cannot be fetched.
    pub fn url_of(&self, local: &Path) -> Result<HttpUrl, UrlError> {
        let outside = || UrlError::Outside(local.to_path_buf());
        let root: Vec<&str> = self
            .root
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let mut parts: Vec<&str> = Vec::new();
        for c in local.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop().ok_or_else(outside)?;
                }
                // A NUL names no file, and no URL `parse` would accept.
                Component::Normal(s) => parts.push(
                    s.to_str()
                        .filter(|s| !s.contains('\0'))
                        .ok_or_else(outside)?,
                ),
                Component::Prefix(_) => return Err(outside()),
            }
            // Every directory on the way is the root's ancestor or inside
            // it: the vmm opens (and fetching creates) the path as written,
            // so `config/../../tmp/x/../../hv/config/k` would visit /tmp/x.
            if !(parts.starts_with(&root) || root.starts_with(&parts)) {
                return Err(outside());
            }
        }
        let rest = parts.strip_prefix(root.as_slice()).ok_or_else(outside)?;
        if rest.is_empty() {
            return Err(outside());
        }
        Ok(HttpUrl {
            host: self.server.host.clone(),
            port: self.server.port,
            path: format!("/{}", rest.join("/")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpUrl {
        HttpUrl::parse(s).expect(s)
    }

    #[test]
    fn parses_host_port_and_path() {
        let u = url("http://10.0.2.2:8000/hv/");
        assert_eq!(
            (u.host(), u.port(), u.path.as_str()),
            ("10.0.2.2", 8000, "/hv/")
        );
        assert_eq!(u.authority(), "10.0.2.2:8000");
        let u = url("HTTP://Boot.example");
        assert_eq!(
            (u.host(), u.port(), u.path.as_str()),
            ("Boot.example", 80, "/")
        );
        assert_eq!(u.authority(), "Boot.example");
        let u = url("http://[fd00::1]:81/a/./b/../c");
        assert_eq!(
            (u.host(), u.port(), u.path.as_str()),
            ("fd00::1", 81, "/a/c")
        );
        assert_eq!(u.to_string(), "http://[fd00::1]:81/a/c");
    }

    #[test]
    fn rejects_what_it_cannot_fetch() {
        for (bad, why) in [
            ("https://h/", "https is not supported"),
            ("ftp://h/", "not an http:// URL"),
            ("http://h:0/", "port"),
            ("http://h:99999/", "port"),
            ("http://h:x/", "port"),
            ("http:///x", "no host"),
            ("http://u:p@h/", "user names"),
            ("http://h/a?b=1", "query"),
            ("http://h/a b", "not allowed"),
            ("http://h/a%2Fb", "%2F"),
            ("http://h/a%zz", "bad %-escape"),
            ("http://[::1/", "']'"),
        ] {
            let e = HttpUrl::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.starts_with(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn paths_are_decoded_and_encoded_again() {
        let u = url("http://h/my%20dir/52:54:00:12:34:56/");
        assert_eq!(u.path.as_str(), "/my dir/52:54:00:12:34:56/");
        assert_eq!(u.request_target(), "/my%20dir/52:54:00:12:34:56/");
        let u = url("http://h/").resolve("ker nel%25.img").expect("resolve");
        assert_eq!(u.request_target(), "/ker%20nel%25.img");
    }

    #[test]
    fn mac_placeholder_is_replaced_everywhere() {
        assert_eq!(
            substitute_mac("http://h/${mac}/x-${mac}", "52:54:00:12:34:56"),
            "http://h/52:54:00:12:34:56/x-52:54:00:12:34:56"
        );
        assert_eq!(substitute_mac("http://h/hv/", "aa"), "http://h/hv/");
        // The substituted URL is a valid one.
        let u = url(&substitute_mac("http://h/${mac}/", "52:54:00:12:34:56"));
        assert_eq!(u.path.as_str(), "/52:54:00:12:34:56/");
    }

    #[test]
    fn references_resolve_like_a_browser() {
        let base = url("http://h:8000/hv/guests/web.toml");
        let r = |s: &str| base.resolve(s).expect(s).to_string();
        assert_eq!(r("web/bzImage"), "http://h:8000/hv/guests/web/bzImage");
        assert_eq!(r("../example/bzImage"), "http://h:8000/hv/example/bzImage");
        assert_eq!(r("../../../../x"), "http://h:8000/x");
        assert_eq!(r("/abs/k"), "http://h:8000/abs/k");
        assert_eq!(r("//other:81/k"), "http://other:81/k");
        assert_eq!(r("http://other/k?x"), "http://other/k");
        assert_eq!(r("k?v=1"), "http://h:8000/hv/guests/k");
        assert_eq!(url("http://h/hv").as_dir().path.as_str(), "/hv/");
        assert_eq!(url("http://h/hv/").as_dir().path.as_str(), "/hv/");
    }

    #[test]
    fn origins_and_paths_below_a_base() {
        let base = url("http://h:8000/hv");
        assert!(base.same_origin(&url("http://H:8000/other")));
        assert!(!base.same_origin(&url("http://h:8001/hv")));
        assert!(!base.same_origin(&url("http://g:8000/hv")));
        let below = |s: &str| url(s).relative_to(&base);
        assert_eq!(
            below("http://h:8000/hv/guests/a.toml").as_deref(),
            Some("guests/a.toml")
        );
        assert_eq!(below("http://h:8000/hv/"), None);
        assert_eq!(below("http://h:8000/hvx/a"), None);
        assert_eq!(below("http://h:8000/images/k"), None);
        assert_eq!(below("http://g:8000/hv/a"), None);
    }

    #[test]
    fn mirror_maps_urls_and_local_paths_both_ways() {
        let server = url("http://h:8000/");
        let m = Mirror::new(Path::new("/run/hv/config"), &server);
        let guest = url("http://h:8000/hv/guests/web.toml");
        let local = m.local_path(&guest);
        assert_eq!(local, Path::new("/run/hv/config/hv/guests/web.toml"));
        // What hvconfig makes of `kernel = "../example/bzImage"`.
        let dir = local.parent().expect("parent");
        let kernel = dir.join("../example/bzImage");
        assert_eq!(
            m.url_of(&kernel).expect("kernel").to_string(),
            "http://h:8000/hv/example/bzImage"
        );
        assert_eq!(
            m.url_of(&dir.join("web/a b")).expect("space").to_string(),
            "http://h:8000/hv/guests/web/a%20b"
        );
        assert_eq!(
            m.url_of(&dir.join("../../k"))
                .expect("server root")
                .path
                .as_str(),
            "/k"
        );
        for bad in ["/boot/bzImage", "/run/hv/config/hv/guests/../../../../k"] {
            let e = m.url_of(Path::new(bad)).expect_err(bad).to_string();
            assert!(e.contains("not below the configuration URL"), "{e}");
        }
        assert!(m.url_of(&dir.join("../../../x")).is_err());
    }
}
