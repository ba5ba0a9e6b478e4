//! `understudy replay`: a backup that reads a file. The record file's entries go into a
//! file-fed backup replica (`Node::file_backup`), which injects each input at its exact
//! count and checks each digest with the same code as a backup of a pair; this file only
//! reads the file, rebuilds the starting machine, and checks that the run reaches the
//! recorded end.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use understudy_ft::node::NodeError;
use understudy_ft::{Instant, InstructionCount, Limits, LogEntry, Node, Record};
use understudy_machine::{Exit, Machine, MachineConfig};
use understudy_replica::{GuestIdentity, Mismatch, Replica, Step, CONSOLE};

use crate::disk::OverlayDisk;
use crate::record::{file_sha256, hex, Frame, ImageRole, LogReader, RecordedEnding};

/// Instructions per run slice of the replay.
pub const REPLAY_SLICE_INSTRUCTIONS: u64 = 2_000_000;
/// Entries read ahead of the replica.
const READ_AHEAD_ENTRIES: usize = 1024;
/// The identity digests (images, disk) that open every recording.
const IDENTITY_DIGESTS: u64 = 2;

/// What a successful replay checked.
pub struct ReplayOutcome {
    /// How the recording, and so the replay, ended.
    pub ending: RecordedEnding,
    /// Inputs injected (console bytes, frames, time, entropy, the wall-clock base).
    pub inputs: u64,
    /// Recorded digest checkpoints found equal (besides the identity digests).
    pub digests_checked: u64,
    pub instructions: u64,
    /// The replay's own digests at every `digest_every` checkpoint.
    pub checkpoints: Vec<(u64, [u8; 32])>,
    /// The state digest at the end.
    pub final_digest: [u8; 32],
}

/// One item of a recording, in file order.
pub enum Recorded {
    Entry(LogEntry),
    End {
        at: InstructionCount,
        ending: RecordedEnding,
    },
}

/// How a recording is replayed.
pub struct ReplayOptions<'a> {
    /// Print `digest <count> <hex>` to stderr every this many instructions.
    pub digest_every: Option<u64>,
    /// Print digest lines (otherwise they are only collected).
    pub print_digests: bool,
    /// Instructions per run slice (the result does not depend on it).
    pub slice: u64,
    /// Where the guest's console output goes.
    pub console: Option<&'a mut dyn Write>,
}

/// A debugger driving a replay: it runs each slice in place of `Replica::run`, so it decides
/// when the guest runs and what stops it early (`Replica::run_debug` keeps every entry at its
/// count), while the replay loop still feeds the entries and checks the digests.
pub trait ReplayDebugger {
    /// Runs `replica` one slice of at most `slice` instructions, once the debugger lets the
    /// guest run. An error ends the replay (the debugger killed it, or its connection
    /// failed).
    fn run(&mut self, replica: &mut Replica, now: Instant, slice: u64) -> Result<Step>;
    /// The replay ended: checked to the recorded end, or failed.
    fn finished(&mut self, result: Result<&ReplayOutcome, &anyhow::Error>);
}

/// Replays the log at `path`, under `debugger` if given. Errors name the image that changed,
/// the first digest that differs, or the point where the log is damaged.
pub fn replay(
    path: &Path,
    digest_every: Option<u64>,
    console: Option<&mut dyn Write>,
    debugger: Option<&mut dyn ReplayDebugger>,
) -> Result<ReplayOutcome> {
    replay_with(path, digest_every, console, debugger, false)
}

