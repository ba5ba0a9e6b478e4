//! One GDB connection's protocol state, sans-IO: bytes from GDB and a view of the stopped
//! hart in, bytes for GDB and the run state out. The driver (`gdb::GdbDebugger`) owns the
//! socket and the replay; nothing here reads a socket or runs the guest.
//!
//! All-stop mode only (GDB manual, appendix E.1): while the guest runs, GDB sends nothing but
//! the interrupt byte; a packet that arrives anyway waits until the next stop.

use std::collections::{BTreeSet, VecDeque};

use understudy_cpu::{DebugStop, DebugTargets, Hart, WatchKind, Watchpoint};

use super::command::{Command, PointKind, Resume, THREAD_ID};
use super::packet::{encode_packet, escape_binary, push_hex, Decoder, Event, PACKET_BYTES_MAX};
use super::target;

/// Breakpoints of each kind (software, hardware) the stub keeps at most.
pub const BREAKPOINTS_MAX: usize = 256;
/// Watchpoints the stub keeps at most.
pub const WATCHPOINTS_MAX: usize = 64;
/// The most bytes one `m` packet reads: its hex reply fills a packet.
pub const MEMORY_READ_BYTES_MAX: usize = PACKET_BYTES_MAX / 2;

/// Error replies (E.1: "E NN"); GDB shows only that the request failed, the stub's log says
/// why.
const ERROR_READ_ONLY: &[u8] = b"E01";
const ERROR_BAD_ARGUMENTS: &[u8] = b"E02";
const ERROR_TOO_MANY_POINTS: &[u8] = b"E03";
const ERROR_NO_SUCH_REGISTER: &[u8] = b"E04";
const ERROR_NO_SUCH_ANNEX: &[u8] = b"E05";
/// EFAULT, as GDB's own stubs answer a read of unmapped memory.
const ERROR_UNMAPPED: &[u8] = b"E14";

/// SIGTRAP and SIGINT, the signals of stop replies (GDB's own numbering, E.3).
const SIGTRAP: u8 = 5;
const SIGINT: u8 = 2;

/// Where the debugged guest is, from GDB's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Stopped at an instruction boundary; GDB's packets are served.
    Stopped,
    /// Resumed: running until a breakpoint, a watchpoint, Ctrl-C or the end; `Step` for one
    /// instruction (or one trap entry).
    Running(Resume),
    /// GDB detached: the replay goes on to its end unwatched.
    Detached,
    /// GDB killed the target: the replay stops here.
    Killed,
}

/// Why the guest stopped, as a stop reply says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The replay was stopped before it ran (the state GDB finds on connecting).
    Attached,
    /// A single step finished.
    Stepped,
    SoftwareBreakpoint,
    HardwareBreakpoint,
    Watchpoint {
        kind: WatchKind,
        vaddr: u64,
    },
    /// Ctrl-C from GDB.
    Interrupted,
}

/// Something the session wants said in the driver's log (a refused write, a bad packet).
pub type Notice = String;

