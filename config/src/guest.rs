//! The guest definition format: one `guests/NAME.toml` per virtual machine.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::cloud_init::{self, CloudInit};
use crate::device::{Context, DeviceSource};
use crate::error::{ConfigError, Position, Source};
use crate::fields::{parse_document, Fields, Str};
use crate::mac::MacAddr;
use crate::names::{valid_ifname, GUEST_NAME_RULE, IFNAME_RULE};

pub use crate::names::valid_guest_name as valid_name;

pub const MAX_VCPUS: u8 = 32;
/// 16 MiB is about the least a modern kernel boots in; 1 TiB is far beyond
/// any host this image targets and keeps `memory_mib << 20` inside a u64.
pub const MIN_MEMORY_MIB: u32 = 16;
pub const MAX_MEMORY_MIB: u32 = 1 << 20;
/// The x86 kernel accepts 2048 bytes of command line in total; half of it
/// stays free for what the VMM appends for its devices.
pub const MAX_CMDLINE_LEN: usize = 1024;
pub const MAX_DISKS: usize = 16;
pub const MAX_NETS: usize = 8;
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// A parsed, validated guest definition. All paths are resolved against the
/// directory holding the definition file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// The file stem of the definition, e.g. `web` for `guests/web.toml`.
    pub name: String,
    /// The definition file itself, as it was given to the parser.
    pub file: PathBuf,
    pub machine: Machine,
    pub boot: Boot,
    /// In guest order: the first is `/dev/vda`.
    pub disks: Vec<Disk>,
    /// In guest order: the first is `eth0`.
    pub nets: Vec<Net>,
    pub rng: Rng,
    pub lifecycle: Lifecycle,
    /// The cloud-init NoCloud seed the vmm presents as an extra disk.
    pub cloud_init: Option<CloudInit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub vcpus: u8,
    pub memory_mib: u32,
    /// How the guest finds its virtio devices.
    pub virtio: VirtioTransport,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            vcpus: 1,
            memory_mib: 128,
            virtio: VirtioTransport::default(),
        }
    }
}

/// The bus the guest's virtio devices sit on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VirtioTransport {
    /// virtio-pci behind a PCI host bridge: what stock distribution kernels
    /// probe (virtio_pci as a module, no virtio-mmio command line devices).
    #[default]
    Pci,
    /// virtio-mmio windows, announced in ACPI and on the kernel command
    /// line: fewer exits at boot, for kernels built with VIRTIO_MMIO.
    Mmio,
}

impl VirtioTransport {
    const NAMES: [(&'static str, VirtioTransport); 2] = [
        ("pci", VirtioTransport::Pci),
        ("mmio", VirtioTransport::Mmio),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VirtioTransport::Pci => "pci",
            VirtioTransport::Mmio => "mmio",
        }
    }
}

impl fmt::Display for VirtioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    pub from: BootFrom,
    /// What the user asked for; the VMM appends what its devices need.
    /// When booting from the disk, it follows the disk's own options.
    pub cmdline: String,
}

/// What the vmm boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootFrom {
    /// A kernel (bzImage or ELF vmlinux) and initrd from the config source.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
    },
    /// What the distribution on the first disk installed: `[boot]` names
    /// no kernel. The vmm finds kernel, initrd and options on the disk.
    Disk,
}

impl Boot {
    /// The kernel from the config source, if the guest boots one.
    pub fn kernel(&self) -> Option<&Path> {
        match &self.from {
            BootFrom::Kernel { kernel, .. } => Some(kernel),
            BootFrom::Disk => None,
        }
    }

