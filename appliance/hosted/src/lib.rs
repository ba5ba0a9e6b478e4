//! The hosted platform: runs the machine as a Linux process with a console and a clock.

pub mod code_memory;
pub mod demo;
pub mod disk;
pub mod gdb;
pub mod guest_memory;
pub mod live;
pub mod net;
pub mod pair;
pub mod record;
pub mod replay;
