//! SHA256SUMS in the format `sha256sum -c` reads.

use sha2::{Digest, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One line per file: hex digest, two spaces (text mode marker), the path
/// relative to the directory holding SHA256SUMS.
pub fn sums(files: &[(&str, &[u8])]) -> String {
    files
        .iter()
        .map(|(path, data)| format!("{}  {path}\n", sha256_hex(data)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_format() {
        assert_eq!(
            sums(&[("pxe/x", b"abc")]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  pxe/x\n"
        );
    }
}
