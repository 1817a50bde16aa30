//! The host configuration format.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hvconfig::host::{Bridge, IpCidr, Mount};
use hvconfig::DeviceSource;
use hvconfig::{parse_guest, parse_host, HostConfig};

fn parse(text: &str) -> HostConfig {
    parse_host(Path::new("host.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match parse_host(Path::new("host.toml"), text) {
        Ok(h) => panic!("accepted: {h:?}"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"hostname = "hv01"
shutdown_timeout_s = 60
guests = ["web", "db"]

[[bridge]]
name = "br0"
interfaces = ["eth0", "eth1"]
address = "10.0.0.2/24"
gateway = "10.0.0.1"

[[bridge]]
name = "br1"
interfaces = []
address = "fd00::2/64"
gateway = "fe80::1"

[[bridge]]
name = "br2"

[[mount]]
source = "LABEL=vmdata"
target = "/data"
fstype = "ext4"

[[mount]]
source = "/dev/sda3"
target = "/data/images/"

[[mount]]
source = "UUID=0a1b2c3d"
target = "/data/var/lib/x"

[[mount]]
source = "PARTLABEL=scratch"
target = "/data/scratch"
"#;

#[test]
fn full_example_parses_with_every_field() {
    let h = parse(FULL);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        h,
        HostConfig {
            hostname: "hv01".into(),
            shutdown_timeout_s: 60,
            guests: vec!["web".into(), "db".into()],
            bridges: vec![
                Bridge {
                    name: "br0".into(),
                    interfaces: vec!["eth0".into(), "eth1".into()],
                    address: Some(IpCidr {
                        addr: ip("10.0.0.2"),
                        prefix_len: 24
                    }),
                    gateway: Some(ip("10.0.0.1")),
                },
                Bridge {
                    name: "br1".into(),
                    interfaces: vec![],
                    address: Some(IpCidr {
                        addr: ip("fd00::2"),
                        prefix_len: 64
                    }),
                    gateway: Some(ip("fe80::1")),
                },
                Bridge {
                    name: "br2".into(),
                    interfaces: vec![],
                    address: None,
                    gateway: None,
                },
            ],
            mounts: vec![
                Mount {
                    source: DeviceSource::Label("vmdata".into()),
                    target: "/data".into(),
                    fstype: Some("ext4".into()),
                },
                Mount {
                    source: DeviceSource::Path("/dev/sda3".into()),
                    target: "/data/images".into(),
                    fstype: None,
                },
                Mount {
                    source: DeviceSource::Uuid("0a1b2c3d".into()),
                    target: "/data/var/lib/x".into(),
                    fstype: None,
                },
                Mount {
                    source: DeviceSource::PartLabel("scratch".into()),
                    target: "/data/scratch".into(),
                    fstype: None,
                },
            ],
        }
    );
    assert_eq!(h.bridges[0].address.unwrap().to_string(), "10.0.0.2/24");
    assert_eq!(h.mounts[0].source.to_string(), "LABEL=vmdata");
    assert_eq!(h.bridge("br1").unwrap().name, "br1");
    assert!(h.bridge("br9").is_none());
}

#[test]
fn empty_file_is_the_default() {
    let d = HostConfig::default();
    assert_eq!(parse(""), d);
    assert_eq!(d.hostname, "hv");
    assert_eq!(d.shutdown_timeout_s, 30);
    assert!(d.guests.is_empty() && d.bridges.is_empty() && d.mounts.is_empty());
}

#[test]
fn scalar_errors() {
    assert_eq!(
        err("hostname = \"hv_01\"\n"),
        "host.toml:1:12: hostname 'hv_01' is invalid (at most 64 characters: labels of a-z, \
         A-Z, 0-9 and '-' separated by '.', each label 1 to 63 characters and not starting or \
         ending with '-')"
    );
    assert_eq!(
        err("shutdown_timeout_s = 0\n"),
        "host.toml:1:22: shutdown_timeout_s = 0 is out of range (allowed 1..=3600)"
    );
    assert_eq!(
        err("shutdown_timeout_s = 3601\n"),
        "host.toml:1:22: shutdown_timeout_s = 3601 is out of range (allowed 1..=3600)"
    );
    assert_eq!(
        err("host_name = \"x\"\n"),
        "host.toml:1:1: unknown key 'host_name' at the top level \
         (allowed: hostname, shutdown_timeout_s, guests, bridge, mount)"
    );
    assert_eq!(
        err("guests = [\"web\", \"Web\"]\n"),
        "host.toml:1:18: guest name 'Web' is invalid: use 1 to 32 characters from a-z, 0-9 \
         and '-', starting with a letter or digit"
    );
    assert_eq!(
        err("guests = [\"web\", \"web\"]\n"),
        "host.toml:1:18: guest 'web' is listed twice"
    );
    let names: Vec<String> = (0..=hvconfig::MAX_GUESTS)
        .map(|i| format!("\"g{i}\""))
        .collect();
    let too_many = format!("guests = [{}]\n", names.join(", "));
    let col = too_many.find("\"g64\"").unwrap() + 1;
    assert_eq!(
        err(&too_many),
        format!("host.toml:1:{col}: at most 64 guests may be listed")
    );
    assert_eq!(
        err("guests = \"web\"\n"),
        "host.toml:1:10: guests must be an array of strings, found a string"
    );
    assert_eq!(
        err("guests = [\"web\", 1]\n"),
        "host.toml:1:18: guests entries must be strings, found an integer"
    );
}

#[test]
fn bridge_errors() {
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\n[[bridge]]\nname = \"br0\"\n"),
        "host.toml:4:8: bridge 'br0' is defined twice"
    );
    assert_eq!(
        err("[[bridge]]\ninterfaces = [\"eth0\"]\n"),
        "host.toml:1:1: missing required key 'name' in [[bridge]] (the bridge's interface name)"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br 0\"\n"),
        "host.toml:2:8: name 'br 0' is not a valid interface name \
         (1 to 15 bytes, no '/', ':', whitespace or control characters, not '.' or '..')"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\ninterfaces = [\"eth0\"]\n\
             [[bridge]]\nname = \"br1\"\ninterfaces = [\"eth0\"]\n"),
        "host.toml:6:15: interface 'eth0' is already in bridge 'br0'"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\ninterfaces = [\"br0\"]\n"),
        "host.toml:3:15: interface 'br0' is a bridge; bridges cannot be nested"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\ninterfaces = [\"br1\"]\n[[bridge]]\nname = \"br1\"\n"),
        "host.toml:5:8: bridge 'br1' cannot also be an interface of bridge 'br0'"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.2\"\n"),
        "host.toml:3:11: address '10.0.0.2' is invalid: expected ADDRESS/PREFIX, e.g. 10.0.0.2/24"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.2/33\"\n"),
        "host.toml:3:11: address '10.0.0.2/33' is invalid: prefix length '33' is not in 1..=32"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.0/24\"\n"),
        "host.toml:3:11: address '10.0.0.0/24' is invalid: \
         10.0.0.0 is the network or broadcast address of its /24 subnet"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.300/24\"\n"),
        "host.toml:3:11: address '10.0.0.300/24' is invalid: \
         '10.0.0.300' is not an IPv4 or IPv6 address"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\ngateway = \"10.0.0.1\"\n"),
        "host.toml:3:11: gateway 10.0.0.1 needs an address on the bridge \
         (address = \"A.B.C.D/PREFIX\")"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.2/24\"\ngateway = \"fe80::1\"\n"),
        "host.toml:4:11: gateway fe80::1 is not in the address family of 10.0.0.2/24 \
         (IPv4 gateways need an IPv4 address, IPv6 ones an IPv6 address)"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.2/24\"\ngateway = \"10.0.1.1\"\n"),
        "host.toml:4:11: gateway 10.0.1.1 is not in the bridge's subnet 10.0.0.2/24"
    );
    assert_eq!(
        err(
            "[[bridge]]\nname = \"br0\"\naddress = \"10.0.0.2/24\"\ngateway = \"10.0.0.1\"\n\
             [[bridge]]\nname = \"br1\"\naddress = \"10.1.0.2/24\"\ngateway = \"10.1.0.1\"\n"
        ),
        "host.toml:8:11: bridge 'br0' already sets the default IPv4 gateway (only one allowed)"
    );
    assert_eq!(
        err("[[bridge]]\nname = \"br0\"\nmtu = 9000\n"),
        "host.toml:3:1: unknown key 'mtu' in [[bridge]] (allowed: name, interfaces, address, gateway)"
    );
}

