//! An arbiter whose decisions live in a linearizable compare-and-set register that both
//! replicas share (etcd: one key, compared on its modification revision). Each replica runs
//! one of these beside its node, in process; the register, not either process, decides: the
//! test-and-set on the next epoch is one conditional write, so two replicas can never both
//! win an epoch.
//!
//! Sans-IO like the rest of `ft`: the driver executes each [`StorageOp`] against the register
//! and hands back a [`StorageResult`]; an answer that did not arrive is
//! [`StorageResult::Unavailable`], whose write may or may not have happened. Then nothing is
//! assumed: the register is read again, and the record found says whether the write took
//! effect (it is ours), lost (another owner), or did not happen (unchanged, so it is retried
//! against the revision just read). The replicas' reports are answered only while the
//! register was read successfully within `validity`, so a replica that cannot get a
//! linearizable answer sees its arbiter as unreachable and never goes live.
use crate::arbiter::{Arbiter, ArbiterConfig, ArbiterRecord};
use crate::types::{Duration, Instant};
use crate::wire::{ReceiveError, Transmit};

/// The register's modification revision of the value read (0: the key does not exist yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub u64);

/// What the driver must do with the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOp {
    /// A linearizable read of the record and its revision.
    Read,
    /// Write `record` only if the register's revision is still `expected`.
    CompareAndPut {
        /// The revision the register must still be at.
        expected: Revision,
        /// The record to put.
        record: ArbiterRecord,
    },
}

/// What the register answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageResult {
    /// The register holds `record` (None: no record yet, a new pair) at `revision`.
    Read {
        /// The record, if one was ever written.
        record: Option<ArbiterRecord>,
        /// The register's revision of it.
        revision: Revision,
    },
    /// The conditional write took effect; the register is now at `revision`.
    Written {
        /// The register's new revision.
        revision: Revision,
    },
    /// The register's revision was not the expected one: someone else wrote first.
    CompareFailed,
    /// No answer (timeout, no quorum, connection refused): a write's effect is unknown.
    Unavailable,
}

/// An arbiter over a shared register.
#[derive(Debug)]
pub struct SharedArbiter {
    arbiter: Arbiter,
    /// The revision of the record last read or written; None until the first read.
    revision: Option<Revision>,
    in_flight: Option<StorageOp>,
    /// A write whose outcome is unknown (or lost the compare): read before anything else.
    must_read: Option<ArbiterRecord>,
    /// Answers go out while `now` is before this: the register answered lately.
    fresh_until: Option<Instant>,
    next_read_at: Instant,
    /// How often the register is read while nothing else happens, and how long a read keeps
    /// the answers flowing.
    refresh_interval: Duration,
    validity: Duration,
}

impl SharedArbiter {
    /// An arbiter that reads the register every `refresh_interval` and answers only within
    /// `validity` of its last successful exchange with it.
    pub fn new(config: ArbiterConfig, refresh_interval: Duration, validity: Duration) -> Self {
        SharedArbiter {
            arbiter: Arbiter::new(config, ArbiterRecord::initial()),
            revision: None,
            in_flight: None,
            must_read: None,
            fresh_until: None,
            next_read_at: Instant(0),
            refresh_interval,
            validity,
        }
    }

    /// The record last confirmed by the register.
    pub fn persisted(&self) -> ArbiterRecord {
        self.arbiter.persisted()
    }

