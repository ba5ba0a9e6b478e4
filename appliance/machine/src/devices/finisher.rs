//! The SiFive test finisher (`sifive,test0`): the guest powers off, passes, fails or resets.

pub const FINISHER_BASE: u64 = 0x10_0000;
pub const FINISHER_SIZE: u64 = 0x1000;
const FINISHER_FAIL: u32 = 0x3333;
const FINISHER_PASS: u32 = 0x5555;
const FINISHER_RESET: u32 = 0x7777;

/// What the guest asked the machine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinisherRequest {
    /// Pass (power off) or fail; the code is the upper 16 bits of the value for both, as
    /// in QEMU 7.2 (`hw/misc/sifive_test.c`), which exits with it, so a process status
    /// keeps its low 8 bits (`run-guest` does the same).
    Exit {
        code: u16,
    },
    Reset,
}

/// Decodes a store to the finisher's one register; other values are ignored, as in QEMU.
pub fn decode(offset: u64, value: u64) -> Option<FinisherRequest> {
    if offset != 0 {
        return None;
    }
    let value = value as u32;
    match value & 0xffff {
        FINISHER_PASS | FINISHER_FAIL => Some(FinisherRequest::Exit {
            code: (value >> 16) as u16,
        }),
        FINISHER_RESET => Some(FinisherRequest::Reset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_carries_its_exit_code_in_the_upper_half() {
        assert_eq!(
            decode(0, 0x0003_3333),
            Some(FinisherRequest::Exit { code: 3 })
        );
        assert_eq!(decode(0, 0x5555), Some(FinisherRequest::Exit { code: 0 }));
        assert_eq!(decode(0, 0x7777), Some(FinisherRequest::Reset));
        assert_eq!(decode(0, 0x1234), None);
        assert_eq!(decode(4, 0x5555), None);
    }
}
