//! The deterministic simulation over 10,000 seeds (four ranges so the test harness runs them
//! on every core), and a longer soak run kept out of the default test run.
use std::time::Instant;

use understudy_ft::sim::{run_seed, run_seeds, SimOptions, SimStats};

/// Seeds per test; four tests make the 10,000 the test command runs.
const SEEDS_PER_RANGE: u64 = 2_500;

fn run_range(first: u64, count: u64, options: &SimOptions) -> SimStats {
    let started = Instant::now();
    match run_seeds(first, count, options) {
        Ok(stats) => {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "seeds {first}..{}: {stats}; {:.0} seeds/s",
                first + count,
                count as f64 / seconds
            );
            stats
        }
        Err(failure) => {
            // Run it again with the trace on, so the log shows how it got there.
            let traced = SimOptions {
                trace: true,
                ..options.clone()
            };
            if let Err(again) = run_seed(failure.seed, &traced) {
                let start = again.trace.len().saturating_sub(300);
                for line in &again.trace[start..] {
                    eprintln!("{line}");
                }
            }
            panic!("{failure}");
        }
    }
}

fn check_range(first: u64) {
    let options = SimOptions::default();
    let stats = run_range(first, SEEDS_PER_RANGE, &options);
    assert_eq!(stats.seeds, SEEDS_PER_RANGE);
    // The faults really happened and the protocol really went through failovers.
    assert!(stats.failovers > SEEDS_PER_RANGE / 2, "{stats}");
    assert!(stats.crashes > SEEDS_PER_RANGE, "{stats}");
    assert!(stats.partitions > SEEDS_PER_RANGE, "{stats}");
    assert!(
        stats.frames_rejected > 0 && stats.frames_dropped > 0,
        "{stats}"
    );
    assert!(
        stats.recovery_max_us <= options.liveness_bound_us,
        "{stats}"
    );
}

#[test]
fn simulation_seeds_0_to_2499_keep_every_property() {
    check_range(0);
}

#[test]
fn simulation_seeds_2500_to_4999_keep_every_property() {
    check_range(2_500);
}

#[test]
fn simulation_seeds_5000_to_7499_keep_every_property() {
    check_range(5_000);
}

#[test]
fn simulation_seeds_7500_to_9999_keep_every_property() {
    check_range(7_500);
}

#[test]
fn simulation_trace_is_identical_when_a_seed_is_replayed() {
    let options = SimOptions {
        trace: true,
        ..SimOptions::default()
    };
    let first = run_seed(12_345, &options).unwrap();
    let second = run_seed(12_345, &options).unwrap();
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.stats, second.stats);
    assert!(first.trace.len() > 10);
}

/// `cargo test -p understudy-ft --release -- --ignored soak`: a minute of faults per seed.
#[test]
#[ignore = "soak: long-running"]
fn soak_simulation_with_long_fault_phases() {
    let count = std::env::var("FT_SOAK_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200);
    run_range(1_000_000, count, &SimOptions::soak());
}
