//! Property tests for every encode/decode pair and a bounded fuzz of the frame decoder and of
//! a node fed hostile but authentic frames: decoding never panics, round trips are exact.
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;

use understudy_ft::arbiter::ArbiterRecord;
use understudy_ft::sim::rng::Rng;
use understudy_ft::wire::{FrameHeader, FRAME_MAGIC, PROTOCOL_VERSION};
use understudy_ft::*;

fn key() -> Key {
    Key([0x5a; 32])
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(device, bytes)| Record::DeviceInput {
                device: DeviceId(device),
                bytes
            }
        ),
        any::<u64>().prop_map(|ticks| Record::AdvanceTime { ticks }),
        any::<u64>().prop_map(|ns| Record::WallClockBase { ns }),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|bytes| Record::Entropy { bytes }),
        (any::<u16>(), any::<u32>()).prop_map(|(device, length)| Record::Output {
            device: DeviceId(device),
            length
        }),
        Just(Record::Horizon),
        any::<[u8; 32]>().prop_map(|digest| Record::Digest {
            digest: StateDigest(digest)
        }),
    ]
}

fn entry() -> impl Strategy<Value = LogEntry> {
    (any::<u64>(), record()).prop_map(|(at, record)| LogEntry {
        at: InstructionCount(at),
        record,
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(entry(), 0..8)
        )
            .prop_map(|(sent_at, released, first, entries)| Message::Log {
                sent_at: Instant(sent_at),
                released_through: LogSequence(released),
                first: LogSequence(first),
                entries,
            }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(sent_at, end, released)| {
            Message::Heartbeat {
                sent_at: Instant(sent_at),
                log_end: LogSequence(end),
                released_through: LogSequence(released),
            }
        }),
        (any::<u64>(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(echo, through, resend, backpressure)| Message::Ack {
                echo: Instant(echo),
                through: LogSequence(through),
                resend,
                backpressure,
            }
        ),
        Just(Message::Join),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(sent_at, position, at, state)| Message::Snapshot {
                sent_at: Instant(sent_at),
                position: LogSequence(position),
                at: InstructionCount(at),
                released_through: LogSequence(position / 2),
                held_outputs: state
                    .iter()
                    .take(2)
                    .map(|&byte| wire::OutputCopy {
                        position: LogSequence(position),
                        device: DeviceId(u16::from(byte)),
                        payload: vec![byte],
                    })
                    .collect(),
                state,
            }),
        any::<u64>().prop_map(|epoch| Message::Fence {
            epoch: Epoch(epoch)
        }),
        any::<u64>().prop_map(|epoch| Message::Claim {
            epoch: Epoch(epoch)
        }),
        (any::<u64>(), any::<u8>()).prop_map(|(epoch, owner)| Message::ClaimReply {
            epoch: Epoch(epoch),
            owner: NodeId(owner)
        }),
    ]
}

fn header() -> impl Strategy<Value = FrameHeader> {
    (any::<u8>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(sender, incarnation, epoch, sequence)| FrameHeader {
            sender: NodeId(sender),
            incarnation: Incarnation(incarnation),
            epoch: Epoch(epoch),
            sequence: FrameSequence(sequence),
        },
    )
}

