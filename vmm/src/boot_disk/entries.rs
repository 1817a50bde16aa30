//! Boot Loader Specification type #1 entries (`loader/entries/*.conf`)
//! and the specification's order among them.
//!
//! The entry that boots is the first in this order (systemd-boot's
//! default when none is configured):
//! 1. entries with tries left (or no boot counting) before those whose
//!    `+0` counter says they failed;
//! 2. entries with a `sort-key` before those without;
//! 3. between two with a `sort-key`: by `sort-key` (byte order,
//!    increasing), then `machine-id` (increasing), then `version`
//!    (newest first, by the UAPI version comparison);
//! 4. then by file name without `.conf` and the boot-counting suffix,
//!    newest first by the same comparison.
//!
//! Two entries equal on all of that are ordered by partition and path,
//! so the choice never depends on directory order.

use std::cmp::Ordering;

use super::version;

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The file name without `.conf` and without `+LEFT[-DONE]`.
    pub id: String,
    pub version: Option<String>,
    pub machine_id: Option<String>,
    pub sort_key: Option<String>,
    pub linux: String,
    /// Every `initrd` line, in order: they are loaded one after the other.
    pub initrd: Vec<String>,
    /// Every `options` line, joined by spaces.
    pub options: String,
    /// The boot counter says no tries are left.
    pub bad: bool,
}

/// Parses the entry file `name` (its file name) holding `text`. An entry
/// with no `linux` line, or for another architecture, is refused.
pub(super) fn parse(name: &str, text: &str) -> Result<Entry, String> {
    let stem = strip_suffix_ignore_case(name, ".conf").unwrap_or(name);
    let (id, bad) = boot_counting(stem);
    let mut entry = Entry {
        id: id.to_owned(),
        version: None,
        machine_id: None,
        sort_key: None,
        linux: String::new(),
        initrd: Vec::new(),
        options: String::new(),
        bad,
    };
    let mut efi = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((line, ""));
        match key {
            "version" => entry.version = Some(value.to_owned()),
            "machine-id" => entry.machine_id = Some(value.to_owned()),
            "sort-key" => entry.sort_key = Some(value.to_owned()),
            "linux" => entry.linux = value.to_owned(),
            "initrd" if !value.is_empty() => entry.initrd.push(value.to_owned()),
            "options" if !value.is_empty() => {
                if !entry.options.is_empty() {
                    entry.options.push(' ');
                }
                entry.options.push_str(value);
            }
            "architecture" if !value.eq_ignore_ascii_case("x64") => {
                return Err(format!("for architecture {value}, not x64"));
            }
            "efi" => efi = true,
            // title, devicetree, devicetree-overlay, unknown keys: not
            // needed to boot a Linux kernel directly.
            _ => {}
        }
    }
    if entry.linux.is_empty() {
        return Err(if efi {
            "an EFI program entry (efi), not a Linux kernel".into()
        } else {
            "no linux line".into()
        });
    }
    Ok(entry)
}

