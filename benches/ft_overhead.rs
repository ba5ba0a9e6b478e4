//! Fault tolerance overhead in one run: the trixie guest serving redis replicated (primary,
//! backup and arbiter, `understudy run`) against the same guest unreplicated (`understudy
//! run-guest`), each on a TAP in a network namespace of its own made by this bench: redis
//! throughput and p99 latency, the PING round trip (what the output rule adds), the log
//! channel's bandwidth idle and under load, and the failover time of `understudy drill`.
//! Run as root with `cargo bench --bench ft_overhead [-- overhead|failover]`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use understudy::pair::drill::{self, ip, DrillGuest, DrillOptions, Fault, Pair};

/// Another `understudy` binary to measure instead of the one cargo built (an experiment's).
const UNDERSTUDY_ENV: &str = "FT_OVERHEAD_UNDERSTUDY";
const NAMESPACE: &str = "us-bench-ft";
const DRILL_NAMESPACE: &str = "us-bench-ft-drill";
/// The unreplicated guest uses the TAP the drill's network gives the primary.
const SOLO_TAP: &str = "us-primary";
const GUEST_ADDRESS: &str = "10.0.2.15";
const REDIS_PORT: u16 = 6379;
/// The same command line as the pair's guest (drill.rs, `write_configs`).
const GUEST_APPEND: &str = "console=ttyS0 earlycon no4lvl understudy.ip=10.0.2.15/24";
const GUEST_MEMORY_MIB: u32 = 256;
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The guest settles after boot (services starting, page cache) before anything is measured;
/// the replicated side measures its idle log bandwidth over this window.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Sequential PINGs on one connection: each waits for the previous answer, so each pays the
/// whole round trip including, when replicated, the output rule's wait for the backup.
const PING_COUNT: usize = 500;
/// redis-benchmark runs: (connections, requests per test). One connection is the
/// latency-bound case (every request pays the output rule); ten is a small service with a
/// few clients, where answers can share a log acknowledgement. redis-benchmark's default of
/// 50 connections and 100,000 requests would take minutes per test on an emulated guest.
const REDIS_RUNS: [(u32, u32); 2] = [(1, 2000), (10, 5000)];
const REDIS_TESTS: &str = "set,get";
const REDIS_BENCHMARK_TIMEOUT: Duration = Duration::from_secs(600);
const FAILOVER_DRILLS: usize = 3;
const DRILL_REQUESTS: u64 = 100;
/// Linux reports process CPU time in USER_HZ ticks (proc(5)).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

fn understudy() -> PathBuf {
    std::env::var_os(UNDERSTUDY_ENV).map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_understudy")),
        PathBuf::from,
    )
}

fn say(text: &str) {
    eprintln!("ft_overhead: {text}");
}

/// The calling thread inside a named network namespace of its own; dropping it returns the
/// thread to where it was and deletes the namespace. Children started meanwhile inherit it.
struct Namespace {
    name: String,
    home: File,
}

impl Namespace {
    fn enter(name: &str) -> Result<Namespace> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]).context("cannot make a network namespace (run as root)")?;
        let home = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{name}"))?;
        // SAFETY: setns takes a namespace file descriptor we hold open and a flag word; it
        // changes only this thread's network namespace.
        let result = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(result == 0, "setns: {}", std::io::Error::last_os_error());
        Ok(Namespace {
            name: name.to_owned(),
            home,
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // SAFETY: as in `enter`, with the namespace this thread came from.
        let result = unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        assert!(result == 0, "cannot return to the host's network namespace");
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// utime + stime of a live process from /proc/<pid>/stat (proc(5)).
fn cpu_time_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(end) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    let ticks = ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0);
    ticks as f64 / CLOCK_TICKS_PER_SECOND as f64
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// One redis-benchmark test's line of `--csv`.
#[derive(Clone, Debug)]
struct RedisFigures {
    requests_per_s: f64,
    p99_ms: f64,
}

/// What the machines did during a stretch of time (the log channel only when replicated).
#[derive(Clone, Debug, Default)]
struct Window {
    wall_s: f64,
    log_bytes: f64,
    log_frames: f64,
    retransmissions: f64,
    /// CPU seconds of the emulator processes (primary + backup, or the one run-guest).
    cpu_s: f64,
}

impl Window {
    fn log_mbit_s(&self) -> f64 {
        self.log_bytes * 8.0 / self.wall_s.max(1e-3) / 1e6
    }
}

/// Everything measured on one side.
#[derive(Debug, Default)]
struct Side {
    ready_s: f64,
    idle: Window,
    /// Keyed by (connections, test name).
    redis: Vec<((u32, String), RedisFigures)>,
    load: Window,
    ping_ms: Vec<f64>,
}

/// The counters a window is the difference of.
trait Probe {
    /// (unix ms of the reading, log bytes, log frames, retransmissions, emulator CPU s).
    fn read(&self) -> [f64; 5];
}

struct PairProbe<'a>(&'a Pair);

