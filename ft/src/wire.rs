//! The wire format: authenticated, versioned frames carrying postcard-encoded messages.
//!
//! Layout (all integers little-endian), see PROTOCOL.md for the rationale:
//!
//! ```text
//! 0   2  magic "UF"
//! 2   1  protocol version
//! 3   1  sender node id
//! 4   4  body length in bytes
//! 8   8  sender incarnation
//! 16  8  sender epoch
//! 24  8  frame sequence (per sender incarnation, from 1)
//! 32  n  body: postcard `Message`
//! 32+n 32 HMAC-SHA256 over bytes 0..32+n, keyed by the key of the (sender, receiver) pair
//! ```
//!
//! Keys are per pair of participants (PROTOCOL.md, "Keys"): the two replicas share the channel
//! key, and each replica shares its own arbiter key with the arbiter only. A receiver reads the
//! claimed sender (`claimed_sender`), picks the key bound to that sender and authenticates with
//! it, so a frame's sender field is bound to the key that verified it.
use alloc::vec::Vec;
use core::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::limits::{Limits, FRAME_HEADER_BYTES, FRAME_MAC_BYTES, REPLAY_WINDOW_FRAMES};
use crate::record::LogEntry;
use crate::transfer::Transfer;
use crate::types::{
    DeviceId, Epoch, FrameSequence, Incarnation, Instant, InstructionCount, Key, LogSequence,
    NodeId,
};

/// The first two bytes of every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"UF";
/// The protocol version this build speaks. Receivers accept exactly this version; any change to
/// the header layout or to the encoding of a message or record bumps it (PROTOCOL.md).
pub const PROTOCOL_VERSION: u8 = 4;

type HmacSha256 = Hmac<Sha256>;

/// A protocol message: the body of a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Primary to backup: consecutive log entries starting at `first`.
    Log {
        /// The primary's clock when it sent this frame, echoed back for the output lease.
        sent_at: Instant,
        /// The highest log position whose output the primary has released.
        released_through: LogSequence,
        /// Position of `entries[0]`.
        first: LogSequence,
        /// The entries, in log order.
        entries: Vec<LogEntry>,
    },
    /// Primary to backup when it had nothing else to send.
    Heartbeat {
        /// As in `Log`.
        sent_at: Instant,
        /// The last position the primary has appended.
        log_end: LogSequence,
        /// As in `Log`.
        released_through: LogSequence,
    },
    /// Backup to primary: everything through `through` is received.
    Ack {
        /// `sent_at` of the newest primary frame the backup had received.
        echo: Instant,
        /// Every entry up to and including this position is held by the backup.
        through: LogSequence,
        /// The backup saw a gap and asks for entries after `through` again.
        resend: bool,
        /// The backup is alive but full (its replay queue is at `replay_entries_max`, or it
        /// holds `suppressed_outputs_max` outputs the primary has not released): it took
        /// nothing after `through`. The primary throttles and waits instead of failing over.
        backpressure: bool,
    },
    /// A restarted replica asks the live primary for a snapshot so it can become its backup.
    Join,
    /// Primary to joining replica: machine state at a log position.
    Snapshot {
        /// As in `Log`.
        sent_at: Instant,
        /// The last log position the state includes.
        position: LogSequence,
        /// The instruction count of the state.
        at: InstructionCount,
        /// The runtime's opaque serialized state.
        state: Vec<u8>,
        /// The highest position whose output the primary has released.
        released_through: LogSequence,
        /// Outputs at or before `position` that the primary still holds (not yet released):
        /// the new backup keeps them to reissue at go-live, since the state already includes
        /// having produced them.
        held_outputs: Vec<OutputCopy>,
    },
    /// Between a joining replica and the live primary: the state transfer of a join
    /// (`transfer`), before the `Snapshot` that completes it.
    Transfer(Transfer),
    /// "Your epoch is stale": sent in answer to a frame from an older epoch.
    Fence {
        /// The sender's (newer) epoch.
        epoch: Epoch,
    },
    /// Replica to arbiter: test-and-set on `epoch` with the sender as owner.
    Claim {
        /// The epoch asked for: the sender's current epoch plus one.
        epoch: Epoch,
    },
    /// Arbiter to replica: the arbiter's persisted decision after handling a claim.
    ClaimReply {
        /// The newest epoch the arbiter has granted.
        epoch: Epoch,
        /// Who owns it. The claim succeeded exactly when this is the claimant and `epoch` is
        /// the one it asked for.
        owner: NodeId,
    },
}