/// `replay`, with hot guest code run through the translator when `translate` is set: a
/// log recorded by an interpreting machine then checks the translator's digests.
pub fn replay_with(
    path: &Path,
    digest_every: Option<u64>,
    console: Option<&mut dyn Write>,
    debugger: Option<&mut dyn ReplayDebugger>,
    translate: bool,
) -> Result<ReplayOutcome> {
    let mut reader =
        LogReader::open(path).with_context(|| format!("cannot replay {}", path.display()))?;
    let header = reader.header.clone();
    let mut kernel = None;
    let mut initrd = None;
    let mut disk = None;
    let mut disk_sha256 = [0u8; 32];
    for image in &header.images {
        let (sha256, _) = file_sha256(&image.path).with_context(|| {
            format!(
                "cannot read the recorded {:?} image {}",
                image.role,
                image.path.display()
            )
        })?;
        if sha256 != image.sha256 {
            bail!(
                "the {:?} image {} has changed since the recording (sha256 {} was recorded, the file now has {}); replay needs the original",
                image.role,
                image.path.display(),
                hex(&image.sha256),
                hex(&sha256)
            );
        }
        match image.role {
            ImageRole::Kernel => kernel = Some(std::fs::read(&image.path)?),
            ImageRole::Initrd => initrd = Some(std::fs::read(&image.path)?),
            ImageRole::Disk => {
                disk = Some(OverlayDisk::open(&image.path)?);
                disk_sha256 = sha256;
            }
        }
    }
    let Some(kernel) = kernel else {
        bail!("the log names no kernel image")
    };
    let config = MachineConfig {
        memory_bytes: header.memory_bytes,
        instructions_per_tick: header.instructions_per_tick,
        bootargs: header.bootargs.clone(),
        net_mac: header.net_mac,
        entropy: header.entropy,
    };
    let mut machine = Machine::new(&config, &kernel, initrd.as_deref())
        .context("cannot rebuild the recorded machine")?;
    crate::guest_memory::advise_huge_pages(&machine);
    if translate {
        crate::code_memory::enable_translator(
            &mut machine,
            understudy_machine::HOT_EXECUTIONS_DEFAULT,
        )?;
    }
    if let Some(disk) = disk {
        machine.attach_disk(Box::new(disk), b"understudy-disk");
    }
    let mut next = || -> Result<Option<Recorded>> {
        let frame = reader
            .next_frame()
            .with_context(|| format!("cannot replay {}", path.display()))?;
        Ok(match frame {
            None => None,
            Some(Frame::Header(_)) => bail!("the log has a second header"),
            Some(Frame::Entry(entry)) => Some(Recorded::Entry(entry)),
            Some(Frame::End { at, ending }) => Some(Recorded::End { at, ending }),
        })
    };
    let options = ReplayOptions {
        digest_every,
        print_digests: true,
        slice: REPLAY_SLICE_INSTRUCTIONS,
        console,
    };
    replay_recorded(machine, disk_sha256, &mut next, options, debugger)
}

/// Replays a recording of a run that started from `machine` (powered on, not yet run) with
/// a disk of `disk_sha256`: `next` gives the recording's items in order. A `debugger` runs
/// every slice and hears how the replay ended.
pub fn replay_recorded(
    machine: Machine,
    disk_sha256: [u8; 32],
    next: &mut dyn FnMut() -> Result<Option<Recorded>>,
    options: ReplayOptions,
    mut debugger: Option<&mut dyn ReplayDebugger>,
) -> Result<ReplayOutcome> {
    let borrowed: Option<&mut dyn ReplayDebugger> = match &mut debugger {
        Some(debugger) => Some(&mut **debugger),
        None => None,
    };
    let result = replay_to_end(machine, disk_sha256, next, options, borrowed);
    if let Some(debugger) = debugger {
        debugger.finished(result.as_ref());
    }
    result
}

fn replay_to_end(
    machine: Machine,
    disk_sha256: [u8; 32],
    next: &mut dyn FnMut() -> Result<Option<Recorded>>,
    mut options: ReplayOptions,
    mut debugger: Option<&mut dyn ReplayDebugger>,
) -> Result<ReplayOutcome> {
    let now = Instant(0);
    let mut replica = Replica::new(
        machine,
        Node::file_backup(Limits::default(), now),
        GuestIdentity { disk_sha256 },
        0,
        now,
    );
    let mut feed = Feed {
        next,
        pending: VecDeque::new(),
        end: None,
        inputs: 0,
    };
    let mut checkpoints = Vec::new();
    let mut next_checkpoint = options.digest_every.filter(|&every| every > 0);
    let mut last_progress = None;
    let exit = loop {
        feed.fill(&mut replica)?;
        let at = replica.machine().instret().0;
        let slice = next_checkpoint.map_or(options.slice, |checkpoint| {
            (checkpoint - at).min(options.slice)
        });
        let step = match debugger.as_deref_mut() {
            Some(debugger) => debugger.run(&mut replica, now, slice)?,
            None => replica.run(now, slice),
        };
        write_console(&mut replica, &mut options.console)?;
        let at = replica.machine().instret().0;
        if let (Some(checkpoint), Some(every)) = (next_checkpoint, options.digest_every) {
            if at == checkpoint {
                // The state as the recording had it on reaching this count, before the
                // inputs logged at it: a full slice ends before them.
                let digest = replica.state_digest();
                if options.print_digests {
                    eprintln!("digest {at} {}", hex(&digest));
                }
                checkpoints.push((at, digest));
                next_checkpoint = Some(checkpoint + every);
            }
        }
        match step {
            Step::Ran(_) => {}
            Step::GuestStopped(exit) => break Some(exit),
            Step::Halted => bail!("{}", mismatch(&replica)),
            Step::WaitingForLog => {
                let progress = (at, replica.status().entries, replica.node().log_end());
                if last_progress == Some(progress) {
                    // Nothing more to replay: the end of the recording, or a guest that waits
                    // where the recorded one went on.
                    break None;
                }
                last_progress = Some(progress);
            }
            other => panic!("fail-stop: a replaying backup cannot reach {other:?}"),
        }
    };
    let (end_at, ending) = feed.finish(&mut replica, exit)?;
    write_console(&mut replica, &mut options.console)?;
    let at = InstructionCount(replica.machine().instret().0);
    match (ending, exit) {
        _ if at != end_at => match exit {
            Some(exit) => bail!(
                "replay diverged: the guest stopped ({exit:?}) at instruction {at}, the recording ran to {end_at}"
            ),
            None => bail!(
                "replay diverged: the guest waits for an interrupt at instruction {at}, the recording ran to {end_at}"
            ),
        },
        (RecordedEnding::PowerOff { code }, Some(Exit::PowerOff { code: found })) if code == found => {}
        (RecordedEnding::Stopped, _) => {}
        (ending, exit) => bail!(
            "replay diverged: the recording ended with {ending:?} at instruction {end_at}, the replay with {exit:?}"
        ),
    }
    let digests_matched = replica.status().digests_matched;
    Ok(ReplayOutcome {
        ending,
        inputs: feed.inputs,
        digests_checked: digests_matched.saturating_sub(IDENTITY_DIGESTS),
        instructions: at.0,
        checkpoints,
        final_digest: replica.state_digest(),
    })
}

