//! The boot loader inside the vmm: finds the kernel, initrd and command
//! line that the Linux distribution installed on the guest's first disk
//! would boot, so a definition whose `[boot]` names no kernel boots what
//! its disk holds. See docs/boot-from-disk.md.
//!
//! [`find_boot`] reads the partition table (`partitions`), mounts every
//! ext2/3/4 and FAT file system read-only (`fs`, `ext4`, `fat`) and looks,
//! in this order, the first that finds something winning:
//! 1. Boot Loader Specification entries on any of them (`entries`),
//! 2. an `extlinux.conf` (`extlinux`),
//! 3. Debian's and Ubuntu's `/vmlinuz` and `/initrd.img` links
//!    (`debian`).
//!
//! Everything read is bounded by [`Limits`], and the only thing done to
//! the disk is [`ReadAt::read_at`]: no file is opened, no thread started,
//! no write attempted, so it runs in the jailed vmm under a seccomp
//! filter that allows `pread64` on the disk and memory management.

mod debian;
mod disk;
mod entries;
mod ext4;
mod extlinux;
mod fat;
mod fs;
mod grubenv;
mod partitions;
#[cfg(test)]
mod tests;
mod version;

use std::fmt;
use std::rc::Rc;

pub use disk::{DiskFile, ReadAt};
pub use fs::FileError;
pub use partitions::Error as TableError;

use disk::{Budget, Slice};
use fs::{Fs, Mount};
use partitions::{Partition, Table};

/// How the disk is named in messages: the finder reads only the guest's
/// first disk.
const DISK: &str = "disk 0";
/// Smaller than this holds no partition table and no file system.
const MIN_DISK: u64 = 4096;

/// Bounds on what is read. The caller sets the initrd bound from the
/// guest's memory; [`Limits::new`] fills in the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The kernel's size.
    pub kernel: u64,
    /// All initrds together.
    pub initrd: u64,
    /// A loader entry or an extlinux.conf.
    pub config: u64,
    /// Loader entries parsed, on all file systems together.
    pub entries: usize,
    /// Entries listed in one directory.
    pub dir_entries: usize,
    /// Bytes read from the disk in all, metadata and files: what ends a
    /// search through structures that loop.
    pub read_bytes: u64,
    /// Reads from the disk in all (fatfs reads a directory 32 bytes at a
    /// time).
    pub reads: u64,
}

impl Limits {
    pub const KERNEL: u64 = 128 << 20;
    pub const CONFIG: u64 = 64 << 10;
    pub const ENTRIES: usize = 256;
    pub const DIR_ENTRIES: usize = 4096;
    /// What the file system metadata may take beyond the files' bounds:
    /// ext4-view reads a dirty journal through at mount, and ext4's
    /// largest is 1 GiB.
    pub const METADATA: u64 = 1 << 30;
    pub const READS: u64 = 4 << 20;

    /// The default bounds, with `initrd` bytes for the initrds.
    pub fn new(initrd: u64) -> Self {
        Self {
            kernel: Self::KERNEL,
            initrd,
            config: Self::CONFIG,
            entries: Self::ENTRIES,
            dir_entries: Self::DIR_ENTRIES,
            read_bytes: Self::KERNEL
                .saturating_add(initrd)
                .saturating_add(Self::METADATA),
            reads: Self::READS,
        }
    }
}

/// What to boot.
#[derive(Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: Vec<u8>,
    /// The initrds, concatenated (each padded to 4 bytes, as GRUB does:
    /// the kernel unpacks one archive after the other).
    pub initrd: Option<Vec<u8>>,
    pub cmdline: String,
    /// Where it came from, for the log: `disk 0 partition 2 (ext4, UUID
    /// …): /boot/vmlinuz-6.1.0-28-cloud-amd64 via /boot/loader/entries/x.conf`.
    pub found: String,
}

