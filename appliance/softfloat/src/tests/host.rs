//! The host x86-64 SSE unit as a reference: each helper runs one instruction under a chosen
//! MXCSR rounding mode and returns the result with the accrued flags in `fflags` layout.
//!
//! MXCSR is loaded, the instruction run and MXCSR stored inside one `asm!` block, so the
//! compiler cannot move or constant-fold the floating-point operation across the mode
//! change. The default MXCSR (all exceptions masked, round to nearest) is restored at the end.
#![allow(unsafe_code)]

use core::arch::asm;

use crate::{Flags, RoundingMode};

/// MXCSR with every exception masked, round to nearest, no FTZ/DAZ: the Linux default.
const MXCSR_DEFAULT: u32 = 0x1f80;

fn mxcsr_for(rm: RoundingMode) -> u32 {
    // MXCSR.RC (bits 14:13): 00 nearest, 01 down, 10 up, 11 toward zero.
    let rounding_control = match rm {
        RoundingMode::NearestEven => 0,
        RoundingMode::Down => 1,
        RoundingMode::Up => 2,
        RoundingMode::TowardZero => 3,
        RoundingMode::NearestMaxMagnitude => panic!("SSE has no ties-to-max-magnitude mode"),
    };
    MXCSR_DEFAULT | rounding_control << 13
}

/// MXCSR status flags to `fflags`: IE->NV, ZE->DZ, OE->OF, UE->UF, PE->NX; DE is ignored.
fn flags_from(mxcsr: u32) -> Flags {
    let mut flags = 0;
    if mxcsr & 0x01 != 0 {
        flags |= 0x10;
    }
    if mxcsr & 0x04 != 0 {
        flags |= 0x08;
    }
    if mxcsr & 0x08 != 0 {
        flags |= 0x04;
    }
    if mxcsr & 0x10 != 0 {
        flags |= 0x02;
    }
    if mxcsr & 0x20 != 0 {
        flags |= 0x01;
    }
    Flags(flags)
}

macro_rules! host_binary {
    ($name:ident, $ty:ty, $insn:literal) => {
        pub fn $name(a: $ty, b: $ty, rm: RoundingMode) -> ($ty, Flags) {
            let mut csr = mxcsr_for(rm);
            let default = MXCSR_DEFAULT;
            let mut x = a;
            // SAFETY: the block only touches the two named MXCSR words and xmm registers
            // it declares, and restores MXCSR to the thread's default.
            unsafe {
                asm!(
                    "ldmxcsr [{csr}]",
                    concat!($insn, " {x}, {y}"),
                    "stmxcsr [{csr}]",
                    "ldmxcsr [{default}]",
                    csr = in(reg) core::ptr::addr_of_mut!(csr),
                    default = in(reg) core::ptr::addr_of!(default),
                    x = inout(xmm_reg) x,
                    y = in(xmm_reg) b,
                    options(nostack),
                );
            }
            (x, flags_from(csr))
        }
    };
}

host_binary!(add_f64, f64, "addsd");
host_binary!(sub_f64, f64, "subsd");
host_binary!(mul_f64, f64, "mulsd");
host_binary!(div_f64, f64, "divsd");
host_binary!(sqrt_f64_of_second, f64, "sqrtsd");
host_binary!(add_f32, f32, "addss");
host_binary!(sub_f32, f32, "subss");
host_binary!(mul_f32, f32, "mulss");
host_binary!(div_f32, f32, "divss");
host_binary!(sqrt_f32_of_second, f32, "sqrtss");

pub fn sqrt_f64(a: f64, rm: RoundingMode) -> (f64, Flags) {
    sqrt_f64_of_second(0.0, a, rm)
}

pub fn sqrt_f32(a: f32, rm: RoundingMode) -> (f32, Flags) {
    sqrt_f32_of_second(0.0, a, rm)
}

/// Comparison predicates of `cmpsd`/`cmpss`: EQ_OQ (quiet), LT_OS and LE_OS (signaling).
/// The instruction leaves an all-ones mask for true.
macro_rules! host_compare {
    ($name:ident, $ty:ty, $insn:literal) => {
        pub fn $name(a: $ty, b: $ty) -> (bool, Flags) {
            let mut csr = MXCSR_DEFAULT;
            let default = MXCSR_DEFAULT;
            let mut x = a;
            // SAFETY: as in `host_binary`.
            unsafe {
                asm!(
                    "ldmxcsr [{csr}]",
                    concat!($insn, " {x}, {y}"),
                    "stmxcsr [{csr}]",
                    "ldmxcsr [{default}]",
                    csr = in(reg) core::ptr::addr_of_mut!(csr),
                    default = in(reg) core::ptr::addr_of!(default),
                    x = inout(xmm_reg) x,
                    y = in(xmm_reg) b,
                    options(nostack),
                );
            }
            (x.to_bits() != 0, flags_from(csr))
        }
    };
}

host_compare!(eq_f64, f64, "cmpeqsd");
host_compare!(lt_f64, f64, "cmpltsd");
host_compare!(le_f64, f64, "cmplesd");
host_compare!(eq_f32, f32, "cmpeqss");
host_compare!(lt_f32, f32, "cmpltss");
host_compare!(le_f32, f32, "cmpless");

