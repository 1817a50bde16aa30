//! Signed configuration trees. When the image has a minisign public key
//! baked in ([`PUBKEY_PATH`]), the config root (the HVCONFIG partition or
//! the `hv.config=` URL) must hold `SHA256SUMS` (`sha256sum` format, paths
//! relative to the root) and `SHA256SUMS.minisig` (`minisign -Sm
//! SHA256SUMS`). The signature is checked first; then every file is
//! checked against its line as it is read for use. Pure: the caller reads
//! the bytes, this module decides.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

/// Where `hv-image build --config-pubkey` puts the key in the initramfs.
pub const PUBKEY_PATH: &str = "/etc/hv/config.pub";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.minisig";
/// A line per file; a config tree has tens of files, not thousands.
pub const MAX_SUMS: u64 = 256 * 1024;
pub const MAX_ENTRIES: usize = 4096;
/// A minisign signature file is about 300 bytes.
pub const MAX_SIG: u64 = 4096;
/// A minisign public key file is about 100 bytes.
pub const MAX_KEY: u64 = 4096;

/// What init requires of a config tree, decided once at boot.
#[derive(Clone, Debug)]
pub enum Trust {
    /// No key baked in: every tree is used as it is (as before signing).
    Any,
    /// Only trees whose SHA256SUMS this key signed.
    Key(Box<minisign_verify::PublicKey>),
    /// A key file is there but unusable: nothing can be verified, so
    /// nothing is used.
    Broken(String),
}

/// Why a tree's signature (or SHA256SUMS itself) is refused: nothing in
/// the tree is used.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{PUBKEY_PATH} is baked into the image but unusable: {0}")]
    BrokenKey(String),
    #[error("{0}: missing ({1}); the image requires a signed config (see docs/signing.md)")]
    Missing(&'static str, String),
    #[error("{0}: larger than {1} bytes")]
    TooLarge(&'static str, u64),
    #[error("{SUMS_SIG}: not a minisign signature")]
    BadSignatureFile,
    #[error("{SUMS_SIG}: made with another key than the one baked into the image")]
    WrongKey,
    #[error("{SUMS_SIG}: legacy (not prehashed) signature; sign with minisign -Sm")]
    Legacy,
    #[error(
        "{SUMS_SIG}: the signature does not match {SUMS} (tampered, or signed by another key)"
    )]
    Invalid,
    #[error("{SUMS}: {0}")]
    Sums(#[from] SumsError),
}

/// What is wrong with SHA256SUMS as text.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SumsError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("more than {MAX_ENTRIES} lines")]
    TooMany,
    #[error("no files listed")]
    Empty,
    #[error("line {0}: {1}")]
    Line(usize, LineError),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected 64 hex digits, two spaces (or space and '*') and a path")]
    Format,
    #[error("escaped (backslash) lines are not supported")]
    Escaped,
    #[error("{0:?}: only relative paths without '.', '..', empty parts or control characters")]
    BadPath(String),
    #[error("{0:?} is listed twice")]
    Duplicate(String),
}

/// Why one file is not used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not listed in {SUMS}")]
    Unlisted,
    #[error("sha256 mismatch ({SUMS} says {expected}, file has {actual})")]
    Mismatch { expected: Hex, actual: Hex },
    #[error("listed in {SUMS} but missing")]
    Missing,
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    #[error("{0} is outside the config root, where {SUMS} cannot cover it")]
    Outside(String),
}

impl FileError {
    pub fn io(e: io::Error) -> FileError {
        if e.kind() == io::ErrorKind::NotFound {
            FileError::Missing
        } else {
            FileError::Io(e)
        }
    }
}

