//! Fetching the configuration named by `hv.config=http://...` into RAM:
//! host.toml, the guests its `guests` list names, and their kernels,
//! initrds and cloud-init seed files, laid out like a config partition. While the server is
//! unreachable or failing (5xx), each request is retried with backoff.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use hvconfig::{ConfigError, GuestConfig, HostConfig};

use crate::config_source::http::{self, Timeouts};
use crate::config_source::signed::{self, FileError, Hashing, Hex, Manifest, SignError, Trust};
use crate::config_source::url::{self, HttpUrl, Mirror, UrlError, MAC_PLACEHOLDER};
use crate::config_source::{Integrity, Loaded};
use crate::host::ipconfig;

/// Root of the copy in RAM (/run is a tmpfs): `http://SERVER/a/b` is
/// stored as `MIRROR_DIR/a/b`.
pub const MIRROR_DIR: &str = "/run/hv/config";
/// Kernels and initrds; streamed to the tmpfs, never held in memory.
pub const MAX_BOOT_FILE: u64 = 512 * 1024 * 1024;
/// How many times a signed tree whose files do not match SHA256SUMS is
/// fetched again (the server may be mid-update) before the files that
/// match are used: with [`BACKOFF`], about a minute.
pub const MISMATCH_RETRIES: u32 = 6;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

impl Backoff {
    fn start(self) -> Delays {
        Delays {
            next: self.first,
            max: self.max,
        }
    }

    /// Calls `attempt` until it succeeds or fails for good; logs every
    /// failure that is retried.
    fn retry<T>(
        self,
        url: &HttpUrl,
        mut attempt: impl FnMut() -> Result<T, http::Error>,
    ) -> Result<T, http::Error> {
        let mut delays = self.start();
        loop {
            match attempt() {
                Err(e) if e.is_transient() => delays.wait(url, &e),
                other => return other,
            }
        }
    }
}

/// The growing waits of one retried step.
struct Delays {
    next: Duration,
    max: Duration,
}

impl Delays {
    fn wait(&mut self, what: &dyn fmt::Display, why: &dyn fmt::Display) {
        // Whole seconds in practice; no float formatting in PID 1 (12 KiB).
        let (n, unit) = match self.next.subsec_millis() {
            0 => (self.next.as_secs(), "s"),
            _ => (
                u64::try_from(self.next.as_millis()).unwrap_or(u64::MAX),
                "ms",
            ),
        };
        log::warn!("config: {what}: {why}; retrying in {n} {unit}");
        thread::sleep(self.next);
        self.next = self.next.saturating_mul(2).min(self.max);
    }
}

/// Why one file could not be fetched into the copy in RAM.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{}: {source}", .path.display())]
    Store { path: PathBuf, source: io::Error },
    #[error("{}", describe(.0))]
    Http(http::Error),
    #[error(transparent)]
    Check(FileError),
}

/// Why SHA256SUMS or its signature could not be had or is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}: {1}; the image requires a signed config (see docs/signing.md)")]
    Fetch(String, FetchError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Url(UrlError),
}

/// A signed tree being fetched: what SHA256SUMS says, and which files
/// did not match it.
struct Verify<'a> {
    manifest: &'a Manifest,
    failed: Vec<String>,
}

impl Verify<'_> {
    /// `url`'s path as SHA256SUMS lists it.
    fn rel(remote: &Remote, url: &HttpUrl) -> Result<String, FileError> {
        url.relative_to(&remote.base)
            .ok_or_else(|| FileError::Outside(url.to_string()))
    }

    fn fail(&mut self, rel: &str, e: &FileError, then: &str) -> ConfigError {
        if matches!(e, FileError::Mismatch { .. } | FileError::Unlisted) {
            self.failed.push(rel.to_string());
        }
        ConfigError::new(Path::new(rel), None, format!("{e}: {then}"))
    }
}

fn store_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Store {
        path: path.to_path_buf(),
        source,
    }
}

/// Where and how to fetch.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The directory holding host.toml, ending in `/`.
    pub base: HttpUrl,
    pub mirror: Mirror,
    pub backoff: Backoff,
    pub timeouts: Timeouts,
}

