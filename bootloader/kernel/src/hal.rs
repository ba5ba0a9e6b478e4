//! The `virtio-drivers` HAL: DMA memory from the identity-mapped heap.

use crate::paging;
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// DMA through identity-mapped memory: a buffer's virtual address is its physical address.
pub struct KernelHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

// SAFETY: allocations are zeroed, page-aligned, exclusively owned until `dma_dealloc`, and
// identity-mapped, so the physical address handed to the device is the memory we own.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages).filter(|l| l.size() > 0) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a nonzero size.
        let pointer = unsafe { alloc_zeroed(layout) };
        match NonNull::new(pointer) {
            Some(pointer) => (pointer.as_ptr() as PhysAddr, pointer),
            // Address 0 tells `Dma::new` the allocation failed.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = dma_layout(pages) else {
            return -1;
        };
        // SAFETY: the caller passes back what `dma_alloc` returned for the same page count.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // `pci::prepare` mapped every BAR already; mapping again is a no-op, and failing here
        // leaves nothing sensible to return.
        if let Err(error) = paging::map_identity(paddr, size as u64) {
            panic!("virtio bar {paddr:#x}+{size:#x} unmappable: {error}");
        }
        NonNull::new(paddr as *mut u8).expect("virtio bar at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity mapping and no IOMMU: the device reads the buffer where it is.
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
