//! A primary and a backup on one shared in-memory image, with an arbiter, on a virtual clock:
//! a bare-metal guest reads and writes the disk through virtio-blk, and the test plays the
//! drivers, writing released disk outputs to the image.
extern crate std;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::sync::Mutex;

use understudy_cpu::Op;
use understudy_ft::{
    Arbiter, ArbiterConfig, ArbiterRecord, Incarnation, Key, Limits, NodeConfig, NodeId,
};
use understudy_machine::devices::virtio::block::{BackendError, BlockBackend};
use understudy_machine::loader::elf_executable;
use understudy_machine::program::{reg::*, Assembler};
use understudy_machine::{MachineConfig, RAM_BASE};

use super::*;

const PRIMARY: NodeId = NodeId(1);
const BACKUP: NodeId = NodeId(2);
const ARBITER: NodeId = NodeId(3);
const CHANNEL_KEY: Key = Key([7; 32]);
const ARBITER_KEYS: [Key; 2] = [Key([8; 32]), Key([9; 32])];
const SLICE_INSTRUCTIONS: u64 = 50_000;
const TICK_MICROS: u64 = 1_000;
const DIGEST_EVERY: u64 = 7_919;

const SLOT0: i32 = 0x1000_1000;
const DESC: u64 = RAM_BASE + 0x10000;
const AVAIL: u64 = RAM_BASE + 0x10100;
const USED: u64 = RAM_BASE + 0x10200;
const HEADER: u64 = RAM_BASE + 0x11000;
const DATA: u64 = RAM_BASE + 0x12000;
const STATUS: u64 = RAM_BASE + 0x13000;
const QUEUE_SIZE: i32 = 8;
const SECTORS: usize = 64;
/// Rounds of read-modify-write; each reads sector 1 + r % 4 and writes sector 2 + r % 4, so
/// it reads back its own earlier writes and overwrites sectors.
const ROUNDS: i32 = 12;
/// Instructions of busy loop between rounds (two per iteration), so the writes spread over
/// many slices and a failover can fall between them.
const DELAY_ITERATIONS: i32 = 20_000;

fn li_address(a: &mut Assembler, rd: u8, address: u64) {
    a.li(rd, address as u32 as i32);
    a.i(Op::Slli, rd, rd, 32);
    a.i(Op::Srli, rd, rd, 32);
}

fn store_word(a: &mut Assembler, base: u8, offset: i32, value: i32) {
    a.li(T0, value);
    a.store(Op::Sw, T0, base, offset);
}

/// The guest: initialises virtio-blk (virtio 1.2 3.1.1 over 4.2.3), then `ROUNDS` times reads
/// a sector, adds the round number to its first eight bytes, writes it to the next sector,
/// and spins a while; then powers off.
fn disk_guest() -> Vec<u8> {
    let mut a = Assembler::new();
    a.li(S0, SLOT0);
    store_word(&mut a, S0, 0x70, 0);
    store_word(&mut a, S0, 0x70, 1);
    store_word(&mut a, S0, 0x70, 3);
    store_word(&mut a, S0, 0x24, 1);
    store_word(&mut a, S0, 0x20, 1); // VIRTIO_F_VERSION_1
    store_word(&mut a, S0, 0x24, 0);
    store_word(&mut a, S0, 0x20, 0);
    store_word(&mut a, S0, 0x70, 0xb);
    store_word(&mut a, S0, 0x30, 0);
    store_word(&mut a, S0, 0x38, QUEUE_SIZE);
    for (low, address) in [(0x80, DESC), (0x90, AVAIL), (0xa0, USED)] {
        store_word(&mut a, S0, low, address as u32 as i32);
        store_word(&mut a, S0, low + 4, 0);
    }
    store_word(&mut a, S0, 0x44, 1);
    store_word(&mut a, S0, 0x70, 0xf);
    li_address(&mut a, S1, DESC);
    li_address(&mut a, S2, AVAIL);
    li_address(&mut a, S3, USED);
    li_address(&mut a, S4, HEADER);
    let mut requests = 0i32;
    for round in 0..ROUNDS {
        let read_sector = 1 + round % 4;
        for (request_type, sector, data_flags) in [(0, read_sector, 3), (1, read_sector + 1, 1)] {
            if request_type == 1 {
                li_address(&mut a, T1, DATA);
                a.i(Op::Ld, T0, T1, 0);
                a.i(Op::Addi, T0, T0, round + 1);
                a.store(Op::Sd, T0, T1, 0);
            }
            a.li(T0, request_type);
            a.store(Op::Sw, T0, S4, 0);
            a.store(Op::Sw, ZERO, S4, 4);
            a.li(T0, sector);
            a.store(Op::Sd, T0, S4, 8);
            for (index, (address, len, flags)) in
                [(HEADER, 16, 1), (DATA, 512, data_flags), (STATUS, 1, 2)]
                    .into_iter()
                    .enumerate()
            {
                let at = 16 * index as i32;
                li_address(&mut a, T1, address);
                a.store(Op::Sd, T1, S1, at);
                a.li(T0, len);
                a.store(Op::Sw, T0, S1, at + 8);
                a.li(T0, flags);
                a.store(Op::Sh, T0, S1, at + 12);
                a.li(T0, index as i32 + 1);
                a.store(Op::Sh, T0, S1, at + 14);
            }
            a.store(Op::Sh, ZERO, S2, 4 + 2 * (requests % QUEUE_SIZE));
            requests += 1;
            a.li(T0, requests);
            a.store(Op::Sh, T0, S2, 2);
            store_word(&mut a, S0, 0x50, 0); // QueueNotify
            let poll = a.here();
            a.i(Op::Lhu, T1, S3, 2);
            a.li(T0, requests);
            a.branch(Op::Bne, T1, T0, poll);
        }
        a.li(T2, DELAY_ITERATIONS);
        let spin = a.here();
        a.i(Op::Addi, T2, T2, -1);
        a.branch(Op::Bne, T2, ZERO, spin);
    }
    a.li(T0, 0x10_0000); // finisher: pass
    a.li(T1, 0x5555);
    a.store(Op::Sw, T1, T0, 0);
    let forever = a.here();
    a.jump(forever);
    elf_executable(RAM_BASE, &a.finish())
}

