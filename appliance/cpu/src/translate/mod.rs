//! The translator: hot guest code becomes x86-64 machine code in a code cache.
//!
//! Shape (a template translator): a translated block covers exactly the instructions the
//! decode cache's block at the same address holds (`block.rs`): it starts at any
//! instruction, never leaves its 4 KiB page, continues past conditional branches that are
//! not taken, and ends after the first instruction that ends a block there. RV64I and M,
//! the AMOs but min and max, LR and SC, and the F and D instructions that round to nearest
//! even (`float.rs`: SSE2, and FMA3 where the host has it), and Linux's and glibc's
//! frequent CSR accesses (sstatus, the trap CSRs, the FP CSRs, `time`: `emit::csr_inline`)
//! become inline machine code; every other instruction (other CSR accesses, AMO min and
//! max, system, the remaining FP ones) is handed to the interpreter's `execute` through a
//! call, one instruction at a time, with pc and instret set as the interpreter would have
//! them.
//!
//! Exact counting: a block knows how many instructions it holds (N). Its entry compares
//! the remaining budget (a host register) with N and leaves without executing anything
//! when fewer remain; the interpreter then runs the tail with its own per-instruction
//! count. Every exit subtracts the number of instructions retired up to it (the
//! instruction's index in the block; a conditional branch to a later instruction of the
//! same block jumps there without leaving and adds back the instructions it skips, one to
//! an earlier instruction re-checks the budget as a loop does). A load or
//! store that misses the inline soft-TLB path calls the interpreter for that one
//! instruction (consecutive loads or stores through one base register share one probe,
//! `emit::Emitter::access_group`, and run one by one when it fails); when an interpreted
//! instruction does anything but fall through (a trap, MMIO, a jump, a write to code, a
//! CSR), translated code leaves at once without counting it and `Hart::run` completes it
//! exactly as `run_block` does, so a trap in any position stops the count at the faulting
//! instruction.
//!
//! Interrupts: `Hart::run` checks for a pending interrupt before each block it enters.
//! Translated code goes on from block to block only through instructions after which the
//! interpreter would also go on without that check (inside a block) or that cannot change
//! whether an interrupt is pending (plain jumps and branches between blocks): everything
//! that can (CSR writes but those to data-only CSRs and those that change no more than
//! interrupt enables and leave none takeable, xRET, wfi, MMIO, traps) ends the
//! interpreter's block with a flow other than "next" and so leaves translated code, but
//! a refetch (a write of sstatus that also turns FS off or on and leaves no interrupt
//! takeable, too), which goes on through the lookup. Interrupts are therefore taken at the
//! same counts as with the interpreter.
//!
//! Invalidation: blocks are keyed by virtual pc, RAM offset and the decode cache's page
//! generation, which stores to decoded code bump (`BlockCache::invalidate_range`); each
//! block's entry re-checks its page's generation, so a chained jump into a block whose
//! page was written leaves it at once and the block is translated again. Direct jumps
//! are chained: inside a virtual page straight to the target's entry (as QEMU's
//! `goto_tb`: the source block's own mapping vouches for the page), across pages to the
//! target's guarded entry, which checks in the fetch TLB that the target's page is still
//! mapped, under the current privilege, to the RAM page it was decoded from; so a change
//! of translation (satp, privilege, sfence.vma) can never send a chain to the wrong code.
//! Indirect jumps look the target up through the fetch TLB on every execution
//! (`lookup`, through a small jump cache in front of the table).
//!
//! Code memory comes from the embedder (`ExecutableMemory`): the crate stays `no_std`,
//! and the hosted process maps it with mmap while a bare-metal kernel hands in a region.
//!
//! Only hot code is translated: `Hart::run` interprets a block until it has reached it
//! `HOT_EXECUTIONS_DEFAULT` times (translation costs a few microseconds a block and code
//! that runs rarely runs faster from the decode cache, which is far smaller than its
//! machine code); a jump from translated code translates its target at once.
//!
//! Why templates over a hand-written encoder (`x86.rs`) rather than an assembler crate or
//! Cranelift: the templates need about thirty instruction forms, which fit in one small
//! file with byte-exact tests and no dependency to vet for `no_std`; Cranelift would bring
//! register allocation and optimisation at the cost of translation latency (milliseconds,
//! against microseconds here) and a large dependency in the replicated core.

mod emit;
mod x86;

#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;

use crate::inst::{Instruction, Op};
use crate::{Exception, Flow, Hart, Platform, Reservation, StopReason, PAGE_SIZE_BYTES};

/// Memory the translator may write machine code into and execute.
///
/// # Safety
/// `as_mut_ptr` must return the start of `len_bytes` bytes that are readable, writable
/// and executable by the current thread, exclusively owned by this object, and valid (at
/// the same address) for as long as the object lives.
pub unsafe trait ExecutableMemory: Send {
    /// Start of the region.
    fn as_mut_ptr(&mut self) -> *mut u8;
    /// Length of the region in bytes.
    fn len_bytes(&self) -> usize;
}

/// Why `Hart::enable_translator` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslatorError {
    /// The translator emits x86-64 code; this host is another architecture.
    UnsupportedHost,
    /// The code region is smaller than `CODE_BYTES_MIN` or larger than `CODE_BYTES_MAX`.
    RegionSize {
        /// The size offered.
        len_bytes: usize,
    },
}

