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

/// Floor of the square root of `n`, for any `n` (compile-time table construction only).
const fn isqrt_const(n: u64) -> u64 {
    let mut root = 0u64;
    let mut bit = 1u64 << 31;
    while bit != 0 {
        let candidate = root | bit;
        if candidate * candidate <= n {
            root = candidate;
        }
        bit >>= 1;
    }
    root
}

/// Reciprocal square root seeds: entry `i - 32` is `2^14 / sqrt((i + 1/2) / 128)` for the
/// top seven bits `i` (32..128) of a value in `[1/4, 1)`, good to about 8 bits.
static RSQRT_SEED: [u16; 96] = {
    let mut table = [0u16; 96];
    let mut i = 0;
    while i < 96 {
        // 2^14 / sqrt((2 (i + 32) + 1) / 256) = sqrt(2^36 / (2 (i + 32) + 1)).
        table[i] = isqrt_const((1u64 << 36) / (2 * (i as u64 + 32) + 1)) as u16;
        i += 1;
    }
    table
};

/// Floor of the square root of `n`, for `n` in `[2^126, 2^128)`; the root is in
/// `[2^63, 2^64)`.
///
/// A reciprocal square root `r ~ 1/sqrt(t)` of the top 64 bits (`t` in `[1/4, 1)`) is
/// refined by three multiplication-only Newton steps, one residual step turns it into a
/// root estimate within a few units, and a final exact correction against `n` makes the
/// result exact whatever the approximation error was.
#[inline]
fn isqrt_u128(n: u128) -> u64 {
    debug_assert!(n >> 126 != 0);
    let a = (n >> 64) as u64;
    // r in fixed point with 62 fraction bits.
    let mut r = (RSQRT_SEED[(a >> 57) as usize - 32] as u64) << 48;
    for _ in 0..3 {
        // r' = r (3 - t r^2) / 2
        let t_r = ((a as u128 * r as u128) >> 64) as u64;
        let t_r2 = ((t_r as u128 * r as u128) >> 62) as u64;
        let factor = (3u64 << 62).wrapping_sub(t_r2);
        r = ((r as u128 * factor as u128) >> 63) as u64;
    }
    // sqrt(n) ~ sqrt(t) * 2^64 = t r * 2^64.
    let sqrt_t = ((a as u128 * r as u128) >> 64).min((1 << 62) - 1) as u64;
    let estimate = sqrt_t << 2;
    // One Newton step on the residual: q += (n - q^2) / (2 q), with 1/(2q) = r / 2^127.
    let residual = n.wrapping_sub(estimate as u128 * estimate as u128) as i128;
    let magnitude = residual.unsigned_abs();
    let mut q = if magnitude >> 96 == 0 {
        let step = ((((magnitude >> 32) as u64) as u128 * r as u128) >> 95) as u64;
        if residual >= 0 {
            estimate.saturating_add(step)
        } else {
            estimate - step.min(estimate)
        }
    } else {
        // Not reachable with the seed accuracy above; the slow path keeps the result exact.
        return isqrt_u128_newton(n);
    };
    // Exact correction to q = floor(sqrt(n)), i.e. q^2 <= n < (q + 1)^2. The estimate is
    // within a unit or two, so these loops run at most a couple of times.
    while q as u128 * q as u128 > n {
        q -= 1;
    }
    let mut remainder = n - q as u128 * q as u128;
    // (q + 1)^2 = q^2 + 2q + 1.
    while remainder > 2 * q as u128 {
        remainder -= 2 * q as u128 + 1;
        q += 1;
    }
    q
}

/// Reference integer square root by Newton's iteration from above (division based); used as
/// a fallback and to test [`isqrt_u128`].
fn isqrt_u128_newton(n: u128) -> u64 {
    let mut x: u128 = 1 << 64;
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

#[cfg(test)]
mod isqrt_tests {
    use super::*;

    #[test]
    fn fast_integer_square_root_matches_newton_reference() {
        let mut state = 0x0123_4567_89ab_cdefu64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut inputs = std::vec![1u128 << 126, u128::MAX, (1u128 << 127) - 1, 1u128 << 127];
        for root in [1u64 << 63, u64::MAX, (1 << 63) + 1, 0xb504_f333_f9de_6484] {
            let square = root as u128 * root as u128;
            inputs.extend([square, square - 1, square + 1]);
        }
        for _ in 0..200_000 {
            let n = ((next() as u128) << 64 | next() as u128) | 1 << 126;
            inputs.push(n);
            inputs.push(n >> 1 | 1 << 126);
        }
        for n in inputs {
            if n >> 126 == 0 {
                continue;
            }
            assert_eq!(isqrt_u128(n), isqrt_u128_newton(n), "n = {n:#x}");
        }
    }
}
