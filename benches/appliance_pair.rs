//! The appliance pair measured, beside the hosted pair as the reference, in one run: rounds of
//! `understudy drill --fault kill-primary` on each platform with the same guest (minimal), the
//! same load (the counter: one connection, every answer checked) and the same peer timeout
//! (1 s, the protocol's default). Per round and as medians: the time from the primary's death
//! to the client's next answer (failover), from starting the three to the primary saying its
//! backup confirmed the pair (protected), the log channel's average bandwidth before the fault
//! and the backup's lag when the fault came.
//!
//! The appliance runs as QEMU machines under TCG: its guest runs under two layers of
//! emulation, so its figures are those of a slow machine, not of the appliance on hardware.
//! Needs root (the drills make network namespaces). Run with `cargo bench --bench
//! appliance_pair [-- ROUNDS]` (default 3 rounds).
use std::process::Command;

use anyhow::{ensure, Context, Result};
use understudy::pair::drill::{parse_report, Report};

const ROUNDS_DEFAULT: usize = 3;
const PEER_TIMEOUT_MS: &str = "1000";
const REQUESTS: &str = "100";

fn drill(platform: &str, round: usize) -> Result<Report> {
    let work_dir = std::env::temp_dir().join(format!("understudy-bench-pair-{platform}"));
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["drill", "--platform", platform, "--guest", "minimal"])
        .args(["--load", "counter", "--fault", "kill-primary"])
        .args(["--peer-timeout-ms", PEER_TIMEOUT_MS])
        .args(["--requests-before", REQUESTS, "--requests-after", REQUESTS])
        .args(["--namespace", &format!("us-bench-{platform}")])
        .arg("--work-dir")
        .arg(&work_dir)
        .output()
        .context("cannot run understudy drill")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{platform} round {round} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = parse_report(&stdout)?;
    ensure!(
        report.writes_lost == 0 && report.writes_applied_twice == 0 && report.reconnects == 0,
        "{platform} round {round} lost requests:\n{stdout}"
    );
    Ok(report)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    let platforms = ["appliance", "hosted"];
    let mut reports: Vec<Vec<Report>> = vec![Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (index, platform) in platforms.iter().enumerate() {
            let report = drill(platform, round)?;
            println!(
                "round {round} {platform:9}: failover {:.2} s, protected after {:.1} s, log {:.3} Mbit/s, backup lag {} instructions",
                report.answer_after_fault_s.unwrap_or(f64::NAN),
                report.protected_after_s.unwrap_or(f64::NAN),
                report.log_mbit_s,
                report.backup_lag_instructions
            );
            reports[index].push(report);
        }
    }
    println!();
    println!(
        "medians of {rounds} rounds (kill-primary, minimal guest, counter load, peer timeout {PEER_TIMEOUT_MS} ms)"
    );
    println!(
        "{:42} {:>12} {:>12} {:>8}",
        "", "appliance", "hosted", "ratio"
    );
    let row = |name: &str, value: &dyn Fn(&Report) -> f64| {
        let appliance = median(reports[0].iter().map(value).collect());
        let hosted = median(reports[1].iter().map(value).collect());
        println!(
            "{name:42} {appliance:>12.3} {hosted:>12.3} {:>8.2}",
            appliance / hosted
        );
    };
    row("failover: death to next answer, s", &|r| {
        r.answer_after_fault_s.unwrap_or(f64::NAN)
    });
    row("power-on to protected, s", &|r| {
        r.protected_after_s.unwrap_or(f64::NAN)
    });
    row("log channel before the fault, Mbit/s", &|r| r.log_mbit_s);
    row("backup lag at the fault, instructions", &|r| {
        r.backup_lag_instructions as f64
    });
    Ok(())
}