impl fmt::Display for TranslatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslatorError::UnsupportedHost => {
                write!(f, "the translator needs an x86-64 host; run without it")
            }
            TranslatorError::RegionSize { len_bytes } => write!(
                f,
                "code region of {len_bytes} bytes is outside {CODE_BYTES_MIN}..={CODE_BYTES_MAX}; hand in a region in that range"
            ),
        }
    }
}

impl core::error::Error for TranslatorError {}

/// Where one part of a translated block (hot or cold, `emit::Code`) was placed, for a
/// profiler's symbol map (`perf` reads
/// `/tmp/perf-PID.map` lines of address, length and name to name code it cannot find in a
/// binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedBlock {
    /// Where this part starts in the code cache.
    pub host_address: u64,
    /// The length of this part.
    pub len_bytes: u32,
    /// The guest pc of the block's first instruction.
    pub guest_pc: u64,
}

/// Counters of the translator's work (not architectural state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TranslatorStats {
    /// Blocks translated.
    pub blocks_translated: u64,
    /// Guest instructions in the translated blocks.
    pub instructions_translated: u64,
    /// Bytes of machine code emitted.
    pub code_bytes_emitted: u64,
    /// Times the code cache was emptied because it was full.
    pub cache_flushes: u64,
    /// Entries into translated code from `Hart::run`.
    pub entries: u64,
    /// Instructions translated code handed to the interpreter (those it does not
    /// translate, and loads and stores that miss the inline soft-TLB path).
    pub interpreted: u64,
    /// Direct jumps patched between blocks.
    pub chains: u64,
}

/// Smallest code region accepted: the trampoline plus a few worst-case blocks.
pub const CODE_BYTES_MIN: usize = 256 * 1024;
/// Eighths of the region (after the shared code) for the blocks' hot parts; the rest takes
/// their cold parts. Measured over the minimal Linux boot, the hot parts are 30% of the
/// code.
const HOT_EIGHTHS: usize = 3;
/// Largest code region accepted: rel32 jumps must reach across it.
pub const CODE_BYTES_MAX: usize = 1 << 30;
/// log2 of the slots in the table from (pc, RAM offset) to translated code (32 bytes a
/// slot: 2 MiB), and of the execution counters of blocks not translated yet.
const TABLE_SLOTS_LOG2: u32 = 16;
const TABLE_SLOTS: usize = 1 << TABLE_SLOTS_LOG2;
/// Ways of the translation table's sets. Direct-mapped, two hot blocks that shared a slot
/// evicted each other at every visit and both ran interpreted most of the time (in a redis
/// session `sg_init_one` and `tcp_v4_send_check` were each translated 214 times).
const TABLE_WAYS: usize = 4;
/// How often `Hart::run` reaches a block before it is translated, unless the embedder says
/// otherwise: code that runs rarely is cheaper to interpret than to translate (about 5 us
/// a block) and keep in the host's caches (about 100 bytes of x86-64 per instruction).
/// Measured against 64: code that a service runs once per request (a fork for each
/// connection) turns hot after 16 requests rather than 64, which took an eighth of the CPU
/// off 100 sequential curl GETs; the Debian boot and redis were no slower.
pub const HOT_EXECUTIONS_DEFAULT: u32 = 16;
/// log2 of the entries of the jump cache in front of the table (32 bytes an entry: 128 KiB,
/// which stays in the host's L2 where the 2 MiB table does not; measured under
/// redis-benchmark, the table's cache misses made `lookup` 15% of all host time). 4 times
/// as many entries miss 37% less often in the Debian boot (0.33 M misses, not 0.52 M), with
/// no change in its time.
pub(super) const JUMP_CACHE_LOG2: u32 = 12;
/// The jump cache's index of a pc: the top bits of (pc >> 1) times this (Fibonacci hashing).
pub(super) const JUMP_HASH: u64 = 0x9e37_79b9_7f4a_7c15;
/// Marks a table slot whose instruction the translator does not handle.
const CODE_NONE: u32 = u32::MAX;

/// How translated code left (the value in eax at the epilogue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Exit {
    /// Continue at `exit_pc` through `Hart::run` (a jump whose target the inline lookup
    /// did not find).
    Jump = 0,
    /// A direct jump in the same page whose target is not linked yet; `exit_site` holds
    /// the address of its rel32, `exit_ram_page` the RAM page of its block.
    Chain = 1,
    /// The interpreter executed an instruction for translated code and it did not simply
    /// fall through (`Frame::outcome` says what it did).
    Helper = 2,
    /// The block at `exit_pc` holds more instructions than the budget has left.
    Budget = 3,
    /// The block at `exit_pc` was decoded from bytes since overwritten.
    Stale = 4,
    /// The block at `exit_pc` runs FP instructions inline, which needs FS not Off and, for
    /// dynamic rounding, frm = RNE; the interpreter runs it instead.
    FloatState = 5,
    /// A direct jump to another page whose target is not linked yet; `exit_site` holds
    /// the address of its rel32, to point at the target's guarded entry.
    ChainAcross = 6,
}

