//! The config source: where the configuration comes from (`hv.config=`:
//! a partition or an HTTP server), and [`Loader`], the state machine that
//! searches for the partition and mounts it, or waits for the fetch, and
//! emits [`Event::Loaded`] once. Pure: time is passed in, the I/O of a
//! look ([`partition::look`]) or a fetch ([`fetch_thread`]) is the
//! caller's, and what to log is returned.

pub mod fetch;
pub mod fetch_thread;
#[cfg(test)]
mod fuzz_tests;
pub mod http;
pub mod partition;
pub mod probe;
pub mod signed;
#[cfg(test)]
pub mod test_server;
pub mod url;

use std::time::{Duration, Instant};

use hvconfig::{ConfigError, DeviceSource, GuestConfig, HostConfig};

use self::fetch::Remote;
use self::partition::{ConfigMount, MountError};
use crate::boot::logger::Notice;

/// How long boot waits quietly for a slow USB/SD config device before
/// saying it is missing.
pub const CONFIG_WAIT: Duration = Duration::from_secs(15);
pub const CONFIG_POLL_FAST: Duration = Duration::from_millis(250);
/// After the wait, look for a hot-plugged stick this often.
pub const CONFIG_POLL_SLOW: Duration = Duration::from_secs(5);

/// Where the configuration comes from (`hv.config=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    Device(DeviceSource),
    /// Fetched over HTTP (see `fetch`); kept as written, since `${mac}`
    /// can only be replaced once the network is known.
    Url(String),
}

/// Everything read from the config source.
#[derive(Debug)]
pub struct Loaded {
    pub host: HostConfig,
    pub guests: Vec<GuestConfig>,
    /// One entry per bad file; the good ones are still used.
    pub errors: Vec<ConfigError>,
    pub host_toml_found: bool,
    pub integrity: Integrity,
}

/// Whether the tree was checked against a signed SHA256SUMS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Integrity {
    /// No key is baked into the image: used as it is.
    #[default]
    Unsigned,
    /// The signature is good; each file used was checked.
    Verified,
    /// The signature (or SHA256SUMS) was refused: nothing is used.
    Refused,
}

impl Loaded {
    /// Nothing from a tree whose signature was refused; `error` says why.
    pub fn refused(error: hvconfig::ConfigError) -> Loaded {
        Loaded {
            host: HostConfig::default(),
            guests: Vec::new(),
            errors: vec![error],
            host_toml_found: false,
            integrity: Integrity::Refused,
        }
    }

    fn integrity_notice(&self) -> Option<Notice> {
        match self.integrity {
            Integrity::Unsigned => None,
            Integrity::Verified => Some(Notice::Info(format!(
                "config: {} signature verified with the key baked into the image",
                signed::SUMS
            ))),
            Integrity::Refused => Some(Notice::Error(
                "config: not signed as the image requires: no guests started, host.toml not applied"
                    .into(),
            )),
        }
    }
}

/// What one look for the config partition found.
#[derive(Debug)]
pub enum Found {
    Nothing,
    /// There, but it would not mount.
    MountFailed(MountError),
    /// Named by more than one device: none is used.
    Ambiguous(probe::Ambiguous),
    /// Mounted and read.
    Mounted(ConfigMount, Box<Loaded>),
}

/// What the loader has to say.
#[derive(Debug)]
pub enum Event {
    Log(Notice),
    /// The configuration, to apply once; `hint` says where guests go.
    Loaded {
        loaded: Loaded,
        hint: String,
    },
}

#[derive(Debug)]
enum Phase {
    Searching {
        spec: DeviceSource,
        since: Instant,
        next: Instant,
        reported: bool,
        last_error: Option<String>,
    },
    Mounted(ConfigMount),
    /// `hv.config=http://...`: being fetched into RAM by a thread.
    Fetching,
    /// Fetched into a copy in RAM, laid out like the partition.
    Fetched,
    Unavailable,
}

/// Search → mount, or fetch → loaded.
#[derive(Debug)]
pub struct Loader {
    phase: Phase,
}

