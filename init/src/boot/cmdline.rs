//! Options init takes from the kernel command line.

use hvconfig::device::{Context, DeviceSource};

pub use crate::config_source::ConfigSource;

/// Label of the config partition when the command line names none.
pub const DEFAULT_CONFIG_LABEL: &str = "HVCONFIG";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub config: ConfigSource,
    /// `hv.debug`: log at debug level.
    pub debug: bool,
    /// Problems found while parsing, reported once logging is up.
    pub warnings: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: ConfigSource::Device(DeviceSource::Label(DEFAULT_CONFIG_LABEL.into())),
            debug: false,
            warnings: Vec::new(),
        }
    }
}

/// Splits the command line the way the kernel does: on whitespace, with
/// double quotes grouping (and being removed).
fn words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

pub fn parse(cmdline: &str) -> Options {
    let mut opts = Options::default();
    for word in words(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        match (key, value) {
            ("hv.config", Some(v)) => {
                if v.starts_with("http://") || v.starts_with("https://") {
                    opts.config = ConfigSource::Url(v.to_string());
                } else if let Ok(spec) = DeviceSource::parse(v, Context::KernelCmdline) {
                    opts.config = ConfigSource::Device(spec);
                } else {
                    opts.warnings.push(format!(
                        "hv.config={v}: expected PARTUUID=x, LABEL=x, PARTLABEL=x, UUID=x, /dev/... or \
                         http://...; using LABEL={DEFAULT_CONFIG_LABEL}"
                    ));
                }
            }
            ("hv.debug", None) => opts.debug = true,
            _ => {}
        }
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_hvconfig_label() {
        let opts = parse("console=ttyS0 panic=10");
        assert_eq!(
            opts.config,
            ConfigSource::Device(DeviceSource::Label("HVCONFIG".into()))
        );
        assert!(!opts.debug);
        assert!(opts.warnings.is_empty());
    }

    #[test]
    fn config_overrides() {
        assert_eq!(
            parse("quiet hv.config=LABEL=OTHER").config,
            ConfigSource::Device(DeviceSource::Label("OTHER".into()))
        );
        assert_eq!(
            parse("hv.config=/dev/sdb1 hv.debug").config,
            ConfigSource::Device(DeviceSource::Path("/dev/sdb1".into()))
        );
        assert_eq!(
            parse("hv.config=\"LABEL=MY STICK\"").config,
            ConfigSource::Device(DeviceSource::Label("MY STICK".into()))
        );
        assert_eq!(
            parse("hv.config=UUID=1234-ABCD").config,
            ConfigSource::Device(DeviceSource::Uuid("1234-ABCD".into()))
        );
        // What hv-image writes: the config partition by its GPT PARTUUID.
        assert_eq!(
            parse("panic=10 hv.config=PARTUUID=0A1B2C3D-0000-4000-8000-00000000000F").config,
            ConfigSource::Device(DeviceSource::PartUuid(
                "0A1B2C3D-0000-4000-8000-00000000000F".into()
            ))
        );
        assert_eq!(
            parse("hv.config=http://10.0.0.1/hv/").config,
            ConfigSource::Url("http://10.0.0.1/hv/".into())
        );
        assert!(parse("hv.debug").debug);
    }

    #[test]
    fn bad_config_option_warns_and_keeps_default() {
        for bad in ["sdb1", "LABEL=", "PARTUUID="] {
            let opts = parse(&format!("hv.config={bad}"));
            assert_eq!(opts.config, Options::default().config, "{bad}");
            assert_eq!(opts.warnings.len(), 1, "{bad}");
        }
    }
}
