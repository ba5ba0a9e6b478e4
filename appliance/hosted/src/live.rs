//! The live driver: runs one machine against the real world (console, network, wall clock,
//! entropy), optionally recording every input to a log.
//!
//! Every value from outside reaches the guest through `Session::inject` at an instruction
//! boundary, and every injected input is logged with its instruction count, so a run is
//! reproducible from its log. Guest time follows the instruction count; when the guest
//! falls behind the wall clock, or idles in `wfi`, the driver advances guest time through
//! the port.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::{Exit, InjectError, Input, Machine};

use crate::net::{Arrival, NetBackend};
use crate::record::{hex, Frame, LogWriter, RecordedEnding};

/// Instructions per `Machine::run` call: small enough that console output and input stay
/// responsive, large enough that the loop costs nothing measurable.
pub const RUN_SLICE_INSTRUCTIONS: u64 = 2_000_000;
/// The guest clock may lag the wall clock by this much before the driver advances it.
pub const CLOCK_LAG_TOLERANCE_TICKS: u64 = TIMEBASE_HZ / 100;
/// Inputs that arrived but that the guest cannot take yet (full UART FIFO, no receive
/// buffer). Beyond this, new network frames are dropped as a NIC would drop them.
pub const PENDING_ARRIVALS_MAX: usize = 1024;
/// Capacity of the channel from the console and network threads.
pub const ARRIVAL_CHANNEL_CAPACITY: usize = 4096;
/// Entropy is handed to the guest in pieces of at most this size.
pub const ENTROPY_CHUNK_BYTES_MAX: usize = 256;

/// How guest time relates to the outside world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    /// Guest time tracks wall time; an idle guest sleeps until its next timer.
    Wall,
    /// Guest time comes from the instruction count alone; an idle guest skips straight to
    /// its next timer. Runs are then a function of the images and the inputs alone.
    Virtual,
}

/// Why a live run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    PowerOff {
        code: u16,
    },
    Reset,
    GuestCrashed {
        cause: u64,
        tval: u64,
        pc: u64,
    },
    InstructionLimit,
    /// Idle with no timer armed and no input source left: it can never wake up.
    IdleForever,
}

/// What a live run did.
pub struct Summary {
    pub ending: Ending,
    pub instructions: u64,
    pub elapsed: Duration,
}

/// The channel the console and network threads deliver into.
pub fn arrival_channel() -> (SyncSender<Arrival>, Receiver<Arrival>) {
    mpsc::sync_channel(ARRIVAL_CHANNEL_CAPACITY)
}

/// Delivers console input from a thread reading `input`.
pub fn spawn_console_reader(mut input: impl Read + Send + 'static, arrivals: SyncSender<Arrival>) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while let Ok(n) = input.read(&mut buffer) {
            if n == 0 {
                break;
            }
            for &byte in &buffer[..n] {
                if arrivals.send(Arrival::ConsoleByte(byte)).is_err() {
                    return;
                }
            }
        }
        let _ = arrivals.send(Arrival::ConsoleClosed);
    });
}

/// A machine plus what watches it: the record log and the digest checkpoints.
pub struct Session {
    pub machine: Machine,
    log: Option<LogWriter>,
    digest_every: Option<u64>,
    next_digest: u64,
    /// Digests taken, in order (also printed as `digest <count> <hex>` lines to stderr).
    pub digests: Vec<(u64, [u8; 32])>,
}

impl Session {
    pub fn new(machine: Machine, log: Option<LogWriter>, digest_every: Option<u64>) -> Session {
        let next_digest = digest_every.unwrap_or(u64::MAX);
        Session {
            machine,
            log,
            digest_every,
            next_digest,
            digests: Vec::new(),
        }
    }

    /// Injects and logs one input at the current instruction boundary.
    pub fn inject(&mut self, input: Input) -> Result<(), InjectError> {
        self.machine.inject(&input)?;
        if let Some(log) = &mut self.log {
            let at = self.machine.instret().0;
            log.append(&Frame::Input { at, input })
                .expect("fail-stop: cannot write the record log");
        }
        Ok(())
    }

