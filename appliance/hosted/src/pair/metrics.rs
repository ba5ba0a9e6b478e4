//! What an operator's tools read: a replica's status as JSON (`understudy status --json`) and
//! as Prometheus text exposition on `metrics_address` (format 0.0.4; names and units follow
//! the Prometheus conventions: base units, `_total` for counters, one gauge per role state).
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use understudy_ft::RoleKind;

use super::state::StatusReport;

/// Every role a replica's node can be in, for the role gauge's label values.
const ROLES: [RoleKind; 8] = [
    RoleKind::Primary,
    RoleKind::Backup,
    RoleKind::Solo,
    RoleKind::ClaimingAsPrimary,
    RoleKind::ClaimingAsBackup,
    RoleKind::GoingLive,
    RoleKind::Joining,
    RoleKind::Halted,
];
/// How long a scrape may take to send its request line before it is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read from a scraper, in bytes.
const REQUEST_BYTES_MAX: u64 = 8 * 1024;

/// The status file's `key=value` lines as one JSON object: numbers and booleans typed, the
/// rest strings.
pub fn status_json(text: &str) -> String {
    let mut object = serde_json::Map::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = if let Ok(number) = value.parse::<u64>() {
            serde_json::Value::from(number)
        } else if let Ok(number) = value.parse::<f64>() {
            serde_json::Value::from(number)
        } else if let Ok(flag) = value.parse::<bool>() {
            serde_json::Value::from(flag)
        } else {
            serde_json::Value::from(value)
        };
        object.insert(key.to_owned(), value);
    }
    serde_json::Value::Object(object).to_string()
}

/// The Prometheus exposition of a replica's figures.
pub fn exposition(report: &StatusReport, failovers: u64) -> String {
    let status = &report.status;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    let flag = |value: bool| one(if value { 1.0 } else { 0.0 });
    let roles: Vec<(String, f64)> = ROLES
        .iter()
        .map(|role| {
            let label = format!("{role}").replace(' ', "_");
            let value = if *role == status.role { 1.0 } else { 0.0 };
            (format!("{{role=\"{label}\"}}"), value)
        })
        .collect();
    metric(
        "understudy_role",
        "gauge",
        "1 for the replica's current role, 0 for the others.",
        &roles,
    );
    metric(
        "understudy_epoch",
        "gauge",
        "The epoch this replica is in.",
        &one(status.epoch.0 as f64),
    );
    metric(
        "understudy_peer_reachable",
        "gauge",
        "1 when the partner has been heard since this replica started.",
        &flag(report.peer_heard),
    );
    metric(
        "understudy_arbiter_reachable",
        "gauge",
        "1 when the arbiter answered within three and a half peer timeouts.",
        &flag(report.arbiter_reachable),
    );
    metric(
        "understudy_failover_available",
        "gauge",
        "1 when the death of either replica would be survived now.",
        &flag(report.failover_available),
    );
    let lag_entries = status.log_end.0.saturating_sub(status.acknowledged.0);
    metric(
        "understudy_log_lag_entries",
        "gauge",
        "Log entries the backup has not acknowledged (primary).",
        &one(lag_entries as f64),
    );
    metric(
        "understudy_log_lag_instructions",
        "gauge",
        "Instructions between the primary and what the backup acknowledged or executed.",
        &one(status.lag_instructions as f64),
    );
    metric(
        "understudy_log_lag_seconds",
        "gauge",
        "The instruction lag in the guest's own time.",
        &one(status.lag_instructions as f64 / report.instructions_per_guest_ms / 1e3),
    );
    metric(
        "understudy_outputs_held",
        "gauge",
        "Outputs waiting for the output rule (primary) or kept for reissue (backup).",
        &one(status.outputs_held as f64),
    );
    metric(
        "understudy_log_sent_bytes_total",
        "counter",
        "Bytes this replica sent on the log channel.",
        &one(report.log_bytes_sent as f64),
    );
    metric(
        "understudy_digests_matched_total",
        "counter",
        "State digests compared with the primary's and found equal (backup).",
        &one(status.digests_matched as f64),
    );
    metric(
        "understudy_failovers_total",
        "counter",
        "Times this replica went live after its partner was lost.",
        &one(failovers as f64),
    );
    metric(
        "understudy_protected_seconds",
        "gauge",
        "Seconds since the pair formed.",
        &one(report.protected_since.map_or(0.0, |d| d.as_secs_f64())),
    );
    metric(
        "understudy_instructions_total",
        "counter",
        "Guest instructions this machine executed.",
        &one(status.instructions as f64),
    );
    metric(
        "understudy_frames_sent_total",
        "counter",
        "Log channel frames sent.",
        &one(status.counters.frames_sent as f64),
    );
    metric(
        "understudy_frames_rejected_total",
        "counter",
        "Log channel frames refused (wrong key, stale, duplicate, malformed).",
        &one(status.counters.frames_rejected as f64),
    );
    metric(
        "understudy_retransmissions_total",
        "counter",
        "Log entries sent again for want of an acknowledgement.",
        &one(status.counters.retransmissions as f64),
    );
    metric(
        "understudy_service_frames_dropped_total",
        "counter",
        "Service network frames dropped because the guest could not take them.",
        &one(report.frames_dropped as f64),
    );
    out
}

/// Serves the latest exposition to every `GET` on `address`, from a thread of its own.
pub fn serve(address: SocketAddr) -> Result<Arc<Mutex<String>>> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("cannot serve metrics on {address}"))?;
    let latest = Arc::new(Mutex::new(String::new()));
    let shared = latest.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
            let mut reader = BufReader::new((&stream).take(REQUEST_BYTES_MAX));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The head ends at an empty line; a scraper's headers say nothing we need.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let response = if line.starts_with("GET ") {
                let body = shared
                    .lock()
                    .map(|text| text.clone())
                    .unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = (&stream).write_all(response.as_bytes());
        }
    });
    Ok(latest)
}

