//! Guest RAM: zeroed memory whose first byte lies on a host page boundary.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};

/// Alignment of the first byte of RAM in host memory, in bytes. The load and store TLBs
/// hold host addresses of guest pages with flags in their low 12 bits (`mmu::TlbEntry`),
/// so every page must start on a 4 KiB boundary in host memory too.
pub(crate) const RAM_ALIGN_BYTES: usize = 4096;

/// `len` bytes of zeroed memory starting at a multiple of `RAM_ALIGN_BYTES`, which never
/// move while the `Ram` lives.
pub(crate) struct Ram {
    /// Allocated zeroed, which a hosted process gets as fresh pages it touches on demand
    /// (an allocation with the alignment asked for would be written with zeros up front).
    buffer: Vec<u8>,
    start: usize,
    len: usize,
}

impl Ram {
    pub(crate) fn zeroed(len: usize) -> Ram {
        let buffer = vec![0u8; len + RAM_ALIGN_BYTES];
        let start = buffer.as_ptr().align_offset(RAM_ALIGN_BYTES);
        assert!(
            start < RAM_ALIGN_BYTES,
            "a byte pointer can always be aligned"
        );
        Ram { buffer, start, len }
    }
}

impl Deref for Ram {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: start < RAM_ALIGN_BYTES, so start + len lies inside the buffer.
        unsafe { self.buffer.get_unchecked(self.start..self.start + self.len) }
    }
}

impl DerefMut for Ram {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`.
        unsafe {
            self.buffer
                .get_unchecked_mut(self.start..self.start + self.len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_starts_on_a_host_page_and_is_zeroed() {
        for len in [0, 1, 4096, 3 << 20] {
            let mut ram = Ram::zeroed(len);
            assert_eq!(ram.as_ptr() as usize % RAM_ALIGN_BYTES, 0);
            assert_eq!(ram.len(), len);
            assert!(ram.iter().all(|&b| b == 0));
            if len > 0 {
                ram[len - 1] = 7;
                assert_eq!(ram[len - 1], 7);
            }
        }
    }
}
