//! A replica: primary or backup roles, the output rule, flow control, failure detection, the
//! arbiter client and go-live, as one sans-IO state machine.
//!
//! Role transitions (PROTOCOL.md has the diagram; every edge and the illegal ones are tested
//! in `tests::transitions`):
//!
//! ```text
//! Primary  --peer silent / acks stuck-->  ClaimingAsPrimary --granted--> Solo
//! Backup   --peer silent--------------->  ClaimingAsBackup  --granted--> GoingLive --drained--> Solo
//! Claiming* --denied / newer epoch seen--> Halted
//! Solo     --join, handed over--------->  Primary
//! Joining  --snapshot, install confirmed->  Backup
//! Primary, Backup never paired --newer epoch seen--> Joining
//! Primary, Solo, Backup, GoingLive --newer epoch seen / fenced--> Halted
//! Backup   --digest mismatch----------->  Halted (diverged)
//! ```
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use crate::limits::Limits;
use crate::record::{LogEntry, Record};
use crate::transfer::Transfer;
use crate::types::{
    DeviceId, Epoch, Incarnation, Instant, InstructionCount, Key, LogSequence, NodeId, StateDigest,
};
use crate::wire::{
    claimed_sender, EncodeError, Frame, FrameWriter, Message, OutputCopy, ReceiveError,
    ReplayWindow, Transmit,
};

/// How a replica is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This replica.
    pub me: NodeId,
    /// The other replica.
    pub peer: NodeId,
    /// The arbiter.
    pub arbiter: NodeId,
    /// The key shared by the two replicas only: authenticates every replica-to-replica frame.
    pub channel_key: Key,
    /// The key this replica shares with the arbiter only (the arbiter holds one per replica):
    /// authenticates claims and the arbiter's answers, so the peer, which knows only the
    /// channel key, cannot forge a grant.
    pub arbiter_key: Key,
    /// Shared limits.
    pub limits: Limits,
    /// This start's incarnation; must grow across restarts.
    pub incarnation: Incarnation,
}

/// The role a node is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    /// Live with a backup: outputs wait for acknowledgements.
    Primary,
    /// Live without a backup (after a failover, until a replica joins).
    Solo,
    /// Replaying the primary's log; outputs suppressed.
    Backup,
    /// A primary that lost its backup and asked the arbiter for the next epoch.
    ClaimingAsPrimary,
    /// A backup that lost its primary and asked the arbiter for the next epoch.
    ClaimingAsBackup,
    /// A backup that won the next epoch and is replaying what it has left.
    GoingLive,
    /// Restarted without state; asking the live primary for a snapshot.
    Joining,
    /// Stopped for good; the driver restarts it as a joining replica.
    Halted,
    /// The arbiter (used only in errors).
    Arbiter,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RoleKind::Primary => "primary",
            RoleKind::Solo => "solo primary",
            RoleKind::Backup => "backup",
            RoleKind::ClaimingAsPrimary => "claiming primary",
            RoleKind::ClaimingAsBackup => "claiming backup",
            RoleKind::GoingLive => "going-live backup",
            RoleKind::Joining => "joining replica",
            RoleKind::Halted => "halted replica",
            RoleKind::Arbiter => "arbiter",
        };
        f.write_str(name)
    }
}

/// Why a node halted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaltReason {
    /// The arbiter gave the epoch to someone else.
    LostArbitration {
        /// The arbiter's newest epoch.
        epoch: Epoch,
        /// Its owner.
        owner: NodeId,
    },
    /// A frame showed a newer epoch exists.
    Fenced {
        /// That epoch.
        epoch: Epoch,
    },
    /// This backup's state digest differed from the primary's.
    Diverged {
        /// The instruction count of the first differing digest.
        first_diverged: InstructionCount,
    },
}

/// Something the runtime must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The role changed.
    RoleChanged {
        /// Old role.
        from: RoleKind,
        /// New role.
        to: RoleKind,
        /// The epoch after the change.
        epoch: Epoch,
    },
    /// A replica wants to join: transfer the state (`Node::send_transfer`, then
    /// `Node::hand_over` and `Node::send_handover`), or send it whole with
    /// `Node::send_snapshot`.
    SnapshotWanted,
    /// A state-transfer message from the peer (`transfer`), for the runtime.
    Transfer(Transfer),
    /// The node moved to a newer epoch (it won a claim, or installed a snapshot of a newer
    /// epoch). Write `epoch` durably as this replica's last known epoch, then call
    /// `Node::epoch_persisted(epoch)`. Until then the node sends no frame and releases no
    /// output, so nothing acts on an epoch a crash could make the replica forget. After a
    /// restart, pass the stored value to `Node::joining`.
    PersistEpoch {
        /// The epoch to store.
        epoch: Epoch,
    },
    /// Replace the machine state with this snapshot, then call `Node::confirm_install` (the
    /// node becomes the backup and replays from `position + 1`) or `Node::refuse_install`
    /// (it stays joining).
    InstallSnapshot {
        /// The last log position the state includes.
        position: LogSequence,
        /// Its instruction count.
        at: InstructionCount,
        /// The runtime's serialized state.
        state: Vec<u8>,
    },
    /// Go-live: stop replaying and run freely from here.
    LeaveReplay {
        /// The new epoch.
        epoch: Epoch,
        /// The last replayed position.
        position: LogSequence,
        /// The instruction count reached.
        at: InstructionCount,
    },
    /// Go-live: announce the guest's MAC address on the service network.
    AnnounceMac,
    /// Go-live: reissue device requests that were in flight (disk I/O) at the failure.
    ReissueInFlightIo,
    /// The backup's digest differs from the primary's.
    Divergence {
        /// The log position of the primary's digest entry.
        position: LogSequence,
        /// The instruction count of the last digest that agreed.
        last_agreed: Option<InstructionCount>,
        /// The instruction count of the first digest that differed.
        first_diverged: InstructionCount,
    },
    /// The node halted; restart it as a joining replica.
    Halted {
        /// Why.
        reason: HaltReason,
    },
}

/// An output the runtime may now let out of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleasedOutput {
    /// The epoch in which it was released.
    pub epoch: Epoch,
    /// The log position that produced it.
    pub position: LogSequence,
    /// The emitting device.
    pub device: DeviceId,
    /// The output bytes.
    pub payload: Vec<u8>,
    /// True when a backup had acknowledged `position` (false for a solo primary).
    pub acknowledged: bool,
    /// True for an output a backup suppressed and reissues at go-live.
    pub reissued: bool,
}

/// Which flow-control limit throttles the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagLimit {
    /// `Limits::lag_entries_max`.
    Entries,
    /// `Limits::lag_bytes_max`.
    Bytes,
    /// `Limits::lag_instructions_max`.
    Instructions,
}

/// A misuse of the node by its runtime (not a peer fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// The operation needs a live primary.
    NotLive {
        /// The current role.
        role: RoleKind,
    },
    /// The operation is not valid in this role.
    WrongRole {
        /// The current role.
        role: RoleKind,
    },
    /// Flow control: the backup is too far behind; pause execution and inputs.
    Throttled {
        /// The limit reached.
        limit: LagLimit,
    },
    /// Instruction counts must not go backwards.
    InstructionCountWentBack {
        /// The newest count recorded.
        newest: InstructionCount,
        /// The count offered.
        offered: InstructionCount,
    },
    /// One entry is larger than `Limits::batch_bytes_max`.
    EntryTooLarge {
        /// Its encoded size.
        bytes: usize,
    },
    /// Go-live asked before every handed-out entry was taken.
    ReplayNotDrained {
        /// Entries left.
        remaining: usize,
    },
    /// No digest entry at that position is awaiting comparison.
    UnknownDigest {
        /// The position given.
        position: LogSequence,
    },
    /// A frame could not be built (a snapshot too large for a frame).
    Encode(EncodeError),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::NotLive { role } => write!(
                f,
                "a {role} cannot record or release; only a live primary can"
            ),
            NodeError::WrongRole { role } => write!(f, "not valid for a {role}"),
            NodeError::Throttled { limit } => write!(
                f,
                "backup lag limit reached ({limit:?}); pause until acknowledged"
            ),
            NodeError::InstructionCountWentBack { newest, offered } => {
                write!(f, "instruction count went back from {newest} to {offered}")
            }
            NodeError::EntryTooLarge { bytes } => {
                write!(f, "a {bytes}-byte entry exceeds the batch limit; split it")
            }
            NodeError::ReplayNotDrained { remaining } => {
                write!(f, "{remaining} log entries still to replay before go-live")
            }
            NodeError::UnknownDigest { position } => {
                write!(f, "no digest awaiting comparison at {position}")
            }
            NodeError::Encode(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for NodeError {}

/// Counters for the runtime to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames handed to the driver.
    pub frames_sent: u64,
    /// Frames accepted.
    pub frames_accepted: u64,
    /// Frames rejected (any `ReceiveError`).
    pub frames_rejected: u64,
    /// Log entries resent after a timeout or resend request.
    pub retransmissions: u64,
    /// Outputs released.
    pub outputs_released: u64,
}

