//! The deterministic simulator: primary, backup and arbiter under seeded faults, with the
//! protocol's safety and liveness properties checked on every run.
//!
//! One `u64` seed fixes everything: the fault profile (swarm testing: each seed picks its own
//! loss, duplication, reordering, corruption, partition and crash rates), every network delay,
//! every crash and restart, each node's clock offset and drift, and the clients' requests.
//! There is no host time, no thread and no `HashMap` anywhere in a run, so a seed replays
//! exactly. The workload is a request log with per-client deduplication standing in for the
//! guest: requests are nondeterministic inputs, responses are outputs that clients see.
use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::arbiter::{Arbiter, ArbiterConfig, ArbiterRecord};
use crate::limits::Limits;
use crate::node::{Event, Node, NodeConfig, ReleasedOutput, RoleKind};
use crate::record::{LogEntry, Record};
use crate::types::{
    DeviceId, Epoch, Incarnation, Instant, InstructionCount, Key, LogSequence, NodeId, StateDigest,
};

pub mod rng;
use rng::Rng;

/// Participant index of the arbiter; replicas are 1 and 2.
const ARBITER: usize = 0;
const REPLICAS: [usize; 2] = [1, 2];
/// Guest instructions the stand-in workload retires per microsecond of its node's clock.
const INSTRUCTIONS_PER_MICROSECOND: u64 = 100;
/// How often a replica's runtime wakes to record progress (horizon entries), in microseconds.
const RUNTIME_TICK_US: u64 = 20_000;
/// Every this many ticks the primary logs a state digest.
const DIGEST_EVERY_TICKS: u64 = 5;
/// A client resends an unanswered request after this long, in microseconds.
const CLIENT_RETRY_US: u64 = 250_000;
const CLIENT_DEVICE: DeviceId = DeviceId(1);

/// What one simulation run does.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Record a human-readable event trace in the report.
    pub trace: bool,
    /// Simulated time with faults, in microseconds.
    pub fault_phase_us: u64,
    /// Simulated time after faults stop (network healed, every node restarted) within which
    /// service must resume: the stated liveness bound, in microseconds.
    pub liveness_bound_us: u64,
    /// Number of clients sending requests.
    pub clients: usize,
    /// Protocol limits for all nodes.
    pub limits: Limits,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            trace: false,
            fault_phase_us: 6_000_000,
            liveness_bound_us: 6_000_000,
            clients: 3,
            limits: Limits::default(),
        }
    }
}

impl SimOptions {
    /// Longer fault phases for soak runs.
    pub fn soak() -> Self {
        SimOptions {
            fault_phase_us: 60_000_000,
            ..SimOptions::default()
        }
    }
}

/// Counts from one or many runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Seeds run.
    pub seeds: u64,
    /// Simulated time, in microseconds.
    pub simulated_us: u64,
    /// Frames delivered to a node.
    pub frames_delivered: u64,
    /// Frames lost, blocked by a partition or sent to a crashed node.
    pub frames_dropped: u64,
    /// Frames a node rejected (corrupt, duplicate, stale, unexpected).
    pub frames_rejected: u64,
    /// Go-lives: claims won (by a backup or by a primary that lost its backup).
    pub failovers: u64,
    /// Node crashes injected (arbiter included).
    pub crashes: u64,
    /// Halts (lost arbitration, fenced).
    pub halts: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Outputs released by a primary.
    pub outputs_released: u64,
    /// Responses clients received.
    pub responses_seen: u64,
    /// The highest epoch reached.
    pub epoch_max: u64,
    /// The longest time from the end of faults until every client was served again and the
    /// pair was protected, in microseconds.
    pub recovery_max_us: u64,
}

impl SimStats {
    /// Adds another run's counts to these.
    pub fn absorb(&mut self, other: &SimStats) {
        self.seeds += other.seeds;
        self.simulated_us += other.simulated_us;
        self.frames_delivered += other.frames_delivered;
        self.frames_dropped += other.frames_dropped;
        self.frames_rejected += other.frames_rejected;
        self.failovers += other.failovers;
        self.crashes += other.crashes;
        self.halts += other.halts;
        self.partitions += other.partitions;
        self.outputs_released += other.outputs_released;
        self.responses_seen += other.responses_seen;
        self.epoch_max = self.epoch_max.max(other.epoch_max);
        self.recovery_max_us = self.recovery_max_us.max(other.recovery_max_us);
    }
}

impl fmt::Display for SimStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seeds, {:.1} s simulated, {} frames delivered, {} dropped, {} rejected, {} failovers, \
             {} crashes, {} halts, {} partitions, {} outputs released, {} responses seen, \
             highest epoch {}, slowest recovery {} ms",
            self.seeds,
            self.simulated_us as f64 / 1e6,
            self.frames_delivered,
            self.frames_dropped,
            self.frames_rejected,
            self.failovers,
            self.crashes,
            self.halts,
            self.partitions,
            self.outputs_released,
            self.responses_seen,
            self.epoch_max,
            self.recovery_max_us / 1000
        )
    }
}

/// The result of a passing run.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Its counts.
    pub stats: SimStats,
    /// The event trace (empty unless `SimOptions::trace`).
    pub trace: Vec<String>,
}

/// The properties checked on every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// Never two nodes release output in the same epoch.
    OneReleaserPerEpoch,
    /// Never a node releases output in an epoch older than the newest granted one.
    NoStaleRelease,
    /// A primary with a backup released an output only after the backup held its position.
    OutputAcknowledgedFirst,
    /// The responses clients saw form one history (VMware's Output Requirement).
    OneHistory,
    /// Every request a client saw answered stays applied across failovers.
    AnsweredStaysApplied,
    /// The backup's state equals the primary's at the same log position.
    BackupMatchesPrimary,
    /// After faults stop, service resumes within the bound.
    Liveness,
    /// A node rejected something it should not have, or a runtime call failed.
    ProtocolError,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Property::OneReleaserPerEpoch => "never two nodes release output in the same epoch",
            Property::NoStaleRelease => "never a node releases output in a stale epoch",
            Property::OutputAcknowledgedFirst => {
                "every released output was acknowledged by the backup first"
            }
            Property::OneHistory => "client-visible outputs form one history",
            Property::AnsweredStaysApplied => "every answered request stays applied",
            Property::BackupMatchesPrimary => {
                "backup state equals primary state at the same log position"
            }
            Property::Liveness => "service resumes within the bound once faults stop",
            Property::ProtocolError => "no unexpected protocol or runtime error",
        };
        f.write_str(text)
    }
}

/// A failing run: enough to reproduce it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// The violated property.
    pub property: Property,
    /// What exactly happened.
    pub detail: String,
    /// Simulated time of the violation, in microseconds.
    pub at_us: u64,
    /// The trace up to the violation (empty unless tracing was on).
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at {:.6} s: {}: {}\nreproduce with: understudy simulate --seed {}",
            self.seed,
            self.at_us as f64 / 1e6,
            self.property,
            self.detail,
            self.seed
        )
    }
}

impl core::error::Error for SimFailure {}

/// Runs one seed.
pub fn run_seed(seed: u64, options: &SimOptions) -> Result<SimReport, SimFailure> {
    if let Err(error) = options.limits.validate() {
        return Err(SimFailure {
            seed,
            property: Property::ProtocolError,
            detail: format!("unusable limits: {error}"),
            at_us: 0,
            trace: Vec::new(),
        });
    }
    let mut world = World::new(seed, options);
    world.run();
    let trace = core::mem::take(&mut world.trace);
    match world.failure.take() {
        Some((property, detail, at_us)) => Err(SimFailure {
            seed,
            property,
            detail,
            at_us,
            trace,
        }),
        None => Ok(SimReport {
            seed,
            stats: world.stats,
            trace,
        }),
    }
}

