//! `extlinux.conf` / `syslinux.cfg`: the label that boots by default, as
//! syslinux picks it: the `DEFAULT` label, else the label marked `MENU
//! DEFAULT`, else the first label. Keywords are case-insensitive;
//! `KERNEL` and `LINUX` are the same here, `INITRD` may list several
//! files separated by commas, a label without `APPEND` takes the global
//! one and `APPEND -` is an empty command line. `INCLUDE`, `CONFIG` and
//! menus in other files are not followed.

/// Where the configuration is looked for, in order, on each file system.
pub(super) const PATHS: [&str; 7] = [
    "/boot/extlinux/extlinux.conf",
    "/extlinux/extlinux.conf",
    "/boot/syslinux/extlinux.conf",
    "/syslinux/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/extlinux.conf",
];

/// What the default label boots. Paths are as written: relative ones are
/// relative to the configuration file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Label {
    pub name: String,
    pub kernel: String,
    pub initrd: Vec<String>,
    pub append: String,
}

#[derive(Default)]
struct Draft {
    name: String,
    kernel: Option<String>,
    initrd: Vec<String>,
    append: Option<String>,
    menu_default: bool,
}

pub(super) fn parse(text: &str) -> Result<Label, String> {
    let mut default = None;
    let mut global_append = None;
    let mut labels: Vec<Draft> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((line, ""));
        let key = key.to_ascii_lowercase();
        let current = labels.last_mut();
        match (key.as_str(), current) {
            ("default", _) => default = Some(value.to_owned()),
            ("label", _) => labels.push(Draft {
                name: value.to_owned(),
                ..Draft::default()
            }),
            ("kernel" | "linux", Some(l)) => l.kernel = Some(value.to_owned()),
            ("initrd", Some(l)) => l.initrd.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            ("append", Some(l)) => l.append = Some(value.to_owned()),
            ("append", None) => global_append = Some(value.to_owned()),
            ("menu", Some(l)) if value.eq_ignore_ascii_case("default") => l.menu_default = true,
            _ => {}
        }
    }
    let chosen = match &default {
        Some(name) => labels.iter().find(|l| &l.name == name),
        None => None,
    }
    .or_else(|| labels.iter().find(|l| l.menu_default))
    .or_else(|| labels.first());
    let Some(label) = chosen else {
        return Err(match default {
            Some(d) => format!("DEFAULT {d} names no LABEL, and there is no label"),
            None => "no LABEL".into(),
        });
    };
    let kernel = label
        .kernel
        .clone()
        .ok_or_else(|| format!("label {} has no KERNEL or LINUX line", label.name))?;
    let append = label
        .append
        .clone()
        .or(global_append)
        .filter(|a| a != "-")
        .unwrap_or_default();
    let (append, mut initrd) = split_initrd(&append);
    if !label.initrd.is_empty() {
        initrd = label.initrd.clone();
    }
    Ok(Label {
        name: label.name.clone(),
        kernel,
        initrd,
        append,
    })
}

/// Takes `initrd=` out of an `APPEND` line (syslinux loads it, the
/// kernel must not see it), returning the rest and the files it named.
fn split_initrd(append: &str) -> (String, Vec<String>) {
    let mut rest = Vec::new();
    let mut initrd = Vec::new();
    for word in append.split_ascii_whitespace() {
        match word.strip_prefix("initrd=") {
            Some(files) => initrd.extend(
                files
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            None => rest.push(word),
        }
    }
    (rest.join(" "), initrd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_label_boots() {
        let text = "DEFAULT linux\nTIMEOUT 10\nLABEL rescue\n  KERNEL /r\nLABEL linux\n  \
                    MENU LABEL Linux\n  LINUX ../vmlinuz-6.1\n  INITRD ../initrd-6.1,../ucode\n  \
                    APPEND root=/dev/vda1 ro\n";
        let l = parse(text).unwrap();
        assert_eq!(l.name, "linux");
        assert_eq!(l.kernel, "../vmlinuz-6.1");
        assert_eq!(l.initrd, ["../initrd-6.1", "../ucode"]);
        assert_eq!(l.append, "root=/dev/vda1 ro");
    }

    #[test]
    fn menu_default_then_first_label() {
        let l = parse("label a\nkernel /a\nlabel b\nkernel /b\nmenu default\n").unwrap();
        assert_eq!(l.kernel, "/b");
        let l = parse("append console=ttyS0\nlabel a\nkernel /a\nlabel b\nkernel /b\n").unwrap();
        assert_eq!(l.kernel, "/a");
        assert_eq!(l.append, "console=ttyS0");
    }

    #[test]
    fn initrd_in_append_is_taken_out() {
        let l = parse("label a\nkernel /a\nappend initrd=/i1,/i2 ro quiet\n").unwrap();
        assert_eq!(l.initrd, ["/i1", "/i2"]);
        assert_eq!(l.append, "ro quiet");
        let l = parse("append ro\nlabel a\nkernel /a\nappend -\n").unwrap();
        assert_eq!(l.append, "");
    }

    #[test]
    fn broken_configs_say_why() {
        assert!(parse("timeout 1\n").unwrap_err().contains("no LABEL"));
        assert!(parse("label a\nappend x\n")
            .unwrap_err()
            .contains("no KERNEL"));
    }
}
