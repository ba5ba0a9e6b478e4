//! Runs the simulator without the full CLI: `simulate --seeds N [--first F] [--soak]` or
//! `simulate --seed S`, printing seeds per second.
use std::process::ExitCode;
use std::time::Instant;

use understudy_ft::sim::{simulate, SimCommand};

struct Stdout;

impl core::fmt::Write for Stdout {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        print!("{text}");
        Ok(())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|index| args.get(index + 1))
            .and_then(|text| text.parse::<u64>().ok())
    };
    let soak = args.iter().any(|arg| arg == "--soak");
    let command = match (value("--seed"), value("--seeds")) {
        (Some(seed), _) => SimCommand::Seed(seed),
        (None, Some(count)) => SimCommand::Seeds {
            first: value("--first").unwrap_or(0),
            count,
        },
        (None, None) => {
            eprintln!("usage: simulate --seeds N [--first F] [--soak] | --seed S");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = simulate(command, soak, &mut Stdout);
    if let (Ok(stats), SimCommand::Seeds { .. }) = (&result, command) {
        println!(
            "{:.0} seeds/s",
            stats.seeds as f64 / started.elapsed().as_secs_f64()
        );
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
