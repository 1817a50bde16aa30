//! The guest definition format: every field, every default, every error
//! with its exact position and wording.

use std::path::{Path, PathBuf};

use hvconfig::guest::{
    Boot, BootFrom, Disk, DiskSource, Lifecycle, Machine, Net, RestartPolicy, Rng, VirtioTransport,
};
use hvconfig::{parse_guest, GuestConfig, MacAddr};

const FILE: &str = "guests/web.toml";

fn parse(text: &str) -> GuestConfig {
    parse_guest(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match parse_guest(Path::new(FILE), text) {
        Ok(g) => panic!("accepted: {g:?}"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"# every field set
[machine]
vcpus = 2
memory_mib = 512
virtio = "mmio"

[boot]
kernel = "web/bzImage"
initrd = "web/initrd.img"
cmdline = "console=ttyS0 root=/dev/vda rw"

[[disk]]
path = "/data/web.img"
read_only = false

[[disk]]
path = "PARTLABEL=web-data"
read_only = true

[[disk]]
path = "LABEL=scratch"

[[disk]]
path = "images/extra.img"

[[net]]
bridge = "br0"
tap = "tap-web0"
mac = "52:54:00:12:34:56"

[[net]]
bridge = "br1"

[rng]
enabled = false

[lifecycle]
restart = "always"
autostart = false
"#;

#[test]
fn full_example_parses_with_every_field() {
    let g = parse(FULL);
    assert_eq!(
        g,
        GuestConfig {
            name: "web".into(),
            file: PathBuf::from(FILE),
            machine: Machine {
                vcpus: 2,
                memory_mib: 512,
                virtio: VirtioTransport::Mmio,
            },
            boot: Boot {
                from: BootFrom::Kernel {
                    kernel: "guests/web/bzImage".into(),
                    initrd: Some("guests/web/initrd.img".into()),
                },
                cmdline: "console=ttyS0 root=/dev/vda rw".into(),
            },
            disks: vec![
                Disk {
                    path: DiskSource::Path("/data/web.img".into()),
                    read_only: false,
                    provision: None
                },
                Disk {
                    path: DiskSource::PartLabel("web-data".into()),
                    read_only: true,
                    provision: None
                },
                Disk {
                    path: DiskSource::Label("scratch".into()),
                    read_only: false,
                    provision: None
                },
                Disk {
                    path: DiskSource::Path("guests/images/extra.img".into()),
                    read_only: false,
                    provision: None
                },
            ],
            nets: vec![
                Net {
                    bridge: Some("br0".into()),
                    tap: Some("tap-web0".into()),
                    mac: "52:54:00:12:34:56".parse().unwrap(),
                },
                Net {
                    bridge: Some("br1".into()),
                    tap: None,
                    mac: MacAddr::derive("web", 1),
                },
            ],
            rng: Rng { enabled: false },
            lifecycle: Lifecycle {
                restart: RestartPolicy::Always,
                autostart: false
            },
            cloud_init: None,
        }
    );
}

#[test]
fn minimal_definition_gets_every_default() {
    let g = parse("[boot]\nkernel = \"/k/bzImage\"\n");
    assert_eq!(g.name, "web");
    assert_eq!(
        g.machine,
        Machine {
            vcpus: 1,
            memory_mib: 128,
            virtio: VirtioTransport::Pci,
        }
    );
    assert_eq!(g.boot.kernel().unwrap(), PathBuf::from("/k/bzImage"));
    assert_eq!(g.boot.initrd(), None);
    assert_eq!(g.boot.cmdline, "console=ttyS0");
    assert!(g.disks.is_empty());
    assert!(g.nets.is_empty());
    assert!(g.rng.enabled);
    assert_eq!(g.lifecycle.restart, RestartPolicy::OnFailure);
    assert!(g.lifecycle.autostart);
}

#[test]
fn other_toml_spellings_mean_the_same() {
    let dotted = parse(
        "boot.kernel = \"k\"\nmachine = { vcpus = 0x4, memory_mib = 1_024 }\n\
         disk = [{ path = \"a.img\" }]\nnet = [{ tap = \"t0\" }]\n",
    );
    assert_eq!(dotted.machine.vcpus, 4);
    assert_eq!(dotted.machine.memory_mib, 1024);
    assert_eq!(dotted.boot.kernel().unwrap(), PathBuf::from("guests/k"));
    assert_eq!(dotted.disks.len(), 1);
    assert_eq!(dotted.nets[0].tap.as_deref(), Some("t0"));
    assert_eq!(dotted.nets[0].mac, MacAddr::derive("web", 0));
}

#[test]
fn byte_order_mark_and_crlf_are_accepted_and_positions_stay_right() {
    let g = parse("\u{feff}[boot]\r\nkernel = \"k\"\r\n");
    assert_eq!(g.boot.kernel().unwrap(), PathBuf::from("guests/k"));
    assert_eq!(
        err("\u{feff}[boot]\r\nkernel = \"k\"\r\n[machine]\r\nvcpus = 0\r\n"),
        "guests/web.toml:4:9: vcpus = 0 is out of range (allowed 1..=32)"
    );
}

#[test]
fn relative_paths_resolve_against_the_definition_directory() {
    let text = "[boot]\nkernel = \"k/bz\"\ninitrd = \"../shared/initrd\"\n\
                [[disk]]\npath = \"d.img\"\n[[disk]]\npath = \"/abs.img\"\n";
    let g = parse_guest(Path::new("/mnt/cfg/guests/db.toml"), text).unwrap();
    assert_eq!(g.name, "db");
    assert_eq!(
        g.boot.kernel().unwrap(),
        PathBuf::from("/mnt/cfg/guests/k/bz")
    );
    assert_eq!(
        g.boot.initrd(),
        Some(Path::new("/mnt/cfg/guests/../shared/initrd"))
    );
    assert_eq!(
        g.disks[0].path,
        DiskSource::Path("/mnt/cfg/guests/d.img".into())
    );
    assert_eq!(g.disks[1].path, DiskSource::Path("/abs.img".into()));
    // A bare file name resolves against the current directory.
    let g = parse_guest(Path::new("db.toml"), text).unwrap();
    assert_eq!(g.boot.kernel().unwrap(), PathBuf::from("k/bz"));
}

#[test]
fn derived_macs_are_stable_and_distinct_per_index_and_name() {
    let text = "[boot]\nkernel = \"k\"\n[[net]]\nbridge = \"br0\"\n[[net]]\nbridge = \"br0\"\n";
    let a = parse_guest(Path::new("guests/a.toml"), text).unwrap();
    let a2 = parse_guest(Path::new("elsewhere/a.toml"), text).unwrap();
    let b = parse_guest(Path::new("guests/b.toml"), text).unwrap();
    assert_eq!(a.nets[0].mac, a2.nets[0].mac);
    assert_eq!(a.nets[1].mac, a2.nets[1].mac);
    assert_ne!(a.nets[0].mac, a.nets[1].mac);
    assert_ne!(a.nets[0].mac, b.nets[0].mac);
    assert_ne!(a.nets[1].mac, b.nets[1].mac);
    for mac in [a.nets[0].mac, a.nets[1].mac, b.nets[0].mac] {
        assert!(
            !mac.is_multicast() && mac.is_locally_administered(),
            "{mac}"
        );
    }
}

#[test]
fn guest_name_must_follow_the_rule() {
    for file in ["guests/Web.toml", "guests/-web.toml", "guests/web_1.toml"] {
        let e = parse_guest(Path::new(file), "[boot]\nkernel = \"k\"\n").unwrap_err();
        assert_eq!(e.position(), Some(hvconfig::Position::START), "{file}");
        assert!(
            e.to_string()
                .starts_with(&format!("{file}:1:1: guest name '")),
            "{e}"
        );
        assert!(
            e.to_string()
                .ends_with("is invalid: use 1 to 32 characters from a-z, 0-9 and '-', starting with a letter or digit"),
            "{e}"
        );
    }
    let long = format!("guests/{}.toml", "a".repeat(33));
    assert!(parse_guest(Path::new(&long), "[boot]\nkernel = \"k\"\n").is_err());
    assert!(hvconfig::guest::valid_name("web-01"));
    assert!(!hvconfig::guest::valid_name("web.01"));
}

#[test]
fn range_errors_point_at_the_value() {
    assert_eq!(
        err("[machine]\nvcpus = 1\n  vcpus2 = 3\n"),
        "guests/web.toml:3:3: unknown key 'vcpus2' in [machine] (allowed: vcpus, memory_mib, virtio)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nvcpus = 64\n"),
        "guests/web.toml:4:9: vcpus = 64 is out of range (allowed 1..=32)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nvcpus = -1\n"),
        "guests/web.toml:4:9: vcpus = -1 is out of range (allowed 1..=32)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nmemory_mib = 8\n"),
        "guests/web.toml:4:14: memory_mib = 8 is out of range (allowed 16..=1048576)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nmemory_mib = 99999999999999999999\n"),
        "guests/web.toml:4:14: memory_mib = 99999999999999999999 is out of range (allowed 16..=1048576)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nvcpus = 0x\n"),
        "guests/web.toml:4:9: vcpus = 0x is not a valid integer (allowed 1..=32)"
    );
}