impl Probe for PairProbe<'_> {
    fn read(&self) -> [f64; 5] {
        let pair = self.0;
        let cpu = ["primary", "backup"]
            .iter()
            .filter_map(|role| pair.pid(role))
            .map(cpu_time_s)
            .sum();
        [
            pair.status_number("primary", "updated_unix_ms"),
            pair.status_number("primary", "log_bytes_sent"),
            pair.status_number("primary", "frames_sent"),
            pair.status_number("primary", "retransmissions"),
            cpu,
        ]
    }
}

struct SoloProbe(u32);

impl Probe for SoloProbe {
    fn read(&self) -> [f64; 5] {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        [now_ms, 0.0, 0.0, 0.0, cpu_time_s(self.0)]
    }
}

/// Measures a window around `work`. The primary rewrites its status file every 250 ms, so
/// the window's length is taken from the two readings' own timestamps.
fn window<T>(probe: &dyn Probe, work: impl FnOnce() -> Result<T>) -> Result<(Window, T)> {
    let before = probe.read();
    let value = work()?;
    // Let the status file catch up with the end of the work.
    std::thread::sleep(Duration::from_millis(300));
    let after = probe.read();
    let window = Window {
        wall_s: (after[0] - before[0]) / 1e3,
        log_bytes: after[1] - before[1],
        log_frames: after[2] - before[2],
        retransmissions: after[3] - before[3],
        cpu_s: after[4] - before[4],
    };
    Ok((window, value))
}

fn redis_benchmark(connections: u32, requests: u32) -> Result<Vec<(String, RedisFigures)>> {
    let output = run_bounded(
        Command::new("redis-benchmark")
            .args(["-h", GUEST_ADDRESS, "-p", &REDIS_PORT.to_string()])
            .args(["-c", &connections.to_string(), "-n", &requests.to_string()])
            .args(["-t", REDIS_TESTS, "--csv"]),
        REDIS_BENCHMARK_TIMEOUT,
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "redis-benchmark failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms"
    let mut figures = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        ensure!(fields.len() >= 7, "redis-benchmark printed {line:?}");
        figures.push((
            fields[0].to_owned(),
            RedisFigures {
                requests_per_s: fields[1].parse()?,
                p99_ms: fields[6].parse()?,
            },
        ));
    }
    ensure!(
        !figures.is_empty(),
        "redis-benchmark printed no results: {text}"
    );
    Ok(figures)
}

