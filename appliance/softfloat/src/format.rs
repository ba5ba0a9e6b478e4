//! Format parameters, unpacking, and the single rounding/packing routine shared by all ops.
//!
//! Internal representation of a finite nonzero value: `(sign, exp, sig)` meaning
//! `(-1)^sign * sig * 2^(exp - 62)`, where `sig` is normalised so that its leading one is at
//! bit [`SIG_LEAD`] (62). `exp` is therefore the unbiased exponent of the leading bit. Bits below
//! the format's precision are rounding bits; bit 0 doubles as a sticky bit ("jamming"), so
//! any nonzero value shifted out is remembered. Bit 63 stays free for carries.

use crate::RoundingMode;

/// Bit position of the leading one of a normalised internal significand.
pub(crate) const SIG_LEAD: u32 = 62;

pub(crate) const FLAG_NV: u8 = 0x10;
pub(crate) const FLAG_DZ: u8 = 0x08;
pub(crate) const FLAG_OF: u8 = 0x04;
pub(crate) const FLAG_UF: u8 = 0x02;
pub(crate) const FLAG_NX: u8 = 0x01;

/// An IEEE 754 binary interchange format, described by its field widths. Values are carried
/// as bit patterns in the low bits of a `u64`.
pub(crate) trait Format {
    /// Trailing significand field width (23 or 52).
    const FRAC_BITS: u32;
    /// Biased exponent field width (8 or 11).
    const EXP_BITS: u32;

    const BIAS: i32 = (1 << (Self::EXP_BITS - 1)) - 1;
    const SIGN_SHIFT: u32 = Self::FRAC_BITS + Self::EXP_BITS;
    const SIGN_BIT: u64 = 1 << Self::SIGN_SHIFT;
    const FRAC_MASK: u64 = (1 << Self::FRAC_BITS) - 1;
    /// The all-ones biased exponent of infinities and NaNs.
    const EXP_ALL_ONES: u64 = (1 << Self::EXP_BITS) - 1;
    const QUIET_BIT: u64 = 1 << (Self::FRAC_BITS - 1);
    const INFINITY: u64 = Self::EXP_ALL_ONES << Self::FRAC_BITS;
    const CANONICAL_NAN: u64 = Self::INFINITY | Self::QUIET_BIT;
    /// Largest finite magnitude.
    const MAX_FINITE: u64 = Self::INFINITY - 1;
    /// Number of rounding bits below the precision in the internal significand.
    const ROUND_SHIFT: u32 = SIG_LEAD - Self::FRAC_BITS;
}

/// IEEE 754 binary32 (RISC-V F).
pub(crate) struct Binary32;
/// IEEE 754 binary64 (RISC-V D).
pub(crate) struct Binary64;

impl Format for Binary32 {
    const FRAC_BITS: u32 = 23;
    const EXP_BITS: u32 = 8;
}

impl Format for Binary64 {
    const FRAC_BITS: u32 = 52;
    const EXP_BITS: u32 = 11;
}

#[inline(always)]
pub(crate) fn sign_of<F: Format>(x: u64) -> bool {
    x & F::SIGN_BIT != 0
}

#[inline(always)]
pub(crate) fn exp_field<F: Format>(x: u64) -> u64 {
    (x >> F::FRAC_BITS) & F::EXP_ALL_ONES
}

#[inline(always)]
pub(crate) fn magnitude<F: Format>(x: u64) -> u64 {
    x & (F::SIGN_BIT - 1)
}

#[inline(always)]
pub(crate) fn is_nan<F: Format>(x: u64) -> bool {
    magnitude::<F>(x) > F::INFINITY
}

#[inline(always)]
pub(crate) fn is_signaling_nan<F: Format>(x: u64) -> bool {
    is_nan::<F>(x) && x & F::QUIET_BIT == 0
}

#[inline(always)]
pub(crate) fn is_inf<F: Format>(x: u64) -> bool {
    magnitude::<F>(x) == F::INFINITY
}

#[inline(always)]
pub(crate) fn is_zero<F: Format>(x: u64) -> bool {
    magnitude::<F>(x) == 0
}

/// True for infinities and NaNs (the all-ones exponent).
#[inline(always)]
pub(crate) fn is_special<F: Format>(x: u64) -> bool {
    exp_field::<F>(x) == F::EXP_ALL_ONES
}

/// A signed zero or infinity.
#[inline(always)]
pub(crate) fn signed<F: Format>(sign: bool, magnitude: u64) -> u64 {
    if sign {
        magnitude | F::SIGN_BIT
    } else {
        magnitude
    }
}

/// The invalid-operation result: canonical NaN and NV.
#[inline(always)]
pub(crate) fn invalid<F: Format>() -> (u64, u8) {
    (F::CANONICAL_NAN, FLAG_NV)
}

/// Result for operations with at least one NaN input: the canonical NaN, with NV when any
/// input is signaling (F extension, "NaN Generation and Propagation").
#[inline(always)]
pub(crate) fn nan_result<F: Format>(a: u64, b: u64) -> (u64, u8) {
    let nv = is_signaling_nan::<F>(a) || is_signaling_nan::<F>(b);
    (F::CANONICAL_NAN, if nv { FLAG_NV } else { 0 })
}