/// Runs `count` seeds from `first`, stopping at the first failure.
pub fn run_seeds(first: u64, count: u64, options: &SimOptions) -> Result<SimStats, SimFailure> {
    let mut total = SimStats::default();
    for seed in first..first.saturating_add(count) {
        let report = run_seed(seed, options)?;
        total.absorb(&report.stats);
    }
    Ok(total)
}

/// What `understudy simulate` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimCommand {
    /// `--seeds N`: run seeds `first..first + count` quietly.
    Seeds {
        /// The first seed.
        first: u64,
        /// How many.
        count: u64,
    },
    /// `--seed S`: run one seed and print its event trace.
    Seed(u64),
}

/// The body of `understudy simulate`: runs what `command` asks, writes the trace (for one seed)
/// or a summary, and on failure the failing seed's trace tail and the command that reproduces
/// it. `soak` uses `SimOptions::soak()`. The caller times the run for a seeds/second figure
/// and turns `Err` into a failing exit status.
pub fn simulate(
    command: SimCommand,
    soak: bool,
    out: &mut dyn fmt::Write,
) -> Result<SimStats, SimFailure> {
    let options = if soak {
        SimOptions::soak()
    } else {
        SimOptions::default()
    };
    let result = match command {
        SimCommand::Seed(seed) => {
            let traced = SimOptions {
                trace: true,
                ..options
            };
            let result = run_seed(seed, &traced);
            let trace = match &result {
                Ok(report) => &report.trace,
                Err(failure) => &failure.trace,
            };
            for line in trace {
                let _ = writeln!(out, "{line}");
            }
            result.map(|report| report.stats)
        }
        SimCommand::Seeds { first, count } => {
            let _ = writeln!(
                out,
                "simulating seeds {first}..{}",
                first.saturating_add(count)
            );
            let result = run_seeds(first, count, &options);
            if let Err(failure) = &result {
                let traced = SimOptions {
                    trace: true,
                    ..options
                };
                if let Err(again) = run_seed(failure.seed, &traced) {
                    let start = again.trace.len().saturating_sub(200);
                    let _ = writeln!(
                        out,
                        "last {} trace lines of seed {}:",
                        again.trace.len() - start,
                        failure.seed
                    );
                    for line in &again.trace[start..] {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            result
        }
    };
    match &result {
        Ok(stats) => {
            let _ = writeln!(out, "ok: {stats}");
        }
        Err(failure) => {
            let _ = writeln!(out, "FAILED: {failure}");
        }
    }
    result
}

// ----- The stand-in workload -----

/// The guest stand-in: applies client requests in log order, answering each once and
/// re-answering retries from its table (as a TCP stack would), and mixes in time advances and
/// entropy so that replay must use the logged values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Workload {
    /// (client, request) in the order applied: the history.
    applied: Vec<(u8, u32)>,
    /// Per client: the newest request applied and its index in `applied`.
    last: Vec<Option<(u32, u32)>>,
    /// Everything nondeterministic folded together.
    mix: u64,
}

impl Workload {
    fn new(clients: usize) -> Workload {
        Workload {
            applied: Vec::new(),
            last: vec![None; clients],
            mix: 0,
        }
    }

    /// Applies a request; returns the response payload, if the request gets one.
    fn apply(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let (client, request) = decode_request(bytes)?;
        let slot = self.last.get_mut(client as usize)?;
        let index = match *slot {
            Some((newest, index)) if newest == request => index,
            Some((newest, _)) if newest > request => return None,
            _ => {
                let index = self.applied.len() as u32;
                self.applied.push((client, request));
                *slot = Some((request, index));
                self.mix = self.mix.rotate_left(5) ^ (u64::from(client) << 32 | u64::from(request));
                index
            }
        };
        let mut response = vec![client];
        response.extend_from_slice(&request.to_le_bytes());
        response.extend_from_slice(&index.to_le_bytes());
        Some(response)
    }

    fn absorb(&mut self, value: u64) {
        self.mix = self.mix.rotate_left(7).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ value;
    }

    /// SHA-256 over the history length, the mix (which already folds in every applied
    /// request in order) and the per-client table: the whole state, without rehashing the
    /// ever-growing history at every digest.
    fn digest(&self) -> StateDigest {
        let summary = (self.applied.len() as u64, self.mix, &self.last);
        let bytes = postcard::to_allocvec(&summary).unwrap_or_default();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&Sha256::digest(&bytes));
        StateDigest(digest)
    }
}

fn decode_request(bytes: &[u8]) -> Option<(u8, u32)> {
    let [client, a, b, c, d] = *bytes else {
        return None;
    };
    Some((client, u32::from_le_bytes([a, b, c, d])))
}

fn decode_response(bytes: &[u8]) -> Option<(u8, u32, u32)> {
    let [client, a, b, c, d, e, f, g, h] = *bytes else {
        return None;
    };
    Some((
        client,
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
    ))
}

// ----- The simulated world -----

#[derive(Clone, Debug)]
enum SimEvent {
    Deliver {
        to: usize,
        bytes: Vec<u8>,
    },
    Wake {
        node: usize,
    },
    Tick {
        node: usize,
        incarnation: u64,
    },
    Request {
        node: usize,
        client: u8,
        request: u32,
    },
    Response {
        client: u8,
        bytes: Vec<u8>,
    },
    ClientSend {
        client: u8,
    },
    ClientRetry {
        client: u8,
        request: u32,
    },
    StorageDone {
        incarnation: u64,
        record: ArbiterRecord,
    },
    Crash,
    CrashArbiter {
        incarnation: u64,
    },
    Restart {
        node: usize,
    },
    Partition,
    Cut {
        from: usize,
        to: usize,
    },
    Heal,
    Quiesce,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashKind {
    /// The other replica carries on: primary/backup replication must survive it.
    Single,
    /// The crashing replica holds the only copy of the newest epoch's state.
    LosesNewestState,
}

struct Scheduled {
    time: u64,
    order: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.order) == (other.time, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: invert so the earliest event (then the first scheduled)
        // comes out first, which makes ties deterministic.
        (other.time, other.order).cmp(&(self.time, self.order))
    }
}

/// Per-seed fault rates, in parts per million per frame or per second.
#[derive(Clone, Copy, Debug)]
struct FaultProfile {
    loss_ppm: u64,
    duplicate_ppm: u64,
    reorder_ppm: u64,
    corrupt_ppm: u64,
    long_delay_ppm: u64,
    partition_mean_gap_us: u64,
    crash_mean_gap_us: u64,
    arbiter_write_us_max: u64,
}

#[derive(Clone, Copy, Debug)]
struct Clock {
    offset_us: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, global: u64) -> Instant {
        let drift = i128::from(global) * i128::from(self.drift_ppm) / 1_000_000;
        Instant((i128::from(self.offset_us) + i128::from(global) + drift) as u64)
    }

    /// The first global time at which the local clock reads at least `local`.
    fn global(&self, local: Instant, now: u64) -> u64 {
        let relative = i128::from(local.0) - i128::from(self.offset_us);
        // The estimate can be off by a microsecond or two either way from integer rounding.
        let estimate = relative * 1_000_000 / (1_000_000 + i128::from(self.drift_ppm)) - 2;
        let mut global = estimate.max(now as i128) as u64;
        while self.local(global) < local {
            global += 1;
        }
        global.max(now)
    }
}

