//! The arbiter: an atomic test-and-set on the next epoch that persists before it answers.
//!
//! A replica that lost its peer sends `Claim { epoch: current + 1 }`. The first claim for an
//! epoch newer than the arbiter's record wins: the arbiter records (epoch, claimant), asks the
//! driver to persist the record, and only after the driver reports the write durable does it
//! answer. Every answer states the persisted record; a claimant won exactly when the record
//! names it with the epoch it asked for. A write lost in a crash was never answered, so no
//! replica acted on it.
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};

use crate::limits::Limits;
use crate::node::RoleKind;
use crate::types::{Epoch, Incarnation, Key, NodeId};
use crate::wire::{
    claimed_sender, Frame, FrameWriter, Message, ReceiveError, ReplayWindow, Transmit,
};

/// The arbiter's durable decision: the newest granted epoch and its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArbiterRecord {
    /// The newest epoch granted (0: none yet).
    pub epoch: Epoch,
    /// Its owner (meaningless while `epoch` is 0).
    pub owner: NodeId,
}

/// Size of an encoded `ArbiterRecord` in storage.
pub const ARBITER_RECORD_BYTES: usize = 1 + 8 + 1 + 4;
const ARBITER_RECORD_VERSION: u8 = 1;

/// Why stored bytes are not an arbiter record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// Wrong length for a record.
    WrongLength {
        /// Bytes found.
        length: usize,
    },
    /// Unknown record version.
    UnsupportedVersion {
        /// The version byte found.
        received: u8,
    },
    /// The checksum does not match: a torn or corrupt write.
    Corrupt,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::WrongLength { length } => write!(
                f,
                "arbiter record has {length} bytes, expected {ARBITER_RECORD_BYTES}; the storage is not an arbiter record"
            ),
            StorageError::UnsupportedVersion { received } => {
                write!(f, "arbiter record version {received} is not {ARBITER_RECORD_VERSION}")
            }
            StorageError::Corrupt => {
                f.write_str("arbiter record checksum mismatch; refuse to start and restore the record")
            }
        }
    }
}

impl core::error::Error for StorageError {}

impl ArbiterRecord {
    /// The record of an arbiter that has granted nothing yet. Only for the explicit
    /// initialisation of a new arbiter (an operator's decision): never a fallback for missing,
    /// unreadable or wiped storage, which would let a stale claimant win an epoch already
    /// granted. (There is deliberately no `Default`.)
    pub fn initial() -> ArbiterRecord {
        ArbiterRecord {
            epoch: Epoch(0),
            owner: NodeId(0),
        }
    }

    /// The storage encoding: version, epoch (little-endian), owner, then the first four bytes
    /// of SHA-256 over the preceding bytes, so a torn write is detected.
    pub fn to_bytes(&self) -> [u8; ARBITER_RECORD_BYTES] {
        let mut out = [0u8; ARBITER_RECORD_BYTES];
        out[0] = ARBITER_RECORD_VERSION;
        out[1..9].copy_from_slice(&self.epoch.0.to_le_bytes());
        out[9] = self.owner.0;
        let check = Sha256::digest(&out[..10]);
        out[10..].copy_from_slice(&check[..4]);
        out
    }

    /// Decodes `to_bytes` output; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<ArbiterRecord, StorageError> {
        if bytes.len() != ARBITER_RECORD_BYTES {
            return Err(StorageError::WrongLength {
                length: bytes.len(),
            });
        }
        if bytes[0] != ARBITER_RECORD_VERSION {
            return Err(StorageError::UnsupportedVersion { received: bytes[0] });
        }
        let check = Sha256::digest(&bytes[..10]);
        if check[..4] != bytes[10..] {
            return Err(StorageError::Corrupt);
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&bytes[1..9]);
        Ok(ArbiterRecord {
            epoch: Epoch(u64::from_le_bytes(epoch)),
            owner: NodeId(bytes[9]),
        })
    }
}

