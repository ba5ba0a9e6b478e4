//! The `understudy` command-line program.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};

use understudy::code_memory;
use understudy::demo;
use understudy::disk::{FileDisk, OverlayDisk};
use understudy::gdb::GdbDebugger;
use understudy::live::{self, ClockMode, Ending, Recorder, World};
use understudy::net::backend_from_spec;
use understudy::pair::{self, config::PairConfig, drill::Fault};
use understudy::record::{
    file_sha256, Header, ImageRef, ImageRole, LogWriter, ENTRIES_VERSION, LOG_VERSION,
};
use understudy::replay;
use understudy_boot_config::{Execution, Role};
use understudy_ft::sim::{self, SimCommand};
use understudy_machine::{Machine, MachineConfig, HOT_EXECUTIONS_DEFAULT};

/// Exit status when the guest crashed or could not wake up (a guest's own failure code is
/// passed through unchanged).
const EXIT_GUEST_CRASHED: u8 = 125;
const EXIT_INSTRUCTION_LIMIT: u8 = 124;
const EXIT_USAGE: u8 = 2;
const EXIT_FAILURE: u8 = 1;
const MEMORY_MIB_DEFAULT: u64 = 128;
/// The guest's MAC address: locally administered, fixed so the guest's view is reproducible.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Parser)]
#[command(
    name = "understudy",
    version,
    about = "A fault-tolerant appliance around a deterministic RISC-V machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this machine's role of a fault-tolerant pair (primary, backup or arbiter).
    Run(RunRole),
    /// Show a running replica's role, epoch, log lag and outputs held.
    Status(StatusArgs),
    /// Run one unreplicated guest: console on stdout, stdin to the UART; the exit status is
    /// the guest's finisher code (0 for pass or power off), 124 at --max-instructions, 125
    /// when the guest crashed or can never wake up.
    /// Run a failover drill: primary, backup and arbiter in a network namespace, a client
    /// load, a fault, and what the client saw.
    Drill(DrillArgs),
    /// Drill after drill with faults drawn from a seed (kills and link cuts), each checked
    /// against the pair's promises; a failure names its round and seed.
    Soak(SoakArgs),
    RunGuest(RunGuest),
    /// Re-execute a recorded run with no external input and check it reaches the same
    /// states; never writes to the recorded images.
    Replay(Replay),
    /// The failover demo: primary, backup and arbiter on this machine in a network namespace
    /// of their own, the redis guest, a client load, SIGKILL of the primary, and what the
    /// client saw (the same as `drill` with its defaults).
    Demo(DrillArgs),
    /// Show the machine's determinism on the built-in guest: run it with console input
    /// typed at chosen instruction counts, replay it with other run budgets and compare the
    /// state digests, then change one bit of one input and watch the digests part.
    ReplayDemo,
    /// Run the replication protocol's deterministic simulation: primary, backup and arbiter
    /// under seeded network faults, crashes and clock drift, with safety and liveness checks.
    Simulate(Simulate),
}

#[derive(clap::Args)]
struct RunGuest {
    /// A RISC-V ELF executable (entered in M-mode) or a Linux `Image` (entered in S-mode).
    #[arg(long)]
    kernel: PathBuf,
    /// An initial RAM disk for a Linux guest.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// A raw disk image for the guest's virtio-blk device (/dev/vda); the guest writes to it.
    #[arg(long)]
    disk: Option<PathBuf>,
    /// The guest's network (a virtio-net device): `user:hostfwd=tcp:HOSTPORT-GUESTPORT[,...]`
    /// (no root needed; the guest is 10.0.2.15/24, the host 10.0.2.2) or `tap:IFNAME`.
    #[arg(long)]
    net: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = MEMORY_MIB_DEFAULT)]
    memory_mib: u64,
    /// Stop after this many instructions (exit status 124).
    #[arg(long)]
    max_instructions: Option<u64>,
    /// How guest time relates to the wall clock.
    #[arg(long, value_enum, default_value_t = ClockMode::Wall)]
    clock: ClockMode,
    /// Record every nondeterministic input to this log (`understudy replay LOG` re-runs it);
    /// the disk is then used through a copy-on-write overlay and left unchanged.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Print `digest <instruction-count> <hex>` to stderr every N instructions.
    #[arg(long)]
    digest_every: Option<u64>,
    /// Print instructions, seconds and MIPS to stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Run every instruction in the interpreter, the reference, instead of translating hot
    /// guest code to x86-64 (same instructions, counts and digests; slower).
    #[arg(long)]
    interpret: bool,
    /// Translate a block once it has run this many times (1: every block at once).
    #[arg(long, default_value_t = HOT_EXECUTIONS_DEFAULT, value_name = "RUNS")]
    translate_after: u32,
    /// At the end, write /tmp/perf-PID.map naming each translated block by its guest pc
    /// (`guest_<pc>`), so `perf record` / `perf report` of this run attribute translated
    /// code to guest addresses.
    #[arg(long, conflicts_with = "interpret")]
    perf_map: bool,
}

