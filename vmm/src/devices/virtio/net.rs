//! virtio-net on a host tap device, without offloads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::complaints::Complaints;
use super::queue::{Chain, QueueContext};
use super::tap::{Tap, VNET_HDR_LEN};
use super::{read_config_bytes, DeviceError, QueueProcessor, VirtioDevice};

pub const QUEUE_SIZE: u16 = 256;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Largest frame without segmentation offloads: the vnet header plus an
/// Ethernet frame at the largest MTU a tap allows.
const MAX_FRAME: usize = VNET_HDR_LEN + 14 + 4 + 65535;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;
/// The header of every received frame: no offloads were negotiated, so no
/// flags or GSO information; num_buffers (little-endian) is 1 without
/// VIRTIO_NET_F_MRG_RXBUF.
const RX_HEADER: [u8; VNET_HDR_LEN] = {
    let mut header = [0; VNET_HDR_LEN];
    header[NUM_BUFFERS_OFFSET] = 1;
    header
};

/// A virtio network device.
pub struct Net {
    backend: Arc<File>,
    config: [u8; 8],
}

impl Net {
    /// A NIC with MAC address `mac`, connected to `tap`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Net {
        Net::with_backend(tap.into_file(), mac)
    }

    /// Any non-blocking fd that carries one frame (vnet header first) per
    /// read/write: a configured tap, or a datagram socket in tests.
    pub(crate) fn with_backend(backend: File, mac: [u8; 6]) -> Net {
        // Config space: mac[6], then a status word that is only meaningful
        // with VIRTIO_NET_F_STATUS (not offered).
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        Net {
            backend: Arc::new(backend),
            config,
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        1u64 << VIRTIO_NET_F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn processor(&mut self) -> Box<dyn QueueProcessor> {
        Box::new(NetProcessor {
            backend: self.backend.clone(),
            rx_frame: vec![0; MAX_FRAME],
            rx_len: 0,
            tx_frame: vec![0; MAX_FRAME],
            backend_failed: false,
            complaints: Complaints::new("virtio-net"),
        })
    }
}

struct NetProcessor {
    backend: Arc<File>,
    /// A frame read from the tap that waits for a guest RX buffer.
    rx_frame: Vec<u8>,
    rx_len: usize,
    tx_frame: Vec<u8>,
    /// The tap reported an error or EOF: stop polling it (it would stay
    /// readable and spin the worker).
    backend_failed: bool,
    complaints: Complaints,
}

impl QueueProcessor for NetProcessor {
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        match index {
            RX_QUEUE => self.receive(ctx),
            TX_QUEUE => self.transmit(ctx),
            _ => Ok(()),
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.backend.as_raw_fd())
    }

    fn wants_backend_events(&self) -> bool {
        !self.backend_failed && self.rx_len == 0
    }

    fn backend_ready(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        self.receive(ctx)
    }

    fn reset(&mut self) {
        self.rx_len = 0;
    }
}

impl NetProcessor {
    /// Moves frames from the tap into guest RX buffers until either runs out.
    fn receive(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        loop {
            if self.rx_len == 0 && !self.read_frame() {
                return Ok(());
            }
            // Without a guest buffer the frame stays pending and the tap is
            // not polled until the driver adds RX buffers.
            let Some(chain) = ctx.pop(RX_QUEUE)? else {
                return Ok(());
            };
            let head = chain.head_index();
            let len = self.deliver(ctx.mem(), chain);
            self.rx_len = 0;
            ctx.add_used(RX_QUEUE, head, len)?;
        }
    }

