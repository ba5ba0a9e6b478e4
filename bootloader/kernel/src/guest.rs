//! Runs the protected guest through `understudy_replica::Replica`, the runtime the hosted
//! process drives too: the kernel is a thin driver that passes time, datagrams and outside
//! inputs in and takes datagrams, released outputs and events out.
//!
//! A primary or backup (`Protection::Pair`) speaks `ft` to its partner and the arbiter over
//! the log channel (`channel.rs`); an unprotected guest (`understudy.unprotected`, the echo
//! guest) runs on a standalone replica, which releases every output at once. Either way the
//! guest sees only its images and the inputs that passed through `Replica::offer_input` on a
//! live replica or the log on a backup (ARCHITECTURE.md, determinism): console bytes from
//! COM1, frames from the service NIC, entropy from RDRAND, its RTC base from the CMOS clock
//! and time pushed forward when it lags the TSC. Released outputs leave through COM1 (the
//! console), the service NIC (frames) and, with `disk = shared`, the one disk both machines
//! see. Between slices an idle appliance halts (`idle::halt_until`) until its next deadline.

use crate::channel::LogChannel;
use crate::guestdisk::GuestDisk;
use crate::net::NetDevice;
use crate::{cmos, idle, println, serial, tsc};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};
use spin::Mutex;
use understudy_boot_config::{
    ArbiterBackend, ArbiterKeys, Config, DiskMode, Execution, Role, SocketAddress,
};
use understudy_ft::shared::{SharedArbiter, StorageOp, StorageResult};
use understudy_ft::{
    ArbiterConfig, Event, Incarnation, Instant, Key, Limits, Node, NodeConfig, NodeId,
    ReleasedOutput, RoleKind,
};
use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::devices::virtio::block::{BackendError, BlockBackend};
use understudy_machine::{Exit, Input, Machine, MachineConfig};
use understudy_replica::announce::guest_ipv4;
use understudy_replica::{
    announce_frames, split_disk_payload, GuestIdentity, JoinPhase, Refused, Replica, SharedDisk,
    Step, TransferLimits, CONSOLE, DISK, NET,
};
use understudy_replica::{logfmt, metrics};
use x86_64::instructions::random::RdRand;

/// The replicas' and the arbiter's ids on the log channel (the hosted process's too).
pub const PRIMARY_ID: NodeId = NodeId(1);
pub const BACKUP_ID: NodeId = NodeId(2);
pub const ARBITER_ID: NodeId = NodeId(3);
/// A replica handles what arrived only between run slices, so a slice bounds how late a
/// heartbeat or an acknowledgement can be. Slices are sized by time: the instruction count
/// adapts so that one takes about this long, however fast the machine runs (a few hundred
/// million instructions a second on hardware, a few million when the appliance itself runs
/// under QEMU TCG, less while the guest first touches its code).
const RUN_SLICE_TARGET_US: u64 = 10_000;
/// Bounds of the adaptive slice, in instructions: below the lower one the loop's own cost
/// would dominate; the upper one is the hosted replica's slice on a fast host.
const RUN_SLICE_INSTRUCTIONS_MIN: u64 = 50_000;
const RUN_SLICE_INSTRUCTIONS_MAX: u64 = 2_000_000;
/// The first slice, before any has been timed.
const RUN_SLICE_INSTRUCTIONS_FIRST: u64 = 100_000;
/// A state digest every this many instructions (the hosted replica's interval).
const DIGEST_EVERY_INSTRUCTIONS: u64 = 500_000_000;
/// Guest time may lag the TSC by this much (10 ms) before the primary advances it.
const CLOCK_LAG_TOLERANCE_TICKS: u64 = TIMEBASE_HZ / 100;
/// Console bytes read from COM1 but not yet taken by the guest; beyond this the loop stops
/// reading COM1 and its FIFO holds the rest.
const PENDING_CONSOLE_BYTES_MAX: usize = 4096;
/// Service frames waiting for the guest; beyond this new frames are dropped, as a NIC would.
const PENDING_FRAMES_MAX: usize = 1024;
/// Entropy goes to the guest in pieces of at most this size (the hosted driver's too).
const ENTROPY_CHUNK_BYTES_MAX: usize = 256;
/// The longest an idle loop sleeps before it looks at its devices again, in microseconds.
const IDLE_POLL_MAX_US: u64 = 20_000;
/// A status line on the console this often while the guest runs, in microseconds, and at
/// once whenever the role or whether a failover is available changes.
const STATUS_INTERVAL_US: u64 = 10_000_000;
/// How often the status line shows while a join runs.
const JOIN_STATUS_INTERVAL_US: u64 = 1_000_000;
/// How often a turn looks at an etcd exchange in flight, in microseconds.
const ETCD_POLL_US: u64 = 1_000;
/// Distinct kinds of refused frames said on the console before the driver says no more.
const REFUSALS_SAID_MAX: usize = 8;
/// Bytes hashed per disk read while computing the disk's identity digest.
const DISK_HASH_CHUNK_BYTES: usize = 1 << 20;
/// The guest's MAC address on the service network (the hosted driver's too): the same on
/// both machines, so it moves at go-live.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The disk id the guest reads with VIRTIO_BLK_T_GET_ID (the hosted driver's too).
const DISK_ID: &[u8] = b"understudy-disk";
/// The kernel command line when the payload carries none.
pub const DEFAULT_BOOTARGS: &str = "console=ttyS0";

/// What the guest is and what it gets.
pub struct GuestSpec<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub bootargs: String,
    pub memory_bytes: u64,
    pub disk: Option<GuestDisk>,
    /// `Shared`: the disk is the one image both machines see, written only with released
    /// outputs of the live replica.
    pub disk_mode: DiskMode,
    /// The service NIC: the guest gets a virtio-net device bridged to it.
    pub service_nic: Option<NetDevice>,
    /// Whether hot guest code is translated (same guest behaviour either way).
    pub execution: Execution,
}

