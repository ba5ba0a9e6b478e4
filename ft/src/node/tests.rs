//! Node state-machine tests: the full transition table (legal and illegal edges), the output
//! rule, flow control, replay, divergence and go-live.
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::transfer::SessionId;
use crate::types::{Duration, FrameSequence};
use crate::wire::FrameHeader;

const ARBITER: NodeId = NodeId(0);
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const T0: Instant = Instant(1_000_000);

fn key() -> Key {
    Key([3; 32])
}

/// The key `replica` shares with the arbiter only.
fn arbiter_key(replica: NodeId) -> Key {
    Key([0x40 + replica.0; 32])
}

fn limits() -> Limits {
    Limits::default()
}

fn config(me: NodeId) -> NodeConfig {
    NodeConfig {
        me,
        peer: if me == A { B } else { A },
        arbiter: ARBITER,
        channel_key: key(),
        arbiter_key: arbiter_key(me),
        limits: limits(),
        incarnation: Incarnation(1),
    }
}

/// Builds authentic frames from any participant with any header.
struct Forge {
    sequence: u64,
}

impl Forge {
    fn new() -> Forge {
        Forge { sequence: 0 }
    }

    /// A replica's frame, under the channel key.
    fn frame(&mut self, sender: NodeId, epoch: Epoch, message: Message) -> Vec<u8> {
        self.signed(sender, epoch, message, &key())
    }

    /// The arbiter's frame to `to`, under `to`'s arbiter key.
    fn arbiter_frame(&mut self, to: NodeId, epoch: Epoch, message: Message) -> Vec<u8> {
        self.signed(ARBITER, epoch, message, &arbiter_key(to))
    }

    fn signed(&mut self, sender: NodeId, epoch: Epoch, message: Message, key: &Key) -> Vec<u8> {
        self.sequence += 1;
        Frame {
            header: FrameHeader {
                sender,
                incarnation: Incarnation(1),
                epoch,
                sequence: FrameSequence(self.sequence),
            },
            message,
        }
        .encode(key, &limits())
        .unwrap()
    }
}

fn peer_of(node: &Node) -> NodeId {
    node.config.peer
}

fn drain_transmits(node: &mut Node, now: Instant) -> Vec<(NodeId, Message)> {
    let mut out = Vec::new();
    while let Some(transmit) = node.poll_transmit(now) {
        let key = if transmit.to == ARBITER {
            node.config.arbiter_key.clone()
        } else {
            key()
        };
        let frame = Frame::decode(&transmit.bytes, &key, &limits()).unwrap();
        out.push((transmit.to, frame.message));
    }
    out
}

fn drain_events(node: &mut Node) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(event) = node.poll_event() {
        out.push(event);
    }
    out
}

fn input(at: u64, byte: u8) -> LogEntry {
    LogEntry {
        at: InstructionCount(at),
        record: Record::DeviceInput {
            device: DeviceId(1),
            bytes: vec![byte],
        },
    }
}

fn after_timeout() -> Instant {
    T0 + limits().peer_timeout + Duration(1)
}

// ----- Nodes in every role -----

fn primary() -> Node {
    Node::primary(config(A), T0)
}

fn backup() -> Node {
    Node::backup(config(B), T0)
}

fn claiming_as_primary() -> Node {
    let mut node = primary();
    node.handle_timeout(after_timeout());
    assert_eq!(node.role(), RoleKind::ClaimingAsPrimary);
    node
}

fn claiming_as_backup() -> Node {
    let mut node = backup();
    node.handle_timeout(after_timeout());
    assert_eq!(node.role(), RoleKind::ClaimingAsBackup);
    node
}

fn grant(node: &mut Node, forge: &mut Forge) {
    let me = node.config.me;
    let epoch = node.epoch().next();
    let bytes = forge.arbiter_frame(me, epoch, Message::ClaimReply { epoch, owner: me });
    node.handle_frame(after_timeout(), &bytes).unwrap();
    // The driver stores the new epoch before the node may act on it.
    assert!(node.events.contains(&Event::PersistEpoch { epoch }));
    node.epoch_persisted(epoch);
}

fn solo() -> Node {
    let mut node = claiming_as_primary();
    grant(&mut node, &mut Forge::new());
    assert_eq!(node.role(), RoleKind::Solo);
    node
}

fn going_live() -> Node {
    let mut node = claiming_as_backup();
    grant(&mut node, &mut Forge::new());
    assert_eq!(node.role(), RoleKind::GoingLive);
    node
}

fn joining() -> Node {
    Node::joining(config(B), T0, Epoch(1))
}

fn halted() -> Node {
    let mut node = claiming_as_backup();
    let bytes = Forge::new().arbiter_frame(
        B,
        Epoch(2),
        Message::ClaimReply {
            epoch: Epoch(2),
            owner: A,
        },
    );
    node.handle_frame(after_timeout(), &bytes).unwrap();
    assert_eq!(node.role(), RoleKind::Halted);
    node
}

const ROLES: [RoleKind; 8] = [
    RoleKind::Primary,
    RoleKind::Solo,
    RoleKind::Backup,
    RoleKind::ClaimingAsPrimary,
    RoleKind::ClaimingAsBackup,
    RoleKind::GoingLive,
    RoleKind::Joining,
    RoleKind::Halted,
];

fn node_in(role: RoleKind) -> Node {
    let node = match role {
        RoleKind::Primary => primary(),
        RoleKind::Solo => solo(),
        RoleKind::Backup => backup(),
        RoleKind::ClaimingAsPrimary => claiming_as_primary(),
        RoleKind::ClaimingAsBackup => claiming_as_backup(),
        RoleKind::GoingLive => going_live(),
        RoleKind::Joining => joining(),
        RoleKind::Halted => halted(),
        RoleKind::Arbiter => unreachable!("not a replica role"),
    };
    assert_eq!(node.role(), role);
    node
}

/// The stimuli of the transition table.
#[derive(Clone, Copy, Debug)]
enum Stimulus {
    PeerSilent,
    Granted,
    Denied,
    NewerEpochHeartbeat,
    FenceFromNewerEpoch,
    Snapshot,
    Join,
    Ack,
    Log,
    Record,
    FinishGoLive,
    SendSnapshot,
    TransferFromJoiner,
    TransferFromLive,
}

const STIMULI: [Stimulus; 14] = [
    Stimulus::PeerSilent,
    Stimulus::Granted,
    Stimulus::Denied,
    Stimulus::NewerEpochHeartbeat,
    Stimulus::FenceFromNewerEpoch,
    Stimulus::Snapshot,
    Stimulus::Join,
    Stimulus::Ack,
    Stimulus::Log,
    Stimulus::Record,
    Stimulus::FinishGoLive,
    Stimulus::SendSnapshot,
    Stimulus::TransferFromJoiner,
    Stimulus::TransferFromLive,
];

