//! Measures nanoseconds per operation of the hot binary64 operations (and a few others).
//!
//! Run with `cargo run --release -p understudy-softfloat --example bench`. A benchmark, not a
//! test: it asserts nothing about speed.

use std::hint::black_box;
use std::time::Instant;

use understudy_softfloat::{Flags, RoundingMode, F32, F64};

const OPERANDS: usize = 1024;
const _: () = assert!(OPERANDS.is_power_of_two());
const ROUNDS: usize = 4_000;

/// Deterministic normal operands in [1, 2^8) with random significands.
fn operands() -> Vec<u64> {
    let mut state = 0x1234_5678_9abc_def0u64;
    (0..OPERANDS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let exp = 1023 + (state >> 60);
            (exp << 52) | (state & ((1 << 52) - 1))
        })
        .collect()
}

fn measure(name: &str, values: &[u64], op: impl Fn(u64, u64, u64) -> (u64, Flags)) {
    let start = Instant::now();
    let mut sink = 0u64;
    let mut flags = Flags::NONE;
    for _ in 0..ROUNDS {
        for i in 0..values.len() {
            let a = values[i];
            // OPERANDS is a power of two, so masking avoids a division in the loop.
            let b = values[(i + 1) & (OPERANDS - 1)];
            let c = values[(i + 7) & (OPERANDS - 1)];
            let (r, f) = op(black_box(a), black_box(b), black_box(c));
            sink ^= r;
            flags |= f;
        }
    }
    let elapsed = start.elapsed();
    let ops = (ROUNDS * values.len()) as f64;
    black_box((sink, flags));
    println!("{name:<10} {:>7.2} ns/op", elapsed.as_nanos() as f64 / ops);
}

fn main() {
    let values = operands();
    let singles: Vec<u64> = values
        .iter()
        .map(|&v| F64(v).to_f32(RoundingMode::NearestEven).0 .0 as u64)
        .collect();
    let rm = RoundingMode::NearestEven;
    measure("baseline", &values, |a, b, _| (a ^ b, Flags::NONE));
    measure("f64 add", &values, |a, b, _| {
        let (r, f) = F64(a).add(F64(b), rm);
        (r.0, f)
    });
    measure("f64 mul", &values, |a, b, _| {
        let (r, f) = F64(a).mul(F64(b), rm);
        (r.0, f)
    });
    measure("f64 div", &values, |a, b, _| {
        let (r, f) = F64(a).div(F64(b), rm);
        (r.0, f)
    });
    measure("f64 fma", &values, |a, b, c| {
        let (r, f) = F64(a).mul_add(F64(b), F64(c), rm);
        (r.0, f)
    });
    measure("f64 sqrt", &values, |a, _, _| {
        let (r, f) = F64(a).sqrt(rm);
        (r.0, f)
    });
    measure("f64 to_i64", &values, |a, _, _| {
        let (r, f) = F64(a).to_i64(rm);
        (r as u64, f)
    });
    measure("f32 add", &singles, |a, b, _| {
        let (r, f) = F32(a as u32).add(F32(b as u32), rm);
        (r.0 as u64, f)
    });
    measure("f32 mul", &singles, |a, b, _| {
        let (r, f) = F32(a as u32).mul(F32(b as u32), rm);
        (r.0 as u64, f)
    });
    measure("f32 div", &singles, |a, b, _| {
        let (r, f) = F32(a as u32).div(F32(b as u32), rm);
        (r.0 as u64, f)
    });
    measure("f32 fma", &singles, |a, b, c| {
        let (r, f) = F32(a as u32).mul_add(F32(b as u32), F32(c as u32), rm);
        (r.0 as u64, f)
    });
    measure("f32 sqrt", &singles, |a, _, _| {
        let (r, f) = F32(a as u32).sqrt(rm);
        (r.0 as u64, f)
    });
}
