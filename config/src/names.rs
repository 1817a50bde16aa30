//! Rules for the names that end up in the kernel or on the command line:
//! guest names, network interface names and the host name.

/// Guest names become file names, tap names and log prefixes, so they are
/// kept to a conservative alphabet: `[a-z0-9][a-z0-9-]{0,31}`.
pub const GUEST_NAME_RULE: &str =
    "1 to 32 characters from a-z, 0-9 and '-', starting with a letter or digit";

pub fn valid_guest_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes.first() != Some(&b'-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The kernel's `dev_valid_name()` rule, minus bytes that would only cause
/// trouble in logs (control characters).
pub const IFNAME_RULE: &str =
    "1 to 15 bytes, no '/', ':', whitespace or control characters, not '.' or '..'";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

pub fn valid_ifname(name: &str) -> bool {
    (1..=IFNAME_MAX).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

pub const HOSTNAME_RULE: &str = "at most 64 characters: labels of a-z, A-Z, 0-9 and '-' \
     separated by '.', each label 1 to 63 characters and not starting or ending with '-'";

/// RFC 1123 host name that also fits the kernel's 64-byte utsname field.
pub fn valid_hostname(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names() {
        for ok in ["web", "a", "0", "db-1", "a-", &"a".repeat(32)] {
            assert!(valid_guest_name(ok), "{ok}");
        }
        for bad in ["", "-a", "Web", "a_b", "a.b", "a b", "é", &"a".repeat(33)] {
            assert!(!valid_guest_name(bad), "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["br0", "eth0", "tap-web0", "a", "x.y", &"a".repeat(15)] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a:b",
            "a\tb",
            "a\0",
            &"a".repeat(16),
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }

    #[test]
    fn host_names() {
        for ok in ["hv", "hv01", "HV-01", "hv.example.org", &"a".repeat(63)] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "-hv",
            "hv-",
            "hv..x",
            ".hv",
            "hv_01",
            "h v",
            &"a".repeat(64),
        ] {
            assert!(!valid_hostname(bad), "{bad}");
        }
        assert!(!valid_hostname(&format!(
            "{}.{}",
            "a".repeat(40),
            "b".repeat(30)
        )));
    }
}
