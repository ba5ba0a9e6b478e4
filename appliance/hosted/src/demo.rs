//! `understudy demo`: record a run of the built-in guest, replay it, and compare digests.

use std::time::Instant;

use anyhow::{ensure, Result};
use understudy_machine::program::echo_guest;
use understudy_machine::{Exit, Input, Machine, MachineConfig};

const TYPED: &[u8] = b"understudy";
const CHECKPOINT_INSTRUCTIONS: u64 = 100_000;
const KEYSTROKE_GAP_INSTRUCTIONS: u64 = 61_417;

/// A recorded input: what entered the machine and at which instruction count.
#[derive(Clone)]
struct Entry {
    at: u64,
    input: Input,
}

struct Outcome {
    digests: Vec<(u64, [u8; 32])>,
    console: Vec<u8>,
    instructions: u64,
}

fn execute(log: &[Entry], slice: u64) -> Result<Outcome> {
    let config = MachineConfig {
        memory_bytes: 16 << 20,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, &echo_guest(TYPED.len() as i32), None)?;
    let mut digests = Vec::new();
    let mut console = Vec::new();
    let mut next = 0;
    let mut checkpoint = CHECKPOINT_INSTRUCTIONS;
    loop {
        let now = machine.instret().0;
        while next < log.len() && log[next].at == now {
            machine
                .inject(&log[next].input)
                .map_err(|e| anyhow::anyhow!("inject: {e:?}"))?;
            next += 1;
        }
        if now == checkpoint {
            digests.push((now, machine.digest()));
            checkpoint += CHECKPOINT_INSTRUCTIONS;
        }
        let mut stop = checkpoint.min(now + slice);
        if let Some(entry) = log.get(next) {
            stop = stop.min(entry.at);
        }
        let (_, exit) = machine.run(stop - now);
        console.extend(machine.take_console_output());
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull => {}
            Exit::PowerOff { .. } => break,
            other => anyhow::bail!("built-in guest stopped unexpectedly: {other:?}"),
        }
    }
    digests.push((machine.instret().0, machine.digest()));
    Ok(Outcome {
        digests,
        console,
        instructions: machine.instret().0,
    })
}

fn short(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run() -> Result<()> {
    let log: Vec<Entry> = TYPED
        .iter()
        .enumerate()
        .flat_map(|(i, &byte)| {
            let at = KEYSTROKE_GAP_INSTRUCTIONS * (i as u64 + 1);
            [
                Entry {
                    at,
                    input: Input::ConsoleByte(byte),
                },
                Entry {
                    at: at + 5_000,
                    input: Input::AdvanceTime {
                        ticks: 1_000 + i as u64,
                    },
                },
            ]
        })
        .collect();
    println!("understudy demo: a deterministic RV64GC machine");
    println!("  guest: built-in echo program (M-mode, polls the UART, hashes bytes and the clock)");
    println!(
        "  inputs: {} console bytes and {} clock advances at chosen instruction counts",
        TYPED.len(),
        TYPED.len()
    );

    let started = Instant::now();
    let record = execute(&log, 2_000_000)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "\nrecorded run: guest echoed {:?}",
        String::from_utf8_lossy(&record.console)
    );
    println!("  {} instructions in {:.3} s", record.instructions, seconds);

    let replay = execute(&log, 997)?;
    let agree = record.digests == replay.digests;
    println!("\nreplay with run slices of 997 instructions instead of 2,000,000:");
    for ((at, a), (_, b)) in record.digests.iter().zip(&replay.digests) {
        println!(
            "  digest {at:>9} {} {} {}",
            short(a),
            short(b),
            if a == b { "same" } else { "DIFFERENT" }
        );
    }
    ensure!(agree, "replay diverged from the recorded run");

    let mut changed = log.clone();
    let flipped_at = changed[4].at;
    if let Input::ConsoleByte(byte) = &mut changed[4].input {
        *byte ^= 1;
    }
    let diverged = execute(&changed, 2_000_000)?;
    let first = record
        .digests
        .iter()
        .zip(&diverged.digests)
        .find(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0);
    println!("\none bit flipped in the input at instruction {flipped_at}:");
    println!(
        "  guest echoed {:?}",
        String::from_utf8_lossy(&diverged.console)
    );
    match first {
        Some(at) => println!(
            "  digests agree up to the flip and part at the first checkpoint after it ({at})"
        ),
        None => anyhow::bail!("a changed input left every digest equal"),
    }
    Ok(())
}