    /// True when the register answered within `validity` of `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_some_and(|until| now < until)
    }

    /// A frame from the replica (a claim or a report).
    pub fn handle_frame(&mut self, bytes: &[u8]) -> Result<(), ReceiveError> {
        self.arbiter.handle_frame(bytes)
    }

    /// The next operation on the register, if one is due and none is in flight.
    pub fn poll_storage(&mut self, now: Instant) -> Option<StorageOp> {
        if self.in_flight.is_some() {
            return None;
        }
        let op = match self.revision {
            Some(revision) if self.must_read.is_none() => {
                if let Some(record) = self.arbiter.poll_storage_write() {
                    StorageOp::CompareAndPut {
                        expected: revision,
                        record,
                    }
                } else if now >= self.next_read_at {
                    StorageOp::Read
                } else {
                    return None;
                }
            }
            _ => StorageOp::Read,
        };
        self.in_flight = Some(op);
        Some(op)
    }

    /// When the next operation falls due on its own.
    pub fn poll_at(&self) -> Instant {
        self.next_read_at
    }

    /// The register's answer to the operation in flight.
    pub fn storage_result(&mut self, now: Instant, result: StorageResult) {
        let Some(op) = self.in_flight.take() else {
            return;
        };
        match (op, result) {
            (StorageOp::Read, StorageResult::Read { record, revision }) => {
                let stored = record.unwrap_or_else(ArbiterRecord::initial);
                self.revision = Some(revision);
                self.fresh_until = Some(now + self.validity);
                self.next_read_at = now + self.refresh_interval;
                if let Some(attempted) = self.must_read.take() {
                    if stored == attempted {
                        // The write whose answer was lost did take effect.
                        self.arbiter.storage_written(attempted);
                        return;
                    }
                    if stored.epoch < attempted.epoch {
                        // It did not happen: offer it again against this revision.
                        self.arbiter.storage_write_failed();
                    }
                }
                self.arbiter.storage_changed(stored);
            }
            (StorageOp::CompareAndPut { record, .. }, StorageResult::Written { revision }) => {
                self.revision = Some(revision);
                self.fresh_until = Some(now + self.validity);
                self.arbiter.storage_written(record);
            }
            (StorageOp::CompareAndPut { record, .. }, _) => {
                // Lost the compare, or no answer: the register says what happened.
                self.must_read = Some(record);
            }
            (StorageOp::Read, _) => {
                // Retry after a pause; answers stop once the last read is too old.
                self.next_read_at = now + self.refresh_interval;
            }
        }
    }

    /// The next answer to the replica; answers made while the register is stale are dropped.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let transmit = self.arbiter.poll_transmit()?;
        if self.is_fresh(now) {
            Some(transmit)
        } else {
            // Drain: a replica must not hear an arbiter that cannot reach the register.
            while self.arbiter.poll_transmit().is_some() {}
            None
        }
    }
}

#[cfg(test)]
mod tests {
    //! A model of the shared register with lost answers, checked over seeds: two replicas
    //! claim the same epoch through arbiters of their own; the register loses answers of
    //! writes that took effect and of writes that did not, and reads fail at random. Never
    //! may both replicas be told they own an epoch.
    use super::*;
    use crate::types::{Epoch, FrameSequence, Incarnation, Key, NodeId};
    use crate::wire::{Frame, FrameHeader, Message};
    use crate::Limits;

    const ARBITER: NodeId = NodeId(3);
    const REPLICAS: [NodeId; 2] = [NodeId(1), NodeId(2)];
    const STEPS_MAX: usize = 400;

    struct Register {
        record: Option<ArbiterRecord>,
        revision: Revision,
    }

    struct Random(u64);

    impl Random {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn key_of(replica: NodeId) -> Key {
        Key([replica.0; 32])
    }

    fn arbiter_for(replica: NodeId) -> SharedArbiter {
        // In process, an arbiter serves one replica; the other key is never used.
        SharedArbiter::new(
            ArbiterConfig {
                me: ARBITER,
                replicas: REPLICAS,
                keys: [key_of(replica), key_of(replica)],
                limits: Limits::default(),
                incarnation: Incarnation(1),
            },
            Duration::from_millis(100),
            Duration::from_millis(1000),
        )
    }

    fn claim(sender: NodeId, sequence: u64, epoch: u64) -> alloc::vec::Vec<u8> {
        Frame {
            header: FrameHeader {
                sender,
                incarnation: Incarnation(1),
                epoch: Epoch(1),
                sequence: FrameSequence(sequence),
            },
            message: Message::Claim {
                epoch: Epoch(epoch),
            },
        }
        .encode(&key_of(sender), &Limits::default())
        .unwrap()
    }