/// How the guest is protected.
pub enum Protection {
    /// No partner: every output leaves at once.
    Unprotected,
    /// The primary or backup of a pair, with its log channel.
    Pair { config: Config, channel: LogChannel },
}

/// Why the guest or the replica stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    PowerOff {
        code: u16,
    },
    Reset,
    Crashed {
        cause: u64,
        tval: u64,
        pc: u64,
    },
    /// The replica halted (fenced, lost arbitration, diverged, mismatched images).
    Halted(String),
}

/// What the run did.
pub struct Summary {
    pub ending: Ending,
    pub instructions: u64,
    pub elapsed_ms: u64,
    /// Service-network frames dropped because the guest could not take them.
    pub frames_dropped: u64,
    /// Guest blocks the translator turned into x86-64 code (0 when interpreting).
    pub blocks_translated: u64,
}

/// The one disk both machines see (`disk = shared`): the machine reads it through the
/// replica's `SharedDisk`, and the driver writes released outputs to it.
#[derive(Clone)]
struct SharedImage(Arc<Mutex<GuestDisk>>);

impl BlockBackend for SharedImage {
    fn len_bytes(&self) -> u64 {
        self.0.lock().len_bytes()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.0.lock().read_at(offset, buf)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.0.lock().write_at(offset, data)
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        self.0.lock().flush()
    }
}

/// Builds the guest's machine at power-on and the identity its partner must share. A bad
/// image or memory size is the operator's error and is returned.
fn build(
    spec: GuestSpec,
    has_service_nic: bool,
    hash_disk: bool,
    entropy: bool,
) -> Result<(Machine, GuestIdentity, Option<SharedImage>), understudy_machine::BootError> {
    let config = MachineConfig {
        memory_bytes: spec.memory_bytes,
        bootargs: spec.bootargs,
        net_mac: has_service_nic.then_some(GUEST_MAC),
        entropy,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, spec.kernel, spec.initrd)?;
    if spec.execution == Execution::Translate {
        match crate::code::enable_translator(&mut machine, crate::heap::free_bytes()) {
            Ok(bytes) => println!("understudy: translator on, code cache {} MiB", bytes >> 20),
            Err(why) => println!("understudy: translator off, guest code interpreted: {why}"),
        }
    }
    let mut identity = GuestIdentity {
        disk_sha256: [0; 32],
    };
    let mut shared = None;
    if let Some(mut disk) = spec.disk {
        if hash_disk {
            identity.disk_sha256 = disk_sha256(&mut disk);
        }
        match spec.disk_mode {
            DiskMode::Shared => {
                let image = SharedImage(Arc::new(Mutex::new(disk)));
                machine.attach_disk(Box::new(SharedDisk::new(Box::new(image.clone()))), DISK_ID);
                shared = Some(image);
            }
            DiskMode::Separate => machine.attach_disk(Box::new(disk), DISK_ID),
        }
    }
    Ok((machine, identity, shared))
}

/// SHA-256 of the whole disk: both replicas hash before either runs the guest, and the
/// primary runs only once the backup confirmed the digest.
fn disk_sha256(disk: &mut GuestDisk) -> [u8; 32] {
    let started = tsc::now();
    let len = disk.len_bytes();
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; DISK_HASH_CHUNK_BYTES];
    let mut offset = 0;
    while offset < len {
        let take = (len - offset).min(DISK_HASH_CHUNK_BYTES as u64) as usize;
        disk.read_at(offset, &mut chunk[..take])
            .expect("fail-stop: the guest disk cannot be read while hashing it");
        hasher.update(&chunk[..take]);
        offset += take as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    println!(
        "understudy: guest disk sha256 {:02x}{:02x}{:02x}{:02x}... over {} MiB in {} ms",
        digest[0],
        digest[1],
        digest[2],
        digest[3],
        len >> 20,
        (tsc::now().0 - started.0) / 1000
    );
    digest
}

/// This boot's incarnation on the log channel (`cmos::boot_incarnation_us`).
pub fn incarnation() -> u64 {
    cmos::boot_incarnation_us().unwrap_or_else(|| {
        println!(
            "understudy: warning: no CMOS clock; the incarnation on the log channel is the TSC, which does not grow across reboots"
        );
        tsc::read().0
    })
}

/// The in-process arbiter of a replica whose config says `arbiter_backend = etcd`.
fn shared_link(config: &Config) -> Option<SharedLink> {
    let ArbiterBackend::Etcd { endpoints, prefix } = config.arbiter_backend else {
        return None;
    };
    let Ok(ArbiterKeys::Replica(key)) = config.arbiter_keys() else {
        crate::fail(format_args!("config: a replica needs its arbiter key"));
    };
    let limits = Limits::with_peer_timeout_ms(u64::from(config.peer_timeout_ms));
    let peer_timeout = limits.peer_timeout;
    let arbiter = SharedArbiter::new(
        ArbiterConfig {
            me: ARBITER_ID,
            replicas: [PRIMARY_ID, BACKUP_ID],
            // In process the arbiter serves this replica only; the other key is never used.
            keys: [Key(key.0), Key(key.0)],
            limits,
            incarnation: Incarnation(incarnation()),
        },
        understudy_ft::Duration(peer_timeout.0 / 2),
        understudy_ft::Duration(peer_timeout.0 * 2),
    );
    let endpoints: Vec<SocketAddress> = endpoints.iter().flatten().copied().collect();
    println!(
        "understudy: the arbiter is etcd at {} endpoints, key {}/arbiter",
        endpoints.len(),
        prefix.as_str()
    );
    Some(SharedLink {
        arbiter,
        endpoints,
        key: alloc::format!("{}/arbiter", prefix.as_str()),
        in_flight: None,
    })
}

