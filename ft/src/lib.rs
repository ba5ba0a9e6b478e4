//! The replication protocol, sans-IO: log channel, output rule, failure detection, arbiter.
#![no_std]
extern crate alloc;
