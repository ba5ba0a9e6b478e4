//! The replica runtime: one `Machine` driven by one `ft::Node`, the same code for every driver.
//!
//! The hosted process, the bare-metal kernel and the tests pass time, received datagrams and
//! outside inputs in, and take datagrams, released outputs and events out; nothing here reads
//! a clock, opens a socket or sleeps (sans-IO, like `ft` itself).
//!
//! - **Primary** (and solo primary): an input enters the guest only through
//!   [`Replica::offer_input`], which asks the node whether it can be logged *before* the
//!   machine takes it, so an input is either injected and logged, or neither. After every run
//!   slice the guest's outputs (console bytes, transmitted frames) are submitted with the
//!   instruction count that produced them and leave only when [`Replica::poll_release`] hands
//!   them out (the output rule). Execution never waits for acknowledgements; flow control
//!   shortens the slices and at worst stops them ([`Step::Throttled`]).
//! - **Backup**: [`Replica::run`] executes exactly up to the node's horizon, injecting each
//!   logged input at its instruction count, computing a digest at each logged digest and
//!   keeping its own outputs in (they are reissued at go-live if the primary may not have
//!   released them).
//! - **Identity**: before the guest's first instruction the primary logs two digests at count
//!   0, the disk's and the machine's (images, memory size, command line). A backup checks
//!   them before it acknowledges anything, so a pair whose images or disks differ never
//!   counts as protected; the primary runs the guest only once those two entries are
//!   acknowledged ([`Replica::is_paired`]).
//! - **Go-live**: the node drains the log, then the runtime leaves replay and runs as a solo
//!   primary; [`Event::AnnounceMac`] reaches the driver, which calls [`announce_frames`].
//! - **Shared disk**: with a [`SharedDisk`] as the machine's disk backend, the guest's
//!   writes are outputs of the [`DISK`] device (held by the output rule like any other, and
//!   written to the one image by the driver once released, [`Replica::disk_written`]), and
//!   the data its reads returned is logged, so the backup never reads the image.
//! - **Re-protection** ([`join`]): a live primary answers a joining replica's `Join` with
//!   a state transfer while its guest runs (disk ranges by digest, RAM in pre-copy rounds,
//!   then a short pause for the last pages and the devices); the joiner installs it, checks
//!   the state digest and becomes the backup ([`Replica::joining`]).
//! - **Standalone and recordings**: [`Replica::standalone`] runs the guest with no backup and
//!   no arbiter (`understudy run-guest`) and hands every entry it records to the driver
//!   ([`Replica::poll_recorded`]), which may save them: a record file is the replication
//!   stream saved to a file. A backup over [`Node::file_backup`] replays such a file: the
//!   driver passes the entries in with [`Replica::push_entries`] instead of frames.
#![no_std]
#![forbid(unsafe_code)]
extern crate alloc;

pub mod announce;
pub mod etcd;
pub mod join;
pub mod logfmt;
pub mod metrics;
pub mod shared_disk;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use understudy_ft::node::{Counters, HaltReason, LagLimit};
use understudy_ft::{
    DeviceId, Epoch, Event, Instant, InstructionCount, Limits, LogEntry, LogSequence, Node,
    NodeError, Record, ReleasedOutput, RoleKind, StateDigest, Transmit,
};
use understudy_machine::devices::virtio::RxError;
use understudy_machine::{DebugStop, DebugTargets, Exit, InjectError, Input, Machine};

pub use announce::announce_frames;
pub use join::{JoinPhase, JoinProgress, TransferLimits};
use join::{Joiner, LiveJoin, LiveStep};
pub use shared_disk::{split_disk_payload, DiskMode, SharedDisk, DISK_OFFSET_BYTES};

/// The guest's console (UART) as an `ft` device.
pub const CONSOLE: DeviceId = DeviceId(1);
/// The guest's network card (virtio-net) as an `ft` device.
pub const NET: DeviceId = DeviceId(2);
/// The guest's shared disk (virtio-blk over a [`SharedDisk`]): its outputs are writes, its
/// inputs the data of reads; both carry the 8-byte little-endian byte offset, then the data.
pub const DISK: DeviceId = DeviceId(3);

/// Bytes a logged disk read spends on the entry around its data (count, record and device
/// tags, length, offset), generously: read data is split into pieces that fit one log batch.
const DISK_READ_ENTRY_OVERHEAD_BYTES: usize = 64;

/// A primary that records nothing else tells the backup its progress (a `Horizon` entry) at
/// least this often, in guest instructions.
pub const HORIZON_INTERVAL_INSTRUCTIONS: u64 = 4_000_000;

/// Entries recorded and not yet taken by the driver (`Replica::poll_recorded`); at this many
/// the replica runs no further and takes no input until the driver takes them.
pub const RECORDED_ENTRIES_MAX: usize = 4096;

/// Log positions of the identity digests the primary records before the guest runs.
/// The disk comes first: a disk of another size also changes the machine's device state, and
/// "the disks differ" is the message that says what to fix.
const IDENTITY_DISK: LogSequence = LogSequence(1);
const IDENTITY_MACHINE: LogSequence = LogSequence(2);

/// What the driver tells the runtime about its guest, beyond the machine itself.
#[derive(Clone, Copy, Debug)]
pub struct GuestIdentity {
    /// SHA-256 of the disk's contents (all zeroes without a disk).
    pub disk_sha256: [u8; 32],
}

/// Why an input was not taken now. Nothing changed: offer it again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The guest cannot take it yet (full UART FIFO, no receive buffer posted).
    GuestBusy,
    /// The guest has no such device (or the frame is unusable); drop the input.
    NoDevice,
    /// The log cannot take it now (flow control: the backup is too far behind).
    Log(NodeError),
    /// This replica is not a live primary (a backup takes inputs from the log only).
    NotLive(RoleKind),
    /// The input is larger than one log batch; it can never be logged.
    TooLarge,
    /// The driver has not taken the recorded entries ([`Replica::poll_recorded`]); take them,
    /// then offer the input again.
    RecordingFull,
}

