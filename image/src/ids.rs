//! Identifiers that must look random to firmware and operating systems (GPT
//! GUIDs, FAT volume serial numbers) but must not change between two builds
//! of the same inputs. They are all derived from one hash of the inputs.

use sha2::{Digest, Sha256};

pub struct Ids {
    seed: [u8; 32],
}

impl Ids {
    /// `inputs` are hashed in the given order, each tagged with its name and
    /// length so that moving bytes between inputs changes the seed.
    pub fn from_inputs(epoch: u64, inputs: &[(&str, &[u8])]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"hv-image ids v1\0");
        hash.update(epoch.to_le_bytes());
        for (name, data) in inputs {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update((data.len() as u64).to_le_bytes());
            hash.update(data);
        }
        Ids {
            seed: hash.finalize().into(),
        }
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.seed);
        hash.update(purpose.as_bytes());
        hash.finalize().into()
    }

    /// A version 4 (random) GUID in the on-disk byte order GPT uses: the
    /// first three fields little-endian, so the version nibble is the high
    /// nibble of byte 7 and the variant bits the top of byte 8.
    pub fn guid(&self, purpose: &str) -> [u8; 16] {
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&self.derive(purpose)[..16]);
        guid[7] = (guid[7] & 0x0f) | 0x40;
        guid[8] = (guid[8] & 0x3f) | 0x80;
        guid
    }

    pub fn volume_id(&self, purpose: &str) -> u32 {
        let bytes = self.derive(purpose);
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

/// Formats an on-disk (mixed-endian) GUID the way sgdisk and blkid print it.
pub fn guid_string(guid: &[u8; 16]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{}",
        guid[3],
        guid[2],
        guid[1],
        guid[0],
        guid[5],
        guid[4],
        guid[7],
        guid[6],
        guid[8],
        guid[9],
        guid[10..]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_ids() {
        let a = Ids::from_inputs(1, &[("k", b"abc")]);
        let b = Ids::from_inputs(1, &[("k", b"abc")]);
        assert_eq!(a.guid("disk"), b.guid("disk"));
        assert_eq!(a.volume_id("esp"), b.volume_id("esp"));
        assert_ne!(a.guid("disk"), a.guid("esp"));
    }

    #[test]
    fn any_change_changes_ids() {
        let base = Ids::from_inputs(1, &[("a", b"xy"), ("b", b"z")]).guid("disk");
        assert_ne!(
            base,
            Ids::from_inputs(2, &[("a", b"xy"), ("b", b"z")]).guid("disk")
        );
        assert_ne!(
            base,
            Ids::from_inputs(1, &[("a", b"x"), ("b", b"yz")]).guid("disk")
        );
        assert_ne!(
            base,
            Ids::from_inputs(1, &[("a", b"xy"), ("b", b"q")]).guid("disk")
        );
    }

    #[test]
    fn guid_is_version_4() {
        let guid = Ids::from_inputs(0, &[]).guid("x");
        let text = guid_string(&guid);
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "A" | "B"), "{text}");
    }

    #[test]
    fn guid_string_matches_known_esp_type() {
        let esp = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        assert_eq!(guid_string(&esp), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    }
}
