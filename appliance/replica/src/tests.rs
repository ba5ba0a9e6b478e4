//! A primary, a backup and an arbiter in one process, on a virtual clock, running the built-in
//! echo guest: the runtime's contract end to end without sockets.
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use understudy_ft::{
    Arbiter, ArbiterConfig, ArbiterRecord, Incarnation, Key, Limits, NodeConfig, NodeId,
};
use understudy_machine::program::echo_guest;
use understudy_machine::MachineConfig;

use super::*;

const PRIMARY: NodeId = NodeId(1);
const BACKUP: NodeId = NodeId(2);
const ARBITER: NodeId = NodeId(3);
const CHANNEL_KEY: Key = Key([7; 32]);
/// Each replica shares its own key with the arbiter.
const ARBITER_KEYS: [Key; 2] = [Key([8; 32]), Key([9; 32])];
const TYPED: &[u8] = b"understudy";
const SLICE_INSTRUCTIONS: u64 = 50_000;
const TICK_MICROS: u64 = 1_000;

fn machine() -> Machine {
    Machine::new(
        &MachineConfig::default(),
        &echo_guest(TYPED.len() as i32),
        None,
    )
    .expect("the echo guest boots")
}

fn node_config(me: NodeId, peer: NodeId) -> NodeConfig {
    NodeConfig {
        me,
        peer,
        arbiter: ARBITER,
        channel_key: CHANNEL_KEY,
        arbiter_key: ARBITER_KEYS[usize::from(me == BACKUP)].clone(),
        limits: Limits::default(),
        incarnation: Incarnation(1),
    }
}

fn replica(role: RoleKind, disk: [u8; 32]) -> Replica {
    replica_of(machine(), role, disk)
}

fn replica_of(machine: Machine, role: RoleKind, disk: [u8; 32]) -> Replica {
    let now = Instant(0);
    let node = match role {
        RoleKind::Primary => Node::primary(node_config(PRIMARY, BACKUP), now),
        _ => Node::backup(node_config(BACKUP, PRIMARY), now),
    };
    Replica::new(
        machine,
        node,
        GuestIdentity { disk_sha256: disk },
        7_919,
        now,
    )
}

/// The trio on a virtual clock. `None` is a dead machine.
struct Trio {
    now: Instant,
    primary: Option<Replica>,
    backup: Option<Replica>,
    arbiter: Arbiter,
    /// What each replica let out of the machine, in order.
    released: [Vec<u8>; 2],
    /// Console bytes still to type into whichever replica is live, with the count to wait for.
    to_type: Vec<u8>,
    /// Every this many frames between the replicas, one is lost.
    lose_every: Option<u64>,
    frames_between: u64,
    /// The largest frame between the replicas so far.
    largest_between: usize,
}

impl Trio {
    fn new(backup_disk: [u8; 32]) -> Trio {
        Trio {
            now: Instant(0),
            primary: Some(replica(RoleKind::Primary, [0; 32])),
            backup: Some(replica(RoleKind::Backup, backup_disk)),
            arbiter: Arbiter::new(
                ArbiterConfig {
                    me: ARBITER,
                    replicas: [PRIMARY, BACKUP],
                    keys: ARBITER_KEYS,
                    limits: Limits::default(),
                    incarnation: Incarnation(1),
                },
                ArbiterRecord::initial(),
            ),
            released: [Vec::new(), Vec::new()],
            to_type: TYPED.to_vec(),
            lose_every: None,
            frames_between: 0,
            largest_between: 0,
        }
    }

