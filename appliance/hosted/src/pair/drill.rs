//! Failover drills: a primary, a backup and an arbiter as three `understudy run` processes (or
//! three QEMU machines booting the appliance, `appliance.rs`) in a network namespace of their own, the guest's service network on a bridge with a client
//! address, a client load, and a fault (SIGKILL of a process, a cut log link). The README's
//! demo and the failover tests both run through here; the report's figures are measured, and
//! the tests assert them exactly.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use understudy_boot_config::Execution;

use super::appliance;
use super::download::SlowDownload;
use super::replica::GUEST_MAC;

/// The drills' peer timeout: three heartbeats of 30 ms missed declare a replica dead, so the
/// backup goes live before a client's second TCP retransmission (about 0.6 s after the first
/// lost segment). The protocol's default (1 s) suits links between machines.
pub const DRILL_PEER_TIMEOUT_MS: u64 = 300;
/// After the arbiter dies, the drill waits this many peer timeouts (and a status refresh)
/// before it reads the replicas' status: they report to the arbiter every peer timeout and
/// call it unreachable after 3.5 unanswered reports.
const ARBITER_SILENCE_WAIT_PEER_TIMEOUTS: u64 = 5;
/// A replica rewrites its status file at least this often.
const STATUS_REFRESH: Duration = Duration::from_millis(300);
/// The environment variable that marks the re-executed drill inside its namespace.
const INSIDE_ENV: &str = "UNDERSTUDY_DRILL_NETNS";
/// Names inside the namespace.
const BRIDGE: &str = "us-br0";
pub const TAPS: [&str; 2] = ["us-primary", "us-backup"];
/// The client's address on the service network and the guest's.
const CLIENT_CIDR: &str = "10.0.2.1/24";
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const REDIS_PORT: u16 = 6379;
const HTTP_PORT: u16 = 80;
/// The guests' counter service (`guest/counter`).
const COUNTER_PORT: u16 = 7;
/// How long the guest may take from power-on to answering (the Debian kernel boots in about
/// a minute under a replicated software machine on a small host).
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// A request without an answer for this long counts as a lost connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the drill waits for an answer that must not come (nobody may go live).
const NO_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How long a restarted arbiter may take until both replicas say failover is available.
const ARBITER_RETURN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a process may take to stop by itself after a fault (a fenced replica halts).
const HALT_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys the client increments (each INCR's answer is checked against its own count).
const COUNTER_KEYS: u64 = 8;

/// The fault a drill injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL the primary under load; the backup must go live.
    KillPrimary,
    /// SIGKILL the backup; the primary must serve on alone.
    KillBackup,
    /// SIGKILL the arbiter, then the primary: nobody may go live.
    KillArbiterThenPrimary,
    /// SIGKILL the arbiter (the pair serves on, saying failover is unavailable), start it
    /// again (it reads its decisions back), then SIGKILL the primary: the backup goes live.
    KillArbiterRestartThenPrimary,
    /// Drop every datagram between the replicas: exactly one may go on serving.
    CutLink,
    /// `--cycles` times: SIGKILL whichever replica is primary, then start it again; it joins
    /// the survivor (every third time from an empty disk and state directory, once killed
    /// again in the middle of its join) and the pair must be protected again, with digests
    /// compared, before the next kill. Each replica keeps its own ext4 disk, where redis
    /// keeps an append-only file.
    Rejoin,
}

/// The guest a drill runs.
#[derive(Clone, Debug)]
pub struct DrillGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    /// What the client's load talks to.
    pub service: Service,
    /// The last number of the guest's `/www/numbers.txt` (`understudy.numbers`).
    pub numbers: u32,
}

/// The guest's service the load runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// redis-server (the trixie guest): INCRs and SETs, all read back at the end.
    Redis,
    /// busybox httpd: one GET per connection.
    Http,
    /// The counter (`guest/counter`): one connection for the whole drill, every answer
    /// checked against the client's own count.
    Counter,
}

/// Where the drill's three machines run.
#[derive(Clone, Debug)]
pub enum Platform {
    /// Three `understudy run` processes on this host.
    Hosted,
    /// Three QEMU machines booting the appliance.
    Appliance(appliance::Setup),
}

/// How a drill runs.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    pub fault: Fault,
    pub guest: DrillGuest,
    /// A directory for configs, state and process logs (emptied first).
    pub work_dir: PathBuf,
    /// The namespace's name.
    pub namespace: String,
    /// The replicas' peer timeout (`peer_timeout_ms` in their configs).
    pub peer_timeout_ms: u64,
    /// Acknowledged requests before the fault.
    pub requests_before: u64,
    /// Acknowledged requests after the fault (when the service should go on).
    pub requests_after: u64,
    pub platform: Platform,
    /// Failover and rejoin cycles (`Fault::Rejoin`).
    pub cycles: u32,
    /// How `Fault::Rejoin` sets up the replicas' disks and the guest.
    pub rejoin: RejoinSetup,
    /// How the replicas execute the guest (`execution` in their configs).
    pub execution: Execution,
}

/// The disks and the guest's use of them in a rejoin drill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinSetup {
    /// Each replica's disk, in MiB.
    pub disk_mib: u64,
    /// When set, every cycle is of kind `changed`: before the killed replica starts again,
    /// this percentage of its disk's ranges is overwritten (a disk that fell behind).
    pub disk_change_percent: Option<u32>,
    /// redis keeps an append-only file on the disk (so the guest writes it during joins).
    pub redis_aof: bool,
}

impl Default for RejoinSetup {
    fn default() -> Self {
        RejoinSetup {
            disk_mib: 64,
            disk_change_percent: None,
            redis_aof: true,
        }
    }
}