/// Applies a stimulus; returns whether the node accepted it (Ok) or refused it (Err).
fn apply(node: &mut Node, stimulus: Stimulus) -> bool {
    // Later sequence numbers than the frames that put the node in its role (a grant), so the
    // anti-replay window takes the stimulus as new.
    let mut forge = Forge { sequence: 100 };
    let now = after_timeout();
    let epoch = node.epoch();
    let peer = peer_of(node);
    let me = node.config.me;
    match stimulus {
        Stimulus::PeerSilent => {
            node.handle_timeout(now);
            true
        }
        Stimulus::Granted => {
            let epoch = epoch.next();
            let bytes = forge.arbiter_frame(me, epoch, Message::ClaimReply { epoch, owner: me });
            node.handle_frame(now, &bytes).is_ok()
        }
        Stimulus::Denied => {
            let epoch = epoch.next();
            let bytes = forge.arbiter_frame(me, epoch, Message::ClaimReply { epoch, owner: peer });
            node.handle_frame(now, &bytes).is_ok()
        }
        Stimulus::NewerEpochHeartbeat => {
            let message = Message::Heartbeat {
                sent_at: now,
                log_end: LogSequence(0),
                released_through: LogSequence(0),
            };
            node.handle_frame(now, &forge.frame(peer, Epoch(epoch.0 + 5), message))
                .is_ok()
        }
        Stimulus::FenceFromNewerEpoch => {
            let newer = Epoch(epoch.0.max(1) + 5);
            node.handle_frame(
                now,
                &forge.frame(peer, newer, Message::Fence { epoch: newer }),
            )
            .is_ok()
        }
        Stimulus::Snapshot => {
            let target = if epoch == Epoch(0) { Epoch(2) } else { epoch };
            let message = Message::Snapshot {
                sent_at: now,
                position: LogSequence(10),
                at: InstructionCount(500),
                state: vec![1, 2],
                released_through: LogSequence(0),
                held_outputs: vec![],
            };
            node.handle_frame(now, &forge.frame(peer, target, message))
                .is_ok()
        }
        Stimulus::Join => node
            .handle_frame(now, &forge.frame(peer, Epoch(0), Message::Join))
            .is_ok(),
        Stimulus::TransferFromJoiner => {
            let message = Message::Transfer(Transfer::PieceAck {
                session: SessionId(1),
                through: 0,
                gap: false,
            });
            node.handle_frame(now, &forge.frame(peer, Epoch(0), message))
                .is_ok()
        }
        Stimulus::TransferFromLive => {
            let message = Message::Transfer(Transfer::Start {
                session: SessionId(1),
                ram_pages: 1,
                disk: None,
            });
            node.handle_frame(now, &forge.frame(peer, Epoch(epoch.0.max(1)), message))
                .is_ok()
        }
        Stimulus::Ack => {
            let message = Message::Ack {
                echo: now,
                through: LogSequence(0),
                resend: false,
                backpressure: false,
            };
            node.handle_frame(now, &forge.frame(peer, epoch, message))
                .is_ok()
        }
        Stimulus::Log => {
            let message = Message::Log {
                sent_at: now,
                released_through: LogSequence(0),
                first: LogSequence(1),
                entries: vec![input(10, 1)],
            };
            node.handle_frame(now, &forge.frame(peer, epoch, message))
                .is_ok()
        }
        Stimulus::Record => node.record(now, input(10, 1)).is_ok(),
        Stimulus::FinishGoLive => node.finish_go_live(now).is_ok(),
        Stimulus::SendSnapshot => node
            .send_snapshot(now, InstructionCount(10), vec![0])
            .is_ok(),
    }
}

/// The expected (accepted, role after) for every role and stimulus. Entries that keep the
/// role and refuse the stimulus are the illegal edges.
fn expected(role: RoleKind, stimulus: Stimulus) -> (bool, RoleKind) {
    use RoleKind::*;
    use Stimulus as S;
    match (role, stimulus) {
        (Primary, S::PeerSilent) => (true, ClaimingAsPrimary),
        (Backup, S::PeerSilent) => (true, ClaimingAsBackup),
        (role, S::PeerSilent) => (true, role),

        (ClaimingAsPrimary, S::Granted) => (true, Solo),
        (ClaimingAsBackup, S::Granted) => (true, GoingLive),
        (ClaimingAsPrimary | ClaimingAsBackup, S::Denied) => (true, Halted),
        // Outside a claim the arbiter's record answers a heartbeat: a newer epoch than this
        // node's means it was deposed.
        (Primary | Solo | Backup | GoingLive, S::Granted | S::Denied) => (true, Halted),
        (role, S::Granted | S::Denied) => (true, role),

        (
            Primary | Solo | Backup | ClaimingAsPrimary | ClaimingAsBackup | GoingLive,
            S::NewerEpochHeartbeat,
        ) => (true, Halted),
        (role, S::NewerEpochHeartbeat) => (false, role),

        (
            Primary | Solo | Backup | ClaimingAsPrimary | ClaimingAsBackup | GoingLive,
            S::FenceFromNewerEpoch,
        ) => (true, Halted),
        (role, S::FenceFromNewerEpoch) => (false, role),

        // A joiner waits for its runtime to confirm the install; a backup installs at once.
        (Joining, S::Snapshot) => (true, Joining),
        (Backup, S::Snapshot) => (true, Backup),
        (role, S::Snapshot) => (false, role),

        (Primary | Solo, S::Join) => (true, role),
        (role, S::Join) => (false, role),

        (Primary | ClaimingAsPrimary, S::Ack) => (true, role),
        (role, S::Ack) => (false, role),

        (Backup | ClaimingAsBackup, S::Log) => (true, role),
        (role, S::Log) => (false, role),

        (Primary | Solo | ClaimingAsPrimary, S::Record) => (true, role),
        (role, S::Record) => (false, role),

        (GoingLive, S::FinishGoLive) => (true, Solo),
        (role, S::FinishGoLive) => (false, role),

        (Primary | Solo, S::SendSnapshot) => (true, Primary),
        (role, S::SendSnapshot) => (false, role),

        // State transfer: only between a joiner and a live primary, in the right direction.
        (Primary | Solo, S::TransferFromJoiner) => (true, role),
        (role, S::TransferFromJoiner) => (false, role),
        (Joining, S::TransferFromLive) => (true, Joining),
        (role, S::TransferFromLive) => (false, role),
    }
}