    /// One tick: deliver frames, run timers, type a byte into the live side, run a slice.
    fn tick(&mut self) {
        self.now = Instant(self.now.0 + TICK_MICROS);
        let now = self.now;
        let (lose_every, sent, largest) = (
            self.lose_every,
            &mut self.frames_between,
            &mut self.largest_between,
        );
        crate::test_network::deliver_round_losing(
            now,
            ARBITER,
            [
                (PRIMARY, self.primary.as_mut()),
                (BACKUP, self.backup.as_mut()),
            ],
            &mut self.arbiter,
            &mut |transmit| {
                *largest = (*largest).max(transmit.bytes.len());
                *sent += 1;
                lose_every.is_some_and(|every| *sent % every == 0)
            },
        );
        for (slot, id) in [PRIMARY, BACKUP].into_iter().enumerate() {
            let to_type = &mut self.to_type;
            let Some(replica) = (if id == PRIMARY {
                self.primary.as_mut()
            } else {
                self.backup.as_mut()
            }) else {
                continue;
            };
            while let Some(event) = replica.poll_event(now) {
                if let Event::PersistEpoch { epoch } = event {
                    replica.epoch_persisted(epoch);
                }
            }
            // One byte every few ticks, offered wherever the guest runs live.
            if replica.is_live() && replica.is_paired() && now.0 % (7 * TICK_MICROS) == 0 {
                if let Some(&byte) = to_type.first() {
                    if replica.offer_input(now, &Input::ConsoleByte(byte)).is_ok() {
                        to_type.remove(0);
                    }
                }
            }
            if let Step::Idle { .. } = replica.run(now, SLICE_INSTRUCTIONS) {
                let _ = replica.offer_input(now, &Input::AdvanceTime { ticks: 1_000 });
            }
            while let Some(output) = replica.poll_release(now) {
                self.released[slot].extend_from_slice(&output.payload);
            }
        }
    }

    fn run_until(&mut self, mut done: impl FnMut(&mut Trio) -> bool, ticks_max: u64) {
        for _ in 0..ticks_max {
            if done(self) {
                return;
            }
            self.tick();
        }
        let describe = |r: &Option<Replica>| r.as_ref().map(|r| (r.status(), r.stopped));
        panic!(
            "not done after {ticks_max} ticks: primary {:?}, backup {:?}, left to type {}",
            describe(&self.primary),
            describe(&self.backup),
            self.to_type.len()
        );
    }
}

fn stopped(replica: &Option<Replica>) -> bool {
    replica.as_ref().is_some_and(|r| r.stopped.is_some())
}

#[test]
fn backup_follows_the_primary_to_the_same_final_state() {
    let mut trio = Trio::new([0; 32]);
    trio.run_until(|t| stopped(&t.primary) && stopped(&t.backup), 20_000);
    // The guest's echo left the primary, all of it, and nothing left the backup.
    trio.run_until(|t| t.released[0].len() == TYPED.len(), 1_000);
    assert_eq!(trio.released[0], TYPED);
    assert_eq!(trio.released[1], b"");
    let primary = trio.primary.as_mut().expect("alive");
    let backup = trio.backup.as_mut().expect("alive");
    assert_eq!(primary.stopped, Some(Exit::PowerOff { code: 0 }));
    assert_eq!(backup.stopped, Some(Exit::PowerOff { code: 0 }));
    assert_eq!(primary.machine.instret(), backup.machine.instret());
    assert_eq!(primary.machine.digest(), backup.machine.digest());
    // Two identity digests and one every 7,919 instructions of the run.
    let expected_digests = 2 + primary.machine.instret().0 / 7_919;
    assert_eq!(backup.digests_matched, expected_digests);
}

#[test]
fn outputs_leave_only_after_the_backup_acknowledged_them() {
    let mut trio = Trio::new([0; 32]);
    // Run until the first byte was echoed, with the link to the backup cut: the primary keeps
    // executing, but its output stays in.
    trio.run_until(|t| t.primary.as_ref().unwrap().is_paired(), 1_000);
    let backup = trio.backup.take();
    trio.run_until(
        |t| t.primary.as_ref().unwrap().status().outputs_held >= 1,
        1_000,
    );
    for _ in 0..50 {
        trio.tick();
    }
    assert_eq!(trio.released[0], b"");
    let held = trio.primary.as_ref().unwrap().status().outputs_held;
    assert!(held >= 1, "{held}");
    // The backup comes back before the primary gave up on it: the output goes out.
    trio.backup = backup;
    trio.run_until(|t| !t.released[0].is_empty(), 1_000);
    assert_eq!(trio.released[0][0], TYPED[0]);
}

