//! `HttpUrl::parse`, `HttpUrl::resolve` and the mirror mapping on
//! generated and mutated URLs and references. The invariant that matters:
//! whatever a server redirects to or a guest file names, its copy in RAM
//! (`Mirror::local_path`) stays under the mirror root.

use std::path::{Component, Path, PathBuf};

use super::{mutate, run, Rng};
use crate::config_source::url::{HttpUrl, Mirror};

const ROOT: &str = "/run/hv/config";

const BASES: &[&str] = &[
    "http://h:8000/hv/guests/web.toml",
    "http://10.0.2.2/",
    "http://[fd00::1]:81/a/b/",
    "HTTP://Boot.example",
    "http://h/hv",
    "http://h//double//slash/",
    "http://h/%2e%2e/x",
];

/// Pieces of URLs and references that reach the parser's corners.
const TOKENS: &[&str] = &[
    "..", ".", "/", "//", "/../", "/./", "%2e%2e", "%2E.", ".%2e", "%2e", "%2F", "%2f", "%00", "%",
    "%z", "%zz", "%5C", "%25", "%C3%A9", "%FF", "%80", "\\", "..\\", "?", "#", "?x=1", "a", "b",
    "web.toml", " ", "\t", "\n", "\0", "${mac}", "é", ":", "@", "[", "]", "[::1]", ":80", ":0",
    ":65535", ":65536", "http://", "HTTP://", "https://", "ftp://", "http:", "h", "host", "://",
];

fn token_bytes() -> Vec<&'static [u8]> {
    TOKENS.iter().map(|t| t.as_bytes()).collect()
}