impl Message {
    /// A short name for traces and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Log { .. } => "log",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Ack { .. } => "ack",
            Message::Join => "join",
            Message::Snapshot { .. } => "snapshot",
            Message::Transfer(_) => "transfer",
            Message::Fence { .. } => "fence",
            Message::Claim { .. } => "claim",
            Message::ClaimReply { .. } => "claim-reply",
        }
    }

    /// Decodes a body. Never panics; the whole input must be consumed.
    pub fn decode_body(bytes: &[u8]) -> Result<Message, DecodeError> {
        match postcard::take_from_bytes::<Message>(bytes) {
            Ok((message, [])) => Ok(message),
            Ok((_, rest)) => Err(DecodeError::Malformed {
                trailing_bytes: rest.len(),
            }),
            Err(_) => Err(DecodeError::Malformed { trailing_bytes: 0 }),
        }
    }
}

/// An output the primary holds, as carried in a `Snapshot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCopy {
    /// The log position of its output marker.
    pub position: LogSequence,
    /// The emitting device.
    pub device: DeviceId,
    /// The output bytes.
    pub payload: Vec<u8>,
}

/// The authenticated fields of a frame besides the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Who sent the frame.
    pub sender: NodeId,
    /// The sender's incarnation (boot counter).
    pub incarnation: Incarnation,
    /// The sender's epoch when it sent the frame.
    pub epoch: Epoch,
    /// Per-incarnation frame number, from 1.
    pub sequence: FrameSequence,
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header fields.
    pub header: FrameHeader,
    /// The body.
    pub message: Message,
}

/// What a receiver does with a rejected frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Discard it and count it; nothing else.
    Drop,
    /// Discard it and ask the sender to resend from the receiver's position.
    AskResend,
    /// Discard it and tell the sender its epoch is stale so it stops.
    Fence,
}