    /// The initrd from the config source, if any.
    pub fn initrd(&self) -> Option<&Path> {
        match &self.from {
            BootFrom::Kernel { initrd, .. } => initrd.as_deref(),
            BootFrom::Disk => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub path: DiskSource,
    pub read_only: bool,
    /// `size_gib`/`base`: how init creates the image if it does not exist.
    pub provision: Option<Provision>,
}

pub use crate::provision::Provision;

/// Where a disk's data lives: a path, `LABEL=` or `PARTLABEL=` (see
/// [`DeviceSource`]; disks refuse `UUID=`). The name the vmm knows it by.
pub use crate::device::DeviceSource as DiskSource;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    /// A bridge defined in host.toml; init creates a tap and attaches it.
    pub bridge: Option<String>,
    /// An existing tap device to use as is.
    pub tap: Option<String>,
    /// Always set: derived from the guest name and NIC index when absent.
    pub mac: MacAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    pub enabled: bool,
}

impl Default for Rng {
    fn default() -> Self {
        Rng { enabled: true }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub restart: RestartPolicy,
    /// Whether init starts the guest at boot.
    pub autostart: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            restart: RestartPolicy::OnFailure,
            autostart: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    #[default]
    OnFailure,
    Never,
}

impl RestartPolicy {
    const NAMES: [(&'static str, RestartPolicy); 3] = [
        ("always", RestartPolicy::Always),
        ("on-failure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GuestConfig {
    /// Checks that the files the definition points at exist and have the
    /// right type, so a typo shows up as a config error instead of a guest
    /// that never boots.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.check_boot_files()?;
        for (i, disk) in self.disks.iter().enumerate() {
            let what = format!("disk {}", i + 1);
            if let DiskSource::Path(path) = &disk.path {
                // A provisioned disk may not exist yet: init creates it.
                if disk.provision.is_none() || fs::symlink_metadata(path).is_ok() {
                    check_file(&self.file, &what, path, true)?;
                }
            }
            if let Some(base) = disk.provision.as_ref().and_then(|p| p.base.as_ref()) {
                check_file(&self.file, &format!("{what} base"), base, false)?;
            }
        }
        Ok(())
    }
}

/// A file a definition points at besides its disks: what init binds into
/// the vmm's jail, fetches from a config server and checks against a
/// signed SHA256SUMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootFile<'a> {
    /// How messages name it: "kernel", "initrd", "cloud_init user_data", ...
    pub what: &'static str,
    pub path: &'a Path,
    /// The largest size the vmm accepts, when the format has one.
    pub max_size: Option<u64>,
}

impl GuestConfig {
    /// The kernel, the initrd and the cloud-init seed files, in that order:
    /// every file besides the disks that the definition names, which init
    /// fetches, checks against a signed manifest and binds into the vmm's
    /// jail. A guest booting from its disk has no kernel or initrd here.
    pub fn boot_files(&self) -> Vec<BootFile<'_>> {
        let kernel = [
            ("kernel", self.boot.kernel()),
            ("initrd", self.boot.initrd()),
        ]
        .into_iter()
        .filter_map(|(what, path)| {
            path.map(|path| BootFile {
                what,
                path,
                max_size: None,
            })
        });
        let mut files: Vec<BootFile<'_>> = kernel.collect();
        if let Some(seed) = &self.cloud_init {
            files.extend(seed.key_files().into_iter().map(|(what, path)| BootFile {
                what,
                path,
                max_size: Some(cloud_init::MAX_SEED_FILE_SIZE),
            }));
        }
        files
    }

