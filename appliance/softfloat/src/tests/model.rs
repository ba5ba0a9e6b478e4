//! Randomised checks of fmin/fmax and fclass against small models written with host float
//! comparisons and classification (F extension 2.2 minimumNumber/maximumNumber rules).

use core::num::FpCategory;

use super::oracle::{Rng, LAYOUT32, LAYOUT64};
use crate::{Flags, F32, F64};

const CASES: usize = 200_000;

/// fmin/fmax model: NaN operands are ignored, two NaNs give the canonical NaN, signaling
/// NaNs raise NV, and -0 orders below +0.
fn model_min_max(
    a: f64,
    b: f64,
    a_bits: u64,
    b_bits: u64,
    signaling: bool,
    want_max: bool,
    canonical: u64,
) -> (u64, Flags) {
    let flags = if signaling { Flags::NV } else { Flags::NONE };
    let result = match (a.is_nan(), b.is_nan()) {
        (true, true) => canonical,
        (true, false) => b_bits,
        (false, true) => a_bits,
        (false, false) => {
            let a_first = if a == b {
                // Equal values differ only for zeros: -0 is the smaller.
                a.is_sign_negative() != want_max
            } else {
                (a < b) != want_max
            };
            if a_first {
                a_bits
            } else {
                b_bits
            }
        }
    };
    (result, flags)
}

/// fclass model from the host's classification.
fn model_class(x: f64, quiet: bool) -> u32 {
    let negative = x.is_sign_negative();
    let bit = match x.classify() {
        FpCategory::Infinite => {
            if negative {
                0
            } else {
                7
            }
        }
        FpCategory::Normal => {
            if negative {
                1
            } else {
                6
            }
        }
        FpCategory::Subnormal => {
            if negative {
                2
            } else {
                5
            }
        }
        FpCategory::Zero => {
            if negative {
                3
            } else {
                4
            }
        }
        FpCategory::Nan => {
            if quiet {
                9
            } else {
                8
            }
        }
    };
    1 << bit
}

#[test]
fn double_fmin_fmax_fclass_match_model() {
    let mut rng = Rng(0x00f1_a55e);
    for _ in 0..CASES {
        let a = LAYOUT64.random(&mut rng);
        let b = if rng.chance(2) {
            LAYOUT64.related(&mut rng, a)
        } else {
            LAYOUT64.random(&mut rng)
        };
        let signaling = F64(a).is_signaling_nan() || F64(b).is_signaling_nan();
        let (x, y) = (f64::from_bits(a), f64::from_bits(b));
        let canonical = F64::CANONICAL_NAN.0;
        let (min, min_flags) = F64(a).min(F64(b));
        assert_eq!(
            (min.0, min_flags),
            model_min_max(x, y, a, b, signaling, false, canonical),
            "min {a:#x} {b:#x}"
        );
        let (max, max_flags) = F64(a).max(F64(b));
        assert_eq!(
            (max.0, max_flags),
            model_min_max(x, y, a, b, signaling, true, canonical),
            "max {a:#x} {b:#x}"
        );
        let quiet = a & (1 << 51) != 0;
        assert_eq!(F64(a).classify(), model_class(x, quiet), "class {a:#x}");
    }
}

