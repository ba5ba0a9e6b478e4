//! What an operator's tools read: a replica's status as JSON (`understudy status --json`) and
//! as Prometheus text exposition on `metrics_address` (format 0.0.4; names and units follow
//! the Prometheus conventions: base units, `_total` for counters, one gauge per role state).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use understudy_replica::metrics::Figures;

use super::state::StatusReport;

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

/// The Prometheus exposition of a hosted replica's figures.
pub fn exposition(report: &StatusReport, failovers: u64) -> String {
    understudy_replica::metrics::exposition(&Figures {
        status: report.status,
        peer_reachable: report.peer_heard,
        arbiter_reachable: report.arbiter_reachable,
        failover_available: report.failover_available,
        lag_seconds: report.status.lag_instructions as f64 / report.instructions_per_guest_ms / 1e3,
        log_bytes_sent: report.log_bytes_sent,
        failovers,
        protected_seconds: report.protected_since.map_or(0.0, |d| d.as_secs_f64()),
        service_frames_dropped: report.frames_dropped,
    })
}

/// Serves the latest exposition to every `GET` on `address`, from a thread of its own.
pub fn serve(address: SocketAddr) -> Result<Arc<Mutex<String>>> {
    let listener =
        TcpListener::bind(address).with_context(|| format!("cannot serve metrics on {address}"))?;
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
                let body = shared.lock().map(|text| text.clone()).unwrap_or_default();
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