/// The `ft` node of a pair member, from its config.
fn pair_node(config: &Config, now: Instant) -> Node {
    let ArbiterKeys::Replica(arbiter_key) = config
        .arbiter_keys()
        .unwrap_or_else(|error| crate::fail(format_args!("config: {error}")))
    else {
        unreachable!("a replica's config yields its own key")
    };
    let (me, peer) = match config.role {
        Role::Primary => (PRIMARY_ID, BACKUP_ID),
        _ => (BACKUP_ID, PRIMARY_ID),
    };
    let node_config = NodeConfig {
        me,
        peer,
        arbiter: ARBITER_ID,
        channel_key: Key(config.channel_key.0),
        arbiter_key: Key(arbiter_key.0),
        limits: Limits::with_peer_timeout_ms(u64::from(config.peer_timeout_ms)),
        incarnation: Incarnation(incarnation()),
    };
    let mut node = match config.role {
        Role::Primary => Node::primary(node_config, now),
        _ => Node::backup(node_config, now),
    };
    node.await_peer();
    node
}

/// Runs the guest until it stops or its replica halts.
pub fn run(spec: GuestSpec, protection: Protection) -> Summary {
    let rdrand = RdRand::new();
    if rdrand.is_none() {
        println!("understudy: the CPU has no RDRAND; the guest gets no entropy device");
    }
    let hash_disk = matches!(protection, Protection::Pair { .. });
    let building = tsc::read();
    let mut spec = spec;
    let service_nic = spec.service_nic.take();
    let spec = GuestSpec {
        // Only its presence matters to the machine (it gets a virtio-net device).
        service_nic: None,
        ..spec
    };
    let (machine, identity, shared_image) =
        match build(spec, service_nic.is_some(), hash_disk, rdrand.is_some()) {
            Ok(built) => built,
            Err(error) => crate::fail(format_args!("cannot start the guest: {error}")),
        };
    println!(
        "understudy: guest machine built in {} ms",
        (tsc::read().0 - building.0) * 1000 / tsc::hz()
    );
    let now = Instant(tsc::now().0);
    let mut shared_arbiter = None;
    let (replica, channel, config) = match protection {
        Protection::Unprotected => {
            let replica = Replica::standalone(machine, identity, Limits::default(), 0, now);
            (replica, None, None)
        }
        Protection::Pair { config, channel } => {
            let node = pair_node(&config, now);
            shared_arbiter = shared_link(&config);
            let mut replica = Replica::new(machine, node, identity, DIGEST_EVERY_INSTRUCTIONS, now);
            // A join's messages fit one Ethernet frame: a lost fragment would lose a whole
            // datagram, and smoltcp sends fragments a poll at a time.
            replica.set_transfer_limits(TransferLimits::for_mtu(crate::net::MTU_BYTES));
            (replica, Some(channel), Some(config))
        }
    };
    let mut driver = Driver {
        channel,
        config,
        service_nic,
        shared_image,
        rdrand,
        pending_console: VecDeque::new(),
        pending_frames: VecDeque::new(),
        frames_dropped: 0,
        idle: None,
        guest_woken: false,
        time_origin: None,
        guest_ipv4: None,
        next_status_us: 0,
        paired_at_us: None,
        started_us: tsc::now().0,
        shared_unsynced: false,
        refusals_said: Vec::new(),
        failovers: 0,
        shared_arbiter,
        said_failover_available: false,
        join_logged: 0,
        slice_instructions: RUN_SLICE_INSTRUCTIONS_FIRST,
        instructions_per_ms: 0,
    };
    driver.run(replica)
}

/// An arbiter in process whose register is in etcd, and the endpoints it asks.
struct SharedLink {
    arbiter: SharedArbiter,
    endpoints: Vec<SocketAddress>,
    /// The record's key, `<etcd_prefix>/arbiter`.
    key: String,
    /// The operation in flight and the endpoint asked now.
    in_flight: Option<(StorageOp, usize)>,
}

impl SharedLink {
    fn start(&self, channel: &mut LogChannel, op: StorageOp, endpoint: usize) {
        let to = self.endpoints[endpoint];
        let request = understudy_replica::etcd::request(op, &self.key);
        let host = alloc::format!("{to}");
        channel.http_start(to, understudy_replica::etcd::http_post(&host, &request));
    }
}

struct Driver {
    channel: Option<LogChannel>,
    config: Option<Config>,
    service_nic: Option<NetDevice>,
    shared_image: Option<SharedImage>,
    rdrand: Option<RdRand>,
    pending_console: VecDeque<u8>,
    pending_frames: VecDeque<Vec<u8>>,
    frames_dropped: u64,
    /// The guest went idle at its last run (with its timer's due time, if armed).
    idle: Option<Option<u64>>,
    /// An input reached the guest since its last run.
    guest_woken: bool,
    /// Guest time is kept near the TSC from here: (TSC microseconds, guest ticks).
    time_origin: Option<(u64, u64)>,
    guest_ipv4: Option<[u8; 4]>,
    next_status_us: u64,
    /// When the pair was first known to be formed (TSC microseconds).
    paired_at_us: Option<u64>,
    /// When the driver started (TSC microseconds).
    started_us: u64,
    /// Released disk writes not yet flushed to the shared image.
    shared_unsynced: bool,
    /// Kinds of refused frames already said.
    refusals_said: Vec<String>,
    /// Times this replica went live after losing its partner.
    failovers: u64,
    /// `arbiter_backend = etcd`: the arbiter runs here.
    shared_arbiter: Option<SharedLink>,
    /// What the last status line said of failover.
    said_failover_available: bool,
    /// The last join session logged as started.
    join_logged: u64,
    /// Instructions in the next run slice (adaptive, `resize_slice`).
    slice_instructions: u64,
    /// The machine's recent speed (0 before the first slice was timed).
    instructions_per_ms: u64,
}

fn now() -> Instant {
    Instant(tsc::now().0)
}