fn run_bounded(command: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{:?} timed out after {timeout:?}", command.get_program());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

/// `count` sequential PINGs on one connection; each round trip in milliseconds.
fn ping_round_trips(count: usize) -> Result<Vec<f64>> {
    let address: SocketAddr = format!("{GUEST_ADDRESS}:{REDIS_PORT}").parse()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut round_trips = Vec::with_capacity(count);
    let mut line = String::new();
    for _ in 0..count {
        let start = Instant::now();
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        round_trips.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(line.trim_end() == "+PONG", "PING answered {line:?}");
    }
    Ok(round_trips)
}

/// One PING answered, within a few seconds.
fn redis_answers() -> bool {
    let Ok(address) = format!("{GUEST_ADDRESS}:{REDIS_PORT}").parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.trim_end() == "+PONG"
}

/// The same measurements on either side, the guest already answering.
fn measure(probe: &dyn Probe, side: &mut Side) -> Result<()> {
    say(&format!("idle for {} s", IDLE_WINDOW.as_secs()));
    (side.idle, ()) = window(probe, || {
        std::thread::sleep(IDLE_WINDOW);
        Ok(())
    })?;
    say(&format!("{PING_COUNT} sequential PINGs"));
    side.ping_ms = ping_round_trips(PING_COUNT)?;
    let (load, redis) = window(probe, || {
        let mut all = Vec::new();
        for (connections, requests) in REDIS_RUNS {
            say(&format!(
                "redis-benchmark -c {connections} -n {requests} -t {REDIS_TESTS}"
            ));
            for (test, figures) in redis_benchmark(connections, requests)? {
                all.push(((connections, test), figures));
            }
        }
        Ok(all)
    })?;
    side.load = load;
    side.redis = redis;
    Ok(())
}

/// The unreplicated guest: `run-guest` on a TAP of the drill's network.
fn measure_unreplicated(guest: &DrillGuest, work_dir: &Path) -> Result<Side> {
    let _namespace = Namespace::enter(NAMESPACE)?;
    drill::make_network()?;
    std::fs::create_dir_all(work_dir)?;
    let mut command = Command::new(understudy());
    command
        .arg("run-guest")
        .arg("--kernel")
        .arg(&guest.kernel)
        .arg("--initrd")
        .arg(&guest.initrd)
        .args(["--append", GUEST_APPEND])
        .args(["--memory-mib", &GUEST_MEMORY_MIB.to_string()])
        .args(["--net", &format!("tap:{SOLO_TAP}")]);
    say(&format!(
        "unreplicated: understudy run-guest --kernel {} --initrd {} --append \"{GUEST_APPEND}\" \
         --memory-mib {GUEST_MEMORY_MIB} --net tap:{SOLO_TAP}",
        guest.kernel.display(),
        guest.initrd.display()
    ));
    let started = Instant::now();
    // The console input is an open, silent pipe, as for a guest with a terminal attached.
    let child = command
        .stdin(Stdio::piped())
        .stdout(File::create(work_dir.join("solo.console"))?)
        .stderr(File::create(work_dir.join("solo.log"))?)
        .spawn()?;
    let mut child = KillOnDrop(child);
    while !redis_answers() {
        if let Some(status) = child.0.try_wait()? {
            bail!("run-guest exited with {status} before redis answered");
        }
        ensure!(
            started.elapsed() < READY_TIMEOUT,
            "the unreplicated guest did not answer within {READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut side = Side {
        ready_s: started.elapsed().as_secs_f64(),
        ..Side::default()
    };
    say(&format!(
        "unreplicated guest answers after {:.1} s",
        side.ready_s
    ));
    measure(&SoloProbe(child.0.id()), &mut side)?;
    Ok(side)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The replicated guest: primary, backup and arbiter as the drill starts them.
fn measure_replicated(guest: &DrillGuest, work_dir: &Path) -> Result<Side> {
    let _namespace = Namespace::enter(NAMESPACE)?;
    drill::make_network()?;
    let options = DrillOptions {
        fault: Fault::KillPrimary,
        guest: guest.clone(),
        work_dir: work_dir.to_owned(),
        namespace: NAMESPACE.to_owned(),
        requests_before: 0,
        requests_after: 0,
        cycles: 1,
        rejoin: understudy::pair::drill::RejoinSetup::default(),
        execution: understudy_boot_config::Execution::Translate,
        peer_timeout_ms: drill::DRILL_PEER_TIMEOUT_MS,
        platform: drill::Platform::Hosted,
    };
    say("replicated: primary, backup and arbiter (understudy run --config, as the drill writes them)");
    let started = Instant::now();
    drill::with_pair(&understudy(), &options, |pair| {
        let mut side = Side {
            ready_s: started.elapsed().as_secs_f64(),
            ..Side::default()
        };
        say(&format!(
            "replicated guest answers after {:.1} s",
            side.ready_s
        ));
        measure(&PairProbe(pair), &mut side)?;
        Ok(side)
    })
}

/// `understudy drill --fault kill-primary`: seconds from SIGKILL to the first answer.
fn failover_s(work_dir: &Path) -> Result<f64> {
    let output = run_bounded(
        Command::new(understudy())
            .args(["drill", "--guest", "trixie", "--fault", "kill-primary"])
            .args(["--requests-before", &DRILL_REQUESTS.to_string()])
            .args(["--requests-after", &DRILL_REQUESTS.to_string()])
            .args(["--namespace", DRILL_NAMESPACE])
            .arg("--work-dir")
            .arg(work_dir),
        READY_TIMEOUT * 2,
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "the drill failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report = drill::parse_report(&stdout)?;
    ensure!(
        report.writes_lost == 0 && report.writes_applied_twice == 0,
        "the drill lost or doubled writes:\n{stdout}"
    );
    report
        .answer_after_fault_s
        .context("no answer came after the fault")
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], fraction: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn redis_figure<'a>(side: &'a Side, connections: u32, test: &str) -> Option<&'a RedisFigures> {
    side.redis
        .iter()
        .find(|((c, t), _)| *c == connections && t == test)
        .map(|(_, figures)| figures)
}

fn guest_paths() -> Result<DrillGuest> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("guest/build"))
        .args(["--print-paths", "trixie"])
        .output()
        .context("cannot run guest/build")?;
    ensure!(
        output.status.success(),
        "the trixie guest is missing; run guest/build trixie first"
    );
    let paths: Vec<(String, PathBuf)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
        .collect();
    drill::guest_from_artifacts(&paths, "trixie")
}