    /// The kernel, initrd and cloud-init half of [`GuestConfig::check_files`]:
    /// what a jailed vmm can check, since init hands it the disks as fds.
    pub fn check_boot_files(&self) -> Result<(), ConfigError> {
        if let Some(kernel) = self.boot.kernel() {
            check_file(&self.file, "kernel", kernel, false)?;
        }
        if let Some(initrd) = self.boot.initrd() {
            check_file(&self.file, "initrd", initrd, false)?;
        }
        if let Some(seed) = &self.cloud_init {
            seed.check_files(&self.file)?;
        }
        Ok(())
    }
}

pub(crate) fn check_file(
    def: &Path,
    what: &str,
    path: &Path,
    block_ok: bool,
) -> Result<(), ConfigError> {
    let fail = |problem: String| {
        ConfigError::new(def, None, format!("{what} {}: {problem}", path.display()))
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(fail("no such file".into()));
        }
        Err(e) => return Err(fail(format!("cannot access: {e}"))),
    };
    let kind = meta.file_type();
    let expected = if block_ok {
        "a regular file or a block device"
    } else {
        "a regular file"
    };
    if kind.is_file() {
        if meta.len() == 0 {
            return Err(fail("file is empty".into()));
        }
        Ok(())
    } else if block_ok && kind.is_block_device() {
        Ok(())
    } else {
        let found = if kind.is_dir() {
            "a directory"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_char_device() {
            "a character device"
        } else {
            "a special file"
        };
        Err(fail(format!("is {found}, expected {expected}")))
    }
}

/// Parses the guest definition `text` read from `path` (all of the file: a
/// byte order mark is dropped here); the guest's name is the file stem.
pub(crate) fn parse(path: &Path, file_text: &str) -> Result<GuestConfig, ConfigError> {
    let text = crate::strip_bom(file_text);
    let src = Source { path, text };
    let name = guest_name(&src)?;
    let doc = parse_document(&src)?;
    let root = Fields::new(
        &src,
        doc.get_ref(),
        None,
        "the top level",
        &[
            "machine",
            "boot",
            "disk",
            "net",
            "rng",
            "lifecycle",
            "cloud_init",
        ],
    )?;
    let base = path.parent().unwrap_or(Path::new(""));

    let machine = match root.sub("machine", "[machine]", &["vcpus", "memory_mib", "virtio"])? {
        Some(f) => machine(&f)?,
        None => Machine::default(),
    };
    let boot_fields = root.sub("boot", "[boot]", &["kernel", "initrd", "cmdline"])?;
    let disks = disks(&root, base)?;
    let boot = match &boot_fields {
        Some(f) => boot(f, base)?,
        None => Boot {
            from: BootFrom::Disk,
            cmdline: DEFAULT_CMDLINE.to_string(),
        },
    };
    if boot.from == BootFrom::Disk && disks.is_empty() {
        return Err(src.error_at_start(
            "nothing to boot: [boot] sets no kernel = \"PATH\" (a bzImage or vmlinux) \
             and there is no [[disk]] to boot from",
        ));
    }
    let nets = nets(&root, &name)?;
    let rng = match root.sub("rng", "[rng]", &["enabled"])? {
        Some(f) => Rng {
            enabled: f.boolean("enabled")?.unwrap_or(true),
        },
        None => Rng::default(),
    };
    let lifecycle = match root.sub("lifecycle", "[lifecycle]", &["restart", "autostart"])? {
        Some(f) => lifecycle(&f)?,
        None => Lifecycle::default(),
    };
    let cloud_init = cloud_init::parse(&root, base, &name, file_text)?;

    Ok(GuestConfig {
        name,
        file: path.to_path_buf(),
        machine,
        boot,
        disks,
        nets,
        rng,
        lifecycle,
        cloud_init,
    })
}

fn guest_name(src: &Source<'_>) -> Result<String, ConfigError> {
    let stem = src.path.file_stem().map(|s| s.to_string_lossy());
    match stem {
        Some(stem) if valid_name(&stem) => Ok(stem.into_owned()),
        Some(stem) => Err(src.error_at_start(format!(
            "guest name '{stem}' (the file name without .toml) is invalid: use {GUEST_NAME_RULE}"
        ))),
        None => Err(src.error_at_start(format!(
            "the file name gives no guest name: name it NAME.toml, NAME being {GUEST_NAME_RULE}"
        ))),
    }
}

fn machine(f: &Fields<'_, '_, '_>) -> Result<Machine, ConfigError> {
    let d = Machine::default();
    // Both ranges fit their target types, so the narrowing cannot fail.
    let vcpus = f.integer("vcpus", 1..=i64::from(MAX_VCPUS))?;
    let memory = f.integer(
        "memory_mib",
        i64::from(MIN_MEMORY_MIB)..=i64::from(MAX_MEMORY_MIB),
    )?;
    let virtio = match f.string("virtio")? {
        Some(s) => VirtioTransport::NAMES
            .iter()
            .find(|(n, _)| *n == s.value)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                f.source().error_at(
                    s.span,
                    format!(
                        "virtio = \"{}\" is not a virtio transport (allowed: pci, mmio)",
                        s.value
                    ),
                )
            })?,
        None => d.virtio,
    };
    Ok(Machine {
        vcpus: vcpus.and_then(|n| u8::try_from(n).ok()).unwrap_or(d.vcpus),
        memory_mib: memory
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.memory_mib),
        virtio,
    })
}