/// Why bytes are not a frame. Every variant is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header and tag, or than its header says.
    Truncated {
        /// Bytes received.
        length: usize,
    },
    /// Longer than `Limits::frame_bytes_max`, or with bytes after the tag.
    Oversized {
        /// Bytes received (or announced by the header).
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// The magic bytes are wrong: not one of our frames.
    BadMagic,
    /// A protocol version this build does not speak.
    UnsupportedVersion {
        /// The version in the frame.
        received: u8,
    },
    /// The HMAC tag does not match: wrong key, corruption or forgery.
    Unauthenticated,
    /// Authentic but the body does not decode as a message.
    Malformed {
        /// Bytes left after a message decoded (0 when decoding failed).
        trailing_bytes: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { length } => write!(f, "truncated frame of {length} bytes"),
            DecodeError::Oversized { length, limit } => {
                write!(f, "frame of {length} bytes exceeds the {limit}-byte limit")
            }
            DecodeError::BadMagic => f.write_str("not a protocol frame (bad magic)"),
            DecodeError::UnsupportedVersion { received } => write!(
                f,
                "protocol version {received} is not {PROTOCOL_VERSION}; run the same image on both sides"
            ),
            DecodeError::Unauthenticated => {
                f.write_str("frame failed authentication; check the pre-shared key")
            }
            DecodeError::Malformed { trailing_bytes } => {
                write!(f, "authentic frame with a malformed body ({trailing_bytes} trailing bytes)")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a well-formed, authentic frame was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveError {
    /// The bytes are not a frame.
    Decode(DecodeError),
    /// The sender is not a participant this node talks to.
    UnknownSender {
        /// The sender field.
        sender: NodeId,
    },
    /// The frame's sequence number was already accepted (a duplicate or a replay).
    Duplicate {
        /// Its sequence number.
        sequence: FrameSequence,
    },
    /// The frame is older than the anti-replay window (reordered too far).
    Reordered {
        /// Its sequence number.
        sequence: FrameSequence,
        /// The newest sequence accepted from that sender.
        newest: FrameSequence,
    },
    /// The frame comes from an earlier incarnation of a sender that has restarted.
    StaleIncarnation {
        /// The incarnation in the frame.
        received: Incarnation,
        /// The newest incarnation seen from that sender.
        current: Incarnation,
    },
    /// The frame comes from an older epoch than the receiver's.
    StaleEpoch {
        /// The receiver's epoch.
        expected: Epoch,
        /// The frame's epoch.
        received: Epoch,
    },
    /// Log entries that do not follow what the backup holds.
    LogGap {
        /// The position the backup needs next.
        expected: LogSequence,
        /// The first position in the frame.
        received: LogSequence,
    },
    /// The message is not meaningful in the receiver's current role.
    UnexpectedMessage {
        /// The message kind.
        kind: &'static str,
        /// The receiver's role.
        role: crate::node::RoleKind,
    },
}

impl ReceiveError {
    /// The defined action for this rejection.
    pub fn action(&self) -> Action {
        match self {
            ReceiveError::StaleEpoch { .. } => Action::Fence,
            ReceiveError::LogGap { .. } => Action::AskResend,
            _ => Action::Drop,
        }
    }
}

impl From<DecodeError> for ReceiveError {
    fn from(error: DecodeError) -> Self {
        ReceiveError::Decode(error)
    }
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Decode(error) => error.fmt(f),
            ReceiveError::UnknownSender { sender } => write!(f, "frame from unknown {sender}"),
            ReceiveError::Duplicate { sequence } => write!(f, "duplicate {sequence}"),
            ReceiveError::Reordered { sequence, newest } => {
                write!(
                    f,
                    "{sequence} arrived after {newest}, outside the replay window"
                )
            }
            ReceiveError::StaleIncarnation { received, current } => {
                write!(
                    f,
                    "frame from {received} but the sender restarted as {current}"
                )
            }
            ReceiveError::StaleEpoch { expected, received } => {
                write!(
                    f,
                    "frame from {received}, we are in {expected}; fencing the sender"
                )
            }
            ReceiveError::LogGap { expected, received } => {
                write!(
                    f,
                    "log gap: expected {expected}, received {received}; asking for resend"
                )
            }
            ReceiveError::UnexpectedMessage { kind, role } => {
                write!(f, "{kind} message is not expected by a {role}")
            }
        }
    }
}

impl core::error::Error for ReceiveError {}

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The message does not fit in `Limits::frame_bytes_max`.
    Oversized {
        /// The frame size it would have.
        length: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Oversized { length, limit } => {
                write!(
                    f,
                    "a {length}-byte frame exceeds the {limit}-byte limit; send less at once"
                )
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// Bytes to send to one participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: NodeId,
    /// A complete frame.
    pub bytes: Vec<u8>,
}

/// The sender field of a frame, after the cheap structural checks (length, magic, version)
/// and before authentication, so the receiver can pick the key bound to that sender. The
/// answer is not authentic until `Frame::decode` with that sender's key succeeds.
pub fn claimed_sender(bytes: &[u8], limits: &Limits) -> Result<NodeId, DecodeError> {
    if bytes.len() > limits.frame_bytes_max {
        return Err(DecodeError::Oversized {
            length: bytes.len(),
            limit: limits.frame_bytes_max,
        });
    }
    if bytes.len() < FRAME_HEADER_BYTES + FRAME_MAC_BYTES {
        return Err(DecodeError::Truncated {
            length: bytes.len(),
        });
    }
    if bytes[0..2] != FRAME_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[2] != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { received: bytes[2] });
    }
    Ok(NodeId(bytes[3]))
}

/// Numbers and encodes the frames one participant sends.
#[derive(Clone, Debug)]
pub(crate) struct FrameWriter {
    sender: NodeId,
    incarnation: Incarnation,
    next_sequence: u64,
}