#[test]
fn transitions_every_role_and_stimulus_match_the_table() {
    let mut checked = 0;
    for role in ROLES {
        for stimulus in STIMULI {
            let mut node = node_in(role);
            let accepted = apply(&mut node, stimulus);
            let (expect_accepted, expect_role) = expected(role, stimulus);
            assert_eq!(
                (accepted, node.role()),
                (expect_accepted, expect_role),
                "{role:?} + {stimulus:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, ROLES.len() * STIMULI.len());
}

#[test]
fn transitions_diverged_backup_halts_with_the_first_diverging_count() {
    let mut node = backup();
    let mut forge = Forge::new();
    let entries = vec![
        LogEntry {
            at: InstructionCount(100),
            record: Record::Digest {
                digest: StateDigest([1; 32]),
            },
        },
        LogEntry {
            at: InstructionCount(200),
            record: Record::Digest {
                digest: StateDigest([2; 32]),
            },
        },
    ];
    let message = Message::Log {
        sent_at: T0,
        released_through: LogSequence(0),
        first: LogSequence(1),
        entries,
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), message))
        .unwrap();
    let first = node.poll_replay().unwrap();
    assert_eq!(
        node.check_digest(first.position, StateDigest([1; 32])),
        Ok(true)
    );
    let second = node.poll_replay().unwrap();
    assert_eq!(
        node.check_digest(second.position, StateDigest([9; 32])),
        Ok(false)
    );
    let events = drain_events(&mut node);
    assert!(events.contains(&Event::Divergence {
        position: LogSequence(2),
        last_agreed: Some(InstructionCount(100)),
        first_diverged: InstructionCount(200),
    }));
    assert_eq!(node.role(), RoleKind::Halted);
    assert_eq!(
        node.halt_reason(),
        Some(HaltReason::Diverged {
            first_diverged: InstructionCount(200)
        })
    );
    assert_eq!(
        node.check_digest(LogSequence(7), StateDigest([0; 32])),
        Err(NodeError::UnknownDigest {
            position: LogSequence(7)
        })
    );
}

#[test]
fn transitions_stale_epoch_frames_are_fenced_and_leave_the_role_alone() {
    let mut node = solo();
    drain_transmits(&mut node, after_timeout());
    let mut forge = Forge::new();
    let message = Message::Ack {
        echo: T0,
        through: LogSequence(0),
        resend: false,
        backpressure: false,
    };
    let result = node.handle_frame(after_timeout(), &forge.frame(B, Epoch(1), message));
    assert_eq!(
        result,
        Err(ReceiveError::StaleEpoch {
            expected: Epoch(2),
            received: Epoch(1)
        })
    );
    assert_eq!(result.unwrap_err().action(), crate::wire::Action::Fence);
    assert_eq!(node.role(), RoleKind::Solo);
    let sent = drain_transmits(&mut node, after_timeout());
    assert_eq!(sent, vec![(B, Message::Fence { epoch: Epoch(2) })]);
}

// ----- The output rule -----

#[test]
fn primary_holds_output_until_the_backup_acknowledges_its_position() {
    let mut node = primary();
    let mut forge = Forge::new();
    let position = node
        .submit_output(T0, InstructionCount(10), DeviceId(1), vec![7])
        .unwrap();
    assert_eq!(position, LogSequence(1));
    assert_eq!(node.poll_release(T0), None, "no acknowledgement yet");
    let sent = drain_transmits(&mut node, T0);
    assert!(
        matches!(&sent[0].1, Message::Log { first: LogSequence(1), entries, .. } if entries.len() == 1)
    );
    // Execution does not stall: more entries can be recorded meanwhile.
    node.record(T0, input(20, 2)).unwrap();
    let ack = Message::Ack {
        echo: T0,
        through: LogSequence(1),
        resend: false,
        backpressure: false,
    };
    let now = T0 + Duration::from_millis(1);
    node.handle_frame(now, &forge.frame(B, Epoch(1), ack))
        .unwrap();
    let released = node.poll_release(now).unwrap();
    assert_eq!(
        (released.position, released.acknowledged, released.payload),
        (LogSequence(1), true, vec![7])
    );
    assert_eq!(node.poll_release(now), None);
}

#[test]
fn primary_does_not_release_on_an_acknowledgement_whose_lease_has_expired() {
    let mut node = primary();
    let mut forge = Forge::new();
    node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![7])
        .unwrap();
    // The acknowledgement echoes a frame sent at T0 but arrives after the lease: the backup
    // may already be claiming, so the output must stay held.
    let late = T0 + limits().output_lease() + Duration(1);
    let ack = Message::Ack {
        echo: T0,
        through: LogSequence(1),
        resend: false,
        backpressure: false,
    };
    node.handle_frame(late, &forge.frame(B, Epoch(1), ack))
        .unwrap();
    assert_eq!(node.poll_release(late), None);
    let fresh = Message::Ack {
        echo: late,
        through: LogSequence(1),
        resend: false,
        backpressure: false,
    };
    node.handle_frame(late, &forge.frame(B, Epoch(1), fresh))
        .unwrap();
    assert!(node.poll_release(late).is_some());
}

#[test]
fn output_lease_is_shorter_than_the_peer_timeout_by_the_drift_allowance() {
    let limits = limits();
    let lease = limits.output_lease();
    assert!(lease < limits.peer_timeout);
    // L / (1 - r) < T / (1 + r) with r = 1000 ppm.
    let r = limits.clock_drift_ppm_max as f64 / 1e6;
    assert!(lease.0 as f64 / (1.0 - r) < limits.peer_timeout.0 as f64 / (1.0 + r));
}

#[test]
fn claiming_primary_releases_nothing_and_a_fenced_former_primary_never_does() {
    let mut node = primary();
    let mut forge = Forge::new();
    node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![7])
        .unwrap();
    node.handle_timeout(after_timeout());
    assert_eq!(node.role(), RoleKind::ClaimingAsPrimary);
    let ack = Message::Ack {
        echo: after_timeout(),
        through: LogSequence(1),
        resend: false,
        backpressure: false,
    };
    node.handle_frame(after_timeout(), &forge.frame(B, Epoch(1), ack))
        .unwrap();
    assert_eq!(node.poll_release(after_timeout()), None);
    // The backup won epoch 2 and tells us.
    node.handle_frame(
        after_timeout(),
        &forge.frame(B, Epoch(2), Message::Fence { epoch: Epoch(2) }),
    )
    .unwrap();
    assert_eq!(node.role(), RoleKind::Halted);
    assert_eq!(node.poll_release(after_timeout()), None);
    assert_eq!(
        node.submit_output(after_timeout(), InstructionCount(20), DeviceId(1), vec![8]),
        Err(NodeError::NotLive {
            role: RoleKind::Halted
        })
    );
}

#[test]
fn primary_that_wins_the_claim_releases_what_it_held_unacknowledged() {
    let mut node = primary();
    node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![7])
        .unwrap();
    node.handle_timeout(after_timeout());
    grant(&mut node, &mut Forge::new());
    assert_eq!(node.role(), RoleKind::Solo);
    assert_eq!(node.epoch(), Epoch(2));
    let released = node.poll_release(after_timeout()).unwrap();
    assert_eq!((released.epoch, released.acknowledged), (Epoch(2), false));
}

#[test]
fn claimant_that_cannot_reach_the_arbiter_waits_and_retries_without_going_live() {
    let mut node = claiming_as_backup();
    let first = drain_transmits(&mut node, after_timeout());
    assert_eq!(first, vec![(ARBITER, Message::Claim { epoch: Epoch(2) })]);
    let mut now = after_timeout();
    for _ in 0..50 {
        now = node.poll_at().unwrap();
        node.handle_timeout(now);
        assert_eq!(node.role(), RoleKind::ClaimingAsBackup);
        assert_eq!(
            drain_transmits(&mut node, now),
            vec![(ARBITER, Message::Claim { epoch: Epoch(2) })]
        );
    }
    assert!(now >= after_timeout() + Duration(limits().claim_retry_interval.0 * 50));
}

// ----- Flow control -----

#[test]
fn primary_is_throttled_at_each_lag_limit() {
    let small = Limits {
        lag_entries_max: 3,
        lag_instructions_max: 1000,
        ..limits()
    };
    let mut node = Node::primary(
        NodeConfig {
            limits: small.clone(),
            ..config(A)
        },
        T0,
    );
    for at in 0..3 {
        node.record(T0, input(at, 0)).unwrap();
    }
    assert_eq!(
        node.record(T0, input(4, 0)),
        Err(NodeError::Throttled {
            limit: LagLimit::Entries
        })
    );
    assert_eq!(node.execution_budget(InstructionCount(400)), 600);
    let mut node = Node::primary(
        NodeConfig {
            limits: small,
            ..config(A)
        },
        T0,
    );
    assert_eq!(
        node.record(T0, input(5000, 0)),
        Err(NodeError::Throttled {
            limit: LagLimit::Instructions
        })
    );
    let mut node = Node::primary(
        NodeConfig {
            limits: Limits {
                lag_bytes_max: 10,
                ..limits()
            },
            ..config(A)
        },
        T0,
    );
    node.record(
        T0,
        LogEntry {
            at: InstructionCount(1),
            record: Record::Entropy { bytes: vec![0; 16] },
        },
    )
    .unwrap();
    assert_eq!(
        node.record(T0, input(2, 0)),
        Err(NodeError::Throttled {
            limit: LagLimit::Bytes
        })
    );
    assert_eq!(
        node.record(T0, input(0, 0)),
        Err(NodeError::InstructionCountWentBack {
            newest: InstructionCount(1),
            offered: InstructionCount(0)
        })
    );
}

