//! Re-protection in the runtime: the live side's pre-copy of RAM, disk and devices to a
//! joining replica, and the joiner's end, over the messages of `ft::transfer`.
//!
//! Both ends are sans-IO state machines over the machine and its disk: the replica calls
//! them between run slices with the messages that arrived, and they queue messages through
//! the node. Their work per call is bounded ([`HASH_BYTES_PER_TURN`],
//! [`IN_FLIGHT_BYTES_MAX`]) so the live guest keeps running while a join goes on.
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use understudy_ft::node::Handover;
use understudy_ft::transfer::{
    Completion, DiskSummary, DiskTree, PageData, Piece, SessionId, Transfer, TreeNode,
};
use understudy_ft::{Duration, Instant, Node};
use understudy_machine::Machine;

/// Bytes per RAM page (the machine's dirty tracking granularity).
pub const PAGE_BYTES: usize = 4096;
/// Bytes of one disk range compared by digest and fetched whole.
pub const DISK_LEAF_BYTES: u32 = 16 * 1024;
/// Most state bytes in one transfer message by default: each travels as one datagram, and a
/// host's loopback or a LAN with IP fragmentation carries 24 KiB datagrams well. A driver
/// whose channel should not fragment sets less ([`TransferLimits::for_mtu`]).
pub const MESSAGE_BYTES_DEFAULT: usize = 24 * 1024;
/// State bytes sent and not yet acknowledged, at most.
pub const IN_FLIGHT_BYTES_MAX: usize = 1536 * 1024;
/// Leaf bytes fetched and not yet received, at most.
pub const FETCH_BYTES_IN_FLIGHT_MAX: usize = 128 * 1024;
/// The window a session starts with. It grows by a piece with every acknowledgement that
/// moves and halves when one is missing for a retransmission timeout (TCP's additive
/// increase, multiplicative decrease, RFC 5681 section 3.1): a burst larger than the
/// receiver's ring or the sender's buffer loses its tail, and resending the same burst would
/// lose it again.
pub const PIECES_WINDOW_INITIAL: usize = 4;
/// Pages a joiner writes before it lets the machine's digest hash them.
const DIGEST_PAGES_PER_STEP: usize = 512;
/// Pages taken from a round's list at once (then packed into pieces).
const RUN_PAGES_MAX: usize = 1024;
/// Bytes of a tree node's name and digest in a `DiskDigests` message, generously.
const DIGEST_ENTRY_BYTES: usize = 48;
/// Bytes of a tree node's name in a `DiskQuery`, generously.
const QUERY_ENTRY_BYTES: usize = 8;
/// What a transfer message costs beyond its state bytes (frame header, tag, message tags,
/// session, numbers), generously.
const MESSAGE_OVERHEAD_BYTES: usize = 160;

/// How large a join's messages may be, chosen by the driver for its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// Most state bytes in one message.
    pub message_bytes: usize,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            message_bytes: MESSAGE_BYTES_DEFAULT,
        }
    }
}

impl TransferLimits {
    /// Messages that fit one IPv4/UDP datagram of an `mtu_bytes` link unfragmented.
    pub fn for_mtu(mtu_bytes: usize) -> TransferLimits {
        TransferLimits {
            message_bytes: mtu_bytes
                .saturating_sub(28 + MESSAGE_OVERHEAD_BYTES)
                .max(256),
        }
    }

    /// Pieces in flight at most.
    fn window_max(self) -> usize {
        (IN_FLIGHT_BYTES_MAX / self.message_bytes).max(1)
    }

    /// Digests per `DiskDigests` message.
    fn digests_per_message(self) -> usize {
        (self.message_bytes / DIGEST_ENTRY_BYTES).max(1)
    }

    /// Nodes per `DiskQuery` message.
    fn queries_per_message(self) -> usize {
        (self.message_bytes / QUERY_ENTRY_BYTES).clamp(1, 256)
    }

    /// Leaves fetched at once.
    fn leaves_in_flight(self) -> usize {
        (FETCH_BYTES_IN_FLIGHT_MAX / DISK_LEAF_BYTES as usize).max(1)
    }
}
/// Disk bytes hashed per call, on either side, so the guest keeps running in between.
pub const HASH_BYTES_PER_TURN: usize = 4 * 1024 * 1024;
/// A pre-copy round that found at most this many dirty pages is followed by the pause.
pub const FINAL_ROUND_PAGES_MAX: usize = 256;
/// Pre-copy rounds before the pause, whatever the guest dirties.
pub const PRECOPY_ROUNDS_MAX: u32 = 30;

/// What a join shows in `understudy status`, on either side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinProgress {
    /// The session, 0 when no join runs.
    pub session: u64,
    /// Where it is.
    pub phase: JoinPhase,
    /// Disk bytes hashed so far (this side's disk).
    pub disk_hashed_bytes: u64,
    /// The disk's size.
    pub disk_bytes: u64,
    /// Disk ranges found different and copied.
    pub disk_ranges_copied: u64,
    /// Pre-copy rounds done.
    pub rounds: u32,
    /// Pieces sent (live) or applied (joiner).
    pub pieces: u64,
    /// State bytes sent (live) or received (joiner), disk included.
    pub bytes: u64,
    /// Pages dirtied in the last round.
    pub last_round_pages: u64,
    /// The guest's pause at the end of the last completed join, in microseconds (live side).
    pub pause_us: u64,
    /// Completed joins (live side: handovers the joiner confirmed; joiner: installs).
    pub completed: u64,
    /// Live side: times pieces were sent again from the first missing one.
    pub go_backs: u64,
    /// Live side: the current window in pieces.
    pub window: u64,
}

/// The phase of a join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JoinPhase {
    /// No join.
    #[default]
    Idle,
    /// Hashing this side's disk.
    Hashing,
    /// Comparing disks by digest and copying the differing ranges.
    Comparing,
    /// Pre-copy rounds of RAM and disk writes.
    PreCopy,
    /// The pause is over; the last pieces and the handover are on their way.
    HandingOver,
}

