//! Hand-written corner cases: values chosen from the RISC-V F/D chapters and IEEE 754.

use crate::{Flags, RoundingMode, F32, F64};

const RNE: RoundingMode = RoundingMode::NearestEven;

fn d(x: f64) -> F64 {
    F64(x.to_bits())
}

fn s(x: f32) -> F32 {
    F32(x.to_bits())
}

#[test]
fn simple_f64_arithmetic_is_exact() {
    assert_eq!(d(1.5).add(d(2.25), RNE), (d(3.75), Flags::NONE));
    assert_eq!(d(1.5).sub(d(2.25), RNE), (d(-0.75), Flags::NONE));
    assert_eq!(d(1.5).mul(d(-2.0), RNE), (d(-3.0), Flags::NONE));
    assert_eq!(d(3.0).div(d(2.0), RNE), (d(1.5), Flags::NONE));
    assert_eq!(d(9.0).sqrt(RNE), (d(3.0), Flags::NONE));
    assert_eq!(d(2.0).mul_add(d(3.0), d(1.0), RNE), (d(7.0), Flags::NONE));
}

#[test]
fn simple_f32_arithmetic_is_exact() {
    assert_eq!(s(1.5).add(s(2.25), RNE), (s(3.75), Flags::NONE));
    assert_eq!(s(1.5).mul(s(-2.0), RNE), (s(-3.0), Flags::NONE));
    assert_eq!(s(3.0).div(s(2.0), RNE), (s(1.5), Flags::NONE));
    assert_eq!(s(9.0).sqrt(RNE), (s(3.0), Flags::NONE));
}

#[test]
fn one_third_is_inexact() {
    assert_eq!(d(1.0).div(d(3.0), RNE), (d(1.0 / 3.0), Flags::NX));
    assert_eq!(s(1.0).div(s(3.0), RNE), (s(1.0 / 3.0), Flags::NX));
}
