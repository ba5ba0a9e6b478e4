//! Sv39 translation (privileged spec 4.3-4.4), the soft TLBs and guest memory accesses.
//!
//! One page walker serves all access kinds. Each kind (fetch, load, store) has its own
//! direct-mapped TLB that caches only translations to RAM, so a hit is a host memory access
//! with no Platform call. A TLB tag combines the virtual page number with a key for the
//! state that decides permissions (effective privilege, SUM, MXR), so privilege changes
//! need no flush. A/D bits are set by the hart, like QEMU: the walker writes the PTE back.
//!
//! Which translations are cached is guest-visible (a guest that clears A or D without
//! `sfence.vma` sees whether the next access walked the table again), so entries are
//! dropped only by the guest's own actions (`sfence.vma`, `satp` and PMP writes, SBI remote
//! fences) and by state restore, never by host bookkeeping. Host bookkeeping rides on the entries
//! instead: a store entry for a page whose dirty bit may be clear carries `STORE_MARKS_DIRTY`
//! (a store through it marks the page for the digest and clears the flag, so later stores
//! to the page mark nothing, as QEMU's "notdirty" entries), and a store entry for a page
//! holding decoded code carries `STORE_THROUGH_SLOW_PATH`, so the store still uses the cached
//! translation but keeps the decode cache coherent.
//!
//! PMP checks (privileged spec 3.7) live in the fills and slow paths: an entry is filled only
//! for a page that one PMP entry (or none) decides wholly and that allows the access, so a
//! hit needs no check; any other page takes the slow path, which checks every access.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::csr::{MSTATUS_MPRV, MSTATUS_MXR, MSTATUS_SUM};
use crate::{
    cause, Exception, Flow, GuestPhysAddr, Hart, InstructionCount, MmioEffect, Platform, Privilege,
    StopReason,
};

/// Entries of the fetch TLB (direct mapped). A Linux kernel's text alone spans thousands of
/// pages, and a miss on a jump out of translated code leaves it for `Hart::run` to walk.
pub(crate) const FETCH_TLB_ENTRIES: usize = 4096;
/// Entries of the load and the store TLB (direct mapped, 16 MiB of 4 KiB pages each): data
/// working sets are far larger than code, and a miss costs a call out of translated code.
pub(crate) const DATA_TLB_ENTRIES: usize = 4096;
/// Filled entries a TLB remembers by index, so that a flush (every `sfence.vma`) rewrites
/// only those; past this many it rewrites every entry.
const FILLED_TRACKED_MAX: usize = 512;
const TLB_INVALID: u64 = u64::MAX;
/// Flag in the low bits of a store TLB entry's addend: the page holds decoded code, so a
/// store must invalidate it (`Hart::store_phys`) rather than write RAM directly.
const STORE_THROUGH_SLOW_PATH: u64 = 1;
/// Flag in the low bits of a store TLB entry's addend: the page's dirty bit may be clear
/// (`Hart::take_dirty_pages` cleared it after the entry was filled), so a store through the
/// entry must mark it. Entries without it belong to pages marked dirty.
pub(crate) const STORE_MARKS_DIRTY: u64 = 2;
/// The page-offset bits of an entry's `addend`, where flags live.
const ENTRY_FLAGS: u64 = 0xfff;
/// Bit position of the permission key inside a TLB tag (virtual page numbers use < 52 bits).
pub(crate) const KEY_SHIFT: u32 = 52;

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;
const PPN_MASK: u64 = (1 << 44) - 1;
/// Sv39 levels (privileged spec 4.4.1).
const SV39_LEVELS: u32 = 3;

/// The kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Fetch,
    Load,
    Store,
}

impl Access {
    fn page_fault(self, vaddr: u64) -> Exception {
        let cause = match self {
            Access::Fetch => cause::INSTRUCTION_PAGE_FAULT,
            Access::Load => cause::LOAD_PAGE_FAULT,
            Access::Store => cause::STORE_PAGE_FAULT,
        };
        Exception { cause, tval: vaddr }
    }
    pub(crate) fn access_fault(self, vaddr: u64) -> Exception {
        let cause = match self {
            Access::Fetch => cause::INSTRUCTION_ACCESS_FAULT,
            Access::Load => cause::LOAD_ACCESS_FAULT,
            Access::Store => cause::STORE_ACCESS_FAULT,
        };
        Exception { cause, tval: vaddr }
    }
}

/// `#[repr(C)]`: translated code reads `tag` at byte 0 and `addend` at byte 8.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct TlbEntry {
    tag: u64,
    /// The TLB's `base` plus the RAM offset of the page's first byte, minus the page's
    /// virtual address (wrapping), with flags in the low 12 bits: a virtual address plus
    /// the addend without its flags is the address of its byte in host memory for the data
    /// TLBs (QEMU's `addend`: one addition, and translated code needs no register for the
    /// RAM), its RAM offset for the fetch TLB.
    addend: u64,
}

