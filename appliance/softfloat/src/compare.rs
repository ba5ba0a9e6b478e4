//! Comparisons, min/max and classification (F extension, "Floating-Point Compare
//! Instructions", "Floating-Point Classify Instruction", and fmin/fmax in "Computational").

use crate::format::{exp_field, is_nan, is_signaling_nan, is_zero, sign_of, Format, FLAG_NV};

/// True when `a < b` for two non-NaN values, ordering -0 below +0 when `zero_signed`.
#[inline(always)]
fn less<F: Format>(a: u64, b: u64, zero_signed: bool) -> bool {
    let sign_a = sign_of::<F>(a);
    let sign_b = sign_of::<F>(b);
    if !zero_signed && is_zero::<F>(a) && is_zero::<F>(b) {
        return false;
    }
    if sign_a != sign_b {
        return sign_a;
    }
    // Same sign: the bit patterns order magnitudes, reversed for negative values.
    if sign_a {
        a > b
    } else {
        a < b
    }
}

/// `feq`: quiet comparison, so only a signaling NaN raises NV.
#[inline]
pub(crate) fn eq<F: Format>(a: u64, b: u64) -> (bool, u8) {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        let nv = is_signaling_nan::<F>(a) || is_signaling_nan::<F>(b);
        return (false, if nv { FLAG_NV } else { 0 });
    }
    (a == b || (is_zero::<F>(a) && is_zero::<F>(b)), 0)
}

/// `flt`: signaling comparison, so any NaN raises NV.
#[inline]
pub(crate) fn lt<F: Format>(a: u64, b: u64) -> (bool, u8) {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        return (false, FLAG_NV);
    }
    (less::<F>(a, b, false), 0)
}

/// `fle`: signaling comparison, so any NaN raises NV.
#[inline]
pub(crate) fn le<F: Format>(a: u64, b: u64) -> (bool, u8) {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        return (false, FLAG_NV);
    }
    (!less::<F>(b, a, false), 0)
}

/// `fmin` (`want_max` false) or `fmax` (true): IEEE 754-2019 minimumNumber/maximumNumber,
/// as required since version 2.2 of the F extension. A single NaN operand is ignored; two
/// NaNs give the canonical NaN; any signaling NaN raises NV; -0 orders below +0.
#[inline]
pub(crate) fn min_max<F: Format>(a: u64, b: u64, want_max: bool) -> (u64, u8) {
    let flags = if is_signaling_nan::<F>(a) || is_signaling_nan::<F>(b) {
        FLAG_NV
    } else {
        0
    };
    match (is_nan::<F>(a), is_nan::<F>(b)) {
        (true, true) => return (F::CANONICAL_NAN, flags),
        (true, false) => return (b, flags),
        (false, true) => return (a, flags),
        (false, false) => {}
    }
    let a_less = less::<F>(a, b, true);
    let result = if a_less != want_max { a } else { b };
    (result, flags)
}

/// `fclass` result bits (F extension, table "Format of result of FCLASS instruction").
pub(crate) mod class {
    pub const NEG_INFINITY: u32 = 1 << 0;
    pub const NEG_NORMAL: u32 = 1 << 1;
    pub const NEG_SUBNORMAL: u32 = 1 << 2;
    pub const NEG_ZERO: u32 = 1 << 3;
    pub const POS_ZERO: u32 = 1 << 4;
    pub const POS_SUBNORMAL: u32 = 1 << 5;
    pub const POS_NORMAL: u32 = 1 << 6;
    pub const POS_INFINITY: u32 = 1 << 7;
    pub const SIGNALING_NAN: u32 = 1 << 8;
    pub const QUIET_NAN: u32 = 1 << 9;
}

/// `fclass`: exactly one bit of the 10-bit mask.
#[inline]
pub(crate) fn classify<F: Format>(a: u64) -> u32 {
    let sign = sign_of::<F>(a);
    let exp = exp_field::<F>(a);
    let frac = a & F::FRAC_MASK;
    if exp == F::EXP_ALL_ONES {
        if frac == 0 {
            return if sign {
                class::NEG_INFINITY
            } else {
                class::POS_INFINITY
            };
        }
        return if frac & F::QUIET_BIT != 0 {
            class::QUIET_NAN
        } else {
            class::SIGNALING_NAN
        };
    }
    match (exp == 0, frac == 0, sign) {
        (true, true, true) => class::NEG_ZERO,
        (true, true, false) => class::POS_ZERO,
        (true, false, true) => class::NEG_SUBNORMAL,
        (true, false, false) => class::POS_SUBNORMAL,
        (false, _, true) => class::NEG_NORMAL,
        (false, _, false) => class::POS_NORMAL,
    }
}