impl JoinPhase {
    /// A word for status lines.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinPhase::Idle => "idle",
            JoinPhase::Hashing => "hashing",
            JoinPhase::Comparing => "comparing",
            JoinPhase::PreCopy => "precopy",
            JoinPhase::HandingOver => "handover",
        }
    }
}

/// Hashes a disk into leaf digests, a bounded amount per call.
#[derive(Debug)]
struct Hasher {
    len_bytes: u64,
    next_leaf: u32,
    leaves: Vec<[u8; 32]>,
}

impl Hasher {
    fn new(len_bytes: u64) -> Hasher {
        Hasher {
            len_bytes,
            next_leaf: 0,
            leaves: Vec::new(),
        }
    }

    /// Hashes up to `HASH_BYTES_PER_TURN`; the tree once every leaf is hashed.
    fn step(&mut self, machine: &mut Machine) -> Option<DiskTree> {
        let count = DiskTree::leaf_count(self.len_bytes, DISK_LEAF_BYTES);
        let mut buffer = vec![0u8; DISK_LEAF_BYTES as usize];
        let mut hashed = 0;
        while self.next_leaf < count && hashed < HASH_BYTES_PER_TURN {
            let (offset, len) =
                DiskTree::leaf_range(self.len_bytes, DISK_LEAF_BYTES, self.next_leaf);
            read_disk(machine, offset, &mut buffer[..len]);
            self.leaves.push(DiskTree::leaf_digest(&buffer[..len]));
            self.next_leaf += 1;
            hashed += len;
        }
        (self.next_leaf == count).then(|| {
            DiskTree::from_leaves(
                self.len_bytes,
                DISK_LEAF_BYTES,
                core::mem::take(&mut self.leaves),
            )
        })
    }

    fn hashed_bytes(&self) -> u64 {
        (u64::from(self.next_leaf) * u64::from(DISK_LEAF_BYTES)).min(self.len_bytes)
    }
}

/// The machine's separate disk: its size, or `None` without one (no disk, or a shared disk,
/// which both replicas already see).
pub fn separate_disk_bytes(machine: &mut Machine, shared: bool) -> Option<u64> {
    if shared {
        return None;
    }
    machine.block_backend_mut().map(|disk| disk.len_bytes())
}

fn read_disk(machine: &mut Machine, offset: u64, buffer: &mut [u8]) {
    machine
        .block_backend_mut()
        .expect("a disk to read")
        .read_at(offset, buffer)
        .unwrap_or_else(|error| panic!("fail-stop: cannot read the disk for a join: {error:?}"));
}

fn write_disk(machine: &mut Machine, offset: u64, bytes: &[u8]) {
    let disk = machine.block_backend_mut().expect("a disk to write");
    disk.write_at(offset, bytes)
        .unwrap_or_else(|error| panic!("fail-stop: cannot write the disk for a join: {error:?}"));
}

// ----- The live side -----

/// Where the live side's session is.
#[derive(Debug)]
enum LivePhase {
    /// Hashing the disk; the dirty logs already run, so nothing written meanwhile is missed.
    Hashing(Hasher),
    /// `Start` sent; answering the joiner's queries until it says its disk matches.
    Offering {
        tree: Option<DiskTree>,
        last_start: Option<Instant>,
    },
    /// Sending rounds of pages and disk writes.
    PreCopy {
        /// Pages of this round still to send.
        pages: VecDeque<u32>,
        /// Disk ranges (offset, length) of this round still to send.
        disk: VecDeque<(u64, u64)>,
    },
    /// Paused and captured: the last pieces are queued; the handover goes once all are
    /// acknowledged, and again until the joiner's acknowledgement of the log shows it
    /// installed.
    HandingOver {
        handover: Handover,
        completion: Completion,
        last_sent: Option<Instant>,
    },
}

/// The live side of one join.
#[derive(Debug)]
pub struct LiveJoin {
    session: SessionId,
    phase: LivePhase,
    disk_bytes: Option<u64>,
    /// The disk's tree once the disks were compared, kept up to date with the guest's writes.
    tree: Option<DiskTree>,
    /// Numbered pieces not yet acknowledged, oldest first (`acked_through + 1` at the front),
    /// sent or still to send.
    in_flight: VecDeque<(u32, Piece)>,
    /// The highest piece sent since the last go-back.
    sent_through: u32,
    /// Pieces allowed between `acked_through` and `sent_through`.
    window: usize,
    /// Sent again after a gap and not yet acknowledged past it: later gap reports are the
    /// same loss, for a round trip.
    recovering: bool,
    /// Smoothed round trip from a go-back to the acknowledgement that moved past it, in
    /// microseconds (RFC 6298 section 2's SRTT, gain 1/8).
    round_trip_us: Option<u64>,
    limits: TransferLimits,
    /// Captured at the pause and not yet sent.
    queued: VecDeque<Piece>,
    next_sequence: u32,
    acked_through: u32,
    last_progress: Instant,
    last_resend: Instant,
    last_heard: Instant,
    round: u32,
    pause_began: Option<Instant>,
    progress: JoinProgress,
}

/// What the live side asks of the replica after a call.
#[derive(Debug, PartialEq, Eq)]
pub enum LiveStep {
    /// Keep running the guest.
    Continue,
    /// The join is over or abandoned; drop it.
    Finished,
}

