//! What to run: a guest definition from `hvconfig`, or an ad-hoc kernel
//! given on the command line. [`VmSource`] is the only representation of
//! the guest the rest of the vmm sees; everything the builder needs is an
//! accessor on it.

use std::path::{Path, PathBuf};

use hvconfig::guest::{GuestConfig, Machine, DEFAULT_CMDLINE};
use hvconfig::ConfigError;
use hvcontract::{LaunchSource, VmmExit};

/// A definition that cannot be run as written. Every variant is the
/// definition's (or its kernel's) fault: [`VmmExit::Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition does not load (unreadable, invalid TOML, bad value).
    #[error("{0}")]
    Load(ConfigError),
    /// A file the definition points at is missing or of the wrong type.
    #[error("{0}")]
    Files(ConfigError),
}

impl Error {
    pub fn exit(&self) -> VmmExit {
        VmmExit::Invalid
    }
}

/// The guest to run.
#[derive(Debug)]
pub enum VmSource {
    /// A guest definition; devices come only from definitions. Boxed: it
    /// is far larger than an ad-hoc kernel.
    Definition(Box<GuestConfig>),
    /// A kernel given on the command line, with the defaults filled in.
    AdHoc {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
        vcpus: u8,
        memory_mib: u32,
    },
}

impl VmSource {
    /// What the command line asks for. A definition is loaded and its
    /// kernel and initrd checked ([`VmSource::check_boot_files`]); its
    /// disks are not: a jailed vmm cannot see disk paths (init hands the
    /// disks over as fds), and a disk without a handed fd is opened, with
    /// a clear error, when the devices are attached.
    pub fn from_launch(source: &LaunchSource) -> Result<VmSource, Error> {
        match source {
            LaunchSource::Definition(path) => {
                let source = VmSource::load(path)?;
                source.check_boot_files()?;
                Ok(source)
            }
            LaunchSource::AdHoc {
                kernel,
                initrd,
                cmdline,
                memory_mib,
                vcpus,
            } => {
                let defaults = Machine::default();
                Ok(VmSource::AdHoc {
                    kernel: kernel.clone(),
                    initrd: initrd.clone(),
                    cmdline: cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.into()),
                    vcpus: vcpus.unwrap_or(defaults.vcpus),
                    memory_mib: memory_mib.unwrap_or(defaults.memory_mib),
                })
            }
        }
    }

    /// Loads the definition in `path`, checking nothing on disk yet.
    pub fn load(path: &Path) -> Result<VmSource, Error> {
        hvconfig::load_guest(path)
            .map(|guest| VmSource::Definition(Box::new(guest)))
            .map_err(Error::Load)
    }

    /// Checks every file the definition points at, disks included (what
    /// `--check` wants; a definition run by init has its disks as fds).
    pub fn check_files(&self) -> Result<(), Error> {
        match self {
            VmSource::Definition(guest) => guest.check_files().map_err(Error::Files),
            VmSource::AdHoc { .. } => Ok(()),
        }
    }

    /// Checks that a definition's kernel and initrd exist and are
    /// non-empty regular files, so a typo is reported as such. An ad-hoc
    /// kernel is only opened.
    pub fn check_boot_files(&self) -> Result<(), Error> {
        let VmSource::Definition(guest) = self else {
            return Ok(());
        };
        guest.check_boot_files().map_err(Error::Files)
    }

    /// The guest's name: the definition's, or "vmm" for an ad-hoc kernel.
    pub fn name(&self) -> &str {
        match self {
            VmSource::Definition(guest) => &guest.name,
            VmSource::AdHoc { .. } => "vmm",
        }
    }

    /// The definition file, named in error messages.
    pub fn definition(&self) -> Option<&Path> {
        match self {
            VmSource::Definition(guest) => Some(&guest.file),
            VmSource::AdHoc { .. } => None,
        }
    }

    /// The definition itself, for its devices.
    pub fn guest(&self) -> Option<&GuestConfig> {
        match self {
            VmSource::Definition(guest) => Some(guest),
            VmSource::AdHoc { .. } => None,
        }
    }

    /// The kernel file; `None` when the guest boots what its first disk
    /// holds.
    pub fn kernel(&self) -> Option<&Path> {
        match self {
            VmSource::Definition(guest) => guest.boot.kernel(),
            VmSource::AdHoc { kernel, .. } => Some(kernel),
        }
    }

    pub fn initrd(&self) -> Option<&Path> {
        match self {
            VmSource::Definition(guest) => guest.boot.initrd(),
            VmSource::AdHoc { initrd, .. } => initrd.as_deref(),
        }
    }

    /// The command line the user asked for; the devices' part is added
    /// when the VM is built.
    pub fn cmdline(&self) -> &str {
        match self {
            VmSource::Definition(guest) => &guest.boot.cmdline,
            VmSource::AdHoc { cmdline, .. } => cmdline,
        }
    }

    pub fn vcpus(&self) -> u8 {
        match self {
            VmSource::Definition(guest) => guest.machine.vcpus,
            VmSource::AdHoc { vcpus, .. } => *vcpus,
        }
    }

    pub fn memory_mib(&self) -> u32 {
        match self {
            VmSource::Definition(guest) => guest.machine.memory_mib,
            VmSource::AdHoc { memory_mib, .. } => *memory_mib,
        }
    }

    /// "guests/web.toml: kernel web/bzImage" — the file the problem is in,
    /// with the path shown relative to the definition as the user wrote it.
    pub fn describe(&self, what: &str, path: &Path) -> String {
        match self.definition() {
            Some(def) => {
                let dir = def.parent().unwrap_or(Path::new(""));
                let shown = path.strip_prefix(dir).unwrap_or(path);
                format!("{}: {what} {}", def.display(), shown.display())
            }
            None => format!("{what} {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn ad_hoc(kernel: &str) -> VmSource {
        VmSource::from_launch(&LaunchSource::AdHoc {
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            memory_mib: None,
            vcpus: None,
        })
        .unwrap()
    }

    #[test]
    fn describe_relative_to_definition() {
        let source = ad_hoc("guests/web/bzImage");
        assert_eq!(
            source.describe("kernel", source.kernel().unwrap()),
            "kernel guests/web/bzImage"
        );
        let guest = hvconfig::parse_guest(
            Path::new("guests/x.toml"),
            "[boot]\nkernel = \"web/bzImage\"\n",
        )
        .unwrap();
        let source = VmSource::Definition(Box::new(guest));
        assert_eq!(
            source.describe("kernel", source.kernel().unwrap()),
            "guests/x.toml: kernel web/bzImage"
        );
        assert_eq!(
            source.describe("initrd", Path::new("/abs/initrd")),
            "guests/x.toml: initrd /abs/initrd"
        );
    }

    #[test]
    fn ad_hoc_defaults() {
        let source = ad_hoc("k");
        assert_eq!(source.cmdline(), DEFAULT_CMDLINE);
        assert_eq!((source.vcpus(), source.memory_mib()), (1, 128));
        assert_eq!(source.name(), "vmm");
        assert!(source.definition().is_none() && source.guest().is_none());
    }

    #[test]
    fn boot_files_are_checked_but_not_disks() {
        let dir = std::env::temp_dir().join(format!("vmm-resources-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let def = dir.join("g.toml");
        let write = |text: &str| fs::write(&def, text).unwrap();
        let load = || VmSource::load(&def).unwrap();
        fs::write(dir.join("k"), b"kernel").unwrap();
        fs::write(dir.join("empty"), b"").unwrap();

        write("[boot]\nkernel = \"k\"\n[[disk]]\npath = \"absent.img\"\n");
        assert!(load().check_boot_files().is_ok());
        let e = load().check_files().unwrap_err().to_string();
        assert!(e.contains("disk 1"), "{e}");

        for (kernel, problem) in [
            ("absent", "kernel"),
            ("empty", "file is empty"),
            (".", "is a directory, expected a regular file"),
        ] {
            write(&format!("[boot]\nkernel = \"{kernel}\"\n"));
            let e = load().check_boot_files().unwrap_err();
            assert_eq!(e.exit(), VmmExit::Invalid);
            let e = e.to_string();
            assert!(e.starts_with(&format!("{}: kernel ", def.display())), "{e}");
            assert!(e.contains(problem), "{e}");
        }
        write("[boot]\nkernel = \"k\"\ninitrd = \"absent\"\n");
        let e = load().check_boot_files().unwrap_err().to_string();
        assert!(
            e.contains(": initrd ") && e.ends_with("no such file"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
