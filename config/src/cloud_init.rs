//! The `[cloud_init]` table of a guest definition: the files of a
//! cloud-init NoCloud seed, and the meta-data the host generates for it.
//!
//! The vmm presents the seed as a read-only FAT disk labelled `CIDATA`
//! holding `meta-data`, `user-data` and, when given, `network-config`
//! (docs/cloud-init.md). The formats of what is generated live here so
//! init, the vmm and the tests agree on them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::fields::Fields;
use crate::guest::{check_file, path_value};

/// A seed file is a few KiB of YAML or a shell script; the cap keeps a
/// stray large file from being copied into the vmm's memory.
pub const MAX_SEED_FILE_SIZE: u64 = 1024 * 1024;

/// How many hex digits of the definition's SHA-256 the instance-id carries:
/// 48 bits, plenty to tell the revisions of one guest's definition apart.
pub const INSTANCE_ID_HEX_DIGITS: usize = 12;

/// A validated `[cloud_init]` table; paths are resolved against the
/// directory holding the definition, like `[boot] kernel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInit {
    /// The `user-data` file (cloud-config, a script, ...), passed as is.
    pub user_data: PathBuf,
    /// The `network-config` file (network config version 1 or 2), if any.
    pub network_config: Option<PathBuf>,
    /// `NAME-HEX`: the guest's name and the start of the SHA-256 of the
    /// definition, so an edited definition is a new instance to cloud-init.
    pub instance_id: String,
    /// The guest's name, which cloud-init sets as its host name.
    pub local_hostname: String,
}

impl CloudInit {
    /// The `meta-data` file of the seed.
    pub fn meta_data(&self) -> String {
        meta_data(&self.instance_id, &self.local_hostname)
    }

    /// The seed files that come from the definition's directory, with the
    /// name each has on the seed volume, `user-data` first.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        self.entries()
            .into_iter()
            .map(|(name, _, path)| (name, path))
            .collect()
    }

    /// Checks that each file exists, is a regular file, is not empty and
    /// is at most [`MAX_SEED_FILE_SIZE`] bytes.
    pub fn check_files(&self, definition: &Path) -> Result<(), ConfigError> {
        for (_, what, path) in self.entries() {
            check_file(definition, what, path, false)?;
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if len > MAX_SEED_FILE_SIZE {
                return Err(too_large(definition, what, path, &len.to_string()));
            }
        }
        Ok(())
    }

    /// Reads the seed files as [`CloudInit::files`] lists them, each capped
    /// at [`MAX_SEED_FILE_SIZE`] while reading, so a file that grew after
    /// [`CloudInit::check_files`] is still refused.
    pub fn read_files(
        &self,
        definition: &Path,
    ) -> Result<Vec<(&'static str, Vec<u8>)>, ConfigError> {
        self.open_files(definition)?.read()
    }

    /// Opens the seed files without reading them: the vmm opens them
    /// before it drops its privileges, like the kernel, and reads them
    /// after.
    pub fn open_files(&self, definition: &Path) -> Result<SeedFiles, ConfigError> {
        let mut files = Vec::with_capacity(2);
        for (name, what, path) in self.entries() {
            let fail = |problem: String| {
                ConfigError::new(
                    definition,
                    None,
                    format!("{what} {}: {problem}", path.display()),
                )
            };
            let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
            // Checked again on what was opened: the path may have changed
            // since check_files.
            let is_file = file.metadata().map(|m| m.is_file());
            if !is_file.map_err(|e| fail(format!("cannot access: {e}")))? {
                return Err(fail("is not a regular file".into()));
            }
            files.push(OpenSeedFile {
                name,
                what,
                path: path.to_path_buf(),
                file,
            });
        }
        Ok(SeedFiles {
            definition: definition.to_path_buf(),
            files,
        })
    }

    /// Each file by its key, for messages, and its path.
    pub(crate) fn key_files(&self) -> Vec<(&'static str, &Path)> {
        self.entries()
            .into_iter()
            .map(|(_, what, path)| (what, path))
            .collect()
    }

    /// Each file: its name on the seed volume, its key (for messages), its
    /// path.
    fn entries(&self) -> Vec<(&'static str, &'static str, &Path)> {
        let mut files = vec![(
            "user-data",
            "cloud_init user_data",
            self.user_data.as_path(),
        )];
        if let Some(network) = &self.network_config {
            files.push((
                "network-config",
                "cloud_init network_config",
                network.as_path(),
            ));
        }
        files
    }
}