/// What a drill measured.
#[derive(Debug, Default)]
pub struct Report {
    pub requests_acknowledged: u64,
    pub writes_lost: u64,
    pub writes_applied_twice: u64,
    pub reconnects: u64,
    /// Seconds from the fault to the first answer after it (None: no answer came).
    pub answer_after_fault_s: Option<f64>,
    /// The longest time the client waited for any answer, in seconds.
    pub longest_wait_s: f64,
    /// Log bytes per second the primary sent before the fault, in Mbit/s.
    pub log_mbit_s: f64,
    /// Each replica's last status: role and epoch.
    pub primary_role: String,
    pub primary_epoch: u64,
    pub backup_role: String,
    pub backup_epoch: u64,
    /// The exit status of each replica process that stopped (None: still running).
    pub primary_exit: Option<i32>,
    pub backup_exit: Option<i32>,
    /// The TAP the bridge last learned the guest's MAC on.
    pub guest_mac_port: String,
    /// What the old primary did when started again after the fault (kill-primary only):
    /// `rejoined` (it joined the new primary as its backup and the pair is protected),
    /// `exited-N`, or `not-rejoined` (neither within the time allowed).
    pub restarted_primary: String,
    /// Bytes of the page downloaded over one HTTP connection held open across the fault,
    /// when it arrived intact (None: no download, or it broke).
    pub download_bytes: Option<usize>,
    /// What the primary's and the backup's status said of failover after the arbiter died
    /// (kill-arbiter-then-primary only).
    pub failover_available: [String; 2],
    /// When the fault was injected (UTC).
    pub fault_at: String,
    /// Seconds from starting the three to the primary saying its backup confirmed the pair.
    pub protected_after_s: Option<f64>,
    /// The backup's lag behind the primary when the fault came, in instructions.
    pub backup_lag_instructions: u64,
    /// The appliance primary's status read over the network before the fault
    /// (`ok role=... epoch=...` or what went wrong; `not-checked` for hosted drills).
    pub status_check: String,
    /// `Fault::Rejoin`: one entry per completed cycle.
    pub rejoins: Vec<Rejoin>,
    /// Requests answered per second before the first fault.
    pub requests_per_s_before: f64,
}

/// One failover and rejoin cycle.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rejoin {
    /// How the killed replica came back: `stale` (its own disk and state), `empty` (a
    /// zeroed disk and no state) or `cut` (stale, killed once during its join).
    pub kind: String,
    /// Seconds from the restart to both replicas saying the pair is protected.
    pub seconds: f64,
    /// The guest's pause at the end of the join, in milliseconds (the live side's measure).
    pub pause_ms: f64,
    /// State bytes the joiner received (RAM, disk ranges, devices).
    pub state_bytes: u64,
    /// Disk ranges found different and copied.
    pub disk_ranges: u64,
    /// Requests the client had answered per second while the replica joined.
    pub requests_per_s: f64,
    /// State digests the new backup compared with the primary's after joining.
    pub digests_matched: u64,
}

impl Report {
    /// `key=value` lines, the format tests and scripts read.
    pub fn lines(&self) -> String {
        let option = |value: Option<i32>| value.map_or("running".to_owned(), |v| v.to_string());
        format!(
            "requests_acknowledged={}\nacknowledged_writes_lost={}\nwrites_applied_twice={}\n\
             reconnects={}\nanswer_after_fault_s={}\nlongest_wait_s={:.3}\nlog_mbit_s={:.3}\n\
             primary_role={}\nprimary_epoch={}\nbackup_role={}\nbackup_epoch={}\n\
             primary_exit={}\nbackup_exit={}\nguest_mac_port={}\nrestarted_primary={}\n\
             download_bytes={}\nfailover_available_without_arbiter={}\nfault_at={}\n\
             protected_after_s={}\nbackup_lag_instructions={}\nstatus_check={}\n\
             requests_per_s_before={:.1}\nrejoins={}\n{}",
            self.requests_acknowledged,
            self.writes_lost,
            self.writes_applied_twice,
            self.reconnects,
            self.answer_after_fault_s
                .map_or("none".to_owned(), |s| format!("{s:.3}")),
            self.longest_wait_s,
            self.log_mbit_s,
            self.primary_role,
            self.primary_epoch,
            self.backup_role,
            self.backup_epoch,
            option(self.primary_exit),
            option(self.backup_exit),
            self.guest_mac_port,
            if self.restarted_primary.is_empty() {
                "not-restarted"
            } else {
                &self.restarted_primary
            },
            self.download_bytes
                .map_or("none".to_owned(), |v| v.to_string()),
            self.failover_available.join(","),
            self.fault_at,
            self.protected_after_s
                .map_or("none".to_owned(), |s| format!("{s:.3}")),
            self.backup_lag_instructions,
            self.status_check,
            self.requests_per_s_before,
            self.rejoins.len(),
            self.rejoins
                .iter()
                .enumerate()
                .map(|(index, rejoin)| format!(
                    "rejoin_{}=kind:{} seconds:{:.3} pause_ms:{:.3} state_bytes:{} disk_ranges:{} digests_matched:{} requests_per_s:{:.1}\n",
                    index + 1,
                    rejoin.kind,
                    rejoin.seconds,
                    rejoin.pause_ms,
                    rejoin.state_bytes,
                    rejoin.disk_ranges,
                    rejoin.digests_matched,
                    rejoin.requests_per_s
                ))
                .collect::<String>(),
        )
    }
}

/// Runs a drill: outside its namespace, makes the namespace and runs itself inside it.
pub fn run(options: &DrillOptions, args_inside: &[String]) -> Result<Report> {
    if std::env::var_os(INSIDE_ENV).is_none() {
        return run_outside(options, args_inside);
    }
    inside(options)
}

fn run_outside(options: &DrillOptions, args_inside: &[String]) -> Result<Report> {
    let namespace = &options.namespace;
    if let Platform::Appliance(setup) = &options.platform {
        appliance::fetch_crates(setup)?;
    }
    // A namespace left by an interrupted drill goes first.
    let _ = Command::new("ip")
        .args(["netns", "del", namespace])
        .output();
    ip(&["netns", "add", namespace]).context("cannot make a network namespace (run as root)")?;
    let exe = std::env::current_exe()?;
    let output = Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(exe)
        .args(args_inside)
        .env(INSIDE_ENV, namespace)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let _ = Command::new("ip")
        .args(["netns", "del", namespace])
        .output();
    let output = output.context("cannot run the drill in its namespace")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{text}");
    ensure!(
        output.status.success(),
        "the drill failed ({})",
        output.status
    );
    parse_report(&text)
}

