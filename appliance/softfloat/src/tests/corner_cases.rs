//! Hand-written corner cases from the RISC-V F/D chapters and IEEE 754, covering what the
//! host oracle cannot: RMM, fmin/fmax, fclass, RISC-V conversion saturation and NaN rules.

use crate::{Flags, RoundingMode, F32, F64};

const RNE: RoundingMode = RoundingMode::NearestEven;
const RTZ: RoundingMode = RoundingMode::TowardZero;
const RDN: RoundingMode = RoundingMode::Down;
const RUP: RoundingMode = RoundingMode::Up;
const RMM: RoundingMode = RoundingMode::NearestMaxMagnitude;
const ALL_MODES: [RoundingMode; 5] = [RNE, RTZ, RDN, RUP, RMM];

const NONE: Flags = Flags::NONE;
const NV: Flags = Flags::NV;
const DZ: Flags = Flags::DZ;
const NX: Flags = Flags::NX;
const OF_NX: Flags = Flags(0x05);
const UF_NX: Flags = Flags(0x03);

/// A quiet NaN with a nonzero payload and the sign set: never the canonical NaN.
const QNAN64: F64 = F64(0xfff8_0000_dead_beef);
const SNAN64: F64 = F64(0x7ff0_0000_0000_0001);
const QNAN32: F32 = F32(0xffc0_beef);
const SNAN32: F32 = F32(0x7f80_0001);
const NAN64: F64 = F64::CANONICAL_NAN;
const NAN32: F32 = F32::CANONICAL_NAN;

fn d(x: f64) -> F64 {
    F64(x.to_bits())
}

