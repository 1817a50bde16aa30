//! Finding, mounting and reading the configuration partition.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hvconfig::{ConfigError, HostConfig};
use nix::mount::{mount, MsFlags};

use hvconfig::DeviceSource;

use super::probe::{self, BlockDevice};
use super::signed::{self, FileError, Manifest, Trust};
use super::{Found, Integrity, Loaded};

/// Where the config partition is mounted (read-only).
pub const CONFIG_DIR: &str = "/mnt/config";
pub const SYS_BLOCK: &str = "/sys/class/block";
pub const DEV_DIR: &str = "/dev";

/// The config partition, once mounted.
#[derive(Clone, Debug)]
pub struct ConfigMount {
    pub dir: PathBuf,
    pub device: BlockDevice,
}

/// Looks for the device `spec` names among the present block devices; a
/// label found on more than one device is an error naming them.
pub fn find_device(spec: &DeviceSource) -> Result<Option<BlockDevice>, probe::Ambiguous> {
    let devices = probe::scan(Path::new(SYS_BLOCK), Path::new(DEV_DIR));
    if let Some(dev) = probe::find(spec, &devices)? {
        return Ok(Some(dev.clone()));
    }
    // A path that is not a /sys/class/block node name (a by-id link, or
    // a device not listed yet) is probed directly.
    if let DeviceSource::Path(path) = spec {
        let Ok(file) = fs::File::open(path) else {
            return Ok(None);
        };
        let fs = probe::probe_fs(&file).ok().flatten();
        return Ok(Some(BlockDevice {
            name: path.display().to_string(),
            node: path.clone(),
            disk: None,
            part_label: None,
            part_uuid: None,
            fs,
        }));
    }
    Ok(None)
}

/// Mounts `device` read-only at `dir`: the config partition is the boot
/// medium, which init never writes to.
pub fn mount_config(device: &BlockDevice, dir: &Path) -> io::Result<ConfigMount> {
    let fstype = device.fs.as_ref().map_or("vfat", |f| f.fstype.mount_name());
    fs::create_dir_all(dir)?;
    mount(
        Some(device.node.as_path()),
        dir,
        Some(fstype),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        // Readable by the unprivileged vmm users; nothing is executed.
        (fstype == "vfat").then_some("fmask=0133,dmask=0022"),
    )
    .map_err(io::Error::from)?;
    Ok(ConfigMount {
        dir: dir.to_path_buf(),
        device: device.clone(),
    })
}

/// The config partition is there but would not mount.
#[derive(Debug, thiserror::Error)]
#[error("config partition {} ({spec}): mount: {source}", .node.display())]
pub struct MountError {
    pub node: PathBuf,
    pub spec: DeviceSource,
    pub source: io::Error,
}

/// One look for the config partition: find it, mount it, read it.
pub fn look(spec: &DeviceSource, trust: &Trust) -> Found {
    let dev = match find_device(spec) {
        Ok(Some(dev)) => dev,
        Ok(None) => return Found::Nothing,
        Err(e) => return Found::Ambiguous(e),
    };
    match mount_config(&dev, Path::new(CONFIG_DIR)) {
        Ok(mount) => {
            let loaded = load(&mount.dir, trust);
            Found::Mounted(mount, Box::new(loaded))
        }
        Err(source) => Found::MountFailed(MountError {
            node: dev.node,
            spec: spec.clone(),
            source,
        }),
    }
}

/// Reads `dir/host.toml` (optional) and every `dir/guests/*.toml`; when
/// `trust` requires it, only what a signed `dir/SHA256SUMS` covers.
pub fn load(dir: &Path, trust: &Trust) -> Loaded {
    if trust.required() {
        return load_signed(dir, trust);
    }
    let host_path = dir.join("host.toml");
    let mut errors = Vec::new();
    let host_toml_found = host_path.exists();
    let host = if host_toml_found {
        hvconfig::load_host(&host_path).unwrap_or_else(|e| {
            errors.push(e);
            HostConfig::default()
        })
    } else {
        HostConfig::default()
    };
    let mut guests = Vec::new();
    for result in hvconfig::load_guests_dir(&dir.join("guests")) {
        match result {
            Ok(guest) => guests.push(guest),
            Err(e) => errors.push(e),
        }
    }
    Loaded {
        host,
        guests,
        errors,
        host_toml_found,
        integrity: Integrity::Unsigned,
    }
}

/// Reads at most `max` bytes of `path`, and says so if there is more.
fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

fn error(rel: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(Path::new(rel), None, message)
}