#[test]
fn single_fmin_fmax_fclass_match_model() {
    let mut rng = Rng(0x00f1_a55f);
    for _ in 0..CASES {
        let a = LAYOUT32.random(&mut rng) as u32;
        let b = if rng.chance(2) {
            LAYOUT32.related(&mut rng, a as u64) as u32
        } else {
            LAYOUT32.random(&mut rng) as u32
        };
        let signaling = F32(a).is_signaling_nan() || F32(b).is_signaling_nan();
        // Widening is exact for ordering and classification (subnormal singles become
        // normal doubles, so classify from the single's own fields below).
        let (x, y) = (f32::from_bits(a) as f64, f32::from_bits(b) as f64);
        let canonical = F32::CANONICAL_NAN.0 as u64;
        let (min, min_flags) = F32(a).min(F32(b));
        assert_eq!(
            (min.0 as u64, min_flags),
            model_min_max(x, y, a as u64, b as u64, signaling, false, canonical),
            "min {a:#x} {b:#x}"
        );
        let (max, max_flags) = F32(a).max(F32(b));
        assert_eq!(
            (max.0 as u64, max_flags),
            model_min_max(x, y, a as u64, b as u64, signaling, true, canonical),
            "max {a:#x} {b:#x}"
        );
        let single = f32::from_bits(a);
        let negative = single.is_sign_negative();
        let expected = match single.classify() {
            FpCategory::Subnormal => 1 << if negative { 2 } else { 5 },
            _ => model_class(x, a & (1 << 22) != 0),
        };
        assert_eq!(F32(a).classify(), expected, "class {a:#x}");
    }
}

/// Every operation, in every rounding mode including RMM, on edge-biased inputs (which also
/// exercises the arithmetic overflow checks of debug builds): NaN results are always
/// canonical and only the five `fflags` bits are ever set.
#[test]
fn nan_results_are_canonical_in_every_mode_and_operation() {
    use crate::RoundingMode;
    let modes = [
        RoundingMode::NearestEven,
        RoundingMode::TowardZero,
        RoundingMode::Down,
        RoundingMode::Up,
        RoundingMode::NearestMaxMagnitude,
    ];
    let mut rng = Rng(0x0ca0_0b1c);
    for _ in 0..CASES / 4 {
        let (a, b, c) = (
            LAYOUT64.random(&mut rng),
            LAYOUT64.random(&mut rng),
            LAYOUT64.random(&mut rng),
        );
        let (sa, sb, sc) = (
            LAYOUT32.random(&mut rng) as u32,
            LAYOUT32.random(&mut rng) as u32,
            LAYOUT32.random(&mut rng) as u32,
        );
        for rm in modes {
            let doubles = [
                F64(a).add(F64(b), rm),
                F64(a).sub(F64(b), rm),
                F64(a).mul(F64(b), rm),
                F64(a).div(F64(b), rm),
                F64(a).sqrt(rm),
                F64(a).mul_add(F64(b), F64(c), rm),
                F64(a).min(F64(b)),
                F64(a).max(F64(b)),
                F32(sa).to_f64(),
            ];
            for (index, (result, flags)) in doubles.into_iter().enumerate() {
                if result.is_nan() {
                    assert_eq!(
                        result,
                        F64::CANONICAL_NAN,
                        "op {index} {a:#x} {b:#x} {c:#x} {rm:?}"
                    );
                }
                assert_eq!(flags.0 & !0x1f, 0);
            }
            let singles = [
                F32(sa).add(F32(sb), rm),
                F32(sa).sub(F32(sb), rm),
                F32(sa).mul(F32(sb), rm),
                F32(sa).div(F32(sb), rm),
                F32(sa).sqrt(rm),
                F32(sa).mul_add(F32(sb), F32(sc), rm),
                F32(sa).min(F32(sb)),
                F32(sa).max(F32(sb)),
                F64(a).to_f32(rm),
            ];
            for (index, (result, flags)) in singles.into_iter().enumerate() {
                if result.is_nan() {
                    assert_eq!(
                        result,
                        F32::CANONICAL_NAN,
                        "op {index} {sa:#x} {sb:#x} {sc:#x} {rm:?}"
                    );
                }
                assert_eq!(flags.0 & !0x1f, 0);
            }
            // Conversions to integers raise NV or NX, never both and nothing else.
            let conversion_flags = [
                F64(a).to_i32(rm).1,
                F64(a).to_u32(rm).1,
                F64(a).to_i64(rm).1,
                F64(a).to_u64(rm).1,
                F32(sa).to_i32(rm).1,
                F32(sa).to_u64(rm).1,
            ];
            for flags in conversion_flags {
                assert!(
                    flags == Flags::NONE || flags == Flags::NV || flags == Flags::NX,
                    "{flags}"
                );
            }
        }
    }
}
