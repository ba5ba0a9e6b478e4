//! The live driver: runs one machine against the real world (stdin, stdout, wall clock).
//!
//! Every input it feeds the machine goes through `Machine::inject` at an instruction
//! boundary, so a run is reproducible from its inputs and their instruction counts. Guest
//! time follows the instruction count; when the guest falls behind the wall clock, or idles
//! in `wfi`, the driver advances guest time through the port.

use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::{Exit, Input, Machine};

/// Instructions per `Machine::run` call: small enough that console output and input stay
/// responsive, large enough that the loop costs nothing measurable.
pub const RUN_SLICE_INSTRUCTIONS: u64 = 2_000_000;
/// The guest clock may lag the wall clock by this much before the driver advances it.
pub const CLOCK_LAG_TOLERANCE_TICKS: u64 = TIMEBASE_HZ / 100;

/// How guest time relates to the outside world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    /// Guest time tracks wall time; an idle guest sleeps until its next timer.
    Wall,
    /// Guest time comes from the instruction count alone; an idle guest skips straight to
    /// its next timer. Runs are then a function of the images and console input only.
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
    /// Idle with no timer armed and no more console input: it can never wake up.
    IdleForever,
}

/// What a live run did.
pub struct Summary {
    pub ending: Ending,
    pub instructions: u64,
    pub elapsed: Duration,
}

/// Console input arrives from a thread reading the given reader.
pub fn spawn_console_reader(mut input: impl Read + Send + 'static) -> Receiver<u8> {
    let (sender, receiver) = mpsc::sync_channel(4096);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while let Ok(n) = input.read(&mut buffer) {
            if n == 0 {
                break;
            }
            for &byte in &buffer[..n] {
                if sender.send(byte).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Runs `machine` until it powers off, crashes, idles forever or reaches `max_instructions`.
pub fn run(
    machine: &mut Machine,
    clock: ClockMode,
    console_input: Option<Receiver<u8>>,
    output: &mut impl Write,
    max_instructions: Option<u64>,
) -> std::io::Result<Summary> {
    let start = Instant::now();
    let start_ticks = machine.time_ticks();
    let mut console_input = console_input;
    let mut pending_byte: Option<u8> = None;
    let ending = loop {
        let executed = machine.instret().0;
        if max_instructions.is_some_and(|limit| executed >= limit) {
            break Ending::InstructionLimit;
        }
        // Console input: one byte at a time, only when the UART FIFO has room.
        if let Some(receiver) = &console_input {
            loop {
                if pending_byte.is_none() {
                    match receiver.try_recv() {
                        Ok(byte) => pending_byte = Some(byte),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            console_input = None;
                            break;
                        }
                    }
                }
                let byte = pending_byte.expect("set above");
                if machine.inject(&Input::ConsoleByte(byte)).is_err() {
                    break;
                }
                pending_byte = None;
            }
        }
        if clock == ClockMode::Wall {
            let wall_ticks = start_ticks + ticks_since(start);
            let guest_ticks = machine.time_ticks();
            if wall_ticks > guest_ticks + CLOCK_LAG_TOLERANCE_TICKS {
                machine
                    .inject(&Input::AdvanceTime {
                        ticks: wall_ticks - guest_ticks,
                    })
                    .expect("time always advances");
            }
        }
        let budget = match max_instructions {
            Some(limit) => RUN_SLICE_INSTRUCTIONS.min(limit - executed),
            None => RUN_SLICE_INSTRUCTIONS,
        };
        let (_, exit) = machine.run(budget);
        output.write_all(&machine.take_console_output())?;
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
            Exit::PowerOff { code } => break Ending::PowerOff { code },
            Exit::Reset => break Ending::Reset,
            Exit::GuestCrashed { cause, tval, pc } => {
                break Ending::GuestCrashed { cause, tval, pc }
            }
            Exit::Idle { wake_at_ticks } => {
                output.flush()?;
                let now_ticks = machine.time_ticks();
                match (clock, wake_at_ticks) {
                    (ClockMode::Virtual, Some(wake)) => {
                        machine
                            .inject(&Input::AdvanceTime {
                                ticks: wake - now_ticks,
                            })
                            .expect("time always advances");
                    }
                    (ClockMode::Wall, wake) => {
                        // Sleep until the timer is due on the wall clock or input arrives.
                        let wait = match wake {
                            Some(wake) => {
                                let wall_ticks = start_ticks + ticks_since(start);
                                Some(duration_from_ticks(
                                    wake.saturating_sub(wall_ticks.max(now_ticks)),
                                ))
                            }
                            None => None,
                        };
                        match (&console_input, pending_byte, wait) {
                            (_, Some(_), _) => {}
                            (Some(receiver), None, wait) => {
                                let received = match wait {
                                    Some(wait) => receiver.recv_timeout(wait),
                                    None => {
                                        receiver.recv().map_err(|_| RecvTimeoutError::Disconnected)
                                    }
                                };
                                match received {
                                    Ok(byte) => pending_byte = Some(byte),
                                    Err(RecvTimeoutError::Timeout) => {}
                                    Err(RecvTimeoutError::Disconnected) => console_input = None,
                                }
                            }
                            (None, None, Some(wait)) => std::thread::sleep(wait),
                            (None, None, None) => break Ending::IdleForever,
                        }
                        let wall_ticks = start_ticks + ticks_since(start);
                        let guest_ticks = machine.time_ticks();
                        if wall_ticks > guest_ticks {
                            machine
                                .inject(&Input::AdvanceTime {
                                    ticks: wall_ticks - guest_ticks,
                                })
                                .expect("time always advances");
                        }
                    }
                    (ClockMode::Virtual, None) => {
                        // Only console input can wake the guest.
                        match (&console_input, pending_byte) {
                            (_, Some(_)) => {}
                            (Some(receiver), None) => match receiver.recv() {
                                Ok(byte) => pending_byte = Some(byte),
                                Err(_) => console_input = None,
                            },
                            (None, None) => break Ending::IdleForever,
                        }
                    }
                }
            }
        }
    };
    output.write_all(&machine.take_console_output())?;
    output.flush()?;
    Ok(Summary {
        ending,
        instructions: machine.instret().0,
        elapsed: start.elapsed(),
    })
}

fn ticks_since(start: Instant) -> u64 {
    (start.elapsed().as_nanos() * u128::from(TIMEBASE_HZ) / 1_000_000_000) as u64
}

fn duration_from_ticks(ticks: u64) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(TIMEBASE_HZ)) as u64)
}
