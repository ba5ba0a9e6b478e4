//! `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` words on the kernel command line.
//!
//! This is how Firecracker (and QEMU `microvm` with ACPI off) names its virtio-mmio devices
//! (virtio 1.2 section 4.2): Linux's syntax, from `drivers/virtio/virtio_mmio.c`. The size is
//! a `memparse` number (C integer with an optional K, M, G, T, P or E binary suffix), the base
//! and the optional id are C integers (`0x` hex, leading `0` octal, else decimal), the irq is
//! decimal. For example `virtio_mmio.device=4K@0xd0000000:5`.

use crate::PhysRange;
use core::fmt;

/// The word's prefix; the rest of the word describes one device.
pub const WORD_PREFIX: &str = "virtio_mmio.device=";

/// One virtio-mmio device: its register window and the interrupt line the platform wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    pub registers: PhysRange,
    /// Not used by a kernel that polls; kept so the console can name the device fully.
    pub irq: u32,
}

/// Why a `virtio_mmio.device=` word does not describe a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioWordError {
    /// The size is missing, not a number, has an unknown suffix, or is zero.
    BadSize,
    /// No `@` after the size.
    MissingBase,
    BadBase,
    /// No `:` after the base.
    MissingIrq,
    BadIrq,
    /// Something after the irq that is not `:<id>`.
    BadId,
    /// The base plus the size passes the end of the address space.
    PastTheEnd,
}

impl fmt::Display for MmioWordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadSize => "the size is not a nonzero number with an optional K/M/G suffix",
            Self::MissingBase => "no `@<base>` after the size",
            Self::BadBase => "the base address is not a number",
            Self::MissingIrq => "no `:<irq>` after the base address",
            Self::BadIrq => "the irq is not a decimal number",
            Self::BadId => "only `:<id>` may follow the irq",
            Self::PastTheEnd => "the region runs past the end of the address space",
        })
    }
}

impl core::error::Error for MmioWordError {}

/// Splits off a C integer with base prefix (`strtoull` with base 0): `0x`/`0X` hex, a leading
/// `0` octal, else decimal. Returns the value and the rest; `None` without any digit or on
/// overflow.
fn c_integer(text: &str) -> Option<(u64, &str)> {
    let (radix, digits) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (16, hex)
        } else if text.len() > 1 && text.starts_with('0') {
            (8, &text[1..])
        } else {
            (10, text)
        };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        // "0" alone, or "0" followed by a non-octal character, is decimal zero.
        return (radix == 8).then_some((0, digits));
    }
    let value = u64::from_str_radix(&digits[..end], radix).ok()?;
    Some((value, &digits[end..]))
}

/// `memparse`: a C integer times the binary multiple its suffix names.
fn memparse(text: &str) -> Option<(u64, &str)> {
    let (value, rest) = c_integer(text)?;
    let shift = match rest.as_bytes().first() {
        Some(b'K' | b'k') => 10,
        Some(b'M' | b'm') => 20,
        Some(b'G' | b'g') => 30,
        Some(b'T' | b't') => 40,
        Some(b'P' | b'p') => 50,
        Some(b'E' | b'e') => 60,
        _ => return Some((value, rest)),
    };
    let scaled = value.checked_mul(1 << shift)?;
    Some((scaled, &rest[1..]))
}

/// Parses what follows `virtio_mmio.device=`.
pub fn parse_device(text: &str) -> Result<MmioDevice, MmioWordError> {
    let (size, rest) = memparse(text).ok_or(MmioWordError::BadSize)?;
    if size == 0 {
        return Err(MmioWordError::BadSize);
    }
    let rest = rest.strip_prefix('@').ok_or(MmioWordError::MissingBase)?;
    let (base, rest) = c_integer(rest).ok_or(MmioWordError::BadBase)?;
    let rest = rest.strip_prefix(':').ok_or(MmioWordError::MissingIrq)?;
    let irq_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let irq = rest[..irq_end]
        .parse::<u32>()
        .map_err(|_| MmioWordError::BadIrq)?;
    let rest = &rest[irq_end..];
    if !rest.is_empty() {
        let id = rest.strip_prefix(':').ok_or(MmioWordError::BadId)?;
        match c_integer(id) {
            Some((_, "")) => {}
            _ => return Err(MmioWordError::BadId),
        }
    }
    let end = base.checked_add(size).ok_or(MmioWordError::PastTheEnd)?;
    Ok(MmioDevice {
        registers: PhysRange { start: base, end },
        irq,
    })
}

