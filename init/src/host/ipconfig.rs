//! What the kernel's IP autoconfiguration (`ip=dhcp`) left for init: the
//! NIC it configured and the name servers DHCP gave.
//!
//! The booting NIC is found through the IPv4 routing table: the kernel
//! adds a route for the subnet (and the default route, if DHCP named a
//! router) on the one interface it configured, and init has configured
//! nothing yet. This is exact where "first interface that is up" is a
//! guess (several NICs can have a carrier), and /proc/net/pnp does not
//! name the device.

use std::fs;
use std::io;
use std::path::Path;

pub const PROC_ROUTE: &str = "/proc/net/route";
pub const SYS_NET: &str = "/sys/class/net";
/// Written by the kernel in resolv.conf syntax when DHCP gave name servers.
pub const PROC_PNP: &str = "/proc/net/pnp";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

const RTF_UP: u32 = 0x1;

/// The interface the kernel configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootNic {
    pub name: String,
    /// Lower case, colon separated: `52:54:00:12:34:56`.
    pub mac: String,
}

/// The interface of the default route, else of the first other IPv4
/// route that is up; loopback never counts.
fn route_interface(table: &str) -> Option<String> {
    let mut first = None;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(&iface), Some(&dest), Some(&flags), Some(&mask)) =
            (fields.first(), fields.get(1), fields.get(3), fields.get(7))
        else {
            continue;
        };
        let up = u32::from_str_radix(flags, 16).is_ok_and(|f| f & RTF_UP != 0);
        if !up || iface == "lo" {
            continue;
        }
        if dest == "00000000" && mask == "00000000" {
            return Some(iface.to_string());
        }
        first.get_or_insert_with(|| iface.to_string());
    }
    first
}

/// A MAC in the form `${mac}` stands for, or None for anything else
/// (such as the 20-byte address of an InfiniBand port).
fn normalize_mac(text: &str) -> Option<String> {
    let mac = text.trim().to_ascii_lowercase();
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(mac)
}

/// Finds the NIC the kernel configured, if it configured one.
pub fn boot_nic(proc_route: &Path, sys_net: &Path) -> Option<BootNic> {
    let table = fs::read_to_string(proc_route).ok()?;
    let name = route_interface(&table)?;
    let address = fs::read_to_string(sys_net.join(&name).join("address")).ok()?;
    let mac = normalize_mac(&address)?;
    Some(BootNic { name, mac })
}

/// Gives the C library's resolver the name servers DHCP handed the
/// kernel: the initramfs has no /etc/resolv.conf of its own.
pub fn install_resolv_conf(pnp: &Path, resolv: &Path) -> io::Result<bool> {
    if resolv.exists() {
        return Ok(false);
    }
    let text = match fs::read_to_string(pnp) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !text.lines().any(|l| l.starts_with("nameserver")) {
        return Ok(false);
    }
    if let Some(dir) = resolv.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(resolv, text)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn prefers_the_default_route() {
        let table = format!(
            "{HEADER}eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(route_interface(&table).as_deref(), Some("eth0"));
    }

    #[test]
    fn without_a_router_takes_the_subnet_route() {
        let table = format!(
            "{HEADER}lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
             eno1\t0000A8C0\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eno2\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(route_interface(&table).as_deref(), Some("eno2"));
        assert_eq!(route_interface(HEADER), None);
        assert_eq!(route_interface(""), None);
    }

    #[test]
    fn macs_are_lower_case_colon_form() {
        assert_eq!(
            normalize_mac("52:54:00:AB:cd:0F\n").as_deref(),
            Some("52:54:00:ab:cd:0f")
        );
        assert_eq!(normalize_mac("00:00:00:00:00:00:00:00"), None);
        assert_eq!(normalize_mac("5254.0012.3456"), None);
    }

    #[test]
    fn finds_the_nic_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = dir.path().join("route");
        let sys = dir.path().join("net");
        fs::create_dir_all(sys.join("eth0")).expect("mkdir");
        fs::write(sys.join("eth0/address"), "52:54:00:12:34:56\n").expect("write");
        fs::write(
            &route,
            format!("{HEADER}eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"),
        )
        .expect("write");
        assert_eq!(
            boot_nic(&route, &sys),
            Some(BootNic {
                name: "eth0".into(),
                mac: "52:54:00:12:34:56".into()
            })
        );
        fs::write(&route, HEADER).expect("write");
        assert_eq!(boot_nic(&route, &sys), None);
    }

    #[test]
    fn resolv_conf_comes_from_dhcp_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pnp = dir.path().join("pnp");
        let resolv = dir.path().join("etc/resolv.conf");
        assert!(!install_resolv_conf(&pnp, &resolv).expect("no pnp"));
        fs::write(&pnp, "#PROTO: DHCP\ndomain lan\nbootserver 10.0.2.2\n").expect("write");
        assert!(!install_resolv_conf(&pnp, &resolv).expect("no servers"));
        fs::write(&pnp, "#PROTO: DHCP\nnameserver 10.0.2.3\n").expect("write");
        assert!(install_resolv_conf(&pnp, &resolv).expect("install"));
        assert!(fs::read_to_string(&resolv)
            .expect("read")
            .contains("nameserver 10.0.2.3"));
        assert!(!install_resolv_conf(&pnp, &resolv).expect("already there"));
    }
}