#[test]
fn acknowledgement_frees_the_lag_and_batches_respect_their_limits() {
    let small = Limits {
        batch_entries_max: 2,
        ..limits()
    };
    let mut node = Node::primary(
        NodeConfig {
            limits: small,
            ..config(A)
        },
        T0,
    );
    let mut forge = Forge::new();
    for at in 0..5 {
        node.record(T0, input(at, 0)).unwrap();
    }
    let sent = drain_transmits(&mut node, T0);
    let firsts: Vec<u64> = sent
        .iter()
        .map(|(_, message)| match message {
            Message::Log { first, entries, .. } => {
                assert!(entries.len() <= 2);
                first.0
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(firsts, vec![1, 3, 5]);
    let ack = Message::Ack {
        echo: T0,
        through: LogSequence(5),
        resend: false,
        backpressure: false,
    };
    node.handle_frame(T0, &forge.frame(B, Epoch(1), ack))
        .unwrap();
    assert_eq!(node.acknowledged(), LogSequence(5));
    assert_eq!(node.throttled(InstructionCount(4)), None);
}

#[test]
fn primary_resends_after_a_resend_request_and_after_the_retransmit_timeout() {
    let mut node = primary();
    let mut forge = Forge::new();
    for at in 0..3 {
        node.record(T0, input(at, 0)).unwrap();
    }
    drain_transmits(&mut node, T0);
    let nack = Message::Ack {
        echo: T0,
        through: LogSequence(1),
        resend: true,
        backpressure: false,
    };
    node.handle_frame(T0, &forge.frame(B, Epoch(1), nack))
        .unwrap();
    let resent = drain_transmits(&mut node, T0);
    assert!(
        matches!(&resent[0].1, Message::Log { first: LogSequence(2), entries, .. } if entries.len() == 2)
    );
    let later = T0 + limits().retransmit_timeout + Duration(1);
    node.handle_timeout(later);
    let resent = drain_transmits(&mut node, later);
    assert!(resent.iter().any(|(_, message)| matches!(
        message,
        Message::Log {
            first: LogSequence(2),
            ..
        }
    )));
}

// ----- Backup -----

#[test]
fn backup_acknowledges_in_order_and_asks_for_resend_on_a_gap() {
    let mut node = backup();
    let mut forge = Forge::new();
    let log = |first: u64, at: u64| Message::Log {
        sent_at: T0,
        released_through: LogSequence(0),
        first: LogSequence(first),
        entries: vec![input(at, 0)],
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), log(1, 10)))
        .unwrap();
    assert_eq!(
        drain_transmits(&mut node, T0),
        vec![(
            A,
            Message::Ack {
                echo: T0,
                through: LogSequence(1),
                resend: false,
                backpressure: false
            }
        )]
    );
    let gap = node.handle_frame(T0, &forge.frame(A, Epoch(1), log(3, 30)));
    assert_eq!(
        gap,
        Err(ReceiveError::LogGap {
            expected: LogSequence(2),
            received: LogSequence(3)
        })
    );
    assert_eq!(gap.unwrap_err().action(), crate::wire::Action::AskResend);
    assert_eq!(
        drain_transmits(&mut node, T0),
        vec![(
            A,
            Message::Ack {
                echo: T0,
                through: LogSequence(1),
                resend: true,
                backpressure: false
            }
        )]
    );
    // A duplicate of an entry already held is harmless and acknowledged again.
    node.handle_frame(T0, &forge.frame(A, Epoch(1), log(1, 10)))
        .unwrap();
    node.handle_frame(T0, &forge.frame(A, Epoch(1), log(2, 20)))
        .unwrap();
    assert_eq!(node.horizon(), InstructionCount(20));
    assert_eq!(node.next_replay_at(), Some(InstructionCount(10)));
    let replayed: Vec<u64> = core::iter::from_fn(|| node.poll_replay())
        .map(|item| item.position.0)
        .collect();
    assert_eq!(replayed, vec![1, 2]);
}

#[test]
fn backup_suppresses_outputs_and_forgets_those_the_primary_released() {
    let mut node = backup();
    let mut forge = Forge::new();
    let log = Message::Log {
        sent_at: T0,
        released_through: LogSequence(0),
        first: LogSequence(1),
        entries: vec![input(10, 0)],
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), log))
        .unwrap();
    node.poll_replay().unwrap();
    assert_eq!(
        node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![1]),
        Ok(LogSequence(2))
    );
    assert_eq!(node.poll_release(T0), None, "a backup never releases");
    assert_eq!(node.suppressed.len(), 1);
    let heartbeat = Message::Heartbeat {
        sent_at: T0,
        log_end: LogSequence(2),
        released_through: LogSequence(2),
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), heartbeat))
        .unwrap();
    assert!(node.suppressed.is_empty());
}

// ----- Go-live -----

#[test]
fn backup_goes_live_after_draining_and_reissues_outputs_not_known_released() {
    let mut node = backup();
    let mut forge = Forge::new();
    let log = Message::Log {
        sent_at: T0,
        released_through: LogSequence(0),
        first: LogSequence(1),
        entries: vec![
            input(10, 0),
            LogEntry {
                at: InstructionCount(10),
                record: Record::Output {
                    device: DeviceId(1),
                    length: 1,
                },
            },
            input(20, 1),
        ],
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), log))
        .unwrap();
    node.poll_replay().unwrap();
    node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![42])
        .unwrap();
    node.handle_timeout(after_timeout());
    grant(&mut node, &mut forge);
    assert_eq!(node.role(), RoleKind::GoingLive);
    assert_eq!(
        node.finish_go_live(after_timeout()),
        Err(NodeError::ReplayNotDrained { remaining: 2 })
    );
    while node.poll_replay().is_some() {}
    drain_events(&mut node);
    node.finish_go_live(after_timeout()).unwrap();
    let events = drain_events(&mut node);
    assert_eq!(
        events,
        vec![
            Event::RoleChanged {
                from: RoleKind::GoingLive,
                to: RoleKind::Solo,
                epoch: Epoch(2)
            },
            Event::LeaveReplay {
                epoch: Epoch(2),
                position: LogSequence(3),
                at: InstructionCount(20)
            },
            Event::AnnounceMac,
            Event::ReissueInFlightIo,
        ]
    );
    let reissued = node.poll_release(after_timeout()).unwrap();
    assert_eq!(
        (reissued.position, reissued.reissued, reissued.epoch),
        (LogSequence(2), true, Epoch(2))
    );
    // Live now: new inputs continue the log after what was replayed.
    assert_eq!(
        node.record(after_timeout(), input(30, 2)),
        Ok(LogSequence(4))
    );
}

