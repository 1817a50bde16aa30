//! The `[cloud_init]` table: parsing, errors with their positions, the
//! generated meta-data and the checks of the seed files on disk.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use hvconfig::cloud_init::{meta_data, MAX_SEED_FILE_SIZE};
use hvconfig::{load_guest, parse_guest, CloudInit, GuestConfig};

const FILE: &str = "guests/web.toml";
const BOOT: &str = "[boot]\nkernel = \"web/bzImage\"\n";

fn parse(text: &str) -> GuestConfig {
    parse_guest(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match parse_guest(Path::new(FILE), text) {
        Ok(g) => panic!("accepted: {g:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn table_parses_with_paths_relative_to_the_definition() {
    let text = format!(
        "{BOOT}[cloud_init]\nuser_data = \"web/user-data\"\nnetwork_config = \"/srv/net.yaml\"\n"
    );
    let g = parse(&text);
    let seed = g.cloud_init.unwrap();
    assert_eq!(
        seed,
        CloudInit {
            user_data: PathBuf::from("guests/web/user-data"),
            network_config: Some(PathBuf::from("/srv/net.yaml")),
            instance_id: hvconfig::cloud_init::instance_id("web", &text),
            local_hostname: "web".into(),
        }
    );
    assert!(seed.instance_id.starts_with("web-"));
    assert_eq!(seed.instance_id.len(), "web-".len() + 12);
    assert!(seed.instance_id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        seed.meta_data(),
        format!(
            "instance-id: \"{}\"\nlocal-hostname: \"web\"\n",
            seed.instance_id
        )
    );
    assert_eq!(
        seed.files(),
        vec![
            ("user-data", Path::new("guests/web/user-data")),
            ("network-config", Path::new("/srv/net.yaml")),
        ]
    );
}

#[test]
fn boot_files_list_the_seed_files_with_their_limit() {
    use hvconfig::guest::BootFile;
    let g = parse(&format!(
        "{BOOT}initrd = \"i\"\n[cloud_init]\nuser_data = \"u\"\nnetwork_config = \"n\"\n"
    ));
    let seed = Some(MAX_SEED_FILE_SIZE);
    assert_eq!(
        g.boot_files(),
        vec![
            BootFile {
                what: "kernel",
                path: Path::new("guests/web/bzImage"),
                max_size: None
            },
            BootFile {
                what: "initrd",
                path: Path::new("guests/i"),
                max_size: None
            },
            BootFile {
                what: "cloud_init user_data",
                path: Path::new("guests/u"),
                max_size: seed
            },
            BootFile {
                what: "cloud_init network_config",
                path: Path::new("guests/n"),
                max_size: seed,
            },
        ]
    );
    assert_eq!(parse(BOOT).boot_files().len(), 1);
}

#[test]
fn absent_table_means_no_seed_and_network_config_is_optional() {
    assert_eq!(parse(BOOT).cloud_init, None);
    let g = parse(&format!("{BOOT}[cloud_init]\nuser_data = \"u\"\n"));
    let seed = g.cloud_init.unwrap();
    assert_eq!(seed.network_config, None);
    assert_eq!(seed.files(), vec![("user-data", Path::new("guests/u"))]);
}

#[test]
fn instance_id_changes_with_the_definition() {
    let a = parse(&format!("{BOOT}[cloud_init]\nuser_data = \"u\"\n"));
    let b = parse(&format!(
        "{BOOT}cmdline = \"console=ttyS0 quiet\"\n[cloud_init]\nuser_data = \"u\"\n"
    ));
    let a2 = parse(&format!("{BOOT}[cloud_init]\nuser_data = \"u\"\n"));
    let a = a.cloud_init.unwrap().instance_id;
    assert_ne!(a, b.cloud_init.unwrap().instance_id);
    assert_eq!(a, a2.cloud_init.unwrap().instance_id, "same text, same id");
    // Another guest with the same text is another instance.
    let other = parse_guest(
        Path::new("guests/db.toml"),
        &format!("{BOOT}[cloud_init]\nuser_data = \"u\"\n"),
    )
    .unwrap();
    let other = other.cloud_init.unwrap();
    assert!(other.instance_id.starts_with("db-"));
    assert_eq!(other.instance_id[3..], a[4..]);
    assert_eq!(other.local_hostname, "db");
    // The file's bytes, all of them: a byte order mark counts.
    let bom = parse(&format!("\u{feff}{BOOT}[cloud_init]\nuser_data = \"u\"\n"));
    assert_ne!(bom.cloud_init.unwrap().instance_id, a);
}

#[test]
fn meta_data_quotes_names_yaml_would_misread() {
    assert_eq!(
        meta_data("no-0123456789ab", "no"),
        "instance-id: \"no-0123456789ab\"\nlocal-hostname: \"no\"\n"
    );
}

#[test]
fn errors_name_the_place() {
    assert_eq!(
        err(&format!("{BOOT}[cloud_init]\nnetwork_config = \"n\"\n")),
        "guests/web.toml:3:1: missing required key 'user_data' in [cloud_init] \
         (the path of the cloud-init user-data file, e.g. a #cloud-config)"
    );
    assert_eq!(
        err(&format!(
            "{BOOT}[cloud_init]\nuser_data = \"u\"\nmeta_data = \"m\"\n"
        )),
        "guests/web.toml:5:1: unknown key 'meta_data' in [cloud_init] \
         (allowed: user_data, network_config)"
    );
    assert_eq!(
        err(&format!("{BOOT}[cloud_init]\nuser_data = \"\"\n")),
        "guests/web.toml:4:13: user_data must not be empty"
    );
    assert_eq!(
        err(&format!("{BOOT}[cloud_init]\nuser_data = 3\n")),
        "guests/web.toml:4:13: user_data must be a string, found an integer"
    );
    assert_eq!(
        err(&format!("cloud_init = \"u\"\n{BOOT}")),
        "guests/web.toml:1:14: cloud_init must be a table ([cloud_init]), found a string"
    );
}

/// A scratch directory removed when the test ends.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(
            tempfile::Builder::new()
                .prefix("hvconfig-cloud-init-")
                .tempdir()
                .unwrap(),
        )
    }

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }
}

