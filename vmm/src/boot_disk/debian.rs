//! Debian's and Ubuntu's kernel links: `/vmlinuz` and `/initrd.img` (or
//! the same in /boot), kept by the kernel packages pointing at the
//! newest kernel. `vmlinuz.old` is the previous one and is never taken.
//!
//! With /boot on its own partition, the root's `/vmlinuz` points into
//! the empty mount point (`boot/vmlinuz-6.1`): a target under /boot that
//! the link's own file system lacks is looked for, without the `/boot`,
//! on the other partitions. The links may also live in the /boot
//! partition itself, as `/vmlinuz`.
//!
//! There is no command line on the disk, so it is made: `root=UUID=<the
//! root file system's UUID> ro`, or `root=PARTUUID=` if it has none. The
//! root is the first partition, in table order, that has `/etc/fstab` or
//! `/sbin/init`.

use super::fs::{self, FileError, Resolved};
use super::{read_initrds, BootFiles, Error, Limits, Notes, Volume, DISK};

/// The kernel link and its initrd link, in the order they are tried.
const LINKS: [(&str, &str); 2] = [
    ("/vmlinuz", "/initrd.img"),
    ("/boot/vmlinuz", "/boot/initrd.img"),
];

/// The files that mark a root file system.
const ROOT_MARKS: [&str; 2] = ["/etc/fstab", "/sbin/init"];

/// A link resolved: the volume that has the target, its path there, and
/// how it was reached, for the log.
struct Target {
    volume: usize,
    path: String,
    via: String,
}

pub(super) fn search(
    volumes: &[Volume],
    limits: &Limits,
    notes: &mut Notes,
) -> Result<Option<BootFiles>, Error> {
    for (v, vol) in volumes.iter().enumerate() {
        let mut tried = false;
        for (kernel_link, initrd_link) in LINKS {
            if !vol.has(kernel_link) {
                continue;
            }
            tried = true;
            let kernel_at = match locate(volumes, v, kernel_link) {
                Ok(t) => t,
                Err(e) => {
                    notes.add(vol.slot, e.to_string());
                    continue;
                }
            };
            let Some(kvol) = volumes.get(kernel_at.volume) else {
                continue;
            };
            let kernel = kvol.read(&kernel_at.path, limits.kernel, "kernel")?;
            // No initrd link is a kernel that needs none; a dangling one is
            // a broken installation, not a hint to boot without.
            let initrd = if vol.has(initrd_link) {
                let at = locate(volumes, v, initrd_link).map_err(|source| Error::File {
                    at: vol.name.clone(),
                    source,
                })?;
                match volumes.get(at.volume) {
                    Some(ivol) => read_initrds(ivol, &[at.path], limits)?,
                    None => None,
                }
            } else {
                None
            };
            let cmdline = format!("{} ro", root_arg(volumes)?);
            let found = if kernel_at.volume == v {
                format!(
                    "{DISK} {}: {} via {}",
                    vol.name, kernel_at.path, kernel_at.via
                )
            } else {
                format!(
                    "{DISK} {}: {} via {}'s {}",
                    kvol.name, kernel_at.path, vol.name, kernel_at.via
                )
            };
            return Ok(Some(BootFiles {
                kernel,
                initrd,
                cmdline,
                found,
            }));
        }
        if !tried {
            notes.add(vol.slot, "no /vmlinuz or /boot/vmlinuz".into());
        }
    }
    Ok(None)
}

/// Follows the link `link` on volume `v`; a target missing there but
/// under /boot is looked for on the other volumes without the /boot.
fn locate(volumes: &[Volume], v: usize, link: &str) -> Result<Target, FileError> {
    let fs = volumes
        .get(v)
        .map(|vol| vol.fs.as_ref())
        .ok_or_else(|| FileError::NotFound(link.into()))?;
    let missing = match fs::resolve(fs, link)? {
        Resolved::Found(chain) => return Ok(target(v, chain)),
        Resolved::Missing(chain) => chain,
    };
    let last = missing.last().map(String::as_str).unwrap_or(link);
    if let Some(rest) = last.strip_prefix("/boot/") {
        for (o, other) in volumes.iter().enumerate().filter(|(o, _)| *o != v) {
            if let Ok(Resolved::Found(chain)) = fs::resolve(other.fs.as_ref(), rest) {
                let mut via = missing.clone();
                via.extend(chain.iter().skip(1).cloned());
                let path = chain.last().cloned().unwrap_or_default();
                return Ok(Target {
                    volume: o,
                    path,
                    via: via.join(" -> "),
                });
            }
        }
    }
    Err(FileError::NotFound(missing.join(" -> ")))
}

fn target(volume: usize, chain: Vec<String>) -> Target {
    Target {
        volume,
        path: chain.last().cloned().unwrap_or_default(),
        via: chain.join(" -> "),
    }
}

/// `root=UUID=…` of the root file system, or `root=PARTUUID=…`.
fn root_arg(volumes: &[Volume]) -> Result<String, Error> {
    let Some(root) = volumes
        .iter()
        .find(|vol| ROOT_MARKS.iter().any(|m| vol.has(m)))
    else {
        return Err(Error::Unusable {
            at: "(Debian kernel links)".into(),
            reason: format!(
                "no file system read has {}, so none can be named as root=",
                ROOT_MARKS.join(" or ")
            ),
        });
    };
    if let Some(uuid) = root.fs.uuid() {
        return Ok(format!("root=UUID={uuid}"));
    }
    match &root.part.partuuid {
        Some(partuuid) => Ok(format!("root=PARTUUID={partuuid}")),
        None => Err(Error::Unusable {
            at: root.name.clone(),
            reason: "the root file system has no UUID and the disk no partition table, so \
                     root= cannot name it"
                .into(),
        }),
    }
}
