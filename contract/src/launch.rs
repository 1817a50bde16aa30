//! The vmm's command line: what init (or an operator) asks a vmm to run.
//! [`Launch::to_args`] writes it and [`parse`] reads it, so the grammar
//! exists once; `tests::round_trip` holds the two together.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: vmm --guest FILE [--disk-fd I=FD]... [--tap-fd I=FD]... [--uid U --gid G]
       vmm --check FILE...
       vmm --kernel FILE [--initrd FILE] [--cmdline TEXT] [--mem MIB] [--vcpus N]
options:
  --guest FILE             run the guest defined in FILE
  --check FILE...          validate guest definitions (and their kernels), run nothing
  --disk-fd I=FD           disk I (0-based) of the definition is the already-open FD
  --tap-fd I=FD            network interface I is the already-open tap FD
  --uid U --gid G          drop to these ids once everything is open
  --shutdown-timeout SECS  after SIGTERM, stop hard after this long (default 30)
  --no-seccomp             do not install seccomp filters (debugging only)
  --verbose                log debug messages
  --kernel/--initrd/--cmdline/--mem/--vcpus  run a kernel without a definition";

/// How long a guest has to power off after SIGTERM when nobody says.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the command line asks the vmm to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Launch),
    Check(Vec<PathBuf>),
    Help,
    Version,
}

/// Where the guest comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchSource {
    /// A guest definition file (`hvconfig`'s format).
    Definition(PathBuf),
    /// A kernel given on the command line, for trying one out by hand.
    AdHoc {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: Option<String>,
        memory_mib: Option<u32>,
        vcpus: Option<u8>,
    },
}

/// The user and group the vmm drops to once its host resources are open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// One guest to run, with everything init has opened for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub source: LaunchSource,
    /// Disk `i` of the definition is this already-open fd.
    pub disk_fds: BTreeMap<usize, RawFd>,
    /// Network interface `i` of the definition is this already-open tap.
    pub tap_fds: BTreeMap<usize, RawFd>,
    pub ids: Option<Ids>,
    /// After SIGTERM, stop hard after this long; whole seconds on the
    /// command line (a fraction is rounded up).
    pub shutdown_timeout: Duration,
    pub seccomp: bool,
    pub verbose: bool,
}

impl Launch {
    /// Runs the definition in `path` with the defaults for everything else.
    pub fn definition(path: impl Into<PathBuf>) -> Launch {
        Launch::new(LaunchSource::Definition(path.into()))
    }

    pub fn new(source: LaunchSource) -> Launch {
        Launch {
            source,
            disk_fds: BTreeMap::new(),
            tap_fds: BTreeMap::new(),
            ids: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            seccomp: true,
            verbose: false,
        }
    }

    /// The arguments (without the program name) that [`parse`] reads back
    /// as `Command::Run(self.clone())`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        match &self.source {
            LaunchSource::Definition(path) => push("--guest", path_arg(path)),
            LaunchSource::AdHoc {
                kernel,
                initrd,
                cmdline,
                memory_mib,
                vcpus,
            } => {
                push("--kernel", path_arg(kernel));
                if let Some(initrd) = initrd {
                    push("--initrd", path_arg(initrd));
                }
                if let Some(cmdline) = cmdline {
                    push("--cmdline", cmdline.clone());
                }
                if let Some(mib) = memory_mib {
                    push("--mem", mib.to_string());
                }
                if let Some(n) = vcpus {
                    push("--vcpus", n.to_string());
                }
            }
        }
        for (i, fd) in &self.disk_fds {
            push("--disk-fd", format!("{i}={fd}"));
        }
        for (i, fd) in &self.tap_fds {
            push("--tap-fd", format!("{i}={fd}"));
        }
        if let Some(ids) = self.ids {
            push("--uid", ids.uid.to_string());
            push("--gid", ids.gid.to_string());
        }
        if self.shutdown_timeout != DEFAULT_SHUTDOWN_TIMEOUT {
            let t = self.shutdown_timeout;
            let secs = t.as_secs().saturating_add(u64::from(t.subsec_nanos() > 0));
            push("--shutdown-timeout", secs.to_string());
        }
        if !self.seccomp {
            args.push("--no-seccomp".into());
        }
        if self.verbose {
            args.push("--verbose".into());
        }
        args
    }

    /// The fds the vmm must inherit: every disk and tap handed over.
    pub fn inherited_fds(&self) -> Vec<RawFd> {
        self.disk_fds
            .values()
            .chain(self.tap_fds.values())
            .copied()
            .collect()
    }
}

