//! Linux guests in our machine (translator on) and in `qemu-system-riscv64 -M virt`, under
//! TCG and under `-icount shift=0`, side by side in one run: the minimal kernel's boot to the
//! ready marker, `curl` requests against busybox httpd, the trixie kernel's boot to power off,
//! and its boot to the services plus `redis-benchmark` SET and GET, through user-mode
//! networking on loopback; prints wall and process CPU time (or rates) for each, the median
//! of three interleaved rounds, with the ratios. QEMU's CPU is cut down to our extensions
//! (`harness::QEMU_CPU`).
//! Run with `cargo bench --bench linux_vs_qemu [-- boot|curl|poweroff|redis] [interpreter]`
//! (`interpreter` adds a column for our interpreter, the reference).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../appliance/guest/isa/harness.rs"]
mod harness;

const READY_MARKER: &str = "understudy-guest: ready";
/// The kernel's last console line before it powers the machine off (kernel/reboot.c).
const POWER_OFF_MARKER: &str = "reboot: Power down";
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the forwarded service may take to answer its first request after the ready
/// marker (ARP and the first connection through user networking).
const SERVICE_WARMUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Rounds of every measure, each running every machine once in turn (so a change of the
/// host's load hits all of them alike); each column reports its median. One run alone is
/// too noisy to compare: QEMU's times move by tens of percent between runs on a shared host.
const ROUNDS: usize = 3;
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
    /// `understudy run-guest` with the x86-64 translator on.
    Understudy,
    /// `understudy run-guest` with every instruction interpreted: the reference column,
    /// only with the `interpreter` word (it doubles the run time).
    UnderstudyInterpreted,
    Qemu,
    /// QEMU with `-icount shift=0`: one instruction per virtual nanosecond, QEMU's exact
    /// count mode, the fair anchor for a machine that counts every instruction.
    QemuIcount,
}

