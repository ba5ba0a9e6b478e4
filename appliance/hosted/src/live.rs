//! The live driver of `understudy run-guest`: one standalone replica (the runtime of
//! `understudy_replica`, live with no backup and no arbiter) against the real world: console,
//! network, wall clock, entropy.
//!
//! This file holds only what a hosted driver adds: the console reader thread, arrivals that
//! wait for room in the guest, guest time kept near the wall clock, and sleeping while the
//! guest idles. Everything from outside enters through `Replica::offer_input`, so the
//! runtime records it with its instruction count; the entries the runtime records go to a
//! `Recorder` (the record file, digest lines). Guest time follows the instruction count; when
//! the guest falls behind the wall clock, or idles in `wfi`, the driver advances guest time
//! through the runtime as well.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use understudy_ft::{Instant as FtInstant, InstructionCount, Limits, LogEntry, Record};
use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::{Exit, Input, Machine};
use understudy_replica::{GuestIdentity, Refused, Replica, Step, CONSOLE, NET};

use crate::net::{Arrival, NetBackend};
use crate::record::{hex, Frame, LogWriter, RecordedEnding};

/// Instructions per run slice: small enough that console output and input stay responsive,
/// large enough that the loop costs nothing measurable.
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

/// Delivers console input from a thread reading `input`; with a `waker`, also writes a
/// byte to it after each delivery (`World::waker`).
pub fn spawn_console_reader(
    mut input: impl Read + Send + 'static,
    arrivals: SyncSender<Arrival>,
    mut waker: Option<UnixStream>,
) {
    std::thread::spawn(move || {
        let mut wake = || {
            if let Some(waker) = waker.as_mut() {
                // A full socket already holds a wake-up.
                let _ = waker.write(&[1]);
            }
        };
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
            wake();
        }
        let _ = arrivals.send(Arrival::ConsoleClosed);
        wake();
    });
}

/// A socket pair for `World::waker`: (the driver's end, the input threads' end), both
/// non-blocking.
pub fn waker_pair() -> io::Result<(UnixStream, UnixStream)> {
    let (driver, threads) = UnixStream::pair()?;
    driver.set_nonblocking(true)?;
    threads.set_nonblocking(true)?;
    Ok((driver, threads))
}

/// The standalone replica of `run-guest` around `machine` (powered on, not yet run): state
/// digests every `digest_every` instructions become digest entries of its log.
pub fn standalone(machine: Machine, disk_sha256: [u8; 32], digest_every: Option<u64>) -> Replica {
    Replica::standalone(
        machine,
        GuestIdentity { disk_sha256 },
        Limits::default(),
        digest_every.unwrap_or(0),
        FtInstant(0),
    )
}

/// Where the entries the runtime records go: the record file, if any, and a
/// `digest <count> <hex>` line on stderr for each digest checkpoint.
pub struct Recorder {
    log: Option<LogWriter>,
    print_digests: bool,
    /// The digest checkpoints recorded, in order (not the identity digests at count 0).
    pub digests: Vec<(u64, [u8; 32])>,
}

impl Recorder {
    pub fn new(log: Option<LogWriter>, print_digests: bool) -> Recorder {
        Recorder {
            log,
            print_digests,
            digests: Vec::new(),
        }
    }

    /// Takes every entry the replica recorded since the last call.
    pub fn take(&mut self, replica: &mut Replica) -> io::Result<()> {
        while let Some(entry) = replica.poll_recorded() {
            self.append(entry)?;
        }
        Ok(())
    }

    fn append(&mut self, entry: LogEntry) -> io::Result<()> {
        // At count 0 the runtime records the identity digests (images and disk), not state.
        if let (Record::Digest { digest }, InstructionCount(at @ 1..)) = (&entry.record, entry.at) {
            if self.print_digests {
                eprintln!("digest {at} {}", hex(&digest.0));
            }
            self.digests.push((at, digest.0));
        }
        if let Some(log) = &mut self.log {
            log.append(&Frame::Entry(entry))?;
        }
        Ok(())
    }

    /// Writes the end of the run to the log and closes it.
    pub fn finish(self, at: u64, ending: &Ending) -> io::Result<()> {
        if let Some(mut log) = self.log {
            let ending = match *ending {
                Ending::PowerOff { code } => RecordedEnding::PowerOff { code },
                _ => RecordedEnding::Stopped,
            };
            log.append(&Frame::End {
                at: InstructionCount(at),
                ending,
            })?;
            log.finish()?;
        }
        Ok(())
    }
}

/// The outside world of a live run.
pub struct World {
    pub arrivals: Receiver<Arrival>,
    /// With a network on the driver's thread (`NetBackend::start_on_driver_thread`): the
    /// socket the input threads write a byte to after each arrival, so that the idle
    /// driver sleeps in the network's `wait` rather than on `arrivals`.
    pub waker: Option<UnixStream>,
    pub console_open: bool,
    pub net: Option<Box<dyn NetBackend>>,
    pub clock: ClockMode,
}