#[test]
fn unknown_keys_are_named_with_the_allowed_ones() {
    assert_eq!(
        err("[machine]\nvcpus = 2\n\n[boot]\nkernal = \"k\"\n"),
        "guests/web.toml:5:1: unknown key 'kernal' in [boot] (allowed: kernel, initrd, cmdline)"
    );
    assert_eq!(
        err("vcpus = 2\n[boot]\nkernel = \"k\"\n"),
        "guests/web.toml:1:1: unknown key 'vcpus' at the top level \
         (allowed: machine, boot, disk, net, rng, lifecycle, cloud_init)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[[disk]]\npath = \"a\"\nreadonly = true\n"),
        "guests/web.toml:5:1: unknown key 'readonly' in [[disk]] (allowed: path, read_only, size_gib, base)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[lifecycle]\nrestart = \"never\"\n[lifecycle.x]\n"),
        "guests/web.toml:5:12: unknown key 'x' in [lifecycle] (allowed: restart, autostart)"
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nvcpus = \"2\"\n"),
        "guests/web.toml:4:9: vcpus must be an integer in 1..=32, found a string"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[machine]\nvcpus = 2.0\n"),
        "guests/web.toml:4:9: vcpus must be an integer in 1..=32, found a float"
    );
    assert_eq!(
        err("[boot]\nkernel = 5\n"),
        "guests/web.toml:2:10: kernel must be a string, found an integer"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[rng]\nenabled = \"yes\"\n"),
        "guests/web.toml:4:11: enabled must be true or false, found a string"
    );
    assert_eq!(
        err("machine = 3\n[boot]\nkernel = \"k\"\n"),
        "guests/web.toml:1:11: machine must be a table ([machine]), found an integer"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n[disk]\npath = \"a\"\n"),
        "guests/web.toml:3:1: disk must be an array of tables ([[disk]]), found a table"
    );
    assert_eq!(
        err("disk = [\"a\"]\n[boot]\nkernel = \"k\"\n"),
        "guests/web.toml:1:9: disk entries must be tables ([[disk]]), found a string"
    );
}

