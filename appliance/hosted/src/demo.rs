//! `understudy demo`: record runs of the built-in guest and of Linux, replay them from their
//! inputs alone, and compare the state digests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Result};
use understudy_machine::program::echo_guest;
use understudy_machine::{Exit, Input, Machine, MachineConfig};

use crate::live::{self, ClockMode, Session, World};
use crate::record::{file_sha256, Header, ImageRef, ImageRole, LogWriter, LOG_VERSION};
use crate::replay;

const TYPED: &[u8] = b"understudy";
const CHECKPOINT_INSTRUCTIONS: u64 = 100_000;
const KEYSTROKE_GAP_INSTRUCTIONS: u64 = 61_417;
const LINUX_DIGEST_EVERY: u64 = 10_000_000;

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

/// The Linux part of the demo: record a boot of the minimal guest on the wall clock, then
/// replay it from the log alone and check every digest. Needs the guest artifacts.
fn linux(kernel: &Path, initrd: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("understudy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join("linux.log");
    let config = MachineConfig {
        bootargs:
            "console=ttyS0 quiet understudy.init='uname -sm; cat /proc/cpuinfo | head -3; date'"
                .into(),
        entropy: true,
        ..MachineConfig::default()
    };
    let header = Header {
        version: LOG_VERSION,
        memory_bytes: config.memory_bytes,
        instructions_per_tick: config.instructions_per_tick,
        bootargs: config.bootargs.clone(),
        net_mac: None,
        entropy: true,
        images: vec![
            image(ImageRole::Kernel, kernel)?,
            image(ImageRole::Initrd, initrd)?,
        ],
    };
    let machine = Machine::new(
        &config,
        &std::fs::read(kernel)?,
        Some(&std::fs::read(initrd)?),
    )?;
    let log = LogWriter::create(&log_path, header)?;
    let mut session = Session::new(machine, Some(log), Some(LINUX_DIGEST_EVERY));
    let (sender, arrivals) = live::arrival_channel();
    drop(sender);
    let mut world = World {
        arrivals,
        console_open: false,
        net: None,
        clock: ClockMode::Wall,
    };
    println!(
        "\nbooting Linux 6.1 in the machine, recording every input to {}:",
        log_path.display()
    );
    let summary = live::run(
        &mut session,
        &mut world,
        &mut std::io::stdout().lock(),
        None,
    )?;
    let digests = session.digests.len();
    session.finish(&summary.ending)?;
    println!(
        "recorded: {} instructions in {:.1} s, {} log bytes, {digests} digests",
        summary.instructions,
        summary.elapsed.as_secs_f64(),
        std::fs::metadata(&log_path)?.len()
    );
    let started = Instant::now();
    let outcome = replay::replay(&log_path, None, None)?;
    println!(
        "replayed from the log alone in {:.1} s: {} inputs re-injected, all {} digests identical, same power-off",
        started.elapsed().as_secs_f64(),
        outcome.inputs,
        outcome.digests_checked
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn image(role: ImageRole, path: &Path) -> Result<ImageRef> {
    let (sha256, bytes) = file_sha256(path)?;
    Ok(ImageRef {
        role,
        path: path.to_owned(),
        sha256,
        bytes,
    })
}

/// The minimal guest's kernel and initramfs, if `guest/build` has made them.
fn linux_artifacts() -> Option<(PathBuf, PathBuf)> {
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build");
    let output = Command::new(build)
        .arg("--print-paths")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let find = |name: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(name)
                .map(|path| PathBuf::from(path.trim()))
        })
    };
    Some((find("minimal_kernel=")?, find("minimal_initramfs=")?))
}

pub fn run() -> Result<()> {
    built_in()?;
    match linux_artifacts() {
        Some((kernel, initrd)) => linux(&kernel, &initrd),
        None => {
            println!(
                "\n(run guest/build once to see the demo boot, record and replay Linux as well)"
            );
            Ok(())
        }
    }
}

fn built_in() -> Result<()> {
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
