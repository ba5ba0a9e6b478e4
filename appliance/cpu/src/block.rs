//! The decode cache: straight-line blocks of decoded instructions keyed by physical address.
//!
//! A block starts at any instruction and ends after the first instruction that transfers
//! control or may change interrupt, translation or cache state (branches, jumps, CSR
//! accesses, xRET, wfi, fences, ecall/ebreak), at the end of its 4 KiB page, or after
//! `BLOCK_INSTRUCTIONS_MAX`. Blocks never span pages, so invalidating a page invalidates
//! exactly the blocks decoded from it. Pages holding decoded code get no store TLB entries,
//! so every store to them takes the slow path, which invalidates the page's blocks.

use alloc::vec;
use alloc::vec::Vec;

use crate::inst::{decode, decode_compressed, Instruction, Op};
use crate::{Exception, Flow, Hart, Platform, StopReason, PAGE_SIZE_BYTES};

/// Slots in the direct-mapped block table.
const BLOCK_SLOTS: usize = 1 << 14;
/// Longest block, in instructions.
const BLOCK_INSTRUCTIONS_MAX: usize = 128;
const SLOT_INVALID: u64 = u64::MAX;

pub(crate) struct BlockCache {
    /// RAM offset of each slot's first instruction, or `SLOT_INVALID`.
    tags: Vec<u64>,
    ops: Vec<Vec<Instruction>>,
    /// One bit per RAM page that has decoded blocks.
    code_pages: Vec<u64>,
}

impl BlockCache {
    pub fn new(pages: usize) -> BlockCache {
        BlockCache {
            tags: vec![SLOT_INVALID; BLOCK_SLOTS],
            ops: (0..BLOCK_SLOTS).map(|_| Vec::new()).collect(),
            code_pages: vec![0; pages.div_ceil(64)],
        }
    }

    #[inline(always)]
    fn slot(ram_offset: u64) -> usize {
        ((ram_offset >> 1) ^ (ram_offset >> 15)) as usize & (BLOCK_SLOTS - 1)
    }

    /// Drops every block decoded from RAM page `page`; true if there were any.
    pub fn invalidate_page(&mut self, page: usize) -> bool {
        let word = &mut self.code_pages[page / 64];
        let bit = 1u64 << (page % 64);
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        for tag in self.tags.iter_mut() {
            if *tag >> 12 == page as u64 && *tag != SLOT_INVALID {
                *tag = SLOT_INVALID;
            }
        }
        true
    }

    /// Drops every block (fence.i needs nothing more, since stores keep blocks coherent).
    #[cfg(test)]
    pub fn block_count(&self) -> usize {
        self.tags.iter().filter(|&&t| t != SLOT_INVALID).count()
    }
}

/// Whether `op` must be the last instruction of a block.
fn ends_block(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        Jal | Jalr
            | Beq
            | Bne
            | Blt
            | Bge
            | Bltu
            | Bgeu
            | FenceI
            | Ecall
            | Ebreak
            | Csrrw
            | Csrrs
            | Csrrc
            | Csrrwi
            | Csrrsi
            | Csrrci
            | Mret
            | Sret
            | Wfi
            | SfenceVma
            | Illegal
    )
}

impl Hart {
    /// Runs one block at pc (at most up to instret `end`). Returns a stop reason if `run`
    /// must return.
    pub(crate) fn run_block(
        &mut self,
        platform: &mut impl Platform,
        end: u64,
    ) -> Option<StopReason> {
        let offset = match self.fetch_offset(self.pc) {
            Ok(offset) => offset as u64,
            Err(e) => return self.take_trap(e.cause, e.tval, false),
        };
        let slot = BlockCache::slot(offset);
        if self.blocks.tags[slot] != offset && !self.build_block(offset, slot) {
            return self.step_slow(platform);
        }
        let ops = core::mem::take(&mut self.blocks.ops[slot]);
        let remaining = end - self.instret;
        let count = if (ops.len() as u64) < remaining {
            ops.len()
        } else {
            remaining as usize
        };
        let mut stop = None;
        for inst in &ops[..count] {
            match self.execute(platform, inst) {
                Ok(Flow::Next) => {
                    self.pc = self.pc.wrapping_add(inst.length_bytes as u64);
                    self.instret += 1;
                }
                Ok(flow) => {
                    stop = self.finish(inst, flow);
                    break;
                }
                Err(e) => {
                    stop = self.take_trap(e.cause, e.tval, false);
                    break;
                }
            }
        }
        self.blocks.ops[slot] = ops;
        stop
    }