    /// One seed: both replicas claim epoch 2 (and repeat their claims, as a node does); every
    /// grant either arbiter sends is collected.
    fn run(seed: u64) -> ([Option<NodeId>; 2], Register) {
        let mut random = Random(seed);
        let mut arbiters = [arbiter_for(REPLICAS[0]), arbiter_for(REPLICAS[1])];
        let mut register = Register {
            record: None,
            revision: Revision(0),
        };
        let mut told: [Option<NodeId>; 2] = [None, None];
        let mut sequences = [0u64; 2];
        let mut now = Instant(0);
        for _ in 0..STEPS_MAX {
            now = now + Duration::from_millis(10);
            let side = random.below(2) as usize;
            if random.below(4) == 0 && told[side].is_none() {
                sequences[side] += 1;
                arbiters[side]
                    .handle_frame(&claim(REPLICAS[side], sequences[side], 2))
                    .unwrap();
            }
            if let Some(op) = arbiters[side].poll_storage(now) {
                let result = match op {
                    StorageOp::Read if random.below(5) == 0 => StorageResult::Unavailable,
                    StorageOp::Read => StorageResult::Read {
                        record: register.record,
                        revision: register.revision,
                    },
                    StorageOp::CompareAndPut { expected, record } => {
                        let applies = expected == register.revision;
                        // Lost before the register saw it: nothing happens.
                        let lost_before = random.below(5) == 0;
                        if applies && !lost_before {
                            register.record = Some(record);
                            register.revision = Revision(register.revision.0 + 1);
                        }
                        match (lost_before, random.below(4) == 0, applies) {
                            (true, _, _) | (false, true, _) => StorageResult::Unavailable,
                            (false, false, true) => StorageResult::Written {
                                revision: register.revision,
                            },
                            (false, false, false) => StorageResult::CompareFailed,
                        }
                    }
                };
                arbiters[side].storage_result(now, result);
            }
            while let Some(transmit) = arbiters[side].poll_transmit(now) {
                let frame =
                    Frame::decode(&transmit.bytes, &key_of(transmit.to), &Limits::default())
                        .unwrap();
                if let Message::ClaimReply { epoch, owner } = frame.message {
                    if epoch == Epoch(2) {
                        let index = REPLICAS.iter().position(|r| *r == transmit.to).unwrap();
                        told[index] = Some(owner);
                    }
                }
            }
        }
        (told, register)
    }

    #[test]
    fn replicas_sharing_a_register_never_both_win_an_epoch_whatever_answers_are_lost() {
        let mut decided = 0;
        for seed in 0..2000 {
            let (told, register) = run(seed);
            let winner = register.record.map(|r| r.owner);
            for (index, answer) in told.iter().enumerate() {
                if let Some(owner) = answer {
                    // Whatever a replica was told is what the register holds.
                    assert_eq!(
                        Some(*owner),
                        winner,
                        "seed {seed}: replica {index} told {owner:?}"
                    );
                }
            }
            if told.iter().all(Option::is_some) {
                decided += 1;
            }
        }
        // Most seeds get both replicas an answer despite the losses.
        assert!(decided > 1800, "only {decided} of 2000 seeds decided");
    }

    #[test]
    fn a_write_whose_answer_was_lost_is_found_by_reading_the_register() {
        let mut arbiter = arbiter_for(REPLICAS[0]);
        let now = Instant(0);
        assert_eq!(arbiter.poll_storage(now), Some(StorageOp::Read));
        arbiter.storage_result(
            now,
            StorageResult::Read {
                record: None,
                revision: Revision(0),
            },
        );
        arbiter.handle_frame(&claim(REPLICAS[0], 1, 2)).unwrap();
        let wanted = ArbiterRecord {
            epoch: Epoch(2),
            owner: REPLICAS[0],
        };
        assert_eq!(
            arbiter.poll_storage(now),
            Some(StorageOp::CompareAndPut {
                expected: Revision(0),
                record: wanted
            })
        );
        // The write took effect, but its answer was lost: no grant yet.
        arbiter.storage_result(now, StorageResult::Unavailable);
        assert!(arbiter.poll_transmit(now).is_none());
        assert_eq!(arbiter.poll_storage(now), Some(StorageOp::Read));
        arbiter.storage_result(
            now,
            StorageResult::Read {
                record: Some(wanted),
                revision: Revision(1),
            },
        );
        let grant = arbiter.poll_transmit(now).expect("the claim is answered");
        let frame = Frame::decode(&grant.bytes, &key_of(REPLICAS[0]), &Limits::default()).unwrap();
        assert_eq!(
            frame.message,
            Message::ClaimReply {
                epoch: Epoch(2),
                owner: REPLICAS[0]
            }
        );
        assert_eq!(arbiter.persisted(), wanted);
    }

    #[test]
    fn no_answer_goes_out_once_the_register_has_been_silent_past_its_validity() {
        let mut arbiter = arbiter_for(REPLICAS[0]);
        let start = Instant(0);
        arbiter.poll_storage(start);
        arbiter.storage_result(
            start,
            StorageResult::Read {
                record: None,
                revision: Revision(0),
            },
        );
        let late = start + Duration::from_millis(1500);
        assert!(!arbiter.is_fresh(late));
        arbiter.handle_frame(&claim(REPLICAS[0], 1, 2)).unwrap();
        // The write cannot be confirmed: the register is unreachable from here on.
        assert!(matches!(
            arbiter.poll_storage(late),
            Some(StorageOp::CompareAndPut { .. })
        ));
        arbiter.storage_result(late, StorageResult::Unavailable);
        assert_eq!(arbiter.poll_storage(late), Some(StorageOp::Read));
        arbiter.storage_result(late, StorageResult::Unavailable);
        assert!(arbiter.poll_transmit(late).is_none());
    }
}