#[derive(clap::Args)]
struct RunRole {
    /// The role config (configs/hosted-*.conf shows every key).
    #[arg(long)]
    config: PathBuf,
    /// Overrides the config's role.
    #[arg(long, value_parser = ["primary", "backup", "arbiter"])]
    role: Option<String>,
    /// Primary: how long to wait for the backup to confirm the pair.
    #[arg(long, default_value_t = 120)]
    wait_for_partner_s: u64,
    /// Arbiter: create the record of a new pair when the state directory has none.
    #[arg(long)]
    init: bool,
}

#[derive(clap::Args)]
struct DrillArgs {
    /// The fault to inject.
    #[arg(long, value_enum, default_value_t = Fault::KillPrimary)]
    fault: Fault,
    /// The guest: `trixie` (redis, the Debian kernel) or `minimal` (httpd, Linux 6.1).
    #[arg(long, default_value = "trixie", value_parser = ["trixie", "minimal"])]
    guest: String,
    /// Work directory for configs, state and logs.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Answered requests before the fault.
    #[arg(long, default_value_t = 300)]
    requests_before: u64,
    /// Answered requests after the fault.
    #[arg(long, default_value_t = 300)]
    requests_after: u64,
    /// The network namespace's name.
    #[arg(long, default_value = "understudy-drill")]
    namespace: String,
    /// The replicas' peer timeout in milliseconds (default: 300 hosted, 1000 on the appliance).
    #[arg(long)]
    peer_timeout_ms: Option<u64>,
    /// Where the three run: `hosted` processes, or `appliance` QEMU machines (TCG) booting
    /// the bare-metal kernel with the minimal guest and its counter service.
    #[arg(long, default_value = "hosted", value_parser = ["hosted", "appliance"])]
    platform: String,
    /// The client's load on the minimal guest: `http` (a GET per connection; the hosted
    /// default) or `counter` (one connection for the whole drill; the appliance's).
    #[arg(long, value_parser = ["http", "counter"])]
    load: Option<String>,
    /// Who decides epochs on the appliance: the `builtin` arbiter machine, or `etcd` (one
    /// member in the namespace; the replicas ask it themselves).
    #[arg(long, default_value = "builtin", value_parser = ["builtin", "etcd"])]
    arbiter: String,
    /// The appliance's guest disk: `separate` (a copy each) or `shared` (one image).
    #[arg(long, default_value = "separate", value_parser = ["separate", "shared"])]
    disk: String,
    /// Failover and rejoin cycles of `--fault rejoin`.
    #[arg(long, default_value_t = 10)]
    cycles: u32,
    /// `--fault rejoin`: each replica's disk in MiB.
    #[arg(long, default_value_t = 64)]
    disk_mib: u64,
    /// `--fault rejoin`: overwrite this percentage of the killed replica's disk ranges before
    /// it starts again (every cycle then is of kind `changed`).
    #[arg(long)]
    disk_change_percent: Option<u32>,
    /// `--fault rejoin`: redis keeps no file on the disk (the disks then stay identical).
    #[arg(long)]
    no_redis_aof: bool,
    /// How the replicas execute the guest: `translate` hot code (the default) or
    /// `interpret` every instruction (`execution` in their configs).
    #[arg(long, default_value = "translate", value_parser = ["translate", "interpret"])]
    execution: String,
}

