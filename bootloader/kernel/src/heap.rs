//! The kernel heap: the largest free piece of boot-map RAM in the identity-mapped low 4 GiB.

use crate::boot::IDENTITY_MAPPED_BYTES;
use crate::pvh::{BootInfo, PhysRange};
use linked_list_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// RAM below 1 MiB holds firmware tables and the real-mode IVT; never use it.
const LOW_MEMORY_END: u64 = 1 << 20;
/// A heap smaller than this cannot hold virtqueues and TCP buffers.
pub const HEAP_BYTES_MIN: u64 = 16 << 20;

/// Removes `hole` from `range`, keeping the larger remaining side.
fn subtract(range: PhysRange, hole: PhysRange) -> PhysRange {
    if hole.end <= range.start || hole.start >= range.end {
        return range;
    }
    let below = PhysRange {
        start: range.start,
        end: hole.start.max(range.start),
    };
    let above = PhysRange {
        start: hole.end.min(range.end),
        end: range.end,
    };
    if below.len() >= above.len() {
        below
    } else {
        above
    }
}

/// Picks the heap range: for each RAM region, clip to [1 MiB, 4 GiB) and cut out the kernel
/// image and every boot-loader structure; keep the largest result.
pub fn choose(boot: &BootInfo, kernel: PhysRange) -> Option<PhysRange> {
    let mut best: Option<PhysRange> = None;
    for region in boot.ram() {
        let mut range = PhysRange {
            start: region.start.max(LOW_MEMORY_END),
            end: region.end.min(IDENTITY_MAPPED_BYTES),
        };
        if range.len() == 0 {
            continue;
        }
        range = subtract(range, kernel);
        for hole in boot.reserved().into_iter().flatten() {
            range = subtract(range, hole);
        }
        // Page-align both ends so DMA allocations can be page-aligned inside.
        range.start = (range.start + 0xfff) & !0xfff;
        range.end &= !0xfff;
        if range.len() > best.map_or(0, |b| b.len()) {
            best = Some(range);
        }
    }
    best
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
