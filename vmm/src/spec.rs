//! What to run: a guest definition from `hvconfig`, or an ad-hoc kernel
//! given on the command line.

use std::path::{Path, PathBuf};

use hvconfig::guest::{GuestConfig, Machine, DEFAULT_CMDLINE};

use crate::error::Fatal;

pub struct VmSpec {
    pub name: String,
    /// The definition file, named in error messages.
    pub definition: Option<PathBuf>,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Devices come only from definitions.
    pub guest: Option<GuestConfig>,
}

impl VmSpec {
    /// Loads a definition and checks that its files exist. With
    /// `check_disks` false only the kernel and initrd are checked: a jailed
    /// vmm cannot see disk paths (init hands the disks over as fds), and a
    /// disk without a handed fd is opened, with a clear error, when the
    /// devices are attached.
    pub fn from_definition(path: &Path, check_disks: bool) -> Result<Self, Fatal> {
        let guest = hvconfig::load_guest(path).map_err(|e| Fatal::invalid(e.to_string()))?;
        let checked = if check_disks {
            guest.check_files()
        } else {
            let mut boot_files = guest.clone();
            boot_files.disks.clear();
            boot_files.check_files()
        };
        checked.map_err(|e| Fatal::invalid(e.to_string()))?;
        Ok(VmSpec {
            name: guest.name.clone(),
            definition: Some(path.to_path_buf()),
            kernel: guest.boot.kernel.clone(),
            initrd: guest.boot.initrd.clone(),
            cmdline: guest.boot.cmdline.clone(),
            vcpus: guest.machine.vcpus,
            memory_mib: guest.machine.memory_mib,
            guest: Some(guest),
        })
    }

    pub fn ad_hoc(
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: Option<String>,
        memory_mib: Option<u32>,
        vcpus: Option<u8>,
    ) -> Self {
        let defaults = Machine::default();
        VmSpec {
            name: "vmm".into(),
            definition: None,
            kernel,
            initrd,
            cmdline: cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.into()),
            vcpus: vcpus.unwrap_or(defaults.vcpus),
            memory_mib: memory_mib.unwrap_or(defaults.memory_mib),
            guest: None,
        }
    }

    /// "guests/web.toml: kernel web/bzImage" — the file the problem is in,
    /// with the path shown relative to the definition as the user wrote it.
    pub fn describe(&self, what: &str, path: &Path) -> String {
        match &self.definition {
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
    use super::*;

    #[test]
    fn describe_relative_to_definition() {
        let mut spec = VmSpec::ad_hoc("guests/web/bzImage".into(), None, None, None, None);
        assert_eq!(
            spec.describe("kernel", &spec.kernel.clone()),
            "kernel guests/web/bzImage"
        );
        spec.definition = Some("guests/x.toml".into());
        assert_eq!(
            spec.describe("kernel", Path::new("guests/web/bzImage")),
            "guests/x.toml: kernel web/bzImage"
        );
        assert_eq!(
            spec.describe("initrd", Path::new("/abs/initrd")),
            "guests/x.toml: initrd /abs/initrd"
        );
    }

    #[test]
    fn ad_hoc_defaults() {
        let spec = VmSpec::ad_hoc("k".into(), None, None, None, None);
        assert_eq!(spec.cmdline, DEFAULT_CMDLINE);
        assert_eq!((spec.vcpus, spec.memory_mib), (1, 128));
    }
}