/// Splits `+LEFT` or `+LEFT-DONE` off a file stem: `(id, no tries left)`.
fn boot_counting(stem: &str) -> (&str, bool) {
    let Some((id, counter)) = stem.rsplit_once('+') else {
        return (stem, false);
    };
    let left = counter.split_once('-').map_or(counter, |(left, _)| left);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let done_ok = counter.split_once('-').is_none_or(|(_, done)| digits(done));
    if digits(left) && done_ok {
        (id, left.bytes().all(|b| b == b'0'))
    } else {
        (stem, false)
    }
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (stem, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(stem)
}

/// True if `name` is an entry file name (`*.conf`, any case on FAT).
pub(super) fn is_entry_name(name: &str) -> bool {
    strip_suffix_ignore_case(name, ".conf").is_some_and(|stem| !stem.is_empty())
}

/// The specification's order: `Less` boots first.
pub(super) fn order(a: &Entry, b: &Entry) -> Ordering {
    a.bad.cmp(&b.bad).then_with(|| {
        let keyed = match (&a.sort_key, &b.sort_key) {
            (Some(ka), Some(kb)) => ka
                .cmp(kb)
                .then_with(|| a.machine_id.cmp(&b.machine_id))
                .then_with(|| match (&a.version, &b.version) {
                    (Some(va), Some(vb)) => version::compare(vb, va),
                    // An entry with a version before one without.
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                }),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        keyed.then_with(|| version::compare(&b.id, &a.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, text: &str) -> Entry {
        parse(name, text).unwrap()
    }

    fn first(entries: &[Entry]) -> &Entry {
        let mut sorted: Vec<&Entry> = entries.iter().collect();
        sorted.sort_by(|a, b| order(a, b));
        sorted[0]
    }

    #[test]
    fn parses_the_keys_that_boot_a_kernel() {
        let e = entry(
            "fedora-6.5.conf",
            "# comment\ntitle Fedora\nversion 6.5.6\nlinux   /vmlinuz-6.5.6\n\
             initrd /amd-ucode.img\ninitrd /initramfs-6.5.6.img\n\
             options root=UUID=x ro\noptions quiet\n",
        );
        assert_eq!(e.id, "fedora-6.5");
        assert_eq!(e.linux, "/vmlinuz-6.5.6");
        assert_eq!(e.initrd, ["/amd-ucode.img", "/initramfs-6.5.6.img"]);
        assert_eq!(e.options, "root=UUID=x ro quiet");
        assert_eq!(e.version.as_deref(), Some("6.5.6"));
    }

    #[test]
    fn refuses_entries_that_are_not_a_linux_kernel_for_x64() {
        assert!(parse("a.conf", "title x\n")
            .unwrap_err()
            .contains("no linux"));
        assert!(parse("a.conf", "efi /EFI/x.efi\n")
            .unwrap_err()
            .contains("EFI"));
        let err = parse("a.conf", "linux /v\narchitecture aa64\n").unwrap_err();
        assert!(err.contains("aa64"), "{err}");
        assert!(parse("a.conf", "linux /v\narchitecture X64\n").is_ok());
    }

    #[test]
    fn without_sort_keys_the_newest_file_name_wins() {
        let es = [
            entry("m-6.1.0-9.conf", "linux /a\n"),
            entry("m-6.1.0-28.conf", "linux /b\n"),
            entry("m-6.1.0-10.conf", "linux /c\n"),
        ];
        assert_eq!(first(&es).linux, "/b");
    }

    #[test]
    fn sort_key_then_machine_id_then_newest_version() {
        let es = [
            entry("z.conf", "linux /none\n"),
            entry(
                "b.conf",
                "sort-key fedora\nmachine-id 2\nversion 9\nlinux /b\n",
            ),
            entry(
                "c.conf",
                "sort-key fedora\nmachine-id 1\nversion 5\nlinux /c\n",
            ),
            entry(
                "d.conf",
                "sort-key fedora\nmachine-id 1\nversion 10\nlinux /d\n",
            ),
            entry("e.conf", "sort-key gentoo\nversion 100\nlinux /e\n"),
        ];
        assert_eq!(first(&es).linux, "/d");
        // Without sort-key entries at all, the file name decides.
        assert_eq!(first(&es[..1]).linux, "/none");
    }

    #[test]
    fn an_entry_out_of_tries_boots_last() {
        let es = [
            entry("l-6.2+0-3.conf", "linux /new\n"),
            entry("l-6.1+2.conf", "linux /old\n"),
        ];
        assert_eq!(es[0].id, "l-6.2");
        assert!(es[0].bad);
        assert!(!es[1].bad);
        assert_eq!(first(&es).linux, "/old");
        assert_eq!(boot_counting("a+b"), ("a+b", false));
        assert_eq!(boot_counting("a+1-x"), ("a+1-x", false));
    }

    #[test]
    fn names() {
        assert!(is_entry_name("a.conf"));
        assert!(is_entry_name("A.CONF"));
        assert!(!is_entry_name(".conf"));
        assert!(!is_entry_name("a.conf.bak"));
    }
}
