//! The decode cache: straight-line blocks of decoded instructions keyed by physical address.
//!
//! A block starts at any instruction and ends after the first unconditional jump or
//! instruction that may change interrupt, translation or cache state (jal, jalr, CSR
//! accesses, xRET, wfi, fences, ecall/ebreak), at the end of its 4 KiB page, or after
//! `BLOCK_INSTRUCTIONS_MAX`. Conditional branches do not end a block: a taken branch leaves
//! it, a branch not taken falls through to the next decoded instruction. Blocks never span
//! pages, so invalidating a page invalidates exactly the blocks decoded from it. Store TLB
//! entries for pages holding decoded code are flagged, so every store to them takes the slow
//! path (through the cached translation), which invalidates the page's blocks when it
//! touches decoded bytes.
//!
//! A block runs only from a page whose fetch translation is cached, which the MMU allows only
//! when the PMP decides the whole page alike; instructions in a page with a PMP boundary
//! inside, and every instruction while a debug trigger is armed, are fetched and executed
//! one at a time.

use alloc::vec;
use alloc::vec::Vec;

use crate::csr::holds_data_only;
use crate::csr::numbers::{FCSR, FFLAGS, FRM};
use crate::inst::{decode, decode_compressed, Instruction, Op};
use crate::trigger::{self, Kind};
use crate::{cause, Exception, Flow, Hart, Platform, StopReason, PAGE_SIZE_BYTES};

/// Slots in the direct-mapped block table.
const BLOCK_SLOTS: usize = 1 << 14;
/// Longest block, in instructions.
const BLOCK_INSTRUCTIONS_MAX: usize = 128;
const SLOT_INVALID: u64 = u64::MAX;

/// One direct-mapped slot: tag, generation and instructions side by side, so a lookup
/// touches one cache line.
struct Slot {
    /// RAM offset of the block's first instruction, or `SLOT_INVALID`.
    tag: u64,
    /// The generation of the block's page when it was decoded.
    generation: u64,
    ops: Vec<Instruction>,
}

pub(crate) struct BlockCache {
    slots: Vec<Slot>,
    /// Per RAM page: bit i is set when bytes [64 i, 64 i + 64) of the page hold decoded
    /// instructions. Stores elsewhere in the page leave its blocks alone.
    pub(crate) code_chunks: Vec<u64>,
    /// Per RAM page: bumped when the page's blocks are invalidated, which makes every slot
    /// decoded from it stale at once.
    pub(crate) page_generations: Vec<u64>,
}

impl BlockCache {
    pub fn new(pages: usize) -> BlockCache {
        BlockCache {
            slots: (0..BLOCK_SLOTS)
                .map(|_| Slot {
                    tag: SLOT_INVALID,
                    generation: 0,
                    ops: Vec::new(),
                })
                .collect(),
            code_chunks: vec![0; pages],
            page_generations: vec![0; pages],
        }
    }

    #[inline(always)]
    fn slot(ram_offset: u64) -> usize {
        ((ram_offset >> 1) ^ (ram_offset >> 15)) as usize & (BLOCK_SLOTS - 1)
    }

    /// Whether RAM page `page` holds decoded instructions (its store TLB entries are flagged).
    #[inline]
    pub fn is_code_page(&self, page: usize) -> bool {
        self.code_chunks[page] != 0
    }

    /// Forgets every decoded block (state restore: the receiver starts from RAM alone).
    pub fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.tag = SLOT_INVALID;
        }
        self.code_chunks.fill(0);
    }

    /// Notes a write of `len_bytes` (1..=4096, within one page) at RAM offset `offset`; if
    /// it overlaps decoded instructions, drops every block of the page and returns true.
    #[inline]
    pub fn invalidate_range(&mut self, offset: usize, len_bytes: usize) -> bool {
        let page = offset / PAGE_SIZE_BYTES as usize;
        let mask = self.code_chunks[page];
        if mask == 0 {
            return false;
        }
        let first = (offset % PAGE_SIZE_BYTES as usize) / 64;
        let last = ((offset + len_bytes - 1) % PAGE_SIZE_BYTES as usize) / 64;
        let touched = (u64::MAX >> (63 - last)) & (u64::MAX << first);
        if mask & touched == 0 {
            return false;
        }
        self.code_chunks[page] = 0;
        self.page_generations[page] = self.page_generations[page].wrapping_add(1);
        true
    }
}