/// What translated code reads and writes besides guest registers: filled before each
/// entry. `#[repr(C)]` because the templates address its first fields by offset.
#[repr(C)]
pub(crate) struct Frame {
    /// `Hart::x`, biased by `emit::X_BIAS_BYTES` (translated code's rbx).
    pub x: *mut u64,
    pub ram: *mut u8,
    pub load_key: u64,
    pub store_key: u64,
    /// The load and store TLBs' entries (`mmu::Tlb::entries_ptr`).
    pub load_tlb: *const u8,
    pub store_tlb: *const u8,
    pub dirty: *mut u64,
    pub generations: *const u64,
    /// `BlockCache::code_chunks`: which 64-byte chunks of each page hold decoded code.
    pub code_chunks: *const u64,
    /// The fetch TLB's entries and key, and the jump cache, for the inline probe of
    /// indirect jumps (`emit::Emitter::jump_through_lookup`).
    pub fetch_tlb: *const u8,
    pub fetch_key: u64,
    pub jump_cache: *const JumpEntry,
    /// `Hart::reservation`, which translated LR and SC set and test.
    pub reservation: *mut Reservation,
    /// Instructions that may still retire in this `run` (host register r13 inside).
    pub remaining: u64,
    /// The host stack pointer inside the trampoline, where every exit (and every refetch)
    /// puts it back, dropping the call frames of `emit::Emitter::call`.
    pub entry_rsp: u64,
    /// Call frames on the host stack (at most `emit::CALL_FRAMES_MAX`).
    pub calls: u64,
    pub exit_pc: u64,
    pub exit_site: u64,
    /// With `Exit::Chain`: the RAM page of the block that holds `exit_site`.
    pub exit_ram_page: u64,
    /// `time` = `time_offset` + instret / `time_divisor` (`Platform::linear_time`), or
    /// `time_divisor` 0: reads of `time` go to the interpreter (no such function, or not
    /// readable at this entry's privilege, which only instructions that leave translated
    /// code change).
    pub time_offset: u64,
    pub time_divisor: u64,
    /// The host address of an access group's base register, for its accesses after
    /// instructions that may use rcx (`emit::Emitter::access_group`).
    pub group_base: u64,
    /// `interpret::<P>`: executes one instruction in the interpreter.
    pub interpret: usize,
    /// `lookup`: the entry of the translated block for a pc, or 0.
    pub lookup: usize,
    /// MXCSR of the embedder while translated code runs (saved and restored by the
    /// trampoline).
    pub host_mxcsr: u32,
    /// MXCSR of translated code: loaded on entry, stored on the way out with the flags
    /// raised since the last fold (`float::accrue`).
    pub guest_mxcsr: u32,
    /// instret at which the run ends (`remaining` counts down to it).
    pub end: u64,
    // The fields below are read by the helpers only, never by translated code.
    pub hart: *mut Hart,
    pub platform: *mut u8,
    pub translator: *const Translator,
    /// What the last interpreted instruction did, when it ended the translated run.
    pub outcome: Option<Result<(Instruction, Flow), Exception>>,
    pub helper_calls: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    pc: u64,
    ram_offset: u64,
    generation: u64,
    /// Offset of the block's entry in the code region, or `CODE_NONE`.
    code: u32,
    instructions: u32,
}

/// How often `Hart::run` reached the block at `pc` and RAM offset `ram_offset` (decoded
/// under page generation `generation`) while it was not translated yet.
#[derive(Clone, Copy)]
struct Counter {
    pc: u64,
    ram_offset: u64,
    generation: u64,
    executions: u32,
}

const COUNTER_EMPTY: Counter = Counter {
    pc: u64::MAX,
    ram_offset: u64::MAX,
    generation: 0,
    executions: 0,
};

/// A jump cache entry: the live translation of `pc` at RAM offset `ram_offset`. No page
/// generation: every block's entry checks its own and leaves if the page was written (and
/// `Hart::run` then drops the entry). `repr(C)` and 32 bytes: translated code probes it in
/// place.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct JumpEntry {
    pub pc: u64,
    pub ram_offset: u64,
    /// Absolute address of the block's entry.
    pub entry: u64,
    /// Instructions in the block (`Hart::run` enters only with the budget for all).
    pub instructions: u32,
}

const JUMP_EMPTY: JumpEntry = JumpEntry {
    pc: u64::MAX,
    ram_offset: u64::MAX,
    entry: 0,
    instructions: 0,
};

const SLOT_EMPTY: Slot = Slot {
    pc: u64::MAX,
    ram_offset: u64::MAX,
    generation: 0,
    code: CODE_NONE,
    instructions: 0,
};

pub(crate) struct Translator {
    memory: Box<dyn ExecutableMemory>,
    base: *mut u8,
    len_bytes: usize,
    /// End of the shared code: the hot parts of blocks are placed from here
    /// (`emit::Code`)...
    first_block: usize,
    /// ...up to here, where their cold parts start.
    first_cold: usize,
    /// Where the code all blocks share lies.
    shared: emit::Shared,
    /// The next hot part goes here.
    used_bytes: usize,
    /// The next cold part goes here.
    cold_used: usize,
    /// Translated blocks: `TABLE_WAYS`-way sets, by `set_index`.
    table: Vec<Slot>,
    /// Executions of blocks on their way to being hot, direct-mapped by `counter_index`: a
    /// collision restarts a count, and never evicts a translation.
    counters: Vec<Counter>,
    /// The way of each set that the next translation into a full set replaces.
    next_victim: Vec<u8>,
    /// The jump targets `lookup` found last, by pc: written by `lookup` through a shared
    /// reference while translated code runs, hence cells.
    jump_cache: Box<[Cell<JumpEntry>]>,
    /// Instructions that translated code hands to the interpreter, by index.
    interpreted_ops: Vec<Instruction>,
    /// Executions after which a block is translated (1: at once).
    hot_executions: u32,
    /// Whether the fused multiply-adds become FMA3 instructions (the host has them).
    fused_multiply_add: bool,
    pub stats: TranslatorStats,
    /// Every block placed since `Hart::record_block_placements`, when asked for. A code
    /// cache flush reuses addresses: later entries supersede earlier ones they overlap.
    placements: Option<Vec<PlacedBlock>>,
}