/// A file path as written, checked for things no file system accepts.
pub(crate) fn path_value(
    f: &Fields<'_, '_, '_>,
    key: &str,
    s: &Str<'_>,
) -> Result<(), ConfigError> {
    if s.value.is_empty() {
        return Err(f
            .source()
            .error_at(s.span.clone(), format!("{key} must not be empty")));
    }
    if s.value.contains('\0') {
        return Err(f.source().error_at(
            s.span.clone(),
            format!("{key} must not contain NUL characters"),
        ));
    }
    Ok(())
}

fn boot(f: &Fields<'_, '_, '_>, base: &Path) -> Result<Boot, ConfigError> {
    let kernel = f.string("kernel")?;
    if let Some(kernel) = &kernel {
        path_value(f, "kernel", kernel)?;
    }
    let initrd = f.string("initrd")?;
    if let Some(initrd) = &initrd {
        path_value(f, "initrd", initrd)?;
        if kernel.is_none() {
            return Err(f.source().error_at(
                initrd.span.clone(),
                "initrd needs kernel = \"PATH\" beside it; a guest without a kernel \
                 boots the initrd its first disk names",
            ));
        }
    }
    let cmdline = match f.string("cmdline")? {
        Some(c) => {
            if c.value.len() > MAX_CMDLINE_LEN {
                return Err(f.source().error_at(
                    c.span,
                    format!(
                        "cmdline is {} bytes long (allowed at most {MAX_CMDLINE_LEN})",
                        c.value.len()
                    ),
                ));
            }
            if c.value.chars().any(char::is_control) {
                return Err(f.source().error_at(
                    c.span,
                    "cmdline must not contain control characters (newlines, tabs, ...)",
                ));
            }
            c.value.to_string()
        }
        None => DEFAULT_CMDLINE.to_string(),
    };
    let from = match kernel {
        Some(kernel) => BootFrom::Kernel {
            kernel: base.join(kernel.value),
            initrd: initrd.map(|i| base.join(i.value)),
        },
        None => BootFrom::Disk,
    };
    Ok(Boot { from, cmdline })
}

fn disks(root: &Fields<'_, '_, '_>, base: &Path) -> Result<Vec<Disk>, ConfigError> {
    let src = root.source();
    let tables = root.tables("disk")?;
    let mut disks: Vec<Disk> = Vec::with_capacity(tables.len());
    // Where each accepted disk's table starts, to point back at it.
    let mut header_starts: Vec<usize> = Vec::with_capacity(disks.capacity());
    for (i, (t, span)) in tables.into_iter().enumerate() {
        if i == MAX_DISKS {
            return Err(src.error_at(
                span,
                format!("too many disks (allowed at most {MAX_DISKS})"),
            ));
        }
        let f = Fields::new(
            src,
            t,
            Some(span.clone()),
            "[[disk]]",
            &[
                "path",
                "read_only",
                crate::provision::KEYS[0],
                crate::provision::KEYS[1],
            ],
        )?;
        let p = f
            .string("path")?
            .ok_or_else(|| f.missing("path", "a file, a block device, LABEL=x or PARTLABEL=x"))?;
        path_value(&f, "path", &p)?;
        let path = disk_source(&f, &p, base)?;
        if let Some(j) = disks.iter().position(|d| d.path == path) {
            let line = header_starts
                .get(j)
                .map_or(1, |&start| Position::of_offset(src.text, start).line);
            return Err(src.error_at(
                p.span,
                format!(
                    "path '{}' is already used by the [[disk]] at line {line}",
                    p.value
                ),
            ));
        }
        header_starts.push(span.start);
        let read_only = f.boolean("read_only")?.unwrap_or(false);
        let provision = crate::provision::parse(&f, &path, read_only, base)?;
        disks.push(Disk {
            path,
            read_only,
            provision,
        });
    }
    Ok(disks)
}

