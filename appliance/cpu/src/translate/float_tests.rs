//! Translator tests of the inline F and D instructions: every run with the translator must
//! leave the same f and x registers, fflags, mstatus and RAM as the softfloat interpreter.

use alloc::vec::Vec;
extern crate std;

use std::format;

use super::{lockstep, machine, pick, translating};
use crate::csr::MSTATUS_FS;
use crate::csr_numbers::{FCSR, FFLAGS, FRM, MSTATUS};
use crate::inst::{Instruction, Op};
use crate::tests::{ins, Rng};
use crate::Hart;

/// mstatus.FS = Initial (privileged spec 3.1.6.6): FP instructions legal, state clean.
const FS_INITIAL: u64 = 1 << 13;
/// fflags bits (unprivileged spec 11.2).
const NX: u64 = 0x01;
const UF: u64 = 0x02;
const OF: u64 = 0x04;
const DZ: u64 = 0x08;
const NV: u64 = 0x10;
/// The registers the random programs keep `MSTATUS_FS` and `FS_INITIAL` in, to turn FS
/// off and back to Initial.
const FS_MASK_REGISTER: u8 = 28;
const FS_INITIAL_REGISTER: u8 = 27;

/// Doubles that exercise every path: zeros, infinities, NaNs with payloads, signalling
/// NaNs, subnormals, the edges of the normal range, values whose products round to the
/// smallest normal from below (tininess after rounding) or overflow, and the top halves of
/// singles (which read as NaNs when taken as doubles).
const DOUBLES: [u64; 33] = [
    0x0000_0000_0000_0000,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000,
    0xbff8_0000_0000_0000,
    0x4000_0000_0000_0000,
    0x3fe0_0000_0000_0000,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0x7ff8_0000_0000_0123,
    0xfff8_dead_beef_0000,
    0x7ff0_0000_0000_0001,
    0x7ff4_0000_0000_0000,
    0xfff0_0000_0000_0042,
    0x0000_0000_0000_0001,
    0x000f_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x0010_0000_0000_0001,
    0x3ff0_0000_0000_0001,
    0x3fef_ffff_ffff_ffff,
    0x7fef_ffff_ffff_ffff,
    0xffef_ffff_ffff_ffff,
    0x2000_0000_0000_0000,
    0x1ff0_0000_0000_0001,
    0x5fe0_0000_0000_0000,
    0x3fd5_5555_5555_5555,
    0x4059_0000_0000_0000,
    0xc1e0_0000_0000_0000,
    // For fcvt.s.d: just below the smallest normal single (rounds up to it), the smallest
    // normal single, above the largest single (overflows), the smallest subnormal single,
    // and just above half of it.
    0x380f_ffff_ffff_ffff,
    0x3810_0000_0000_0000,
    0x47ef_ffff_ffff_ffff,
    0x36a0_0000_0000_0000,
    0x3690_0000_0000_0001,
];

/// Singles, to be NaN-boxed (or not) in f registers, with the same intent.
const SINGLES: [u32; 22] = [
    0x0000_0000,
    0x8000_0000,
    0x3f80_0000,
    0xbfc0_0000,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0x7fc0_0123,
    0xffc0_beef,
    0x7f80_0001,
    0x7fa0_0000,
    0x0000_0001,
    0x007f_ffff,
    0x0080_0000,
    0x0080_0001,
    0x3f80_0001,
    0x3f7f_ffff,
    0x7f7f_ffff,
    0x2000_0000,
    0x1f80_0001,
    0x5f00_0000,
    0x3eaa_aaab,
];

/// Integers for conversions and moves: the edges of i32, u32 and i64, and values that
/// need rounding as singles or doubles.
const INTEGERS: [u64; 10] = [
    0,
    1,
    u64::MAX,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff_8000_0000,
    0x0100_0001,
    0x0020_0000_0000_0001,
    i64::MAX as u64,
    i64::MIN as u64,
];

