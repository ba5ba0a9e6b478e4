//! The hosted replica driver: `understudy run` as primary or backup. A thin loop around
//! `understudy_replica::Replica`: UDP datagrams for the log channel, a TAP device for the
//! guest's service network, stdout for its console, the wall clock and `/dev/urandom`.
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant as WallInstant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use understudy_boot_config::{DiskMode, Execution, Role, SocketAddress};
use understudy_ft::shared::{SharedArbiter, StorageOp};
use understudy_ft::{
    ArbiterConfig, Epoch, Event, Incarnation, Instant, Key, Node, NodeConfig, NodeId, ReceiveError,
    RoleKind,
};
use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::{Exit, Input, Machine, MachineConfig, HOT_EXECUTIONS_DEFAULT};
use understudy_replica::announce::guest_ipv4;
use understudy_replica::{
    announce_frames, split_disk_payload, GuestIdentity, JoinPhase, Refused, Replica, SharedDisk,
    Status, Step, CONSOLE, DISK, NET,
};

use super::config::{channel_key, ArbiterBackend, ArbiterKeys, PairConfig};
use super::log::{self, Level};
use super::state::{StateDir, StatusReport};
use crate::disk::{open_regular_file, FileDisk, OverlayDisk};
use crate::net::{backend_from_spec, Arrival, NetBackend};
use crate::record::file_sha256;

/// The replicas' and the arbiter's ids on the log channel.
pub const PRIMARY_ID: NodeId = NodeId(1);
pub const BACKUP_ID: NodeId = NodeId(2);
pub const ARBITER_ID: NodeId = NodeId(3);
/// The guest's MAC address on the service network (the same on both machines: it moves at
/// go-live).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The guest's command line when the config gives none (the Debian kernel wants `no4lvl`).
pub const GUEST_CMDLINE_DEFAULT: &str = "console=ttyS0 earlycon no4lvl";
/// Instructions per run slice: a replica handles what arrived between slices, so a slice is
/// also how long an acknowledgement can wait on a busy backup (250 k instructions: about a
/// millisecond); the turn around it costs well under that.
const RUN_SLICE_INSTRUCTIONS: u64 = 250_000;
/// A state digest every this many instructions (about a second of guest time).
pub const DIGEST_EVERY_INSTRUCTIONS: u64 = 500_000_000;
/// Guest time may lag the wall clock by this much before the primary advances it.
const CLOCK_LAG_TOLERANCE_TICKS: u64 = TIMEBASE_HZ / 100;
/// Received service frames waiting for the guest; beyond this they are dropped as a NIC would.
const PENDING_FRAMES_MAX: usize = 1024;
/// Entropy goes to the guest in pieces of at most this size.
const ENTROPY_CHUNK_BYTES_MAX: usize = 256;
/// An arbiter unheard for this many report intervals (peer timeouts) counts as unreachable.
const ARBITER_SILENCE_MAX_REPORTS: f64 = 3.5;
/// The status file is rewritten this often.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often a running join's progress goes to the console.
const JOIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// The log channel's socket receive buffer (the kernel caps it at `net.core.rmem_max`).
const LOG_RECEIVE_BUFFER_BYTES: libc::c_int = 4 << 20;
/// Distinct kinds of refused frames reported before the driver stops saying more.
const REFUSALS_SAID_MAX: usize = 8;
/// Largest datagram read from the log channel.
const DATAGRAM_BYTES_MAX: usize = 65_536;

/// How the replica is started.
pub struct Options {
    /// How long a primary waits for its backup to confirm the pair before giving up.
    pub wait_for_partner: Duration,
}

/// What ended a replica.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    GuestPoweredOff { code: u16 },
    GuestStopped(String),
    Halted(String),
}