#[test]
fn backup_goes_live_when_the_primary_dies_and_no_released_output_is_lost() {
    let mut trio = Trio::new([0; 32]);
    trio.run_until(|t| t.to_type.len() <= TYPED.len() / 2, 20_000);
    // Let what was typed be echoed and released (so the backup holds it), then kill the
    // primary. An input the primary took but the backup never received dies with the primary,
    // as a TCP segment would: its sender sends it again; this test types it only once.
    let typed = TYPED.len() - trio.to_type.len();
    let pending = core::mem::take(&mut trio.to_type);
    trio.run_until(|t| t.released[0].len() == typed, 1_000);
    trio.primary = None;
    trio.to_type = pending;
    trio.run_until(|t| stopped(&t.backup), 20_000);
    let backup = trio.backup.as_ref().unwrap();
    assert_eq!(backup.node.role(), RoleKind::Solo);
    assert_eq!(backup.node.epoch(), Epoch(2));
    assert_eq!(backup.stopped, Some(Exit::PowerOff { code: 0 }));
    trio.run_until(
        |t| t.released[0].len() + t.released[1].len() >= TYPED.len(),
        1_000,
    );
    // The new primary's stream continues where the old one stopped: no gap, and a repeat
    // only of what the backup could not know was released.
    let tail = &trio.released[1];
    let overlap = trio.released[0].len() + tail.len() - TYPED.len();
    assert_eq!(trio.released[0], TYPED[..typed]);
    assert_eq!(tail[overlap..], TYPED[typed..]);
    assert_eq!(tail[..overlap], TYPED[typed - overlap..typed]);
}

#[test]
fn backup_with_another_disk_refuses_the_pair_before_acknowledging() {
    let mut trio = Trio::new([1; 32]);
    for _ in 0..200 {
        trio.tick();
    }
    let backup = trio.backup.as_ref().unwrap();
    assert_eq!(backup.mismatch(), Some(&Mismatch::Disks));
    assert_eq!(backup.node.role(), RoleKind::Halted);
    assert_eq!(backup.machine.instret().0, 0);
    let primary = trio.primary.as_ref().unwrap();
    assert!(!primary.is_paired());
    assert_eq!(primary.machine.instret().0, 0);
    assert_eq!(trio.released[0], b"");
}

// ----- Recordings: the standalone runtime's entries, replayed by a file-fed backup -----

const KEYSTROKE_GAP_INSTRUCTIONS: u64 = 61_417;

/// The echo guest's inputs at chosen counts: each typed byte, and a time advance after each
/// but the last (after the last byte the guest powers off).
fn script() -> VecDeque<(u64, Input)> {
    let mut script: VecDeque<(u64, Input)> = TYPED
        .iter()
        .enumerate()
        .flat_map(|(i, &byte)| {
            let at = KEYSTROKE_GAP_INSTRUCTIONS * (i as u64 + 1);
            [
                (at, Input::ConsoleByte(byte)),
                (
                    at + 5_000,
                    Input::AdvanceTime {
                        ticks: 1_000 + i as u64,
                    },
                ),
            ]
        })
        .collect();
    script.pop_back();
    script
}

/// One turn of a scripted live driver: the inputs due at this count, then a slice that
/// ends at the next one. Returns `None` when an input must wait (flow control).
fn drive(replica: &mut Replica, now: Instant, script: &mut VecDeque<(u64, Input)>) -> Option<Step> {
    let at = replica.machine.instret().0;
    while let Some((when, input)) = script.front() {
        if *when != at {
            break;
        }
        match replica.offer_input(now, input) {
            Ok(()) => {
                script.pop_front();
            }
            Err(Refused::Log(_)) => return None,
            Err(refused) => panic!("the scripted input at {at} was refused: {refused:?}"),
        }
    }
    let slice = script.front().map_or(SLICE_INSTRUCTIONS, |(when, _)| {
        (when - at).min(SLICE_INSTRUCTIONS)
    });
    Some(replica.run(now, slice))
}

/// What a standalone run recorded and let out.
struct Recording {
    entries: Vec<LogEntry>,
    console: Vec<u8>,
    exit: Exit,
    instructions: u64,
    digest: [u8; 32],
}

