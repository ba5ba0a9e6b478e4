//! What an operator's tools see of a running pair: arbiter, backup and primary as three
//! `understudy run` processes on loopback (the built-in echo guest, idle), the primary's
//! figures scraped from `metrics_address` and checked with Prometheus's own `promtool check
//! metrics`, and `understudy status --json` read as JSON.
//!
//! Needs `promtool` (Debian's `prometheus` package; `tools/install-prerequisites`).
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, work_dir};
use understudy_machine::program::echo_guest;

const CHANNEL_KEY: &str = "5c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b";
const ARBITER_KEY_PRIMARY: &str =
    "1111111111111111111111111111111111111111111111111111111111111111";
const ARBITER_KEY_BACKUP: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// This test's loopback addresses: primary, backup +1, arbiter +2 (other tests use others).
const HOST: u8 = 101;
/// How long the pair may take to form and hear its arbiter.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// The three processes, killed when the test ends however it ends.
struct Trio(Vec<Child>);

impl Drop for Trio {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write_config(dir: &Path, role: &str, port: u16, metrics_port: u16) -> std::path::PathBuf {
    let own_host = match role {
        "primary" => HOST,
        "backup" => HOST + 1,
        _ => HOST + 2,
    };
    let text = format!(
        "role = {role}\nprimary = 127.0.0.{HOST}/8\nbackup = 127.0.0.{}/8\n\
         arbiter = 127.0.0.{}:{port}\nport = {port}\ndisk = separate\n\
         channel_key = {CHANNEL_KEY}\narbiter_key_primary = {ARBITER_KEY_PRIMARY}\n\
         arbiter_key_backup = {ARBITER_KEY_BACKUP}\npeer_timeout_ms = 300\n\
         guest_kernel = echo.elf\nstate_dir = {role}-state\n\
         metrics_address = 127.0.0.{own_host}:{metrics_port}\n",
        HOST + 1,
        HOST + 2,
    );
    let path = dir.join(format!("{role}.conf"));
    std::fs::write(&path, text).unwrap();
    path
}

fn status_json(config: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {output:?}"))
}

fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: understudy\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `name` (with its labels, if any) in an exposition.
fn sample(exposition: &str, name: &str) -> String {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{exposition}"))
        .to_owned()
}

#[test]
fn a_formed_pair_reports_its_state_as_prometheus_metrics_and_json() {
    let dir = work_dir("pair-status");
    std::fs::write(dir.join("echo.elf"), echo_guest(3)).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let configs: Vec<_> = ["arbiter", "backup", "primary"]
        .iter()
        .map(|role| write_config(&dir, role, port, metrics_port))
        .collect();
    let start = |config: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(["run", "--config"])
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let _trio = Trio(vec![
        start(&configs[0], &["--init"]),
        start(&configs[1], &[]),
        start(&configs[2], &[]),
    ]);
    let primary_metrics = format!("127.0.0.{HOST}:{metrics_port}");
    let deadline = Instant::now() + FORM_TIMEOUT;
    let exposition = loop {
        if TcpStream::connect(&primary_metrics).is_ok() {
            let text = scrape(&primary_metrics);
            if text.contains("\nunderstudy_failover_available 1\n") {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pair did not form with its arbiter within {} s",
            FORM_TIMEOUT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // Prometheus's own checker accepts the exposition (names, types, help, format).
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (install the prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert_eq!(
        checked.status.code(),
        Some(0),
        "promtool: {}{}\n{exposition}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(
        sample(&exposition, "understudy_role{role=\"primary\"}"),
        "1"
    );
    assert_eq!(sample(&exposition, "understudy_role{role=\"backup\"}"), "0");
    assert_eq!(sample(&exposition, "understudy_epoch"), "1");
    assert_eq!(sample(&exposition, "understudy_peer_reachable"), "1");
    assert_eq!(sample(&exposition, "understudy_arbiter_reachable"), "1");
    assert_eq!(sample(&exposition, "understudy_failovers_total"), "0");

    let status = status_json(&configs[2]);
    assert_eq!(status["role"], "primary", "{status}");
    assert_eq!(status["epoch"], 1, "{status}");
    assert_eq!(status["paired"], true, "{status}");
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["failovers"], 0, "{status}");
    let backup = status_json(&configs[1]);
    assert_eq!(backup["role"], "backup", "{backup}");
    assert_eq!(backup["epoch"], 1, "{backup}");
}