/// Runs the replica until the guest powers off, crashes, idles forever or reaches
/// `max_instructions`.
pub fn run(
    replica: &mut Replica,
    world: &mut World,
    output: &mut impl Write,
    recorder: &mut Recorder,
    max_instructions: Option<u64>,
) -> io::Result<Summary> {
    let mut driver = Driver {
        start: Instant::now(),
        start_ticks: replica.time_ticks(),
        pending: VecDeque::new(),
        frames_dropped: 0,
        waker_closed: false,
    };
    if world.clock == ClockMode::Wall {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        replica
            .offer_input(driver.now(), &Input::WallClockBase { ns })
            .expect("the RTC takes its base");
    }
    let ending = loop {
        let executed = replica.machine().instret().0;
        if max_instructions.is_some_and(|limit| executed >= limit) {
            break Ending::InstructionLimit;
        }
        driver.receive(world);
        driver.deliver(replica, world);
        supply_entropy(replica, driver.now());
        if world.clock == ClockMode::Wall {
            driver.catch_up_time(replica, CLOCK_LAG_TOLERANCE_TICKS);
        }
        recorder.take(replica)?;
        let budget = match max_instructions {
            Some(limit) => RUN_SLICE_INSTRUCTIONS.min(limit - executed),
            None => RUN_SLICE_INSTRUCTIONS,
        };
        let step = replica.run(driver.now(), budget);
        send_outputs(replica, world, output, driver.now())?;
        recorder.take(replica)?;
        match step {
            // Throttled only while the recorder has not taken the entries, which it just did.
            Step::Ran(_) | Step::Throttled => {}
            Step::GuestStopped(exit) => break ending_of(exit),
            Step::Idle { wake_at_ticks } => {
                output.flush()?;
                if let Some(ending) = driver.idle(replica, world, wake_at_ticks) {
                    break ending;
                }
            }
            Step::WaitingForLog | Step::WaitingForBackup | Step::Joining | Step::Halted => {
                panic!("fail-stop: a standalone replica cannot reach {step:?}")
            }
        }
    };
    output.flush()?;
    if driver.frames_dropped > 0 {
        eprintln!(
            "understudy: {} received frames dropped (guest had no receive buffers)",
            driver.frames_dropped
        );
    }
    Ok(Summary {
        ending,
        instructions: replica.machine().instret().0,
        elapsed: driver.start.elapsed(),
    })
}

fn ending_of(exit: Exit) -> Ending {
    match exit {
        Exit::PowerOff { code } => Ending::PowerOff { code },
        Exit::Reset => Ending::Reset,
        Exit::GuestCrashed { cause, tval, pc } => Ending::GuestCrashed { cause, tval, pc },
        other => panic!("fail-stop: {other:?} does not stop a guest"),
    }
}

/// The driver's own state: arrivals waiting for the guest, and the wall clock's origin.
struct Driver {
    start: Instant,
    start_ticks: u64,
    pending: VecDeque<Arrival>,
    frames_dropped: u64,
    /// `World::waker` reads as closed: no input thread is left to write it.
    waker_closed: bool,
}

impl Driver {
    /// The runtime's clock: microseconds since the run started.
    fn now(&self) -> FtInstant {
        FtInstant(self.start.elapsed().as_micros() as u64)
    }

    /// Everything that arrived, in arrival order; what the guest cannot take waits.
    fn receive(&mut self, world: &mut World) {
        if let Some(net) = world.net.as_mut() {
            let (pending, dropped) = (&mut self.pending, &mut self.frames_dropped);
            net.pump(&mut |frame| {
                if pending.len() >= PENDING_ARRIVALS_MAX {
                    *dropped += 1;
                } else {
                    pending.push_back(Arrival::Frame(frame));
                }
            });
        }
        while let Ok(arrival) = world.arrivals.try_recv() {
            if self.pending.len() >= PENDING_ARRIVALS_MAX && matches!(arrival, Arrival::Frame(_)) {
                self.frames_dropped += 1;
                continue;
            }
            self.pending.push_back(arrival);
        }
    }

    /// Offers waiting arrivals in order, stopping at the first the guest cannot take yet.
    fn deliver(&mut self, replica: &mut Replica, world: &mut World) {
        while let Some(arrival) = self.pending.front() {
            let result = match arrival {
                Arrival::ConsoleByte(byte) => {
                    replica.offer_input(self.now(), &Input::ConsoleByte(*byte))
                }
                Arrival::Frame(frame) => {
                    replica.offer_input(self.now(), &Input::Frame(frame.clone()))
                }
                Arrival::ConsoleClosed => {
                    world.console_open = false;
                    Ok(())
                }
                Arrival::Datagram(_) | Arrival::Storage(_) => Ok(()),
            };
            match result {
                // A frame the device can never take (no device, bad size) is dropped.
                Ok(()) | Err(Refused::NoDevice | Refused::TooLarge) => {
                    self.pending.pop_front();
                }
                // A full queue waits for the guest.
                Err(_) => break,
            }
        }
    }