struct Replica {
    node: Option<Node>,
    /// The last epoch the replica stored (`Event::PersistEpoch`); survives crashes.
    stored_epoch: Epoch,
    workload: Workload,
    icount: u64,
    last_executed: Instant,
    ticks: u64,
}

struct Client {
    next_request: u32,
    outstanding: Option<u32>,
    /// The last response index seen for each request (the client's view of the history).
    last_index: Option<(u32, u32)>,
    served_after_quiesce: bool,
}

struct World {
    options: SimOptions,
    rng: Rng,
    /// The replicas' channel key.
    key: Key,
    /// Each replica's key shared with the arbiter (`arbiter_keys[0]` for node 1).
    arbiter_keys: [Key; 2],
    now: u64,
    order: u64,
    queue: BinaryHeap<Scheduled>,
    faults: FaultProfile,
    faults_active: bool,
    /// Service resumed after faults stopped (see `note_recovery`).
    recovered: bool,
    /// A replica that died for good when faults stopped.
    kept_down: Option<usize>,
    /// The only replica holding the newest epoch's state crashed (a double failure): the pair
    /// may stay unable to serve, and must not serve older state.
    newest_state_lost: bool,
    quiesce_at: u64,
    clocks: [Clock; 3],
    incarnations: [u64; 3],
    up: [bool; 3],
    wake_at: [Option<u64>; 3],
    /// `blocked[from][to]`: frames from `from` to `to` are dropped.
    blocked: [[bool; 3]; 3],
    /// `slowed[from][to]`: extra delay of frames from `from` to `to`, in microseconds.
    slowed: [[u64; 3]; 3],
    /// A replica's runtime makes no progress before this global time (a host stall).
    stalled_until: [u64; 3],
    replicas: [Replica; 2],
    arbiter: Option<Arbiter>,
    arbiter_stored: [u8; crate::arbiter::ARBITER_RECORD_BYTES],
    arbiter_writes_pending: Vec<ArbiterRecord>,
    /// The replica whose MAC the service network currently delivers to.
    service_owner: usize,
    clients: Vec<Client>,
    // Oracle state.
    releasers: BTreeMap<u64, usize>,
    backup_held: BTreeMap<u64, u64>,
    primary_digests: BTreeMap<(u64, u64), StateDigest>,
    answered: BTreeMap<(u8, u32), u32>,
    history: BTreeMap<u32, (u8, u32)>,
    stats: SimStats,
    trace: Vec<String>,
    failure: Option<(Property, String, u64)>,
}

fn replica_slot(node: usize) -> usize {
    node - 1
}

fn peer_of(node: usize) -> usize {
    3 - node
}

impl World {
    fn new(seed: u64, options: &SimOptions) -> World {
        let mut rng = Rng::new(seed);
        let draw_key = |rng: &mut Rng| {
            let mut key = [0u8; 32];
            for chunk in key.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            Key(key)
        };
        let key = draw_key(&mut rng);
        let arbiter_keys = [draw_key(&mut rng), draw_key(&mut rng)];
        // Swarm testing: each seed draws its own mix of faults, including none at all.
        let pick = |rng: &mut Rng, choices: &[u64]| choices[rng.index(choices.len())];
        let faults = FaultProfile {
            loss_ppm: pick(&mut rng, &[0, 0, 10_000, 50_000, 200_000]),
            duplicate_ppm: pick(&mut rng, &[0, 10_000, 50_000]),
            reorder_ppm: pick(&mut rng, &[0, 20_000, 100_000]),
            corrupt_ppm: pick(&mut rng, &[0, 0, 5_000]),
            long_delay_ppm: pick(&mut rng, &[0, 0, 2_000, 20_000]),
            partition_mean_gap_us: pick(&mut rng, &[0, 3_000_000, 1_000_000, 400_000]),
            crash_mean_gap_us: pick(&mut rng, &[0, 3_000_000, 1_500_000, 600_000]),
            arbiter_write_us_max: pick(&mut rng, &[1_000, 20_000, 200_000]),
        };
        let drift_max = options.limits.clock_drift_ppm_max as i64;
        let clock = |rng: &mut Rng| Clock {
            offset_us: rng.range(0, 1_000_000_000),
            drift_ppm: rng.range(0, (2 * drift_max) as u64) as i64 - drift_max,
        };
        let clocks = [clock(&mut rng), clock(&mut rng), clock(&mut rng)];
        let clients = (0..options.clients)
            .map(|_| Client {
                next_request: 1,
                outstanding: None,
                last_index: None,
                served_after_quiesce: false,
            })
            .collect();
        let replica = || Replica {
            node: None,
            stored_epoch: Epoch(1),
            workload: Workload::new(options.clients),
            icount: 0,
            last_executed: Instant(0),
            ticks: 0,
        };
        let mut world = World {
            options: options.clone(),
            rng,
            key,
            arbiter_keys,
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            faults,
            faults_active: true,
            recovered: false,
            kept_down: None,
            newest_state_lost: false,
            quiesce_at: options.fault_phase_us,
            clocks,
            incarnations: [1; 3],
            up: [true; 3],
            wake_at: [None; 3],
            blocked: [[false; 3]; 3],
            slowed: [[0; 3]; 3],
            stalled_until: [0; 3],
            replicas: [replica(), replica()],
            arbiter: None,
            arbiter_stored: ArbiterRecord::initial().to_bytes(),
            arbiter_writes_pending: Vec::new(),
            service_owner: 1,
            clients,
            releasers: BTreeMap::new(),
            backup_held: BTreeMap::new(),
            primary_digests: BTreeMap::new(),
            answered: BTreeMap::new(),
            history: BTreeMap::new(),
            stats: SimStats {
                seeds: 1,
                ..SimStats::default()
            },
            trace: Vec::new(),
            failure: None,
        };
        world.note(|| format!("seed {seed}: faults {faults:?}"));
        world.start_arbiter();
        for node in REPLICAS {
            let now = world.local(node);
            let config = world.node_config(node);
            let started = if node == 1 {
                Node::primary(config, now)
            } else {
                Node::backup(config, now)
            };
            world.replicas[replica_slot(node)].node = Some(started);
            world.replicas[replica_slot(node)].last_executed = now;
            world.schedule(
                0,
                SimEvent::Tick {
                    node,
                    incarnation: 1,
                },
            );
            world.pump(node);
        }
        for client in 0..options.clients {
            let delay = world.rng.range(0, 50_000);
            world.schedule(
                delay,
                SimEvent::ClientSend {
                    client: client as u8,
                },
            );
        }
        if faults.partition_mean_gap_us > 0 {
            let delay = world.rng.range(0, 2 * faults.partition_mean_gap_us);
            world.schedule(delay, SimEvent::Partition);
        }
        if faults.crash_mean_gap_us > 0 {
            let delay = world.rng.range(0, 2 * faults.crash_mean_gap_us);
            world.schedule(delay, SimEvent::Crash);
        }
        world.schedule(options.fault_phase_us, SimEvent::Quiesce);
        world.schedule(
            options.fault_phase_us + options.liveness_bound_us,
            SimEvent::End,
        );
        world
    }

    fn note(&mut self, text: impl FnOnce() -> String) {
        if self.options.trace {
            let line = format!("[{:>10.6} s] {}", self.now as f64 / 1e6, text());
            self.trace.push(line);
        }
    }

    fn fail(&mut self, property: Property, detail: String) {
        if self.failure.is_none() {
            self.note(|| format!("VIOLATION: {property}: {detail}"));
            self.failure = Some((property, detail, self.now));
        }
    }

