//! Conversions between formats and to/from integers (F extension, "Floating-Point
//! Conversion and Move Instructions"; D extension, "Double-Precision Floating-Point
//! Conversion and Move Instructions").

use crate::format::{
    is_inf, is_nan, is_zero, nan_result, normalize_round_pack, round_pack, sign_of, signed, unpack,
    Format, FLAG_NV, FLAG_NX, SIG_LEAD,
};
use crate::RoundingMode;

/// Float-to-integer conversion. `signed` and `width` (32 or 64) pick the destination type;
/// the result is returned zero-extended in a `u64` (two's complement for signed results).
///
/// Invalid inputs follow the RISC-V table "Domains of float-to-integer conversions and
/// behavior for invalid inputs": NaN and too-large positive values give the largest
/// integer, too-large negative values give the smallest; each sets NV and not NX.
#[inline]
pub(crate) fn to_int<F: Format>(x: u64, rm: RoundingMode, signed: bool, width: u32) -> (u64, u8) {
    let width_mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    let max_result = if signed { width_mask >> 1 } else { width_mask };
    let min_result = if signed { (width_mask >> 1) + 1 } else { 0 };
    if is_nan::<F>(x) {
        return (max_result, FLAG_NV);
    }
    let sign = sign_of::<F>(x);
    let saturated = if sign { min_result } else { max_result };
    if is_inf::<F>(x) {
        return (saturated, FLAG_NV);
    }
    if is_zero::<F>(x) {
        return (0, 0);
    }
    let (exp, sig) = unpack::<F>(x);
    // |x| = sig * 2^(exp - 62). Anything at or above 2^64 is out of range for every type.
    if exp >= 64 {
        return (saturated, FLAG_NV);
    }
    let (magnitude, inexact) = if exp >= SIG_LEAD as i32 {
        (sig << (exp - SIG_LEAD as i32), false)
    } else {
        let shift = (SIG_LEAD as i32 - exp) as u32;
        // Split into integer part and fraction; a fraction is compared against one half.
        let (integer, fraction, half) = if shift >= 64 {
            // |x| < 2^-1: below one half but nonzero.
            (0, 1, 2)
        } else {
            (sig >> shift, sig & ((1 << shift) - 1), 1 << (shift - 1))
        };
        let round_up = match rm {
            RoundingMode::NearestEven => fraction > half || (fraction == half && integer & 1 != 0),
            RoundingMode::NearestMaxMagnitude => fraction >= half,
            RoundingMode::TowardZero => false,
            RoundingMode::Down => sign && fraction != 0,
            RoundingMode::Up => !sign && fraction != 0,
        };
        (integer + round_up as u64, fraction != 0)
    };
    let in_range = if signed {
        if sign {
            magnitude <= min_result
        } else {
            magnitude <= max_result
        }
    } else {
        // A negative value that rounds to zero is valid (and inexact), e.g. -0.25 -> 0.
        if sign {
            magnitude == 0
        } else {
            magnitude <= max_result
        }
    };
    if !in_range {
        return (saturated, FLAG_NV);
    }
    let value = if sign {
        magnitude.wrapping_neg() & width_mask
    } else {
        magnitude
    };
    (value, if inexact { FLAG_NX } else { 0 })
}

/// Integer-to-float conversion of the value `(-1)^sign * magnitude`.
#[inline]
pub(crate) fn from_int<F: Format>(sign: bool, magnitude: u64, rm: RoundingMode) -> (u64, u8) {
    if magnitude == 0 {
        return (0, 0);
    }
    normalize_round_pack::<F>(sign, 0, magnitude, rm)
}

/// Conversion between formats (`fcvt.s.d`, `fcvt.d.s`). A NaN becomes the canonical NaN of
/// the destination, with NV for a signaling input.
#[inline]
pub(crate) fn float_to_float<From: Format, To: Format>(x: u64, rm: RoundingMode) -> (u64, u8) {
    let sign = sign_of::<From>(x);
    if is_nan::<From>(x) {
        let (_, flags) = nan_result::<From>(x, x);
        return (To::CANONICAL_NAN, flags);
    }
    if is_inf::<From>(x) {
        return (signed::<To>(sign, To::INFINITY), 0);
    }
    if is_zero::<From>(x) {
        return (signed::<To>(sign, 0), 0);
    }
    let (exp, sig) = unpack::<From>(x);
    round_pack::<To>(sign, exp, sig, rm)
}