/// The recording's items on their way into the replica.
struct Feed<'a> {
    next: &'a mut dyn FnMut() -> Result<Option<Recorded>>,
    /// Entries read and not yet taken by the replica.
    pending: VecDeque<LogEntry>,
    end: Option<(InstructionCount, RecordedEnding)>,
    inputs: u64,
}

impl Feed<'_> {
    /// Reads ahead and hands the replica as many entries as it takes.
    fn fill(&mut self, replica: &mut Replica) -> Result<()> {
        while self.end.is_none() && self.pending.len() < READ_AHEAD_ENTRIES {
            match (self.next)()? {
                Some(Recorded::Entry(entry)) => {
                    if is_input(&entry.record) {
                        self.inputs += 1;
                    }
                    self.pending.push_back(entry);
                }
                Some(Recorded::End { at, ending }) => {
                    self.end = Some((at, ending));
                    // Nothing follows the end: the replica may run up to it.
                    self.pending.push_back(LogEntry {
                        at,
                        record: Record::Horizon,
                    });
                }
                None => bail!(
                    "the log ends without an end frame (the recording was cut short); replayed up to instruction {}",
                    replica.machine().instret().0
                ),
            }
        }
        let taken = replica
            .push_entries(Instant(0), self.pending.make_contiguous())
            .map_err(|error| match error {
                NodeError::InstructionCountWentBack { newest, offered } => anyhow::anyhow!(
                    "the log is out of order: an entry at instruction {offered} follows instruction {newest}"
                ),
                other => anyhow::anyhow!("cannot replay: {other}"),
            })?;
        self.pending.drain(..taken);
        Ok(())
    }

    /// The replay stopped (`exit`: the guest stopped; `None`: nothing more to replay): reads
    /// the rest of the recording, which must hold nothing after this count, and returns the
    /// recorded end.
    fn finish(
        &mut self,
        replica: &mut Replica,
        exit: Option<Exit>,
    ) -> Result<(InstructionCount, RecordedEnding)> {
        loop {
            self.fill(replica)?;
            // A stopped guest still takes the entries logged at its stop (outputs, digest).
            if let Step::Halted = replica.run(Instant(0), 0) {
                bail!("{}", mismatch(replica));
            }
            let at = InstructionCount(replica.machine().instret().0);
            let next = replica
                .node()
                .next_replay_at()
                .or(self.pending.front().map(|entry| entry.at));
            if let Some(next) = next.filter(|&next| next > at || exit.is_none()) {
                match exit {
                    Some(exit) => bail!(
                        "replay diverged: the guest stopped ({exit:?}) at instruction {at} before the recorded entry at {next}"
                    ),
                    None => bail!(
                        "replay diverged: the guest waits for an interrupt at instruction {at}, where the recording has an entry at {next}"
                    ),
                }
            }
            if let (Some(end), true) = (self.end, self.pending.is_empty()) {
                if replica.node().next_replay_at().is_none() {
                    return Ok(end);
                }
            }
        }
    }
}

fn is_input(record: &Record) -> bool {
    matches!(
        record,
        Record::DeviceInput { .. }
            | Record::AdvanceTime { .. }
            | Record::WallClockBase { .. }
            | Record::Entropy { .. }
    )
}

fn write_console(replica: &mut Replica, console: &mut Option<&mut dyn Write>) -> Result<()> {
    while let Some(output) = replica.poll_release(Instant(0)) {
        if let (Some(console), true) = (console.as_mut(), output.device == CONSOLE) {
            console.write_all(&output.payload)?;
        }
    }
    Ok(())
}

fn mismatch(replica: &Replica) -> String {
    match replica.mismatch() {
        Some(Mismatch::Images) => "replay diverged: the machine rebuilt from the log header (images, memory, command line) differs from the recorded one".into(),
        Some(Mismatch::Disks) => "replay diverged: the disk differs from the recorded one".into(),
        Some(Mismatch::State { at }) => format!(
            "replay diverged: the state digest at instruction {at} differs from the recorded one"
        ),
        None => "replay stopped: the replica halted".into(),
    }
}