pub(crate) struct Tlb<const ENTRIES: usize> {
    /// On the heap: the data TLBs are 64 KiB each, too large to move with the `Hart`.
    entries: Box<[TlbEntry; ENTRIES]>,
    /// Indices filled since the last flush (may repeat), unless `filled_overflow`.
    filled: Vec<u16>,
    /// More than `FILLED_TRACKED_MAX` fills since the last flush: any entry may be valid.
    filled_overflow: bool,
    /// What the addends count RAM offsets from: the host address of RAM's first byte (a
    /// multiple of 4 KiB, `ram::RAM_ALIGN_BYTES`), or 0 for RAM offsets themselves.
    base: u64,
}

impl<const ENTRIES: usize> Tlb<ENTRIES> {
    fn new(base: u64) -> Tlb<ENTRIES> {
        const { assert!(ENTRIES.is_power_of_two() && ENTRIES <= 1 << 16) };
        assert!(
            base.is_multiple_of(crate::PAGE_SIZE_BYTES),
            "flags need a page-aligned base"
        );
        let entries = vec![
            TlbEntry {
                tag: TLB_INVALID,
                addend: 0,
            };
            ENTRIES
        ];
        Tlb {
            entries: entries
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("the vector holds ENTRIES entries")),
            filled: Vec::with_capacity(FILLED_TRACKED_MAX),
            filled_overflow: false,
            base,
        }
    }
    /// The RAM offset of the entry's page with its flags, as `lookup` returns it.
    fn page_and_flags(&self, e: &TlbEntry) -> u64 {
        let vpage = (e.tag & ((1 << KEY_SHIFT) - 1)) << 12;
        e.addend.wrapping_add(vpage).wrapping_sub(self.base)
    }
    pub fn flush(&mut self) {
        if self.filled_overflow {
            for e in self.entries.iter_mut() {
                e.tag = TLB_INVALID;
            }
        } else {
            for &index in &self.filled {
                self.entries[index as usize].tag = TLB_INVALID;
            }
        }
        self.filled.clear();
        self.filled_overflow = false;
    }
    /// Drops the entry that may hold the page of `vaddr` (whatever its key).
    fn flush_page(&mut self, vaddr: u64) {
        self.entries[((vaddr >> 12) as usize) & (ENTRIES - 1)].tag = TLB_INVALID;
    }
    /// Sends stores through every entry that maps RAM page `page` to the slow path, which
    /// keeps the decode cache coherent (the page now holds decoded code). The translations
    /// stay cached: dropping them would be visible to the guest.
    pub fn mark_ram_page_code(&mut self, page: usize) {
        let holds_page = |tlb: &Self, index: usize| {
            let e = &tlb.entries[index];
            e.tag != TLB_INVALID && tlb.page_and_flags(e) >> 12 == page as u64
        };
        if self.filled_overflow {
            for index in 0..ENTRIES {
                if holds_page(self, index) {
                    self.entries[index].addend |= STORE_THROUGH_SLOW_PATH;
                }
            }
        } else {
            for at in 0..self.filled.len() {
                let index = self.filled[at] as usize;
                if holds_page(self, index) {
                    self.entries[index].addend |= STORE_THROUGH_SLOW_PATH;
                }
            }
        }
    }
    /// Sets `STORE_MARKS_DIRTY` in every entry: the dirty bits were just cleared.
    pub fn mark_all_clean(&mut self) {
        let mark = |e: &mut TlbEntry| e.addend |= STORE_MARKS_DIRTY;
        if self.filled_overflow {
            self.entries.iter_mut().for_each(mark);
        } else {
            for &index in &self.filled {
                mark(&mut self.entries[index as usize]);
            }
        }
    }
    /// Clears `STORE_MARKS_DIRTY` in the entry for `vaddr` (its page was just marked).
    #[inline(always)]
    fn clear_marks_dirty(&mut self, vaddr: u64) {
        self.entries[((vaddr >> 12) as usize) & (ENTRIES - 1)].addend &= !STORE_MARKS_DIRTY;
    }
    /// The first entry, for translated code's inline lookup (`translate::emit`).
    pub fn entries_ptr(&self) -> *const u8 {
        self.entries.as_ptr().cast()
    }
    /// The entry's RAM offset with its flags, on a hit.
    #[inline(always)]
    fn lookup(&self, tag: u64, vaddr: u64) -> Option<u64> {
        let e = &self.entries[((vaddr >> 12) as usize) & (ENTRIES - 1)];
        if e.tag == tag {
            Some(
                e.addend
                    .wrapping_add(vaddr & !ENTRY_FLAGS)
                    .wrapping_sub(self.base),
            )
        } else {
            None
        }
    }
    fn fill(&mut self, tag: u64, vaddr: u64, ram_offset: u64, flags: u64) {
        let index = ((vaddr >> 12) as usize) & (ENTRIES - 1);
        self.entries[index] = TlbEntry {
            tag,
            addend: self
                .base
                .wrapping_add(ram_offset & !ENTRY_FLAGS)
                .wrapping_sub(vaddr & !ENTRY_FLAGS)
                | flags,
        };
        if self.filled.len() < FILLED_TRACKED_MAX {
            self.filled.push(index as u16);
        } else {
            self.filled_overflow = true;
        }
    }
}

