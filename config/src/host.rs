//! The host configuration format: the optional `host.toml`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::device::{Context, DeviceSource};
use crate::error::{ConfigError, Source};
use crate::fields::{parse_document, Fields, Str};
use crate::guest::GuestConfig;
use crate::names::{
    valid_guest_name, valid_hostname, valid_ifname, GUEST_NAME_RULE, HOSTNAME_RULE, IFNAME_RULE,
};

pub const DEFAULT_HOSTNAME: &str = "hv";
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u32 = 30;
pub const MAX_SHUTDOWN_TIMEOUT_S: u32 = 3600;
/// The one directory data file systems may be mounted on or below. An
/// allow-list rather than a deny-list: everything else in the initramfs
/// (/init, /bin/vmm, /mnt/config, /proc, /dev, /run, /etc, ...) is init's
/// own, and a mount there would hide it from init or the vmm jails.
pub const MOUNT_ROOT: &str = "/data";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: String,
    /// How long guests get to power off after being asked to, on host shutdown.
    pub shutdown_timeout_s: u32,
    /// Guest names to fetch when the configuration comes over HTTP, where
    /// there is no directory to list. Empty when not given.
    pub guests: Vec<String>,
    pub bridges: Vec<Bridge>,
    pub mounts: Vec<Mount>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            hostname: DEFAULT_HOSTNAME.to_string(),
            shutdown_timeout_s: DEFAULT_SHUTDOWN_TIMEOUT_S,
            guests: Vec::new(),
            bridges: Vec::new(),
            mounts: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    /// Host NICs enslaved to the bridge.
    pub interfaces: Vec<String>,
    pub address: Option<IpCidr>,
    /// Default route via this bridge; same family as `address`.
    pub gateway: Option<IpAddr>,
}

/// An interface address with its prefix length, e.g. `10.0.0.2/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpCidr {
    /// Whether `ip` lies in this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why an interface address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpCidrError {
    NoPrefix,
    NotAnAddress(String),
    BadPrefix {
        prefix: String,
        max: u8,
    },
    NotAnInterfaceAddress(IpAddr),
    NetworkOrBroadcast {
        addr: std::net::Ipv4Addr,
        prefix_len: u8,
    },
}

impl fmt::Display for IpCidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidrError::NoPrefix => f.write_str("expected ADDRESS/PREFIX, e.g. 10.0.0.2/24"),
            IpCidrError::NotAnAddress(a) => write!(f, "'{a}' is not an IPv4 or IPv6 address"),
            IpCidrError::BadPrefix { prefix, max } => {
                write!(f, "prefix length '{prefix}' is not in 1..={max}")
            }
            IpCidrError::NotAnInterfaceAddress(a) => {
                write!(f, "{a} cannot be an interface address")
            }
            IpCidrError::NetworkOrBroadcast { addr, prefix_len } => write!(
                f,
                "{addr} is the network or broadcast address of its /{prefix_len} subnet"
            ),
        }
    }
}

impl std::error::Error for IpCidrError {}

impl FromStr for IpCidr {
    type Err = IpCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or(IpCidrError::NoPrefix)?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpCidrError::NotAnAddress(addr.to_string()))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=max).contains(p) && !prefix.starts_with('+'))
            .ok_or_else(|| IpCidrError::BadPrefix {
                prefix: prefix.to_string(),
                max,
            })?;
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(IpCidrError::NotAnInterfaceAddress(addr));
        }
        if let IpAddr::V4(v4) = addr {
            // /31 and /32 have no network or broadcast address.
            if prefix_len <= 30 {
                let host_mask = u32::MAX >> prefix_len;
                let host = u32::from(v4) & host_mask;
                if host == 0 || host == host_mask {
                    return Err(IpCidrError::NetworkOrBroadcast {
                        addr: v4,
                        prefix_len,
                    });
                }
            }
        }
        Ok(IpCidr { addr, prefix_len })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `LABEL=`, `PARTLABEL=`, `UUID=` or a `/dev/...` path.
    pub source: DeviceSource,
    /// Absolute and normalised (no trailing '/', no '.' or '..').
    pub target: PathBuf,
    /// None: let init detect the file system.
    pub fstype: Option<String>,
}

impl HostConfig {
    pub fn bridge(&self, name: &str) -> Option<&Bridge> {
        self.bridges.iter().find(|b| b.name == name)
    }