/// What one call of [`Replica::run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Executed this many instructions; call again.
    Ran(u64),
    /// A live primary waits for flow control (the backup's acknowledgements).
    Throttled,
    /// A backup has executed everything the log allows; wait for frames.
    WaitingForLog,
    /// A primary waits for its backup to confirm the identity digests.
    WaitingForBackup,
    /// The guest waits for an interrupt; a live primary advances time or delivers an input.
    Idle {
        /// Guest time (ticks) at which its timer fires, if armed.
        wake_at_ticks: Option<u64>,
    },
    /// The guest powered off, reset or crashed (on a backup: at the same count as the
    /// primary). The replica runs no further.
    GuestStopped(Exit),
    /// A joining replica waits for the live primary's state (frames, then `run` again).
    Joining,
    /// The node is halted (fenced, lost arbitration, diverged); see [`Replica::halt_reason`].
    Halted,
}

/// Why a backup stopped: it cannot be a faithful copy any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The primary's guest images (kernel, initrd, memory size, command line) differ.
    Images,
    /// The disks differ by SHA-256.
    Disks,
    /// A state digest differed at this instruction count.
    State {
        /// The first differing count.
        at: InstructionCount,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Images => f.write_str(
                "the primary runs other guest images (kernel, initrd, memory or command line); give both machines the same",
            ),
            Mismatch::Disks => f.write_str(
                "the disks differ by SHA-256; copy the primary's disk to the backup before starting the pair",
            ),
            Mismatch::State { at } => {
                write!(f, "the guest diverged from the primary's at instruction {at}")
            }
        }
    }
}

/// Figures for `understudy status` and the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's role.
    pub role: RoleKind,
    /// The node's epoch.
    pub epoch: Epoch,
    /// Instructions executed by this machine.
    pub instructions: u64,
    /// The last log position appended (primary) or received (backup).
    pub log_end: LogSequence,
    /// The last position the backup acknowledged (primary).
    pub acknowledged: LogSequence,
    /// Outputs submitted and not yet released (primary) or kept for reissue (backup).
    pub outputs_held: u64,
    /// Log entries recorded (primary) or replayed (backup).
    pub entries: u64,
    /// Digests compared with the primary's and found equal (backup).
    pub digests_matched: u64,
    /// Instructions of lag: a primary's executed past what the backup acknowledged, a
    /// backup's still to execute up to its horizon.
    pub lag_instructions: u64,
    /// When the arbiter was last heard (it answers every report).
    pub arbiter_heard_at: Option<Instant>,
    /// Protocol counters.
    pub counters: Counters,
    /// A primary with a backup that installed its state and follows the log (or a backup
    /// that does): failover would lose nothing.
    pub protected: bool,
    /// The join in progress on either side, or the last one.
    pub join: JoinProgress,
}

/// One output the guest produced that the backup has not yet matched to the primary's marker.
#[derive(Debug)]
struct PendingOutput {
    device: DeviceId,
    payload: Vec<u8>,
}

/// Something the primary must log before its machine runs again.
#[derive(Debug)]
enum Unlogged {
    /// An output, logged (as a marker) at the count the machine is at when it is logged.
    Output(PendingOutput),
    /// Data a disk read returned, logged at the count where the `Machine::run` that read it
    /// began: the machine carries out queued requests inside `run` (right after the access
    /// that notified the queue), so a backup must hold the data before it starts the run that
    /// reaches that access.
    DiskRead {
        at: InstructionCount,
        bytes: Vec<u8>,
    },
}

/// A machine and its replication node.
pub struct Replica {
    machine: Machine,
    node: Node,
    identity: GuestIdentity,
    /// Primary: digest checkpoints every this many instructions (0: none).
    digest_every: u64,
    next_digest: u64,
    /// Primary: outputs taken from the machine that flow control kept from being logged yet;
    /// the machine does not run until they are.
    unlogged: VecDeque<Unlogged>,
    /// Backup: the guest's transmitted frames, in order, awaiting their marker.
    produced: VecDeque<PendingOutput>,
    /// Backup: the guest's disk writes (`DISK` payloads), in order, awaiting their marker.
    /// Matched per device: the primary's markers interleave devices by its own run slices.
    disk_produced: VecDeque<Vec<u8>>,
    /// Backup: console bytes produced and not yet matched (console output is a byte stream).
    console_produced: VecDeque<u8>,
    /// The last entry recorded (primary) was at this count.
    last_recorded_at: Option<InstructionCount>,
    mismatch: Option<Mismatch>,
    stopped: Option<Exit>,
    outputs_submitted: u64,
    outputs_released: u64,
    entries: u64,
    digests_matched: u64,
    /// Every entry recorded, for the driver to take (`poll_recorded`), when it asked for them.
    recorded: Option<VecDeque<LogEntry>>,
    /// Live: the join being served.
    live_join: Option<LiveJoin>,
    /// Joining: the receiving end.
    joiner: Option<Joiner>,
    /// Joins started by this replica, for session numbers.
    joins_started: u64,
    /// The last join's figures once it ended.
    last_join: JoinProgress,
    /// When a join next has timed work.
    join_wake: Option<Instant>,
    /// Events for the driver, after the runtime saw them.
    events: VecDeque<Event>,
    /// How large a join's messages may be on this driver's channel.
    transfer_limits: TransferLimits,
}

impl Replica {
    /// A replica around `machine` (powered on, not yet run) and `node` (a new primary or
    /// backup of epoch 1, or a peerless node). A live node records the identity digests at
    /// once.
    pub fn new(
        machine: Machine,
        node: Node,
        identity: GuestIdentity,
        digest_every: u64,
        now: Instant,
    ) -> Replica {
        Replica::build(machine, node, identity, digest_every, now, false)
    }

    /// A replica that joins a live primary (`Node::joining`): `machine` is built from the
    /// same guest and configuration, powered on and not run; its RAM, devices and separate
    /// disk are brought level with the primary's before it becomes the backup.
    pub fn joining(
        machine: Machine,
        node: Node,
        identity: GuestIdentity,
        digest_every: u64,
        now: Instant,
    ) -> Replica {
        assert_eq!(node.role(), RoleKind::Joining, "a joining node");
        Replica::build(machine, node, identity, digest_every, now, false)
    }