    /// Runs at most `budget` instructions, stopping at the next digest checkpoint.
    pub fn run(&mut self, budget: u64) -> Exit {
        let now = self.machine.instret().0;
        let budget = budget.min(self.next_digest.saturating_sub(now));
        let exit = if budget == 0 {
            Exit::BudgetExhausted
        } else {
            self.machine.run(budget).1
        };
        if self.machine.instret().0 == self.next_digest {
            self.take_digest();
            self.next_digest += self.digest_every.expect("a checkpoint implies an interval");
        }
        exit
    }

    fn take_digest(&mut self) {
        let at = self.machine.instret().0;
        let digest = self.machine.digest();
        eprintln!("digest {at} {}", hex(&digest));
        if let Some(log) = &mut self.log {
            log.append(&Frame::Digest { at, digest })
                .expect("fail-stop: cannot write the record log");
        }
        self.digests.push((at, digest));
    }

    /// Writes the end of the run to the log and closes it.
    pub fn finish(self, ending: &Ending) -> std::io::Result<()> {
        if let Some(mut log) = self.log {
            let at = self.machine.instret().0;
            let ending = match *ending {
                Ending::PowerOff { code } => RecordedEnding::PowerOff { code },
                _ => RecordedEnding::Stopped,
            };
            log.append(&Frame::End { at, ending })?;
            log.finish()?;
        }
        Ok(())
    }
}

/// The outside world of a live run.
pub struct World {
    pub arrivals: Receiver<Arrival>,
    pub console_open: bool,
    pub net: Option<Box<dyn NetBackend>>,
    pub clock: ClockMode,
}

/// Runs the session until the guest powers off, crashes, idles forever or reaches
/// `max_instructions`.
pub fn run(
    session: &mut Session,
    world: &mut World,
    output: &mut impl Write,
    max_instructions: Option<u64>,
) -> std::io::Result<Summary> {
    let start = Instant::now();
    let start_ticks = session.machine.time_ticks();
    if world.clock == ClockMode::Wall {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        session
            .inject(Input::WallClockBase { ns: now_ns })
            .expect("the RTC takes its base");
    }
    let mut pending: VecDeque<Arrival> = VecDeque::new();
    let mut frames_dropped: u64 = 0;
    let ending = loop {
        let executed = session.machine.instret().0;
        if max_instructions.is_some_and(|limit| executed >= limit) {
            break Ending::InstructionLimit;
        }
        // Everything that arrived, in arrival order; what the guest cannot take waits.
        while let Ok(arrival) = world.arrivals.try_recv() {
            if pending.len() >= PENDING_ARRIVALS_MAX && matches!(arrival, Arrival::Frame(_)) {
                frames_dropped += 1;
                continue;
            }
            pending.push_back(arrival);
        }
        deliver(session, world, &mut pending);
        supply_entropy(session);
        if world.clock == ClockMode::Wall {
            let wall_ticks = start_ticks + ticks_since(start);
            let guest_ticks = session.machine.time_ticks();
            if wall_ticks > guest_ticks + CLOCK_LAG_TOLERANCE_TICKS {
                session
                    .inject(Input::AdvanceTime {
                        ticks: wall_ticks - guest_ticks,
                    })
                    .expect("time always advances");
            }
        }
        let budget = match max_instructions {
            Some(limit) => RUN_SLICE_INSTRUCTIONS.min(limit - executed),
            None => RUN_SLICE_INSTRUCTIONS,
        };
        let exit = session.run(budget);
        output.write_all(&session.machine.take_console_output())?;
        transmit(session, world);
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
            Exit::PowerOff { code } => break Ending::PowerOff { code },
            Exit::Reset => break Ending::Reset,
            Exit::GuestCrashed { cause, tval, pc } => {
                break Ending::GuestCrashed { cause, tval, pc }
            }
            Exit::Idle { wake_at_ticks } => {
                output.flush()?;
                if !pending.is_empty() {
                    continue; // Inputs still wait for room; the guest will make some.
                }
                let now_ticks = session.machine.time_ticks();
                let input_possible = world.console_open || world.net.is_some();
                match (world.clock, wake_at_ticks) {
                    (ClockMode::Virtual, Some(wake)) => {
                        session
                            .inject(Input::AdvanceTime {
                                ticks: wake - now_ticks,
                            })
                            .expect("time always advances");
                    }
                    (_, None) if !input_possible => break Ending::IdleForever,
                    (clock, wake) => {
                        // Sleep until the timer is due on the wall clock or something arrives.
                        let wait = match (clock, wake) {
                            (ClockMode::Wall, Some(wake)) => {
                                let wall_ticks = start_ticks + ticks_since(start);
                                Some(duration_from_ticks(
                                    wake.saturating_sub(wall_ticks.max(now_ticks)),
                                ))
                            }
                            _ => None,
                        };
                        let arrival = match wait {
                            Some(wait) => world.arrivals.recv_timeout(wait),
                            None => world
                                .arrivals
                                .recv()
                                .map_err(|_| RecvTimeoutError::Disconnected),
                        };
                        match arrival {
                            Ok(arrival) => pending.push_back(arrival),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => {
                                // Nothing can arrive any more: only the timer wakes the guest,
                                // so sleep until it is due instead of spinning through wfi.
                                world.console_open = false;
                                match wait {
                                    Some(wait) => std::thread::sleep(wait),
                                    None => break Ending::IdleForever,
                                }
                            }
                        }
                        if clock == ClockMode::Wall {
                            let wall_ticks = start_ticks + ticks_since(start);
                            let guest_ticks = session.machine.time_ticks();
                            if wall_ticks > guest_ticks {
                                session
                                    .inject(Input::AdvanceTime {
                                        ticks: wall_ticks - guest_ticks,
                                    })
                                    .expect("time always advances");
                            }
                        }
                    }
                }
            }
        }
    };
    output.write_all(&session.machine.take_console_output())?;
    output.flush()?;
    if frames_dropped > 0 {
        eprintln!(
            "understudy: {frames_dropped} received frames dropped (guest had no receive buffers)"
        );
    }
    Ok(Summary {
        ending,
        instructions: session.machine.instret().0,
        elapsed: start.elapsed(),
    })
}