impl Driver {
    fn run(&mut self, mut replica: Replica) -> Summary {
        let started = tsc::now();
        let ending = loop {
            let step = self.turn(&mut replica);
            if let Some(ending) = self.ending(&replica, step) {
                // What the guest did before it stopped still leaves under the output rule:
                // wait (bounded) for the backup's acknowledgement of the last outputs.
                let drain_until = tsc::now().0 + self.drain_limit_us();
                while !matches!(ending, Ending::Halted(_))
                    && replica.status().outputs_held > 0
                    && replica.is_live()
                    && tsc::now().0 < drain_until
                {
                    self.wait(&mut replica, Step::WaitingForBackup);
                    self.turn_without_running(&mut replica);
                }
                if self.channel.is_some() {
                    self.print_status(&replica);
                }
                break ending;
            }
            self.wait(&mut replica, step);
        };
        Summary {
            ending,
            instructions: replica.machine().instret().0,
            elapsed_ms: (tsc::now().0 - started.0) / 1000,
            frames_dropped: self.frames_dropped,
            blocks_translated: replica
                .machine()
                .translator_stats()
                .map_or(0, |stats| stats.blocks_translated),
        }
    }

    /// Four peer timeouts: past the point where a silent backup is declared failed and the
    /// outputs are released anyway.
    fn drain_limit_us(&self) -> u64 {
        self.config
            .map_or(0, |config| u64::from(config.peer_timeout_ms) * 4000)
    }

    /// One turn: arrivals, timers, events, inputs, one run slice, outputs out.
    fn turn(&mut self, replica: &mut Replica) -> Step {
        self.turn_without_running(replica);
        if replica.is_live() && replica.is_paired() {
            self.feed(replica);
        }
        // An idle guest runs again only when something reached it: resuming it for every
        // acknowledgement would run its idle loop and log a horizon, which draws the next one.
        let step = match self.idle {
            Some(wake_at_ticks) if replica.is_live() && !self.guest_woken => {
                Step::Idle { wake_at_ticks }
            }
            _ => {
                let started = tsc::now().0;
                let step = replica.run(now(), self.slice_instructions);
                if let Step::Ran(executed) = step {
                    self.resize_slice(executed, tsc::now().0 - started);
                }
                step
            }
        };
        self.guest_woken = false;
        self.idle = match step {
            Step::Idle { wake_at_ticks } => Some(wake_at_ticks),
            _ => None,
        };
        self.after_run(replica);
        step
    }

    /// Sizes the next slice from the machine's speed, averaged over recent slices (a quarter
    /// weight for the newest), so one slice slowed by the host scheduling this machine out
    /// does not shrink the next one to nothing.
    fn resize_slice(&mut self, executed: u64, elapsed_us: u64) {
        if executed < RUN_SLICE_INSTRUCTIONS_MIN {
            return; // A slice cut short by an output or an idle guest says little.
        }
        let per_ms = executed * 1000 / elapsed_us.max(1);
        self.instructions_per_ms = match self.instructions_per_ms {
            0 => per_ms,
            average => (average * 3 + per_ms) / 4,
        };
        self.slice_instructions = (self.instructions_per_ms * RUN_SLICE_TARGET_US / 1000)
            .clamp(RUN_SLICE_INSTRUCTIONS_MIN, RUN_SLICE_INSTRUCTIONS_MAX);
    }

    /// Everything of a turn but the run slice.
    fn turn_without_running(&mut self, replica: &mut Replica) {
        self.receive(replica);
        let now = now();
        if replica.poll_at().is_some_and(|at| at <= now) {
            replica.handle_timeout(now);
        }
        // What the frames just received allow goes out before the next slice: a backup's
        // acknowledgement, a primary's released outputs.
        self.after_run(replica);
    }

    fn after_run(&mut self, replica: &mut Replica) {
        self.handle_events(replica);
        self.send_outputs(replica);
        self.send_datagrams(replica);
        self.pump_arbiter(replica);
        // A standalone replica keeps what it records for a driver that saves it; this one
        // does not.
        while replica.poll_recorded().is_some() {}
        self.answer_status_request(replica);
        if self.paired_at_us.is_none()
            && self.channel.is_some()
            && replica.is_paired()
            && replica.node().peer_heard()
        {
            self.paired_at_us = Some(tsc::now().0);
            log_event(
                LogLevel::Info,
                "pair_formed",
                replica.node().epoch().0,
                &[(
                    "ms_after_clock_start",
                    alloc::format!("{}", tsc::now().0 / 1000),
                )],
            );
            self.print_status(replica);
        }
        if self.channel.is_some()
            && (tsc::now().0 >= self.next_status_us
                || self.failover_available(replica) != self.said_failover_available)
        {
            self.print_status(replica);
        }
    }

    /// Takes what the log channel, the service NIC and COM1 received.
    fn receive(&mut self, replica: &mut Replica) {
        if let Some(channel) = &mut self.channel {
            channel.poll();
            while let Some(datagram) = channel.receive() {
                // Refusals are counted by the node (`frames_rejected` in the status line); the
                // first of each kind is said, since a wrong key or version is a configuration
                // error to fix.
                if let Err(error) = replica.handle_frame(now(), &datagram) {
                    let text = alloc::format!("{error}");
                    if !self.refusals_said.contains(&text)
                        && self.refusals_said.len() < REFUSALS_SAID_MAX
                    {
                        log_event(
                            LogLevel::Warn,
                            "frame_refused",
                            replica.node().epoch().0,
                            &[("reason", text.clone())],
                        );
                        self.refusals_said.push(text);
                    }
                }
            }
        }
        let live = replica.is_live();
        if let Some(nic) = &mut self.service_nic {
            while let Some(frame) = nic.receive_frame() {
                // A backup's guest takes its input from the log alone.
                if !live {
                    continue;
                }
                if self.pending_frames.len() < PENDING_FRAMES_MAX {
                    self.pending_frames.push_back(frame);
                } else {
                    self.frames_dropped += 1;
                }
            }
        }
        while self.pending_console.len() < PENDING_CONSOLE_BYTES_MAX {
            match serial::try_read_byte() {
                Some(byte) if live => self.pending_console.push_back(byte),
                Some(_) => {}
                None => break,
            }
        }
    }

