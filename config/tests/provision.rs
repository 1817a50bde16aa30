//! `size_gib` and `base` of a `[[disk]]`: what parses, and every refusal
//! with its position.

use std::fs;
use std::path::{Path, PathBuf};

use hvconfig::guest::{DiskSource, Provision};
use hvconfig::{parse_guest, GuestConfig};

const FILE: &str = "guests/web.toml";
const BOOT: &str = "[boot]\nkernel = \"k\"\n";

fn parse(disk: &str) -> GuestConfig {
    parse_guest(Path::new(FILE), &format!("{BOOT}[[disk]]\n{disk}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn err(disk: &str) -> String {
    match parse_guest(Path::new(FILE), &format!("{BOOT}[[disk]]\n{disk}")) {
        Ok(g) => panic!("accepted: {g:?}"),
        Err(e) => e.to_string(),
    }
}

fn provision(g: &GuestConfig) -> Option<Provision> {
    g.disks.first().and_then(|d| d.provision.clone())
}

#[test]
fn size_and_base_parse_and_resolve_like_path() {
    let g = parse("path = \"/data/web.img\"\nsize_gib = 20\n");
    assert_eq!(
        provision(&g),
        Some(Provision {
            size_gib: Some(20),
            base: None
        })
    );
    assert_eq!(provision(&g).and_then(|p| p.size_bytes()), Some(20 << 30));

    let g = parse("path = \"/data/web.img\"\nsize_gib = 65536\nbase = \"bases/debian.img\"\n");
    assert_eq!(
        provision(&g),
        Some(Provision {
            size_gib: Some(65536),
            base: Some(PathBuf::from("guests/bases/debian.img")),
        })
    );
    // base alone: the new image is the base's size.
    let g = parse("path = \"/data/web.img\"\nbase = \"/data/bases/debian.img\"\n");
    assert_eq!(
        provision(&g),
        Some(Provision {
            size_gib: None,
            base: Some(PathBuf::from("/data/bases/debian.img")),
        })
    );
    assert_eq!(provision(&g).and_then(|p| p.size_bytes()), None);
    // A read-only private copy of a base is allowed: it does not follow
    // later changes of the base.
    let g = parse("path = \"/data/ro.img\"\nbase = \"/data/b.img\"\nread_only = true\n");
    assert!(g.disks.first().is_some_and(|d| d.read_only));
    assert!(provision(&g).is_some());
    // Without either key nothing is provisioned.
    assert_eq!(provision(&parse("path = \"/data/web.img\"\n")), None);
}

#[test]
fn size_gib_is_range_checked_at_the_value() {
    for bad in ["0", "-1", "65537", "99999999999999999999"] {
        assert_eq!(
            err(&format!("path = \"/data/a.img\"\nsize_gib = {bad}\n")),
            format!("guests/web.toml:5:12: size_gib = {bad} is out of range (allowed 1..=65536)")
        );
    }
    assert_eq!(
        err("path = \"/data/a.img\"\nsize_gib = \"20G\"\n"),
        "guests/web.toml:5:12: size_gib must be an integer in 1..=65536, found a string"
    );
    assert_eq!(
        err("path = \"/data/a.img\"\nbase = 3\n"),
        "guests/web.toml:5:8: base must be a string, found an integer"
    );
    assert_eq!(
        err("path = \"/data/a.img\"\nbase = \"\"\n"),
        "guests/web.toml:5:8: base must be a non-empty path without NUL"
    );
    assert_eq!(
        err("path = \"/data/a.img\"\nbase = \"/data/a.img\"\n"),
        "guests/web.toml:5:8: base must not be the disk's own path"
    );
}

#[test]
fn only_path_disks_are_provisioned() {
    assert_eq!(
        err("path = \"LABEL=scratch\"\nsize_gib = 4\n"),
        "guests/web.toml:5:12: size_gib and base create an image file, but path is \
         LABEL=scratch: only a file path beneath a data mount can be provisioned"
    );
    assert_eq!(
        err("path = \"PARTLABEL=web\"\nbase = \"/data/b.img\"\n"),
        "guests/web.toml:5:8: size_gib and base create an image file, but path is \
         PARTLABEL=web: only a file path beneath a data mount can be provisioned"
    );
}

#[test]
fn a_blank_read_only_disk_is_refused() {
    assert_eq!(
        err("path = \"/data/a.img\"\nread_only = true\nsize_gib = 1\n"),
        "guests/web.toml:5:13: read_only = true with size_gib and no base would give the \
         guest a blank disk it cannot write: drop read_only, or give base = \"PATH\" to copy"
    );
    // read_only = false is what the default says: fine.
    assert!(provision(&parse(
        "path = \"/data/a.img\"\nread_only = false\nsize_gib = 1\n"
    ))
    .is_some());
}

#[test]
fn check_files_accepts_a_missing_provisioned_image_but_not_a_missing_base() {
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("web.toml");
    fs::write(dir.path().join("k"), "kernel").unwrap();
    let text = format!("{BOOT}[[disk]]\npath = \"new.img\"\nsize_gib = 1\n");
    let g = parse_guest(&def, &text).unwrap();
    g.check_files()
        .expect("the image is created at the first start");

    let text = format!("{BOOT}[[disk]]\npath = \"new.img\"\nbase = \"base.img\"\n");
    let g = parse_guest(&def, &text).unwrap();
    let e = g.check_files().unwrap_err().to_string();
    let want = format!(
        "disk 1 base {}: no such file",
        dir.path().join("base.img").display()
    );
    assert!(e.ends_with(&want), "{e}");
    fs::write(dir.path().join("base.img"), "image").unwrap();
    g.check_files().expect("base present");
    // An existing image is still checked as a disk.
    fs::create_dir(dir.path().join("new.img")).unwrap();
    let e = g.check_files().unwrap_err().to_string();
    assert!(e.contains("disk 1 ") && e.contains("is a directory"), "{e}");
    assert!(matches!(
        g.disks.first().map(|d| &d.path),
        Some(DiskSource::Path(_))
    ));
}