#[test]
fn joining_replica_becomes_backup_from_a_snapshot_and_the_primary_protects_again() {
    let mut live = solo();
    drain_transmits(&mut live, after_timeout());
    let mut joiner = Node::joining(config(B), after_timeout(), Epoch(1));
    joiner.handle_timeout(after_timeout());
    let join = drain_transmits(&mut joiner, after_timeout());
    assert_eq!(join, vec![(A, Message::Join)]);
    let now = after_timeout();
    live.record(now, input(5, 0)).unwrap();
    // Deliver the join for real.
    let mut forge = Forge::new();
    live.handle_frame(now, &forge.frame(B, Epoch(0), Message::Join))
        .unwrap();
    assert!(drain_events(&mut live).contains(&Event::SnapshotWanted));
    live.send_snapshot(now, InstructionCount(5), vec![9, 9])
        .unwrap();
    assert_eq!(live.role(), RoleKind::Primary);
    let sent = live.poll_transmit(now).unwrap();
    joiner.handle_frame(now, &sent.bytes).unwrap();
    assert_eq!(
        joiner.role(),
        RoleKind::Joining,
        "the runtime installs the state first"
    );
    assert_eq!(joiner.epoch(), Epoch(2));
    let events = drain_events(&mut joiner);
    assert!(events.contains(&Event::PersistEpoch { epoch: Epoch(2) }));
    assert_eq!(
        joiner.poll_transmit(now),
        None,
        "nothing leaves before the epoch is stored"
    );
    joiner.epoch_persisted(Epoch(2));
    assert!(events.contains(&Event::InstallSnapshot {
        position: LogSequence(1),
        at: InstructionCount(5),
        state: vec![9, 9]
    }));
    assert_eq!(joiner.poll_transmit(now), None, "no ack before the install");
    joiner.confirm_install(now);
    assert_eq!(joiner.role(), RoleKind::Backup);
    // Outputs after the snapshot wait for the new backup's acknowledgement.
    live.submit_output(now, InstructionCount(6), DeviceId(1), vec![1])
        .unwrap();
    assert_eq!(live.poll_release(now), None);
    let ack = joiner.poll_transmit(now).unwrap();
    live.handle_frame(now, &ack.bytes).unwrap();
    assert_eq!(
        live.poll_release(now),
        None,
        "the ack covers the snapshot, not the new output"
    );
    let log = live.poll_transmit(now).unwrap();
    joiner.handle_frame(now, &log.bytes).unwrap();
    let ack = joiner.poll_transmit(now).unwrap();
    live.handle_frame(now, &ack.bytes).unwrap();
    assert_eq!(
        live.poll_release(now).map(|output| output.position),
        Some(LogSequence(2))
    );
}

#[test]
fn frames_from_strangers_replays_and_restarted_peers_are_dropped() {
    let mut node = backup();
    let mut forge = Forge::new();
    let heartbeat = Message::Heartbeat {
        sent_at: T0,
        log_end: LogSequence(0),
        released_through: LogSequence(0),
    };
    let stranger = forge.frame(NodeId(9), Epoch(1), heartbeat.clone());
    assert_eq!(
        node.handle_frame(T0, &stranger),
        Err(ReceiveError::UnknownSender { sender: NodeId(9) })
    );
    let bytes = forge.frame(A, Epoch(1), heartbeat);
    node.handle_frame(T0, &bytes).unwrap();
    assert!(matches!(
        node.handle_frame(T0, &bytes),
        Err(ReceiveError::Duplicate { .. })
    ));
    assert_eq!(node.counters().frames_rejected, 2);
    assert_eq!(
        node.handle_frame(T0, &bytes[..10]),
        Err(ReceiveError::Decode(crate::wire::DecodeError::Truncated {
            length: 10
        }))
    );
}

#[test]
fn joining_replica_refuses_a_snapshot_without_an_epoch() {
    let mut node = Node::joining(config(B), T0, Epoch(0));
    let message = Message::Snapshot {
        sent_at: T0,
        position: LogSequence(1),
        at: InstructionCount(1),
        state: vec![],
        released_through: LogSequence(0),
        held_outputs: vec![],
    };
    let result = node.handle_frame(T0, &Forge::new().frame(A, Epoch(0), message));
    assert!(matches!(
        result,
        Err(ReceiveError::UnexpectedMessage { .. })
    ));
    assert_eq!(node.role(), RoleKind::Joining);
}

#[test]
fn a_joiner_that_knew_a_newer_epoch_fences_the_stale_primary_and_refuses_its_snapshot() {
    // B won epoch 2, released output and crashed; A never heard and is still primary of 1.
    let mut stale = primary();
    let mut joiner = Node::joining(config(B), T0, Epoch(2));
    joiner.handle_timeout(T0);
    let join = joiner.poll_transmit(T0).unwrap();
    // A snapshot of epoch 1 that A sent before it could learn anything is refused.
    let mut forge = Forge::new();
    let old_state = Message::Snapshot {
        sent_at: T0,
        position: LogSequence(3),
        at: InstructionCount(30),
        state: vec![1],
        released_through: LogSequence(0),
        held_outputs: vec![],
    };
    assert_eq!(
        joiner.handle_frame(T0, &forge.frame(A, Epoch(1), old_state)),
        Err(ReceiveError::StaleEpoch {
            expected: Epoch(2),
            received: Epoch(1)
        })
    );
    assert_eq!(joiner.role(), RoleKind::Joining);
    assert!(!drain_events(&mut joiner)
        .iter()
        .any(|event| matches!(event, Event::InstallSnapshot { .. })));
    assert_eq!(
        drain_transmits(&mut joiner, T0),
        vec![(A, Message::Fence { epoch: Epoch(2) })]
    );
    // The join itself tells A that epoch 2 exists: A halts instead of sending its state.
    stale.handle_frame(T0, &join.bytes).unwrap();
    assert_eq!(stale.role(), RoleKind::Halted);
    assert_eq!(
        stale.halt_reason(),
        Some(HaltReason::Fenced { epoch: Epoch(2) })
    );
    assert!(!drain_events(&mut stale).contains(&Event::SnapshotWanted));
}

#[test]
fn a_new_epoch_is_persisted_before_anything_leaves_the_node() {
    let mut node = primary();
    node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![7])
        .unwrap();
    node.handle_timeout(after_timeout());
    drain_transmits(&mut node, after_timeout());
    let bytes = Forge::new().arbiter_frame(
        A,
        Epoch(2),
        Message::ClaimReply {
            epoch: Epoch(2),
            owner: A,
        },
    );
    node.handle_frame(after_timeout(), &bytes).unwrap();
    assert_eq!(node.role(), RoleKind::Solo);
    assert!(drain_events(&mut node).contains(&Event::PersistEpoch { epoch: Epoch(2) }));
    assert_eq!(node.poll_release(after_timeout()), None);
    node.epoch_persisted(Epoch(1));
    assert_eq!(node.poll_release(after_timeout()), None, "another epoch");
    node.epoch_persisted(Epoch(2));
    let released = node.poll_release(after_timeout()).unwrap();
    assert_eq!(released.epoch, Epoch(2));
}

#[test]
fn a_replica_cannot_forge_the_arbiters_grant_or_speak_as_its_peer() {
    let mut node = claiming_as_backup();
    let mut forge = Forge::new();
    let grant = Message::ClaimReply {
        epoch: Epoch(2),
        owner: B,
    };
    // The peer knows the channel key, not B's arbiter key.
    let forged = forge.signed(ARBITER, Epoch(2), grant.clone(), &key());
    assert_eq!(
        node.handle_frame(after_timeout(), &forged),
        Err(ReceiveError::Decode(
            crate::wire::DecodeError::Unauthenticated
        ))
    );
    // Nor does it know A's: a grant meant for A is not one for B.
    let for_a = forge.signed(ARBITER, Epoch(2), grant.clone(), &arbiter_key(A));
    assert!(node.handle_frame(after_timeout(), &for_a).is_err());
    assert_eq!(node.role(), RoleKind::ClaimingAsBackup);
    // A frame that claims to come from this node itself is a stranger's.
    let fence = Message::Fence { epoch: Epoch(9) };
    assert_eq!(
        node.handle_frame(after_timeout(), &forge.frame(B, Epoch(9), fence)),
        Err(ReceiveError::UnknownSender { sender: B })
    );
    assert_eq!(node.role(), RoleKind::ClaimingAsBackup);
    let real = forge.arbiter_frame(B, Epoch(2), grant);
    node.handle_frame(after_timeout(), &real).unwrap();
    assert_eq!(node.role(), RoleKind::GoingLive);
}

