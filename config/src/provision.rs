//! The `size_gib` and `base` keys of a `[[disk]]`: an image the host
//! creates on a guest's first start. Kept apart from guest.rs so the disk
//! table's parser only gains one call.

use std::path::{Path, PathBuf};

use crate::device::DeviceSource;
use crate::error::ConfigError;
use crate::fields::Fields;

/// 64 TiB: far beyond any data disk this image targets, and it keeps
/// `size_gib << 30` inside a u64 and an `off_t`.
pub const MAX_SIZE_GIB: u32 = 65536;

/// The keys a `[[disk]]` table gives for provisioning.
pub const KEYS: [&str; 2] = ["size_gib", "base"];

/// How init creates a disk image that does not exist yet. Never applied to
/// an existing file: that one is used as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provision {
    /// The size of a new image; `None` means the size of `base`.
    pub size_gib: Option<u32>,
    /// An image (beneath a data mount) the new one starts as a copy of.
    pub base: Option<PathBuf>,
}

impl Provision {
    /// `size_gib` in bytes.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size_gib.map(|g| u64::from(g) << 30)
    }
}

/// Reads `size_gib` and `base` of one `[[disk]]`. `path` is the disk's
/// source as parsed, `dir` the directory relative paths are resolved
/// against.
pub(crate) fn parse(
    f: &Fields<'_, '_, '_>,
    path: &DeviceSource,
    read_only: bool,
    dir: &Path,
) -> Result<Option<Provision>, ConfigError> {
    let src = f.source();
    let size_gib = f
        .integer("size_gib", 1..=i64::from(MAX_SIZE_GIB))?
        .and_then(|n| u32::try_from(n).ok());
    let base = match f.string("base")? {
        Some(b) => {
            if b.value.is_empty() || b.value.contains('\0') {
                return Err(src.error_at(b.span, "base must be a non-empty path without NUL"));
            }
            let base = dir.join(b.value);
            if let DeviceSource::Path(p) = path {
                if *p == base {
                    return Err(src.error_at(b.span, "base must not be the disk's own path"));
                }
            }
            Some(base)
        }
        None => None,
    };
    if size_gib.is_none() && base.is_none() {
        return Ok(None);
    }
    // Point at whichever key made this a provisioned disk.
    let key_span = || {
        f.get("size_gib")
            .or_else(|| f.get("base"))
            .map(|v| v.span())
            .unwrap_or_default()
    };
    if !matches!(path, DeviceSource::Path(_)) {
        return Err(src.error_at(
            key_span(),
            format!(
                "size_gib and base create an image file, but path is {path}: \
                 only a file path beneath a data mount can be provisioned"
            ),
        ));
    }
    if read_only && base.is_none() {
        let at = f
            .get("read_only")
            .map(|v| v.span())
            .unwrap_or_else(key_span);
        return Err(src.error_at(
            at,
            "read_only = true with size_gib and no base would give the guest a blank disk \
             it cannot write: drop read_only, or give base = \"PATH\" to copy",
        ));
    }
    Ok(Some(Provision { size_gib, base }))
}
