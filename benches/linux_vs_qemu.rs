//! Linux guests in our machine and in `qemu-system-riscv64 -M virt` (TCG) side by side in one
//! run: the minimal kernel's boot to the ready marker, `curl` requests/s against busybox
//! httpd and `redis-benchmark` GET/SET ops/s against the trixie guest, both through user-mode
//! networking on loopback; prints a table with the ratios (issue 3, item 6).
//! Run with `cargo bench --bench linux_vs_qemu [-- boot|curl|redis]`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const READY_MARKER: &str = "understudy-guest: ready";
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the forwarded service may take to answer its first request after the ready
/// marker (ARP and the first connection through user networking).
const SERVICE_WARMUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The minimal guest boots in about a second, so one boot is too noisy to compare.
const BOOT_REPEATS: usize = 3;
const CURL_REQUESTS: u32 = 100;
const CURL_REQUEST_TIMEOUT_S: u32 = 30;
const REDIS_REQUESTS: u32 = 2000;
const REDIS_BENCHMARK_TIMEOUT: Duration = Duration::from_secs(900);
/// Both machines get the same memory: the minimal guest fits QEMU's `-m 128M` default of the
/// task; the trixie kernel and redis-server want more.
const MINIMAL_MEMORY_MIB: u32 = 128;
const TRIXIE_MEMORY_MIB: u32 = 512;
/// Guest side of QEMU-style user networking (slirp's defaults, which ours follows).
const GUEST_NET_ARGS: &str = "understudy.ip=10.0.2.15/24 understudy.gw=10.0.2.2";
/// Guests that serve stay up this long at most, then power off by themselves.
const SERVICE_GUEST_SLEEP_S: u32 = 3600;
/// Linux reports process CPU time in USER_HZ ticks (proc(5)).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Machine {
    Understudy,
    Qemu,
}

impl Machine {
    fn name(self) -> &'static str {
        match self {
            Machine::Understudy => "understudy",
            Machine::Qemu => "qemu (TCG)",
        }
    }
}

/// The paths of the `guests` (`minimal`, `trixie`) that `guest/build` made.
fn artifacts(guests: &[&str]) -> BTreeMap<String, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("guest/build"))
        .arg("--print-paths")
        .args(guests)
        .output()
        .expect("guest/build runs");
    if !output.status.success() {
        eprintln!(
            "linux_vs_qemu: guest artifacts are missing; run guest/build first: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::process::exit(1);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, path)| (name.to_owned(), PathBuf::from(path)))
        .collect()
}

fn require_tools(tools: &[&str]) {
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            eprintln!("linux_vs_qemu: {tool} is missing (tools/install-prerequisites installs it)");
            std::process::exit(1);
        }
    }
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

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// utime + stime of a live process from /proc/<pid>/stat (proc(5)).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SECOND))
}

/// What a guest needs: kernel, initramfs, command line, memory and forwarded ports.
struct GuestSpec<'a> {
    kernel: &'a Path,
    initrd: &'a Path,
    append: String,
    memory_mib: u32,
    /// (host port, guest port) pairs; empty means no network device.
    forwards: Vec<(u16, u16)>,
}