fn disk_source(
    f: &Fields<'_, '_, '_>,
    p: &Str<'_>,
    base: &Path,
) -> Result<DiskSource, ConfigError> {
    match DeviceSource::parse(p.value, Context::Disk) {
        Ok(DeviceSource::Path(path)) => Ok(DeviceSource::Path(base.join(path))),
        Ok(other) => Ok(other),
        Err(e) => Err(f.source().error_at(p.span.clone(), e.to_string())),
    }
}

fn nets(root: &Fields<'_, '_, '_>, name: &str) -> Result<Vec<Net>, ConfigError> {
    let src = root.source();
    let tables = root.tables("net")?;
    let mut nets: Vec<Net> = Vec::with_capacity(tables.len());
    for (i, (t, span)) in tables.into_iter().enumerate() {
        if i == MAX_NETS {
            return Err(src.error_at(span, format!("too many nets (allowed at most {MAX_NETS})")));
        }
        let f = Fields::new(
            src,
            t,
            Some(span.clone()),
            "[[net]]",
            &["bridge", "tap", "mac"],
        )?;
        let ifname = |key: &str| -> Result<Option<String>, ConfigError> {
            let Some(s) = f.string(key)? else {
                return Ok(None);
            };
            if !valid_ifname(s.value) {
                return Err(src.error_at(
                    s.span,
                    format!(
                        "{key} '{}' is not a valid interface name ({IFNAME_RULE})",
                        s.value
                    ),
                ));
            }
            Ok(Some(s.value.to_string()))
        };
        let bridge = ifname("bridge")?;
        let tap = ifname("tap")?;
        if bridge.is_none() && tap.is_none() {
            return Err(src.error_at(
                span,
                "a [[net]] needs bridge = \"NAME\" (a bridge from host.toml) \
                 or tap = \"NAME\" (an existing tap device)",
            ));
        }
        if let Some(tap) = &tap {
            if nets.iter().any(|n| n.tap.as_ref() == Some(tap)) {
                let at = f.get("tap").map_or(span.clone(), |v| v.span());
                return Err(src.error_at(at, format!("tap '{tap}' is used by two [[net]] entries")));
            }
        }
        let (mac, mac_span) = match f.string("mac")? {
            Some(s) => (mac_value(&f, &s)?, s.span),
            None => (MacAddr::derive(name, i), span),
        };
        if nets.iter().any(|n| n.mac == mac) {
            return Err(src.error_at(
                mac_span,
                format!("mac {mac} is used by two [[net]] entries of this guest"),
            ));
        }
        nets.push(Net { bridge, tap, mac });
    }
    Ok(nets)
}

fn mac_value(f: &Fields<'_, '_, '_>, s: &Str<'_>) -> Result<MacAddr, ConfigError> {
    let err = |msg: String| f.source().error_at(s.span.clone(), msg);
    let mac: MacAddr = s
        .value
        .parse()
        .map_err(|e| err(format!("mac '{}' is not a MAC address: {e}", s.value)))?;
    if mac.is_multicast() {
        return Err(err(format!(
            "mac {mac} is a multicast address (the lowest bit of the first byte must be 0, \
             e.g. 52:54:00:xx:xx:xx)"
        )));
    }
    if mac.to_bytes() == [0; 6] {
        return Err(err("mac 00:00:00:00:00:00 is not a usable address".into()));
    }
    Ok(mac)
}

fn lifecycle(f: &Fields<'_, '_, '_>) -> Result<Lifecycle, ConfigError> {
    let d = Lifecycle::default();
    let restart = match f.string("restart")? {
        Some(s) => RestartPolicy::NAMES
            .iter()
            .find(|(n, _)| *n == s.value)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                f.source().error_at(
                    s.span,
                    format!(
                        "restart = \"{}\" is not a restart policy (allowed: always, on-failure, never)",
                        s.value
                    ),
                )
            })?,
        None => d.restart,
    };
    Ok(Lifecycle {
        restart,
        autostart: f.boolean("autostart")?.unwrap_or(d.autostart),
    })
}
