//! A fixed-order byte serialisation of device state, fed to the state digest.

use alloc::vec::Vec;

/// Collects state fields little-endian, in the order the devices write them.
#[derive(Default)]
pub struct StateWriter {
    pub bytes: Vec<u8>,
}

impl StateWriter {
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn bytes(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }
}