/// Rows of the table: (measure, unreplicated, replicated, replicated / unreplicated, key).
type Row = (String, Option<f64>, Option<f64>, String);

fn print_table(rows: &[Row]) {
    println!(
        "{:<44} {:>13} {:>11} {:>8}",
        "measure", "unreplicated", "replicated", "ratio"
    );
    let cell = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for (label, solo, pair, _) in rows {
        let ratio = match (solo, pair) {
            (Some(solo), Some(pair)) if *solo > 0.0 => format!("{:.3}", pair / solo),
            _ => "-".to_owned(),
        };
        println!(
            "{label:<44} {:>13} {:>11} {ratio:>8}",
            cell(*solo),
            cell(*pair)
        );
    }
}

fn print_keys(rows: &[Row]) {
    for (_, solo, pair, key) in rows {
        if let Some(solo) = solo {
            println!("unreplicated_{key}={solo:.3}");
        }
        if let Some(pair) = pair {
            println!("replicated_{key}={pair:.3}");
        }
        if let (Some(solo), Some(pair)) = (solo, pair) {
            if *solo > 0.0 {
                println!("ratio_{key}={:.3}", pair / solo);
            }
        }
    }
}

fn overhead_rows(solo: &Side, pair: &Side) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    rows.push((
        "guest answers after, s".into(),
        Some(solo.ready_s),
        Some(pair.ready_s),
        "ready_s".into(),
    ));
    for (connections, _) in REDIS_RUNS {
        for test in ["SET", "GET"] {
            let solo_figures = redis_figure(solo, connections, test);
            let pair_figures = redis_figure(pair, connections, test);
            let lower = test.to_lowercase();
            rows.push((
                format!("redis {test} -c {connections}, requests/s"),
                solo_figures.map(|f| f.requests_per_s),
                pair_figures.map(|f| f.requests_per_s),
                format!("{lower}_c{connections}_requests_per_s"),
            ));
            rows.push((
                format!("redis {test} -c {connections}, p99 ms"),
                solo_figures.map(|f| f.p99_ms),
                pair_figures.map(|f| f.p99_ms),
                format!("{lower}_c{connections}_p99_ms"),
            ));
        }
    }
    rows.push((
        format!("PING round trip ({PING_COUNT}), median ms"),
        Some(median(&solo.ping_ms)),
        Some(median(&pair.ping_ms)),
        "ping_median_ms".into(),
    ));
    rows.push((
        format!("PING round trip ({PING_COUNT}), p99 ms"),
        Some(percentile(&solo.ping_ms, 0.99)),
        Some(percentile(&pair.ping_ms, 0.99)),
        "ping_p99_ms".into(),
    ));
    rows.push((
        format!("log channel idle ({} s), Mbit/s", IDLE_WINDOW.as_secs()),
        None,
        Some(pair.idle.log_mbit_s()),
        "log_idle_mbit_s".into(),
    ));
    rows.push((
        "log channel under redis load, Mbit/s".into(),
        None,
        Some(pair.load.log_mbit_s()),
        "log_load_mbit_s".into(),
    ));
    rows.push((
        "log frames/s idle".into(),
        None,
        Some(pair.idle.log_frames / pair.idle.wall_s.max(1e-3)),
        "log_idle_frames_per_s".into(),
    ));
    rows.push((
        "log frames/s under load".into(),
        None,
        Some(pair.load.log_frames / pair.load.wall_s.max(1e-3)),
        "log_load_frames_per_s".into(),
    ));
    rows.push((
        "emulator CPU, cores busy, idle".into(),
        Some(solo.idle.cpu_s / solo.idle.wall_s.max(1e-3)),
        Some(pair.idle.cpu_s / pair.idle.wall_s.max(1e-3)),
        "emulator_cores_idle".into(),
    ));
    rows.push((
        "emulator CPU, cores busy, under load".into(),
        Some(solo.load.cpu_s / solo.load.wall_s.max(1e-3)),
        Some(pair.load.cpu_s / pair.load.wall_s.max(1e-3)),
        "emulator_cores_load".into(),
    ));
    rows
}

