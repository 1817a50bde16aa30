//! Command line parsing. Hand-rolled: the grammar is tiny and an argument
//! parser crate would cost more binary size than this file.

use std::collections::BTreeMap;
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

#[derive(Debug, PartialEq)]
pub enum Mode {
    Run(RunArgs),
    Check(Vec<PathBuf>),
    Help,
    Version,
}

/// Where the guest comes from.
#[derive(Debug, PartialEq)]
pub enum Source {
    Definition(PathBuf),
    AdHoc {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: Option<String>,
        memory_mib: Option<u32>,
        vcpus: Option<u8>,
    },
}

#[derive(Debug, PartialEq)]
pub struct RunArgs {
    pub source: Source,
    pub disk_fds: BTreeMap<usize, RawFd>,
    pub tap_fds: BTreeMap<usize, RawFd>,
    pub ids: Option<(u32, u32)>,
    pub shutdown_timeout: Duration,
    pub seccomp: bool,
    pub verbose: bool,
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a valid number"))
}

fn parse_index_fd(flag: &str, value: &str) -> Result<(usize, RawFd), String> {
    let (i, fd) = value
        .split_once('=')
        .ok_or_else(|| format!("{flag}: expected I=FD, got '{value}'"))?;
    let fd: RawFd = parse_num(flag, fd)?;
    if fd < 0 {
        return Err(format!("{flag}: '{fd}' is not a file descriptor"));
    }
    Ok((parse_num(flag, i)?, fd))
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Mode, String> {
    let mut args = args.into_iter().peekable();
    let mut guest = None;
    let mut check = None;
    let (mut kernel, mut initrd, mut cmdline, mut mem, mut vcpus) = (None, None, None, None, None);
    let (mut uid, mut gid) = (None, None);
    let mut disk_fds = BTreeMap::new();
    let mut tap_fds = BTreeMap::new();
    let mut shutdown_timeout = Duration::from_secs(30);
    let mut seccomp = true;
    let mut verbose = false;

    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Mode::Help),
            "-V" | "--version" => return Ok(Mode::Version),
            "--guest" => guest = Some(PathBuf::from(value()?)),
            "--check" => {
                let mut files: Vec<PathBuf> = Vec::new();
                while let Some(f) = args.next_if(|a| !a.starts_with("--")) {
                    files.push(f.into());
                }
                if files.is_empty() {
                    return Err("--check needs at least one file".into());
                }
                check = Some(files);
            }
            "--disk-fd" => {
                let (i, fd) = parse_index_fd(&flag, &value()?)?;
                disk_fds.insert(i, fd);
            }
            "--tap-fd" => {
                let (i, fd) = parse_index_fd(&flag, &value()?)?;
                tap_fds.insert(i, fd);
            }
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
            other => return Err(format!("unknown argument '{other}'")),
        }
    }

    if let Some(files) = check {
        if guest.is_some() || kernel.is_some() {
            return Err("--check cannot be combined with --guest or --kernel".into());
        }
        return Ok(Mode::Check(files));
    }
    let source = match (guest, kernel) {
        (Some(_), Some(_)) => return Err("--guest and --kernel are mutually exclusive".into()),
        (Some(path), None) => {
            if initrd.is_some() || cmdline.is_some() || mem.is_some() || vcpus.is_some() {
                return Err(
                    "--initrd/--cmdline/--mem/--vcpus only go with --kernel; edit the definition instead"
                        .into(),
                );
            }
            Source::Definition(path)
        }
        (None, Some(kernel)) => Source::AdHoc {
            kernel,
            initrd,
            cmdline,
            memory_mib: mem,
            vcpus,
        },
        (None, None) => {
            return Err("nothing to do: give --guest FILE, --check FILE... or --kernel FILE".into())
        }
    };
    let ids = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".into()),
    };
    Ok(Mode::Run(RunArgs {
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

    fn p(args: &[&str]) -> Result<Mode, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn guest_with_fds_and_ids() {
        let Mode::Run(r) = p(&[
            "--guest",
            "g/web.toml",
            "--disk-fd",
            "0=7",
            "--disk-fd",
            "2=9",
            "--tap-fd",
            "0=8",
            "--uid",
            "100",
            "--gid",
            "101",
        ])
        .unwrap() else {
            panic!("not a run")
        };
        assert_eq!(r.source, Source::Definition("g/web.toml".into()));
        assert_eq!(r.disk_fds, BTreeMap::from([(0, 7), (2, 9)]));
        assert_eq!(r.tap_fds, BTreeMap::from([(0, 8)]));
        assert_eq!(r.ids, Some((100, 101)));
        assert!(r.seccomp);
        assert_eq!(r.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn check_takes_many_files() {
        assert_eq!(
            p(&["--check", "a.toml", "b.toml"]).unwrap(),
            Mode::Check(vec!["a.toml".into(), "b.toml".into()])
        );
        assert!(p(&["--check"]).is_err());
    }

    #[test]
    fn ad_hoc_kernel() {
        let Mode::Run(r) = p(&[
            "--kernel",
            "bz",
            "--mem",
            "256",
            "--vcpus",
            "2",
            "--no-seccomp",
        ])
        .unwrap() else {
            panic!("not a run")
        };
        assert!(!r.seccomp);
        assert_eq!(
            r.source,
            Source::AdHoc {
                kernel: "bz".into(),
                initrd: None,
                cmdline: None,
                memory_mib: Some(256),
                vcpus: Some(2)
            }
        );
    }

    #[test]
    fn errors_are_specific() {
        assert!(p(&[]).unwrap_err().contains("nothing to do"));
        assert!(p(&["--guest"]).unwrap_err().contains("needs a value"));
        assert!(p(&["--guest", "x", "--uid", "1"])
            .unwrap_err()
            .contains("together"));
        assert!(p(&["--guest", "x", "--disk-fd", "3"])
            .unwrap_err()
            .contains("I=FD"));
        assert!(p(&["--guest", "x", "--disk-fd", "a=3"])
            .unwrap_err()
            .contains("'a'"));
        assert!(p(&["--guest", "x", "--mem", "5"])
            .unwrap_err()
            .contains("only go with"));
        assert!(p(&["--bogus"])
            .unwrap_err()
            .contains("unknown argument '--bogus'"));
    }
}
