//! Differential tests against the host SSE unit in the four rounding modes x86 shares with
//! RISC-V (RNE, RTZ, RDN, RUP), comparing result bits and every exception flag.
//!
//! Inputs are random but biased toward edge cases: zeros, subnormals, infinities, NaNs,
//! exponents near the overflow and underflow thresholds, significands with few bits set
//! (exact halfway cases) and pairs of nearly equal operands (cancellation). The seed is
//! printed first; `SOFTFLOAT_ORACLE_SEED` replays one, `SOFTFLOAT_ORACLE_CASES` sets the
//! number of cases per operation and rounding mode.

use std::format;
use std::string::String;
use std::vec::Vec;

use super::host;
use crate::{Flags, RoundingMode, F32, F64};

const HOST_MODES: [RoundingMode; 4] = [
    RoundingMode::NearestEven,
    RoundingMode::TowardZero,
    RoundingMode::Down,
    RoundingMode::Up,
];

/// Cases per operation and rounding mode: a few seconds in total in release builds.
fn cases() -> usize {
    if let Ok(text) = std::env::var("SOFTFLOAT_ORACLE_CASES") {
        return text
            .parse()
            .expect("SOFTFLOAT_ORACLE_CASES must be a number");
    }
    if cfg!(debug_assertions) {
        20_000
    } else {
        250_000
    }
}

fn seed(test_salt: u64) -> u64 {
    let base = match std::env::var("SOFTFLOAT_ORACLE_SEED") {
        Ok(text) => text
            .parse()
            .expect("SOFTFLOAT_ORACLE_SEED must be a number"),
        Err(_) => 0x5eed_f10a_7000_0001,
    };
    std::println!("oracle seed {base} (salt {test_salt})");
    base ^ test_salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// SplitMix64: small, fast, and reproducible from its seed.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(super) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Field widths of a format, for building edge-case bit patterns.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    frac_bits: u32,
    exp_bits: u32,
}

pub(super) const LAYOUT32: Layout = Layout {
    frac_bits: 23,
    exp_bits: 8,
};
pub(super) const LAYOUT64: Layout = Layout {
    frac_bits: 52,
    exp_bits: 11,
};

impl Layout {
    fn frac_mask(self) -> u64 {
        (1 << self.frac_bits) - 1
    }

    fn exp_all_ones(self) -> u64 {
        (1 << self.exp_bits) - 1
    }

    fn bias(self) -> u64 {
        (1 << (self.exp_bits - 1)) - 1
    }

    fn sign_bit(self) -> u64 {
        1 << (self.frac_bits + self.exp_bits)
    }

    fn pack(self, sign: bool, exp: u64, frac: u64) -> u64 {
        (if sign { self.sign_bit() } else { 0 })
            | (exp << self.frac_bits)
            | (frac & self.frac_mask())
    }

    fn exp_of(self, bits: u64) -> u64 {
        (bits >> self.frac_bits) & self.exp_all_ones()
    }

    fn random_frac(self, rng: &mut Rng) -> u64 {
        let mask = self.frac_mask();
        match rng.below(7) {
            0 => 0,
            1 => mask,
            // One or two set bits: products and sums land on exact halfway points.
            2 => (1 << rng.below(self.frac_bits as u64)) | (1 << rng.below(self.frac_bits as u64)),
            3 => mask ^ (1 << rng.below(self.frac_bits as u64)),
            // Random high bits above a run of trailing zeros.
            4 => rng.next() & (mask << rng.below(self.frac_bits as u64)) & mask,
            // Random low bits only.
            5 => rng.next() & (mask >> rng.below(self.frac_bits as u64)),
            _ => rng.next() & mask,
        }
    }