fn record_standalone() -> Recording {
    let now = Instant(0);
    let mut replica = Replica::standalone(
        machine(),
        GuestIdentity {
            disk_sha256: [0; 32],
        },
        Limits::default(),
        7_919,
        now,
    );
    let mut script = script();
    let mut entries = Vec::new();
    let mut console = Vec::new();
    let exit = loop {
        let step = drive(&mut replica, now, &mut script).expect("a standalone is never throttled");
        while let Some(entry) = replica.poll_recorded() {
            entries.push(entry);
        }
        while let Some(output) = replica.poll_release(now) {
            assert!(!output.acknowledged);
            console.extend_from_slice(&output.payload);
        }
        match step {
            Step::Ran(_) => {}
            Step::GuestStopped(exit) => break exit,
            other => panic!("a standalone echo guest does not {other:?}"),
        }
    };
    assert!(script.is_empty());
    Recording {
        entries,
        console,
        exit,
        instructions: replica.machine.instret().0,
        digest: replica.machine.digest(),
    }
}

#[test]
fn a_standalone_recording_replays_through_a_file_backup_to_the_same_digests_and_end() {
    let recording = record_standalone();
    assert_eq!(recording.console, TYPED);
    assert_eq!(recording.exit, Exit::PowerOff { code: 0 });
    let digests = recording
        .entries
        .iter()
        .filter(|entry| matches!(entry.record, Record::Digest { .. }))
        .count() as u64;
    // Two identity digests and one every 7,919 instructions.
    assert_eq!(digests, 2 + recording.instructions / 7_919);

    let now = Instant(0);
    let mut backup = Replica::new(
        machine(),
        Node::file_backup(Limits::default(), now),
        GuestIdentity {
            disk_sha256: [0; 32],
        },
        0,
        now,
    );
    let mut entries = recording.entries.clone();
    // The end of the recording: nothing comes after it.
    entries.push(LogEntry {
        at: InstructionCount(recording.instructions),
        record: Record::Horizon,
    });
    let mut console = Vec::new();
    let mut offered = 0;
    let exit = loop {
        offered += backup.push_entries(now, &entries[offered..]).unwrap();
        // Slices of another length than the recording's: replay does not depend on them.
        let step = backup.run(now, 997);
        while let Some(output) = backup.poll_release(now) {
            console.extend_from_slice(&output.payload);
        }
        match step {
            Step::Ran(_) => {}
            Step::GuestStopped(exit) => break exit,
            other => panic!(
                "the replay stopped early: {other:?} {:?}",
                backup.mismatch()
            ),
        }
    };
    assert_eq!(offered, entries.len());
    assert_eq!(backup.node.next_replay_at(), None, "every entry replayed");
    assert_eq!(exit, recording.exit);
    assert_eq!(backup.machine.instret().0, recording.instructions);
    assert_eq!(backup.machine.digest(), recording.digest);
    assert_eq!(backup.digests_matched, digests);
    assert_eq!(console, recording.console);
}

#[test]
fn a_standalone_recording_holds_the_entries_a_pair_backup_receives_for_the_same_run() {
    let recording = record_standalone();

    let mut primary = replica(RoleKind::Primary, [0; 32]);
    let mut backup = replica(RoleKind::Backup, [0; 32]);
    let mut script = script();
    let mut received: alloc::collections::BTreeMap<LogSequence, LogEntry> = Default::default();
    let mut now = Instant(0);
    for _ in 0..100_000 {
        if primary.stopped.is_some() && backup.stopped.is_some() {
            break;
        }
        now = Instant(now.0 + TICK_MICROS);
        primary.handle_timeout(now);
        backup.handle_timeout(now);
        while let Some(transmit) = primary.poll_transmit(now) {
            if transmit.to != BACKUP {
                continue;
            }
            let frame =
                understudy_ft::Frame::decode(&transmit.bytes, &CHANNEL_KEY, &Limits::default())
                    .expect("the primary's frames decode");
            if let understudy_ft::Message::Log { first, entries, .. } = frame.message {
                for (offset, entry) in entries.into_iter().enumerate() {
                    received.insert(LogSequence(first.0 + offset as u64), entry);
                }
            }
            let _ = backup.handle_frame(now, &transmit.bytes);
        }
        while let Some(transmit) = backup.poll_transmit(now) {
            if transmit.to == PRIMARY {
                let _ = primary.handle_frame(now, &transmit.bytes);
            }
        }
        if primary.stopped.is_none() {
            drive(&mut primary, now, &mut script);
        }
        backup.run(now, SLICE_INSTRUCTIONS);
        while primary.poll_release(now).is_some() {}
    }
    assert_eq!(backup.stopped, Some(recording.exit));
    assert_eq!(backup.machine.digest(), recording.digest);
    let positions: Vec<u64> = received.keys().map(|position| position.0).collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    // Horizons are the pair's flow control; a standalone needs none. Everything else is the
    // same stream.
    let stream: Vec<LogEntry> = received
        .into_values()
        .filter(|entry| entry.record != Record::Horizon)
        .collect();
    assert_eq!(stream, recording.entries);
}

