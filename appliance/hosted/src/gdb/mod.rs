//! `understudy replay --gdb ADDR`: a GDB remote stub on a replay, which stops, steps and
//! reads the guest without changing where any recorded input enters.
//!
//! The replay loop (`replay::replay_recorded`) stays the one that feeds the log's entries and
//! checks its digests; it hands each slice to `GdbDebugger::run`, which waits while GDB has the
//! guest stopped and otherwise runs the slice with `Replica::run_debug`: the same entries at
//! the same instruction counts, the machine only stopping earlier, at a breakpoint, a
//! watchpoint or the end of a single step. Stops fall between instructions, so an input
//! recorded at count N still enters at N, whether the guest got there in one slice or by
//! steps. Breakpoints and watchpoints live in the stub (nothing is written into guest memory)
//! and reads translate through the guest's page tables without touching A/D bits, the TLBs
//! or the dirty-page set, so the state digests come out as recorded.
//!
//! Reverse execution (`reverse-stepi`, `reverse-continue`: the `bs` and `bc` packets) is not
//! served yet. It needs the machine to save and restore its state in bounded pieces: the
//! replay would keep a snapshot every so many instructions, and going back from count N to
//! N - 1 would restore the nearest snapshot at or before N - 1 and re-execute from there with
//! the same log (replay is exact, so it arrives at the same state); `bc` would re-execute the
//! stretch back to that snapshot watching for the last breakpoint or watchpoint hit before N,
//! snapshot by snapshot towards the start.

pub mod command;
pub mod packet;
pub mod session;
pub mod target;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use understudy_cpu::{DebugStop, DebugTargets};
use understudy_ft::Instant as ProtocolInstant;
use understudy_replica::{Replica, Step};

use crate::record::RecordedEnding;
use crate::replay::{ReplayDebugger, ReplayOutcome};
use command::Resume;
use session::{RunState, Session, Stop};

/// Bytes read from GDB at a time.
const READ_BUFFER_BYTES: usize = 4096;
/// How long the stub waits, after its last reply, for GDB to close the connection.
const CLOSE_WAIT_MS: u64 = 2_000;

/// A GDB connection driving a replay.
pub struct GdbDebugger {
    listener: TcpListener,
    stream: Option<TcpStream>,
    session: Session,
    /// The count and pc where GDB last resumed the guest, until it runs.
    resumed_at: Option<(u64, u64)>,
    /// The count and pc of the last stop at a breakpoint or watchpoint: resumed from there,
    /// the guest first executes the instruction it stopped before, unchecked.
    hit_at: Option<(u64, u64)>,
}

impl GdbDebugger {
    /// A stub that takes its one connection from `listener` when the replay starts.
    pub fn new(listener: TcpListener) -> GdbDebugger {
        GdbDebugger {
            listener,
            stream: None,
            session: Session::new(),
            resumed_at: None,
            hit_at: None,
        }
    }

    fn stream(&mut self) -> Result<&mut TcpStream> {
        if self.stream.is_none() {
            let (stream, peer) = self
                .listener
                .accept()
                .context("cannot accept the debugger's connection")?;
            stream.set_nodelay(true)?;
            eprintln!("replay: gdb connected from {peer}");
            self.stream = Some(stream);
        }
        Ok(self.stream.as_mut().expect("connected above"))
    }