    /// An edge-biased value: any class, exponent often near a threshold.
    pub(super) fn random(self, rng: &mut Rng) -> u64 {
        let sign = rng.next() & 1 == 1;
        let all_ones = self.exp_all_ones();
        let exp = match rng.below(12) {
            0 => 0,
            1 => all_ones,
            2 => 1 + rng.below(3),
            3 => all_ones - 1 - rng.below(3),
            4 => self.bias() - 2 + rng.below(5),
            // Half the exponent range above/below the bias: products near the thresholds.
            5 => (self.bias() / 2 + rng.below(5)).saturating_sub(2),
            6 => self.bias() + self.bias() / 2 - 2 + rng.below(5),
            _ => rng.below(all_ones + 1),
        };
        let mut frac = self.random_frac(rng);
        if exp == all_ones && frac != 0 && rng.chance(2) {
            // Signaling NaN: quiet bit clear, payload nonzero.
            frac &= self.frac_mask() >> 1;
            if frac == 0 {
                frac = 1;
            }
        }
        self.pack(sign, exp, frac)
    }

    /// A value close to `a`: same magnitude with either sign, a few ulps away, or a nearby
    /// exponent, so additions cancel and comparisons see near-ties.
    pub(super) fn related(self, rng: &mut Rng, a: u64) -> u64 {
        let width_mask = (self.sign_bit() << 1).wrapping_sub(1);
        match rng.below(5) {
            0 => a ^ self.sign_bit(),
            1 => a,
            2 => {
                (a ^ self.sign_bit())
                    .wrapping_add(rng.below(9))
                    .wrapping_sub(4)
                    & width_mask
            }
            3 => {
                let exp = self.exp_of(a);
                let delta = rng.below(2 * self.frac_bits as u64 + 8);
                let new_exp = (exp + delta).saturating_sub(self.frac_bits as u64 + 4);
                let new_exp = new_exp.min(self.exp_all_ones());
                let sign = rng.next() & 1 == 1;
                self.pack(sign, new_exp, self.random_frac(rng))
            }
            _ => {
                (a & !self.frac_mask() & !self.sign_bit())
                    | (rng.next() & (self.frac_mask() | self.sign_bit()))
            }
        }
    }

    /// A second factor whose exponent puts `a * b` (or `a / b`) near the overflow or
    /// underflow threshold.
    fn threshold_partner(self, rng: &mut Rng, a: u64, for_division: bool) -> u64 {
        let exp_a = self.exp_of(a) as i64 - self.bias() as i64;
        let max = self.bias() as i64;
        let min = 1 - self.bias() as i64 - self.frac_bits as i64;
        let target = if rng.chance(2) {
            max
        } else {
            min + rng.below(self.frac_bits as u64 + 2) as i64
        };
        let target = target + rng.below(5) as i64 - 2;
        let exp_b = if for_division {
            exp_a - target
        } else {
            target - exp_a
        };
        let biased = (exp_b + self.bias() as i64).clamp(0, self.exp_all_ones() as i64 - 1);
        self.pack(rng.next() & 1 == 1, biased as u64, self.random_frac(rng))
    }

    /// A pair whose product (or quotient, when `for_division`) lies within a factor of two
    /// of the smallest normal number, with significands just below 2 or just above 1 so
    /// that rounding often carries across 2^emin: the case where tininess after rounding
    /// differs from tininess before rounding.
    fn underflow_threshold_pair(self, rng: &mut Rng, for_division: bool) -> (u64, u64) {
        let near_one = |rng: &mut Rng| -> u64 {
            if rng.chance(2) {
                rng.below(4)
            } else {
                // Just below 2: 1.111...1 minus a few ulps.
                self.frac_mask() - rng.below(4)
            }
        };
        let frac_a = near_one(rng);
        let frac_b = near_one(rng);
        let bias = self.bias() as i64;
        let emin = 1 - bias;
        // Spread the exponents between the operands; the result exponent is emin - 1 or emin.
        let target = emin - rng.below(2) as i64;
        let exp_a = rng.below(bias as u64) as i64 - bias / 2;
        let exp_b = if for_division {
            exp_a - target
        } else {
            target - exp_a
        };
        let pack = |sign: bool, exp: i64, frac: u64| {
            self.pack(sign, (exp + bias).clamp(1, 2 * bias) as u64, frac)
        };
        (
            pack(rng.chance(2), exp_a, frac_a),
            pack(rng.chance(2), exp_b, frac_b),
        )
    }

