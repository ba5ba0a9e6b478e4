//! End-to-end scenarios through the public API with a tiny lossless driver: the sequence
//! diagrams of PROTOCOL.md, step by step.
use understudy_ft::arbiter::{Arbiter, ArbiterConfig, ArbiterRecord};
use understudy_ft::node::ReleasedOutput;
use understudy_ft::*;

const ARBITER: NodeId = NodeId(0);
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn key() -> Key {
    Key([0x42; 32])
}

/// The key `replica` shares with the arbiter only.
fn arbiter_key(replica: NodeId) -> Key {
    Key([0x50 + replica.0; 32])
}

fn config(me: NodeId, incarnation: u64) -> NodeConfig {
    NodeConfig {
        me,
        peer: if me == A { B } else { A },
        arbiter: ARBITER,
        channel_key: key(),
        arbiter_key: arbiter_key(me),
        limits: Limits::default(),
        incarnation: Incarnation(incarnation),
    }
}

/// Three participants on a lossless network with instant delivery; `up[i]` false drops
/// everything to and from participant `i`.
struct Cluster {
    now: Instant,
    nodes: [Option<Node>; 2],
    arbiter: Arbiter,
    storage: ArbiterRecord,
    up: [bool; 3],
    released: Vec<(NodeId, ReleasedOutput)>,
    events: Vec<(NodeId, Event)>,
}