impl Loader {
    /// Starts with the search for the partition, or waiting for the
    /// fetch, which the caller starts (see [`Loader::fetch_failed`]).
    pub fn new(source: &ConfigSource, now: Instant) -> (Loader, Option<Notice>) {
        match source {
            ConfigSource::Device(spec) => (
                Loader {
                    phase: Phase::Searching {
                        spec: spec.clone(),
                        since: now,
                        next: now,
                        reported: false,
                        last_error: None,
                    },
                },
                Some(Notice::Info(format!(
                    "looking for the config partition {spec}"
                ))),
            ),
            ConfigSource::Url(_) => (
                Loader {
                    phase: Phase::Fetching,
                },
                None,
            ),
        }
    }

    /// The fetch could not even be started: run without guests.
    pub fn fetch_failed(&mut self, url: &str, error: &dyn std::fmt::Display) -> Notice {
        self.phase = Phase::Unavailable;
        Notice::Error(format!(
            "hv.config={url}: cannot start fetching: {error}; running without guests"
        ))
    }

    /// The partition to look for now, if a look is due.
    pub fn due(&self, now: Instant) -> Option<&DeviceSource> {
        match &self.phase {
            Phase::Searching { spec, next, .. } if now >= *next => Some(spec),
            _ => None,
        }
    }