#[derive(clap::Args)]
struct SoakArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// The guest: `minimal` (httpd, boots in a second) or `trixie` (redis).
    #[arg(long, default_value = "minimal", value_parser = ["trixie", "minimal"])]
    guest: String,
    #[arg(long, default_value_t = 100)]
    requests_before: u64,
    #[arg(long, default_value_t = 100)]
    requests_after: u64,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The role config of the replica to show.
    #[arg(long)]
    config: PathBuf,
    /// One JSON object instead of `key=value` lines.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct Replay {
    /// A log written by `understudy run-guest --record`.
    log: PathBuf,
    /// Print `digest <instruction-count> <hex>` to stderr every N instructions.
    #[arg(long)]
    digest_every: Option<u64>,
    /// Print the guest's console output to stdout.
    #[arg(long)]
    console: bool,
    /// Serve the GDB remote protocol on this TCP address (`127.0.0.1:1234`; port 0 picks
    /// one) and wait for GDB before the guest runs; connect with
    /// `gdb-multiarch -ex 'target remote ADDR'`. Stops and steps never move an input.
    #[arg(long, value_name = "ADDR")]
    gdb: Option<String>,
    /// Run every instruction in the interpreter instead of translating hot code (the log's
    /// digests must match either way, whichever way it was recorded).
    #[arg(long)]
    interpret: bool,
}

