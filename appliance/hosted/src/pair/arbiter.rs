//! The hosted arbiter: `understudy run` with `role = arbiter`. It answers claims on UDP and
//! makes each decision durable in its state directory before it answers; restarted, it reads
//! the decision back. A missing record is created only by `--init`: a wiped or replaced disk
//! must not silently become "no epoch granted yet".
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use understudy_ft::{Arbiter, ArbiterConfig, ArbiterRecord, Incarnation, Key, NodeId};

use super::config::{ArbiterKeys, PairConfig};
use super::log::{self, Level};
use super::replica::{arbiter_address, ARBITER_ID, BACKUP_ID, PRIMARY_ID};
use super::state::StateDir;

/// The file holding the arbiter's record.
pub const RECORD_FILE: &str = "arbiter.record";
const DATAGRAM_BYTES_MAX: usize = 65_536;
/// How long the arbiter sleeps in `recv_from` before it checks for a stop.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the arbiter until killed. `init` creates the record of a new pair (epoch 0) when none
/// exists; an existing record is never overwritten by it.
pub fn run(config: &PairConfig, init: bool) -> Result<()> {
    let ArbiterKeys::Arbiter { primary, backup } = config.arbiter_keys else {
        unreachable!("arbiter configs hold both replica keys")
    };
    let state = StateDir::open(&config.state_dir)?;
    let stored = match state.read(RECORD_FILE)? {
        Some(bytes) => ArbiterRecord::from_bytes(&bytes).map_err(|error| {
            anyhow::anyhow!(
                "{} is corrupt ({error:?}); restore it from a backup: answering from a guess could grant an epoch twice",
                state.path().join(RECORD_FILE).display()
            )
        })?,
        None if init => {
            let record = ArbiterRecord::initial();
            state.write_durably(RECORD_FILE, &record.to_bytes())?;
            record
        }
        None => bail!(
            "{} holds no arbiter record: pass --init to start the record of a new pair \
             (never for an arbiter whose disk was lost while its pair ran)",
            state.path().display()
        ),
    };
    let address = arbiter_address(&config.boot.arbiter);
    let socket = UdpSocket::bind(address)
        .with_context(|| format!("cannot bind the arbiter to {address}"))?;
    socket.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    let replicas = [
        SocketAddr::from((config.boot.primary.address.0, config.boot.port)),
        SocketAddr::from((config.boot.backup.address.0, config.boot.port)),
    ];
    let mut arbiter = Arbiter::new(
        ArbiterConfig {
            me: ARBITER_ID,
            replicas: [PRIMARY_ID, BACKUP_ID],
            keys: [Key(primary.0), Key(backup.0)],
            limits: config.limits.clone(),
            incarnation: Incarnation(state.next_incarnation()?),
        },
        stored,
    );
    log::init(config.log_level, config.log_format);
    log::event(
        Level::Info,
        "arbiter_start",
        stored.epoch.0,
        &[
            ("address", (&address.to_string()).into()),
            ("owner", u64::from(stored.owner.0).into()),
        ],
    );
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let length = match socket.recv_from(&mut buffer) {
            Ok((length, _)) => length,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(error) => return Err(error).context("the arbiter's socket failed"),
        };
        if arbiter.handle_frame(&buffer[..length]).is_err() {
            continue;
        }
        while let Some(record) = arbiter.poll_storage_write() {
            state.write_durably(RECORD_FILE, &record.to_bytes())?;
            arbiter.storage_written(record);
            log::event(
                Level::Info,
                "arbiter_decision",
                record.epoch.0,
                &[("owner", u64::from(record.owner.0).into())],
            );
        }
        while let Some(transmit) = arbiter.poll_transmit() {
            let to = match transmit.to {
                NodeId(1) => replicas[0],
                _ => replicas[1],
            };
            let _ = socket.send_to(&transmit.bytes, to);
        }
    }
}