/// Runs one replica until its guest stops or it halts.
pub fn run(config: &PairConfig, options: &Options) -> Result<Ending> {
    let role = config.role();
    let guest = config.guest.as_ref().expect("replica configs name a guest");
    let ArbiterKeys::Replica(arbiter_key) = config.arbiter_keys else {
        unreachable!("replica configs hold one arbiter key")
    };
    let state = StateDir::open(&config.state_dir)?;
    // A machine that served after a failover has a partner that went on without it: it
    // joins that partner (whatever role its config prefers). One that never did starts its
    // configured half of a new pair, and joins instead if its partner turns out to be live
    // in a newer epoch already (`Node` handles that at the first frame).
    let rejoin_epoch = state.last_epoch()?.filter(|&epoch| epoch > 1);
    let incarnation = state.next_incarnation()?;

    let (machine, identity, shared_image) = build_machine(config, guest)?;
    let own = socket_address(
        match role {
            Role::Primary => config.boot.primary.address.0,
            _ => config.boot.backup.address.0,
        },
        config.boot.port,
    );
    let peer = socket_address(
        match role {
            Role::Primary => config.boot.backup.address.0,
            _ => config.boot.primary.address.0,
        },
        config.boot.port,
    );
    let arbiter = socket_address(config.boot.arbiter.address.0, config.boot.arbiter.port);
    let socket =
        UdpSocket::bind(own).with_context(|| format!("cannot bind the log channel to {own}"))?;
    enlarge_receive_buffer(&socket);
    let (sender, arrivals) = crate::live::arrival_channel();
    spawn_datagram_reader(socket.try_clone()?, sender.clone());
    let mut service: Option<Box<dyn NetBackend>> = match &config.service_net {
        Some(spec) => {
            let mut backend = backend_from_spec(spec).context("bad service_net")?;
            backend
                .start(sender.clone())
                .context("cannot start the service network")?;
            Some(backend)
        }
        None => None,
    };
    let shared_arbiter = match &config.arbiter_backend {
        ArbiterBackend::Builtin => None,
        ArbiterBackend::Etcd(etcd) => {
            let (ops, requests) = std::sync::mpsc::channel();
            super::etcd::spawn_worker(etcd.clone(), requests, sender.clone());
            let peer_timeout = config.limits.peer_timeout;
            // In process the arbiter serves this replica only; the other key is never used.
            let arbiter = SharedArbiter::new(
                ArbiterConfig {
                    me: ARBITER_ID,
                    replicas: [PRIMARY_ID, BACKUP_ID],
                    keys: [Key(arbiter_key.0), Key(arbiter_key.0)],
                    limits: config.limits.clone(),
                    incarnation: Incarnation(incarnation),
                },
                understudy_ft::Duration(peer_timeout.0 / 2),
                understudy_ft::Duration(peer_timeout.0 * 2),
            );
            Some(SharedLink { arbiter, ops })
        }
    };
    drop(sender);

    let (me, peer_id) = match role {
        Role::Primary => (PRIMARY_ID, BACKUP_ID),
        _ => (BACKUP_ID, PRIMARY_ID),
    };
    let node_config = NodeConfig {
        me,
        peer: peer_id,
        arbiter: ARBITER_ID,
        channel_key: channel_key(&config.boot.channel_key),
        arbiter_key: Key(arbiter_key.0),
        limits: config.limits.clone(),
        incarnation: Incarnation(incarnation),
    };
    let clock = WallInstant::now();
    let now = || Instant(clock.elapsed().as_micros() as u64);
    let mut replica = match rejoin_epoch {
        Some(epoch) => {
            let node = Node::joining(node_config, now(), Epoch(epoch));
            Replica::joining(machine, node, identity, DIGEST_EVERY_INSTRUCTIONS, now())
        }
        None => {
            let mut node = match role {
                Role::Primary => Node::primary(node_config, now()),
                _ => Node::backup(node_config, now()),
            };
            node.await_peer();
            state.save_epoch(node.epoch().0)?;
            Replica::new(machine, node, identity, DIGEST_EVERY_INSTRUCTIONS, now())
        }
    };
    log::init(config.log_level, config.log_format);
    log::event(
        Level::Info,
        "start",
        replica.node().epoch().0,
        &[
            ("role", role.as_str().into()),
            (
                "joining",
                if rejoin_epoch.is_some() { "yes" } else { "no" }.into(),
            ),
            ("log_channel", (&own.to_string()).into()),
            ("partner", (&peer.to_string()).into()),
            ("arbiter", (&arbiter.to_string()).into()),
        ],
    );

    let mut driver = Driver {
        socket,
        peer,
        arbiter,
        arrivals,
        service: service.take(),
        state,
        pending_frames: VecDeque::new(),
        frames_dropped: 0,
        idle: None,
        guest_woken: false,
        refusals_said: Vec::new(),
        time_origin: None,
        guest_ipv4: None,
        log_bytes_sent: 0,
        last_status: None,
        last_instructions: None,
        peer_timeout_s: config.limits.peer_timeout.as_millis() as f64 / 1e3,
        last_failover: None,
        failovers: 0,
        metrics: config
            .metrics_address
            .map(super::metrics::serve)
            .transpose()?,
        paired_at: None,
        shared_image,
        shared_arbiter,
        stdout: std::io::stdout(),
        join_started: None,
    };
    let started = WallInstant::now();
    let mut peer_found = false;
    let mut formed = false;
    loop {
        let step = driver.turn(&mut replica, now())?;
        if !peer_found && replica.node().peer_heard() {
            peer_found = true;
            log::event(Level::Info, "peer_found", replica.node().epoch().0, &[]);
        }
        if let Some(ending) = driver.ending(&replica, step) {
            if let Ending::Halted(reason) = &ending {
                log::event(
                    Level::Error,
                    "halted",
                    replica.node().epoch().0,
                    &[("reason", reason.into())],
                );
            }
            // What the guest did before it stopped still leaves under the output rule: a
            // primary waits for its backup's acknowledgement of its last outputs (its last
            // disk writes above all), as long as the backup can still give it.
            let drain_until = WallInstant::now() + drain_limit(&config.limits);
            while matches!(
                ending,
                Ending::GuestPoweredOff { .. } | Ending::GuestStopped(_)
            ) && replica.status().outputs_held > 0
                && replica.is_live()
                && WallInstant::now() < drain_until
            {
                driver.wait(&mut replica, Step::WaitingForBackup, now());
                driver.turn(&mut replica, now())?;
            }
            driver.write_status(&replica, now(), true)?;
            return Ok(ending);
        }
        // The pair formed once the backup confirmed the identity digests (or, on a backup,
        // once it followed a primary). A primary whose backup never did may also have lost
        // it and claimed in the meantime (a backup that halts on a mismatch falls silent):
        // it still has no pair to serve, whatever its role now.
        let role = replica.node().role();
        formed |= match role {
            RoleKind::Primary => replica.is_paired(),
            RoleKind::Backup | RoleKind::GoingLive => replica.node().peer_heard(),
            _ => false,
        };
        if !formed
            && matches!(
                role,
                RoleKind::Primary | RoleKind::ClaimingAsPrimary | RoleKind::Solo
            )
            && started.elapsed() > options.wait_for_partner
        {
            bail!(
                "no backup confirmed the pair within {} s: start the backup with the same guest and disk, \
                 and check that {peer} is reachable",
                options.wait_for_partner.as_secs()
            );
        }
        if replica.node().role() == RoleKind::Joining
            && replica.status().join.session == 0
            && started.elapsed() > options.wait_for_partner
        {
            bail!(
                "no live primary answered within {} s: start this machine once its partner serves, \
                 and check that {peer} is reachable{}",
                options.wait_for_partner.as_secs(),
                replica
                    .join_error()
                    .map(|why| format!(" (last attempt: {why})"))
                    .unwrap_or_default()
            );
        }
        if replica.node().role() == RoleKind::Backup
            && !replica.node().peer_heard()
            && started.elapsed() > options.wait_for_partner
        {
            bail!(
                "no primary was heard within {} s: start it with the same channel_key and version, \
                 and check that {peer} is reachable",
                options.wait_for_partner.as_secs()
            );
        }
        driver.wait(&mut replica, step, now());
    }
}