/// One f register value: an adversarial double, an ordinary one (so that results are
/// not all NaNs), a NaN-boxed single of either kind, or a badly boxed one.
fn float_value(rng: &mut Rng) -> u64 {
    // Exponents around 1.0, and a random sign and fraction.
    let ordinary_double =
        |rng: &mut Rng| (rng.below(2) << 63) | (1020 + rng.below(8)) << 52 | rng.next() >> 12;
    let ordinary_single =
        |rng: &mut Rng| (rng.below(2) << 31) | (124 + rng.below(8)) << 23 | rng.next() >> 41;
    match rng.below(16) {
        0..=3 => *pick(rng, &DOUBLES),
        4..=6 => ordinary_double(rng),
        7..=9 => 0xffff_ffff_0000_0000 | *pick(rng, &SINGLES) as u64,
        10..=12 => 0xffff_ffff_0000_0000 | ordinary_single(rng),
        13 => *pick(rng, &SINGLES) as u64 | (rng.below(0xffff_fffe) << 32),
        _ => rng.next(),
    }
}

fn seed_float_registers(h: &mut Hart, rng: &mut Rng) {
    for r in 0..32 {
        h.f[r] = float_value(rng);
    }
    for r in 7..32 {
        h.set_x(r, *pick(rng, &INTEGERS));
    }
    h.set_x(FS_MASK_REGISTER as usize, MSTATUS_FS);
    h.set_x(FS_INITIAL_REGISTER as usize, FS_INITIAL);
}

fn fp(op: Op, rd: u8, rs1: u8, rs2: u8, rs3: u8, rm: u8) -> Instruction {
    Instruction {
        op,
        rd,
        rs1,
        rs2,
        rs3,
        rm,
        length_bytes: 4,
        imm: 0,
    }
}

/// A random program of FP instructions over adversarial operands: arithmetic, fused
/// multiply-adds, sign injection, compares, moves, conversions, FP loads and stores
/// (some faulting, some to MMIO), instructions that stay interpreted (fmin, fclass,
/// conversions to integers, other rounding modes, reserved ones), reads of fflags, frm
/// and fcsr, writes of fflags, frm and fcsr, FS turned off and on, and a few integer instructions and
/// branches to cut blocks.
fn random_float_program(rng: &mut Rng, length: usize) -> Vec<Instruction> {
    use Op::*;
    let binary = [
        FaddD, FsubD, FmulD, FdivD, FaddS, FsubS, FmulS, FdivS, FsgnjD, FsgnjnD, FsgnjxD, FsgnjS,
        FsgnjnS, FsgnjxS, FminD, FmaxD, FminS, FmaxS,
    ];
    let fused = [
        FmaddD, FmsubD, FnmsubD, FnmaddD, FmaddS, FmsubS, FnmsubS, FnmaddS,
    ];
    let unary = [FsqrtD, FsqrtS, FcvtDS, FcvtSD];
    let compares = [FeqD, FltD, FleD, FeqS, FltS, FleS];
    let to_integer = [
        FmvXD, FmvXW, FclassD, FclassS, FcvtWD, FcvtLD, FcvtWS, FcvtWuD,
    ];
    let from_integer = [
        FmvDX, FmvWX, FcvtDW, FcvtDWu, FcvtDL, FcvtDLu, FcvtSW, FcvtSWu, FcvtSL, FcvtSLu,
    ];
    let memory = [Fld, Fsd, Flw, Fsw];
    let f = |rng: &mut Rng| rng.below(32) as u8;
    // x destinations avoid x0, the bases x2-x6 and the FS mask.
    let x = |rng: &mut Rng| -> u8 {
        loop {
            let r = 7 + rng.below(25) as u8;
            if r != FS_MASK_REGISTER && r != FS_INITIAL_REGISTER {
                return r;
            }
        }
    };
    let rm = |rng: &mut Rng| -> u8 {
        match rng.below(50) {
            0..=29 => 7,
            30..=45 => 0,
            46..=48 => 1 + rng.below(4) as u8,
            _ => 5 + rng.below(2) as u8,
        }
    };
    let mut program = Vec::with_capacity(length);
    while program.len() < length {
        let here = program.len() as i32;
        let inst = match rng.below(100) {
            0..=29 => fp(*pick(rng, &binary), f(rng), f(rng), f(rng), 0, rm(rng)),
            30..=41 => fp(*pick(rng, &fused), f(rng), f(rng), f(rng), f(rng), rm(rng)),
            42..=47 => fp(*pick(rng, &unary), f(rng), f(rng), 0, 0, rm(rng)),
            48..=55 => fp(*pick(rng, &compares), x(rng), f(rng), f(rng), 0, 0),
            56..=61 => fp(*pick(rng, &to_integer), x(rng), f(rng), 0, 0, rm(rng)),
            62..=67 => fp(*pick(rng, &from_integer), f(rng), x(rng), 0, 0, rm(rng)),
            68..=79 => {
                let op = *pick(rng, &memory);
                let (base, offset) = match rng.below(40) {
                    0 => (3, 0),
                    1 => (6, 8 * rng.below(8) as i32),
                    2 => (2, 1 + 8 * rng.below(8) as i32),
                    _ => (2, 8 * rng.below(64) as i32 - 256),
                };
                let (rd, rs2) = if matches!(op, Fsd | Fsw) {
                    (0, f(rng))
                } else {
                    (f(rng), 0)
                };
                ins(op, rd, base, rs2, offset)
            }
            80..=82 => {
                let csr = *pick(rng, &[FFLAGS, FFLAGS, FRM, FCSR]);
                let op = *pick(rng, &[Csrrs, Csrrs, Csrrc, Csrrsi, Csrrci]);
                ins(op, x(rng), 0, 0, csr as i32)
            }
            83 => ins(Csrrwi, 0, rng.below(32) as u8, 0, FFLAGS as i32),
            84 => match rng.below(4) {
                0 => ins(Csrrw, 0, x(rng), 0, FCSR as i32),
                1 => ins(Csrrw, 0, x(rng), 0, FFLAGS as i32),
                2 => ins(Csrrw, x(rng), x(rng), 0, FFLAGS as i32),
                _ => ins(Csrrwi, 0, 0, 0, FFLAGS as i32),
            },
            85 => {
                let frm = *pick(rng, &[0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5]);
                ins(Csrrwi, 0, frm, 0, FRM as i32)
            }
            86 if rng.below(2) == 0 => ins(Csrrc, 0, FS_MASK_REGISTER, 0, MSTATUS as i32),
            86..=88 => {
                // FS = Initial: the next f register write must make it Dirty again.
                program.push(ins(Csrrc, 0, FS_MASK_REGISTER, 0, MSTATUS as i32));
                ins(Csrrs, 0, FS_INITIAL_REGISTER, 0, MSTATUS as i32)
            }
            89..=93 => ins(Addi, x(rng), x(rng), 0, rng.below(64) as i32 - 32),
            94..=97 => {
                let delta = if rng.below(6) == 0 {
                    -(rng.below(here.min(10) as u64 + 1) as i32)
                } else {
                    1 + rng.below(6) as i32
                };
                ins(Bne, 0, x(rng), x(rng), delta * 4)
            }
            _ => ins(Jal, 0, 0, 0, (1 + rng.below(4) as i32) * 4),
        };
        program.push(inst);
    }
    program.push(ins(Jal, 0, 0, 0, 0));
    program
}

