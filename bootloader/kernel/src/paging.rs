//! Identity mappings beyond the boot code's low 4 GiB, for 64-bit PCI BARs placed high.
//!
//! Firmware such as OVMF puts 64-bit BARs far above RAM (around 0xe0_0000_0000); the boot page
//! tables cover only 0..4 GiB, so each BAR range is identity-mapped here with 2 MiB pages,
//! uncached (Intel SDM vol. 3A 4.5, 11.12.3).

use crate::boot::{boot_pml4_address, IDENTITY_MAPPED_BYTES};
use alloc::alloc::{alloc_zeroed, Layout};
use core::fmt;
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size2MiB,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// The highest physical address we map: 4-level paging reaches 2^47 with identity mapping.
const PHYSICAL_ADDRESS_END: u64 = 1 << 47;
const HUGE_PAGE_BYTES: u64 = 2 << 20;

/// Page-table pages come from the (identity-mapped) heap.
struct HeapFrames;

// SAFETY: every frame is a fresh, zeroed, 4 KiB-aligned heap allocation that is never freed,
// and the heap is identity-mapped, so its virtual address is its physical address.
unsafe impl FrameAllocator<Size4KiB> for HeapFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let layout = Layout::from_size_align(4096, 4096).ok()?;
        // SAFETY: the layout has a nonzero size.
        let page = unsafe { alloc_zeroed(layout) };
        if page.is_null() {
            return None;
        }
        Some(PhysFrame::containing_address(PhysAddr::new(page as u64)))
    }
}

/// Why a range could not be mapped.
#[derive(Debug)]
pub enum MapError {
    OutOfRange { start: u64, end: u64 },
    OutOfMemory,
    Conflict { address: u64 },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { start, end } => {
                write!(f, "range {start:#x}..{end:#x} is beyond 4-level paging")
            }
            Self::OutOfMemory => write!(f, "no heap left for page tables"),
            Self::Conflict { address } => write!(f, "{address:#x} is already mapped differently"),
        }
    }
}

/// Identity-maps `[start, start + size)` as uncached memory. Ranges in the boot map are
/// already mapped and left alone.
pub fn map_identity(start: u64, size: u64) -> Result<(), MapError> {
    let end = start.checked_add(size).ok_or(MapError::OutOfRange {
        start,
        end: u64::MAX,
    })?;
    if end <= IDENTITY_MAPPED_BYTES {
        return Ok(());
    }
    if end > PHYSICAL_ADDRESS_END {
        return Err(MapError::OutOfRange { start, end });
    }
    // SAFETY: CR3 holds the boot PML4, which identity-maps itself and every table below it
    // (all are in the kernel image or the identity-mapped heap), so offset 0 is right.
    let mut mapper = unsafe {
        OffsetPageTable::new(
            &mut *(boot_pml4_address() as *mut PageTable),
            VirtAddr::new(0),
        )
    };
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::NO_CACHE
        | PageTableFlags::WRITE_THROUGH;
    let mut address = start.max(IDENTITY_MAPPED_BYTES) & !(HUGE_PAGE_BYTES - 1);
    while address < end {
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(address));
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(address));
        // SAFETY: an identity mapping of device memory aliases no Rust object.
        match unsafe { mapper.map_to(page, frame, flags, &mut HeapFrames) } {
            Ok(flush) => flush.flush(),
            Err(MapToError::PageAlreadyMapped(existing)) if existing == frame => {}
            Err(MapToError::FrameAllocationFailed) => return Err(MapError::OutOfMemory),
            Err(_) => return Err(MapError::Conflict { address }),
        }
        address += HUGE_PAGE_BYTES;
    }
    Ok(())
}
