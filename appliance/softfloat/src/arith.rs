//! The arithmetic kernels: add/sub, mul, div, sqrt and fused multiply-add (IEEE 754-2008 5.4.1).
//!
//! Each kernel resolves the special operands (NaN, infinity, zero) first, then computes an
//! exact or sticky-jammed significand and hands it to [`round_pack`] for the one rounding.

use crate::format::{
    invalid, is_inf, is_nan, is_special, is_zero, nan_result, normalize_round_pack,
    normalize_round_pack128, round_pack, shift_right_jam64, sign_of, signed, unpack, Format,
    FLAG_DZ, FLAG_NV, SIG_LEAD,
};
use crate::RoundingMode;

/// The sign of an exact zero sum of operands with opposite signs: +0 in every rounding
/// direction except roundTowardNegative (IEEE 754-2008 6.3).
#[inline(always)]
fn exact_zero_sign(rm: RoundingMode) -> bool {
    rm == RoundingMode::Down
}

/// `a + b`, or `a - b` when `negate_b`.
#[inline]
pub(crate) fn add<F: Format>(a: u64, b: u64, negate_b: bool, rm: RoundingMode) -> (u64, u8) {
    // Flipping the sign of a NaN is harmless: NaN results are canonical and signalling-ness
    // does not depend on the sign.
    let b = if negate_b { b ^ F::SIGN_BIT } else { b };
    if is_special::<F>(a) || is_special::<F>(b) {
        if is_nan::<F>(a) || is_nan::<F>(b) {
            return nan_result::<F>(a, b);
        }
        if is_inf::<F>(a) {
            if is_inf::<F>(b) && sign_of::<F>(a) != sign_of::<F>(b) {
                return invalid::<F>();
            }
            return (a, 0);
        }
        return (b, 0);
    }
    let sign_a = sign_of::<F>(a);
    let sign_b = sign_of::<F>(b);
    if is_zero::<F>(a) {
        if is_zero::<F>(b) {
            let sign = if sign_a == sign_b {
                sign_a
            } else {
                exact_zero_sign(rm)
            };
            return (signed::<F>(sign, 0), 0);
        }
        return (b, 0);
    }
    if is_zero::<F>(b) {
        return (a, 0);
    }
    let (exp_a, sig_a) = unpack::<F>(a);
    let (exp_b, sig_b) = unpack::<F>(b);
    if sign_a == sign_b {
        let (exp_hi, sig_hi, exp_lo, sig_lo) = if exp_a >= exp_b {
            (exp_a, sig_a, exp_b, sig_b)
        } else {
            (exp_b, sig_b, exp_a, sig_a)
        };
        let sum = sig_hi + shift_right_jam64(sig_lo, (exp_hi - exp_lo) as u32);
        if sum >> (SIG_LEAD + 1) != 0 {
            round_pack::<F>(sign_a, exp_hi + 1, shift_right_jam64(sum, 1), rm)
        } else {
            round_pack::<F>(sign_a, exp_hi, sum, rm)
        }
    } else {
        let a_is_larger = exp_a > exp_b || (exp_a == exp_b && sig_a >= sig_b);
        let (sign, exp_hi, sig_hi, exp_lo, sig_lo) = if a_is_larger {
            (sign_a, exp_a, sig_a, exp_b, sig_b)
        } else {
            (sign_b, exp_b, sig_b, exp_a, sig_a)
        };
        if exp_hi == exp_lo && sig_hi == sig_lo {
            return (signed::<F>(exact_zero_sign(rm), 0), 0);
        }
        // One extra low bit (bit 63 is free) keeps an exponent difference of 1 exact; for
        // larger differences at most one bit cancels, so the jammed sticky bit stays far
        // below the rounding position.
        let diff = (sig_hi << 1) - shift_right_jam64(sig_lo << 1, (exp_hi - exp_lo) as u32);
        normalize_round_pack::<F>(sign, exp_hi - SIG_LEAD as i32 - 1, diff, rm)
    }
}