    /// A replica live on its own: no backup, no arbiter (`Node::standalone`), outputs released
    /// as soon as they are produced. Every entry it records, the identity digests first, is
    /// also kept for the driver ([`Replica::poll_recorded`]), so a driver can save the
    /// replication stream a backup would have received.
    pub fn standalone(
        machine: Machine,
        identity: GuestIdentity,
        limits: Limits,
        digest_every: u64,
        now: Instant,
    ) -> Replica {
        let node = Node::standalone(limits, now);
        Replica::build(machine, node, identity, digest_every, now, true)
    }

    fn build(
        machine: Machine,
        node: Node,
        identity: GuestIdentity,
        digest_every: u64,
        now: Instant,
        keep_recorded: bool,
    ) -> Replica {
        assert_eq!(machine.instret().0, 0, "a replica starts from power-on");
        let mut replica = Replica {
            next_digest: if digest_every == 0 {
                u64::MAX
            } else {
                digest_every
            },
            machine,
            node,
            identity,
            digest_every,
            unlogged: VecDeque::new(),
            produced: VecDeque::new(),
            disk_produced: VecDeque::new(),
            console_produced: VecDeque::new(),
            last_recorded_at: None,
            mismatch: None,
            stopped: None,
            outputs_submitted: 0,
            outputs_released: 0,
            entries: 0,
            digests_matched: 0,
            recorded: keep_recorded.then(VecDeque::new),
            live_join: None,
            joiner: None,
            joins_started: 0,
            last_join: JoinProgress::default(),
            join_wake: None,
            events: VecDeque::new(),
            transfer_limits: TransferLimits::default(),
        };
        if replica.node.role() == RoleKind::Joining {
            let shared = replica.shared_disk().is_some();
            replica.joiner = Some(Joiner::new(
                &mut replica.machine,
                shared,
                TransferLimits::default(),
                now,
            ));
            return replica;
        }
        let live = replica.is_live();
        if let Some(disk) = replica.shared_disk() {
            disk.set_mode(if live {
                DiskMode::Live
            } else {
                DiskMode::Replaying
            });
        }
        if replica.is_live() {
            let machine_digest = replica.identity_machine_digest();
            for digest in [replica.identity.disk_sha256, machine_digest] {
                replica
                    .record(
                        now,
                        LogEntry {
                            at: InstructionCount(0),
                            record: Record::Digest {
                                digest: StateDigest(digest),
                            },
                        },
                    )
                    .expect("an empty log takes the identity digests");
            }
        }
        replica
    }

    /// The machine, for the driver's console and diagnostics.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The protocol node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Why the backup stopped following, if it did.
    pub fn mismatch(&self) -> Option<&Mismatch> {
        self.mismatch.as_ref()
    }

    /// True when this replica runs the guest on its own authority (primary or solo).
    pub fn is_live(&self) -> bool {
        matches!(
            self.node.role(),
            RoleKind::Primary | RoleKind::Solo | RoleKind::ClaimingAsPrimary
        )
    }

    /// Primary: the backup has confirmed the identity digests, so the pair is formed (a solo
    /// primary counts as paired: it has nobody to wait for).
    pub fn is_paired(&self) -> bool {
        match self.node.role() {
            RoleKind::Primary => self.node.acknowledged() >= IDENTITY_MACHINE,
            _ => true,
        }
    }

    /// The machine's shared disk, if its disk is one.
    fn shared_disk(&mut self) -> Option<&mut SharedDisk> {
        self.machine
            .block_backend_mut()?
            .as_any_mut()?
            .downcast_mut::<SharedDisk>()
    }

    /// The shared disk's mode and what it holds in memory, for tests and status.
    pub fn shared_disk_state(&mut self) -> Option<(DiskMode, usize, usize)> {
        let disk = self.shared_disk()?;
        Some((
            disk.mode(),
            disk.overlay_sectors(),
            disk.outstanding_writes(),
        ))
    }

    /// Live: the driver wrote this released `DISK` output to the image (and will sync it
    /// before it lets anything else out): the overlay may drop what the image now holds.
    pub fn disk_written(&mut self, output: &ReleasedOutput) {
        assert_eq!(
            output.device, DISK,
            "only disk outputs are written to the image"
        );
        let (offset, data) = split_disk_payload(&output.payload)
            .expect("fail-stop: a disk output without its offset");
        let len = data.len() as u64;
        self.shared_disk()
            .expect("fail-stop: a disk output from a machine without a shared disk")
            .written(offset, len);
    }

    /// Backup: forgets the overlay's writes the primary released (and so wrote).
    fn forget_released_disk_writes(&mut self) {
        let through = self.node.primary_released_through();
        if let Some(disk) = self.shared_disk() {
            disk.forget_released(through);
        }
    }

    /// The machine's instruction count, as the protocol counts it.
    fn at(&self) -> InstructionCount {
        InstructionCount(self.machine.instret().0)
    }

    fn identity_machine_digest(&mut self) -> [u8; 32] {
        // Nothing ran yet: this is the digest of the power-on state, the images included.
        self.machine.digest()
    }

    fn record(&mut self, now: Instant, entry: LogEntry) -> Result<LogSequence, NodeError> {
        let at = entry.at;
        let kept = self.recorded.is_some().then(|| entry.clone());
        let position = self.node.record(now, entry)?;
        self.last_recorded_at = Some(at);
        self.entries += 1;
        if let (Some(recorded), Some(entry)) = (&mut self.recorded, kept) {
            recorded.push_back(entry);
        }
        Ok(position)
    }

    /// The next entry this replica recorded, in log order, if it keeps them
    /// ([`Replica::standalone`]). Take them after every call that runs the guest or offers an
    /// input: at [`RECORDED_ENTRIES_MAX`] untaken the replica stops ([`Step::Throttled`]).
    pub fn poll_recorded(&mut self) -> Option<LogEntry> {
        self.recorded.as_mut()?.pop_front()
    }

    fn recording_full(&self) -> bool {
        self.recorded
            .as_ref()
            .is_some_and(|recorded| recorded.len() >= RECORDED_ENTRIES_MAX)
    }