fn guest_with_seed(s: &Scratch) -> PathBuf {
    s.write("guests/web/bzImage", "kernel");
    s.write(
        "guests/web.toml",
        "[boot]\nkernel = \"web/bzImage\"\n[cloud_init]\nuser_data = \"web/user-data\"\n\
         network_config = \"web/network-config\"\n",
    )
}

#[test]
fn check_files_covers_the_seed_files() {
    let s = Scratch::new();
    let def = guest_with_seed(&s);
    let g = load_guest(&def).unwrap();
    let e = g.check_boot_files().unwrap_err().to_string();
    let user_data = s.0.path().join("guests/web/user-data");
    assert_eq!(
        e,
        format!(
            "{}: cloud_init user_data {}: no such file",
            def.display(),
            user_data.display()
        )
    );

    s.write("guests/web/user-data", "#cloud-config\n");
    let e = g.check_files().unwrap_err().to_string();
    assert!(
        e.contains("cloud_init network_config") && e.ends_with("network-config: no such file"),
        "{e}"
    );

    fs::create_dir_all(s.0.path().join("guests/web/network-config")).unwrap();
    let e = g.check_files().unwrap_err().to_string();
    assert!(
        e.ends_with("is a directory, expected a regular file"),
        "{e}"
    );
    let seed = g.cloud_init.as_ref().unwrap();
    let e = seed.open_files(&g.file).unwrap_err().to_string();
    assert!(e.ends_with("network-config: is not a regular file"), "{e}");
    fs::remove_dir(s.0.path().join("guests/web/network-config")).unwrap();

    s.write("guests/web/network-config", "version: 2\n");
    g.check_files().unwrap();
    g.check_boot_files().unwrap();
    let files = g.cloud_init.as_ref().unwrap().read_files(&g.file).unwrap();
    assert_eq!(
        files,
        vec![
            ("user-data", b"#cloud-config\n".to_vec()),
            ("network-config", b"version: 2\n".to_vec()),
        ]
    );
}

#[test]
fn seed_files_are_bounded_in_size() {
    let s = Scratch::new();
    let def = guest_with_seed(&s);
    let g = load_guest(&def).unwrap();
    s.write("guests/web/network-config", "version: 2\n");
    let at_cap = vec![b'#'; usize::try_from(MAX_SEED_FILE_SIZE).unwrap()];
    s.write("guests/web/user-data", &at_cap);
    g.check_files().unwrap();
    let seed = g.cloud_init.as_ref().unwrap();
    assert_eq!(seed.read_files(&g.file).unwrap()[0].1.len(), at_cap.len());

    let mut over = at_cap;
    over.push(b'\n');
    s.write("guests/web/user-data", &over);
    let e = g.check_files().unwrap_err().to_string();
    assert!(
        e.contains("cloud_init user_data")
            && e.ends_with(
                ": file is 1048577 bytes (a seed file may be at most 1048576 bytes, 1 MiB)"
            ),
        "{e}"
    );
    let e = seed.read_files(&g.file).unwrap_err().to_string();
    assert!(
        e.ends_with(
            ": file is more than 1048576 bytes (a seed file may be at most 1048576 bytes, 1 MiB)"
        ),
        "{e}"
    );

    s.write("guests/web/user-data", "");
    let e = g.check_files().unwrap_err().to_string();
    assert!(e.ends_with("user-data: file is empty"), "{e}");
    let e = seed.read_files(&g.file).unwrap_err().to_string();
    assert!(e.ends_with("user-data: file is empty"), "{e}");
}
