//! Linux guests serve real clients on the host: `curl` against busybox httpd in the minimal
//! guest, through the user-mode backend (`--net user:hostfwd=...`) and through a TAP device
//! in a network namespace the test makes itself (needs root and `ip`; CI runs as root), and
//! `redis-cli` and `redis-benchmark` against redis-server in the trixie guest.
//!
//! Guest artifacts come from `guest/build --print-paths` (the test command builds them
//! first); a missing artifact, `curl`, `redis-benchmark` or `ip` fails the test and says
//! what to do.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::{artifacts, free_port};

/// Boot to the ready marker: the minimal kernel needs about 70 million instructions, but
/// the test machine may be shared with other builds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Each `curl` request, in seconds (its `-m`).
const REQUEST_TIMEOUT_S: &str = "30";
/// Sequential requests per test: more than one shows connections are set up and torn down.
const REQUESTS: usize = 10;
/// The guest prints this once httpd listens (guest/init).
const READY_MARKER: &str = "understudy-guest: ready";

/// One guest's images and the kernel arguments it needs besides the network's.
struct GuestImages {
    kernel: PathBuf,
    initramfs: PathBuf,
    append: &'static str,
    memory_mib: &'static str,
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `name` is `minimal` or `trixie` (guest/README.md).
fn guest_images(name: &str) -> GuestImages {
    let paths = artifacts();
    GuestImages {
        kernel: paths[&format!("{name}_kernel")].clone(),
        initramfs: paths[&format!("{name}_initramfs")].clone(),
        // The Debian kernel wants no4lvl to stay in Sv39 (guest/README.md).
        append: if name == "trixie" {
            "console=ttyS0 earlycon no4lvl"
        } else {
            "console=ttyS0 earlycon"
        },
        // redis-server and the larger kernel want more than the default.
        memory_mib: if name == "trixie" { "256" } else { "128" },
    }
}

fn expected_page() -> Vec<u8> {
    std::fs::read(repository().join("guest/www/index.html")).unwrap()
}

/// A running `understudy run-guest`, killed when dropped so a failing test leaves no guest.
struct RunningGuest {
    child: Child,
    console: mpsc::Receiver<String>,
    transcript: Vec<String>,
}

impl RunningGuest {
    /// Starts the guest (through `launcher`, see `launched`) and waits for the ready marker.
    fn boot(launcher: &[&str], guest: &GuestImages, net: &str, ip: &str) -> RunningGuest {
        let append = format!("{} understudy.ip={ip}", guest.append);
        let mut command = launched(launcher, env!("CARGO_BIN_EXE_understudy"));
        command
            .args(["run-guest", "--kernel"])
            .arg(&guest.kernel)
            .arg("--initrd")
            .arg(&guest.initramfs)
            .args(["--append", &append, "--net", net])
            .args(["--memory-mib", guest.memory_mib])
            // An open, silent console: the guest's shell waits on it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("understudy starts");
        let (lines_tx, console) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut guest = RunningGuest {
            child,
            console,
            transcript: Vec::new(),
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match guest.console.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains(READY_MARKER);
                    guest.transcript.push(line);
                    if ready {
                        return guest;
                    }
                }
                Err(_) => {
                    let stderr = guest.stop();
                    panic!(
                        "no `{READY_MARKER}` within {BOOT_TIMEOUT:?}\nconsole:\n{}\nstderr:\n{stderr}",
                        guest.transcript.join("\n")
                    );
                }
            }
        }
    }

    /// Kills the guest and returns what it wrote to stderr.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        stderr
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` run directly, or through `launcher` (e.g. `ip netns exec NS`) when it is not
/// empty.
fn launched(launcher: &[&str], program: &str) -> Command {
    match launcher.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
    }
}

fn curl(launcher: &[&str], url: &str) -> Output {
    launched(launcher, "curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            REQUEST_TIMEOUT_S,
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (install the curl package): {e}"))
}

/// Fetches the page `REQUESTS` times and checks every answer is the guest's index.html.
fn fetch_pages(launcher: &[&str], url: &str, guest: &mut RunningGuest) {
    let expected = expected_page();
    let started = Instant::now();
    for request in 0..REQUESTS {
        let output = curl(launcher, url);
        if !output.status.success() || output.stdout != expected {
            let stderr = guest.stop();
            panic!(
                "request {request} to {url}: {}\ncurl stderr: {}\nbody: {:?}\nguest stderr:\n{stderr}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            );
        }
    }
    eprintln!("{REQUESTS} requests to {url} in {:?}", started.elapsed());
}

#[test]
fn curl_on_the_host_gets_the_guest_httpd_page_through_a_user_port_forward() {
    let port = free_port();
    let mut guest = RunningGuest::boot(
        &[],
        &guest_images("minimal"),
        &format!("user:hostfwd=tcp:{port}-80"),
        "10.0.2.15/24",
    );
    fetch_pages(&[], &format!("http://127.0.0.1:{port}/"), &mut guest);
}

/// A network namespace for one test, deleted (with its devices) when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Namespace {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test makes a network namespace and a TAP device: run it as root"
        );
        let _ = Command::new("ip").args(["netns", "del", name]).output(); // A stale one.
        ip(&["netns", "add", name]);
        Namespace {
            name: name.to_string(),
        }
    }

    fn ip(&self, arguments: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(arguments);
        ip(&all);
    }

    fn launcher(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn ip(arguments: &[&str]) {
    let output = Command::new("ip")
        .args(arguments)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install the iproute2 package): {e}"));
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn curl_in_a_private_namespace_gets_the_guest_httpd_page_through_a_tap_device() {
    let namespace = Namespace::create(&format!("understudy-net-{}", std::process::id()));
    // A persistent TAP made and addressed before the guest starts; understudy attaches to it.
    namespace.ip(&["tuntap", "add", "dev", "ustap0", "mode", "tap"]);
    namespace.ip(&["addr", "add", "10.0.3.1/24", "dev", "ustap0"]);
    namespace.ip(&["link", "set", "ustap0", "up"]);
    let launcher = namespace.launcher();
    let mut guest = RunningGuest::boot(
        &launcher,
        &guest_images("minimal"),
        "tap:ustap0",
        "10.0.3.15/24",
    );
    fetch_pages(&launcher, "http://10.0.3.15/", &mut guest);
    drop(guest);
}

fn run_client(program: &str, arguments: &[&str], guest: &mut RunningGuest) -> String {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install the redis-tools package): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = guest.stop();
        panic!(
            "{program} {}: {}\nstdout: {stdout}\nstderr: {}\nguest stderr:\n{stderr}",
            arguments.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
}

#[test]
fn redis_clients_on_the_host_reach_redis_server_in_the_trixie_guest_through_user_forwards() {
    let (http_port, redis_port) = (free_port(), free_port());
    let mut guest = RunningGuest::boot(
        &[],
        &guest_images("trixie"),
        &format!("user:hostfwd=tcp:{http_port}-80,hostfwd=tcp:{redis_port}-6379"),
        "10.0.2.15/24",
    );
    let port = redis_port.to_string();
    let cli = |arguments: &[&str], guest: &mut RunningGuest| {
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(arguments);
        run_client("redis-cli", &all, guest)
    };
    assert_eq!(
        cli(&["set", "understudy", "replicated"], &mut guest).trim(),
        "OK"
    );
    assert_eq!(cli(&["get", "understudy"], &mut guest).trim(), "replicated");
    // Many parallel connections (redis-benchmark's default 50 clients), opened and closed
    // twice over, with every reply checked by the client.
    let report = run_client(
        "redis-benchmark",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "set,get",
            "-n",
            "2000",
            "-q",
        ],
        &mut guest,
    );
    let rates: Vec<&str> = report
        .split(['\r', '\n'])
        .filter(|line| line.contains("requests per second"))
        .collect();
    assert!(
        rates.iter().any(|l| l.starts_with("SET:")) && rates.iter().any(|l| l.starts_with("GET:")),
        "redis-benchmark reported no rates: {report}"
    );
    eprintln!("{}", rates.join("\n"));
    // The second forward works alongside.
    fetch_pages(&[], &format!("http://127.0.0.1:{http_port}/"), &mut guest);
}