impl Remote {
    pub fn new(base: &HttpUrl, mirror_root: &Path) -> Remote {
        Remote {
            base: base.as_dir(),
            mirror: Mirror::new(mirror_root, base),
            backoff: BACKOFF,
            timeouts: http::TIMEOUTS,
        }
    }

    /// The local directory that stands for `base`, as a mount point would.
    pub fn dir(&self) -> PathBuf {
        self.mirror.local_path(&self.base)
    }
}

/// Turns `hv.config=` into the URL to fetch from, replacing `${mac}`
/// with the booting NIC's address. Waits (with backoff) for the kernel
/// to have configured a NIC: without one no request can succeed anyway.
pub fn resolve_source(text: &str, backoff: Backoff) -> Result<HttpUrl, UrlError> {
    let text = if text.contains(MAC_PLACEHOLDER) {
        let mut delays = backoff.start();
        let nic = loop {
            let route = Path::new(ipconfig::PROC_ROUTE);
            if let Some(nic) = ipconfig::boot_nic(route, Path::new(ipconfig::SYS_NET)) {
                break nic;
            }
            delays.wait(
                &format_args!("{MAC_PLACEHOLDER} in {text}"),
                &"no network interface configured by the kernel (ip=dhcp on the command line?)",
            );
        };
        log::info!("config: booted from {} ({})", nic.name, nic.mac);
        url::substitute_mac(text, &nic.mac)
    } else {
        text.to_string()
    };
    HttpUrl::parse(&text)
}

/// Everything is fetched before anything is used: guests start from a
/// complete, consistent copy. When `trust` requires a signature, SHA256SUMS
/// and its signature come first and are fetched until they verify (a
/// server mid-update must not leave the host without guests for good);
/// files that do not match are fetched again a few times, then left out.
pub fn fetch_all(remote: &Remote, trust: &Trust) -> Loaded {
    resolver(remote);
    if !trust.required() {
        return fetch_tree(remote, None);
    }
    if let Trust::Broken(why) = trust {
        let e = SignError::BrokenKey(why.clone());
        return Loaded::refused(url_error(&remote.base, format!("{e}: nothing started")));
    }
    let mut delays = remote.backoff.start();
    let mut mismatches = 0;
    loop {
        let manifest = match fetch_manifest(remote, trust) {
            Ok(m) => m,
            Err(e) => {
                delays.wait(&remote.base, &format_args!("{e}: nothing started yet"));
                continue;
            }
        };
        let mut verify = Verify {
            manifest: &manifest,
            failed: Vec::new(),
        };
        let loaded = fetch_tree(remote, Some(&mut verify));
        if verify.failed.is_empty() || mismatches >= MISMATCH_RETRIES {
            return loaded;
        }
        mismatches += 1;
        delays.wait(
            &remote.base,
            &format_args!(
                "{} not as {} says (mid-update?), fetching the tree again",
                verify.failed.join(", "),
                signed::SUMS
            ),
        );
    }
}

/// SHA256SUMS and its signature, verified.
fn fetch_manifest(remote: &Remote, trust: &Trust) -> Result<Manifest, ManifestError> {
    let get = |name: &str, limit| -> Result<Vec<u8>, ManifestError> {
        let url = remote.base.resolve(name).map_err(ManifestError::Url)?;
        remote
            .backoff
            .retry(&url, || {
                let mut body = Vec::new();
                http::get(&url, &mut body, limit, &remote.timeouts).map(|_| body)
            })
            .map_err(|e| ManifestError::Fetch(url.to_string(), FetchError::Http(e)))
    };
    let sums = get(signed::SUMS, signed::MAX_SUMS)?;
    let sig = get(signed::SUMS_SIG, signed::MAX_SIG)?;
    Ok(trust.verify(&sums, &sig)?)
}

/// Names in the URL need the name servers DHCP gave.
fn resolver(remote: &Remote) {
    if remote.base.host().parse::<IpAddr>().is_err() {
        match ipconfig::install_resolv_conf(
            Path::new(ipconfig::PROC_PNP),
            Path::new(ipconfig::RESOLV_CONF),
        ) {
            Ok(true) => log::info!(
                "config: name servers from DHCP in {}",
                ipconfig::RESOLV_CONF
            ),
            Ok(false) => {}
            Err(e) => log::warn!("config: {}: {e}", ipconfig::RESOLV_CONF),
        }
    }
}