    /// Inputs from outside, offered at this instruction boundary: the wall-clock base once,
    /// console bytes, received frames, entropy, and guest time kept near the TSC.
    fn feed(&mut self, replica: &mut Replica) {
        let now = now();
        if self.time_origin.is_none() {
            if replica.machine().instret().0 == 0 {
                match cmos::unix_time_ns() {
                    Some(ns) => {
                        if replica
                            .offer_input(now, &Input::WallClockBase { ns })
                            .is_err()
                        {
                            return;
                        }
                    }
                    None => println!("understudy: no CMOS clock; the guest's RTC starts at 1970"),
                }
            }
            self.time_origin = Some((tsc::now().0, replica.time_ticks()));
        }
        while let Some(&byte) = self.pending_console.front() {
            match self.offer(replica, now, &Input::ConsoleByte(byte)) {
                Ok(()) | Err(Refused::NoDevice | Refused::TooLarge) => {
                    self.pending_console.pop_front();
                }
                Err(_) => break,
            }
        }
        while let Some(frame) = self.pending_frames.front() {
            match self.offer(replica, now, &Input::Frame(frame.clone())) {
                Ok(()) | Err(Refused::NoDevice | Refused::TooLarge) => {
                    self.pending_frames.pop_front();
                }
                Err(_) => break,
            }
        }
        self.supply_entropy(replica, now);
        // A sleeping guest's time catches up when its timer is due (`wait`), not every turn.
        if self.idle.is_none() || self.guest_woken {
            self.catch_up_time(replica, now, CLOCK_LAG_TOLERANCE_TICKS);
        }
    }

    /// Offers one input to the guest; a taken input wakes an idle guest.
    fn offer(&mut self, replica: &mut Replica, now: Instant, input: &Input) -> Result<(), Refused> {
        replica.offer_input(now, input)?;
        self.guest_woken = true;
        Ok(())
    }

    /// Feeds the guest's entropy device what it asks for, from RDRAND. A failed RDRAND (the
    /// CPU ran out of entropy for now) leaves the request for the next turn.
    fn supply_entropy(&mut self, replica: &mut Replica, now: Instant) {
        let Some(rdrand) = self.rdrand else { return };
        let wanted = replica.wants_entropy().min(ENTROPY_CHUNK_BYTES_MAX);
        if wanted == 0 {
            return;
        }
        let mut bytes = Vec::with_capacity(wanted);
        while bytes.len() < wanted {
            let Some(word) = rdrand.get_u64() else { break };
            let take = (wanted - bytes.len()).min(8);
            bytes.extend_from_slice(&word.to_le_bytes()[..take]);
        }
        if !bytes.is_empty() {
            let _ = self.offer(replica, now, &Input::Entropy(bytes));
        }
    }

    /// Advances guest time to the TSC when it lags by more than `tolerance` ticks.
    fn catch_up_time(&mut self, replica: &mut Replica, now: Instant, tolerance: u64) {
        let Some((origin_us, origin_ticks)) = self.time_origin else {
            return;
        };
        let elapsed_us = tsc::now().0.saturating_sub(origin_us);
        let wall_ticks = origin_ticks + elapsed_us * TIMEBASE_HZ / 1_000_000;
        let guest_ticks = replica.time_ticks();
        if wall_ticks > guest_ticks + tolerance {
            let _ = self.offer(
                replica,
                now,
                &Input::AdvanceTime {
                    ticks: wall_ticks - guest_ticks,
                },
            );
        }
    }

    fn handle_events(&mut self, replica: &mut Replica) {
        while let Some(event) = replica.poll_event(now()) {
            match event {
                Event::RoleChanged { from, to, epoch } => {
                    if to == RoleKind::GoingLive
                        || (to == RoleKind::Solo && from != RoleKind::GoingLive)
                    {
                        self.failovers += 1;
                    }
                    let cause = replica.node().claim_cause().map_or("none", |c| c.as_str());
                    log_event(
                        LogLevel::Info,
                        "role_change",
                        epoch.0,
                        &[
                            ("from", alloc::format!("{from}")),
                            ("to", alloc::format!("{to}")),
                            ("claim_cause", String::from(cause)),
                        ],
                    );
                    self.print_status(replica);
                }
                // The appliance keeps no state of its own across boots: the arbiter's record,
                // which it reads back from its disk before it answers, tells a replica that
                // restarts after a failover that a newer epoch is live; it joins it.
                Event::PersistEpoch { epoch } => replica.epoch_persisted(epoch),
                Event::LeaveReplay { epoch, at, .. } => {
                    log_event(
                        LogLevel::Info,
                        "live",
                        epoch.0,
                        &[("instruction", alloc::format!("{}", at.0))],
                    );
                    self.time_origin = Some((tsc::now().0, replica.time_ticks()));
                }
                Event::AnnounceMac => {
                    if let Some(nic) = &mut self.service_nic {
                        for frame in announce_frames(GUEST_MAC, self.guest_ipv4) {
                            nic.send_frame(&frame);
                        }
                    }
                }
                Event::Divergence { first_diverged, .. } => log_event(
                    LogLevel::Error,
                    "divergence",
                    replica.node().epoch().0,
                    &[("first_diverged_at", alloc::format!("{}", first_diverged.0))],
                ),
                // Disk requests complete synchronously between run slices: nothing is in
                // flight at a failure.
                Event::ReissueInFlightIo => {}
                Event::SnapshotWanted => {
                    let join = replica.status().join;
                    if join.session != self.join_logged {
                        self.join_logged = join.session;
                        log_event(
                            LogLevel::Info,
                            "join_started",
                            replica.node().epoch().0,
                            &[("session", alloc::format!("{}", join.session))],
                        );
                    }
                }
                Event::InstallSnapshot { at, .. } => {
                    let join = replica.status().join;
                    let joined = replica.node().role() == RoleKind::Backup;
                    log_event(
                        if joined {
                            LogLevel::Info
                        } else {
                            LogLevel::Warn
                        },
                        if joined { "joined" } else { "join_failed" },
                        replica.node().epoch().0,
                        &[
                            ("instruction", alloc::format!("{}", at.0)),
                            ("state_bytes", alloc::format!("{}", join.bytes)),
                            (
                                "disk_ranges_copied",
                                alloc::format!("{}", join.disk_ranges_copied),
                            ),
                            (
                                "reason",
                                String::from(replica.join_error().unwrap_or("none"))
                                    .replace(' ', "-"),
                            ),
                        ],
                    );
                    self.print_status(replica);
                }
                Event::Transfer(_) | Event::Halted { .. } => {}
            }
        }
    }

