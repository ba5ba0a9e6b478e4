//! The boot information (PVH `hvm_start_info` or multiboot2), read through the identity map.
//! The parsers live in `understudy-boot-memory`, where the host tests them.

use crate::boot::IDENTITY_MAPPED_BYTES;
pub use understudy_boot_memory::bootinfo::{
    parse_hvm_start_info, parse_multiboot2, BootInfo, PhysMemory,
};
pub use understudy_boot_memory::PhysRange;

/// Physical memory as the boot page tables map it: identity, low 4 GiB.
pub struct IdentityMemory;

impl PhysMemory for IdentityMemory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
        let Some(end) = address.checked_add(buffer.len() as u64) else {
            return false;
        };
        if address == 0 || end > IDENTITY_MAPPED_BYTES {
            return false;
        }
        // SAFETY: the range is inside the identity-mapped low 4 GiB and the boot loader put its
        // structures in RAM; the copy is byte-wise so alignment does not matter.
        unsafe {
            core::ptr::copy_nonoverlapping(address as *const u8, buffer.as_mut_ptr(), buffer.len())
        };
        true
    }
}

/// Borrows the bytes of a physical range.
///
/// # Safety
/// The range must be identity-mapped memory that nothing else writes while the slice lives.
pub unsafe fn bytes(range: PhysRange) -> &'static [u8] {
    // SAFETY: the caller guarantees the range.
    unsafe { core::slice::from_raw_parts(range.start as *const u8, range.len() as usize) }
}