fn s(x: f32) -> F32 {
    F32(x.to_bits())
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

#[test]
fn rounding_mode_decodes_the_spec_encoding() {
    for (rm, mode) in ALL_MODES.iter().enumerate() {
        assert_eq!(RoundingMode::from_rm(rm as u8), Some(*mode));
        assert_eq!(mode.to_rm(), rm as u8);
    }
    // 5 and 6 are reserved; 7 is DYN and must be resolved through frm by the hart.
    for rm in 5..=255u8 {
        assert_eq!(RoundingMode::from_rm(rm), None);
    }
}

#[test]
fn flags_use_the_fflags_layout() {
    assert_eq!(
        (NV.0, DZ.0, Flags::OF.0, Flags::UF.0, NX.0),
        (0x10, 0x08, 0x04, 0x02, 0x01)
    );
    assert_eq!(NV | NX, Flags(0x11));
    assert!(Flags(0x11).contains(NX) && !Flags(0x11).contains(DZ));
    assert_eq!(std::format!("{}", Flags(0x1f)), "NV|DZ|OF|UF|NX");
    assert_eq!(std::format!("{}", NONE), "-");
}

#[test]
fn simple_arithmetic_is_exact() {
    assert_eq!(d(1.5).add(d(2.25), RNE), (d(3.75), NONE));
    assert_eq!(d(1.5).sub(d(2.25), RNE), (d(-0.75), NONE));
    assert_eq!(d(1.5).mul(d(-2.0), RNE), (d(-3.0), NONE));
    assert_eq!(d(3.0).div(d(2.0), RNE), (d(1.5), NONE));
    assert_eq!(d(9.0).sqrt(RNE), (d(3.0), NONE));
    assert_eq!(d(2.0).mul_add(d(3.0), d(1.0), RNE), (d(7.0), NONE));
    assert_eq!(s(1.5).add(s(2.25), RNE), (s(3.75), NONE));
    assert_eq!(s(1.5).mul(s(-2.0), RNE), (s(-3.0), NONE));
    assert_eq!(s(3.0).div(s(2.0), RNE), (s(1.5), NONE));
    assert_eq!(s(9.0).sqrt(RNE), (s(3.0), NONE));
    assert_eq!(d(1.0).div(d(3.0), RNE), (d(1.0 / 3.0), NX));
    assert_eq!(s(1.0).div(s(3.0), RNE), (s(1.0 / 3.0), NX));
}

#[test]
fn rmm_rounds_exact_ties_away_from_zero() {
    let ulp = pow2(-52);
    // 1 + ulp/2 lies halfway between 1 (even) and 1 + ulp (odd).
    assert_eq!(d(1.0).add(d(ulp / 2.0), RNE), (d(1.0), NX));
    assert_eq!(d(1.0).add(d(ulp / 2.0), RMM), (d(1.0 + ulp), NX));
    assert_eq!(d(-1.0).sub(d(ulp / 2.0), RMM), (d(-1.0 - ulp), NX));
    // 1 + 1.5 ulp: both nearest modes pick 1 + 2 ulp (even and away agree).
    assert_eq!(d(1.0).add(d(1.5 * ulp), RNE), (d(1.0 + 2.0 * ulp), NX));
    assert_eq!(d(1.0).add(d(1.5 * ulp), RMM), (d(1.0 + 2.0 * ulp), NX));
    // Not a tie: RMM rounds to nearest like RNE.
    assert_eq!(d(1.0).add(d(0.25 * ulp), RMM), (d(1.0), NX));
    assert_eq!(d(1.0).add(d(0.75 * ulp), RMM), (d(1.0 + ulp), NX));
    // Single precision: (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24, halfway at 24 bits.
    let x = 1.0 + 2f32.powi(-12);
    assert_eq!(s(x).mul(s(x), RNE), (s(1.0 + 2f32.powi(-11)), NX));
    assert_eq!(
        s(x).mul(s(x), RMM),
        (s(1.0 + 2f32.powi(-11) + 2f32.powi(-23)), NX)
    );
    // Fused multiply-add: 1*1 + 2^-53 is the same tie.
    assert_eq!(
        d(1.0).mul_add(d(1.0), d(ulp / 2.0), RMM),
        (d(1.0 + ulp), NX)
    );
    // Integer to float: 2^53 + 1 and 2^24 + 1 are ties.
    assert_eq!(F64::from_u64((1 << 53) + 1, RNE), (d(pow2(53)), NX));
    assert_eq!(F64::from_u64((1 << 53) + 1, RMM), (d(pow2(53) + 2.0), NX));
    assert_eq!(F64::from_i64(-(1 << 53) - 1, RMM), (d(-pow2(53) - 2.0), NX));
    assert_eq!(F32::from_u32((1 << 24) + 1, RMM), (s(16_777_218.0), NX));
    assert_eq!(F32::from_i32(-(1 << 24) - 1, RNE), (s(-16_777_216.0), NX));
    // Narrowing: 1 + 2^-24 is halfway between two singles.
    assert_eq!(d(1.0 + pow2(-24)).to_f32(RNE), (s(1.0), NX));
    assert_eq!(
        d(1.0 + pow2(-24)).to_f32(RMM),
        (s(1.0 + 2f32.powi(-23)), NX)
    );
    // In the subnormal range: half of the smallest subnormal rounds away to it under RMM
    // and to zero (even) under RNE; both are tiny and inexact.
    let smallest = F64(1);
    assert_eq!(smallest.mul(d(0.5), RNE), (F64(0), UF_NX));
    assert_eq!(smallest.mul(d(0.5), RMM), (F64(1), UF_NX));
    assert_eq!(
        F64(0x8000_0000_0000_0001).mul(d(0.5), RMM),
        (F64(0x8000_0000_0000_0001), UF_NX)
    );
    // Overflow goes to infinity like RNE.
    assert_eq!(d(f64::MAX).mul(d(2.0), RMM), (d(f64::INFINITY), OF_NX));
    assert_eq!(s(-f32::MAX).mul(s(2.0), RMM), (s(f32::NEG_INFINITY), OF_NX));
}

#[test]
fn rmm_float_to_integer_rounds_halves_away_from_zero() {
    let cases = [
        (0.5, 1, 0),
        (1.5, 2, 2),
        (2.5, 3, 2),
        (-0.5, -1, 0),
        (-2.5, -3, -2),
        (0.49, 0, 0),
    ];
    for (x, rmm, rne) in cases {
        assert_eq!(d(x).to_i64(RMM), (rmm, NX), "{x} RMM");
        assert_eq!(d(x).to_i64(RNE), (rne, NX), "{x} RNE");
        assert_eq!(s(x as f32).to_i32(RMM), (rmm as i32, NX), "{x} RMM single");
    }
    // -2^31 - 0.5 is in range for RNE (ties to the even -2^31) but not for RMM.
    assert_eq!(d(-2_147_483_648.5).to_i32(RNE), (i32::MIN, NX));
    assert_eq!(d(-2_147_483_648.5).to_i32(RMM), (i32::MIN, NV));
}

/// RISC-V F extension, table "Domains of float-to-integer conversions and behavior for
/// invalid inputs".
#[test]
fn float_to_integer_saturates_per_the_riscv_table() {
    let big = d(1e30);
    let tiny_negative = d(-1e30);
    let inf = d(f64::INFINITY);
    let neg_inf = d(f64::NEG_INFINITY);
    for nan in [NAN64, QNAN64, SNAN64] {
        assert_eq!(nan.to_i32(RNE), (i32::MAX, NV));
        assert_eq!(nan.to_u32(RNE), (u32::MAX, NV));
        assert_eq!(nan.to_i64(RNE), (i64::MAX, NV));
        assert_eq!(nan.to_u64(RNE), (u64::MAX, NV));
    }
    for nan in [NAN32, QNAN32, SNAN32] {
        assert_eq!(nan.to_i32(RTZ), (i32::MAX, NV));
        assert_eq!(nan.to_u32(RTZ), (u32::MAX, NV));
        assert_eq!(nan.to_i64(RTZ), (i64::MAX, NV));
        assert_eq!(nan.to_u64(RTZ), (u64::MAX, NV));
    }
    for (above, below) in [(big, tiny_negative), (inf, neg_inf)] {
        assert_eq!(above.to_i32(RNE), (i32::MAX, NV));
        assert_eq!(below.to_i32(RNE), (i32::MIN, NV));
        assert_eq!(above.to_u32(RNE), (u32::MAX, NV));
        assert_eq!(below.to_u32(RNE), (0, NV));
        assert_eq!(above.to_i64(RNE), (i64::MAX, NV));
        assert_eq!(below.to_i64(RNE), (i64::MIN, NV));
        assert_eq!(above.to_u64(RNE), (u64::MAX, NV));
        assert_eq!(below.to_u64(RNE), (0, NV));
    }
    // The range limits themselves are valid and exact.
    assert_eq!(d(2_147_483_647.0).to_i32(RNE), (i32::MAX, NONE));
    assert_eq!(d(-2_147_483_648.0).to_i32(RNE), (i32::MIN, NONE));
    assert_eq!(d(4_294_967_295.0).to_u32(RNE), (u32::MAX, NONE));
    assert_eq!(d(-pow2(63)).to_i64(RNE), (i64::MIN, NONE));
    assert_eq!(d(pow2(64) - 2048.0).to_u64(RNE), (u64::MAX - 2047, NONE));
    assert_eq!(d(pow2(63)).to_i64(RNE), (i64::MAX, NV));
    assert_eq!(d(pow2(64)).to_u64(RNE), (u64::MAX, NV));
    assert_eq!(d(2_147_483_648.0).to_i32(RNE), (i32::MAX, NV));
    assert_eq!(d(4_294_967_296.0).to_u32(RNE), (u32::MAX, NV));
    // Out of range only after rounding: NV, not NX.
    assert_eq!(d(2_147_483_647.5).to_i32(RTZ), (i32::MAX, NX));
    assert_eq!(d(2_147_483_647.5).to_i32(RNE), (i32::MAX, NV));
    assert_eq!(d(4_294_967_295.5).to_u32(RUP), (u32::MAX, NV));
    assert_eq!(d(4_294_967_295.5).to_u32(RDN), (u32::MAX, NX));
    // A negative value that rounds to zero is a valid unsigned conversion, merely inexact;
    // one that rounds to -1 is invalid.
    assert_eq!(d(-0.9).to_u32(RTZ), (0, NX));
    assert_eq!(d(-0.9).to_u64(RUP), (0, NX));
    assert_eq!(d(-0.9).to_u32(RNE), (0, NV));
    assert_eq!(d(-0.4).to_u64(RNE), (0, NX));
    assert_eq!(d(-0.0).to_u64(RNE), (0, NONE));
    assert_eq!(s(-1.0).to_u32(RTZ), (0, NV));
    // Subnormals round to 0 or +-1 depending on the direction.
    let subnormal = F64(1);
    assert_eq!(subnormal.to_i64(RUP), (1, NX));
    assert_eq!(subnormal.to_i64(RDN), (0, NX));
    assert_eq!(F64(0x8000_0000_0000_0001).to_i64(RDN), (-1, NX));
    assert_eq!(F64(0x8000_0000_0000_0001).to_u64(RDN), (0, NV));
}

#[test]
fn integer_to_float_covers_extremes() {
    assert_eq!(F64::from_i64(i64::MIN, RNE), (d(-pow2(63)), NONE));
    assert_eq!(F64::from_u64(u64::MAX, RNE), (d(pow2(64)), NX));
    assert_eq!(F64::from_u64(u64::MAX, RTZ), (d(pow2(64) - 2048.0), NX));
    assert_eq!(F32::from_u64(u64::MAX, RUP), (s(2f32.powi(64)), NX));
    assert_eq!(F32::from_i32(i32::MIN, RNE), (s(-2f32.powi(31)), NONE));
    assert_eq!(F32::from_i32(i32::MAX, RDN), (s(2_147_483_520.0), NX));
    assert_eq!(F64::from_i32(i32::MIN, RNE), (d(-pow2(31)), NONE));
    assert_eq!(F64::from_u32(u32::MAX, RNE), (d(4_294_967_295.0), NONE));
    assert_eq!(
        F32::from_i64(0, RDN),
        (F32(0), NONE),
        "zero converts to +0 in every mode"
    );
}

#[test]
fn fmin_fmax_follow_minimum_number_with_signed_zeros() {
    let (pz, nz) = (d(0.0), d(-0.0));
    assert_eq!(pz.min(nz), (nz, NONE));
    assert_eq!(nz.min(pz), (nz, NONE));
    assert_eq!(pz.max(nz), (pz, NONE));
    assert_eq!(nz.max(pz), (pz, NONE));
    assert_eq!(d(-3.0).min(d(2.0)), (d(-3.0), NONE));
    assert_eq!(d(-3.0).max(d(-4.0)), (d(-3.0), NONE));
    assert_eq!(d(f64::NEG_INFINITY).max(d(-1e300)), (d(-1e300), NONE));
    // One NaN operand: the other operand; NV only for a signaling NaN.
    assert_eq!(QNAN64.min(d(1.0)), (d(1.0), NONE));
    assert_eq!(d(1.0).max(QNAN64), (d(1.0), NONE));
    assert_eq!(SNAN64.max(d(1.0)), (d(1.0), NV));
    assert_eq!(d(-0.0).min(SNAN64), (d(-0.0), NV));
    // Both NaN: the canonical NaN, never an input payload.
    assert_eq!(QNAN64.min(QNAN64), (NAN64, NONE));
    assert_eq!(QNAN64.max(SNAN64), (NAN64, NV));
    assert_eq!(s(0.0).min(s(-0.0)), (s(-0.0), NONE));
    assert_eq!(QNAN32.max(s(-7.5)), (s(-7.5), NONE));
    assert_eq!(SNAN32.min(QNAN32), (NAN32, NV));
    assert_eq!(
        s(1.0).min(F32(1)),
        (F32(1), NONE),
        "subnormals order normally"
    );
}

#[test]
fn comparisons_are_quiet_for_feq_and_signaling_for_flt_fle() {
    assert_eq!(d(0.0).eq(d(-0.0)), (true, NONE));
    assert_eq!(d(-0.0).lt(d(0.0)), (false, NONE));
    assert_eq!(d(-0.0).le(d(0.0)), (true, NONE));
    assert_eq!(d(0.0).le(d(-0.0)), (true, NONE));
    assert_eq!(d(-2.0).lt(d(-1.0)), (true, NONE));
    assert_eq!(d(-1.0).lt(d(-2.0)), (false, NONE));
    assert_eq!(d(f64::NEG_INFINITY).lt(d(f64::INFINITY)), (true, NONE));
    assert_eq!(QNAN64.eq(QNAN64), (false, NONE));
    assert_eq!(SNAN64.eq(d(1.0)), (false, NV));
    assert_eq!(d(1.0).lt(QNAN64), (false, NV));
    assert_eq!(QNAN64.le(d(1.0)), (false, NV));
    assert_eq!(s(-0.0).eq(s(0.0)), (true, NONE));
    assert_eq!(QNAN32.eq(s(1.0)), (false, NONE));
    assert_eq!(SNAN32.eq(s(1.0)), (false, NV));
    assert_eq!(s(1.0).le(QNAN32), (false, NV));
    assert_eq!(F32(1).lt(F32(2)), (true, NONE));
}

/// F extension, table "Format of result of FCLASS instruction".
#[test]
fn fclass_sets_exactly_the_spec_bit() {
    let cases64 = [
        (d(f64::NEG_INFINITY), 0),
        (d(-1.0), 1),
        (F64(0x800f_ffff_ffff_ffff), 2),
        (d(-0.0), 3),
        (d(0.0), 4),
        (F64(1), 5),
        (d(f64::MAX), 6),
        (d(f64::INFINITY), 7),
        (SNAN64, 8),
        (NAN64, 9),
        (QNAN64, 9),
    ];
    for (x, bit) in cases64 {
        assert_eq!(x.classify(), 1 << bit, "{x:?}");
    }
    let cases32 = [
        (s(f32::NEG_INFINITY), 0),
        (s(-1.0), 1),
        (F32(0x807f_ffff), 2),
        (s(-0.0), 3),
        (s(0.0), 4),
        (F32(1), 5),
        (s(f32::MIN_POSITIVE), 6),
        (s(f32::INFINITY), 7),
        (SNAN32, 8),
        (F32(0xff80_0001), 8),
        (NAN32, 9),
        (QNAN32, 9),
    ];
    for (x, bit) in cases32 {
        assert_eq!(x.classify(), 1 << bit, "{x:?}");
    }
}

#[test]
fn every_nan_result_is_canonical_without_payload_propagation() {
    for rm in ALL_MODES {
        assert_eq!(QNAN64.add(d(1.0), rm), (NAN64, NONE));
        assert_eq!(d(1.0).sub(SNAN64, rm), (NAN64, NV));
        assert_eq!(QNAN64.mul(QNAN64, rm), (NAN64, NONE));
        assert_eq!(
            QNAN64.div(d(0.0), rm),
            (NAN64, NONE),
            "no DZ when the dividend is NaN"
        );
        assert_eq!(QNAN64.sqrt(rm), (NAN64, NONE));
        assert_eq!(SNAN64.sqrt(rm), (NAN64, NV));
        assert_eq!(d(1.0).mul_add(d(1.0), QNAN64, rm), (NAN64, NONE));
        assert_eq!(QNAN32.add(s(1.0), rm), (NAN32, NONE));
        assert_eq!(SNAN32.mul(s(2.0), rm), (NAN32, NV));
        assert_eq!(QNAN64.to_f32(rm), (NAN32, NONE));
        assert_eq!(SNAN64.to_f32(rm), (NAN32, NV));
    }
    assert_eq!(QNAN32.to_f64(), (NAN64, NONE));
    assert_eq!(SNAN32.to_f64(), (NAN64, NV));
}

#[test]
fn invalid_operations_give_canonical_nan_and_nv() {
    let inf = d(f64::INFINITY);
    let neg_inf = d(f64::NEG_INFINITY);
    assert_eq!(inf.add(neg_inf, RNE), (NAN64, NV));
    assert_eq!(inf.sub(inf, RNE), (NAN64, NV));
    assert_eq!(inf.mul(d(0.0), RNE), (NAN64, NV));
    assert_eq!(d(-0.0).mul(neg_inf, RNE), (NAN64, NV));
    assert_eq!(d(0.0).div(d(-0.0), RNE), (NAN64, NV));
    assert_eq!(inf.div(neg_inf, RNE), (NAN64, NV));
    assert_eq!(d(-1.0).sqrt(RNE), (NAN64, NV));
    assert_eq!(neg_inf.sqrt(RNE), (NAN64, NV));
    assert_eq!(F64(0x8000_0000_0000_0001).sqrt(RNE), (NAN64, NV));
    assert_eq!(inf.mul_add(d(0.0), d(1.0), RNE), (NAN64, NV));
    assert_eq!(inf.mul_add(d(1.0), neg_inf, RNE), (NAN64, NV));
    assert_eq!(
        s(f32::INFINITY).mul_add(s(-1.0), s(f32::INFINITY), RNE),
        (NAN32, NV)
    );
}

/// RISC-V F extension, "Single-Precision Floating-Point Computational Instructions": the
/// fused multiply-add raises NV for infinity times zero even when the addend is a quiet NaN.
#[test]
fn fma_of_infinity_times_zero_plus_quiet_nan_raises_nv() {
    assert_eq!(d(f64::INFINITY).mul_add(d(0.0), QNAN64, RNE), (NAN64, NV));
    assert_eq!(d(-0.0).mul_add(d(f64::INFINITY), NAN64, RNE), (NAN64, NV));
    assert_eq!(
        s(0.0).mul_add(s(f32::NEG_INFINITY), QNAN32, RNE),
        (NAN32, NV)
    );
    assert_eq!(d(2.0).mul_add(d(0.0), QNAN64, RNE), (NAN64, NONE));
}

#[test]
fn division_by_zero_gives_signed_infinity_and_dz() {
    assert_eq!(d(1.0).div(d(0.0), RNE), (d(f64::INFINITY), DZ));
    assert_eq!(d(-1.0).div(d(0.0), RTZ), (d(f64::NEG_INFINITY), DZ));
    assert_eq!(d(1.0).div(d(-0.0), RNE), (d(f64::NEG_INFINITY), DZ));
    assert_eq!(F64(1).div(d(0.0), RNE), (d(f64::INFINITY), DZ));
    assert_eq!(s(3.0).div(s(-0.0), RUP), (s(f32::NEG_INFINITY), DZ));
    assert_eq!(d(f64::INFINITY).div(d(0.0), RNE), (d(f64::INFINITY), NONE));
    assert_eq!(d(1.0).div(d(f64::NEG_INFINITY), RNE), (d(-0.0), NONE));
}

#[test]
fn exact_zero_results_take_the_sign_ieee_754_prescribes() {
    for rm in ALL_MODES {
        let zero = if rm == RDN { d(-0.0) } else { d(0.0) };
        assert_eq!(d(1.5).sub(d(1.5), rm), (zero, NONE), "{rm:?}");
        assert_eq!(d(-1.5).add(d(1.5), rm), (zero, NONE), "{rm:?}");
        assert_eq!(d(0.0).add(d(-0.0), rm), (zero, NONE), "{rm:?}");
        assert_eq!(d(1.0).mul_add(d(1.0), d(-1.0), rm), (zero, NONE), "{rm:?}");
        assert_eq!(d(0.0).mul_add(d(1.0), d(-0.0), rm), (zero, NONE), "{rm:?}");
        assert_eq!(d(-0.0).add(d(-0.0), rm), (d(-0.0), NONE), "{rm:?}");
        assert_eq!(
            d(-0.0).mul_add(d(1.0), d(-0.0), rm),
            (d(-0.0), NONE),
            "{rm:?}"
        );
        assert_eq!(d(-0.0).sqrt(rm), (d(-0.0), NONE), "{rm:?}");
        let zero32 = if rm == RDN { s(-0.0) } else { s(0.0) };
        assert_eq!(s(2.0).sub(s(2.0), rm), (zero32, NONE), "{rm:?}");
    }
}

#[test]
fn overflow_result_depends_on_direction_and_sign() {
    let max = d(f64::MAX);
    let inf = d(f64::INFINITY);
    let expected = [
        (RNE, inf, d(f64::NEG_INFINITY)),
        (RMM, inf, d(f64::NEG_INFINITY)),
        (RTZ, max, d(-f64::MAX)),
        (RDN, max, d(f64::NEG_INFINITY)),
        (RUP, inf, d(-f64::MAX)),
    ];
    for (rm, positive, negative) in expected {
        assert_eq!(max.mul(d(2.0), rm), (positive, OF_NX), "{rm:?}");
        assert_eq!(max.mul(d(-2.0), rm), (negative, OF_NX), "{rm:?}");
        assert_eq!(max.add(max, rm), (positive, OF_NX), "{rm:?}");
    }
    assert_eq!(d(1e300).to_f32(RNE), (s(f32::INFINITY), OF_NX));
    assert_eq!(d(1e300).to_f32(RTZ), (s(f32::MAX), OF_NX));
    // Just below the rounding threshold to infinity is not an overflow.
    let below = d(f64::MAX).sub(d(pow2(969)), RNE);
    assert_eq!(below, (max, NX));
}

#[test]
fn underflow_is_detected_after_rounding_and_needs_inexactness() {
    // 2^-126 - 2^-151 rounds (with unbounded exponent) to 2^-126, so the narrowed result is
    // not tiny: NX only. Detecting tininess before rounding would also raise UF.
    let just_below = d(pow2(-126) - pow2(-151));
    assert_eq!(just_below.to_f32(RNE), (s(f32::MIN_POSITIVE), NX));
    assert_eq!(just_below.to_f32(RUP), (s(f32::MIN_POSITIVE), NX));
    // Rounded toward zero it stays below 2^-126: tiny and inexact.
    assert_eq!(just_below.to_f32(RTZ), (F32(0x007f_ffff), UF_NX));
    // Exact subnormal results raise nothing.
    assert_eq!(d(f64::MIN_POSITIVE).mul(d(0.5), RNE), (F64(1 << 51), NONE));
    assert_eq!(s(f32::MIN_POSITIVE).div(s(4.0), RNE), (F32(1 << 21), NONE));
    // A result that rounds to zero is tiny and inexact.
    assert_eq!(F64(1).mul(F64(1), RNE), (F64(0), UF_NX));
    assert_eq!(F64(1).mul(F64(1), RUP), (F64(1), UF_NX));
    assert_eq!(
        F64(0x8000_0000_0000_0001).mul(F64(1), RDN),
        (F64(0x8000_0000_0000_0001), UF_NX)
    );
}

#[test]
fn widening_is_exact_and_normalises_subnormals() {
    assert_eq!(F32(1).to_f64(), (d(pow2(-149)), NONE));
    assert_eq!(s(-0.0).to_f64(), (d(-0.0), NONE));
    assert_eq!(s(f32::NEG_INFINITY).to_f64(), (d(f64::NEG_INFINITY), NONE));
    assert_eq!(s(f32::MAX).to_f64(), (d(f32::MAX as f64), NONE));
    assert_eq!(d(pow2(-149)).to_f32(RNE), (F32(1), NONE));
    assert_eq!(d(pow2(-150)).to_f32(RNE), (F32(0), UF_NX));
    assert_eq!(d(pow2(-150)).to_f32(RUP), (F32(1), UF_NX));
}

#[test]
fn infinities_pass_through_exactly() {
    let inf = d(f64::INFINITY);
    assert_eq!(inf.add(d(-1e308), RNE), (inf, NONE));
    assert_eq!(inf.mul(d(-2.0), RNE), (d(f64::NEG_INFINITY), NONE));
    assert_eq!(inf.sqrt(RNE), (inf, NONE));
    assert_eq!(
        d(1.0).mul_add(d(2.0), d(f64::NEG_INFINITY), RNE),
        (d(f64::NEG_INFINITY), NONE)
    );
    assert_eq!(inf.mul_add(d(2.0), inf, RNE), (inf, NONE));
}