impl LiveJoin {
    /// Starts a session: the dirty logs begin before anything is read, so every write from
    /// here on is sent again.
    pub fn start(
        machine: &mut Machine,
        session: SessionId,
        shared_disk: bool,
        limits: TransferLimits,
        now: Instant,
    ) -> LiveJoin {
        machine.start_dirty_log();
        let disk_bytes = separate_disk_bytes(machine, shared_disk);
        if disk_bytes.is_some() {
            machine.start_disk_write_log();
        }
        let phase = match disk_bytes {
            Some(len) => LivePhase::Hashing(Hasher::new(len)),
            None => LivePhase::Offering {
                tree: None,
                last_start: None,
            },
        };
        LiveJoin {
            session,
            phase,
            disk_bytes,
            tree: None,
            in_flight: VecDeque::new(),
            sent_through: 0,
            window: PIECES_WINDOW_INITIAL,
            recovering: false,
            round_trip_us: None,
            limits,
            queued: VecDeque::new(),
            next_sequence: 1,
            acked_through: 0,
            last_progress: now,
            last_resend: now,
            last_heard: now,
            round: 0,
            pause_began: None,
            progress: JoinProgress {
                session: session.0,
                phase: if disk_bytes.is_some() {
                    JoinPhase::Hashing
                } else {
                    JoinPhase::Comparing
                },
                disk_bytes: disk_bytes.unwrap_or(0),
                ..JoinProgress::default()
            },
        }
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Progress for status.
    pub fn progress(&self) -> JoinProgress {
        self.progress
    }

    /// Progress with the current window.
    pub fn progress_now(&self) -> JoinProgress {
        JoinProgress {
            window: self.window as u64,
            ..self.progress
        }
    }

    /// Stops the machine's dirty logs (the join ended either way).
    pub fn stop(&self, machine: &mut Machine) {
        machine.stop_dirty_log();
        if self.disk_bytes.is_some() {
            machine.stop_disk_write_log();
        }
    }

    /// A message from the joiner.
    pub fn receive(
        &mut self,
        machine: &mut Machine,
        node: &mut Node,
        now: Instant,
        message: Transfer,
    ) {
        if message.session() != self.session {
            return;
        }
        self.last_heard = now;
        match message {
            Transfer::DiskQuery { nodes, .. } => {
                let LivePhase::Offering {
                    tree: Some(tree), ..
                } = &self.phase
                else {
                    return;
                };
                let digests: Vec<_> = nodes
                    .into_iter()
                    .take(self.limits.queries_per_message())
                    .filter_map(|node| Some((node, tree.digest(node)?)))
                    .collect();
                for part in digests.chunks(self.limits.digests_per_message()) {
                    let _ = node.send_transfer(Transfer::DiskDigests {
                        session: self.session,
                        digests: part.to_vec(),
                    });
                }
            }
            Transfer::DiskFetch { leaves, .. } => {
                if !matches!(self.phase, LivePhase::Offering { tree: Some(_), .. }) {
                    return;
                }
                let len_bytes = self.disk_bytes.unwrap_or(0);
                let count = DiskTree::leaf_count(len_bytes, DISK_LEAF_BYTES);
                for leaf in leaves.into_iter().take(self.limits.leaves_in_flight()) {
                    if leaf >= count {
                        continue;
                    }
                    let (offset, len) = DiskTree::leaf_range(len_bytes, DISK_LEAF_BYTES, leaf);
                    let mut bytes = vec![0u8; len];
                    read_disk(machine, offset, &mut bytes);
                    self.progress.bytes += len as u64;
                    self.progress.disk_ranges_copied += 1;
                    for (index, part) in bytes.chunks(self.limits.message_bytes).enumerate() {
                        let _ = node.send_transfer(Transfer::DiskLeaf {
                            session: self.session,
                            leaf,
                            offset_bytes: (index * self.limits.message_bytes) as u32,
                            bytes: part.to_vec(),
                        });
                    }
                }
            }
            Transfer::DiskMatched { .. } => {
                if let LivePhase::Offering { tree, .. } = &mut self.phase {
                    // From here the tree follows the disk: the ranges of every round's
                    // write log are hashed again, so its root at the handover is exact.
                    self.tree = tree.take();
                    self.begin_first_round(machine);
                    self.progress.phase = JoinPhase::PreCopy;
                }
            }
            // An acknowledgement of nothing new, or of pieces never sent, moves nothing.
            Transfer::PieceAck { through, .. }
                if through > self.acked_through && through < self.next_sequence =>
            {
                self.acked_through = through;
                self.sent_through = self.sent_through.max(through);
                self.window = (self.window + 1).min(self.limits.window_max());
                if self.recovering {
                    let sample = now.0.saturating_sub(self.last_resend.0);
                    self.round_trip_us = Some(match self.round_trip_us {
                        Some(smoothed) => (smoothed * 7 + sample) / 8,
                        None => sample,
                    });
                }
                self.recovering = false;
                self.last_progress = now;
                while self
                    .in_flight
                    .front()
                    .is_some_and(|(sequence, _)| *sequence <= through)
                {
                    self.in_flight.pop_front();
                }
            }
            // The joiner saw a later piece before the next one it needs: that one was lost.
            // Go back at once instead of after a timeout (as TCP's fast retransmit, RFC 5681
            // section 3.2), once per loss: the window's later pieces report the same gap.
            Transfer::PieceAck {
                through, gap: true, ..
            } if through == self.acked_through
                && self.sent_through > through
                && (!self.recovering
                    || now
                        >= self.last_resend + self.resend_timeout(Duration::from_millis(200))) =>
            {
                self.recovering = true;
                self.go_back(now);
                self.send_queued(node);
            }
            _ => {}
        }
    }

    /// Work between slices: hashing, sending pieces, ending rounds, the pause and the
    /// handover. `retransmit` is the node's retransmission timeout; `give_up` the silence
    /// after which the joiner counts as gone.
    pub fn step(
        &mut self,
        machine: &mut Machine,
        node: &mut Node,
        now: Instant,
        retransmit: Duration,
        give_up: Duration,
    ) -> LiveStep {
        if now >= self.last_heard + give_up && !matches!(self.phase, LivePhase::Hashing(_)) {
            return LiveStep::Finished;
        }
        match &mut self.phase {
            LivePhase::Hashing(hasher) => {
                let tree = hasher.step(machine);
                self.progress.disk_hashed_bytes = hasher.hashed_bytes();
                if let Some(tree) = tree {
                    self.phase = LivePhase::Offering {
                        tree: Some(tree),
                        last_start: None,
                    };
                    self.progress.phase = JoinPhase::Comparing;
                    // The joiner's silence counts from here: it waited for `Start`.
                    self.last_heard = now;
                }
            }
            LivePhase::Offering { tree, last_start } => {
                if last_start.is_none_or(|at| now >= at + retransmit) {
                    *last_start = Some(now);
                    let disk = tree.as_ref().map(|tree| DiskSummary {
                        len_bytes: tree.len_bytes(),
                        leaf_bytes: tree.leaf_bytes(),
                        root: tree.root(),
                    });
                    let _ = node.send_transfer(Transfer::Start {
                        session: self.session,
                        ram_pages: (machine.ram().len() / PAGE_BYTES) as u32,
                        disk,
                    });
                }
            }
            LivePhase::PreCopy { .. } => {
                self.send_round(machine, node);
                if self.round_sent() && self.in_flight.is_empty() {
                    self.next_round(machine, node, now);
                }
            }
            LivePhase::HandingOver {
                handover,
                completion,
                last_sent,
            } => {
                if node.role() != understudy_ft::RoleKind::Primary {
                    return LiveStep::Finished;
                }
                if last_sent.is_some() && node.handover_confirmed() {
                    self.progress.completed += 1;
                    self.progress.phase = JoinPhase::Idle;
                    return LiveStep::Finished;
                }
                if self.queued.is_empty()
                    && self.in_flight.is_empty()
                    && last_sent.is_none_or(|at| now >= at + retransmit)
                {
                    *last_sent = Some(now);
                    let _ = node.send_handover(now, handover, completion.encode());
                }
            }
        }
        self.send_queued(node);
        self.resend_if_stuck(node, now, retransmit);
        LiveStep::Continue
    }

    /// The guest's pause, if the last `step` began one: the replica reports its end.
    pub fn pause_ended(&mut self, now: Instant) {
        if let Some(began) = self.pause_began.take() {
            self.progress.pause_us = now.0.saturating_sub(began.0);
        }
    }

    /// Every page and range of the round is numbered and sent (pieces made but still
    /// queued behind the window count as not sent).
    fn round_sent(&self) -> bool {
        self.queued.is_empty()
            && matches!(&self.phase, LivePhase::PreCopy { pages, disk } if pages.is_empty() && disk.is_empty())
    }

    /// Round 0: every page (the dirty log restarts, so the next round has only what changed
    /// after this one began).
    fn begin_first_round(&mut self, machine: &mut Machine) {
        let _ = machine.take_dirty_log();
        let all = (0..(machine.ram().len() / PAGE_BYTES) as u32).collect();
        self.begin_round(machine, all);
    }

    /// A round of these pages and the disk ranges written since the last round.
    fn begin_round(&mut self, machine: &mut Machine, pages: Vec<u32>) {
        let pages: VecDeque<u32> = pages.into();
        let disk: VecDeque<(u64, u64)> = if self.disk_bytes.is_some() {
            written_ranges(machine).collect()
        } else {
            VecDeque::new()
        };
        for &(offset, len) in &disk {
            self.rehash(machine, offset, len);
        }
        self.progress.last_round_pages = pages.len() as u64;
        self.phase = LivePhase::PreCopy { pages, disk };
    }

    /// Ends a round: another one with what was dirtied meanwhile, or the pause when that
    /// is little or the rounds are used up.
    fn next_round(&mut self, machine: &mut Machine, node: &mut Node, now: Instant) {
        self.round += 1;
        self.progress.rounds = self.round;
        let dirty = machine.take_dirty_log();
        if dirty.len() > FINAL_ROUND_PAGES_MAX && self.round < PRECOPY_ROUNDS_MAX {
            self.begin_round(machine, dirty);
            return;
        }
        self.pause(machine, node, now, dirty);
    }

    /// The pause: the guest does not run during this call. The last dirty pages and disk
    /// ranges and the device state are copied into queued pieces, the node hands over at
    /// this count, and the guest runs on while the pieces travel.
    fn pause(&mut self, machine: &mut Machine, node: &mut Node, now: Instant, dirty: Vec<u32>) {
        self.pause_began = Some(now);
        let mut pages = dirty;
        pages.extend(machine.take_dirty_log());
        pages.sort_unstable();
        pages.dedup();
        self.progress.last_round_pages = pages.len() as u64;
        for piece in ram_pieces(machine, &pages, self.limits.message_bytes) {
            self.queued.push_back(piece);
        }
        if self.disk_bytes.is_some() {
            let written: Vec<(u64, u64)> = written_ranges(machine).collect();
            for (offset, len) in written {
                self.rehash(machine, offset, len);
                for piece in disk_pieces(machine, offset, len, self.limits.message_bytes) {
                    self.queued.push_back(piece);
                }
            }
        }
        let devices = machine.save_devices();
        let total_bytes = devices.len() as u32;
        let part_bytes = self.limits.message_bytes;
        for (index, chunk) in devices.chunks(part_bytes).enumerate() {
            self.queued.push_back(Piece::Devices {
                offset_bytes: (index * part_bytes) as u32,
                total_bytes,
                bytes: chunk.to_vec(),
            });
        }
        let digest = machine.digest();
        let at = understudy_ft::InstructionCount(machine.instret().0);
        let handover = node
            .hand_over(now, at)
            .expect("fail-stop: a live primary hands over");
        let pieces = self.next_sequence - 1 + self.queued.len() as u32;
        self.stop(machine);
        self.phase = LivePhase::HandingOver {
            handover,
            completion: Completion {
                session: self.session,
                pieces,
                digest,
                disk_root: self.tree.as_ref().map(DiskTree::root),
            },
            last_sent: None,
        };
        self.progress.phase = JoinPhase::HandingOver;
    }

    /// Hashes again the tree's leaves that `len` bytes at `offset` touch.
    fn rehash(&mut self, machine: &mut Machine, offset: u64, len: u64) {
        if let Some(tree) = &mut self.tree {
            rehash_leaves(tree, machine, offset, len);
        }
    }

    /// Fills the window from the round's pages and disk ranges.
    fn send_round(&mut self, machine: &mut Machine, node: &mut Node) {
        let message_bytes = self.limits.message_bytes;
        while self.in_flight.len() + self.queued.len() < self.limits.window_max() {
            let LivePhase::PreCopy { pages, disk } = &mut self.phase else {
                return;
            };
            if let Some(first) = pages.pop_front() {
                // A run of consecutive pages, which `ram_pieces` packs into pieces (zero
                // pages cost a byte, so a run of them shares one).
                let mut run = vec![first];
                while let Some(&next) = pages.front() {
                    if next != run[run.len() - 1] + 1 || run.len() >= RUN_PAGES_MAX {
                        break;
                    }
                    run.push(next);
                    pages.pop_front();
                }
                self.queued.extend(ram_pieces(machine, &run, message_bytes));
            } else if let Some((offset, len)) = disk.pop_front() {
                let take = len.min(message_bytes as u64);
                if take < len {
                    disk.push_front((offset + take, len - take));
                }
                self.queued
                    .extend(disk_pieces(machine, offset, take, message_bytes));
            } else {
                break;
            }
            self.send_queued(node);
        }
    }

    /// Sends what the window allows: numbered pieces not sent since the last go-back
    /// first, then new ones from the queue.
    fn send_queued(&mut self, node: &mut Node) {
        while ((self.sent_through - self.acked_through) as usize) < self.window {
            let next = self.sent_through + 1;
            if next == self.next_sequence {
                let Some(piece) = self.queued.pop_front() else {
                    return;
                };
                self.next_sequence += 1;
                self.progress.pieces += 1;
                self.progress.bytes += piece_bytes(&piece) as u64;
                self.in_flight.push_back((next, piece));
            }
            let index = (next - self.acked_through - 1) as usize;
            let (sequence, piece) = &self.in_flight[index];
            let _ = node.send_transfer(Transfer::Piece {
                session: self.session,
                sequence: *sequence,
                piece: piece.clone(),
            });
            self.sent_through = next;
        }
    }

    /// Go-back-N: nothing acknowledged for a retransmission timeout sends the window again
    /// from the first missing piece, with the window halved.
    fn resend_if_stuck(&mut self, node: &mut Node, now: Instant, retransmit: Duration) {
        if self.sent_through == self.acked_through
            || now < self.last_progress.max(self.last_resend) + self.resend_timeout(retransmit)
        {
            return;
        }
        self.go_back(now);
        self.send_queued(node);
    }

    /// How long a sent piece may go unacknowledged: twice the measured round trip (at least a
    /// millisecond), or `retransmit` before there is a measure and as the ceiling.
    fn resend_timeout(&self, retransmit: Duration) -> Duration {
        match self.round_trip_us {
            Some(round_trip) => Duration((round_trip * 2).clamp(1_000, retransmit.0)),
            None => retransmit,
        }
    }

    /// Sends again from the first missing piece, with the window halved.
    fn go_back(&mut self, now: Instant) {
        self.progress.go_backs += 1;
        self.last_resend = now;
        self.window = (self.window / 2).max(1);
        self.sent_through = self.acked_through;
    }
}

/// Hashes again, from the disk, the leaves of `tree` that `len` bytes at `offset` touch.
fn rehash_leaves(tree: &mut DiskTree, machine: &mut Machine, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    let leaf_bytes = u64::from(DISK_LEAF_BYTES);
    let first = (offset / leaf_bytes) as u32;
    let last = ((offset + len - 1) / leaf_bytes) as u32;
    let len_bytes = tree.len_bytes();
    let mut buffer = vec![0u8; DISK_LEAF_BYTES as usize];
    for leaf in first..=last {
        let (start, leaf_len) = DiskTree::leaf_range(len_bytes, DISK_LEAF_BYTES, leaf);
        read_disk(machine, start, &mut buffer[..leaf_len]);
        tree.set_leaf(leaf, DiskTree::leaf_digest(&buffer[..leaf_len]));
    }
}

/// Bytes per sector of the machine's disk write log (virtio 1.2 section 5.2.6).
const SECTOR_BYTES: u64 = 512;

/// The disk ranges the guest wrote since the last call, as (offset, length) in bytes.
fn written_ranges(machine: &mut Machine) -> impl Iterator<Item = (u64, u64)> {
    machine.take_disk_write_log().into_iter().map(|sectors| {
        (
            sectors.start * SECTOR_BYTES,
            (sectors.end - sectors.start) * SECTOR_BYTES,
        )
    })
}

/// Pages a piece writes whole (a page's last part counts it).
fn piece_pages_of(piece: &Piece) -> usize {
    match piece {
        Piece::Ram { pages, .. } => pages.len(),
        Piece::RamPart {
            offset_bytes,
            bytes,
            ..
        } => usize::from(*offset_bytes as usize + bytes.len() == PAGE_BYTES),
        Piece::Disk { .. } | Piece::Devices { .. } => 0,
    }
}

fn piece_bytes(piece: &Piece) -> usize {
    match piece {
        Piece::Ram { pages, .. } => pages
            .iter()
            .map(|page| match page {
                PageData::Zero => 1,
                PageData::Bytes(bytes) => bytes.len(),
            })
            .sum(),
        Piece::RamPart { bytes, .. } | Piece::Disk { bytes, .. } | Piece::Devices { bytes, .. } => {
            bytes.len()
        }
    }
}

/// Pieces for these pages (in increasing order), consecutive ones together up to
/// `message_bytes`; zero pages cost a byte; a page larger than a message goes in parts.
fn ram_pieces(machine: &Machine, pages: &[u32], message_bytes: usize) -> Vec<Piece> {
    let ram = machine.ram();
    let mut pieces = Vec::new();
    let mut current: Option<(u32, Vec<PageData>, usize)> = None;
    let flush = |current: &mut Option<(u32, Vec<PageData>, usize)>, pieces: &mut Vec<Piece>| {
        if let Some((first_page, pages, _)) = current.take() {
            pieces.push(Piece::Ram { first_page, pages });
        }
    };
    for &page in pages {
        let start = page as usize * PAGE_BYTES;
        let bytes = &ram[start..start + PAGE_BYTES];
        let zero = bytes.iter().all(|&b| b == 0);
        if !zero && PAGE_BYTES > message_bytes {
            flush(&mut current, &mut pieces);
            for (index, part) in bytes.chunks(message_bytes).enumerate() {
                pieces.push(Piece::RamPart {
                    page,
                    offset_bytes: (index * message_bytes) as u32,
                    bytes: part.to_vec(),
                });
            }
            continue;
        }
        let (data, size) = if zero {
            (PageData::Zero, 1)
        } else {
            (PageData::Bytes(bytes.to_vec()), PAGE_BYTES)
        };
        match &mut current {
            Some((first, run, run_bytes))
                if *first + run.len() as u32 == page && *run_bytes + size <= message_bytes =>
            {
                run.push(data);
                *run_bytes += size;
            }
            _ => {
                flush(&mut current, &mut pieces);
                current = Some((page, vec![data], size));
            }
        }
    }
    flush(&mut current, &mut pieces);
    pieces
}

fn disk_pieces(machine: &mut Machine, offset: u64, len: u64, message_bytes: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let take = (end - at).min(message_bytes as u64) as usize;
        let mut bytes = vec![0u8; take];
        read_disk(machine, at, &mut bytes);
        pieces.push(Piece::Disk {
            offset_bytes: at,
            bytes,
        });
        at += take as u64;
    }
    pieces
}