/// Two harts with FS = Initial and the same adversarial registers.
fn float_pair(program: &[Instruction], seed: u64) -> (Hart, Hart) {
    let mut reference = machine(program);
    let mut translated = translating(machine(program));
    for h in [&mut reference, &mut translated] {
        h.write_csr(MSTATUS, FS_INITIAL);
        seed_float_registers(h, &mut Rng(seed));
        // Scratch memory holds adversarial values too, for the FP loads.
        let mut values = Rng(seed ^ 0x5eed);
        for slot in 0..128u64 {
            let v = float_value(&mut values);
            h.write_phys(
                crate::GuestPhysAddr(super::SCRATCH + 0x700 + 8 * slot),
                &v.to_le_bytes(),
            )
            .expect("scratch is RAM");
        }
    }
    (reference, translated)
}

fn fp_inline_ran(h: &Hart) -> u64 {
    let stats = h.translator_stats().expect("translator on");
    stats.instructions_translated
}

#[test]
fn random_float_programs_match_the_interpreter_after_every_block() {
    const SEED: u64 = 0xf10a_7000_0000_0001;
    const PROGRAMS: u64 = 100;
    const PROGRAM_INSTRUCTIONS: usize = 600;
    std::println!("seed {SEED:#x}");
    for fma in [true, false] {
        for program_index in 0..PROGRAMS {
            let mut rng = Rng(SEED ^ program_index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let program = random_float_program(&mut rng, PROGRAM_INSTRUCTIONS);
            let (mut reference, mut translated) = float_pair(&program, rng.next() | 1);
            if let Some(t) = translated.translator.as_mut() {
                t.fused_multiply_add &= fma;
            }
            // Short and longer budgets: states are compared at many cuts inside and between
            // blocks, and a block runs translated only when the budget covers all of it.
            let budgets: Vec<u64> = (0..200)
                .map(|_| {
                    let longest = if rng.below(2) == 0 { 12 } else { 60 };
                    1 + rng.below(longest)
                })
                .collect();
            lockstep(
                &mut reference,
                &mut translated,
                &budgets,
                &format!("program {program_index} of seed {SEED:#x}, fma {fma}"),
            );
            assert!(fp_inline_ran(&translated) > 0, "nothing was translated");
        }
    }
}

/// Runs `program` (ending in a jump to itself) from the given registers in both harts
/// with one budget; returns the translated hart.
fn run_both(program: &[Instruction], setup: impl Fn(&mut Hart)) -> Hart {
    let (mut reference, mut translated) = float_pair(program, 1);
    setup(&mut reference);
    setup(&mut translated);
    lockstep(
        &mut reference,
        &mut translated,
        &[program.len() as u64 + 5],
        "directed",
    );
    assert!(
        translated
            .translator_stats()
            .expect("translator on")
            .entries
            > 0
    );
    translated
}

/// One FP instruction into f3 from f1 and f2 (and f4 as the addend), then a jump to
/// itself; returns f3 and fflags after the translated run.
fn one(inst: Instruction, a: u64, b: u64, c: u64) -> (u64, u64) {
    let program = [inst, ins(Op::Jal, 0, 0, 0, 0)];
    let h = run_both(&program, |h| {
        h.f[1] = a;
        h.f[2] = b;
        h.f[4] = c;
        h.csr.fflags = 0;
    });
    (h.f[3], h.csr.fflags)
}

#[test]
fn inline_double_results_and_flags_are_the_softfloat_ones() {
    use Op::*;
    const CANONICAL: u64 = 0x7ff8_0000_0000_0000;
    let rne = |op| fp(op, 3, 1, 2, 4, 7);
    // Tininess after rounding: (1 + 2^-52) * (2^-1022 - 2^-1074) is below the smallest
    // normal exactly but rounds to it, so no underflow, only inexact.
    assert_eq!(
        one(rne(FmulD), 0x3ff0_0000_0000_0001, 0x000f_ffff_ffff_ffff, 0),
        (0x0010_0000_0000_0000, NX)
    );
    // Tiny and inexact after rounding: underflow and inexact.
    assert_eq!(
        one(rne(FmulD), 0x3fe0_0000_0000_0000, 0x0000_0000_0000_0003, 0),
        (0x0000_0000_0000_0002, UF | NX)
    );
    // Tiny but exact: no flag.
    assert_eq!(
        one(rne(FmulD), 0x3fe0_0000_0000_0000, 0x0000_0000_0000_0002, 0),
        (0x0000_0000_0000_0001, 0)
    );
    // Overflow: infinity, overflow and inexact.
    assert_eq!(
        one(rne(FaddD), 0x7fef_ffff_ffff_ffff, 0x7fef_ffff_ffff_ffff, 0),
        (0x7ff0_0000_0000_0000, OF | NX)
    );
    // x86 would give its default NaN (sign set); RISC-V the canonical NaN and NV.
    assert_eq!(
        one(rne(FsubD), 0x7ff0_0000_0000_0000, 0x7ff0_0000_0000_0000, 0),
        (CANONICAL, NV)
    );
    // A quiet NaN's payload does not propagate, and raises nothing.
    assert_eq!(
        one(rne(FaddD), 0xfff8_dead_beef_0000, 0x3ff0_0000_0000_0000, 0),
        (CANONICAL, 0)
    );
    // A signalling NaN raises NV.
    assert_eq!(
        one(rne(FmulD), 0x3ff0_0000_0000_0000, 0x7ff0_0000_0000_0001, 0),
        (CANONICAL, NV)
    );
    // Division by zero.
    assert_eq!(
        one(rne(FdivD), 0xbff0_0000_0000_0000, 0, 0),
        (0xfff0_0000_0000_0000, DZ)
    );
    // sqrt of a negative number.
    assert_eq!(
        one(fp(FsqrtD, 3, 1, 0, 0, 0), 0xbff0_0000_0000_0000, 0, 0),
        (CANONICAL, NV)
    );
    // inf * 0 + qNaN raises NV (unprivileged spec 11.6), whatever FMA3 does.
    assert_eq!(
        one(rne(FmaddD), 0x7ff0_0000_0000_0000, 0, 0x7ff8_0000_0000_0000),
        (CANONICAL, NV)
    );
    // A fused multiply-add rounds once: 1/3 * 3 - 1 is the rounding error of 1/3 * 3.
    assert_eq!(
        one(
            rne(FmsubD),
            0x3fd5_5555_5555_5555,
            0x4008_0000_0000_0000,
            0x3ff0_0000_0000_0000
        ),
        (0xbc90_0000_0000_0000, 0)
    );
    // fnmadd is -(a * b) - c: -(1 * 1) - 1 = -2.
    assert_eq!(
        one(
            rne(FnmaddD),
            0x3ff0_0000_0000_0000,
            0x3ff0_0000_0000_0000,
            0x3ff0_0000_0000_0000
        ),
        (0xc000_0000_0000_0000, 0)
    );
}

#[test]
fn inline_single_and_conversion_results_detect_tininess_after_rounding() {
    use Op::*;
    const BOX: u64 = 0xffff_ffff_0000_0000;
    let rne = |op| fp(op, 3, 1, 2, 4, 0);
    // (1 + 2^-23) * (2^-126 - 2^-149) rounds up to the smallest normal single: inexact
    // only.
    assert_eq!(
        one(rne(FmulS), BOX | 0x3f80_0001, BOX | 0x007f_ffff, 0),
        (BOX | 0x0080_0000, NX)
    );
    // The same through a fused multiply-add with -0 added.
    assert_eq!(
        one(
            rne(FmaddD),
            0x3ff0_0000_0000_0001,
            0x000f_ffff_ffff_ffff,
            0x8000_0000_0000_0000
        ),
        (0x0010_0000_0000_0000, NX)
    );
    // A double just below the smallest normal single converts to it: inexact only.
    assert_eq!(
        one(rne(FcvtSD), 0x380f_ffff_ffff_ffff, 0, 0),
        (BOX | 0x0080_0000, NX)
    );
    // Just above half the smallest subnormal single: rounds up to it, tiny and inexact.
    assert_eq!(
        one(rne(FcvtSD), 0x3690_0000_0000_0001, 0, 0),
        (BOX | 0x0000_0001, UF | NX)
    );
    // Above the largest single: overflow to infinity.
    assert_eq!(
        one(rne(FcvtSD), 0x47ef_ffff_ffff_ffff, 0, 0),
        (BOX | 0x7f80_0000, OF | NX)
    );
    // A signalling NaN single widens to the canonical double NaN with NV.
    assert_eq!(
        one(rne(FcvtDS), BOX | 0x7f80_0001, 0, 0),
        (0x7ff8_0000_0000_0000, NV)
    );
    // fcvt.s.l rounds: 2^24 + 1 is not a single.
    let program = [fp(FcvtSL, 3, 10, 0, 0, 7), ins(Jal, 0, 0, 0, 0)];
    let h = run_both(&program, |h| {
        h.set_x(10, 0x0100_0001);
        h.csr.fflags = 0;
    });
    assert_eq!((h.f[3], h.csr.fflags), (BOX | 0x4b80_0000, NX));
}

#[test]
fn min_and_max_order_zeros_and_return_the_number_beside_a_nan() {
    use Op::*;
    const CANONICAL: u64 = 0x7ff8_0000_0000_0000;
    const BOX: u64 = 0xffff_ffff_0000_0000;
    let min = fp(FminD, 3, 1, 2, 0, 0);
    let max = fp(FmaxD, 3, 1, 2, 0, 0);
    let one_d = 0x3ff0_0000_0000_0000;
    let two_d = 0x4000_0000_0000_0000;
    assert_eq!(one(min, two_d, one_d, 0), (one_d, 0));
    assert_eq!(one(max, one_d, two_d, 0), (two_d, 0));
    assert_eq!(one(max, 0xfff0_0000_0000_0000, one_d, 0), (one_d, 0));
    // -0 is below +0 (11.6), in either order.
    for (a, b) in [(0, 0x8000_0000_0000_0000), (0x8000_0000_0000_0000, 0)] {
        assert_eq!(one(min, a, b, 0), (0x8000_0000_0000_0000, 0));
        assert_eq!(one(max, a, b, 0), (0, 0));
    }
    // One quiet NaN: the number, no flag; a signalling one: the number and NV.
    assert_eq!(one(min, 0x7ff8_0000_0000_0123, one_d, 0), (one_d, 0));
    assert_eq!(one(max, one_d, 0x7ff0_0000_0000_0001, 0), (one_d, NV));
    // Two NaNs: the canonical NaN.
    assert_eq!(
        one(min, 0xfff8_0000_0000_0001, 0x7ff8_0000_0000_0002, 0),
        (CANONICAL, 0)
    );
    let min_s = fp(FminS, 3, 1, 2, 0, 0);
    assert_eq!(
        one(min_s, BOX | 0x4000_0000, BOX | 0x3f80_0000, 0),
        (BOX | 0x3f80_0000, 0)
    );
    assert_eq!(
        one(min_s, BOX | 0x7fc0_0001, BOX | 0x3f80_0000, 0),
        (BOX | 0x3f80_0000, 0)
    );
}

#[test]
fn inline_single_operands_must_be_nan_boxed() {
    use Op::*;
    const BOX: u64 = 0xffff_ffff_0000_0000;
    let add = fp(FaddS, 3, 1, 2, 0, 0);
    assert_eq!(
        one(add, BOX | 0x3f80_0000, BOX | 0x3f80_0000, 0),
        (BOX | 0x4000_0000, 0)
    );
    // An operand not boxed reads as the canonical NaN: the sum is the canonical NaN,
    // boxed, with no flag (the canonical NaN is quiet).
    assert_eq!(
        one(add, 0x0000_0000_3f80_0000, BOX | 0x3f80_0000, 0),
        (BOX | 0x7fc0_0000, 0)
    );
    // fsgnj.s of a badly boxed value takes the canonical NaN's magnitude.
    assert_eq!(
        one(fp(FsgnjnS, 3, 1, 2, 0, 0), 0x1234_5678_3f80_0000, BOX, 0),
        (BOX | 0xffc0_0000, 0)
    );
    // feq.s with a signalling NaN raises NV; flt.s with a quiet one does too.
    let program = [
        fp(FeqS, 10, 1, 2, 0, 0),
        fp(FltS, 11, 1, 1, 0, 0),
        ins(Op::Jal, 0, 0, 0, 0),
    ];
    let h = run_both(&program, |h| {
        h.f[1] = BOX | 0x7fc0_0000;
        h.f[2] = BOX | 0x7f80_0001;
        h.csr.fflags = 0;
    });
    assert_eq!((h.x[10], h.x[11], h.csr.fflags), (0, 0, NV));
}

#[test]
fn an_fp_instruction_with_fs_off_traps_and_a_write_makes_fs_dirty() {
    use Op::*;
    let program = [
        fp(FaddD, 3, 1, 2, 0, 7),
        fp(FaddD, 5, 1, 2, 0, 7),
        ins(Jal, 0, 0, 0, 0),
    ];
    // FS off: both adds trap (the handler skips them), and nothing changes in f.
    let h = run_both(&program, |h| {
        h.csr.mstatus &= !MSTATUS_FS;
        h.f[3] = 7;
    });
    assert_eq!(h.f[3], 7);
    assert_eq!(h.csr.mstatus & MSTATUS_FS, 0);
    // FS initial: the add makes it dirty, with SD.
    let h = run_both(&program, |h| {
        h.f[1] = 0x3ff0_0000_0000_0000;
        h.f[2] = 0x3ff0_0000_0000_0000;
    });
    assert_eq!(h.f[3], 0x4000_0000_0000_0000);
    assert_eq!(
        h.csr.mstatus & (MSTATUS_FS | crate::csr::MSTATUS_SD),
        MSTATUS_FS | crate::csr::MSTATUS_SD
    );
}

#[test]
fn dynamic_rounding_other_than_nearest_runs_in_the_interpreter() {
    use Op::*;
    // 1/10 rounds up in the last place to nearest and upwards, down towards zero and
    // downwards.
    let program = [fp(FdivD, 3, 1, 2, 0, 7), ins(Jal, 0, 0, 0, 0)];
    for (frm, expected) in [
        (0, 0x3fb9_9999_9999_999a),
        (1, 0x3fb9_9999_9999_9999),
        (2, 0x3fb9_9999_9999_9999),
        (3, 0x3fb9_9999_9999_999a),
    ] {
        let h = run_both(&program, |h| {
            h.csr.frm = frm;
            h.f[1] = 0x3ff0_0000_0000_0000;
            h.f[2] = 0x4024_0000_0000_0000;
        });
        assert_eq!(h.f[3], expected, "frm {frm}");
        assert_eq!(h.csr.fflags, NX, "frm {frm}");
    }
}

#[test]
fn fused_multiply_adds_are_interpreted_on_a_host_without_fma3() {
    use Op::*;
    let program = [
        fp(FmaddD, 3, 1, 2, 4, 7),
        fp(FnmsubD, 5, 1, 2, 4, 7),
        fp(FaddD, 6, 1, 2, 0, 7),
        ins(Jal, 0, 0, 0, 0),
    ];
    for fma in [false, true] {
        let (mut reference, mut translated) = float_pair(&program, 1);
        if let Some(t) = translated.translator.as_mut() {
            t.fused_multiply_add &= fma;
        }
        for h in [&mut reference, &mut translated] {
            h.f[1] = 0x3ff8_0000_0000_0000;
            h.f[2] = 0x4000_0000_0000_0000;
            h.f[4] = 0x3ff0_0000_0000_0000;
        }
        lockstep(&mut reference, &mut translated, &[10], "fma");
        // 1.5 * 2 + 1 = 4 and -(1.5 * 2) + 1 = -2.
        assert_eq!(
            (translated.f[3], translated.f[5]),
            (0x4010_0000_0000_0000, 0xc000_0000_0000_0000)
        );
        let stats = translated.translator_stats().expect("translator on");
        let expected = if fma && super::super::emit::float::host_has_fused_multiply_add() {
            0
        } else {
            2
        };
        assert_eq!(stats.interpreted, expected, "fma {fma}");
    }
}

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: stmxcsr writes the four bytes of a live local.
    unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack)) };
    value
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(value: u32) {
    // SAFETY: the callers pass valid MXCSR values (no reserved bit set).
    unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack)) };
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_embedders_mxcsr_neither_leaks_into_translated_code_nor_changes() {
    use Op::*;
    // Round towards zero (RC = 11), flush to zero and denormals are zero, PE already set:
    // translated code must still round to nearest, keep subnormals, and hand this back.
    const EMBEDDER: u32 = 0x1f80 | 3 << 13 | 1 << 15 | 1 << 6 | 1 << 5;
    let program = [
        fp(FdivD, 3, 1, 2, 0, 7),
        fp(FmulD, 5, 6, 7, 0, 7),
        ins(Jal, 0, 0, 0, 0),
    ];
    let (mut reference, mut translated) = float_pair(&program, 1);
    for h in [&mut reference, &mut translated] {
        h.f[1] = 0x3ff0_0000_0000_0000;
        h.f[2] = 0x4024_0000_0000_0000;
        h.f[6] = 0x3fe0_0000_0000_0000;
        h.f[7] = 0x0000_0000_0000_0003;
        h.csr.fflags = 0;
    }
    let saved = mxcsr();
    set_mxcsr(EMBEDDER);
    let mut bus = crate::tests::Bus::default();
    translated.run(&mut bus, 10);
    let after = mxcsr();
    set_mxcsr(saved);
    assert_eq!(after, EMBEDDER);
    let mut reference_bus = crate::tests::Bus::default();
    reference.run(&mut reference_bus, 10);
    lockstep(&mut reference, &mut translated, &[0], "mxcsr");
    assert_eq!(translated.f[3], 0x3fb9_9999_9999_999a);
    assert_eq!(translated.f[5], 0x0000_0000_0000_0002);
    assert_eq!(translated.csr.fflags, UF | NX);
    assert!(
        translated
            .translator_stats()
            .expect("translator on")
            .entries
            > 0
    );
}