/// The seed files of a definition, opened by [`CloudInit::open_files`].
#[derive(Debug)]
pub struct SeedFiles {
    definition: PathBuf,
    files: Vec<OpenSeedFile>,
}

#[derive(Debug)]
struct OpenSeedFile {
    name: &'static str,
    what: &'static str,
    path: PathBuf,
    file: File,
}

impl SeedFiles {
    /// Each file's name on the seed volume and its bytes, `user-data`
    /// first; a file over [`MAX_SEED_FILE_SIZE`] or empty is refused.
    pub fn read(self) -> Result<Vec<(&'static str, Vec<u8>)>, ConfigError> {
        let mut out = Vec::with_capacity(self.files.len());
        for seed in self.files {
            let (what, path) = (seed.what, seed.path.as_path());
            let fail = |problem: String| {
                ConfigError::new(
                    &self.definition,
                    None,
                    format!("{what} {}: {problem}", path.display()),
                )
            };
            let mut data = Vec::new();
            // One byte past the cap tells "at the cap" from "over it".
            seed.file
                .take(MAX_SEED_FILE_SIZE + 1)
                .read_to_end(&mut data)
                .map_err(|e| fail(format!("cannot read: {e}")))?;
            if data.len() as u64 > MAX_SEED_FILE_SIZE {
                return Err(too_large(
                    &self.definition,
                    what,
                    path,
                    &format!("more than {MAX_SEED_FILE_SIZE}"),
                ));
            }
            if data.is_empty() {
                return Err(fail("file is empty".into()));
            }
            out.push((seed.name, data));
        }
        Ok(out)
    }
}

/// `size` is what is known of the file's size: its length, or "more than
/// the cap" when reading stopped there.
fn too_large(definition: &Path, what: &str, path: &Path, size: &str) -> ConfigError {
    ConfigError::new(
        definition,
        None,
        format!(
            "{what} {}: file is {size} bytes (a seed file may be at most \
             {MAX_SEED_FILE_SIZE} bytes, 1 MiB)",
            path.display()
        ),
    )
}

/// The NoCloud `meta-data` text. Both values are quoted: a guest may be
/// named `no` or `123`, which YAML would read as a boolean or a number.
/// Guest names are `[a-z0-9-]`, so nothing inside the quotes needs escaping.
pub fn meta_data(instance_id: &str, local_hostname: &str) -> String {
    format!("instance-id: \"{instance_id}\"\nlocal-hostname: \"{local_hostname}\"\n")
}

/// `NAME-` and the first [`INSTANCE_ID_HEX_DIGITS`] hex digits of the
/// SHA-256 of `definition_text`, the definition file's bytes.
pub fn instance_id(name: &str, definition_text: &str) -> String {
    let digest = Sha256::digest(definition_text.as_bytes());
    let hex: String = digest
        .iter()
        .take(INSTANCE_ID_HEX_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{name}-{hex}")
}

/// The `[cloud_init]` table, if the definition has one; `file_text` is the
/// whole definition file, hashed into the instance-id.
pub(crate) fn parse(
    root: &Fields<'_, '_, '_>,
    base: &Path,
    name: &str,
    file_text: &str,
) -> Result<Option<CloudInit>, ConfigError> {
    let Some(f) = root.sub(
        "cloud_init",
        "[cloud_init]",
        &["user_data", "network_config"],
    )?
    else {
        return Ok(None);
    };
    let user_data = f.string("user_data")?.ok_or_else(|| {
        f.missing(
            "user_data",
            "the path of the cloud-init user-data file, e.g. a #cloud-config",
        )
    })?;
    path_value(&f, "user_data", &user_data)?;
    let network_config = f.string("network_config")?;
    if let Some(network) = &network_config {
        path_value(&f, "network_config", network)?;
    }
    Ok(Some(CloudInit {
        user_data: base.join(user_data.value),
        network_config: network_config.map(|n| base.join(n.value)),
        instance_id: instance_id(name, file_text),
        local_hostname: name.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_text() {
        assert_eq!(
            meta_data("web-3f2a9c1d0b7e", "web"),
            "instance-id: \"web-3f2a9c1d0b7e\"\nlocal-hostname: \"web\"\n"
        );
    }

    #[test]
    fn instance_id_is_name_and_twelve_hex_digits_of_sha256() {
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(instance_id("web", ""), "web-e3b0c44298fc");
        assert_ne!(instance_id("web", "a"), instance_id("web", "b"));
    }
}