/// The signature first, then each file as it is read: host.toml, each
/// guest file, the kernel and initrd each names. The partition is
/// mounted read-only, so what the vmm reads later is what was checked.
fn load_signed(dir: &Path, trust: &Trust) -> Loaded {
    let read_sig_file = |name: &'static str, max| {
        read_bounded(&dir.join(name), max)
            .map_err(|e| signed::SignError::Missing(name, e.to_string()))
    };
    let manifest = read_sig_file(signed::SUMS, signed::MAX_SUMS)
        .and_then(|sums| Ok((sums, read_sig_file(signed::SUMS_SIG, signed::MAX_SIG)?)))
        .and_then(|(sums, sig)| trust.verify(&sums, &sig));
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => {
            return Loaded::refused(error(
                &dir.display().to_string(),
                format!("{e}: nothing started"),
            ))
        }
    };
    let mut loaded = Loaded {
        host: HostConfig::default(),
        guests: Vec::new(),
        errors: Vec::new(),
        host_toml_found: false,
        integrity: Integrity::Verified,
    };
    // host.toml sets the bridges and mounts every guest relies on: if it
    // does not check out, nothing is started.
    let host_path = dir.join("host.toml");
    let host_text = match read_bounded(&host_path, hvconfig::MAX_FILE_SIZE) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !manifest.contains("host.toml") => None,
        Err(e) => {
            loaded.integrity = Integrity::Refused;
            loaded.errors.push(error(
                "host.toml",
                format!("{}: nothing started", FileError::io(e)),
            ));
            return loaded;
        }
        Ok(bytes) => match checked_text(&manifest, "host.toml", bytes) {
            Ok(text) => Some(text),
            Err(why) => {
                loaded.integrity = Integrity::Refused;
                loaded
                    .errors
                    .push(error("host.toml", format!("{why}: nothing started")));
                return loaded;
            }
        },
    };
    if let Some(text) = host_text {
        loaded.host_toml_found = true;
        match hvconfig::parse_host(&host_path, &text) {
            Ok(host) => loaded.host = host,
            Err(e) => loaded.errors.push(e),
        }
    }
    let mut seen = Vec::new();
    for file in hvconfig::guest_files(&dir.join("guests")) {
        let path = match file {
            Ok(path) => path,
            Err(e) => {
                loaded.errors.push(e);
                continue;
            }
        };
        let rel = match signed::relative(dir, &path) {
            Ok(rel) => rel,
            Err(e) => {
                loaded
                    .errors
                    .push(error(&path.display().to_string(), e.to_string()));
                continue;
            }
        };
        seen.push(rel.clone());
        match load_guest_signed(dir, &manifest, &path, &rel) {
            Ok(guest) => loaded.guests.push(guest),
            Err(e) => loaded.errors.push(e),
        }
    }
    // A listed definition that is gone: say so (its guest cannot start).
    for rel in manifest.paths() {
        let is_guest = rel
            .strip_prefix("guests/")
            .is_some_and(|name| !name.contains('/') && name.ends_with(".toml"));
        if is_guest && !seen.iter().any(|s| s == rel) {
            loaded.errors.push(error(
                rel,
                format!("{}: guest not started", FileError::Missing),
            ));
        }
    }
    loaded
}