#[test]
fn fflags_saved_and_restored_around_fp_code_stays_in_translated_code() {
    use Op::*;
    // glibc's pattern around FP code that must not leave flags behind: read frm and
    // fflags, compute (1 + 2^-63 raises NX), write fflags back and frm unchanged.
    let program = [
        ins(Csrrs, 10, 0, 0, FRM as i32),
        ins(Csrrs, 11, 0, 0, FFLAGS as i32),
        fp(FaddD, 3, 1, 2, 0, 7),
        ins(Csrrw, 0, 11, 0, FFLAGS as i32),
        ins(Csrrw, 0, 10, 0, FRM as i32),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -24),
        ins(Jal, 0, 0, 0, 0),
    ];
    let (mut reference, mut translated) = float_pair(&program, 1);
    for h in [&mut reference, &mut translated] {
        h.f[1] = 0x3ff0_0000_0000_0000;
        h.f[2] = 0x3c00_0000_0000_0000;
        h.csr.fflags = DZ;
        h.x[7] = 1000;
    }
    lockstep(&mut reference, &mut translated, &[3, 2, 7000], "fflags");
    assert_eq!(
        (translated.x[7], translated.x[10], translated.x[11]),
        (0, 0, DZ)
    );
    assert_eq!(translated.csr.fflags, DZ);
    let stats = translated.translator_stats().expect("translator on");
    // The writes end blocks, the reads do not: the loop is five blocks, entered once and
    // once more after each first jump between two of them (which links it), never left
    // for the writes (2005 entries when each of them left). Only the write of frm goes
    // to the interpreter: the reads and the write of fflags are translated (4000 calls
    // when they were not).
    assert_eq!(
        (stats.entries, stats.chains, stats.interpreted),
        (6, 5, 1000),
        "{stats:?}"
    );
}

