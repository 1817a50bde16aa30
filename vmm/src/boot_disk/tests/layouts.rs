//! One test per layout a distribution installs, and per way a disk can be
//! broken.

use super::*;
use crate::boot_disk::disk::{Budget, Slice};
use crate::boot_disk::fat::FatFs;
use crate::boot_disk::fs::Fs;
use crate::boot_disk::FileError;

const V: &str = "6.1.0-28-cloud-amd64";

fn debian_gpt() -> Vec<u8> {
    let esp = fat(
        &Tree::new().file("/EFI/debian/grub.cfg", "search --fs-uuid x\n"),
        4,
        16,
    );
    let root = ext4(&debian_root(V), 16, ROOT_UUID);
    disk("gpt", &[(ESP, &esp), (LINUX, &root)])
}

#[test]
fn debian_relative_links_on_gpt() {
    let b = boot(debian_gpt()).unwrap();
    assert_eq!(b.kernel, format!("kernel {V}").as_bytes());
    assert_eq!(b.initrd.unwrap(), padded(format!("initrd {V}").as_bytes()));
    assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro"));
    assert_eq!(
        b.found,
        format!(
            "disk 0 partition 2 (ext4, UUID {ROOT_UUID}): /boot/vmlinuz-{V} via /vmlinuz -> /boot/vmlinuz-{V}"
        )
    );
}

#[test]
fn the_answer_is_the_same_every_time() {
    let d = debian_gpt();
    assert_eq!(boot(d.clone()).unwrap(), boot(d).unwrap());
}