/// How an arbiter is set up.
#[derive(Clone, Debug)]
pub struct ArbiterConfig {
    /// The arbiter's own id.
    pub me: NodeId,
    /// The two replicas allowed to claim.
    pub replicas: [NodeId; 2],
    /// `keys[i]` is shared with `replicas[i]` only (its `NodeConfig::arbiter_key`): a claim
    /// from `replicas[i]` must verify with it, and answers to `replicas[i]` are authenticated
    /// with it, so neither replica can forge a claim or a grant for the other.
    pub keys: [Key; 2],
    /// Shared limits.
    pub limits: Limits,
    /// This start's incarnation (grows across restarts).
    pub incarnation: Incarnation,
}

/// The arbiter state machine (sans-IO).
#[derive(Debug)]
pub struct Arbiter {
    config: ArbiterConfig,
    writer: FrameWriter,
    windows: [ReplayWindow; 2],
    /// The decision in memory; may be ahead of `persisted`.
    decided: ArbiterRecord,
    /// What the driver confirmed durable.
    persisted: ArbiterRecord,
    /// A write handed to the driver and not yet confirmed.
    write_in_flight: Option<ArbiterRecord>,
    /// Claimants waiting for `decided` to become durable before they get an answer.
    waiting: Vec<NodeId>,
    /// The newest epoch any authenticated replica frame carried since this start (claims and
    /// the replicas' periodic reports). A claim for an epoch at or below it is refused: some
    /// replica already holds that epoch, so a record older than it was rolled back.
    epoch_seen: Epoch,
    transmits: VecDeque<Transmit>,
}

impl Arbiter {
    /// Starts an arbiter from the record the driver read from storage, or from
    /// `ArbiterRecord::initial()` when an operator explicitly initialises a new arbiter. Empty
    /// or unreadable storage is an error for the driver to report, never an initial record.
    pub fn new(config: ArbiterConfig, stored: ArbiterRecord) -> Arbiter {
        let writer = FrameWriter::new(config.me, config.incarnation);
        Arbiter {
            config,
            writer,
            windows: [ReplayWindow::default(); 2],
            decided: stored,
            persisted: stored,
            write_in_flight: None,
            waiting: Vec::new(),
            epoch_seen: Epoch(0),
            transmits: VecDeque::new(),
        }
    }

    /// The newest epoch seen in an authenticated replica frame since this start.
    pub fn epoch_seen(&self) -> Epoch {
        self.epoch_seen
    }

    /// The record confirmed durable.
    pub fn persisted(&self) -> ArbiterRecord {
        self.persisted
    }

    /// Handles one received frame.
    pub fn handle_frame(&mut self, bytes: &[u8]) -> Result<(), ReceiveError> {
        // The sender is bound to its key: a frame claiming to come from `replicas[i]` is
        // authentic only under `keys[i]`.
        let sender = claimed_sender(bytes, &self.config.limits)?;
        let Some(index) = self
            .config
            .replicas
            .iter()
            .position(|&replica| replica == sender)
        else {
            return Err(ReceiveError::UnknownSender { sender });
        };
        let frame = Frame::decode(bytes, &self.config.keys[index], &self.config.limits)?;
        self.windows[index].accept(frame.header.incarnation, frame.header.sequence)?;
        let seen_before = self.epoch_seen;
        self.epoch_seen = self.epoch_seen.max(frame.header.epoch);
        if let Message::Heartbeat { .. } = frame.message {
            // A replica's periodic report: its epoch is all the arbiter needs. The answer is
            // the durable record, so the replica knows the arbiter is reachable (failover is
            // available) and learns of an epoch that deposed it.
            if !self.waiting.contains(&sender) {
                self.waiting.push(sender);
            }
            self.answer_if_durable();
            return Ok(());
        }
        let Message::Claim { epoch } = frame.message else {
            return Err(ReceiveError::UnexpectedMessage {
                kind: frame.message.kind(),
                role: RoleKind::Arbiter,
            });
        };
        if epoch > self.decided.epoch && epoch <= seen_before {
            // A replica already showed this epoch, yet the record is older: the storage was
            // wiped or rolled back. Granting would give an epoch twice; refuse, unanswered.
            return Err(ReceiveError::StaleEpoch {
                expected: seen_before.next(),
                received: epoch,
            });
        }
        if epoch > self.decided.epoch {
            // The test-and-set: the first claim for a newer epoch takes it.
            self.decided = ArbiterRecord {
                epoch,
                owner: sender,
            };
        }
        if !self.waiting.contains(&sender) {
            self.waiting.push(sender);
        }
        self.answer_if_durable();
        Ok(())
    }

