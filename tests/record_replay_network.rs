//! Recording real network sessions and replaying them: a Linux guest serving `curl` through
//! busybox httpd, and the trixie guest serving `redis-benchmark`, are recorded with their
//! network input, replayed from the log alone, and every state digest compared. Both are
//! recorded with the translator on; the httpd session also replays with the interpreter alone,
//! so a machine that translates and one that interprets pass through the same digests.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{artifacts, digest_lines, free_port, work_dir};

const DIGEST_EVERY: &str = "5000000";
/// How long the guest may take to boot and open its forwarded port.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Waits until the guest answers on the forwarded port (the forward accepts at once, so a
/// client command is the probe).
fn wait_for(mut probe: impl FnMut() -> bool, child: &mut Child) {
    let started = Instant::now();
    while !probe() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the guest stopped before serving"
        );
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "the guest did not serve within {BOOT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Records `kernel`+`initrd` with user networking forwarding `port` to `guest_port`; runs
/// `session` against the port once it answers `probe`, then lets the guest power off by
/// ending its `read` on the console. Returns the recording's output.
fn record(
    kernel: &Path,
    initrd: &Path,
    extra: &[&str],
    log: &Path,
    port: u16,
    guest_port: u16,
    mut probe: impl FnMut() -> bool,
    session: impl FnOnce(),
) -> Output {
    let append = "console=ttyS0 earlycon no4lvl quiet understudy.ip=10.0.2.15/24 understudy.init='read line'";
    let net = format!("user:hostfwd=tcp:{port}-{guest_port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "run-guest",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
        ])
        .args([
            "--append",
            append,
            "--net",
            &net,
            "--record",
            log.to_str().unwrap(),
            "--digest-every",
            DIGEST_EVERY,
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while the guest runs: a boot prints more digest lines than a pipe
    // holds, and a full pipe would stall the guest.
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    wait_for(&mut probe, &mut child);
    session();
    child.stdin.as_mut().unwrap().write_all(b"done\n").unwrap();
    let status = child.wait().unwrap();
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).unwrap();
        bytes
    })
}

/// Replays `log` once per entry of `modes` (extra `replay` arguments: none runs hot code
/// translated, `--interpret` the interpreter alone); every replay must pass through the
/// recorded digests and print the recorded console output.
fn replay_matches(log: &Path, recorded: &Output, modes: &[&[&str]]) {
    let recorded_digests = digest_lines(&recorded.stderr);
    assert!(recorded_digests.len() >= 5, "{recorded_digests:?}");
    for mode in modes {
        let replayed = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args([
                "replay",
                log.to_str().unwrap(),
                "--digest-every",
                DIGEST_EVERY,
                "--console",
            ])
            .args(*mode)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            replayed.status.success(),
            "{mode:?}: {}",
            String::from_utf8_lossy(&replayed.stderr)
        );
        assert_eq!(digest_lines(&replayed.stderr), recorded_digests, "{mode:?}");
        assert_eq!(replayed.stdout, recorded.stdout, "{mode:?}");
    }
}

#[test]
fn an_httpd_session_with_curl_is_recorded_and_replays_to_identical_digests() {
    let paths = artifacts();
    let dir = work_dir("httpd");
    let log = dir.join("httpd.log");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let curl = |url: &str| {
        Command::new("curl")
            .args(["-s", "-f", "-m", "10", url])
            .output()
            .expect("curl runs (tools/install-prerequisites installs it)")
    };
    let recorded = record(
        &paths["minimal_kernel"],
        &paths["minimal_initramfs"],
        &[],
        &log,
        port,
        80,
        || curl(&url).status.success(),
        || {
            for _ in 0..10 {
                let page = curl(&url);
                assert!(page.status.success());
                assert!(!page.stdout.is_empty());
            }
        },
    );
    // Recorded with the translator, replayed with and without it.
    replay_matches(&log, &recorded, &[&[], &["--interpret"]]);
}

#[test]
fn a_redis_benchmark_session_is_recorded_and_replays_to_identical_digests() {
    let paths = artifacts();
    let dir = work_dir("redis");
    let log = dir.join("redis.log");
    let port = free_port();
    let port_text = port.to_string();
    let ping = || {
        Command::new("redis-cli")
            .args(["-p", &port_text, "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    };
    let recorded = record(
        &paths["trixie_kernel"],
        &paths["trixie_initramfs"],
        &["--memory-mib", "512"],
        &log,
        port,
        6379,
        ping,
        || {
            let bench = Command::new("redis-benchmark")
                .args([
                    "-p", &port_text, "-q", "-t", "set,get", "-n", "200", "-c", "1",
                ])
                .output()
                .expect("redis-benchmark runs (tools/install-prerequisites installs redis-tools)");
            let text = String::from_utf8_lossy(&bench.stdout);
            assert!(text.contains("SET") && text.contains("GET"), "{text}");
        },
    );
    replay_matches(&log, &recorded, &[&[]]);
}
