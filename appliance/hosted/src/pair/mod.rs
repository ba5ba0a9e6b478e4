//! A fault-tolerant pair on Linux hosts: `understudy run --config FILE` as primary, backup or
//! arbiter, and `understudy status --config FILE`.
pub mod appliance;
pub mod arbiter;
pub mod config;
pub mod download;
pub mod drill;
pub mod etcd;
pub mod log;
pub mod metrics;
pub mod replica;
pub mod soak;
pub mod state;
