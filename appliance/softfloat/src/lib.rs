//! Bit-exact IEEE 754 binary32/binary64 arithmetic following the RISC-V F and D rules.
//!
//! Every operation takes raw bit patterns and returns the result bits together with the
//! exception flags a RISC-V hart accrues in `fflags` (unprivileged spec, chapter "F" standard
//! extension, section "Floating-Point Control and Status Register"). The implementation uses
//! only integer arithmetic, so results are identical on every host.
//!
//! RISC-V specifics honoured here (they differ from other IEEE 754 implementations):
//! - every NaN result is the canonical NaN (no payload propagation);
//! - tininess is detected after rounding, and underflow is raised only when the tiny result
//!   is also inexact;
//! - `min`/`max` follow IEEE 754-2019 minimumNumber/maximumNumber (F extension 2.2);
//! - float-to-integer conversions saturate and set NV on NaN and out-of-range inputs
//!   (table "Domains of float-to-integer conversions and behavior for invalid inputs").
//!
//! NaN-boxing of single-precision values in 64-bit registers is the hart's business: this
//! crate only sees the 32-bit pattern.
//!
//! Testing (in `src/tests/`): the host x86-64 SSE/FMA unit is a differential oracle for
//! every operation in RNE, RTZ, RDN and RUP, bits and flags; RMM, which SSE lacks, is checked
//! against wider host results and integer references; the RISC-V-only rules (fmin/fmax,
//! fclass, conversion saturation, canonical NaNs, FMA's infinity * 0 + qNaN) have
//! hand-written and model-based tests. `cargo test --release -- --ignored` adds an
//! exhaustive pass over every binary32 pattern. `examples/bench.rs` prints ns/op.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

mod arith;
mod compare;
mod convert;
mod format;

#[cfg(test)]
mod tests;

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

use format::{Binary32, Binary64};

/// A rounding mode, as encoded in the `rm` instruction field and `frm` CSR
/// (F extension, table "Rounding mode encoding").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundingMode {
    /// `RNE` (0b000): round to nearest, ties to even.
    NearestEven,
    /// `RTZ` (0b001): round towards zero.
    TowardZero,
    /// `RDN` (0b010): round down, towards negative infinity.
    Down,
    /// `RUP` (0b011): round up, towards positive infinity.
    Up,
    /// `RMM` (0b100): round to nearest, ties to max magnitude.
    NearestMaxMagnitude,
}

impl RoundingMode {
    /// Decodes a static `rm` field or the `frm` CSR value. Encodings 5 and 6 are reserved and
    /// 7 (`DYN`) must be resolved by the hart through `frm` first, so all three give `None`
    /// (the hart raises an illegal-instruction exception for them).
    pub fn from_rm(rm: u8) -> Option<Self> {
        match rm {
            0 => Some(Self::NearestEven),
            1 => Some(Self::TowardZero),
            2 => Some(Self::Down),
            3 => Some(Self::Up),
            4 => Some(Self::NearestMaxMagnitude),
            _ => None,
        }
    }

    /// The 3-bit encoding of this mode, the inverse of [`RoundingMode::from_rm`].
    pub fn to_rm(self) -> u8 {
        match self {
            Self::NearestEven => 0,
            Self::TowardZero => 1,
            Self::Down => 2,
            Self::Up => 3,
            Self::NearestMaxMagnitude => 4,
        }
    }
}

