//! Runs simulator seeds from the command line: `simulate FIRST COUNT [trace]`.
use std::time::Instant;

use understudy_ft::sim::{run_seed, SimOptions, SimStats};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let first: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let count: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let trace = args.get(3).is_some_and(|a| a == "trace");
    let options = SimOptions {
        trace,
        ..SimOptions::default()
    };
    let started = Instant::now();
    let mut total = SimStats::default();
    let mut failures = 0;
    for seed in first..first + count {
        match run_seed(seed, &options) {
            Ok(report) => {
                if trace {
                    for line in &report.trace {
                        println!("{line}");
                    }
                }
                total.absorb(&report.stats);
            }
            Err(failure) => {
                failures += 1;
                if trace {
                    for line in &failure.trace {
                        println!("{line}");
                    }
                }
                println!("{failure}");
                if failures > 10 {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{total}");
    println!("{failures} failures; {:.1} seeds/s", count as f64 / elapsed);
}