    /// A value near an integer-conversion boundary: magnitudes from 2^-3 to 2^66.
    fn near_integer_range(self, rng: &mut Rng) -> u64 {
        if rng.chance(4) {
            return self.random(rng);
        }
        let exp = self.bias() - 3 + rng.below(70);
        self.pack(
            rng.next() & 1 == 1,
            exp.min(self.exp_all_ones() - 1),
            self.random_frac(rng),
        )
    }
}

/// An edge-biased 64-bit integer: random width, near powers of two, few bits set.
fn random_integer(rng: &mut Rng) -> u64 {
    let width = 1 + rng.below(64);
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    };
    match rng.below(5) {
        0 => (1u64 << (width - 1))
            .wrapping_add(rng.below(17))
            .wrapping_sub(8),
        1 => (1u64 << (width - 1)) | (1 << rng.below(width)),
        2 => mask ^ (rng.next() & 0xff),
        _ => rng.next() & mask,
    }
}

/// One operation's outcome, reduced to what RISC-V makes architecturally visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    bits: u64,
    nan: bool,
    flags: u8,
}

/// Collects mismatches and reports the first few with their inputs.
struct Checker {
    name: &'static str,
    canonical_nan: u64,
    checked: u64,
    failures: u64,
    examples: Vec<String>,
}

impl Checker {
    fn new(name: &'static str, canonical_nan: u64) -> Self {
        Checker {
            name,
            canonical_nan,
            checked: 0,
            failures: 0,
            examples: Vec::new(),
        }
    }

    fn record(
        &mut self,
        op: &str,
        inputs: &[u64],
        rm: RoundingMode,
        ours: Outcome,
        expected: Outcome,
    ) {
        self.failures += 1;
        if self.examples.len() < 25 {
            self.examples.push(format!(
                "{op} {inputs:x?} {rm:?}: ours {:#x} {} expected {:#x} {}",
                ours.bits,
                Flags(ours.flags),
                expected.bits,
                Flags(expected.flags)
            ));
        }
    }

    /// Float results: a host NaN only has to match in NaN-ness, since RISC-V returns the
    /// canonical NaN where x86 returns its "default NaN".
    fn float(&mut self, op: &str, inputs: &[u64], rm: RoundingMode, ours: Outcome, host: Outcome) {
        self.checked += 1;
        let ok = if host.nan {
            ours.bits == self.canonical_nan && ours.flags == host.flags
        } else {
            ours == host
        };
        if !ok {
            self.record(op, inputs, rm, ours, host);
        }
    }

    /// Integer and boolean results, compared exactly.
    fn exact(
        &mut self,
        op: &str,
        inputs: &[u64],
        rm: RoundingMode,
        ours: Outcome,
        expected: Outcome,
    ) {
        self.checked += 1;
        if ours != expected {
            self.record(op, inputs, rm, ours, expected);
        }
    }

    fn finish(self) {
        std::println!(
            "{}: {} cases, {} mismatches",
            self.name,
            self.checked,
            self.failures
        );
        assert!(
            self.failures == 0,
            "{}: {} of {} cases differ from the host:\n{}",
            self.name,
            self.failures,
            self.checked,
            self.examples.join("\n")
        );
    }
}

fn int_outcome(value: u64, flags: Flags) -> Outcome {
    Outcome {
        bits: value,
        nan: false,
        flags: flags.0,
    }
}

/// Expected RISC-V result of an invalid float-to-integer conversion (saturation table).
fn saturated(is_nan: bool, negative: bool, max: u64, min: u64) -> Outcome {
    let value = if is_nan || !negative { max } else { min };
    Outcome {
        bits: value,
        nan: false,
        flags: Flags::NV.0,
    }
}

