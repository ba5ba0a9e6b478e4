//! Failover with real parts: `understudy drill` runs primary, backup and arbiter as three
//! `understudy run` processes in a network namespace of their own, the guest's service NIC on
//! a TAP per machine on one bridge, a client at 10.0.2.1, and injects a fault. The report's
//! figures are what the client saw and what the processes and the bridge say afterwards. Besides
//! the request load, one HTTP download is held open, half read, across the fault.
//!
//! Needs root (namespaces, TAP devices, nftables) and the guest artifacts (`guest/build`).
use std::process::Command;
use std::sync::Mutex;

use understudy::pair::drill::{parse_report, Report};

/// Drills load both cores; one at a time keeps their timing honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const BEFORE: u64 = 200;
/// The guest's `/numbers.txt`, downloaded over one HTTP connection held open across the fault.
const PAGE_BYTES: usize = 1_988_895;
const AFTER: u64 = 200;

fn drill(name: &str, guest: &str, fault: &str) -> Report {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let work_dir = std::env::temp_dir().join(format!("understudy-test-drill-{name}"));
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["drill", "--guest", guest, "--fault", fault])
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
fn redis_clients_keep_their_connection_and_every_write_when_the_primary_is_killed() {
    let report = drill("kill-primary", "trixie", "kill-primary");
    assert_eq!(
        report.requests_acknowledged,
        BEFORE + AFTER,
        "{}",
        report.lines()
    );
    assert_eq!(report.writes_lost, 0, "{}", report.lines());
    assert_eq!(report.writes_applied_twice, 0, "{}", report.lines());
    assert_eq!(report.reconnects, 0, "{}", report.lines());
    assert!(report.answer_after_fault_s.is_some(), "{}", report.lines());
    assert_eq!(report.primary_exit, Some(128 + 9), "{}", report.lines());
    assert_eq!(report.backup_role, "solo primary", "{}", report.lines());
    assert_eq!(report.backup_epoch, 2, "{}", report.lines());
    assert_eq!(report.guest_mac_port, "us-backup", "{}", report.lines());
    assert_eq!(
        report.download_bytes,
        Some(PAGE_BYTES),
        "{}",
        report.lines()
    );
    // The old primary, restarted, learns epoch 2 exists and joins the new primary as its
    // backup: the pair is protected again.
    assert_eq!(report.restarted_primary, "rejoined", "{}", report.lines());
}

#[test]
fn the_primary_serves_alone_when_the_backup_is_killed() {
    let report = drill("kill-backup", "minimal", "kill-backup");
    assert_eq!(
        report.requests_acknowledged,
        BEFORE + AFTER,
        "{}",
        report.lines()
    );
    assert_eq!(report.backup_exit, Some(128 + 9), "{}", report.lines());
    assert_eq!(report.primary_role, "solo primary", "{}", report.lines());
    assert_eq!(report.primary_epoch, 2, "{}", report.lines());
    assert_eq!(report.primary_exit, None, "{}", report.lines());
    assert_eq!(report.guest_mac_port, "us-primary", "{}", report.lines());
    assert_eq!(
        report.download_bytes,
        Some(PAGE_BYTES),
        "{}",
        report.lines()
    );
}

#[test]
fn without_the_arbiter_the_pair_serves_on_but_nobody_goes_live_after_the_primary_dies() {
    let report = drill("no-arbiter", "minimal", "kill-arbiter-then-primary");
    // Without the arbiter the pair served on (AFTER more requests), and both said a failover
    // was unavailable.
    assert_eq!(
        report.requests_acknowledged,
        BEFORE + AFTER,
        "{}",
        report.lines()
    );
    assert_eq!(
        report.failover_available,
        ["false", "false"],
        "{}",
        report.lines()
    );
    assert_eq!(report.answer_after_fault_s, None, "{}", report.lines());
    assert_eq!(report.backup_role, "claiming backup", "{}", report.lines());
    assert_eq!(report.backup_epoch, 1, "{}", report.lines());
    assert_eq!(report.backup_exit, None, "{}", report.lines());
    // No port carries the guest's MAC: the primary's TAP is gone and nobody announced it.
    assert_eq!(report.guest_mac_port, "none", "{}", report.lines());
    assert_eq!(report.download_bytes, None, "{}", report.lines());
}

#[test]
fn a_cut_log_link_leaves_exactly_one_primary() {
    let report = drill("cut-link", "minimal", "cut-link");
    assert_eq!(
        report.requests_acknowledged,
        BEFORE + AFTER,
        "{}",
        report.lines()
    );
    let roles = [
        (
            report.primary_role.as_str(),
            report.primary_epoch,
            report.primary_exit,
            "us-primary",
        ),
        (
            report.backup_role.as_str(),
            report.backup_epoch,
            report.backup_exit,
            "us-backup",
        ),
    ];
    let winners: Vec<_> = roles.iter().filter(|r| r.0 == "solo primary").collect();
    let losers: Vec<_> = roles.iter().filter(|r| r.0 == "halted replica").collect();
    assert_eq!((winners.len(), losers.len()), (1, 1), "{}", report.lines());
    assert_eq!(winners[0].1, 2, "{}", report.lines());
    assert_eq!(winners[0].2, None, "{}", report.lines());
    assert_eq!(losers[0].2, Some(3), "{}", report.lines());
    assert_eq!(report.guest_mac_port, winners[0].3, "{}", report.lines());
    assert_eq!(
        report.download_bytes,
        Some(PAGE_BYTES),
        "{}",
        report.lines()
    );
}
