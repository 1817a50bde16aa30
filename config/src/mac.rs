//! Ethernet MAC addresses and the stable default a guest NIC gets.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

/// Why a string is not a MAC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected six hex byte pairs separated by ':', e.g. 52:54:00:12:34:56")
    }
}

impl std::error::Error for ParseMacError {}

impl MacAddr {
    pub const fn from_bytes(bytes: [u8; 6]) -> Self {
        MacAddr(bytes)
    }

    pub const fn to_bytes(self) -> [u8; 6] {
        self.0
    }

    /// Group addresses cannot be a NIC's own address.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Set for addresses not assigned by a vendor (safe to invent).
    pub const fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The default address of NIC `index` of guest `name`: the same on every
    /// boot and every host (so DHCP leases and ARP caches survive restarts),
    /// locally administered and unicast. FNV-1a is used instead of std's
    /// hasher because the latter's output may change between releases.
    pub fn derive(name: &str, index: usize) -> Self {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let index = u64::try_from(index).unwrap_or(u64::MAX).to_le_bytes();
        let input = b"hv-net\0"
            .iter()
            .chain(name.as_bytes())
            .chain(&[0u8])
            .chain(&index);
        let mut h = FNV_OFFSET;
        for b in input {
            h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
        // FNV's high bits mix poorly for short inputs; finish with the
        // splitmix64 avalanche so every input bit reaches every output bit.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let b = h.to_be_bytes();
        MacAddr([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or(ParseMacError)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseMacError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError);
        }
        Ok(MacAddr(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let mac: MacAddr = "52:54:00:AB:cd:0F".parse().unwrap();
        assert_eq!(mac.to_bytes(), [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(MacAddr::from_bytes(mac.to_bytes()), mac);
        assert!(!mac.is_multicast());
        assert!(mac.is_locally_administered());
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_multicast());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "525400123456",
            "52:54:00:12:34:5",
            "52:54:00:12:34:567",
            "52:54:00:12:34:+5",
            "52:54:00:12:34:g6",
            "52:54:00:12:34:56:",
            " 52:54:00:12:34:56",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacError), "{bad:?}");
        }
    }

    #[test]
    fn derived_addresses_are_stable_unicast_and_local() {
        // Pinned: a change here renames every guest's NIC on the network.
        assert_eq!(MacAddr::derive("web", 0), MacAddr::derive("web", 0));
        assert_eq!(MacAddr::derive("web", 0).to_string(), PINNED_WEB0);
        let mut seen = std::collections::HashSet::new();
        for name in ["web", "db", "a", "b", "web1", "web-1", "example"] {
            for index in 0..16 {
                let mac = MacAddr::derive(name, index);
                assert!(!mac.is_multicast(), "{mac}");
                assert!(mac.is_locally_administered(), "{mac}");
                assert!(seen.insert(mac), "{name}/{index} collides: {mac}");
            }
        }
    }

    const PINNED_WEB0: &str = "72:c0:d0:a7:e5:f5";
}
