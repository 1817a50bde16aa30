//! The vmm runs a real Linux guest under nested KVM (our host kernel in
//! QEMU/TCG, see `hv_tests::rig`): the guest sees the machine its definition
//! describes, its disk writes reach the host file, its NIC reaches the host,
//! its cloud-init seed is a read-only disk after its own, and SIGTERM shuts
//! it down through the guest's own shutdown path.
//!
//! Needs the kernels (`scripts/kernel host|guest`, cached) and the static
//! vmm from `./scripts/build`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hv_tests::rig::Rig;
use hv_tests::Qemu;

/// The host kernel booting under TCG, up to its init script.
const L1_UP: Duration = Duration::from_secs(240);
/// A nested guest boots in about 10 s when the machine is idle.
const GUEST_UP: Duration = Duration::from_secs(180);
/// Checks inside the guest: a ping and a few reads.
const GUEST_CHECKS: Duration = Duration::from_secs(60);
/// From the guest's last word to the vmm's exit, and from there to the L1
/// powering off.
const STOP: Duration = Duration::from_secs(60);

/// How long the L1 lets the vmm run before killing it (and showing why on
/// the console); longer than the test's waits would allow anyway.
const VMM_WATCHDOG_S: u32 = 400;

/// A word no earlier run can have left in a disk image.
fn nonce() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970");
    format!(
        "{:x}{:x}",
        now.as_nanos() & 0xffff_ffff_ffff,
        std::process::id()
    )
}

/// Runs the vmm on `/guest/guest.toml` in the foreground; its serial console
/// and log share the L1 console; `rig: vmm exit=N` follows.
fn run_vmm_script() -> String {
    format!(
        "(timeout -s KILL {VMM_WATCHDOG_S} /bin/vmm --guest /guest/guest.toml --uid 1000 --gid 1000 \
         </dev/null 2>&1; echo \"rig: vmm exit=$?\")"
    )
}

/// Waits for each pattern in turn and returns the matched lines.
fn expect_in_order(
    vm: &mut Qemu,
    patterns: &[&str],
    timeout: Duration,
) -> Result<Vec<String>, hv_tests::Error> {
    patterns.iter().map(|p| vm.wait_for(p, timeout)).collect()
}

#[test]
fn guest_sees_its_cpus_memory_disk_nic_and_rng_over_pci() -> Result<(), hv_tests::Error> {
    // The root bus, and MSI-X vectors for every device.
    guest_sees_its_devices("pci", "", "pci0000:00/0000:00:01.0", |msi, intx| {
        msi > 0 && intx == 0
    })
}

#[test]
fn guest_devices_work_on_intx_when_the_guest_refuses_msi() -> Result<(), hv_tests::Error> {
    // pci=nomsi: every virtio-pci device falls back to its level INTx
    // line (resample irqfd, read-to-clear ISR).
    guest_sees_its_devices(
        "pci",
        " pci=nomsi",
        "pci0000:00/0000:00:01.0",
        |msi, intx| msi == 0 && intx > 0,
    )
}

#[test]
fn guest_sees_its_cpus_memory_disk_nic_and_rng_over_mmio() -> Result<(), hv_tests::Error> {
    // Found through the DSDT's LNRO0005 devices alone; no MSI.
    guest_sees_its_devices("mmio", "", "platform/LNRO0005:00", |msi, intx| {
        msi == 0 && intx == 0
    })
}