// SAFETY: `base` points into memory owned by `memory`, which is `Send`; nothing else holds
// the pointer, so moving the translator to another thread moves sole access with it.
unsafe impl Send for Translator {}

impl Translator {
    fn new(
        mut memory: Box<dyn ExecutableMemory>,
        hot_executions: u32,
    ) -> Result<Translator, TranslatorError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(TranslatorError::UnsupportedHost);
        }
        let len_bytes = memory.len_bytes();
        if !(CODE_BYTES_MIN..=CODE_BYTES_MAX).contains(&len_bytes) {
            return Err(TranslatorError::RegionSize { len_bytes });
        }
        let base = memory.as_mut_ptr();
        let (code, shared) = emit::trampoline();
        // SAFETY: the region is `len_bytes` >= CODE_BYTES_MIN writable bytes owned by
        // `memory` (ExecutableMemory contract) and the trampoline is far shorter.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), base, code.len()) };
        let first_block = code.len().next_multiple_of(64);
        let first_cold =
            (first_block + (len_bytes - first_block) / 8 * HOT_EIGHTHS).next_multiple_of(64);
        Ok(Translator {
            memory,
            base,
            len_bytes,
            first_block,
            first_cold,
            shared,
            used_bytes: first_block,
            cold_used: first_cold,
            table: vec![SLOT_EMPTY; TABLE_SLOTS],
            counters: vec![COUNTER_EMPTY; TABLE_SLOTS],
            next_victim: vec![0; TABLE_SLOTS / TABLE_WAYS],
            jump_cache: (0..1 << JUMP_CACHE_LOG2)
                .map(|_| Cell::new(JUMP_EMPTY))
                .collect(),
            interpreted_ops: Vec::new(),
            hot_executions: hot_executions.max(1),
            fused_multiply_add: emit::float::host_has_fused_multiply_add(),
            stats: TranslatorStats::default(),
            placements: None,
        })
    }

    /// Multiplicative (Fibonacci) hashing of the instruction address: code is laid out
    /// with regular spacing, which a plain mask of the low bits would map onto a few slots.
    fn counter_index(pc: u64) -> usize {
        ((pc >> 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TABLE_SLOTS_LOG2)) as usize
    }

    /// The first slot of the set that may hold `pc`'s translation.
    fn set_index(pc: u64) -> usize {
        Translator::counter_index(pc) & !(TABLE_WAYS - 1)
    }

    /// The translation of `pc` at RAM `offset` in its set, live or stale.
    fn find(&self, pc: u64, offset: u64) -> Option<&Slot> {
        let set = Translator::set_index(pc);
        self.table[set..set + TABLE_WAYS]
            .iter()
            .find(|slot| slot.pc == pc && slot.ram_offset == offset)
    }

    /// Files `slot` in its set: over an older translation of the same pc and RAM offset,
    /// else in an empty way, else in the set's next victim (round robin).
    fn file(&mut self, slot: Slot) {
        let set = Translator::set_index(slot.pc);
        let ways = &self.table[set..set + TABLE_WAYS];
        let way = ways
            .iter()
            .position(|old| old.pc == slot.pc && old.ram_offset == slot.ram_offset)
            .or_else(|| ways.iter().position(|old| old.code == CODE_NONE))
            .unwrap_or_else(|| {
                let victim = &mut self.next_victim[set / TABLE_WAYS];
                let way = *victim as usize;
                *victim = ((way + 1) % TABLE_WAYS) as u8;
                way
            });
        self.table[set + way] = slot;
    }

    fn jump_index(pc: u64) -> usize {
        ((pc >> 1).wrapping_mul(JUMP_HASH) >> (64 - JUMP_CACHE_LOG2)) as usize
    }

    /// Forgets every translation and reuses the whole region.
    pub fn flush(&mut self) {
        self.table.fill(SLOT_EMPTY);
        self.counters.fill(COUNTER_EMPTY);
        self.next_victim.fill(0);
        self.jump_cache
            .iter()
            .for_each(|entry| entry.set(JUMP_EMPTY));
        self.interpreted_ops.clear();
        self.used_bytes = self.first_block;
        self.cold_used = self.first_cold;
    }

    /// Whether `code` fits in what is left of the region.
    fn fits(&self, code: &emit::Code) -> bool {
        self.used_bytes + code.hot_bytes <= self.first_cold
            && self.cold_used + (code.bytes.len() - code.hot_bytes) <= self.len_bytes
    }

    /// Machine code for a block (`ops` empty: the straddling instruction at pc), to be placed
    /// at `used_bytes`.
    fn assemble(
        &mut self,
        ops: &[Instruction],
        pc: u64,
        offset: u64,
        generation: u64,
        layout: emit::HartLayout,
    ) -> emit::Code {
        let base = self.base as u64;
        let first_interpreted = self.interpreted_ops.len() as u32;
        let at = emit::Placement {
            pc,
            ram_offset: offset,
            generation,
            origin: base + self.used_bytes as u64,
            epilogue: base + self.shared.epilogue as u64,
            lookup: base + self.shared.lookup as u64,
            flagged_store: self.shared.flagged_store.map(|at| base + at as u64),
            first_interpreted,
            layout,
        };
        let (code, interpreted) = if ops.is_empty() {
            (emit::straddling(at), Vec::new())
        } else {
            emit::block(ops, at)
        };
        self.interpreted_ops.extend_from_slice(&interpreted);
        code
    }

    /// The jump cache entry of the live translation of `pc` at RAM `offset`, if any.
    fn live_entry(&self, pc: u64, offset: u64, generation: u64) -> Option<JumpEntry> {
        match self.find(pc, offset) {
            Some(slot) if slot.generation == generation && slot.code != CODE_NONE => {
                Some(JumpEntry {
                    pc,
                    ram_offset: offset,
                    entry: self.base as u64 + slot.code as u64,
                    instructions: slot.instructions,
                })
            }
            _ => None,
        }
    }

    /// The jump cache's entry for `pc` at RAM `offset`, if it holds one. Its translation
    /// may have gone stale since; the block's entry checks.
    fn jump_hit(&self, pc: u64, offset: u64) -> Option<JumpEntry> {
        let hit = self.jump_cache[Translator::jump_index(pc)].get();
        (hit.pc == pc && hit.ram_offset == offset).then_some(hit)
    }

    /// `jump_hit` as the code offset and length in instructions of the translation.
    fn cached(&self, pc: u64, offset: u64) -> Option<(u32, u32)> {
        self.jump_hit(pc, offset)
            .map(|hit| ((hit.entry - self.base as u64) as u32, hit.instructions))
    }

    /// Drops the jump cache's entry for `pc`, whose translation went stale.
    fn forget(&self, pc: u64) {
        let cached = &self.jump_cache[Translator::jump_index(pc)];
        if cached.get().pc == pc {
            cached.set(JUMP_EMPTY);
        }
    }

    /// Copies an assembled block to the region: its hot part at `used_bytes` (where it
    /// was assembled to run), its cold part at `cold_used`, with every rel32 that crosses
    /// between them or leaves the block from the cold part pointed at the same target as
    /// assembled. Returns where the hot part went.
    fn place(&mut self, mut code: emit::Code) -> usize {
        assert!(self.fits(&code), "block placed past its part of the region");
        let (hot_at, cold_at) = (self.used_bytes, self.cold_used);
        let (hot, len) = (code.hot_bytes as i64, code.bytes.len() as i64);
        let origin = self.base as i64 + hot_at as i64;
        let cold_origin = self.base as i64 + cold_at as i64 - hot;
        // Where the byte assembled at `offset` (from the hot part's start) runs; targets
        // outside the block (shared code, other blocks) were assembled as offsets too.
        let address = |offset: i64| {
            if (hot..len).contains(&offset) {
                cold_origin + offset
            } else {
                origin + offset
            }
        };
        for &site in &code.rel32_sites {
            let field = &mut code.bytes[site..site + 4];
            let rel = i32::from_le_bytes(field.try_into().expect("four bytes"));
            let target = site as i64 + 4 + rel as i64;
            let moved = address(target) - (address(site as i64) + 4);
            let moved = i32::try_from(moved).expect("CODE_BYTES_MAX keeps jumps within rel32");
            field.copy_from_slice(&moved.to_le_bytes());
        }
        let (hot_code, cold_code) = code.bytes.split_at(code.hot_bytes);
        // SAFETY: both parts lie inside their areas of the region (`fits`, asserted above);
        // no translated code runs while the translator writes (single thread, outside
        // `enter`).
        unsafe {
            core::ptr::copy_nonoverlapping(
                hot_code.as_ptr(),
                self.base.add(hot_at),
                hot_code.len(),
            );
            core::ptr::copy_nonoverlapping(
                cold_code.as_ptr(),
                self.base.add(cold_at),
                cold_code.len(),
            );
        }
        self.used_bytes = (hot_at + hot_code.len()).next_multiple_of(16);
        self.cold_used = (cold_at + cold_code.len()).next_multiple_of(16);
        self.stats.code_bytes_emitted += code.bytes.len() as u64;
        hot_at
    }

    /// Points the rel32 at absolute address `site` (in a block's hot part) to the block
    /// entry at region offset `target`.
    fn link(&mut self, site: u64, target: u32) {
        let base = self.base as u64;
        let end = base + self.used_bytes as u64;
        if site < base + self.first_block as u64 || site + 4 > end {
            return;
        }
        let rel = (base + target as u64) as i64 - (site as i64 + 4);
        let Ok(rel) = i32::try_from(rel) else { return };
        // SAFETY: `site` lies inside the emitted part of the region (checked above) and
        // was reported by translated code as the rel32 of one of its jumps.
        unsafe { core::ptr::write_unaligned(site as *mut i32, rel) };
        self.stats.chains += 1;
    }

    /// Runs translated code from region offset `code` until it exits.
    fn enter(&self, frame: &mut Frame, code: u32) -> Exit {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the region starts with the trampoline emitted in `new`, a sysv64
            // function (frame, code) -> exit reason that saves and restores every
            // callee-saved register; `code` is the entry of a block emitted by `emit` into
            // the same region, and the frame's pointers were set by the caller to live
            // hart state that nothing else touches until this returns.
            let reason = unsafe {
                let trampoline: extern "sysv64" fn(*mut Frame, *const u8) -> u32 =
                    core::mem::transmute(self.base);
                trampoline(frame, self.base.add(code as usize))
            };
            match reason {
                0 => Exit::Jump,
                1 => Exit::Chain,
                2 => Exit::Helper,
                3 => Exit::Budget,
                4 => Exit::Stale,
                5 => Exit::FloatState,
                _ => Exit::ChainAcross,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (frame, code);
            Exit::Budget
        }
    }
}