impl fmt::Debug for BootFiles {
    /// Sizes, not megabytes of bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootFiles")
            .field("kernel", &format_args!("{} bytes", self.kernel.len()))
            .field(
                "initrd",
                &format_args!("{:?} bytes", self.initrd.as_ref().map(Vec::len)),
            )
            .field("cmdline", &self.cmdline)
            .field("found", &self.found)
            .finish()
    }
}

/// Why the disk boots nothing. Every variant is the disk's fault, never
/// the host's: the guest definition cannot run as it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{DISK}: {0} bytes is too small to hold a partition table or a file system")]
    TooSmall(u64),
    #[error("{DISK}: {0}")]
    Table(#[from] partitions::Error),
    /// Nothing was found; one note per thing looked at.
    #[error("{DISK}: no partition holds a kernel: {}", .0.join("; "))]
    NotFound(Vec<String>),
    /// A boot entry was chosen but a file it names cannot be had.
    #[error("{DISK} {at}: {source}")]
    File {
        at: String,
        #[source]
        source: FileError,
    },
    /// A boot entry was chosen but cannot be turned into a boot.
    #[error("{DISK} {at}: {reason}")]
    Unusable { at: String, reason: String },
}

/// A mounted partition.
struct Volume {
    part: Partition,
    fs: Box<dyn Fs>,
    /// `partition 2 (ext4, UUID …)`.
    name: String,
    /// Its place in [`Notes::parts`].
    slot: usize,
}

impl Volume {
    /// Reads `path`, bounded.
    fn read(&self, path: &str, limit: u64, what: &'static str) -> Result<Vec<u8>, Error> {
        self.fs
            .read(path, limit, what)
            .map_err(|source| Error::File {
                at: self.name.clone(),
                source,
            })
    }

    /// True if there is something (a file, a directory, a link) at `path`.
    fn has(&self, path: &str) -> bool {
        self.fs.read_link(path).is_ok()
    }
}

/// What was looked at and found wanting: the table's notes, then each
/// partition in table order with its own.
struct Notes {
    table: Vec<String>,
    parts: Vec<(String, Vec<String>)>,
}

impl Notes {
    fn add(&mut self, slot: usize, note: String) {
        if let Some((_, notes)) = self.parts.get_mut(slot) {
            notes.push(note);
        }
    }

    fn into_vec(self) -> Vec<String> {
        let mut all = self.table;
        for (name, notes) in self.parts {
            all.push(format!("{name}: {}", notes.join(", ")));
        }
        all
    }
}

/// Finds what the distribution on `disk` boots. Deterministic: the same
/// disk gives the same answer (or the same error).
///
/// The disk is an `Rc` because ext4-view owns its reader (a `'static`
/// box): keep a clone of the `Rc` to have the file back afterwards
/// (`Rc::try_unwrap` once this returns).
pub fn find_boot(disk: Rc<dyn ReadAt>, limits: &Limits) -> Result<BootFiles, Error> {
    let len = disk.len();
    if len < MIN_DISK {
        return Err(Error::TooSmall(len));
    }
    let whole = Slice::whole(disk, len, Budget::new(limits.read_bytes, limits.reads));
    let (table, parts, table_notes) = partitions::read(&whole)?;
    let mut notes = Notes {
        table: table_notes,
        parts: Vec::new(),
    };
    if parts.is_empty() && notes.table.is_empty() {
        let kind = if table == Table::Gpt { "GPT" } else { "MBR" };
        notes.table.push(format!("its {kind} lists no partitions"));
    }
    let mut volumes = Vec::new();
    for part in parts {
        let label = if table == Table::None {
            "whole disk".to_owned()
        } else {
            format!("partition {}", part.number)
        };
        let slot = notes.parts.len();
        match fs::mount(&part.slice) {
            Mount::Mounted(fs) => {
                let name = match fs.uuid() {
                    Some(uuid) => format!("{label} ({}, UUID {uuid})", fs.kind()),
                    None => format!("{label} ({})", fs.kind()),
                };
                notes.parts.push((name.clone(), Vec::new()));
                volumes.push(Volume {
                    part,
                    fs,
                    name,
                    slot,
                });
            }
            Mount::Broken { kind, reason } => notes.parts.push((
                format!("{label} ({kind})"),
                vec![format!("does not mount: {reason}")],
            )),
            Mount::Unknown => notes
                .parts
                .push((label, vec!["no ext2/3/4 or FAT file system".into()])),
        }
    }
    if let Some(found) = search_entries(&volumes, limits, &mut notes)? {
        return Ok(found);
    }
    if let Some(found) = search_extlinux(&volumes, limits, &mut notes)? {
        return Ok(found);
    }
    if let Some(found) = debian::search(&volumes, limits, &mut notes)? {
        return Ok(found);
    }
    Err(Error::NotFound(notes.into_vec()))
}