#[test]
fn a_forming_pair_does_not_claim_before_the_peer_was_first_heard() {
    let late = T0 + Duration(limits().peer_timeout.0 * 10);
    for mut node in [primary(), backup()] {
        node.await_peer();
        node.handle_timeout(late);
        assert!(!node.peer_heard());
        assert!(matches!(node.role(), RoleKind::Primary | RoleKind::Backup));
        // Nothing is overdue: a driver sleeping until `poll_at` does not spin.
        assert!(node.poll_at().unwrap() > late);
    }
    // Once the peer was heard, its silence is a failure again.
    let mut primary = primary();
    primary.await_peer();
    let mut backup = backup();
    backup.await_peer();
    primary.handle_timeout(T0 + limits().heartbeat_interval);
    let heartbeat_at = T0 + limits().heartbeat_interval;
    let mut delivered = 0;
    while let Some(transmit) = primary.poll_transmit(heartbeat_at) {
        if transmit.to == B {
            backup.handle_frame(heartbeat_at, &transmit.bytes).unwrap();
            delivered += 1;
        }
    }
    assert_eq!(delivered, 1);
    assert!(backup.peer_heard());
    backup.handle_timeout(heartbeat_at + limits().peer_timeout);
    assert_eq!(backup.role(), RoleKind::ClaimingAsBackup);
}

#[test]
fn a_primary_whose_acknowledgements_always_outlive_the_lease_fails_over() {
    // Every acknowledgement comes back a lease and a millisecond after the frame it echoes:
    // the backup is alive, but no output could ever be released.
    let mut node = primary();
    let mut forge = Forge::new();
    node.submit_output(T0, InstructionCount(10), DeviceId(1), vec![7])
        .unwrap();
    let round_trip = Duration(limits().output_lease().0 + 1000);
    let mut now = T0 + round_trip;
    let end = T0 + limits().ack_progress_timeout + round_trip + Duration::from_millis(300);
    while now < end && node.role() == RoleKind::Primary {
        let ack = Message::Ack {
            echo: Instant(now.0 - round_trip.0),
            through: LogSequence(1),
            resend: false,
            backpressure: false,
        };
        node.handle_frame(now, &forge.frame(B, Epoch(1), ack))
            .unwrap();
        assert_eq!(node.poll_release(now), None);
        node.handle_timeout(now);
        now = now + Duration::from_millis(50);
    }
    assert_eq!(node.role(), RoleKind::ClaimingAsPrimary);
}

#[test]
fn record_succeeds_whenever_throttled_says_nothing_and_the_entry_fits_a_batch() {
    let small = Limits {
        lag_entries_max: 3,
        lag_instructions_max: 1000,
        ..limits()
    };
    let mut checked = 0;
    for role in ROLES {
        for at in [0u64, 5, 10, 500, 2000] {
            let mut node = node_in(role);
            node.config.limits = small.clone();
            // Some history first, so the count can go back and the lag limits bite.
            let _ = node.record(T0, input(10, 0));
            let _ = node.record(T0, input(10, 1));
            let before = node.throttled(InstructionCount(at));
            let result = node.record(T0, input(at, 2));
            match before {
                None => {
                    assert!(result.is_ok(), "{role:?} at {at}: {result:?}");
                    checked += 1;
                }
                Some(error) => assert_eq!(result, Err(error), "{role:?} at {at}"),
            }
        }
    }
    assert!(checked > 0);
}

fn marker(at: u64) -> LogEntry {
    LogEntry {
        at: InstructionCount(at),
        record: Record::Output {
            device: DeviceId(1),
            length: 1,
        },
    }
}

