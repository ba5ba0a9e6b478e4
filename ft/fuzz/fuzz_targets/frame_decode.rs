//! Fuzz target: arbitrary bytes through the frame decoder, the body decoder, the arbiter record
//! decoder and a replica's `handle_frame`; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy_ft::arbiter::ArbiterRecord;
use understudy_ft::{Frame, Incarnation, Instant, Key, Limits, Message, Node, NodeConfig, NodeId};

fuzz_target!(|data: &[u8]| {
    let key = Key([0x5a; 32]);
    let limits = Limits::default();
    let _ = Frame::decode(data, &key, &limits);
    let _ = Message::decode_body(data);
    let _ = ArbiterRecord::from_bytes(data);
    let config = NodeConfig {
        me: NodeId(2),
        peer: NodeId(1),
        arbiter: NodeId(0),
        channel_key: key,
        arbiter_key: Key([0x33; 32]),
        limits,
        incarnation: Incarnation(1),
    };
    let mut node = Node::backup(config, Instant(0));
    let _ = node.handle_frame(Instant(1), data);
    while node.poll_transmit(Instant(1)).is_some() {}
});