/// Asks for a receive buffer that holds a burst of log frames while the loop runs a slice:
/// a datagram dropped by a full buffer costs a retransmission round.
fn enlarge_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = LOG_RECEIVE_BUFFER_BYTES;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int; a refusal
    // (a system limit) only leaves the default buffer.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// How long a primary whose guest stopped waits for the acknowledgement of its last outputs:
/// past the point where a silent backup would be declared failed and the outputs released.
fn drain_limit(limits: &understudy_ft::Limits) -> Duration {
    Duration::from_millis(limits.peer_timeout.as_millis() * 4)
}

fn socket_address(address: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(address.into(), port))
}

/// The shared image as the driver writes it: released `DISK` outputs only.
struct SharedImage {
    file: std::fs::File,
    path: PathBuf,
    /// Written since the last sync.
    unsynced: bool,
}

impl SharedImage {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).with_context(|| {
            format!(
                "fail-stop: cannot write the shared disk {}",
                self.path.display()
            )
        })?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes the writes so far durable. The backup forgets a write once the primary says it
    /// released it (and then never reissues it), so a released write must be on stable
    /// storage before any later frame or output leaves this machine.
    fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file.sync_data().with_context(|| {
                format!(
                    "fail-stop: cannot sync the shared disk {}",
                    self.path.display()
                )
            })?;
            self.unsynced = false;
        }
        Ok(())
    }
}

