//! The arbiter's register in an etcd v3 cluster, through etcd's JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`; etcd's "gRPC gateway" documentation): a plain HTTP/1.1 client over std
//! sockets, so the same small protocol can later run over the appliance's TCP stack.
//!
//! The record is one key (`<etcd_prefix>/arbiter`) holding `ArbiterRecord::to_bytes`. Reads
//! are etcd's default linearizable ranges; the test-and-set is one transaction comparing the
//! key's modification revision (0 for a key that does not exist yet) before the put. Each
//! request tries the endpoints in order; an endpoint that refuses, times out or answers
//! nonsense counts as no answer, and when none answers the operation is
//! `StorageResult::Unavailable` (a write's effect unknown: `ft::shared` reads to find out).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use understudy_ft::arbiter::ArbiterRecord;
use understudy_ft::shared::{Revision, StorageOp, StorageResult};

use crate::net::Arrival;

/// How long one endpoint may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long one endpoint may take to answer. A member without quorum holds a linearizable
/// request until its own timeout (seconds); this gives up sooner and tries the next.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(1000);
/// Largest answer read from an endpoint, in bytes (a range of one small key is tiny).
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

/// One etcd cluster and the key of the pair's record.
#[derive(Clone, Debug)]
pub struct Etcd {
    /// `host:port` of each member's client URL, in the order they are tried.
    pub endpoints: Vec<String>,
    /// The key holding the record.
    pub key: String,
}

impl Etcd {
    /// The cluster at `endpoints` (`A.B.C.D:PORT`), the record under `prefix`.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> Etcd {
        Etcd {
            endpoints,
            key: format!("{prefix}/arbiter"),
        }
    }

    /// Carries out one operation on the register.
    pub fn execute(&self, op: StorageOp) -> StorageResult {
        let key = BASE64.encode(&self.key);
        let answer = match op {
            StorageOp::Read => self.post("/v3/kv/range", &serde_json::json!({ "key": key })),
            StorageOp::CompareAndPut { expected, record } => self.post(
                "/v3/kv/txn",
                &serde_json::json!({
                    "compare": [{
                        "key": key,
                        "result": "EQUAL",
                        "target": "MOD",
                        "mod_revision": expected.0.to_string(),
                    }],
                    "success": [{
                        "request_put": { "key": key, "value": BASE64.encode(record.to_bytes()) }
                    }],
                }),
            ),
        };
        let Some(answer) = answer else {
            return StorageResult::Unavailable;
        };
        match op {
            StorageOp::Read => read_result(&answer).unwrap_or(StorageResult::Unavailable),
            StorageOp::CompareAndPut { .. } => {
                txn_result(&answer).unwrap_or(StorageResult::Unavailable)
            }
        }
    }

    /// The first answer of any endpoint, as JSON.
    fn post(&self, path: &str, body: &serde_json::Value) -> Option<serde_json::Value> {
        self.endpoints
            .iter()
            .find_map(|endpoint| post_json(endpoint, path, body).ok())
    }

    /// The record as a reader outside the pair sees it (tests, operators): None when the
    /// key does not exist.
    pub fn read_record(&self) -> Result<Option<ArbiterRecord>> {
        match self.execute(StorageOp::Read) {
            StorageResult::Read { record, .. } => Ok(record),
            _ => bail!("no etcd endpoint answered a linearizable read"),
        }
    }
}

/// Serves operations from `ops` against the cluster, each answer into `arrivals`, from a
/// thread of its own (a request may take seconds when members are down).
pub fn spawn_worker(etcd: Etcd, ops: Receiver<StorageOp>, arrivals: SyncSender<Arrival>) {
    std::thread::spawn(move || {
        for op in ops {
            if arrivals.send(Arrival::Storage(etcd.execute(op))).is_err() {
                return;
            }
        }
    });
}

fn read_result(answer: &serde_json::Value) -> Result<StorageResult> {
    let Some(kv) = answer.get("kvs").and_then(|kvs| kvs.get(0)) else {
        // No key yet: a new pair, and the revision a first write must find.
        ensure!(answer.get("header").is_some(), "not a range answer: {answer}");
        return Ok(StorageResult::Read {
            record: None,
            revision: Revision(0),
        });
    };
    let revision = number(kv, "mod_revision")?;
    let value = BASE64
        .decode(kv.get("value").and_then(|v| v.as_str()).unwrap_or(""))
        .context("the record is not base64")?;
    let record = ArbiterRecord::from_bytes(&value)
        .map_err(|error| anyhow::anyhow!("the record in etcd is not an arbiter record: {error}"))?;
    Ok(StorageResult::Read {
        record: Some(record),
        revision: Revision(revision),
    })
}

fn txn_result(answer: &serde_json::Value) -> Result<StorageResult> {
    let header = answer.get("header").context("not a txn answer")?;
    // proto3's JSON leaves `false` out: no `succeeded` means the compare failed.
    if answer.get("succeeded").and_then(|v| v.as_bool()) == Some(true) {
        Ok(StorageResult::Written {
            revision: Revision(number(header, "revision")?),
        })
    } else {
        Ok(StorageResult::CompareFailed)
    }
}

/// An int64 field, which proto3's JSON writes as a string.
fn number(object: &serde_json::Value, field: &str) -> Result<u64> {
    let value = object.get(field).with_context(|| format!("no {field}"))?;
    match value {
        serde_json::Value::String(text) => Ok(text.parse()?),
        serde_json::Value::Number(number) => number.as_u64().context("not a count"),
        _ => bail!("{field} is {value}"),
    }
}

/// One HTTP/1.1 POST of a JSON body; the answer's JSON body when the status is 200.
fn post_json(endpoint: &str, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
    let address: SocketAddr = endpoint
        .to_socket_addrs()?
        .next()
        .context("no address for the endpoint")?;
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream.take(ANSWER_BYTES_MAX));
    let mut status = String::new();
    reader.read_line(&mut status)?;
    ensure!(
        status.starts_with("HTTP/1.1 200"),
        "etcd answered {}",
        status.trim_end()
    );
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
    }
    let mut answer = Vec::new();
    match length {
        Some(length) => {
            answer.resize(length, 0);
            reader.read_exact(&mut answer)?;
        }
        None => {
            reader.read_to_end(&mut answer)?;
        }
    }
    Ok(serde_json::from_slice(&answer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_answers_are_read_as_proto3_json_writes_them() {
        let record = ArbiterRecord {
            epoch: understudy_ft::Epoch(2),
            owner: understudy_ft::NodeId(2),
        };
        let range = serde_json::json!({
            "header": { "revision": "9" },
            "kvs": [{ "key": "eA==", "mod_revision": "7", "value": BASE64.encode(record.to_bytes()) }],
            "count": "1"
        });
        assert_eq!(
            read_result(&range).unwrap(),
            StorageResult::Read {
                record: Some(record),
                revision: Revision(7)
            }
        );
        let empty = serde_json::json!({ "header": { "revision": "9" } });
        assert_eq!(
            read_result(&empty).unwrap(),
            StorageResult::Read {
                record: None,
                revision: Revision(0)
            }
        );
        let won = serde_json::json!({ "header": { "revision": "10" }, "succeeded": true });
        assert_eq!(
            txn_result(&won).unwrap(),
            StorageResult::Written {
                revision: Revision(10)
            }
        );
        let lost = serde_json::json!({ "header": { "revision": "10" } });
        assert_eq!(txn_result(&lost).unwrap(), StorageResult::CompareFailed);
        let garbage = serde_json::json!({ "kvs": [{ "mod_revision": "1", "value": "AAAA" }] });
        assert!(read_result(&garbage).is_err());
    }
}