#[derive(Clone, Debug)]
struct HeldOutput {
    position: LogSequence,
    device: DeviceId,
    payload: Vec<u8>,
}

#[derive(Clone, Debug)]
struct LoggedEntry {
    position: LogSequence,
    entry: LogEntry,
    bytes: usize,
}

/// One replica's protocol state.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    role: RoleKind,
    epoch: Epoch,
    halt_reason: Option<HaltReason>,
    /// An epoch announced with `Event::PersistEpoch` that the driver has not yet confirmed
    /// durable: nothing leaves the node meanwhile.
    epoch_unpersisted: Option<Epoch>,
    writer: FrameWriter,
    peer_window: ReplayWindow,
    arbiter_window: ReplayWindow,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    releases: VecDeque<ReleasedOutput>,
    counters: Counters,

    // Failure detection.
    last_heard: Instant,
    /// The peer has been heard since this node started (or since a snapshot was sent). Until
    /// then its silence is not a failure: the pair is still forming, and the driver bounds
    /// how long it waits for its partner.
    peer_heard: bool,
    /// The last time the arbiter was heard (any authenticated frame).
    arbiter_heard: Option<Instant>,
    last_sent: Instant,
    next_claim_at: Instant,
    next_join_at: Instant,
    /// When this replica next reports its epoch to the arbiter.
    next_report_at: Instant,

    // The log, both roles: the last position appended (primary) or received (backup).
    end: LogSequence,
    end_at: InstructionCount,

    // Primary side.
    log: VecDeque<LoggedEntry>,
    log_start: LogSequence,
    log_bytes: u64,
    acked: LogSequence,
    acked_at: InstructionCount,
    next_to_send: LogSequence,
    last_ack_progress: Instant,
    last_retransmit: Instant,
    last_snapshot_request: Option<Instant>,
    /// Joining: a snapshot handed to the runtime, installed when it confirms.
    pending_install: Option<PendingInstall>,
    /// Primary: handed over to a joiner that has not acknowledged anything since.
    handover_unconfirmed: bool,
    /// Primary: that handover was made by a solo primary, and its `Snapshot` has not been
    /// sent yet: the joiner cannot be a backup, so losing it needs no new epoch.
    handover_revocable: bool,
    /// Why the last claim began.
    claim_cause: Option<ClaimCause>,
    lease_until: Option<Instant>,
    /// Since when the oldest held output has been acknowledged but the lease was not valid:
    /// acknowledgements arrive, yet nothing can be released.
    release_blocked_since: Option<Instant>,
    held: VecDeque<HeldOutput>,
    released_through: LogSequence,

    // Backup side.
    newest_sent_at: Instant,
    replay: VecDeque<(LogSequence, LogEntry)>,
    handed_out: LogSequence,
    pending_digests: VecDeque<(LogSequence, InstructionCount, StateDigest)>,
    last_agreed: Option<InstructionCount>,
    suppressed: VecDeque<HeldOutput>,
    /// Positions of the output markers taken into the log and not yet released by the primary:
    /// each becomes a suppressed output, so their number bounds `suppressed`.
    unreleased_markers: VecDeque<LogSequence>,
    /// The last log frame found no room (replay queue or suppressed outputs full).
    backpressured: bool,
    primary_released_through: LogSequence,
    last_resend_request: Option<(Instant, LogSequence)>,
    last_ack_sent: Instant,

    /// No peer and no arbiter: a standalone primary (`Node::standalone`) or a backup fed from
    /// a recording (`Node::file_backup`). It never sends a frame, takes none, and has no timers.
    peerless: bool,
}

/// Why a replica asked the arbiter for the next epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimCause {
    /// Nothing heard from the peer for `Limits::peer_timeout`.
    PeerSilent,
    /// The backup's acknowledgement position did not move for `Limits::ack_progress_timeout`.
    AcknowledgementsStuck,
    /// Acknowledged outputs could not be released for want of a valid lease for
    /// `Limits::ack_progress_timeout`.
    LeaseUnreachable,
}

impl ClaimCause {
    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimCause::PeerSilent => "peer_silent",
            ClaimCause::AcknowledgementsStuck => "acknowledgements_stuck",
            ClaimCause::LeaseUnreachable => "lease_unreachable",
        }
    }
}

/// What a live primary hands over to a joining replica: the log position and count its state
/// is taken at, and the outputs a new backup must be able to reissue (`Node::hand_over`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The last log position the state includes.
    pub position: LogSequence,
    /// Its instruction count.
    pub at: InstructionCount,
    /// The highest position whose output the primary had released.
    pub released_through: LogSequence,
    /// Outputs at or before `position` the primary still held.
    pub held_outputs: Vec<OutputCopy>,
}

/// A snapshot a joining node received and its runtime is installing.
#[derive(Clone, Debug)]
struct PendingInstall {
    sent_at: Instant,
    handover: Handover,
}

/// An entry for the backup's runtime to inject at its instruction count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayItem {
    /// The entry's log position.
    pub position: LogSequence,
    /// The entry.
    pub entry: LogEntry,
}

impl Node {
    fn blank(config: NodeConfig, role: RoleKind, epoch: Epoch, now: Instant) -> Node {
        let writer = FrameWriter::new(config.me, config.incarnation);
        Node {
            config,
            role,
            epoch,
            halt_reason: None,
            epoch_unpersisted: None,
            writer,
            peer_window: ReplayWindow::default(),
            arbiter_window: ReplayWindow::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            releases: VecDeque::new(),
            counters: Counters::default(),
            last_heard: now,
            peer_heard: true,
            arbiter_heard: None,
            last_sent: now,
            next_claim_at: now,
            next_join_at: now,
            next_report_at: now,
            end: LogSequence(0),
            end_at: InstructionCount(0),
            log: VecDeque::new(),
            log_start: LogSequence(1),
            log_bytes: 0,
            acked: LogSequence(0),
            acked_at: InstructionCount(0),
            next_to_send: LogSequence(1),
            last_ack_progress: now,
            last_retransmit: now,
            last_snapshot_request: None,
            pending_install: None,
            handover_unconfirmed: false,
            handover_revocable: false,
            claim_cause: None,
            lease_until: None,
            release_blocked_since: None,
            held: VecDeque::new(),
            released_through: LogSequence(0),
            newest_sent_at: Instant(0),
            replay: VecDeque::new(),
            handed_out: LogSequence(0),
            pending_digests: VecDeque::new(),
            last_agreed: None,
            suppressed: VecDeque::new(),
            unreleased_markers: VecDeque::new(),
            backpressured: false,
            primary_released_through: LogSequence(0),
            last_resend_request: None,
            last_ack_sent: now,
            peerless: false,
        }
    }

    /// The configuration of a node without a peer or an arbiter: it never sends or accepts a
    /// frame, so its identities and keys are never used.
    fn peerless_config(limits: Limits) -> NodeConfig {
        NodeConfig {
            me: NodeId(1),
            peer: NodeId(2),
            arbiter: NodeId(3),
            channel_key: Key([0; 32]),
            arbiter_key: Key([0; 32]),
            limits,
            incarnation: Incarnation(1),
        }
    }