    /// A file-fed backup (`Node::file_backup`): recorded entries in, in log order, checked as
    /// the node checks a `Log` frame. Returns how many were taken from the front; offer the
    /// rest again after [`Replica::run`] has replayed some.
    pub fn push_entries(&mut self, now: Instant, entries: &[LogEntry]) -> Result<usize, NodeError> {
        self.node.push_entries(now, entries)
    }

    /// The machine's state digest now (`Machine::digest`), for drivers that print
    /// checkpoints of their own. It changes nothing in the guest.
    pub fn state_digest(&mut self) -> [u8; 32] {
        self.machine.digest()
    }

    /// Primary: how many bytes of entropy the guest wants now.
    pub fn wants_entropy(&mut self) -> usize {
        if self.is_live() {
            self.machine.wants_entropy()
        } else {
            0
        }
    }

    /// Guest time in timebase ticks.
    pub fn time_ticks(&self) -> u64 {
        self.machine.time_ticks()
    }

    /// Primary: one input from outside enters the guest at the current instruction boundary
    /// and is logged; or nothing happens and the reason is returned.
    pub fn offer_input(&mut self, now: Instant, input: &Input) -> Result<(), Refused> {
        if !self.is_live() {
            return Err(Refused::NotLive(self.node.role()));
        }
        if self.recording_full() {
            return Err(Refused::RecordingFull);
        }
        if !self.unlogged.is_empty() {
            // Outputs wait to be logged at this count; inputs must come after them.
            self.flush_unlogged(now);
            if !self.unlogged.is_empty() {
                return Err(Refused::Log(NodeError::Throttled {
                    limit: LagLimit::Entries,
                }));
            }
        }
        let at = self.at();
        let entry = LogEntry {
            at,
            record: record_of(input),
        };
        // Ask first, then inject, then log: `Node::record` cannot refuse an entry that fits a
        // batch when `throttled` said no a moment ago.
        if entry.encoded_len() > self.node_batch_bytes_max() {
            return Err(Refused::TooLarge);
        }
        if let Some(error) = self.node.throttled(at) {
            return Err(Refused::Log(error));
        }
        match self.machine.inject(input) {
            Ok(()) => {}
            Err(InjectError::NoDevice) => return Err(Refused::NoDevice),
            Err(InjectError::Frame(RxError::FrameSize { .. })) => return Err(Refused::NoDevice),
            Err(_) => return Err(Refused::GuestBusy),
        }
        self.record(now, entry)
            .expect("fail-stop: the node refused an input it had just allowed");
        Ok(())
    }

    fn node_batch_bytes_max(&self) -> usize {
        self.node.limits().batch_bytes_max
    }

    /// Runs the guest one slice of at most `slice` instructions: freely on a live primary,
    /// to the log's horizon on a backup.
    pub fn run(&mut self, now: Instant, slice: u64) -> Step {
        if let Some(exit) = self.stopped {
            if self.node.role() == RoleKind::Primary {
                self.log_stop(now);
            }
            // A backup still takes what the primary logged at the stop (its last outputs and
            // digest), even when it arrives later than the stop.
            if self.node.next_replay_at() == Some(self.at()) && !self.apply_due() {
                return Step::Halted;
            }
            return Step::GuestStopped(exit);
        }
        if let Some(step) = self.join_turn(now) {
            return step;
        }
        match self.node.role() {
            RoleKind::Primary | RoleKind::Solo => self.run_live(now, slice),
            RoleKind::Backup | RoleKind::ClaimingAsBackup | RoleKind::GoingLive => {
                self.run_replay(now, slice, None, &mut None)
            }
            // A claiming primary keeps executing: outputs are held anyway, and a grant makes
            // it solo without losing anything. A joining replica has no state yet.
            RoleKind::ClaimingAsPrimary => self.run_live(now, slice),
            RoleKind::Joining => Step::Joining,
            RoleKind::Halted | RoleKind::Arbiter => Step::Halted,
        }
    }

    /// A join's work between slices, on either side. `Some` when the slice must not run
    /// (a joiner, or the turn of the live side's pause).
    fn join_turn(&mut self, now: Instant) -> Option<Step> {
        let limits = self.node.limits().clone();
        let retransmit = limits.retransmit_timeout;
        let give_up = understudy_ft::Duration(limits.peer_timeout.0 * 2);
        self.join_wake = None;
        if let Some(joiner) = &mut self.joiner {
            joiner.step(&mut self.machine, &mut self.node, now, retransmit, give_up);
            self.join_wake = Some(now + retransmit);
            return Some(Step::Joining);
        }
        let join = self.live_join.as_mut()?;
        if !matches!(self.node.role(), RoleKind::Primary | RoleKind::Solo) {
            self.end_live_join();
            return None;
        }
        join.pause_ended(now);
        let rounds_before = join.progress().rounds;
        let phase_before = join.progress().phase;
        let step = join.step(&mut self.machine, &mut self.node, now, retransmit, give_up);
        self.join_wake = Some(now + retransmit);
        if step == LiveStep::Finished {
            self.end_live_join();
            return None;
        }
        let progress = join_progress(self.live_join.as_ref());
        if progress.phase == JoinPhase::HandingOver && phase_before != JoinPhase::HandingOver {
            // The pause happened in this call: the guest ran no instruction in it, and the
            // next call measures its length. The node is a primary now; its outputs wait.
            let _ = rounds_before;
            return Some(Step::Ran(0));
        }
        None
    }

    fn end_live_join(&mut self) {
        if let Some(join) = self.live_join.take() {
            join.stop(&mut self.machine);
            self.last_join = JoinProgress {
                phase: JoinPhase::Idle,
                ..join.progress()
            };
        }
    }