impl Machine {
    fn name(self) -> &'static str {
        match self {
            Machine::Understudy => "understudy",
            Machine::UnderstudyInterpreted => "interpreted",
            Machine::Qemu => "qemu TCG",
            Machine::QemuIcount => "qemu icount",
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
        Machine::Understudy | Machine::UnderstudyInterpreted => {
            command = Command::new(env!("CARGO_BIN_EXE_understudy"));
            command.arg("run-guest");
            if machine == Machine::UnderstudyInterpreted {
                command.arg("--interpret");
            }
            command.arg("--kernel").arg(spec.kernel);
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
        Machine::Qemu | Machine::QemuIcount => {
            command = Command::new("qemu-system-riscv64");
            // The default firmware (OpenSBI) stays: it is QEMU's SBI, where we have our own
            // monitor; -cpu limits the ISA to ours (harness::QEMU_CPU).
            command.args(["-M", "virt", "-accel", "tcg", "-nographic"]);
            command.args(["-cpu", harness::QEMU_CPU]);
            if machine == Machine::QemuIcount {
                command.args(["-icount", "shift=0"]);
            }
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

/// Wall and process CPU time of one measured stretch.
#[derive(Clone)]
struct Timing {
    wall_s: Cell,
    cpu_s: Cell,
}

impl Timing {
    fn failed(error: String) -> Timing {
        Timing {
            wall_s: Err(error.clone()),
            cpu_s: Err(error),
        }
    }

    /// Process CPU seconds spent between two readings, or why there is no figure.
    fn cpu_between(before: Option<Duration>, after: Option<Duration>) -> Cell {
        match (before, after) {
            (Some(before), Some(after)) => Ok(after.saturating_sub(before).as_secs_f64()),
            _ => Err("no cpu time".into()),
        }
    }
}

/// Boots `spec` to the console line `marker` (the ready marker, or the kernel's power-off
/// line) and waits for the emulator to exit; the CPU time is read at the marker, so a
/// guest that powers off right after its marker is measured to its last instruction.
fn boot_to(machine: Machine, spec: &GuestSpec, marker: &str) -> (Timing, Option<u64>) {
    let mut guest = Guest::start(machine, spec);
    let wall = guest.wait_for(marker, BOOT_TIMEOUT);
    let cpu = guest.cpu_time();
    if let Ok(wall) = &wall {
        println!(
            "  {}: {marker:?} after {:.1} s",
            machine.name(),
            wall.as_secs_f64()
        );
    }
    let exited = wall.is_ok().then(|| guest.wait_exit(EXIT_TIMEOUT));
    if let Some(Err(error)) = &exited {
        println!("  {}: power off after the boot: {error}", machine.name());
    }
    let instructions = guest.stderr().lines().find_map(|line| {
        line.strip_prefix("instructions ")
            .and_then(|n| n.trim().parse().ok())
    });
    let timing = Timing {
        wall_s: wall.map(|d| d.as_secs_f64()),
        cpu_s: Timing::cpu_between(Some(Duration::ZERO), cpu),
    };
    (timing, instructions)
}

/// Runs `measure` for every machine `ROUNDS` times, interleaved; returns each machine's
/// results in the order of `machines`.
fn rounds<T>(machines: &[Machine], mut measure: impl FnMut(Machine) -> T) -> Vec<Vec<T>> {
    let mut results: Vec<Vec<T>> = machines.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        println!("  round {round} of {ROUNDS}");
        for (index, &machine) in machines.iter().enumerate() {
            results[index].push(measure(machine));
        }
    }
    results
}

/// Each machine's median `Timing` over its rounds, `pick` choosing it from a result.
fn medians<T>(runs: &[Vec<T>], pick: impl Fn(&T) -> &Timing) -> Vec<Timing> {
    runs.iter()
        .map(|results| {
            let timings: Vec<Timing> = results.iter().map(|result| pick(result).clone()).collect();
            median_timing(&timings)
        })
        .collect()
}

/// The median of each column over several runs (any failed run makes the column failed).
fn median_timing(runs: &[Timing]) -> Timing {
    fn median(cells: Vec<&Cell>) -> Cell {
        let mut values = Vec::new();
        for cell in cells {
            values.push(cell.clone()?);
        }
        values.sort_by(f64::total_cmp);
        values
            .get(values.len() / 2)
            .copied()
            .ok_or_else(|| "no runs".into())
    }
    Timing {
        wall_s: median(runs.iter().map(|run| &run.wall_s).collect()),
        cpu_s: median(runs.iter().map(|run| &run.cpu_s).collect()),
    }
}

fn minimal_boot_spec(paths: &BTreeMap<String, PathBuf>) -> GuestSpec<'_> {
    GuestSpec {
        kernel: &paths["minimal_kernel"],
        initrd: &paths["minimal_initramfs"],
        append: "console=ttyS0 understudy.init='true'".into(),
        memory_mib: MINIMAL_MEMORY_MIB,
        forwards: Vec::new(),
    }
}

/// The trixie kernel and initramfs with no services, powering off from init at once: the
/// kernel's whole boot and shutdown, to its last console line.
fn trixie_poweroff_spec(paths: &BTreeMap<String, PathBuf>) -> GuestSpec<'_> {
    GuestSpec {
        kernel: &paths["trixie_kernel"],
        initrd: &paths["trixie_initramfs"],
        // `no4lvl` keeps the Debian kernel in Sv39 (guest/README.md) in both machines:
        // QEMU 7.2 has no CPU property to cap the satp modes.
        append: "console=ttyS0 no4lvl understudy.services=0 understudy.init=poweroff".into(),
        memory_mib: TRIXIE_MEMORY_MIB,
        forwards: Vec::new(),
    }
}

/// `CURL_REQUESTS` sequential GETs, one connection each: the time and CPU of all of them.
fn curl_run(machine: Machine, paths: &BTreeMap<String, PathBuf>) -> Result<Timing, String> {
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
    let cpu_before = guest.cpu_time();
    let started = Instant::now();
    for request in 0..CURL_REQUESTS {
        curl_get(port).map_err(|error| format!("request {request}: {error}"))?;
    }
    Ok(Timing {
        wall_s: Ok(started.elapsed().as_secs_f64()),
        cpu_s: Timing::cpu_between(cpu_before, guest.cpu_time()),
    })
}

/// The trixie guest with its services: the boot to the ready marker, then one
/// `redis-benchmark` client for SET and another for GET.
struct RedisResult {
    ready: Timing,
    set: Timing,
    get: Timing,
}

fn redis_run(machine: Machine, paths: &BTreeMap<String, PathBuf>) -> RedisResult {
    let mut result = RedisResult {
        ready: Timing::failed("no ready marker".into()),
        set: Timing::failed("not run".into()),
        get: Timing::failed("not run".into()),
    };
    if let Err(error) = redis_run_inner(machine, paths, &mut result) {
        for timing in [&mut result.set, &mut result.get] {
            if timing.wall_s.is_err() {
                *timing = Timing::failed(error.clone());
            }
        }
    }
    result
}

fn redis_run_inner(
    machine: Machine,
    paths: &BTreeMap<String, PathBuf>,
    result: &mut RedisResult,
) -> Result<(), String> {
    let port = free_port();
    let spec = GuestSpec {
        kernel: &paths["trixie_kernel"],
        initrd: &paths["trixie_initramfs"],
        append: format!(
            "console=ttyS0 no4lvl {GUEST_NET_ARGS} understudy.init='sleep {SERVICE_GUEST_SLEEP_S}'"
        ),
        memory_mib: TRIXIE_MEMORY_MIB,
        forwards: vec![(port, 6379)],
    };
    let mut guest = Guest::start(machine, &spec);
    let ready = guest.wait_for(READY_MARKER, BOOT_TIMEOUT);
    result.ready = Timing {
        wall_s: ready.clone().map(|d| d.as_secs_f64()),
        cpu_s: Timing::cpu_between(Some(Duration::ZERO), guest.cpu_time()),
    };
    let ready = ready?;
    println!(
        "  {}: ready after {:.1} s",
        machine.name(),
        ready.as_secs_f64()
    );
    let port_text = port.to_string();
    warm_up("redis-server", SERVICE_WARMUP_TIMEOUT, || {
        run_bounded(
            Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port_text, "ping"]),
            Duration::from_secs(30),
        )
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "PONG")
    })?;
    for (test, timing) in [("set", &mut result.set), ("get", &mut result.get)] {
        let cpu_before = guest.cpu_time();
        let started = Instant::now();
        redis_benchmark(&port_text, test)?;
        *timing = Timing {
            wall_s: Ok(started.elapsed().as_secs_f64()),
            cpu_s: Timing::cpu_between(cpu_before, guest.cpu_time()),
        };
    }
    Ok(())
}