    /// Reads what GDB sent (waiting for it when `wait`), hands it to the session with a view
    /// of the stopped guest, and sends the replies.
    fn exchange(&mut self, replica: &Replica, wait: bool) -> Result<()> {
        let mut buffer = [0u8; READ_BUFFER_BYTES];
        let stream = self.stream()?;
        stream.set_nonblocking(!wait)?;
        let read = stream.read(&mut buffer);
        stream.set_nonblocking(false)?;
        let bytes = match read {
            Ok(0) => {
                self.disconnected();
                return Ok(());
            }
            Ok(read) => &buffer[..read],
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(error) if hung_up(&error) => {
                self.disconnected();
                return Ok(());
            }
            Err(error) => return Err(error).context("cannot read from the debugger"),
        };
        let machine = replica.machine();
        let was_stopped = self.session.state() == RunState::Stopped;
        self.session
            .receive(bytes, machine.hart(), machine.instret().0);
        if was_stopped && matches!(self.session.state(), RunState::Running(_)) {
            self.resumed_at = Some((machine.instret().0, machine.hart().pc()));
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        for notice in self.session.take_notices() {
            eprintln!("replay: {notice}");
        }
        let output = self.session.take_output();
        if let (Some(stream), false) = (self.stream.as_mut(), output.is_empty()) {
            match stream.write_all(&output) {
                Ok(()) => {}
                Err(error) if hung_up(&error) => self.disconnected(),
                Err(error) => return Err(error).context("cannot write to the debugger"),
            }
        }
        Ok(())
    }

    /// GDB went away without detaching: the replay is not its to stop, so it goes on.
    fn disconnected(&mut self) {
        eprintln!("replay: gdb disconnected; replaying to the end");
        self.session.disconnected();
        self.stream = None;
    }

    fn stop(&mut self, stop: Stop, replica: &Replica) -> Result<()> {
        self.session.stop(stop);
        let machine = replica.machine();
        self.session
            .serve_pending(machine.hart(), machine.instret().0);
        self.flush()
    }
}

/// Errors that mean the other end closed the connection.
fn hung_up(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

impl ReplayDebugger for GdbDebugger {
    fn run(&mut self, replica: &mut Replica, now: ProtocolInstant, slice: u64) -> Result<Step> {
        while self.session.state() == RunState::Stopped {
            self.exchange(replica, true)?;
        }
        let resume = match self.session.state() {
            RunState::Running(resume) => resume,
            RunState::Detached => return Ok(replica.run(now, slice)),
            RunState::Killed => bail!(
                "the debugger killed the replay at instruction {}; the rest of the recording was not checked",
                replica.machine().instret().0
            ),
            RunState::Stopped => unreachable!("served above"),
        };
        // Ctrl-C arrives between slices.
        self.exchange(replica, false)?;
        if self.session.state() != RunState::Running(resume) {
            return Ok(Step::Ran(0));
        }
        let machine = replica.machine();
        let here = (machine.instret().0, machine.hart().pc());
        let step_off = self.resumed_at.take() == Some(here)
            && (self.hit_at == Some(here) || self.session.breakpoint_at(here.1));
        let (step, hit) = if step_off {
            // The instruction the guest stopped before runs first, without the breakpoint or
            // watchpoint that stopped it (RISC-V watchpoints stop before the access), or the
            // guest could never get past it. A trap entry still ends it: its handler may
            // hold a breakpoint of its own.
            let (step, hit) = replica.run_debug(
                now,
                slice.min(1),
                &DebugTargets {
                    stop_at_trap_entry: true,
                    ..DebugTargets::default()
                },
            );
            let hit = match resume {
                Resume::Step => hit,
                Resume::Continue => hit.filter(|hit| *hit != DebugStop::TrapEntered),
            };
            (step, hit)
        } else {
            let budget = match resume {
                Resume::Step => slice.min(1),
                Resume::Continue => slice,
            };
            replica.run_debug(now, budget, &self.session.targets(resume))
        };
        let machine = replica.machine();
        let at = (machine.instret().0, machine.hart().pc());
        match (hit, resume, step) {
            (Some(hit), _, _) => {
                let stop = self.session.stop_for(hit);
                self.hit_at = matches!(
                    stop,
                    Stop::SoftwareBreakpoint | Stop::HardwareBreakpoint | Stop::Watchpoint { .. }
                )
                .then_some(at);
                self.stop(stop, replica)?;
            }
            (None, Resume::Step, Step::Ran(executed)) if executed > 0 => {
                self.hit_at = None;
                self.stop(Stop::Stepped, replica)?;
            }
            _ => {}
        }
        Ok(step)
    }

    fn finished(&mut self, result: Result<&ReplayOutcome, &anyhow::Error>) {
        if self.stream.is_none() || !matches!(self.session.state(), RunState::Running(_)) {
            return;
        }
        match result {
            Ok(outcome) => self.session.exited(match outcome.ending {
                RecordedEnding::PowerOff { code } => (code & 0xff) as u8,
                RecordedEnding::Stopped => 0,
            }),
            Err(_) => self.session.aborted(),
        }
        if self.flush().is_err() {
            return;
        }
        // GDB hangs up after the exit; waiting for it lets the last reply arrive whole.
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_millis(CLOSE_WAIT_MS);
        let mut buffer = [0u8; READ_BUFFER_BYTES];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