/// The protocol state of one connection.
pub struct Session {
    decoder: Decoder,
    out: Vec<u8>,
    /// The last packet sent, for a `-` from GDB.
    last_packet: Vec<u8>,
    state: RunState,
    /// Packets that arrived while the guest ran.
    pending: VecDeque<Vec<u8>>,
    software_breakpoints: BTreeSet<u64>,
    hardware_breakpoints: BTreeSet<u64>,
    watchpoints: Vec<Watchpoint>,
    last_stop: Stop,
    notices: Vec<Notice>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A session with the guest stopped before anything ran.
    pub fn new() -> Session {
        Session {
            decoder: Decoder::default(),
            out: Vec::new(),
            last_packet: Vec::new(),
            state: RunState::Stopped,
            pending: VecDeque::new(),
            software_breakpoints: BTreeSet::new(),
            hardware_breakpoints: BTreeSet::new(),
            watchpoints: Vec::new(),
            last_stop: Stop::Attached,
            notices: Vec::new(),
        }
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    /// Bytes to send to GDB, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Lines for the driver's log, taken.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Bytes from GDB. While stopped, every complete packet is answered from `hart`
    /// (`instructions`: the replay's instruction count) until one resumes the guest; while
    /// running, Ctrl-C stops it (`RunState::Stopped` then: the driver stops the replay at
    /// this boundary and calls nothing else).
    pub fn receive(&mut self, bytes: &[u8], hart: &Hart, instructions: u64) {
        for &byte in bytes {
            match self.decoder.push(byte) {
                None | Some(Event::Ack) => {}
                Some(Event::Nak) => {
                    let again = self.last_packet.clone();
                    self.out.extend_from_slice(&again);
                }
                Some(Event::Interrupt) => {
                    if let RunState::Running(_) = self.state {
                        self.stop(Stop::Interrupted);
                    }
                }
                Some(Event::Malformed(error)) => {
                    self.out.push(b'-');
                    self.notices.push(format!("gdb: {error}"));
                }
                Some(Event::Packet(payload)) => {
                    self.out.push(b'+');
                    self.pending.push_back(payload);
                }
            }
        }
        self.serve(hart, instructions);
    }

    /// Answers waiting packets while stopped.
    fn serve(&mut self, hart: &Hart, instructions: u64) {
        while self.state == RunState::Stopped {
            let Some(payload) = self.pending.pop_front() else {
                break;
            };
            match Command::parse(&payload) {
                Ok(command) => self.handle(command, hart, instructions),
                Err(error) => {
                    self.notices.push(format!("gdb: {error}"));
                    self.reply(ERROR_BAD_ARGUMENTS);
                }
            }
        }
    }

    /// The guest stopped while running: sends the stop reply.
    pub fn stop(&mut self, stop: Stop) {
        self.last_stop = stop;
        self.state = RunState::Stopped;
        let reply = stop_reply(stop);
        self.reply(&reply);
    }

    /// Serves packets that arrived while the guest ran (after `stop`).
    pub fn serve_pending(&mut self, hart: &Hart, instructions: u64) {
        self.serve(hart, instructions);
    }

    /// The replay reached its end with this status (the guest's power-off code, 0 at the
    /// end of a log without one): `W` (E.3 "Stop Reply Packets").
    pub fn exited(&mut self, status: u8) {
        self.reply(format!("W{status:02x}").as_bytes());
        self.state = RunState::Detached;
    }

    /// The replay failed (it diverged from the recording): `X` with SIGABRT.
    pub fn aborted(&mut self) {
        const SIGABRT: u8 = 6;
        self.reply(format!("X{SIGABRT:02x}").as_bytes());
        self.state = RunState::Detached;
    }

    /// GDB hung up.
    pub fn disconnected(&mut self) {
        if self.state != RunState::Killed {
            self.state = RunState::Detached;
        }
    }

    /// What the next run must stop at: the breakpoints, the watchpoints, and a trap entry
    /// when single-stepping.
    pub fn targets(&self, resume: Resume) -> DebugTargets {
        DebugTargets {
            breakpoints: match resume {
                // A step runs one instruction: GDB steps off a breakpoint with the step.
                Resume::Step => BTreeSet::new(),
                Resume::Continue => self
                    .software_breakpoints
                    .union(&self.hardware_breakpoints)
                    .copied()
                    .collect(),
            },
            watchpoints: self.watchpoints.clone(),
            stop_at_trap_entry: resume == Resume::Step,
        }
    }

    /// True when a breakpoint is set at `pc`.
    pub fn breakpoint_at(&self, pc: u64) -> bool {
        self.software_breakpoints.contains(&pc) || self.hardware_breakpoints.contains(&pc)
    }

    /// The stop a hit of a run means to GDB.
    pub fn stop_for(&self, hit: DebugStop) -> Stop {
        match hit {
            DebugStop::Breakpoint { pc } if self.software_breakpoints.contains(&pc) => {
                Stop::SoftwareBreakpoint
            }
            DebugStop::Breakpoint { .. } => Stop::HardwareBreakpoint,
            DebugStop::Watchpoint { watchpoint, vaddr } => Stop::Watchpoint {
                kind: watchpoint.kind,
                vaddr,
            },
            DebugStop::TrapEntered => Stop::Stepped,
        }
    }

    fn reply(&mut self, payload: &[u8]) {
        let mut packet = Vec::with_capacity(payload.len() + 4);
        encode_packet(payload, &mut packet);
        self.out.extend_from_slice(&packet);
        self.last_packet = packet;
    }

    fn handle(&mut self, command: Command, hart: &Hart, instructions: u64) {
        match command {
            Command::Supported => {
                let features = format!(
                    "PacketSize={PACKET_BYTES_MAX:x};qXfer:features:read+;swbreak+;hwbreak+;vContSupported+"
                );
                self.reply(features.as_bytes());
            }
            Command::HaltReason => {
                let reply = stop_reply(self.last_stop);
                self.reply(&reply);
            }
            Command::ReadRegisters => {
                let mut hex = Vec::new();
                push_hex(&target::g_packet_registers(hart), &mut hex);
                self.reply(&hex);
            }
            Command::ReadRegister(number) => match target::register(hart, number) {
                Some(bytes) => {
                    let mut hex = Vec::new();
                    push_hex(&bytes, &mut hex);
                    self.reply(&hex);
                }
                None => self.reply(ERROR_NO_SUCH_REGISTER),
            },
            Command::WriteRegisters | Command::WriteRegister | Command::WriteMemory => {
                self.notices.push(
                    "gdb: refused a write to registers or memory: a replay runs exactly as recorded"
                        .into(),
                );
                self.reply(ERROR_READ_ONLY);
            }
            Command::ReadMemory { addr, len_bytes } => {
                let len = (len_bytes as usize).min(MEMORY_READ_BYTES_MAX);
                let mut bytes = vec![0u8; len];
                let read = hart.debug_read(addr, &mut bytes);
                if read == 0 && len > 0 {
                    self.reply(ERROR_UNMAPPED);
                } else {
                    // A short read answers with the bytes that exist (E.2 'm').
                    let mut hex = Vec::new();
                    push_hex(&bytes[..read], &mut hex);
                    self.reply(&hex);
                }
            }
            Command::Insert {
                kind,
                addr,
                len_bytes,
            } => {
                let inserted = match kind {
                    PointKind::Software => insert(&mut self.software_breakpoints, addr),
                    PointKind::Hardware => insert(&mut self.hardware_breakpoints, addr),
                    PointKind::Write | PointKind::Read | PointKind::Access => {
                        let watchpoint = Watchpoint {
                            vaddr: addr,
                            len_bytes: len_bytes.max(1),
                            kind: watch_kind(kind),
                        };
                        if self.watchpoints.contains(&watchpoint) {
                            true
                        } else if self.watchpoints.len() < WATCHPOINTS_MAX {
                            self.watchpoints.push(watchpoint);
                            true
                        } else {
                            false
                        }
                    }
                };
                self.reply(if inserted {
                    b"OK"
                } else {
                    ERROR_TOO_MANY_POINTS
                });
            }
            Command::Remove {
                kind,
                addr,
                len_bytes,
            } => {
                match kind {
                    PointKind::Software => {
                        self.software_breakpoints.remove(&addr);
                    }
                    PointKind::Hardware => {
                        self.hardware_breakpoints.remove(&addr);
                    }
                    PointKind::Write | PointKind::Read | PointKind::Access => {
                        let kind = watch_kind(kind);
                        let len_bytes = len_bytes.max(1);
                        self.watchpoints.retain(|watchpoint| {
                            *watchpoint
                                != Watchpoint {
                                    vaddr: addr,
                                    len_bytes,
                                    kind,
                                }
                        });
                    }
                }
                self.reply(b"OK");
            }
            Command::Resume(resume) => self.state = RunState::Running(resume),
            Command::VContSupported => self.reply(b"vCont;c;C;s;S"),
            Command::Kill => {
                self.reply(b"OK");
                self.state = RunState::Killed;
            }
            Command::Detach => {
                self.reply(b"OK");
                self.state = RunState::Detached;
            }
            // Attached to an existing process: killing it is not what quitting GDB should do.
            Command::Attached => self.reply(b"1"),
            Command::CurrentThread => self.reply(format!("QC{THREAD_ID:x}").as_bytes()),
            Command::FirstThreadInfo => self.reply(format!("m{THREAD_ID:x}").as_bytes()),
            Command::NextThreadInfo => self.reply(b"l"),
            Command::SetThread | Command::ThreadAlive => self.reply(b"OK"),
            Command::ReadFeatures {
                annex,
                offset,
                length,
            } => {
                if annex != "target.xml" {
                    self.reply(ERROR_NO_SUCH_ANNEX);
                    return;
                }
                let xml = target::target_xml().into_bytes();
                let start = (offset as usize).min(xml.len());
                // Escaping may double a byte; half a packet always fits.
                let length = (length as usize).min(PACKET_BYTES_MAX / 2 - 1);
                let end = start.saturating_add(length).min(xml.len());
                let mut reply = vec![if end == xml.len() { b'l' } else { b'm' }];
                escape_binary(&xml[start..end], &mut reply);
                self.reply(&reply);
            }
            Command::Monitor(command) => {
                let text = match command.trim() {
                    "icount" => format!("instruction count {instructions}\n"),
                    other => format!("unknown monitor command {other:?}; try: monitor icount\n"),
                };
                let mut output = vec![b'O'];
                push_hex(text.as_bytes(), &mut output);
                self.reply(&output);
                self.reply(b"OK");
            }
            Command::Unknown => self.reply(b""),
        }
    }
}

fn insert(points: &mut BTreeSet<u64>, addr: u64) -> bool {
    if points.len() >= BREAKPOINTS_MAX && !points.contains(&addr) {
        return false;
    }
    points.insert(addr);
    true
}

fn watch_kind(kind: PointKind) -> WatchKind {
    match kind {
        PointKind::Write => WatchKind::Write,
        PointKind::Read => WatchKind::Read,
        _ => WatchKind::Access,
    }
}

/// The `T` stop reply (E.3): the signal, the thread, and why.
fn stop_reply(stop: Stop) -> Vec<u8> {
    let signal = if stop == Stop::Interrupted {
        SIGINT
    } else {
        SIGTRAP
    };
    let reason = match stop {
        Stop::SoftwareBreakpoint => "swbreak:;".to_owned(),
        Stop::HardwareBreakpoint => "hwbreak:;".to_owned(),
        Stop::Watchpoint { kind, vaddr } => {
            let name = match kind {
                WatchKind::Write => "watch",
                WatchKind::Read => "rwatch",
                WatchKind::Access => "awatch",
            };
            format!("{name}:{vaddr:x};")
        }
        Stop::Attached | Stop::Stepped | Stop::Interrupted => String::new(),
    };
    format!("T{signal:02x}thread:{THREAD_ID:x};{reason}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_cpu::{GuestPhysAddr, HartConfig, Privilege};

    const RAM_BASE: u64 = 0x8000_0000;

    fn hart() -> Hart {
        let mut hart = Hart::new(HartConfig {
            ram_base: GuestPhysAddr(RAM_BASE),
            ram_size_bytes: 1 << 20,
            host_monitor: true,
        });
        hart.write_phys(GuestPhysAddr(RAM_BASE + 0x100), b"Linux version 6.1")
            .unwrap();
        hart.reset(RAM_BASE, Privilege::Machine, 0, 0);
        hart
    }

    fn packet(payload: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_packet(payload.as_bytes(), &mut out);
        out
    }

    /// Sends `payload` to a stopped session and returns its reply payloads in order.
    fn ask(session: &mut Session, payload: &str) -> Vec<String> {
        session.receive(&packet(payload), &hart(), 42);
        replies(&session.take_output())
    }

    fn replies(output: &[u8]) -> Vec<String> {
        let mut decoder = Decoder::default();
        output
            .iter()
            .filter_map(|&byte| decoder.push(byte))
            .filter_map(|event| match event {
                Event::Packet(payload) => Some(String::from_utf8_lossy(&payload).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_connect_sequence_is_answered_as_a_stopped_single_threaded_target() {
        let mut session = Session::new();
        assert_eq!(
            ask(&mut session, "qSupported:multiprocess+;swbreak+;hwbreak+"),
            ["PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+"]
        );
        assert_eq!(ask(&mut session, "vMustReplyEmpty"), [""]);
        assert_eq!(ask(&mut session, "?"), ["T05thread:1;"]);
        assert_eq!(ask(&mut session, "qfThreadInfo"), ["m1"]);
        assert_eq!(ask(&mut session, "qsThreadInfo"), ["l"]);
        assert_eq!(ask(&mut session, "qC"), ["QC1"]);
        assert_eq!(ask(&mut session, "qAttached"), ["1"]);
        assert_eq!(ask(&mut session, "Hg0"), ["OK"]);
        assert_eq!(ask(&mut session, "vCont?"), ["vCont;c;C;s;S"]);
    }

    #[test]
    fn every_packet_is_acknowledged_before_its_reply() {
        let mut session = Session::new();
        session.receive(&packet("qC"), &hart(), 0);
        assert_eq!(session.take_output(), b"+$QC1#c5");
    }

    #[test]
    fn a_damaged_packet_gets_a_nak_and_a_nak_gets_the_last_reply_again() {
        let mut session = Session::new();
        session.receive(b"$qC#00", &hart(), 0);
        assert_eq!(session.take_output(), b"-");
        assert_eq!(session.take_notices().len(), 1);
        session.receive(&packet("qC"), &hart(), 0);
        session.take_output();
        session.receive(b"-", &hart(), 0);
        assert_eq!(session.take_output(), b"$QC1#c5");
    }

    #[test]
    fn the_target_description_is_read_in_pieces_ending_with_l() {
        let mut session = Session::new();
        let xml = target::target_xml();
        let first = ask(&mut session, "qXfer:features:read:target.xml:0,40");
        assert_eq!(first, [format!("m{}", &xml[..0x40])]);
        let rest = ask(
            &mut session,
            &format!("qXfer:features:read:target.xml:40,{:x}", xml.len()),
        );
        assert_eq!(rest, [format!("l{}", &xml[0x40..])]);
        assert_eq!(
            ask(&mut session, "qXfer:features:read:other.xml:0,40"),
            ["E05"]
        );
    }

    #[test]
    fn memory_reads_return_guest_bytes_and_unmapped_memory_is_an_error() {
        let mut session = Session::new();
        assert_eq!(
            ask(&mut session, "m80000100,d"),
            ["4c696e75782076657273696f6e"]
        );
        assert_eq!(ask(&mut session, "m10,4"), ["E14"]);
        // The last bytes of RAM, then nothing: a short read.
        assert_eq!(ask(&mut session, "m800ffffe,4"), ["0000"]);
    }

    #[test]
    fn registers_read_and_writes_are_refused_with_a_notice() {
        let mut session = Session::new();
        assert_eq!(ask(&mut session, "p20"), ["0000008000000000"]);
        assert_eq!(ask(&mut session, "p1000"), ["E04"]);
        let g = &ask(&mut session, "g")[0];
        assert_eq!(g.len(), 2 * (33 * 8 + 32 * 8 + 12));
        assert_eq!(ask(&mut session, "P20=0000000000000000"), ["E01"]);
        assert_eq!(ask(&mut session, "M80000100,1:00"), ["E01"]);
        assert_eq!(ask(&mut session, "G00"), ["E01"]);
        assert_eq!(session.take_notices().len(), 3);
        assert_eq!(ask(&mut session, "m80000100,1"), ["4c"], "memory unchanged");
    }

    #[test]
    fn breakpoints_and_watchpoints_become_the_targets_of_the_next_run() {
        let mut session = Session::new();
        assert_eq!(ask(&mut session, "Z0,80000010,4"), ["OK"]);
        assert_eq!(ask(&mut session, "Z1,80000020,2"), ["OK"]);
        assert_eq!(ask(&mut session, "Z2,80000100,8"), ["OK"]);
        assert_eq!(ask(&mut session, "Z9,80000100,8"), [""]);
        let targets = session.targets(Resume::Continue);
        assert_eq!(
            targets.breakpoints.into_iter().collect::<Vec<_>>(),
            [0x8000_0010, 0x8000_0020]
        );
        assert_eq!(
            targets.watchpoints,
            [Watchpoint {
                vaddr: 0x8000_0100,
                len_bytes: 8,
                kind: WatchKind::Write
            }]
        );
        assert!(!targets.stop_at_trap_entry);
        let step = session.targets(Resume::Step);
        assert!(step.breakpoints.is_empty() && step.stop_at_trap_entry);
        assert_eq!(
            session.stop_for(DebugStop::Breakpoint { pc: 0x8000_0020 }),
            Stop::HardwareBreakpoint
        );
        assert_eq!(ask(&mut session, "z0,80000010,4"), ["OK"]);
        assert_eq!(ask(&mut session, "z2,80000100,8"), ["OK"]);
        let targets = session.targets(Resume::Continue);
        assert_eq!(targets.breakpoints.len(), 1);
        assert!(targets.watchpoints.is_empty());
    }

    #[test]
    fn breakpoints_past_the_limit_are_refused() {
        let mut session = Session::new();
        for i in 0..BREAKPOINTS_MAX as u64 {
            assert_eq!(
                ask(&mut session, &format!("Z0,{:x},4", 0x1000 + 4 * i)),
                ["OK"]
            );
        }
        assert_eq!(ask(&mut session, "Z0,1000,4"), ["OK"], "one already set");
        assert_eq!(ask(&mut session, "Z0,ffff0,4"), ["E03"]);
    }

    #[test]
    fn a_resume_runs_the_guest_and_a_stop_reply_names_the_reason() {
        let mut session = Session::new();
        assert_eq!(ask(&mut session, "vCont;c"), Vec::<String>::new());
        assert_eq!(session.state(), RunState::Running(Resume::Continue));
        // GDB waits while the guest runs; a packet sent anyway is answered after the stop.
        assert_eq!(ask(&mut session, "qC"), Vec::<String>::new());
        session.stop(Stop::Watchpoint {
            kind: WatchKind::Read,
            vaddr: 0xffff_ffff_8000_1000,
        });
        session.serve_pending(&hart(), 0);
        assert_eq!(
            replies(&session.take_output()),
            ["T05thread:1;rwatch:ffffffff80001000;", "QC1"]
        );
        assert_eq!(
            ask(&mut session, "?"),
            ["T05thread:1;rwatch:ffffffff80001000;"]
        );
        ask(&mut session, "c");
        session.stop(Stop::SoftwareBreakpoint);
        assert_eq!(replies(&session.take_output()), ["T05thread:1;swbreak:;"]);
    }

    #[test]
    fn ctrl_c_stops_a_running_guest_with_sigint_and_is_ignored_when_stopped() {
        let mut session = Session::new();
        session.receive(b"\x03", &hart(), 0);
        assert_eq!(session.take_output(), b"");
        ask(&mut session, "s");
        assert_eq!(session.state(), RunState::Running(Resume::Step));
        session.receive(b"\x03", &hart(), 0);
        assert_eq!(session.state(), RunState::Stopped);
        assert_eq!(replies(&session.take_output()), ["T02thread:1;"]);
    }

    #[test]
    fn the_end_of_the_replay_is_an_exit_and_kill_and_detach_end_the_session() {
        let mut session = Session::new();
        ask(&mut session, "c");
        session.exited(0);
        assert_eq!(replies(&session.take_output()), ["W00"]);
        let mut killed = Session::new();
        assert_eq!(ask(&mut killed, "vKill;1"), ["OK"]);
        assert_eq!(killed.state(), RunState::Killed);
        let mut detached = Session::new();
        assert_eq!(ask(&mut detached, "D"), ["OK"]);
        assert_eq!(detached.state(), RunState::Detached);
    }

    #[test]
    fn a_monitor_command_prints_the_instruction_count() {
        let mut session = Session::new();
        // "icount" in hex; the reply is console output ("O" + hex), then OK.
        let text = hex::encode_text("instruction count 42\n");
        assert_eq!(
            ask(&mut session, "qRcmd,69636f756e74"),
            [format!("O{text}"), "OK".to_owned()]
        );
    }

    #[test]
    fn malformed_arguments_get_an_error_reply_and_a_notice() {
        let mut session = Session::new();
        assert_eq!(ask(&mut session, "mzz,4"), ["E02"]);
        assert_eq!(
            session.take_notices(),
            ["gdb: malformed arguments in GDB packet \"mzz,4\""]
        );
    }

    mod hex {
        pub fn encode_text(text: &str) -> String {
            text.bytes().map(|byte| format!("{byte:02x}")).collect()
        }
    }
}