/// What `interpret` returns: the instruction fell through (translated code goes on after
/// it), did anything else (the outcome waits in the frame; translated code leaves without
/// counting it), or fell through asking for a refetch (`Flow::Refetch`: translated code
/// counts it and goes on through the lookup).
pub(super) const INTERPRETED_NEXT: u64 = 0;
pub(super) const INTERPRETED_LEAVE: u64 = 1;
pub(super) const INTERPRETED_REFETCH: u64 = 2;

/// `interpret`'s index for the instruction at pc fetched afresh through the MMU: one whose
/// four bytes straddle the end of its page, which no translation may hold (`emit::straddling`).
pub(super) const FETCH_AT_PC: u64 = u64::MAX;

/// Called by translated code for an instruction it hands to the interpreter: executes
/// `interpreted_ops[index]` (or, with `FETCH_AT_PC`, the instruction fetched at `pc`) at
/// `pc` with `remaining` instructions left in the run, exactly as `run_block` would; says
/// how it went with an `INTERPRETED_*` value.
extern "sysv64" fn interpret<P: Platform>(
    frame: *mut Frame,
    index: u64,
    pc: u64,
    remaining: u64,
) -> u64 {
    // SAFETY: translated code passes the frame `run_translated_with` filled for this entry;
    // its hart, platform and translator pointers come from the live borrows held across
    // the call into translated code, and nothing else uses them meanwhile.
    let (frame, hart, platform, translator) = unsafe {
        let frame = &mut *frame;
        let hart = &mut *frame.hart;
        let platform = &mut *frame.platform.cast::<P>();
        let translator = &*frame.translator;
        (frame, hart, platform, translator)
    };
    frame.helper_calls += 1;
    hart.pc = pc;
    hart.instret = frame.end - remaining;
    let inst = if index == FETCH_AT_PC {
        match hart.fetch_uncached(pc) {
            Ok(inst) => inst,
            Err(fault) => {
                frame.outcome = Some(Err(fault));
                return INTERPRETED_LEAVE;
            }
        }
    } else {
        match translator.interpreted_ops.get(index as usize) {
            Some(&inst) => inst,
            None => {
                // Cannot happen (indices are emitted with their instructions); leave,
                // retiring nothing, and let `Hart::run` go on from pc.
                frame.outcome = None;
                return INTERPRETED_LEAVE;
            }
        }
    };
    // The interpreter may read fflags (a CSR read, or accrue to it): fold what translated
    // code raised so far first.
    emit::float::accrue(hart, emit::float::take_mxcsr());
    let result = hart.execute(platform, &inst);
    // Whatever host code did to MXCSR's flags meanwhile is no guest's.
    emit::float::take_mxcsr();
    if let Ok(Flow::Next | Flow::Refetch) = result {
        // A write of SUM or MXR goes on in translated code (`Hart::execute_csr`), whose
        // next loads and stores must probe the TLBs with the new keys.
        frame.load_key = hart.mmu.load_key();
        frame.store_key = hart.mmu.store_key();
    }
    if let Ok(Flow::Next) = result {
        return INTERPRETED_NEXT;
    }
    // Kept for a refetch too: translated code without a way on through the lookup leaves,
    // and `run` completes the instruction from here.
    frame.outcome = Some(result.map(|flow| (inst, flow)));
    match result {
        Ok(Flow::Refetch) => INTERPRETED_REFETCH,
        _ => INTERPRETED_LEAVE,
    }
}