    fn schedule(&mut self, delay: u64, event: SimEvent) {
        self.order += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            order: self.order,
            event,
        });
    }

    fn local(&self, node: usize) -> Instant {
        self.clocks[node].local(self.now)
    }

    fn node_config(&self, node: usize) -> NodeConfig {
        NodeConfig {
            me: NodeId(node as u8),
            peer: NodeId(peer_of(node) as u8),
            arbiter: NodeId(ARBITER as u8),
            channel_key: self.key.clone(),
            arbiter_key: self.arbiter_keys[replica_slot(node)].clone(),
            limits: self.options.limits.clone(),
            incarnation: Incarnation(self.incarnations[node]),
        }
    }

    fn start_arbiter(&mut self) {
        let stored = match ArbiterRecord::from_bytes(&self.arbiter_stored) {
            Ok(record) => record,
            Err(error) => {
                self.fail(
                    Property::ProtocolError,
                    format!("arbiter storage unreadable: {error}"),
                );
                ArbiterRecord::initial()
            }
        };
        let config = ArbiterConfig {
            me: NodeId(ARBITER as u8),
            replicas: [NodeId(1), NodeId(2)],
            keys: self.arbiter_keys.clone(),
            limits: self.options.limits.clone(),
            incarnation: Incarnation(self.incarnations[ARBITER]),
        };
        self.arbiter = Some(Arbiter::new(config, stored));
    }

    /// The newest epoch the arbiter has made durable (1 before any claim).
    fn granted_epoch(&self) -> u64 {
        ArbiterRecord::from_bytes(&self.arbiter_stored).map_or(1, |record| record.epoch.0.max(1))
    }

    fn run(&mut self) {
        while let Some(Scheduled { time, event, .. }) = self.queue.pop() {
            self.now = time;
            let end = matches!(event, SimEvent::End);
            self.handle(event);
            if end || self.failure.is_some() {
                break;
            }
        }
        self.stats.simulated_us = self.now;
    }

    fn handle(&mut self, event: SimEvent) {
        match event {
            SimEvent::Deliver { to, bytes } => self.deliver(to, bytes),
            SimEvent::Wake { node } => {
                if self.wake_at[node] == Some(self.now) {
                    self.wake_at[node] = None;
                    if let Some(node_state) = self.replicas[replica_slot(node)].node.as_mut() {
                        let now = self.clocks[node].local(self.now);
                        node_state.handle_timeout(now);
                    }
                    self.pump(node);
                }
            }
            SimEvent::Tick { node, incarnation } => {
                if self.up[node] && self.incarnations[node] == incarnation {
                    self.runtime_tick(node);
                    let local_next = self.local(node) + crate::types::Duration(RUNTIME_TICK_US);
                    let next = self.clocks[node].global(local_next, self.now);
                    self.schedule(next - self.now, SimEvent::Tick { node, incarnation });
                }
            }
            SimEvent::Request {
                node,
                client,
                request,
            } => self.request_arrives(node, client, request),
            SimEvent::Response { client, bytes } => self.response_arrives(client, &bytes),
            SimEvent::ClientSend { client } => self.client_send(client),
            SimEvent::ClientRetry { client, request } => {
                if self.clients[client as usize].outstanding == Some(request) {
                    self.send_request(client, request);
                }
            }
            SimEvent::StorageDone {
                incarnation,
                record,
            } => {
                if self.up[ARBITER] && self.incarnations[ARBITER] == incarnation {
                    self.persist(record);
                    if let Some(arbiter) = self.arbiter.as_mut() {
                        arbiter.storage_written(record);
                    }
                    self.arbiter_writes_pending
                        .retain(|pending| *pending != record);
                    self.pump_arbiter();
                }
            }
            SimEvent::Crash => self.inject_crash(),
            SimEvent::CrashArbiter { incarnation } => {
                if self.faults_active
                    && self.up[ARBITER]
                    && self.incarnations[ARBITER] == incarnation
                {
                    self.crash(ARBITER);
                    let restart = self.rng.range(50_000, 1_000_000);
                    self.schedule(restart, SimEvent::Restart { node: ARBITER });
                }
            }
            SimEvent::Restart { node } => self.restart(node),
            SimEvent::Partition => self.inject_partition(),
            SimEvent::Cut { from, to } => {
                if self.faults_active {
                    self.blocked[from][to] = true;
                    self.note(|| format!("partition: {from} -> {to} cut"));
                }
            }
            SimEvent::Heal => {
                self.blocked = [[false; 3]; 3];
                self.slowed = [[0; 3]; 3];
                self.note(|| String::from("network healed"));
            }
            SimEvent::Quiesce => self.quiesce(),
            SimEvent::End => self.check_liveness(),
        }
    }

    fn persist(&mut self, record: ArbiterRecord) {
        let current =
            ArbiterRecord::from_bytes(&self.arbiter_stored).unwrap_or(ArbiterRecord::initial());
        if record.epoch > current.epoch {
            self.arbiter_stored = record.to_bytes();
            self.stats.epoch_max = self.stats.epoch_max.max(record.epoch.0);
            self.note(|| {
                format!(
                    "arbiter persisted {} owned by {}",
                    record.epoch, record.owner
                )
            });
        }
    }

    // ----- Network -----

    fn send_frame(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if self.blocked[from][to] {
            self.stats.frames_dropped += 1;
            return;
        }
        let faults = self.faults;
        let active = self.faults_active;
        if active && self.rng.chance(faults.loss_ppm) {
            self.stats.frames_dropped += 1;
            return;
        }
        let mut bytes = bytes;
        if active && self.rng.chance(faults.corrupt_ppm) && !bytes.is_empty() {
            let index = self.rng.index(bytes.len());
            bytes[index] ^= 1 << self.rng.range(0, 7);
        }
        let copies = if active && self.rng.chance(faults.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.rng.range(200, 2_000) + self.slowed[from][to];
            if active && self.rng.chance(faults.reorder_ppm) {
                delay += self.rng.range(0, 80_000);
            }
            if active && self.rng.chance(faults.long_delay_ppm) {
                // Longer than the failure-detection timeout: the frame arrives after the
                // receiver may have given up on its sender.
                delay += self.rng.range(500_000, 3_000_000);
            }
            self.schedule(
                delay,
                SimEvent::Deliver {
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, to: usize, bytes: Vec<u8>) {
        if !self.up[to] {
            self.stats.frames_dropped += 1;
            return;
        }
        self.stats.frames_delivered += 1;
        if to == ARBITER {
            let Some(arbiter) = self.arbiter.as_mut() else {
                return;
            };
            if let Err(error) = arbiter.handle_frame(&bytes) {
                self.stats.frames_rejected += 1;
                self.note(|| format!("arbiter rejected a frame: {error}"));
            }
            self.pump_arbiter();
            return;
        }
        let now = self.local(to);
        let Some(node) = self.replicas[replica_slot(to)].node.as_mut() else {
            return;
        };
        if let Err(error) = node.handle_frame(now, &bytes) {
            self.stats.frames_rejected += 1;
            self.note(|| format!("node {to} rejected a frame: {error} ({:?})", error.action()));
        }
        self.pump(to);
    }

    fn pump_arbiter(&mut self) {
        loop {
            let Some(arbiter) = self.arbiter.as_mut() else {
                return;
            };
            if let Some(record) = arbiter.poll_storage_write() {
                let latency = self.rng.range(100, self.faults.arbiter_write_us_max);
                self.arbiter_writes_pending.push(record);
                let incarnation = self.incarnations[ARBITER];
                self.schedule(
                    latency,
                    SimEvent::StorageDone {
                        incarnation,
                        record,
                    },
                );
                if self.faults_active
                    && self.faults.crash_mean_gap_us > 0
                    && self.rng.chance(200_000)
                {
                    // The arbiter dies while its decision is not yet on disk.
                    let at = self.rng.range(0, latency);
                    self.schedule(at, SimEvent::CrashArbiter { incarnation });
                }
                continue;
            }
            let Some(transmit) = arbiter.poll_transmit() else {
                return;
            };
            self.send_frame(ARBITER, transmit.to.0 as usize, transmit.bytes);
        }
    }

    // ----- Replica runtime (the hypervisor stand-in) -----

    /// Advances a live primary's instruction count by the time passed, within flow control.
    fn execute(&mut self, node: usize) {
        let now = self.local(node);
        let replica = &mut self.replicas[replica_slot(node)];
        let Some(state) = replica.node.as_ref() else {
            return;
        };
        let stalled = self.now < self.stalled_until[node];
        let elapsed = if stalled {
            0
        } else {
            (now - replica.last_executed).0
        };
        if matches!(
            state.role(),
            RoleKind::Primary | RoleKind::Solo | RoleKind::ClaimingAsPrimary
        ) {
            let wanted = elapsed.saturating_mul(INSTRUCTIONS_PER_MICROSECOND);
            let allowed = wanted.min(state.execution_budget(InstructionCount(replica.icount)));
            replica.icount += allowed;
        } else if matches!(state.role(), RoleKind::Backup | RoleKind::ClaimingAsBackup) {
            // The backup executes at a finite speed (a little faster than the primary) and
            // never past its horizon, so it lags and has entries queued at a failover.
            let wanted = elapsed.saturating_mul(2 * INSTRUCTIONS_PER_MICROSECOND);
            replica.icount = (replica.icount + wanted).min(state.horizon().0.max(replica.icount));
        }
        replica.last_executed = now;
    }

    fn runtime_tick(&mut self, node: usize) {
        self.execute(node);
        let now = self.local(node);
        let slot = replica_slot(node);
        self.replicas[slot].ticks += 1;
        let ticks = self.replicas[slot].ticks;
        let Some(role) = self.replicas[slot].node.as_ref().map(Node::role) else {
            return;
        };
        if matches!(
            role,
            RoleKind::Primary | RoleKind::Solo | RoleKind::ClaimingAsPrimary
        ) {
            let at = InstructionCount(self.replicas[slot].icount);
            let time_read = self.rng.chance(300_000);
            let entropy = self.rng.next_u64();
            let use_entropy = self.rng.chance(200_000);
            if time_read {
                self.record_input(
                    node,
                    now,
                    LogEntry {
                        at,
                        record: Record::AdvanceTime { ticks: now.0 },
                    },
                    now.0,
                );
            }
            if use_entropy {
                let bytes = entropy.to_le_bytes().to_vec();
                self.record_input(
                    node,
                    now,
                    LogEntry {
                        at,
                        record: Record::Entropy { bytes },
                    },
                    entropy,
                );
            }
            let _ = self.record(
                node,
                now,
                LogEntry {
                    at,
                    record: Record::Horizon,
                },
            );
            // `is_multiple_of` is newer than the workspace's minimum Rust version.
            #[allow(clippy::manual_is_multiple_of)]
            let digest_due = ticks % DIGEST_EVERY_TICKS == 0;
            if digest_due {
                let digest = self.replicas[slot].workload.digest();
                if let Some(position) = self.record(
                    node,
                    now,
                    LogEntry {
                        at,
                        record: Record::Digest { digest },
                    },
                ) {
                    let epoch = self.replicas[slot]
                        .node
                        .as_ref()
                        .map_or(0, |state| state.epoch().0);
                    self.primary_digests.insert((epoch, position.0), digest);
                }
            }
        }
        self.pump(node);
    }

    fn record(&mut self, node: usize, now: Instant, entry: LogEntry) -> Option<LogSequence> {
        let state = self.replicas[replica_slot(node)].node.as_mut()?;
        state.record(now, entry).ok()
    }

    /// Records a time advance or entropy input and, only if it was logged, lets the guest see it.
    fn record_input(&mut self, node: usize, now: Instant, entry: LogEntry, value: u64) {
        if self.record(node, now, entry).is_some() {
            self.replicas[replica_slot(node)].workload.absorb(value);
        }
    }

    fn request_arrives(&mut self, node: usize, client: u8, request: u32) {
        if !self.up[node] {
            return;
        }
        self.execute(node);
        let now = self.local(node);
        let slot = replica_slot(node);
        let at = InstructionCount(self.replicas[slot].icount);
        let mut bytes = vec![client];
        bytes.extend_from_slice(&request.to_le_bytes());
        let entry = LogEntry {
            at,
            record: Record::DeviceInput {
                device: CLIENT_DEVICE,
                bytes: bytes.clone(),
            },
        };
        // Only a live primary takes input; a throttled one leaves it in the device queue,
        // which here means the client retries.
        if self.record(node, now, entry).is_none() {
            return;
        }
        let replica = &mut self.replicas[slot];
        if let Some(response) = replica.workload.apply(&bytes) {
            let Some(state) = replica.node.as_mut() else {
                return;
            };
            if let Err(error) = state.submit_output(now, at, CLIENT_DEVICE, response) {
                // The input was just recorded, so only flow control can refuse the marker; the
                // response is then lost like a dropped packet and the client retries.
                self.note(|| format!("node {node} output not submitted: {error}"));
            }
        }
        self.pump(node);
    }

    /// Drives a node until it has nothing more to say: frames, events, releases, replay.
    fn pump(&mut self, node: usize) {
        if !self.up[node] {
            return;
        }
        self.execute(node);
        loop {
            if self.failure.is_some() {
                return;
            }
            let now = self.local(node);
            let slot = replica_slot(node);
            let Some(state) = self.replicas[slot].node.as_mut() else {
                return;
            };
            if let Some(transmit) = state.poll_transmit(now) {
                self.send_frame(node, transmit.to.0 as usize, transmit.bytes);
                continue;
            }
            if let Some(event) = state.poll_event() {
                self.handle_node_event(node, event);
                continue;
            }
            if let Some(output) = state.poll_release(now) {
                self.released(node, output);
                continue;
            }
            let icount = self.replicas[slot].icount;
            let Some(state) = self.replicas[slot].node.as_mut() else {
                return;
            };
            let due = state
                .next_replay_at()
                .is_some_and(|at| state.role() == RoleKind::GoingLive || at.0 <= icount);
            if let Some(item) = due.then(|| state.poll_replay()).flatten() {
                self.replay(node, item.position, item.entry);
                continue;
            }
            if state.role() == RoleKind::GoingLive {
                if let Err(error) = state.finish_go_live(now) {
                    self.fail(
                        Property::ProtocolError,
                        format!("node {node}: go-live refused: {error}"),
                    );
                }
                continue;
            }
            if state.role() == RoleKind::Backup {
                let epoch = state.epoch().0;
                let held = state.log_end().0;
                let entry = self.backup_held.entry(epoch).or_insert(0);
                *entry = (*entry).max(held);
            }
            break;
        }
        self.reschedule_wake(node);
    }

    fn reschedule_wake(&mut self, node: usize) {
        let Some(local) = self.replicas[replica_slot(node)]
            .node
            .as_ref()
            .and_then(Node::poll_at)
        else {
            return;
        };
        let global = self.clocks[node].global(local, self.now);
        if self.wake_at[node].is_none_or(|current| global < current || current < self.now) {
            self.wake_at[node] = Some(global);
            self.schedule(global - self.now, SimEvent::Wake { node });
        }
    }

    fn replay(&mut self, node: usize, position: LogSequence, entry: LogEntry) {
        let now = self.local(node);
        let slot = replica_slot(node);
        let replica = &mut self.replicas[slot];
        replica.icount = replica.icount.max(entry.at.0);
        match entry.record {
            Record::DeviceInput { bytes, .. } => {
                if let Some(response) = replica.workload.apply(&bytes) {
                    if let Some(state) = replica.node.as_mut() {
                        let _ = state.submit_output(now, entry.at, CLIENT_DEVICE, response);
                    }
                }
            }
            Record::AdvanceTime { ticks } | Record::WallClockBase { ns: ticks } => {
                replica.workload.absorb(ticks)
            }
            Record::Entropy { bytes } => {
                let mut value = [0u8; 8];
                let length = bytes.len().min(8);
                value[..length].copy_from_slice(&bytes[..length]);
                replica.workload.absorb(u64::from_le_bytes(value));
            }
            Record::Digest { .. } => {
                let computed = replica.workload.digest();
                let Some(state) = replica.node.as_mut() else {
                    return;
                };
                let epoch = state.epoch().0;
                match state.check_digest(position, computed) {
                    Ok(true) => {}
                    Ok(false) => {}
                    Err(error) => {
                        self.fail(Property::ProtocolError, format!("node {node}: {error}"));
                        return;
                    }
                }
                if let Some(expected) = self.primary_digests.get(&(epoch, position.0)) {
                    if *expected != computed {
                        self.fail(
                            Property::BackupMatchesPrimary,
                            format!("node {node} state differs from the primary's at {position} of epoch {epoch}"),
                        );
                    }
                }
            }
            Record::Output { .. } | Record::Horizon => {}
        }
    }

    fn handle_node_event(&mut self, node: usize, event: Event) {
        self.handle_node_event_inner(node, event);
        self.note_recovery();
    }

    fn handle_node_event_inner(&mut self, node: usize, event: Event) {
        let now = self.local(node);
        let slot = replica_slot(node);
        match event {
            Event::RoleChanged { from, to, epoch } => {
                self.note(|| format!("node {node}: {from} -> {to} in {epoch}"));
                if from == RoleKind::ClaimingAsPrimary && to == RoleKind::Solo {
                    self.stats.failovers += 1;
                    self.check_answered_applied(node);
                }
            }
            Event::PersistEpoch { epoch } => {
                // Durable at once: the write completes before anything else the node does.
                let replica = &mut self.replicas[slot];
                replica.stored_epoch = epoch;
                if let Some(state) = replica.node.as_mut() {
                    state.epoch_persisted(epoch);
                }
            }
            Event::SnapshotWanted => {
                self.execute(node);
                let replica = &mut self.replicas[slot];
                let state_bytes = postcard::to_allocvec(&replica.workload).unwrap_or_default();
                let at = InstructionCount(replica.icount);
                if let Some(state) = replica.node.as_mut() {
                    if let Err(error) = state.send_snapshot(now, at, state_bytes) {
                        self.note(|| format!("node {node}: snapshot not sent: {error}"));
                    }
                }
                self.note(|| format!("node {node}: snapshot sent"));
            }
            Event::InstallSnapshot {
                position,
                at,
                state,
            } => match postcard::from_bytes::<Workload>(&state) {
                Ok(workload) => {
                    let replica = &mut self.replicas[slot];
                    replica.workload = workload;
                    replica.icount = at.0;
                    if let Some(state) = replica.node.as_mut() {
                        state.confirm_install(now);
                    }
                    self.note(|| format!("node {node}: installed snapshot at {position}"));
                }
                Err(_) => self.fail(
                    Property::ProtocolError,
                    format!("node {node}: snapshot does not decode"),
                ),
            },
            Event::LeaveReplay {
                epoch, position, ..
            } => {
                self.stats.failovers += 1;
                self.replicas[slot].last_executed = now;
                self.note(|| format!("node {node}: left replay at {position}, live in {epoch}"));
                self.check_answered_applied(node);
            }
            // The simulated runtime sends its whole state in the snapshot.
            Event::Transfer(_) => self.fail(
                Property::ProtocolError,
                format!("node {node}: a transfer message in a simulation without transfers"),
            ),
            Event::AnnounceMac => {
                self.service_owner = node;
                self.note(|| format!("node {node}: announced the service MAC"));
            }
            Event::ReissueInFlightIo => {}
            Event::Divergence {
                position,
                first_diverged,
                ..
            } => self.fail(
                Property::BackupMatchesPrimary,
                format!("node {node} reported divergence at {position} ({first_diverged})"),
            ),
            Event::Halted { reason } => {
                self.stats.halts += 1;
                self.note(|| format!("node {node}: halted: {reason:?}"));
                let delay = self.rng.range(50_000, 800_000);
                self.schedule(delay, SimEvent::Restart { node });
            }
        }
    }

    /// The oracle's view of every released output.
    fn released(&mut self, node: usize, output: ReleasedOutput) {
        self.stats.outputs_released += 1;
        let epoch = output.epoch.0;
        match self.releasers.get(&epoch) {
            Some(&other) if other != node => {
                self.fail(
                    Property::OneReleaserPerEpoch,
                    format!("nodes {other} and {node} both released output in epoch {epoch}"),
                );
                return;
            }
            _ => {
                self.releasers.insert(epoch, node);
            }
        }
        let granted = self.granted_epoch();
        if epoch < granted {
            self.fail(
                Property::NoStaleRelease,
                format!(
                    "node {node} released {} in epoch {epoch} after epoch {granted} was granted",
                    output.position
                ),
            );
            return;
        }
        if output.acknowledged {
            let held = self.backup_held.get(&epoch).copied().unwrap_or(0);
            if held < output.position.0 {
                self.fail(
                    Property::OutputAcknowledgedFirst,
                    format!(
                        "node {node} released {} but the backup held only log #{held}",
                        output.position
                    ),
                );
                return;
            }
        }
        self.note(|| {
            format!(
                "node {node}: released output {} in {}{}",
                output.position,
                output.epoch,
                if output.reissued { " (reissued)" } else { "" }
            )
        });
        let client = output.payload.first().copied().unwrap_or(0);
        if self.rng.chance(if self.faults_active {
            self.faults.loss_ppm
        } else {
            0
        }) {
            return;
        }
        let delay = self.rng.range(200, 2_000);
        self.schedule(
            delay,
            SimEvent::Response {
                client,
                bytes: output.payload,
            },
        );
    }

    fn check_answered_applied(&mut self, node: usize) {
        let applied = &self.replicas[replica_slot(node)].workload.applied;
        for (&(client, request), &index) in &self.answered {
            if applied.get(index as usize) != Some(&(client, request)) {
                let detail = format!(
                    "node {node} went live without client {client}'s answered request {request} at index {index}"
                );
                self.fail(Property::AnsweredStaysApplied, detail);
                return;
            }
        }
    }

    // ----- Clients -----

    fn client_send(&mut self, client: u8) {
        let state = &mut self.clients[client as usize];
        if state.outstanding.is_some() {
            return;
        }
        let request = state.next_request;
        state.next_request += 1;
        state.outstanding = Some(request);
        self.send_request(client, request);
    }

    fn send_request(&mut self, client: u8, request: u32) {
        let node = self.service_owner;
        let lost = self.faults_active && self.rng.chance(self.faults.loss_ppm);
        if !lost {
            let delay = self.rng.range(200, 2_000);
            self.schedule(
                delay,
                SimEvent::Request {
                    node,
                    client,
                    request,
                },
            );
        }
        self.schedule(CLIENT_RETRY_US, SimEvent::ClientRetry { client, request });
    }

    fn response_arrives(&mut self, client: u8, bytes: &[u8]) {
        self.stats.responses_seen += 1;
        let Some((for_client, request, index)) = decode_response(bytes) else {
            self.fail(
                Property::OneHistory,
                format!("client {client} got a malformed response"),
            );
            return;
        };
        if for_client != client {
            self.fail(
                Property::OneHistory,
                format!("client {client} got client {for_client}'s response"),
            );
            return;
        }
        if let Some(&earlier) = self.answered.get(&(client, request)) {
            if earlier != index {
                self.fail(
                    Property::OneHistory,
                    format!("client {client} request {request} answered at index {earlier} and at {index}"),
                );
                return;
            }
        }
        if let Some(&(other_client, other_request)) = self.history.get(&index) {
            if (other_client, other_request) != (client, request) {
                self.fail(
                    Property::OneHistory,
                    format!(
                        "index {index} answered for client {other_client} request {other_request} and client {client} request {request}"
                    ),
                );
                return;
            }
        }
        let state = &mut self.clients[client as usize];
        if let Some((last_request, last_index)) = state.last_index {
            if request > last_request && index <= last_index {
                self.fail(
                    Property::OneHistory,
                    format!("client {client} request {request} at index {index} precedes request {last_request} at {last_index}"),
                );
                return;
            }
        }
        self.answered.insert((client, request), index);
        self.history.insert(index, (client, request));
        let state = &mut self.clients[client as usize];
        if state
            .last_index
            .is_none_or(|(last_request, _)| request > last_request)
        {
            state.last_index = Some((request, index));
        }
        if state.outstanding == Some(request) {
            state.outstanding = None;
            if self.now >= self.quiesce_at && !state.served_after_quiesce {
                state.served_after_quiesce = true;
                self.note_recovery();
            }
            let think = self.rng.range(5_000, 60_000);
            self.schedule(think, SimEvent::ClientSend { client });
        }
    }

    // ----- Faults -----

    fn inject_partition(&mut self) {
        if !self.faults_active {
            return;
        }
        self.stats.partitions += 1;
        let kind = self
            .rng
            .range(0, 3 + u64::from(self.faults.long_delay_ppm > 0));
        let a = self.rng.index(3);
        let b = (a + 1 + self.rng.index(2)) % 3;
        match kind {
            0 => {
                // Isolate one node in both directions.
                for other in 0..3 {
                    self.blocked[a][other] = true;
                    self.blocked[other][a] = true;
                }
                self.note(|| format!("partition: node {a} isolated"));
            }
            1 => {
                self.blocked[a][b] = true;
                self.blocked[b][a] = true;
                self.note(|| format!("partition: {a} <-> {b} cut"));
            }
            2 => {
                self.blocked[a][b] = true;
                self.note(|| format!("partition: {a} -> {b} cut (asymmetric)"));
            }
            _ => {
                // The link slows one way, then the other way is cut: the receiver of the slow
                // direction keeps hearing old news, steadily, after the other side has given
                // up on it. This is what the output lease is for.
                let delay = self.rng.range(200_000, 2_500_000);
                self.slowed[b][a] = delay;
                let cut_after = delay + self.rng.range(0, 500_000);
                self.schedule(cut_after, SimEvent::Cut { from: a, to: b });
                self.note(|| format!("partition: {b} -> {a} delayed {} ms", delay / 1000));
                let heal = cut_after + self.rng.range(1_000_000, 3_000_000);
                self.schedule(heal, SimEvent::Heal);
                let next = self.rng.range(0, 2 * self.faults.partition_mean_gap_us);
                self.schedule(heal + next, SimEvent::Partition);
                return;
            }
        }
        let heal = self.rng.range(50_000, 3_000_000);
        self.schedule(heal, SimEvent::Heal);
        let next = self.rng.range(0, 2 * self.faults.partition_mean_gap_us);
        self.schedule(heal + next, SimEvent::Partition);
    }

    /// What crashing `node` now would mean, or `None` if the simulator never does it. A
    /// replica crash is a single failure when the other replica is up and holds the current
    /// state in a settled role, and the crashing one has no claim that could still win. A live
    /// replica of the newest epoch whose peer is up but still in an older epoch holds the only
    /// copy of the newest state: crashing it loses that state (a double failure), which the
    /// pair must survive by refusing to serve, never by serving the older state.
    fn crash_kind(&self, node: usize) -> Option<CrashKind> {
        if node == ARBITER {
            return Some(CrashKind::Single);
        }
        let state = self.replicas[replica_slot(node)].node.as_ref()?;
        if matches!(
            state.role(),
            RoleKind::ClaimingAsPrimary | RoleKind::ClaimingAsBackup | RoleKind::GoingLive
        ) {
            return None;
        }
        let peer = peer_of(node);
        if !self.up[peer] {
            return None;
        }
        let peer_state = self.replicas[replica_slot(peer)].node.as_ref()?;
        let decided = self
            .arbiter
            .as_ref()
            .map_or(0, |arbiter| arbiter.persisted().epoch.0);
        let pending = self
            .arbiter_writes_pending
            .iter()
            .map(|record| record.epoch.0)
            .max()
            .unwrap_or(0);
        let current = self.granted_epoch().max(decided).max(pending);
        if matches!(
            peer_state.role(),
            RoleKind::Primary | RoleKind::Solo | RoleKind::Backup
        ) && peer_state.epoch().0 == current
        {
            return Some(CrashKind::Single);
        }
        if matches!(state.role(), RoleKind::Primary | RoleKind::Solo)
            && state.epoch().0 == current
            && peer_state.epoch().0 < current
        {
            return Some(CrashKind::LosesNewestState);
        }
        None
    }

    fn may_crash(&self, node: usize) -> bool {
        self.crash_kind(node) == Some(CrashKind::Single)
    }

    fn inject_crash(&mut self) {
        if !self.faults_active {
            return;
        }
        let node = self.rng.index(3);
        if node != ARBITER && self.rng.chance(300_000) {
            // A host stall: the runtime stops executing for a while; the protocol keeps going.
            let stall = self.rng.range(300_000, 3_000_000);
            self.stalled_until[node] = self.now + stall;
            self.note(|| format!("node {node} runtime stalls for {} ms", stall / 1000));
        } else if self.up[node] {
            let crash = match self.crash_kind(node) {
                Some(CrashKind::Single) => true,
                Some(CrashKind::LosesNewestState) => {
                    // Rarely, so most runs still check that service resumes.
                    let lose = self.rng.chance(250_000);
                    if lose {
                        self.newest_state_lost = true;
                        self.note(|| {
                            format!("node {node} holds the only copy of the newest state")
                        });
                    }
                    lose
                }
                None => false,
            };
            if crash {
                self.crash(node);
                let restart = self.rng.range(100_000, 2_000_000);
                self.schedule(restart, SimEvent::Restart { node });
            }
        }
        let next = self.rng.range(0, 2 * self.faults.crash_mean_gap_us);
        self.schedule(next, SimEvent::Crash);
    }

    fn crash(&mut self, node: usize) {
        self.stats.crashes += 1;
        self.up[node] = false;
        self.wake_at[node] = None;
        self.note(|| format!("node {node} crashed"));
        if node == ARBITER {
            self.arbiter = None;
            // A write in flight either reached the disk before the crash or was lost.
            for record in core::mem::take(&mut self.arbiter_writes_pending) {
                if self.rng.chance(500_000) {
                    self.persist(record);
                } else {
                    self.note(|| format!("arbiter write of {} lost in the crash", record.epoch));
                }
            }
        } else {
            let replica = &mut self.replicas[replica_slot(node)];
            replica.node = None;
            replica.workload = Workload::new(self.options.clients);
            replica.icount = 0;
        }
    }

    fn restart(&mut self, node: usize) {
        if self.kept_down == Some(node) {
            return;
        }
        if self.up[node] {
            // A halted node restarts in place (its process exits and comes back).
            let halted = self
                .replicas
                .get(node.wrapping_sub(1))
                .and_then(|replica| replica.node.as_ref())
                .is_some_and(|state| state.role() == RoleKind::Halted);
            if node == ARBITER || !halted {
                return;
            }
        }
        self.up[node] = true;
        self.incarnations[node] += 1;
        self.wake_at[node] = None;
        self.note(|| format!("node {node} restarted"));
        if node == ARBITER {
            self.start_arbiter();
            return;
        }
        let now = self.local(node);
        let config = self.node_config(node);
        let replica = &mut self.replicas[replica_slot(node)];
        let last_known = replica.stored_epoch;
        replica.node = Some(Node::joining(config, now, last_known));
        replica.workload = Workload::new(self.options.clients);
        replica.icount = 0;
        replica.last_executed = now;
        let incarnation = self.incarnations[node];
        self.schedule(0, SimEvent::Tick { node, incarnation });
        self.pump(node);
    }

    fn quiesce(&mut self) {
        // In a third of the runs one replica dies for good as faults stop (when that is a
        // single failure): the arbiter and the other replica must carry on alone.
        let candidate = REPLICAS[self.rng.index(2)];
        if self.rng.chance(333_333) && self.up[candidate] && self.may_crash(candidate) {
            self.crash(candidate);
            self.kept_down = Some(candidate);
        }
        self.faults_active = false;
        self.blocked = [[false; 3]; 3];
        self.slowed = [[0; 3]; 3];
        self.note(|| String::from("faults stop: network healed, crashed nodes restart"));
        for node in 0..3 {
            if !self.up[node] {
                self.restart(node);
            }
        }
        for client in 0..self.clients.len() {
            self.clients[client].served_after_quiesce = false;
        }
    }

    /// Records the first moment after faults stop at which every client has been served and
    /// the pair is protected again.
    fn note_recovery(&mut self) {
        if self.faults_active || self.recovered {
            return;
        }
        if self
            .clients
            .iter()
            .all(|client| client.served_after_quiesce)
            && self.service_restored()
        {
            self.recovered = true;
            self.stats.recovery_max_us = self.now - self.quiesce_at;
            self.note(|| String::from("recovered: every client served, pair protected"));
        }
    }

    /// Protected again, or, when one replica died for good, the other is the solo primary.
    fn service_restored(&self) -> bool {
        match self.kept_down {
            Some(gone) => self.replicas[replica_slot(peer_of(gone))]
                .node
                .as_ref()
                .is_some_and(|state| state.role() == RoleKind::Solo),
            None => self.protected(),
        }
    }

    fn protected(&self) -> bool {
        let roles: Vec<(RoleKind, Epoch)> = self
            .replicas
            .iter()
            .filter_map(|replica| {
                replica
                    .node
                    .as_ref()
                    .map(|state| (state.role(), state.epoch()))
            })
            .collect();
        roles.len() == 2
            && roles[0].1 == roles[1].1
            && matches!(
                (roles[0].0, roles[1].0),
                (RoleKind::Primary, RoleKind::Backup) | (RoleKind::Backup, RoleKind::Primary)
            )
    }

    fn check_liveness(&mut self) {
        if self.newest_state_lost {
            // A double failure: serving again is not required, serving stale state is wrong.
            if let Some(primary) = self.live_primary() {
                self.check_answered_applied(primary);
            }
            return;
        }
        let unserved: Vec<usize> = (0..self.clients.len())
            .filter(|&client| !self.clients[client].served_after_quiesce)
            .collect();
        if !unserved.is_empty() {
            let roles = self.role_summary();
            self.fail(
                Property::Liveness,
                format!("clients {unserved:?} not served within the bound after faults stopped; {roles}"),
            );
            return;
        }
        if !self.service_restored() {
            let roles = self.role_summary();
            self.fail(
                Property::Liveness,
                format!("not protected again (or, with one replica gone, not solo) within the bound; {roles}"),
            );
            return;
        }
        // Everything answered is in the live primary's history.
        if let Some(primary) = self.live_primary() {
            self.check_answered_applied(primary);
        }
        self.note_recovery();
    }

    fn live_primary(&self) -> Option<usize> {
        REPLICAS.into_iter().find(|&node| {
            self.replicas[replica_slot(node)]
                .node
                .as_ref()
                .is_some_and(|state| matches!(state.role(), RoleKind::Primary | RoleKind::Solo))
        })
    }

    fn role_summary(&self) -> String {
        let mut summary = String::new();
        for node in REPLICAS {
            let text = match self.replicas[replica_slot(node)].node.as_ref() {
                Some(state) => format!("node {node}: {} in {}; ", state.role(), state.epoch()),
                None => format!("node {node}: down; "),
            };
            summary.push_str(&text);
        }
        summary.push_str(&format!("arbiter granted epoch {}", self.granted_epoch()));
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_reproducible_from_its_seed() {
        let options = SimOptions {
            trace: true,
            ..SimOptions::default()
        };
        let first = run_seed(7, &options).unwrap();
        let second = run_seed(7, &options).unwrap();
        assert_eq!(first.stats, second.stats);
        assert_eq!(first.trace, second.trace);
        assert!(first.stats.responses_seen > 0);
    }

    #[test]
    fn failure_message_names_the_seed_and_the_reproducing_command() {
        let failure = SimFailure {
            seed: 99,
            property: Property::Liveness,
            detail: String::from("stuck"),
            at_us: 1_500_000,
            trace: Vec::new(),
        };
        let text = format!("{failure}");
        assert!(text.contains("seed 99"));
        assert!(text.contains("understudy simulate --seed 99"));
        assert!(text.contains("service resumes"));
    }

    #[test]
    fn workload_answers_retries_from_its_table_and_ignores_stale_requests() {
        let mut workload = Workload::new(2);
        let first = workload.apply(&[1, 5, 0, 0, 0]).unwrap();
        assert_eq!(workload.apply(&[1, 5, 0, 0, 0]).unwrap(), first);
        assert_eq!(workload.apply(&[1, 4, 0, 0, 0]), None);
        assert_eq!(workload.applied, vec![(1, 5)]);
        assert_eq!(workload.apply(&[9, 1, 0, 0, 0]), None, "unknown client");
    }

    #[test]
    fn clock_inverse_is_the_first_global_time_reaching_the_local_time() {
        let clock = Clock {
            offset_us: 1000,
            drift_ppm: -700,
        };
        for global in [0u64, 5, 1_000_000, 7_777_777] {
            let local = clock.local(global);
            let back = clock.global(local, 0);
            assert!(clock.local(back) >= local);
            assert!(back == 0 || clock.local(back - 1) < local);
        }
    }
}