/// A reference or URL text: tokens strung together, then maybe mutated.
fn text(rng: &mut Rng, tokens: &[&[u8]]) -> String {
    let mut bytes = Vec::new();
    match rng.below(8) {
        0 => bytes = rng.bytes_below(40),
        1 => bytes.extend_from_slice(rng.pick(BASES).as_bytes()),
        2 | 3 => bytes.extend_from_slice(b"http://"),
        _ => {}
    }
    for _ in 0..rng.below(10) {
        bytes.extend_from_slice(rng.pick(tokens));
    }
    if rng.one_in(2) {
        mutate(rng, &mut bytes, tokens);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The path part of a parsed URL, as the server sees it (encoded).
fn path_segments(url: &HttpUrl) -> Vec<String> {
    let target = url.request_target();
    assert!(target.starts_with('/'), "{url}: path {target:?}");
    target.split('/').skip(1).map(str::to_string).collect()
}

/// What every URL the parser hands out must satisfy.
fn check_url(url: &HttpUrl, mirror: &Mirror, what: &str) {
    assert!(!url.host().is_empty(), "{what}: empty host in {url:?}");
    assert_ne!(url.port(), 0, "{what}: port 0 in {url:?}");
    for seg in path_segments(url) {
        assert!(
            seg != "." && seg != "..",
            "{what}: dot segment left in {url}"
        );
    }
    // Printing and parsing again gives the same URL.
    let again = HttpUrl::parse(&url.to_string());
    assert_eq!(again.as_ref(), Ok(url), "{what}: {url} does not round-trip");
    check_local(&mirror.local_path(url), what);
}

/// A local path of the mirror: under the root, lexically.
fn check_local(local: &Path, what: &str) {
    assert!(
        local.starts_with(ROOT),
        "{what}: {} is outside the mirror",
        local.display()
    );
    let text = local.to_str().expect("mirror paths are UTF-8");
    for seg in text.split('/') {
        assert!(
            seg != "." && seg != "..",
            "{what}: {text} has a dot segment, so may leave the mirror"
        );
    }
}

/// A lexically normalised path (`.` dropped, `..` pops; never above `/`).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out
}

/// Every directory a walk of `local` (`..` and all, as the vmm opens it
/// and as fetching creates it) passes through is on the way to the mirror
/// root or inside it: `/run/hv/config/../../../tmp/x/../../run/hv/config/k`
/// names a file inside, but a walk of it visits `/tmp/x`.
fn assert_walk_stays_inside(local: &Path) {
    let root: Vec<Component> = Path::new(ROOT).components().collect();
    let mut at: Vec<Component> = Vec::new();
    for c in local.components() {
        match c {
            Component::ParentDir => {
                if at.len() > 1 {
                    at.pop();
                }
            }
            Component::CurDir => {}
            c => at.push(c),
        }
        assert!(
            at.starts_with(&root) || root.starts_with(&at),
            "a walk of {} leaves the mirror at {}",
            local.display(),
            at.iter().collect::<PathBuf>().display()
        );
    }
}

/// A path as a guest file may name its kernel: a walk of `..`, `.` and
/// names (the mirror root's among them) from the guest's directory or `/`.
fn walk(rng: &mut Rng, dir: &Path) -> PathBuf {
    const SEGMENTS: &[&str] = &[
        "..", "..", ".", "run", "hv", "config", "guests", "tmp", "x", "k", "", "%2e%2e", "\\..",
    ];
    let mut path = if rng.one_in(3) {
        PathBuf::from("/")
    } else {
        dir.to_path_buf()
    };
    let mut text = path.to_string_lossy().into_owned();
    for _ in 0..rng.below(14) {
        if !text.ends_with('/') {
            text.push('/');
        }
        text.push_str(rng.pick(SEGMENTS));
    }
    path.push(text);
    path
}

fn url_case(rng: &mut Rng, tokens: &[&[u8]]) {
    let base = HttpUrl::parse(rng.pick(BASES)).expect("base URLs are valid");
    let mirror = Mirror::new(Path::new(ROOT), &base);
    let text = text(rng, tokens);
    if let Ok(url) = HttpUrl::parse(&text) {
        check_url(&url, &mirror, &format!("parse({text:?})"));
        assert!(
            text.get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://")),
            "{text:?} parsed without http://"
        );
    }
    let what = format!("{base}.resolve({text:?})");
    if let Ok(url) = base.resolve(&text) {
        check_url(&url, &mirror, &what);
        if !text.contains("://") && !text.starts_with("//") {
            assert_eq!(
                (url.host(), url.port()),
                (base.host(), base.port()),
                "{what}: a relative reference changed the server"
            );
        }
        // The local copy maps back to the same URL, where the mapping is
        // one-to-one (no empty segments, not a directory).
        let target = url.request_target();
        if url.host() == base.host()
            && url.port() == base.port()
            && target != "/"
            && !target.ends_with('/')
            && !target.contains("//")
        {
            let back = mirror.url_of(&mirror.local_path(&url));
            assert_eq!(back.as_ref(), Ok(&url), "{what}: mirror round trip");
        }
    }
    // A guest file's path names a URL only if it is inside the mirror,
    // and that URL's copy is the path itself.
    let dir = mirror.local_path(&base);
    let local = if rng.one_in(2) {
        dir.join(&text)
    } else {
        walk(rng, &dir)
    };
    if let Ok(url) = mirror.url_of(&local) {
        check_url(&url, &mirror, &format!("url_of({})", local.display()));
        assert_walk_stays_inside(&local);
        let copy = mirror.local_path(&url);
        assert_eq!(
            copy,
            normalise(&local),
            "url_of({}) names another file",
            local.display()
        );
    }
}

#[test]
fn fuzz_url_parse_resolve_and_mirror_stay_under_the_root() {
    let tokens = token_bytes();
    run("url", 40_000, |rng| url_case(rng, &tokens));
}

#[test]
fn fuzz_url_regressions() {
    let base = HttpUrl::parse("http://h/a/b").expect("base");
    let mirror = Mirror::new(Path::new(ROOT), &base);
    for reference in [
        "../../../../etc/passwd",
        "%2e%2e/%2e%2e/%2e%2e/x",
        ".%2e/.%2e/x",
        "/..",
        "//h/../..",
        "http://h/%2e%2e/",
        "a/../../..",
    ] {
        let url = base.resolve(reference).expect(reference);
        check_url(&url, &mirror, reference);
    }
    // Found by the fuzzer: a bracket left in the host printed as another
    // URL (`[[x]` as `[x`, which does not parse).
    for text in ["http://[[%z%25]/[", "http://[[x]/", "http://a]b/"] {
        assert!(HttpUrl::parse(text).is_err(), "{text}");
    }
    assert!(base.resolve("//[[x]/k").is_err());
    // Found by the fuzzer: a raw NUL got through `resolve` (`parse`
    // refuses it) into the path, which then did not round-trip.
    assert!(base.resolve("-00\0.%200\0e").is_err());
    assert!(mirror.url_of(Path::new("/run/hv/config/a\0b")).is_err());
    // Found by the fuzzer: paths that end inside the mirror but whose walk
    // leaves it (fetching creates every directory on the way).
    for local in [
        "/run/hv/config/../../../tmp/x/../../run/hv/config/k",
        "/run/hv/config/x/.././../\\../../config/guests/config/%2e%2e/../guests/\\..",
    ] {
        assert!(mirror.url_of(Path::new(local)).is_err(), "{local}");
    }
    // Stepping up to an ancestor of the root and back in stays on the way.
    let back_in = mirror.url_of(Path::new("/run/hv/config/../config/k"));
    assert_eq!(back_in.map(|u| u.to_string()).as_deref(), Ok("http://h/k"));
    let inside = mirror.url_of(Path::new("/run/hv/config/hv/guests/../example/k"));
    assert_eq!(
        inside.map(|u| u.to_string()).as_deref(),
        Ok("http://h/hv/example/k")
    );
}