/// Called by translated code for an indirect or cross-page jump: the entry address of the
/// translated block at `pc` if the fetch TLB already maps it (a walk, which may fault or
/// set A bits, stays with `Hart::run`), else 0. Changes nothing but the jump cache.
extern "sysv64" fn lookup(frame: *mut Frame, pc: u64) -> u64 {
    // SAFETY: as for `interpret`; this only reads through the pointers (the jump cache is
    // made of cells).
    let (hart, translator) = unsafe {
        let frame = &*frame;
        (&*frame.hart, &*frame.translator)
    };
    let Some(offset) = hart.fetch_cached(pc) else {
        return 0;
    };
    if let Some(hit) = translator.jump_hit(pc, offset) {
        return hit.entry;
    }
    let generation = hart.blocks.page_generations[(offset / PAGE_SIZE_BYTES) as usize];
    let Some(live) = translator.live_entry(pc, offset, generation) else {
        return 0;
    };
    translator.jump_cache[Translator::jump_index(pc)].set(live);
    live.entry
}

/// Whether the translator emits code for `op`; translated code hands the others to the
/// interpreter, one instruction at a time.
pub(crate) fn translates(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        Lui | Auipc
            | Jal
            | Jalr
            | Beq
            | Bne
            | Blt
            | Bge
            | Bltu
            | Bgeu
            | Lb
            | Lh
            | Lw
            | Ld
            | Lbu
            | Lhu
            | Lwu
            | Sb
            | Sh
            | Sw
            | Sd
            | Addi
            | Slti
            | Sltiu
            | Xori
            | Ori
            | Andi
            | Slli
            | Srli
            | Srai
            | Add
            | Sub
            | Sll
            | Slt
            | Sltu
            | Xor
            | Srl
            | Sra
            | Or
            | And
            | Addiw
            | Slliw
            | Srliw
            | Sraiw
            | Addw
            | Subw
            | Sllw
            | Srlw
            | Sraw
            | Fence
            | Mul
            | Mulh
            | Mulhsu
            | Mulhu
            | Div
            | Divu
            | Rem
            | Remu
            | Mulw
            | Divw
            | Divuw
            | Remw
            | Remuw
            | LrW
            | LrD
            | ScW
            | ScD
    ) || emit::is_amo(op)
}