/// True when the CPU has FMA3 (needed for the fused multiply-add oracle).
pub fn has_fma() -> bool {
    std::is_x86_feature_detected!("fma")
}

macro_rules! host_fma {
    ($name:ident, $ty:ty, $insn:literal) => {
        /// `a * b + c` with one rounding. Only call when [`has_fma`] is true.
        pub fn $name(a: $ty, b: $ty, c: $ty, rm: RoundingMode) -> ($ty, Flags) {
            assert!(has_fma());
            let mut csr = mxcsr_for(rm);
            let default = MXCSR_DEFAULT;
            let mut x = c;
            // SAFETY: as in `host_binary`; the caller checked that FMA3 exists.
            unsafe {
                asm!(
                    "ldmxcsr [{csr}]",
                    concat!($insn, " {x}, {y}, {z}"),
                    "stmxcsr [{csr}]",
                    "ldmxcsr [{default}]",
                    csr = in(reg) core::ptr::addr_of_mut!(csr),
                    default = in(reg) core::ptr::addr_of!(default),
                    x = inout(xmm_reg) x,
                    y = in(xmm_reg) a,
                    z = in(xmm_reg) b,
                    options(nostack),
                );
            }
            (x, flags_from(csr))
        }
    };
}

host_fma!(fma_f64, f64, "vfmadd231sd");
host_fma!(fma_f32, f32, "vfmadd231ss");

/// `cvtss2sd`.
pub fn f32_to_f64(a: f32) -> (f64, Flags) {
    let mut csr = MXCSR_DEFAULT;
    let default = MXCSR_DEFAULT;
    let x: f64;
    // SAFETY: as in `host_binary`.
    unsafe {
        asm!(
            "ldmxcsr [{csr}]",
            "cvtss2sd {x}, {y}",
            "stmxcsr [{csr}]",
            "ldmxcsr [{default}]",
            csr = in(reg) core::ptr::addr_of_mut!(csr),
            default = in(reg) core::ptr::addr_of!(default),
            x = out(xmm_reg) x,
            y = in(xmm_reg) a,
            options(nostack),
        );
    }
    (x, flags_from(csr))
}

/// `cvtsd2ss`.
pub fn f64_to_f32(a: f64, rm: RoundingMode) -> (f32, Flags) {
    let mut csr = mxcsr_for(rm);
    let default = MXCSR_DEFAULT;
    let x: f32;
    // SAFETY: as in `host_binary`.
    unsafe {
        asm!(
            "ldmxcsr [{csr}]",
            "cvtsd2ss {x}, {y}",
            "stmxcsr [{csr}]",
            "ldmxcsr [{default}]",
            csr = in(reg) core::ptr::addr_of_mut!(csr),
            default = in(reg) core::ptr::addr_of!(default),
            x = out(xmm_reg) x,
            y = in(xmm_reg) a,
            options(nostack),
        );
    }
    (x, flags_from(csr))
}

macro_rules! host_to_int {
    ($name:ident, $ty:ty, $int:ty, $insn:literal, $reg:literal) => {
        /// Float to signed integer under `rm`; out of range gives the "integer indefinite"
        /// (most negative value) with IE.
        pub fn $name(a: $ty, rm: RoundingMode) -> ($int, Flags) {
            let mut csr = mxcsr_for(rm);
            let default = MXCSR_DEFAULT;
            let r: $int;
            // SAFETY: as in `host_binary`.
            unsafe {
                asm!(
                    "ldmxcsr [{csr}]",
                    concat!($insn, " {r", $reg, "}, {y}"),
                    "stmxcsr [{csr}]",
                    "ldmxcsr [{default}]",
                    csr = in(reg) core::ptr::addr_of_mut!(csr),
                    default = in(reg) core::ptr::addr_of!(default),
                    r = out(reg) r,
                    y = in(xmm_reg) a,
                    options(nostack),
                );
            }
            (r, flags_from(csr))
        }
    };
}

host_to_int!(f64_to_i64, f64, i64, "cvtsd2si", "");
host_to_int!(f64_to_i32, f64, i32, "cvtsd2si", ":e");
host_to_int!(f32_to_i64, f32, i64, "cvtss2si", "");
host_to_int!(f32_to_i32, f32, i32, "cvtss2si", ":e");

macro_rules! host_from_int {
    ($name:ident, $ty:ty, $insn:literal) => {
        /// Signed 64-bit integer to float under `rm`.
        pub fn $name(v: i64, rm: RoundingMode) -> ($ty, Flags) {
            let mut csr = mxcsr_for(rm);
            let default = MXCSR_DEFAULT;
            let x: $ty;
            // SAFETY: as in `host_binary`.
            unsafe {
                asm!(
                    "ldmxcsr [{csr}]",
                    concat!($insn, " {x}, {v}"),
                    "stmxcsr [{csr}]",
                    "ldmxcsr [{default}]",
                    csr = in(reg) core::ptr::addr_of_mut!(csr),
                    default = in(reg) core::ptr::addr_of!(default),
                    x = out(xmm_reg) x,
                    v = in(reg) v,
                    options(nostack),
                );
            }
            (x, flags_from(csr))
        }
    };
}

host_from_int!(i64_to_f64, f64, "cvtsi2sd");
host_from_int!(i64_to_f32, f32, "cvtsi2ss");