    /// Advances guest time to the wall clock when it lags by more than `tolerance` ticks.
    fn catch_up_time(&mut self, replica: &mut Replica, tolerance: u64) {
        let wall_ticks = self.start_ticks + ticks_since(self.start);
        let guest_ticks = replica.time_ticks();
        if wall_ticks > guest_ticks + tolerance {
            replica
                .offer_input(
                    self.now(),
                    &Input::AdvanceTime {
                        ticks: wall_ticks - guest_ticks,
                    },
                )
                .expect("time always advances");
        }
    }

    /// The guest waits for an interrupt: skip to its timer (virtual clock), or sleep until
    /// the timer is due on the wall clock or something arrives. `Some` when it never wakes.
    fn idle(
        &mut self,
        replica: &mut Replica,
        world: &mut World,
        wake_at_ticks: Option<u64>,
    ) -> Option<Ending> {
        if !self.pending.is_empty() {
            return None; // Inputs still wait for room; the guest will make some.
        }
        let now_ticks = replica.time_ticks();
        let input_possible = world.console_open || world.net.is_some();
        let wait = match (world.clock, wake_at_ticks) {
            (ClockMode::Virtual, Some(wake)) => {
                replica
                    .offer_input(
                        self.now(),
                        &Input::AdvanceTime {
                            ticks: wake - now_ticks,
                        },
                    )
                    .expect("time always advances");
                return None;
            }
            (_, None) if !input_possible => return Some(Ending::IdleForever),
            (ClockMode::Wall, Some(wake)) => {
                let wall_ticks = self.start_ticks + ticks_since(self.start);
                Some(duration_from_ticks(
                    wake.saturating_sub(wall_ticks.max(now_ticks)),
                ))
            }
            _ => None,
        };
        if world.waker.is_some() {
            // The guest's last frames may bring answers at once: then no sleep.
            self.receive(world);
            if !self.pending.is_empty() {
                return None;
            }
        }
        if let (Some(waker), Some(net)) = (world.waker.as_mut(), world.net.as_mut()) {
            // Whatever woke it, `receive` takes next. Once the input threads are gone their
            // end reads as closed, always ready: it leaves the wait (poll skips fd -1).
            let fd = if self.waker_closed {
                -1
            } else {
                waker.as_raw_fd()
            };
            net.wait(fd, wait.unwrap_or(Duration::MAX));
            let mut drain = [0u8; 64];
            loop {
                match waker.read(&mut drain) {
                    Ok(0) => {
                        self.waker_closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if world.clock == ClockMode::Wall {
                self.catch_up_time(replica, 0);
            }
            return None;
        }
        let arrival = match wait {
            Some(wait) => world.arrivals.recv_timeout(wait),
            None => world
                .arrivals
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match arrival {
            Ok(arrival) => self.pending.push_back(arrival),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Nothing can arrive any more: only the timer wakes the guest, so sleep until
                // it is due instead of spinning through wfi.
                world.console_open = false;
                match wait {
                    Some(wait) => std::thread::sleep(wait),
                    None => return Some(Ending::IdleForever),
                }
            }
        }
        if world.clock == ClockMode::Wall {
            self.catch_up_time(replica, 0);
        }
        None
    }
}

/// Outputs leave as soon as the runtime releases them (at once: nobody acknowledges).
fn send_outputs(
    replica: &mut Replica,
    world: &mut World,
    output: &mut impl Write,
    now: FtInstant,
) -> io::Result<()> {
    while let Some(released) = replica.poll_release(now) {
        if released.device == CONSOLE {
            output.write_all(&released.payload)?;
        } else if released.device == NET {
            if let Some(net) = &mut world.net {
                if let Err(error) = net.send(&released.payload) {
                    eprintln!("understudy: frame not sent: {error}");
                }
            }
        }
    }
    Ok(())
}

fn supply_entropy(replica: &mut Replica, now: FtInstant) {
    let wanted = replica.wants_entropy().min(ENTROPY_CHUNK_BYTES_MAX);
    if wanted == 0 {
        return;
    }
    let mut bytes = vec![0u8; wanted];
    let mut urandom = std::fs::File::open("/dev/urandom").expect("fail-stop: no /dev/urandom");
    urandom
        .read_exact(&mut bytes)
        .expect("fail-stop: cannot read /dev/urandom");
    replica
        .offer_input(now, &Input::Entropy(bytes))
        .expect("the entropy device asked for it");
}

fn ticks_since(start: Instant) -> u64 {
    (start.elapsed().as_nanos() * u128::from(TIMEBASE_HZ) / 1_000_000_000) as u64
}

fn duration_from_ticks(ticks: u64) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(TIMEBASE_HZ)) as u64)
}