/// One pass over the tree: host.toml, its guests, their files.
fn fetch_tree(remote: &Remote, mut verify: Option<&mut Verify<'_>>) -> Loaded {
    let mut loaded = Loaded {
        host: HostConfig::default(),
        guests: Vec::new(),
        errors: Vec::new(),
        host_toml_found: false,
        integrity: if verify.is_some() {
            Integrity::Verified
        } else {
            Integrity::Unsigned
        },
    };
    let Some(host_url) = join(remote, "host.toml", &mut loaded.errors) else {
        return loaded;
    };
    // host.toml sets the bridges and mounts every guest relies on: if it
    // does not check out, nothing is started.
    let text = match fetch_text(remote, &host_url, verify.as_deref_mut(), "nothing started") {
        Ok(text) => text,
        Err(e) => {
            if verify.is_some() {
                loaded.integrity = Integrity::Refused;
            }
            loaded.errors.push(e);
            return loaded;
        }
    };
    loaded.host_toml_found = true;
    match hvconfig::parse_host(Path::new(&host_url.to_string()), &text) {
        Ok(host) => loaded.host = host,
        // Without a valid host.toml there is no list of guests to fetch.
        Err(e) => {
            loaded.errors.push(e);
            return loaded;
        }
    }
    let mut fetched: Vec<HttpUrl> = Vec::new();
    for name in loaded.host.guests.clone() {
        let Some(guest_url) = join(remote, &format!("guests/{name}.toml"), &mut loaded.errors)
        else {
            continue;
        };
        match fetch_guest(remote, &guest_url, &mut fetched, verify.as_deref_mut()) {
            Ok(guest) => loaded.guests.push(guest),
            Err(e) => loaded.errors.push(e),
        }
    }
    loaded
}

fn url_error(url: &dyn fmt::Display, message: impl Into<String>) -> ConfigError {
    ConfigError::new(Path::new(&url.to_string()), None, message)
}

fn join(remote: &Remote, rel: &str, errors: &mut Vec<ConfigError>) -> Option<HttpUrl> {
    remote
        .base
        .resolve(rel)
        .map_err(|e| errors.push(url_error(&remote.base, e.to_string())))
        .ok()
}

