//! The serial console under load, end to end (nested KVM rig, see
//! `hv_tests::rig`): a Linux guest writes 192 KiB of numbered lines to its
//! console as fast as it can (more than the vmm's console buffer and a
//! pipe hold together), and every line reaches the vmm's stdout, whole and
//! in order, when a reader keeps up; and the guest trusts its clocks: its
//! kernel log has no `APIC timer disabled`, no unstable TSC and no
//! clocksource fallback. With a slow reader the vmm must hold the guest
//! back, not drop bytes or wedge. Both are ignored here, because the rig
//! itself fails under the flood (see them); both cases run against tiny
//! guests in `vmm/tests/console.rs`, with the full 1 MiB flood, which takes
//! seconds there rather than the quarter hour it takes under TCG.
//!
//! Needs the kernels (`scripts/kernel host|guest`, cached) and the static
//! vmm from `./scripts/build`.

use std::time::Duration;

use hv_tests::rig::Rig;

/// The host kernel booting under TCG, up to its init script.
const L1_UP: Duration = Duration::from_secs(300);
/// One guest: boot, the flood through the emulated UART (a VM exit per byte,
/// nested), checks, power-off; the slow reader takes longer still.
const RUN: Duration = Duration::from_secs(1500);
const STOP: Duration = Duration::from_secs(120);

/// Lines of 64 bytes: 192 KiB.
const LINES: u32 = 3072;
const PAD: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";

/// What the guest's kernel log must not say: the LAPIC timer failing its
/// check against the PIT, the TSC found unstable, or the clocksource
/// falling back to something slower than kvm-clock or the TSC.
const CLOCK_COMPLAINTS: &str = "APIC timer disabled|verification failure|TSC unstable|\
Marking TSC unstable|unstable because the skew|Switched to clocksource (refined-jiffies|jiffies|acpi_pm|hpet)";

fn guest_rc() -> String {
    format!(
        r#"
echo "guest: flood start at $(cut -d' ' -f1 /proc/uptime)"
awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf "flood %06d {PAD}\n", i }}'
echo "guest: flood done at $(cut -d' ' -f1 /proc/uptime)"
echo "guest: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
dmesg | grep -i -E 'tsc|clocksource|apic timer|kvm-clock|calibrat' | sed 's/^/guest: dmesg: /'
echo "guest: clock complaints $(dmesg | grep -c -E '{CLOCK_COMPLAINTS}')"
echo "guest: powering off"
poweroff -f
"#
    )
}

const DEFINITION: &str = r#"
[machine]
vcpus = 2
memory_mib = 256

[boot]
kernel = "bzImage"
initrd = "initrd.img"
cmdline = "console=ttyS0 quiet panic=-1"
"#;

/// The L1 script: the guest, its console read by `cat` into a file
/// (`fast`) or by a reader that takes 4 KiB every 20 ms or so, plus the
/// cost of three processes per read under TCG (`slow`); the run is
/// summarised on the L1 console as `rig: NAME ...` lines.
fn script(reader: &str) -> String {
    format!(
        r#"
slow() {{
    : >"$1"
    while :; do
        n=$(dd bs=4096 count=1 2>/dev/null | tee -a "$1" | wc -c)
        [ "$n" -gt 0 ] || break
        sleep 0.02
    done
}}
fast() {{ cat >"$1"; }}
run() {{
    echo "rig: $1 start at $(cut -d' ' -f1 /proc/uptime)"
    : >/tmp/$1.raw
    (while sleep 30; do echo "rig: $1 progress $(wc -c </tmp/$1.raw) bytes at $(cut -d' ' -f1 /proc/uptime)"; done) &
    progress=$!
    (timeout -s KILL 1400 /bin/vmm --guest /guest/guest.toml --uid 1000 --gid 1000 \
        </dev/null 2>/tmp/$1.err; echo "exit=$?" >/tmp/$1.exit) | $1 /tmp/$1.raw
    kill $progress
    echo "rig: $1 vmm $(cat /tmp/$1.exit) at $(cut -d' ' -f1 /proc/uptime)"
    tr -d '\r' </tmp/$1.raw >/tmp/$1.out
    awk -v name=$1 -v lines={LINES} -v pad={PAD} '
        /^flood / {{
            n++
            if ($0 != sprintf("flood %06d %s", n, pad)) {{ bad++; if (!first) first = $0 }}
        }}
        END {{ printf "rig: %s flood lines=%d of %d, wrong=%d first_wrong=[%s]\n", name, n, lines, bad + 0, first }}
    ' /tmp/$1.out
    echo "rig: $1 bytes=$(wc -c </tmp/$1.raw)"
    grep -a '^guest: ' /tmp/$1.out | sed "s/^/rig: $1 /"
    grep -a -i -E 'serial|error|warn|fault|crash' /tmp/$1.err | sed "s/^/rig: $1 vmm-log: /"
    # What else the guest said (a kernel oops, for one), and how it ended.
    grep -a -v -E '^(flood |guest: )' /tmp/$1.out | tail -n 40 | sed "s/^/rig: $1 console: /"
    tail -c 200 /tmp/$1.out | tr -c '[:print:]' '.' | sed "s/^/rig: $1 last bytes: /"; echo
}}
run {reader}
"#
    )
}