    fn send_outputs(&mut self, replica: &mut Replica) {
        let now = now();
        let mut console = Vec::new();
        while let Some(output) = replica.poll_release(now) {
            if output.device == DISK {
                self.write_disk(replica, &output);
                continue;
            }
            // Whatever follows a disk write leaves only once the write is durable.
            self.sync_shared_image();
            if output.device == CONSOLE {
                console.extend_from_slice(&output.payload);
            } else if output.device == NET {
                if let Some(address) = guest_ipv4(GUEST_MAC, &output.payload) {
                    self.guest_ipv4 = Some(address);
                }
                if let Some(nic) = &mut self.service_nic {
                    nic.send_frame(&output.payload);
                }
            }
        }
        serial::write_raw(&console);
        // One flush covers every write released in this turn, before this turn's frames tell
        // the backup they were released.
        self.sync_shared_image();
    }

    /// Writes one released disk output to the shared image. Fencing: an output released in
    /// an older epoch than the node's, or reaching a replica that is not live, is refused
    /// and the appliance stops (ft/PROTOCOL.md, output lease).
    fn write_disk(&mut self, replica: &mut Replica, output: &ReleasedOutput) {
        let epoch = replica.node().epoch();
        if output.epoch < epoch || !replica.is_live() {
            crate::fail(format_args!(
                "fenced: a disk write released in epoch {} reached a {} of epoch {}; nothing written",
                output.epoch.0,
                replica.node().role(),
                epoch.0
            ));
        }
        let Some(image) = &self.shared_image else {
            crate::fail(format_args!("a disk output without a shared disk"));
        };
        let Some((offset, data)) = split_disk_payload(&output.payload) else {
            crate::fail(format_args!("a disk output without its offset"));
        };
        if image.0.lock().write_at(offset, data).is_err() {
            crate::fail(format_args!(
                "cannot write the shared disk at byte {offset}"
            ));
        }
        self.shared_unsynced = true;
        replica.disk_written(output);
    }

    fn sync_shared_image(&mut self) {
        if !self.shared_unsynced {
            return;
        }
        if let Some(image) = &self.shared_image {
            if image.0.lock().flush().is_err() {
                crate::fail(format_args!("cannot flush the shared disk"));
            }
        }
        self.shared_unsynced = false;
    }

    fn send_datagrams(&mut self, replica: &mut Replica) {
        let now = now();
        let (Some(channel), Some(config)) = (&mut self.channel, &self.config) else {
            while replica.poll_transmit(now).is_some() {}
            return;
        };
        while let Some(transmit) = replica.poll_transmit(now) {
            if let (ARBITER_ID, Some(link)) = (transmit.to, &mut self.shared_arbiter) {
                // The arbiter runs here (etcd); a frame it refuses is ours, counted nowhere.
                let _ = link.arbiter.handle_frame(&transmit.bytes);
                continue;
            }
            let to = match transmit.to {
                ARBITER_ID => config.arbiter,
                _ => config.peer().expect("a replica's config names its partner"),
            };
            channel.send(to, &transmit.bytes);
        }
        channel.poll();
    }

    /// Moves the in-process arbiter on (`arbiter_backend = etcd`): the register's answer to
    /// the operation in flight (from one endpoint after another until one answers), its next
    /// operation, and its answers to the node.
    fn pump_arbiter(&mut self, replica: &mut Replica) {
        let now = now();
        let (Some(link), Some(channel)) = (&mut self.shared_arbiter, &mut self.channel) else {
            return;
        };
        if let Some((op, endpoint)) = link.in_flight {
            match channel.http_poll() {
                None => {}
                Some(body) => {
                    let result = body.and_then(|body| understudy_replica::etcd::answer(op, &body));
                    match result {
                        Some(result) => {
                            link.in_flight = None;
                            link.arbiter.storage_result(now, result);
                        }
                        None if endpoint + 1 < link.endpoints.len() => {
                            link.in_flight = Some((op, endpoint + 1));
                            link.start(channel, op, endpoint + 1);
                        }
                        None => {
                            link.in_flight = None;
                            link.arbiter.storage_result(now, StorageResult::Unavailable);
                        }
                    }
                }
            }
        }
        if link.in_flight.is_none() {
            if let Some(op) = link.arbiter.poll_storage(now) {
                link.in_flight = Some((op, 0));
                link.start(channel, op, 0);
            }
        }
        while let Some(answer) = link.arbiter.poll_transmit(now) {
            let _ = replica.handle_frame(now, &answer.bytes);
        }
    }