/// A frame with an arbitrary body, authenticated with the right key, so the body decoder is
/// reached with hostile input.
fn authentic_with_body(body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&FRAME_MAGIC);
    bytes.push(PROTOCOL_VERSION);
    bytes.push(1);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&[1; 24]);
    bytes.extend_from_slice(body);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key().0).unwrap();
    mac.update(&bytes);
    bytes.extend_from_slice(&mac.finalize().into_bytes());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn frames_round_trip_exactly(header in header(), message in message()) {
        let limits = Limits::default();
        let frame = Frame { header, message };
        let bytes = frame.encode(&key(), &limits).unwrap();
        prop_assert_eq!(Frame::decode(&bytes, &key(), &limits).unwrap(), frame);
    }

    #[test]
    fn log_entries_report_their_encoded_size(entry in entry()) {
        prop_assert_eq!(entry.encoded_len(), postcard::to_allocvec(&entry).unwrap().len());
    }

    #[test]
    fn arbiter_records_round_trip(epoch in any::<u64>(), owner in any::<u8>()) {
        let record = ArbiterRecord { epoch: Epoch(epoch), owner: NodeId(owner) };
        prop_assert_eq!(ArbiterRecord::from_bytes(&record.to_bytes()), Ok(record));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let limits = Limits::default();
        let _ = Frame::decode(&bytes, &key(), &limits);
        let _ = Message::decode_body(&bytes);
        let _ = ArbiterRecord::from_bytes(&bytes);
        // Authentic framing around garbage reaches the body decoder: a typed error or a
        // message that survives re-encoding.
        match Frame::decode(&authentic_with_body(&bytes), &key(), &limits) {
            Ok(frame) => {
                let again = postcard::to_allocvec(&frame.message).unwrap();
                prop_assert_eq!(Message::decode_body(&again).unwrap(), frame.message);
            }
            Err(error) => prop_assert!(matches!(error, DecodeError::Malformed { .. }), "{error}"),
        }
    }

    #[test]
    fn hostile_authentic_frames_never_panic_a_node(
        messages in proptest::collection::vec((0u8..4, 0u64..4, 0u64..4, message()), 1..24)
    ) {
        let config = |me: u8| NodeConfig {
            me: NodeId(me),
            peer: NodeId(3 - me),
            arbiter: NodeId(0),
            channel_key: key(),
            arbiter_key: Key([0x33; 32]),
            limits: Limits::default(),
            incarnation: Incarnation(1),
        };
        let mut nodes = [
            Node::primary(config(1), Instant(0)),
            Node::backup(config(2), Instant(0)),
            Node::joining(config(2), Instant(0), Epoch(1)),
        ];
        for (index, (sender, incarnation, epoch, message)) in messages.into_iter().enumerate() {
            let frame = Frame {
                header: FrameHeader {
                    sender: NodeId(sender),
                    incarnation: Incarnation(incarnation),
                    epoch: Epoch(epoch),
                    sequence: FrameSequence(index as u64 + 1),
                },
                message,
            };
            // The arbiter (node 0) signs with the replicas' arbiter key, everyone else with the
            // channel key.
            let signing = if sender == 0 { Key([0x33; 32]) } else { key() };
            let bytes = frame.encode(&signing, &Limits::default()).unwrap();
            let now = Instant(index as u64 * 50_000);
            for node in nodes.iter_mut() {
                let _ = node.handle_frame(now, &bytes);
                node.handle_timeout(now);
                while node.poll_transmit(now).is_some() {}
                while let Some(event) = node.poll_event() {
                    if let Event::PersistEpoch { epoch } = event {
                        node.epoch_persisted(epoch);
                    }
                }
                while node.poll_release(now).is_some() {}
                while node.poll_replay().is_some() {}
                if node.role() == RoleKind::GoingLive {
                    prop_assert!(node.finish_go_live(now).is_ok());
                }
            }
        }
    }
}

/// A bounded mutation fuzzer over the frame decoder: flips, truncations, extensions,
/// length-field edits and re-authenticated body mutations of valid frames. The case count
/// bounds its time (well under a second in release builds).
#[test]
fn fuzz_frame_decoder_with_mutated_valid_frames() {
    const CASES: u64 = 200_000;
    let limits = Limits::default();
    let mut rng = Rng::new(0xf0f0);
    let seeds: Vec<Vec<u8>> = [
        Message::Join,
        Message::Ack {
            echo: Instant(9),
            through: LogSequence(4),
            resend: true,
            backpressure: false,
        },
        Message::Log {
            sent_at: Instant(1),
            released_through: LogSequence(2),
            first: LogSequence(3),
            entries: vec![
                LogEntry {
                    at: InstructionCount(5),
                    record: Record::Entropy {
                        bytes: vec![1, 2, 3],
                    },
                },
                LogEntry {
                    at: InstructionCount(6),
                    record: Record::Horizon,
                },
            ],
        },
        Message::Snapshot {
            sent_at: Instant(1),
            position: LogSequence(1),
            at: InstructionCount(1),
            state: vec![7; 40],
            released_through: LogSequence(0),
            held_outputs: vec![],
        },
    ]
    .into_iter()
    .map(|message| postcard::to_allocvec(&message).unwrap())
    .collect();
    let mut accepted = 0u64;
    for case in 0..CASES {
        let body = &seeds[rng.index(seeds.len())];
        let reauthenticate = case % 2 == 0;
        let mut body = body.clone();
        let mut frame = if reauthenticate {
            for _ in 0..rng.range(1, 4) {
                match rng.range(0, 3) {
                    0 if !body.is_empty() => {
                        let index = rng.index(body.len());
                        body[index] ^= 1 << rng.range(0, 7);
                    }
                    1 if !body.is_empty() => body.truncate(rng.index(body.len())),
                    2 => body.push(rng.next_u64() as u8),
                    _ => {
                        let index = rng.index(body.len() + 1);
                        body.insert(index, 0xff);
                    }
                }
            }
            authentic_with_body(&body)
        } else {
            authentic_with_body(&body)
        };
        if !reauthenticate {
            match rng.range(0, 4) {
                0 => {
                    let index = rng.index(frame.len());
                    frame[index] ^= 1 << rng.range(0, 7);
                }
                1 => frame.truncate(rng.index(frame.len())),
                2 => frame.extend_from_slice(&rng.next_u64().to_le_bytes()),
                _ => {
                    let length = rng.next_u64() as u32;
                    frame[4..8].copy_from_slice(&length.to_le_bytes());
                }
            }
        }
        if let Ok(decoded) = Frame::decode(&frame, &key(), &limits) {
            accepted += 1;
            assert!(reauthenticate, "a mutated frame passed authentication");
            let again = postcard::to_allocvec(&decoded.message).unwrap();
            assert_eq!(Message::decode_body(&again).unwrap(), decoded.message);
        }
    }
    assert!(
        accepted > 0,
        "the fuzzer never produced a decodable body; it is not reaching the decoder"
    );
}