impl Cluster {
    fn new() -> Cluster {
        let now = Instant(0);
        let arbiter = Arbiter::new(
            ArbiterConfig {
                me: ARBITER,
                replicas: [A, B],
                keys: [arbiter_key(A), arbiter_key(B)],
                limits: Limits::default(),
                incarnation: Incarnation(1),
            },
            ArbiterRecord::initial(),
        );
        Cluster {
            now,
            nodes: [
                Some(Node::primary(config(A, 1), now)),
                Some(Node::backup(config(B, 1), now)),
            ],
            arbiter,
            storage: ArbiterRecord::initial(),
            up: [true; 3],
            released: Vec::new(),
            events: Vec::new(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id.0 as usize - 1]
            .as_mut()
            .expect("node is running")
    }

    /// Delivers everything until quiet, persisting arbiter writes at once.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(record) = self.arbiter.poll_storage_write() {
                self.storage = record;
                self.arbiter.storage_written(record);
                moved = true;
            }
            let mut frames = Vec::new();
            while let Some(transmit) = self.arbiter.poll_transmit() {
                frames.push((ARBITER, transmit));
            }
            for index in 0..2 {
                let id = NodeId(index as u8 + 1);
                let now = self.now;
                let Some(node) = self.nodes[index].as_mut() else {
                    continue;
                };
                while let Some(transmit) = node.poll_transmit(now) {
                    frames.push((id, transmit));
                }
                while let Some(event) = node.poll_event() {
                    if let Event::PersistEpoch { epoch } = event {
                        // Stored at once: this driver's storage is memory.
                        node.epoch_persisted(epoch);
                        moved = true;
                    }
                    if event == Event::SnapshotWanted {
                        node.send_snapshot(now, InstructionCount(0), b"state".to_vec())
                            .unwrap();
                        moved = true;
                    }
                    if let Event::InstallSnapshot { .. } = event {
                        node.confirm_install(now);
                        moved = true;
                    }
                    self.events.push((id, event));
                }
                while let Some(output) = node.poll_release(now) {
                    self.released.push((id, output));
                }
                while node.poll_replay().is_some() {
                    moved = true;
                }
                if node.role() == RoleKind::GoingLive {
                    node.finish_go_live(now).unwrap();
                    moved = true;
                }
            }
            for (from, transmit) in frames {
                moved = true;
                if !self.up[from.0 as usize] || !self.up[transmit.to.0 as usize] {
                    continue;
                }
                if transmit.to == ARBITER {
                    let _ = self.arbiter.handle_frame(&transmit.bytes);
                } else if let Some(node) = self.nodes[transmit.to.0 as usize - 1].as_mut() {
                    let _ = node.handle_frame(self.now, &transmit.bytes);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances time in 10 ms steps, running timers and settling after each.
    fn advance(&mut self, millis: u64) {
        for _ in 0..millis / 10 {
            self.now = self.now + Duration::from_millis(10);
            for node in self.nodes.iter_mut().flatten() {
                node.handle_timeout(self.now);
            }
            self.settle();
        }
    }
}

#[test]
fn primary_output_is_released_after_the_backup_acknowledges_it() {
    let mut cluster = Cluster::new();
    let now = cluster.now;
    let primary = cluster.node(A);
    primary
        .record(
            now,
            LogEntry {
                at: InstructionCount(10),
                record: Record::DeviceInput {
                    device: DeviceId(1),
                    bytes: vec![1],
                },
            },
        )
        .unwrap();
    let position = primary
        .submit_output(now, InstructionCount(10), DeviceId(1), b"reply".to_vec())
        .unwrap();
    assert!(primary.poll_release(now).is_none());
    cluster.settle();
    let (releaser, output) = &cluster.released[0];
    assert_eq!(
        (
            *releaser,
            output.position,
            output.acknowledged,
            output.epoch
        ),
        (A, position, true, Epoch(1))
    );
}

#[test]
fn backup_goes_live_after_primary_crash_with_unacked_output_and_the_old_primary_rejoins() {
    let mut cluster = Cluster::new();
    let now = cluster.now;
    // The primary records a request and its reply, and the log reaches the backup, but the
    // acknowledgement is lost because the primary dies at that moment.
    let primary = cluster.node(A);
    primary
        .record(
            now,
            LogEntry {
                at: InstructionCount(10),
                record: Record::DeviceInput {
                    device: DeviceId(1),
                    bytes: vec![7],
                },
            },
        )
        .unwrap();
    primary
        .submit_output(now, InstructionCount(10), DeviceId(1), b"reply".to_vec())
        .unwrap();
    let log = primary.poll_transmit(now).unwrap();
    cluster.node(B).handle_frame(now, &log.bytes).unwrap();
    cluster.up[1] = false;
    // The backup replays the input and produces (and suppresses) the same reply.
    let item = cluster.node(B).poll_replay().unwrap();
    assert!(matches!(item.entry.record, Record::DeviceInput { .. }));
    cluster
        .node(B)
        .submit_output(now, InstructionCount(10), DeviceId(1), b"reply".to_vec())
        .unwrap();
    cluster.settle();
    assert!(
        cluster.released.is_empty(),
        "nothing was acknowledged, nothing may leave"
    );

    cluster.advance(1_500);
    assert_eq!(cluster.node(B).role(), RoleKind::Solo);
    assert_eq!(cluster.node(B).epoch(), Epoch(2));
    assert_eq!(
        cluster.storage,
        ArbiterRecord {
            epoch: Epoch(2),
            owner: B
        }
    );
    let go_live: Vec<&Event> = cluster
        .events
        .iter()
        .filter(|(id, _)| *id == B)
        .map(|(_, event)| event)
        .collect();
    assert!(go_live.contains(&&Event::AnnounceMac));
    assert!(go_live.contains(&&Event::ReissueInFlightIo));
    assert!(go_live.iter().any(|event| matches!(
        event,
        Event::LeaveReplay {
            epoch: Epoch(2),
            ..
        }
    )));
    // The reply the old primary never released is reissued by the new one, in epoch 2.
    let (releaser, reissued) = &cluster.released[0];
    assert_eq!(
        (
            *releaser,
            reissued.reissued,
            reissued.epoch,
            reissued.payload.as_slice()
        ),
        (B, true, Epoch(2), &b"reply"[..])
    );

    // The old primary was cut off all along: it stopped releasing, claimed epoch 2 itself and
    // waited. Back on the network, it learns it lost and halts; nothing it held is released.
    assert_eq!(cluster.node(A).role(), RoleKind::ClaimingAsPrimary);
    cluster.up[1] = true;
    cluster.advance(300);
    assert_eq!(cluster.node(A).role(), RoleKind::Halted);
    assert!(matches!(
        cluster.node(A).halt_reason(),
        Some(
            node::HaltReason::LostArbitration {
                epoch: Epoch(2),
                owner: B
            } | node::HaltReason::Fenced { epoch: Epoch(2) }
        )
    ));
    assert!(cluster.released.iter().all(|(id, _)| *id == B));

    // Restarted, it joins the new primary through a snapshot and the pair is protected again.
    // It last knew epoch 1, older than the live primary's: it accepts the snapshot of epoch 2.
    cluster.nodes[0] = Some(Node::joining(config(A, 2), cluster.now, Epoch(1)));
    cluster.advance(1_000);
    assert_eq!(cluster.node(A).role(), RoleKind::Backup);
    assert_eq!(cluster.node(A).epoch(), Epoch(2));
    assert_eq!(cluster.node(B).role(), RoleKind::Primary);
    let now = cluster.now;
    let primary = cluster.node(B);
    primary
        .record(
            now,
            LogEntry {
                at: InstructionCount(20),
                record: Record::Horizon,
            },
        )
        .unwrap();
    let position = primary
        .submit_output(now, InstructionCount(20), DeviceId(1), b"second".to_vec())
        .unwrap();
    cluster.settle();
    let last = &cluster.released.last().unwrap().1;
    assert_eq!(
        (last.position, last.acknowledged, last.epoch),
        (position, true, Epoch(2))
    );
}

#[test]
fn a_primary_that_missed_a_failover_is_fenced_by_the_first_frame_of_the_newer_epoch() {
    let mut cluster = Cluster::new();
    cluster.settle();
    // The backup alone times out (the primary's frames stop reaching it) and wins epoch 2.
    let later = cluster.now + Duration::from_millis(1_001);
    cluster.now = later;
    cluster.node(B).handle_timeout(later);
    cluster.settle();
    assert_eq!(cluster.node(B).role(), RoleKind::Solo);
    assert_eq!(cluster.node(A).role(), RoleKind::Primary);
    // The old primary still thinks it is primary of epoch 1; its next frame is fenced.
    let now = cluster.now;
    let old = cluster.node(A);
    old.record(
        now,
        LogEntry {
            at: InstructionCount(5),
            record: Record::Horizon,
        },
    )
    .unwrap();
    old.submit_output(now, InstructionCount(5), DeviceId(1), b"stale".to_vec())
        .unwrap();
    cluster.settle();
    assert_eq!(cluster.node(A).role(), RoleKind::Halted);
    assert_eq!(
        cluster.node(A).halt_reason(),
        Some(node::HaltReason::Fenced { epoch: Epoch(2) })
    );
    assert!(cluster
        .released
        .iter()
        .all(|(id, output)| *id == B && output.epoch == Epoch(2)));
}

#[test]
fn a_side_cut_off_from_the_arbiter_waits_and_never_goes_live() {
    let mut cluster = Cluster::new();
    // The primary dies and the arbiter is unreachable: the backup claims forever.
    cluster.up[1] = false;
    cluster.up[0] = false;
    cluster.advance(5_000);
    assert_eq!(cluster.node(B).role(), RoleKind::ClaimingAsBackup);
    assert!(cluster.released.is_empty());
    // The arbiter comes back: the claim is granted and the backup goes live.
    cluster.up[0] = true;
    cluster.advance(500);
    assert_eq!(cluster.node(B).role(), RoleKind::Solo);
}

#[test]
fn when_both_claim_exactly_one_wins_and_the_other_halts() {
    let mut cluster = Cluster::new();
    // Cut the replicas from each other only: both time out and both claim epoch 2.
    let now = cluster.now;
    let later = now + Duration::from_millis(1_001);
    cluster.now = later;
    for node in cluster.nodes.iter_mut().flatten() {
        node.handle_timeout(later);
    }
    cluster.settle();
    let roles = [cluster.node(A).role(), cluster.node(B).role()];
    assert!(roles.contains(&RoleKind::Halted), "{roles:?}");
    assert!(roles.contains(&RoleKind::Solo), "{roles:?}");
    assert_eq!(cluster.storage.epoch, Epoch(2));
}
