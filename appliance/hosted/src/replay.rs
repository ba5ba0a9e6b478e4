//! `understudy replay`: re-executes a recorded run from its log, with no external input, and
//! checks that it reaches the same states (digests) and the same end.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use understudy_machine::{Exit, Machine, MachineConfig};

use crate::disk::OverlayDisk;
use crate::live::Session;
use crate::record::{file_sha256, hex, Frame, ImageRole, LogReader, RecordedEnding};

/// What a successful replay checked.
pub struct ReplayOutcome {
    pub inputs: u64,
    pub digests_checked: u64,
    pub instructions: u64,
}

/// Replays the log at `path`. Errors name the image that changed, the first digest that
/// differs, or the point where the log is damaged.
pub fn replay(
    path: &Path,
    digest_every: Option<u64>,
    mut console: Option<&mut dyn Write>,
) -> Result<ReplayOutcome> {
    let mut reader =
        LogReader::open(path).with_context(|| format!("cannot replay {}", path.display()))?;
    let header = reader.header.clone();
    let mut kernel = None;
    let mut initrd = None;
    let mut disk = None;
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
            ImageRole::Disk => disk = Some(OverlayDisk::open(&image.path)?),
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
    if let Some(disk) = disk {
        machine.attach_disk(Box::new(disk), b"understudy-disk");
    }
    let mut session = Session::new(machine, None, digest_every);
    let mut outcome = ReplayOutcome {
        inputs: 0,
        digests_checked: 0,
        instructions: 0,
    };
    // How the guest stopped (power off, reset, crash), once it has: a digest or an input
    // logged at that same count comes before the end frame, which must still see the stop.
    let mut stopped: Option<Exit> = None;
    loop {
        let frame = reader
            .next_frame()
            .with_context(|| format!("cannot replay {}", path.display()))?;
        let Some(frame) = frame else {
            bail!("the log ends without an end frame (the recording was cut short); replayed up to instruction {}", session.machine.instret().0);
        };
        match frame {
            Frame::Header(_) => bail!("the log has a second header"),
            Frame::Input { at, input } => {
                run_to(&mut session, at, &mut console, &mut stopped)?;
                session
                    .inject(input)
                    .map_err(|error| anyhow::anyhow!("replay diverged: the guest refused a recorded input at instruction {at}: {error:?}"))?;
                outcome.inputs += 1;
            }
            Frame::Digest { at, digest } => {
                run_to(&mut session, at, &mut console, &mut stopped)?;
                let found = session.machine.digest();
                if found != digest {
                    bail!(
                        "replay diverged: state digest at instruction {at} is {} but {} was recorded",
                        hex(&found),
                        hex(&digest)
                    );
                }
                outcome.digests_checked += 1;
            }
            Frame::End { at, ending } => {
                run_to(&mut session, at, &mut console, &mut stopped)?;
                match (ending, stopped) {
                    (RecordedEnding::PowerOff { code }, Some(Exit::PowerOff { code: found })) if code == found => {}
                    (RecordedEnding::Stopped, _) => {}
                    (ending, exit) => bail!("replay diverged: the recording ended with {ending:?} at instruction {at}, the replay with {exit:?}"),
                }
                outcome.instructions = session.machine.instret().0;
                return Ok(outcome);
            }
        }
    }
}

/// Runs until exactly `target` instructions have retired. When the guest stops (power off,
/// reset, crash) the exit goes to `stopped`; it is a divergence if that is before `target`.
fn run_to(
    session: &mut Session,
    target: u64,
    console: &mut Option<&mut dyn Write>,
    stopped: &mut Option<Exit>,
) -> Result<()> {
    loop {
        let now = session.machine.instret().0;
        if now > target {
            bail!("the log is out of order: an entry at instruction {target} follows instruction {now}");
        }
        if now == target {
            return Ok(());
        }
        if let Some(stop) = stopped {
            bail!(
                "replay diverged: the guest stopped ({stop:?}) at instruction {now} before the recorded entry at {target}"
            );
        }
        let exit = session.run(target - now);
        let output = session.machine.take_console_output();
        if let Some(console) = console {
            console.write_all(&output)?;
        }
        // Frames the guest sends during replay are outputs that already happened.
        session.machine.take_transmitted();
        match exit {
            Exit::BudgetExhausted
            | Exit::Idle { .. }
            | Exit::ConsoleOutputFull
            | Exit::NetOutputFull => {}
            stop @ (Exit::PowerOff { .. } | Exit::Reset | Exit::GuestCrashed { .. }) => {
                *stopped = Some(stop);
            }
        }
    }
}
