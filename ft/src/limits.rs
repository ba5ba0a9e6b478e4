//! Every limit and timeout of the protocol, named with its unit, in one place.
use crate::types::Duration;

/// Size of a frame's fixed header in bytes (see `wire`).
pub const FRAME_HEADER_BYTES: usize = 32;
/// Size of a frame's HMAC-SHA256 tag in bytes.
pub const FRAME_MAC_BYTES: usize = 32;
/// How many frame sequence numbers behind the newest one a receiver still accepts (reordering
/// tolerance of the anti-replay window, as in IPsec's RFC 4303 section 3.4.3).
pub const REPLAY_WINDOW_FRAMES: u64 = 64;

/// Limits and timeouts. `Limits::default()` documents the defaults; both replicas and the
/// arbiter must use the same values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted or sent, header and tag included (default 64 KiB).
    pub frame_bytes_max: usize,
    /// Most log entries in one batch frame (default 256).
    pub batch_entries_max: usize,
    /// Most encoded entry bytes in one batch frame (default 32 KiB).
    pub batch_bytes_max: usize,
    /// Flow control: most log entries the backup may be behind (unacknowledged) before the
    /// primary is throttled (default 4096).
    pub lag_entries_max: u64,
    /// Flow control: most encoded log bytes the backup may be behind (default 1 MiB).
    pub lag_bytes_max: u64,
    /// Flow control: most guest instructions the primary may run past the last acknowledged
    /// entry (default 200 million, about 100 ms of guest time at the target speed).
    pub lag_instructions_max: u64,
    /// A primary sends a heartbeat when it sent nothing for this long; a backup acknowledges at
    /// least this often (default 100 ms).
    pub heartbeat_interval: Duration,
    /// Silence from the peer after which a replica asks the arbiter for the next epoch
    /// (default 1 s).
    pub peer_timeout: Duration,
    /// A primary with unacknowledged entries whose acknowledgement position does not move for
    /// this long treats the backup as failed (default 2 s).
    pub ack_progress_timeout: Duration,
    /// A primary resends unacknowledged entries after this long without progress; a backup
    /// repeats a resend request no more often than this (default 200 ms).
    pub retransmit_timeout: Duration,
    /// How often a claiming replica repeats its claim to the arbiter (default 200 ms).
    pub claim_retry_interval: Duration,
    /// How often a joining replica repeats its join request (default 300 ms).
    pub join_retry_interval: Duration,
    /// Largest rate difference between any two clocks, in parts per million (default 1000).
    /// The output lease is shortened by it so that drift cannot let a primary release output
    /// after the backup may have gone live.
    pub clock_drift_ppm_max: u64,
    /// Extra safety subtracted from the output lease (default 10 ms).
    pub lease_margin: Duration,
    /// Most outputs a backup keeps (suppressed) for reissue at go-live (default 4096); beyond
    /// it the oldest is forgotten, which only costs a client retry.
    pub suppressed_outputs_max: usize,
    /// Most received entries a backup buffers for replay (default 8192); beyond it the backup
    /// stops acknowledging, which throttles the primary.
    pub replay_entries_max: usize,
    /// Most digests a backup remembers while the runtime computes its own (default 64).
    pub pending_digests_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: 64 * 1024,
            batch_entries_max: 256,
            batch_bytes_max: 32 * 1024,
            lag_entries_max: 4096,
            lag_bytes_max: 1024 * 1024,
            lag_instructions_max: 200_000_000,
            heartbeat_interval: Duration::from_millis(100),
            peer_timeout: Duration::from_millis(1000),
            ack_progress_timeout: Duration::from_millis(2000),
            retransmit_timeout: Duration::from_millis(200),
            claim_retry_interval: Duration::from_millis(200),
            join_retry_interval: Duration::from_millis(300),
            clock_drift_ppm_max: 1000,
            lease_margin: Duration::from_millis(10),
            suppressed_outputs_max: 4096,
            replay_entries_max: 8192,
            pending_digests_max: 64,
        }
    }
}

impl Limits {
    /// How long after sending a frame the primary may still release output on the strength of
    /// the acknowledgement of that frame.
    ///
    /// The backup claims only after `peer_timeout` of its own clock since it last heard from
    /// the primary, which is after the primary sent the acknowledged frame. With clock rates
    /// within `1 ± r` of real time, the lease `L` must satisfy `L / (1 - r) < T / (1 + r)`;
    /// `L = T (1 - 3r) - margin` does for `r` below 10%.
    pub fn output_lease(&self) -> Duration {
        let timeout = self.peer_timeout.0;
        let drift = timeout.saturating_mul(3 * self.clock_drift_ppm_max) / 1_000_000;
        Duration(
            timeout
                .saturating_sub(drift)
                .saturating_sub(self.lease_margin.0),
        )
    }

    /// The largest message body a frame may carry.
    pub fn body_bytes_max(&self) -> usize {
        self.frame_bytes_max
            .saturating_sub(FRAME_HEADER_BYTES + FRAME_MAC_BYTES)
    }
}
