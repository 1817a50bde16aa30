//! The harness against a real QEMU, without any hv build output: SeaBIOS
//! with no disk prints to the serial port and gives up, which is enough to
//! prove spawning, console capture, monitor, exit and kill.

use std::path::Path;
use std::time::Duration;

use hv_tests::{ErrorKind, Qemu};

const BOOT: Duration = Duration::from_secs(60);

#[test]
fn captures_firmware_console_and_quits_through_the_monitor() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("harness_console").memory_mib(128).spawn()?;
    let banner = vm.wait_for(r"^SeaBIOS \(version [^)]+\)$", BOOT)?;
    assert!(banner.starts_with("SeaBIOS (version"), "{banner:?}");
    vm.wait_for_text("No bootable device.", BOOT)?;

    let status = vm.qmp("query-status", None)?;
    assert_eq!(status["status"], "running");
    let version = vm.hmp("info version")?;
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "{version:?}"
    );

    let log = std::fs::read_to_string(vm.log_path()).unwrap();
    assert!(log.contains("serial| No bootable device."), "{log}");
    assert!(vm.quit()?.success());
    assert!(!vm.is_running());
    assert_eq!(vm.shutdown_reason().as_deref(), Some("host-qmp-quit"));
    Ok(())
}

#[test]
fn console_input_reaches_the_firmware() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("harness_input")
        .memory_mib(128)
        .args(["-boot", "menu=on,splash-time=30000"])
        .spawn()?;
    vm.wait_for_prompt(r"Press ESC for boot menu\.", BOOT)?;
    vm.send_console("\u{1b}")?;
    vm.wait_for_text("Select boot device:", BOOT)?;
    Ok(())
}

#[test]
fn timeout_error_shows_the_console_tail() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("harness_timeout").memory_mib(128).spawn()?;
    vm.wait_for_text("No bootable device.", BOOT)?;
    let err = vm
        .wait_for("never printed", Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let report = format!("{err:?}");
    assert!(
        report.contains("no console line matched /never printed/"),
        "{report}"
    );
    assert!(report.contains("\nNo bootable device."), "{report}");
    assert!(report.contains("--- full log: "), "{report}");
    Ok(())
}

#[test]
fn exit_is_noticed_while_waiting() -> Result<(), hv_tests::Error> {
    // SeaBIOS reboots at once after failing to boot; -no-reboot turns that
    // into QEMU exiting.
    let mut vm = Qemu::builder("harness_exit")
        .memory_mib(128)
        .args(["-boot", "reboot-timeout=0"])
        .spawn()?;
    let err = vm.wait_for_text("never printed", BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exited, "{err:?}");
    assert!(
        err.snapshot()
            .unwrap()
            .console_tail
            .iter()
            .any(|l| l.starts_with("No bootable device.")),
        "{err:?}"
    );
    assert!(vm.wait_exit(Duration::from_secs(5))?.success());
    assert_eq!(vm.shutdown_reason().as_deref(), Some("guest-reset"));
    Ok(())
}

#[test]
fn failure_pattern_ends_the_wait_early() -> Result<(), hv_tests::Error> {
    let mut vm = Qemu::builder("harness_fail_on")
        .memory_mib(128)
        .fail_on("Boot failed")
        .spawn()?;
    let err = vm.wait_for_text("No bootable device.", BOOT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConsoleFailure, "{err:?}");
    assert!(
        err.message()
            .contains("Boot failed: could not read the boot disk"),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn drop_kills_qemu() -> Result<(), hv_tests::Error> {
    let vm = Qemu::builder("harness_drop").memory_mib(128).spawn()?;
    let proc_dir = format!("/proc/{}", vm.pid());
    assert!(Path::new(&proc_dir).exists());
    drop(vm);
    assert!(!Path::new(&proc_dir).exists(), "QEMU survived the drop");
    Ok(())
}

#[test]
fn a_panicking_test_still_kills_qemu() {
    let pid = std::sync::Mutex::new(0);
    let outcome = std::panic::catch_unwind(|| {
        let vm = Qemu::builder("harness_panic")
            .memory_mib(128)
            .spawn()
            .unwrap();
        *pid.lock().unwrap() = vm.pid();
        panic!("test failure while QEMU runs");
    });
    assert!(outcome.is_err());
    let pid = *pid.lock().unwrap();
    assert!(
        pid != 0 && !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} survived the panic"
    );
}

#[test]
fn bad_qemu_arguments_fail_with_qemu_s_complaint() {
    let err = Qemu::builder("harness_bad_args")
        .arg("-no-such-option")
        .spawn()
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Spawn, "{err:?}");
    let stderr = &err.snapshot().unwrap().qemu_stderr;
    assert!(
        stderr.iter().any(|l| l.contains("-no-such-option")),
        "{err:?}"
    );
}