impl Hart {
    /// Turns the translator on, with `memory` as its code cache: blocks that `run` reaches
    /// `HOT_EXECUTIONS_DEFAULT` times are translated. Guest-visible behaviour is the same
    /// with and without it; only speed differs.
    pub fn enable_translator(
        &mut self,
        memory: Box<dyn ExecutableMemory>,
    ) -> Result<(), TranslatorError> {
        self.enable_translator_after(memory, HOT_EXECUTIONS_DEFAULT)
    }

    /// `enable_translator`, translating a block once `run` has reached it `hot_executions`
    /// times (1: every block at once, as the tests force it).
    pub fn enable_translator_after(
        &mut self,
        memory: Box<dyn ExecutableMemory>,
        hot_executions: u32,
    ) -> Result<(), TranslatorError> {
        self.translator = Some(Box::new(Translator::new(memory, hot_executions)?));
        Ok(())
    }

    /// Turns the translator off and hands back its code memory.
    pub fn disable_translator(&mut self) -> Option<Box<dyn ExecutableMemory>> {
        self.translator.take().map(|t| t.memory)
    }

    /// The translator's counters, when it is on.
    pub fn translator_stats(&self) -> Option<TranslatorStats> {
        self.translator.as_ref().map(|t| t.stats)
    }

    /// From now on, keeps where each translated block goes (`block_placements`), for a
    /// profiler. Does nothing while the translator is off.
    pub fn record_block_placements(&mut self) {
        if let Some(translator) = self.translator.as_mut() {
            translator.placements.get_or_insert_with(Vec::new);
        }
    }

    /// The blocks placed since `record_block_placements`, in placement order.
    pub fn block_placements(&self) -> &[PlacedBlock] {
        self.translator
            .as_ref()
            .and_then(|t| t.placements.as_deref())
            .unwrap_or(&[])
    }

    /// `run_block` through translated code where there is some: runs at most up to instret
    /// `end`, and returns a stop reason if `run` must return.
    pub(crate) fn run_translated(
        &mut self,
        platform: &mut impl Platform,
        end: u64,
    ) -> Option<StopReason> {
        if self.csr.triggers.armed {
            return self.run_block(platform, end);
        }
        let Some(mut translator) = self.translator.take() else {
            return self.run_block(platform, end);
        };
        let stop = self.run_translated_with(&mut translator, platform, end);
        self.translator = Some(translator);
        stop
    }

    fn run_translated_with<P: Platform>(
        &mut self,
        translator: &mut Translator,
        platform: &mut P,
        end: u64,
    ) -> Option<StopReason> {
        let pc = self.pc;
        let offset = match self.fetch_page(pc) {
            Ok((offset, true)) => offset as u64,
            // Not cacheable or faulting: the interpreter does exactly what it always does.
            _ => return self.run_block(platform, end),
        };
        // The jump cache first: the table is 2 MiB, and its cache misses made
        // `lookup_or_translate` 6% of a curl session's samples.
        let found = translator
            .cached(pc, offset)
            .or_else(|| self.lookup_or_translate(translator, pc, offset, false));
        let Some((code, instructions)) = found else {
            // Not hot yet.
            return self.run_block(platform, end);
        };
        if end - self.instret < instructions as u64 {
            return self.run_block(platform, end);
        }
        let (time_offset, time_divisor) = match platform.linear_time() {
            Some(time) if self.counter_enabled(crate::csr_numbers::TIME) => {
                (time.offset_ticks, time.instructions_per_tick)
            }
            _ => (0, 0),
        };
        let mut frame = Frame {
            x: self.x.as_mut_ptr().wrapping_byte_add(emit::X_BIAS_BYTES),
            ram: self.ram.as_mut_ptr(),
            load_key: self.mmu.load_key(),
            store_key: self.mmu.store_key(),
            load_tlb: self.mmu.load.entries_ptr(),
            store_tlb: self.mmu.store.entries_ptr(),
            dirty: self.dirty.as_mut_ptr(),
            generations: self.blocks.page_generations.as_ptr(),
            code_chunks: self.blocks.code_chunks.as_ptr(),
            fetch_tlb: self.mmu.fetch.entries_ptr(),
            fetch_key: self.mmu.fetch_key(),
            jump_cache: translator.jump_cache.as_ptr().cast(),
            reservation: &mut self.reservation,
            remaining: end - self.instret,
            entry_rsp: 0,
            calls: 0,
            exit_pc: self.pc,
            exit_site: 0,
            exit_ram_page: 0,
            time_offset,
            time_divisor,
            group_base: 0,
            interpret: interpret::<P> as *const () as usize,
            lookup: lookup as *const () as usize,
            host_mxcsr: 0,
            guest_mxcsr: emit::float::MXCSR_TRANSLATED,
            hart: self,
            platform: (platform as *mut P).cast(),
            translator,
            end,
            outcome: None,
            helper_calls: 0,
        };
        translator.stats.entries += 1;
        let exit = translator.enter(&mut frame, code);
        emit::float::accrue(self, frame.guest_mxcsr);
        translator.stats.interpreted += frame.helper_calls;
        self.instret = end - frame.remaining;
        if exit != Exit::Helper {
            // (After an interpreted instruction pc is where the interpreter left it.)
            self.pc = frame.exit_pc;
        }
        match exit {
            Exit::Jump | Exit::Budget => None,
            Exit::Stale => {
                // Found through the jump cache, maybe: look it up in the table next time,
                // which translates it again.
                translator.forget(self.pc);
                None
            }
            Exit::FloatState => self.run_block(platform, end),
            Exit::Helper => match frame.outcome {
                Some(Ok((inst, flow))) => self.finish(&inst, flow),
                Some(Err(e)) => self.take_trap(e.cause, e.tval, false),
                None => None,
            },
            Exit::Chain | Exit::ChainAcross => {
                // Link the jump now, under the translation the source block just ran with.
                // Across pages the link goes to the target's guarded entry, which checks at
                // every pass that the page is still mapped as now. Inside a page it goes
                // past the entry's generation check (`emit::GENERATION_CHECK_BYTES`): the
                // same virtual page is the same physical page, checked against the source
                // block's own page (not the entry block's once translated code has gone to
                // another page through the lookup), whose generation the source checked.
                let across = exit == Exit::ChainAcross;
                if let Ok((target_offset, true)) = self.fetch_page(self.pc) {
                    let target_page = target_offset as u64 / PAGE_SIZE_BYTES;
                    let linkable = across || target_page == frame.exit_ram_page;
                    let flushes = translator.stats.cache_flushes;
                    // A jump from translated code leads to hot code: translate it now.
                    let target =
                        self.lookup_or_translate(translator, self.pc, target_offset as u64, true);
                    // A flush while translating the target freed the source block too.
                    if let (Some((code, _)), true, true) =
                        (target, linkable, flushes == translator.stats.cache_flushes)
                    {
                        let entry = if across {
                            code - emit::GUARD_BYTES as u32
                        } else {
                            code + emit::GENERATION_CHECK_BYTES as u32
                        };
                        translator.link(frame.exit_site, entry);
                    }
                }
                None
            }
        }
    }

