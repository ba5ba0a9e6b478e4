//! Executable memory for the translator's code cache: a piece of the identity-mapped heap.
//!
//! The boot page tables never set the no-execute bit and EFER.NXE stays clear, so every
//! mapped page is executable (Intel SDM vol. 3A 4.6: with NXE = 0 instruction fetches are
//! allowed from any present page); a heap allocation is therefore code memory as it is.

use alloc::alloc::{alloc, dealloc, Layout};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use understudy_machine::{ExecutableMemory, Machine, CODE_BYTES_MIN};

/// The code cache the translator gets when the heap has room: a Linux boot's hot code fits
/// several times; when full, the translator empties it and starts over.
pub const CODE_CACHE_BYTES_MAX: usize = 16 << 20;
/// Runs before a block is translated. Four times the hosted default
/// (`HOT_EXECUTIONS_DEFAULT`, 16): that makes 65 MB of a Debian guest's code hot, which would
/// cycle this cache several times over (at 64 it is about 47 MB), and the minimal guest in
/// the appliance took 8.0 s from start to ready under QEMU TCG at 16 against 6.7 s at 64
/// (one run each).
pub const HOT_EXECUTIONS: u32 = 64;
/// What the rest of the appliance keeps of the free heap after the code cache is taken.
pub const HEAP_LEFT_BYTES_MIN: usize = 16 << 20;
/// Host page size: the cache starts on a page boundary, like any mapped code.
const PAGE_BYTES: usize = 4096;

/// A heap allocation handed to the translator.
pub struct HeapCode {
    ptr: *mut u8,
    layout: Layout,
}

impl HeapCode {
    /// Allocates `len_bytes` of code memory, or `None` when the heap has no such piece.
    pub fn new(len_bytes: usize) -> Option<HeapCode> {
        let layout = Layout::from_size_align(len_bytes, PAGE_BYTES).ok()?;
        // SAFETY: the layout has a nonzero size (callers ask for at least CODE_BYTES_MIN).
        let ptr = unsafe { alloc(layout) };
        (!ptr.is_null()).then_some(HeapCode { ptr, layout })
    }
}

impl Drop for HeapCode {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated in `new` with this layout and is freed once.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

// SAFETY: the allocation belongs to this object alone; moving it moves sole access.
unsafe impl Send for HeapCode {}

// SAFETY: `new` allocates layout.size() bytes that stay allocated at the same address until
// drop; they are readable and writable heap memory and executable (module comment).
unsafe impl ExecutableMemory for HeapCode {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    fn len_bytes(&self) -> usize {
        self.layout.size()
    }
}

/// Turns `machine`'s translator on with as large a code cache as the free heap allows (at
/// most `CODE_CACHE_BYTES_MAX`, leaving `HEAP_LEFT_BYTES_MIN`); returns the cache's size, or
/// why the machine stays interpreted.
pub fn enable_translator(machine: &mut Machine, free_heap_bytes: usize) -> Result<usize, String> {
    let spare = free_heap_bytes.saturating_sub(HEAP_LEFT_BYTES_MIN);
    let len_bytes = CODE_CACHE_BYTES_MAX.min(spare) & !(PAGE_BYTES - 1);
    if len_bytes < CODE_BYTES_MIN {
        return Err(format!(
            "{} MiB of free heap leave no room for a code cache: give the machine more memory",
            free_heap_bytes >> 20
        ));
    }
    let memory = HeapCode::new(len_bytes).ok_or_else(|| {
        format!(
            "the heap has no piece of {} MiB for a code cache",
            len_bytes >> 20
        )
    })?;
    machine
        .enable_translator(Box::new(memory), HOT_EXECUTIONS)
        .map_err(|error| error.to_string())?;
    Ok(len_bytes)
}