    /// The record the driver must write durably next, if any. The driver calls
    /// `storage_written` with it once the write is durable; until then no claimant is answered.
    pub fn poll_storage_write(&mut self) -> Option<ArbiterRecord> {
        if self.write_in_flight.is_none() && self.decided != self.persisted {
            self.write_in_flight = Some(self.decided);
            return self.write_in_flight;
        }
        None
    }

    /// The driver reports that `record` is durable.
    pub fn storage_written(&mut self, record: ArbiterRecord) {
        if self.write_in_flight == Some(record) {
            self.write_in_flight = None;
        }
        if record.epoch > self.persisted.epoch {
            self.persisted = record;
        }
        self.answer_if_durable();
    }

    /// The driver's write of the record in flight will not happen (its storage refused it or
    /// is unreachable): the decision stays, and `poll_storage_write` offers it again.
    pub fn storage_write_failed(&mut self) {
        self.write_in_flight = None;
    }

    /// Storage that others write too (a shared register, `shared::SharedArbiter`) holds
    /// `stored`: a record at least as new as the durable one is adopted as durable, and as
    /// the decision unless this arbiter decided a newer epoch still to be written. Claimants
    /// waiting are answered with it: a claim lost to the other replica's is told the owner.
    pub fn storage_changed(&mut self, stored: ArbiterRecord) {
        if stored.epoch < self.persisted.epoch {
            return;
        }
        self.persisted = stored;
        if self.decided.epoch <= stored.epoch {
            self.decided = stored;
        }
        self.write_in_flight = None;
        self.answer_if_durable();
    }