    /// Checks that every bridge a guest's NICs name exists on this host.
    pub fn check_guest(&self, guest: &GuestConfig) -> Result<(), ConfigError> {
        for (i, net) in guest.nets.iter().enumerate() {
            if let Some(bridge) = &net.bridge {
                if self.bridge(bridge).is_none() {
                    let defined: Vec<&str> = self.bridges.iter().map(|b| b.name.as_str()).collect();
                    let defined = if defined.is_empty() {
                        "none".to_string()
                    } else {
                        defined.join(", ")
                    };
                    return Err(ConfigError::new(
                        &guest.file,
                        None,
                        format!(
                            "net {} uses bridge '{bridge}', which host.toml does not define \
                             (defined: {defined})",
                            i + 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn parse(path: &Path, text: &str) -> Result<HostConfig, ConfigError> {
    let src = Source { path, text };
    let doc = parse_document(&src)?;
    let root = Fields::new(
        &src,
        doc.get_ref(),
        None,
        "the top level",
        &[
            "hostname",
            "shutdown_timeout_s",
            "guests",
            "bridge",
            "mount",
        ],
    )?;
    let d = HostConfig::default();

    let hostname = match root.string("hostname")? {
        Some(h) if valid_hostname(h.value) => h.value.to_string(),
        Some(h) => {
            return Err(src.error_at(
                h.span,
                format!("hostname '{}' is invalid ({HOSTNAME_RULE})", h.value),
            ))
        }
        None => d.hostname,
    };
    let shutdown_timeout_s = root
        .integer("shutdown_timeout_s", 1..=i64::from(MAX_SHUTDOWN_TIMEOUT_S))?
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(d.shutdown_timeout_s);

    let mut guests: Vec<String> = Vec::new();
    for g in root.strings("guests")? {
        if !valid_guest_name(g.value) {
            return Err(src.error_at(
                g.span,
                format!("guest name '{}' is invalid: use {GUEST_NAME_RULE}", g.value),
            ));
        }
        if guests.iter().any(|n| n == g.value) {
            return Err(src.error_at(g.span, format!("guest '{}' is listed twice", g.value)));
        }
        if guests.len() == crate::MAX_GUESTS {
            return Err(src.error_at(
                g.span,
                format!("at most {} guests may be listed", crate::MAX_GUESTS),
            ));
        }
        guests.push(g.value.to_string());
    }

    Ok(HostConfig {
        hostname,
        shutdown_timeout_s,
        guests,
        bridges: bridges(&root)?,
        mounts: mounts(&root)?,
    })
}

fn ifname(f: &Fields<'_, '_, '_>, what: &str, s: &Str<'_>) -> Result<String, ConfigError> {
    if valid_ifname(s.value) {
        Ok(s.value.to_string())
    } else {
        Err(f.source().error_at(
            s.span.clone(),
            format!(
                "{what} '{}' is not a valid interface name ({IFNAME_RULE})",
                s.value
            ),
        ))
    }
}

fn bridges(root: &Fields<'_, '_, '_>) -> Result<Vec<Bridge>, ConfigError> {
    let src = root.source();
    let tables = root.tables("bridge")?;
    let mut bridges: Vec<Bridge> = Vec::with_capacity(tables.len());
    // Interfaces seen so far, and gateway families already claimed.
    let mut enslaved: Vec<(String, String)> = Vec::new();
    let mut gateways: Vec<(IpAddr, String)> = Vec::new();
    for (t, span) in tables {
        let f = Fields::new(
            src,
            t,
            Some(span),
            "[[bridge]]",
            &["name", "interfaces", "address", "gateway"],
        )?;
        let n = f
            .string("name")?
            .ok_or_else(|| f.missing("name", "the bridge's interface name"))?;
        let name = ifname(&f, "name", &n)?;
        if bridges.iter().any(|b| b.name == name) {
            return Err(src.error_at(n.span, format!("bridge '{name}' is defined twice")));
        }
        if let Some((_, owner)) = enslaved.iter().find(|(i, _)| *i == name) {
            return Err(src.error_at(
                n.span,
                format!("bridge '{name}' cannot also be an interface of bridge '{owner}'"),
            ));
        }
        let mut interfaces = Vec::new();
        for s in f.strings("interfaces")? {
            let iface = ifname(&f, "interface", &s)?;
            if iface == name || bridges.iter().any(|b| b.name == iface) {
                return Err(src.error_at(
                    s.span,
                    format!("interface '{iface}' is a bridge; bridges cannot be nested"),
                ));
            }
            if let Some((_, owner)) = enslaved.iter().find(|(i, _)| *i == iface) {
                return Err(src.error_at(
                    s.span,
                    format!("interface '{iface}' is already in bridge '{owner}'"),
                ));
            }
            enslaved.push((iface.clone(), name.clone()));
            interfaces.push(iface);
        }
        let address = match f.string("address")? {
            Some(s) => Some(s.value.parse::<IpCidr>().map_err(|e| {
                src.error_at(s.span, format!("address '{}' is invalid: {e}", s.value))
            })?),
            None => None,
        };
        let gateway = match f.string("gateway")? {
            Some(s) => {
                let gw = gateway(&f, &s, address)?;
                if let Some((_, owner)) = gateways.iter().find(|(g, _)| g.is_ipv4() == gw.is_ipv4())
                {
                    return Err(src.error_at(
                        s.span,
                        format!(
                            "bridge '{owner}' already sets the default {} gateway (only one allowed)",
                            if gw.is_ipv4() { "IPv4" } else { "IPv6" }
                        ),
                    ));
                }
                gateways.push((gw, name.clone()));
                Some(gw)
            }
            None => None,
        };
        bridges.push(Bridge {
            name,
            interfaces,
            address,
            gateway,
        });
    }
    Ok(bridges)
}

fn gateway(
    f: &Fields<'_, '_, '_>,
    s: &Str<'_>,
    address: Option<IpCidr>,
) -> Result<IpAddr, ConfigError> {
    let err = |msg: String| f.source().error_at(s.span.clone(), msg);
    let gw: IpAddr = s.value.parse().map_err(|_| {
        err(format!(
            "gateway '{}' is not an IPv4 or IPv6 address",
            s.value
        ))
    })?;
    let Some(address) = address else {
        return Err(err(format!(
            "gateway {gw} needs an address on the bridge (address = \"A.B.C.D/PREFIX\")"
        )));
    };
    if gw.is_ipv4() != address.addr.is_ipv4() {
        return Err(err(format!(
            "gateway {gw} is not in the address family of {address} \
             (IPv4 gateways need an IPv4 address, IPv6 ones an IPv6 address)"
        )));
    }
    if gw == address.addr {
        return Err(err(format!("gateway {gw} is the bridge's own address")));
    }
    let link_local_v6 = matches!(gw, IpAddr::V6(v6) if is_link_local_v6(v6));
    if !address.contains(gw) && !link_local_v6 {
        return Err(err(format!(
            "gateway {gw} is not in the bridge's subnet {address}"
        )));
    }
    Ok(gw)
}

fn is_link_local_v6(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

fn mounts(root: &Fields<'_, '_, '_>) -> Result<Vec<Mount>, ConfigError> {
    let src = root.source();
    let mut mounts: Vec<Mount> = Vec::new();
    for (t, span) in root.tables("mount")? {
        let f = Fields::new(
            src,
            t,
            Some(span),
            "[[mount]]",
            &["source", "target", "fstype"],
        )?;
        let s = f
            .string("source")?
            .ok_or_else(|| f.missing("source", "LABEL=x, PARTLABEL=x, UUID=x or /dev/..."))?;
        let source = DeviceSource::parse(s.value, Context::Mount)
            .map_err(|e| src.error_at(s.span.clone(), e.to_string()))?;
        let t = f
            .string("target")?
            .ok_or_else(|| f.missing("target", "the absolute directory to mount on"))?;
        let target =
            mount_target(t.value).map_err(|e| src.error_at(t.span.clone(), e.to_string()))?;
        if mounts.iter().any(|m| m.target == target) {
            return Err(src.error_at(
                t.span,
                format!(
                    "target {} is used by two [[mount]] entries",
                    target.display()
                ),
            ));
        }
        let fstype = match f.string("fstype")? {
            Some(s) if valid_fstype(s.value) => Some(s.value.to_string()),
            Some(s) => {
                return Err(src.error_at(
                    s.span,
                    format!(
                    "fstype '{}' is invalid (1 to 32 characters from a-z, 0-9, '.', '_' and '-', \
                         e.g. ext4, xfs, vfat; omit it to detect)",
                    s.value
                ),
                ))
            }
            None => None,
        };
        mounts.push(Mount {
            source,
            target,
            fstype,
        });
    }
    Ok(mounts)
}

/// Why a mount target was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TargetError {
    NotAbsolute(String),
    DotOrDotDot(String),
    OutsideMountRoot(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::NotAbsolute(v) => {
                write!(f, "target '{v}' must be an absolute path, e.g. /data")
            }
            TargetError::DotOrDotDot(v) => write!(f, "target '{v}' must not contain '.' or '..'"),
            TargetError::OutsideMountRoot(v) => write!(
                f,
                "target '{v}' must be {MOUNT_ROOT} or a directory inside it \
                 (the rest of the file system is the host's own)"
            ),
        }
    }
}

fn mount_target(v: &str) -> Result<PathBuf, TargetError> {
    let path = Path::new(v);
    if !path.is_absolute() || v.contains('\0') {
        return Err(TargetError::NotAbsolute(v.to_string()));
    }
    if !path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(TargetError::DotOrDotDot(v.to_string()));
    }
    let normal: PathBuf = path.components().collect();
    if !normal.starts_with(MOUNT_ROOT) {
        return Err(TargetError::OutsideMountRoot(v.to_string()));
    }
    Ok(normal)
}

fn valid_fstype(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}