/// `a * b`.
#[inline]
pub(crate) fn mul<F: Format>(a: u64, b: u64, rm: RoundingMode) -> (u64, u8) {
    let sign = sign_of::<F>(a) != sign_of::<F>(b);
    if is_special::<F>(a) || is_special::<F>(b) {
        if is_nan::<F>(a) || is_nan::<F>(b) {
            return nan_result::<F>(a, b);
        }
        // infinity * 0 is invalid (IEEE 754-2008 7.2 b).
        if is_zero::<F>(a) || is_zero::<F>(b) {
            return invalid::<F>();
        }
        return (signed::<F>(sign, F::INFINITY), 0);
    }
    if is_zero::<F>(a) || is_zero::<F>(b) {
        return (signed::<F>(sign, 0), 0);
    }
    let (exp_a, sig_a) = unpack::<F>(a);
    let (exp_b, sig_b) = unpack::<F>(b);
    // Both significands lie in [2^62, 2^63), so the product lies in [2^124, 2^126).
    let product = sig_a as u128 * sig_b as u128;
    let exp = exp_a + exp_b;
    if product >> 125 != 0 {
        let sig = (product >> 63) as u64 | ((product as u64) << 1 != 0) as u64;
        round_pack::<F>(sign, exp + 1, sig, rm)
    } else {
        let sig = (product >> 62) as u64 | ((product as u64) << 2 != 0) as u64;
        round_pack::<F>(sign, exp, sig, rm)
    }
}

/// `a / b`.
#[inline]
pub(crate) fn div<F: Format>(a: u64, b: u64, rm: RoundingMode) -> (u64, u8) {
    let sign = sign_of::<F>(a) != sign_of::<F>(b);
    if is_special::<F>(a) || is_special::<F>(b) {
        if is_nan::<F>(a) || is_nan::<F>(b) {
            return nan_result::<F>(a, b);
        }
        if is_inf::<F>(a) {
            if is_inf::<F>(b) {
                return invalid::<F>();
            }
            return (signed::<F>(sign, F::INFINITY), 0);
        }
        // finite / infinity
        return (signed::<F>(sign, 0), 0);
    }
    if is_zero::<F>(b) {
        if is_zero::<F>(a) {
            return invalid::<F>();
        }
        // IEEE 754-2008 7.3: a finite nonzero dividend over zero is an exact infinity.
        return (signed::<F>(sign, F::INFINITY), FLAG_DZ);
    }
    if is_zero::<F>(a) {
        return (signed::<F>(sign, 0), 0);
    }
    let (exp_a, sig_a) = unpack::<F>(a);
    let (exp_b, sig_b) = unpack::<F>(b);
    if F::FRAC_BITS <= 30 {
        // Narrow formats: a 64-bit division yields at least 40 quotient bits, enough for
        // 24-bit precision plus guard and sticky.
        let num = (sig_a >> F::ROUND_SHIFT) << 40;
        let den = sig_b >> F::ROUND_SHIFT;
        let quotient = num / den;
        let sticky = (quotient * den != num) as u64;
        return normalize_round_pack::<F>(sign, exp_a - exp_b - 40, quotient | sticky, rm);
    }
    // Scale the dividend so the quotient's leading one lands on bit 62.
    let (exp, num) = if sig_a >= sig_b {
        (exp_a - exp_b, (sig_a as u128) << SIG_LEAD)
    } else {
        (exp_a - exp_b - 1, (sig_a as u128) << (SIG_LEAD + 1))
    };
    let quotient = (num / sig_b as u128) as u64;
    let sticky = (quotient as u128 * sig_b as u128 != num) as u64;
    round_pack::<F>(sign, exp, quotient | sticky, rm)
}

/// Floor of the square root of `n`, for `n >= 2^62`.
#[inline]
fn isqrt_u64(n: u64) -> u64 {
    // Newton's iteration from above decreases monotonically to floor(sqrt(n)).
    let mut x: u64 = 1 << 32;
    loop {
        let y = (x + n / x) >> 1;
        if y >= x {
            return x;
        }
        x = y;
    }
}

/// Floor of the square root of `n`, for `n` in `[2^126, 2^128)`; the root is in
/// `[2^63, 2^64)`.
#[inline]
fn isqrt_u128(n: u128) -> u64 {
    let root_hi = isqrt_u64((n >> 64) as u64);
    // (root_hi + 1) * 2^32 is at least sqrt(n) and within a relative 2^-31 of it, so Newton's
    // iteration from above needs one or two steps.
    let mut x: u128 = (root_hi as u128 + 1) << 32;
    loop {
        let y = (x + n / x) >> 1;
        if y >= x {
            return x as u64;
        }
        x = y;
    }
}