    /// Backup: [`Replica::run`] for a debugger of a replay. The same entries enter at the
    /// same counts, and the machine runs with `Machine::run_debug`, so the slice also ends
    /// at a hit of `targets` (a breakpoint, a watchpoint, a trap entry), returned beside the
    /// step. Entries due at the count where it stopped enter at the start of the next call,
    /// as after a full slice. A replica that is not replaying runs as `run` does, without
    /// the targets.
    pub fn run_debug(
        &mut self,
        now: Instant,
        slice: u64,
        targets: &DebugTargets,
    ) -> (Step, Option<DebugStop>) {
        let replaying = matches!(
            self.node.role(),
            RoleKind::Backup | RoleKind::ClaimingAsBackup | RoleKind::GoingLive
        );
        if self.stopped.is_some() || !replaying {
            return (self.run(now, slice), None);
        }
        let mut hit = None;
        let step = self.run_replay(now, slice, Some(targets), &mut hit);
        (step, hit)
    }

    fn run_live(&mut self, now: Instant, slice: u64) -> Step {
        if !self.is_paired() {
            return Step::WaitingForBackup;
        }
        if self.recording_full() {
            return Step::Throttled;
        }
        self.flush_unlogged(now);
        if !self.unlogged.is_empty() {
            return Step::Throttled;
        }
        let at = self.at();
        let budget = slice
            .min(self.node.execution_budget(at))
            .min(self.next_digest - at.0);
        if budget == 0 && self.next_digest != at.0 {
            return Step::Throttled;
        }
        // `Machine::run` returns early at device accesses; keep going to the end of the slice
        // (one horizon covers it), but stop at the first output: it waits for the backup's
        // acknowledgement, and every instruction run before it is logged adds to its latency.
        let target = at.0 + budget;
        let mut exit = Exit::BudgetExhausted;
        while self.machine.instret().0 < target && exit == Exit::BudgetExhausted {
            let here = self.machine.instret().0;
            exit = self.machine.run(target - here).1;
            self.take_disk_reads(InstructionCount(here));
            if self.take_live_outputs() {
                break;
            }
        }
        let executed = self.machine.instret().0 - at.0;
        let at = self.at();
        self.take_live_outputs();
        self.flush_unlogged(now);
        if at.0 == self.next_digest && self.unlogged.is_empty() {
            let digest = self.machine.digest();
            // Refused only by flow control; the backup then skips this checkpoint.
            let _ = self.record(
                now,
                LogEntry {
                    at,
                    record: Record::Digest {
                        digest: StateDigest(digest),
                    },
                },
            );
            self.next_digest += self.digest_every;
        }
        // Tell the backup how far it may execute: when the guest goes idle (the backup can
        // then catch up completely) and otherwise every `HORIZON_INTERVAL_INSTRUCTIONS`, not
        // after every slice: each entry costs a frame on the log channel.
        let since_last = self
            .last_recorded_at
            .map_or(u64::MAX, |last| at.since(last));
        let idle = matches!(exit, Exit::Idle { .. });
        if self.node.role() == RoleKind::Primary
            && self.unlogged.is_empty()
            && since_last > 0
            && (idle || since_last >= HORIZON_INTERVAL_INSTRUCTIONS)
            && self.node.throttled(at).is_none()
        {
            self.record_horizon(now, at);
        }
        if self.node.role() == RoleKind::Primary
            && matches!(
                exit,
                Exit::PowerOff { .. } | Exit::Reset | Exit::GuestCrashed { .. }
            )
        {
            self.log_stop(now);
        }
        self.finish_slice(executed, exit)
    }

    /// Tells the backup it may execute up to `at` (the caller checked `throttled`, so the
    /// record cannot be refused).
    fn record_horizon(&mut self, now: Instant, at: InstructionCount) {
        let _ = self.record(
            now,
            LogEntry {
                at,
                record: Record::Horizon,
            },
        );
    }

    /// Primary, guest stopped: what is still unlogged goes into the log, then a horizon at
    /// the stop if nothing was logged there, so the backup executes to the same count (a
    /// guest that stops without a last output would otherwise leave it short). Retried on
    /// every `run` until flow control lets it through.
    fn log_stop(&mut self, now: Instant) {
        self.flush_unlogged(now);
        let at = self.at();
        if self.unlogged.is_empty()
            && self.last_recorded_at != Some(at)
            && self.node.throttled(at).is_none()
        {
            self.record_horizon(now, at);
        }
    }