#[test]
fn missing_required_keys_point_at_the_table_or_file_start() {
    assert_eq!(
        err("# nothing\n[machine]\nvcpus = 2\n"),
        "guests/web.toml:1:1: nothing to boot: [boot] sets no kernel = \"PATH\" \
         (a bzImage or vmlinux) and there is no [[disk]] to boot from"
    );
    assert_eq!(
        err("[machine]\nvcpus = 2\n\n[boot]\ninitrd = \"i\"\n[[disk]]\npath = \"d\"\n"),
        "guests/web.toml:5:10: initrd needs kernel = \"PATH\" beside it; a guest \
         without a kernel boots the initrd its first disk names"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\n\n  [[disk]]\nread_only = true\n"),
        "guests/web.toml:4:3: missing required key 'path' in [[disk]] \
         (a file, a block device, LABEL=x or PARTLABEL=x)"
    );
}

#[test]
fn bad_values_are_explained() {
    let k = "[boot]\nkernel = \"k\"\n";
    assert_eq!(
        err("[boot]\nkernel = \"\"\n"),
        "guests/web.toml:2:10: kernel must not be empty"
    );
    assert_eq!(
        err(&format!(
            "[boot]\nkernel = \"k\"\ncmdline = \"{}\"\n",
            "x".repeat(1025)
        )),
        "guests/web.toml:3:11: cmdline is 1025 bytes long (allowed at most 1024)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"k\"\ncmdline = \"a\\nb\"\n"),
        "guests/web.toml:3:11: cmdline must not contain control characters (newlines, tabs, ...)"
    );
    assert_eq!(
        err(&format!("{k}[lifecycle]\nrestart = \"sometimes\"\n")),
        "guests/web.toml:4:11: restart = \"sometimes\" is not a restart policy \
         (allowed: always, on-failure, never)"
    );
    assert_eq!(
        err(&format!("{k}[machine]\nvirtio = \"legacy\"\n")),
        "guests/web.toml:4:10: virtio = \"legacy\" is not a virtio transport \
         (allowed: pci, mmio)"
    );
    assert_eq!(
        err(&format!("{k}[machine]\nvirtio = 1\n")),
        "guests/web.toml:4:10: virtio must be a string, found an integer"
    );
    assert_eq!(
        err(&format!("{k}[[disk]]\npath = \"LABEL=\"\n")),
        "guests/web.toml:4:8: path 'LABEL=' needs a label after '='"
    );
    assert_eq!(
        err(&format!("{k}[[disk]]\npath = \"UUID=1234\"\n")),
        "guests/web.toml:4:8: disks cannot be chosen by UUID (allowed: a path, LABEL=x or PARTLABEL=x)"
    );
    assert_eq!(
        err(&format!(
            "{k}[[disk]]\npath = \"a.img\"\n[[disk]]\npath = \"a.img\"\n"
        )),
        "guests/web.toml:6:8: path 'a.img' is already used by the [[disk]] at line 3"
    );
    for path in ["../../../dev/sda2", "/dev/../dev/sda2", "disks/../../x.img"] {
        assert_eq!(
            err(&format!("{k}[[disk]]\npath = \"{path}\"\n")),
            format!(
                "guests/web.toml:4:8: path '{path}' must not contain '..' (use an absolute \
                 path such as /data/web.img, or one inside the definition's directory)"
            )
        );
    }
    for (path, root) in [
        ("/run/hv/guests/other/console.log", "/run"),
        ("/sys/class/block/sda/size", "/sys"),
        ("/proc/self/mem", "/proc"),
    ] {
        assert_eq!(
            err(&format!("{k}[[disk]]\npath = \"{path}\"\n")),
            format!(
                "guests/web.toml:4:8: path '{path}' is under {root}, which holds no disks (a \
                 disk is a block device or a file beneath a [[mount]] target of host.toml, \
                 such as /data/web.img)"
            )
        );
    }
    let mut text = k.to_string();
    for i in 0..17 {
        text.push_str(&format!("[[disk]]\npath = \"d{i}.img\"\n"));
    }
    assert_eq!(
        err(&text),
        "guests/web.toml:35:1: too many disks (allowed at most 16)"
    );
}

