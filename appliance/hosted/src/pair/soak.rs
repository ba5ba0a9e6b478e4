//! The failover soak: drill after drill with faults drawn from a seed, each checked against
//! the pair's promises. Any failure names its round and seed, so it can be run again alone.
use anyhow::{ensure, Result};

use super::drill::{self, DrillOptions, Fault, Report};

const FAULTS: [Fault; 4] = [
    Fault::KillPrimary,
    Fault::KillBackup,
    Fault::KillArbiterThenPrimary,
    Fault::CutLink,
];

/// xorshift64* (Vigna 2016): enough to pick faults reproducibly from a seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The fault of each round for `seed`.
pub fn faults(seed: u64, rounds: u64) -> Vec<Fault> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..rounds)
        .map(|_| FAULTS[(next(&mut state) % FAULTS.len() as u64) as usize])
        .collect()
}

/// What every drill must show, whatever the fault.
pub fn check(fault: Fault, options: &DrillOptions, report: &Report) -> Result<()> {
    let lines = report.lines();
    ensure!(
        report.writes_lost == 0,
        "acknowledged writes lost:\n{lines}"
    );
    ensure!(
        report.writes_applied_twice == 0,
        "writes applied twice:\n{lines}"
    );
    ensure!(
        report.reconnects == 0,
        "the client had to reconnect:\n{lines}"
    );
    match fault {
        Fault::KillArbiterThenPrimary => {
            ensure!(
                report.answer_after_fault_s.is_none(),
                "a replica went live without the arbiter:\n{lines}"
            );
            ensure!(
                report.requests_acknowledged == options.requests_before + options.requests_after,
                "the pair stopped serving when only the arbiter was gone:\n{lines}"
            );
            ensure!(
                report.failover_available == ["false", "false"],
                "a replica said a failover was available without the arbiter:\n{lines}"
            );
        }
        _ => {
            ensure!(
                report.requests_acknowledged == options.requests_before + options.requests_after,
                "the service did not go on:\n{lines}"
            );
            // Never two primaries: exactly one live replica that is still running.
            let running_live = [
                (&report.primary_role, report.primary_exit),
                (&report.backup_role, report.backup_exit),
            ]
            .iter()
            .filter(|(role, exit)| role.as_str() == "solo primary" && exit.is_none())
            .count();
            ensure!(running_live == 1, "{running_live} live primaries:\n{lines}");
        }
    }
    Ok(())
}

/// Runs `rounds` drills; stops at the first broken promise.
pub fn run(
    seed: u64,
    rounds: u64,
    base: &DrillOptions,
    args_inside: &dyn Fn(Fault) -> Vec<String>,
) -> Result<()> {
    eprintln!("soak: seed {seed}, {rounds} rounds");
    for (round, fault) in faults(seed, rounds).into_iter().enumerate() {
        let options = DrillOptions {
            fault,
            ..base.clone()
        };
        let report = drill::run(&options, &args_inside(fault))?;
        check(fault, &options, &report).map_err(|error| {
            error.context(format!("soak seed {seed}, round {round} ({fault:?})"))
        })?;
        eprintln!(
            "soak: round {round} {fault:?}: ok (first answer after the fault: {})",
            report
                .answer_after_fault_s
                .map_or("none".to_owned(), |s| format!("{s:.2} s"))
        );
    }
    eprintln!("soak: seed {seed}: {rounds} rounds kept every promise");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults_and_others_differ() {
        assert_eq!(faults(7, 16), faults(7, 16));
        assert_ne!(faults(7, 16), faults(8, 16));
        let all = faults(1, 64);
        for fault in FAULTS {
            assert!(all.contains(&fault), "{fault:?} never drawn in 64 rounds");
        }
    }
}