#[derive(clap::Args)]
struct Simulate {
    /// Run this many seeds (starting at --first).
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<u64>,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run one seed and print its event trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Longer fault phases per seed.
    #[arg(long)]
    soak: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let kind = error.kind();
            if matches!(
                kind,
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line says what is wrong.
            let text = error.render().to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see `understudy --help`)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run_role(args),
        Command::Status(args) => show_status(args),
        Command::Drill(args) => drill(args),
        Command::Soak(args) => soak(args),
        Command::RunGuest(args) => run_guest(args),
        Command::Replay(args) => run_replay(args),
        Command::Demo(args) => drill(args),
        Command::ReplayDemo => demo::run().map(|()| ExitCode::SUCCESS),
        Command::Simulate(args) => simulate(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn image_ref(role: ImageRole, path: &Path) -> Result<ImageRef> {
    let (sha256, bytes) =
        file_sha256(path).with_context(|| format!("cannot read {}", path.display()))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    Ok(ImageRef {
        role,
        path,
        sha256,
        bytes,
    })
}

/// `perf`'s map for code it finds in no binary (tools/perf/Documentation/jit-interface.txt):
/// one line per part of a block (hot and cold), `START SIZE NAME` with hexadecimal start
/// and size.
fn write_perf_map(blocks: &[understudy_cpu::PlacedBlock]) -> Result<()> {
    let path = format!("/tmp/perf-{}.map", std::process::id());
    let mut text = String::with_capacity(blocks.len() * 40);
    for block in blocks {
        text.push_str(&format!(
            "{:x} {:x} guest_{:x}\n",
            block.host_address, block.len_bytes, block.guest_pc
        ));
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {path}"))
}

fn run_guest(args: RunGuest) -> Result<ExitCode> {
    let Some(memory_bytes) = args.memory_mib.checked_mul(1024 * 1024) else {
        bail!("--memory-mib {} is too large", args.memory_mib);
    };
    let kernel = read_file(&args.kernel, "kernel")?;
    let initrd = args
        .initrd
        .as_deref()
        .map(|path| read_file(path, "initrd"))
        .transpose()?;
    let config = MachineConfig {
        memory_bytes,
        bootargs: args.append.clone(),
        net_mac: args.net.as_ref().map(|_| GUEST_MAC),
        entropy: true,
        ..MachineConfig::default()
    };
    let net = args
        .net
        .as_deref()
        .map(backend_from_spec)
        .transpose()
        .context("bad --net")?;
    let header = match &args.record {
        Some(_) => {
            let mut images = vec![image_ref(ImageRole::Kernel, &args.kernel)?];
            if let Some(path) = &args.initrd {
                images.push(image_ref(ImageRole::Initrd, path)?);
            }
            if let Some(path) = &args.disk {
                images.push(image_ref(ImageRole::Disk, path)?);
            }
            Some(Header {
                version: LOG_VERSION,
                entries_version: ENTRIES_VERSION,
                memory_bytes,
                instructions_per_tick: config.instructions_per_tick,
                bootargs: config.bootargs.clone(),
                net_mac: config.net_mac,
                entropy: config.entropy,
                images,
            })
        }
        None => None,
    };

    let mut machine = Machine::new(&config, &kernel, initrd.as_deref())
        .with_context(|| format!("cannot start {}", args.kernel.display()))?;
    understudy::guest_memory::advise_huge_pages(&machine);
    if !args.interpret {
        code_memory::enable_translator(&mut machine, args.translate_after)?;
        if args.perf_map {
            machine.record_block_placements();
        }
    }
    if let Some(path) = &args.disk {
        let context = || format!("cannot open disk {}", path.display());
        if args.record.is_some() {
            machine.attach_disk(
                Box::new(OverlayDisk::open(path).with_context(context)?),
                b"understudy-disk",
            );
        } else {
            machine.attach_disk(
                Box::new(FileDisk::open(path).with_context(context)?),
                b"understudy-disk",
            );
        }
    }
    // The runtime's identity digest of the disk; a recording has hashed it for its header.
    let disk_sha256 = header
        .as_ref()
        .and_then(|header| {
            header
                .images
                .iter()
                .find(|image| image.role == ImageRole::Disk)
        })
        .map_or([0; 32], |image| image.sha256);
    let log = match (&args.record, header) {
        (Some(path), Some(header)) => Some(
            LogWriter::create(path, header)
                .with_context(|| format!("cannot create log {}", path.display()))?,
        ),
        _ => None,
    };
    let (sender, arrivals) = live::arrival_channel();
    let mut net = net;
    let mut waker = None;
    if let Some(backend) = &mut net {
        if backend
            .start_on_driver_thread()
            .context("cannot start the network")?
        {
            waker = Some(live::waker_pair().context("cannot make the driver's waker")?);
        } else {
            backend
                .start(sender.clone())
                .context("cannot start the network")?;
        }
    }
    let (waker, thread_waker) = waker.unzip();
    live::spawn_console_reader(std::io::stdin(), sender.clone(), thread_waker);
    drop(sender);
    let mut world = World {
        arrivals,
        waker,
        console_open: true,
        net,
        clock: args.clock,
    };
    let mut replica = live::standalone(machine, disk_sha256, args.digest_every);
    let mut recorder = Recorder::new(log, args.digest_every.is_some());
    let summary = live::run(
        &mut replica,
        &mut world,
        &mut std::io::stdout().lock(),
        &mut recorder,
        args.max_instructions,
    )
    .context("cannot write the record log or the console")?;
    let final_pc = replica.machine().hart().pc();
    let translator_stats = replica.machine().translator_stats();
    if args.perf_map {
        write_perf_map(replica.machine().hart().block_placements())?;
    }
    recorder
        .finish(summary.instructions, &summary.ending)
        .context("cannot finish the record log")?;
    if args.stats {
        print_stats(summary.instructions, summary.elapsed);
        eprintln!("pc {final_pc:#x}");
        if let Some(stats) = translator_stats {
            eprintln!("translator {stats:?}");
        }
    }
    Ok(match summary.ending {
        // QEMU's sifive_test calls exit(code), and the kernel keeps the low 8 bits of a
        // process status (wait(2)): 256 reads as 0 and 300 as 44 under both.
        Ending::PowerOff { code } => ExitCode::from(process_status(code)),
        Ending::Reset => {
            eprintln!("understudy: the guest asked for a reset; run it again to restart it");
            ExitCode::SUCCESS
        }
        Ending::InstructionLimit => {
            eprintln!(
                "understudy: stopped after {} instructions (--max-instructions)",
                summary.instructions
            );
            ExitCode::from(EXIT_INSTRUCTION_LIMIT)
        }
        Ending::GuestCrashed { cause, tval, pc } => {
            eprintln!("understudy: guest crashed: trap cause {cause:#x} tval {tval:#x} at pc {pc:#x} was not delegated to the guest");
            ExitCode::from(EXIT_GUEST_CRASHED)
        }
        Ending::IdleForever => {
            eprintln!("understudy: guest waits for an interrupt that can never come (no timer armed, no input)");
            ExitCode::from(EXIT_GUEST_CRASHED)
        }
    })
}

const EXIT_HALTED: u8 = 3;

/// The process status for a guest's finisher code: its low 8 bits, as a QEMU process
/// that exits with that code reports it.
fn process_status(finisher_code: u16) -> u8 {
    (finisher_code & 0xff) as u8
}

fn parse_role(role: Option<&str>) -> Option<Role> {
    role.map(|role| match role {
        "primary" => Role::Primary,
        "backup" => Role::Backup,
        _ => Role::Arbiter,
    })
}

fn run_role(args: RunRole) -> Result<ExitCode> {
    let config = PairConfig::load(&args.config, parse_role(args.role.as_deref()))?;
    if config.role() == Role::Arbiter {
        pair::arbiter::run(&config, args.init)?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = pair::replica::Options {
        wait_for_partner: Duration::from_secs(args.wait_for_partner_s),
    };
    match pair::replica::run(&config, &options)? {
        pair::replica::Ending::GuestPoweredOff { code } => {
            eprintln!("understudy: the guest powered off with code {code}");
            Ok(ExitCode::from(process_status(code)))
        }
        pair::replica::Ending::GuestStopped(how) => {
            eprintln!("understudy: the guest stopped: {how}");
            Ok(ExitCode::from(EXIT_GUEST_CRASHED))
        }
        pair::replica::Ending::Halted(reason) => {
            eprintln!("understudy: halted: {reason}");
            Ok(ExitCode::from(EXIT_HALTED))
        }
    }
}

fn drill(args: DrillArgs) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = if std::env::var_os("UNDERSTUDY_DRILL_NETNS").is_some() {
        // Inside the namespace: the outer process built the guest already.
        let output = std::process::Command::new(root.join("guest/build"))
            .args(["--print-paths", &args.guest])
            .output()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
            .collect()
    } else {
        pair::drill::build_guest(root, &args.guest)?
    };
    let mut guest = pair::drill::guest_from_artifacts(&paths, &args.guest)?;
    let platform = match args.platform.as_str() {
        "appliance" => {
            ensure!(
                args.guest == "minimal",
                "the appliance drill runs the minimal guest: pass --guest minimal"
            );
            guest.service = pair::drill::Service::Counter;
            guest.numbers = pair::appliance::APPLIANCE_NUMBERS;
            pair::drill::Platform::Appliance(pair::appliance::Setup {
                source_root: root.to_owned(),
                disk: if args.disk == "shared" {
                    understudy_boot_config::DiskMode::Shared
                } else {
                    understudy_boot_config::DiskMode::Separate
                },
                etcd: args.arbiter == "etcd",
            })
        }
        _ => pair::drill::Platform::Hosted,
    };
    match args.load.as_deref() {
        Some(_) if args.guest != "minimal" => bail!("--load chooses the minimal guest's load"),
        Some("counter") => guest.service = pair::drill::Service::Counter,
        Some(_) => guest.service = pair::drill::Service::Http,
        None => {}
    }
    let options = pair::drill::DrillOptions {
        fault: args.fault,
        guest,
        platform,
        work_dir: args
            .work_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("understudy-drill")),
        namespace: args.namespace.clone(),
        requests_before: args.requests_before,
        requests_after: args.requests_after,
        cycles: args.cycles,
        rejoin: pair::drill::RejoinSetup {
            disk_mib: args.disk_mib,
            disk_change_percent: args.disk_change_percent,
            redis_aof: !args.no_redis_aof,
        },
        execution: if args.execution == "interpret" {
            Execution::Interpret
        } else {
            Execution::Translate
        },
        peer_timeout_ms: args
            .peer_timeout_ms
            .unwrap_or(if args.platform == "appliance" {
                pair::appliance::APPLIANCE_PEER_TIMEOUT_MS
            } else {
                pair::drill::DRILL_PEER_TIMEOUT_MS
            }),
    };
    let inside: Vec<String> = std::env::args().skip(1).collect();
    pair::drill::run(&options, &inside)?;
    Ok(ExitCode::SUCCESS)
}

fn soak(args: SoakArgs) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = pair::drill::build_guest(root, &args.guest)?;
    let work_dir = std::env::temp_dir().join("understudy-soak");
    let base = pair::drill::DrillOptions {
        fault: Fault::KillPrimary,
        guest: pair::drill::guest_from_artifacts(&paths, &args.guest)?,
        work_dir: work_dir.clone(),
        namespace: "understudy-soak".to_owned(),
        requests_before: args.requests_before,
        requests_after: args.requests_after,
        peer_timeout_ms: pair::drill::DRILL_PEER_TIMEOUT_MS,
        platform: pair::drill::Platform::Hosted,
        cycles: 1,
        rejoin: pair::drill::RejoinSetup::default(),
        execution: Execution::Translate,
    };
    let inside = |fault: Fault| -> Vec<String> {
        let fault = clap::ValueEnum::to_possible_value(&fault)
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default();
        [
            "drill",
            "--fault",
            &fault,
            "--guest",
            &args.guest,
            "--namespace",
            "understudy-soak",
            "--requests-before",
            &args.requests_before.to_string(),
            "--requests-after",
            &args.requests_after.to_string(),
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(["--work-dir".to_owned(), work_dir.display().to_string()])
        .collect()
    };
    pair::soak::run(args.seed, args.rounds, &base, &inside)?;
    Ok(ExitCode::SUCCESS)
}

fn show_status(args: StatusArgs) -> Result<ExitCode> {
    let config = PairConfig::load(&args.config, None)?;
    let path = config.state_dir.join(pair::state::STATUS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no status at {} (has this replica run?)", path.display()))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let updated: u128 = text
        .lines()
        .find_map(|line| line.strip_prefix("updated_unix_ms="))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let age_ms = now_ms.saturating_sub(updated);
    // A replica rewrites its status several times a second; an old file is a dead process.
    let text = format!("{text}age_ms={age_ms}\nrunning={}\n", age_ms < 3_000);
    if args.json {
        println!("{}", pair::metrics::status_json(&text));
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stats(instructions: u64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    eprintln!("instructions {instructions}");
    eprintln!("seconds {seconds:.3}");
    eprintln!("mips {:.1}", instructions as f64 / seconds.max(1e-9) / 1e6);
}

fn run_replay(args: Replay) -> Result<ExitCode> {
    let started = Instant::now();
    let mut console = std::io::stdout().lock();
    let output: Option<&mut dyn std::io::Write> = if args.console {
        Some(&mut console)
    } else {
        None
    };
    let mut debugger = match &args.gdb {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("cannot listen for gdb on {address}"))?;
            let bound = listener
                .local_addr()
                .context("cannot read the gdb address")?;
            eprintln!("replay: waiting for gdb on {bound}");
            Some(GdbDebugger::new(listener))
        }
        None => None,
    };
    let debugger = debugger
        .as_mut()
        .map(|debugger| debugger as &mut dyn replay::ReplayDebugger);
    let outcome = replay::replay_with(
        &args.log,
        args.digest_every,
        output,
        debugger,
        !args.interpret,
    )?;
    eprintln!(
        "replay: {} inputs, {} digests checked, {} instructions, same end as recorded ({:.3} s)",
        outcome.inputs,
        outcome.digests_checked,
        outcome.instructions,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: Simulate) -> Result<ExitCode> {
    let command = match (args.seed, args.seeds) {
        (Some(seed), _) => SimCommand::Seed(seed),
        (None, Some(count)) => SimCommand::Seeds {
            first: args.first,
            count,
        },
        (None, None) => SimCommand::Seeds {
            first: args.first,
            count: 1000,
        },
    };
    let started = Instant::now();
    let mut text = String::new();
    let result = sim::simulate(command, args.soak, &mut text);
    // A closed pipe (`| head`) is the reader's choice, not an error of the simulation.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(_) => {
            if let SimCommand::Seeds { count, .. } = command {
                println!(
                    "{count} seeds passed in {seconds:.1} s ({:.0} seeds/s)",
                    count as f64 / seconds.max(1e-9)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            eprintln!("{failure}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}