#[test]
fn ubuntu_absolute_links_in_boot_on_mbr() {
    let root = Tree::new()
        .file("/etc/fstab", "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
        .file("/boot/vmlinuz-5.15.0-91-generic", "kernel 5.15")
        .file("/boot/initrd.img-5.15.0-91-generic", "initrd 5.15!")
        .link("/boot/vmlinuz", "/boot/vmlinuz-5.15.0-91-generic")
        .link("/boot/initrd.img", "/boot/initrd.img-5.15.0-91-generic");
    let root = ext4(&root, 16, ROOT_UUID);
    let b = boot(disk("dos", &[("83", &root)])).unwrap();
    assert_eq!(b.kernel, b"kernel 5.15");
    assert_eq!(b.initrd.unwrap(), b"initrd 5.15!");
    assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro"));
    assert!(
        b.found.starts_with("disk 0 partition 1 (ext4"),
        "{}",
        b.found
    );
}

#[test]
fn gpt_with_4096_byte_sectors() {
    let root = ext4(&debian_root(V), 16, ROOT_UUID);
    let b = boot(disk_4k(&[(LINUX, &root)])).unwrap();
    assert_eq!(b.kernel, format!("kernel {V}").as_bytes());
}

#[test]
fn loader_entries_on_the_esp_newest_version_wins_over_the_links() {
    // 6.10 is newer than 6.9 by version, older by bytes.
    let esp = Tree::new()
        .file(
            "/loader/entries/4a8c-6.9.0.conf",
            "title Old\nversion 6.9.0\nlinux /4a8c/6.9.0/linux\noptions root=old\n",
        )
        .file(
            "/loader/entries/4a8c-6.10.0.conf",
            "title New\nversion 6.10.0\nlinux /4a8c/6.10.0/linux\n\
             initrd /4a8c/6.10.0/ucode\ninitrd /4a8c/6.10.0/initrd\n\
             options root=UUID=r ro\noptions console=ttyS0\n",
        )
        .file("/loader/entries/notes.txt", "not an entry")
        .file("/loader/entries/broken.conf", "title no kernel\n")
        .file("/4a8c/6.9.0/linux", "kernel 6.9")
        .file("/4a8c/6.10.0/linux", "kernel 6.10")
        .file("/4a8c/6.10.0/ucode", "ucode")
        .file("/4a8c/6.10.0/initrd", "initrd 6.10");
    let esp = fat(&esp, 40, 32);
    let root = ext4(&debian_root(V), 16, ROOT_UUID);
    let b = boot(disk("gpt", &[(ESP, &esp), (LINUX, &root)])).unwrap();
    assert_eq!(b.kernel, b"kernel 6.10");
    let mut initrd = padded(b"ucode");
    initrd.extend(padded(b"initrd 6.10"));
    assert_eq!(b.initrd.unwrap(), initrd);
    assert_eq!(b.cmdline, "root=UUID=r ro console=ttyS0");
    assert_eq!(
        b.found,
        "disk 0 partition 1 (vfat, UUID 12AB-34CD): /4a8c/6.10.0/linux via \
         /loader/entries/4a8c-6.10.0.conf"
    );
}

#[test]
fn fedora_entries_in_a_separate_boot_partition() {
    let boot_fs = Tree::new()
        .file(
            "/loader/entries/f00d-6.5.6-300.fc39.x86_64.conf",
            "title Fedora\nversion 6.5.6-300.fc39.x86_64\nlinux /vmlinuz-6.5.6-300.fc39.x86_64\n\
             initrd /initramfs-6.5.6-300.fc39.x86_64.img\noptions root=UUID=btrfs ro rootflags=subvol=root\n",
        )
        .file(
            "/loader/entries/f00d-6.5.12-300.fc39.x86_64.conf",
            "title Fedora\nversion 6.5.12-300.fc39.x86_64\nlinux /vmlinuz-6.5.12-300.fc39.x86_64\n\
             options root=UUID=btrfs ro\n",
        )
        .file("/vmlinuz-6.5.6-300.fc39.x86_64", "k6.5.6")
        .file("/initramfs-6.5.6-300.fc39.x86_64.img", "i6.5.6")
        .file("/vmlinuz-6.5.12-300.fc39.x86_64", "k6.5.12");
    let boot_fs = ext4(&boot_fs, 16, BOOT_UUID);
    let b = boot(disk("gpt", &[(LINUX, &boot_fs)])).unwrap();
    assert_eq!(b.kernel, b"k6.5.12");
    assert_eq!(b.initrd, None);
    assert_eq!(b.cmdline, "root=UUID=btrfs ro");
}

#[test]
fn loader_entries_in_the_roots_boot_with_paths_from_boot() {
    let root = Tree::new()
        .file("/etc/fstab", "")
        .file(
            "/boot/loader/entries/x.conf",
            "linux /vmlinuz-6.8\ninitrd /initrd-6.8\noptions root=LABEL=root\n",
        )
        .file("/boot/vmlinuz-6.8", "k6.8")
        .file("/boot/initrd-6.8", "i6.8");
    let b = boot(disk("gpt", &[(LINUX, &ext4(&root, 16, ROOT_UUID))])).unwrap();
    assert_eq!(b.kernel, b"k6.8");
    assert!(b
        .found
        .ends_with("/boot/vmlinuz-6.8 via /boot/loader/entries/x.conf"));
}

#[test]
fn extlinux_default_label() {
    let root = Tree::new()
        .file(
            "/boot/extlinux/extlinux.conf",
            "# generated\nDEFAULT main\nTIMEOUT 30\nLABEL rescue\n  KERNEL /boot/rescue\n\
             LABEL main\n  KERNEL ../vmlinuz-6.6\n  INITRD ../initramfs-6.6\n  \
             APPEND root=/dev/vda1 rw console=ttyS0\n",
        )
        .file("/boot/vmlinuz-6.6", "k6.6")
        .file("/boot/initramfs-6.6", "i6.6")
        .file("/boot/rescue", "rescue")
        .link("/vmlinuz", "boot/rescue");
    let b = boot(disk("dos", &[("83", &ext4(&root, 16, ROOT_UUID))])).unwrap();
    assert_eq!(b.kernel, b"k6.6");
    assert_eq!(b.initrd.unwrap(), b"i6.6");
    assert_eq!(b.cmdline, "root=/dev/vda1 rw console=ttyS0");
    assert!(
        b.found
            .contains("via /boot/extlinux/extlinux.conf label main"),
        "{}",
        b.found
    );
}

#[test]
fn debian_with_a_separate_boot_partition() {
    // The root's links point into the empty /boot mount point; the
    // files are at the /boot partition's root.
    let boot_fs = Tree::new()
        .file(&format!("/vmlinuz-{V}"), "kernel in /boot")
        .file(&format!("/initrd.img-{V}"), "initrd in /boot");
    let root = Tree::new()
        .file("/etc/fstab", "")
        .file("/boot/.keep", "")
        .link("/vmlinuz", &format!("boot/vmlinuz-{V}"))
        .link("/initrd.img", &format!("boot/initrd.img-{V}"));
    let d = disk(
        "gpt",
        &[
            (LINUX, &ext4(&boot_fs, 16, BOOT_UUID)),
            (LINUX, &ext4(&root, 16, ROOT_UUID)),
        ],
    );
    let b = boot(d).unwrap();
    assert_eq!(b.kernel, b"kernel in /boot");
    assert_eq!(b.initrd.unwrap(), padded(b"initrd in /boot"));
    // root= names the partition with /etc/fstab, not the one with the kernel.
    assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro"));
    assert!(
        b.found
            .starts_with(&format!("disk 0 partition 1 (ext4, UUID {BOOT_UUID})")),
        "{}",
        b.found
    );
    assert!(b.found.contains("via partition 2"), "{}", b.found);
}

#[test]
fn debian_links_inside_the_boot_partition() {
    let boot_fs = Tree::new()
        .file(&format!("/vmlinuz-{V}"), "kernel")
        .link("/vmlinuz", &format!("vmlinuz-{V}"));
    let root = Tree::new().file("/sbin/init", "init");
    let d = disk(
        "dos",
        &[
            ("83", &ext4(&boot_fs, 16, BOOT_UUID)),
            ("83", &ext4(&root, 16, ROOT_UUID)),
        ],
    );
    let b = boot(d).unwrap();
    assert_eq!(b.kernel, b"kernel");
    assert_eq!(b.initrd, None);
    assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro"));
}

#[test]
fn whole_disk_ext4() {
    let b = boot(ext4(&debian_root(V), 16, ROOT_UUID)).unwrap();
    assert_eq!(b.kernel, format!("kernel {V}").as_bytes());
    assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro"));
    assert!(
        b.found.starts_with("disk 0 whole disk (ext4"),
        "{}",
        b.found
    );
}

#[test]
fn a_symlink_loop_is_reported() {
    let root = Tree::new()
        .file("/etc/fstab", "")
        .link("/vmlinuz", "vmlinuz.a")
        .link("/vmlinuz.a", "/vmlinuz");
    let err = boot(ext4(&root, 16, ROOT_UUID)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotFound(_)), "{msg}");
    assert!(msg.contains("/vmlinuz: a symbolic link loop"), "{msg}");
}