/// Fetches a definition (at most hvconfig's size limit) and keeps a copy
/// in the mirror, where the vmm reads it again.
fn fetch_text(
    remote: &Remote,
    url: &HttpUrl,
    verify: Option<&mut Verify<'_>>,
    then: &str,
) -> Result<String, ConfigError> {
    let bytes = remote
        .backoff
        .retry(url, || {
            let mut body = Vec::new();
            http::get(url, &mut body, hvconfig::MAX_FILE_SIZE, &remote.timeouts).map(|_| body)
        })
        .map_err(|e| url_error(url, FetchError::Http(e).to_string()))?;
    log::info!("config: fetched {url} ({} bytes)", bytes.len());
    if let Some(verify) = verify {
        let rel = Verify::rel(remote, url).map_err(|e| verify.fail(&url.to_string(), &e, then))?;
        if let Err(e) = verify.manifest.check(&rel, &bytes) {
            return Err(verify.fail(&rel, &e, then));
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| url_error(url, "not UTF-8 text"))?;
    let local = remote.mirror.local_path(url);
    store(&local, text.as_bytes()).map_err(|e| url_error(url, e.to_string()))?;
    Ok(text)
}

fn describe(e: &http::Error) -> String {
    if e.is_not_found() {
        format!("{e} (not on the server)")
    } else {
        e.to_string()
    }
}

fn store(local: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    if let Some(dir) = local.parent() {
        fs::create_dir_all(dir).map_err(store_error(dir))?;
    }
    fs::write(local, bytes).map_err(store_error(local))
}

/// Fetches and parses one guest, then the kernel and initrd it names.
/// Errors name the guest's URL, with line and column for bad contents.
fn fetch_guest(
    remote: &Remote,
    url: &HttpUrl,
    fetched: &mut Vec<HttpUrl>,
    mut verify: Option<&mut Verify<'_>>,
) -> Result<GuestConfig, ConfigError> {
    let text = fetch_text(remote, url, verify.as_deref_mut(), "guest not started")?;
    let local = remote.mirror.local_path(url);
    let guest = hvconfig::parse_guest(&local, &text)
        .map_err(|e| ConfigError::new(Path::new(&url.to_string()), e.position(), e.message()))?;
    for file in guest.boot_files() {
        let (what, path) = (file.what, file.path);
        // Seed files are small; a kernel or initrd may take up to MAX_BOOT_FILE.
        let max = file.max_size.unwrap_or(MAX_BOOT_FILE);
        let file_url = remote
            .mirror
            .url_of(path)
            .map_err(|e| url_error(url, format!("{what} {e}")))?;
        // The vmm resolves the path as written, `..` and all, so every
        // directory on the way must exist in the copy.
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| url_error(url, format!("{}: {e}", dir.display())))?;
        }
        if fetched.contains(&file_url) {
            continue;
        }
        let checked = match verify.as_deref_mut() {
            None => None,
            Some(verify) => {
                let then = format!("{what} of guest {} not started", guest.name);
                let rel = Verify::rel(remote, &file_url)
                    .map_err(|e| verify.fail(&file_url.to_string(), &e, &then))?;
                let expected = verify
                    .manifest
                    .expected(&rel)
                    .map_err(|e| verify.fail(&rel, &e, &then))?;
                match fetch_file(remote, &file_url, Some(expected), max) {
                    Err(FetchError::Check(e)) => return Err(verify.fail(&rel, &e, &then)),
                    other => Some(other),
                }
            }
        };
        let result = match checked {
            Some(result) => result,
            None => fetch_file(remote, &file_url, None, max),
        };
        result.map_err(|e| url_error(url, format!("{what} {file_url}: {e}")))?;
        fetched.push(file_url);
    }
    Ok(guest)
}