// ----- The joiner -----

/// Where the joiner is.
#[derive(Debug)]
enum JoinerPhase {
    /// Hashing its own disk before it can compare.
    Hashing(Hasher),
    /// Waiting for a `Start`.
    Waiting,
    /// Comparing disks in a session.
    Comparing(Comparison),
    /// Applying pieces in order.
    Receiving,
}

#[derive(Debug)]
struct Comparison {
    live: DiskSummary,
    /// Nodes whose live digest is still to ask for.
    to_query: VecDeque<TreeNode>,
    /// Asked, with when.
    queried: BTreeMap<TreeNode, Instant>,
    /// Leaves to fetch.
    to_fetch: VecDeque<u32>,
    /// Fetched: when, and the parts (offset, length) received so far.
    fetching: BTreeMap<u32, (Instant, BTreeMap<u32, u32>)>,
    matched_sent: Option<Instant>,
}

/// The joining side.
#[derive(Debug)]
pub struct Joiner {
    phase: JoinerPhase,
    /// This side's tree once hashed; kept across sessions (updated as leaves are written).
    tree: Option<DiskTree>,
    disk_bytes: Option<u64>,
    session: Option<SessionId>,
    /// A `Start` that came while hashing.
    pending_start: Option<Transfer>,
    next_sequence: u32,
    devices: Vec<u8>,
    devices_total: Option<u32>,
    /// A page arriving in parts (`Piece::RamPart`): its number and the bytes so far.
    page_parts: Option<(u32, Vec<u8>)>,
    /// Pages written since the machine's digest last hashed them.
    pages_unhashed: usize,
    limits: TransferLimits,
    last_heard: Instant,
    ack_due: bool,
    /// A piece after the next one needed arrived since the last acknowledgement.
    gap_seen: bool,
    last_ack: Option<Instant>,
    progress: JoinProgress,
    /// Why the last session failed, for the operator.
    pub last_error: Option<&'static str>,
}

