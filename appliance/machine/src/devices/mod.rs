//! The devices of the `virt`-like machine and the bus that routes physical addresses to them.

pub mod clint;
pub mod finisher;
pub mod plic;
pub mod rtc;
pub mod uart;
pub mod virtio;