/// A SHA-256 digest, shown in hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex(pub [u8; 32]);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Trust {
    /// Reads the baked key; no file means no key.
    pub fn load(path: &Path) -> Trust {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Trust::Any,
            Err(e) => return Trust::Broken(format!("cannot open: {e}")),
        };
        let mut text = String::new();
        if let Err(e) = file.take(MAX_KEY).read_to_string(&mut text) {
            return Trust::Broken(format!("cannot read: {e}"));
        }
        Trust::parse(&text)
    }

    /// A key as `minisign -G` writes it: an untrusted comment line, then
    /// the key in base64.
    pub fn parse(text: &str) -> Trust {
        let mut lines = text.lines();
        let comment = lines.next().unwrap_or_default();
        let key = lines.next().unwrap_or_default().trim();
        if !comment.starts_with("untrusted comment:") || lines.any(|l| !l.trim().is_empty()) {
            return Trust::Broken("not a minisign public key file (minisign -G)".into());
        }
        match minisign_verify::PublicKey::from_base64(key) {
            Ok(key) => Trust::Key(Box::new(key)),
            Err(e) => Trust::Broken(format!("not a minisign public key: {e}")),
        }
    }

    /// Whether trees must be signed.
    pub fn required(&self) -> bool {
        !matches!(self, Trust::Any)
    }

    /// Checks the signature of `sums`, then parses it. Only called when
    /// [`Trust::required`].
    pub fn verify(&self, sums: &[u8], sig: &[u8]) -> Result<Manifest, SignError> {
        let key = match self {
            Trust::Key(key) => key,
            Trust::Broken(why) => return Err(SignError::BrokenKey(why.clone())),
            Trust::Any => return Manifest::parse(sums).map_err(SignError::from),
        };
        check_len(SUMS, sums.len(), MAX_SUMS)?;
        check_len(SUMS_SIG, sig.len(), MAX_SIG)?;
        let sig = std::str::from_utf8(sig).map_err(|_| SignError::BadSignatureFile)?;
        let sig =
            minisign_verify::Signature::decode(sig).map_err(|_| SignError::BadSignatureFile)?;
        key.verify(sums, &sig, false).map_err(|e| match e {
            minisign_verify::Error::UnexpectedKeyId => SignError::WrongKey,
            minisign_verify::Error::UnexpectedAlgorithm => SignError::Legacy,
            _ => SignError::Invalid,
        })?;
        Ok(Manifest::parse(sums)?)
    }
}

fn check_len(what: &'static str, len: usize, max: u64) -> Result<(), SignError> {
    if len as u64 > max {
        return Err(SignError::TooLarge(what, max));
    }
    Ok(())
}

/// SHA256SUMS, parsed: relative path → digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<String, Hex>,
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.chars().any(|c| c.is_control())
        && path.split('/').all(|part| !matches!(part, "" | "." | ".."))
}

impl Manifest {
    /// Parses `sha256sum` output strictly: one `HEX  PATH` (or
    /// `HEX *PATH`) per line, relative paths, no duplicates.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, SumsError> {
        let text = std::str::from_utf8(bytes).map_err(|_| SumsError::NotUtf8)?;
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            if entries.len() >= MAX_ENTRIES {
                return Err(SumsError::TooMany);
            }
            let fail = |e| SumsError::Line(number, e);
            if line.starts_with('\\') {
                return Err(fail(LineError::Escaped));
            }
            let (hex, rest) = line.split_at_checked(64).ok_or(fail(LineError::Format))?;
            let digest = hex_digest(hex).ok_or(fail(LineError::Format))?;
            let path = rest
                .strip_prefix("  ")
                .or_else(|| rest.strip_prefix(" *"))
                .ok_or(fail(LineError::Format))?;
            if !valid_path(path) {
                return Err(fail(LineError::BadPath(path.to_string())));
            }
            if entries.insert(path.to_string(), Hex(digest)).is_some() {
                return Err(fail(LineError::Duplicate(path.to_string())));
            }
        }
        if entries.is_empty() {
            return Err(SumsError::Empty);
        }
        Ok(Manifest { entries })
    }

    pub fn expected(&self, rel: &str) -> Result<Hex, FileError> {
        self.entries.get(rel).copied().ok_or(FileError::Unlisted)
    }

    pub fn contains(&self, rel: &str) -> bool {
        self.entries.contains_key(rel)
    }

    /// The listed paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Checks bytes already in memory (the copy that will be parsed).
    pub fn check(&self, rel: &str, bytes: &[u8]) -> Result<(), FileError> {
        let expected = self.expected(rel)?;
        compare(expected, Hex(Sha256::digest(bytes).into()))
    }

    /// Checks a file by reading it to the end.
    pub fn check_reader(&self, rel: &str, mut reader: impl Read) -> Result<(), FileError> {
        let expected = self.expected(rel)?;
        let mut hashing = Hashing::new(io::sink());
        io::copy(&mut reader, &mut hashing).map_err(FileError::io)?;
        compare(expected, hashing.digest())
    }
}

/// The error for `actual` when `expected` was listed.
pub fn compare(expected: Hex, actual: Hex) -> Result<(), FileError> {
    if expected == actual {
        Ok(())
    } else {
        Err(FileError::Mismatch { expected, actual })
    }
}

/// A writer that hashes what passes through it: a download is checked
/// as it is stored, and the stored copy is the one used.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn digest(&self) -> Hex {
        Hex(self.hasher.clone().finalize().into())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `path` (as a guest file names it, `..` and all) relative to `root`,