/// Checks `bytes` against `rel`'s line, then makes text of them.
fn checked_text(manifest: &Manifest, rel: &str, bytes: Vec<u8>) -> Result<String, String> {
    manifest.check(rel, &bytes).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

fn load_guest_signed(
    dir: &Path,
    manifest: &Manifest,
    path: &Path,
    rel: &str,
) -> Result<hvconfig::GuestConfig, ConfigError> {
    let bytes = read_bounded(path, hvconfig::MAX_FILE_SIZE)
        .map_err(|e| error(rel, format!("{}: guest not started", FileError::io(e))))?;
    let text = checked_text(manifest, rel, bytes)
        .map_err(|why| error(rel, format!("{why}: guest not started")))?;
    let guest = hvconfig::parse_guest(path, &text)?;
    // The kernel, initrd and cloud-init seed files are covered too: a
    // user-data runs as root in the guest.
    for file in guest.boot_files().into_iter().map(|f| f.path) {
        let not_started =
            |at: &str, e: FileError| error(at, format!("{e}: guest {} not started", guest.name));
        let file_rel = signed::relative(dir, file).map_err(|e| not_started(rel, e))?;
        fs::File::open(file)
            .map_err(FileError::io)
            .and_then(|r| manifest.check_reader(&file_rel, r))
            .map_err(|e| not_started(&file_rel, e))?;
    }
    Ok(guest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, text).expect("write");
    }

    #[test]
    fn empty_partition_gives_defaults_and_no_guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = load(dir.path(), &Trust::Any);
        assert!(!loaded.host_toml_found);
        assert_eq!(loaded.host, HostConfig::default());
        assert!(loaded.guests.is_empty());
        assert!(loaded.errors.is_empty());
    }

    #[test]
    fn a_bad_guest_does_not_hide_the_good_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("host.toml"), "hostname = \"hv01\"\n");
        write(&root.join("example/bzImage"), "kernel");
        write(
            &root.join("guests/good.toml"),
            "[boot]\nkernel = \"../example/bzImage\"\n",
        );
        write(
            &root.join("guests/bad.toml"),
            "[boot]\nkernel = \"../example/bzImage\"\n[machine]\nvcpus = \"two\"\n",
        );
        write(&root.join("guests/README.txt"), "not a definition");
        let loaded = load(root, &Trust::Any);
        assert!(loaded.host_toml_found);
        assert_eq!(loaded.host.hostname, "hv01");
        let names: Vec<&str> = loaded.guests.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(loaded.errors.len(), 1);
        let err = loaded.errors.first().expect("error").to_string();
        assert!(err.contains("bad.toml:4:9:"), "{err}");
    }

    use crate::config_source::signed::tests::{sums_line, Signer};
    use crate::config_source::Integrity;

    const WEB: &str = "[boot]\nkernel = \"../example/bzImage\"\n";
    const DB: &str = "[boot]\nkernel = \"../example/bzImage\"\ninitrd = \"db.img\"\n";

    /// A tree signed by `signer`: host.toml, two guests, a kernel, an initrd.
    fn signed_tree(signer: &Signer) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let files = [
            ("host.toml", "hostname = \"hv01\"\n"),
            ("guests/web.toml", WEB),
            ("guests/db.toml", DB),
            ("guests/db.img", "initrd"),
            ("example/bzImage", "kernel"),
        ];
        let mut sums = String::new();
        for (rel, text) in files {
            write(&root.join(rel), text);
            sums.push_str(&sums_line(rel, text.as_bytes()));
        }
        fs::write(root.join("SHA256SUMS"), &sums).expect("sums");
        fs::write(
            root.join("SHA256SUMS.minisig"),
            signer.sign(sums.as_bytes()),
        )
        .expect("sig");
        dir
    }

    fn names(loaded: &Loaded) -> Vec<&str> {
        loaded.guests.iter().map(|g| g.name.as_str()).collect()
    }

    fn errors(loaded: &Loaded) -> Vec<String> {
        loaded.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_signed_tree_loads_whole() {
        let signer = Signer::new();
        let dir = signed_tree(&signer);
        let loaded = load(dir.path(), &signer.trust());
        assert_eq!(errors(&loaded), Vec::<String>::new());
        assert_eq!(loaded.integrity, Integrity::Verified);
        assert_eq!(loaded.host.hostname, "hv01");
        assert_eq!(names(&loaded), ["db", "web"]);
    }

    #[test]
    fn a_signed_partition_covers_the_seed_files() {
        let signer = Signer::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let seeded = "[boot]\nkernel = \"k\"\n[cloud_init]\nuser_data = \"u\"\n";
        let files = [
            ("guests/web.toml", seeded),
            ("guests/k", "kernel"),
            ("guests/u", "#cloud-config\n"),
        ];
        let mut sums = String::new();
        for (rel, text) in files {
            write(&root.join(rel), text);
            sums.push_str(&sums_line(rel, text.as_bytes()));
        }
        fs::write(root.join("SHA256SUMS"), &sums).expect("sums");
        let sig = signer.sign(sums.as_bytes());
        fs::write(root.join("SHA256SUMS.minisig"), sig).expect("sig");
        let loaded = load(root, &signer.trust());
        assert_eq!(names(&loaded), ["web"]);

        write(&root.join("guests/u"), "#!/bin/sh\nevil\n");
        let loaded = load(root, &signer.trust());
        assert!(loaded.guests.is_empty());
        let e = errors(&loaded);
        assert!(
            e[0].starts_with("guests/u: sha256 mismatch")
                && e[0].ends_with(": guest web not started"),
            "{e:?}"
        );
    }

    #[test]
    fn a_changed_file_stops_only_what_it_covers() {
        let signer = Signer::new();
        let dir = signed_tree(&signer);
        let root = dir.path();
        write(
            &root.join("guests/web.toml"),
            "[boot]\nkernel = \"/etc/shadow\"\n",
        );
        write(&root.join("guests/db.img"), "evil initrd");
        // Not in SHA256SUMS at all, with a kernel that is not either.
        write(
            &root.join("guests/new.toml"),
            "[boot]\nkernel = \"new/k\"\n",
        );
        let loaded = load(root, &signer.trust());
        assert!(loaded.guests.is_empty(), "{:?}", names(&loaded));
        assert_eq!(loaded.host.hostname, "hv01");
        let e = errors(&loaded);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("guests/db.img: sha256 mismatch (SHA256SUMS says ")
                && e[0].ends_with(": guest db not started"),
            "{e:?}"
        );
        assert_eq!(
            e[1],
            "guests/new.toml: not listed in SHA256SUMS: guest not started"
        );
        assert!(
            e[2].starts_with("guests/web.toml: sha256 mismatch")
                && e[2].ends_with(": guest not started"),
            "{e:?}"
        );
    }

    #[test]
    fn an_unlisted_kernel_or_a_missing_file_stops_its_guest() {
        let signer = Signer::new();
        let dir = signed_tree(&signer);
        let root = dir.path();
        fs::remove_file(root.join("example/bzImage")).expect("rm");
        fs::remove_file(root.join("guests/db.toml")).expect("rm");
        let loaded = load(root, &signer.trust());
        assert_eq!(
            errors(&loaded),
            [
                "example/bzImage: listed in SHA256SUMS but missing: guest web not started",
                "guests/db.toml: listed in SHA256SUMS but missing: guest not started",
            ]
        );
        // A kernel outside the root cannot be covered, even when the
        // guest file itself is signed.
        let web = "[boot]\nkernel = \"/boot/k\"\n";
        write(&root.join("guests/web.toml"), web);
        let host = fs::read(root.join("host.toml")).expect("host");
        let sums = sums_line("guests/web.toml", web.as_bytes()) + &sums_line("host.toml", &host);
        fs::write(root.join("SHA256SUMS"), &sums).expect("sums");
        fs::write(
            root.join("SHA256SUMS.minisig"),
            signer.sign(sums.as_bytes()),
        )
        .expect("sig");
        assert_eq!(
            errors(&load(root, &signer.trust())),
            [
                "guests/web.toml: /boot/k is outside the config root, where SHA256SUMS cannot \
              cover it: guest web not started"
            ]
        );
    }

    #[test]
    fn a_bad_host_toml_or_signature_starts_nothing() {
        let signer = Signer::new();
        let dir = signed_tree(&signer);
        let root = dir.path();
        write(&root.join("host.toml"), "hostname = \"evil\"\n");
        let loaded = load(root, &signer.trust());
        assert_eq!(loaded.integrity, Integrity::Refused);
        assert!(loaded.guests.is_empty());
        assert_eq!(loaded.host, HostConfig::default());
        assert!(errors(&loaded)[0].starts_with("host.toml: sha256 mismatch"));

        let other = Signer::new();
        let loaded = load(signed_tree(&signer).path(), &other.trust());
        assert_eq!(loaded.integrity, Integrity::Refused);
        assert!(loaded.guests.is_empty());
        assert!(errors(&loaded)[0].ends_with(
            "SHA256SUMS.minisig: made with another key than the one baked into the image: \
             nothing started"
        ));

        // An unsigned partition.
        let plain = tempfile::tempdir().expect("tempdir");
        write(&plain.path().join("guests/web.toml"), WEB);
        let loaded = load(plain.path(), &signer.trust());
        assert_eq!(loaded.integrity, Integrity::Refused);
        assert!(loaded.guests.is_empty());
        let e = errors(&loaded);
        assert!(
            e[0].contains(": SHA256SUMS: missing (No such file"),
            "{e:?}"
        );
        assert!(e[0].ends_with("nothing started"), "{e:?}");
        // Without a key the same partition is used as it is.
        assert_eq!(names(&load(plain.path(), &Trust::Any)), ["web"]);
    }

    #[test]
    fn a_bad_host_toml_falls_back_to_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("host.toml"), "hostname = 5\n");
        let loaded = load(dir.path(), &Trust::Any);
        assert_eq!(loaded.host, HostConfig::default());
        assert_eq!(loaded.errors.len(), 1);
        assert!(loaded
            .errors
            .first()
            .expect("error")
            .to_string()
            .contains("host.toml:1:"));
    }
}