/// One `redis-benchmark` client running `REDIS_REQUESTS` of `test`; checks that it reported
/// a rate (the rate itself is taken from the wall time around it, like the CPU time).
fn redis_benchmark(port: &str, test: &str) -> Result<(), String> {
    let requests = REDIS_REQUESTS.to_string();
    let output = run_bounded(
        Command::new("redis-benchmark").args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-n",
            &requests,
            "-c",
            "1",
            "-t",
            test,
            "--csv",
        ]),
        REDIS_BENCHMARK_TIMEOUT,
    )?;
    // `--csv` lines: "SET","1234.56",... (progress lines end in '\r').
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    let name = test.to_uppercase();
    let reported = text.lines().any(|line| {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        fields.first() == Some(&name.as_str())
            && fields
                .get(1)
                .is_some_and(|rate| rate.parse::<f64>().is_ok())
    });
    if reported {
        Ok(())
    } else {
        Err(format!(
            "redis-benchmark printed no {name} rate ({}): {}{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// One row of the table: a value per machine, and which way is better.
struct Row {
    label: String,
    cells: Vec<Cell>,
    higher_is_better: bool,
}

impl Row {
    /// Two rows from the timings of one stretch: the wall time and the process CPU time.
    fn times(label: &str, timings: &[Timing]) -> [Row; 2] {
        [
            Row {
                label: format!("{label}, wall s"),
                cells: timings.iter().map(|t| t.wall_s.clone()).collect(),
                higher_is_better: false,
            },
            Row {
                label: format!("{label}, CPU s"),
                cells: timings.iter().map(|t| t.cpu_s.clone()).collect(),
                higher_is_better: false,
            },
        ]
    }

    /// Two rows from `count` operations in each timing: per wall second and per CPU second.
    fn rates(label: &str, count: u32, timings: &[Timing]) -> [Row; 2] {
        let per = |seconds: &Cell| -> Cell {
            match seconds {
                Ok(seconds) if *seconds > 0.0 => Ok(f64::from(count) / seconds),
                Ok(_) => Err("no measurable time".into()),
                Err(error) => Err(error.clone()),
            }
        };
        [
            Row {
                label: format!("{label}/s (wall)"),
                cells: timings.iter().map(|t| per(&t.wall_s)).collect(),
                higher_is_better: true,
            },
            Row {
                label: format!("{label}/CPU s"),
                cells: timings.iter().map(|t| per(&t.cpu_s)).collect(),
                higher_is_better: true,
            },
        ]
    }

    /// How many times faster our translated machine is than column `other` (above 1: we
    /// are faster), whatever the direction of the measure.
    fn speedup(&self, other: usize) -> String {
        match (&self.cells[0], &self.cells[other]) {
            (Ok(ours), Ok(theirs)) if *ours > 0.0 && *theirs > 0.0 => {
                let speedup = if self.higher_is_better {
                    ours / theirs
                } else {
                    theirs / ours
                };
                format!("{speedup:.2}")
            }
            _ => "-".into(),
        }
    }
}

fn cell(value: &Cell) -> String {
    match value {
        Ok(value) if *value >= 100.0 => format!("{value:.0}"),
        Ok(value) => format!("{value:.2}"),
        Err(_) => "failed".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; other words choose parts, and `interpreter` adds the
    // interpreted column.
    let mut words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let with_interpreter = words.iter().any(|word| word == "interpreter");
    words.retain(|word| word != "interpreter");
    let parts = ["boot", "curl", "poweroff", "redis"];
    let everything = words.is_empty()
        || words
            .iter()
            .any(|word| "linux_vs_qemu".contains(word.as_str()));
    let chosen: Vec<&str> = parts
        .into_iter()
        .filter(|part| everything || words.iter().any(|word| part.contains(word.as_str())))
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
    if chosen.contains(&"poweroff") || chosen.contains(&"redis") {
        guests.push("trixie");
    }
    let paths = artifacts(&guests);
    // The translated machine comes first: every ratio is against it.
    let mut machines = vec![Machine::Understudy, Machine::Qemu, Machine::QemuIcount];
    if with_interpreter {
        machines.push(Machine::UnderstudyInterpreted);
    }
    println!("load average at start: {}", load_average());
    println!("qemu: -cpu {}", harness::QEMU_CPU);

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut note_failures = |what: &str, timings: &[Timing]| {
        for (machine, timing) in machines.iter().zip(timings) {
            if let Err(error) = &timing.wall_s {
                failures.push(format!("{what} in {}: {error}", machine.name()));
            }
        }
    };
    let mut note_instructions = |what: &str, instructions: Option<u64>, timing: &Timing| {
        if let (Some(instructions), Ok(wall)) = (instructions, &timing.wall_s) {
            notes.push(format!(
                "{what}: understudy executed {instructions} instructions ({:.0} MIPS by wall time)",
                instructions as f64 / wall / 1e6
            ));
        }
    };
    if chosen.contains(&"boot") {
        println!("boot: minimal 6.1 kernel to {READY_MARKER:?}");
        let spec = minimal_boot_spec(&paths);
        let runs = rounds(&machines, |machine| boot_to(machine, &spec, READY_MARKER));
        let timings = medians(&runs, |(timing, _)| timing);
        note_failures("boot", &timings);
        note_instructions(
            "minimal boot (to power off after the marker)",
            runs[0][0].1,
            &timings[0],
        );
        rows.extend(Row::times("minimal 6.1 boot to ready", &timings));
    }
    if chosen.contains(&"curl") {
        println!("curl: {CURL_REQUESTS} sequential GETs of / from busybox httpd, minimal guest");
        let runs = rounds(&machines, |machine| {
            curl_run(machine, &paths).unwrap_or_else(Timing::failed)
        });
        let timings = medians(&runs, |timing| timing);
        note_failures("curl", &timings);
        rows.extend(Row::rates("curl GET requests", CURL_REQUESTS, &timings));
    }
    if chosen.contains(&"poweroff") {
        println!("poweroff: trixie 6.12 kernel, no services, init powers off at once");
        let spec = trixie_poweroff_spec(&paths);
        let runs = rounds(&machines, |machine| {
            boot_to(machine, &spec, POWER_OFF_MARKER)
        });
        let timings = medians(&runs, |(timing, _)| timing);
        note_failures("poweroff", &timings);
        note_instructions("trixie boot to power off", runs[0][0].1, &timings[0]);
        rows.extend(Row::times("trixie 6.12 boot to power off", &timings));
    }
    if chosen.contains(&"redis") {
        println!(
            "redis: trixie guest with its services; redis-benchmark -n {REDIS_REQUESTS} -c 1 -t set, then -t get"
        );
        let runs = rounds(&machines, |machine| redis_run(machine, &paths));
        let ready = medians(&runs, |r| &r.ready);
        let set = medians(&runs, |r| &r.set);
        let get = medians(&runs, |r| &r.get);
        note_failures("redis boot", &ready);
        note_failures("redis SET", &set);
        note_failures("redis GET", &get);
        rows.extend(Row::times("trixie boot to httpd + redis ready", &ready));
        rows.extend(Row::rates("redis SET requests", REDIS_REQUESTS, &set));
        rows.extend(Row::rates("redis GET requests", REDIS_REQUESTS, &get));
    }

    println!();
    println!("load average at end: {}", load_average());
    let mut header = format!("{:<44}", "measure");
    for machine in &machines {
        header.push_str(&format!(" {:>12}", machine.name()));
    }
    for machine in &machines[1..] {
        header.push_str(&format!(" {:>14}", format!("vs {}", machine.name())));
    }
    println!("{header}");
    for row in &rows {
        let mut line = format!("{:<44}", row.label);
        for value in &row.cells {
            line.push_str(&format!(" {:>12}", cell(value)));
        }
        for other in 1..machines.len() {
            line.push_str(&format!(" {:>14}", row.speedup(other)));
        }
        println!("{line}");
    }
    println!(
        "note: \"vs X\" is how many times faster the translated understudy is than X (above 1: faster), for times and rates alike"
    );
    println!(
        "note: firmware differs: QEMU boots OpenSBI (its default -bios) and then the kernel; understudy starts the kernel in S-mode and answers SBI calls itself"
    );
    println!(
        "note: same kernel, initramfs, command line and memory in all; QEMU's virt machine also has devices the guest does not use here (PCIe, flash, fw_cfg)"
    );
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