/// Reads a report back from its lines.
pub fn parse_report(text: &str) -> Result<Report> {
    let value = |key: &str| -> Result<String> {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix('='))
            })
            .map(str::to_owned)
            .with_context(|| format!("the drill's report has no {key}"))
    };
    let number = |key: &str| -> Result<u64> { Ok(value(key)?.parse()?) };
    let exit = |key: &str| -> Result<Option<i32>> {
        let text = value(key)?;
        Ok(if text == "running" {
            None
        } else {
            Some(text.parse()?)
        })
    };
    Ok(Report {
        requests_acknowledged: number("requests_acknowledged")?,
        writes_lost: number("acknowledged_writes_lost")?,
        writes_applied_twice: number("writes_applied_twice")?,
        reconnects: number("reconnects")?,
        answer_after_fault_s: value("answer_after_fault_s")?.parse().ok(),
        longest_wait_s: value("longest_wait_s")?.parse()?,
        log_mbit_s: value("log_mbit_s")?.parse()?,
        primary_role: value("primary_role")?,
        primary_epoch: number("primary_epoch")?,
        backup_role: value("backup_role")?,
        backup_epoch: number("backup_epoch")?,
        primary_exit: exit("primary_exit")?,
        backup_exit: exit("backup_exit")?,
        guest_mac_port: value("guest_mac_port")?,
        restarted_primary: value("restarted_primary")?,
        download_bytes: value("download_bytes")?.parse().ok(),
        fault_at: value("fault_at")?,
        protected_after_s: value("protected_after_s")?.parse().ok(),
        backup_lag_instructions: number("backup_lag_instructions")?,
        status_check: value("status_check")?,
        failover_available: {
            let text = value("failover_available_without_arbiter")?;
            let mut parts = text.splitn(2, ',').map(str::to_owned);
            [
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            ]
        },
        requests_per_s_before: value("requests_per_s_before")?.parse()?,
        rejoins: (1..=number("rejoins")?)
            .map(|index| parse_rejoin(&value(&format!("rejoin_{index}"))?))
            .collect::<Result<_>>()?,
    })
}

/// One `rejoin_N=kind:... seconds:...` value.
fn parse_rejoin(text: &str) -> Result<Rejoin> {
    let field = |key: &str| -> Result<&str> {
        text.split(' ')
            .find_map(|part| {
                part.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix(':'))
            })
            .with_context(|| format!("a rejoin without {key}: {text}"))
    };
    Ok(Rejoin {
        kind: field("kind")?.to_owned(),
        seconds: field("seconds")?.parse()?,
        pause_ms: field("pause_ms")?.parse()?,
        state_bytes: field("state_bytes")?.parse()?,
        disk_ranges: field("disk_ranges")?.parse()?,
        digests_matched: field("digests_matched")?.parse()?,
        requests_per_s: field("requests_per_s")?.parse()?,
    })
}

/// Runs `ip ARGS` (iproute2); its stderr becomes the error.
pub fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip (iproute2)")?;
    ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn say(text: &str) {
    eprintln!("drill: {text}");
}

/// The three processes.
struct Trio {
    exe: PathBuf,
    work_dir: PathBuf,
    platform: Platform,
    /// When the three were started, and how long the pair took to form after that.
    started: Instant,
    protected_after: Option<Duration>,
    arbiter: Option<Child>,
    primary: Option<Child>,
    backup: Option<Child>,
}