fn acks(sent: &[(NodeId, Message)]) -> Vec<(LogSequence, bool, bool)> {
    sent.iter()
        .filter_map(|(_, message)| match message {
            Message::Ack {
                through,
                resend,
                backpressure,
                ..
            } => Some((*through, *resend, *backpressure)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_backup_signals_backpressure_and_the_primary_throttles_instead_of_failing_over() {
    let small = Limits {
        replay_entries_max: 2,
        ..limits()
    };
    let mut backup = Node::backup(
        NodeConfig {
            limits: small.clone(),
            ..config(B)
        },
        T0,
    );
    let mut primary = Node::primary(
        NodeConfig {
            limits: small,
            ..config(A)
        },
        T0,
    );
    for at in 1..=4 {
        primary.record(T0, input(at, 0)).unwrap();
    }
    let mut now = T0;
    let end = T0 + limits().ack_progress_timeout + limits().peer_timeout;
    while now < end {
        while let Some(transmit) = primary.poll_transmit(now) {
            let _ = backup.handle_frame(now, &transmit.bytes);
        }
        backup.handle_timeout(now);
        while let Some(transmit) = backup.poll_transmit(now) {
            if transmit.to == A {
                primary.handle_frame(now, &transmit.bytes).unwrap();
            }
        }
        primary.handle_timeout(now);
        now = now + Duration::from_millis(50);
    }
    // The backup's runtime never replayed: it holds two entries and says it is full.
    assert_eq!(backup.log_end(), LogSequence(2));
    assert_eq!(backup.role(), RoleKind::Backup);
    assert_eq!(
        primary.role(),
        RoleKind::Primary,
        "alive and full is not failed"
    );
    assert_eq!(primary.acknowledged(), LogSequence(2));
    // Once the runtime replays, the backup asks for the rest at once.
    while backup.poll_replay().is_some() {}
    assert!(backup.poll_at().unwrap() <= now);
    backup.handle_timeout(now);
    let sent = drain_transmits(&mut backup, now);
    assert_eq!(acks(&sent), vec![(LogSequence(2), true, false)]);
}

#[test]
fn a_backup_at_the_suppressed_output_limit_takes_no_more_outputs_until_they_are_released() {
    let mut node = Node::backup(
        NodeConfig {
            limits: Limits {
                suppressed_outputs_max: 1,
                ..limits()
            },
            ..config(B)
        },
        T0,
    );
    let mut forge = Forge::new();
    let log = Message::Log {
        sent_at: T0,
        released_through: LogSequence(0),
        first: LogSequence(1),
        entries: vec![input(10, 0), marker(10), input(20, 1), marker(20)],
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), log))
        .unwrap();
    // One output announced and not released: nothing more is taken, with backpressure.
    assert_eq!(
        acks(&drain_transmits(&mut node, T0)),
        vec![(LogSequence(2), false, true)]
    );
    while let Some(item) = node.poll_replay() {
        if let Record::DeviceInput { .. } = item.entry.record {
            node.submit_output(T0, item.entry.at, DeviceId(1), vec![1])
                .unwrap();
        }
    }
    assert_eq!(node.suppressed.len(), 1);
    // The primary released the first output: room again, and the backup asks for the rest.
    let heartbeat = Message::Heartbeat {
        sent_at: T0,
        log_end: LogSequence(4),
        released_through: LogSequence(2),
    };
    node.handle_frame(T0, &forge.frame(A, Epoch(1), heartbeat))
        .unwrap();
    assert_eq!(
        acks(&drain_transmits(&mut node, T0)),
        vec![(LogSequence(2), true, false)]
    );
    let later = T0 + Duration::from_millis(1);
    let rest = Message::Log {
        sent_at: later,
        released_through: LogSequence(2),
        first: LogSequence(3),
        entries: vec![input(20, 1), marker(20)],
    };
    node.handle_frame(later, &forge.frame(A, Epoch(1), rest))
        .unwrap();
    assert_eq!(node.log_end(), LogSequence(4));
}

#[test]
fn a_snapshot_carries_the_outputs_the_primary_still_holds_so_the_new_backup_can_reissue_them() {
    let mut live = primary();
    // An output the old backup never acknowledged, then a replica joins.
    live.record(T0, input(5, 0)).unwrap();
    live.submit_output(T0, InstructionCount(5), DeviceId(1), vec![42])
        .unwrap();
    drain_transmits(&mut live, T0);
    live.send_snapshot(T0, InstructionCount(5), vec![9])
        .unwrap();
    let snapshot = live.poll_transmit(T0).unwrap();
    let mut joiner = Node::joining(config(B), T0, Epoch(1));
    joiner.handle_frame(T0, &snapshot.bytes).unwrap();
    joiner.confirm_install(T0);
    assert_eq!(joiner.role(), RoleKind::Backup);
    // The primary dies before it could release: the new backup goes live and reissues it.
    joiner.handle_timeout(after_timeout());
    assert_eq!(joiner.role(), RoleKind::ClaimingAsBackup);
    grant(&mut joiner, &mut Forge::new());
    joiner.finish_go_live(after_timeout()).unwrap();
    let reissued = joiner.poll_release(after_timeout()).unwrap();
    assert_eq!(
        (reissued.position, reissued.payload, reissued.reissued),
        (LogSequence(2), vec![42], true)
    );
}

// ----- Peerless nodes: a standalone primary and a backup fed from a recording -----

#[test]
fn a_standalone_node_records_releases_at_once_and_never_sends_or_claims() {
    let mut node = Node::standalone(limits(), T0);
    assert_eq!(node.role(), RoleKind::Solo);
    assert_eq!(node.epoch(), Epoch(1));
    assert!(node.is_peerless());
    assert_eq!(node.record(T0, input(5, b'a')), Ok(LogSequence(1)));
    assert_eq!(node.execution_budget(InstructionCount(5)), u64::MAX);
    let position = node
        .submit_output(T0, InstructionCount(9), DeviceId(1), vec![b'a'])
        .unwrap();
    assert_eq!(position, LogSequence(2));
    let released = node.poll_release(T0).expect("released at once");
    assert_eq!(released.payload, vec![b'a']);
    assert!(!released.acknowledged);
    assert_eq!(node.poll_at(), None);
    node.handle_timeout(after_timeout() + limits().peer_timeout);
    assert!(drain_transmits(&mut node, after_timeout()).is_empty());
    assert_eq!(node.role(), RoleKind::Solo);
    // Nobody shares a key with it: even a well-formed frame from "its peer" is refused.
    let frame = Forge::new().frame(B, Epoch(1), Message::Join);
    assert!(matches!(
        node.handle_frame(T0, &frame),
        Err(ReceiveError::UnknownSender { .. })
    ));
    assert!(drain_events(&mut node).is_empty());
}

#[test]
fn a_file_backup_hands_out_pushed_entries_in_order_and_lets_matched_outputs_out() {
    let mut node = Node::file_backup(limits(), T0);
    assert_eq!(node.role(), RoleKind::Backup);
    let entries = [input(3, b'x'), marker(7), input(7, b'y')];
    assert_eq!(node.push_entries(T0, &entries), Ok(3));
    assert_eq!(node.horizon(), InstructionCount(7));
    assert_eq!(node.next_replay_at(), Some(InstructionCount(3)));
    let first = node.poll_replay().unwrap();
    assert_eq!(
        (first.position, first.entry),
        (LogSequence(1), input(3, b'x'))
    );
    let marker_item = node.poll_replay().unwrap();
    assert_eq!(marker_item.position, LogSequence(2));
    node.suppress_output(marker_item.position, DeviceId(1), vec![b'x'])
        .unwrap();
    let output = node
        .poll_release(T0)
        .expect("a recorded output leaves on replay");
    assert_eq!(
        (output.position, output.payload),
        (LogSequence(2), vec![b'x'])
    );
    assert_eq!(node.poll_replay().unwrap().entry, input(7, b'y'));
    assert_eq!(node.poll_replay(), None);
    // No acknowledgements, no failure detection, no claim however long the file is silent.
    assert_eq!(node.poll_at(), None);
    node.handle_timeout(after_timeout() + limits().peer_timeout);
    assert!(drain_transmits(&mut node, after_timeout()).is_empty());
    assert_eq!(node.role(), RoleKind::Backup);
}

#[test]
fn a_file_backup_refuses_an_entry_whose_count_goes_back() {
    let mut node = Node::file_backup(limits(), T0);
    assert_eq!(
        node.push_entries(T0, &[input(10, b'a'), input(4, b'b')]),
        Err(NodeError::InstructionCountWentBack {
            newest: InstructionCount(10),
            offered: InstructionCount(4),
        })
    );
    assert_eq!(node.log_end(), LogSequence(1));
}

#[test]
fn a_file_backup_takes_only_what_its_replay_queue_holds() {
    let limits = Limits {
        replay_entries_max: 4,
        ..Limits::default()
    };
    let mut node = Node::file_backup(limits, T0);
    let entries: Vec<LogEntry> = (0..6).map(|i| input(i, b'a')).collect();
    assert_eq!(node.push_entries(T0, &entries), Ok(4));
    node.poll_replay().unwrap();
    assert_eq!(node.push_entries(T0, &entries[4..]), Ok(1));
    assert_eq!(node.log_end(), LogSequence(5));
}

#[test]
fn only_a_file_backup_takes_pushed_entries() {
    for mut node in [primary(), backup(), Node::standalone(limits(), T0)] {
        let role = node.role();
        assert_eq!(
            node.push_entries(T0, &[input(1, b'a')]),
            Err(NodeError::WrongRole { role })
        );
    }
}

#[test]
fn the_arbiter_answers_a_heartbeat_and_a_deposed_primary_halts_on_its_answer() {
    use crate::arbiter::{Arbiter, ArbiterConfig, ArbiterRecord};
    let mut arbiter = Arbiter::new(
        ArbiterConfig {
            me: ARBITER,
            replicas: [A, B],
            keys: [arbiter_key(A), arbiter_key(B)],
            limits: limits(),
            incarnation: Incarnation(1),
        },
        ArbiterRecord::initial(),
    );
    let mut node = primary();
    // A forming pair: the primary reports to the arbiter without claiming.
    node.await_peer();
    assert_eq!(node.arbiter_heard_at(), None);
    // The primary's periodic report to the arbiter draws the durable record back.
    let at = T0 + limits().peer_timeout;
    node.handle_timeout(at);
    let mut to_arbiter = 0;
    while let Some(transmit) = node.poll_transmit(at) {
        if transmit.to == ARBITER {
            arbiter.handle_frame(&transmit.bytes).unwrap();
            to_arbiter += 1;
        }
    }
    assert_eq!(to_arbiter, 1);
    let reply = arbiter.poll_transmit().expect("the arbiter answers");
    assert_eq!(reply.to, A);
    node.handle_frame(at, &reply.bytes).unwrap();
    assert_eq!(node.arbiter_heard_at(), Some(at));
    assert_eq!(node.role(), RoleKind::Primary);
    // The pair formed (a replica that never heard its partner would join the newer epoch).
    let ack = Message::Ack {
        echo: at,
        through: LogSequence(0),
        resend: false,
        backpressure: false,
    };
    node.handle_frame(at, &Forge::new().frame(B, Epoch(1), ack))
        .unwrap();
    // A record of a newer epoch, owned by the peer: this primary was deposed. (Sequence
    // numbers past the real arbiter's, which share the forge's incarnation.)
    let bytes = Forge { sequence: 100 }.arbiter_frame(
        A,
        Epoch(2),
        Message::ClaimReply {
            epoch: Epoch(2),
            owner: B,
        },
    );
    node.handle_frame(at, &bytes).unwrap();
    assert_eq!(node.role(), RoleKind::Halted);
    assert_eq!(
        node.halt_reason(),
        Some(HaltReason::Fenced { epoch: Epoch(2) })
    );
}

#[test]
fn a_replica_that_never_heard_its_partner_joins_the_newer_epoch_instead_of_halting() {
    for mut node in [primary(), backup()] {
        node.await_peer();
        let mut forge = Forge::new();
        let fence = Message::Fence { epoch: Epoch(3) };
        node.handle_frame(T0, &forge.frame(node.config.peer, Epoch(3), fence))
            .unwrap();
        assert_eq!(node.role(), RoleKind::Joining);
        assert_eq!(node.epoch(), Epoch(3));
        assert_eq!(node.halt_reason(), None);
        let events = drain_events(&mut node);
        assert!(events.contains(&Event::PersistEpoch { epoch: Epoch(3) }));
        node.epoch_persisted(Epoch(3));
        node.handle_timeout(T0);
        let sent = drain_transmits(&mut node, T0);
        assert_eq!(sent, vec![(node.config.peer, Message::Join)]);
    }
    // Once the partner was heard, a newer epoch means this replica is stale.
    let mut paired = primary();
    paired.await_peer();
    let mut forge = Forge::new();
    let ack = Message::Ack {
        echo: T0,
        through: LogSequence(0),
        resend: false,
        backpressure: false,
    };
    paired
        .handle_frame(T0, &forge.frame(B, Epoch(1), ack))
        .unwrap();
    let fence = Message::Fence { epoch: Epoch(3) };
    paired
        .handle_frame(T0, &forge.frame(B, Epoch(3), fence))
        .unwrap();
    assert_eq!(paired.role(), RoleKind::Halted);
}

#[test]
fn transfer_messages_reach_the_runtime_and_go_only_the_right_way() {
    let mut live = solo();
    drain_events(&mut live);
    drain_transmits(&mut live, T0);
    let mut forge = Forge::new();
    let ack = Transfer::PieceAck {
        session: SessionId(4),
        through: 7,
        gap: false,
    };
    live.handle_frame(
        T0,
        &forge.frame(B, Epoch(1), Message::Transfer(ack.clone())),
    )
    .unwrap();
    assert_eq!(drain_events(&mut live), vec![Event::Transfer(ack.clone())]);
    assert_eq!(
        live.send_transfer(ack),
        Err(NodeError::WrongRole {
            role: RoleKind::Solo
        })
    );
    let start = Transfer::Start {
        session: SessionId(4),
        ram_pages: 2,
        disk: None,
    };
    live.send_transfer(start.clone()).unwrap();
    let mut joiner = Node::joining(config(B), T0, Epoch(2));
    let sent = live.poll_transmit(T0).unwrap();
    joiner.handle_frame(T0, &sent.bytes).unwrap();
    assert_eq!(drain_events(&mut joiner), vec![Event::Transfer(start)]);
    // A live side of an older epoch than the joiner knows is refused.
    let mut stale = Forge::new();
    let old = Message::Transfer(Transfer::Start {
        session: SessionId(5),
        ram_pages: 2,
        disk: None,
    });
    assert!(joiner
        .handle_frame(T0, &stale.frame(A, Epoch(1), old))
        .is_err());
}

#[test]
fn a_refused_install_leaves_the_joiner_joining_and_a_later_one_can_be_confirmed() {
    let mut live = solo();
    drain_transmits(&mut live, T0);
    let mut joiner = Node::joining(config(B), T0, Epoch(2));
    let handover = live.hand_over(T0, InstructionCount(9)).unwrap();
    assert_eq!(live.role(), RoleKind::Primary);
    live.send_handover(T0, &handover, vec![1]).unwrap();
    let first = live.poll_transmit(T0).unwrap();
    joiner.handle_frame(T0, &first.bytes).unwrap();
    joiner.refuse_install();
    joiner.confirm_install(T0);
    assert_eq!(
        joiner.role(),
        RoleKind::Joining,
        "nothing pending to confirm"
    );
    live.send_handover(T0, &handover, vec![2]).unwrap();
    let second = live.poll_transmit(T0).unwrap();
    joiner.handle_frame(T0, &second.bytes).unwrap();
    joiner.confirm_install(T0);
    assert_eq!(joiner.role(), RoleKind::Backup);
    assert_eq!(joiner.log_end(), handover.position);
}

#[test]
fn a_replica_that_never_heard_its_partner_joins_when_the_arbiter_names_a_newer_epoch() {
    let mut node = primary();
    node.await_peer();
    node.handle_timeout(T0);
    drain_transmits(&mut node, T0);
    let mut forge = Forge::new();
    let record = Message::ClaimReply {
        epoch: Epoch(4),
        owner: B,
    };
    node.handle_frame(T0, &forge.arbiter_frame(A, Epoch(4), record))
        .unwrap();
    assert_eq!(node.role(), RoleKind::Joining);
    assert_eq!(node.epoch(), Epoch(4));
}

#[test]
fn a_primary_waits_for_a_joiner_that_still_transfers_but_not_for_a_silent_one() {
    let limits = limits();
    let mut live = solo();
    drain_transmits(&mut live, T0);
    let handover = live.hand_over(T0, InstructionCount(9)).unwrap();
    // Sent: from here the joiner may be a backup, so losing it takes a claim.
    live.send_handover(T0, &handover, vec![1]).unwrap();
    live.record(T0, input(10, 1)).unwrap();
    let mut forge = Forge::new();
    let mut now = T0;
    // Pieces are acknowledged for three acknowledgement timeouts: the primary stays.
    while now
        < T0 + limits.ack_progress_timeout
            + limits.ack_progress_timeout
            + limits.ack_progress_timeout
    {
        now = now + Duration::from_millis(50);
        let ack = Transfer::PieceAck {
            session: SessionId(1),
            through: 1,
            gap: false,
        };
        live.handle_frame(now, &forge.frame(B, Epoch(1), Message::Transfer(ack)))
            .unwrap();
        live.handle_timeout(now);
        assert_eq!(live.role(), RoleKind::Primary);
    }
    // Then the joiner goes silent: the primary claims.
    live.handle_timeout(now + limits.ack_progress_timeout);
    assert_eq!(live.role(), RoleKind::ClaimingAsPrimary);
}

#[test]
fn a_solo_primary_whose_joiner_dies_before_the_handover_is_sent_is_solo_again_without_a_claim() {
    let limits = limits();
    let mut live = solo();
    drain_transmits(&mut live, T0);
    drain_events(&mut live);
    live.hand_over(T0, InstructionCount(9)).unwrap();
    live.record(T0, input(10, 1)).unwrap();
    let position = live
        .submit_output(T0, InstructionCount(10), DeviceId(1), vec![5])
        .unwrap();
    assert_eq!(live.poll_release(T0), None, "held for the joiner");
    let later = T0 + limits.peer_timeout + limits.ack_progress_timeout;
    live.handle_timeout(later);
    assert_eq!(live.role(), RoleKind::Solo);
    assert_eq!(live.epoch(), Epoch(2), "no new epoch");
    let released = live.poll_release(later).expect("released once solo");
    assert_eq!(
        (released.position, released.acknowledged),
        (position, false)
    );
}

#[test]
fn a_primary_whose_joiner_dies_after_the_handover_was_sent_claims_a_new_epoch() {
    let limits = limits();
    let mut live = solo();
    drain_transmits(&mut live, T0);
    let handover = live.hand_over(T0, InstructionCount(9)).unwrap();
    live.send_handover(T0, &handover, vec![1]).unwrap();
    live.record(T0, input(10, 1)).unwrap();
    live.handle_timeout(T0 + limits.peer_timeout + limits.ack_progress_timeout);
    assert_eq!(live.role(), RoleKind::ClaimingAsPrimary);
}