macro_rules! format_oracle {
    (
        mod $module:ident, $soft:ident, $host_ty:ty, $bits:ty, $layout:expr, salt $salt:expr,
        add $host_add:path, sub $host_sub:path, mul $host_mul:path, div $host_div:path,
        sqrt $host_sqrt:path, fma $host_fma:path,
        eq $host_eq:path, lt $host_lt:path, le $host_le:path,
        to_i32 $host_to_i32:path, to_i64 $host_to_i64:path, from_i64 $host_from_i64:path
    ) => {
        mod $module {
            use super::*;

            const CANONICAL: u64 = $soft::CANONICAL_NAN.0 as u64;

            fn soft(bits: u64) -> $soft {
                $soft(bits as $bits)
            }

            fn host_value(bits: u64) -> $host_ty {
                <$host_ty>::from_bits(bits as $bits)
            }

            fn host_outcome((x, flags): ($host_ty, Flags)) -> Outcome {
                Outcome {
                    bits: x.to_bits() as u64,
                    nan: x.is_nan(),
                    flags: flags.0,
                }
            }

            fn soft_outcome((x, flags): ($soft, Flags)) -> Outcome {
                Outcome {
                    bits: x.0 as u64,
                    nan: x.is_nan(),
                    flags: flags.0,
                }
            }

            #[test]
            fn add_and_sub_match_host_sse() {
                let mut rng = Rng(seed($salt + 1));
                let mut check = Checker::new(concat!(stringify!($module), " add/sub"), CANONICAL);
                for rm in HOST_MODES {
                    for _ in 0..cases() {
                        let a = $layout.random(&mut rng);
                        let b = if rng.chance(3) {
                            $layout.related(&mut rng, a)
                        } else {
                            $layout.random(&mut rng)
                        };
                        let ours = soft_outcome(soft(a).add(soft(b), rm));
                        let host = host_outcome($host_add(host_value(a), host_value(b), rm));
                        check.float("add", &[a, b], rm, ours, host);
                        let ours = soft_outcome(soft(a).sub(soft(b), rm));
                        let host = host_outcome($host_sub(host_value(a), host_value(b), rm));
                        check.float("sub", &[a, b], rm, ours, host);
                    }
                }
                check.finish();
            }

            #[test]
            fn mul_and_div_match_host_sse() {
                let mut rng = Rng(seed($salt + 2));
                let mut check = Checker::new(concat!(stringify!($module), " mul/div"), CANONICAL);
                for rm in HOST_MODES {
                    for _ in 0..cases() {
                        let a = $layout.random(&mut rng);
                        let b = if rng.chance(3) {
                            $layout.threshold_partner(&mut rng, a, false)
                        } else {
                            $layout.random(&mut rng)
                        };
                        let ours = soft_outcome(soft(a).mul(soft(b), rm));
                        let host = host_outcome($host_mul(host_value(a), host_value(b), rm));
                        check.float("mul", &[a, b], rm, ours, host);
                        let (x, y) = $layout.underflow_threshold_pair(&mut rng, false);
                        let ours = soft_outcome(soft(x).mul(soft(y), rm));
                        let host = host_outcome($host_mul(host_value(x), host_value(y), rm));
                        check.float("mul", &[x, y], rm, ours, host);
                        let (x, y) = $layout.underflow_threshold_pair(&mut rng, true);
                        let ours = soft_outcome(soft(x).div(soft(y), rm));
                        let host = host_outcome($host_div(host_value(x), host_value(y), rm));
                        check.float("div", &[x, y], rm, ours, host);
                        let b = if rng.chance(3) {
                            $layout.threshold_partner(&mut rng, a, true)
                        } else {
                            b
                        };
                        let ours = soft_outcome(soft(a).div(soft(b), rm));
                        let host = host_outcome($host_div(host_value(a), host_value(b), rm));
                        check.float("div", &[a, b], rm, ours, host);
                    }
                }
                check.finish();
            }

            #[test]
            fn sqrt_matches_host_sse() {
                let mut rng = Rng(seed($salt + 3));
                let mut check = Checker::new(concat!(stringify!($module), " sqrt"), CANONICAL);
                for rm in HOST_MODES {
                    for _ in 0..cases() {
                        let mut a = $layout.random(&mut rng);
                        if !rng.chance(8) {
                            a &= !$layout.sign_bit();
                        }
                        let ours = soft_outcome(soft(a).sqrt(rm));
                        let host = host_outcome($host_sqrt(host_value(a), rm));
                        check.float("sqrt", &[a], rm, ours, host);
                    }
                }
                check.finish();
            }

            #[test]
            fn fused_multiply_add_matches_host_fma() {
                if !host::has_fma() {
                    std::println!("host has no FMA3; fused multiply-add oracle skipped");
                    return;
                }
                let mut rng = Rng(seed($salt + 4));
                let mut check = Checker::new(concat!(stringify!($module), " fma"), CANONICAL);
                for rm in HOST_MODES {
                    for _ in 0..cases() {
                        let a = $layout.random(&mut rng);
                        let b = if rng.chance(4) {
                            $layout.threshold_partner(&mut rng, a, false)
                        } else {
                            $layout.random(&mut rng)
                        };
                        let c = match rng.below(3) {
                            // Near the negated product: massive cancellation.
                            0 => {
                                let (product, _) = soft(a).mul(soft(b), RoundingMode::TowardZero);
                                $layout.related(&mut rng, product.0 as u64 ^ $layout.sign_bit())
                            }
                            _ => $layout.random(&mut rng),
                        };
                        let ours = soft_outcome(soft(a).mul_add(soft(b), soft(c), rm));
                        let host = host_outcome($host_fma(
                            host_value(a),
                            host_value(b),
                            host_value(c),
                            rm,
                        ));
                        // RISC-V raises NV for infinity * 0 + quiet NaN; x86 does not. That
                        // case has its own hand-written test.
                        let inf_times_zero = (host_value(a).is_infinite() && host_value(b) == 0.0)
                            || (host_value(a) == 0.0 && host_value(b).is_infinite());
                        if inf_times_zero && host_value(c).is_nan() {
                            continue;
                        }
                        check.float("fma", &[a, b, c], rm, ours, host);
                    }
                }
                check.finish();
            }

            #[test]
            fn comparisons_match_host_sse() {
                let mut rng = Rng(seed($salt + 5));
                let mut check = Checker::new(concat!(stringify!($module), " compare"), CANONICAL);
                let rm = RoundingMode::NearestEven;
                for _ in 0..cases() * 2 {
                    let a = $layout.random(&mut rng);
                    let b = if rng.chance(2) {
                        $layout.related(&mut rng, a)
                    } else {
                        $layout.random(&mut rng)
                    };
                    let pairs = [
                        (
                            "eq",
                            soft(a).eq(soft(b)),
                            $host_eq(host_value(a), host_value(b)),
                        ),
                        (
                            "lt",
                            soft(a).lt(soft(b)),
                            $host_lt(host_value(a), host_value(b)),
                        ),
                        (
                            "le",
                            soft(a).le(soft(b)),
                            $host_le(host_value(a), host_value(b)),
                        ),
                    ];
                    for (op, (ours, ours_flags), (host, host_flags)) in pairs {
                        check.exact(
                            op,
                            &[a, b],
                            rm,
                            int_outcome(ours as u64, ours_flags),
                            int_outcome(host as u64, host_flags),
                        );
                    }
                }
                check.finish();
            }

            #[test]
            fn float_to_integer_matches_host_sse_with_riscv_saturation() {
                let mut rng = Rng(seed($salt + 6));
                let mut check = Checker::new(concat!(stringify!($module), " to_int"), CANONICAL);
                for rm in HOST_MODES {
                    for _ in 0..cases() {
                        let x = $layout.near_integer_range(&mut rng);
                        let value = host_value(x);
                        let (nan, negative) = (value.is_nan(), x & $layout.sign_bit() != 0);

                        let (ours, flags) = soft(x).to_i32(rm);
                        let (host, host_flags) = $host_to_i32(value, rm);
                        let expected = if host_flags.contains(Flags::NV) {
                            saturated(nan, negative, i32::MAX as u64, i32::MIN as u32 as u64)
                        } else {
                            int_outcome(host as u32 as u64, host_flags)
                        };
                        check.exact(
                            "to_i32",
                            &[x],
                            rm,
                            int_outcome(ours as u32 as u64, flags),
                            expected,
                        );

                        let (ours, flags) = soft(x).to_i64(rm);
                        let (host64, host64_flags) = $host_to_i64(value, rm);
                        let expected = if host64_flags.contains(Flags::NV) {
                            saturated(nan, negative, i64::MAX as u64, i64::MIN as u64)
                        } else {
                            int_outcome(host64 as u64, host64_flags)
                        };
                        check.exact(
                            "to_i64",
                            &[x],
                            rm,
                            int_outcome(ours as u64, flags),
                            expected,
                        );

                        // Unsigned conversions through the wider signed instruction.
                        let (ours, flags) = soft(x).to_u32(rm);
                        let expected = if host64_flags.contains(Flags::NV) {
                            saturated(nan, negative, u32::MAX as u64, 0)
                        } else if host64 < 0 || host64 > u32::MAX as i64 {
                            saturated(false, host64 < 0, u32::MAX as u64, 0)
                        } else {
                            int_outcome(host64 as u64, host64_flags)
                        };
                        check.exact(
                            "to_u32",
                            &[x],
                            rm,
                            int_outcome(ours as u64, flags),
                            expected,
                        );

                        let (ours, flags) = soft(x).to_u64(rm);
                        let two_pow_63: $host_ty = 9_223_372_036_854_775_808.0;
                        let expected = if !nan && !negative && value >= two_pow_63 {
                            // Values in [2^63, 2^64) are integers: shift down by 2^63 exactly.
                            let (low, low_flags) = $host_to_i64(value - two_pow_63, rm);
                            if low_flags.contains(Flags::NV) {
                                saturated(false, false, u64::MAX, 0)
                            } else {
                                int_outcome(low as u64 + (1 << 63), low_flags)
                            }
                        } else if host64_flags.contains(Flags::NV) {
                            saturated(nan, negative, u64::MAX, 0)
                        } else if host64 < 0 {
                            saturated(false, true, u64::MAX, 0)
                        } else {
                            int_outcome(host64 as u64, host64_flags)
                        };
                        check.exact("to_u64", &[x], rm, int_outcome(ours, flags), expected);
                    }
                }
                check.finish();
            }

            #[test]
            fn integer_to_float_matches_host_sse() {
                let mut rng = Rng(seed($salt + 7));
                let mut check = Checker::new(concat!(stringify!($module), " from_int"), CANONICAL);
                for rm in HOST_MODES {
                    for _ in 0..cases() {
                        let v = random_integer(&mut rng);
                        let negate = rng.chance(2);
                        let signed = if negate {
                            (v as i64).wrapping_neg()
                        } else {
                            v as i64
                        };

                        let ours = soft_outcome($soft::from_i64(signed, rm));
                        let host = host_outcome($host_from_i64(signed, rm));
                        check.float("from_i64", &[signed as u64], rm, ours, host);

                        let ours = soft_outcome($soft::from_i32(signed as i32, rm));
                        let host = host_outcome($host_from_i64(signed as i32 as i64, rm));
                        check.float("from_i32", &[signed as u64], rm, ours, host);

                        let ours = soft_outcome($soft::from_u32(v as u32, rm));
                        let host = host_outcome($host_from_i64(v as u32 as i64, rm));
                        check.float("from_u32", &[v], rm, ours, host);

                        let ours = soft_outcome($soft::from_u64(v, rm));
                        let host = if v >> 63 == 0 {
                            host_outcome($host_from_i64(v as i64, rm))
                        } else {
                            // Halve with a sticky bit: rounding the 63-bit value gives the
                            // same result and flags, and doubling it back is exact.
                            let (half, flags) = $host_from_i64(((v >> 1) | (v & 1)) as i64, rm);
                            host_outcome((half * 2.0, flags))
                        };
                        check.float("from_u64", &[v], rm, ours, host);
                    }
                }
                check.finish();
            }
        }
    };
}