/// Builds the guest's machine at power-on, the identity its partner must share and, for a
/// shared disk, the driver's handle to write the image.
fn build_machine(
    config: &PairConfig,
    guest: &super::config::GuestFiles,
) -> Result<(Machine, GuestIdentity, Option<SharedImage>)> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read the guest {what} {}", path.display()))
    };
    let kernel = read(&guest.kernel, "kernel")?;
    let initrd = guest
        .initrd
        .as_deref()
        .map(|p| read(p, "initrd"))
        .transpose()?;
    let machine_config = MachineConfig {
        memory_bytes: u64::from(config.boot.guest_memory_mib) * 1024 * 1024,
        bootargs: config
            .boot
            .guest_cmdline
            .as_ref()
            .map_or(GUEST_CMDLINE_DEFAULT, |c| c.as_str())
            .to_owned(),
        net_mac: config.service_net.as_ref().map(|_| GUEST_MAC),
        entropy: true,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&machine_config, &kernel, initrd.as_deref())
        .with_context(|| format!("cannot start the guest {}", guest.kernel.display()))?;
    crate::guest_memory::advise_huge_pages(&machine);
    if config.boot.execution == Execution::Translate {
        crate::code_memory::enable_translator(&mut machine, HOT_EXECUTIONS_DEFAULT)?;
    }
    let mut disk_sha256 = [0u8; 32];
    let mut shared_image = None;
    if let Some(path) = &guest.disk {
        // Both replicas hash the image before either runs the guest: the primary runs only
        // once the backup confirmed the digest, and nothing is written before that.
        let (digest, _) = file_sha256(path)
            .with_context(|| format!("cannot read the disk {}", path.display()))?;
        disk_sha256 = digest;
        if config.boot.disk == DiskMode::Shared {
            // The guest reads through an overlay that is never written (the shared disk
            // writes nothing itself); the driver writes released outputs through its own
            // handle.
            let image = OverlayDisk::open(path)
                .with_context(|| format!("cannot open the shared disk {}", path.display()))?;
            machine.attach_disk(
                Box::new(SharedDisk::new(Box::new(image))),
                b"understudy-disk",
            );
            let file = open_regular_file(path, std::fs::OpenOptions::new().write(true))
                .with_context(|| {
                    format!("cannot open the shared disk {} for writing", path.display())
                })?;
            shared_image = Some(SharedImage {
                file,
                path: path.clone(),
                unsynced: false,
            });
        } else {
            let disk = FileDisk::open(path)
                .with_context(|| format!("cannot open the disk {}", path.display()))?;
            machine.attach_disk(Box::new(disk), b"understudy-disk");
        }
    }
    Ok((machine, GuestIdentity { disk_sha256 }, shared_image))
}

fn spawn_datagram_reader(socket: UdpSocket, arrivals: SyncSender<Arrival>) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
        while let Ok((length, _)) = socket.recv_from(&mut buffer) {
            if arrivals
                .send(Arrival::Datagram(buffer[..length].to_vec()))
                .is_err()
            {
                return;
            }
        }
    });
}

/// An arbiter in process whose register is in etcd, and the worker that talks to etcd.
struct SharedLink {
    arbiter: SharedArbiter,
    ops: std::sync::mpsc::Sender<StorageOp>,
}

struct Driver {
    socket: UdpSocket,
    peer: SocketAddr,
    arbiter: SocketAddr,
    arrivals: Receiver<Arrival>,
    service: Option<Box<dyn NetBackend>>,
    state: StateDir,
    pending_frames: VecDeque<Vec<u8>>,
    frames_dropped: u64,
    /// The guest went idle at its last run (with its timer's due time, if armed).
    idle: Option<Option<u64>>,
    /// An input reached the guest since its last run.
    guest_woken: bool,
    /// Kinds of refused frames already reported.
    refusals_said: Vec<String>,
    /// Guest time is kept near wall time from here: (wall instant, guest ticks).
    time_origin: Option<(WallInstant, u64)>,
    guest_ipv4: Option<[u8; 4]>,
    log_bytes_sent: u64,
    last_status: Option<(WallInstant, u64)>,
    last_instructions: Option<(WallInstant, u64)>,
    peer_timeout_s: f64,
    last_failover: Option<SystemTime>,
    /// Times this replica went live after losing its partner.
    failovers: u64,
    /// The latest Prometheus exposition, served on `metrics_address`.
    metrics: Option<std::sync::Arc<std::sync::Mutex<String>>>,
    paired_at: Option<WallInstant>,
    /// `disk = shared`: the image, written with released disk outputs.
    shared_image: Option<SharedImage>,
    /// `arbiter_backend = etcd`: the arbiter runs here, over the cluster's register.
    shared_arbiter: Option<SharedLink>,
    stdout: std::io::Stdout,
    /// The join session being reported, when it was first seen and last logged.
    join_started: Option<(u64, WallInstant, WallInstant)>,
}

impl Driver {
    /// One turn of the loop: frames in, timers, events, inputs, one run slice, outputs out.
    fn turn(&mut self, replica: &mut Replica, now: Instant) -> Result<Step> {
        while let Ok(arrival) = self.arrivals.try_recv() {
            self.arrive(replica, now, arrival);
        }
        if replica.poll_at().is_some_and(|at| at <= now) {
            replica.handle_timeout(now);
        }
        self.handle_events(replica, now)?;
        // What the frames just received allow goes out before the next run slice, which may
        // take milliseconds: a backup's acknowledgement, a primary's released outputs.
        self.send_outputs(replica, now)?;
        self.send_datagrams(replica, now);
        self.pump_arbiter(replica, now);
        if replica.is_live() && replica.is_paired() {
            self.feed(replica, now);
        }
        // An idle guest runs again only when something reached it: resuming it for every
        // acknowledgement would run its idle loop and log a horizon, which draws the next
        // acknowledgement.
        let step = match self.idle {
            Some(wake_at_ticks) if replica.is_live() && !self.guest_woken => {
                Step::Idle { wake_at_ticks }
            }
            _ => replica.run(now, RUN_SLICE_INSTRUCTIONS),
        };
        self.guest_woken = false;
        self.idle = match step {
            Step::Idle { wake_at_ticks } => Some(wake_at_ticks),
            _ => None,
        };
        self.handle_events(replica, now)?;
        self.send_outputs(replica, now)?;
        self.send_datagrams(replica, now);
        self.write_status(replica, now, false)?;
        Ok(step)
    }