impl FrameWriter {
    pub(crate) fn new(sender: NodeId, incarnation: Incarnation) -> Self {
        FrameWriter {
            sender,
            incarnation,
            next_sequence: 1,
        }
    }

    /// Encodes `message` as the next frame of this sender.
    pub(crate) fn write(
        &mut self,
        epoch: Epoch,
        message: Message,
        key: &Key,
        limits: &Limits,
    ) -> Result<Vec<u8>, EncodeError> {
        let frame = Frame {
            header: FrameHeader {
                sender: self.sender,
                incarnation: self.incarnation,
                epoch,
                sequence: FrameSequence(self.next_sequence),
            },
            message,
        };
        let bytes = frame.encode(key, limits)?;
        self.next_sequence += 1;
        Ok(bytes)
    }
}

fn mac(key: &Key) -> HmacSha256 {
    // HMAC accepts keys of any length (RFC 2104 section 2), so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(&key.0).expect("hmac takes any key length")
}

impl Frame {
    /// Encodes and authenticates this frame.
    pub fn encode(&self, key: &Key, limits: &Limits) -> Result<Vec<u8>, EncodeError> {
        let body = postcard::to_allocvec(&self.message).map_err(|_| EncodeError::Oversized {
            length: usize::MAX,
            limit: limits.frame_bytes_max,
        })?;
        let length = FRAME_HEADER_BYTES + body.len() + FRAME_MAC_BYTES;
        if length > limits.frame_bytes_max || body.len() > u32::MAX as usize {
            return Err(EncodeError::Oversized {
                length,
                limit: limits.frame_bytes_max,
            });
        }
        let mut out = Vec::with_capacity(length);
        out.extend_from_slice(&FRAME_MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(self.header.sender.0);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.header.incarnation.0.to_le_bytes());
        out.extend_from_slice(&self.header.epoch.0.to_le_bytes());
        out.extend_from_slice(&self.header.sequence.0.to_le_bytes());
        out.extend_from_slice(&body);
        let mut tag = mac(key);
        tag.update(&out);
        out.extend_from_slice(&tag.finalize().into_bytes());
        Ok(out)
    }

    /// Decodes and authenticates a frame. Never panics on any input; the checks run from the
    /// cheapest to the most expensive so garbage costs little.
    pub fn decode(bytes: &[u8], key: &Key, limits: &Limits) -> Result<Frame, DecodeError> {
        let overhead = FRAME_HEADER_BYTES + FRAME_MAC_BYTES;
        if bytes.len() > limits.frame_bytes_max {
            return Err(DecodeError::Oversized {
                length: bytes.len(),
                limit: limits.frame_bytes_max,
            });
        }
        if bytes.len() < overhead {
            return Err(DecodeError::Truncated {
                length: bytes.len(),
            });
        }
        if bytes[0..2] != FRAME_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[2] != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { received: bytes[2] });
        }
        let u64_at = |offset: usize| {
            let mut field = [0u8; 8];
            field.copy_from_slice(&bytes[offset..offset + 8]);
            u64::from_le_bytes(field)
        };
        let mut length_field = [0u8; 4];
        length_field.copy_from_slice(&bytes[4..8]);
        let body_len = u32::from_le_bytes(length_field) as usize;
        let announced = overhead.saturating_add(body_len);
        if announced > limits.frame_bytes_max {
            return Err(DecodeError::Oversized {
                length: announced,
                limit: limits.frame_bytes_max,
            });
        }
        if bytes.len() < announced {
            return Err(DecodeError::Truncated {
                length: bytes.len(),
            });
        }
        if bytes.len() > announced {
            return Err(DecodeError::Oversized {
                length: bytes.len(),
                limit: announced,
            });
        }
        let signed_end = FRAME_HEADER_BYTES + body_len;
        let mut tag = mac(key);
        tag.update(&bytes[..signed_end]);
        // verify_slice compares in constant time.
        tag.verify_slice(&bytes[signed_end..])
            .map_err(|_| DecodeError::Unauthenticated)?;
        let header = FrameHeader {
            sender: NodeId(bytes[3]),
            incarnation: Incarnation(u64_at(8)),
            epoch: Epoch(u64_at(16)),
            sequence: FrameSequence(u64_at(24)),
        };
        let message = Message::decode_body(&bytes[FRAME_HEADER_BYTES..signed_end])?;
        Ok(Frame { header, message })
    }
}

