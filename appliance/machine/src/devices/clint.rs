//! The CLINT (SiFive core-local interruptor): machine software and timer interrupts for hart 0.
//!
//! Layout as in QEMU's `virt` and the SiFive CLINT: `msip` at 0x0, `mtimecmp` at 0x4000,
//! `mtime` at 0xbff8. `mtime` is not a register here: it is the machine clock, derived from
//! the instruction count (see `Clock`), so it is read-only to the guest.

use crate::clock::Clock;
use crate::state::{RestoreError, StateReader, StateWriter};
use understudy_cpu::InstructionCount;

pub const CLINT_BASE: u64 = 0x200_0000;
pub const CLINT_SIZE: u64 = 0x1_0000;
const MSIP: u64 = 0x0;
const MTIMECMP: u64 = 0x4000;
const MTIME: u64 = 0xbff8;

pub struct Clint {
    msip: bool,
    pub mtimecmp: u64,
}

impl Default for Clint {
    fn default() -> Self {
        Self::new()
    }
}

impl Clint {
    pub fn new() -> Self {
        // Reset value of mtimecmp is all ones so that no timer interrupt is pending at boot.
        Clint {
            msip: false,
            mtimecmp: u64::MAX,
        }
    }

    pub fn msip(&self) -> bool {
        self.msip
    }

    pub fn load(
        &self,
        offset: u64,
        size_bytes: u8,
        clock: &Clock,
        now: InstructionCount,
    ) -> Option<u64> {
        let (register, value) = match offset {
            MSIP..=0x3 => (MSIP, self.msip as u64),
            MTIMECMP..=0x4007 => (MTIMECMP, self.mtimecmp),
            MTIME..=0xbfff => (MTIME, clock.ticks(now)),
            _ => return Some(0),
        };
        Some(sub_word_read(value, offset - register, size_bytes))
    }

    pub fn store(&mut self, offset: u64, size_bytes: u8, value: u64) -> bool {
        match offset {
            MSIP => self.msip = value & 1 != 0,
            MTIMECMP..=0x4007 => {
                self.mtimecmp = sub_word_write(self.mtimecmp, offset - MTIMECMP, size_bytes, value)
            }
            // mtime is derived from the instruction count; writes are ignored.
            _ => {}
        }
        true
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        out.u8(self.msip as u8);
        out.u64(self.mtimecmp);
    }

    /// Saved state for `Machine::save_devices`: the same fields as the digest's.
    pub fn save(&self, out: &mut StateWriter) {
        self.write_state(out);
    }

    /// A CLINT in the state `save` wrote.
    pub fn restore(input: &mut StateReader) -> Result<Clint, RestoreError> {
        Ok(Clint {
            msip: input.bool("clint msip")?,
            mtimecmp: input.u64()?,
        })
    }
}

/// Reads `size_bytes` at byte `offset` of a little-endian 64-bit register.
pub(crate) fn sub_word_read(register: u64, offset: u64, size_bytes: u8) -> u64 {
    let shifted = register >> (8 * (offset & 7));
    match size_bytes {
        1 => shifted & 0xff,
        2 => shifted & 0xffff,
        4 => shifted & 0xffff_ffff,
        _ => shifted,
    }
}

/// Writes `size_bytes` of `value` at byte `offset` of a little-endian 64-bit register.
pub(crate) fn sub_word_write(register: u64, offset: u64, size_bytes: u8, value: u64) -> u64 {
    let width_bits = 8 * u32::from(size_bytes.min(8));
    let mask = if width_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << width_bits) - 1
    };
    let shift = 8 * (offset & 7) as u32;
    if shift >= 64 {
        return register;
    }
    (register & !(mask << shift)) | ((value & mask) << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimecmp_halves_can_be_written_separately_as_rv32_software_does() {
        let mut clint = Clint::new();
        clint.store(MTIMECMP, 4, 0x1234_5678);
        clint.store(MTIMECMP + 4, 4, 0x9);
        assert_eq!(clint.mtimecmp, 0x9_1234_5678);
    }

    #[test]
    fn mtime_reads_the_clock_and_ignores_writes() {
        let clock = Clock::new(10);
        let mut clint = Clint::new();
        clint.store(MTIME, 8, 77);
        assert_eq!(
            clint.load(MTIME, 8, &clock, InstructionCount(1000)),
            Some(100)
        );
        assert_eq!(
            clint.load(MTIME + 4, 4, &clock, InstructionCount(1000)),
            Some(0)
        );
    }

    #[test]
    fn saved_state_restores_to_identical_bytes_and_a_bad_msip_is_refused() {
        let mut clint = Clint::new();
        clint.store(MSIP, 4, 1);
        clint.store(MTIMECMP, 8, 0x1234);
        let mut saved = StateWriter::default();
        clint.save(&mut saved);
        let restored = Clint::restore(&mut StateReader::new(&saved.bytes)).unwrap();
        assert!(restored.msip());
        assert_eq!(restored.mtimecmp, 0x1234);
        let mut again = StateWriter::default();
        restored.save(&mut again);
        assert_eq!(again.bytes, saved.bytes);
        saved.bytes[0] = 2;
        assert_eq!(
            Clint::restore(&mut StateReader::new(&saved.bytes)).err(),
            Some(RestoreError::Invalid {
                what: "clint msip",
                value: 2
            })
        );
        assert!(Clint::restore(&mut StateReader::new(&saved.bytes[..5])).is_err());
    }
}