/// Where loader entries are looked for on every file system: the ESP's or
/// XBOOTLDR's own root, or a root file system's /boot.
const ENTRY_DIRS: [&str; 2] = ["/loader/entries", "/boot/loader/entries"];

struct Found {
    volume: usize,
    path: String,
    entry: entries::Entry,
}

fn search_entries(
    volumes: &[Volume],
    limits: &Limits,
    notes: &mut Notes,
) -> Result<Option<BootFiles>, Error> {
    let mut found: Vec<Found> = Vec::new();
    let mut parsed = 0usize;
    for (v, vol) in volumes.iter().enumerate() {
        let mut any_dir = false;
        for dir in ENTRY_DIRS {
            let items = match vol.fs.list(dir, limits.dir_entries) {
                Ok(items) => items,
                Err(FileError::NotFound(_) | FileError::NotADir(_)) => continue,
                Err(e) => {
                    notes.add(vol.slot, e.to_string());
                    continue;
                }
            };
            any_dir = true;
            for item in items
                .iter()
                .filter(|i| i.is_file && entries::is_entry_name(&i.name))
            {
                let path = format!("{dir}/{}", item.name);
                if parsed >= limits.entries {
                    notes.add(
                        vol.slot,
                        format!("{path}: more than {} loader entries", limits.entries),
                    );
                    break;
                }
                parsed += 1;
                let entry = vol
                    .fs
                    .read(&path, limits.config, "loader entry")
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8"))
                    })
                    .and_then(|text| {
                        entries::parse(&item.name, &text).map_err(|e| format!("{path}: {e}"))
                    });
                match entry {
                    Ok(entry) => found.push(Found {
                        volume: v,
                        path,
                        entry,
                    }),
                    Err(e) => notes.add(vol.slot, e),
                }
            }
        }
        if !any_dir {
            notes.add(vol.slot, "no loader entries".into());
        }
    }
    found.sort_by(|a, b| {
        entries::order(&a.entry, &b.entry)
            .then_with(|| a.volume.cmp(&b.volume))
            .then_with(|| a.path.cmp(&b.path))
    });
    let Some(best) = found.first() else {
        return Ok(None);
    };
    let Some(vol) = volumes.get(best.volume) else {
        return Ok(None);
    };
    let e = &best.entry;
    // Paths are relative to the root of the file system holding the entry;
    // for /boot/loader/entries on a root file system, distributions also
    // write them relative to /boot.
    let base = if best.path.starts_with("/boot/") {
        "/boot"
    } else {
        ""
    };
    let kernel_path = pick_path(vol, &e.linux, base);
    let kernel = vol.read(&kernel_path, limits.kernel, "kernel")?;
    // GRUB's own entries (RHEL 8, older Fedora) use its variables and put
    // several files on one initrd line, as its initrd command takes them.
    let uses_vars = e.options.contains('$') || e.initrd.iter().any(|l| l.contains('$'));
    let env = if uses_vars {
        grub_env(vol, limits)
    } else {
        Vec::new()
    };
    let initrd_paths: Vec<String> = e
        .initrd
        .iter()
        .flat_map(|line| {
            grubenv::expand(line, &env)
                .split_ascii_whitespace()
                .map(|p| pick_path(vol, p, base))
                .collect::<Vec<_>>()
        })
        .collect();
    let initrd = read_initrds(vol, &initrd_paths, limits)?;
    let cmdline = if uses_vars {
        grubenv::expand(&e.options, &env)
    } else {
        e.options.clone()
    };
    Ok(Some(BootFiles {
        kernel,
        initrd,
        cmdline,
        found: format!("{DISK} {}: {kernel_path} via {}", vol.name, best.path),
    }))
}