/// The anti-replay state for one sender: its newest incarnation, the newest frame sequence
/// and a bitmap of the `REPLAY_WINDOW_FRAMES` before it (RFC 4303 section 3.4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    incarnation: Incarnation,
    newest: u64,
    /// Bit `i` set: sequence `newest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Accepts a frame's (incarnation, sequence) once, or says why not. Call only for
    /// authenticated frames, so a forger cannot advance the window.
    pub fn accept(
        &mut self,
        incarnation: Incarnation,
        sequence: FrameSequence,
    ) -> Result<(), ReceiveError> {
        if incarnation < self.incarnation {
            return Err(ReceiveError::StaleIncarnation {
                received: incarnation,
                current: self.incarnation,
            });
        }
        if incarnation > self.incarnation {
            *self = ReplayWindow {
                incarnation,
                newest: 0,
                seen: 0,
            };
        }
        let sequence_number = sequence.0;
        if sequence_number == 0 {
            // Sequences start at 1; zero is never sent.
            return Err(ReceiveError::Duplicate { sequence });
        }
        if sequence_number > self.newest {
            let shift = sequence_number - self.newest;
            self.seen = if shift >= REPLAY_WINDOW_FRAMES {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.newest = sequence_number;
            return Ok(());
        }
        let behind = self.newest - sequence_number;
        if behind >= REPLAY_WINDOW_FRAMES {
            return Err(ReceiveError::Reordered {
                sequence,
                newest: FrameSequence(self.newest),
            });
        }
        if self.seen & (1 << behind) != 0 {
            return Err(ReceiveError::Duplicate { sequence });
        }
        self.seen |= 1 << behind;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::types::StateDigest;
    use alloc::vec;

    fn key() -> Key {
        Key([7; 32])
    }

    fn sample() -> Frame {
        Frame {
            header: FrameHeader {
                sender: NodeId(1),
                incarnation: Incarnation(3),
                epoch: Epoch(9),
                sequence: FrameSequence(42),
            },
            message: Message::Log {
                sent_at: Instant(5),
                released_through: LogSequence(1),
                first: LogSequence(2),
                entries: vec![
                    LogEntry {
                        at: InstructionCount(100),
                        record: Record::DeviceInput {
                            device: DeviceId(1),
                            bytes: vec![1, 2, 3],
                        },
                    },
                    LogEntry {
                        at: InstructionCount(200),
                        record: Record::Digest {
                            digest: StateDigest([9; 32]),
                        },
                    },
                ],
            },
        }
    }

    #[test]
    fn frame_round_trips() {
        let limits = Limits::default();
        let bytes = sample().encode(&key(), &limits).unwrap();
        assert_eq!(Frame::decode(&bytes, &key(), &limits).unwrap(), sample());
    }

    #[test]
    fn frame_with_wrong_key_is_unauthenticated() {
        let limits = Limits::default();
        let bytes = sample().encode(&key(), &limits).unwrap();
        assert_eq!(
            Frame::decode(&bytes, &Key([8; 32]), &limits),
            Err(DecodeError::Unauthenticated)
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let limits = Limits::default();
        let bytes = sample().encode(&key(), &limits).unwrap();
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 1 << bit;
                assert!(
                    Frame::decode(&corrupt, &key(), &limits).is_err(),
                    "byte {index} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected_as_truncated() {
        let limits = Limits::default();
        let bytes = sample().encode(&key(), &limits).unwrap();
        for length in 0..bytes.len() {
            assert!(
                matches!(
                    Frame::decode(&bytes[..length], &key(), &limits),
                    Err(DecodeError::Truncated { .. })
                ),
                "length {length}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_oversized() {
        let limits = Limits::default();
        let mut bytes = sample().encode(&key(), &limits).unwrap();
        bytes.push(0);
        assert!(matches!(
            Frame::decode(&bytes, &key(), &limits),
            Err(DecodeError::Oversized { .. })
        ));
    }

    #[test]
    fn frame_above_the_limit_is_oversized_on_both_sides() {
        let limits = Limits {
            frame_bytes_max: 128,
            ..Limits::default()
        };
        let mut frame = sample();
        frame.message = Message::Snapshot {
            sent_at: Instant(0),
            position: LogSequence(1),
            at: InstructionCount(1),
            state: vec![0; 200],
            released_through: LogSequence(0),
            held_outputs: vec![],
        };
        assert!(matches!(
            frame.encode(&key(), &limits),
            Err(EncodeError::Oversized { .. })
        ));
        let bytes = frame.encode(&key(), &Limits::default()).unwrap();
        assert!(matches!(
            Frame::decode(&bytes, &key(), &limits),
            Err(DecodeError::Oversized { .. })
        ));
    }

    #[test]
    fn other_versions_are_unsupported() {
        let limits = Limits::default();
        let mut bytes = sample().encode(&key(), &limits).unwrap();
        bytes[2] = PROTOCOL_VERSION + 1;
        assert_eq!(
            Frame::decode(&bytes, &key(), &limits),
            Err(DecodeError::UnsupportedVersion {
                received: PROTOCOL_VERSION + 1
            })
        );
    }

    #[test]
    fn authentic_garbage_body_is_malformed() {
        let limits = Limits::default();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&FRAME_MAGIC);
        bytes.push(PROTOCOL_VERSION);
        bytes.push(1);
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 24]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        let mut tag = mac(&key());
        tag.update(&bytes);
        bytes.extend_from_slice(&tag.finalize().into_bytes());
        assert!(matches!(
            Frame::decode(&bytes, &key(), &limits),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn replay_window_drops_duplicates_and_accepts_reordering_inside_the_window() {
        let mut window = ReplayWindow::default();
        let inc = Incarnation(1);
        assert_eq!(window.accept(inc, FrameSequence(5)), Ok(()));
        assert_eq!(
            window.accept(inc, FrameSequence(5)),
            Err(ReceiveError::Duplicate {
                sequence: FrameSequence(5)
            })
        );
        assert_eq!(window.accept(inc, FrameSequence(3)), Ok(()));
        assert_eq!(
            window.accept(inc, FrameSequence(3)),
            Err(ReceiveError::Duplicate {
                sequence: FrameSequence(3)
            })
        );
        assert_eq!(window.accept(inc, FrameSequence(200)), Ok(()));
        assert_eq!(
            window.accept(inc, FrameSequence(100)),
            Err(ReceiveError::Reordered {
                sequence: FrameSequence(100),
                newest: FrameSequence(200)
            })
        );
        assert_eq!(
            window.accept(inc, FrameSequence(0)),
            Err(ReceiveError::Duplicate {
                sequence: FrameSequence(0)
            })
        );
    }

    #[test]
    fn replay_window_resets_for_a_new_incarnation_and_drops_old_ones() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.accept(Incarnation(2), FrameSequence(50)), Ok(()));
        assert_eq!(window.accept(Incarnation(3), FrameSequence(1)), Ok(()));
        assert_eq!(
            window.accept(Incarnation(2), FrameSequence(51)),
            Err(ReceiveError::StaleIncarnation {
                received: Incarnation(2),
                current: Incarnation(3)
            })
        );
    }

    #[test]
    fn rejections_have_defined_actions() {
        assert_eq!(
            ReceiveError::StaleEpoch {
                expected: Epoch(2),
                received: Epoch(1)
            }
            .action(),
            Action::Fence
        );
        assert_eq!(
            ReceiveError::LogGap {
                expected: LogSequence(2),
                received: LogSequence(5)
            }
            .action(),
            Action::AskResend
        );
        assert_eq!(
            ReceiveError::Decode(DecodeError::Unauthenticated).action(),
            Action::Drop
        );
        assert_eq!(
            ReceiveError::Duplicate {
                sequence: FrameSequence(1)
            }
            .action(),
            Action::Drop
        );
    }
}