    /// Completes an instruction that ends its block.
    #[inline]
    fn finish(&mut self, inst: &Instruction, flow: Flow) -> Option<StopReason> {
        self.instret += 1;
        match flow {
            Flow::Jumped => None,
            Flow::Next | Flow::EndBlock => {
                self.pc = self.pc.wrapping_add(inst.length_bytes as u64);
                None
            }
            Flow::Stop(reason) => {
                self.pc = self.pc.wrapping_add(inst.length_bytes as u64);
                Some(reason)
            }
        }
    }

    /// Decodes a block starting at RAM offset `start` into `slot`. Returns false if the first
    /// instruction crosses the end of the page (it is then executed uncached).
    fn build_block(&mut self, start: u64, slot: usize) -> bool {
        let page = (start / PAGE_SIZE_BYTES) as usize;
        let page_end = (page as u64 + 1) * PAGE_SIZE_BYTES;
        let mut ops = core::mem::take(&mut self.blocks.ops[slot]);
        ops.clear();
        let mut at = start;
        while ops.len() < BLOCK_INSTRUCTIONS_MAX && at + 2 <= page_end {
            let low = u16::from_le_bytes([self.ram[at as usize], self.ram[at as usize + 1]]);
            let inst = if low & 3 != 3 {
                decode_compressed(low)
            } else {
                if at + 4 > page_end {
                    break;
                }
                let high =
                    u16::from_le_bytes([self.ram[at as usize + 2], self.ram[at as usize + 3]]);
                decode(low as u32 | (high as u32) << 16)
            };
            ops.push(inst);
            at += inst.length_bytes as u64;
            if ends_block(inst.op) {
                break;
            }
        }
        let built = !ops.is_empty();
        self.blocks.ops[slot] = ops;
        if built {
            self.blocks.tags[slot] = start;
            let word = &mut self.blocks.code_pages[page / 64];
            let bit = 1u64 << (page % 64);
            if *word & bit == 0 {
                *word |= bit;
                // From now on stores to this page must take the slow path.
                self.mmu.store.flush_ram_page(page);
            }
        }
        built
    }

    /// Fetches, decodes and executes one instruction without the cache (an instruction
    /// that crosses a page boundary).
    fn step_slow(&mut self, platform: &mut impl Platform) -> Option<StopReason> {
        let inst = match self.fetch_uncached(self.pc) {
            Ok(inst) => inst,
            Err(e) => return self.take_trap(e.cause, e.tval, false),
        };
        match self.execute(platform, &inst) {
            Ok(flow) => self.finish(&inst, flow),
            Err(e) => self.take_trap(e.cause, e.tval, false),
        }
    }

    /// The raw bits of the instruction at `pc` (16 or 32 bits), through the fetch path.
    pub(crate) fn fetch_raw(&mut self, pc: u64) -> Result<u32, Exception> {
        let offset = self.fetch_offset(pc)?;
        let low = u16::from_le_bytes([self.ram[offset], self.ram[offset + 1]]) as u32;
        if low & 3 != 3 {
            return Ok(low);
        }
        let offset = self.fetch_offset(pc.wrapping_add(2))?;
        let high = u16::from_le_bytes([self.ram[offset], self.ram[offset + 1]]) as u32;
        Ok(low | high << 16)
    }

    fn fetch_uncached(&mut self, pc: u64) -> Result<Instruction, Exception> {
        Ok(decode(self.fetch_raw(pc)?))
    }
}