/// Injects waiting arrivals in order, stopping at the first the guest cannot take yet.
fn deliver(session: &mut Session, world: &mut World, pending: &mut VecDeque<Arrival>) {
    while let Some(arrival) = pending.front() {
        let result = match arrival {
            Arrival::ConsoleByte(byte) => session.inject(Input::ConsoleByte(*byte)),
            Arrival::Frame(frame) => session.inject(Input::Frame(frame.clone())),
            Arrival::ConsoleClosed => {
                world.console_open = false;
                Ok(())
            }
            Arrival::Datagram(_) => Ok(()),
        };
        match result {
            Ok(()) => {
                pending.pop_front();
            }
            // A frame the device can never take (no device, bad size) is dropped; a full
            // queue waits for the guest.
            Err(InjectError::NoDevice) => {
                pending.pop_front();
            }
            Err(_) => break,
        }
    }
}

fn supply_entropy(session: &mut Session) {
    let wanted = session.machine.wants_entropy().min(ENTROPY_CHUNK_BYTES_MAX);
    if wanted == 0 {
        return;
    }
    let mut bytes = vec![0u8; wanted];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("fail-stop: no /dev/urandom");
    urandom
        .read_exact(&mut bytes)
        .expect("fail-stop: cannot read /dev/urandom");
    session
        .inject(Input::Entropy(bytes))
        .expect("the entropy device asked for it");
}

fn transmit(session: &mut Session, world: &mut World) {
    let frames = session.machine.take_transmitted();
    if let Some(net) = &mut world.net {
        for frame in frames {
            if let Err(error) = net.send(&frame) {
                eprintln!("understudy: frame not sent: {error}");
            }
        }
    }
}

fn ticks_since(start: Instant) -> u64 {
    (start.elapsed().as_nanos() * u128::from(TIMEBASE_HZ) / 1_000_000_000) as u64
}

fn duration_from_ticks(ticks: u64) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(TIMEBASE_HZ)) as u64)
}
