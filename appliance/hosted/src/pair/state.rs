//! A process's state directory: small files written durably (write, fsync, rename, fsync
//! the directory), so a decision survives a crash at any point.
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use understudy_replica::Status;

const EPOCH_FILE: &str = "epoch";
const INCARNATION_FILE: &str = "incarnation";
/// The status report `understudy status` reads.
pub const STATUS_FILE: &str = "status";

/// A state directory, created if missing.
pub struct StateDir {
    path: PathBuf,
}

/// What the status file holds besides the runtime's figures.
pub struct StatusReport {
    pub status: Status,
    pub peer_heard: bool,
    pub paired: bool,
    pub log_bytes_sent: u64,
    pub log_mbit_s: f64,
    pub frames_dropped: u64,
    pub last_failover: Option<SystemTime>,
    pub protected_since: Option<Duration>,
    /// Instructions per second of this machine over the last status interval (converts
    /// instruction lag to time).
    pub instructions_per_second: f64,
    /// Guest instructions per millisecond of guest time (the machine's clock rate).
    pub instructions_per_guest_ms: f64,
    /// Seconds since the arbiter was last heard (None: never).
    pub arbiter_silent_s: Option<f64>,
    /// The arbiter answered within three and a half peer timeouts.
    pub arbiter_reachable: bool,
    /// The arbiter was heard recently and the partner is there: a failure could be handled.
    pub failover_available: bool,
    /// Times this replica went live after losing its partner.
    pub failovers: u64,
    /// A join's estimated time to completion, while one runs.
    pub join_eta_s: Option<f64>,
}

impl StateDir {
    pub fn open(path: &Path) -> Result<StateDir> {
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create the state directory {}", path.display()))?;
        Ok(StateDir {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces `name` with `bytes` durably.
    pub fn write_durably(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let target = self.path.join(name);
        let temporary = self.path.join(format!(".{name}.new"));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temporary, &target)?;
            File::open(&self.path)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", target.display()))
    }

    /// Reads `name`; `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn read_number(&self, name: &str) -> Result<Option<u64>> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        match text.trim().parse() {
            Ok(number) => Ok(Some(number)),
            Err(_) => bail!(
                "{} is corrupt ({:?}); it should hold one number",
                self.path.join(name).display(),
                text.trim()
            ),
        }
    }

    /// The last epoch this replica knew, if it ran before.
    pub fn last_epoch(&self) -> Result<Option<u64>> {
        self.read_number(EPOCH_FILE)
    }

    pub fn save_epoch(&self, epoch: u64) -> Result<()> {
        self.write_durably(EPOCH_FILE, format!("{epoch}\n").as_bytes())
    }

    /// A number larger than any earlier start's (the protocol's incarnation): the wall clock
    /// in microseconds, or one more than the last start's if the clock went back. The clock
    /// matters for a machine whose state directory is new (a replacement, or one wiped
    /// before it rejoins): its partner drops frames of any incarnation not newer than the
    /// last one it heard from this machine.
    pub fn next_incarnation(&self) -> Result<u64> {
        let clock_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let next = (self.read_number(INCARNATION_FILE)?.unwrap_or(0) + 1).max(clock_us);
        self.write_durably(INCARNATION_FILE, format!("{next}\n").as_bytes())?;
        Ok(next)
    }

    /// Rewrites the status file (not fsync'd: it is a view, not a decision).
    pub fn write_status(&self, report: &StatusReport) -> Result<()> {
        let status = &report.status;
        let updated = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let lag_entries = status.log_end.0.saturating_sub(status.acknowledged.0);
        let mut text = format!(
            "updated_unix_ms={updated}\nrole={}\nepoch={}\npeer_heard={}\npaired={}\n\
             instructions={}\nlog_end={}\nacknowledged={}\nlag_entries={lag_entries}\n\
             outputs_held={}\nentries={}\ndigests_matched={}\nlog_bytes_sent={}\n\
             log_mbit_s={:.3}\nframes_sent={}\nframes_rejected={}\nretransmissions={}\n\
             service_frames_dropped={}\n",
            status.role,
            status.epoch.0,
            report.peer_heard,
            report.paired,
            status.instructions,
            status.log_end.0,
            status.acknowledged.0,
            status.outputs_held,
            status.entries,
            status.digests_matched,
            report.log_bytes_sent,
            report.log_mbit_s,
            status.counters.frames_sent,
            status.counters.frames_rejected,
            status.counters.retransmissions,
            report.frames_dropped,
        );
        // Lag in the guest's own time: what its clock moves while it executes that many
        // instructions (time advances are log entries, counted in `lag_entries`).
        let lag_guest_ms = status.lag_instructions as f64 / report.instructions_per_guest_ms;
        text.push_str(&format!(
            "lag_instructions={}\nlag_guest_ms={lag_guest_ms:.1}\nmips={:.1}\nfailover_available={}\n\
             arbiter_reachable={}\nfailovers={}\n",
            status.lag_instructions,
            report.instructions_per_second / 1e6,
            report.failover_available,
            report.arbiter_reachable,
            report.failovers,
        ));
        let join = &status.join;
        text.push_str(&format!(
            "protected={}\njoin_phase={}\njoin_session={}\njoin_rounds={}\njoin_pieces={}\n\
             join_state_bytes={}\njoin_disk_bytes={}\njoin_disk_hashed_bytes={}\n\
             join_disk_ranges_copied={}\njoin_last_round_pages={}\njoin_pause_ms={:.3}\n\
             joins_completed={}\n",
            status.protected,
            join.phase.as_str(),
            join.session,
            join.rounds,
            join.pieces,
            join.bytes,
            join.disk_bytes,
            join.disk_hashed_bytes,
            join.disk_ranges_copied,
            join.last_round_pages,
            join.pause_us as f64 / 1e3,
            join.completed,
        ));
        if let Some(eta) = report.join_eta_s {
            text.push_str(&format!("join_eta_s={eta:.1}\n"));
        }
        match report.arbiter_silent_s {
            Some(seconds) => text.push_str(&format!("arbiter_silent_s={seconds:.1}\n")),
            None => text.push_str("arbiter_silent_s=never-heard\n"),
        }
        if let Some(at) = report.last_failover {
            let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            text.push_str(&format!("last_failover_unix_ms={ms}\n"));
        }
        if let Some(since) = report.protected_since {
            text.push_str(&format!("running_s={:.1}\n", since.as_secs_f64()));
        }
        let temporary = self.path.join(format!(".{STATUS_FILE}.new"));
        fs::write(&temporary, text)?;
        fs::rename(temporary, self.path.join(STATUS_FILE))?;
        Ok(())
    }
}