#[test]
fn a_dangling_initrd_link_is_an_error() {
    let root = Tree::new()
        .file("/etc/fstab", "")
        .file("/boot/vmlinuz-6.1", "k")
        .link("/vmlinuz", "boot/vmlinuz-6.1")
        .link("/initrd.img", "boot/initrd.img-6.1");
    let err = boot(ext4(&root, 16, ROOT_UUID)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "disk 0 whole disk (ext4, UUID {ROOT_UUID}): /initrd.img -> /boot/initrd.img-6.1 missing"
        )
    );
}

#[test]
fn nothing_to_boot_names_what_was_looked_at() {
    let esp = fat(&Tree::new().file("/EFI/BOOT/BOOTX64.EFI", "MZ"), 2, 12);
    let root = Tree::new()
        .file("/etc/fstab", "")
        .link("/vmlinuz", "boot/vmlinuz-6.1");
    let swap = vec![0u8; 1 << 20];
    let mut bad_ext4 = ext4(&Tree::new(), 8, BOOT_UUID);
    bad_ext4[1024 + 24..1024 + 28].fill(0xff); // an absurd block size
    let d = disk(
        "gpt",
        &[
            (ESP, &esp),
            ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", &swap),
            (LINUX, &bad_ext4),
            (LINUX, &ext4(&root, 16, ROOT_UUID)),
        ],
    );
    let msg = boot(d).unwrap_err().to_string();
    let (head, tail) = msg
        .split_once("partition 3 (ext4): does not mount: ")
        .unwrap();
    assert_eq!(
        head,
        "disk 0: no partition holds a kernel: partition 1 (vfat, UUID 12AB-34CD): no loader \
         entries, no extlinux.conf, no /vmlinuz or /boot/vmlinuz; partition 2: no ext2/3/4 or \
         FAT file system; "
    );
    assert!(
        tail.ends_with(&format!(
            "; partition 4 (ext4, UUID {ROOT_UUID}): no loader entries, no extlinux.conf, \
             /vmlinuz -> /boot/vmlinuz-6.1 missing"
        )),
        "{msg}"
    );
}