impl Joiner {
    /// A joiner over `machine` (powered on, not run): hashes its separate disk first.
    pub fn new(
        machine: &mut Machine,
        shared_disk: bool,
        limits: TransferLimits,
        now: Instant,
    ) -> Joiner {
        let disk_bytes = separate_disk_bytes(machine, shared_disk);
        Joiner {
            phase: match disk_bytes {
                Some(len) => JoinerPhase::Hashing(Hasher::new(len)),
                None => JoinerPhase::Waiting,
            },
            tree: None,
            disk_bytes,
            session: None,
            pending_start: None,
            next_sequence: 1,
            devices: Vec::new(),
            devices_total: None,
            page_parts: None,
            pages_unhashed: 0,
            limits,
            last_heard: now,
            ack_due: false,
            gap_seen: false,
            last_ack: None,
            progress: JoinProgress {
                phase: if disk_bytes.is_some() {
                    JoinPhase::Hashing
                } else {
                    JoinPhase::Idle
                },
                disk_bytes: disk_bytes.unwrap_or(0),
                ..JoinProgress::default()
            },
            last_error: None,
        }
    }

    /// Progress for status.
    pub fn progress(&self) -> JoinProgress {
        self.progress
    }

    /// Sets the message size limits (before the first session).
    pub fn set_limits(&mut self, limits: TransferLimits) {
        self.limits = limits;
    }

