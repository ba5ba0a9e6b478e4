//! Newtypes for the quantities the protocol must never mix up (epochs, log positions, counts, time).
use core::fmt;
use core::ops::{Add, Sub};
use serde::{Deserialize, Serialize};

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

newtype!(
    /// A configuration generation. The arbiter advances it at every go-live; every frame carries
    /// the sender's epoch, and a frame from an older epoch is fenced.
    Epoch(u64),
    "epoch "
);
newtype!(
    /// The position of an entry in the replicated log. Entries are numbered from 1; position 0
    /// means "before the first entry". Positions continue across epochs.
    LogSequence(u64),
    "log #"
);
newtype!(
    /// Retired guest instructions since boot: the clock of replay.
    InstructionCount(u64),
    "icount "
);
newtype!(
    /// One participant: a replica or the arbiter.
    NodeId(u8),
    "node "
);
newtype!(
    /// How many times a node has started. The driver supplies a value that grows across
    /// restarts (a boot counter); frames from an older incarnation of a sender are dropped.
    Incarnation(u64),
    "incarnation "
);
newtype!(
    /// The per-sender, per-incarnation number of a frame, used to drop replayed frames.
    FrameSequence(u64),
    "frame #"
);
newtype!(
    /// A guest device, as named by the hypervisor's nondeterminism port.
    DeviceId(u16),
    "device "
);
newtype!(
    /// A point on the caller's clock, in microseconds. The protocol never reads a clock itself.
    Instant(u64),
    "t="
);
newtype!(
    /// A span of time in microseconds.
    Duration(u64),
    "us "
);

impl Epoch {
    /// The epoch a claim asks the arbiter for.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl LogSequence {
    /// The position after this one.
    pub fn next(self) -> LogSequence {
        LogSequence(self.0.saturating_add(1))
    }
}

impl InstructionCount {
    /// Instructions from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: InstructionCount) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Duration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Duration {
        Duration(ms * 1000)
    }
    /// This duration in whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: a later `rhs` gives zero rather than wrapping.
    fn sub(self, rhs: Instant) -> Duration {
        Duration(self.0.saturating_sub(rhs.0))
    }
}

/// A SHA-256 digest of machine state, compared between primary and backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

/// The pre-shared key that authenticates every frame (HMAC-SHA256).
#[derive(Clone)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("Key(..)")
    }
}