    fn finish_slice(&mut self, executed: u64, exit: Exit) -> Step {
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {
                Step::Ran(executed)
            }
            // Idle even after some progress: the driver waits for the timer or an input
            // instead of spinning through one interrupt handler per turn.
            Exit::Idle { wake_at_ticks } => Step::Idle { wake_at_ticks },
            Exit::PowerOff { .. } | Exit::Reset | Exit::GuestCrashed { .. } => {
                self.stopped = Some(exit);
                Step::GuestStopped(exit)
            }
        }
    }

    /// Primary: moves the guest's outputs into `unlogged` (submitted by `flush_unlogged`),
    /// console first, then frames in transmit order (the backup matches each device's outputs
    /// in order); true when there were any.
    fn take_live_outputs(&mut self) -> bool {
        let before = self.unlogged.len();
        let console = self.machine.take_console_output();
        if !console.is_empty() {
            self.unlogged.push_back(Unlogged::Output(PendingOutput {
                device: CONSOLE,
                payload: console,
            }));
        }
        for frame in self.machine.take_transmitted() {
            self.unlogged.push_back(Unlogged::Output(PendingOutput {
                device: NET,
                payload: frame,
            }));
        }
        let writes: Vec<Vec<u8>> = match self.shared_disk() {
            Some(disk) => disk.take_writes().collect(),
            None => Vec::new(),
        };
        for payload in writes {
            self.unlogged.push_back(Unlogged::Output(PendingOutput {
                device: DISK,
                payload,
            }));
        }
        self.unlogged.len() > before
    }

    /// Primary: queues the data the guest's disk reads returned in the `Machine::run` that
    /// began at `at`, in pieces that fit a log batch.
    fn take_disk_reads(&mut self, at: InstructionCount) {
        let piece_bytes_max = self
            .node_batch_bytes_max()
            .saturating_sub(DISK_READ_ENTRY_OVERHEAD_BYTES);
        assert!(
            piece_bytes_max > 0,
            "fail-stop: log batches too small for disk reads"
        );
        let reads: Vec<(u64, Vec<u8>)> = match self.shared_disk() {
            Some(disk) => disk.take_reads().collect(),
            None => return,
        };
        for (offset, data) in reads {
            for (index, piece) in data.chunks(piece_bytes_max).enumerate() {
                let piece_offset = offset + (index * piece_bytes_max) as u64;
                let mut bytes = Vec::with_capacity(DISK_OFFSET_BYTES + piece.len());
                bytes.extend_from_slice(&piece_offset.to_le_bytes());
                bytes.extend_from_slice(piece);
                self.unlogged.push_back(Unlogged::DiskRead { at, bytes });
            }
        }
    }

    fn flush_unlogged(&mut self, now: Instant) {
        let at = self.at();
        while !self.unlogged.is_empty() {
            if self.node.role() == RoleKind::Primary && self.node.throttled(at).is_some() {
                return;
            }
            let output = match self.unlogged.pop_front().expect("front exists") {
                Unlogged::Output(output) => output,
                Unlogged::DiskRead { at: read_at, bytes } => {
                    let entry = LogEntry {
                        at: read_at,
                        record: Record::DeviceInput {
                            device: DISK,
                            bytes,
                        },
                    };
                    match self.record(now, entry.clone()) {
                        Ok(_) => continue,
                        Err(NodeError::Throttled { .. }) => {
                            let Record::DeviceInput { bytes, .. } = entry.record else {
                                unreachable!("built above")
                            };
                            self.unlogged
                                .push_front(Unlogged::DiskRead { at: read_at, bytes });
                            return;
                        }
                        Err(error) => {
                            panic!("fail-stop: disk read data could not be logged: {error}")
                        }
                    }
                }
            };
            match self
                .node
                .submit_output(now, at, output.device, output.payload.clone())
            {
                Ok(_) => {
                    self.outputs_submitted += 1;
                    self.last_recorded_at = Some(at);
                    self.entries += 1;
                    if let Some(recorded) = &mut self.recorded {
                        // The marker `Node::submit_output` logged.
                        recorded.push_back(LogEntry {
                            at,
                            record: Record::Output {
                                device: output.device,
                                length: output.payload.len().min(u32::MAX as usize) as u32,
                            },
                        });
                    }
                }
                Err(NodeError::Throttled { .. }) => {
                    self.unlogged.push_front(Unlogged::Output(output));
                    return;
                }
                Err(error) => panic!("fail-stop: an output could not be submitted: {error}"),
            }
        }
    }

    /// With `targets` the machine runs under `Machine::run_debug` and a hit ends the call
    /// (in `hit`) where a full slice would end: before the entries due at that count.
    fn run_replay(
        &mut self,
        now: Instant,
        slice: u64,
        targets: Option<&DebugTargets>,
        hit: &mut Option<DebugStop>,
    ) -> Step {
        let mut executed = 0;
        loop {
            // A full slice ends before the entries due at its last count: the driver sees the
            // state the primary had when it reached that count (its digest checkpoints).
            if executed > 0 && executed >= slice {
                return Step::Ran(executed);
            }
            // Every entry due at this count enters now, in log order.
            if !self.apply_due() {
                return Step::Halted;
            }
            if let Some(at) = self.node.next_replay_at() {
                assert!(
                    at > self.at(),
                    "fail-stop: the backup passed a logged input at {at}"
                );
            }
            if self.node.role() == RoleKind::GoingLive
                && self.node.next_replay_at().is_none()
                && self.at() >= self.node.horizon()
            {
                self.forget_released_disk_writes();
                self.node
                    .finish_go_live(now)
                    .expect("fail-stop: go-live with the log drained");
                self.disk_go_live();
                // A backup recorded no checkpoints: the next one is the next multiple.
                if let Some(passed) = self.at().0.checked_div(self.digest_every) {
                    self.next_digest = (passed + 1) * self.digest_every;
                }
                return Step::Ran(executed);
            }
            let target = match self.node.next_replay_at() {
                Some(at) => at.min(self.node.horizon()),
                None => self.node.horizon(),
            };
            let here = self.at();
            if target <= here || executed >= slice {
                return if executed > 0 {
                    Step::Ran(executed)
                } else {
                    Step::WaitingForLog
                };
            }
            let budget = (target.0 - here.0).min(slice - executed);
            let (count, exit) = match targets {
                None => self.machine.run(budget),
                Some(targets) => {
                    let (count, exit, found) = self.machine.run_debug(budget, targets);
                    *hit = found;
                    (count, exit)
                }
            };
            executed += count.0;
            self.collect_suppressed_outputs();
            if let Some(divergence) = self.shared_disk().and_then(|disk| disk.take_divergence()) {
                panic!(
                    "fail-stop: the backup's guest diverged from the primary's by instruction {}: {divergence}",
                    self.at()
                );
            }
            match exit {
                Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
                // The primary idled at this same count and logged what woke it here.
                Exit::Idle { .. } if self.at() == here => {
                    if self.node.next_replay_at() != Some(here) {
                        return if executed > 0 {
                            Step::Ran(executed)
                        } else {
                            Step::WaitingForLog
                        };
                    }
                }
                Exit::Idle { .. } => {}
                Exit::PowerOff { .. } | Exit::Reset | Exit::GuestCrashed { .. } => {
                    self.stopped = Some(exit);
                    // The primary logged its last outputs and digest at this count.
                    if !self.apply_due() {
                        return Step::Halted;
                    }
                    return Step::GuestStopped(exit);
                }
            }
            if hit.is_some() {
                return Step::Ran(executed);
            }
        }
    }

    /// Go-live: the shared disk reads the image from now on. Its writes the primary may not
    /// have released are being reissued by the node, in log order, ahead of any new write;
    /// they stay in the overlay until the driver wrote them.
    fn disk_go_live(&mut self) {
        let Some(disk) = self.shared_disk() else {
            return;
        };
        disk.set_mode(DiskMode::Live);
        // Writes past the last marker cannot exist (the log ends at an instruction the
        // primary had logged every output before); were there any, they are new outputs.
        for payload in core::mem::take(&mut self.disk_produced) {
            self.unlogged.push_back(Unlogged::Output(PendingOutput {
                device: DISK,
                payload,
            }));
        }
    }

    /// Backup: applies every entry due at the current count, in log order. False when the
    /// backup must stop.
    fn apply_due(&mut self) -> bool {
        while self.node.next_replay_at() == Some(self.at()) {
            let item = self.node.poll_replay().expect("an entry is due");
            if !self.apply(item.position, item.entry) {
                return false;
            }
        }
        true
    }

    fn collect_suppressed_outputs(&mut self) {
        self.console_produced
            .extend(self.machine.take_console_output());
        for frame in self.machine.take_transmitted() {
            self.produced.push_back(PendingOutput {
                device: NET,
                payload: frame,
            });
        }
        let writes: Vec<Vec<u8>> = match self.shared_disk() {
            Some(disk) => disk.take_writes().collect(),
            None => Vec::new(),
        };
        self.disk_produced.extend(writes);
    }

    /// Backup: applies one logged entry at its count. False when the backup must stop.
    fn apply(&mut self, position: LogSequence, entry: LogEntry) -> bool {
        self.entries += 1;
        let input = match entry.record {
            Record::Digest { digest } => return self.check(position, digest),
            Record::Horizon => return true,
            Record::Output { device, length } => {
                let payload = if device == DISK {
                    let payload = self.disk_produced.pop_front().unwrap_or_else(|| {
                        panic!(
                            "fail-stop: the primary wrote the disk at {} and this backup did not",
                            entry.at
                        )
                    });
                    assert_eq!(
                        payload.len(),
                        length as usize,
                        "fail-stop: a disk write of another length than the primary's at {}",
                        entry.at
                    );
                    self.shared_disk()
                        .expect("a disk write came from a shared disk")
                        .matched(position);
                    payload
                } else if device == CONSOLE {
                    let length = length as usize;
                    assert!(
                        self.console_produced.len() >= length,
                        "fail-stop: the primary wrote {length} console bytes at {}, this backup {}",
                        entry.at,
                        self.console_produced.len()
                    );
                    self.console_produced.drain(..length).collect()
                } else {
                    let output = self.produced.pop_front().unwrap_or_else(|| {
                        panic!(
                            "fail-stop: the primary sent a frame at {} and this backup none",
                            entry.at
                        )
                    });
                    assert_eq!(
                        output.payload.len(),
                        length as usize,
                        "fail-stop: a frame of another length than the primary's at {}",
                        entry.at
                    );
                    output.payload
                };
                self.node
                    .suppress_output(position, device, payload)
                    .expect("a replaying node keeps outputs");
                self.outputs_submitted += 1;
                return true;
            }
            Record::DeviceInput { device, bytes } if device == CONSOLE => {
                assert_eq!(bytes.len(), 1, "fail-stop: a console input is one byte");
                Input::ConsoleByte(bytes[0])
            }
            Record::DeviceInput { device, bytes } if device == NET => Input::Frame(bytes),
            Record::DeviceInput { device, bytes } if device == DISK => {
                let (offset, data) = split_disk_payload(&bytes)
                    .unwrap_or_else(|| panic!("fail-stop: disk read data without its offset"));
                let data = data.to_vec();
                self.shared_disk()
                    .unwrap_or_else(|| {
                        panic!("fail-stop: the log holds disk reads and this machine has no shared disk")
                    })
                    .push_logged_read(offset, data);
                return true;
            }
            Record::DeviceInput { device, .. } => {
                panic!("fail-stop: the log names {device}, which this machine does not have")
            }
            Record::AdvanceTime { ticks } => Input::AdvanceTime { ticks },
            Record::WallClockBase { ns } => Input::WallClockBase { ns },
            Record::Entropy { bytes } => Input::Entropy(bytes),
        };
        if let Err(error) = self.machine.inject(&input) {
            panic!(
                "fail-stop: the backup's guest refused a logged input at {} ({error:?}); it has diverged",
                entry.at
            );
        }
        true
    }

    fn check(&mut self, position: LogSequence, _logged: StateDigest) -> bool {
        let computed = match position {
            IDENTITY_MACHINE => self.identity_machine_digest(),
            IDENTITY_DISK => self.identity.disk_sha256,
            _ => self.machine.digest(),
        };
        match self.node.check_digest(position, StateDigest(computed)) {
            Ok(true) => {
                self.digests_matched += 1;
                true
            }
            Ok(false) => {
                self.mismatch = Some(match position {
                    IDENTITY_MACHINE => Mismatch::Images,
                    IDENTITY_DISK => Mismatch::Disks,
                    _ => Mismatch::State { at: self.at() },
                });
                false
            }
            Err(error) => panic!("fail-stop: {error}"),
        }
    }

    /// The next output allowed out of the machine.
    pub fn poll_release(&mut self, now: Instant) -> Option<ReleasedOutput> {
        let output = self.node.poll_release(now)?;
        self.outputs_released += 1;
        Some(output)
    }

    /// A datagram from the peer or the arbiter.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), understudy_ft::ReceiveError> {
        let result = self.node.handle_frame(now, bytes);
        // A backup checks what arrived before its acknowledgement leaves (the identity
        // digests above all): replay as far as the log allows, without running the guest.
        if matches!(self.node.role(), RoleKind::Backup) {
            // A mismatch halts the node; the next `run` reports it.
            let _ = self.apply_due();
        }
        if matches!(
            self.node.role(),
            RoleKind::Backup | RoleKind::ClaimingAsBackup | RoleKind::GoingLive
        ) {
            self.forget_released_disk_writes();
        }
        result
    }

    /// Timers: heartbeats, acknowledgements, retransmission, failure detection.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.node.handle_timeout(now);
    }

    /// When `handle_timeout` (or, during a join, `run`) next has work.
    pub fn poll_at(&self) -> Option<Instant> {
        match (self.node.poll_at(), self.join_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sets how large a join's messages may be (each travels as one datagram): the kernel's
    /// channel carries them unfragmented ([`TransferLimits::for_mtu`]).
    pub fn set_transfer_limits(&mut self, limits: TransferLimits) {
        self.transfer_limits = limits;
        if let Some(joiner) = &mut self.joiner {
            joiner.set_limits(limits);
        }
    }

    /// Why the last join attempt of this joining replica failed, if it did.
    pub fn join_error(&self) -> Option<&'static str> {
        self.joiner.as_ref().and_then(|joiner| joiner.last_error)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.node.poll_transmit(now)
    }

    /// The next protocol event (role changes, go-live steps, divergence, joins). The
    /// runtime acts on the join's events itself before the driver sees them; state-transfer
    /// messages stay inside.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        loop {
            let event = self.events.pop_front().or_else(|| self.node.poll_event())?;
            match &event {
                Event::Transfer(_) => {
                    let Event::Transfer(message) = event else {
                        unreachable!("matched above")
                    };
                    if let Some(join) = &mut self.live_join {
                        join.receive(&mut self.machine, &mut self.node, now, message);
                    } else if let Some(joiner) = &mut self.joiner {
                        joiner.receive(&mut self.machine, &mut self.node, now, message);
                    }
                    continue;
                }
                Event::SnapshotWanted => self.join_wanted(now),
                Event::InstallSnapshot { at, state, .. } => {
                    let (at, state) = (*at, state.clone());
                    self.install(now, at, &state);
                }
                Event::RoleChanged {
                    to: RoleKind::Joining,
                    ..
                } => {
                    // A replica that never ran joins its partner's newer epoch.
                    let shared = self.shared_disk().is_some();
                    self.joiner = Some(Joiner::new(
                        &mut self.machine,
                        shared,
                        self.transfer_limits,
                        now,
                    ));
                    self.unlogged.clear();
                }
                _ => {}
            }
            return Some(event);
        }
    }

    /// Live: a replica asks to join. A join in progress with a joiner that still answers
    /// goes on; otherwise a new session starts.
    fn join_wanted(&mut self, now: Instant) {
        if self.live_join.is_some() || self.node.is_peerless() {
            return;
        }
        self.joins_started += 1;
        // Unique across this replica's restarts: the incarnation grows.
        let session = understudy_ft::transfer::SessionId(
            (self.node.incarnation().0 << 20) | (self.joins_started & 0xf_ffff),
        );
        let shared = self.shared_disk().is_some();
        self.live_join = Some(LiveJoin::start(
            &mut self.machine,
            session,
            shared,
            self.transfer_limits,
            now,
        ));
    }

    /// Joining: the handover arrived; install and check it.
    fn install(&mut self, now: Instant, at: InstructionCount, state: &[u8]) {
        let Some(joiner) = &mut self.joiner else {
            self.node.refuse_install();
            return;
        };
        if !joiner.install(&mut self.machine, &mut self.node, now, state, at) {
            return;
        }
        self.last_join = joiner.progress();
        self.joiner = None;
        self.produced.clear();
        self.disk_produced.clear();
        self.console_produced.clear();
        self.stopped = None;
        self.mismatch = None;
        self.last_recorded_at = None;
        if let Some(disk) = self.shared_disk() {
            disk.set_mode(DiskMode::Replaying);
        }
    }

    /// The driver wrote `epoch` durably (`Event::PersistEpoch`): frames and outputs flow again.
    pub fn epoch_persisted(&mut self, epoch: Epoch) {
        self.node.epoch_persisted(epoch);
    }

    /// Why the replica halted, in words for its operator's console (None while it runs):
    /// a mismatch with the primary first, else the node's reason.
    pub fn halt_explanation(&self) -> Option<String> {
        if let Some(mismatch) = &self.mismatch {
            return Some(format!("{mismatch}"));
        }
        Some(match self.node.halt_reason()? {
            HaltReason::Fenced { epoch } => format!(
                "fenced: epoch {} is live elsewhere; this machine serves nothing",
                epoch.0
            ),
            HaltReason::LostArbitration { epoch, owner } => format!(
                "the arbiter gave epoch {} to replica {}; this machine serves nothing",
                epoch.0, owner.0
            ),
            HaltReason::Diverged { first_diverged } => format!(
                "diverged from the primary at instruction {}",
                first_diverged.0
            ),
        })
    }

    /// Figures for status reports.
    pub fn status(&self) -> Status {
        let counters = self.node.counters();
        Status {
            role: self.node.role(),
            epoch: self.node.epoch(),
            instructions: self.at().0,
            log_end: self.node.log_end(),
            acknowledged: self.node.acknowledged(),
            outputs_held: self.outputs_submitted.saturating_sub(self.outputs_released),
            entries: self.entries,
            digests_matched: self.digests_matched,
            lag_instructions: match self.node.role() {
                RoleKind::Primary | RoleKind::ClaimingAsPrimary => {
                    self.at().since(self.node.acknowledged_at())
                }
                RoleKind::Backup | RoleKind::ClaimingAsBackup | RoleKind::GoingLive => {
                    self.node.horizon().since(self.at())
                }
                _ => 0,
            },
            arbiter_heard_at: self.node.arbiter_heard_at(),
            counters,
            protected: match self.node.role() {
                RoleKind::Primary => self.is_paired() && self.node.handover_confirmed(),
                RoleKind::Backup => true,
                _ => false,
            },
            join: if let Some(join) = &self.live_join {
                join.progress_now()
            } else if let Some(joiner) = &self.joiner {
                joiner.progress()
            } else {
                self.last_join
            },
        }
    }
}

/// The log record of a machine input.
pub fn record_of(input: &Input) -> Record {
    match input {
        Input::AdvanceTime { ticks } => Record::AdvanceTime { ticks: *ticks },
        Input::ConsoleByte(byte) => Record::DeviceInput {
            device: CONSOLE,
            bytes: alloc::vec![*byte],
        },
        Input::Frame(frame) => Record::DeviceInput {
            device: NET,
            bytes: frame.clone(),
        },
        Input::Entropy(bytes) => Record::Entropy {
            bytes: bytes.clone(),
        },
        Input::WallClockBase { ns } => Record::WallClockBase { ns: *ns },
    }
}

#[cfg(test)]
mod test_network;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod shared_disk_pair_tests;

fn join_progress(join: Option<&LiveJoin>) -> JoinProgress {
    join.map(LiveJoin::progress).unwrap_or_default()
}