    /// A message from the live side.
    pub fn receive(
        &mut self,
        machine: &mut Machine,
        node: &mut Node,
        now: Instant,
        message: Transfer,
    ) {
        if let Transfer::Start { .. } = message {
            if self.session != Some(message.session()) {
                self.begin(machine, node, now, message);
            } else {
                self.last_heard = now;
            }
            return;
        }
        if self.session != Some(message.session()) {
            return;
        }
        self.last_heard = now;
        match message {
            Transfer::DiskDigests { digests, .. } => {
                let (JoinerPhase::Comparing(comparison), Some(tree)) =
                    (&mut self.phase, &self.tree)
                else {
                    return;
                };
                for (tree_node, digest) in digests {
                    if comparison.queried.remove(&tree_node).is_none() {
                        continue;
                    }
                    if tree.digest(tree_node) == Some(digest) {
                        continue;
                    }
                    if tree_node.level == 0 {
                        comparison.to_fetch.push_back(tree_node.index);
                    } else {
                        comparison.to_query.extend(tree.children(tree_node));
                    }
                }
            }
            Transfer::DiskLeaf {
                leaf,
                offset_bytes,
                bytes,
                ..
            } => {
                let JoinerPhase::Comparing(comparison) = &mut self.phase else {
                    return;
                };
                let len_bytes = comparison.live.len_bytes;
                let (offset, len) = DiskTree::leaf_range(len_bytes, DISK_LEAF_BYTES, leaf);
                let Some((_, parts)) = comparison.fetching.get_mut(&leaf) else {
                    return;
                };
                let end = offset_bytes as usize + bytes.len();
                if end > len || bytes.is_empty() {
                    return;
                }
                write_disk(machine, offset + u64::from(offset_bytes), &bytes);
                self.progress.bytes += bytes.len() as u64;
                parts.insert(offset_bytes, bytes.len() as u32);
                // Complete when the parts cover the leaf (a part sent twice counts once).
                let mut covered = 0usize;
                for (&start, &part) in parts.iter() {
                    if start as usize > covered {
                        return;
                    }
                    covered = covered.max(start as usize + part as usize);
                }
                if covered < len {
                    return;
                }
                comparison.fetching.remove(&leaf);
                let mut written = vec![0u8; len];
                read_disk(machine, offset, &mut written);
                if let Some(tree) = &mut self.tree {
                    tree.set_leaf(leaf, DiskTree::leaf_digest(&written));
                }
                self.progress.disk_ranges_copied += 1;
            }
            Transfer::Piece {
                sequence, piece, ..
            } => {
                if !matches!(self.phase, JoinerPhase::Receiving) {
                    // `DiskMatched` was lost and pieces came: the live side began pre-copy.
                    if matches!(self.phase, JoinerPhase::Comparing(_)) && sequence == 1 {
                        self.phase = JoinerPhase::Receiving;
                        self.progress.phase = JoinPhase::PreCopy;
                    } else {
                        return;
                    }
                }
                if sequence == self.next_sequence {
                    let pages_written = piece_pages_of(&piece);
                    if self.apply(machine, piece).is_err() {
                        self.fail(node, "a piece did not fit this machine");
                        return;
                    }
                    self.next_sequence += 1;
                    self.progress.pieces += 1;
                    self.pages_unhashed += pages_written;
                    if self.pages_unhashed >= DIGEST_PAGES_PER_STEP {
                        // The digest at the handover hashes every page written since the last
                        // digest; hashing them as they come keeps that last step short (a
                        // whole RAM at once would silence this joiner for seconds on a slow
                        // machine, and its primary would give up on it).
                        self.pages_unhashed = 0;
                        let _ = machine.digest();
                    }
                }
                // In order or not, say where we are (a gap makes the live side resend).
                self.gap_seen |= sequence > self.next_sequence;
                self.ack_due = true;
            }
            _ => {}
        }
    }