/// Paths travel as text: the vmm's argv is UTF-8 by contract, and every
/// path init passes is one it built from a validated definition.
fn path_arg(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Why a command line was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    MissingValue(String),
    NotANumber { flag: String, value: String },
    NotIndexFd { flag: String, value: String },
    NotAnFd { flag: String, fd: RawFd },
    RepeatedIndex { flag: String, index: usize },
    Unknown(String),
    CheckNeedsFiles,
    CheckCombined,
    GuestAndKernel,
    AdHocOnly,
    IdsTogether,
    NothingToDo,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            ParseError::NotANumber { flag, value } => {
                write!(f, "{flag}: '{value}' is not a valid number")
            }
            ParseError::NotIndexFd { flag, value } => {
                write!(f, "{flag}: expected I=FD, got '{value}'")
            }
            ParseError::NotAnFd { flag, fd } => {
                write!(f, "{flag}: '{fd}' is not a file descriptor")
            }
            ParseError::RepeatedIndex { flag, index } => {
                write!(f, "{flag}: index {index} given twice")
            }
            ParseError::Unknown(arg) => write!(f, "unknown argument '{arg}'"),
            ParseError::CheckNeedsFiles => f.write_str("--check needs at least one file"),
            ParseError::CheckCombined => {
                f.write_str("--check cannot be combined with --guest or --kernel")
            }
            ParseError::GuestAndKernel => f.write_str("--guest and --kernel are mutually exclusive"),
            ParseError::AdHocOnly => f.write_str(
                "--initrd/--cmdline/--mem/--vcpus only go with --kernel; edit the definition instead",
            ),
            ParseError::IdsTogether => f.write_str("--uid and --gid go together"),
            ParseError::NothingToDo => {
                f.write_str("nothing to do: give --guest FILE, --check FILE... or --kernel FILE")
            }
        }
    }
}

impl std::error::Error for ParseError {}

fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, ParseError> {
    value.parse().map_err(|_| ParseError::NotANumber {
        flag: flag.into(),
        value: value.into(),
    })
}

fn insert_index_fd(
    map: &mut BTreeMap<usize, RawFd>,
    flag: &str,
    value: &str,
) -> Result<(), ParseError> {
    let (i, fd) = value
        .split_once('=')
        .ok_or_else(|| ParseError::NotIndexFd {
            flag: flag.into(),
            value: value.into(),
        })?;
    let fd: RawFd = parse_num(flag, fd)?;
    if fd < 0 {
        return Err(ParseError::NotAnFd {
            flag: flag.into(),
            fd,
        });
    }
    let index = parse_num(flag, i)?;
    if map.insert(index, fd).is_some() {
        return Err(ParseError::RepeatedIndex {
            flag: flag.into(),
            index,
        });
    }
    Ok(())
}

