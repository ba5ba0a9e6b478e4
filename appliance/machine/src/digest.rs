//! The incremental state digest: SHA-256 over hart state, device state and RAM.
//!
//! RAM is hashed per 4 KiB page; page hashes are combined per group of `GROUP_PAGES`, and the
//! root hashes the group hashes with the hart and device state. Taking a digest rehashes only
//! the pages written since the last one and the groups that hold them.

use alloc::vec;
use alloc::vec::Vec;

use sha2::{Digest as _, Sha256};

use crate::PAGE_BYTES;

const GROUP_PAGES: usize = 256;
type Hash = [u8; 32];

pub struct Digest {
    pages: Vec<Hash>,
    groups: Vec<Hash>,
    group_stale: Vec<bool>,
}

impl Digest {
    pub fn new(memory_bytes: u64) -> Self {
        let page_count = (memory_bytes / PAGE_BYTES) as usize;
        let zero_page: Hash = Sha256::digest([0u8; PAGE_BYTES as usize]).into();
        let group_count = page_count.div_ceil(GROUP_PAGES);
        Digest {
            pages: vec![zero_page; page_count],
            groups: vec![[0; 32]; group_count],
            group_stale: vec![true; group_count],
        }
    }

    /// Rehashes the `dirty` pages of `ram` and returns the digest of the whole state.
    pub fn update(
        &mut self,
        ram: &[u8],
        dirty: &[u32],
        hart_state: &[u8],
        device_state: &[u8],
    ) -> Hash {
        for &page in dirty {
            let page = page as usize;
            let start = page * PAGE_BYTES as usize;
            self.pages[page] = Sha256::digest(&ram[start..start + PAGE_BYTES as usize]).into();
            self.group_stale[page / GROUP_PAGES] = true;
        }
        for (group, stale) in self.group_stale.iter_mut().enumerate() {
            if *stale {
                let pages = &self.pages
                    [group * GROUP_PAGES..((group + 1) * GROUP_PAGES).min(self.pages.len())];
                let mut hasher = Sha256::new();
                for page in pages {
                    hasher.update(page);
                }
                self.groups[group] = hasher.finalize().into();
                *stale = false;
            }
        }
        let mut root = Sha256::new();
        root.update((hart_state.len() as u64).to_le_bytes());
        root.update(hart_state);
        root.update((device_state.len() as u64).to_le_bytes());
        root.update(device_state);
        for group in &self.groups {
            root.update(group);
        }
        root.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_digest_equals_a_full_rehash() {
        let memory = 2 * GROUP_PAGES as u64 * PAGE_BYTES;
        let mut ram = vec![0u8; memory as usize];
        let mut incremental = Digest::new(memory);
        incremental.update(&ram, &[], b"h", b"d");
        ram[5 * PAGE_BYTES as usize + 7] = 1;
        ram[300 * PAGE_BYTES as usize] = 2;
        let after = incremental.update(&ram, &[5, 300], b"h", b"d");
        let all: Vec<u32> = (0..(memory / PAGE_BYTES) as u32).collect();
        let full = Digest::new(memory).update(&ram, &all, b"h", b"d");
        assert_eq!(after, full);
        let zeros = Digest::new(memory).update(&vec![0u8; memory as usize], &[], b"h", b"d");
        assert_ne!(after, zeros, "a one-byte change in RAM changes the digest");
        assert_ne!(
            full,
            Digest::new(memory).update(&ram, &all, b"h", b"e"),
            "device state counts"
        );
    }
}
