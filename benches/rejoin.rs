//! Re-protection, measured: a replica with a 1 GiB disk of its own rejoins the survivor of a
//! failover under redis load, once with a disk equal to the survivor's and once with a disk
//! that differs in 5% of its ranges. Prints the time to protected, the bytes that travelled,
//! the guest's pause at the handover and the client's throughput before and during the join.
//!
//! `cargo bench --bench rejoin` (root, network namespaces; about 5 minutes). The reference
//! points: copying the whole disk would move 1 GiB; QEMU's live migration allows 300 ms of
//! downtime by default (`downtime-limit`), and the goal here is under 50 ms.
use std::process::Command;

use understudy::pair::drill::{parse_report, Report};

const DISK_MIB: u64 = 1024;

fn drill(name: &str, extra: &[&str]) -> Report {
    let work_dir = std::env::temp_dir().join(format!("understudy-bench-rejoin-{name}"));
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "drill", "--guest", "trixie", "--fault", "rejoin", "--cycles", "1",
        ])
        .args(["--disk-mib", &DISK_MIB.to_string()])
        .args(["--requests-before", "300", "--requests-after", "100"])
        .args(["--namespace", &format!("us-bench-rejoin-{name}")])
        .arg("--work-dir")
        .arg(&work_dir)
        .args(extra)
        .output()
        .expect("understudy drill runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the {name} drill failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_report(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"))
}

fn main() {
    // Without redis's file the guest writes its disk only when ext4 is mounted, so the
    // killed replica's disk is the survivor's but for that.
    let same = drill("same", &["--no-redis-aof"]);
    let changed = drill("changed", &["--disk-change-percent", "5"]);
    println!(
        "rejoin of a replica with a {DISK_MIB} MiB disk of its own, trixie guest (256 MiB RAM), redis load"
    );
    println!(
        "{:<26} {:>9} {:>12} {:>12} {:>10} {:>14} {:>14}",
        "disk", "rejoin s", "state MiB", "ranges sent", "pause ms", "req/s before", "req/s joining"
    );
    for (label, report) in [
        ("equal (ext4 mount only)", &same),
        ("5% of ranges differ", &changed),
    ] {
        let rejoin = &report.rejoins[0];
        println!(
            "{label:<26} {:>9.2} {:>12.1} {:>12} {:>10.3} {:>14.1} {:>14.1}",
            rejoin.seconds,
            rejoin.state_bytes as f64 / (1 << 20) as f64,
            rejoin.disk_ranges,
            rejoin.pause_ms,
            report.requests_per_s_before,
            rejoin.requests_per_s,
        );
    }
    let ranges_total = DISK_MIB * 1024 / 16;
    let changed_ranges = changed.rejoins[0].disk_ranges;
    println!(
        "disk ranges copied with 5% changed: {changed_ranges} of {ranges_total} ({:.1}%); a full copy moves {DISK_MIB} MiB",
        changed_ranges as f64 * 100.0 / ranges_total as f64
    );
    for (label, report) in [("equal", &same), ("5%", &changed)] {
        let pause = report.rejoins[0].pause_ms;
        println!(
            "pause at the handover ({label}): {pause:.3} ms; goal 50 ms: {}; QEMU's default downtime limit 300 ms: ratio {:.3}",
            if pause < 50.0 { "met" } else { "MISSED" },
            pause / 300.0
        );
    }
}
