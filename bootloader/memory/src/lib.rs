//! Boot-time memory: physical ranges, boot information, the heap choice, the kernel's ELF layout,
//! and the command line our UEFI loader assembles.
//!
//! The boot information parsers read what PVH, multiboot2 or our UEFI loader hand over; the
//! ELF view is what the UEFI loader loads and what mkimage checks; the virtio-mmio words are
//! the device windows a hypervisor names on the kernel command line.
//!
//! Pure functions, so the host can test them: the heap must never overlap the kernel image or
//! anything the boot loader handed over (start info, memory map, modules), or the kernel would
//! overwrite its own config or the guest payload.
#![cfg_attr(not(test), no_std)]

pub mod bootinfo;
pub mod cmdline;
pub mod elf;
pub mod virtio_mmio;

/// A physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const EMPTY: PhysRange = PhysRange { start: 0, end: 0 };

    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }
}

/// Bytes in a page; the heap is page-aligned so DMA buffers inside it can be.
pub const PAGE_BYTES: u64 = 4096;

/// Removes `hole` from `range`, keeping the larger remaining side.
pub fn subtract(range: PhysRange, hole: PhysRange) -> PhysRange {
    if !range.overlaps(&hole) {
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

/// Picks the heap: each RAM region is clipped to `window`, every reserved range is cut out,
/// both ends are page-aligned, and the largest result wins. `None` when nothing is left.
pub fn choose_heap(
    ram: &[PhysRange],
    reserved: impl Iterator<Item = PhysRange> + Clone,
    window: PhysRange,
) -> Option<PhysRange> {
    let mut best: Option<PhysRange> = None;
    for region in ram {
        let mut range = PhysRange {
            start: region.start.max(window.start),
            end: region.end.min(window.end),
        };
        if range.is_empty() {
            continue;
        }
        for hole in reserved.clone() {
            range = subtract(range, hole);
        }
        range.start = range.start.next_multiple_of(PAGE_BYTES);
        range.end -= range.end % PAGE_BYTES;
        if range.len() > best.map_or(0, |b| b.len()) {
            best = Some(range);
        }
    }
    best
}

/// A deterministic generator for the crate's property tests (no dependencies; each test
/// prints its seed).
#[cfg(test)]
pub(crate) mod test_random {
    pub struct Lcg(pub u64);

    impl Lcg {
        pub fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const WINDOW: PhysRange = PhysRange {
        start: MIB,
        end: 4 << 30,
    };

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    #[test]
    fn heap_skips_low_memory_kernel_and_modules() {
        // QEMU `pc` with 256 MiB: low RAM below 640 KiB, high RAM from 1 MiB. The kernel sits
        // at 1 MiB and the initrd near the top.
        let ram = [range(0, 0x9fc00), range(MIB, 256 * MIB)];
        let kernel = range(MIB, MIB + 0x90000);
        let initrd = range(255 * MIB, 255 * MIB + 1200);
        let heap = choose_heap(&ram, [kernel, initrd].into_iter(), WINDOW).unwrap();
        assert_eq!(heap, range(MIB + 0x90000, 255 * MIB));
    }

    #[test]
    fn heap_is_page_aligned_and_inside_the_window() {
        let ram = [range(0x1234, 0x1_2000_0123)];
        let heap = choose_heap(&ram, [range(0x10_0000, 0x10_1001)].into_iter(), WINDOW).unwrap();
        assert_eq!(heap.start % PAGE_BYTES, 0);
        assert_eq!(heap.end % PAGE_BYTES, 0);
        assert!(heap.start >= WINDOW.start && heap.end <= WINDOW.end);
        assert_eq!(heap, range(0x10_2000, 4 << 30));
    }

    #[test]
    fn no_ram_in_the_window_gives_none() {
        assert_eq!(
            choose_heap(&[range(0, 0x9fc00)], core::iter::empty(), WINDOW),
            None
        );
        let ram = [range(MIB, 2 * MIB)];
        assert_eq!(
            choose_heap(&ram, [range(0, 4 << 30)].into_iter(), WINDOW),
            None
        );
    }

    use crate::test_random::Lcg;

    #[test]
    fn heap_never_overlaps_a_reserved_range_property() {
        for seed in 0..2000u64 {
            let mut random = Lcg(seed);
            let ram: Vec<PhysRange> = (0..1 + random.next() % 6)
                .map(|_| {
                    let start = random.next() % (8 << 30);
                    range(start, start + random.next() % (2 << 30))
                })
                .collect();
            let reserved: Vec<PhysRange> = (0..random.next() % 10)
                .map(|_| {
                    let start = random.next() % (8 << 30);
                    range(start, start + random.next() % (512 * MIB))
                })
                .collect();
            if let Some(heap) = choose_heap(&ram, reserved.iter().copied(), WINDOW) {
                assert!(!heap.is_empty(), "seed {seed}");
                assert!(
                    heap.start >= WINDOW.start && heap.end <= WINDOW.end,
                    "seed {seed}"
                );
                assert!(
                    ram.iter()
                        .any(|r| r.start <= heap.start && heap.end <= r.end),
                    "seed {seed}"
                );
                for hole in &reserved {
                    assert!(
                        !heap.overlaps(hole),
                        "seed {seed}: heap {heap:?} overlaps {hole:?}"
                    );
                }
            }
        }
    }
}