/// What a replay under a debugger saw at each hit: the count, the pc and the hit.
type Hits = Vec<(u64, u64, DebugStop)>;

/// Replays `recording` through a file backup whose machine runs under `targets`, taking one
/// single step (stopping at a trap entry) after every hit, as a debugger's user would;
/// returns the hits and checks the replay ends as the recording did.
fn replay_under_debugger(recording: &Recording, targets: &DebugTargets) -> Hits {
    let now = Instant(0);
    let mut backup = Replica::new(
        machine(),
        Node::file_backup(Limits::default(), now),
        GuestIdentity {
            disk_sha256: [0; 32],
        },
        0,
        now,
    );
    let mut entries = recording.entries.clone();
    entries.push(LogEntry {
        at: InstructionCount(recording.instructions),
        record: Record::Horizon,
    });
    let step_only = DebugTargets {
        stop_at_trap_entry: true,
        ..DebugTargets::default()
    };
    let mut offered = 0;
    let mut hits = Vec::new();
    let exit = loop {
        offered += backup.push_entries(now, &entries[offered..]).unwrap();
        let (step, hit) = backup.run_debug(now, 997, targets);
        while backup.poll_release(now).is_some() {}
        if let Some(hit) = hit {
            let at = backup.machine.instret().0;
            hits.push((at, backup.machine.hart().pc(), hit));
            // Past the hit by one instruction (the one it stopped before); the echo guest
            // never traps.
            let (step, hit) = backup.run_debug(now, 1, &step_only);
            assert_eq!((step, hit), (Step::Ran(1), None));
            assert_eq!(backup.machine.instret().0, at + 1);
            continue;
        }
        match step {
            Step::Ran(_) => {}
            Step::GuestStopped(exit) => break exit,
            other => panic!(
                "the replay stopped early: {other:?} {:?}",
                backup.mismatch()
            ),
        }
    };
    assert_eq!(exit, recording.exit);
    assert_eq!(backup.machine.instret().0, recording.instructions);
    assert_eq!(backup.machine.digest(), recording.digest);
    hits
}

/// The echo guest's log buffer (its S3 once set up, one page past the code).
fn echo_log_buffer() -> u64 {
    let mut machine = machine();
    while machine.hart().x(19) == 0 {
        machine.run(1);
    }
    machine.hart().x(19)
}

#[test]
fn a_replay_stopped_at_every_watchpoint_and_breakpoint_hit_ends_in_the_recorded_state() {
    let recording = record_standalone();
    let log = echo_log_buffer();
    let watch = DebugTargets {
        watchpoints: alloc::vec![understudy_machine::Watchpoint {
            vaddr: log,
            len_bytes: 8 * TYPED.len() as u64,
            kind: understudy_machine::WatchKind::Write,
        }],
        ..DebugTargets::default()
    };
    let watch_hits = replay_under_debugger(&recording, &watch);
    assert_eq!(
        watch_hits.len(),
        TYPED.len(),
        "one store of the hash per byte"
    );
    for (i, (_, _, hit)) in watch_hits.iter().enumerate() {
        assert_eq!(
            *hit,
            DebugStop::Watchpoint {
                watchpoint: watch.watchpoints[0],
                vaddr: log + 8 * i as u64
            }
        );
    }
    // Each watchpoint hit stopped before the `sd` of the hash: a breakpoint on that store
    // stops at the same counts.
    let store = watch_hits[0].1;
    let mut breakpoint = DebugTargets::default();
    breakpoint.breakpoints.insert(store);
    let breakpoint_hits = replay_under_debugger(&recording, &breakpoint);
    let expected: Hits = watch_hits
        .iter()
        .map(|(at, _, _)| (*at, store, DebugStop::Breakpoint { pc: store }))
        .collect();
    assert_eq!(breakpoint_hits, expected);
}

// ----- Re-protection: a replica joins the survivor of a failover -----