    fn arrive(&mut self, replica: &mut Replica, now: Instant, arrival: Arrival) {
        match arrival {
            Arrival::Datagram(bytes) => {
                // Rejections are counted by the node. A frame that is not ours at all (another
                // key or version) is said once per kind: it is a configuration error to fix.
                if let Err(error) = replica.handle_frame(now, &bytes) {
                    if matches!(
                        error,
                        ReceiveError::Decode(_) | ReceiveError::UnknownSender { .. }
                    ) {
                        let text = error.to_string();
                        if !self.refusals_said.contains(&text)
                            && self.refusals_said.len() < REFUSALS_SAID_MAX
                        {
                            log::event(
                                Level::Warn,
                                "frame_refused",
                                replica.node().epoch().0,
                                &[("reason", (&text).into())],
                            );
                            self.refusals_said.push(text);
                        }
                    }
                }
            }
            // A backup's guest takes its input from the log alone.
            Arrival::Frame(frame) if replica.is_live() => {
                if self.pending_frames.len() < PENDING_FRAMES_MAX {
                    self.pending_frames.push_back(frame);
                } else {
                    self.frames_dropped += 1;
                }
            }
            Arrival::Storage(result) => {
                if let Some(link) = &mut self.shared_arbiter {
                    link.arbiter.storage_result(now, result);
                }
                self.pump_arbiter(replica, now);
            }
            Arrival::Frame(_) | Arrival::ConsoleByte(_) | Arrival::ConsoleClosed => {}
        }
    }

    /// Inputs from outside, offered at this instruction boundary: the wall-clock base once,
    /// received frames, entropy, and guest time kept near the wall clock.
    fn feed(&mut self, replica: &mut Replica, now: Instant) {
        if self.time_origin.is_none() {
            if replica.machine().instret().0 == 0 {
                let ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                if replica
                    .offer_input(now, &Input::WallClockBase { ns })
                    .is_err()
                {
                    return;
                }
            }
            self.time_origin = Some((WallInstant::now(), replica.time_ticks()));
            self.paired_at.get_or_insert_with(WallInstant::now);
        }
        while let Some(frame) = self.pending_frames.front() {
            match self.offer(replica, now, &Input::Frame(frame.clone())) {
                Ok(()) | Err(Refused::NoDevice | Refused::TooLarge) => {
                    self.pending_frames.pop_front();
                }
                Err(_) => break,
            }
        }
        let wanted = replica.wants_entropy().min(ENTROPY_CHUNK_BYTES_MAX);
        if wanted > 0 {
            let mut bytes = vec![0u8; wanted];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut file| file.read_exact(&mut bytes))
                .expect("fail-stop: cannot read /dev/urandom");
            let _ = self.offer(replica, now, &Input::Entropy(bytes));
        }
        // A sleeping guest's time catches up when its timer is due (`wait`), not every
        // turn.
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