/// Whether `inst` must be the last instruction of a block: every CSR instruction but a read
/// of the FP CSRs (glibc reads frm and fflags around FP code), the accesses of CSRs that
/// hold data only (trap entry and exit), the sets and clears of sstatus (Linux's interrupt
/// enables and user-access windows) and the reads of `time`, as a write may change what
/// `Hart::run` checks between blocks. A set or clear of sstatus that does is answered with
/// `Flow::EndBlock` (or `Flow::Refetch`: `Hart::execute_csr`), which ends the block where it
/// runs.
pub(crate) fn ends_block(inst: &Instruction) -> bool {
    use Op::*;
    matches!(
        inst.op,
        Jal | Jalr
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
    ) && !reads_float_csr(inst)
        && !accesses_data_csr(inst)
        && !sets_or_clears_status(inst)
        && !reads_time(inst)
}

/// Whether `inst` only reads `time` (Linux's clock reads, in the kernel and in the vDSO).
pub(crate) fn reads_time(inst: &Instruction) -> bool {
    matches!(inst.op, Op::Csrrs | Op::Csrrc | Op::Csrrsi | Op::Csrrci)
        && inst.rs1 == 0
        && (inst.imm as u32 & 0xfff) as u16 == crate::csr_numbers::TIME
}

/// Whether `inst` reads, sets or clears sstatus (csrrs, csrrc and their immediate forms).
pub(crate) fn sets_or_clears_status(inst: &Instruction) -> bool {
    use Op::*;
    matches!(inst.op, Csrrs | Csrrc | Csrrsi | Csrrci)
        && (inst.imm as u32 & 0xfff) as u16 == crate::csr_numbers::SSTATUS
}

/// Whether `op` is a Zicsr instruction.
pub(crate) fn is_csr(op: Op) -> bool {
    use Op::*;
    matches!(op, Csrrw | Csrrs | Csrrc | Csrrwi | Csrrsi | Csrrci)
}

/// Whether `inst` is a CSR instruction on a CSR that holds data only (`csr::holds_data_only`).
pub(crate) fn accesses_data_csr(inst: &Instruction) -> bool {
    is_csr(inst.op) && holds_data_only((inst.imm as u32 & 0xfff) as u16)
}

/// Whether `inst` only reads fflags, frm or fcsr (csrrs or csrrc with x0, their immediate
/// forms with 0: Zicsr 9.1 says these do not write the CSR).
pub(crate) fn reads_float_csr(inst: &Instruction) -> bool {
    let csr = (inst.imm as u32 & 0xfff) as u16;
    matches!(inst.op, Op::Csrrs | Op::Csrrc | Op::Csrrsi | Op::Csrrci)
        && inst.rs1 == 0
        && matches!(csr, FFLAGS | FRM | FCSR)
}

impl Hart {
    /// Runs one block at pc (at most up to instret `end`). Returns a stop reason if `run`
    /// must return.
    pub(crate) fn run_block(
        &mut self,
        platform: &mut impl Platform,
        end: u64,
    ) -> Option<StopReason> {
        if self.csr.triggers.armed {
            return self.step_with_triggers(platform);
        }
        let offset = match self.fetch_page(self.pc) {
            Ok((offset, true)) => offset as u64,
            Ok((_, false)) => return self.step_slow(platform),
            Err(e) => return self.take_trap(e.cause, e.tval, false),
        };
        let slot = BlockCache::slot(offset);
        let generation = self.blocks.page_generations[(offset / PAGE_SIZE_BYTES) as usize];
        let entry = &self.blocks.slots[slot];
        let cached = entry.tag == offset && entry.generation == generation;
        if !cached && !self.build_block(offset, slot) {
            return self.step_slow(platform);
        }
        let ops = core::mem::take(&mut self.blocks.slots[slot].ops);
        if ops.is_empty() {
            // Cannot happen (a slot with a valid tag always holds its block), but a block
            // that retires nothing must never be run: decode the instruction afresh.
            self.blocks.slots[slot].ops = ops;
            self.blocks.slots[slot].tag = SLOT_INVALID;
            return self.step_slow(platform);
        }
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
        self.blocks.slots[slot].ops = ops;
        stop
    }

    /// Completes an instruction that ends its block.
    #[inline]
    pub(crate) fn finish(&mut self, inst: &Instruction, flow: Flow) -> Option<StopReason> {
        self.instret += 1;
        match flow {
            Flow::Jumped => None,
            Flow::Next | Flow::EndBlock | Flow::Refetch => {
                self.pc = self.pc.wrapping_add(inst.length_bytes as u64);
                None
            }
            Flow::Stop(reason) => {
                self.pc = self.pc.wrapping_add(inst.length_bytes as u64);
                Some(reason)
            }
        }
    }