/// Unpacks a finite nonzero value into `(exp, sig)` with `sig`'s leading one at bit 62.
/// Subnormals are normalised, so `exp` may lie below the format's minimum exponent.
#[inline(always)]
pub(crate) fn unpack<F: Format>(x: u64) -> (i32, u64) {
    let e = exp_field::<F>(x);
    let frac = x & F::FRAC_MASK;
    if e == 0 {
        debug_assert!(frac != 0);
        let lz = frac.leading_zeros();
        // frac's leading one is at bit 63-lz; moving it to bit 62 scales by 2^(lz-1), and a
        // subnormal's value is frac * 2^(1 - BIAS - FRAC_BITS).
        let exp = 64 - F::BIAS - F::FRAC_BITS as i32 - lz as i32;
        (exp, frac << (lz - 1))
    } else {
        let sig = (frac | (1 << F::FRAC_BITS)) << F::ROUND_SHIFT;
        (e as i32 - F::BIAS, sig)
    }
}

/// Shifts right, ORing every bit shifted out into bit 0 (SoftFloat's "shift right and jam").
#[inline(always)]
pub(crate) fn shift_right_jam64(x: u64, n: u32) -> u64 {
    if n == 0 {
        x
    } else if n < 64 {
        (x >> n) | ((x << (64 - n) != 0) as u64)
    } else {
        (x != 0) as u64
    }
}

/// 128-bit form of [`shift_right_jam64`].
#[inline(always)]
pub(crate) fn shift_right_jam128(x: u128, n: u32) -> u128 {
    if n == 0 {
        x
    } else if n < 128 {
        (x >> n) | ((x << (128 - n) != 0) as u128)
    } else {
        (x != 0) as u128
    }
}

/// Rounds the value `(-1)^sign * sig * 2^(exp - 62)` to format `F` and packs it.
///
/// `sig` must have its leading one at bit 62 (bit 0 is sticky). Implements IEEE 754-2008
/// clause 4.3 rounding, clause 7.4 overflow (the result depends on the rounding direction),
/// and clause 7.5 underflow with tininess detected after rounding, which is what RISC-V
/// specifies ("The F extension ... detects tininess after rounding").
#[inline(always)]
pub(crate) fn round_pack<F: Format>(sign: bool, exp: i32, sig: u64, rm: RoundingMode) -> (u64, u8) {
    debug_assert!(sig >> SIG_LEAD == 1, "significand not normalised: {sig:#x}");
    let round_mask: u64 = (1 << F::ROUND_SHIFT) - 1;
    let half: u64 = 1 << (F::ROUND_SHIFT - 1);
    let increment = match rm {
        RoundingMode::NearestEven | RoundingMode::NearestMaxMagnitude => half,
        RoundingMode::TowardZero => 0,
        RoundingMode::Down => {
            if sign {
                round_mask
            } else {
                0
            }
        }
        RoundingMode::Up => {
            if sign {
                0
            } else {
                round_mask
            }
        }
    };
    let sign_bit = if sign { F::SIGN_BIT } else { 0 };
    let max_biased = F::EXP_ALL_ONES as i32 - 1;
    let mut biased = exp + F::BIAS;
    let mut sig = sig;
    let mut flags = 0;

    if biased >= max_biased && (biased > max_biased || sig + increment >= 1 << (SIG_LEAD + 1)) {
        // Overflow: infinity when rounding would move away from zero, otherwise the largest
        // finite magnitude (IEEE 754-2008 7.4).
        let magnitude = if increment == 0 {
            F::MAX_FINITE
        } else {
            F::INFINITY
        };
        return (sign_bit | magnitude, FLAG_OF | FLAG_NX);
    }

    if biased <= 0 {
        // Tiny after rounding: the result rounded to full precision with an unbounded
        // exponent would still be below 2^emin. Only the top binade (biased == 0) can round
        // up to 2^emin.
        let tiny = biased < 0 || sig + increment < 1 << (SIG_LEAD + 1);
        sig = shift_right_jam64(sig, (1 - biased) as u32);
        biased = 1;
        if tiny && sig & round_mask != 0 {
            flags |= FLAG_UF;
        }
    }

    let round_bits = sig & round_mask;
    if round_bits != 0 {
        flags |= FLAG_NX;
    }
    let mut rounded = (sig + increment) >> F::ROUND_SHIFT;
    if rm == RoundingMode::NearestEven && round_bits == half {
        rounded &= !1;
    }
    // `rounded` still carries the implicit bit, which adds 1 to the exponent field: hence
    // `biased - 1`. A carry out of the significand (or a subnormal rounding up to the
    // smallest normal) therefore lands in the exponent field by itself.
    let bits = (((biased - 1) as u64) << F::FRAC_BITS) + rounded;
    (sign_bit | bits, flags)
}

/// Normalises a nonzero `u64` magnitude whose value is `m * 2^(exp_of_bit0)` and rounds it.
#[inline(always)]
pub(crate) fn normalize_round_pack<F: Format>(
    sign: bool,
    exp_of_bit0: i32,
    m: u64,
    rm: RoundingMode,
) -> (u64, u8) {
    debug_assert!(m != 0);
    let lead = 63 - m.leading_zeros() as i32;
    let sig = if lead > SIG_LEAD as i32 {
        shift_right_jam64(m, (lead - SIG_LEAD as i32) as u32)
    } else {
        m << (SIG_LEAD as i32 - lead)
    };
    round_pack::<F>(sign, exp_of_bit0 + lead, sig, rm)
}

/// 128-bit form of [`normalize_round_pack`].
#[inline(always)]
pub(crate) fn normalize_round_pack128<F: Format>(
    sign: bool,
    exp_of_bit0: i32,
    m: u128,
    rm: RoundingMode,
) -> (u64, u8) {
    debug_assert!(m != 0);
    let lead = 127 - m.leading_zeros() as i32;
    let sig = if lead > SIG_LEAD as i32 {
        shift_right_jam128(m, (lead - SIG_LEAD as i32) as u32) as u64
    } else {
        (m as u64) << (SIG_LEAD as i32 - lead)
    };
    round_pack::<F>(sign, exp_of_bit0 + lead, sig, rm)
}
