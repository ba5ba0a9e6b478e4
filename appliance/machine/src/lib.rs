//! The machine around the hart: bus, devices, SBI monitor, device tree, loaders and digest.
#![no_std]
extern crate alloc;