#[test]
fn turning_fs_off_and_on_in_s_mode_stays_in_translated_code() {
    use crate::csr_numbers::SSTATUS;
    use crate::Privilege;
    use Op::*;
    // Linux's trap entry clears FS and SUM (csrrc from a register) and its return restores
    // sstatus (csrw): neither leaves translated code any more, and the FP instruction after
    // each starts a block whose entry checks FS afresh. While FS is off, the add in the
    // first variant traps (the M-mode handler skips it); the one after the restore runs.
    for add_while_off in [false, true] {
        let while_off = if add_while_off {
            fp(FaddD, 3, 1, 2, 0, 7)
        } else {
            ins(Addi, 11, 11, 0, 1)
        };
        let program = [
            ins(Addi, 10, 10, 0, 1),
            ins(Csrrc, 9, 16, 0, SSTATUS as i32),
            while_off,
            ins(Csrrw, 0, 9, 0, SSTATUS as i32),
            fp(FaddD, 1, 1, 2, 0, 7),
            ins(Addi, 7, 7, 0, -1),
            ins(Bne, 0, 7, 0, -24),
            ins(Jal, 0, 0, 0, 0),
        ];
        let (mut reference, mut translated) = float_pair(&program, 1);
        for h in [&mut reference, &mut translated] {
            h.write_csr(MSTATUS, MSTATUS_FS | crate::csr::MSTATUS_SUM);
            h.reset(super::CODE, Privilege::Supervisor, 0, 0);
            h.set_x(7, 1000);
            h.set_x(16, MSTATUS_FS | crate::csr::MSTATUS_SUM);
            h.f[1] = 0;
            h.f[2] = 0x3ff0_0000_0000_0000;
        }
        let what = format!("fp add while off: {add_while_off}");
        lockstep(&mut reference, &mut translated, &[3, 17, 20_000], &what);
        // 1000 additions of 1.0, and sstatus as it was.
        assert_eq!(translated.f[1], 0x408f_4000_0000_0000, "{what}");
        assert_eq!(
            translated.csr.mstatus & (MSTATUS_FS | crate::csr::MSTATUS_SUM),
            MSTATUS_FS | crate::csr::MSTATUS_SUM,
            "{what}"
        );
        let stats = translated.translator_stats().expect("translator on");
        // Without the trapping add: entries only where the three runs start and their
        // first blocks end, no exit in the loop (each csrrc and csrw left translated code
        // before: about 2000 more). With it: the trap and the handler's mret leave, twice an
        // iteration. The interpreter runs each csrrc and csrw, and each add while FS is off.
        let expected = if add_while_off {
            (2004, 2999)
        } else {
            (6, 1999)
        };
        assert_eq!((stats.entries, stats.interpreted), expected, "{what}");
    }
}