    /// A replica with no backup and no arbiter (`understudy run-guest`): a solo primary of
    /// epoch 1 that records entries without keeping them (the driver may save them, see
    /// `understudy_replica::Replica::poll_recorded`), releases every output at once and never
    /// sends a frame or claims an epoch. It has no timers: `poll_at` is always `None`.
    pub fn standalone(limits: Limits, now: Instant) -> Node {
        let mut node = Node::blank(Node::peerless_config(limits), RoleKind::Solo, Epoch(1), now);
        node.peerless = true;
        node
    }

    /// A backup whose log comes from a recording instead of a primary (`understudy replay`):
    /// the driver hands it entries with `push_entries`, which checks them as `Log` frames are
    /// checked; the runtime replays them exactly as a backup does. Every output counts as
    /// released by the recording, so an output leaves (`poll_release`) as soon as the guest
    /// produced it and its marker matched. It never acknowledges, claims or goes live, and has
    /// no timers.
    pub fn file_backup(limits: Limits, now: Instant) -> Node {
        let mut node = Node::blank(
            Node::peerless_config(limits),
            RoleKind::Backup,
            Epoch(1),
            now,
        );
        node.peerless = true;
        node
    }

    /// True for a standalone or file-fed node (no peer, no arbiter).
    pub fn is_peerless(&self) -> bool {
        self.peerless
    }

    /// The first start of a pair: both replicas boot the same image in epoch 1, one as primary.
    pub fn primary(config: NodeConfig, now: Instant) -> Node {
        Node::blank(config, RoleKind::Primary, Epoch(1), now)
    }

    /// The first start of a pair: the backup half.
    pub fn backup(config: NodeConfig, now: Instant) -> Node {
        Node::blank(config, RoleKind::Backup, Epoch(1), now)
    }

    /// A restart (after a crash or a halt): no state; asks the live primary to be synced.
    ///
    /// `last_known_epoch` is the epoch this replica last persisted (`Event::PersistEpoch`), or
    /// `Epoch(1)` if it never persisted one (the pair's first epoch). The replica accepts a
    /// snapshot only from that epoch or a newer one, and its join request carries it, so a
    /// primary of an older epoch learns it is stale and halts instead of handing over older
    /// state: a replica that won an epoch, released output and crashed can never come back
    /// with the history it replaced.
    pub fn joining(config: NodeConfig, now: Instant, last_known_epoch: Epoch) -> Node {
        Node::blank(config, RoleKind::Joining, last_known_epoch, now)
    }

    /// The driver has written `epoch` durably (see `Event::PersistEpoch`): the node may send
    /// and release again. A confirmation of another epoch changes nothing.
    pub fn epoch_persisted(&mut self, epoch: Epoch) {
        if self.epoch_unpersisted == Some(epoch) {
            self.epoch_unpersisted = None;
        }
    }

    /// Moves to a newer epoch and asks the driver to persist it before anything leaves.
    fn enter_epoch(&mut self, epoch: Epoch) {
        assert!(epoch > self.epoch, "epochs only grow");
        self.epoch = epoch;
        self.epoch_unpersisted = Some(epoch);
        self.events.push_back(Event::PersistEpoch { epoch });
    }

    /// The current role.
    pub fn role(&self) -> RoleKind {
        self.role
    }

    /// The current epoch (while joining: the last epoch this replica knew).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Why the node halted, if it did.
    pub fn halt_reason(&self) -> Option<HaltReason> {
        self.halt_reason
    }

    /// The last log position appended (primary) or received in order (backup).
    pub fn log_end(&self) -> LogSequence {
        self.end
    }

    /// The highest position the backup has acknowledged (primary side).
    pub fn acknowledged(&self) -> LogSequence {
        self.acked
    }