/// taken apart lexically, as SHA256SUMS lists it.
pub fn relative(root: &Path, path: &Path) -> Result<String, FileError> {
    let outside = || FileError::Outside(path.display().to_string());
    let normal = |p: &Path| -> Option<Vec<String>> {
        let mut parts: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop()?;
                }
                Component::Normal(s) => parts.push(s.to_str()?.to_string()),
                Component::Prefix(_) => return None,
            }
        }
        Some(parts)
    };
    let root = normal(root).ok_or_else(outside)?;
    let full = normal(path).ok_or_else(outside)?;
    let rest = full.strip_prefix(root.as_slice()).ok_or_else(outside)?;
    if rest.is_empty() {
        return Err(outside());
    }
    Ok(rest.join("/"))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::process::Command;

    /// A throwaway key pair made by the real minisign (Debian package
    /// `minisign`), without a password.
    pub struct Signer {
        pub dir: tempfile::TempDir,
    }

    impl Signer {
        pub fn new() -> Signer {
            let dir = tempfile::tempdir().expect("tempdir");
            let status = Command::new("minisign")
                .args(["-G", "-W", "-p"])
                .arg(dir.path().join("k.pub"))
                .arg("-s")
                .arg(dir.path().join("k.key"))
                .output()
                .expect("minisign (apt-get install minisign)");
            assert!(status.status.success(), "{status:?}");
            Signer { dir }
        }

        pub fn trust(&self) -> Trust {
            Trust::load(&self.dir.path().join("k.pub"))
        }

        /// Signs `sums`; returns the .minisig contents.
        pub fn sign(&self, sums: &[u8]) -> Vec<u8> {
            let file = self.dir.path().join("SHA256SUMS");
            std::fs::write(&file, sums).expect("write");
            let out = Command::new("minisign")
                .arg("-S")
                .arg("-s")
                .arg(self.dir.path().join("k.key"))
                .arg("-m")
                .arg(&file)
                .output()
                .expect("minisign -S");
            assert!(out.status.success(), "{out:?}");
            std::fs::read(self.dir.path().join("SHA256SUMS.minisig")).expect("sig")
        }
    }

    pub fn sums_line(path: &str, bytes: &[u8]) -> String {
        format!("{}  {path}\n", Hex(Sha256::digest(bytes).into()))
    }

    fn tree() -> Vec<u8> {
        [
            sums_line("host.toml", b"guests = [\"web\"]\n"),
            sums_line("guests/web.toml", b"[boot]\nkernel = \"../k\"\n"),
            sums_line("k", b"kernel"),
        ]
        .concat()
        .into_bytes()
    }

    #[test]
    fn a_good_tree_verifies_and_every_file_is_checked() {
        let signer = Signer::new();
        let trust = signer.trust();
        assert!(matches!(trust, Trust::Key(_)));
        assert!(trust.required());
        let sums = tree();
        let m = trust.verify(&sums, &signer.sign(&sums)).expect("verify");
        assert_eq!(
            m.paths().collect::<Vec<_>>(),
            ["guests/web.toml", "host.toml", "k"]
        );
        m.check("host.toml", b"guests = [\"web\"]\n").expect("host");
        m.check_reader("k", &b"kernel"[..]).expect("kernel");
        let mut out = Hashing::new(Vec::new());
        out.write_all(b"kernel").expect("write");
        compare(m.expected("k").expect("k"), out.digest()).expect("stream");
    }

    #[test]
    fn a_tampered_file_names_both_hashes() {
        let m = Manifest::parse(&tree()).expect("parse");
        let e = m.check("guests/web.toml", b"[boot]\nkernel = \"/evil\"\n");
        let e = e.expect_err("tampered").to_string();
        let said = Hex(Sha256::digest(b"[boot]\nkernel = \"../k\"\n").into());
        let has = Hex(Sha256::digest(b"[boot]\nkernel = \"/evil\"\n").into());
        assert_eq!(
            e,
            format!("sha256 mismatch (SHA256SUMS says {said}, file has {has})")
        );
        let e = m.check_reader("k", &b"kernel!"[..]).expect_err("kernel");
        assert!(matches!(e, FileError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn an_unlisted_file_is_refused() {
        let m = Manifest::parse(&tree()).expect("parse");
        let e = m.check("guests/db.toml", b"").expect_err("unlisted");
        assert_eq!(e.to_string(), "not listed in SHA256SUMS");
        // A kernel a guest names but SHA256SUMS does not list.
        let root = Path::new("/mnt/config");
        let rel = relative(root, &root.join("guests/../other/bzImage")).expect("rel");
        assert_eq!(rel, "other/bzImage");
        assert!(matches!(
            m.check_reader(&rel, &b""[..]),
            Err(FileError::Unlisted)
        ));
        let missing = m
            .check_reader("k", FailingReader)
            .expect_err("missing")
            .to_string();
        assert_eq!(missing, "listed in SHA256SUMS but missing");
    }

    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::NotFound.into())
        }
    }

    #[test]
    fn paths_outside_the_root_cannot_be_covered() {
        let root = Path::new("/run/hv/config/hv/");
        for bad in [
            "/boot/bzImage",
            "/run/hv/config/hv/guests/../../k",
            "/run/hv/config/hv",
        ] {
            let e = relative(root, Path::new(bad)).expect_err(bad).to_string();
            assert!(e.contains("outside the config root"), "{bad}: {e}");
        }
        assert_eq!(
            relative(root, Path::new("/run/hv/config/hv/./guests/../k/./b")).expect("ok"),
            "k/b"
        );
    }

    #[test]
    fn a_bad_signature_or_another_key_is_refused() {
        let signer = Signer::new();
        let sums = tree();
        let sig = signer.sign(&sums);
        // One byte of SHA256SUMS changed after signing.
        let mut changed = sums.clone();
        if let Some(b) = changed.first_mut() {
            *b = if *b == b'0' { b'1' } else { b'0' };
        }
        let e = signer.trust().verify(&changed, &sig).expect_err("changed");
        assert!(matches!(e, SignError::Invalid), "{e}");
        // Signed by someone else's key.
        let other = Signer::new();
        let e = signer
            .trust()
            .verify(&sums, &other.sign(&sums))
            .expect_err("other key");
        assert_eq!(
            e.to_string(),
            "SHA256SUMS.minisig: made with another key than the one baked into the image"
        );
        for junk in [&b""[..], b"untrusted comment: x\nAAAA\n", &[0xff; 10]] {
            let e = signer.trust().verify(&sums, junk).expect_err("junk");
            assert!(matches!(e, SignError::BadSignatureFile), "{e}");
        }
        let big = vec![b'x'; 5000];
        assert!(matches!(
            signer.trust().verify(&sums, &big),
            Err(SignError::TooLarge(SUMS_SIG, _))
        ));
    }

    #[test]
    fn broken_or_absent_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!Trust::load(&dir.path().join("none.pub")).required());
        for bad in [
            "",
            "RWQ\n",
            "untrusted comment: k\nnot base64!\n",
            "untrusted comment: k\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\nextra\n",
        ] {
            let trust = Trust::parse(bad);
            assert!(matches!(trust, Trust::Broken(_)), "{bad:?}");
            assert!(trust.required());
            let e = trust.verify(b"", b"").expect_err("broken").to_string();
            assert!(e.contains("baked into the image but unusable"), "{e}");
        }
        assert!(matches!(
            Trust::parse(
                "untrusted comment: k\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n"
            ),
            Trust::Key(_)
        ));
    }

    #[test]
    fn malformed_sums_are_refused_with_the_line() {
        let h = "a".repeat(64);
        for (text, want) in [
            (format!("{h}  a\n{h}  a\n"), "line 2: \"a\" is listed twice"),
            (
                format!("{h}  /etc/passwd\n"),
                "line 1: \"/etc/passwd\": only",
            ),
            (format!("{h}  ../k\n"), "line 1: \"../k\""),
            (format!("{h}  a/../k\n"), "line 1: \"a/../k\""),
            (format!("{h}  ./k\n"), "line 1: \"./k\""),
            (format!("{h}  a//k\n"), "line 1: \"a//k\""),
            (format!("{h}  \n"), "line 1: \"\""),
            (format!("{h} a\n"), "line 1: expected 64 hex"),
            (format!("{}  a\n", "g".repeat(64)), "line 1: expected"),
            (format!("{}  a\n", "a".repeat(63)), "line 1: expected"),
            (format!("\n{h}  a\n"), "line 1: expected"),
            (format!("\\{h}  a\\nb\n"), "line 1: escaped"),
            ("# comment\n".to_string(), "line 1: expected"),
            (String::new(), "no files listed"),
        ] {
            let e = Manifest::parse(text.as_bytes())
                .expect_err(&text)
                .to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert_eq!(Manifest::parse(&[0xff, 0xfe]), Err(SumsError::NotUtf8));
        let many: String = (0..=MAX_ENTRIES).map(|i| format!("{h}  f{i}\n")).collect();
        assert_eq!(Manifest::parse(many.as_bytes()), Err(SumsError::TooMany));
        // Binary-mode lines and upper-case hex are what sha256sum -b and
        // some tools write.
        let m = Manifest::parse(format!("{}  a\n{} *b c\n", h.to_uppercase(), h).as_bytes())
            .expect("ok");
        assert_eq!(m.paths().collect::<Vec<_>>(), ["a", "b c"]);
    }
}