pub(crate) struct Tlbs {
    pub fetch: Tlb<FETCH_TLB_ENTRIES>,
    pub load: Tlb<DATA_TLB_ENTRIES>,
    pub store: Tlb<DATA_TLB_ENTRIES>,
    fetch_key: u64,
    load_key: u64,
    store_key: u64,
    /// Virtual ranges (address, mask) that cover every superpage a walk found since the
    /// last full flush, as QEMU's `large_page_addr` (one range there): each 4 KiB entry
    /// taken from a superpage stands for all of it, so a page flush inside a range
    /// flushes all. Several ranges, because Linux maps its image and its linear map with
    /// superpages, and one range over both would also cover the fixmap, whose page it
    /// flushes at every text patch.
    large_pages: [Option<(u64, u64)>; LARGE_PAGE_RANGES],
}

/// Separate superpage ranges kept before the last one widens to take in more.
const LARGE_PAGE_RANGES: usize = 4;

impl Tlbs {
    /// TLBs for a RAM whose first byte lies at `ram_host_address` in host memory (a
    /// multiple of 4 KiB); the data TLBs' entries hold host addresses, the fetch TLB's RAM
    /// offsets (the jump cache is keyed by them).
    pub fn new(ram_host_address: u64) -> Tlbs {
        Tlbs {
            fetch: Tlb::new(0),
            load: Tlb::new(ram_host_address),
            store: Tlb::new(ram_host_address),
            fetch_key: 0,
            load_key: 0,
            store_key: 0,
            large_pages: [None; LARGE_PAGE_RANGES],
        }
    }
    /// The permission key in load TLB tags now.
    pub fn load_key(&self) -> u64 {
        self.load_key
    }
    /// The permission key in fetch TLB tags now.
    pub fn fetch_key(&self) -> u64 {
        self.fetch_key
    }
    /// The permission key in store TLB tags now.
    pub fn store_key(&self) -> u64 {
        self.store_key
    }
    /// The load and store keys in place: translated code rewrites them when S-mode
    /// changes SUM or MXR (`translate::emit`, `Emitter::status_access`).
    pub fn data_key_fields(&self) -> (&u64, &u64) {
        (&self.load_key, &self.store_key)
    }
    pub fn flush_all(&mut self) {
        self.fetch.flush();
        self.load.flush();
        self.store.flush();
        self.large_pages = [None; LARGE_PAGE_RANGES];
    }
    /// `sfence.vma` with an address (privileged spec 4.2.1): drops the translations of the
    /// page holding `vaddr` in every address space, or all of them when `vaddr` lies in
    /// the range superpages were cached from. Linux flushes single pages this way (80,000
    /// times in the Debian boot, against 4 full flushes): flushing everything each time
    /// sent every later fetch, load and store to the page walk.
    pub fn flush_page(&mut self, vaddr: u64) {
        if self.in_large_pages(vaddr) {
            self.flush_all();
            return;
        }
        self.fetch.flush_page(vaddr);
        self.load.flush_page(vaddr);
        self.store.flush_page(vaddr);
    }
    fn in_large_pages(&self, vaddr: u64) -> bool {
        self.large_pages
            .iter()
            .flatten()
            .any(|&(addr, mask)| vaddr & mask == addr)
    }
    /// Widens the superpage ranges to cover the `size_bytes` superpage holding `vaddr`:
    /// nothing when a range already does, a free range when there is one, else the two of
    /// the ranges and the new superpage whose union is the smallest merge into one.
    fn note_large_page(&mut self, vaddr: u64, size_bytes: u64) {
        if self.in_large_pages(vaddr) {
            return;
        }
        let mask = !(size_bytes - 1);
        let new = (vaddr & mask, mask);
        let mut all = [new; LARGE_PAGE_RANGES + 1];
        for (slot, range) in self.large_pages.iter().enumerate() {
            match range {
                Some(range) => all[slot] = *range,
                None => {
                    self.large_pages[slot] = Some(new);
                    return;
                }
            }
        }
        let union = |(a, a_mask): (u64, u64), (b, b_mask): (u64, u64)| {
            let mut mask = a_mask & b_mask;
            while (a ^ b) & mask != 0 {
                mask <<= 1;
            }
            (a & mask, mask)
        };
        let mut best = (0, 1);
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                let (_, best_mask) = union(all[best.0], all[best.1]);
                if union(all[i], all[j]).1.count_ones() > best_mask.count_ones() {
                    best = (i, j);
                }
            }
        }
        all[best.0] = union(all[best.0], all[best.1]);
        all[best.1] = all[LARGE_PAGE_RANGES];
        for (slot, range) in self.large_pages.iter_mut().enumerate() {
            *range = Some(all[slot]);
        }
    }
}