fn main() {
    if let Err(error) = run() {
        println!("FAILED: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    // `cargo bench` passes `--bench`; other words choose parts (overhead, failover).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let chosen = |part: &str| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| f == "ft_overhead" || part.contains(f.as_str()))
    };
    let guest = guest_paths()?;
    let work_dir =
        std::env::temp_dir().join(format!("understudy-ft-overhead-{}", std::process::id()));
    println!("understudy: {}", understudy().display());
    println!("load average at start: {}", load_average());
    println!(
        "host: {} cores; guest: trixie, {GUEST_MEMORY_MIB} MiB, redis-server at {GUEST_ADDRESS}:{REDIS_PORT}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows: Vec<Row> = Vec::new();
    if chosen("overhead") {
        let solo = measure_unreplicated(&guest, &work_dir.join("unreplicated"))?;
        println!(
            "load average after the unreplicated side: {}",
            load_average()
        );
        let pair = measure_replicated(&guest, &work_dir.join("replicated"))?;
        println!("load average after the replicated side: {}", load_average());
        println!(
            "log channel under load: {:.0} bytes in {:.1} s, {:.0} frames, {:.0} retransmissions",
            pair.load.log_bytes, pair.load.wall_s, pair.load.log_frames, pair.load.retransmissions
        );
        rows.extend(overhead_rows(&solo, &pair));
    }
    if chosen("failover") {
        let mut times = Vec::new();
        for index in 0..FAILOVER_DRILLS {
            say(&format!(
                "failover drill {}/{FAILOVER_DRILLS}: understudy drill --guest trixie --fault kill-primary \
                 --requests-before {DRILL_REQUESTS} --requests-after {DRILL_REQUESTS}",
                index + 1
            ));
            let seconds = failover_s(&work_dir.join(format!("drill-{index}")))?;
            say(&format!("first answer {seconds:.3} s after SIGKILL"));
            times.push(seconds);
        }
        println!(
            "failover drills, SIGKILL to first answer, s: {}",
            times
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        rows.push((
            format!("failover, median of {FAILOVER_DRILLS} drills, s"),
            None,
            Some(median(&times)),
            "failover_s".into(),
        ));
    }
    println!("load average at end: {}", load_average());
    println!();
    print_table(&rows);
    println!();
    print_keys(&rows);
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(())
}