    fn answer_if_durable(&mut self) {
        if self.decided != self.persisted {
            return;
        }
        let record = self.persisted;
        for claimant in core::mem::take(&mut self.waiting) {
            let message = Message::ClaimReply {
                epoch: record.epoch,
                owner: record.owner,
            };
            let Some(index) = self
                .config
                .replicas
                .iter()
                .position(|&replica| replica == claimant)
            else {
                continue;
            };
            // A reply is a few bytes; it always fits a frame.
            if let Ok(bytes) = self.writer.write(
                record.epoch,
                message,
                &self.config.keys[index],
                &self.config.limits,
            ) {
                self.transmits.push_back(Transmit {
                    to: claimant,
                    bytes,
                });
            }
        }
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FrameSequence;
    use crate::wire::FrameHeader;

    const ARBITER: NodeId = NodeId(0);
    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn arbiter(stored: ArbiterRecord) -> Arbiter {
        Arbiter::new(
            ArbiterConfig {
                me: ARBITER,
                replicas: [A, B],
                keys: [key_of(A), key_of(B)],
                limits: Limits::default(),
                incarnation: Incarnation(1),
            },
            stored,
        )
    }

    /// Each replica's key shared with the arbiter.
    fn key_of(replica: NodeId) -> Key {
        Key([replica.0; 32])
    }

    fn claim(sender: NodeId, sequence: u64, epoch: u64) -> alloc::vec::Vec<u8> {
        message(
            sender,
            sequence,
            Message::Claim {
                epoch: Epoch(epoch),
            },
        )
    }

    fn message(sender: NodeId, sequence: u64, message: Message) -> alloc::vec::Vec<u8> {
        signed(sender, sequence, message, &key_of(sender))
    }

    fn signed(sender: NodeId, sequence: u64, message: Message, key: &Key) -> alloc::vec::Vec<u8> {
        Frame {
            header: FrameHeader {
                sender,
                incarnation: Incarnation(1),
                epoch: Epoch(1),
                sequence: FrameSequence(sequence),
            },
            message,
        }
        .encode(key, &Limits::default())
        .unwrap()
    }

    fn reply(arbiter: &mut Arbiter) -> Option<(NodeId, Message)> {
        let transmit = arbiter.poll_transmit()?;
        let frame =
            Frame::decode(&transmit.bytes, &key_of(transmit.to), &Limits::default()).unwrap();
        Some((transmit.to, frame.message))
    }

    #[test]
    fn first_claim_wins_and_is_answered_only_after_the_write_is_durable() {
        let mut arbiter = arbiter(ArbiterRecord::initial());
        arbiter.handle_frame(&claim(B, 1, 2)).unwrap();
        assert_eq!(reply(&mut arbiter), None, "no answer before persistence");
        let write = arbiter.poll_storage_write().unwrap();
        assert_eq!(
            write,
            ArbiterRecord {
                epoch: Epoch(2),
                owner: B
            }
        );
        assert_eq!(
            arbiter.poll_storage_write(),
            None,
            "one write in flight at a time"
        );
        arbiter.handle_frame(&claim(A, 1, 2)).unwrap();
        assert_eq!(reply(&mut arbiter), None);
        arbiter.storage_written(write);
        let mut replies = alloc::vec![reply(&mut arbiter).unwrap(), reply(&mut arbiter).unwrap()];
        replies.sort_by_key(|(to, _)| *to);
        assert_eq!(
            replies[0],
            (
                A,
                Message::ClaimReply {
                    epoch: Epoch(2),
                    owner: B
                }
            )
        );
        assert_eq!(
            replies[1],
            (
                B,
                Message::ClaimReply {
                    epoch: Epoch(2),
                    owner: B
                }
            )
        );
    }

    #[test]
    fn repeated_claim_by_the_owner_is_granted_again_and_older_claims_see_the_newer_record() {
        let mut arbiter = arbiter(ArbiterRecord {
            epoch: Epoch(5),
            owner: A,
        });
        arbiter.handle_frame(&claim(A, 1, 5)).unwrap();
        assert_eq!(
            reply(&mut arbiter),
            Some((
                A,
                Message::ClaimReply {
                    epoch: Epoch(5),
                    owner: A
                }
            ))
        );
        arbiter.handle_frame(&claim(B, 1, 3)).unwrap();
        assert_eq!(
            reply(&mut arbiter),
            Some((
                B,
                Message::ClaimReply {
                    epoch: Epoch(5),
                    owner: A
                }
            ))
        );
        assert_eq!(arbiter.poll_storage_write(), None);
    }

    #[test]
    fn a_lost_write_means_the_decision_never_happened() {
        let mut arbiter_before_crash = arbiter(ArbiterRecord::initial());
        arbiter_before_crash.handle_frame(&claim(A, 1, 2)).unwrap();
        let _lost = arbiter_before_crash.poll_storage_write().unwrap();
        assert_eq!(reply(&mut arbiter_before_crash), None);
        // Restart from storage that never saw the write: B may now win epoch 2.
        let mut restarted = arbiter(ArbiterRecord::initial());
        restarted.handle_frame(&claim(B, 1, 2)).unwrap();
        let write = restarted.poll_storage_write().unwrap();
        restarted.storage_written(write);
        assert_eq!(
            reply(&mut restarted),
            Some((
                B,
                Message::ClaimReply {
                    epoch: Epoch(2),
                    owner: B
                }
            ))
        );
    }

    #[test]
    fn non_claim_messages_unknown_senders_and_replays_are_rejected() {
        let mut arbiter = arbiter(ArbiterRecord::initial());
        let join = message(A, 1, Message::Join);
        assert!(matches!(
            arbiter.handle_frame(&join),
            Err(ReceiveError::UnexpectedMessage { .. })
        ));
        let stranger = claim(NodeId(9), 1, 2);
        assert_eq!(
            arbiter.handle_frame(&stranger),
            Err(ReceiveError::UnknownSender { sender: NodeId(9) })
        );
        let first = claim(A, 2, 2);
        arbiter.handle_frame(&first).unwrap();
        assert_eq!(
            arbiter.handle_frame(&first),
            Err(ReceiveError::Duplicate {
                sequence: FrameSequence(2)
            })
        );
    }

    #[test]
    fn a_claim_is_authentic_only_under_the_key_of_its_claimed_sender() {
        let mut arbiter = arbiter(ArbiterRecord::initial());
        // A knows only its own arbiter key: it cannot claim in B's name.
        let forged = signed(B, 1, Message::Claim { epoch: Epoch(2) }, &key_of(A));
        assert_eq!(
            arbiter.handle_frame(&forged),
            Err(ReceiveError::Decode(
                crate::wire::DecodeError::Unauthenticated
            ))
        );
        assert_eq!(arbiter.poll_storage_write(), None);
        // Answers to B verify only with B's key, so A cannot read a grant to B as its own.
        arbiter.handle_frame(&claim(B, 1, 2)).unwrap();
        let write = arbiter.poll_storage_write().unwrap();
        arbiter.storage_written(write);
        let transmit = arbiter.poll_transmit().unwrap();
        assert_eq!(transmit.to, B);
        assert!(Frame::decode(&transmit.bytes, &key_of(A), &Limits::default()).is_err());
    }

    #[test]
    fn a_wiped_arbiter_refuses_a_stale_claim_for_an_epoch_a_replica_already_holds() {
        // The pair is in epoch 3 (B is live) when the arbiter's storage is replaced.
        let mut arbiter = arbiter(ArbiterRecord::initial());
        let report = Frame {
            header: FrameHeader {
                sender: B,
                incarnation: Incarnation(1),
                epoch: Epoch(3),
                sequence: FrameSequence(1),
            },
            message: Message::Heartbeat {
                sent_at: crate::types::Instant(0),
                log_end: crate::types::LogSequence(0),
                released_through: crate::types::LogSequence(0),
            },
        }
        .encode(&key_of(B), &Limits::default())
        .unwrap();
        arbiter.handle_frame(&report).unwrap();
        assert_eq!(arbiter.epoch_seen(), Epoch(3));
        // The report is answered with the (wiped) record.
        assert_eq!(
            reply(&mut arbiter),
            Some((
                B,
                Message::ClaimReply {
                    epoch: Epoch(0),
                    owner: NodeId(0)
                }
            ))
        );
        // A, cut off since epoch 1, claims epoch 2: never granted.
        assert!(arbiter.handle_frame(&claim(A, 1, 2)).is_err());
        assert_eq!(arbiter.poll_storage_write(), None);
        assert_eq!(reply(&mut arbiter), None);
    }

    #[test]
    fn record_storage_round_trips_and_detects_corruption() {
        let record = ArbiterRecord {
            epoch: Epoch(77),
            owner: B,
        };
        let bytes = record.to_bytes();
        assert_eq!(ArbiterRecord::from_bytes(&bytes), Ok(record));
        let mut torn = bytes;
        torn[3] ^= 1;
        assert_eq!(ArbiterRecord::from_bytes(&torn), Err(StorageError::Corrupt));
        assert_eq!(
            ArbiterRecord::from_bytes(&bytes[..5]),
            Err(StorageError::WrongLength { length: 5 })
        );
        let mut other_version = bytes;
        other_version[0] = 9;
        assert_eq!(
            ArbiterRecord::from_bytes(&other_version),
            Err(StorageError::UnsupportedVersion { received: 9 })
        );
    }
}