fn initial_image() -> Vec<u8> {
    (0..SECTORS * 512).map(|i| (i / 512) as u8).collect()
}

/// One write to the image: byte offset and data.
type ImageWrite = (u64, Vec<u8>);

/// The image both machines open, and every write made to it, in order.
#[derive(Clone)]
struct Image {
    bytes: Arc<Mutex<Vec<u8>>>,
    writes: Arc<Mutex<Vec<ImageWrite>>>,
}

impl Image {
    fn new() -> Image {
        Image {
            bytes: Arc::new(Mutex::new(initial_image())),
            writes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        self.bytes.lock().unwrap()[start..start + data.len()].copy_from_slice(data);
        self.writes.lock().unwrap().push((offset, data.to_vec()));
    }

    fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    fn writes(&self) -> Vec<ImageWrite> {
        self.writes.lock().unwrap().clone()
    }
}

/// A backend straight on the image: the shared disk's view of it (reads only), or an
/// unreplicated machine's disk.
struct Direct(Image);

impl BlockBackend for Direct {
    fn len_bytes(&self) -> u64 {
        self.0.bytes.lock().unwrap().len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0.bytes.lock().unwrap()[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.0.write(offset, data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A shared disk's image handle that refuses writes: only the driver writes the image.
struct ReadOnly(Image);

impl BlockBackend for ReadOnly {
    fn len_bytes(&self) -> u64 {
        self.0.bytes.lock().unwrap().len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        Direct(self.0.clone()).read_at(offset, buf)
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<(), BackendError> {
        panic!("the shared disk wrote the image itself")
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

fn machine() -> Machine {
    let config = MachineConfig {
        memory_bytes: 8 << 20,
        ..MachineConfig::default()
    };
    Machine::new(&config, &disk_guest(), None).expect("the disk guest boots")
}

/// What an unreplicated machine writes, in order, and its final image, digest and count.
fn unreplicated() -> (Vec<ImageWrite>, Vec<u8>, [u8; 32], u64) {
    let image = Image::new();
    let mut machine = machine();
    machine.attach_disk(Box::new(Direct(image.clone())), b"shared");
    loop {
        match machine.run(1 << 20).1 {
            Exit::BudgetExhausted => {}
            Exit::PowerOff { code: 0 } => break,
            other => panic!("the guest stopped with {other:?}"),
        }
    }
    (
        image.writes(),
        image.bytes(),
        machine.digest(),
        machine.instret().0,
    )
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

fn replica(role: RoleKind, image: &Image) -> Replica {
    let now = Instant(0);
    let node = match role {
        RoleKind::Primary => Node::primary(node_config(PRIMARY, BACKUP), now),
        _ => Node::backup(node_config(BACKUP, PRIMARY), now),
    };
    let mut machine = machine();
    machine.attach_disk(
        Box::new(SharedDisk::new(Box::new(ReadOnly(image.clone())))),
        b"shared",
    );
    Replica::new(
        machine,
        node,
        GuestIdentity {
            disk_sha256: [5; 32],
        },
        DIGEST_EVERY,
        now,
    )
}

/// The pair and the arbiter; `None` is a dead machine.
struct Pair {
    now: Instant,
    image: Image,
    primary: Option<Replica>,
    backup: Option<Replica>,
    arbiter: Arbiter,
    /// Which replica wrote each image write (0 primary, 1 backup), and its log position.
    writers: Vec<(usize, LogSequence)>,
}

impl Pair {
    fn new() -> Pair {
        let image = Image::new();
        Pair {
            now: Instant(0),
            primary: Some(replica(RoleKind::Primary, &image)),
            backup: Some(replica(RoleKind::Backup, &image)),
            image,
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
            writers: Vec::new(),
        }
    }

    fn deliver(&mut self) {
        let now = self.now;
        crate::test_network::deliver_round(
            now,
            ARBITER,
            [
                (PRIMARY, self.primary.as_mut()),
                (BACKUP, self.backup.as_mut()),
            ],
            &mut self.arbiter,
        );
    }

    /// The drivers' part after frames: events, released outputs written to the image (before
    /// the next slice, as the hosted driver does), one slice, released outputs again.
    fn run_replicas(&mut self) {
        let now = self.now;
        for slot in 0..2 {
            let image = self.image.clone();
            let writers = &mut self.writers;
            let Some(replica) = (if slot == 0 {
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
            write_released(replica, now, &image, slot, writers);
            if let Step::Idle { .. } = replica.run(now, SLICE_INSTRUCTIONS) {
                let _ = replica.offer_input(now, &Input::AdvanceTime { ticks: 1_000 });
            }
            write_released(replica, now, &image, slot, writers);
        }
    }

    fn tick(&mut self) {
        self.now = Instant(self.now.0 + TICK_MICROS);
        self.deliver();
        self.run_replicas();
    }

    fn run_until(&mut self, mut done: impl FnMut(&mut Pair) -> bool, ticks_max: u64) {
        for _ in 0..ticks_max {
            if done(self) {
                return;
            }
            self.tick();
        }
        let describe = |r: &Option<Replica>| r.as_ref().map(|r| (r.status(), r.stopped));
        panic!(
            "not done after {ticks_max} ticks: primary {:?}, backup {:?}",
            describe(&self.primary),
            describe(&self.backup)
        );
    }
}

/// A driver's output path for the disk: an output of an older epoch than the node's is
/// refused (fencing), and no replaying replica ever writes.
fn write_released(
    replica: &mut Replica,
    now: Instant,
    image: &Image,
    slot: usize,
    writers: &mut Vec<(usize, LogSequence)>,
) {
    while let Some(output) = replica.poll_release(now) {
        if output.device != DISK {
            continue;
        }
        assert!(
            replica.is_live(),
            "a replaying replica released a disk write"
        );
        assert!(
            output.epoch >= replica.node().epoch(),
            "a disk write of an older epoch"
        );
        let (offset, data) = split_disk_payload(&output.payload).unwrap();
        image.write(offset, data);
        writers.push((slot, output.position));
        replica.disk_written(&output);
    }
}

fn stopped(replica: &Option<Replica>) -> bool {
    replica.as_ref().is_some_and(|r| r.stopped.is_some())
}

/// The image after `writes`, from the initial image.
fn applied(writes: &[ImageWrite]) -> Vec<u8> {
    let mut image = initial_image();
    for (offset, data) in writes {
        image[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
    image
}

#[test]
fn the_disk_guest_reads_its_own_writes_and_writes_every_round() {
    let (writes, image, _, _) = unreplicated();
    assert_eq!(writes.len(), ROUNDS as usize);
    // Round 1 read sector 2, which round 0 wrote (sector 1's bytes plus 1), added 2.
    assert_eq!(writes[1].0, 3 * 512);
    assert_eq!(writes[1].1[0], 1 + 1 + 2);
    assert_eq!(writes[1].1[8..], [1u8; 504]);
    assert_eq!(image, applied(&writes));
    assert_ne!(image, initial_image());
}

#[test]
fn a_pair_on_a_shared_image_writes_exactly_what_an_unreplicated_run_writes() {
    let (reference_writes, reference_image, reference_digest, reference_count) = unreplicated();
    let mut pair = Pair::new();
    pair.run_until(|p| stopped(&p.primary) && stopped(&p.backup), 20_000);
    pair.run_until(|p| p.image.writes().len() == reference_writes.len(), 1_000);
    assert_eq!(pair.image.writes(), reference_writes);
    assert_eq!(pair.image.bytes(), reference_image);
    assert!(
        pair.writers.iter().all(|(slot, _)| *slot == 0),
        "only the primary wrote"
    );
    let primary = pair.primary.as_mut().unwrap();
    let backup = pair.backup.as_mut().unwrap();
    assert_eq!(primary.stopped, Some(Exit::PowerOff { code: 0 }));
    assert_eq!(backup.stopped, Some(Exit::PowerOff { code: 0 }));
    assert_eq!(primary.machine.instret().0, reference_count);
    assert_eq!(backup.machine.instret().0, reference_count);
    assert_eq!(primary.machine.digest(), reference_digest);
    assert_eq!(backup.machine.digest(), reference_digest);
    // Two identity digests and one every `DIGEST_EVERY` instructions, all compared equal.
    assert_eq!(backup.digests_matched, 2 + reference_count / DIGEST_EVERY);
    // Every write reached the image: the primary keeps nothing; the backup keeps only what
    // the primary has not said it released yet.
    assert_eq!(primary.shared_disk_state(), Some((DiskMode::Live, 0, 0)));
    assert_eq!(backup.shared_disk_state().unwrap().0, DiskMode::Replaying);
}

#[test]
fn the_image_is_unchanged_until_the_backup_acknowledged_the_write() {
    let (reference_writes, reference_image, _, _) = unreplicated();
    let mut pair = Pair::new();
    pair.run_until(|p| p.primary.as_ref().unwrap().is_paired(), 1_000);
    // The link to the backup is cut: the primary runs on and writes, into its overlay only.
    let backup = pair.backup.take();
    pair.run_until(
        |p| {
            let state = p.primary.as_mut().unwrap().shared_disk_state().unwrap();
            state.2 >= 2
        },
        1_000,
    );
    for _ in 0..50 {
        pair.tick();
    }
    assert_eq!(pair.image.bytes(), initial_image());
    assert!(pair.image.writes().is_empty());
    let (_, overlay_sectors, outstanding) =
        pair.primary.as_mut().unwrap().shared_disk_state().unwrap();
    assert!(
        outstanding >= 2 && overlay_sectors >= 2,
        "{outstanding} {overlay_sectors}"
    );
    // The backup is back before the primary gave up on it: the writes reach the image.
    pair.backup = backup;
    pair.run_until(|p| stopped(&p.primary) && stopped(&p.backup), 20_000);
    pair.run_until(|p| p.image.writes().len() == reference_writes.len(), 1_000);
    assert_eq!(pair.image.writes(), reference_writes);
    assert_eq!(pair.image.bytes(), reference_image);
}

/// Runs the pair until the primary has written `written` writes to the image and `ready`
/// holds (checked after frame delivery and after the slices), kills the primary there, and
/// runs the backup live to the end. Returns the image's writes and who wrote each.
fn failover(written: usize, ready: impl Fn(&Pair) -> bool) -> (Pair, Vec<ImageWrite>) {
    let mut pair = Pair::new();
    loop {
        pair.now = Instant(pair.now.0 + TICK_MICROS);
        pair.deliver();
        if pair.image.writes().len() >= written && ready(&pair) {
            break;
        }
        pair.run_replicas();
        if pair.image.writes().len() >= written && ready(&pair) {
            break;
        }
        assert!(
            !stopped(&pair.primary),
            "the guest finished before the failover"
        );
        assert!(
            pair.now.0 < 100_000 * TICK_MICROS,
            "never ready for the failover"
        );
    }
    pair.primary = None;
    pair.run_until(|p| stopped(&p.backup), 20_000);
    let backup = pair.backup.as_mut().unwrap();
    assert_eq!(backup.node().role(), RoleKind::Solo);
    assert_eq!(backup.node().epoch(), Epoch(2));
    assert_eq!(backup.stopped, Some(Exit::PowerOff { code: 0 }));
    assert_eq!(backup.shared_disk_state(), Some((DiskMode::Live, 0, 0)));
    let writes = pair.image.writes();
    (pair, writes)
}

#[test]
fn a_failover_after_the_backup_heard_every_release_writes_each_write_exactly_once() {
    let (reference_writes, reference_image, reference_digest, _) = unreplicated();
    let (mut pair, writes) = failover(ROUNDS as usize / 2, |p| {
        let last_written = p.writers.last().map(|(_, position)| *position);
        let heard = p.backup.as_ref().unwrap().node().primary_released_through();
        last_written.is_some_and(|position| heard >= position)
            && p.primary.as_ref().unwrap().status().outputs_held == 0
    });
    assert_eq!(writes, reference_writes);
    assert_eq!(pair.image.bytes(), reference_image);
    let by_backup = pair.writers.iter().filter(|(slot, _)| *slot == 1).count();
    assert!(
        by_backup > 0 && by_backup < reference_writes.len(),
        "{by_backup}"
    );
    assert_eq!(
        pair.backup.as_mut().unwrap().machine.digest(),
        reference_digest
    );
}

#[test]
fn a_failover_right_after_a_release_repeats_only_writes_the_backup_could_not_know_were_made() {
    let (reference_writes, reference_image, reference_digest, _) = unreplicated();
    // Killed right after the primary wrote, before a frame could tell the backup.
    let (mut pair, writes) = failover(ROUNDS as usize / 2, |p| {
        let last_written = p.writers.last().map(|(_, position)| *position);
        let heard = p.backup.as_ref().unwrap().node().primary_released_through();
        last_written.is_some_and(|position| heard < position)
    });
    let by_primary = pair.writers.iter().filter(|(slot, _)| *slot == 0).count();
    let overlap = writes.len() - reference_writes.len();
    assert!(overlap >= 1, "the backup reissued the unannounced write");
    // The primary's writes, then the backup's: a reissue of the primary's last writes, in
    // order, then the rest. The image ends exactly as an unreplicated run leaves it.
    assert_eq!(writes[..by_primary], reference_writes[..by_primary]);
    assert_eq!(
        writes[by_primary..by_primary + overlap],
        reference_writes[by_primary - overlap..by_primary]
    );
    assert_eq!(
        writes[by_primary + overlap..],
        reference_writes[by_primary..]
    );
    assert_eq!(pair.image.bytes(), reference_image);
    assert_eq!(
        pair.backup.as_mut().unwrap().machine.digest(),
        reference_digest
    );
}

/// A standalone primary's recorded entries, then a file-fed backup replaying them after
/// `tamper` changed them; returns the backup's final digest.
fn replay_recording(tamper: impl Fn(&mut Vec<LogEntry>)) -> [u8; 32] {
    let image = Image::new();
    let mut shared = machine();
    shared.attach_disk(
        Box::new(SharedDisk::new(Box::new(ReadOnly(image.clone())))),
        b"shared",
    );
    let identity = GuestIdentity {
        disk_sha256: [5; 32],
    };
    let now = Instant(0);
    let mut primary = Replica::standalone(shared, identity, Limits::default(), DIGEST_EVERY, now);
    let mut entries = Vec::new();
    loop {
        let step = primary.run(now, SLICE_INSTRUCTIONS);
        while let Some(output) = primary.poll_release(now) {
            let (offset, data) = split_disk_payload(&output.payload).unwrap();
            image.write(offset, data);
            primary.disk_written(&output);
        }
        entries.extend(core::iter::from_fn(|| primary.poll_recorded()));
        if let Step::GuestStopped(_) = step {
            break;
        }
    }
    // The record file's end frame: the last horizon.
    entries.push(LogEntry {
        at: primary.at(),
        record: Record::Horizon,
    });
    tamper(&mut entries);
    let mut backup_machine = machine();
    backup_machine.attach_disk(
        Box::new(SharedDisk::new(Box::new(ReadOnly(image.clone())))),
        b"shared",
    );
    let mut backup = Replica::new(
        backup_machine,
        Node::file_backup(Limits::default(), now),
        identity,
        DIGEST_EVERY,
        now,
    );
    let mut next = 0;
    for _ in 0..100_000 {
        next += backup.push_entries(now, &entries[next..]).unwrap();
        match backup.run(now, SLICE_INSTRUCTIONS) {
            Step::GuestStopped(_) => return backup.machine.digest(),
            Step::Halted => panic!("halted: {:?}", backup.mismatch()),
            _ => {}
        }
    }
    panic!("the replay never reached the end of the recording");
}

#[test]
fn a_recorded_run_on_a_shared_disk_replays_from_its_logged_reads() {
    let (_, _, reference_digest, _) = unreplicated();
    assert_eq!(replay_recording(|_| {}), reference_digest);
}

#[test]
#[should_panic(expected = "the guest read the disk at 512, and the primary's guest at 4608")]
fn a_backup_whose_guest_reads_elsewhere_than_the_primary_stops() {
    replay_recording(|entries| {
        let read = entries
            .iter_mut()
            .find_map(|entry| match &mut entry.record {
                Record::DeviceInput { device, bytes } if *device == DISK => Some(bytes),
                _ => None,
            })
            .expect("the guest read the disk");
        read[..8].copy_from_slice(&(9u64 * 512).to_le_bytes());
    });
}
