//! `hv-image kconfig-check`: proves that a final kernel `.config` honours
//! every setting of the Kconfig fragments it was built from.
//!
//! `merge_config.sh` + `make olddefconfig` silently drop a requested symbol
//! whose dependencies are not met, so without this check a fragment can
//! claim e.g. `CONFIG_KVM_AMD=y` while the built kernel has no KVM at all.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: hv-image kconfig-check --config PATH FRAGMENT...";

/// Why the check could not run, or what it found.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("--config needs a path\n{USAGE}")]
    ConfigNeedsPath,
    #[error("unknown option {0}\n{USAGE}")]
    UnknownOption(String),
    #[error("missing --config\n{USAGE}")]
    MissingConfig,
    #[error("no fragment given\n{USAGE}")]
    NoFragment,
    #[error("{}: cannot read: {error}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{}:{line}: {error}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        #[source]
        error: LineError,
    },
    /// One line per setting the `.config` does not honour.
    #[error(
        "{}\n{} of {checked} fragment settings are not honoured by {}",
        .problems.join("\n"),
        .problems.len(),
        .config.display()
    )]
    NotHonoured {
        problems: Vec<String>,
        checked: usize,
        config: PathBuf,
    },
}

/// A line that is neither a setting nor a comment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected CONFIG_NAME=VALUE or '# CONFIG_NAME is not set'")]
    NoAssignment,
    #[error("'{0}' is not a CONFIG_ symbol name")]
    NotASymbol(String),
    #[error("{symbol}: '{value}' is not y, n, m, a quoted string or a number")]
    BadValue { symbol: String, value: String },
}

/// The value a fragment asks for or a `.config` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// `# CONFIG_X is not set` (or `CONFIG_X=n`, which Kconfig reads the same).
    Unset,
    /// `y`, `m`, a quoted string or a number, exactly as written.
    Set(String),
}

/// One `CONFIG_*` line of a fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    file: PathBuf,
    line: usize,
    symbol: String,
    value: Value,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Unset => write!(f, "'# {} is not set'", self.symbol),
            Value::Set(v) => write!(f, "{}={}", self.symbol, v),
        }
    }
}

/// Entry point of `hv-image kconfig-check --config PATH FRAGMENT...`.
pub fn run_cli(args: &[OsString]) -> Result<(), KconfigError> {
    let mut config = None;
    let mut fragments = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            let path = args.next().ok_or(KconfigError::ConfigNeedsPath)?;
            config = Some(PathBuf::from(path));
        } else if arg.to_string_lossy().starts_with('-') {
            return Err(KconfigError::UnknownOption(
                arg.to_string_lossy().into_owned(),
            ));
        } else {
            fragments.push(PathBuf::from(arg));
        }
    }
    let config = config.ok_or(KconfigError::MissingConfig)?;
    if fragments.is_empty() {
        return Err(KconfigError::NoFragment);
    }
    let checked = check_files(&config, &fragments)?;
    eprintln!(
        "kconfig-check: {} settings from {} fragment(s) are honoured by {}",
        checked,
        fragments.len(),
        config.display()
    );
    Ok(())
}

/// Checks `fragments` (later ones override earlier ones, as with
/// `merge_config.sh`) against `config`; returns how many settings were checked.
fn check_files(config: &Path, fragments: &[PathBuf]) -> Result<usize, KconfigError> {
    let mut requirements = Vec::new();
    for fragment in fragments {
        requirements.extend(parse_fragment(fragment, &read(fragment)?)?);
    }
    let final_config = parse_config(config, &read(config)?)?;
    check(&effective(requirements), &final_config, config)
}

fn read(path: &Path) -> Result<String, KconfigError> {
    std::fs::read_to_string(path).map_err(|error| KconfigError::Read {
        path: path.into(),
        error,
    })
}

/// Splits one Kconfig line into symbol and value; `None` for lines that carry
/// no setting (blank lines and ordinary comments).
fn parse_line(text: &str) -> Result<Option<(String, Value)>, LineError> {
    let text = text.trim();
    if let Some(comment) = text.strip_prefix('#') {
        let unset = comment
            .trim()
            .strip_suffix("is not set")
            .map(str::trim)
            .filter(|s| is_symbol(s));
        return Ok(unset.map(|s| (s.to_string(), Value::Unset)));
    }
    if text.is_empty() {
        return Ok(None);
    }
    let (symbol, value) = text.split_once('=').ok_or(LineError::NoAssignment)?;
    if !is_symbol(symbol) {
        return Err(LineError::NotASymbol(symbol.into()));
    }
    if !is_value(value) {
        return Err(LineError::BadValue {
            symbol: symbol.into(),
            value: value.into(),
        });
    }
    let value = if value == "n" {
        Value::Unset
    } else {
        Value::Set(value.to_string())
    };
    Ok(Some((symbol.to_string(), value)))
}