/// Every `virtio_mmio.device=` word on the command line, with the device it describes.
pub fn words(
    command_line: &str,
) -> impl Iterator<Item = (&str, Result<MmioDevice, MmioWordError>)> {
    command_line.split_ascii_whitespace().filter_map(|word| {
        let device = word.strip_prefix(WORD_PREFIX)?;
        Some((word, parse_device(device)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(start: u64, size: u64, irq: u32) -> MmioDevice {
        MmioDevice {
            registers: PhysRange {
                start,
                end: start + size,
            },
            irq,
        }
    }

    #[test]
    fn firecracker_words_parse() {
        assert_eq!(
            parse_device("4K@0xd0000000:5"),
            Ok(device(0xd000_0000, 4096, 5))
        );
        assert_eq!(
            parse_device("4K@0xd0001000:6"),
            Ok(device(0xd000_1000, 4096, 6))
        );
    }

    #[test]
    fn qemu_microvm_words_parse() {
        assert_eq!(
            parse_device("512@0xfeb00e00:12"),
            Ok(device(0xfeb0_0e00, 512, 12))
        );
    }

    #[test]
    fn sizes_and_bases_take_every_c_radix_and_suffix() {
        assert_eq!(parse_device("0x200@4096:1"), Ok(device(4096, 512, 1)));
        assert_eq!(parse_device("01000@010:1"), Ok(device(8, 512, 1)));
        assert_eq!(parse_device("1m@0X10:0"), Ok(device(16, 1 << 20, 0)));
        assert_eq!(parse_device("2G@0:3"), Ok(device(0, 2 << 30, 3)));
        assert_eq!(parse_device("1k@0x1000:3:7"), Ok(device(0x1000, 1024, 3)));
        assert_eq!(parse_device("1k@0x1000:3:0x7"), Ok(device(0x1000, 1024, 3)));
    }

    #[test]
    fn malformed_words_say_what_is_wrong() {
        assert_eq!(parse_device(""), Err(MmioWordError::BadSize));
        assert_eq!(parse_device("@0x1000:5"), Err(MmioWordError::BadSize));
        assert_eq!(parse_device("0@0x1000:5"), Err(MmioWordError::BadSize));
        assert_eq!(parse_device("0x@0x1000:5"), Err(MmioWordError::BadSize));
        assert_eq!(parse_device("4Q@0x1000:5"), Err(MmioWordError::MissingBase));
        assert_eq!(parse_device("4K0x1000:5"), Err(MmioWordError::MissingBase));
        assert_eq!(parse_device("4K@:5"), Err(MmioWordError::BadBase));
        assert_eq!(parse_device("4K@0x1000"), Err(MmioWordError::MissingIrq));
        assert_eq!(parse_device("4K@0x1000:"), Err(MmioWordError::BadIrq));
        assert_eq!(parse_device("4K@0x1000:x"), Err(MmioWordError::BadIrq));
        assert_eq!(parse_device("4K@0x1000:5x"), Err(MmioWordError::BadId));
        assert_eq!(parse_device("4K@0x1000:5:"), Err(MmioWordError::BadId));
        assert_eq!(parse_device("4K@0x1000:5:1:2"), Err(MmioWordError::BadId));
        assert_eq!(
            parse_device("16E@0x1000:5"),
            Err(MmioWordError::BadSize),
            "16 EiB overflows"
        );
        assert_eq!(
            parse_device("4K@0xfffffffffffff000:5"),
            Err(MmioWordError::PastTheEnd)
        );
    }

    #[test]
    fn only_virtio_mmio_words_are_taken() {
        let line = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 role=primary \
                    virtio_mmio.device=bad understudy.selftest=disk";
        let found: Vec<_> = words(line).collect();
        assert_eq!(
            found,
            [
                (
                    "virtio_mmio.device=4K@0xd0000000:5",
                    Ok(device(0xd000_0000, 4096, 5))
                ),
                ("virtio_mmio.device=bad", Err(MmioWordError::BadSize)),
            ]
        );
    }

    use crate::test_random::Lcg;

    #[test]
    fn written_words_parse_back_property() {
        for seed in 0..2000u64 {
            let mut random = Lcg(seed);
            let (suffix, shift) =
                [("", 0), ("K", 10), ("k", 10), ("M", 20), ("G", 30)][(random.next() % 5) as usize];
            let size_units = 1 + random.next() % 4096;
            let base = (random.next() << 12) & 0x000f_ffff_ffff_f000;
            let irq = (random.next() % 1024) as u32;
            let size_text = match random.next() % 3 {
                0 => format!("{size_units}{suffix}"),
                1 => format!("{size_units:#x}{suffix}"),
                _ => format!("0{size_units:o}{suffix}"),
            };
            let base_text = match random.next() % 3 {
                0 => format!("{base}"),
                1 => format!("{base:#x}"),
                _ => format!("0{base:o}"),
            };
            let id = match random.next() % 2 {
                0 => String::new(),
                _ => format!(":{}", random.next() % 100),
            };
            let text = format!("{size_text}@{base_text}:{irq}{id}");
            assert_eq!(
                parse_device(&text),
                Ok(device(base, size_units << shift, irq)),
                "seed {seed}: {text}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic_property() {
        for seed in 0..5000u64 {
            let mut random = Lcg(seed);
            let alphabet = b"0123456789abcdefxXKMGkmg@:- ";
            let text: String = (0..random.next() % 24)
                .map(|_| alphabet[(random.next() % alphabet.len() as u64) as usize] as char)
                .collect();
            if let Ok(device) = parse_device(&text) {
                assert!(!device.registers.is_empty(), "seed {seed}: {text}");
            }
        }
    }
}