    /// Reads one frame from the tap; false when none is waiting.
    fn read_frame(&mut self) -> bool {
        if self.backend_failed {
            return false;
        }
        loop {
            match (&*self.backend).read(&mut self.rx_frame) {
                Ok(n) if n > VNET_HDR_LEN => {
                    self.rx_len = n;
                    return true;
                }
                Ok(0) => {
                    log::error!("virtio-net: tap closed; receive path stopped");
                    self.backend_failed = true;
                    return false;
                }
                Ok(_) => continue, // a header without a frame: nothing to deliver
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("virtio-net: tap read failed: {e}; receive path stopped");
                    self.backend_failed = true;
                    return false;
                }
            }
        }
    }

    /// Copies the pending frame into `chain`; returns the used length
    /// (0 drops the frame, which the guest counts as a length error).
    fn deliver(&mut self, mem: &GuestMemoryMmap, chain: Chain) -> u32 {
        let Some(frame) = self.rx_frame.get_mut(..self.rx_len) else {
            return 0;
        };
        let mut out = match Writer::new(mem, chain) {
            Ok(w) => w,
            Err(e) => {
                self.complaints
                    .warn(format_args!("RX buffer outside guest memory: {e}"));
                return 0;
            }
        };
        if out.available_bytes() < frame.len() {
            self.complaints.warn(format_args!(
                "{}-byte RX buffer too small for a {}-byte frame",
                out.available_bytes(),
                frame.len()
            ));
            return 0;
        }
        if let Some(header) = frame.get_mut(..VNET_HDR_LEN) {
            header.copy_from_slice(&RX_HEADER);
        }
        match out.write_all(frame) {
            // At most MAX_FRAME bytes.
            Ok(()) => u32::try_from(frame.len()).unwrap_or(0),
            Err(_) => 0,
        }
    }

    fn transmit(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = ctx.pop(TX_QUEUE)? {
            let head = chain.head_index();
            self.send_frame(ctx.mem(), chain);
            ctx.add_used(TX_QUEUE, head, 0)?;
        }
        Ok(())
    }

    fn send_frame(&mut self, mem: &GuestMemoryMmap, chain: Chain) {
        let mut data = match Reader::new(mem, chain) {
            Ok(r) => r,
            Err(e) => {
                self.complaints
                    .warn(format_args!("TX buffer outside guest memory: {e}"));
                return;
            }
        };
        let len = data.available_bytes();
        let frame = match self.tx_frame.get_mut(..len) {
            Some(frame) if len > VNET_HDR_LEN => frame,
            _ => {
                self.complaints
                    .warn(format_args!("dropped TX frame of {len} bytes"));
                return;
            }
        };
        if data.read_exact(frame).is_err() {
            return;
        }
        // Offloads are off: whatever the guest put in the header, the host
        // must see "no checksum or segmentation requested".
        if let Some(header) = frame.get_mut(..VNET_HDR_LEN) {
            header.fill(0);
        }
        match (&*self.backend).write(frame) {
            Ok(_) => {}
            // A full tap queue drops the frame, as a NIC would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.complaints.warn(format_args!("tap write failed: {e}")),
        }
    }
}

