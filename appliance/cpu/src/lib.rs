//! One deterministic RV64GC hart: decode, execute, privilege, traps, Sv39 and guest RAM.
#![no_std]
extern crate alloc;