    fn begin(&mut self, machine: &mut Machine, node: &mut Node, now: Instant, start: Transfer) {
        let Transfer::Start {
            session,
            ram_pages,
            disk,
        } = start
        else {
            return;
        };
        if matches!(self.phase, JoinerPhase::Hashing(_)) {
            self.pending_start = Some(Transfer::Start {
                session,
                ram_pages,
                disk,
            });
            return;
        }
        if ram_pages as usize != machine.ram().len() / PAGE_BYTES {
            self.last_error = Some(
                "the primary's guest has another memory size; give both the same guest_memory_mib",
            );
            return;
        }
        match (disk, self.disk_bytes) {
            (Some(live), Some(own)) if live.len_bytes != own => {
                self.last_error = Some("the primary's disk has another size; give this machine a disk of the same size");
                return;
            }
            (Some(live), Some(_)) if live.leaf_bytes != DISK_LEAF_BYTES => {
                self.last_error = Some(
                    "the primary compares disks in other ranges; run the same version on both",
                );
                return;
            }
            (Some(_), None) | (None, Some(_)) => {
                self.last_error = Some("one machine has a separate disk and the other not; give both the same disk mode");
                return;
            }
            _ => {}
        }
        // The last error stays shown until a join succeeds.
        self.session = Some(session);
        self.last_heard = now;
        self.next_sequence = 1;
        self.devices.clear();
        self.devices_total = None;
        self.page_parts = None;
        self.progress = JoinProgress {
            session: session.0,
            disk_bytes: self.disk_bytes.unwrap_or(0),
            disk_hashed_bytes: self.disk_bytes.unwrap_or(0),
            completed: self.progress.completed,
            phase: JoinPhase::Comparing,
            ..JoinProgress::default()
        };
        match (disk, &self.tree) {
            (Some(live), Some(tree)) => {
                let mut comparison = Comparison {
                    live,
                    to_query: VecDeque::new(),
                    queried: BTreeMap::new(),
                    to_fetch: VecDeque::new(),
                    fetching: BTreeMap::new(),
                    matched_sent: None,
                };
                if tree.root() != live.root {
                    comparison.to_query.extend(tree.children(tree.root_node()));
                    if tree.root_node().level == 0 {
                        comparison.to_fetch.push_back(0);
                    }
                }
                self.phase = JoinerPhase::Comparing(comparison);
            }
            _ => {
                self.phase = JoinerPhase::Receiving;
                self.progress.phase = JoinPhase::PreCopy;
                let _ = node.send_transfer(Transfer::DiskMatched { session });
            }
        }
    }