/// A disk of `sectors` 512-byte sectors filled from `seed` (0: zeroes).
fn disk_of(bytes: usize, seed: u8) -> understudy_machine::devices::virtio::block::VecBackend {
    let contents = (0..bytes)
        .map(|i| {
            if seed == 0 {
                0
            } else {
                (i as u8).wrapping_mul(seed) ^ (i >> 12) as u8
            }
        })
        .collect();
    understudy_machine::devices::virtio::block::VecBackend::new(contents)
}

fn disk_bytes(replica: &mut Replica) -> Vec<u8> {
    let disk = replica.machine.block_backend_mut().expect("a disk");
    let mut bytes = alloc::vec![0u8; disk.len_bytes() as usize];
    disk.read_at(0, &mut bytes).expect("readable");
    bytes
}

/// Kills the primary once half the text is typed, lets the backup go live, then starts a
/// replica joining it over the same wire and disk.
fn rejoin_after_failover(joiner_disk_seed: u8) -> Trio {
    let mut trio = Trio::new([0; 32]);
    for (slot, role) in [RoleKind::Primary, RoleKind::Backup]
        .into_iter()
        .enumerate()
    {
        let mut machine = machine();
        machine.attach_disk(Box::new(disk_of(300_000, 3)), b"disk");
        let replica = Some(replica_of(machine, role, [0; 32]));
        if slot == 0 {
            trio.primary = replica;
        } else {
            trio.backup = replica;
        }
    }
    trio.run_until(|t| t.to_type.len() <= TYPED.len() / 2, 20_000);
    let typed = TYPED.len() - trio.to_type.len();
    let pending = core::mem::take(&mut trio.to_type);
    trio.run_until(|t| t.released[0].len() == typed, 1_000);
    trio.primary = None;
    trio.run_until(
        |t| t.backup.as_ref().unwrap().node.role() == RoleKind::Solo,
        5_000,
    );
    // The survivor's guest writes its disk while alone: the joiner must get that too.
    let survivor = trio.backup.as_mut().unwrap();
    survivor
        .machine
        .block_backend_mut()
        .unwrap()
        .write_at(70_000, b"written while alone")
        .unwrap();
    let mut config = node_config(PRIMARY, BACKUP);
    config.incarnation = Incarnation(2);
    let node = Node::joining(config, trio.now, Epoch(1));
    let mut machine = machine();
    machine.attach_disk(Box::new(disk_of(300_000, joiner_disk_seed)), b"disk");
    trio.primary = Some(Replica::joining(
        machine,
        node,
        GuestIdentity {
            disk_sha256: [0; 32],
        },
        7_919,
        trio.now,
    ));
    trio.run_until(|t| t.backup.as_ref().unwrap().status().protected, 20_000);
    trio.to_type = pending;
    trio
}

#[test]
fn a_joiner_becomes_the_survivors_backup_with_equal_state_disk_and_output() {
    for seed in [0, 5] {
        let mut trio = rejoin_after_failover(seed);
        let joined = trio.primary.as_ref().unwrap();
        assert_eq!(joined.node.role(), RoleKind::Backup);
        assert_eq!(joined.node.epoch(), Epoch(2));
        let live = trio.backup.as_ref().unwrap();
        assert_eq!(live.node.role(), RoleKind::Primary);
        let join = live.status().join;
        assert_eq!(join.completed, 1);
        assert!(join.pieces > 0 && join.rounds >= 1, "{join:?}");
        // The rest of the text is typed into the protected pair; both end at the same count
        // with the same state.
        trio.run_until(|t| stopped(&t.backup) && stopped(&t.primary), 40_000);
        let (mut a, mut b) = (trio.primary.take().unwrap(), trio.backup.take().unwrap());
        assert_eq!(a.machine.instret(), b.machine.instret());
        assert_eq!(a.state_digest(), b.state_digest());
        assert!(disk_bytes(&mut a) == disk_bytes(&mut b), "the disks differ");
        assert!(
            a.status().digests_matched > 0,
            "the log's digests were checked"
        );
    }
}