/// Accrued exception flags in the `fflags` CSR layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// No exception.
    pub const NONE: Flags = Flags(0);
    /// Invalid operation.
    pub const NV: Flags = Flags(0x10);
    /// Divide by zero.
    pub const DZ: Flags = Flags(0x08);
    /// Overflow.
    pub const OF: Flags = Flags(0x04);
    /// Underflow.
    pub const UF: Flags = Flags(0x02);
    /// Inexact.
    pub const NX: Flags = Flags(0x01);

    /// The raw `fflags` bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set in `self`.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Flags {
    /// Prints the set flags by their specification names, e.g. `NV|NX`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let names = [
            (0x10, "NV"),
            (0x08, "DZ"),
            (0x04, "OF"),
            (0x02, "UF"),
            (0x01, "NX"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// A binary32 value, held as its bit pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F32(pub u32);

/// A binary64 value, held as its bit pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F64(pub u64);

impl F32 {
    /// The canonical quiet NaN every NaN-producing single-precision operation returns
    /// (F extension, "NaN Generation and Propagation").
    pub const CANONICAL_NAN: F32 = F32(0x7fc0_0000);
}

impl F64 {
    /// The canonical quiet NaN every NaN-producing double-precision operation returns
    /// (D extension, "NaN Boxing of Narrower Values" refers back to the F rules).
    pub const CANONICAL_NAN: F64 = F64(0x7ff8_0000_0000_0000);
}

/// Generates the public operations of one format by delegating to the generic kernels,
/// which work on bit patterns widened to `u64`.
macro_rules! float_api {
    ($ty:ident, $bits:ty, $format:ty) => {
        impl $ty {
            /// Sum `self + b`, rounded once.
            #[inline]
            pub fn add(self, b: Self, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = arith::add::<$format>(self.0 as u64, b.0 as u64, false, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// Difference `self - b`, rounded once.
            #[inline]
            pub fn sub(self, b: Self, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = arith::add::<$format>(self.0 as u64, b.0 as u64, true, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// Product `self * b`, rounded once.
            #[inline]
            pub fn mul(self, b: Self, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = arith::mul::<$format>(self.0 as u64, b.0 as u64, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// Quotient `self / b`, rounded once.
            #[inline]
            pub fn div(self, b: Self, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = arith::div::<$format>(self.0 as u64, b.0 as u64, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// Square root, rounded once.
            #[inline]
            pub fn sqrt(self, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = arith::sqrt::<$format>(self.0 as u64, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// Fused multiply-add `self * b + c` with a single rounding. The negated forms
            /// (`fmsub`, `fnmsub`, `fnmadd`) are this with sign-flipped operands, which is
            /// exact in IEEE 754 (the hart flips sign bits; NaN results are canonical anyway).
            #[inline]
            pub fn mul_add(self, b: Self, c: Self, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = arith::mul_add::<$format>(self.0 as u64, b.0 as u64, c.0 as u64, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// `fmin`: IEEE 754-2019 minimumNumber with -0 < +0; NV for any signaling NaN
            /// input; canonical NaN only when both inputs are NaN.
            #[inline]
            pub fn min(self, b: Self) -> (Self, Flags) {
                let (r, f) = compare::min_max::<$format>(self.0 as u64, b.0 as u64, false);
                ($ty(r as $bits), Flags(f))
            }

            /// `fmax`: IEEE 754-2019 maximumNumber with -0 < +0; NV for any signaling NaN
            /// input; canonical NaN only when both inputs are NaN.
            #[inline]
            pub fn max(self, b: Self) -> (Self, Flags) {
                let (r, f) = compare::min_max::<$format>(self.0 as u64, b.0 as u64, true);
                ($ty(r as $bits), Flags(f))
            }

            /// `feq`: quiet equality; NV only for a signaling NaN input.
            #[inline]
            pub fn eq(self, b: Self) -> (bool, Flags) {
                let (r, f) = compare::eq::<$format>(self.0 as u64, b.0 as u64);
                (r, Flags(f))
            }

            /// `flt`: signaling less-than; NV for any NaN input.
            #[inline]
            pub fn lt(self, b: Self) -> (bool, Flags) {
                let (r, f) = compare::lt::<$format>(self.0 as u64, b.0 as u64);
                (r, Flags(f))
            }

            /// `fle`: signaling less-or-equal; NV for any NaN input.
            #[inline]
            pub fn le(self, b: Self) -> (bool, Flags) {
                let (r, f) = compare::le::<$format>(self.0 as u64, b.0 as u64);
                (r, Flags(f))
            }

            /// `fclass`: the 10-bit class mask (F extension, table "Format of result of
            /// FCLASS instruction"). Exactly one bit is set.
            #[inline]
            pub fn classify(self) -> u32 {
                compare::classify::<$format>(self.0 as u64)
            }

            /// True for any NaN, quiet or signaling.
            #[inline]
            pub fn is_nan(self) -> bool {
                format::is_nan::<$format>(self.0 as u64)
            }

            /// True for a signaling NaN (quiet bit clear, payload nonzero).
            #[inline]
            pub fn is_signaling_nan(self) -> bool {
                format::is_signaling_nan::<$format>(self.0 as u64)
            }

            /// `fcvt.w.*`: to a signed 32-bit integer, saturating (NaN gives `i32::MAX`).
            /// The hart sign-extends the result to XLEN.
            #[inline]
            pub fn to_i32(self, rm: RoundingMode) -> (i32, Flags) {
                let (r, f) = convert::to_int::<$format>(self.0 as u64, rm, true, 32);
                (r as u32 as i32, Flags(f))
            }

            /// `fcvt.wu.*`: to an unsigned 32-bit integer, saturating (NaN gives
            /// `u32::MAX`, negative values give 0). The hart sign-extends bit 31 to XLEN.
            #[inline]
            pub fn to_u32(self, rm: RoundingMode) -> (u32, Flags) {
                let (r, f) = convert::to_int::<$format>(self.0 as u64, rm, false, 32);
                (r as u32, Flags(f))
            }

            /// `fcvt.l.*`: to a signed 64-bit integer, saturating (NaN gives `i64::MAX`).
            #[inline]
            pub fn to_i64(self, rm: RoundingMode) -> (i64, Flags) {
                let (r, f) = convert::to_int::<$format>(self.0 as u64, rm, true, 64);
                (r as i64, Flags(f))
            }

            /// `fcvt.lu.*`: to an unsigned 64-bit integer, saturating (NaN gives `u64::MAX`,
            /// negative values give 0).
            #[inline]
            pub fn to_u64(self, rm: RoundingMode) -> (u64, Flags) {
                let (r, f) = convert::to_int::<$format>(self.0 as u64, rm, false, 64);
                (r, Flags(f))
            }

            /// `fcvt.*.w`: from a signed 32-bit integer.
            #[inline]
            pub fn from_i32(v: i32, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = convert::from_int::<$format>(v < 0, v.unsigned_abs() as u64, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// `fcvt.*.wu`: from an unsigned 32-bit integer.
            #[inline]
            pub fn from_u32(v: u32, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = convert::from_int::<$format>(false, v as u64, rm);
                ($ty(r as $bits), Flags(f))
            }

            /// `fcvt.*.l`: from a signed 64-bit integer.
            #[inline]
            pub fn from_i64(v: i64, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = convert::from_int::<$format>(v < 0, v.unsigned_abs(), rm);
                ($ty(r as $bits), Flags(f))
            }

            /// `fcvt.*.lu`: from an unsigned 64-bit integer.
            #[inline]
            pub fn from_u64(v: u64, rm: RoundingMode) -> (Self, Flags) {
                let (r, f) = convert::from_int::<$format>(false, v, rm);
                ($ty(r as $bits), Flags(f))
            }
        }
    };
}

float_api!(F32, u32, Binary32);
float_api!(F64, u64, Binary64);

impl F32 {
    /// `fcvt.d.s`: widening is exact; only a signaling NaN input raises a flag (NV).
    #[inline]
    pub fn to_f64(self) -> (F64, Flags) {
        let (r, f) =
            convert::float_to_float::<Binary32, Binary64>(self.0 as u64, RoundingMode::NearestEven);
        (F64(r), Flags(f))
    }
}

impl F64 {
    /// `fcvt.s.d`: narrowing, rounded per `rm`.
    #[inline]
    pub fn to_f32(self, rm: RoundingMode) -> (F32, Flags) {
        let (r, f) = convert::float_to_float::<Binary64, Binary32>(self.0, rm);
        (F32(r as u32), Flags(f))
    }
}