/// GRUB's environment block on the entry's file system (none there:
/// every variable is unset, as in GRUB).
fn grub_env(vol: &Volume, limits: &Limits) -> Vec<(String, String)> {
    grubenv::PATHS
        .iter()
        .find_map(|p| vol.fs.read(p, limits.config, "grubenv").ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|text| grubenv::parse(&text))
        .unwrap_or_default()
}

/// `path` from the file system's root, or (if nothing is there and the
/// config lives under /boot) from `base`.
fn pick_path(vol: &Volume, path: &str, base: &str) -> String {
    let direct = fs::normalize(path);
    if base.is_empty() || vol.has(&direct) {
        return direct;
    }
    let under = fs::normalize(&format!("{base}/{path}"));
    if vol.has(&under) {
        under
    } else {
        direct
    }
}

/// Reads and concatenates the initrds, all of them bounded together.
fn read_initrds(vol: &Volume, paths: &[String], limits: &Limits) -> Result<Option<Vec<u8>>, Error> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut all: Vec<u8> = Vec::new();
    for path in paths {
        let left = limits.initrd.saturating_sub(all.len() as u64);
        let what = if all.is_empty() {
            "initrd"
        } else {
            "initrd (what the ones before left of it)"
        };
        let bytes = vol.read(path, left, what)?;
        all.extend_from_slice(&bytes);
        all.resize(all.len().next_multiple_of(4), 0);
    }
    if all.len() as u64 > limits.initrd {
        // Only the padding can take it past the limit.
        return Err(Error::Unusable {
            at: vol.name.clone(),
            reason: format!(
                "the initrds padded come to {} bytes, more than the initrd limit of {}",
                all.len(),
                limits.initrd
            ),
        });
    }
    Ok(Some(all))
}

fn search_extlinux(
    volumes: &[Volume],
    limits: &Limits,
    notes: &mut Notes,
) -> Result<Option<BootFiles>, Error> {
    for vol in volumes {
        let Some(conf) = extlinux::PATHS.iter().find(|p| vol.has(p)) else {
            notes.add(vol.slot, "no extlinux.conf".into());
            continue;
        };
        let text = vol
            .fs
            .read(conf, limits.config, "extlinux.conf")
            .map_err(|e| e.to_string())
            .and_then(|b| String::from_utf8(b).map_err(|_| format!("{conf}: not UTF-8")))
            .and_then(|t| extlinux::parse(&t).map_err(|e| format!("{conf}: {e}")));
        let label = match text {
            Ok(label) => label,
            Err(e) => {
                notes.add(vol.slot, e);
                continue;
            }
        };
        // Relative paths are relative to the configuration's directory;
        // absolute ones to the file system's root, or to /boot when the
        // configuration is under /boot on a root file system.
        let dir = fs::parent(conf);
        let base = if conf.starts_with("/boot/") {
            "/boot"
        } else {
            ""
        };
        let locate = |p: &str| {
            if p.starts_with('/') {
                pick_path(vol, p, base)
            } else {
                fs::join(dir, p)
            }
        };
        let kernel_path = locate(&label.kernel);
        let kernel = vol.read(&kernel_path, limits.kernel, "kernel")?;
        let initrds: Vec<String> = label.initrd.iter().map(|p| locate(p)).collect();
        let initrd = read_initrds(vol, &initrds, limits)?;
        return Ok(Some(BootFiles {
            kernel,
            initrd,
            cmdline: label.append,
            found: format!(
                "{DISK} {}: {kernel_path} via {conf} label {}",
                vol.name, label.name
            ),
        }));
    }
    Ok(None)
}
