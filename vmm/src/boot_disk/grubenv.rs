//! GRUB variables in loader entries: Fedora up to 33 and RHEL 8 (and its
//! rebuilds) write `options $kernelopts $tuned_params` and keep the
//! values in GRUB's environment block, `grub2/grubenv` next to the
//! entries. GRUB expands them when it boots the entry; so do we, an
//! unset variable to nothing as GRUB does.

/// Where the environment block is, on the file system holding the entry.
pub(super) const PATHS: [&str; 4] = [
    "/grub2/grubenv",
    "/boot/grub2/grubenv",
    "/grub/grubenv",
    "/boot/grub/grubenv",
];

/// The `name=value` lines of a GRUB environment block (`#` lines and the
/// `#` padding are comments).
pub(super) fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `options` with `$name` and `${name}` replaced by their values, and the
/// spaces that unset ones leave collapsed.
pub(super) fn expand(options: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(options.len());
    let mut rest = options;
    while let Some(at) = rest.find('$') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let after = rest.get(at + 1..).unwrap_or_default();
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.split_once('}') {
                Some((name, tail)) => (name, tail),
                None => ("", after),
            },
            None => {
                let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
                (
                    after.get(..end).unwrap_or_default(),
                    after.get(end..).unwrap_or_default(),
                )
            }
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(lookup(name));
        }
        rest = tail;
    }
    out.push_str(rest);
    out.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_as_grub_does() {
        let env = parse(
            "# GRUB Environment Block\nsaved_entry=x\nkernelopts=root=UUID=abc ro \
             crashkernel=auto\ntuned_params=\n#########",
        );
        assert_eq!(
            expand("$kernelopts $tuned_params", &env),
            "root=UUID=abc ro crashkernel=auto"
        );
        assert_eq!(
            expand("${kernelopts} quiet", &env),
            "root=UUID=abc ro crashkernel=auto quiet"
        );
        assert_eq!(expand("a $unset b", &env), "a b");
        assert_eq!(expand("cost=5$ ${open", &env), "cost=5$ ${open");
        assert_eq!(expand("no variables", &env), "no variables");
    }
}