    /// Decodes the block at RAM offset `start` into `ops` (emptied first): up to
    /// `BLOCK_INSTRUCTIONS_MAX` instructions within the page, through the first that ends a
    /// block. Empty when the first instruction crosses the end of the page. The decode cache
    /// and the translator both take their blocks from here.
    pub(crate) fn decode_block(&self, start: u64, ops: &mut Vec<Instruction>) {
        let page_end = (start / PAGE_SIZE_BYTES + 1) * PAGE_SIZE_BYTES;
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
            if ends_block(&inst) {
                break;
            }
        }
    }

    /// Decodes a block starting at RAM offset `start` into `slot`. Returns false if the first
    /// instruction crosses the end of the page (it is then executed uncached).
    fn build_block(&mut self, start: u64, slot: usize) -> bool {
        let page = (start / PAGE_SIZE_BYTES) as usize;
        let mut ops = core::mem::take(&mut self.blocks.slots[slot].ops);
        self.decode_block(start, &mut ops);
        let built = !ops.is_empty();
        let entry = &mut self.blocks.slots[slot];
        entry.ops = ops;
        if !built {
            // The slot's previous block just lost its instructions: forget its tag, or the
            // next run of that block would find it cached and empty and never retire.
            entry.tag = SLOT_INVALID;
        }
        if built {
            entry.tag = start;
            entry.generation = self.blocks.page_generations[page];
            let end = start + ops_end_bytes(&self.blocks.slots[slot].ops);
            self.note_decoded_range(start, end);
        }
        built
    }

    /// Records that RAM bytes [start, end) (within one page) hold decoded instructions, so
    /// stores to them invalidate the page's blocks and translations.
    pub(crate) fn note_decoded_range(&mut self, start: u64, end: u64) {
        let page = (start / PAGE_SIZE_BYTES) as usize;
        let first = (start % PAGE_SIZE_BYTES) / 64;
        let last = ((end - 1) % PAGE_SIZE_BYTES) / 64;
        let chunks = (u64::MAX >> (63 - last)) & (u64::MAX << first);
        if self.blocks.code_chunks[page] == 0 {
            // From now on stores to this page must take the slow path.
            self.mmu.store.mark_ram_page_code(page);
        }
        self.blocks.code_chunks[page] |= chunks;
    }

    /// Fetches, decodes and executes one instruction without the cache (an instruction
    /// that crosses a page boundary, or one in a page with a PMP boundary inside).
    pub(crate) fn step_slow(&mut self, platform: &mut impl Platform) -> Option<StopReason> {
        let inst = match self.fetch_uncached(self.pc) {
            Ok(inst) => inst,
            Err(e) => return self.take_trap(e.cause, e.tval, false),
        };
        match self.execute(platform, &inst) {
            Ok(flow) => self.finish(&inst, flow),
            Err(e) => self.take_trap(e.cause, e.tval, false),
        }
    }

    /// Fetches, checks against the armed triggers, and executes one instruction (debug spec
    /// 1.0 chapter 5, `timing` = 0: a matching instruction traps before it executes and does
    /// not retire). An execute-address breakpoint comes before every other exception, a
    /// load/store-address breakpoint before address translation (privileged spec table 3.7).
    fn step_with_triggers(&mut self, platform: &mut impl Platform) -> Option<StopReason> {
        let pc = self.pc;
        let triggers = &self.csr.triggers;
        if triggers.fires(self.privilege, Kind::Execute, pc, 1) {
            return self.take_trap(cause::BREAKPOINT, pc, false);
        }
        let inst = match self.fetch_uncached(pc) {
            Ok(inst) => inst,
            Err(e) => return self.take_trap(e.cause, e.tval, false),
        };
        if let Some(access) = trigger::data_access(&inst, self.reg(inst.rs1)) {
            let triggers = &self.csr.triggers;
            let fires = (access.loads
                && triggers.fires(self.privilege, Kind::Load, access.addr, access.len_bytes))
                || (access.stores
                    && triggers.fires(self.privilege, Kind::Store, access.addr, access.len_bytes));
            if fires {
                return self.take_trap(cause::BREAKPOINT, access.addr, false);
            }
        }
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

    /// The instruction at `pc`, fetched through the MMU and decoded, bypassing the decode
    /// cache (also the translator's way to run one that straddles two pages).
    pub(crate) fn fetch_uncached(&mut self, pc: u64) -> Result<Instruction, Exception> {
        Ok(decode(self.fetch_raw(pc)?))
    }
}

/// The bytes a decoded block covers.
fn ops_end_bytes(ops: &[Instruction]) -> u64 {
    ops.iter().map(|inst| u64::from(inst.length_bytes)).sum()
}