#[inline(always)]
fn read_le(ram: &[u8], offset: usize, size: u64) -> u64 {
    match size {
        1 => ram[offset] as u64,
        2 => u16::from_le_bytes([ram[offset], ram[offset + 1]]) as u64,
        4 => u32::from_le_bytes(ram[offset..offset + 4].try_into().unwrap()) as u64,
        _ => u64::from_le_bytes(ram[offset..offset + 8].try_into().unwrap()),
    }
}

#[inline(always)]
fn write_le(ram: &mut [u8], offset: usize, size: u64, value: u64) {
    match size {
        1 => ram[offset] = value as u8,
        2 => ram[offset..offset + 2].copy_from_slice(&(value as u16).to_le_bytes()),
        4 => ram[offset..offset + 4].copy_from_slice(&(value as u32).to_le_bytes()),
        _ => ram[offset..offset + 8].copy_from_slice(&value.to_le_bytes()),
    }
}

fn merge(a: Flow, b: Flow) -> Flow {
    match (a, b) {
        (Flow::Stop(r), _) | (_, Flow::Stop(r)) => Flow::Stop(r),
        (Flow::EndBlock, _) | (_, Flow::EndBlock) => Flow::EndBlock,
        (Flow::Refetch, _) | (_, Flow::Refetch) => Flow::Refetch,
        _ => Flow::Next,
    }
}

/// The load and store TLB keys for accesses at the effective privilege `effective` under
/// `mstatus`: M-mode's own, else the privilege with SUM (and for loads MXR), which decide
/// what a page's U and X bits allow (privileged spec 4.3.1).
pub(crate) const fn data_keys(effective: u64, mstatus: u64) -> (u64, u64) {
    let sum = (mstatus & MSTATUS_SUM != 0) as u64;
    let mxr = (mstatus & MSTATUS_MXR != 0) as u64;
    let (load, store) = if effective == 3 {
        (3, 3)
    } else {
        (effective | sum << 2 | mxr << 3, effective | sum << 2)
    };
    (load << KEY_SHIFT, store << KEY_SHIFT)
}

impl Hart {
    /// Recomputes the TLB keys after a change of privilege or mstatus.
    pub(crate) fn update_tlb_keys(&mut self) {
        let privilege = self.privilege as u64;
        let mstatus = self.csr.mstatus;
        let effective = if mstatus & MSTATUS_MPRV != 0 && self.privilege == Privilege::Machine {
            (mstatus >> 11) & 3
        } else {
            privilege
        };
        self.mmu.fetch_key = privilege << KEY_SHIFT;
        (self.mmu.load_key, self.mmu.store_key) = data_keys(effective, mstatus);
    }

    /// Offset into RAM of `[paddr, paddr + size)`, if that range is entirely RAM.
    #[inline]
    pub(crate) fn ram_offset(&self, paddr: u64, size: u64) -> Option<usize> {
        let offset = paddr.wrapping_sub(self.ram_base);
        if offset < self.ram_size_bytes && size <= self.ram_size_bytes - offset {
            Some(offset as usize)
        } else {
            None
        }
    }

    fn effective_privilege(&self, access: Access) -> Privilege {
        if access != Access::Fetch
            && self.privilege == Privilege::Machine
            && self.csr.mstatus & MSTATUS_MPRV != 0
        {
            Privilege::from_bits(self.csr.mstatus >> 11)
        } else {
            self.privilege
        }
    }

