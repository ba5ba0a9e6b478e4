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
    /// Unreleased outputs (kept, or announced by a marker in the log) at which a backup stops
    /// taking entries and signals backpressure (default 4096). Outputs are never forgotten.
    pub suppressed_outputs_max: usize,
    /// Most received entries a backup buffers for replay (default 8192); at it the backup
    /// takes nothing more and acknowledges with backpressure, which throttles the primary.
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
    /// The default limits with every timer scaled to a peer timeout of `ms` (the defaults'
    /// ratios: heartbeats at a tenth, retransmission and claim retries at a fifth,
    /// acknowledgement progress at twice).
    pub fn with_peer_timeout_ms(ms: u64) -> Limits {
        Limits {
            peer_timeout: Duration::from_millis(ms),
            heartbeat_interval: Duration::from_millis((ms / 10).max(1)),
            retransmit_timeout: Duration::from_millis((ms / 5).max(1)),
            claim_retry_interval: Duration::from_millis((ms / 5).max(1)),
            ack_progress_timeout: Duration::from_millis(ms * 2),
            ..Limits::default()
        }
    }

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

/// A `Limits` value that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsError {
    /// A batch of `batch_bytes_max` entry bytes (plus its message overhead) would not fit
    /// in `frame_bytes_max`.
    BatchLargerThanFrame {
        /// `batch_bytes_max`.
        batch_bytes_max: usize,
        /// The largest body a frame can carry.
        body_bytes_max: usize,
    },
    /// Heartbeats must come several times per peer timeout, or a healthy peer looks dead.
    HeartbeatTooSlow {
        /// `heartbeat_interval` in microseconds.
        heartbeat_interval_us: u64,
        /// `peer_timeout` in microseconds.
        peer_timeout_us: u64,
    },
    /// The output lease is zero: drift allowance and margin eat the whole peer timeout.
    NoOutputLease,
    /// A limit that must be at least 1 is 0.
    Zero {
        /// The field's name.
        field: &'static str,
    },
}

impl core::fmt::Display for LimitsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LimitsError::BatchLargerThanFrame { batch_bytes_max, body_bytes_max } => write!(
                f,
                "batch_bytes_max {batch_bytes_max} does not fit a frame body of {body_bytes_max} bytes; lower it or raise frame_bytes_max"
            ),
            LimitsError::HeartbeatTooSlow { heartbeat_interval_us, peer_timeout_us } => write!(
                f,
                "heartbeat_interval {heartbeat_interval_us} us must be at most a third of peer_timeout {peer_timeout_us} us"
            ),
            LimitsError::NoOutputLease => f.write_str(
                "peer_timeout leaves no output lease after the drift allowance and lease_margin; raise peer_timeout",
            ),
            LimitsError::Zero { field } => write!(f, "{field} must be at least 1"),
        }
    }
}

impl core::error::Error for LimitsError {}

/// Room kept in a frame body for a `Log` message's own fields around its entries (variant
/// tag, three varint u64 and the entry count), in bytes.
pub const LOG_MESSAGE_OVERHEAD_BYTES: usize = 64;

impl Limits {
    /// Checks that these limits can work; drivers call it on configuration load so a bad
    /// configuration is a clear error rather than a pair that never syncs.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let nonzero = [
            ("batch_entries_max", self.batch_entries_max as u64),
            ("batch_bytes_max", self.batch_bytes_max as u64),
            ("lag_entries_max", self.lag_entries_max),
            ("lag_bytes_max", self.lag_bytes_max),
            ("lag_instructions_max", self.lag_instructions_max),
            ("heartbeat_interval", self.heartbeat_interval.0),
            ("retransmit_timeout", self.retransmit_timeout.0),
            ("claim_retry_interval", self.claim_retry_interval.0),
            ("join_retry_interval", self.join_retry_interval.0),
            ("replay_entries_max", self.replay_entries_max as u64),
            ("pending_digests_max", self.pending_digests_max as u64),
        ];
        if let Some((field, _)) = nonzero.iter().find(|(_, value)| *value == 0) {
            return Err(LimitsError::Zero { field });
        }
        let body_bytes_max = self.body_bytes_max();
        if self
            .batch_bytes_max
            .saturating_add(LOG_MESSAGE_OVERHEAD_BYTES)
            > body_bytes_max
        {
            return Err(LimitsError::BatchLargerThanFrame {
                batch_bytes_max: self.batch_bytes_max,
                body_bytes_max,
            });
        }
        if self.heartbeat_interval.0.saturating_mul(3) > self.peer_timeout.0 {
            return Err(LimitsError::HeartbeatTooSlow {
                heartbeat_interval_us: self.heartbeat_interval.0,
                peer_timeout_us: self.peer_timeout.0,
            });
        }
        if self.output_lease().0 == 0 {
            return Err(LimitsError::NoOutputLease);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn unworkable_limits_are_rejected_with_the_reason() {
        let batch = Limits {
            frame_bytes_max: 4096,
            ..Limits::default()
        };
        assert!(matches!(
            batch.validate(),
            Err(LimitsError::BatchLargerThanFrame { .. })
        ));
        let heartbeat = Limits {
            heartbeat_interval: Duration::from_millis(500),
            ..Limits::default()
        };
        assert!(matches!(
            heartbeat.validate(),
            Err(LimitsError::HeartbeatTooSlow { .. })
        ));
        let lease = Limits {
            peer_timeout: Duration::from_millis(30),
            heartbeat_interval: Duration::from_millis(5),
            lease_margin: Duration::from_millis(30),
            ..Limits::default()
        };
        assert_eq!(lease.validate(), Err(LimitsError::NoOutputLease));
        let zero = Limits {
            lag_entries_max: 0,
            ..Limits::default()
        };
        assert_eq!(
            zero.validate(),
            Err(LimitsError::Zero {
                field: "lag_entries_max"
            })
        );
    }
}