    /// The translated block for `pc` at RAM offset `offset`: its code offset and length in
    /// instructions. A block not translated yet is counted, and translated once it is hot
    /// (or at once with `force`); `None` until then.
    fn lookup_or_translate(
        &mut self,
        translator: &mut Translator,
        pc: u64,
        offset: u64,
        force: bool,
    ) -> Option<(u32, u32)> {
        let page = (offset / PAGE_SIZE_BYTES) as usize;
        let generation = self.blocks.page_generations[page];
        if let Some(slot) = translator.find(pc, offset) {
            if slot.generation == generation && slot.code != CODE_NONE {
                return Some((slot.code, slot.instructions));
            }
        }
        let counter = &mut translator.counters[Translator::counter_index(pc)];
        let same =
            counter.pc == pc && counter.ram_offset == offset && counter.generation == generation;
        let executions = if same {
            counter.executions.saturating_add(1)
        } else {
            1
        };
        if !force && executions < translator.hot_executions {
            *counter = Counter {
                pc,
                ram_offset: offset,
                generation,
                executions,
            };
            return None;
        }
        let mut ops = Vec::new();
        self.decode_block(offset, &mut ops);
        // No ops: the first instruction straddles the end of the page, and its block is that
        // instruction alone, fetched afresh each time it runs; its half in this page decides
        // that it straddles (a 2-byte one would not), so stores there must retranslate it.
        let (instructions, decoded_bytes) = match ops.len() {
            0 => (1, 2),
            n => (n, ops.iter().map(|i| i.length_bytes as u64).sum::<u64>()),
        };
        let layout = emit::HartLayout::of(self, translator.fused_multiply_add);
        let mut block = translator.assemble(&ops, pc, offset, generation, layout);
        if !translator.fits(&block) {
            translator.flush();
            translator.stats.cache_flushes += 1;
            block = translator.assemble(&ops, pc, offset, generation, layout);
        }
        let (hot_bytes, cold_bytes) = (block.hot_bytes, block.bytes.len() - block.hot_bytes);
        let cold_at = translator.cold_used;
        let at = translator.place(block);
        if let Some(placements) = translator.placements.as_mut() {
            let base = translator.base as u64;
            for (from, len_bytes) in [(at, hot_bytes), (cold_at, cold_bytes)] {
                placements.push(PlacedBlock {
                    host_address: base + from as u64,
                    len_bytes: len_bytes as u32,
                    guest_pc: pc,
                });
            }
        }
        // Stores to these bytes must now bump the page generation.
        self.note_decoded_range(offset, offset + decoded_bytes);
        translator.stats.blocks_translated += 1;
        translator.stats.instructions_translated += instructions as u64;
        let new_slot = Slot {
            pc,
            ram_offset: offset,
            generation,
            code: (at + emit::GUARD_BYTES) as u32,
            instructions: instructions as u32,
        };
        translator.file(new_slot);
        // The jump cache must not keep sending jumps to an older translation of `pc` (it
        // would leave as stale at every entry).
        translator.jump_cache[Translator::jump_index(pc)].set(JumpEntry {
            pc,
            ram_offset: offset,
            entry: translator.base as u64 + new_slot.code as u64,
            instructions: new_slot.instructions,
        });
        Some((new_slot.code, new_slot.instructions))
    }
}