#[test]
fn net_errors() {
    let k = "[boot]\nkernel = \"k\"\n";
    assert_eq!(
        err(&format!("{k}[[net]]\nmac = \"52:54:00:00:00:01\"\n")),
        "guests/web.toml:3:1: a [[net]] needs bridge = \"NAME\" (a bridge from host.toml) \
         or tap = \"NAME\" (an existing tap device)"
    );
    assert_eq!(
        err(&format!(
            "{k}[[net]]\nbridge = \"br0\"\nmac = \"01:00:5e:00:00:01\"\n"
        )),
        "guests/web.toml:5:7: mac 01:00:5e:00:00:01 is a multicast address \
         (the lowest bit of the first byte must be 0, e.g. 52:54:00:xx:xx:xx)"
    );
    assert_eq!(
        err(&format!(
            "{k}[[net]]\nbridge = \"br0\"\nmac = \"52:54:00:00:01\"\n"
        )),
        "guests/web.toml:5:7: mac '52:54:00:00:01' is not a MAC address: \
         expected six hex byte pairs separated by ':', e.g. 52:54:00:12:34:56"
    );
    assert_eq!(
        err(&format!(
            "{k}[[net]]\nbridge = \"br0\"\nmac = \"00:00:00:00:00:00\"\n"
        )),
        "guests/web.toml:5:7: mac 00:00:00:00:00:00 is not a usable address"
    );
    assert_eq!(
        err(&format!("{k}[[net]]\ntap = \"tap/0\"\n")),
        "guests/web.toml:4:7: tap 'tap/0' is not a valid interface name \
         (1 to 15 bytes, no '/', ':', whitespace or control characters, not '.' or '..')"
    );
    assert_eq!(
        err(&format!("{k}[[net]]\nbridge = \"a-very-long-bridge\"\n")),
        "guests/web.toml:4:10: bridge 'a-very-long-bridge' is not a valid interface name \
         (1 to 15 bytes, no '/', ':', whitespace or control characters, not '.' or '..')"
    );
    assert_eq!(
        err(&format!(
            "{k}[[net]]\ntap = \"t0\"\n[[net]]\ntap = \"t0\"\n"
        )),
        "guests/web.toml:6:7: tap 't0' is used by two [[net]] entries"
    );
    let derived0 = MacAddr::derive("web", 0);
    assert_eq!(
        err(&format!(
            "{k}[[net]]\ntap = \"t0\"\n[[net]]\ntap = \"t1\"\nmac = \"{derived0}\"\n"
        )),
        format!("guests/web.toml:7:7: mac {derived0} is used by two [[net]] entries of this guest")
    );
}

