//! Log entries: the nondeterministic inputs and markers the primary records for the backup.
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::types::{DeviceId, InstructionCount, StateDigest};

/// One log entry: something that happened at an exact instruction count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The instruction count at which the input entered the guest (or the marker applies).
    pub at: InstructionCount,
    /// What happened.
    pub record: Record,
}

/// The kinds of log entry. Appending a variant changes the encoding: bump
/// `wire::PROTOCOL_VERSION` (see PROTOCOL.md, "Versioning").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Bytes a device delivered into the guest (a received network frame, a console byte).
    DeviceInput {
        /// The device that produced the bytes.
        device: DeviceId,
        /// The bytes, exactly as the guest saw them.
        bytes: Vec<u8>,
    },
    /// Guest time jumped forward by `ticks` of the 10 MHz timebase at `at` (an idle guest
    /// skipping to its timer, or guest time catching up with the primary's wall clock).
    AdvanceTime {
        /// How far, in timebase ticks.
        ticks: u64,
    },
    /// The wall time at guest tick 0, in nanoseconds since the Unix epoch: the real-time
    /// clock's base, set once at power-on.
    WallClockBase {
        /// Nanoseconds since 1970-01-01T00:00:00Z.
        ns: u64,
    },
    /// Bytes the guest read from an entropy source.
    Entropy {
        /// The bytes returned to the guest.
        bytes: Vec<u8>,
    },
    /// The guest produced an output at `at`; the output itself is not logged (the backup
    /// produces the same one), only where it happened.
    Output {
        /// The device that emitted the output.
        device: DeviceId,
        /// Its length in bytes, a cheap cross-check for the backup.
        length: u32,
    },
    /// Progress: no input before `at` will follow, so the backup may execute up to it.
    Horizon,
    /// The primary's machine-state digest at `at`, for divergence detection.
    Digest {
        /// SHA-256 over CPU, device state and dirtied RAM, as the hypervisor defines it.
        digest: StateDigest,
    },
}

impl LogEntry {
    /// The encoded size of this entry, used for batch and flow-control byte accounting.
    pub fn encoded_len(&self) -> usize {
        // postcard sizes never fail for these types; a failure would mean a serde bug, and an
        // over-estimate is the safe direction for flow control.
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX / 4)
    }
}