    /// Sleeps until something can happen: a datagram, a service frame, a console byte, a
    /// timer of the node, or the guest's own timer on the TSC.
    fn wait(&mut self, replica: &mut Replica, step: Step) {
        let now_us = tsc::now().0;
        let mut deadline_us = match step {
            Step::Ran(_) => return,
            Step::Idle { wake_at_ticks } if replica.is_live() => {
                if !self.pending_frames.is_empty() || !self.pending_console.is_empty() {
                    return;
                }
                let guest = replica.time_ticks();
                let to_timer_us = wake_at_ticks.map_or(IDLE_POLL_MAX_US, |wake| {
                    wake.saturating_sub(guest) * 1_000_000 / TIMEBASE_HZ
                });
                now_us + to_timer_us.min(IDLE_POLL_MAX_US)
            }
            _ => now_us + IDLE_POLL_MAX_US,
        };
        if let Some(at) = replica.poll_at() {
            deadline_us = deadline_us.min(at.0);
        }
        if let Some(link) = &self.shared_arbiter {
            deadline_us = deadline_us.min(link.arbiter.poll_at().0);
            if link.in_flight.is_some() {
                // The etcd exchange is polled by the turn: come back soon.
                deadline_us = deadline_us.min(now_us + ETCD_POLL_US);
            }
        }
        let deadline = tsc::TscTicks(
            tsc::read().0 + tsc::ticks_from_micros(deadline_us.saturating_sub(tsc::now().0)),
        );
        let mut arrived = false;
        // Devices are polled, so the halt is short (`idle::halt_until` returns within 1 ms)
        // and the loop looks at them again after each.
        while tsc::read() < deadline {
            if self.something_arrived() {
                arrived = true;
                break;
            }
            idle::halt_until(deadline);
        }
        if let (Step::Idle { .. }, true, false) = (step, replica.is_live(), arrived) {
            // The guest slept until its timer: its time follows the TSC exactly, so the timer
            // fires when it is due.
            self.catch_up_time(replica, now(), 0);
        }
    }

    /// Polls the devices without taking anything: true when a datagram, a frame or a console
    /// byte waits.
    fn something_arrived(&mut self) -> bool {
        if let Some(channel) = &mut self.channel {
            channel.poll();
            if channel.has_datagram() {
                return true;
            }
        }
        if self.service_nic.as_ref().is_some_and(NetDevice::has_frame) {
            return true;
        }
        serial::has_byte()
    }

    fn ending(&self, replica: &Replica, step: Step) -> Option<Ending> {
        match step {
            Step::GuestStopped(Exit::PowerOff { code }) => Some(Ending::PowerOff { code }),
            Step::GuestStopped(Exit::Reset) => Some(Ending::Reset),
            Step::GuestStopped(Exit::GuestCrashed { cause, tval, pc }) => {
                Some(Ending::Crashed { cause, tval, pc })
            }
            Step::GuestStopped(other) => Some(Ending::Halted(alloc::format!("{other:?}"))),
            Step::Halted => {
                let reason = replica
                    .halt_explanation()
                    .unwrap_or_else(|| String::from("halted"));
                Some(Ending::Halted(reason))
            }
            _ => None,
        }
    }

    /// Whether a failure of either machine would be survived now: both replicas in step and
    /// the arbiter heard lately. It answers every report, and reports go out every peer
    /// timeout, so three and a half timeouts of silence mean it is gone (the hosted rule).
    fn failover_available(&self, replica: &Replica) -> bool {
        self.arbiter_reachable(replica)
            && replica.node().peer_heard()
            && replica.status().protected
            && matches!(replica.node().role(), RoleKind::Primary | RoleKind::Backup)
    }

    /// The arbiter answered within three and a half peer timeouts.
    fn arbiter_reachable(&self, replica: &Replica) -> bool {
        let peer_timeout_ms = self.config.map_or(0, |c| u64::from(c.peer_timeout_ms));
        replica
            .status()
            .arbiter_heard_at
            .is_some_and(|at| tsc::now().0.saturating_sub(at.0) / 1000 * 2 < peer_timeout_ms * 7)
    }

    /// One `key=value` line with the figures an operator and the tests read (a role's words
    /// joined by `-`, so every value is one word).
    fn print_status(&mut self, replica: &Replica) {
        self.said_failover_available = self.failover_available(replica);
        // A join's progress shows every second while it runs.
        let interval_us = if replica.status().join.phase == JoinPhase::Idle {
            STATUS_INTERVAL_US
        } else {
            JOIN_STATUS_INTERVAL_US
        };
        self.next_status_us = tsc::now().0 + interval_us;
        let pairs = self.status_pairs(replica);
        let mut line = String::from("understudy status");
        for (key, value) in &pairs {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            line.push_str(value);
        }
        println!("{line}");
    }