    /// The instruction count of the highest acknowledged entry (primary side).
    pub fn acknowledged_at(&self) -> InstructionCount {
        self.acked_at
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Backup: the last log position the primary said it had released (its outputs through
    /// here are out of the machine and are not reissued at go-live).
    pub fn primary_released_through(&self) -> LogSequence {
        self.primary_released_through
    }

    /// Backup: the instruction count up to which the runtime may execute: no input before it
    /// is missing.
    pub fn horizon(&self) -> InstructionCount {
        self.end_at
    }

    fn is_live(&self) -> bool {
        matches!(
            self.role,
            RoleKind::Primary | RoleKind::Solo | RoleKind::ClaimingAsPrimary
        )
    }

    fn is_replaying(&self) -> bool {
        matches!(
            self.role,
            RoleKind::Backup | RoleKind::ClaimingAsBackup | RoleKind::GoingLive
        )
    }

    fn keeps_log(&self) -> bool {
        matches!(self.role, RoleKind::Primary | RoleKind::ClaimingAsPrimary)
    }

    fn set_role(&mut self, to: RoleKind) {
        let from = self.role;
        self.role = to;
        self.events.push_back(Event::RoleChanged {
            from,
            to,
            epoch: self.epoch,
        });
    }

    fn halt(&mut self, reason: HaltReason) {
        if self.role == RoleKind::Halted {
            return;
        }
        self.halt_reason = Some(reason);
        self.set_role(RoleKind::Halted);
        // Nothing held may leave a halted node: it is no longer the primary of any epoch.
        self.held.clear();
        self.releases.clear();
        self.log.clear();
        self.log_bytes = 0;
        self.replay.clear();
        self.transmits.clear();
        self.events.push_back(Event::Halted { reason });
    }

    fn send(&mut self, to: NodeId, message: Message) -> Result<(), EncodeError> {
        let key = if to == self.config.arbiter {
            &self.config.arbiter_key
        } else {
            &self.config.channel_key
        };
        let bytes = self
            .writer
            .write(self.epoch, message, key, &self.config.limits)?;
        self.counters.frames_sent += 1;
        self.transmits.push_back(Transmit { to, bytes });
        Ok(())
    }

    /// Sends a small control message; these always fit a frame, so an encoding failure can
    /// only come from a `frame_bytes_max` too small to be usable, which `send_small` reports by
    /// not sending (the peer's timeouts then take over).
    fn send_small(&mut self, to: NodeId, message: Message) {
        let _ = self.send(to, message);
    }

    // ----- Primary: recording, outputs, flow control -----

    /// How many instructions the primary may execute past `at` before flow control stops it
    /// (`u64::MAX` when no backup limits it). Append a `Horizon` entry before this reaches 0
    /// so the backup can acknowledge progress.
    pub fn execution_budget(&self, at: InstructionCount) -> u64 {
        if !self.keeps_log() {
            return if self.is_live() { u64::MAX } else { 0 };
        }
        self.config
            .limits
            .lag_instructions_max
            .saturating_sub(at.since(self.acked_at))
    }

    /// Why `record` of an entry at `at` would fail now, if it would: not a live primary
    /// (`NotLive`), a count before the newest recorded one (`InstructionCountWentBack`), or
    /// flow control (`Throttled`). `None` is a promise: `record` of an entry at `at` no larger
    /// than `Limits::batch_bytes_max`, with no other call in between, succeeds. So the runtime
    /// can ask before it takes an input out of its device queue.
    pub fn throttled(&self, at: InstructionCount) -> Option<NodeError> {
        if !self.is_live() {
            return Some(NodeError::NotLive { role: self.role });
        }
        if at < self.end_at {
            return Some(NodeError::InstructionCountWentBack {
                newest: self.end_at,
                offered: at,
            });
        }
        if !self.keeps_log() {
            return None;
        }
        let limits = &self.config.limits;
        let limit = if self.end.0.saturating_sub(self.acked.0) >= limits.lag_entries_max {
            LagLimit::Entries
        } else if self.log_bytes >= limits.lag_bytes_max {
            LagLimit::Bytes
        } else if at.since(self.acked_at) > limits.lag_instructions_max {
            LagLimit::Instructions
        } else {
            return None;
        };
        Some(NodeError::Throttled { limit })
    }

    /// Primary: appends a nondeterministic input or marker at its instruction count and
    /// returns its log position. Never waits; fails with `Throttled` when the backup is too far
    /// behind, so the runtime pauses execution and leaves the input in its device queue.
    ///
    /// Contract: if `throttled(entry.at)` returned `None` and the entry's encoded size is at
    /// most `Limits::batch_bytes_max`, this call succeeds (no other call may come between).
    pub fn record(&mut self, now: Instant, entry: LogEntry) -> Result<LogSequence, NodeError> {
        if let Some(error) = self.throttled(entry.at) {
            return Err(error);
        }
        let bytes = entry.encoded_len();
        if bytes > self.config.limits.batch_bytes_max {
            return Err(NodeError::EntryTooLarge { bytes });
        }
        self.end = self.end.next();
        self.end_at = entry.at;
        if self.keeps_log() {
            if self.log.is_empty() {
                self.last_ack_progress = now;
            }
            self.log_bytes += bytes as u64;
            self.log.push_back(LoggedEntry {
                position: self.end,
                entry,
                bytes,
            });
        }
        Ok(self.end)
    }

    /// Any role: the guest produced an output at `at`. A primary logs an output marker and
    /// holds the output until the backup acknowledges its position (the output rule); a solo
    /// primary releases it at once; a backup suppresses it but keeps it for reissue at
    /// go-live. Returns the log position the output belongs to.
    pub fn submit_output(
        &mut self,
        now: Instant,
        at: InstructionCount,
        device: DeviceId,
        payload: Vec<u8>,
    ) -> Result<LogSequence, NodeError> {
        if self.is_replaying() {
            // The primary logged its marker right after the entry that caused the output.
            // Never dropped: the backup takes an output marker into its log only while it
            // holds fewer than `suppressed_outputs_max` unreleased ones (backpressure), which
            // bounds this store.
            let position = self.handed_out.next();
            self.suppressed.push_back(HeldOutput {
                position,
                device,
                payload,
            });
            return Ok(position);
        }
        let length = payload.len().min(u32::MAX as usize) as u32;
        let position = self.record(
            now,
            LogEntry {
                at,
                record: Record::Output { device, length },
            },
        )?;
        let output = HeldOutput {
            position,
            device,
            payload,
        };
        if self.role == RoleKind::Solo {
            self.release(output, false, false);
        } else {
            self.held.push_back(output);
        }
        Ok(position)
    }

    fn release(&mut self, output: HeldOutput, acknowledged: bool, reissued: bool) {
        self.released_through = self.released_through.max(output.position);
        self.counters.outputs_released += 1;
        self.releases.push_back(ReleasedOutput {
            epoch: self.epoch,
            position: output.position,
            device: output.device,
            payload: output.payload,
            acknowledged,
            reissued,
        });
    }

    /// The next output allowed to leave the machine. A primary releases an output only when
    /// the backup has acknowledged its position and the lease from that acknowledgement is
    /// still valid at `now` (so a backup that may be going live has not had time to).
    pub fn poll_release(&mut self, now: Instant) -> Option<ReleasedOutput> {
        if self.epoch_unpersisted.is_some() {
            return None;
        }
        if let Some(output) = self.releases.pop_front() {
            return Some(output);
        }
        if self.role != RoleKind::Primary {
            return None;
        }
        let lease_valid = self.lease_until.is_some_and(|until| now < until);
        let front = self.held.front()?;
        if front.position <= self.acked && lease_valid {
            let output = self.held.pop_front()?;
            self.release(output, true, false);
            self.release_blocked_since = None;
            return self.releases.pop_front();
        }
        None
    }

    /// Notes whether the oldest held output is acknowledged yet unreleasable for want of a
    /// valid lease (every acknowledgement arrives after its lease ran out: a round trip at or
    /// above `Limits::output_lease`). Held that way for `ack_progress_timeout`, the primary is
    /// making no progress and claims, as if its backup had stopped acknowledging.
    fn note_release_blocked(&mut self, now: Instant) {
        let blocked = self.role == RoleKind::Primary
            && self
                .held
                .front()
                .is_some_and(|output| output.position <= self.acked)
            && self.lease_until.is_none_or(|until| now >= until);
        if !blocked {
            self.release_blocked_since = None;
        } else if self.release_blocked_since.is_none() {
            self.release_blocked_since = Some(now);
        }
    }

    /// Primary or solo: answers `Event::SnapshotWanted` with the runtime's whole state in one
    /// frame (`hand_over` then `send_handover`). The node becomes (or stays) a protected
    /// primary; outputs from here on wait for the new backup's acknowledgement.
    pub fn send_snapshot(
        &mut self,
        now: Instant,
        at: InstructionCount,
        state: Vec<u8>,
    ) -> Result<(), NodeError> {
        let handover = self.hand_over(now, at)?;
        self.send_handover(now, &handover, state)
    }

    /// Primary or solo: the state the runtime captures at `at` (with the guest paused there)
    /// goes to a joining replica. From here the node keeps the log for it and is a primary:
    /// outputs wait for the new backup's acknowledgement. Send the state (pieces through
    /// `send_transfer`), then the returned handover with `send_handover`.
    pub fn hand_over(&mut self, now: Instant, at: InstructionCount) -> Result<Handover, NodeError> {
        if !matches!(self.role, RoleKind::Primary | RoleKind::Solo) {
            return Err(NodeError::WrongRole { role: self.role });
        }
        let held_outputs = self
            .held
            .iter()
            .map(|output| OutputCopy {
                position: output.position,
                device: output.device,
                payload: output.payload.clone(),
            })
            .collect();
        let handover = Handover {
            position: self.end,
            at,
            released_through: self.released_through,
            held_outputs,
        };
        self.handover_revocable = self.role == RoleKind::Solo;
        if self.role == RoleKind::Solo {
            // No log was kept while solo: the state covers everything so far.
            self.log.clear();
            self.log_bytes = 0;
            self.log_start = self.end.next();
            self.acked = self.end;
            self.acked_at = self.end_at.max(at);
            self.lease_until = None;
            self.set_role(RoleKind::Primary);
        }
        self.last_heard = now;
        self.peer_heard = true;
        self.handover_unconfirmed = true;
        self.next_to_send = self.end.next();
        // A new backup gets a fresh chance to acknowledge before the primary gives up on it.
        self.last_ack_progress = now;
        Ok(handover)
    }

    /// Primary: sends the `Snapshot` that completes a handover, with the runtime's `state`
    /// (the whole state, or what names the pieces sent before). May be repeated.
    pub fn send_handover(
        &mut self,
        now: Instant,
        handover: &Handover,
        state: Vec<u8>,
    ) -> Result<(), NodeError> {
        if self.role != RoleKind::Primary {
            return Err(NodeError::WrongRole { role: self.role });
        }
        // From here the joiner may install and become a backup: losing it takes an epoch.
        self.handover_revocable = false;
        let message = Message::Snapshot {
            sent_at: now,
            position: handover.position,
            at: handover.at,
            state,
            released_through: handover.released_through,
            held_outputs: handover.held_outputs.clone(),
        };
        self.send(self.config.peer, message)
            .map_err(NodeError::Encode)?;
        self.last_sent = now;
        Ok(())
    }

    /// Joining or live primary: sends a state-transfer message to the peer. A joining
    /// replica sends only the joiner's messages, a live one only the live side's.
    pub fn send_transfer(&mut self, transfer: Transfer) -> Result<(), NodeError> {
        let allowed = match self.role {
            RoleKind::Joining => !transfer.from_live(),
            RoleKind::Primary | RoleKind::Solo => transfer.from_live(),
            _ => false,
        };
        if !allowed {
            return Err(NodeError::WrongRole { role: self.role });
        }
        self.send(self.config.peer, Message::Transfer(transfer))
            .map_err(NodeError::Encode)
    }

    /// Joining: the runtime installed the snapshot of `Event::InstallSnapshot` (and checked
    /// it): the node becomes the backup, replays from the snapshot's position and
    /// acknowledges it. Without a pending snapshot nothing happens.
    pub fn confirm_install(&mut self, now: Instant) {
        if self.role != RoleKind::Joining {
            return;
        }
        if let Some(pending) = self.pending_install.take() {
            self.become_backup(now, pending);
        }
    }

    /// Joining: the runtime could not install the pending snapshot (pieces missing, a digest
    /// that differs): the node stays joining and asks again.
    pub fn refuse_install(&mut self) {
        self.pending_install = None;
    }

    // ----- Backup: replay -----

    /// Backup: the instruction count of the next entry to inject, so the runtime can execute
    /// up to it first.
    pub fn next_replay_at(&self) -> Option<InstructionCount> {
        if !self.is_replaying() {
            return None;
        }
        self.replay.front().map(|(_, entry)| entry.at)
    }

    /// Backup: the next entry to inject, in log order. While going live, call
    /// `finish_go_live` once this returns `None` and every entry has been executed.
    pub fn poll_replay(&mut self) -> Option<ReplayItem> {
        if !self.is_replaying() {
            return None;
        }
        let (position, entry) = self.replay.pop_front()?;
        self.handed_out = position;
        if let Record::Digest { digest } = entry.record {
            if self.pending_digests.len() >= self.config.limits.pending_digests_max {
                self.pending_digests.pop_front();
            }
            self.pending_digests.push_back((position, entry.at, digest));
        }
        Some(ReplayItem { position, entry })
    }

    /// Backup: the runtime's own digest at the digest entry `position`. A mismatch raises
    /// `Event::Divergence` with the first differing instruction count and halts this backup
    /// (it must never go live with a different state); it rejoins through a snapshot.
    pub fn check_digest(
        &mut self,
        position: LogSequence,
        computed: StateDigest,
    ) -> Result<bool, NodeError> {
        let Some(index) = self
            .pending_digests
            .iter()
            .position(|(p, _, _)| *p == position)
        else {
            return Err(NodeError::UnknownDigest { position });
        };
        let Some((_, at, expected)) = self.pending_digests.remove(index) else {
            return Err(NodeError::UnknownDigest { position });
        };
        if expected == computed {
            self.last_agreed = Some(at);
            return Ok(true);
        }
        self.events.push_back(Event::Divergence {
            position,
            last_agreed: self.last_agreed,
            first_diverged: at,
        });
        self.halt(HaltReason::Diverged { first_diverged: at });
        Ok(false)
    }

    /// Going live: the runtime executed every entry `poll_replay` handed out. The node becomes
    /// the solo primary of its new epoch, emits the go-live events and reissues the outputs
    /// the old primary may not have released.
    pub fn finish_go_live(&mut self, now: Instant) -> Result<(), NodeError> {
        if self.role != RoleKind::GoingLive {
            return Err(NodeError::WrongRole { role: self.role });
        }
        if !self.replay.is_empty() {
            return Err(NodeError::ReplayNotDrained {
                remaining: self.replay.len(),
            });
        }
        self.set_role(RoleKind::Solo);
        self.events.push_back(Event::LeaveReplay {
            epoch: self.epoch,
            position: self.end,
            at: self.end_at,
        });
        self.events.push_back(Event::AnnounceMac);
        self.events.push_back(Event::ReissueInFlightIo);
        self.released_through = self.primary_released_through;
        let suppressed = core::mem::take(&mut self.suppressed);
        for output in suppressed {
            if output.position > self.primary_released_through && output.position <= self.end {
                self.release(output, false, true);
            }
        }
        self.pending_digests.clear();
        self.last_heard = now;
        Ok(())
    }

    // ----- Frames in -----

    /// Handles one received datagram. Errors say why the frame was rejected; the node has
    /// already taken the error's `action()` (fence replies, resend requests).
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ReceiveError> {
        let result = self.handle_frame_inner(now, bytes);
        match result {
            Ok(()) => self.counters.frames_accepted += 1,
            Err(_) => self.counters.frames_rejected += 1,
        }
        result
    }

    fn handle_frame_inner(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ReceiveError> {
        // The sender is bound to its key: the arbiter's frames verify only with this replica's
        // arbiter key, the peer's only with the channel key, anything else is a stranger.
        let sender = claimed_sender(bytes, &self.config.limits)?;
        if self.peerless {
            // Nobody shares a key with a node that has no peer.
            return Err(ReceiveError::UnknownSender { sender });
        }
        let key = if sender == self.config.arbiter {
            &self.config.arbiter_key
        } else if sender == self.config.peer {
            &self.config.channel_key
        } else {
            return Err(ReceiveError::UnknownSender { sender });
        };
        let frame = Frame::decode(bytes, key, &self.config.limits)?;
        let header = frame.header;
        let unexpected = |node: &Node, message: &Message| ReceiveError::UnexpectedMessage {
            kind: message.kind(),
            role: node.role,
        };
        if header.sender == self.config.arbiter {
            self.arbiter_window
                .accept(header.incarnation, header.sequence)?;
            self.arbiter_heard = Some(now);
            let Message::ClaimReply { epoch, owner } = frame.message else {
                return Err(unexpected(self, &frame.message));
            };
            return self.handle_claim_reply(now, epoch, owner);
        }
        self.peer_window
            .accept(header.incarnation, header.sequence)?;
        if self.role == RoleKind::Halted {
            return Err(unexpected(self, &frame.message));
        }
        // A join carries the joiner's last known epoch. An older one is normal (the joiner
        // missed failovers and will take this node's state); a newer one proves this node is
        // stale: the joiner once held a newer epoch, and this node's state is older than
        // history that may already have left the machine.
        if let Message::Join = frame.message {
            if header.epoch > self.epoch && self.role != RoleKind::Joining {
                self.halt(HaltReason::Fenced {
                    epoch: header.epoch,
                });
                return Ok(());
            }
            return self.handle_join(now);
        }
        if let Message::Transfer(transfer) = frame.message {
            return self.handle_transfer(now, header.epoch, transfer);
        }
        if self.role == RoleKind::Joining {
            return match frame.message {
                snapshot @ Message::Snapshot { .. } if header.epoch >= self.epoch.max(Epoch(1)) => {
                    if header.epoch > self.epoch {
                        self.enter_epoch(header.epoch);
                    }
                    self.install_snapshot(now, snapshot);
                    Ok(())
                }
                Message::Snapshot { .. } if header.epoch < self.epoch => {
                    // State from before an epoch this replica knew: never install it, and
                    // tell its sender it is stale.
                    self.send_small(header.sender, Message::Fence { epoch: self.epoch });
                    Err(ReceiveError::StaleEpoch {
                        expected: self.epoch,
                        received: header.epoch,
                    })
                }
                other => Err(unexpected(self, &other)),
            };
        }
        if header.epoch < self.epoch {
            self.send_small(header.sender, Message::Fence { epoch: self.epoch });
            return Err(ReceiveError::StaleEpoch {
                expected: self.epoch,
                received: header.epoch,
            });
        }
        if header.epoch > self.epoch {
            // Someone won a newer epoch: whatever this node was, it is stale.
            self.fenced(header.epoch);
            return Ok(());
        }
        match frame.message {
            Message::Log {
                sent_at,
                released_through,
                first,
                entries,
            } => self.handle_log(now, sent_at, released_through, first, entries),
            Message::Heartbeat {
                sent_at,
                log_end,
                released_through,
            } => {
                if !self.is_replaying() {
                    return Err(unexpected(self, &frame.message));
                }
                self.heard_from_primary(now, sent_at, released_through);
                let resend = log_end > self.end;
                self.send_ack(now, resend);
                Ok(())
            }
            Message::Ack {
                echo,
                through,
                resend,
                backpressure,
            } => self.handle_ack(now, echo, through, resend, backpressure, &frame.message),
            Message::Snapshot {
                sent_at, position, ..
            } => {
                if self.role != RoleKind::Backup {
                    return Err(ReceiveError::UnexpectedMessage {
                        kind: "snapshot",
                        role: self.role,
                    });
                }
                if position > self.end {
                    self.install_snapshot(now, frame.message);
                } else {
                    self.heard_from_primary(now, sent_at, LogSequence(0));
                    self.send_ack(now, false);
                }
                Ok(())
            }
            Message::Fence { epoch } => {
                if epoch > self.epoch {
                    self.fenced(epoch);
                }
                Ok(())
            }
            other => Err(unexpected(self, &other)),
        }
    }

    fn heard_from_primary(
        &mut self,
        now: Instant,
        sent_at: Instant,
        released_through: LogSequence,
    ) {
        if self.role == RoleKind::Backup {
            // A claiming backup has stopped listening: it may already hold the next epoch.
            self.last_heard = now;
            self.peer_heard = true;
        }
        self.newest_sent_at = self.newest_sent_at.max(sent_at);
        if released_through > self.primary_released_through {
            self.primary_released_through = released_through;
            while self
                .suppressed
                .front()
                .is_some_and(|output| output.position <= released_through)
            {
                self.suppressed.pop_front();
            }
            while self
                .unreleased_markers
                .front()
                .is_some_and(|position| *position <= released_through)
            {
                self.unreleased_markers.pop_front();
            }
        }
    }

    /// Backup: room for one more entry: the replay queue is not full, and fewer than
    /// `suppressed_outputs_max` outputs are kept or announced (by a marker taken into the log)
    /// and not yet released by the primary. Outputs of entries already taken are still kept,
    /// so the store can pass the limit by what those entries produce, but it never drops one.
    fn has_room(&self) -> bool {
        let limits = &self.config.limits;
        self.replay.len() < limits.replay_entries_max
            && self.unreleased_markers.len() < limits.suppressed_outputs_max
            && self.suppressed.len() < limits.suppressed_outputs_max
    }

    fn send_ack(&mut self, now: Instant, resend: bool) {
        // Only a backup acknowledges: an acknowledgement extends the primary's output lease,
        // and a claiming backup must not promise to stay a backup.
        if self.role != RoleKind::Backup || self.peerless {
            return;
        }
        if self.backpressured && self.has_room() {
            self.backpressured = false;
        }
        // Ask again at once for a new gap, but repeat a request for the same position no
        // more often than the retransmit timeout, so reordering cannot cause a resend storm.
        let resend = resend
            && self.last_resend_request.is_none_or(|(last, position)| {
                position != self.end || now >= last + self.config.limits.retransmit_timeout
            });
        if resend {
            self.last_resend_request = Some((now, self.end));
        }
        let message = Message::Ack {
            echo: self.newest_sent_at,
            through: self.end,
            resend,
            backpressure: self.backpressured,
        };
        self.send_small(self.config.peer, message);
        self.last_ack_sent = now;
    }

    /// A snapshot arrived: a joining node hands it to the runtime and waits for
    /// `confirm_install`; a backup (of this primary, which restarted its join) installs it
    /// at once as it did before the transfer existed.
    fn install_snapshot(&mut self, now: Instant, snapshot: Message) {
        let Message::Snapshot {
            sent_at,
            position,
            at,
            state,
            released_through,
            held_outputs,
        } = snapshot
        else {
            return;
        };
        let pending = PendingInstall {
            sent_at,
            handover: Handover {
                position,
                at,
                released_through,
                held_outputs,
            },
        };
        self.events.push_back(Event::InstallSnapshot {
            position,
            at,
            state,
        });
        if self.role == RoleKind::Joining {
            self.pending_install = Some(pending);
        } else {
            self.become_backup(now, pending);
        }
    }

    fn become_backup(&mut self, now: Instant, pending: PendingInstall) {
        let PendingInstall { sent_at, handover } = pending;
        let Handover {
            position,
            at,
            released_through,
            held_outputs,
        } = handover;
        let from = self.role;
        self.end = position;
        self.end_at = at;
        self.handed_out = position;
        self.replay.clear();
        self.pending_digests.clear();
        self.last_agreed = None;
        // The state includes having produced every output through `position`; the ones the
        // primary still holds must stay reissuable, so they come along, and only what the
        // primary really released counts as released.
        let released_through = released_through.min(position);
        self.primary_released_through = released_through;
        self.suppressed = held_outputs
            .into_iter()
            .filter(|output| output.position > released_through && output.position <= position)
            .map(|output| HeldOutput {
                position: output.position,
                device: output.device,
                payload: output.payload,
            })
            .collect();
        self.unreleased_markers = self
            .suppressed
            .iter()
            .map(|output| output.position)
            .collect();
        self.backpressured = false;
        self.last_heard = now;
        self.peer_heard = true;
        self.role = RoleKind::Backup;
        if from != RoleKind::Backup {
            self.events.push_back(Event::RoleChanged {
                from,
                to: RoleKind::Backup,
                epoch: self.epoch,
            });
        }
        self.heard_from_primary(now, sent_at, released_through);
        self.send_ack(now, false);
    }

    fn handle_log(
        &mut self,
        now: Instant,
        sent_at: Instant,
        released_through: LogSequence,
        first: LogSequence,
        entries: Vec<LogEntry>,
    ) -> Result<(), ReceiveError> {
        if !self.is_replaying() || self.role == RoleKind::GoingLive {
            return Err(ReceiveError::UnexpectedMessage {
                kind: "log",
                role: self.role,
            });
        }
        self.heard_from_primary(now, sent_at, released_through);
        let expected = self.end.next();
        if first > expected {
            self.send_ack(now, true);
            return Err(ReceiveError::LogGap {
                expected,
                received: first,
            });
        }
        let mut position = first;
        for entry in entries {
            if position == self.end.next() {
                match self.append_replay(entry) {
                    Ok(()) => {}
                    // Backpressure: take nothing more, say so, and ask again once there is
                    // room. Outputs are then kept until released, never forgotten.
                    Err(AppendRefused::NoRoom) => {
                        self.backpressured = true;
                        break;
                    }
                    // A primary never records a count that goes back; treat as a gap so it
                    // resends rather than trusting this batch.
                    Err(AppendRefused::WentBack) => break,
                }
            }
            position = position.next();
        }
        self.send_ack(now, false);
        Ok(())
    }

    fn handle_ack(
        &mut self,
        now: Instant,
        echo: Instant,
        through: LogSequence,
        resend: bool,
        backpressure: bool,
        message: &Message,
    ) -> Result<(), ReceiveError> {
        match self.role {
            RoleKind::Primary => {}
            // A claiming primary has stopped releasing; late acknowledgements change nothing.
            RoleKind::ClaimingAsPrimary => return Ok(()),
            role => {
                return Err(ReceiveError::UnexpectedMessage {
                    kind: message.kind(),
                    role,
                })
            }
        }
        self.last_heard = now;
        self.peer_heard = true;
        // A joiner acknowledges only once it installed the handed-over state.
        self.handover_unconfirmed = false;
        // The echo is our own clock reading; never let it extend the lease past one lease
        // from now.
        let echo = echo.min(now);
        let until = echo + self.config.limits.output_lease();
        self.lease_until = Some(self.lease_until.map_or(until, |current| current.max(until)));
        let through = through.min(self.end);
        if through > self.acked {
            self.acked = through;
            while self
                .log
                .front()
                .is_some_and(|logged| logged.position <= through)
            {
                if let Some(logged) = self.log.pop_front() {
                    self.log_bytes -= logged.bytes as u64;
                    self.acked_at = logged.entry.at;
                    self.log_start = logged.position.next();
                }
            }
            self.last_ack_progress = now;
            if self.next_to_send <= through {
                self.next_to_send = through.next();
            }
        }
        if backpressure {
            // The backup is alive and holds everything through `through` but has no room for
            // more: that is progress, not a failure. Flow control throttles the runtime, and
            // entries are resent when the backup asks again (it does once it has room).
            self.last_ack_progress = now;
            self.last_retransmit = now;
            self.next_to_send = through.next().max(self.log_start);
        }
        // A resend request older than what the backup already acknowledged was overtaken by
        // a newer acknowledgement and asks for nothing.
        if resend && through >= self.acked && through.next() < self.next_to_send {
            self.next_to_send = through.next().max(self.log_start);
            self.counters.retransmissions += 1;
        }
        self.note_release_blocked(now);
        Ok(())
    }

    /// A newer epoch exists. A replica that never heard its partner since it started as
    /// one half of a new pair (`await_peer`) has run nothing and released nothing: its
    /// partner went on without it, so it joins that partner instead of halting, whatever
    /// role its configuration gave it. Anything else is stale and halts.
    fn fenced(&mut self, epoch: Epoch) {
        let never_paired = !self.peer_heard
            && matches!(self.role, RoleKind::Primary | RoleKind::Backup)
            && self.released_through == LogSequence(0)
            && self.handed_out == LogSequence(0);
        if !never_paired {
            self.halt(HaltReason::Fenced { epoch });
            return;
        }
        self.log.clear();
        self.log_bytes = 0;
        self.held.clear();
        self.replay.clear();
        self.end = LogSequence(0);
        self.end_at = InstructionCount(0);
        self.acked = LogSequence(0);
        self.acked_at = InstructionCount(0);
        self.log_start = LogSequence(1);
        self.next_to_send = LogSequence(1);
        self.enter_epoch(epoch);
        self.set_role(RoleKind::Joining);
    }

    /// A state-transfer message: between a joining replica and a live primary only. A
    /// joiner's frames carry the epoch it last knew, which may be older (it missed
    /// failovers); a live side's must be from the joiner's epoch or newer.
    fn handle_transfer(
        &mut self,
        now: Instant,
        epoch: Epoch,
        transfer: Transfer,
    ) -> Result<(), ReceiveError> {
        let expected = match self.role {
            RoleKind::Joining => transfer.from_live() && epoch >= self.epoch,
            RoleKind::Primary | RoleKind::Solo => !transfer.from_live() && epoch <= self.epoch,
            _ => false,
        };
        if !expected {
            return Err(ReceiveError::UnexpectedMessage {
                kind: "transfer",
                role: self.role,
            });
        }
        if self.role == RoleKind::Primary {
            // A joiner that answers is alive; its log acknowledgements come once it installed
            // the state, which may take longer than an acknowledgement may: until then its
            // transfer messages count as progress (outputs still wait for it).
            self.last_heard = now;
            if self.handover_unconfirmed {
                self.last_ack_progress = now;
            }
        }
        self.events.push_back(Event::Transfer(transfer));
        Ok(())
    }

    fn handle_join(&mut self, now: Instant) -> Result<(), ReceiveError> {
        match self.role {
            RoleKind::Primary | RoleKind::Solo => {
                let due = self
                    .last_snapshot_request
                    .is_none_or(|last| now >= last + self.config.limits.retransmit_timeout);
                if due {
                    self.last_snapshot_request = Some(now);
                    self.events.push_back(Event::SnapshotWanted);
                }
                Ok(())
            }
            role => Err(ReceiveError::UnexpectedMessage { kind: "join", role }),
        }
    }

    fn handle_claim_reply(
        &mut self,
        now: Instant,
        epoch: Epoch,
        owner: NodeId,
    ) -> Result<(), ReceiveError> {
        let asked = self.epoch.next();
        match self.role {
            RoleKind::ClaimingAsPrimary | RoleKind::ClaimingAsBackup => {}
            // The arbiter's answer to a heartbeat: its record. A newer epoch than ours means
            // the pair moved on without us (we were deposed while we could not hear it): stop
            // before anything more leaves this node, or, never paired, join the newer epoch.
            RoleKind::Primary | RoleKind::Solo | RoleKind::Backup | RoleKind::GoingLive => {
                if epoch > self.epoch {
                    self.fenced(epoch);
                }
                return Ok(());
            }
            RoleKind::Joining | RoleKind::Halted | RoleKind::Arbiter => return Ok(()),
        }
        if epoch < asked {
            // An answer to an older claim; the arbiter has not seen this one yet.
            return Ok(());
        }
        if epoch > asked || owner != self.config.me {
            self.halt(HaltReason::LostArbitration { epoch, owner });
            return Ok(());
        }
        self.enter_epoch(epoch);
        if self.role == RoleKind::ClaimingAsPrimary {
            // Won as the primary: no backup any more, so everything held may go out.
            self.set_role(RoleKind::Solo);
            self.log.clear();
            self.log_bytes = 0;
            self.lease_until = None;
            let held = core::mem::take(&mut self.held);
            for output in held {
                self.release(output, false, false);
            }
        } else {
            self.set_role(RoleKind::GoingLive);
        }
        self.last_heard = now;
        Ok(())
    }

    // ----- Time -----

    /// Back to solo after a handover whose joiner went silent before it could install.
    fn revoke_handover(&mut self) {
        self.handover_unconfirmed = false;
        self.handover_revocable = false;
        self.set_role(RoleKind::Solo);
        self.log.clear();
        self.log_bytes = 0;
        self.lease_until = None;
        self.log_start = self.end.next();
        self.acked = self.end;
        self.acked_at = self.end_at;
        let held = core::mem::take(&mut self.held);
        for output in held {
            self.release(output, false, false);
        }
    }

    fn start_claim(&mut self, now: Instant) {
        let to = if self.role == RoleKind::Primary {
            RoleKind::ClaimingAsPrimary
        } else {
            RoleKind::ClaimingAsBackup
        };
        self.set_role(to);
        self.lease_until = None;
        self.next_claim_at = now;
        self.send_claim_if_due(now);
    }

    fn send_claim_if_due(&mut self, now: Instant) {
        if now >= self.next_claim_at {
            self.send_small(
                self.config.arbiter,
                Message::Claim {
                    epoch: self.epoch.next(),
                },
            );
            self.next_claim_at = now + self.config.limits.claim_retry_interval;
        }
    }

    /// Runs timers: heartbeats, acknowledgements, retransmission, failure detection, claim and
    /// join retries. Call at `poll_at()` (calling more often is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.peerless {
            return;
        }
        let limits = self.config.limits.clone();
        self.run_role_timers(now, &limits);
        // After the role's timers: a replica that just started claiming reports nothing.
        if self.reports_epoch() && now >= self.next_report_at {
            // Tell the arbiter this epoch exists, so that an arbiter whose storage was wiped
            // or rolled back refuses a stale claimant's claim for it.
            let message = Message::Heartbeat {
                sent_at: now,
                log_end: self.end,
                released_through: self.released_through,
            };
            self.send_small(self.config.arbiter, message);
            self.next_report_at = now + limits.peer_timeout;
        }
    }

    fn run_role_timers(&mut self, now: Instant, limits: &Limits) {
        match self.role {
            RoleKind::Primary => {
                let silent = self.peer_heard && now >= self.last_heard + limits.peer_timeout;
                let stuck = self.peer_heard
                    && !self.log.is_empty()
                    && now >= self.last_ack_progress + limits.ack_progress_timeout;
                self.note_release_blocked(now);
                let lease_unreachable = self
                    .release_blocked_since
                    .is_some_and(|since| now >= since + limits.ack_progress_timeout);
                if (silent || stuck) && self.handover_unconfirmed && self.handover_revocable {
                    // The joiner died before it was sent the handover: it never was a
                    // backup, so this primary is solo again in its epoch, without a claim.
                    self.revoke_handover();
                    return;
                }
                if silent || stuck || lease_unreachable {
                    self.claim_cause = Some(if silent {
                        ClaimCause::PeerSilent
                    } else if stuck {
                        ClaimCause::AcknowledgementsStuck
                    } else {
                        ClaimCause::LeaseUnreachable
                    });
                    self.start_claim(now);
                    return;
                }
                if !self.log.is_empty()
                    && now
                        >= self.last_ack_progress.max(self.last_retransmit)
                            + limits.retransmit_timeout
                {
                    self.next_to_send = self.log_start;
                    self.last_retransmit = now;
                    self.counters.retransmissions += 1;
                }
                if now >= self.last_sent + limits.heartbeat_interval {
                    let message = Message::Heartbeat {
                        sent_at: now,
                        log_end: self.end,
                        released_through: self.released_through,
                    };
                    self.send_small(self.config.peer, message);
                    self.last_sent = now;
                }
            }
            RoleKind::Backup => {
                if self.peer_heard && now >= self.last_heard + limits.peer_timeout {
                    self.claim_cause = Some(ClaimCause::PeerSilent);
                    self.start_claim(now);
                    return;
                }
                if self.backpressured && self.has_room() {
                    // Room again: ask for what was refused.
                    self.send_ack(now, true);
                } else if now >= self.last_ack_sent + limits.heartbeat_interval {
                    self.send_ack(now, false);
                }
            }
            RoleKind::ClaimingAsPrimary | RoleKind::ClaimingAsBackup => self.send_claim_if_due(now),
            RoleKind::Joining => {
                if now >= self.next_join_at {
                    self.send_small(self.config.peer, Message::Join);
                    self.next_join_at = now + limits.join_retry_interval;
                }
            }
            RoleKind::Solo | RoleKind::GoingLive | RoleKind::Halted | RoleKind::Arbiter => {}
        }
    }

    fn reports_epoch(&self) -> bool {
        matches!(
            self.role,
            RoleKind::Primary | RoleKind::Solo | RoleKind::Backup | RoleKind::GoingLive
        )
    }

    /// The next time `handle_timeout` has work, if any.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.peerless {
            return None;
        }
        let at = self.poll_at_for_role();
        if !self.reports_epoch() {
            return at;
        }
        Some(at.map_or(self.next_report_at, |at| at.min(self.next_report_at)))
    }

    fn poll_at_for_role(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        match self.role {
            RoleKind::Primary => {
                let mut at = self.last_sent + limits.heartbeat_interval;
                if self.peer_heard {
                    at = at.min(self.last_heard + limits.peer_timeout);
                }
                if let Some(since) = self.release_blocked_since {
                    at = at.min(since + limits.ack_progress_timeout);
                }
                if !self.log.is_empty() && self.peer_heard {
                    at = at
                        .min(self.last_ack_progress + limits.ack_progress_timeout)
                        .min(
                            self.last_ack_progress.max(self.last_retransmit)
                                + limits.retransmit_timeout,
                        );
                }
                Some(at)
            }
            RoleKind::Backup if self.backpressured && self.has_room() => Some(self.last_ack_sent),
            RoleKind::Backup if self.peer_heard => Some(
                (self.last_heard + limits.peer_timeout)
                    .min(self.last_ack_sent + limits.heartbeat_interval),
            ),
            RoleKind::Backup => Some(self.last_ack_sent + limits.heartbeat_interval),
            RoleKind::ClaimingAsPrimary | RoleKind::ClaimingAsBackup => Some(self.next_claim_at),
            RoleKind::Joining => Some(self.next_join_at),
            RoleKind::Solo | RoleKind::GoingLive | RoleKind::Halted | RoleKind::Arbiter => None,
        }
    }

    // ----- Frames out, events -----

    /// The next frame to send. A primary packs unsent log entries into batches here, so
    /// entries recorded between two polls travel together.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.epoch_unpersisted.is_some() {
            return None;
        }
        if let Some(transmit) = self.transmits.pop_front() {
            return Some(transmit);
        }
        if self.role != RoleKind::Primary || self.next_to_send > self.end {
            return None;
        }
        let start = self.next_to_send.0.checked_sub(self.log_start.0)? as usize;
        let limits = &self.config.limits;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for logged in self.log.iter().skip(start) {
            if entries.len() >= limits.batch_entries_max
                || (bytes + logged.bytes > limits.batch_bytes_max && !entries.is_empty())
            {
                break;
            }
            bytes += logged.bytes;
            entries.push(logged.entry.clone());
        }
        if entries.is_empty() {
            return None;
        }
        let count = entries.len() as u64;
        let message = Message::Log {
            sent_at: now,
            released_through: self.released_through,
            first: self.next_to_send,
            entries,
        };
        match self.send(self.config.peer, message) {
            Ok(()) => {
                self.next_to_send = LogSequence(self.next_to_send.0 + count);
                self.last_sent = now;
            }
            // Batch limits keep batches well under the frame limit; if a configuration breaks
            // that, the backup stops acknowledging and failure detection takes over.
            Err(_) => return None,
        }
        self.transmits.pop_front()
    }

    /// The next event for the runtime.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A pair that is forming: until the peer is first heard, its silence is not a failure
    /// (the partner may still be starting), so no claim is made. The driver bounds the wait
    /// with its own timeout and a clear message.
    pub fn await_peer(&mut self) {
        self.peer_heard = false;
    }

    /// Primary: the last handover (`hand_over`) was followed by an acknowledgement, so the
    /// joiner installed the state and follows the log (true when nothing was handed over).
    pub fn handover_confirmed(&self) -> bool {
        !self.handover_unconfirmed
    }

    /// Why the last claim for a new epoch began, if one did.
    pub fn claim_cause(&self) -> Option<ClaimCause> {
        self.claim_cause
    }

    /// This start's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.config.incarnation
    }

    /// True once the peer was heard (always, unless `await_peer` was called and the peer has
    /// been silent since).
    pub fn peer_heard(&self) -> bool {
        self.peer_heard
    }

    /// When an authenticated frame from the arbiter last arrived (it answers every heartbeat
    /// with its record), for the runtime's "is failover available" status.
    pub fn arbiter_heard_at(&self) -> Option<Instant> {
        self.arbiter_heard
    }

    /// The limits this node was configured with.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Backup: the guest produced the output that the primary logged as the `Output` marker
    /// at `position` (just handed out by `poll_replay`). It is kept, suppressed, and reissued
    /// at go-live unless the primary had released it. Unlike `submit_output`, the position is
    /// exact, so an output is reissued exactly when the primary may not have released it.
    pub fn suppress_output(
        &mut self,
        position: LogSequence,
        device: DeviceId,
        payload: Vec<u8>,
    ) -> Result<(), NodeError> {
        if !self.is_replaying() {
            return Err(NodeError::WrongRole { role: self.role });
        }
        let output = HeldOutput {
            position,
            device,
            payload,
        };
        if self.peerless {
            // A recording released every output when it happened: a replay lets it out too.
            self.release(output, false, false);
            return Ok(());
        }
        // Never dropped: backpressure on output markers bounds this store (`submit_output`).
        self.suppressed.push_back(output);
        Ok(())
    }

    /// File-fed backup (`file_backup`): appends recorded entries to the replay queue, in
    /// order, with the checks a `Log` frame gets: counts never go back, and the queue takes
    /// entries only while it has room. Returns how many it took (from the front); offer the
    /// rest again once the runtime has replayed some.
    pub fn push_entries(&mut self, now: Instant, entries: &[LogEntry]) -> Result<usize, NodeError> {
        if !(self.peerless && self.role == RoleKind::Backup) {
            return Err(NodeError::WrongRole { role: self.role });
        }
        let mut taken = 0;
        for entry in entries {
            match self.append_replay(entry.clone()) {
                Ok(()) => taken += 1,
                Err(AppendRefused::NoRoom) => break,
                Err(AppendRefused::WentBack) => {
                    return Err(NodeError::InstructionCountWentBack {
                        newest: self.end_at,
                        offered: entry.at,
                    })
                }
            }
        }
        // The recording released every output at once.
        self.heard_from_primary(now, now, self.end);
        Ok(taken)
    }

    fn append_replay(&mut self, entry: LogEntry) -> Result<(), AppendRefused> {
        if !self.has_room() {
            return Err(AppendRefused::NoRoom);
        }
        if entry.at < self.end_at {
            return Err(AppendRefused::WentBack);
        }
        let position = self.end.next();
        if matches!(entry.record, Record::Output { .. }) {
            self.unreleased_markers.push_back(position);
        }
        self.end = position;
        self.end_at = entry.at;
        self.replay.push_back((position, entry));
        Ok(())
    }
}

/// Why the backup's replay queue did not take the next entry.
enum AppendRefused {
    /// The queue or the store of suppressed outputs is full (backpressure).
    NoRoom,
    /// Its instruction count is before the newest entry's.
    WentBack,
}

#[cfg(test)]
mod tests;