#[cfg(test)]
// Test drivers split 64-bit addresses into 32-bit registers and build
// small test patterns and lengths: the truncation is what they mean.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::virtio::test_support::driver::{Driver, DATA};
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_CONFIG;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const RX_BUF: u32 = 1526;

    /// A frame for the guest's MAC with a recognisable payload.
    fn frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = vec![tag; len];
        f[..6].copy_from_slice(&MAC);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f
    }

    /// A net device whose "tap" is one end of a datagram socket pair.
    fn socket_net() -> (Driver, UnixDatagram) {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let net = Net::with_backend(File::from(OwnedFd::from(ours)), MAC);
        let mut d = Driver::new(Box::new(net));
        d.start(1 << VIRTIO_NET_F_MAC, 2, 256);
        (d, peer)
    }

    fn post_rx(d: &mut Driver, slot: u64, len: u32) {
        d.submit(RX_QUEUE, &[(DATA + slot * 0x1000, len, true)]);
    }

    /// Both directions over virtio-pci, each queue on its own MSI-X vector.
    #[test]
    fn runs_over_pci_with_a_vector_per_queue() {
        use crate::devices::pci::PciDevice;
        use crate::devices::virtio::pci::{common_cfg::*, DEVICE_CFG_OFFSET, MSIX_TABLE_OFFSET};
        use crate::devices::virtio::test_support::driver::{Kind, VERSION_1};

        let (ours, peer) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let net = Net::with_backend(File::from(OwnedFd::from(ours)), MAC);
        let mut d = Driver::of(Kind::Pci, Box::new(net));
        assert_eq!(d.read_n(NUM_QUEUES, 2), 2);
        assert_eq!(d.vectors.len(), 3);
        // MSI-X on (the capability follows the list head), entries unmasked.
        let cap = {
            let mut b = [0u8; 1];
            d.dev.pci().config().read(0x34, &mut b);
            usize::from(b[0])
        };
        d.dev.pci().config_write(cap + 2, &0x8000u16.to_le_bytes());
        for v in 0..3 {
            d.write_n(MSIX_TABLE_OFFSET + v * 16 + 8, 4, 0x40 + v);
            d.write_n(MSIX_TABLE_OFFSET + v * 16 + 12, 4, 0);
        }
        assert!(d.negotiate(VERSION_1 | 1 << VIRTIO_NET_F_MAC));
        d.write_n(MSIX_CONFIG, 2, 0);
        for q in 0..2u32 {
            d.setup_queue(q, 256);
            d.write_n(QUEUE_MSIX_VECTOR, 2, u64::from(q) + 1);
        }
        d.driver_ok();
        let mut mac = [0u8; 6];
        d.dev.read(DEVICE_CFG_OFFSET, &mut mac);
        assert_eq!(mac, MAC);

        let payload = frame(0x33, 60);
        d.write_mem(DATA, &[0; VNET_HDR_LEN]);
        d.write_mem(DATA + 0x100, &payload);
        d.submit(
            TX_QUEUE,
            &[
                (DATA, VNET_HDR_LEN as u32, false),
                (DATA + 0x100, 60, false),
            ],
        );
        assert_eq!(d.wait_used(TX_QUEUE), (0, 0));
        let mut got = [0u8; 2048];
        assert_eq!(peer.recv(&mut got).unwrap(), VNET_HDR_LEN + 60);
        post_rx(&mut d, 1, RX_BUF);
        let mut sent = vec![0; VNET_HDR_LEN];
        sent.extend(frame(0x44, 80));
        peer.send(&sent).unwrap();
        assert_eq!(d.wait_used(RX_QUEUE).1, sent.len() as u32);
        // Each queue interrupted on its own vector, the config one never.
        std::thread::sleep(Duration::from_millis(20));
        assert!(d.vectors[1].read().is_ok(), "rx vector");
        assert!(d.vectors[2].read().is_ok(), "tx vector");
        assert!(d.vectors[0].read().is_err(), "config vector");
        assert!(d.irq.read().is_err(), "no INTx");
    }

    #[test]
    fn config_holds_the_mac() {
        let (mut d, _peer) = socket_net();
        let mut mac = [0u8; 6];
        d.dev.read(u64::from(VIRTIO_MMIO_CONFIG), &mut mac);
        assert_eq!(mac, MAC);
        assert_ne!(d.device_features() & (1 << VIRTIO_NET_F_MAC), 0);
    }

    #[test]
    fn transmits_frames_with_a_clean_header() {
        let (mut d, peer) = socket_net();
        let payload = frame(0x11, 60);
        // A header with offload flags the guest never negotiated.
        d.write_mem(DATA, &[0xff; VNET_HDR_LEN]);
        d.write_mem(DATA + 0x100, &payload);
        d.submit(
            TX_QUEUE,
            &[
                (DATA, VNET_HDR_LEN as u32, false),
                (DATA + 0x100, 60, false),
            ],
        );
        assert_eq!(d.wait_used(TX_QUEUE), (0, 0));
        let mut got = [0u8; 2048];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 60);
        assert_eq!(&got[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&got[VNET_HDR_LEN..n], &payload[..]);
    }

    #[test]
    fn bad_tx_chains_are_dropped() {
        let (mut d, peer) = socket_net();
        d.submit(TX_QUEUE, &[(DATA, 4, false)]); // shorter than the header
        d.submit(TX_QUEUE, &[(u64::MAX - 4, 100, false)]);
        d.submit(TX_QUEUE, &[(DATA, 70_000, false), (DATA, 70_000, false)]);
        d.submit(TX_QUEUE, &[(DATA, 100, true)]); // wrong direction
        for _ in 0..4 {
            d.wait_used(TX_QUEUE);
        }
        peer.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        assert!(peer.recv(&mut got).is_err(), "a bad chain was transmitted");
    }

    #[test]
    fn receives_frames_into_guest_buffers() {
        let (mut d, peer) = socket_net();
        post_rx(&mut d, 0, RX_BUF);
        let mut sent = vec![0xee; VNET_HDR_LEN];
        sent.extend(frame(0x22, 60));
        peer.send(&sent).unwrap();
        assert_eq!(d.wait_used(RX_QUEUE), (0, sent.len() as u32));
        let got = d.read_mem(DATA, sent.len());
        let mut header = [0u8; VNET_HDR_LEN];
        header[NUM_BUFFERS_OFFSET] = 1;
        assert_eq!(&got[..VNET_HDR_LEN], &header);
        assert_eq!(&got[VNET_HDR_LEN..], &sent[VNET_HDR_LEN..]);
    }

    #[test]
    fn frames_wait_for_rx_buffers() {
        let (mut d, peer) = socket_net();
        for tag in 1..=3u8 {
            let mut sent = vec![0; VNET_HDR_LEN];
            sent.extend(frame(tag, 100));
            peer.send(&sent).unwrap();
        }
        assert_eq!(d.try_wait_used(RX_QUEUE, Duration::from_millis(100)), None);
        for slot in 0..3u64 {
            post_rx(&mut d, slot, RX_BUF);
            assert_eq!(d.wait_used(RX_QUEUE).1, (VNET_HDR_LEN + 100) as u32);
            let tag = d.read_mem(DATA + slot * 0x1000 + VNET_HDR_LEN as u64 + 20, 1)[0];
            assert_eq!(tag, slot as u8 + 1, "frames out of order");
        }
    }

    #[test]
    fn too_small_rx_buffer_drops_the_frame() {
        let (mut d, peer) = socket_net();
        post_rx(&mut d, 0, 40);
        let mut sent = vec![0; VNET_HDR_LEN];
        sent.extend(frame(0x33, 100));
        peer.send(&sent).unwrap();
        assert_eq!(d.wait_used(RX_QUEUE), (0, 0));
        post_rx(&mut d, 1, RX_BUF);
        peer.send(&sent).unwrap();
        assert_eq!(d.wait_used(RX_QUEUE), (1, sent.len() as u32));
    }

    #[test]
    fn closed_backend_stops_receive_but_not_the_device() {
        let (mut d, peer) = socket_net();
        drop(peer);
        post_rx(&mut d, 0, RX_BUF);
        d.write_mem(DATA + 0x8000, &frame(0x44, 60));
        d.submit(TX_QUEUE, &[(DATA + 0x8000, 72, false)]);
        assert_eq!(d.wait_used(TX_QUEUE), (0, 0));
        assert_eq!(d.status() & 0x40, 0);
    }

    #[test]
    fn from_file_rejects_non_tap_fds() {
        let (sock, _peer) = UnixDatagram::pair().unwrap();
        let err = Tap::from_file(File::from(OwnedFd::from(sock))).unwrap_err();
        assert!(err.to_string().contains("not a tap device"), "{err}");
        assert!(Tap::open("").is_err());
        assert!(Tap::open("a-name-that-is-far-too-long").is_err());
    }

    /// Real tap traffic through the host stack (we run as root here).
    #[test]
    fn real_tap_round_trip() {
        let tap = Tap::open("vmmtest%d").expect("opening a tap needs root and /dev/net/tun");
        let name = tap.name().to_string();
        assert!(name.starts_with("vmmtest"), "{name}");
        // No IPv6 chatter: it would race our frames.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        let status = std::process::Command::new("ip")
            .args(["link", "set", "dev", &name, "up"])
            .status()
            .unwrap();
        assert!(status.success());
        let host = PacketSocket::bind(&name);
        let mut d = Driver::new(Box::new(Net::new(tap, MAC)));
        d.start(1 << VIRTIO_NET_F_MAC, 2, 256);
        for slot in 0..8 {
            post_rx(&mut d, slot, RX_BUF);
        }

        // Host -> guest.
        let inbound = frame(0x55, 64);
        host.send(&inbound);
        let mut delivered = false;
        for _ in 0..8 {
            let Some((id, len)) = d.try_wait_used(RX_QUEUE, Duration::from_secs(5)) else {
                break;
            };
            let got = d.read_mem(DATA + u64::from(id) * 0x1000, len as usize);
            if got[VNET_HDR_LEN..] == inbound[..] {
                assert_eq!(got[NUM_BUFFERS_OFFSET], 1);
                delivered = true;
                break;
            }
        }
        assert!(delivered, "frame sent on {name} never reached the guest");

        // Guest -> host.
        let outbound = frame(0x66, 64);
        d.write_mem(DATA + 0x10000, &[0; VNET_HDR_LEN]);
        d.write_mem(DATA + 0x10000 + VNET_HDR_LEN as u64, &outbound);
        d.submit(
            TX_QUEUE,
            &[(
                DATA + 0x10000,
                (VNET_HDR_LEN + outbound.len()) as u32,
                false,
            )],
        );
        d.wait_used(TX_QUEUE);
        assert!(
            host.receive_matching(&outbound),
            "guest frame never appeared on {name}"
        );
    }

    /// An AF_PACKET socket on one interface: the host end of the tap.
    struct PacketSocket(OwnedFd);

    impl PacketSocket {
        fn bind(ifname: &str) -> PacketSocket {
            use std::os::fd::FromRawFd;
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call; the fd is owned below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: `fd` is a fresh descriptor nobody else owns.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: `cname` is a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            assert_ne!(ifindex, 0);
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: `addr` is a valid sockaddr_ll of the given size.
            let ret = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(ret, 0, "bind: {}", io::Error::last_os_error());
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: SO_RCVTIMEO takes a timeval of the given size.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            PacketSocket(sock)
        }

        fn send(&self, frame: &[u8]) {
            // SAFETY: `frame` is valid for `frame.len()` bytes.
            let n =
                unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(
                n,
                frame.len() as isize,
                "send: {}",
                io::Error::last_os_error()
            );
        }

        fn receive_matching(&self, wanted: &[u8]) -> bool {
            let mut buf = [0u8; 2048];
            for _ in 0..25 {
                // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
                let n = unsafe {
                    libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n > 0 && buf[..n as usize] == *wanted {
                    return true;
                }
            }
            false
        }
    }
}