    fn catch_up_time(&mut self, replica: &mut Replica, now: Instant, tolerance: u64) {
        let Some((origin, origin_ticks)) = self.time_origin else {
            return;
        };
        let wall_ticks = origin_ticks + ticks_since(origin);
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

    fn handle_events(&mut self, replica: &mut Replica, now: Instant) -> Result<()> {
        while let Some(event) = replica.poll_event(now) {
            match event {
                Event::RoleChanged { from, to, epoch } => {
                    if to == RoleKind::GoingLive
                        || (to == RoleKind::Solo && from != RoleKind::GoingLive)
                    {
                        self.last_failover = Some(SystemTime::now());
                        self.failovers += 1;
                    }
                    let claiming = |role| {
                        matches!(
                            role,
                            RoleKind::ClaimingAsPrimary | RoleKind::ClaimingAsBackup
                        )
                    };
                    if claiming(to) && !claiming(from) {
                        let cause = replica.node().claim_cause().map_or("none", |c| c.as_str());
                        log::event(
                            Level::Warn,
                            "peer_lost",
                            epoch.0,
                            &[("cause", cause.into())],
                        );
                    }
                    if claiming(from) && !claiming(to) {
                        let granted = to != RoleKind::Halted;
                        log::event(
                            if granted { Level::Info } else { Level::Warn },
                            if granted {
                                "arbiter_granted"
                            } else {
                                "arbiter_refused"
                            },
                            epoch.0,
                            &[],
                        );
                    }
                    let (from, to) = (from.to_string(), to.to_string());
                    log::event(
                        Level::Info,
                        "role_change",
                        epoch.0,
                        &[("from", (&from).into()), ("to", (&to).into())],
                    );
                }
                Event::PersistEpoch { epoch } => {
                    self.state.save_epoch(epoch.0)?;
                    replica.epoch_persisted(epoch);
                }
                Event::LeaveReplay { epoch, at, .. } => {
                    log::event(
                        Level::Info,
                        "live",
                        epoch.0,
                        &[("instruction", at.0.into())],
                    );
                    self.time_origin = Some((WallInstant::now(), replica.time_ticks()));
                }
                Event::AnnounceMac => {
                    if let Some(service) = &mut self.service {
                        for frame in announce_frames(GUEST_MAC, self.guest_ipv4) {
                            if let Err(error) = service.send(&frame) {
                                log::event(
                                    Level::Warn,
                                    "announcement_not_sent",
                                    replica.node().epoch().0,
                                    &[("error", (&error.to_string()).into())],
                                );
                            }
                        }
                    }
                }
                Event::Divergence { first_diverged, .. } => {
                    log::event(
                        Level::Error,
                        "divergence",
                        replica.node().epoch().0,
                        &[("first_diverged_at", first_diverged.0.into())],
                    );
                }
                // Disk requests complete synchronously between run slices: nothing is in
                // flight at a failure.
                Event::ReissueInFlightIo => {}
                Event::SnapshotWanted => {
                    let join = replica.status().join;
                    if join.phase == JoinPhase::Hashing && join.disk_hashed_bytes == 0 {
                        log::event(
                            Level::Info,
                            "join_started",
                            replica.node().epoch().0,
                            &[("session", join.session.into())],
                        );
                    }
                }
                Event::InstallSnapshot { at, .. } => {
                    let join = replica.status().join;
                    let joined = replica.node().role() == RoleKind::Backup;
                    log::event(
                        if joined { Level::Info } else { Level::Warn },
                        if joined { "joined" } else { "join_failed" },
                        replica.node().epoch().0,
                        &[
                            ("instruction", at.0.into()),
                            ("rounds", u64::from(join.rounds).into()),
                            ("state_bytes", join.bytes.into()),
                            ("disk_ranges_copied", join.disk_ranges_copied.into()),
                            ("reason", replica.join_error().unwrap_or("").into()),
                        ],
                    );
                }
                Event::Transfer(_) | Event::Halted { .. } => {}
            }
        }
        Ok(())
    }

    fn send_outputs(&mut self, replica: &mut Replica, now: Instant) -> Result<()> {
        let mut console = false;
        while let Some(output) = replica.poll_release(now) {
            if output.device == DISK {
                self.write_disk(replica, &output)?;
                continue;
            }
            // Whatever follows a disk write leaves only once the write is durable.
            if let Some(image) = &mut self.shared_image {
                image.sync()?;
            }
            if output.device == CONSOLE {
                self.stdout.write_all(&output.payload)?;
                console = true;
            } else if output.device == NET {
                if let Some(address) = guest_ipv4(GUEST_MAC, &output.payload) {
                    self.guest_ipv4 = Some(address);
                }
                if let Some(service) = &mut self.service {
                    if let Err(error) = service.send(&output.payload) {
                        log::event(
                            Level::Debug,
                            "service_frame_not_sent",
                            replica.node().epoch().0,
                            &[("error", (&error.to_string()).into())],
                        );
                    }
                }
            }
        }
        if console {
            self.stdout.flush()?;
        }
        // Per batch, not per write: one sync covers every write released in this turn, and
        // it comes before this turn's frames tell the backup they were released.
        if let Some(image) = &mut self.shared_image {
            image.sync()?;
        }
        Ok(())
    }

    /// Writes one released disk output to the shared image. Fencing: an output released in
    /// an older epoch than the node's, or reaching a replica that is not live, is refused
    /// and the replica stops; a deposed primary cannot get here at all after the backup may
    /// have gone live, since it releases only within the output lease (ft/PROTOCOL.md).
    fn write_disk(
        &mut self,
        replica: &mut Replica,
        output: &understudy_ft::ReleasedOutput,
    ) -> Result<()> {
        let epoch = replica.node().epoch();
        if output.epoch < epoch || !replica.is_live() {
            bail!(
                "fenced: a disk write released in epoch {} reached a {} of epoch {}; nothing written",
                output.epoch.0,
                replica.node().role(),
                epoch.0
            );
        }
        let Some(image) = &mut self.shared_image else {
            bail!("fail-stop: a disk output without a shared disk");
        };
        let (offset, data) = split_disk_payload(&output.payload)
            .context("fail-stop: a disk output without its offset")?;
        image.write(offset, data)?;
        replica.disk_written(output);
        Ok(())
    }

    fn send_datagrams(&mut self, replica: &mut Replica, now: Instant) {
        while let Some(transmit) = replica.poll_transmit(now) {
            if let (ARBITER_ID, Some(link)) = (transmit.to, &mut self.shared_arbiter) {
                // Authenticated like any frame; a refused one is counted nowhere: it is ours.
                let _ = link.arbiter.handle_frame(&transmit.bytes);
                continue;
            }
            let to = if transmit.to == ARBITER_ID {
                self.arbiter
            } else {
                self.peer
            };
            self.log_bytes_sent += transmit.bytes.len() as u64;
            // A datagram that cannot leave now is lost as on any network; the protocol resends.
            let _ = self.socket.send_to(&transmit.bytes, to);
        }
    }

    /// Moves the in-process arbiter on: its next operation on etcd, its answers to the node.
    fn pump_arbiter(&mut self, replica: &mut Replica, now: Instant) {
        let Some(link) = &mut self.shared_arbiter else {
            return;
        };
        if let Some(op) = link.arbiter.poll_storage(now) {
            // The worker lives as long as the driver; a send cannot fail before the end.
            let _ = link.ops.send(op);
        }
        while let Some(answer) = link.arbiter.poll_transmit(now) {
            let _ = replica.handle_frame(now, &answer.bytes);
        }
    }

    /// Sleeps until something can happen: a datagram, a service frame, a timer of the node,
    /// or the guest's own timer on the wall clock.
    fn wait(&mut self, replica: &mut Replica, step: Step, now: Instant) {
        let arbiter_at = self
            .shared_arbiter
            .as_ref()
            .map(|link| link.arbiter.poll_at());
        let node_deadline = replica
            .poll_at()
            .into_iter()
            .chain(arbiter_at)
            .min()
            .map(|at| Duration::from_micros(at.0.saturating_sub(now.0)));
        let wait = match step {
            Step::Ran(_) => return,
            Step::Idle { wake_at_ticks } if replica.is_live() => {
                if !self.pending_frames.is_empty() {
                    return;
                }
                let guest = replica.time_ticks();
                let to_timer = wake_at_ticks.map_or(Duration::from_millis(50), |wake| {
                    duration_from_ticks(wake.saturating_sub(guest))
                });
                to_timer.min(Duration::from_millis(50))
            }
            _ => Duration::from_millis(20),
        };
        let wait = node_deadline.map_or(wait, |deadline| deadline.min(wait));
        let timed_out = match self.arrivals.recv_timeout(wait) {
            Ok(arrival) => {
                self.arrive(replica, now, arrival);
                false
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => true,
        };
        if let (Step::Idle { .. }, true, true) = (step, replica.is_live(), timed_out) {
            // The guest slept until its timer: its time follows the wall clock exactly, so
            // the timer fires when it is due. (Advancing on every wake-up instead would log
            // a time advance per acknowledgement, and each advance draws another one.)
            self.catch_up_time(replica, now, 0);
        }
    }

    fn ending(&self, replica: &Replica, step: Step) -> Option<Ending> {
        match step {
            Step::GuestStopped(Exit::PowerOff { code }) => Some(Ending::GuestPoweredOff { code }),
            Step::GuestStopped(exit) => Some(Ending::GuestStopped(format!("{exit:?}"))),
            Step::Halted => {
                let reason = replica
                    .halt_explanation()
                    .unwrap_or_else(|| "halted".to_owned());
                Some(Ending::Halted(reason))
            }
            _ => None,
        }
    }

    /// A running join's time to completion, estimated from its progress so far: hashing the
    /// disk and sending RAM once are most of the work (later rounds are small).
    fn join_estimate(
        &mut self,
        replica: &Replica,
        status: &Status,
        wall: WallInstant,
    ) -> Option<f64> {
        let join = status.join;
        if join.phase == JoinPhase::Idle {
            self.join_started = None;
            return None;
        }
        let started = match self.join_started {
            Some((session, at, _)) if session == join.session => at,
            _ => {
                self.join_started = Some((join.session, wall, wall));
                log::event(
                    Level::Info,
                    "join_progress",
                    status.epoch.0,
                    &[
                        ("session", join.session.into()),
                        ("phase", join.phase.as_str().into()),
                    ],
                );
                return None;
            }
        };
        let ram_bytes = replica.machine().ram().len() as u64;
        let total = (join.disk_bytes + ram_bytes) as f64;
        let done = (join.disk_hashed_bytes + join.bytes.min(ram_bytes)) as f64;
        let elapsed = wall.duration_since(started).as_secs_f64();
        let eta = if done > 0.0 {
            (elapsed * (total - done).max(0.0) / done).max(0.0)
        } else {
            f64::NAN
        };
        if !self.join_progress_due(wall) {
            return eta.is_finite().then_some(eta);
        }
        log::event(
            Level::Info,
            "join_progress",
            status.epoch.0,
            &[
                ("session", join.session.into()),
                ("phase", join.phase.as_str().into()),
                ("disk_hashed_bytes", join.disk_hashed_bytes.into()),
                ("disk_ranges_copied", join.disk_ranges_copied.into()),
                ("rounds", u64::from(join.rounds).into()),
                ("state_bytes", join.bytes.into()),
                ("eta_s", (&format!("{eta:.1}")).into()),
            ],
        );
        eta.is_finite().then_some(eta)
    }

    /// True once a second while a join runs: when its progress goes to the console.
    fn join_progress_due(&mut self, wall: WallInstant) -> bool {
        match &mut self.join_started {
            Some((_, _, logged)) if wall.duration_since(*logged) >= JOIN_PROGRESS_INTERVAL => {
                *logged = wall;
                true
            }
            _ => false,
        }
    }

    fn write_status(&mut self, replica: &Replica, now: Instant, force: bool) -> Result<()> {
        let wall = WallInstant::now();
        let previous = self.last_status;
        let previous_instructions = self.last_instructions;
        if !force && previous.is_some_and(|(at, _)| wall.duration_since(at) < STATUS_INTERVAL) {
            return Ok(());
        }
        let bandwidth_mbit_s = previous.map_or(0.0, |(at, bytes)| {
            let seconds = wall.duration_since(at).as_secs_f64().max(1e-3);
            (self.log_bytes_sent - bytes) as f64 * 8.0 / seconds / 1e6
        });
        self.last_status = Some((wall, self.log_bytes_sent));
        let status: Status = replica.status();
        let instructions_per_second = previous_instructions.map_or(0.0, |(at, count)| {
            let seconds = wall.duration_since(at).as_secs_f64().max(1e-3);
            status.instructions.saturating_sub(count) as f64 / seconds
        });
        self.last_instructions = Some((wall, status.instructions));
        let arbiter_silent_s = status
            .arbiter_heard_at
            .map(|at| now.0.saturating_sub(at.0) as f64 / 1e6);
        // Reports go out every peer timeout: three missed answers mean it is gone.
        let silence_max_s = ARBITER_SILENCE_MAX_REPORTS * self.peer_timeout_s;
        let arbiter_reachable = arbiter_silent_s.is_some_and(|s| s < silence_max_s);
        let failover_available = arbiter_reachable
            && replica.node().peer_heard()
            && status.protected
            && matches!(status.role, RoleKind::Primary | RoleKind::Backup);
        let report = StatusReport {
            status,
            peer_heard: replica.node().peer_heard(),
            paired: replica.is_paired(),
            log_bytes_sent: self.log_bytes_sent,
            log_mbit_s: bandwidth_mbit_s,
            frames_dropped: self.frames_dropped,
            last_failover: self.last_failover,
            protected_since: self.paired_at.map(|at| wall.duration_since(at)),
            instructions_per_second,
            instructions_per_guest_ms: (MachineConfig::default().instructions_per_tick
                * TIMEBASE_HZ) as f64
                / 1e3,
            arbiter_silent_s,
            arbiter_reachable,
            failover_available,
            failovers: self.failovers,
            join_eta_s: self.join_estimate(replica, &status, wall),
        };
        if let Some(metrics) = &self.metrics {
            if let Ok(mut text) = metrics.lock() {
                *text = super::metrics::exposition(&report, self.failovers);
            }
        }
        self.state.write_status(&report)
    }
}

/// The wall time as `2026-12-06T20:45:01.123Z`, for log lines that say when something
/// happened (civil date from days: Hinnant's algorithm).
pub fn utc_now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default())
}

/// `since` the Unix epoch as an RFC 3339 UTC time with milliseconds.
fn utc(since: Duration) -> String {
    understudy_replica::logfmt::utc(since.as_millis() as u64)
}

fn ticks_since(start: WallInstant) -> u64 {
    (start.elapsed().as_nanos() * u128::from(TIMEBASE_HZ) / 1_000_000_000) as u64
}

fn duration_from_ticks(ticks: u64) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000 / u128::from(TIMEBASE_HZ)) as u64)
}

/// The arbiter's log-channel address in a config.
pub fn arbiter_address(address: &SocketAddress) -> SocketAddr {
    socket_address(address.address.0, address.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_match_the_calendar() {
        assert_eq!(utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc(Duration::from_millis(951_782_400_500)),
            "2000-02-29T00:00:00.500Z"
        );
        assert_eq!(
            utc(Duration::from_millis(1_796_588_900_123)),
            "2026-12-06T20:28:20.123Z"
        );
    }
}