#[test]
fn files_over_the_limits_are_refused() {
    let d = ext4(&debian_root(V), 16, ROOT_UUID);
    let limits = Limits {
        kernel: 10,
        ..Limits::new(64 << 20)
    };
    let err = boot_with(d.clone(), &limits).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::File {
                source: FileError::TooLarge {
                    what: "kernel",
                    limit: 10,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    let err = boot_with(d, &Limits::new(5)).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "/boot/initrd.img-{V}: 27 bytes is more than the initrd limit of 5 bytes"
        )),
        "{err}"
    );
}

#[test]
fn a_truncated_image_is_an_error() {
    let mut d = debian_gpt();
    d.truncate(8 << 20);
    let msg = boot(d).unwrap_err().to_string();
    assert!(msg.contains("outside the disk"), "{msg}");
    assert!(matches!(boot(vec![0; 100]), Err(Error::TooSmall(100))));
    assert!(matches!(boot(vec![0; 1 << 20]), Err(Error::NotFound(_))));
}

#[test]
fn fat_is_never_written() {
    let esp = fat(
        &Tree::new()
            .file("/loader/entries/a.conf", "linux /k\n")
            .file("/k", "kernel"),
        40,
        32,
    );
    let len = esp.len() as u64;
    let original = esp.clone();
    let disk: Rc<dyn ReadAt> = Rc::new(esp);
    let view = Slice::whole(disk, len, Budget::new(1 << 30, 1 << 20)).read_only();
    let writes = view.write_attempts();
    {
        let fs = FatFs::mount_view(view).unwrap();
        assert_eq!(fs.read("/k", 100, "kernel").unwrap(), b"kernel");
        assert_eq!(fs.list("/loader/entries", 10).unwrap().len(), 1);
        assert_eq!(fs.read_link("/loader").unwrap(), None);
        assert!(matches!(fs.read_link("/nope"), Err(FileError::NotFound(_))));
    }
    // Dropping the file system is when fatfs would flush.
    assert_eq!(writes.get(), 0);
    assert_eq!(boot(original).unwrap().kernel, b"kernel");
}