    /// The status as `(key, value)` pairs, each value one word (a role's words joined by
    /// `-`): the console's status line, and `/status` and `/status.json` over the network.
    fn status_pairs(&self, replica: &Replica) -> Vec<(&'static str, String)> {
        let status = replica.status();
        let now_us = tsc::now().0;
        let (sent, dropped) = self
            .channel
            .as_ref()
            .map_or((0, 0), |c| (c.bytes_sent, c.datagrams_dropped));
        let text = |value: &dyn core::fmt::Display| alloc::format!("{value}");
        vec![
            ("role", text(&status.role).replace(' ', "-")),
            ("epoch", text(&status.epoch.0)),
            ("instructions", text(&status.instructions)),
            ("log_end", text(&status.log_end.0)),
            ("acknowledged", text(&status.acknowledged.0)),
            ("lag_instructions", text(&status.lag_instructions)),
            ("slice_instructions", text(&self.slice_instructions)),
            ("outputs_held", text(&status.outputs_held)),
            ("digests_matched", text(&status.digests_matched)),
            ("log_bytes_sent", text(&sent)),
            ("datagrams_dropped", text(&dropped)),
            ("frames_rejected", text(&status.counters.frames_rejected)),
            ("retransmissions", text(&status.counters.retransmissions)),
            ("paired", text(&replica.is_paired())),
            (
                "failover_available",
                text(&self.failover_available(replica)),
            ),
            (
                "arbiter_silent_ms",
                status.arbiter_heard_at.map_or(String::from("never"), |at| {
                    text(&(now_us.saturating_sub(at.0) / 1000))
                }),
            ),
            (
                "protected_s",
                text(
                    &self
                        .paired_at_us
                        .map_or(0, |at| now_us.saturating_sub(at) / 1_000_000),
                ),
            ),
            (
                "running_s",
                text(&(now_us.saturating_sub(self.started_us) / 1_000_000)),
            ),
            ("protected", text(&status.protected)),
            ("join_phase", String::from(status.join.phase.as_str())),
            ("join_session", text(&status.join.session)),
            ("join_rounds", text(&status.join.rounds)),
            ("join_state_bytes", text(&status.join.bytes)),
            (
                "join_disk_hashed_bytes",
                text(&status.join.disk_hashed_bytes),
            ),
            (
                "join_disk_ranges_copied",
                text(&status.join.disk_ranges_copied),
            ),
            (
                "join_pause_ms",
                alloc::format!("{:.3}", status.join.pause_us as f64 / 1e3),
            ),
            ("joins_completed", text(&status.join.completed)),
            ("join_pieces", text(&status.join.pieces)),
            ("join_go_backs", text(&status.join.go_backs)),
            ("join_window", text(&status.join.window)),
            (
                "join_error",
                String::from(replica.join_error().unwrap_or("none")).replace(' ', "-"),
            ),
        ]
    }

    /// Answers a status request on the replication NIC, if one is waiting.
    fn answer_status_request(&mut self, replica: &Replica) {
        let Some(path) = self.channel.as_mut().and_then(LogChannel::status_request) else {
            return;
        };
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => (
                "200 OK",
                "text/plain; version=0.0.4",
                metrics::exposition(&self.figures(replica)),
            ),
            "/status" => {
                let mut body = String::new();
                for (key, value) in self.status_pairs(replica) {
                    body.push_str(&alloc::format!("{key}={value}\n"));
                }
                ("200 OK", "text/plain", body)
            }
            "/status.json" => (
                "200 OK",
                "application/json",
                status_json(&self.status_pairs(replica)),
            ),
            _ => (
                "404 Not Found",
                "text/plain",
                String::from("the appliance serves /metrics, /status and /status.json\n"),
            ),
        };
        if let Some(channel) = &mut self.channel {
            channel.status_answer(status, content_type, &body);
        }
    }

    /// The figures of the metrics exposition.
    fn figures(&self, replica: &Replica) -> metrics::Figures {
        let status = replica.status();
        let now_us = tsc::now().0;
        let instructions_per_second = MachineConfig::default().instructions_per_tick * TIMEBASE_HZ;
        metrics::Figures {
            status,
            peer_reachable: replica.node().peer_heard(),
            arbiter_reachable: self.arbiter_reachable(replica),
            failover_available: self.failover_available(replica),
            lag_seconds: status.lag_instructions as f64 / instructions_per_second as f64,
            log_bytes_sent: self.channel.as_ref().map_or(0, |c| c.bytes_sent),
            failovers: self.failovers,
            protected_seconds: self
                .paired_at_us
                .map_or(0.0, |at| now_us.saturating_sub(at) as f64 / 1e6),
            service_frames_dropped: self.frames_dropped,
        }
    }
}

/// Status pairs as one JSON object: numbers and booleans typed, the rest strings (the values
/// are single words of the status line, so they need no escaping beyond quotes).
fn status_json(pairs: &[(&'static str, String)]) -> String {
    let mut out = String::from("{");
    for (index, (key, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let typed = value.parse::<u64>().is_ok() || value == "true" || value == "false";
        if typed {
            out.push_str(&alloc::format!("\"{key}\":{value}"));
        } else {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&alloc::format!("\"{key}\":\"{escaped}\""));
        }
    }
    out.push('}');
    out
}

/// How severe an event line is; lines below the chosen level are not printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 0,
    Warn = 1,
    Info = 2,
}

impl LogLevel {
    pub fn parse(text: &str) -> Option<LogLevel> {
        Some(match text {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
        }
    }
}

/// The least severe level printed (`understudy.log_level=`), as `LogLevel as u8`.
static LOG_LEVEL: core::sync::atomic::AtomicU8 =
    core::sync::atomic::AtomicU8::new(LogLevel::Info as u8);

/// Chooses the least severe event level printed.
pub fn set_log_level(level: LogLevel) {
    LOG_LEVEL.store(level as u8, core::sync::atomic::Ordering::Relaxed);
}

/// The Unix time at the kernel's clock start, in milliseconds (0 without a CMOS clock).
static CLOCK_START_UNIX_MS: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(u64::MAX);

/// One event line on the console, as a log shipper parses it: `understudy event ts=...
/// level=... event=... epoch=... key=value...` (logfmt, the hosted replica's format).
fn log_event(level: LogLevel, name: &str, epoch: u64, fields: &[(&str, String)]) {
    use core::sync::atomic::Ordering;
    if level as u8 > LOG_LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let level = level.name();
    let mut start = CLOCK_START_UNIX_MS.load(Ordering::Relaxed);
    if start == u64::MAX {
        start = cmos::unix_time_ns()
            .map_or(0, |ns| (ns / 1_000_000).saturating_sub(tsc::now().0 / 1000));
        CLOCK_START_UNIX_MS.store(start, Ordering::Relaxed);
    }
    let time = logfmt::utc(start + tsc::now().0 / 1000);
    let mut line =
        alloc::format!("understudy event ts={time} level={level} event={name} epoch={epoch}");
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        line.push_str(&logfmt::value(value));
    }
    println!("{line}");
}
