//! The UAPI version comparison (the Boot Loader Specification's "version
//! sort", systemd's `strverscmp_improved`), which orders loader entries.
//!
//! Segments are compared left to right: runs of digits numerically (no
//! leading zeros, longer is newer), runs of letters as ASCII; a `~`
//! sorts before everything, even the end (`1~rc1` < `1`); `-`, `^` and
//! `.` each sort before any other character but after the end; a string
//! with more segments is newer; characters outside `[A-Za-z0-9~^.-]` only
//! separate.

use std::cmp::Ordering;

fn valid(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// Compares two version strings: `Greater` means `a` is newer.
pub(super) fn compare(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    loop {
        a = skip_while(a, |c| !valid(c));
        b = skip_while(b, |c| !valid(c));

        // '~' marks a pre-release: older than anything, the end included.
        match prefixed(a, b, b'~') {
            Some(Ordering::Equal) => (a, b) = (rest(a), rest(b)),
            Some(o) => return o,
            None => {}
        }
        if a.is_empty() || b.is_empty() {
            return a.cmp(b);
        }
        // '-' (release), '^' (post-release patch), '.' (point release).
        for sep in [b'-', b'^', b'.'] {
            match prefixed(a, b, sep) {
                Some(Ordering::Equal) => (a, b) = (rest(a), rest(b)),
                Some(o) => return o,
                None => {}
            }
        }

        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let letters = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
        let a_digit = a.first().is_some_and(u8::is_ascii_digit);
        let b_digit = b.first().is_some_and(u8::is_ascii_digit);
        let (na, nb);
        if a_digit || b_digit {
            // A number is newer than letters (or nothing) in its place.
            (na, nb) = (digits(a), digits(b));
            match (na != 0).cmp(&(nb != 0)) {
                Ordering::Equal => {}
                o => return o,
            }
            let sa = skip_while(a.get(..na).unwrap_or_default(), |c| c == b'0');
            let sb = skip_while(b.get(..nb).unwrap_or_default(), |c| c == b'0');
            match sa.len().cmp(&sb.len()).then_with(|| sa.cmp(sb)) {
                Ordering::Equal => {}
                o => return o,
            }
        } else {
            (na, nb) = (letters(a), letters(b));
            let (sa, sb) = (
                a.get(..na).unwrap_or_default(),
                b.get(..nb).unwrap_or_default(),
            );
            let common = na.min(nb);
            match sa.get(..common).cmp(&sb.get(..common)) {
                Ordering::Equal => {}
                o => return o,
            }
            match na.cmp(&nb) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        // Two empty segments (both at a separator, ".-1" against ".-2"
        // after the '.') make no progress here, but the next round
        // consumes or decides on that separator.
        a = a.get(na..).unwrap_or_default();
        b = b.get(nb..).unwrap_or_default();
    }
}

/// `None` if neither starts with `sep`; otherwise which is newer on that
/// account (the one *without* the separator), `Equal` if both have it.
fn prefixed(a: &[u8], b: &[u8], sep: u8) -> Option<Ordering> {
    let (pa, pb) = (a.first() == Some(&sep), b.first() == Some(&sep));
    (pa || pb).then(|| (!pa).cmp(&!pb))
}

fn rest(s: &[u8]) -> &[u8] {
    s.get(1..).unwrap_or_default()
}

fn skip_while(s: &[u8], f: impl Fn(u8) -> bool) -> &[u8] {
    let n = s.iter().take_while(|c| f(**c)).count();
    s.get(n..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newer(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Greater, "{a} > {b}");
        assert_eq!(compare(b, a), Ordering::Less, "{b} < {a}");
    }

    #[test]
    fn orders_as_the_uapi_spec_does() {
        // Examples from the UAPI version format specification and
        // systemd's test-string-util.
        newer("11", "9");
        newer("1.10", "1.9");
        newer("6.1.0-28-cloud-amd64", "6.1.0-9-cloud-amd64");
        newer("6.10.0", "6.9.12");
        newer("123", "123~rc1");
        newer("123~rc2", "123~rc1");
        newer("123^post1", "123");
        newer("123.1", "123^post1");
        newer("123.4-1", "123-9");
        newer("123.a", "123");
        newer("1a", "1");
        newer("1a", "1.1"); // '.' sorts before a letter
        newer("1_0_rc", "1.0"); // '_' only separates: 1 0 rc, '.' loses
        newer("1b", "1a");
        newer("abcde", "abc");
        assert_eq!(compare("00123", "123"), Ordering::Equal);
        newer("1_2", "1.2");
        newer(".-~2", ".-~1");
        assert_eq!(compare("6.1", "6.1"), Ordering::Equal);
        assert_eq!(compare("", "1"), Ordering::Less);
    }

    #[test]
    fn ends_on_any_bytes() {
        for (a, b) in [
            ("-~", "-^"),
            ("~~~~", "~"),
            ("..--^^", "-.^"),
            ("#$%", "!!"),
        ] {
            let _ = compare(a, b);
            let _ = compare(b, a);
        }
    }
}
