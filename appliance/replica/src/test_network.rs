//! The in-process network of the runtime's tests: one delivery round between a primary, a
//! backup (either may be dead: `None`) and an arbiter whose writes are durable at once.
use alloc::vec::Vec;

use understudy_ft::{Arbiter, Instant, NodeId, Transmit};

use crate::Replica;

/// Runs both replicas' timers, then delivers every frame sent by them and the arbiter.
pub fn deliver_round(
    now: Instant,
    arbiter_id: NodeId,
    replicas: [(NodeId, Option<&mut Replica>); 2],
    arbiter: &mut Arbiter,
) {
    deliver_round_losing(now, arbiter_id, replicas, arbiter, &mut |_| false);
}

/// `deliver_round`, dropping the frames between the replicas for which `lose` says so (it
/// sees every one of them).
pub fn deliver_round_losing(
    now: Instant,
    arbiter_id: NodeId,
    replicas: [(NodeId, Option<&mut Replica>); 2],
    arbiter: &mut Arbiter,
    lose: &mut dyn FnMut(&Transmit) -> bool,
) {
    let [(first_id, mut first), (second_id, mut second)] = replicas;
    let mut in_flight = Vec::new();
    for replica in [first.as_deref_mut(), second.as_deref_mut()]
        .into_iter()
        .flatten()
    {
        replica.handle_timeout(now);
        while let Some(transmit) = replica.poll_transmit(now) {
            in_flight.push(transmit);
        }
    }
    while let Some(transmit) = arbiter.poll_transmit() {
        in_flight.push(transmit);
    }
    for transmit in in_flight {
        let target = if transmit.to == first_id {
            first.as_deref_mut()
        } else if transmit.to == second_id {
            second.as_deref_mut()
        } else {
            None
        };
        if transmit.to == arbiter_id {
            let _ = arbiter.handle_frame(&transmit.bytes);
            while let Some(record) = arbiter.poll_storage_write() {
                arbiter.storage_written(record);
            }
        } else if let Some(replica) = target {
            if !lose(&transmit) {
                let _ = replica.handle_frame(now, &transmit.bytes);
            }
        }
    }
}