/// `sqrt(a)`.
#[inline]
pub(crate) fn sqrt<F: Format>(a: u64, rm: RoundingMode) -> (u64, u8) {
    if is_nan::<F>(a) {
        return nan_result::<F>(a, a);
    }
    let sign = sign_of::<F>(a);
    if is_zero::<F>(a) {
        // IEEE 754-2008 5.4.1: sqrt(-0) = -0.
        return (a, 0);
    }
    if sign {
        return invalid::<F>();
    }
    if is_inf::<F>(a) {
        return (a, 0);
    }
    let (exp, sig) = unpack::<F>(a);
    // With exp = 2h + odd: sqrt(sig * 2^(exp-62)) = sqrt(sig << (64+odd)) * 2^(h-63).
    let odd = (exp & 1) as u32;
    let half_exp = (exp - odd as i32) >> 1;
    let n = (sig as u128) << (64 + odd);
    let root = isqrt_u128(n);
    let exact = root as u128 * root as u128 == n;
    // root's leading one is at bit 63; move it to bit 62, keeping the lost bit as sticky.
    let sig = (root >> 1) | (root & 1) | (!exact as u64);
    round_pack::<F>(false, half_exp, sig, rm)
}

/// `a * b + c` with a single rounding (IEEE 754-2008 5.4.1 fusedMultiplyAdd).
#[inline]
pub(crate) fn mul_add<F: Format>(a: u64, b: u64, c: u64, rm: RoundingMode) -> (u64, u8) {
    let sign_product = sign_of::<F>(a) != sign_of::<F>(b);
    let sign_c = sign_of::<F>(c);
    let inf_times_zero = (is_inf::<F>(a) && is_zero::<F>(b)) || (is_zero::<F>(a) && is_inf::<F>(b));
    if is_special::<F>(a) || is_special::<F>(b) || is_special::<F>(c) {
        if is_nan::<F>(a) || is_nan::<F>(b) || is_nan::<F>(c) {
            // RISC-V F extension, "Single-Precision Floating-Point Computational
            // Instructions": FMA raises NV for infinity * 0 even when the addend is a quiet
            // NaN.
            let (nan, flags) = nan_result::<F>(a, b);
            let (_, flags_c) = nan_result::<F>(c, c);
            let nv = if inf_times_zero { FLAG_NV } else { 0 };
            return (nan, flags | flags_c | nv);
        }
        if inf_times_zero {
            return invalid::<F>();
        }
        if is_inf::<F>(a) || is_inf::<F>(b) {
            if is_inf::<F>(c) && sign_c != sign_product {
                return invalid::<F>();
            }
            return (signed::<F>(sign_product, F::INFINITY), 0);
        }
        // Finite product plus infinite addend.
        return (c, 0);
    }
    if is_zero::<F>(a) || is_zero::<F>(b) {
        if is_zero::<F>(c) {
            let sign = if sign_product == sign_c {
                sign_c
            } else {
                exact_zero_sign(rm)
            };
            return (signed::<F>(sign, 0), 0);
        }
        return (c, 0);
    }
    let (exp_a, sig_a) = unpack::<F>(a);
    let (exp_b, sig_b) = unpack::<F>(b);
    // Exact product in [2^124, 2^126), value product * 2^(exp_product - 124).
    let product = sig_a as u128 * sig_b as u128;
    let exp_product = exp_a + exp_b;
    if is_zero::<F>(c) {
        // x + (+-0) = x for nonzero x: round the exact product.
        return normalize_round_pack128::<F>(sign_product, exp_product - 124, product, rm);
    }
    let (exp_c, sig_c) = unpack::<F>(c);
    // The addend on the same scale: leading one at bit 124, value addend * 2^(exp_c - 124).
    let addend = (sig_c as u128) << SIG_LEAD;
    // Align to the larger scale; the other operand is shifted right with jamming. Both
    // operands carry at least 20 trailing zero bits (the product) or 62 (the addend), so
    // small shifts are exact, and a shift that loses bits implies at most one bit of
    // cancellation, so the sticky bit stays far below the rounding position.
    let (exp, product, addend) = if exp_product >= exp_c {
        let shift = (exp_product - exp_c) as u32;
        (
            exp_product,
            product,
            crate::format::shift_right_jam128(addend, shift),
        )
    } else {
        let shift = (exp_c - exp_product) as u32;
        (
            exp_c,
            crate::format::shift_right_jam128(product, shift),
            addend,
        )
    };
    let (sign, magnitude) = if sign_product == sign_c {
        (sign_c, product + addend)
    } else if product > addend {
        (sign_product, product - addend)
    } else if addend > product {
        (sign_c, addend - product)
    } else {
        return (signed::<F>(exact_zero_sign(rm), 0), 0);
    };
    normalize_round_pack128::<F>(sign, exp - 124, magnitude, rm)
}