#[test]
fn toml_syntax_errors_keep_their_position() {
    let e = err("[boot]\nkernel = \"k\n");
    assert!(e.starts_with("guests/web.toml:2:"), "{e}");
    assert!(e.contains("invalid TOML"), "{e}");
    let e = err("[boot]\nkernel = \"a\"\nkernel = \"b\"\n");
    assert_eq!(
        e,
        "guests/web.toml:3:1: invalid TOML: 'kernel' is defined twice \
         (a key or [table] may appear only once)"
    );
    assert_eq!(
        err("[boot]\nkernel = \"a\"\n[boot]\n"),
        "guests/web.toml:3:2: invalid TOML: 'boot' is defined twice \
         (a key or [table] may appear only once)"
    );
}

#[test]
fn a_definition_without_a_kernel_boots_its_first_disk() {
    let disk = "[[disk]]\npath = \"/data/debian.img\"\n";
    for text in [
        disk.to_string(),
        format!("[boot]\ncmdline = \"console=ttyS0 init=/bin/sh\"\n{disk}"),
    ] {
        let g = parse_guest(Path::new("guests/web.toml"), &text).unwrap();
        assert_eq!(g.boot.from, BootFrom::Disk);
        assert_eq!((g.boot.kernel(), g.boot.initrd()), (None, None));
        assert!(g.boot_files().is_empty(), "nothing to fetch or bind");
    }
    let g = parse_guest(Path::new("guests/web.toml"), disk).unwrap();
    assert_eq!(g.boot.cmdline, "console=ttyS0");
}

#[test]
fn boot_files_lists_kernel_and_initrd() {
    let g = parse_guest(
        Path::new("/cfg/guests/web.toml"),
        "[boot]\nkernel = \"k\"\ninitrd = \"i\"\n",
    )
    .unwrap();
    let files: Vec<_> = g.boot_files().iter().map(|f| (f.what, f.path)).collect();
    assert_eq!(
        files,
        vec![
            ("kernel", Path::new("/cfg/guests/k")),
            ("initrd", Path::new("/cfg/guests/i"))
        ]
    );
}