/// Ignored, with its reason: the nested rig itself is not reliable under
/// this flood. Over 14 runs of the two tests (2026-12-02) no stall was seen
/// and every run that finished got all 3072 lines in order; but 2 ended
/// with the L1 (our host kernel under QEMU/TCG) resetting silently and 2
/// with the nested guest triple-faulting (vmm exit 4) a few hundred lines
/// in. The same silent L1 reset ends `scripts/bench` runs whose nested VMM
/// is QEMU microvm, in the first second of its guest's boot, so it is the
/// emulation's, not this vmm's. The guarantees (every byte, in order, the
/// stop still works with a reader that does not keep up) are tested
/// against tiny guests in `vmm/tests/console.rs`.
#[test]
#[ignore = "the nested rig (QEMU/TCG's emulated SVM) resets or triple-faults about 1 run in 4 under a console flood, with QEMU microvm as the nested VMM too"]
fn console_flood_arrives_whole_and_in_order_and_the_guest_trusts_its_clocks(
) -> Result<(), hv_tests::Error> {
    flood("fast")
}

/// The same flood read slowly; ignored for the same reason.
#[test]
#[ignore = "the nested rig (QEMU/TCG's emulated SVM) resets or triple-faults about 1 run in 4 under a console flood, with QEMU microvm as the nested VMM too"]
fn console_flood_with_a_slow_reader() -> Result<(), hv_tests::Error> {
    flood("slow")
}

fn flood(reader: &str) -> Result<(), hv_tests::Error> {
    let mut vm = Rig::new(&script(reader))?
        .guest(&guest_rc(), DEFINITION)?
        .boot(&format!("vmm_console_flood_{reader}"))?;
    vm.wait_for(r"^rig: L1 up at .* kvm yes$", L1_UP)?;
    let mut failures = Vec::new();
    {
        vm.wait_for(&format!(r"^rig: {reader} start at "), RUN)?;
        let exit = vm.wait_for(&format!(r"^rig: {reader} vmm exit=\d+ "), RUN)?;
        let flood = vm.wait_for(&format!(r"^rig: {reader} flood lines="), STOP)?;
        let start = vm.wait_for(&format!(r"^rig: {reader} guest: flood start at "), STOP)?;
        let done = vm.wait_for(&format!(r"^rig: {reader} guest: flood done at "), STOP)?;
        let clock = vm.wait_for(&format!(r"^rig: {reader} guest: clocksource "), STOP)?;
        let complaints = vm.wait_for(&format!(r"^rig: {reader} guest: clock complaints "), STOP)?;
        vm.wait_for(&format!(r"^rig: {reader} guest: powering off$"), STOP)?;
        eprintln!("{reader}: {exit} | {flood} | {start} | {done} | {clock} | {complaints}");
        if !exit.contains("exit=0 ") {
            failures.push(exit);
        }
        if flood != format!("rig: {reader} flood lines={LINES} of {LINES}, wrong=0 first_wrong=[]")
        {
            failures.push(flood);
        }
        if !(clock.ends_with(" kvm-clock") || clock.ends_with(" tsc")) {
            failures.push(clock);
        }
        if !complaints.ends_with(" complaints 0") {
            failures.push(complaints);
        }
    }
    vm.wait_for(r"^rig: done$", STOP)?;
    vm.wait_exit(STOP)?;
    let console = vm.console_text();
    for line in console.lines().filter(|l| l.contains("guest: dmesg: ")) {
        eprintln!("{line}");
    }
    assert!(
        failures.is_empty(),
        "{failures:#?} (see {})",
        vm.log_path().display()
    );
    Ok(())
}