/// A FAT16 image whose /loader directory's cluster chain points back at
/// itself and holds only deleted entries: fatfs would read it forever
/// inside one call; the read budget ends it.
#[test]
fn a_fat_directory_that_loops_ends() {
    let mut d = fat(
        &Tree::new().file("/loader/entries/a.conf", "linux /k\n"),
        4,
        16,
    );
    let u16_at = |d: &[u8], at: usize| u16::from_le_bytes([d[at], d[at + 1]]) as usize;
    let bps = u16_at(&d, 11);
    let spc = d[13] as usize;
    let reserved = u16_at(&d, 14);
    let fats = d[16] as usize;
    let root_entries = u16_at(&d, 17);
    let spf = u16_at(&d, 22);
    let root = (reserved + fats * spf) * bps;
    let data = root + root_entries * 32;
    let entry = (0..root_entries)
        .map(|i| root + i * 32)
        .find(|&e| &d[e..e + 11] == b"LOADER     ")
        .expect("mmd made /loader");
    let cluster = u16_at(&d, entry + 26);
    let at = data + (cluster - 2) * spc * bps;
    for e in (at..at + spc * bps).step_by(32) {
        d[e..e + 32].fill(0);
        d[e] = 0xe5;
    }
    for k in 0..fats {
        let fat = (reserved + k * spf) * bps + cluster * 2;
        d[fat..fat + 2].copy_from_slice(&(cluster as u16).to_le_bytes());
    }
    let started = std::time::Instant::now();
    let msg = boot(d).unwrap_err().to_string();
    assert!(msg.contains("read budget is spent"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn ext2_and_ext3_read_as_ext4() {
    for kind in ["ext2", "ext3"] {
        let d = ext4_with(&debian_root(V), 16, ROOT_UUID, &["-t", kind]);
        let b = boot(d).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(b.kernel, format!("kernel {V}").as_bytes(), "{kind}");
        assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro"), "{kind}");
    }
}

#[test]
fn a_broken_primary_gpt_falls_back_to_the_backup() {
    let mut d = debian_gpt();
    d[512..1024].fill(0);
    let b = boot(d).unwrap();
    assert_eq!(b.kernel, format!("kernel {V}").as_bytes());
}

#[test]
fn a_winning_entry_with_a_missing_kernel_is_an_error() {
    let esp = Tree::new()
        .file("/loader/entries/l-2.conf", "linux /gone\n")
        .file("/loader/entries/l-1.conf", "linux /k1\n")
        .file("/k1", "k1");
    let d = disk("gpt", &[(ESP, &fat(&esp, 2, 12))]);
    assert_eq!(
        boot(d).unwrap_err().to_string(),
        "disk 0 partition 1 (vfat, UUID 12AB-34CD): /gone missing"
    );
}

/// Through a file, as the vmm does it: and the file comes back after.
#[test]
fn a_disk_file_boots_and_is_handed_back() {
    let s = Scratch::new();
    let path = s.path("disk.img");
    std::fs::write(&path, debian_gpt()).unwrap();
    let file =
        Rc::new(crate::boot_disk::DiskFile::new(std::fs::File::open(&path).unwrap()).unwrap());
    let disk: Rc<dyn ReadAt> = file.clone();
    let b = find_boot(disk, &Limits::new(1 << 20)).unwrap();
    assert_eq!(b.kernel, format!("kernel {V}").as_bytes());
    let file = Rc::try_unwrap(file).expect("find_boot keeps no reference");
    assert_eq!(
        file.into_inner().metadata().unwrap().len(),
        debian_gpt_len()
    );
}

fn debian_gpt_len() -> u64 {
    // 1 MiB before, the 4 MiB ESP, the 16 MiB root, 1 MiB after.
    22 << 20
}

#[test]
fn rhel8_entries_take_their_options_from_grubenv() {
    let boot_fs = Tree::new()
        .file(
            "/loader/entries/abc-4.18.0-513.el8.x86_64.conf",
            "title Rocky Linux\nversion 4.18.0-513.el8.x86_64\nlinux /vmlinuz-4.18.0-513.el8.x86_64\n\
             initrd /initramfs-4.18.0-513.el8.x86_64.img $tuned_initrd\n\
             options $kernelopts $tuned_params\nid rocky-4.18\ngrub_users $grub_users\n",
        )
        .file("/vmlinuz-4.18.0-513.el8.x86_64", "k")
        .file("/initramfs-4.18.0-513.el8.x86_64.img", "i")
        .file(
            "/grub2/grubenv",
            format!(
                "# GRUB Environment Block\nkernelopts=root=UUID={ROOT_UUID} ro console=ttyS0\n{}",
                "#".repeat(900)
            ),
        );
    let d = disk("gpt", &[(LINUX, &ext4(&boot_fs, 16, BOOT_UUID))]);
    let b = boot(d).unwrap();
    assert_eq!(b.cmdline, format!("root=UUID={ROOT_UUID} ro console=ttyS0"));
}

#[test]
fn an_empty_gpt_says_so() {
    let msg = boot(disk("gpt", &[])).unwrap_err().to_string();
    assert_eq!(
        msg,
        "disk 0: no partition holds a kernel: its GPT lists no partitions"
    );
}
