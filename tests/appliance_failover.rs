//! Failover of the appliance itself: `understudy drill --platform appliance` builds one image
//! (`tools/build-image`), copies it three times and flips the copies' roles (`mkimage
//! set-role`), and boots primary, backup and arbiter as three QEMU machines (TCG, OVMF) in a
//! network namespace of their own: service NICs on the client's
//! bridge, replication NICs on a bridge of their own. The minimal Linux guest serves its
//! counter (one TCP connection for the whole drill, every answer checked against the client's
//! count) and an HTTP download held open, half read, across the fault.
//!
//! Needs root (namespaces, TAP devices), QEMU and GRUB (`tools/install-prerequisites`) and the
//! minimal guest (`guest/build`); the drill builds the appliance kernel in `bootloader/`.
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use understudy::pair::drill::{parse_report, Report};

/// Three QEMU machines load both cores; one drill at a time keeps their timing honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const BEFORE: u64 = 100;
const AFTER: u64 = 100;
/// The guest's `/numbers.txt` with the appliance drill's 20000 numbers.
const PAGE_BYTES: usize = 108_894;

/// How long a rebooted arbiter may take to say what its disk holds.
const ARBITER_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Boots the drill's arbiter image again on its disk (a NIC on QEMU's user network, which it
/// needs to start) and returns its line saying which epoch its record grants.
fn arbiter_reboot_line(work_dir: &Path) -> String {
    let log = work_dir.join("arbiter-reboot.log");
    let _ = std::fs::remove_file(&log);
    let variables = work_dir.join("arbiter-reboot-vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &variables).expect("ovmf is installed");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel", "tcg", "-M", "pc", "-m", "256M", "-display", "none",
        ])
        .args(["-vga", "none", "-no-reboot", "-nodefaults"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args([
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", variables.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio",
            work_dir.join("arbiter.img").display()
        ))
        .args([
            "-netdev",
            "user,id=replication",
            "-device",
            "virtio-net-pci,netdev=replication",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=disk",
            work_dir.join("arbiter.disk").display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let deadline = Instant::now() + ARBITER_BOOT_TIMEOUT;
    let line = loop {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&log) {
            let _ = file.read_to_string(&mut text);
        }
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("understudy: arbiter on") || l.contains("epitaph"))
        {
            break line.trim_end().to_owned();
        }
        if Instant::now() > deadline {
            break format!(
                "no arbiter line within {} s:\n{text}",
                ARBITER_BOOT_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    line
}

fn drill(name: &str, fault: &str, disk: &str) -> Report {
    drill_with(name, fault, disk, "builtin")
}

fn drill_with(name: &str, fault: &str, disk: &str, arbiter: &str) -> Report {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let work_dir = std::env::temp_dir().join(format!("understudy-test-appliance-{name}"));
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["drill", "--platform", "appliance", "--guest", "minimal"])
        .args(["--fault", fault, "--disk", disk, "--arbiter", arbiter])
        .args(["--requests-before", &BEFORE.to_string()])
        .args(["--requests-after", &AFTER.to_string()])
        .args(["--namespace", &format!("us-test-{name}")])
        .arg("--work-dir")
        .arg(&work_dir)
        .output()
        .expect("understudy drill runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "drill {name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    parse_report(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"))
}

#[test]
fn appliance_pair_serves_on_without_its_arbiter_and_fails_over_once_it_is_back() {
    let report = drill(
        "arbiter-then-primary",
        "kill-arbiter-restart-then-primary",
        "separate",
    );
    let lines = report.lines();
    // Served before the fault, while the arbiter was gone, and after the primary died: every
    // request on the one counter connection, none lost or applied twice.
    assert_eq!(report.requests_acknowledged, BEFORE + 2 * AFTER, "{lines}");
    assert_eq!(report.writes_lost, 0, "{lines}");
    assert_eq!(report.writes_applied_twice, 0, "{lines}");
    assert_eq!(report.reconnects, 0, "{lines}");
    // Before the fault, the primary's status over the network: metrics that promtool accepts
    // and JSON saying it is the primary of epoch 1 with failover available.
    assert_eq!(
        report.status_check, "ok role=primary epoch=1 failover_available=true",
        "{lines}"
    );
    // Without the arbiter both said a failover was unavailable.
    assert_eq!(report.failover_available, ["false", "false"], "{lines}");
    assert!(report.answer_after_fault_s.is_some(), "{lines}");
    assert_eq!(report.primary_exit, Some(128 + 9), "{lines}");
    assert_eq!(report.backup_role, "solo primary", "{lines}");
    // The restarted arbiter granted epoch 2.
    assert_eq!(report.backup_epoch, 2, "{lines}");
    assert_eq!(report.backup_exit, None, "{lines}");
    assert_eq!(report.guest_mac_port, "us-backup", "{lines}");
    assert_eq!(report.download_bytes, Some(PAGE_BYTES), "{lines}");
    // The old primary, booted again, learns from the arbiter that epoch 2 is live elsewhere
    // and joins it: its disk brought level, its machine loaded while the guest ran on, the
    // pair protected again.
    assert_eq!(report.restarted_primary, "rejoined", "{lines}");
}

#[test]
fn appliance_primary_serves_alone_on_a_shared_disk_when_the_backup_dies() {
    let report = drill("kill-backup-shared", "kill-backup", "shared");
    let lines = report.lines();
    assert_eq!(report.requests_acknowledged, BEFORE + AFTER, "{lines}");
    assert_eq!(report.writes_lost, 0, "{lines}");
    assert_eq!(report.writes_applied_twice, 0, "{lines}");
    assert_eq!(report.reconnects, 0, "{lines}");
    assert_eq!(report.backup_exit, Some(128 + 9), "{lines}");
    assert_eq!(report.primary_role, "solo primary", "{lines}");
    assert_eq!(report.primary_epoch, 2, "{lines}");
    assert_eq!(report.primary_exit, None, "{lines}");
    assert_eq!(report.guest_mac_port, "us-primary", "{lines}");
    assert_eq!(report.download_bytes, Some(PAGE_BYTES), "{lines}");
    // The arbiter's decision is on its disk: booted again, it reads it back.
    let work_dir = std::env::temp_dir().join("understudy-test-appliance-kill-backup-shared");
    assert_eq!(
        arbiter_reboot_line(&work_dir),
        "understudy: arbiter on 10.0.0.3:7100, epoch 2 granted to replica 1"
    );
}

#[test]
fn appliance_pair_on_a_shared_disk_fails_over_through_etcd() {
    // No arbiter machine: the replicas ask an etcd member for the next epoch themselves.
    let report = drill_with("etcd-shared", "kill-primary", "shared", "etcd");
    let lines = report.lines();
    assert_eq!(report.requests_acknowledged, BEFORE + AFTER, "{lines}");
    assert_eq!(report.writes_lost, 0, "{lines}");
    assert_eq!(report.writes_applied_twice, 0, "{lines}");
    assert_eq!(report.reconnects, 0, "{lines}");
    assert_eq!(
        report.status_check, "ok role=primary epoch=1 failover_available=true",
        "{lines}"
    );
    assert_eq!(report.primary_exit, Some(128 + 9), "{lines}");
    assert_eq!(report.backup_role, "solo primary", "{lines}");
    assert_eq!(report.backup_epoch, 2, "{lines}");
    assert_eq!(report.guest_mac_port, "us-backup", "{lines}");
    assert_eq!(report.download_bytes, Some(PAGE_BYTES), "{lines}");
    // The old primary, booted again, learns from etcd that epoch 2 is live elsewhere and
    // joins it over the shared disk.
    assert_eq!(report.restarted_primary, "rejoined", "{lines}");
}
