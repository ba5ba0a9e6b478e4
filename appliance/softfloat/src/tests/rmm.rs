//! Randomised checks of round-to-nearest-ties-to-max-magnitude (RMM), which SSE lacks.
//!
//! For single precision, the host computes the exact (or truncated-with-sticky) result in
//! double precision, and a small reference rounding picks the nearer single-precision
//! neighbour, ties away from zero. For double precision, where no wider host format exists,
//! RMM must agree with RNE except at ties, where RNE picks the even neighbour and RMM the one
//! away from zero. Integer conversions are checked against an integer-only reference.

use super::host;
use crate::{Flags, RoundingMode, F32, F64};

const RMM: RoundingMode = RoundingMode::NearestMaxMagnitude;
const RNE: RoundingMode = RoundingMode::NearestEven;
const RTZ: RoundingMode = RoundingMode::TowardZero;

fn cases() -> usize {
    if cfg!(debug_assertions) {
        20_000
    } else {
        400_000
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A finite single with an edge-biased exponent and significand.
fn random_single(rng: &mut Rng) -> u32 {
    let sign = (rng.next() & 1) as u32;
    let exp = match rng.below(5) {
        0 => rng.below(4) as u32,
        1 => 250 + rng.below(5) as u32,
        2 => 120 + rng.below(16) as u32,
        _ => rng.below(255) as u32,
    };
    let frac = match rng.below(4) {
        0 => (1 << rng.below(23)) | (1 << rng.below(23)),
        1 => 0x7f_ffff ^ (1 << rng.below(23)),
        _ => rng.next() as u32 & 0x7f_ffff,
    };
    sign << 31 | exp << 23 | frac
}

/// One operation: its name, our RMM result, and the host's double result truncated (RTZ)
/// with its inexact flag as the sticky bit.
type SingleCase = (&'static str, (F32, Flags), (f64, Flags));

/// The single-precision RMM rounding of `value + sticky` (sticky: the exact value is a
/// little larger in magnitude than `value`), with RISC-V flags, tininess after rounding.
fn reference_rmm_single(value: f64, sticky: bool) -> (u32, Flags) {
    let (truncated, _) = host::f64_to_f32(value, RTZ);
    let negative = value.is_sign_negative();
    let magnitude = value.abs();
    let lower = truncated.abs() as f64;
    if magnitude == lower && !sticky {
        return (truncated.to_bits(), Flags::NONE);
    }
    let away_bits = truncated.abs().to_bits() + 1;
    let round_away = if truncated.abs() == f32::MAX {
        // The next "neighbour" is 2^128; the midpoint is MAX + half an ulp.
        let midpoint = f32::MAX as f64 + 2f64.powi(103);
        magnitude >= midpoint
    } else {
        let midpoint = (lower + f32::from_bits(away_bits) as f64) / 2.0;
        magnitude >= midpoint
    };
    let result_magnitude = if round_away {
        away_bits
    } else {
        truncated.abs().to_bits()
    };
    let mut flags = Flags::NX;
    if result_magnitude == f32::INFINITY.to_bits() {
        flags |= Flags::OF;
    }
    // Tiny after rounding: rounded to 24 bits with unbounded exponent, still below 2^-126.
    // In [2^-127, 2^-126) the 24-bit ulp is 2^-150, so RMM reaches 2^-126 from
    // 2^-126 - 2^-151 upwards.
    if magnitude < 2f64.powi(-126) - 2f64.powi(-151) {
        flags |= Flags::UF;
    }
    let sign = if negative { 1 << 31 } else { 0 };
    (sign | result_magnitude, flags)
}

#[test]
fn single_precision_rmm_matches_reference_rounding_of_wider_host_result() {
    let mut rng = Rng(0x0007_2a11_5eed);
    let mut failures = std::vec::Vec::new();
    for _ in 0..cases() {
        let a = random_single(&mut rng);
        let b = if rng.below(3) == 0 {
            // Nearby exponent for cancellation and ties in addition.
            let exp = ((a >> 23) & 0xff) as i64 + rng.below(50) as i64 - 25;
            (rng.next() as u32 & 0x807f_ffff) | (exp.clamp(0, 254) as u32) << 23
        } else {
            random_single(&mut rng)
        };
        let (x, y) = (f32::from_bits(a) as f64, f32::from_bits(b) as f64);
        let ops: [SingleCase; 3] = [
            ("add", F32(a).add(F32(b), RMM), host::add_f64(x, y, RTZ)),
            ("sub", F32(a).sub(F32(b), RMM), host::sub_f64(x, y, RTZ)),
            ("mul", F32(a).mul(F32(b), RMM), host::mul_f64(x, y, RTZ)),
        ];
        for (op, (ours, flags), (wide, wide_flags)) in ops {
            let expected = if wide == 0.0 && !wide_flags.contains(Flags::NX) {
                // Exact zero: the sign rules are covered by the hand-written tests and
                // equal RNE's.
                let (zero, zero_flags) = match op {
                    "add" => F32(a).add(F32(b), RNE),
                    "sub" => F32(a).sub(F32(b), RNE),
                    _ => F32(a).mul(F32(b), RNE),
                };
                (zero.0, zero_flags)
            } else {
                reference_rmm_single(wide, wide_flags.contains(Flags::NX))
            };
            if (ours.0, flags) != expected && failures.len() < 20 {
                failures.push(std::format!(
                    "{op} {a:#x} {b:#x}: ours {:#x} {flags}, expected {:#x} {}",
                    ours.0,
                    expected.0,
                    expected.1
                ));
            }
        }
        // Narrowing a double: the input itself is the exact value.
        let wide_bits = (rng.next() & 0x800f_ffff_ffff_ffff) | (rng.below(300) + 1023 - 160) << 52;
        let wide = f64::from_bits(wide_bits);
        let (ours, flags) = F64(wide_bits).to_f32(RMM);
        let expected = reference_rmm_single(wide, false);
        if (ours.0, flags) != expected && failures.len() < 20 {
            failures.push(std::format!(
                "to_f32 {wide_bits:#x}: ours {:#x} {flags}, expected {:#x} {}",
                ours.0,
                expected.0,
                expected.1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "RMM mismatches:\n{}",
        failures.join("\n")
    );
}

/// Integer-only RMM rounding of `magnitude` to `precision` significant bits: the rounded
/// magnitude as (significand, shift) and whether it was inexact.
fn reference_rmm_integer(magnitude: u64, precision: u32) -> (u64, u32, bool) {
    let bits = 64 - magnitude.leading_zeros();
    if bits <= precision {
        return (magnitude, 0, false);
    }
    let shift = bits - precision;
    let kept = magnitude >> shift;
    let rest = magnitude & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    (kept + (rest >= half) as u64, shift, rest != 0)
}

#[test]
fn integer_to_float_rmm_matches_integer_reference() {
    let mut rng = Rng(0x0001_2e57);
    for _ in 0..cases() {
        let width = 1 + rng.below(64);
        let magnitude = match rng.below(3) {
            // Exactly halfway patterns: ...x1000...
            0 => ((rng.next() | 1) << rng.below(width)) & (u64::MAX >> (64 - width)),
            _ => rng.next() >> (64 - width),
        };
        for (precision, convert) in [
            (
                53,
                (|m: u64| F64::from_u64(m, RMM)) as fn(u64) -> (F64, Flags),
            ),
            (24, |m: u64| {
                let (r, f) = F32::from_u64(m, RMM);
                (r.to_f64().0, f)
            }),
        ] {
            let (kept, shift, inexact) = reference_rmm_integer(magnitude, precision);
            let expected = kept as f64 * 2f64.powi(shift as i32);
            let (ours, flags) = convert(magnitude);
            assert_eq!(
                (ours.0, flags),
                (
                    expected.to_bits(),
                    if inexact { Flags::NX } else { Flags::NONE }
                ),
                "from_u64({magnitude:#x}) to {precision} bits"
            );
        }
        if magnitude <= i64::MAX as u64 {
            let (kept, shift, inexact) = reference_rmm_integer(magnitude, 53);
            let expected = -(kept as f64 * 2f64.powi(shift as i32));
            let (ours, flags) = F64::from_i64(-(magnitude as i64), RMM);
            let expected_flags = if inexact { Flags::NX } else { Flags::NONE };
            if magnitude != 0 {
                assert_eq!(
                    (ours.0, flags),
                    (expected.to_bits(), expected_flags),
                    "from_i64(-{magnitude:#x})"
                );
            }
        }
    }
}

#[test]
fn double_precision_rmm_differs_from_rne_only_at_ties() {
    let mut rng = Rng(0x00d0_0b1e);
    let random_double = |rng: &mut Rng| -> u64 {
        let exp = match rng.below(4) {
            0 => rng.below(60),
            1 => 1023 + rng.below(60) - 30,
            _ => rng.below(2047),
        };
        let frac = match rng.below(3) {
            0 => (1 << rng.below(52)) | (1 << rng.below(52)),
            _ => rng.next() & ((1 << 52) - 1),
        };
        (rng.next() & (1 << 63)) | exp << 52 | frac
    };
    let mut differing = 0u64;
    for _ in 0..cases() {
        let (a, b, c) = (
            random_double(&mut rng),
            random_double(&mut rng),
            random_double(&mut rng),
        );
        let results = [
            (
                F64(a).add(F64(b), RMM),
                F64(a).add(F64(b), RNE),
                F64(a).add(F64(b), RTZ),
            ),
            (
                F64(a).mul(F64(b), RMM),
                F64(a).mul(F64(b), RNE),
                F64(a).mul(F64(b), RTZ),
            ),
            (
                F64(a).div(F64(b), RMM),
                F64(a).div(F64(b), RNE),
                F64(a).div(F64(b), RTZ),
            ),
            (
                F64(a).mul_add(F64(b), F64(c), RMM),
                F64(a).mul_add(F64(b), F64(c), RNE),
                F64(a).mul_add(F64(b), F64(c), RTZ),
            ),
            (F64(a).sqrt(RMM), F64(a).sqrt(RNE), F64(a).sqrt(RTZ)),
        ];
        for (index, ((rmm, rmm_flags), (rne, rne_flags), (rtz, _))) in
            results.into_iter().enumerate()
        {
            let context = std::format!("op {index} inputs {a:#x} {b:#x} {c:#x}");
            // Underflow may differ (tininess depends on the mode); every other flag agrees.
            assert_eq!(
                rmm_flags.0 & !Flags::UF.0,
                rne_flags.0 & !Flags::UF.0,
                "{context}"
            );
            if rmm != rne {
                differing += 1;
                // A tie: RNE chose the even neighbour toward zero, RMM the odd one away.
                assert_eq!(rne, rtz, "{context}");
                assert_eq!(rne.0 & 1, 0, "{context}");
                assert_eq!(rmm.0, rne.0 + 1, "{context}");
            }
        }
    }
    assert!(differing > 0, "the inputs never produced a tie");
}