/// The survivor of a failover, alone, with a joiner started beside it (not yet run).
fn survivor_and_joiner(incarnation: u64) -> Trio {
    let mut trio = Trio::new([0; 32]);
    trio.run_until(|t| t.to_type.len() <= TYPED.len() / 2, 20_000);
    trio.primary = None;
    trio.run_until(
        |t| t.backup.as_ref().unwrap().node.role() == RoleKind::Solo,
        5_000,
    );
    trio.primary = Some(joiner(trio.now, incarnation));
    // What the dead primary let out is not the joiner's.
    trio.released[0].clear();
    trio
}

fn joiner(now: Instant, incarnation: u64) -> Replica {
    let mut config = node_config(PRIMARY, BACKUP);
    config.incarnation = Incarnation(incarnation);
    let node = Node::joining(config, now, Epoch(1));
    Replica::joining(
        machine(),
        node,
        GuestIdentity {
            disk_sha256: [0; 32],
        },
        7_919,
        now,
    )
}

fn join_phase(replica: &Option<Replica>) -> JoinPhase {
    replica
        .as_ref()
        .map_or(JoinPhase::Idle, |r| r.status().join.phase)
}

#[test]
fn a_joiner_whose_primary_dies_during_the_transfer_never_becomes_a_backup() {
    let mut trio = survivor_and_joiner(2);
    trio.run_until(|t| join_phase(&t.backup) == JoinPhase::PreCopy, 5_000);
    trio.backup = None;
    for _ in 0..5_000 {
        trio.tick();
        let joiner = trio.primary.as_ref().unwrap();
        assert_eq!(
            joiner.node.role(),
            RoleKind::Joining,
            "{:?}",
            joiner.status()
        );
    }
    let joiner = trio.primary.as_ref().unwrap();
    assert_eq!(
        joiner.machine.instret().0,
        0,
        "a joiner never runs the guest"
    );
    assert_eq!(trio.released[0], b"", "nor lets anything out");
}

#[test]
fn a_joiner_killed_during_the_transfer_is_forgotten_and_the_next_one_joins() {
    let mut trio = survivor_and_joiner(2);
    trio.run_until(|t| join_phase(&t.backup) == JoinPhase::PreCopy, 5_000);
    let started = trio.backup.as_ref().unwrap().status().join.session;
    trio.primary = None;
    // The survivor gives up on the silent joiner and serves on alone.
    trio.run_until(|t| join_phase(&t.backup) == JoinPhase::Idle, 5_000);
    let survivor = trio.backup.as_ref().unwrap();
    assert_eq!(survivor.node.role(), RoleKind::Solo);
    assert_eq!(survivor.status().join.completed, 0);
    // Started again, it joins in a session of its own.
    trio.primary = Some(joiner(trio.now, 3));
    trio.run_until(|t| t.backup.as_ref().unwrap().status().protected, 20_000);
    let survivor = trio.backup.as_ref().unwrap();
    assert_ne!(survivor.status().join.session, started);
    assert_eq!(survivor.status().join.completed, 1);
    assert_eq!(trio.primary.as_ref().unwrap().node.role(), RoleKind::Backup);
    // The new backup follows: the primary's periodic digests match its own.
    trio.run_until(
        |t| t.primary.as_ref().unwrap().status().digests_matched >= 3,
        20_000,
    );
    assert_eq!(trio.primary.as_ref().unwrap().node.role(), RoleKind::Backup);
}

#[test]
fn a_joiner_joins_in_datagrams_of_one_ethernet_frame_over_a_link_that_loses_one_in_seven() {
    let mut trio = survivor_and_joiner(2);
    let limits = TransferLimits::for_mtu(1500);
    trio.backup.as_mut().unwrap().set_transfer_limits(limits);
    trio.primary.as_mut().unwrap().set_transfer_limits(limits);
    trio.lose_every = Some(7);
    trio.largest_between = 0;
    trio.run_until(|t| t.backup.as_ref().unwrap().status().protected, 60_000);
    let survivor = trio.backup.as_ref().unwrap();
    assert!(survivor.status().protected, "{:?}", survivor.status());
    assert_eq!(trio.primary.as_ref().unwrap().node.role(), RoleKind::Backup);
    // What the two sent each other fit one frame: no IP fragmentation needed.
    let largest = trio.largest_between;
    assert!(largest <= 1500 - 28, "a {largest}-byte datagram");
    trio.run_until(
        |t| t.primary.as_ref().unwrap().status().digests_matched >= 3,
        20_000,
    );
}