impl Trio {
    fn spawn(&self, role: &str, extra: &[&str]) -> Result<Child> {
        if let Platform::Appliance(setup) = &self.platform {
            return appliance::spawn(setup, &self.work_dir, role, extra.contains(&"--init"));
        }
        // Appended: a replica started again (rejoin drills) keeps its earlier lives' lines.
        let log = |suffix: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.work_dir.join(format!("{role}.{suffix}")))
        };
        Command::new(&self.exe)
            .arg("run")
            .arg("--config")
            .arg(self.work_dir.join(format!("{role}.conf")))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log("console")?)
            .stderr(log("log")?)
            .spawn()
            .with_context(|| format!("cannot start the {role}"))
    }

    /// A replica's status as `key=value` lines: the hosted status file, or the appliance's
    /// last status line on its console.
    fn status_file(&self, role: &str) -> String {
        match self.platform {
            Platform::Hosted => {
                std::fs::read_to_string(self.work_dir.join(role).join("status")).unwrap_or_default()
            }
            Platform::Appliance(_) => appliance::status_text(&self.work_dir, role),
        }
    }

    fn status(&self, role: &str) -> (String, u64) {
        let text = self.status_file(role);
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("")
                .to_owned()
        };
        (value("role"), value("epoch").parse().unwrap_or(0))
    }

    fn status_text(&self, role: &str, key: &str) -> String {
        let text = self.status_file(role);
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
            .to_owned()
    }

    fn status_number(&self, role: &str, key: &str) -> f64 {
        let text = self.status_file(role);
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        for child in [&mut self.primary, &mut self.backup, &mut self.arbiter]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn poll_exit(child: &mut Option<Child>) -> Option<i32> {
    let status = child.as_mut()?.try_wait().ok()??;
    Some(exit_code(status))
}

const CHANNEL_KEY: &str = "5c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b";

/// Per-drill keys: fresh random keys, so no example key is ever used for real.
fn random_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_configs(options: &DrillOptions) -> Result<()> {
    let dir = &options.work_dir;
    let guest = &options.guest;
    let keys = [random_key()?, random_key()?];
    let channel_key = random_key().unwrap_or_else(|_| CHANNEL_KEY.to_owned());
    if let Platform::Appliance(setup) = &options.platform {
        let [primary, backup] = keys;
        return appliance::prepare(setup, options, &[channel_key, primary, backup]);
    }
    // A rejoin drill gives each replica a disk of its own, where redis keeps its file.
    let disks = options.fault == Fault::Rejoin;
    let common = format!(
        "primary = 127.0.0.1/8\nbackup = 127.0.0.2/8\narbiter = 127.0.0.3:7100\nport = 7000\n\
         disk = separate\nchannel_key = {channel_key}\npeer_timeout_ms = {}\nguest_memory_mib = {}\n\
         execution = {}\nguest_cmdline = console=ttyS0 earlycon no4lvl understudy.ip=10.0.2.15/24 understudy.numbers={}{}\n\
         guest_kernel = {}\nguest_initrd = {}\n",
        options.peer_timeout_ms,
        guest.memory_mib,
        options.execution,
        guest.numbers,
        if disks && options.rejoin.redis_aof {
            " understudy.redis_aof=1"
        } else {
            ""
        },
        guest.kernel.display(),
        guest.initrd.display()
    );
    if disks {
        make_ext4(&dir.join("primary.img"), options.rejoin.disk_mib << 20)?;
        std::fs::copy(dir.join("primary.img"), dir.join("backup.img"))?;
        // On stable storage before the replicas start: the guest's first flush would
        // otherwise write the copy back inside a run slice and stall the replica for seconds.
        for role in ["primary", "backup"] {
            std::fs::File::open(dir.join(format!("{role}.img")))?.sync_all()?;
        }
    }
    for (index, role) in ["primary", "backup"].into_iter().enumerate() {
        let disk = if disks {
            format!("guest_disk = {role}.img\n")
        } else {
            String::new()
        };
        std::fs::write(
            dir.join(format!("{role}.conf")),
            format!(
                "role = {role}\n{common}{disk}service_net = tap:{}\nstate_dir = {role}\narbiter_key = {}\n",
                TAPS[index], keys[index]
            ),
        )?;
    }
    std::fs::write(
        dir.join("arbiter.conf"),
        format!(
            "role = arbiter\n{common}state_dir = arbiter\narbiter_key_primary = {}\narbiter_key_backup = {}\n",
            keys[0], keys[1]
        ),
    )?;
    Ok(())
}

/// An empty ext4 file system of `len_bytes` (e2fsprogs' `mkfs.ext4`).
fn make_ext4(path: &Path, len_bytes: u64) -> Result<()> {
    std::fs::File::create(path)?.set_len(len_bytes)?;
    // Inode tables and journal written now: a guest that mounts a lazily made file system
    // spends its first minutes writing them (ext4lazyinit), which is not the load measured.
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(path)
        .status()
        .context("cannot run mkfs.ext4 (e2fsprogs)")?;
    ensure!(status.success(), "mkfs.ext4 failed");
    Ok(())
}

/// Makes the drill's network in the current network namespace: `lo` up, the bridge with the
/// client address and the two replicas' TAPs on it.
pub fn make_network() -> Result<()> {
    ip(&["link", "set", "lo", "up"])?;
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", CLIENT_CIDR, "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    for tap in TAPS {
        ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        ip(&["link", "set", tap, "master", BRIDGE])?;
        ip(&["link", "set", tap, "up"])?;
    }
    Ok(())
}

/// The bridge port the guest's MAC was last learned on.
fn guest_mac_port() -> String {
    let mac = GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let output = Command::new("bridge")
        .args(["fdb", "show", "br", BRIDGE])
        .output();
    let text = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(&mac) && !line.contains("permanent"))
        .find_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "dev")?;
            words.next().map(str::to_owned)
        })
        .unwrap_or_else(|| "none".to_owned())
}

/// Drops every datagram between the two replicas' log-channel addresses.
fn cut_link(platform: &Platform) -> Result<()> {
    let hosted_rules = "table inet understudy_cut {\n chain out {\n  type filter hook output priority 0;\n  \
                 ip saddr 127.0.0.1 ip daddr 127.0.0.2 drop\n  ip saddr 127.0.0.2 ip daddr 127.0.0.1 drop\n }\n}\n";
    let rules = match platform {
        Platform::Hosted => hosted_rules,
        Platform::Appliance(_) => appliance::CUT_LINK_RULES,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run nft (nftables)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())?;
    ensure!(child.wait()?.success(), "nft refused the link cut");
    Ok(())
}