/// Streams a kernel, initrd or seed file (at most `max` bytes) to its
/// place in the mirror. The file only
/// appears under its name once complete, and, when `expected` is given,
/// only if it has that hash: the copy checked is the copy used. A copy
/// already there with that hash (from an earlier pass) is kept.
fn fetch_file(
    remote: &Remote,
    url: &HttpUrl,
    expected: Option<Hex>,
    max: u64,
) -> Result<u64, FetchError> {
    let local = remote.mirror.local_path(url);
    if let Some(expected) = expected {
        let kept = File::open(&local).ok().and_then(|mut f| {
            let mut hashing = Hashing::new(io::sink());
            let size = io::copy(&mut f, &mut hashing).ok()?;
            (hashing.digest() == expected).then_some(size)
        });
        if let Some(size) = kept {
            log::info!("config: {url}: copy from an earlier pass kept ({size} bytes)");
            return Ok(size);
        }
    }
    let mut partial = local.clone().into_os_string();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    if let Some(dir) = local.parent() {
        fs::create_dir_all(dir).map_err(store_error(dir))?;
    }
    let (size, digest) = remote
        .backoff
        .retry(url, || {
            let file = File::create(&partial).map_err(http::Error::Sink)?;
            let mut file = Hashing::new(file);
            let size = http::get(url, &mut file, max, &remote.timeouts)?;
            Ok((size, file.digest()))
        })
        .map_err(|e| {
            let _ = fs::remove_file(&partial);
            FetchError::Http(e)
        })?;
    if let Some(expected) = expected {
        if let Err(e) = signed::compare(expected, digest) {
            let _ = fs::remove_file(&partial);
            return Err(FetchError::Check(e));
        }
    }
    fs::rename(&partial, &local).map_err(store_error(&local))?;
    log::info!("config: fetched {url} ({size} bytes)");
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_source::test_server::{Reply, Site};
    use std::net::TcpListener;

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };

    fn remote(port: u16, path: &str, root: &Path) -> Remote {
        let base = HttpUrl::parse(&format!("http://127.0.0.1:{port}{path}")).expect("url");
        let mut remote = Remote::new(&base, root);
        remote.backoff = FAST;
        remote
    }

    fn fetch_all_unsigned(remote: &Remote) -> Loaded {
        fetch_all(remote, &Trust::Any)
    }

    fn kernel_bytes() -> Vec<u8> {
        (0..200_000u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn fetches_host_guests_and_their_files() {
        let site = Site::default();
        site.put(
            "/hv/host.toml",
            Reply::Body(b"hostname = \"pxe1\"\nguests = [\"web\", \"db\", \"gone\"]\n".to_vec()),
        );
        site.put(
            "/hv/guests/web.toml",
            Reply::Chunked(
                b"[boot]\nkernel = \"../../images/bzImage\"\ninitrd = \"web/initrd.img\"\n"
                    .to_vec(),
                7,
            ),
        );
        site.put(
            "/hv/guests/db.toml",
            Reply::Body(
                b"[boot]\nkernel = \"../../images/bzImage\"\n[machine]\nvcpus = \"two\"\n".to_vec(),
            ),
        );
        site.put("/images/bzImage", Reply::Chunked(kernel_bytes(), 4096));
        site.put(
            "/hv/guests/web/initrd.img",
            Reply::Redirect("/initrds/web.img".into()),
        );
        site.put("/initrds/web.img", Reply::Body(b"initrd".to_vec()));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let remote = remote(port, "/hv", dir.path());
        assert_eq!(remote.dir(), dir.path().join("hv/"));

        let loaded = fetch_all(&remote, &Trust::Any);
        assert!(loaded.host_toml_found);
        assert_eq!(loaded.host.hostname, "pxe1");
        let names: Vec<&str> = loaded.guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let db = format!("http://127.0.0.1:{port}/hv/guests/db.toml:4:9: ");
        assert!(errors.iter().any(|e| e.starts_with(&db)), "{errors:?}");
        let gone = format!("http://127.0.0.1:{port}/hv/guests/gone.toml: HTTP 404");
        assert!(errors.iter().any(|e| e.starts_with(&gone)), "{errors:?}");

        // The copy reads like a config partition, through the paths the
        // vmm will use (`..` and all).
        let web = loaded.guests.first().expect("web");
        assert_eq!(web.file, dir.path().join("hv/guests/web.toml"));
        assert_eq!(
            fs::read(web.boot.kernel().expect("kernel")).expect("kernel"),
            kernel_bytes()
        );
        let initrd = web.boot.initrd().expect("initrd");
        assert_eq!(fs::read(initrd).expect("initrd"), b"initrd");
        assert!(hvconfig::load_guest(&web.file).is_ok());
        assert!(dir.path().join("hv/host.toml").is_file());
        // The kernel both guests share was fetched once.
        assert_eq!(site.requests("/images/bzImage"), 1);
        assert!(!dir.path().join("images/bzImage.part").exists());
    }

    #[test]
    fn cloud_init_seed_files_are_fetched_like_the_kernel_and_bounded() {
        let site = Site::default();
        site.put(
            "/hv/host.toml",
            Reply::Body(b"guests = [\"web\", \"big\"]\n".to_vec()),
        );
        site.put(
            "/hv/guests/web.toml",
            Reply::Body(
                b"[boot]\nkernel = \"k\"\n[cloud_init]\nuser_data = \"web/user-data\"\n\
                  network_config = \"../net/web.yaml\"\n"
                    .to_vec(),
            ),
        );
        site.put(
            "/hv/guests/big.toml",
            Reply::Body(
                b"[boot]\nkernel = \"k\"\n[cloud_init]\nuser_data = \"big.yaml\"\n".to_vec(),
            ),
        );
        site.put("/hv/guests/k", Reply::Body(b"kernel".to_vec()));
        site.put(
            "/hv/guests/web/user-data",
            Reply::Chunked(b"#cloud-config\nhostname: web\n".to_vec(), 5),
        );
        site.put("/hv/net/web.yaml", Reply::Body(b"version: 2\n".to_vec()));
        let over = usize::try_from(hvconfig::cloud_init::MAX_SEED_FILE_SIZE).expect("fits") + 1;
        site.put("/hv/guests/big.yaml", Reply::Body(vec![b'#'; over]));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all_unsigned(&remote(port, "/hv/", dir.path()));

        let names: Vec<&str> = loaded.guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        let web = loaded.guests.first().expect("web");
        let seed = web.cloud_init.as_ref().expect("seed");
        assert_eq!(
            fs::read(&seed.user_data).expect("user-data"),
            b"#cloud-config\nhostname: web\n"
        );
        let network = seed.network_config.as_ref().expect("network-config");
        assert_eq!(fs::read(network).expect("network-config"), b"version: 2\n");
        // What the jailed vmm will check and read, through the same paths.
        web.check_boot_files().expect("seed files in the mirror");
        assert_eq!(seed.read_files(&web.file).expect("read").len(), 2);

        let errors = error_texts(&loaded);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let big = format!(
            "http://127.0.0.1:{port}/hv/guests/big.toml: cloud_init user_data \
             http://127.0.0.1:{port}/hv/guests/big.yaml: "
        );
        assert!(errors[0].starts_with(&big), "{errors:?}");
        assert!(
            errors[0].contains("1048576"),
            "the limit is named: {errors:?}"
        );
        assert!(!dir.path().join("hv/guests/big.yaml").exists());
        assert!(!dir.path().join("hv/guests/big.yaml.part").exists());
    }

    #[test]
    fn a_signed_tree_covers_the_seed_files() {
        let signer = Signer::new();
        let site = Site::default();
        let files: [(&str, &[u8]); 4] = [
            ("host.toml", b"guests = [\"web\"]\n"),
            (
                "guests/web.toml",
                b"[boot]\nkernel = \"k\"\n[cloud_init]\nuser_data = \"u\"\n",
            ),
            ("guests/k", b"kernel"),
            ("guests/u", b"#cloud-config\n"),
        ];
        let mut sums = String::new();
        for (rel, bytes) in files {
            site.put(&format!("/hv/{rel}"), Reply::Body(bytes.to_vec()));
            sums.push_str(&sums_line(rel, bytes));
        }
        site.put(
            "/hv/SHA256SUMS.minisig",
            Reply::Body(signer.sign(sums.as_bytes())),
        );
        site.put("/hv/SHA256SUMS", Reply::Body(sums.into_bytes()));
        // Served, but not what was signed.
        site.put("/hv/guests/u", Reply::Body(b"#!/bin/sh\nevil\n".to_vec()));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all(&remote(port, "/hv/", dir.path()), &signer.trust());
        assert!(loaded.guests.is_empty());
        let e = error_texts(&loaded);
        assert!(e[0].starts_with("guests/u: sha256 mismatch"), "{e:?}");
        assert!(
            e[0].ends_with(": cloud_init user_data of guest web not started"),
            "{e:?}"
        );
        assert!(!dir.path().join("hv/guests/u").exists());
    }

    #[test]
    fn a_missing_host_toml_is_an_error_naming_its_url() {
        let site = Site::default();
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all_unsigned(&remote(port, "/", dir.path()));
        assert!(!loaded.host_toml_found);
        assert!(loaded.guests.is_empty());
        let e = loaded.errors.first().expect("error").to_string();
        assert_eq!(
            e,
            format!("http://127.0.0.1:{port}/host.toml: HTTP 404 Canned (not on the server)")
        );
    }

    #[test]
    fn bad_files_and_unreachable_kernels_name_the_guest_url() {
        let site = Site::default();
        site.put(
            "/host.toml",
            Reply::Body(b"guests = [\"a\", \"b\", \"c\"]\n".to_vec()),
        );
        site.put(
            "/guests/a.toml",
            Reply::Body(b"[boot]\nkernel = \"/boot/k\"\n".to_vec()),
        );
        site.put(
            "/guests/b.toml",
            Reply::Body(b"[boot]\nkernel = \"k\"\n".to_vec()),
        );
        site.put("/guests/c.toml", Reply::Body(vec![0xff, 0xfe]));
        site.put("/guests/k", Reply::Status(403));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all_unsigned(&remote(port, "/", dir.path()));
        assert!(loaded.guests.is_empty());
        let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        let url = |s: &str| format!("http://127.0.0.1:{port}/guests/{s}");
        assert!(
            errors[0].starts_with(&format!("{}: kernel /boot/k is not below", url("a.toml"))),
            "{errors:?}"
        );
        assert_eq!(
            errors[1],
            format!("{}: kernel {}: HTTP 403 Canned", url("b.toml"), url("k"))
        );
        assert_eq!(errors[2], format!("{}: not UTF-8 text", url("c.toml")));
    }

    #[test]
    fn a_bad_host_toml_is_reported_at_its_url() {
        let site = Site::default();
        site.put("/host.toml", Reply::Body(b"hostname = 5\n".to_vec()));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all_unsigned(&remote(port, "/", dir.path()));
        let e = loaded.errors.first().expect("error").to_string();
        assert!(
            e.starts_with(&format!("http://127.0.0.1:{port}/host.toml:1:")),
            "{e}"
        );
    }

    #[test]
    fn oversized_kernels_are_refused_not_stored() {
        let site = Site::default();
        site.put("/host.toml", Reply::Body(b"guests = [\"a\"]\n".to_vec()));
        site.put(
            "/guests/a.toml",
            Reply::Body(vec![
                b'#';
                usize::try_from(hvconfig::MAX_FILE_SIZE).expect("fits")
                    + 1
            ]),
        );
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all_unsigned(&remote(port, "/", dir.path()));
        let e = loaded.errors.first().expect("error").to_string();
        assert!(e.contains("larger than the limit of 262144 bytes"), "{e}");
        assert!(!dir.path().join("guests/a.toml").exists());
    }

    #[test]
    fn retries_until_the_server_is_up_and_healthy() {
        // Take a free port, and only listen on it a while later.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let site = Site::default();
        site.put("/host.toml", Reply::Body(b"guests = [\"a\"]\n".to_vec()));
        site.put(
            "/guests/a.toml",
            Reply::FailFirst(
                3,
                Box::new(Reply::Body(b"[boot]\nkernel = \"k\"\n".to_vec())),
            ),
        );
        site.put(
            "/guests/k",
            Reply::FailFirst(2, Box::new(Reply::Body(b"kernel".to_vec()))),
        );
        let late = site.clone();
        let starter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            late.serve(TcpListener::bind(("127.0.0.1", port)).expect("bind late"));
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all_unsigned(&remote(port, "/", dir.path()));
        starter.join().expect("starter");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.guests.len(), 1);
        assert_eq!(site.requests("/guests/a.toml"), 4);
        assert_eq!(site.requests("/guests/k"), 3);
        assert_eq!(
            fs::read(dir.path().join("guests/k")).expect("kernel"),
            b"kernel"
        );
    }

    use crate::config_source::signed::tests::{sums_line, Signer};

    /// A signed tree at /hv/: two guests, one kernel above the root.
    fn signed_site(signer: &Signer) -> (Site, String) {
        let site = Site::default();
        let files: [(&str, &[u8]); 4] = [
            ("host.toml", b"guests = [\"web\", \"db\"]\n"),
            ("guests/web.toml", b"[boot]\nkernel = \"k\"\n"),
            (
                "guests/db.toml",
                b"[boot]\nkernel = \"k\"\ninitrd = \"../../up\"\n",
            ),
            ("guests/k", b"kernel"),
        ];
        let mut sums = String::new();
        for (rel, bytes) in files {
            site.put(&format!("/hv/{rel}"), Reply::Body(bytes.to_vec()));
            sums.push_str(&sums_line(rel, bytes));
        }
        site.put("/up", Reply::Body(b"initrd".to_vec()));
        let sig = signer.sign(sums.as_bytes());
        site.put("/hv/SHA256SUMS.minisig", Reply::Body(sig));
        (site, sums)
    }

    fn error_texts(loaded: &Loaded) -> Vec<String> {
        loaded.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_signed_tree_is_checked_file_by_file() {
        let signer = Signer::new();
        let (site, sums) = signed_site(&signer);
        site.put("/hv/SHA256SUMS", Reply::Body(sums.into_bytes()));
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all(&remote(port, "/hv/", dir.path()), &signer.trust());
        assert_eq!(loaded.integrity, Integrity::Verified);
        let names: Vec<&str> = loaded.guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        assert_eq!(
            error_texts(&loaded),
            [format!(
                "http://127.0.0.1:{port}/up: http://127.0.0.1:{port}/up is outside the config \
                 root, where SHA256SUMS cannot cover it: initrd of guest db not started"
            )]
        );
        assert_eq!(site.requests("/up"), 0);
        assert_eq!(
            fs::read(dir.path().join("hv/guests/k")).expect("k"),
            b"kernel"
        );
    }

    #[test]
    fn a_tampered_tree_is_fetched_again_then_only_its_good_part_used() {
        let signer = Signer::new();
        let (site, sums) = signed_site(&signer);
        site.put("/hv/SHA256SUMS", Reply::Body(sums.into_bytes()));
        site.put("/hv/guests/k", Reply::Body(b"evil kernel".to_vec()));
        site.put(
            "/hv/guests/db.toml",
            Reply::Body(b"[boot]\nkernel = \"k\"\n".to_vec()),
        );
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all(&remote(port, "/hv/", dir.path()), &signer.trust());
        assert!(loaded.guests.is_empty());
        let e = error_texts(&loaded);
        assert!(
            e[0].starts_with("guests/k: sha256 mismatch (SHA256SUMS says "),
            "{e:?}"
        );
        assert!(e[0].ends_with(": kernel of guest web not started"), "{e:?}");
        assert!(e[1].starts_with("guests/db.toml: sha256 mismatch"), "{e:?}");
        assert!(e[1].ends_with(": guest not started"), "{e:?}");
        let tries = usize::try_from(MISMATCH_RETRIES).expect("small") + 1;
        assert_eq!(site.requests("/hv/SHA256SUMS"), tries);
        // The bad copy never appears under the kernel's name.
        assert!(!dir.path().join("hv/guests/k").exists());
        assert!(!dir.path().join("hv/guests/k.part").exists());
    }

    #[test]
    fn an_unsigned_tree_is_waited_for_and_a_bad_host_toml_stops_all() {
        let signer = Signer::new();
        let (site, sums) = signed_site(&signer);
        site.put(
            "/hv/host.toml",
            Reply::Body(b"hostname = \"evil\"\n".to_vec()),
        );
        let port = site.start();
        let late = site.clone();
        let publisher = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            late.put("/hv/SHA256SUMS", Reply::Body(sums.into_bytes()));
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all(&remote(port, "/hv/", dir.path()), &signer.trust());
        publisher.join().expect("publisher");
        assert!(site.requests("/hv/SHA256SUMS") > 1);
        assert_eq!(loaded.integrity, Integrity::Refused);
        assert!(loaded.guests.is_empty());
        assert_eq!(loaded.host, HostConfig::default());
        let e = error_texts(&loaded);
        assert!(e[0].starts_with("host.toml: sha256 mismatch"), "{e:?}");
        assert!(e[0].ends_with(": nothing started"), "{e:?}");
    }

    #[test]
    fn a_broken_key_refuses_at_once() {
        let site = Site::default();
        let port = site.start();
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = fetch_all(
            &remote(port, "/", dir.path()),
            &Trust::Broken("not a key".into()),
        );
        assert_eq!(loaded.integrity, Integrity::Refused);
        let e = error_texts(&loaded);
        assert!(
            e[0].contains("baked into the image but unusable: not a key"),
            "{e:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let mut d = Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
        .start();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(d.next.as_millis());
            d.wait(&"test", &"down");
        }
        assert_eq!(seen, [1, 2, 4, 5, 5]);
        assert_eq!(BACKOFF.first, Duration::from_secs(1));
        assert_eq!(BACKOFF.max, Duration::from_secs(30));
    }

    #[test]
    fn source_urls_are_checked() {
        let e = resolve_source("https://h/", FAST)
            .expect_err("https")
            .to_string();
        assert!(e.contains("https is not supported"), "{e}");
        let url = resolve_source("http://10.0.2.2:8000/hv", FAST).expect("url");
        assert_eq!(url.to_string(), "http://10.0.2.2:8000/hv");
    }
}