#[test]
fn mount_errors() {
    let m = |source: &str, target: &str| {
        err(&format!(
            "[[mount]]\nsource = \"{source}\"\ntarget = \"{target}\"\n"
        ))
    };
    assert_eq!(
        m("sda1", "/data"),
        "host.toml:2:10: source 'sda1' is not a device \
         (allowed: LABEL=x, PARTLABEL=x, UUID=x or an absolute /dev/... path)"
    );
    assert_eq!(
        m("/dev/../etc/x", "/data"),
        "host.toml:2:10: source '/dev/../etc/x' is not a device \
         (allowed: LABEL=x, PARTLABEL=x, UUID=x or an absolute /dev/... path)"
    );
    assert_eq!(
        m("UUID=", "/data"),
        "host.toml:2:10: source 'UUID=' needs a value after '='"
    );
    assert_eq!(
        m("LABEL=x", "data"),
        "host.toml:3:10: target 'data' must be an absolute path, e.g. /data"
    );
    assert_eq!(
        m("LABEL=x", "/data/../proc"),
        "host.toml:3:10: target '/data/../proc' must not contain '.' or '..'"
    );
    // Only /data and below: the rest of the initramfs is init's (its
    // binary, the vmm, the config partition, the kernel's file systems).
    for reserved in [
        "/",
        "/bin",
        "/init",
        "/mnt",
        "/mnt/config",
        "/mnt/x",
        "/proc",
        "/sys/fs",
        "/dev",
        "/run/x",
        "/tmp",
        "/etc",
        "/srv",
    ] {
        assert_eq!(
            m("LABEL=x", reserved),
            format!(
                "host.toml:3:10: target '{reserved}' must be /data or a directory inside it \
                 (the rest of the file system is the host's own)"
            )
        );
    }
    // A shared prefix is not containment.
    assert!(
        err("[[mount]]\nsource = \"LABEL=x\"\ntarget = \"/database\"\n")
            .contains("must be /data or a directory inside it")
    );
    assert_eq!(
        parse("[[mount]]\nsource = \"LABEL=x\"\ntarget = \"/data/vm/\"\n").mounts[0].target,
        PathBuf::from("/data/vm")
    );
    assert_eq!(
        err("[[mount]]\nsource = \"LABEL=a\"\ntarget = \"/data\"\n\
             [[mount]]\nsource = \"LABEL=b\"\ntarget = \"/data/\"\n"),
        "host.toml:6:10: target /data is used by two [[mount]] entries"
    );
    assert_eq!(
        err("[[mount]]\nsource = \"LABEL=a\"\ntarget = \"/data\"\nfstype = \"Ext 4\"\n"),
        "host.toml:4:10: fstype 'Ext 4' is invalid (1 to 32 characters from a-z, 0-9, '.', '_' \
         and '-', e.g. ext4, xfs, vfat; omit it to detect)"
    );
    assert_eq!(
        err("\n[[mount]]\ntarget = \"/data\"\n"),
        "host.toml:2:1: missing required key 'source' in [[mount]] \
         (LABEL=x, PARTLABEL=x, UUID=x or /dev/...)"
    );
}

#[test]
fn guests_must_use_bridges_the_host_defines() {
    let host = parse("[[bridge]]\nname = \"br0\"\n");
    let guest = |net: &str| {
        parse_guest(
            Path::new("guests/web.toml"),
            &format!("[boot]\nkernel = \"k\"\n[[net]]\n{net}\n"),
        )
        .unwrap()
    };
    assert_eq!(host.check_guest(&guest("bridge = \"br0\"")), Ok(()));
    assert_eq!(host.check_guest(&guest("tap = \"t0\"")), Ok(()));
    assert_eq!(
        host.check_guest(&guest("bridge = \"br1\""))
            .unwrap_err()
            .to_string(),
        "guests/web.toml: net 1 uses bridge 'br1', which host.toml does not define (defined: br0)"
    );
    assert_eq!(
        HostConfig::default()
            .check_guest(&guest("bridge = \"br1\""))
            .unwrap_err()
            .to_string(),
        "guests/web.toml: net 1 uses bridge 'br1', which host.toml does not define (defined: none)"
    );
}