    /// When [`Loader::due`] next has something.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Searching { next, .. } => Some(*next),
            _ => None,
        }
    }

    /// The mounted config partition, if that is where the config came from.
    pub fn mounted(&self) -> Option<&ConfigMount> {
        match &self.phase {
            Phase::Mounted(m) => Some(m),
            _ => None,
        }
    }

    /// Takes in what a look found.
    pub fn looked(&mut self, found: Found, now: Instant) -> Vec<Event> {
        let Phase::Searching {
            spec,
            since,
            next,
            reported,
            last_error,
        } = &mut self.phase
        else {
            return Vec::new();
        };
        let mut events = Vec::new();
        match found {
            Found::Mounted(mount, loaded) => {
                let loaded = *loaded;
                let fs = mount
                    .device
                    .fs
                    .as_ref()
                    .map_or("?".to_string(), |f| f.fstype.to_string());
                events.push(Event::Log(Notice::Info(format!(
                    "config partition {spec} is {} ({fs}), mounted read-only on {}",
                    mount.device.node.display(),
                    mount.dir.display()
                ))));
                events.extend(loaded.integrity_notice().map(Event::Log));
                if !loaded.host_toml_found && loaded.integrity != Integrity::Refused {
                    events.push(Event::Log(Notice::Info(
                        "config: no host.toml, using defaults".into(),
                    )));
                }
                let hint = format!("put NAME.toml files in {}/guests", mount.dir.display());
                self.phase = Phase::Mounted(mount);
                events.push(Event::Loaded { loaded, hint });
                return events;
            }
            // Said once, not every poll.
            Found::MountFailed(e) => {
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    events.push(Event::Log(Notice::Error(e.clone())));
                    *last_error = Some(e);
                }
            }
            Found::Ambiguous(e) => {
                let e = format!("config partition: {e}");
                if last_error.as_ref() != Some(&e) {
                    events.push(Event::Log(Notice::Error(e.clone())));
                    *last_error = Some(e);
                }
            }
            Found::Nothing => {}
        }
        let waited = now.saturating_duration_since(*since);
        if waited >= CONFIG_WAIT && !*reported {
            events.push(Event::Log(Notice::Warn(format!(
                "no config partition {spec} found after {} s: running without guests; \
                 still looking every {} s (plug in the config stick)",
                CONFIG_WAIT.as_secs(),
                CONFIG_POLL_SLOW.as_secs()
            ))));
            *reported = true;
        }
        *next = now
            + if *reported {
                CONFIG_POLL_SLOW
            } else {
                CONFIG_POLL_FAST
            };
        events
    }

    /// The fetch has ended with `loaded`; `remote` is where it fetched
    /// from, if the URL was usable.
    pub fn fetched(&mut self, loaded: Loaded, remote: Option<&Remote>) -> Vec<Event> {
        if !matches!(self.phase, Phase::Fetching) {
            return Vec::new();
        }
        let mut events: Vec<Event> = loaded
            .integrity_notice()
            .map(Event::Log)
            .into_iter()
            .collect();
        let hint = match remote {
            Some(remote) => {
                events.push(Event::Log(Notice::Info(format!(
                    "config: {} fetched into {}",
                    remote.base,
                    remote.dir().display()
                ))));
                self.phase = Phase::Fetched;
                format!(
                    "list them in host.toml as guests = [\"NAME\"], served as {}guests/NAME.toml",
                    remote.base
                )
            }
            None => {
                self.phase = Phase::Unavailable;
                "fix hv.config= on the kernel command line".to_string()
            }
        };
        events.push(Event::Loaded { loaded, hint });
        events
    }

    /// Whether the machine is being shut down before the fetch ended: the
    /// result is dropped and nothing more is done.
    pub fn abandon(&mut self) {
        self.phase = Phase::Unavailable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_source::probe::{BlockDevice, FsInfo, FsType};
    use crate::config_source::url::HttpUrl;
    use std::path::{Path, PathBuf};

    fn empty() -> Loaded {
        Loaded {
            host: HostConfig::default(),
            guests: Vec::new(),
            errors: Vec::new(),
            host_toml_found: false,
            integrity: Integrity::Unsigned,
        }
    }

    fn mount() -> ConfigMount {
        ConfigMount {
            dir: PathBuf::from("/mnt/config"),
            device: BlockDevice {
                name: "sdb1".into(),
                node: "/dev/sdb1".into(),
                disk: Some("sdb".into()),
                part_label: None,
                part_uuid: None,
                fs: Some(FsInfo {
                    fstype: FsType::Vfat,
                    label: Some("HVCONFIG".into()),
                    uuid: None,
                }),
            },
        }
    }

    fn searching(t0: Instant) -> Loader {
        let (loader, notice) = Loader::new(
            &ConfigSource::Device(DeviceSource::Label("HVCONFIG".into())),
            t0,
        );
        assert_eq!(
            notice,
            Some(Notice::Info(
                "looking for the config partition LABEL=HVCONFIG".into()
            ))
        );
        loader
    }

    fn texts(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Log(n) => n.text().to_string(),
                Event::Loaded { hint, .. } => format!("loaded: {hint}"),
            })
            .collect()
    }

    #[test]
    fn looks_fast_then_warns_once_then_looks_slowly() {
        let t0 = Instant::now();
        let mut loader = searching(t0);
        assert!(loader.due(t0).is_some());
        assert!(loader.looked(Found::Nothing, t0).is_empty());
        assert_eq!(loader.deadline(), Some(t0 + CONFIG_POLL_FAST));
        assert!(loader.due(t0).is_none());
        let mut t = t0 + CONFIG_POLL_FAST;
        while t < t0 + CONFIG_WAIT {
            assert!(loader.due(t).is_some());
            assert!(loader.looked(Found::Nothing, t).is_empty());
            t += CONFIG_POLL_FAST;
        }
        let events = loader.looked(Found::Nothing, t);
        assert_eq!(
            texts(&events),
            [
                "no config partition LABEL=HVCONFIG found after 15 s: running without guests; \
              still looking every 5 s (plug in the config stick)"
            ]
        );
        assert_eq!(loader.deadline(), Some(t + CONFIG_POLL_SLOW));
        assert!(loader
            .looked(Found::Nothing, t + CONFIG_POLL_SLOW)
            .is_empty());
        assert!(loader.mounted().is_none());
    }

    #[test]
    fn a_mount_error_is_said_once() {
        let t0 = Instant::now();
        let mut loader = searching(t0);
        let failed = || {
            Found::MountFailed(MountError {
                node: "/dev/sdb1".into(),
                spec: DeviceSource::Label("HVCONFIG".into()),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            })
        };
        assert_eq!(
            texts(&loader.looked(failed(), t0)),
            ["config partition /dev/sdb1 (LABEL=HVCONFIG): mount: Input/output error (os error 5)"]
        );
        assert!(loader.looked(failed(), t0 + CONFIG_POLL_FAST).is_empty());
    }

    #[test]
    fn a_label_on_two_devices_is_said_once_and_the_search_goes_on() {
        let t0 = Instant::now();
        let mut loader = searching(t0);
        let ambiguous = || {
            Found::Ambiguous(probe::Ambiguous {
                spec: DeviceSource::Label("HVCONFIG".into()),
                nodes: vec!["/dev/sda2".into(), "/dev/vdb".into()],
            })
        };
        assert_eq!(
            texts(&loader.looked(ambiguous(), t0)),
            [
                "config partition: LABEL=HVCONFIG is on more than one device (/dev/sda2, \
              /dev/vdb); refusing to guess"
            ]
        );
        assert!(loader.looked(ambiguous(), t0 + CONFIG_POLL_FAST).is_empty());
        assert!(
            loader.due(t0 + CONFIG_POLL_FAST * 2).is_some(),
            "still searching"
        );
    }

    #[test]
    fn a_mounted_partition_is_loaded_once() {
        let t0 = Instant::now();
        let mut loader = searching(t0);
        let events = loader.looked(Found::Mounted(mount(), Box::new(empty())), t0);
        assert_eq!(
            texts(&events),
            [
                "config partition LABEL=HVCONFIG is /dev/sdb1 (vfat), mounted read-only on \
                 /mnt/config",
                "config: no host.toml, using defaults",
                "loaded: put NAME.toml files in /mnt/config/guests",
            ]
        );
        assert_eq!(
            loader.mounted().map(|m| m.dir.as_path()),
            Some(Path::new("/mnt/config"))
        );
        assert!(loader.due(t0 + CONFIG_WAIT).is_none());
        assert_eq!(loader.deadline(), None);
        assert!(loader.looked(Found::Nothing, t0 + CONFIG_WAIT).is_empty());
    }

    #[test]
    fn a_fetch_loads_once_with_a_hint() {
        let t0 = Instant::now();
        let (mut loader, notice) = Loader::new(&ConfigSource::Url("http://h/cfg/".into()), t0);
        assert_eq!(notice, None);
        assert!(loader.due(t0).is_none());
        let base = HttpUrl::parse("http://h/cfg/").expect("url");
        let remote = Remote::new(&base, Path::new("/run/hv/config"));
        let events = loader.fetched(empty(), Some(&remote));
        assert_eq!(
            texts(&events),
            [
                "config: http://h/cfg/ fetched into /run/hv/config/cfg/".to_string(),
                "loaded: list them in host.toml as guests = [\"NAME\"], served as \
                 http://h/cfg/guests/NAME.toml"
                    .to_string(),
            ]
        );
        assert!(loader.fetched(empty(), Some(&remote)).is_empty());
        assert!(loader.mounted().is_none());
    }

    #[test]
    fn a_bad_url_still_loads_the_errors() {
        let t0 = Instant::now();
        let (mut loader, _) = Loader::new(&ConfigSource::Url("http://h:0/".into()), t0);
        assert_eq!(
            texts(&loader.fetched(empty(), None)),
            ["loaded: fix hv.config= on the kernel command line"]
        );
    }

    #[test]
    fn an_abandoned_or_unstartable_fetch_loads_nothing() {
        let t0 = Instant::now();
        let source = ConfigSource::Url("http://h/".into());
        let (mut loader, _) = Loader::new(&source, t0);
        loader.abandon();
        assert!(loader.fetched(empty(), None).is_empty());
        let (mut loader, _) = Loader::new(&source, t0);
        let notice = loader.fetch_failed("http://h/", &"no threads");
        assert_eq!(
            notice.text(),
            "hv.config=http://h/: cannot start fetching: no threads; running without guests"
        );
        assert!(loader.fetched(empty(), None).is_empty());
    }
}