fn inside(options: &DrillOptions) -> Result<Report> {
    let dir = &options.work_dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    make_network()?;
    if let Platform::Appliance(_) = options.platform {
        appliance::make_network()?;
    }
    let mut trio = start_trio(&std::env::current_exe()?, options)?;
    say("primary, backup and arbiter started; waiting for the guest's services");
    let boot = Instant::now();
    let service = service_address(&options.guest);
    let mut client = Client::connect(service, options.guest.service, READY_TIMEOUT, &mut trio)?;
    say(&format!(
        "guest answers after {:.1} s",
        boot.elapsed().as_secs_f64()
    ));

    let mut report = Report::default();
    let expect_service = !matches!(options.fault, Fault::KillArbiterThenPrimary);
    // One HTTP connection, half read, stays open across the fault.
    let download = if expect_service && options.fault != Fault::Rejoin {
        Some(SlowDownload::start(
            SocketAddr::from((GUEST_IP, HTTP_PORT)),
            options.guest.numbers,
        )?)
    } else {
        None
    };
    let load_began = Instant::now();
    client.load(options.requests_before)?;
    report.requests_per_s_before =
        options.requests_before as f64 / load_began.elapsed().as_secs_f64().max(1e-3);
    report.log_mbit_s = trio.status_number("primary", "log_bytes_sent") * 8.0
        / trio.status_number("primary", "running_s").max(1e-3)
        / 1e6;
    report.protected_after_s = trio.protected_after.map(|d| d.as_secs_f64());
    report.backup_lag_instructions = trio.status_number("backup", "lag_instructions") as u64;
    report.status_check = match options.platform {
        Platform::Appliance(_) => appliance::check_primary_status(),
        Platform::Hosted => "not-checked".to_owned(),
    };
    let mut fault_time = Instant::now();
    report.fault_at = super::replica::utc_now();
    if options.fault == Fault::Rejoin {
        report.rejoins = rejoin_cycles(&mut trio, &mut client, options)?;
        client.verify()?;
        report.requests_acknowledged = client.acknowledged;
        report.writes_lost = client.lost;
        report.writes_applied_twice = client.twice;
        report.reconnects = client.reconnects;
        report.longest_wait_s = client.longest_wait.as_secs_f64();
        (report.primary_role, report.primary_epoch) = trio.status("primary");
        (report.backup_role, report.backup_epoch) = trio.status("backup");
        report.guest_mac_port = guest_mac_port();
        summarize(options.fault, &report);
        print!("{}", report.lines());
        return Ok(report);
    }
    match options.fault {
        Fault::KillPrimary => {
            say("SIGKILL to the primary");
            kill(&mut trio.primary);
        }
        Fault::KillBackup => {
            say("SIGKILL to the backup");
            kill(&mut trio.backup);
        }
        Fault::KillArbiterThenPrimary => {
            report.failover_available = serve_without_arbiter(&mut trio, &mut client, options)?;
            say("SIGKILL to the primary");
            kill(&mut trio.primary);
        }
        Fault::KillArbiterRestartThenPrimary => {
            report.failover_available = serve_without_arbiter(&mut trio, &mut client, options)?;
            say("starting the arbiter again: it reads its record back");
            trio.arbiter = Some(trio.spawn("arbiter", &[])?);
            let deadline = Instant::now() + ARBITER_RETURN_TIMEOUT;
            while ["primary", "backup"]
                .iter()
                .any(|role| trio.status_text(role, "failover_available") != "true")
            {
                ensure!(
                    Instant::now() < deadline,
                    "failover did not become available within {} s of the arbiter's restart",
                    ARBITER_RETURN_TIMEOUT.as_secs()
                );
                std::thread::sleep(STATUS_REFRESH);
            }
            say("failover available again; SIGKILL to the primary");
            fault_time = Instant::now();
            report.fault_at = super::replica::utc_now();
            kill(&mut trio.primary);
        }
        Fault::CutLink => {
            say("cutting the log link between the replicas");
            cut_link(&options.platform)?;
        }
        Fault::Rejoin => unreachable!("rejoin drills return above"),
    }
    if expect_service {
        client.answer_after = Some(fault_time);
        client.load(options.requests_after)?;
        report.answer_after_fault_s = client.first_answer_after;
        say(&format!(
            "service went on: first answer {:.3} s after the fault",
            report.answer_after_fault_s.unwrap_or(f64::NAN)
        ));
        client.verify()?;
        if let Some(download) = download {
            match download.finish() {
                Ok(bytes) => report.download_bytes = Some(bytes),
                Err(error) => say(&format!("the held HTTP download failed: {error:#}")),
            }
        }
    } else {
        // Nobody may go live: the client's next request stays unanswered.
        client.stream.set_read_timeout(Some(NO_ANSWER_WAIT))?;
        client.answer_timeout = NO_ANSWER_WAIT;
        let answered = client.request_once().is_ok();
        report.answer_after_fault_s = answered.then(|| fault_time.elapsed().as_secs_f64());
    }
    // Let a halting replica finish halting.
    std::thread::sleep(Duration::from_secs(3));
    report.requests_acknowledged = client.acknowledged;
    report.writes_lost = client.lost;
    report.writes_applied_twice = client.twice;
    report.reconnects = client.reconnects;
    report.longest_wait_s = client.longest_wait.as_secs_f64();
    if options.fault == Fault::CutLink {
        // One of the two halts; give it time.
        let deadline = Instant::now() + HALT_TIMEOUT;
        while Instant::now() < deadline
            && poll_exit(&mut trio.primary).is_none()
            && poll_exit(&mut trio.backup).is_none()
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    (report.primary_role, report.primary_epoch) = trio.status("primary");
    (report.backup_role, report.backup_epoch) = trio.status("backup");
    report.primary_exit = poll_exit(&mut trio.primary);
    report.backup_exit = poll_exit(&mut trio.backup);
    report.guest_mac_port = guest_mac_port();
    if matches!(
        options.fault,
        Fault::KillPrimary | Fault::KillArbiterRestartThenPrimary
    ) {
        say("restarting the old primary: it must join the new primary as its backup");
        trio.primary = Some(trio.spawn("primary", &[])?);
        let deadline = Instant::now() + REJOIN_TIMEOUT;
        report.restarted_primary = loop {
            if let Some(code) = poll_exit(&mut trio.primary) {
                break format!("exited-{code}");
            }
            if trio.status("primary").0 == "backup"
                && trio.status_text("primary", "protected") == "true"
                && trio.status_text("backup", "protected") == "true"
            {
                break "rejoined".to_owned();
            }
            if Instant::now() >= deadline {
                break "not-rejoined".to_owned();
            }
            std::thread::sleep(STATUS_REFRESH);
        };
        say(&format!("the old primary: {}", report.restarted_primary));
    }
    summarize(options.fault, &report);
    print!("{}", report.lines());
    Ok(report)
}

/// How long a restarted replica may take to join and the pair to be protected again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Requests the client sends between looks at the replicas' status while one joins.
const REQUESTS_PER_LOOK: u64 = 10;

/// `Fault::Rejoin`: kill the primary, keep the load going on the survivor, start the dead
/// one again and wait for the pair to be protected, `options.cycles` times.
fn rejoin_cycles(
    trio: &mut Trio,
    client: &mut Client,
    options: &DrillOptions,
) -> Result<Vec<Rejoin>> {
    let mut rejoins = Vec::new();
    for cycle in 1..=options.cycles {
        let live = ["primary", "backup"]
            .into_iter()
            .find(|role| trio.status(role).0 == "primary")
            .context("no replica says it is the protected primary")?;
        say(&format!(
            "cycle {cycle}: SIGKILL to the {live} (the live primary)"
        ));
        let child = if live == "primary" {
            &mut trio.primary
        } else {
            &mut trio.backup
        };
        kill(child);
        client.answer_after = Some(Instant::now());
        client.first_answer_after = None;
        client.load(options.requests_after)?;
        let kind = match (options.rejoin.disk_change_percent, cycle % 3) {
            (Some(_), _) => "changed",
            (None, 0) => "empty",
            (None, 2) => "cut",
            (None, _) => "stale",
        };
        if let Some(percent) = options.rejoin.disk_change_percent {
            change_disk(&trio.work_dir.join(format!("{live}.img")), percent, cycle)?;
        }
        if kind == "empty" {
            // A fresh machine: no state, a disk of zeroes of the same size.
            let dir = &trio.work_dir;
            std::fs::remove_dir_all(dir.join(live))?;
            let disk = dir.join(format!("{live}.img"));
            std::fs::remove_file(&disk)?;
            std::fs::File::create(&disk)?.set_len(options.rejoin.disk_mib << 20)?;
        }
        let started = Instant::now();
        let answered_before = client.acknowledged;
        let mut child = Some(trio.spawn(live, &[])?);
        if kind == "cut" {
            // Killed in the middle of its join, then started again: it must join afresh.
            wait_for_status(trio, client, &mut child, live, |trio| {
                matches!(
                    trio.status_text(live, "join_phase").as_str(),
                    "comparing" | "precopy"
                )
            })?;
            say(&format!(
                "cycle {cycle}: SIGKILL to the {live} during its join"
            ));
            kill(&mut child);
            child = Some(trio.spawn(live, &[])?);
        }
        let survivor = if live == "primary" {
            "backup"
        } else {
            "primary"
        };
        wait_for_status(trio, client, &mut child, live, |trio| {
            trio.status(live).0 == "backup"
                && trio.status_text(live, "protected") == "true"
                && trio.status_text(survivor, "protected") == "true"
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let requests_per_s = (client.acknowledged - answered_before) as f64 / seconds.max(1e-3);
        // The new backup compares the primary's periodic state digests from here on.
        wait_for_status(trio, client, &mut child, live, |trio| {
            trio.status_number(live, "digests_matched") >= 1.0
        })?;
        if live == "primary" {
            trio.primary = child;
        } else {
            trio.backup = child;
        }
        let rejoin = Rejoin {
            kind: kind.to_owned(),
            seconds,
            pause_ms: trio.status_number(survivor, "join_pause_ms"),
            state_bytes: trio.status_number(live, "join_state_bytes") as u64,
            disk_ranges: trio.status_number(live, "join_disk_ranges_copied") as u64,
            digests_matched: trio.status_number(live, "digests_matched") as u64,
            requests_per_s,
        };
        say(&format!(
            "cycle {cycle}: the {live} rejoined ({kind}) in {seconds:.1} s, pause {:.3} ms, {} state bytes, {} disk ranges",
            rejoin.pause_ms, rejoin.state_bytes, rejoin.disk_ranges
        ));
        rejoins.push(rejoin);
    }
    Ok(rejoins)
}

/// Bytes of the ranges `change_disk` overwrites: the ranges the join compares.
const CHANGED_RANGE_BYTES: u64 = 16 * 1024;

/// Overwrites `percent` of the 16 KiB ranges of the disk at `path`, spread evenly, with
/// bytes that depend on `seed` (a disk that fell behind its partner's).
fn change_disk(path: &Path, percent: u32, seed: u32) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let ranges = file.metadata()?.len() / CHANGED_RANGE_BYTES;
    let changed = ranges * u64::from(percent) / 100;
    let mut bytes = vec![0u8; CHANGED_RANGE_BYTES as usize];
    for index in 0..changed {
        let range = index * ranges / changed.max(1);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (i as u32 ^ seed ^ range as u32).to_le_bytes()[i % 4] | 1;
        }
        file.write_all_at(&bytes, range * CHANGED_RANGE_BYTES)?;
    }
    file.sync_all()?;
    Ok(())
}

/// Runs the load in small batches until `done` says so, failing if the replica `role`
/// (running as `child`) exits or `REJOIN_TIMEOUT` passes.
fn wait_for_status(
    trio: &Trio,
    client: &mut Client,
    child: &mut Option<Child>,
    role: &str,
    done: impl Fn(&Trio) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    while !done(trio) {
        if let Some(code) = poll_exit(child) {
            let log = std::fs::read_to_string(trio.work_dir.join(format!("{role}.log")))
                .unwrap_or_default();
            bail!("the {role} exited with status {code} while joining:\n{log}");
        }
        ensure!(
            Instant::now() < deadline,
            "the {role} did not rejoin within {} s; its status:\n{}",
            REJOIN_TIMEOUT.as_secs(),
            trio.status_file(role)
        );
        client.load(REQUESTS_PER_LOOK)?;
    }
    Ok(())
}

/// Kills the arbiter and runs the load without it: the pair serves on, but each replica's
/// status says a failover is unavailable (returned as the primary's and the backup's words).
fn serve_without_arbiter(
    trio: &mut Trio,
    client: &mut Client,
    options: &DrillOptions,
) -> Result<[String; 2]> {
    say("SIGKILL to the arbiter");
    kill(&mut trio.arbiter);
    std::thread::sleep(
        Duration::from_millis(ARBITER_SILENCE_WAIT_PEER_TIMEOUTS * options.peer_timeout_ms)
            + STATUS_REFRESH,
    );
    client.load(options.requests_after)?;
    Ok([
        trio.status_text("primary", "failover_available"),
        trio.status_text("backup", "failover_available"),
    ])
}

/// The guest's service the client talks to.
fn service_address(guest: &DrillGuest) -> SocketAddr {
    let port = match guest.service {
        Service::Redis => REDIS_PORT,
        Service::Http => HTTP_PORT,
        Service::Counter => COUNTER_PORT,
    };
    SocketAddr::from((GUEST_IP, port))
}

/// Writes the configs into the (existing) work directory and starts arbiter, backup and
/// primary from `exe` (an `understudy` binary) in the current network namespace.
fn start_trio(exe: &Path, options: &DrillOptions) -> Result<Trio> {
    write_configs(options)?;
    let mut trio = Trio {
        exe: exe.to_owned(),
        work_dir: options.work_dir.clone(),
        platform: options.platform.clone(),
        started: Instant::now(),
        protected_after: None,
        arbiter: None,
        primary: None,
        backup: None,
    };
    trio.arbiter = Some(trio.spawn("arbiter", &["--init"])?);
    trio.backup = Some(trio.spawn("backup", &[])?);
    trio.primary = Some(trio.spawn("primary", &[])?);
    Ok(trio)
}

/// A running pair, as a measurement sees it.
pub struct Pair {
    trio: Trio,
    service: SocketAddr,
}

impl Pair {
    /// The guest's service address (redis or httpd) on the bridge.
    pub fn service(&self) -> SocketAddr {
        self.service
    }

    /// A number from a replica's status file (`role` is "primary" or "backup"); 0 when the
    /// file or the key is missing.
    pub fn status_number(&self, role: &str, key: &str) -> f64 {
        self.trio.status_number(role, key)
    }

    /// The process id of "primary", "backup" or "arbiter" (None once it was stopped).
    pub fn pid(&self, role: &str) -> Option<u32> {
        let child = match role {
            "primary" => &self.trio.primary,
            "backup" => &self.trio.backup,
            "arbiter" => &self.trio.arbiter,
            _ => return None,
        };
        child.as_ref().map(Child::id)
    }
}

/// Starts primary, backup and arbiter from `exe` in the current network namespace, which the
/// caller made with [`make_network`]; waits until the guest's service answers (the fault
/// field of `options` is unused), runs `body` and stops the three whatever it returned.
pub fn with_pair<T>(
    exe: &Path,
    options: &DrillOptions,
    body: impl FnOnce(&Pair) -> Result<T>,
) -> Result<T> {
    let dir = &options.work_dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut trio = start_trio(exe, options)?;
    let service = service_address(&options.guest);
    drop(Client::connect(
        service,
        options.guest.service,
        READY_TIMEOUT,
        &mut trio,
    )?);
    let pair = Pair { trio, service };
    body(&pair)
}

/// What a user wants to know after a drill, in words.
fn summarize(fault: Fault, report: &Report) {
    let waited = match report.answer_after_fault_s {
        Some(seconds) => format!("the first answer came {seconds:.2} s after the fault"),
        None => "no answer came after the fault".to_owned(),
    };
    say(&format!(
        "fault: {fault:?} at {}; {waited}",
        report.fault_at
    ));
    say(&format!(
        "longest time the client saw no answer: {:.2} s",
        report.longest_wait_s
    ));
    say(&format!(
        "requests answered: {}; acknowledged writes lost: {}; applied twice: {}",
        report.requests_acknowledged, report.writes_lost, report.writes_applied_twice
    ));
    say(&format!(
        "client connections kept: {} (reconnects: {})",
        if report.reconnects == 0 {
            "all"
        } else {
            "not all"
        },
        report.reconnects
    ));
    match report.download_bytes {
        Some(bytes) => say(&format!(
            "HTTP download held open across the fault: {bytes} bytes, every one as expected"
        )),
        None if !matches!(fault, Fault::KillArbiterThenPrimary | Fault::Rejoin) => {
            say("HTTP download held open across the fault: BROKEN")
        }
        None => {}
    }
    say(&format!(
        "log bandwidth before the fault: {:.2} Mbit/s",
        report.log_mbit_s
    ));
    say(&format!(
        "now: primary {} (epoch {}), backup {} (epoch {}); the guest's MAC is on {}",
        report.primary_role,
        report.primary_epoch,
        report.backup_role,
        report.backup_epoch,
        report.guest_mac_port
    ));
}

fn kill(child: &mut Option<Child>) {
    if let Some(child) = child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One client connection and what it was told.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    service: Service,
    address: SocketAddr,
    /// How long an HTTP request may wait to connect and for its answer.
    answer_timeout: Duration,
    next: u64,
    counters: [u64; COUNTER_KEYS as usize],
    /// SET keys acknowledged.
    sets: Vec<u64>,
    acknowledged: u64,
    lost: u64,
    twice: u64,
    reconnects: u64,
    last_answer: Instant,
    longest_wait: Duration,
    answer_after: Option<Instant>,
    first_answer_after: Option<f64>,
}

impl Client {
    /// Connects once the guest answers (retrying until `timeout`).
    fn connect(
        address: SocketAddr,
        service: Service,
        timeout: Duration,
        trio: &mut Trio,
    ) -> Result<Client> {
        let deadline = Instant::now() + timeout;
        loop {
            for (role, child) in [
                ("primary", &mut trio.primary),
                ("backup", &mut trio.backup),
                ("arbiter", &mut trio.arbiter),
            ] {
                if let Some(code) = poll_exit(child) {
                    let log = std::fs::read_to_string(trio.work_dir.join(format!("{role}.log")))
                        .unwrap_or_default();
                    bail!("the {role} exited with status {code} before the guest answered:\n{log}");
                }
            }
            if trio.protected_after.is_none() && trio.status_text("primary", "paired") == "true" {
                trio.protected_after = Some(trio.started.elapsed());
            }
            if let Ok(stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                let mut client = Client::over(stream, address, service)?;
                // The services are up once the first request is answered.
                client
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(5)))?;
                if client.request_ping().is_ok() {
                    client.stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
                    return Ok(client);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "the guest did not answer within {} s",
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn over(stream: TcpStream, address: SocketAddr, service: Service) -> Result<Client> {
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            stream,
            service,
            address,
            answer_timeout: ANSWER_TIMEOUT,
            next: 0,
            counters: [0; COUNTER_KEYS as usize],
            sets: Vec::new(),
            acknowledged: 0,
            lost: 0,
            twice: 0,
            reconnects: 0,
            last_answer: Instant::now(),
            longest_wait: Duration::ZERO,
            answer_after: None,
            first_answer_after: None,
        })
    }

    fn request_ping(&mut self) -> Result<()> {
        match self.service {
            Service::Redis => {
                ensure!(
                    self.command(&["PING"])? == "+PONG",
                    "redis did not answer PONG"
                );
                Ok(())
            }
            Service::Http => self.http_get().map(|_| ()),
            // The first counted request: the load's count starts here.
            Service::Counter => self.count_once(),
        }
    }

    /// One counter request: the guest answers `N LINE`, N the lines this connection sent.
    fn count_once(&mut self) -> Result<()> {
        let request = format!("request-{}", self.next + 1);
        self.stream
            .write_all(format!("{request}\n").as_bytes())
            .context("the connection broke")?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .context("no answer (the connection broke or timed out)")?;
        ensure!(!line.is_empty(), "the guest closed the connection");
        let (count, echoed) = line
            .trim_end()
            .split_once(' ')
            .with_context(|| format!("the counter answered {line:?}"))?;
        ensure!(
            echoed == request,
            "the counter echoed {echoed:?} for {request:?}"
        );
        let count: u64 = count
            .parse()
            .with_context(|| format!("the counter answered {line:?}"))?;
        // A request the guest forgot answers less than expected; one it saw twice, more.
        let expected = self.next + 1;
        if count > expected {
            self.twice += count - expected;
        } else if count < expected {
            self.lost += expected - count;
        }
        self.next = count;
        Ok(())
    }

    /// Sends one request of the load and checks its answer; errors end the load.
    fn request_once(&mut self) -> Result<()> {
        match self.service {
            Service::Redis => {}
            Service::Http => {
                self.http_get()?;
                self.answered();
                return Ok(());
            }
            Service::Counter => {
                self.count_once()?;
                self.answered();
                return Ok(());
            }
        }
        let index = self.next;
        self.next += 1;
        if index.is_multiple_of(2) {
            let key = index / 2 % COUNTER_KEYS;
            let answer = self.command(&["INCR", &format!("understudy:counter:{key}")])?;
            let value: u64 = answer
                .strip_prefix(':')
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("INCR answered {answer:?}"))?;
            let expected = self.counters[key as usize] + 1;
            // An INCR applied twice answers more than expected; one lost answers less.
            if value > expected {
                self.twice += value - expected;
            } else if value < expected {
                self.lost += expected - value;
            }
            self.counters[key as usize] = value;
        } else {
            let answer = self.command(&[
                "SET",
                &format!("understudy:key:{index}"),
                &format!("value-{index}"),
            ])?;
            ensure!(answer == "+OK", "SET answered {answer:?}");
            self.sets.push(index);
        }
        self.answered();
        Ok(())
    }

    fn answered(&mut self) {
        let now = Instant::now();
        self.longest_wait = self.longest_wait.max(now - self.last_answer);
        self.last_answer = now;
        self.acknowledged += 1;
        if let (Some(since), None) = (self.answer_after, self.first_answer_after) {
            self.first_answer_after = Some((now - since).as_secs_f64());
        }
    }

    /// Runs `requests` answered requests. A broken redis connection is opened again and
    /// counted (a failover must not need that); three in a row end the load.
    fn load(&mut self, requests: u64) -> Result<()> {
        self.last_answer = Instant::now();
        let mut answered = 0;
        let mut broken_in_a_row = 0;
        while answered < requests {
            match self.request_once() {
                Ok(()) => {
                    answered += 1;
                    broken_in_a_row = 0;
                }
                Err(error) if self.service == Service::Redis && broken_in_a_row < 3 => {
                    say(&format!("connection broken ({error:#}); connecting again"));
                    broken_in_a_row += 1;
                    self.reconnects += 1;
                    let stream = TcpStream::connect_timeout(&self.address, ANSWER_TIMEOUT)?;
                    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
                    stream.set_nodelay(true)?;
                    self.reader = BufReader::new(stream.try_clone()?);
                    self.stream = stream;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Reads every acknowledged write back over the same connection.
    fn verify(&mut self) -> Result<()> {
        if self.service != Service::Redis {
            return Ok(());
        }
        for key in 0..COUNTER_KEYS {
            let answer = self.command(&["GET", &format!("understudy:counter:{key}")])?;
            let stored: u64 = if answer == "$-1" {
                0
            } else {
                answer.parse().unwrap_or(0)
            };
            let acknowledged = self.counters[key as usize];
            if stored < acknowledged {
                self.lost += acknowledged - stored;
            } else if stored > acknowledged {
                self.twice += stored - acknowledged;
            }
        }
        for index in self.sets.clone() {
            let answer = self.command(&["GET", &format!("understudy:key:{index}")])?;
            if answer != format!("value-{index}") {
                self.lost += 1;
            }
        }
        Ok(())
    }

    /// One redis command; the answer's first line, or a bulk string's contents.
    fn command(&mut self, words: &[&str]) -> Result<String> {
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        self.stream
            .write_all(request.as_bytes())
            .context("the connection broke")?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .context("no answer (the connection broke or timed out)")?;
        ensure!(!line.is_empty(), "the guest closed the connection");
        let line = line.trim_end().to_owned();
        if let Some(length) = line.strip_prefix('$') {
            let Ok(length) = length.parse::<usize>() else {
                return Ok(line);
            };
            let mut body = vec![0u8; length + 2];
            self.reader.read_exact(&mut body)?;
            body.truncate(length);
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        Ok(line)
    }

    /// One HTTP GET on a new connection (busybox httpd closes after each answer); a
    /// connection that cannot be made counts as a reconnect.
    fn http_get(&mut self) -> Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&self.address, self.answer_timeout)
            .context("cannot connect to the guest's httpd")?;
        stream.set_read_timeout(Some(self.answer_timeout))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        ensure!(
            answer.starts_with(b"HTTP/1.") && answer.windows(6).any(|w| w == b"200 OK"),
            "httpd answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
        Ok(answer)
    }
}

/// The drill's defaults for a guest directory from `guest/build --print-paths`.
pub fn guest_from_artifacts(paths: &[(String, PathBuf)], name: &str) -> Result<DrillGuest> {
    let find = |key: &str| {
        paths
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("guest/build printed no {key}"))
    };
    Ok(DrillGuest {
        kernel: find(&format!("{name}_kernel"))?,
        initrd: find(&format!("{name}_initramfs"))?,
        memory_mib: if name == "trixie" { 256 } else { 128 },
        service: if name == "trixie" {
            Service::Redis
        } else {
            Service::Http
        },
        numbers: super::download::NUMBERS_DEFAULT,
    })
}

/// Runs `guest/build NAME` from the source tree (building the guest with progress when it is
/// missing) and returns its artifact paths.
pub fn build_guest(source_root: &Path, name: &str) -> Result<Vec<(String, PathBuf)>> {
    let script = source_root.join("guest/build");
    let status = Command::new(&script)
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(status.success(), "guest/build {name} failed");
    let output = Command::new(&script)
        .args(["--print-paths", name])
        .output()?;
    ensure!(output.status.success(), "guest/build --print-paths failed");
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
        .collect())
}
