//! The appliance role config.
#![no_std]
