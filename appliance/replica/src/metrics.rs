//! A replica's figures as Prometheus text exposition (format 0.0.4), for every driver: the
//! hosted process serves it on `metrics_address`, the appliance on its replication NIC. Names
//! and units follow the Prometheus conventions: base units, `_total` for counters, one gauge
//! per role state.
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;

use understudy_ft::RoleKind;

use crate::JoinPhase;

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

/// Every join phase, for the phase gauge's label values.
const JOIN_PHASES: [JoinPhase; 5] = [
    JoinPhase::Idle,
    JoinPhase::Hashing,
    JoinPhase::Comparing,
    JoinPhase::PreCopy,
    JoinPhase::HandingOver,
];

/// What a driver knows of its replica, beyond `Replica::status`.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub status: crate::Status,
    pub peer_reachable: bool,
    pub arbiter_reachable: bool,
    pub failover_available: bool,
    /// The instruction lag in the guest's own time, in seconds.
    pub lag_seconds: f64,
    pub log_bytes_sent: u64,
    pub failovers: u64,
    pub protected_seconds: f64,
    pub service_frames_dropped: u64,
}

/// The exposition of `figures`.
pub fn exposition(figures: &Figures) -> String {
    let status = &figures.status;
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
        &flag(figures.peer_reachable),
    );
    metric(
        "understudy_arbiter_reachable",
        "gauge",
        "1 when the arbiter answered within three and a half peer timeouts.",
        &flag(figures.arbiter_reachable),
    );
    metric(
        "understudy_failover_available",
        "gauge",
        "1 when the death of either replica would be survived now.",
        &flag(figures.failover_available),
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
        &one(figures.lag_seconds),
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
        &one(figures.log_bytes_sent as f64),
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
        &one(figures.failovers as f64),
    );
    metric(
        "understudy_protected_seconds",
        "gauge",
        "Seconds since the pair formed.",
        &one(figures.protected_seconds),
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
        "understudy_protected",
        "gauge",
        "1 when the backup installed the primary's state and follows its log.",
        &flag(status.protected),
    );
    let join = &status.join;
    metric(
        "understudy_join_phase",
        "gauge",
        "1 for the phase of the join in progress (idle without one).",
        &JOIN_PHASES
            .iter()
            .map(|phase| {
                let value = if *phase == join.phase { 1.0 } else { 0.0 };
                (format!("{{phase=\"{}\"}}", phase.as_str()), value)
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "understudy_join_state_bytes",
        "gauge",
        "State bytes (RAM, disk, devices) sent or received by the current or last join.",
        &one(join.bytes as f64),
    );
    metric(
        "understudy_join_rounds",
        "gauge",
        "Pre-copy rounds of the current or last join.",
        &one(f64::from(join.rounds)),
    );
    metric(
        "understudy_join_pause_seconds",
        "gauge",
        "The guest's pause at the end of the last join this primary served.",
        &one(join.pause_us as f64 / 1e6),
    );
    metric(
        "understudy_joins_completed_total",
        "counter",
        "Joins completed: served (primary) or installed (joiner).",
        &one(join.completed as f64),
    );
    metric(
        "understudy_service_frames_dropped_total",
        "counter",
        "Service network frames dropped because the guest could not take them.",
        &one(figures.service_frames_dropped as f64),
    );
    out
}
