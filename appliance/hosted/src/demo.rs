//! `understudy replay-demo`: record runs of the built-in guest and of Linux through the
//! replica runtime, replay them from their log entries alone as a file-fed backup, and
//! compare the state digests.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Result};
use understudy_ft::{Instant as FtInstant, InstructionCount, LogEntry, Record};
use understudy_machine::program::echo_guest;
use understudy_machine::{Exit, Input, Machine, MachineConfig};
use understudy_replica::{Step, CONSOLE};

use crate::live::{self, ClockMode, Recorder, World};
use crate::record::{
    file_sha256, Header, ImageRef, ImageRole, LogWriter, RecordedEnding, ENTRIES_VERSION,
    LOG_VERSION,
};
use crate::replay::{self, Recorded, ReplayOptions};

const TYPED: &[u8] = b"understudy";
const CHECKPOINT_INSTRUCTIONS: u64 = 100_000;
const KEYSTROKE_GAP_INSTRUCTIONS: u64 = 61_417;
const LINUX_DIGEST_EVERY: u64 = 10_000_000;
const RECORD_SLICE_INSTRUCTIONS: u64 = 2_000_000;

/// What a recorded run of the built-in guest produced.
struct Recording {
    entries: Vec<LogEntry>,
    /// Digest checkpoints, then the digest at power-off.
    digests: Vec<(u64, [u8; 32])>,
    console: Vec<u8>,
    instructions: u64,
}

fn echo_machine() -> Result<Machine> {
    let config = MachineConfig {
        memory_bytes: 16 << 20,
        ..MachineConfig::default()
    };
    Ok(Machine::new(
        &config,
        &echo_guest(TYPED.len() as i32),
        None,
    )?)
}

/// Runs the built-in guest as a standalone replica, offering each scripted input at its
/// instruction count; the runtime records the inputs, outputs and digest checkpoints.
fn record_run(script: &[(u64, Input)]) -> Result<Recording> {
    let now = FtInstant(0);
    let mut replica = live::standalone(echo_machine()?, [0; 32], Some(CHECKPOINT_INSTRUCTIONS));
    let mut script: VecDeque<&(u64, Input)> = script.iter().collect();
    let mut entries = Vec::new();
    let mut console = Vec::new();
    loop {
        let at = replica.machine().instret().0;
        while let Some((_, input)) = script.front().filter(|(when, _)| *when == at) {
            replica
                .offer_input(now, input)
                .map_err(|refused| anyhow::anyhow!("input at {at} refused: {refused:?}"))?;
            script.pop_front();
        }
        let slice = script
            .front()
            .map_or(RECORD_SLICE_INSTRUCTIONS, |(when, _)| {
                (when - at).min(RECORD_SLICE_INSTRUCTIONS)
            });
        let step = replica.run(now, slice);
        entries.extend(std::iter::from_fn(|| replica.poll_recorded()));
        while let Some(output) = replica.poll_release(now) {
            if output.device == CONSOLE {
                console.extend_from_slice(&output.payload);
            }
        }
        match step {
            Step::Ran(_) => {}
            Step::GuestStopped(Exit::PowerOff { .. }) => break,
            other => bail!("built-in guest stopped unexpectedly: {other:?}"),
        }
    }
    let mut digests: Vec<(u64, [u8; 32])> = entries
        .iter()
        .filter_map(|entry| match entry.record {
            Record::Digest { digest } if entry.at.0 > 0 => Some((entry.at.0, digest.0)),
            _ => None,
        })
        .collect();
    let instructions = replica.machine().instret().0;
    digests.push((instructions, replica.state_digest()));
    Ok(Recording {
        entries,
        digests,
        console,
        instructions,
    })
}

/// Replays a recording as a file-fed backup would, in run slices of `slice` instructions;
/// returns the replay's digests at the same checkpoints and at the end.
fn replay_recording(recording: &Recording, slice: u64) -> Result<Vec<(u64, [u8; 32])>> {
    let mut items = recording
        .entries
        .iter()
        .cloned()
        .map(Recorded::Entry)
        .chain([Recorded::End {
            at: InstructionCount(recording.instructions),
            ending: RecordedEnding::PowerOff { code: 0 },
        }]);
    let mut next = || Ok(items.next());
    let options = ReplayOptions {
        digest_every: Some(CHECKPOINT_INSTRUCTIONS),
        print_digests: false,
        slice,
        console: None,
    };
    let outcome = replay::replay_recorded(echo_machine()?, [0; 32], &mut next, options, None)?;
    let mut digests = outcome.checkpoints;
    digests.push((outcome.instructions, outcome.final_digest));
    Ok(digests)
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
        entries_version: ENTRIES_VERSION,
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
    let mut replica = live::standalone(machine, [0; 32], Some(LINUX_DIGEST_EVERY));
    let mut recorder = Recorder::new(Some(log), false);
    let (sender, arrivals) = live::arrival_channel();
    drop(sender);
    let mut world = World {
        arrivals,
        waker: None,
        console_open: false,
        net: None,
        clock: ClockMode::Wall,
    };
    println!(
        "\nbooting Linux 6.1 in the machine, recording every input to {}:",
        log_path.display()
    );
    let summary = live::run(
        &mut replica,
        &mut world,
        &mut std::io::stdout().lock(),
        &mut recorder,
        None,
    )?;
    let digests = recorder.digests.len();
    recorder.finish(summary.instructions, &summary.ending)?;
    println!(
        "recorded: {} instructions in {:.1} s, {} log bytes, {digests} digests",
        summary.instructions,
        summary.elapsed.as_secs_f64(),
        std::fs::metadata(&log_path)?.len()
    );
    let started = Instant::now();
    let outcome = replay::replay(&log_path, None, None, None)?;
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
    let script: Vec<(u64, Input)> = TYPED
        .iter()
        .enumerate()
        .flat_map(|(i, &byte)| {
            let at = KEYSTROKE_GAP_INSTRUCTIONS * (i as u64 + 1);
            [
                (at, Input::ConsoleByte(byte)),
                (
                    at + 5_000,
                    Input::AdvanceTime {
                        ticks: 1_000 + i as u64,
                    },
                ),
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
    let record = record_run(&script)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "\nrecorded run: guest echoed {:?}",
        String::from_utf8_lossy(&record.console)
    );
    println!("  {} instructions in {:.3} s", record.instructions, seconds);

    // The replica checks every recorded digest itself; the table shows them side by side.
    let replay = replay_recording(&record, 997)?;
    let agree = record.digests == replay;
    println!("\nreplay from the log entries alone, with run slices of 997 instructions instead of 2,000,000:");
    for ((at, a), (_, b)) in record.digests.iter().zip(&replay) {
        println!(
            "  digest {at:>9} {} {} {}",
            short(a),
            short(b),
            if a == b { "same" } else { "DIFFERENT" }
        );
    }
    ensure!(agree, "replay diverged from the recorded run");

    let mut changed = script.clone();
    let flipped_at = changed[4].0;
    if let Input::ConsoleByte(byte) = &mut changed[4].1 {
        *byte ^= 1;
    }
    let diverged = record_run(&changed)?;
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
