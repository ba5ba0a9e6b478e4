//! A fixed-order byte serialisation of machine state: `StateWriter` feeds the state digest and
//! `Machine::save_devices`; `StateReader` reads saved state back, bounds-checked, for
//! `Machine::restore_devices`.

use alloc::vec::Vec;
use core::fmt;

use understudy_cpu::StateError;

/// Collects state fields little-endian, in the order the devices write them.
#[derive(Default)]
pub struct StateWriter {
    pub bytes: Vec<u8>,
}

impl StateWriter {
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
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
    /// A length (u32) and then the bytes, for variable-length fields of saved state.
    pub fn sized_bytes(&mut self, value: &[u8]) {
        let len = u32::try_from(value.len()).expect("state: field longer than 4 GiB");
        self.u32(len);
        self.bytes(value);
    }
}

/// Why `Machine::restore_devices` (or a device's restore) refused saved state. Nothing was
/// changed when it is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The input ends before a field that must be there.
    Truncated {
        offset_bytes: usize,
        needed_bytes: usize,
    },
    /// The input does not start with the saved-state magic: it is not saved machine state.
    Magic { found: u32 },
    /// Saved by a build with another state format.
    Version { expected: u32, found: u32 },
    /// Saved by a machine built differently (memory size, device set, device tree, ...).
    Mismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
    /// A field holds a value this machine can never be in.
    Invalid { what: &'static str, value: u64 },
    /// Bytes left over after the last field.
    TrailingBytes { len_bytes: usize },
    /// The hart refused its registers.
    Hart(StateError),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Truncated {
                offset_bytes,
                needed_bytes,
            } => write!(
                f,
                "saved state ends at byte {offset_bytes} where {needed_bytes} more bytes are needed; send all of save_devices"
            ),
            RestoreError::Magic { found } => write!(
                f,
                "saved state starts with {found:#010x}, not the machine state magic; send save_devices output"
            ),
            RestoreError::Version { expected, found } => write!(
                f,
                "saved state has format version {found}, this build reads {expected}; run the same build on both machines"
            ),
            RestoreError::Mismatch {
                what,
                expected,
                found,
            } => write!(
                f,
                "saved state is from a machine with another {what} ({found:#x}, this machine has {expected:#x}); build both machines from the same configuration"
            ),
            RestoreError::Invalid { what, value } => {
                write!(f, "saved state has an impossible {what} ({value:#x}); the bytes are damaged")
            }
            RestoreError::TrailingBytes { len_bytes } => write!(
                f,
                "saved state has {len_bytes} bytes after its end; the bytes are damaged"
            ),
            RestoreError::Hart(error) => write!(f, "saved state: {error}"),
        }
    }
}

impl core::error::Error for RestoreError {}

/// Reads fields in the order a `StateWriter` wrote them; every read is bounds-checked.
pub struct StateReader<'a> {
    bytes: &'a [u8],
    offset_bytes: usize,
}

impl<'a> StateReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        StateReader {
            bytes,
            offset_bytes: 0,
        }
    }

    pub fn take(&mut self, len_bytes: usize) -> Result<&'a [u8], RestoreError> {
        let rest = &self.bytes[self.offset_bytes..];
        if rest.len() < len_bytes {
            return Err(RestoreError::Truncated {
                offset_bytes: self.bytes.len(),
                needed_bytes: len_bytes - rest.len(),
            });
        }
        self.offset_bytes += len_bytes;
        Ok(&rest[..len_bytes])
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], RestoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, RestoreError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, RestoreError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, RestoreError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, RestoreError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A byte that must be 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, RestoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(RestoreError::Invalid {
                what,
                value: u64::from(value),
            }),
        }
    }

    /// A byte whose bits outside `mask` must be clear.
    pub fn flags(&mut self, mask: u8, what: &'static str) -> Result<u8, RestoreError> {
        let value = self.u8()?;
        if value & !mask != 0 {
            return Err(RestoreError::Invalid {
                what,
                value: u64::from(value),
            });
        }
        Ok(value)
    }

    /// A field written by `StateWriter::sized_bytes`, refused when longer than
    /// `len_bytes_max` (the length is checked before anything is allocated).
    pub fn sized_bytes(
        &mut self,
        len_bytes_max: usize,
        what: &'static str,
    ) -> Result<&'a [u8], RestoreError> {
        let len = self.u32()? as usize;
        if len > len_bytes_max {
            return Err(RestoreError::Invalid {
                what,
                value: len as u64,
            });
        }
        self.take(len)
    }

    /// A u64 that must equal `expected` (a configuration field).
    pub fn expect_u64(&mut self, expected: u64, what: &'static str) -> Result<(), RestoreError> {
        let found = self.u64()?;
        if found != expected {
            return Err(RestoreError::Mismatch {
                what,
                expected,
                found,
            });
        }
        Ok(())
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), RestoreError> {
        let left = self.bytes.len() - self.offset_bytes;
        if left != 0 {
            return Err(RestoreError::TrailingBytes { len_bytes: left });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_and_refuses_reads_past_the_end() {
        let mut out = StateWriter::default();
        out.u8(1);
        out.u16(0x0203);
        out.u32(0x0405_0607);
        out.u64(u64::MAX - 1);
        out.sized_bytes(b"abc");
        let mut reader = StateReader::new(&out.bytes);
        assert_eq!(reader.bool("flag"), Ok(true));
        assert_eq!(reader.u16(), Ok(0x0203));
        assert_eq!(reader.u32(), Ok(0x0405_0607));
        assert_eq!(reader.u64(), Ok(u64::MAX - 1));
        assert_eq!(reader.sized_bytes(3, "field"), Ok(&b"abc"[..]));
        assert_eq!(
            reader.u32(),
            Err(RestoreError::Truncated {
                offset_bytes: 22,
                needed_bytes: 4
            })
        );
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading() {
        let mut out = StateWriter::default();
        out.u32(u32::MAX);
        let mut reader = StateReader::new(&out.bytes);
        assert_eq!(
            reader.sized_bytes(16, "fifo"),
            Err(RestoreError::Invalid {
                what: "fifo",
                value: u64::from(u32::MAX)
            })
        );
    }

    #[test]
    fn leftover_bytes_and_bad_booleans_are_refused() {
        let mut reader = StateReader::new(&[2, 9]);
        assert_eq!(
            reader.bool("flag"),
            Err(RestoreError::Invalid {
                what: "flag",
                value: 2
            })
        );
        assert_eq!(
            reader.finish(),
            Err(RestoreError::TrailingBytes { len_bytes: 1 })
        );
    }
}
