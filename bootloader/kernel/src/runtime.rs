//! What a hosted toolchain's C runtime would supply: `mem*` functions and unwinding stubs.
//! Shared by the kernel and the UEFI loader (the loader includes this file by path).
//!
//! The prebuilt `compiler_builtins` for the linux-gnu target has no `mem` feature, so these
//! symbols are ours. They use `rep movsb`/`rep stosb` and volatile loops so that LLVM cannot
//! recognise them as idioms and compile them back into calls to themselves.

use core::arch::asm;

/// Copies `n` bytes; the regions must not overlap.
///
/// # Safety
/// The C `memcpy` contract: both ranges valid for `n` bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds the C contract; the direction flag is clear (boot code `cld`,
    // and the SysV ABI requires it clear at every call).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// Copies `n` bytes between possibly overlapping regions.
///
/// # Safety
/// Both ranges valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dest is below src or the ranges are disjoint.
        return unsafe { memcpy(dest, src, n) };
    }
    if n == 0 {
        return dest;
    }
    // SAFETY: copy backwards from the last byte with the direction flag set, then clear it
    // again as the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dest
}

/// Fills `n` bytes with the low byte of `value`.
///
/// # Safety
/// The range is valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") value as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// Compares `n` bytes.
///
/// # Safety
/// Both ranges valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and the caller guarantees both ranges; volatile keeps the loop a loop.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compares `n` bytes for equality only.
///
/// # Safety
/// Both ranges valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Length of a NUL-terminated string.
///
/// # Safety
/// `s` points to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a terminator; volatile keeps LLVM from forming `strlen`.
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}

/// The prebuilt `core` and `alloc` are compiled with unwinding and reference this symbol;
/// with `panic = "abort"` it is never called.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops the CPU; nothing is left to run.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Referenced by the prebuilt unwinding metadata; never called with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
