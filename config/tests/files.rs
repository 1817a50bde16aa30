//! Reading definitions from disk: check_files, load_*, load_guests_dir.

// The scratch-directory helpers unwrap outside #[test] functions, which
// clippy.toml's allow-unwrap-in-tests does not cover: a panic here is a
// failed test all the same.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use hvconfig::guest::DiskSource;
use hvconfig::{load_guest, load_guests_dir, load_host, load_host_or_default, HostConfig};

/// A scratch directory removed when the test ends.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new(test: &str) -> Self {
        let prefix = format!("hvconfig-{test}-");
        Scratch(tempfile::Builder::new().prefix(&prefix).tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }
}

#[test]
fn check_files_accepts_present_files_and_names_missing_ones() {
    let s = Scratch::new("check");
    let def = s.write(
        "guests/web.toml",
        "[boot]\nkernel = \"web/bzImage\"\ninitrd = \"web/initrd.img\"\n\
         [[disk]]\npath = \"web/disk.img\"\n[[disk]]\npath = \"LABEL=absent\"\n",
    );
    let g = load_guest(&def).unwrap();
    assert_eq!(
        g.boot.kernel().expect("kernel"),
        s.path().join("guests/web/bzImage")
    );
    assert_eq!(g.file, def);

    let e = g.check_files().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: kernel {}/guests/web/bzImage: no such file",
            def.display(),
            s.path().display()
        )
    );
    assert_eq!(e.file(), def.as_path());
    assert_eq!(e.position(), None);

    s.write("guests/web/bzImage", "kernel");
    let e = g.check_files().unwrap_err().to_string();
    assert!(e.ends_with("initrd.img: no such file"), "{e}");
    assert!(e.contains(": initrd "), "{e}");

    s.write("guests/web/initrd.img", "");
    let e = g.check_files().unwrap_err().to_string();
    assert!(e.ends_with("initrd.img: file is empty"), "{e}");

    s.write("guests/web/initrd.img", "cpio");
    fs::create_dir_all(s.path().join("guests/web/disk.img")).unwrap();
    let e = g.check_files().unwrap_err().to_string();
    assert!(
        e.ends_with("disk.img: is a directory, expected a regular file or a block device"),
        "{e}"
    );
    assert!(e.contains(": disk 1 "), "{e}");

    fs::remove_dir(s.path().join("guests/web/disk.img")).unwrap();
    s.write("guests/web/disk.img", vec![0u8; 4096]);
    // Labels are init's business: not checked here.
    assert_eq!(g.disks[1].path, DiskSource::Label("absent".into()));
    assert_eq!(g.check_files(), Ok(()));
}

#[test]
fn check_files_rejects_devices_that_are_not_files() {
    let s = Scratch::new("chardev");
    let def = s.write("guests/a.toml", "[boot]\nkernel = \"/dev/null\"\n");
    let e = load_guest(&def).unwrap().check_files().unwrap_err();
    assert!(
        e.to_string()
            .ends_with("kernel /dev/null: is a character device, expected a regular file"),
        "{e}"
    );
}

#[test]
fn load_errors_name_the_file() {
    let s = Scratch::new("load");
    let missing = s.path().join("guests/none.toml");
    let e = load_guest(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot open: ", missing.display())),
        "{e}"
    );

    let big = s.write("guests/big.toml", vec![b'#'; 256 * 1024 + 1]);
    let e = load_guest(&big).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: file is larger than 262144 bytes; is it really a definition?",
            big.display()
        )
    );
    let at_cap = s.write(
        "guests/cap.toml",
        format!("[boot]\nkernel = \"k\"\n{}", "#".repeat(256 * 1024 - 20)),
    );
    assert!(load_guest(&at_cap).is_ok());

    let latin1 = s.write("guests/l1.toml", b"[boot]\nkernel = \"caf\xe9\"\n");
    let e = load_guest(&latin1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}:2:14: file is not valid UTF-8 text", latin1.display())
    );

    let host = s.write(
        "host.toml",
        "\u{feff}hostname = \"box\"\nshutdown_timeout_s = 5\n",
    );
    let h = load_host(&host).unwrap();
    assert_eq!((h.hostname.as_str(), h.shutdown_timeout_s), ("box", 5));
    let e = load_host(&s.path().join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.toml: cannot open: "), "{e}");

    assert_eq!(
        load_host_or_default(&s.path().join("nope.toml")),
        Ok(HostConfig::default())
    );
    assert_eq!(load_host_or_default(&host).unwrap().hostname, "box");
    let bad = s.write("bad/host.toml", "hostname = 1\n");
    let e = load_host_or_default(&bad).unwrap_err().to_string();
    assert!(
        e.ends_with("host.toml:1:12: hostname must be a string, found an integer"),
        "{e}"
    );
}

#[test]
fn guests_dir_loads_each_definition_on_its_own_sorted_by_name() {
    let s = Scratch::new("dir");
    let ok = "[boot]\nkernel = \"k\"\n";
    s.write("guests/web.toml", ok);
    s.write("guests/db.toml", ok);
    s.write("guests/broken.toml", "[boot]\nkernal = \"k\"\n");
    s.write("guests/Bad_Name.toml", ok);
    s.write("guests/README.txt", "not a definition");
    s.write("guests/._web.toml", b"\x00\x05\x16\x07 macOS resource fork");
    s.write("guests/.hidden.toml", ok);
    fs::create_dir_all(s.path().join("guests/dir.toml")).unwrap();
    s.write("guests/web/bzImage", "k");

    let results = load_guests_dir(&s.path().join("guests"));
    let summary: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(g) => format!("ok {}", g.name),
            Err(e) => format!("err {}", e.file().file_name().unwrap().to_string_lossy()),
        })
        .collect();
    assert_eq!(
        summary,
        ["err Bad_Name.toml", "err broken.toml", "ok db", "ok web"]
    );
    let broken = results[1].as_ref().unwrap_err().to_string();
    assert!(
        broken.ends_with(
            "broken.toml:2:1: unknown key 'kernal' in [boot] (allowed: kernel, initrd, cmdline)"
        ),
        "{broken}"
    );
    assert_eq!(
        results[3].as_ref().unwrap().boot.kernel().unwrap(),
        s.path().join("guests/k")
    );
}

#[test]
fn missing_guests_dir_holds_no_guests() {
    assert!(load_guests_dir(Path::new("/nonexistent/hvconfig/guests")).is_empty());
    let s = Scratch::new("notdir");
    let file = s.write("guests", "a file, not a directory");
    let results = load_guests_dir(&file);
    assert_eq!(results.len(), 1);
    let e = results[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("cannot list directory"), "{e}");
}

#[test]
fn shipped_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let g = load_guest(&dir.join("guests/web.toml")).unwrap();
    assert_eq!(g.name, "web");
    assert_eq!(
        g.boot.kernel().expect("kernel"),
        dir.join("guests/web/bzImage")
    );
    let h = load_host(&dir.join("host.toml")).unwrap();
    assert_eq!(h.check_guest(&g), Ok(()));
}
