//! The kernel heap: the largest free piece of boot-map RAM in the identity-mapped low 4 GiB.

use crate::boot::IDENTITY_MAPPED_BYTES;
use crate::bootinfo::{BootInfo, PhysRange};
use linked_list_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// RAM below 1 MiB holds firmware tables and the real-mode IVT; never use it.
const LOW_MEMORY_END: u64 = 1 << 20;
/// A heap smaller than this cannot hold virtqueues and TCP buffers.
pub const HEAP_BYTES_MIN: u64 = 16 << 20;

/// Picks the heap range: the largest piece of RAM in [1 MiB, 4 GiB) that overlaps neither the
/// kernel image nor anything the boot loader handed over.
pub fn choose(boot: &BootInfo, kernel: PhysRange) -> Option<PhysRange> {
    let reserved = core::iter::once(kernel).chain(boot.reserved().into_iter().flatten());
    let window = PhysRange {
        start: LOW_MEMORY_END,
        end: IDENTITY_MAPPED_BYTES,
    };
    understudy_boot_memory::choose_heap(boot.ram(), reserved, window)
}

/// Hands `range` to the allocator.
///
/// # Safety
/// `range` must be identity-mapped RAM that nothing else uses, and this is called once.
pub unsafe fn init(range: PhysRange) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        ALLOCATOR
            .lock()
            .init(range.start as *mut u8, range.len() as usize)
    };
}

/// Bytes the allocator has handed out and still holds.
pub fn used_bytes() -> usize {
    ALLOCATOR.lock().used()
}

/// Bytes the allocator has not handed out (possibly fragmented).
pub fn free_bytes() -> usize {
    ALLOCATOR.lock().free()
}