/// Boots a guest whose devices use `transport`, with `extra` appended to
/// its command line; vda must sit at `vda_at` under /sys/devices, and
/// `irqs_ok` judges the counts of MSI lines and of PCI INTx lines (IO-APIC
/// fasteoi, the level pins) of virtio devices in the guest's
/// /proc/interrupts.
fn guest_sees_its_devices(
    transport: &str,
    extra: &str,
    vda_at: &str,
    irqs_ok: fn(u32, u32) -> bool,
) -> Result<(), hv_tests::Error> {
    let nonce = nonce();
    let definition = format!(
        r#"
[machine]
vcpus = 2
memory_mib = 256
virtio = "{transport}"

[boot]
kernel = "bzImage"
initrd = "initrd.img"
cmdline = "console=ttyS0 panic=-1 rig.nonce={nonce}{extra}"

[[disk]]
path = "/tmp/disk.img"

[[net]]
tap = "tap0"
mac = "52:54:00:12:34:56"

[rng]
enabled = true
"#
    );
    let guest_rc = r#"
nonce=$(sed -n 's/.*rig\.nonce=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
echo "guest: nproc=$(nproc)"
echo "guest: memtotal_kib=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)"
if [ -b /dev/vda ]; then
    echo "guest: vda sectors=$(cat /sys/block/vda/size) reads=$(head -c 16 /dev/vda)"
else
    echo "guest: vda missing"
fi
echo "guest: eth0 mac=$(cat /sys/class/net/eth0/address 2>&1)"
ip link set eth0 up && ip addr add 10.0.2.2/24 dev eth0
if ping -c 1 -W 20 10.0.2.1 >/dev/null 2>&1; then
    echo "guest: ping 10.0.2.1 ok"
else
    echo "guest: ping 10.0.2.1 failed"
fi
echo "guest: rng_current=$(cat /sys/class/misc/hw_random/rng_current 2>&1)"
echo "guest: hwrng gave $(head -c 64 /dev/hwrng | wc -c) bytes"
echo "guest: vda at $(readlink -f /sys/block/vda | cut -d/ -f4-5)"
echo "guest: msi lines=$(grep -c PCI-MSI /proc/interrupts) intx lines=$(grep -c 'IO-APIC.*fasteoi.*virtio' /proc/interrupts)"
echo "rig-marker-$nonce" | dd of=/dev/vda bs=512 seek=2048 conv=fsync 2>/dev/null &&
    echo "guest: marker written"
sync
echo "guest: powering off"
poweroff -f
"#;
    let script = format!(
        r#"
dd if=/dev/zero of=/tmp/disk.img bs=1M count=4 2>/dev/null
printf 'rig-disk-seed-ok' | dd of=/tmp/disk.img conv=notrunc 2>/dev/null
tunctl -t tap0 >/dev/null && ip link set tap0 up && ip addr add 10.0.2.1/24 dev tap0
echo "rig: tap0 $(cat /sys/class/net/tap0/operstate 2>&1)"
{run}
if dd if=/tmp/disk.img bs=512 skip=2048 count=1 2>/dev/null | grep -q "rig-marker-{nonce}"; then
    echo "rig: marker found in the disk image"
else
    echo "rig: marker missing from the disk image"
fi
"#,
        run = run_vmm_script()
    );
    let mut vm = Rig::new(&script)?
        .guest(guest_rc, &definition)?
        .boot(&format!(
            "vmm_guest_devices_{transport}{}",
            extra.replace([' ', '='], "_")
        ))?;
    vm.wait_for(r"^rig: L1 up at .* kvm yes$", L1_UP)?;
    vm.wait_for(r"^guest: init started$", GUEST_UP)?;
    let seen = expect_in_order(
        &mut vm,
        &[
            r"^guest: nproc=",
            r"^guest: memtotal_kib=",
            r"^guest: vda ",
            r"^guest: eth0 mac=",
            r"^guest: ping 10\.0\.2\.1 ",
            r"^guest: rng_current=",
            r"^guest: hwrng gave ",
            r"^guest: vda at ",
            r"^guest: msi lines=",
            r"^guest: marker written$",
            r"^guest: powering off$",
        ],
        GUEST_CHECKS,
    )?;
    let exit = vm.wait_for(r"^rig: vmm exit=\d+$", STOP)?;
    let disk = vm.wait_for(r"^rig: marker (found|missing)", STOP)?;
    vm.wait_for(r"^rig: done$", STOP)?;
    vm.wait_exit(STOP)?;

    assert_eq!(seen[0], "guest: nproc=2");
    // MemTotal is RAM minus what the kernel reserves for itself: a 256 MiB
    // guest reports a little less, never more.
    let mem_kib: u64 = seen[1]["guest: memtotal_kib=".len()..]
        .parse()
        .unwrap_or_else(|_| panic!("{:?}", seen[1]));
    assert!(
        (200 * 1024..=256 * 1024).contains(&mem_kib),
        "MemTotal {mem_kib} KiB for a 256 MiB guest"
    );
    // 4 MiB file = 8192 sectors; the guest reads what the host wrote.
    assert_eq!(seen[2], "guest: vda sectors=8192 reads=rig-disk-seed-ok");
    assert_eq!(seen[3], "guest: eth0 mac=52:54:00:12:34:56");
    assert_eq!(seen[4], "guest: ping 10.0.2.1 ok");
    assert_eq!(seen[5], "guest: rng_current=virtio_rng.0");
    assert_eq!(seen[6], "guest: hwrng gave 64 bytes");
    assert_eq!(seen[7], format!("guest: vda at {vda_at}"));
    let counts: Vec<u32> = seen[8]
        .split(['=', ' '])
        .filter_map(|w| w.parse().ok())
        .collect();
    let [msi, intx] = counts[..] else {
        panic!("{:?}", seen[8]);
    };
    assert!(
        irqs_ok(msi, intx),
        "{transport}{extra}: {msi} MSI lines, {intx} INTx lines"
    );
    assert_eq!(exit, "rig: vmm exit=0");
    assert_eq!(disk, "rig: marker found in the disk image");
    Ok(())
}

#[test]
fn sigterm_shuts_the_guest_down_through_its_own_shutdown_path() -> Result<(), hv_tests::Error> {
    let definition = r#"
[machine]
vcpus = 2
memory_mib = 256

[boot]
kernel = "bzImage"
initrd = "initrd.img"
cmdline = "console=ttyS0 panic=-1"
"#;
    let guest_rc = r#"echo "guest: ready""#;
    // The vmm runs in the background with its output teed to a file, so the
    // script can see the guest come up before sending SIGTERM.
    let script = format!(
        r#"
{run} | tee /tmp/vmm.log &
until grep -q -e '^guest: ready' -e '^rig: vmm exit=' /tmp/vmm.log 2>/dev/null; do sleep 0.2; done
pid=$(pidof vmm)
echo "rig: SIGTERM to vmm pid $pid at $(cut -d' ' -f1 /proc/uptime) s"
kill -TERM $pid
wait
echo "rig: vmm gone at $(cut -d' ' -f1 /proc/uptime) s"
"#,
        run = run_vmm_script()
    );
    let mut vm = Rig::new(&script)?
        .guest(guest_rc, definition)?
        .boot("vmm_guest_sigterm")?;
    vm.wait_for(r"^rig: L1 up at .* kvm yes$", L1_UP)?;
    vm.wait_for(r"^guest: ready$", GUEST_UP)?;
    vm.wait_for(r"^rig: SIGTERM to vmm pid \d+ ", STOP)?;
    vm.wait_for(r"^guest: shutdown handler: stopping cleanly$", STOP)?;
    let exit = vm.wait_for(r"^rig: vmm exit=\d+$", STOP)?;
    vm.wait_for(r"^rig: done$", STOP)?;
    vm.wait_exit(STOP)?;
    assert_eq!(exit, "rig: vmm exit=0");
    Ok(())
}

/// A definition with a `[cloud_init]` table: the guest sees its own disk
/// as vda, unchanged, and the seed as vdb: read-only, labelled CIDATA,
/// holding the generated meta-data and the user's files. The guest kernel
/// has no vfat driver, so the guest reads the volume raw: the label from
/// the boot sector, the files' text with `strings` (each small file sits
/// whole in its own cluster).
#[test]
fn guest_sees_the_cloud_init_seed_after_its_own_disk() -> Result<(), hv_tests::Error> {
    let nonce = nonce();
    let definition = r#"
[boot]
kernel = "bzImage"
initrd = "initrd.img"
cmdline = "console=ttyS0 panic=-1"

[[disk]]
path = "/tmp/disk.img"

[rng]
enabled = false

[cloud_init]
user_data = "user-data"
network_config = "network-config"
"#;
    let user_data = format!("#cloud-config\nrig_user_data: {nonce}\n");
    let network_config = format!("version: 2\nrig_network_config: {nonce}\n");
    let guest_rc = r#"
echo "guest: vda sectors=$(cat /sys/block/vda/size) ro=$(cat /sys/block/vda/ro) reads=$(head -c 16 /dev/vda)"
echo "guest: vdb ro=$(cat /sys/block/vdb/ro) serial=$(cat /sys/block/vdb/serial)"
echo "guest: vdb label=$(dd if=/dev/vdb bs=1 skip=43 count=11 2>/dev/null | tr -d ' ')"
strings /dev/vdb | grep -E '^(instance-id|local-hostname|rig_user_data|rig_network_config):' |
    while read -r line; do echo "guest: seed $line"; done
if echo x | dd of=/dev/vdb conv=fsync 2>/dev/null; then
    echo "guest: seed write accepted"
else
    echo "guest: seed write refused"
fi
[ -b /dev/vdc ] && echo "guest: vdc exists" || echo "guest: no vdc"
echo "guest: powering off"
poweroff -f
"#;
    let script = format!(
        r#"
dd if=/dev/zero of=/tmp/disk.img bs=1M count=4 2>/dev/null
printf 'rig-disk-seed-ok' | dd of=/tmp/disk.img conv=notrunc 2>/dev/null
{run}
"#,
        run = run_vmm_script()
    );
    let mut rig = Rig::new(&script)?.guest(guest_rc, definition)?;
    rig.initramfs()
        .file("guest/user-data", 0o644, user_data)
        .file("guest/network-config", 0o644, network_config);
    let mut vm = rig.boot("vmm_guest_cloud_init")?;
    vm.wait_for(r"^rig: L1 up at .* kvm yes$", L1_UP)?;
    vm.wait_for(r"^guest: init started$", GUEST_UP)?;
    let seen = expect_in_order(
        &mut vm,
        &[
            r"^guest: vda ",
            r"^guest: vdb ro=",
            r"^guest: vdb label=",
            r"^guest: seed instance-id:",
            r"^guest: seed local-hostname:",
            r"^guest: seed rig_network_config:",
            r"^guest: seed rig_user_data:",
            r"^guest: seed write (accepted|refused)$",
            r"^guest: (vdc exists|no vdc)$",
            r"^guest: powering off$",
        ],
        GUEST_CHECKS,
    )?;
    let exit = vm.wait_for(r"^rig: vmm exit=\d+$", STOP)?;
    vm.wait_for(r"^rig: done$", STOP)?;
    vm.wait_exit(STOP)?;

    let instance_id = hvconfig::cloud_init::instance_id("guest", definition);
    assert_eq!(
        seen[0],
        "guest: vda sectors=8192 ro=0 reads=rig-disk-seed-ok"
    );
    assert_eq!(seen[1], "guest: vdb ro=1 serial=cidata");
    assert_eq!(seen[2], "guest: vdb label=CIDATA");
    assert_eq!(
        seen[3],
        format!("guest: seed instance-id: \"{instance_id}\"")
    );
    assert_eq!(seen[4], "guest: seed local-hostname: \"guest\"");
    // Files are written in name order: meta-data, network-config, user-data.
    assert_eq!(seen[5], format!("guest: seed rig_network_config: {nonce}"));
    assert_eq!(seen[6], format!("guest: seed rig_user_data: {nonce}"));
    assert_eq!(seen[7], "guest: seed write refused");
    assert_eq!(seen[8], "guest: no vdc");
    assert_eq!(exit, "rig: vmm exit=0");
    Ok(())
}