format_oracle!(
    mod binary32, F32, f32, u32, LAYOUT32, salt 100,
    add host::add_f32, sub host::sub_f32, mul host::mul_f32, div host::div_f32,
    sqrt host::sqrt_f32, fma host::fma_f32,
    eq host::eq_f32, lt host::lt_f32, le host::le_f32,
    to_i32 host::f32_to_i32, to_i64 host::f32_to_i64, from_i64 host::i64_to_f32
);

format_oracle!(
    mod binary64, F64, f64, u64, LAYOUT64, salt 200,
    add host::add_f64, sub host::sub_f64, mul host::mul_f64, div host::div_f64,
    sqrt host::sqrt_f64, fma host::fma_f64,
    eq host::eq_f64, lt host::lt_f64, le host::le_f64,
    to_i32 host::f64_to_i32, to_i64 host::f64_to_i64, from_i64 host::i64_to_f64
);

#[test]
fn format_conversions_match_host_sse() {
    let mut rng = Rng(seed(300));
    let mut check = Checker::new("f32<->f64", F64::CANONICAL_NAN.0);
    let mut check_narrow = Checker::new("f64->f32", F32::CANONICAL_NAN.0 as u64);
    for rm in HOST_MODES {
        for _ in 0..cases() {
            let a = LAYOUT32.random(&mut rng);
            let (ours, flags) = F32(a as u32).to_f64();
            let (host, host_flags) = host::f32_to_f64(f32::from_bits(a as u32));
            check.float(
                "f32->f64",
                &[a],
                rm,
                Outcome {
                    bits: ours.0,
                    nan: ours.is_nan(),
                    flags: flags.0,
                },
                Outcome {
                    bits: host.to_bits(),
                    nan: host.is_nan(),
                    flags: host_flags.0,
                },
            );

            // Doubles around the single-precision range, including its subnormals.
            let b = if rng.chance(4) {
                LAYOUT64.random(&mut rng)
            } else {
                let exp = 1023 - 160 + rng.below(300);
                LAYOUT64.pack(rng.next() & 1 == 1, exp, LAYOUT64.random_frac(&mut rng))
            };
            let (ours, flags) = F64(b).to_f32(rm);
            let (host, host_flags) = host::f64_to_f32(f64::from_bits(b), rm);
            check_narrow.float(
                "f64->f32",
                &[b],
                rm,
                Outcome {
                    bits: ours.0 as u64,
                    nan: ours.is_nan(),
                    flags: flags.0,
                },
                Outcome {
                    bits: host.to_bits() as u64,
                    nan: host.is_nan(),
                    flags: host_flags.0,
                },
            );
        }
    }
    check.finish();
    check_narrow.finish();
}