fn command_for(machine: Machine, spec: &GuestSpec) -> Command {
    let mut command;
    match machine {
        Machine::Understudy => {
            command = Command::new(env!("CARGO_BIN_EXE_understudy"));
            command.arg("run-guest").arg("--kernel").arg(spec.kernel);
            command.arg("--initrd").arg(spec.initrd);
            command.args(["--append", &spec.append, "--stats", "--clock", "wall"]);
            command.args(["--memory-mib", &spec.memory_mib.to_string()]);
            if !spec.forwards.is_empty() {
                let forwards: Vec<String> = spec
                    .forwards
                    .iter()
                    .map(|(host, guest)| format!("hostfwd=tcp:{host}-{guest}"))
                    .collect();
                command.args(["--net", &format!("user:{}", forwards.join(","))]);
            }
        }
        Machine::Qemu => {
            command = Command::new("qemu-system-riscv64");
            command.args(["-M", "virt", "-accel", "tcg", "-nographic"]);
            command.args(["-m", &format!("{}M", spec.memory_mib)]);
            command.arg("-kernel").arg(spec.kernel);
            command.arg("-initrd").arg(spec.initrd);
            command.args(["-append", &spec.append]);
            if !spec.forwards.is_empty() {
                let forwards: Vec<String> = spec
                    .forwards
                    .iter()
                    .map(|(host, guest)| format!("hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
                    .collect();
                command.args(["-netdev", &format!("user,id=n0,{}", forwards.join(","))]);
                command.args(["-device", "virtio-net-device,netdev=n0"]);
            }
        }
    }
    command
}

fn describe(command: &Command) -> String {
    let mut words: Vec<OsString> = vec![command.get_program().to_owned()];
    words.extend(command.get_args().map(|arg| arg.to_owned()));
    words
        .iter()
        .map(|word| {
            let word = word.to_string_lossy();
            if word.contains(' ') || word.contains('\'') {
                format!("\"{word}\"")
            } else {
                word.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running guest. Dropping it kills the emulator, so nothing outlives the bench.
struct Guest {
    child: Child,
    started: Instant,
    lines: Receiver<String>,
    console: String,
    stderr: Arc<Mutex<String>>,
}

impl Guest {
    fn start(machine: Machine, spec: &GuestSpec) -> Guest {
        let mut command = command_for(machine, spec);
        println!("  $ {}", describe(&command));
        let started = Instant::now();
        // The console input is an open, silent pipe (held by the `Child`), as for a guest
        // with a terminal attached: our live driver spins in guest idle time once stdin is
        // at end of file and no network is configured (see benches/idle_log.rs).
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", machine.name()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                if sender
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            stderr_sink.lock().expect("stderr buffer").push_str(&text);
        });
        Guest {
            child,
            started,
            lines,
            console: String::new(),
            stderr,
        }
    }

    /// Wall time from start to the first console line containing `marker`.
    fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Duration, String> {
        loop {
            let left = timeout.saturating_sub(self.started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push_str(&line);
                    self.console.push('\n');
                    if line.contains(marker) {
                        return Ok(self.started.elapsed());
                    }
                    if line.contains("Kernel panic") {
                        return Err(format!("kernel panic:\n{}", self.tail()));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no {marker:?} within {timeout:?}:\n{}",
                        self.tail()
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("exited before {marker:?}:\n{}", self.tail()))
                }
            }
        }
    }

    /// Waits for the guest to power off; the console is drained meanwhile.
    fn wait_exit(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.console.push_str(&line);
                self.console.push('\n');
            }
            match self.child.try_wait().expect("wait for the guest") {
                Some(status) if status.success() => break,
                Some(status) => return Err(format!("exited with {status}:\n{}", self.tail())),
                None if Instant::now() > deadline => {
                    return Err(format!("did not power off within {timeout:?}"))
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // The stderr thread finishes when the pipe closes, just after exit.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.stderr().contains("mips ") {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        let console = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("{console}\n{}", self.stderr())
    }

    fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.child.id())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a host client with stdin closed, killing it after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {command:?}: {error}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for the client") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} timed out after {timeout:?}",
                    command.get_program().to_string_lossy()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Retries `probe` until it succeeds or `timeout` passes.
fn warm_up(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if probe() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("{what} did not answer within {timeout:?}"))
}

fn curl_get(port: u16) -> Result<(), String> {
    let output = run_bounded(
        Command::new("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            &CURL_REQUEST_TIMEOUT_S.to_string(),
            &format!("http://127.0.0.1:{port}/"),
        ]),
        Duration::from_secs(u64::from(CURL_REQUEST_TIMEOUT_S) + 5),
    )?;
    let code = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && code == "200" {
        Ok(())
    } else {
        Err(format!(
            "curl: status {}, HTTP {code}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A result cell: a measured value or why there is none.
type Cell = Result<f64, String>;

struct BootResult {
    wall_s: Cell,
    cpu_s: Option<f64>,
    instructions: Option<u64>,
}

/// Boots the minimal kernel to the ready marker; the init command then powers it off.
fn boot(machine: Machine, paths: &BTreeMap<String, PathBuf>) -> BootResult {
    let spec = GuestSpec {
        kernel: &paths["minimal_kernel"],
        initrd: &paths["minimal_initramfs"],
        append: "console=ttyS0 understudy.init='true'".into(),
        memory_mib: MINIMAL_MEMORY_MIB,
        forwards: Vec::new(),
    };
    let mut guest = Guest::start(machine, &spec);
    let wall = guest.wait_for(READY_MARKER, BOOT_TIMEOUT);
    if let Ok(wall) = &wall {
        println!(
            "  {}: ready after {:.1} s",
            machine.name(),
            wall.as_secs_f64()
        );
    }
    let cpu = guest.cpu_time();
    let exited = guest.wait_exit(EXIT_TIMEOUT);
    let instructions = guest.stderr().lines().find_map(|line| {
        line.strip_prefix("instructions ")
            .and_then(|n| n.trim().parse().ok())
    });
    if let Err(error) = &exited {
        println!("  {}: power off after the boot: {error}", machine.name());
    }
    BootResult {
        wall_s: wall.map(|d| d.as_secs_f64()),
        cpu_s: cpu.map(|d| d.as_secs_f64()),
        instructions,
    }
}

/// The median wall and CPU time of several boots (a failed boot makes the result failed),
/// with the last instruction count.
fn median_boot(runs: Vec<BootResult>) -> BootResult {
    fn median(mut values: Vec<f64>) -> Option<f64> {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }
    let instructions = runs.iter().rev().find_map(|run| run.instructions);
    let cpu_s = median(runs.iter().filter_map(|run| run.cpu_s).collect());
    let mut walls = Vec::new();
    for run in runs {
        match run.wall_s {
            Ok(wall) => walls.push(wall),
            Err(error) => {
                return BootResult {
                    wall_s: Err(error),
                    cpu_s,
                    instructions,
                }
            }
        }
    }
    BootResult {
        wall_s: median(walls).ok_or_else(|| "no boots".to_string()),
        cpu_s,
        instructions,
    }
}

/// Requests/s of `CURL_REQUESTS` sequential GETs, one connection each.
fn curl_rate(machine: Machine, paths: &BTreeMap<String, PathBuf>) -> Cell {
    let port = free_port();
    let spec = GuestSpec {
        kernel: &paths["minimal_kernel"],
        initrd: &paths["minimal_initramfs"],
        append: format!(
            "console=ttyS0 {GUEST_NET_ARGS} understudy.init='sleep {SERVICE_GUEST_SLEEP_S}'"
        ),
        memory_mib: MINIMAL_MEMORY_MIB,
        forwards: vec![(port, 80)],
    };
    let mut guest = Guest::start(machine, &spec);
    let ready = guest.wait_for(READY_MARKER, BOOT_TIMEOUT)?;
    println!(
        "  {}: ready after {:.1} s",
        machine.name(),
        ready.as_secs_f64()
    );
    warm_up("httpd", SERVICE_WARMUP_TIMEOUT, || curl_get(port).is_ok())?;
    let started = Instant::now();
    for request in 0..CURL_REQUESTS {
        curl_get(port).map_err(|error| format!("request {request}: {error}"))?;
    }
    Ok(f64::from(CURL_REQUESTS) / started.elapsed().as_secs_f64())
}

/// SET and GET requests/s from one `redis-benchmark` client.
/// The trixie guest's time to its ready marker, and the SET and GET rates.
struct RedisResult {
    ready_s: Cell,
    set: Cell,
    get: Cell,
}

fn redis_rates(machine: Machine, paths: &BTreeMap<String, PathBuf>) -> RedisResult {
    let mut ready_s: Cell = Err("no ready marker".into());
    match redis_rates_inner(machine, paths, &mut ready_s) {
        Ok((set, get)) => RedisResult {
            ready_s,
            set: Ok(set),
            get: Ok(get),
        },
        Err(error) => RedisResult {
            ready_s,
            set: Err(error.clone()),
            get: Err(error),
        },
    }
}

fn redis_rates_inner(
    machine: Machine,
    paths: &BTreeMap<String, PathBuf>,
    ready_s: &mut Cell,
) -> Result<(f64, f64), String> {
    let port = free_port();
    let spec = GuestSpec {
        kernel: &paths["trixie_kernel"],
        initrd: &paths["trixie_initramfs"],
        // `no4lvl` keeps the Debian kernel in Sv39 (guest/README.md).
        append: format!(
            "console=ttyS0 no4lvl {GUEST_NET_ARGS} understudy.init='sleep {SERVICE_GUEST_SLEEP_S}'"
        ),
        memory_mib: TRIXIE_MEMORY_MIB,
        forwards: vec![(port, 6379)],
    };
    let mut guest = Guest::start(machine, &spec);
    let ready = guest.wait_for(READY_MARKER, BOOT_TIMEOUT)?;
    println!(
        "  {}: ready after {:.1} s",
        machine.name(),
        ready.as_secs_f64()
    );
    *ready_s = Ok(ready.as_secs_f64());
    let port_text = port.to_string();
    warm_up("redis-server", SERVICE_WARMUP_TIMEOUT, || {
        run_bounded(
            Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port_text, "ping"]),
            Duration::from_secs(30),
        )
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "PONG")
    })?;
    let requests = REDIS_REQUESTS.to_string();
    let output = run_bounded(
        Command::new("redis-benchmark").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_text,
            "-n",
            &requests,
            "-c",
            "1",
            "-t",
            "set,get",
            "--csv",
        ]),
        REDIS_BENCHMARK_TIMEOUT,
    )?;
    // `--csv` lines: "SET","1234.56",... (progress lines end in '\r').
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    let rate = |test: &str| -> Option<f64> {
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            (fields.first() == Some(&test))
                .then(|| fields.get(1)?.parse().ok())
                .flatten()
        })
    };
    match (rate("SET"), rate("GET")) {
        (Some(set), Some(get)) => Ok((set, get)),
        _ => Err(format!(
            "redis-benchmark printed no rates ({}): {}{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

fn cell(value: &Cell, precision: usize) -> String {
    match value {
        Ok(value) => format!("{value:.precision$}"),
        Err(_) => "failed".into(),
    }
}

fn ratio(ours: &Cell, qemu: &Cell) -> String {
    match (ours, qemu) {
        (Ok(ours), Ok(qemu)) if *qemu > 0.0 => format!("{:.3}", ours / qemu),
        _ => "-".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; other words choose parts (boot, curl, redis).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let parts = ["boot", "curl", "redis"];
    let everything = filters.is_empty()
        || filters
            .iter()
            .any(|filter| "linux_vs_qemu".contains(filter.as_str()));
    let chosen: Vec<&str> = parts
        .into_iter()
        .filter(|part| everything || filters.iter().any(|filter| part.contains(filter.as_str())))
        .collect();
    if chosen.is_empty() {
        return;
    }
    require_tools(&[
        "qemu-system-riscv64",
        "curl",
        "redis-cli",
        "redis-benchmark",
    ]);
    let mut guests = Vec::new();
    if chosen.contains(&"boot") || chosen.contains(&"curl") {
        guests.push("minimal");
    }
    if chosen.contains(&"redis") {
        guests.push("trixie");
    }
    let paths = artifacts(&guests);
    println!("load average at start: {}", load_average());

    // Rows: (label, understudy, qemu, unit note).
    let mut rows: Vec<(String, Cell, Cell)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut note_failure = |what: &str, machine: Machine, cell: &Cell| {
        if let Err(error) = cell {
            failures.push(format!("{what} in {}: {error}", machine.name()));
        }
    };
    if chosen.contains(&"boot") {
        println!(
            "boot: minimal 6.1 kernel to {READY_MARKER:?}, median of {BOOT_REPEATS} boots each"
        );
        let mut ours_runs = Vec::new();
        let mut qemu_runs = Vec::new();
        for _ in 0..BOOT_REPEATS {
            ours_runs.push(boot(Machine::Understudy, &paths));
            qemu_runs.push(boot(Machine::Qemu, &paths));
        }
        let (ours, qemu) = (median_boot(ours_runs), median_boot(qemu_runs));
        note_failure("boot", Machine::Understudy, &ours.wall_s);
        note_failure("boot", Machine::Qemu, &qemu.wall_s);
        if let Some(instructions) = ours.instructions {
            notes.push(format!(
                "understudy boot executed {instructions} instructions (to power off right after the ready marker, --stats)"
            ));
            if let Ok(wall) = ours.wall_s {
                notes.push(format!(
                    "understudy boot: {:.1} MIPS by wall time",
                    instructions as f64 / wall / 1e6
                ));
            }
        }
        notes.push("qemu boot instructions: not counted (QEMU 7.2 here ships no TCG plugins; -icount would change its speed)".into());
        let cpu =
            |result: &BootResult| -> Cell { result.cpu_s.ok_or_else(|| "no cpu time".to_string()) };
        let (ours_cpu, qemu_cpu) = (cpu(&ours), cpu(&qemu));
        rows.push((
            "boot to ready, wall s (lower is better)".into(),
            ours.wall_s,
            qemu.wall_s,
        ));
        rows.push(("boot to ready, process CPU s".into(), ours_cpu, qemu_cpu));
    }
    if chosen.contains(&"curl") {
        println!("curl: {CURL_REQUESTS} sequential GETs of / from busybox httpd, minimal guest");
        let ours = curl_rate(Machine::Understudy, &paths);
        let qemu = curl_rate(Machine::Qemu, &paths);
        note_failure("curl", Machine::Understudy, &ours);
        note_failure("curl", Machine::Qemu, &qemu);
        rows.push(("curl GET requests/s".into(), ours, qemu));
    }
    if chosen.contains(&"redis") {
        println!(
            "redis: redis-benchmark -n {REDIS_REQUESTS} -c 1 -t set,get against the trixie guest"
        );
        let ours = redis_rates(Machine::Understudy, &paths);
        let qemu = redis_rates(Machine::Qemu, &paths);
        note_failure("redis", Machine::Understudy, &ours.set);
        note_failure("redis", Machine::Qemu, &qemu.set);
        rows.push((
            "trixie boot to ready, wall s (lower is better)".into(),
            ours.ready_s,
            qemu.ready_s,
        ));
        rows.push(("redis SET requests/s".into(), ours.set, qemu.set));
        rows.push(("redis GET requests/s".into(), ours.get, qemu.get));
    }

    println!();
    println!("load average at end: {}", load_average());
    println!(
        "{:<48} {:>12} {:>12} {:>18}",
        "measure",
        Machine::Understudy.name(),
        Machine::Qemu.name(),
        "understudy / qemu"
    );
    for (label, ours, qemu) in &rows {
        println!(
            "{label:<48} {:>12} {:>12} {:>18}",
            cell(ours, 2),
            cell(qemu, 2),
            ratio(ours, qemu)
        );
    }
    for note in &notes {
        println!("note: {note}");
    }
    for failure in &failures {
        println!("FAILED: {failure}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
