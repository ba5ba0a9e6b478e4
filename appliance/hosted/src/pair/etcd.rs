//! The arbiter's register in an etcd v3 cluster for the hosted replica: the requests and
//! answers of etcd's JSON gateway (`understudy_replica::etcd`, shared with the appliance)
//! over std sockets. The record is one key, `<etcd_prefix>/arbiter`. Each request tries the
//! endpoints in order; an endpoint that refuses, times out or answers
//! nonsense counts as no answer, and when none answers the operation is
//! `StorageResult::Unavailable` (a write's effect unknown: `ft::shared` reads to find out).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use understudy_ft::arbiter::ArbiterRecord;
use understudy_ft::shared::{StorageOp, StorageResult};

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

    /// Carries out one operation on the register: the first endpoint that answers decides.
    pub fn execute(&self, op: StorageOp) -> StorageResult {
        let request = understudy_replica::etcd::request(op, &self.key);
        self.endpoints
            .iter()
            .find_map(|endpoint| {
                let body = post(endpoint, &request).ok()?;
                understudy_replica::etcd::answer(op, &body)
            })
            .unwrap_or(StorageResult::Unavailable)
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

/// One POST to `endpoint`; the body of its 200 answer.
fn post(endpoint: &str, request: &understudy_replica::etcd::Request) -> Result<Vec<u8>> {
    let address: SocketAddr = endpoint
        .to_socket_addrs()?
        .next()
        .context("no address for the endpoint")?;
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(&understudy_replica::etcd::http_post(endpoint, request))?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(ANSWER_BYTES_MAX)
        .read_to_end(&mut answer)?;
    understudy_replica::etcd::http_body(&answer)
        .map(<[u8]>::to_vec)
        .context("etcd's answer is not a complete 200")
}