/// Every single-precision bit pattern through sqrt (RNE), widening, and conversion to i32
/// (RTZ, the C cast). Takes minutes: run with `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn exhaustive_single_precision_unary_operations_match_host_sse() {
    let mut check = Checker::new("exhaustive f32 unary", F32::CANONICAL_NAN.0 as u64);
    let mut check_wide = Checker::new("exhaustive f32 to_f64", F64::CANONICAL_NAN.0);
    let rm = RoundingMode::NearestEven;
    for a in 0..=u32::MAX {
        let x = f32::from_bits(a);
        if a >> 31 == 0 {
            let (ours, flags) = F32(a).sqrt(rm);
            let (host, host_flags) = host::sqrt_f32(x, rm);
            check.float(
                "sqrt",
                &[a as u64],
                rm,
                Outcome {
                    bits: ours.0 as u64,
                    nan: ours.is_nan(),
                    flags: flags.0,
                },
                Outcome {
                    bits: host.to_bits() as u64,
                    nan: host.is_nan(),
                    flags: host_flags.0,
                },
            );
        }
        let (ours, flags) = F32(a).to_f64();
        let (host, host_flags) = host::f32_to_f64(x);
        check_wide.float(
            "to_f64",
            &[a as u64],
            rm,
            Outcome {
                bits: ours.0,
                nan: ours.is_nan(),
                flags: flags.0,
            },
            Outcome {
                bits: host.to_bits(),
                nan: host.is_nan(),
                flags: host_flags.0,
            },
        );
        let (ours, flags) = F32(a).to_i32(RoundingMode::TowardZero);
        let (host, host_flags) = host::f32_to_i32(x, RoundingMode::TowardZero);
        let expected = if host_flags.contains(Flags::NV) {
            saturated(
                x.is_nan(),
                a >> 31 != 0,
                i32::MAX as u64,
                i32::MIN as u32 as u64,
            )
        } else {
            int_outcome(host as u32 as u64, host_flags)
        };
        check.exact(
            "to_i32",
            &[a as u64],
            RoundingMode::TowardZero,
            int_outcome(ours as u32 as u64, flags),
            expected,
        );
    }
    check.finish();
    check_wide.finish();
}
