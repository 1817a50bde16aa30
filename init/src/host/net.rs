//! Host networking: bridges with their uplink NICs and addresses, and one
//! tap per guest NIC. Links are configured over rtnetlink; taps are made
//! with `hvcontract::tap`, exactly as the vmm expects them, because their
//! fd is what the vmm needs.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::IpAddr;

use hvconfig::host::{Bridge, IpCidr};
use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An rtnetlink socket that sends one request at a time and waits for
/// the kernel's acknowledgement.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { socket, seq: 0 })
    }

    fn request(&mut self, payload: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        self.wait_ack()
    }

    /// Reads until the acknowledgement of the current request. Only the
    /// error header is decoded: nothing else is asked of the kernel, and
    /// not linking the full message parser keeps init small.
    fn wait_ack(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            let mut data = buf.get(..n).unwrap_or_default();
            while !data.is_empty() {
                let msg = NetlinkBuffer::new_checked(data)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = (msg.length() as usize).max(16);
                if msg.message_type() == NLMSG_ERROR && msg.sequence_number() == self.seq {
                    let err = ErrorBuffer::new_checked(msg.payload())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    return match err.code() {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
                // Messages are 4-byte aligned in a datagram.
                data = data.get(len.next_multiple_of(4)..).unwrap_or_default();
            }
        }
    }

    pub fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        ignore_exists(self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL))
    }

    pub fn set_controller(&mut self, index: u32, bridge: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(bridge));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn add_address(&mut self, index: u32, cidr: IpCidr) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(cidr.addr);
        msg.header.prefix_len = cidr.prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(cidr.addr));
        msg.attributes.push(AddressAttribute::Address(cidr.addr));
        if let IpAddr::V4(v4) = cidr.addr {
            if cidr.prefix_len <= 30 {
                let host_mask = u32::MAX >> cidr.prefix_len;
                let broadcast = u32::from(v4) | host_mask;
                msg.attributes
                    .push(AddressAttribute::Broadcast(broadcast.into()));
            }
        }
        ignore_exists(self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ))
    }

    pub fn add_default_route(&mut self, gateway: IpAddr, index: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        msg.attributes.push(RouteAttribute::Oif(index));
        ignore_exists(self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ))
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Setting up again what is already there (a restart of the same
/// configuration) is not an error.
fn ignore_exists(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

pub fn index_of(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// Brings up loopback and every bridge of host.toml. Each failure is
/// logged and the rest carried on with: a missing NIC must not keep the
/// other bridges (or the guests) down.
pub fn setup_host(nl: &mut Netlink, bridges: &[Bridge]) {
    match index_of("lo").and_then(|lo| nl.set_up(lo)) {
        Ok(()) => {}
        Err(e) => log::warn!("network: lo up: {e}"),
    }
    for bridge in bridges {
        if let Err(e) = setup_bridge(nl, bridge) {
            log::error!("network: bridge {}: {e}", bridge.name);
        }
    }
}

fn setup_bridge(nl: &mut Netlink, bridge: &Bridge) -> io::Result<()> {
    nl.create_bridge(&bridge.name)?;
    let br = index_of(&bridge.name)?;
    for nic in &bridge.interfaces {
        let enslaved = index_of(nic).and_then(|i| {
            nl.set_controller(i, br)?;
            nl.set_up(i)
        });
        match enslaved {
            Ok(()) => log::info!("network: {nic} joined bridge {}", bridge.name),
            Err(e) => log::error!("network: {nic} -> bridge {}: {e}", bridge.name),
        }
    }
    nl.set_up(br)?;
    if let Some(cidr) = bridge.address {
        nl.add_address(br, cidr)?;
    }
    if let Some(gw) = bridge.gateway {
        nl.add_default_route(gw, br)?;
    }
    let address = bridge.address.map(|a| a.to_string());
    log::info!(
        "network: bridge {} up{}{}",
        bridge.name,
        address
            .map(|a| format!(", address {a}"))
            .unwrap_or_default(),
        bridge
            .gateway
            .map(|g| format!(", default via {g}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Name of the tap for NIC `nic` of guest number `guest`: the configured
/// one, else `NAME.N` when it fits the kernel's 15 bytes, else `hvG.N`.
pub fn tap_name(configured: Option<&str>, guest_name: &str, guest: usize, nic: usize) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    let readable = format!("{guest_name}.{nic}");
    if readable.len() < libc::IFNAMSIZ {
        readable
    } else {
        format!("hv{guest}.{nic}")
    }
}

/// Creates (or attaches to) tap `name` with the flags the vmm expects.
/// The device lives as long as the returned fd, which init keeps across
/// vmm restarts; it is close-on-exec, and handed to each vmm explicitly.
pub fn open_tap(name: &str) -> io::Result<File> {
    hvcontract::tap::open(name, false)
}

/// Puts a tap on its bridge (if any) and brings it up.
pub fn attach_tap(nl: &mut Netlink, tap: &str, bridge: Option<&str>) -> io::Result<()> {
    let index = index_of(tap)?;
    if let Some(bridge) = bridge {
        let br = index_of(bridge)
            .map_err(|e| io::Error::new(e.kind(), format!("bridge {bridge}: {e}")))?;
        nl.set_controller(index, br)?;
    }
    nl.set_up(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_the_kernel_limit() {
        assert_eq!(tap_name(Some("tap-web"), "web", 0, 0), "tap-web");
        assert_eq!(tap_name(None, "web", 3, 1), "web.1");
        assert_eq!(tap_name(None, "a-very-long-name", 12, 0), "hv12.0");
        assert_eq!(tap_name(None, "exactly-twelv", 1, 0), "exactly-twelv.0");
    }
}