    /// Translates `vaddr` for `access` (privileged spec 4.3.2), setting A/D in the PTE.
    pub(crate) fn translate(&mut self, vaddr: u64, access: Access) -> Result<u64, Exception> {
        let privilege = self.effective_privilege(access);
        if privilege == Privilege::Machine || !self.csr.satp_sv39() {
            return Ok(vaddr);
        }
        // Bits 63:39 must equal bit 38 (4.4.1).
        if (((vaddr as i64) << 25) >> 25) as u64 != vaddr {
            return Err(access.page_fault(vaddr));
        }
        let mstatus = self.csr.mstatus;
        let mut table = (self.csr.satp & PPN_MASK) << 12;
        for level in (0..SV39_LEVELS).rev() {
            let vpn = (vaddr >> (12 + 9 * level)) & 0x1ff;
            let pte_addr = table.wrapping_add(vpn * 8);
            let Some(pte_offset) = self.ram_offset(pte_addr, 8) else {
                return Err(access.access_fault(vaddr));
            };
            // Page-table accesses are checked as S-mode accesses (privileged spec 3.7.1)
            // and fail with the access fault of the original access (4.3.2 step 2).
            if !self
                .csr
                .pmp
                .allows(pte_addr, 8, Access::Load, Privilege::Supervisor)
            {
                return Err(access.access_fault(vaddr));
            }
            let pte = read_le(&self.ram, pte_offset, 8);
            // Bits 63:54 are reserved (no Svpbmt/Svnapot); W without R is reserved.
            if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) || pte >> 54 != 0 {
                return Err(access.page_fault(vaddr));
            }
            let ppn = (pte >> 10) & PPN_MASK;
            if pte & (PTE_R | PTE_X) == 0 {
                table = ppn << 12;
                continue;
            }
            // A leaf: check permissions (4.3.1, 4.3.2 step 5).
            let allowed = match access {
                Access::Fetch => pte & PTE_X != 0,
                Access::Load => {
                    pte & PTE_R != 0 || (mstatus & MSTATUS_MXR != 0 && pte & PTE_X != 0)
                }
                Access::Store => pte & PTE_W != 0,
            };
            let user_ok = match privilege {
                Privilege::User => pte & PTE_U != 0,
                _ => pte & PTE_U == 0 || (access != Access::Fetch && mstatus & MSTATUS_SUM != 0),
            };
            if !allowed || !user_ok {
                return Err(access.page_fault(vaddr));
            }
            let low_bits = 12 + 9 * level;
            // A misaligned superpage (step 6).
            if level > 0 && ppn & ((1 << (9 * level)) - 1) != 0 {
                return Err(access.page_fault(vaddr));
            }
            let wanted = PTE_A | if access == Access::Store { PTE_D } else { 0 };
            if pte & wanted != wanted {
                // The A/D update is a store to the PTE, PMP-checked too (4.3.2 step 7).
                if !self
                    .csr
                    .pmp
                    .allows(pte_addr, 8, Access::Store, Privilege::Supervisor)
                {
                    return Err(access.access_fault(vaddr));
                }
                write_le(&mut self.ram, pte_offset, 8, pte | wanted);
                self.note_ram_write(pte_offset, 8);
            }
            let mask = (1u64 << low_bits) - 1;
            if level > 0 {
                self.mmu.note_large_page(vaddr, mask + 1);
            }
            return Ok(((ppn << 12) & !mask) | (vaddr & mask));
        }
        Err(access.page_fault(vaddr))
    }

    /// RAM offset of the instruction at `vaddr` when the fetch TLB holds its page (so a
    /// block may run from it), without walking the page table.
    #[inline]
    pub(crate) fn fetch_cached(&self, vaddr: u64) -> Option<u64> {
        let tag = (vaddr >> 12) | self.mmu.fetch_key;
        self.mmu
            .fetch
            .lookup(tag, vaddr)
            .map(|page| page + (vaddr & 0xfff))
    }

    /// RAM offset of the instruction parcel at `vaddr` (fetches from outside RAM fault).
    #[inline(always)]
    pub(crate) fn fetch_offset(&mut self, vaddr: u64) -> Result<usize, Exception> {
        self.fetch_page(vaddr).map(|(offset, _)| offset)
    }

    /// Like `fetch_offset`, and also whether every instruction of the page may be fetched
    /// under the same translation and PMP decision (the translation is cached), so a decoded
    /// block may run from it without fetching each instruction.
    #[inline(always)]
    pub(crate) fn fetch_page(&mut self, vaddr: u64) -> Result<(usize, bool), Exception> {
        let tag = (vaddr >> 12) | self.mmu.fetch_key;
        if let Some(page) = self.mmu.fetch.lookup(tag, vaddr) {
            return Ok(((page + (vaddr & 0xfff)) as usize, true));
        }
        let paddr = self.translate(vaddr, Access::Fetch)?;
        let Some(offset) = self.ram_offset(paddr, 2) else {
            return Err(Access::Fetch.access_fault(vaddr));
        };
        let privilege = self.privilege;
        if !self.csr.pmp.allows(paddr, 2, Access::Fetch, privilege) {
            return Err(Access::Fetch.access_fault(vaddr));
        }
        let whole_page = self
            .csr
            .pmp
            .allows_page(paddr & !0xfff, Access::Fetch, privilege);
        if whole_page {
            self.mmu.fetch.fill(tag, vaddr, offset as u64, 0);
        }
        Ok((offset, whole_page))
    }

    /// An access fault unless the PMP lets the effective privilege make `access` to
    /// `[paddr, paddr + size)` (privileged spec 3.7.1; MPRV applies, 3.1.6.3).
    #[inline]
    fn check_pmp(
        &self,
        vaddr: u64,
        paddr: u64,
        size: u64,
        access: Access,
    ) -> Result<(), Exception> {
        let privilege = self.effective_privilege(access);
        if self.csr.pmp.allows(paddr, size, access, privilege) {
            Ok(())
        } else {
            Err(access.access_fault(vaddr))
        }
    }

    /// Whether a TLB entry for `access` may stand for the page holding `paddr`.
    #[inline]
    fn pmp_allows_page(&self, paddr: u64, access: Access) -> bool {
        let privilege = self.effective_privilege(access);
        self.csr.pmp.allows_page(paddr & !0xfff, access, privilege)
    }

    /// Loads `size` (1, 2, 4 or 8) bytes, zero-extended. Misaligned accesses are performed.
    #[inline(always)]
    pub(crate) fn load(
        &mut self,
        platform: &mut impl Platform,
        vaddr: u64,
        size: u64,
    ) -> Result<u64, Exception> {
        let tag = (vaddr >> 12) | self.mmu.load_key;
        if let Some(page) = self.mmu.load.lookup(tag, vaddr) {
            let in_page = vaddr & 0xfff;
            if in_page <= 0x1000 - size {
                return Ok(read_le(&self.ram, (page + in_page) as usize, size));
            }
        }
        self.load_slow(platform, vaddr, size)
    }

    #[inline(never)]
    fn load_slow(
        &mut self,
        platform: &mut impl Platform,
        vaddr: u64,
        size: u64,
    ) -> Result<u64, Exception> {
        if (vaddr & 0xfff) + size > 0x1000 {
            // Crosses a page: byte by byte, so a fault on the second page reports its first
            // address, as QEMU does.
            let mut value = 0;
            for i in 0..size {
                value |= self.load_slow(platform, vaddr.wrapping_add(i), 1)? << (8 * i);
            }
            return Ok(value);
        }
        let paddr = self.translate(vaddr, Access::Load)?;
        self.check_pmp(vaddr, paddr, size, Access::Load)?;
        if let Some(offset) = self.ram_offset(paddr, size) {
            if self.pmp_allows_page(paddr, Access::Load) {
                let tag = (vaddr >> 12) | self.mmu.load_key;
                self.mmu.load.fill(tag, vaddr, offset as u64, 0);
            }
            return Ok(read_le(&self.ram, offset, size));
        }
        let value = platform
            .mmio_load(
                GuestPhysAddr(paddr),
                size as u8,
                InstructionCount(self.instret),
            )
            .ok_or(Access::Load.access_fault(vaddr))?;
        // `|=`: a load that crosses a page is made of several accesses, and any of them may
        // end the run.
        self.mmio_loaded |= self.mmio_ends_run(platform);
        Ok(value)
    }

    /// Stores the low `size` bytes of `value`. Misaligned accesses are performed.
    #[inline(always)]
    pub(crate) fn store(
        &mut self,
        platform: &mut impl Platform,
        vaddr: u64,
        size: u64,
        value: u64,
    ) -> Result<Flow, Exception> {
        let tag = (vaddr >> 12) | self.mmu.store_key;
        if let Some(entry) = self.mmu.store.lookup(tag, vaddr) {
            let in_page = vaddr & 0xfff;
            if in_page <= 0x1000 - size {
                if entry & STORE_THROUGH_SLOW_PATH != 0 {
                    let paddr = self.ram_base + (entry & !ENTRY_FLAGS) + in_page;
                    return self.store_phys(platform, vaddr, paddr, size, value);
                }
                if entry & STORE_MARKS_DIRTY != 0 {
                    self.mark_page_dirty((entry >> 12) as usize);
                    self.mmu.store.clear_marks_dirty(vaddr);
                }
                let offset = (entry & !ENTRY_FLAGS) + in_page;
                write_le(&mut self.ram, offset as usize, size, value);
                return Ok(Flow::Next);
            }
        }
        self.store_slow(platform, vaddr, size, value)
    }

    #[inline(never)]
    fn store_slow(
        &mut self,
        platform: &mut impl Platform,
        vaddr: u64,
        size: u64,
        value: u64,
    ) -> Result<Flow, Exception> {
        if (vaddr & 0xfff) + size > 0x1000 {
            // Translate both pages first so a fault leaves memory unchanged.
            let next_page = (vaddr | 0xfff).wrapping_add(1);
            let first = self.translate(vaddr, Access::Store)?;
            let second = self.translate(next_page, Access::Store)?;
            let first_bytes = next_page.wrapping_sub(vaddr);
            self.check_pmp(vaddr, first, first_bytes, Access::Store)?;
            self.check_pmp(next_page, second, size - first_bytes, Access::Store)?;
            let mut flow = Flow::Next;
            for i in 0..size {
                let va = vaddr.wrapping_add(i);
                let pa = if va.wrapping_sub(vaddr) < next_page.wrapping_sub(vaddr) {
                    first.wrapping_add(i)
                } else {
                    second.wrapping_add(va.wrapping_sub(next_page))
                };
                flow = merge(
                    flow,
                    self.store_phys(platform, va, pa, 1, value >> (8 * i))?,
                );
            }
            return Ok(flow);
        }
        let paddr = self.translate(vaddr, Access::Store)?;
        self.check_pmp(vaddr, paddr, size, Access::Store)?;
        self.store_phys(platform, vaddr, paddr, size, value)
    }

    /// Whether the MMIO access just made ends the run (`Platform::mmio_effect`). New lines
    /// take effect at once; the run ends if they make an interrupt pending and enabled, so
    /// the interrupt is taken before the next instruction, where a run that ended after
    /// every access took it too.
    fn mmio_ends_run(&mut self, platform: &mut impl Platform) -> bool {
        match platform.mmio_effect(InstructionCount(self.instret + 1)) {
            MmioEffect::Unchanged => false,
            MmioEffect::Lines(bits) => {
                self.set_interrupt_lines(bits);
                self.pending_interrupt().is_some()
            }
            MmioEffect::EndRun => true,
        }
    }

    fn store_phys(
        &mut self,
        platform: &mut impl Platform,
        vaddr: u64,
        paddr: u64,
        size: u64,
        value: u64,
    ) -> Result<Flow, Exception> {
        if let Some(offset) = self.ram_offset(paddr, size) {
            let invalidated = self.note_ram_write(offset, size as usize);
            write_le(&mut self.ram, offset, size, value);
            if (paddr & 0xfff) + size <= 0x1000 {
                self.fill_store_tlb(vaddr, offset);
            }
            return Ok(if invalidated {
                Flow::Refetch
            } else {
                Flow::Next
            });
        }
        if platform.mmio_store(
            GuestPhysAddr(paddr),
            size as u8,
            value,
            InstructionCount(self.instret),
        ) {
            Ok(if self.mmio_ends_run(platform) {
                Flow::Stop(StopReason::MmioAccess)
            } else {
                Flow::Next
            })
        } else {
            Err(Access::Store.access_fault(vaddr))
        }
    }

    /// Caches the translation of `vaddr` to RAM offset `offset` for stores, flagged for the
    /// slow path if the page holds decoded code; not at all if the PMP does not allow
    /// stores to the whole page. The caller stores to the page: it is marked dirty here, so
    /// the entry needs no `STORE_MARKS_DIRTY`.
    fn fill_store_tlb(&mut self, vaddr: u64, offset: usize) {
        if !self.pmp_allows_page(self.ram_base + offset as u64, Access::Store) {
            return;
        }
        self.mark_page_dirty(offset / crate::PAGE_SIZE_BYTES as usize);
        let tag = (vaddr >> 12) | self.mmu.store_key;
        let flags = if self
            .blocks
            .is_code_page(offset / crate::PAGE_SIZE_BYTES as usize)
        {
            STORE_THROUGH_SLOW_PATH
        } else {
            0
        };
        self.mmu.store.fill(tag, vaddr, offset as u64, flags);
    }

    /// Read-modify-write of an aligned word in RAM for an AMO or SC (unprivileged spec 8.4).
    /// `op` maps the old value to the value to store, or `None` to store nothing. Returns
    /// the old value. AMOs outside RAM are store/AMO access faults.
    #[inline]
    pub(crate) fn atomic_rmw(
        &mut self,
        vaddr: u64,
        size: u64,
        op: impl FnOnce(u64) -> Option<u64>,
    ) -> Result<(u64, Flow), Exception> {
        if vaddr & (size - 1) != 0 {
            return Err(Exception {
                cause: cause::STORE_ADDRESS_MISALIGNED,
                tval: vaddr,
            });
        }
        let tag = (vaddr >> 12) | self.mmu.store_key;
        let offset = if let Some(entry) = self.mmu.store.lookup(tag, vaddr) {
            ((entry & !ENTRY_FLAGS) + (vaddr & 0xfff)) as usize
        } else {
            let paddr = self.translate(vaddr, Access::Store)?;
            // An AMO reads and writes (privileged spec 3.7.1: it needs R and W).
            self.check_pmp(vaddr, paddr, size, Access::Load)
                .and(self.check_pmp(vaddr, paddr, size, Access::Store))
                .map_err(|_| Access::Store.access_fault(vaddr))?;
            let Some(offset) = self.ram_offset(paddr, size) else {
                return Err(Access::Store.access_fault(vaddr));
            };
            offset
        };
        let flow = if self.note_ram_write(offset, size as usize) {
            Flow::Refetch
        } else {
            Flow::Next
        };
        self.fill_store_tlb(vaddr, offset);
        let old = read_le(&self.ram, offset, size);
        if let Some(new) = op(old) {
            write_le(&mut self.ram, offset, size, new);
        }
        Ok((old, flow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: u64 = 1 << KEY_SHIFT;
    /// Where the data TLBs' RAM lies in host memory (any 4 KiB multiple).
    const HOST_BASE: u64 = 0x7f12_3456_7000;

    fn filled_tlb(pages: u64) -> Tlb<DATA_TLB_ENTRIES> {
        let mut tlb = Tlb::new(HOST_BASE);
        for page in 0..pages {
            tlb.fill(page | KEY, page << 12, page << 12, 0);
        }
        tlb
    }

    fn hits(tlb: &Tlb<DATA_TLB_ENTRIES>, pages: u64) -> usize {
        (0..pages)
            .filter(|&page| tlb.lookup(page | KEY, page << 12).is_some())
            .count()
    }

    #[test]
    fn a_flush_drops_every_entry_whether_few_or_many_were_filled() {
        for pages in [3, FILLED_TRACKED_MAX as u64 + 1, DATA_TLB_ENTRIES as u64] {
            let mut tlb = filled_tlb(pages);
            assert_eq!(hits(&tlb, pages), pages as usize);
            tlb.flush();
            assert_eq!(hits(&tlb, pages), 0, "{pages} pages filled");
            // And the next fills are tracked again from nothing.
            tlb.fill(7 | KEY, 7 << 12, 7 << 12, 0);
            tlb.flush();
            assert_eq!(hits(&tlb, 8), 0);
        }
    }

    #[test]
    fn marking_a_code_page_flags_its_store_entries_whether_few_or_many_were_filled() {
        for pages in [3, FILLED_TRACKED_MAX as u64 + 1] {
            let mut tlb = filled_tlb(pages);
            // Another virtual page mapping the same RAM page.
            tlb.fill(4095 | KEY, 4095 << 12, 2 << 12, 0);
            tlb.mark_ram_page_code(2);
            for (page, vaddr) in [(2, 2 << 12), (2, 4095 << 12), (1, 1 << 12)] {
                let entry = tlb
                    .lookup((vaddr >> 12) | KEY, vaddr)
                    .expect("still cached");
                assert_eq!(
                    entry & STORE_THROUGH_SLOW_PATH != 0,
                    page == 2,
                    "{pages} pages filled, vaddr {vaddr:#x}"
                );
            }
        }
    }

    #[test]
    fn superpage_ranges_cover_every_superpage_noted_and_stay_apart_from_user_space() {
        // Linux's layout: 2 MiB pages of the kernel image, 1 GiB pages of the linear map,
        // 2 MiB pages of vmemmap; the fixmap (4 KiB pages) and user space lie outside.
        let mut tlbs = Tlbs::new(HOST_BASE);
        let mut noted = Vec::new();
        for i in 0..16u64 {
            noted.push((0xffff_ffff_8000_0000 + i * (2 << 20), 2 << 20));
        }
        for i in 0..4u64 {
            noted.push((0xffff_ffd8_0000_0000 + i * (1 << 30), 1 << 30));
        }
        for i in 0..8u64 {
            noted.push((0xffff_ffc6_0000_0000 + i * (2 << 20), 2 << 20));
        }
        for &(vaddr, size) in &noted {
            tlbs.note_large_page(vaddr + 0x1234, size);
        }
        for &(vaddr, size) in &noted {
            for offset in [0, size / 2, size - 1] {
                assert!(
                    tlbs.in_large_pages(vaddr + offset),
                    "{:#x} not covered: {:x?}",
                    vaddr + offset,
                    tlbs.large_pages
                );
            }
        }
        for outside in [0xffff_ffc4_febf_a000, 0x3f_ffff_f000, 0x1_0000] {
            assert!(
                !tlbs.in_large_pages(outside),
                "{outside:#x} covered: {:x?}",
                tlbs.large_pages
            );
        }
        tlbs.flush_all();
        assert!(!tlbs.in_large_pages(noted[0].0));
    }
}