    /// Work between turns: hashing, queries, fetches and acknowledgements.
    pub fn step(
        &mut self,
        machine: &mut Machine,
        node: &mut Node,
        now: Instant,
        retransmit: Duration,
        give_up: Duration,
    ) {
        if let JoinerPhase::Hashing(hasher) = &mut self.phase {
            let tree = hasher.step(machine);
            self.progress.disk_hashed_bytes = hasher.hashed_bytes();
            if let Some(tree) = tree {
                self.tree = Some(tree);
                self.phase = JoinerPhase::Waiting;
                self.progress.phase = JoinPhase::Idle;
                if let Some(start) = self.pending_start.take() {
                    self.begin(machine, node, now, start);
                }
            }
            return;
        }
        if self.session.is_some() && now >= self.last_heard + give_up {
            self.fail(node, "the primary went silent during the join");
            return;
        }
        let Some(session) = self.session else {
            return;
        };
        if let JoinerPhase::Comparing(comparison) = &mut self.phase {
            // Lost requests go again.
            let expired: Vec<TreeNode> = comparison
                .queried
                .iter()
                .filter(|(_, at)| now >= **at + retransmit)
                .map(|(node, _)| *node)
                .collect();
            for tree_node in expired {
                comparison.queried.remove(&tree_node);
                comparison.to_query.push_front(tree_node);
            }
            let expired: Vec<u32> = comparison
                .fetching
                .iter()
                .filter(|(_, (at, _))| now >= *at + retransmit)
                .map(|(leaf, _)| *leaf)
                .collect();
            for leaf in expired {
                comparison.fetching.remove(&leaf);
                comparison.to_fetch.push_front(leaf);
            }
            let queries_max = self.limits.queries_per_message();
            if comparison.queried.len() < queries_max && !comparison.to_query.is_empty() {
                let take = (queries_max - comparison.queried.len()).min(comparison.to_query.len());
                let nodes: Vec<TreeNode> = comparison.to_query.drain(..take).collect();
                for tree_node in &nodes {
                    comparison.queried.insert(*tree_node, now);
                }
                let _ = node.send_transfer(Transfer::DiskQuery { session, nodes });
            }
            let fetch_max = self.limits.leaves_in_flight();
            if comparison.fetching.len() < fetch_max && !comparison.to_fetch.is_empty() {
                let take = (fetch_max - comparison.fetching.len()).min(comparison.to_fetch.len());
                let leaves: Vec<u32> = comparison.to_fetch.drain(..take).collect();
                for leaf in &leaves {
                    comparison.fetching.insert(*leaf, (now, BTreeMap::new()));
                }
                let _ = node.send_transfer(Transfer::DiskFetch { session, leaves });
            }
            let done = comparison.to_query.is_empty()
                && comparison.queried.is_empty()
                && comparison.to_fetch.is_empty()
                && comparison.fetching.is_empty();
            if done
                && comparison
                    .matched_sent
                    .is_none_or(|at| now >= at + retransmit)
            {
                comparison.matched_sent = Some(now);
                let _ = node.send_transfer(Transfer::DiskMatched { session });
            }
        }
        if self.ack_due
            || (matches!(self.phase, JoinerPhase::Receiving)
                && self.last_ack.is_none_or(|at| now >= at + retransmit))
        {
            self.ack_due = false;
            self.last_ack = Some(now);
            let _ = node.send_transfer(Transfer::PieceAck {
                session,
                through: self.next_sequence - 1,
                gap: core::mem::take(&mut self.gap_seen),
            });
        }
    }

    fn apply(&mut self, machine: &mut Machine, piece: Piece) -> Result<(), ()> {
        self.progress.bytes += piece_bytes(&piece) as u64;
        match piece {
            Piece::Ram { first_page, pages } => {
                let zero = [0u8; PAGE_BYTES];
                for (index, page) in pages.iter().enumerate() {
                    let number = first_page.checked_add(index as u32).ok_or(())?;
                    let bytes = match page {
                        PageData::Zero => &zero[..],
                        PageData::Bytes(bytes) if bytes.len() == PAGE_BYTES => &bytes[..],
                        PageData::Bytes(_) => return Err(()),
                    };
                    machine.write_ram_page(number, bytes).map_err(|_| ())?;
                }
            }
            Piece::RamPart {
                page,
                offset_bytes,
                bytes,
            } => {
                // Parts of a page come in order in consecutive pieces.
                let (number, mut assembled) = match self.page_parts.take() {
                    Some((number, assembled)) if number == page => (number, assembled),
                    _ if offset_bytes == 0 => (page, Vec::with_capacity(PAGE_BYTES)),
                    _ => return Err(()),
                };
                if offset_bytes as usize != assembled.len()
                    || assembled.len() + bytes.len() > PAGE_BYTES
                {
                    return Err(());
                }
                assembled.extend_from_slice(&bytes);
                if assembled.len() == PAGE_BYTES {
                    machine.write_ram_page(number, &assembled).map_err(|_| ())?;
                } else {
                    self.page_parts = Some((number, assembled));
                }
            }
            Piece::Disk {
                offset_bytes,
                bytes,
            } => {
                let end = offset_bytes.checked_add(bytes.len() as u64).ok_or(())?;
                if end > self.disk_bytes.ok_or(())? {
                    return Err(());
                }
                write_disk(machine, offset_bytes, &bytes);
                if let Some(tree) = &mut self.tree {
                    // The tree follows the disk: the handover's root is checked against it,
                    // and a later session compares the truth.
                    rehash_leaves(tree, machine, offset_bytes, bytes.len() as u64);
                }
            }
            Piece::Devices {
                offset_bytes,
                total_bytes,
                bytes,
            } => {
                if offset_bytes as usize != self.devices.len()
                    || self.devices_total.is_some_and(|total| total != total_bytes)
                    || self.devices.len() + bytes.len() > total_bytes as usize
                {
                    return Err(());
                }
                self.devices_total = Some(total_bytes);
                self.devices.extend_from_slice(&bytes);
            }
        }
        Ok(())
    }

    /// The node's snapshot arrived: restore the devices and check the digest. True when the
    /// machine is now the primary's state at the handover; false leaves the joiner waiting for
    /// a new session (the machine's state is then partial and is overwritten by the next).
    pub fn install(
        &mut self,
        machine: &mut Machine,
        node: &mut Node,
        now: Instant,
        state: &[u8],
        at: understudy_ft::InstructionCount,
    ) -> bool {
        let Some(completion) = Completion::decode(state) else {
            self.fail(node, "the handover names no session");
            return false;
        };
        let complete = self.session == Some(completion.session)
            && self.next_sequence == completion.pieces + 1
            && self.devices_total == Some(self.devices.len() as u32)
            && self.page_parts.is_none();
        if !complete {
            // An old session's handover, or pieces still missing: not this one.
            node.refuse_install();
            return false;
        }
        if machine.restore_devices(&self.devices).is_err() {
            self.fail(node, "the primary's device state does not fit this machine");
            return false;
        }
        if machine.instret().0 != at.0 || machine.digest() != completion.digest {
            self.fail(
                node,
                "the state after the join differs from the primary's by digest",
            );
            return false;
        }
        if self.tree.as_ref().map(DiskTree::root) != completion.disk_root {
            self.fail(
                node,
                "the disk after the join differs from the primary's by digest",
            );
            return false;
        }
        self.session = None;
        self.last_error = None;
        self.phase = JoinerPhase::Waiting;
        self.progress.phase = JoinPhase::Idle;
        self.progress.completed += 1;
        node.confirm_install(now);
        true
    }

    fn fail(&mut self, node: &mut Node, why: &'static str) {
        node.refuse_install();
        self.last_error = Some(why);
        self.session = None;
        self.phase = JoinerPhase::Waiting;
        self.progress.phase = JoinPhase::Idle;
    }
}
