//! Re-protection with real parts: `understudy drill --fault rejoin` kills whichever replica
//! is primary ten times in a row under redis load, and starts it again each time; it must
//! join the survivor (from its own stale disk, from an empty disk and state directory, and
//! once after being killed in the middle of its join) and the pair must be protected again,
//! with state digests compared, before the next kill. Redis keeps an append-only file on each
//! replica's own ext4 disk, so the guest writes its disk while the joins run.
//!
//! Needs root (namespaces, TAP devices), `mkfs.ext4` and the guest artifacts (`guest/build`).
use std::process::Command;

use understudy::pair::drill::parse_report;

const CYCLES: usize = 10;
const BEFORE: u64 = 200;
/// Requests answered by the survivor after each kill, before the dead one starts again.
const AFTER_EACH_KILL: u64 = 100;

#[test]
fn ten_failovers_and_rejoins_under_redis_load_lose_no_acknowledged_write() {
    let work_dir = std::env::temp_dir().join("understudy-test-drill-rejoin");
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["drill", "--guest", "trixie", "--fault", "rejoin"])
        .args(["--cycles", &CYCLES.to_string()])
        .args(["--requests-before", &BEFORE.to_string()])
        .args(["--requests-after", &AFTER_EACH_KILL.to_string()])
        .args(["--namespace", "us-test-rejoin"])
        .arg("--work-dir")
        .arg(&work_dir)
        .output()
        .expect("understudy drill runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the rejoin drill failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report = parse_report(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
    let lines = report.lines();
    assert_eq!(report.rejoins.len(), CYCLES, "{lines}");
    let kinds: Vec<&str> = report.rejoins.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["stale", "cut", "empty", "stale", "cut", "empty", "stale", "cut", "empty", "stale"],
        "{lines}"
    );
    for (index, rejoin) in report.rejoins.iter().enumerate() {
        // Joined with its digest checked, and the primary's periodic digests matched since.
        assert!(rejoin.digests_matched >= 1, "rejoin {}: {lines}", index + 1);
        // RAM (256 MiB, zero pages cost a byte) and the differing disk ranges travelled.
        assert!(rejoin.state_bytes > 0, "rejoin {}: {lines}", index + 1);
        if rejoin.kind == "empty" {
            // A zeroed disk differs wherever the file system wrote anything.
            assert!(rejoin.disk_ranges > 0, "rejoin {}: {lines}", index + 1);
        }
    }
    // Every request before, between and after the kills was answered on one connection (the
    // load also runs while each joiner joins, so there are more), and every acknowledged INCR
    // and SET was read back at the end.
    assert!(
        report.requests_acknowledged >= BEFORE + AFTER_EACH_KILL * CYCLES as u64,
        "{lines}"
    );
    assert_eq!(report.writes_lost, 0, "{lines}");
    assert_eq!(report.writes_applied_twice, 0, "{lines}");
    assert_eq!(report.reconnects, 0, "{lines}");
    // Ten failovers: epoch 1 plus one per kill.
    assert_eq!(report.primary_epoch, 1 + CYCLES as u64, "{lines}");
    assert_eq!(report.backup_epoch, 1 + CYCLES as u64, "{lines}");
    let roles = [report.primary_role.as_str(), report.backup_role.as_str()];
    assert!(
        roles == ["primary", "backup"] || roles == ["backup", "primary"],
        "{lines}"
    );
}