/// Reads a vmm command line (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ParseError> {
    let mut args = args.into_iter().peekable();
    let mut guest = None;
    let mut check = None;
    let (mut kernel, mut initrd, mut cmdline, mut mem, mut vcpus) = (None, None, None, None, None);
    let (mut uid, mut gid) = (None, None);
    let mut disk_fds = BTreeMap::new();
    let mut tap_fds = BTreeMap::new();
    let mut shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    let mut seccomp = true;
    let mut verbose = false;

    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| ParseError::MissingValue(flag.clone()))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--guest" => guest = Some(PathBuf::from(value()?)),
            "--check" => {
                let mut files: Vec<PathBuf> = Vec::new();
                while let Some(f) = args.next_if(|a| !a.starts_with("--")) {
                    files.push(f.into());
                }
                if files.is_empty() {
                    return Err(ParseError::CheckNeedsFiles);
                }
                check = Some(files);
            }
            "--disk-fd" => insert_index_fd(&mut disk_fds, &flag, &value()?)?,
            "--tap-fd" => insert_index_fd(&mut tap_fds, &flag, &value()?)?,
            "--uid" => uid = Some(parse_num(&flag, &value()?)?),
            "--gid" => gid = Some(parse_num(&flag, &value()?)?),
            "--shutdown-timeout" => {
                shutdown_timeout = Duration::from_secs(parse_num(&flag, &value()?)?)
            }
            "--no-seccomp" => seccomp = false,
            "-v" | "--verbose" => verbose = true,
            "--kernel" => kernel = Some(PathBuf::from(value()?)),
            "--initrd" => initrd = Some(PathBuf::from(value()?)),
            "--cmdline" => cmdline = Some(value()?),
            "--mem" => mem = Some(parse_num(&flag, &value()?)?),
            "--vcpus" => vcpus = Some(parse_num(&flag, &value()?)?),
            other => return Err(ParseError::Unknown(other.into())),
        }
    }

    if let Some(files) = check {
        if guest.is_some() || kernel.is_some() {
            return Err(ParseError::CheckCombined);
        }
        return Ok(Command::Check(files));
    }
    let source = match (guest, kernel) {
        (Some(_), Some(_)) => return Err(ParseError::GuestAndKernel),
        (Some(path), None) => {
            if initrd.is_some() || cmdline.is_some() || mem.is_some() || vcpus.is_some() {
                return Err(ParseError::AdHocOnly);
            }
            LaunchSource::Definition(path)
        }
        (None, Some(kernel)) => LaunchSource::AdHoc {
            kernel,
            initrd,
            cmdline,
            memory_mib: mem,
            vcpus,
        },
        (None, None) => return Err(ParseError::NothingToDo),
    };
    let ids = match (uid, gid) {
        (Some(uid), Some(gid)) => Some(Ids { uid, gid }),
        (None, None) => None,
        _ => return Err(ParseError::IdsTogether),
    };
    Ok(Command::Run(Launch {
        source,
        disk_fds,
        tap_fds,
        ids,
        shutdown_timeout,
        seccomp,
        verbose,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, ParseError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    fn round_trips(launch: &Launch) {
        assert_eq!(
            parse(launch.to_args()),
            Ok(Command::Run(launch.clone())),
            "{:?}",
            launch.to_args()
        );
    }

    #[test]
    fn round_trip() {
        let mut l = Launch::definition("/guests/web.toml");
        round_trips(&l);
        l.disk_fds = BTreeMap::from([(0, 7), (2, 9)]);
        l.tap_fds = BTreeMap::from([(0, 8)]);
        l.ids = Some(Ids {
            uid: 100_000,
            gid: 100_001,
        });
        l.shutdown_timeout = Duration::from_secs(5);
        round_trips(&l);
        l.seccomp = false;
        l.verbose = true;
        round_trips(&l);

        let mut ad_hoc = Launch::new(LaunchSource::AdHoc {
            kernel: "bz Image".into(),
            initrd: Some("initrd.gz".into()),
            cmdline: Some("console=ttyS0 quiet --guest".into()),
            memory_mib: Some(256),
            vcpus: Some(2),
        });
        round_trips(&ad_hoc);
        ad_hoc.source = LaunchSource::AdHoc {
            kernel: "k".into(),
            initrd: None,
            cmdline: None,
            memory_mib: None,
            vcpus: None,
        };
        round_trips(&ad_hoc);
    }

    #[test]
    fn fractional_timeout_rounds_up() {
        let mut l = Launch::definition("g.toml");
        l.shutdown_timeout = Duration::from_millis(1500);
        let Ok(Command::Run(back)) = parse(l.to_args()) else {
            panic!("not a run")
        };
        assert_eq!(back.shutdown_timeout, Duration::from_secs(2));
    }

    #[test]
    fn inherited_fds_are_disks_and_taps() {
        let mut l = Launch::definition("g.toml");
        l.disk_fds = BTreeMap::from([(0, 7), (1, 9)]);
        l.tap_fds = BTreeMap::from([(0, 8)]);
        assert_eq!(l.inherited_fds(), vec![7, 9, 8]);
    }

    #[test]
    fn check_takes_many_files() {
        assert_eq!(
            p(&["--check", "a.toml", "b.toml"]),
            Ok(Command::Check(vec!["a.toml".into(), "b.toml".into()]))
        );
        assert_eq!(p(&["--check"]), Err(ParseError::CheckNeedsFiles));
    }

    #[test]
    fn errors_are_specific() {
        let e = |args: &[&str]| p(args).unwrap_err().to_string();
        assert!(e(&[]).contains("nothing to do"));
        assert!(e(&["--guest"]).contains("needs a value"));
        assert!(e(&["--guest", "x", "--uid", "1"]).contains("together"));
        assert!(e(&["--guest", "x", "--disk-fd", "3"]).contains("I=FD"));
        assert!(e(&["--guest", "x", "--disk-fd", "a=3"]).contains("'a'"));
        assert!(e(&["--guest", "x", "--disk-fd", "0=-1"]).contains("not a file descriptor"));
        assert!(e(&["--guest", "x", "--tap-fd", "0=3", "--tap-fd", "0=4"]).contains("twice"));
        assert!(e(&["--guest", "x", "--mem", "5"]).contains("only go with"));
        assert!(e(&["--guest", "x", "--kernel", "k"]).contains("mutually exclusive"));
        assert!(e(&["--check", "a", "--guest", "x"]).contains("cannot be combined"));
        assert!(e(&["--bogus"]).contains("unknown argument '--bogus'"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(p(&["--guest", "x", "-h"]), Ok(Command::Help));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
    }
}
