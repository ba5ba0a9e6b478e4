//! The replication protocol, sans-IO: log channel, output rule, failure detection, arbiter.
//!
//! Nothing here reads a clock, opens a socket, spawns a thread or draws randomness: the driver
//! (the hosted process, the bare-metal kernel or the simulator in `sim`) passes `now` and
//! received bytes in and polls for bytes to send, the next deadline, events and releasable
//! outputs. PROTOCOL.md describes the messages, state machines and versioning rule.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
extern crate alloc;

pub mod arbiter;
pub mod limits;
pub mod node;
pub mod record;
pub mod shared;
pub mod sim;
pub mod transfer;
pub mod types;
pub mod wire;

pub use arbiter::{Arbiter, ArbiterConfig, ArbiterRecord};
pub use limits::{Limits, LimitsError};
pub use node::{Event, Node, NodeConfig, NodeError, ReleasedOutput, RoleKind};
pub use record::{LogEntry, Record};
pub use types::*;
pub use wire::{Action, DecodeError, Frame, Message, ReceiveError, Transmit};