fn is_symbol(s: &str) -> bool {
    s.strip_prefix("CONFIG_").is_some_and(|name| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn is_value(v: &str) -> bool {
    matches!(v, "y" | "n" | "m")
        || (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'))
        || parse_number(v).is_some()
}

fn parse_number(v: &str) -> Option<i128> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// [`parse_line`], with the error placed at `path:line`.
fn parse_line_at(
    path: &Path,
    line: usize,
    text: &str,
) -> Result<Option<(String, Value)>, KconfigError> {
    parse_line(text).map_err(|error| KconfigError::Syntax {
        path: path.into(),
        line,
        error,
    })
}

fn parse_fragment(path: &Path, text: &str) -> Result<Vec<Requirement>, KconfigError> {
    let mut requirements = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let parsed = parse_line_at(path, index + 1, line)?;
        if let Some((symbol, value)) = parsed {
            requirements.push(Requirement {
                file: path.to_path_buf(),
                line: index + 1,
                symbol,
                value,
            });
        }
    }
    Ok(requirements)
}

fn parse_config(path: &Path, text: &str) -> Result<HashMap<String, Value>, KconfigError> {
    let mut values = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let parsed = parse_line_at(path, index + 1, line)?;
        if let Some((symbol, value)) = parsed {
            values.insert(symbol, value);
        }
    }
    Ok(values)
}

/// Keeps only the last setting of each symbol, in first-seen order: that is
/// the one `merge_config.sh` hands to Kconfig.
fn effective(requirements: Vec<Requirement>) -> Vec<Requirement> {
    let mut order: Vec<String> = Vec::new();
    let mut last: HashMap<String, Requirement> = HashMap::new();
    for requirement in requirements {
        if !last.contains_key(&requirement.symbol) {
            order.push(requirement.symbol.clone());
        }
        last.insert(requirement.symbol.clone(), requirement);
    }
    order.into_iter().filter_map(|s| last.remove(&s)).collect()
}

fn same_value(wanted: &str, actual: &str) -> bool {
    match (parse_number(wanted), parse_number(actual)) {
        (Some(a), Some(b)) => a == b,
        _ => wanted == actual,
    }
}

fn check(
    requirements: &[Requirement],
    config: &HashMap<String, Value>,
    config_path: &Path,
) -> Result<usize, KconfigError> {
    const HINT: &str = "(check its dependencies with 'make menuconfig')";
    let mut problems = Vec::new();
    for req in requirements {
        let actual = config.get(&req.symbol);
        let found = match (&req.value, actual) {
            (Value::Unset, None | Some(Value::Unset)) => continue,
            (Value::Set(w), Some(Value::Set(a))) if same_value(w, a) => continue,
            (Value::Unset, Some(Value::Set(a))) => format!("{}={a}", req.symbol),
            (Value::Set(_), Some(Value::Set(a))) => format!("{}={a} {HINT}", req.symbol),
            (Value::Set(_), Some(Value::Unset)) => format!("it unset {HINT}"),
            (Value::Set(_), None) => {
                format!("no entry for it: unknown symbol, or hidden by an unmet dependency {HINT}")
            }
        };
        problems.push(format!(
            "{}:{}: {req} requested, but .config has {found}",
            req.file.display(),
            req.line
        ));
    }
    if problems.is_empty() {
        return Ok(requirements.len());
    }
    Err(KconfigError::NotHonoured {
        problems,
        checked: requirements.len(),
        config: config_path.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_64BIT=y
CONFIG_KVM=y
# CONFIG_KVM_AMD is not set
CONFIG_VIRTIO=m
CONFIG_LOCALVERSION=\"-hv\"
CONFIG_NR_CPUS=256
CONFIG_PHYSICAL_START=0x1000000
# CONFIG_MODULES is not set
";

    fn run(fragment: &str) -> Result<usize, KconfigError> {
        let frag = Path::new("frag.config");
        let config = Path::new("build/.config");
        let reqs = parse_fragment(frag, fragment)?;
        check(&effective(reqs), &parse_config(config, CONFIG)?, config)
    }

    fn fails(fragment: &str) -> String {
        run(fragment).unwrap_err().to_string()
    }

    #[test]
    fn satisfied_fragment_passes() {
        let fragment = "\
# comment lines and blank lines are ignored

CONFIG_64BIT=y
CONFIG_KVM=y
# CONFIG_KVM_AMD is not set
CONFIG_VIRTIO=m
CONFIG_LOCALVERSION=\"-hv\"
CONFIG_NR_CPUS=256
CONFIG_PHYSICAL_START=0x1000000
# CONFIG_MODULES is not set
CONFIG_SOUND=n
# CONFIG_NOT_IN_CONFIG_AT_ALL is not set
";
        assert_eq!(run(fragment).unwrap(), 10);
    }

    #[test]
    fn unset_symbol_fails_with_location() {
        let err = fails("CONFIG_64BIT=y\nCONFIG_KVM_AMD=y\n");
        assert!(
            err.contains("frag.config:2: CONFIG_KVM_AMD=y requested, but .config has it unset"),
            "{err}"
        );
        assert!(err.contains("make menuconfig"), "{err}");
        assert!(!err.contains("CONFIG_64BIT"), "{err}");
    }

    #[test]
    fn different_value_fails() {
        let err = fails("CONFIG_VIRTIO=y\nCONFIG_LOCALVERSION=\"-x\"\nCONFIG_NR_CPUS=64\n");
        assert!(
            err.contains(
                "frag.config:1: CONFIG_VIRTIO=y requested, but .config has CONFIG_VIRTIO=m"
            ),
            "{err}"
        );
        assert!(
            err.contains("frag.config:2: CONFIG_LOCALVERSION=\"-x\""),
            "{err}"
        );
        assert!(err.contains("CONFIG_NR_CPUS=64 requested"), "{err}");
        assert!(err.contains("3 of 3 fragment settings"), "{err}");
    }

    #[test]
    fn missing_symbol_fails() {
        let err = fails("CONFIG_KVM_INTEL=y\n");
        assert!(
            err.contains("frag.config:1: CONFIG_KVM_INTEL=y requested, but .config has no entry"),
            "{err}"
        );
    }

    #[test]
    fn requested_unset_but_enabled_fails() {
        let err = fails("# CONFIG_KVM is not set\n");
        assert!(
            err.contains("'# CONFIG_KVM is not set' requested, but .config has CONFIG_KVM=y"),
            "{err}"
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert_eq!(run("CONFIG_PHYSICAL_START=0x01000000\n").unwrap(), 1);
    }

    #[test]
    fn later_setting_of_a_symbol_wins() {
        assert_eq!(
            run("CONFIG_KVM_AMD=y\n# CONFIG_KVM_AMD is not set\n").unwrap(),
            1
        );
        let err = fails("# CONFIG_KVM_AMD is not set\nCONFIG_KVM_AMD=y\n");
        assert!(err.contains("frag.config:2: CONFIG_KVM_AMD=y"), "{err}");
    }

    #[test]
    fn malformed_fragment_line_is_reported() {
        let err = fails("CONFIG_KVM=y\nKVM=y\n");
        assert_eq!(err, "frag.config:2: 'KVM' is not a CONFIG_ symbol name");
        let err = fails("CONFIG_KVM=yes please\n");
        assert!(
            err.starts_with("frag.config:1: CONFIG_KVM: 'yes please' is not"),
            "{err}"
        );
        let err = fails("just words\n");
        assert!(
            err.starts_with("frag.config:1: expected CONFIG_NAME=VALUE"),
            "{err}"
        );
    }

    #[test]
    fn cli_checks_files_across_fragments() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let config = dir.join(".config");
        let base = dir.join("base.config");
        let extra = dir.join("extra.config");
        std::fs::write(&config, CONFIG).unwrap();
        std::fs::write(&base, "CONFIG_KVM=y\n# CONFIG_KVM_AMD is not set\n").unwrap();
        std::fs::write(&extra, "CONFIG_KVM_AMD=y\n").unwrap();
        let args = |frags: &[&Path]| -> Vec<OsString> {
            let mut v = vec![OsString::from("--config"), config.clone().into()];
            v.extend(frags.iter().map(|p| p.as_os_str().to_owned()));
            v
        };

        run_cli(&args(&[&base])).unwrap();
        let err = run_cli(&args(&[&base, &extra])).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{}:1: CONFIG_KVM_AMD=y requested",
                extra.display()
            )),
            "{err}"
        );
        let err = |args: &[OsString]| run_cli(args).unwrap_err().to_string();
        assert!(err(&args(&[])).contains("no fragment"));
        let missing = err(&args(&[&dir.join("nope.config")]));
        assert!(missing.contains("nope.config: cannot read"), "{missing}");
        assert!(err(&[base.into()]).contains("missing --config"));
    }
}
