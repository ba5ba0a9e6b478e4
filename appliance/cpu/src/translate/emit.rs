//! Templates: each translated RISC-V instruction as a fixed x86-64 sequence.
//!
//! Register plan inside translated code (all callee-saved in the System V ABI, so the
//! trampoline saves them once per entry):
//! - rbx: the guest's x registers (`Hart::x`, x0 always holds 0 there), biased by
//!   `X_BIAS_BYTES` so that every one of them is a one-byte displacement away,
//! - r13: instructions that may still retire in this run,
//! - r14: the `Frame` (keys, dirty bitmap, page generations, exit values).
//!
//! Guest RAM needs no register: the data TLBs' entries turn a guest virtual address into
//! a host address with one addition (`mmu::TlbEntry`).
//!
//! rax, rcx and rdx are scratch within one instruction. r8-r12, rbp, r15, rsi and rdi cache
//! guest registers inside one block (`RegisterCache`): a write puts its value there, later reads
//! take it from there, and every way out of the block (an exit, a chained jump, a call into
//! the interpreter) first writes the changed ones back to `Hart::x`, so the interpreter and
//! every exit see `Hart::x` complete.
//!
//! xmm0 and xmm1 are scratch within one FP instruction; f registers stay in `Hart::f`, and
//! MXCSR holds `float::MXCSR_TRANSLATED` plus the flags raised since the last fold.

use alloc::vec;
use alloc::vec::Vec;
use core::mem::{offset_of, size_of};
use core::ops::{Range, RangeInclusive};

use super::x86::{
    at as at_base, at_index, Alu, Assembler, Cond, Reg, Shift, Unary, Width, R12, R13, R14, R15,
    RAX, RBP, RBX, RCX, RDI, RDX, RSI, RSP,
};
use super::{translates, Exit, Frame, JumpEntry, JUMP_CACHE_LOG2, JUMP_HASH};
use crate::block::{accesses_data_csr, reads_time, sets_or_clears_status};
use crate::csr::numbers::{MCAUSE, MEPC, MSCRATCH, SCAUSE, SEPC, SSCRATCH, STVAL};
use crate::csr::{
    DATA_ONLY_CSRS, MSTATUS_MXR, MSTATUS_SIE, MSTATUS_SUM, MSTATUS_WRITABLE, SSTATUS_MASK,
};
use crate::inst::{Instruction, Op};
use crate::mmu::{self, DATA_TLB_ENTRIES, FETCH_TLB_ENTRIES};
use crate::{Hart, Privilege, Reservation, PAGE_SIZE_BYTES};

#[path = "float.rs"]
pub(super) mod float;

/// Bytes of one soft-TLB entry (`mmu::TlbEntry`: tag, then addend with flags).
const TLB_ENTRY_BYTES: u8 = 16;
/// Store TLB flag: the page holds decoded code (`mmu::STORE_THROUGH_SLOW_PATH`).
const STORE_THROUGH_SLOW_PATH: u8 = 1;
/// Store TLB flag: the page's dirty bit may be clear (`mmu::STORE_MARKS_DIRTY`).
const STORE_MARKS_DIRTY: u8 = mmu::STORE_MARKS_DIRTY as u8;

fn frame(field: usize) -> super::x86::Mem {
    at_base(R14, field as i32)
}

/// How far rbx points past `Hart::x`: x0-x31 then lie at displacements -128 to 120, each
/// encoded in one byte (SDM vol. 2 2.1.5) where x16-x31 would otherwise take four; every
/// access to the upper half of the registers is three bytes shorter.
pub(super) const X_BIAS_BYTES: usize = 128;

fn xreg(r: u8) -> super::x86::Mem {
    at_base(RBX, (r as i32 & 31) * 8 - X_BIAS_BYTES as i32)
}

/// Where the shared code of the code cache's start lies (byte offsets).
pub(super) struct Shared {
    /// The trampoline's way out.
    pub epilogue: usize,
    /// `lookup_routine`.
    pub lookup: usize,
    /// `flagged_store_routine` for stores of 1, 2, 4 and 8 bytes.
    pub flagged_store: [usize; 4],
}

/// The code every block shares: the entry trampoline `extern "sysv64" fn(frame: *mut Frame,
/// code: *const u8) -> u32` with its epilogue, the lookup routine and the flagged store
/// routines.
pub(super) fn trampoline() -> (Vec<u8>, Shared) {
    let mut a = Assembler::new();
    for r in [RBX, RBP, R12, R13, R14, R15] {
        a.push(r);
    }
    // Six pushes after the return address leave rsp 8 modulo 16; realign for any call.
    a.alu_imm(Alu::Sub, Width::W64, RSP, 8);
    a.mov(Width::W64, R14, RDI);
    a.store(frame(offset_of!(Frame, entry_rsp)), RSP);
    // The embedder's MXCSR is kept for the way out; translated FP code runs in a known one
    // (`float::MXCSR_TRANSLATED`, in the frame) and leaves its flags in the frame.
    let (host_mxcsr, guest_mxcsr) = float::mxcsr_fields();
    a.stmxcsr(at_base(R14, host_mxcsr));
    a.ldmxcsr(at_base(R14, guest_mxcsr));
    a.load(Width::W64, RBX, frame(offset_of!(Frame, x)));
    a.load(Width::W64, R13, frame(offset_of!(Frame, remaining)));
    a.jmp_reg(RSI);
    let epilogue = a.len();
    a.load(Width::W64, RSP, frame(offset_of!(Frame, entry_rsp)));
    a.store(frame(offset_of!(Frame, remaining)), R13);
    a.stmxcsr(at_base(R14, guest_mxcsr));
    a.ldmxcsr(at_base(R14, host_mxcsr));
    a.alu_imm(Alu::Add, Width::W64, RSP, 8);
    for r in [R15, R14, R13, R12, RBP, RBX] {
        a.pop(r);
    }
    a.ret();
    let lookup = a.len();
    lookup_routine(&mut a, epilogue);
    let flagged_store = [1, 2, 4, 8].map(|size_bytes| {
        let routine = a.len();
        flagged_store_routine(&mut a, size_bytes);
        routine
    });
    (
        a.code,
        Shared {
            epilogue,
            lookup,
            flagged_store,
        },
    )
}

/// The routine a store through a flagged TLB entry calls (`Stub::FlaggedStore`), one for
/// each size: with rax = the address, rdx = the entry and rcx = its addend with its flags
/// (rsi and rdi hold cached registers, so it saves them on the stack while it works with
/// them). `STORE_MARKS_DIRTY`: marks the page dirty and clears the flag in the entry, as
/// `Hart::store` does. `STORE_THROUGH_SLOW_PATH` (the page holds decoded code): a store
/// that touches no decoded 64-byte chunk returns with carry clear and rcx = the host
/// address, as `Hart::store_phys` would find no code to invalidate; the others return with
/// carry set, for the interpreter slow path. One copy for all blocks: a copy in each
/// store's stub made stores half of all cold code.
fn flagged_store_routine(a: &mut Assembler, size_bytes: u64) {
    a.push(RSI);
    a.push(RDI);
    // rsi = the entry, rdx = its page's RAM offset with the flags (its host address less
    // RAM's, which is page-aligned), rcx = the offset in the page.
    a.mov(Width::W64, RSI, RDX);
    a.mov(Width::W64, RDX, RAX);
    a.alu_imm(Alu::And, Width::W64, RDX, !0xfff);
    a.alu(Alu::Add, Width::W64, RDX, RCX);
    a.alu_mem(Alu::Sub, Width::W64, RDX, frame(offset_of!(Frame, ram)));
    a.mov(Width::W32, RCX, RAX);
    a.alu_imm(Alu::And, Width::W32, RCX, 0xfff);
    a.test_low_byte(RDX, STORE_MARKS_DIRTY);
    let clean = a.jcc(Cond::Equal);
    a.alu_imm(Alu::And, Width::W64, RDX, !(STORE_MARKS_DIRTY as i32));
    a.load(Width::W64, RDI, at_base(RSI, 8));
    a.alu_imm(Alu::And, Width::W64, RDI, !(STORE_MARKS_DIRTY as i32));
    a.store(at_base(RSI, 8), RDI);
    // `Hart::mark_page_dirty`: dirty[page / 64] |= 1 << page % 64.
    a.mov(Width::W64, RDI, RDX);
    a.shift_imm(Shift::Shr, Width::W64, RDI, 12);
    a.mov(Width::W64, RSI, RDI);
    a.shift_imm(Shift::Shr, Width::W64, RSI, 6);
    a.shift_imm(Shift::Shl, Width::W64, RSI, 3);
    a.alu(Alu::Xor, Width::W32, RAX, RAX);
    a.bts(RAX, RDI);
    a.load(Width::W64, RDI, frame(offset_of!(Frame, dirty)));
    a.or_to_mem(at_index(RDI, RSI, 0), RAX);
    a.test_low_byte(RDX, STORE_THROUGH_SLOW_PATH);
    let done = a.jcc(Cond::Equal);
    a.bind(clean);
    a.load(Width::W64, RSI, frame(offset_of!(Frame, code_chunks)));
    a.mov(Width::W64, RDI, RDX);
    a.shift_imm(Shift::Shr, Width::W64, RDI, 12);
    a.shift_imm(Shift::Shl, Width::W64, RDI, 3);
    a.load(Width::W64, RSI, at_index(RSI, RDI, 0));
    // The access lies in one page (checked), so its first and last bytes name every chunk
    // it touches (at most two: 8 bytes <= 64).
    a.mov(Width::W32, RDI, RCX);
    a.shift_imm(Shift::Shr, Width::W32, RDI, 6);
    a.bt(RSI, RDI);
    let first = a.jcc(Cond::Below);
    a.mov(Width::W32, RDI, RCX);
    a.alu_imm(Alu::Add, Width::W32, RDI, size_bytes as i32 - 1);
    a.shift_imm(Shift::Shr, Width::W32, RDI, 6);
    a.bt(RSI, RDI);
    let last = a.jcc(Cond::Below);
    a.alu_imm(Alu::And, Width::W64, RDX, !(STORE_THROUGH_SLOW_PATH as i32));
    a.bind(done);
    a.alu(Alu::Add, Width::W64, RCX, RDX);
    a.alu_mem(Alu::Add, Width::W64, RCX, frame(offset_of!(Frame, ram)));
    a.pop(RDI);
    a.pop(RSI);
    a.clc();
    a.ret();
    a.bind(first);
    a.bind(last);
    a.pop(RDI);
    a.pop(RSI);
    a.stc();
    a.ret();
}

/// Called with a target pc in rax (and r13 counted), from every block that goes on through
/// the lookup: returns the target's code address in rcx when the inline part of `lookup`
/// finds it (the fetch TLB maps pc and the jump cache holds that pc at that RAM offset) or
/// `lookup` does; leaves translated code through `epilogue` when there is none. One copy
/// for all blocks keeps them short (the jump itself stays at each site, where the host
/// predicts it from that site's own history).
fn lookup_routine(a: &mut Assembler, epilogue: usize) {
    a.store(frame(offset_of!(Frame, exit_pc)), RAX);
    tlb_compare(
        a,
        offset_of!(Frame, fetch_tlb),
        offset_of!(Frame, fetch_key),
        FETCH_TLB_ENTRIES,
        1,
    );
    let tlb_miss = a.jcc(Cond::NotEqual);
    a.load(Width::W64, RCX, at_base(RDX, 8));
    a.alu(Alu::Add, Width::W64, RCX, RAX);
    a.mov(Width::W64, RDX, RAX);
    a.shift_imm(Shift::Shr, Width::W64, RDX, 1);
    a.mov_imm(RSI, JUMP_HASH);
    a.imul(Width::W64, RDX, RSI);
    a.shift_imm(Shift::Shr, Width::W64, RDX, (64 - JUMP_CACHE_LOG2) as u8);
    a.shift_imm(
        Shift::Shl,
        Width::W64,
        RDX,
        size_of::<JumpEntry>().trailing_zeros() as u8,
    );
    a.alu_mem(
        Alu::Add,
        Width::W64,
        RDX,
        frame(offset_of!(Frame, jump_cache)),
    );
    a.alu_mem(
        Alu::Cmp,
        Width::W64,
        RAX,
        at_base(RDX, offset_of!(JumpEntry, pc) as i32),
    );
    let other_pc = a.jcc(Cond::NotEqual);
    let ram_offset = at_base(RDX, offset_of!(JumpEntry, ram_offset) as i32);
    a.alu_mem(Alu::Cmp, Width::W64, RCX, ram_offset);
    let other_offset = a.jcc(Cond::NotEqual);
    a.load(
        Width::W64,
        RCX,
        at_base(RDX, offset_of!(JumpEntry, entry) as i32),
    );
    a.ret();
    a.bind(tlb_miss);
    a.bind(other_pc);
    a.bind(other_offset);
    // The call here left rsp 8 off the 16-byte alignment `lookup` expects.
    a.alu_imm(Alu::Sub, Width::W64, RSP, 8);
    a.mov(Width::W64, RDI, R14);
    a.mov(Width::W64, RSI, RAX);
    a.call_mem(frame(offset_of!(Frame, lookup)));
    a.alu_imm(Alu::Add, Width::W64, RSP, 8);
    a.test(Width::W64, RAX, RAX);
    let missing = a.jcc(Cond::Equal);
    a.mov(Width::W64, RCX, RAX);
    a.ret();
    a.bind(missing);
    a.mov_imm(RAX, Exit::Jump as u32 as u64);
    let out = a.jmp();
    a.patch(out, epilogue as i64);
}

/// Compares the tag of an access of `size` bytes at rax with its entry in a TLB of
/// `entries` (`Frame` fields `tlb` and `key`): leaves rdx = the address of the entry and
/// the flags equal on a hit. The tag compared is that of the access's last byte, in the
/// entry of its first (as QEMU's `tlb_load`): an access that crosses into the next page
/// misses, since the next page's tag never sits in this page's entry, so the in-page
/// check costs no instruction of its own.
fn tlb_compare(a: &mut Assembler, tlb: usize, key: usize, entries: usize, size: u64) {
    tlb_compare_range(a, tlb, key, entries, RAX, 0..=size as i32 - 1);
}

/// `tlb_compare` for the bytes from `base` + `bytes.start()` to `base` + `bytes.end()` (at
/// most a page apart): a hit says that they all lie in the entry's page.
fn tlb_compare_range(
    a: &mut Assembler,
    tlb: usize,
    key: usize,
    entries: usize,
    base: Reg,
    bytes: RangeInclusive<i32>,
) {
    let entry_log2 = TLB_ENTRY_BYTES.trailing_zeros();
    if *bytes.start() == 0 {
        a.mov(Width::W32, RDX, base);
    } else {
        a.lea(Width::W32, RDX, at_base(base, *bytes.start()));
    }
    a.shift_imm(Shift::Shr, Width::W32, RDX, (12 - entry_log2) as u8);
    a.alu_imm(
        Alu::And,
        Width::W32,
        RDX,
        ((entries - 1) << entry_log2) as i32,
    );
    a.alu_mem(Alu::Add, Width::W64, RDX, frame(tlb));
    if *bytes.end() != 0 {
        a.lea(Width::W64, RCX, at_base(base, *bytes.end()));
    } else {
        a.mov(Width::W64, RCX, base);
    }
    a.shift_imm(Shift::Shr, Width::W64, RCX, 12);
    a.alu_mem(Alu::Or, Width::W64, RCX, frame(key));
    a.alu_mem(Alu::Cmp, Width::W64, RCX, at_base(RDX, 0));
}

/// Bytes of a block's guarded entry (`Emitter::guarded_entry`), padded to this length so
/// that a block's entry lies at a fixed distance after it (and 16-byte aligned, as blocks
/// start).
pub(super) const GUARD_BYTES: usize = 64;

/// Bytes of a block's generation check (`Emitter::entry_checks`), padded to this length so
/// that the budget check after it lies at a fixed distance from the entry. A jump from a
/// block of the same page is linked past it: the page's generation was checked where
/// translated code entered the page (at a block's entry, through `Hart::run`, the lookup
/// or a jump from another page), and it cannot change without leaving translated code (a
/// store to decoded code is a refetch, which goes on through the lookup and drops the
/// host call frames).
pub(super) const GENERATION_CHECK_BYTES: usize = 32;

/// Host registers that cache guest registers inside a block. A call into the interpreter
/// clobbers the caller-saved ones and may change any guest register, so all are written
/// back before it and reloaded (or forgotten) after.
const CACHE_REGS: [Reg; CACHE_SLOTS] = [Reg(8), Reg(9), Reg(10), Reg(11), RBP, R15, RSI, RDI, R12];
const CACHE_SLOTS: usize = 9;

/// Which guest register each of `CACHE_REGS` holds at one point of a block (known while
/// translating: the state is the same on every path through that point).
#[derive(Clone, Copy, Default)]
struct RegisterCache {
    /// Guest register number, 0 for none (x0 is never cached).
    guest: [u8; CACHE_SLOTS],
    /// The host register holds a value `Hart::x` does not have yet.
    dirty: [bool; CACHE_SLOTS],
}

impl RegisterCache {
    fn find(&self, r: u8) -> Option<usize> {
        if r == 0 {
            return None;
        }
        self.guest.iter().position(|&g| g == r)
    }
}

/// The x registers one instruction of a block reads and writes (bitmasks, x0 never), for
/// the register cache's choices of what to keep (`Emitter::next_read`).
#[derive(Clone, Copy, Default)]
struct Uses {
    reads: u32,
    writes: u32,
    /// Handed to the interpreter: the register cache is written back and emptied there.
    empties_cache: bool,
}

impl Uses {
    /// An FP instruction may name f registers in rs1 and rd: counting rs1 as an x read
    /// and no write only makes the cache keep a register longer than it needs to.
    fn of(inst: &Instruction, layout: &HartLayout) -> Uses {
        let bit = |r: u8| (1u32 << r) & !1;
        if !inline(inst, layout) {
            return Uses {
                empties_cache: true,
                ..Uses::default()
            };
        }
        if float::inline(inst, layout.fused_multiply_add) {
            return Uses {
                reads: bit(inst.rs1),
                ..Uses::default()
            };
        }
        Uses {
            reads: bit(inst.rs1) | bit(inst.rs2),
            writes: bit(inst.rd),
            empties_cache: false,
        }
    }
}

/// Whether the translator emits `inst` inline (else it hands it to the interpreter).
fn inline(inst: &Instruction, layout: &HartLayout) -> bool {
    translates(inst.op) || float::inline(inst, layout.fused_multiply_add) || csr_inline(inst)
}

/// Where translated code finds the hart's state besides the x registers: byte distances
/// from rbx (`Hart::x` biased by `X_BIAS_BYTES`) to the f registers, mstatus, fflags, frm,
/// the privilege mode and the data-only CSRs, and whether the host has FMA3.
#[derive(Clone, Copy, Debug)]
pub(super) struct HartLayout {
    pub f: i32,
    pub mstatus: i32,
    pub fflags: i32,
    pub frm: i32,
    pub privilege: i32,
    /// The software-writable bits of mip, the machine's interrupt lines, and mie.
    pub mip: i32,
    pub lines: i32,
    pub mie: i32,
    /// The MMU's load and store keys (`mmu::Tlbs::data_key_fields`).
    pub load_key: i32,
    pub store_key: i32,
    /// The CSRs that hold data only, in `DATA_ONLY_CSRS` order.
    pub data_csrs: [i32; DATA_ONLY_CSRS.len()],
    pub fused_multiply_add: bool,
}

impl HartLayout {
    pub(super) fn of(hart: &Hart, fused_multiply_add: bool) -> HartLayout {
        let x = hart.x.as_ptr() as isize + X_BIAS_BYTES as isize;
        let distance = |field: *const u8| {
            i32::try_from(field as isize - x).expect("a hart's fields lie within 2 GiB")
        };
        HartLayout {
            f: distance(hart.f.as_ptr().cast()),
            mstatus: distance((&hart.csr.mstatus as *const u64).cast()),
            fflags: distance((&hart.csr.fflags as *const u64).cast()),
            frm: distance((&hart.csr.frm as *const u64).cast()),
            privilege: distance((&hart.privilege as *const Privilege).cast()),
            mip: distance((&hart.csr.mip as *const u64).cast()),
            lines: distance((&hart.lines as *const u64).cast()),
            mie: distance((&hart.csr.mie as *const u64).cast()),
            load_key: distance((hart.mmu.data_key_fields().0 as *const u64).cast()),
            store_key: distance((hart.mmu.data_key_fields().1 as *const u64).cast()),
            data_csrs: DATA_ONLY_CSRS.map(|csr| {
                let c = &hart.csr;
                let field: &u64 = match csr {
                    SSCRATCH => &c.sscratch,
                    SEPC => &c.sepc,
                    SCAUSE => &c.scause,
                    STVAL => &c.stval,
                    MSCRATCH => &c.mscratch,
                    MEPC => &c.mepc,
                    MCAUSE => &c.mcause,
                    _ => &c.mtval,
                };
                distance((field as *const u64).cast())
            }),
            fused_multiply_add,
        }
    }
}

/// An out-of-line path, emitted after the block body.
enum Stub {
    /// Leave with `reason`, `exit_pc` = `pc`, after subtracting `retired` from r13 and
    /// writing back what `cache` holds dirty.
    Leave {
        pc: u64,
        retired: u32,
        reason: Exit,
        cache: RegisterCache,
    },
    /// An unlinked direct jump to `pc` (r13 already adjusted); `site` is the rel32 that the
    /// translator may later point at the target block: at its entry in the same page, at
    /// its guarded entry (`guarded_entry`) `across` pages.
    Chain { pc: u64, site: usize, across: bool },
    /// Goes on at `pc` through the lookup (r13 already adjusted).
    Lookup { pc: u64 },
    /// A store through a flagged TLB entry (rax = the address, rdx = the entry, rcx = its
    /// addend with its flags): calls the `flagged_store_routine` of its size, which goes
    /// back to the fast path at `resume` or on to the interpreter slow path.
    FlaggedStore {
        size_bytes: u64,
        resume: usize,
        slow: Slow,
    },
    /// The slow path of a load or store: interpret it, then resume after it.
    Interpret { slow: Slow },
    /// The interpreter did not just fall through at the `index`th instruction, at `pc`
    /// (rax = what `interpret` returned): a refetch goes on at `next` through the lookup,
    /// anything else leaves. Everything was written back before the call, and the
    /// interpreter may have changed any register since: nothing is written back.
    Interpreted {
        pc: u64,
        index: u32,
        next: Option<u64>,
    },
    /// An access group (`access_group`) whose probe failed: its instructions one by one,
    /// each access with its own probe and slow path, from register cache `from`, then on
    /// at `resume` with the cache moved to `to`, as the group's fast path leaves it.
    Group {
        first: u32,
        ops: Vec<Instruction>,
        from: RegisterCache,
        to: RegisterCache,
        resume: usize,
    },
    /// A taken conditional branch to a later instruction of the block: counts the
    /// `skipped` instructions it jumps over as not retired (the exits after the target
    /// subtract its index, which counts them), moves the register cache from `from` to
    /// `to` and joins the target's code at `resume`.
    Forward {
        skipped: u32,
        from: RegisterCache,
        to: RegisterCache,
        resume: usize,
    },
}

/// A forward branch inside the block whose target's code is not emitted yet.
struct PendingForward {
    /// Index of the target instruction in the block.
    target: u32,
    /// The branch's rel32.
    site: usize,
    /// The register cache at the branch.
    from: RegisterCache,
    /// Instructions between the branch and its target.
    skipped: u32,
}

/// How to interpret one load or store on its slow path, and where to go on after it.
#[derive(Clone, Copy)]
struct Slow {
    list_index: u32,
    pc: u64,
    retired: u32,
    /// The register cache before the instruction (its fast path reads, never allocates).
    before: RegisterCache,
    /// The register cache after the instruction, to reload after the interpreter ran it.
    after: RegisterCache,
    /// Position after the instruction (`PENDING` while it is emitted).
    resume: usize,
}

/// A resume position not known yet.
const PENDING: usize = usize::MAX;

/// Where a block goes and what it was decoded from.
pub(super) struct Placement {
    /// Virtual address of the block's first instruction.
    pub pc: u64,
    /// RAM offset of the block's first instruction.
    pub ram_offset: u64,
    /// The generation of its page when decoded.
    pub generation: u64,
    /// Absolute address the block will run at.
    pub origin: u64,
    /// Absolute address of the trampoline's epilogue.
    pub epilogue: u64,
    /// Absolute address of `lookup_routine`.
    pub lookup: u64,
    /// Absolute addresses of the `flagged_store_routine`s (`Shared::flagged_store`).
    pub flagged_store: [u64; 4],
    /// Index in the translator's interpreted-instruction list of this block's first one.
    pub first_interpreted: u32,
    /// Where the hart's state lies, and whether FMA3 may be used.
    pub layout: HartLayout,
}

struct Emitter {
    a: Assembler,
    /// Absolute address the block will run at.
    origin: u64,
    epilogue: u64,
    /// Absolute address of `lookup_routine`.
    lookup: u64,
    flagged_store: [u64; 4],
    /// Virtual page of the block (chaining stays inside it).
    page: u64,
    /// RAM page the block was decoded from (reported with an unlinked jump).
    ram_page: u64,
    /// Virtual address of the block's first instruction.
    block_pc: u64,
    /// Instructions in the block.
    count: u32,
    /// Virtual address of each instruction of the block.
    pcs: Vec<u64>,
    /// Where the code of each instruction emitted so far starts, and the register cache
    /// there (targets of branches back inside the block).
    starts: Vec<(usize, RegisterCache)>,
    /// Forward branches inside the block waiting for their target.
    forward: Vec<PendingForward>,
    /// The loops found by the previous translation of the block, innermost last among
    /// those that nest: the header's index, the jump back's index, and the register cache
    /// the header moves into (every entry dirty), which every jump back moves to as well.
    loops: Vec<Loop>,
    /// The register cache at the first jump back to each instruction of the block (found
    /// by one translation, to choose the loop headers' states of the next).
    back_edges: Vec<Option<(u32, RegisterCache)>>,
    /// Registers moved on the jumps back (each iteration pays them).
    back_edge_moves: u32,
    /// Out-of-line paths, each with the range of `stub_sites` that jumps to it.
    stubs: Vec<(Range<usize>, Stub)>,
    /// The jumps to the stubs (one list for all: most stubs have one).
    stub_sites: Vec<usize>,
    /// Instructions handed to the interpreter, in list order from `first_interpreted`.
    interpreted: Vec<Instruction>,
    first_interpreted: u32,
    /// Jumps of the current instruction to its interpreter slow path.
    slow_sites: Vec<usize>,
    /// The slow path of the load or store being emitted.
    current: Option<Slow>,
    cache: RegisterCache,
    layout: HartLayout,
    /// An earlier instruction of the block has set mstatus.FS to Dirty.
    float_dirty: bool,
    /// Jumps to the block's one `jump_through_lookup`, emitted after the stubs when any.
    lookup_tail: Vec<usize>,
    /// What each instruction of the block reads and writes.
    uses: Vec<Uses>,
    /// The instruction being emitted.
    index: usize,
    /// Length of the hot part, once it is complete (`finish`).
    hot_bytes: usize,
}

impl Emitter {
    /// `jmp` to an absolute address outside the block.
    fn jmp_absolute(&mut self, target: u64) {
        let site = self.a.jmp();
        self.a.patch(site, target.wrapping_sub(self.origin) as i64);
    }

    fn leave_now(&mut self, reason: Exit) {
        self.a.mov_imm(RAX, reason as u32 as u64);
        self.jmp_absolute(self.epilogue);
    }

    /// Leaves with `reason` and `exit_pc` = `pc` after `retired` instructions (the cache
    /// written back already).
    fn leave_at(&mut self, pc: u64, retired: u32, reason: Exit) {
        self.retire(retired);
        self.a.mov_imm(RAX, pc);
        self.a.store(frame(offset_of!(Frame, exit_pc)), RAX);
        self.leave_now(reason);
    }

    fn retire(&mut self, count: u32) {
        if count > 0 {
            self.a.alu_imm(Alu::Sub, Width::W64, R13, count as i32);
        }
    }

    /// Leaves the block for `target` after `retired` instructions: back to its own loop
    /// header, else a chainable jump (to the target's guarded entry across pages).
    fn goto(&mut self, target: u64, retired: u32) {
        if target == self.block_pc {
            self.note_back_edge(0);
            if let Some((header, state)) = self.loop_header(0) {
                // A loop that stays in this block: the registers stay cached (moved to
                // the header's state), and the budget check of the entry is repeated;
                // the page cannot have changed, as a write to it would have left
                // translated code.
                self.back_edge_moves += self.transfer(self.cache, state);
                self.retire(retired);
                self.a.alu_imm(Alu::Cmp, Width::W64, R13, self.count as i32);
                let pc = self.block_pc;
                self.jcc_leave(Cond::Below, pc, 0, Exit::Budget, state);
                let back = self.a.jmp();
                self.a.patch(back, header as i64);
                return;
            }
        }
        self.write_back(self.cache);
        self.retire(retired);
        let site = self.a.jmp();
        let across = target / PAGE_SIZE_BYTES != self.page;
        self.add_stub(
            [site],
            Stub::Chain {
                pc: target,
                site,
                across,
            },
        );
    }

    /// A call: a jal or jalr that links in ra or t0 (the return-address stack hints of
    /// unprivileged spec 2.5.1). Pushes the guest's return address and host-calls the code
    /// `go` emits, which goes to the callee; so the guest's return (`emit_return`) can come
    /// back here with a host `ret`, which the host's return stack buffer predicts, where
    /// the jump through the lookup is an indirect jump that mispredicts. Here, after the
    /// return, the block goes on at `next` with nothing cached. Without room for one more
    /// frame (`CALL_FRAMES_MAX`), the call just goes. Rcx is free here; rdx may hold a
    /// jalr's target.
    fn call(&mut self, next: u64, go: impl FnOnce(&mut Emitter)) {
        let calls = frame(offset_of!(Frame, calls));
        let a = &mut self.a;
        a.load(Width::W64, RCX, calls);
        a.alu_imm(Alu::Cmp, Width::W64, RCX, CALL_FRAMES_MAX);
        let full = a.jcc(Cond::AboveOrEqual);
        a.alu_imm(Alu::Add, Width::W64, RCX, 1);
        a.store(calls, RCX);
        a.mov_imm(RCX, next);
        a.push(RCX);
        let callee = a.call();
        // Returned to: drop the guest return address (the frame is 16 bytes, so rsp keeps
        // its alignment for the helpers' calls).
        a.alu_imm(Alu::Add, Width::W64, RSP, 8);
        let cache = core::mem::take(&mut self.cache);
        self.goto(next, 0);
        self.cache = cache;
        self.a.bind(callee);
        self.a.bind(full);
        go(self);
    }

    /// A return (jalr x0 through ra or t0) with the target pc in rax, everything written
    /// back and r13 counted: a host `ret` to the call that pushed this target, if the top
    /// frame holds it; else the jump through the lookup.
    fn emit_return(&mut self) {
        let calls = frame(offset_of!(Frame, calls));
        let a = &mut self.a;
        a.load(Width::W64, RCX, calls);
        a.test(Width::W64, RCX, RCX);
        let none = a.jcc(Cond::Equal);
        a.alu_mem(Alu::Cmp, Width::W64, RAX, at_base(RSP, 8));
        let other = a.jcc(Cond::NotEqual);
        a.alu_imm(Alu::Sub, Width::W64, RCX, 1);
        a.store(calls, RCX);
        a.ret();
        a.bind(none);
        a.bind(other);
        self.jump_through_lookup();
    }

    /// Drops every call frame (before a refetch: the mapping a frame's return would chain
    /// under may have changed).
    fn drop_call_frames(&mut self) {
        let a = &mut self.a;
        a.load(Width::W64, RSP, frame(offset_of!(Frame, entry_rsp)));
        a.alu(Alu::Xor, Width::W32, RCX, RCX);
        a.store(frame(offset_of!(Frame, calls)), RCX);
    }

    /// With the target pc in rax (and r13 already counted): jump to its translation if the
    /// lookup finds one, else leave for `Hart::run` to continue there (`lookup_routine`).
    fn jump_through_lookup(&mut self) {
        let site = self.a.call();
        self.a
            .patch(site, self.lookup.wrapping_sub(self.origin) as i64);
        self.a.jmp_reg(RCX);
    }

    /// A conditional jump to a stub that leaves with `reason` at `pc` after `retired`,
    /// writing back what `cache` holds dirty.
    fn jcc_leave(&mut self, cond: Cond, pc: u64, retired: u32, reason: Exit, cache: RegisterCache) {
        let site = self.a.jcc(cond);
        self.add_stub(
            [site],
            Stub::Leave {
                pc,
                retired,
                reason,
                cache,
            },
        );
    }

    /// Stores every dirty cached register of `cache` to `Hart::x` (emits code only; the
    /// caller decides what the state is afterwards).
    fn write_back(&mut self, cache: RegisterCache) {
        for (slot, &host) in CACHE_REGS.iter().enumerate() {
            if cache.dirty[slot] {
                self.a.store(xreg(cache.guest[slot]), host);
            }
        }
    }

    /// Turns register cache state `from` into `to` on a path that joins code expecting
    /// `to`: first every dirty value that does not stay dirty in the same host register is
    /// written back (before any host register is overwritten), then every host register
    /// that `to` expects to hold something else than `from` had is loaded.
    /// Returns how many registers it moved.
    fn transfer(&mut self, from: RegisterCache, to: RegisterCache) -> u32 {
        let mut moves = 0;
        for (slot, &host) in CACHE_REGS.iter().enumerate() {
            let guest = from.guest[slot];
            let stays = to.guest[slot] == guest && to.dirty[slot];
            if guest != 0 && from.dirty[slot] && !stays {
                self.a.store(xreg(guest), host);
                moves += 1;
            }
        }
        for (slot, &host) in CACHE_REGS.iter().enumerate() {
            let guest = to.guest[slot];
            if guest != 0 && from.guest[slot] != guest {
                self.a.load(Width::W64, host, xreg(guest));
                moves += 1;
            }
        }
        moves
    }

    /// Loads every cached register of `cache` from `Hart::x`.
    fn reload(&mut self, cache: RegisterCache) {
        for (&guest, &host) in cache.guest.iter().zip(&CACHE_REGS) {
            if guest != 0 {
                self.a.load(Width::W64, host, xreg(guest));
            }
        }
    }

    /// A conditional jump to the current load or store's interpreter slow path.
    fn jcc_slow(&mut self, cond: Cond) {
        let site = self.a.jcc(cond);
        self.slow_sites.push(site);
    }

    /// Calls the interpreter for `inst` (the `index`th instruction of the block, at `pc`);
    /// goes on after it when it fell through, through the lookup when it asked for a
    /// refetch, and leaves otherwise.
    /// The caller writes back the register cache first; the call clobbers r8-r11.
    fn interpret(&mut self, list_index: u32, pc: u64, index: u32) {
        let inst = self.interpreted[list_index as usize];
        let next = may_refetch(inst.op).then(|| pc.wrapping_add(inst.length_bytes as u64));
        self.call_interpreter(
            (self.first_interpreted + list_index) as u64,
            pc,
            index,
            next,
        );
    }

    /// `interpret` with the translator's index of the instruction (or `FETCH_AT_PC`), and
    /// the pc after it when a refetch is to go on there (else a refetch leaves too).
    fn call_interpreter(&mut self, list_index: u64, pc: u64, index: u32, next: Option<u64>) {
        let a = &mut self.a;
        a.mov(Width::W64, RDI, R14);
        a.mov_imm(RSI, list_index);
        a.mov_imm(RDX, pc);
        a.mov(Width::W64, RCX, R13);
        if index > 0 {
            a.alu_imm(Alu::Sub, Width::W64, RCX, index as i32);
        }
        a.call_mem(frame(offset_of!(Frame, interpret)));
        const { assert!(super::INTERPRETED_NEXT == 0) };
        a.test(Width::W64, RAX, RAX);
        let site = a.jcc(Cond::NotEqual);
        self.add_stub([site], Stub::Interpreted { pc, index, next });
    }

    /// Makes the forward branches to instruction `index` join its code, which starts here
    /// with the register cache the straight path brings.
    fn join_forward(&mut self, index: u32) {
        let mut at = 0;
        while at < self.forward.len() {
            if self.forward[at].target != index {
                at += 1;
                continue;
            }
            let edge = self.forward.swap_remove(at);
            let stub = Stub::Forward {
                skipped: edge.skipped,
                from: edge.from,
                to: self.cache,
                resume: self.a.len(),
            };
            self.add_stub([edge.site], stub);
        }
    }

    /// Adds `inst` to the interpreted list; returns its position there.
    fn hand_over(&mut self, inst: &Instruction) -> u32 {
        self.interpreted.push(*inst);
        self.interpreted.len() as u32 - 1
    }

    /// Adds a stub that the jumps at `sites` lead to.
    fn add_stub<const N: usize>(&mut self, sites: [usize; N], stub: Stub) {
        let start = self.stub_sites.len();
        self.stub_sites.extend(sites);
        self.stubs.push((start..self.stub_sites.len(), stub));
    }

    fn emit_stubs(&mut self) {
        // Stubs may add stubs (an interpreted slow path leaves through a Leave stub).
        while let Some((sites, stub)) = self.stubs.pop() {
            for site in sites {
                self.a.bind(self.stub_sites[site]);
            }
            match stub {
                Stub::Leave {
                    pc,
                    retired,
                    reason,
                    cache,
                } => {
                    self.write_back(cache);
                    self.leave_at(pc, retired, reason);
                }
                Stub::Chain { pc, site, across } => {
                    // The translator links sites where it placed the hot part.
                    assert!(site < self.hot_bytes, "a chained jump in the cold part");
                    self.a.mov_imm(RAX, pc);
                    self.a.store(frame(offset_of!(Frame, exit_pc)), RAX);
                    self.a.mov_imm(RAX, self.origin + site as u64);
                    self.a.store(frame(offset_of!(Frame, exit_site)), RAX);
                    if across {
                        self.leave_now(Exit::ChainAcross);
                    } else {
                        self.a.mov_imm(RAX, self.ram_page);
                        self.a.store(frame(offset_of!(Frame, exit_ram_page)), RAX);
                        self.leave_now(Exit::Chain);
                    }
                }
                Stub::Lookup { pc } => {
                    self.a.mov_imm(RAX, pc);
                    let site = self.a.jmp();
                    self.lookup_tail.push(site);
                }
                Stub::FlaggedStore {
                    size_bytes,
                    resume,
                    slow,
                } => {
                    let routine = self.flagged_store[size_bytes.trailing_zeros() as usize];
                    let site = self.a.call();
                    self.a.patch(site, routine.wrapping_sub(self.origin) as i64);
                    let slow_path = self.a.jcc(Cond::Below);
                    let back = self.a.jmp();
                    self.a.patch(back, resume as i64);
                    self.add_stub([slow_path], Stub::Interpret { slow });
                }
                Stub::Group {
                    first,
                    ops,
                    from,
                    to,
                    resume,
                } => {
                    self.cache = from;
                    for (k, inst) in ops.iter().enumerate() {
                        let index = first + k as u32;
                        self.index = index as usize;
                        self.instruction(inst, self.pcs[index as usize], index);
                    }
                    self.transfer(self.cache, to);
                    let back = self.a.jmp();
                    self.a.patch(back, resume as i64);
                }
                Stub::Forward {
                    skipped,
                    from,
                    to,
                    resume,
                } => {
                    if skipped > 0 {
                        self.a.alu_imm(Alu::Add, Width::W64, R13, skipped as i32);
                    }
                    self.transfer(from, to);
                    let back = self.a.jmp();
                    self.a.patch(back, resume as i64);
                }
                Stub::Interpreted { pc, index, next } => {
                    if let Some(next) = next {
                        let refetch = super::INTERPRETED_REFETCH as i32;
                        self.a.alu_imm(Alu::Cmp, Width::W64, RAX, refetch);
                        let other = self.a.jcc(Cond::NotEqual);
                        self.retire(index + 1);
                        self.drop_call_frames();
                        self.a.mov_imm(RAX, next);
                        let site = self.a.jmp();
                        self.lookup_tail.push(site);
                        self.a.bind(other);
                    }
                    self.leave_at(pc, index, Exit::Helper);
                }
                Stub::Interpret { slow } => {
                    self.write_back(slow.before);
                    self.interpret(slow.list_index, slow.pc, slow.retired);
                    // The interpreter ran the instruction: its result is in `Hart::x`,
                    // and so is every other cached register (written back above).
                    self.reload(slow.after);
                    let back = self.a.jmp();
                    self.a.patch(back, slow.resume as i64);
                }
            }
        }
        // With rax = the pc and r13 counted: one way on through the lookup, shared by the
        // block's refetches.
        if !self.lookup_tail.is_empty() {
            for site in core::mem::take(&mut self.lookup_tail) {
                self.a.bind(site);
            }
            self.jump_through_lookup();
        }
    }

    /// dst = x[r], from the register cache when it holds r.
    fn read(&mut self, dst: Reg, r: u8) {
        if r == 0 {
            self.a.alu(Alu::Xor, Width::W32, dst, dst);
            return;
        }
        match self.cache.find(r) {
            Some(slot) => self.a.mov(Width::W64, dst, CACHE_REGS[slot]),
            None => self.a.load(Width::W64, dst, xreg(r)),
        }
    }

    /// A register holding x[r]: its cache register, else `scratch` loaded with it.
    fn source(&mut self, scratch: Reg, r: u8) -> Reg {
        match self.cache.find(r) {
            Some(slot) => CACHE_REGS[slot],
            None => {
                self.read(scratch, r);
                scratch
            }
        }
    }

    /// Sets the flags as `cmp x[rs1], x[rs2]` (clobbers rax).
    fn compare_registers(&mut self, rs1: u8, rs2: u8) {
        let first = self.source(RAX, rs1);
        self.alu_source_to(first, Alu::Cmp, Width::W64, rs2);
    }

    /// `op rax, x[r]`.
    fn alu_source(&mut self, op: Alu, width: Width, r: u8) {
        self.alu_source_to(RAX, op, width, r);
    }

    /// `op dst, x[r]`.
    fn alu_source_to(&mut self, dst: Reg, op: Alu, width: Width, r: u8) {
        if r == 0 {
            // x0 reads 0: adding, subtracting, or-ing and xor-ing it change nothing (the
            // callers sign-extend 32-bit results themselves), and-ing it clears, and
            // comparing with it sets the flags as testing the value against itself.
            match op {
                Alu::Add | Alu::Sub | Alu::Or | Alu::Xor => {}
                Alu::And => self.a.alu(Alu::Xor, Width::W32, dst, dst),
                Alu::Cmp => self.a.test(width, dst, dst),
            }
            return;
        }
        match self.cache.find(r) {
            Some(slot) => self.a.alu(op, width, dst, CACHE_REGS[slot]),
            None => self.a.alu_mem(op, width, dst, xreg(r)),
        }
    }

    /// `op dst, imm`, nothing for an immediate that changes nothing (`mv` and `sext.w`
    /// are addi and addiw with 0: the callers sign-extend 32-bit results themselves).
    fn alu_immediate(&mut self, op: Alu, width: Width, dst: Reg, imm: i32) {
        if imm != 0 || !matches!(op, Alu::Add | Alu::Or | Alu::Xor) {
            self.a.alu_imm(op, width, dst, imm);
        }
    }

    /// The cache slot of `rd` when an operation rd = rs1 op rs2 can be computed in it
    /// directly: rd is cached already (no eviction that could drop a source) and, unless
    /// it is also rs1, is not the second source (which the first move would overwrite).
    fn in_place(&self, rd: u8, rs1: u8, rs2: Option<u8>) -> Option<usize> {
        let slot = self.cache.find(rd)?;
        (rs1 == rd || rs2 != Some(rd)).then_some(slot)
    }

    /// Records that cache slot `slot` was just written.
    fn wrote(&mut self, slot: usize) {
        self.cache.dirty[slot] = true;
    }

    /// x[rd] = rax, into the register cache (evicting an entry when full).
    fn write_rax(&mut self, rd: u8) {
        if rd == 0 {
            return;
        }
        let slot = self.slot_for(rd);
        self.a.mov(Width::W64, CACHE_REGS[slot], RAX);
    }

    /// The cache slot that is to receive a new value of rd (not x0), marked written: its
    /// own, or one allocated for it.
    fn slot_for(&mut self, rd: u8) -> usize {
        match self.cache.find(rd) {
            Some(slot) => {
                self.wrote(slot);
                slot
            }
            None => self.allocate(rd, self.index + 1),
        }
    }

    /// A cache slot for rd, which is not cached, marked written (`evict` chooses it);
    /// `from`: the instruction on from which the other cached registers' reads count (the
    /// current one while its sources are still to be read).
    fn allocate(&mut self, rd: u8, from: usize) -> usize {
        let slot = self.evict(rd, from);
        self.wrote(slot);
        slot
    }

    /// Frees a cache slot for guest register r and gives it to r (not marked written):
    /// in a loop r's home at the loop header, so the jump back finds it in place; else a
    /// free slot; else the one whose register is next read furthest from instruction
    /// `from` on (never, first), a clean one before a dirty one, which is written back.
    /// Slots that are the home of another register are taken last, and those of the
    /// registers the current instruction uses never while there is another.
    fn evict(&mut self, r: u8, from: usize) -> usize {
        let slot = self.victim(r, from);
        let cache = &mut self.cache;
        if cache.guest[slot] != 0 && cache.dirty[slot] {
            let evicted = cache.guest[slot];
            self.a.store(xreg(evicted), CACHE_REGS[slot]);
        }
        self.cache.guest[slot] = r;
        self.cache.dirty[slot] = false;
        slot
    }

    /// The slot `evict` would give r.
    fn victim(&self, r: u8, from: usize) -> usize {
        let homes = self.homes();
        let cache = &self.cache;
        if let Some(home) = homes.iter().position(|&g| g == r) {
            return home;
        }
        let free = (0..CACHE_SLOTS).find(|&slot| cache.guest[slot] == 0 && homes[slot] == 0);
        let empty = || cache.guest.iter().position(|&g| g == 0);
        // The homes of the registers the current instruction uses are claimed at once.
        let uses = self.uses.get(self.index).copied().unwrap_or_default();
        let claimed = |slot: usize| (uses.reads | uses.writes) & (1u32 << homes[slot]) & !1 != 0;
        // Larger is a better victim.
        let worth = |slot: usize| {
            let next = self
                .next_read(cache.guest[slot], from)
                .unwrap_or(usize::MAX);
            (!claimed(slot), homes[slot] == 0, next, !cache.dirty[slot])
        };
        free.or_else(empty).unwrap_or_else(|| {
            (0..CACHE_SLOTS)
                .max_by_key(|&slot| worth(slot))
                .unwrap_or(0)
        })
    }

    /// Records the register cache at a jump back to instruction `to` of the block, when
    /// it is the first there.
    fn note_back_edge(&mut self, to: u32) {
        let edge = &mut self.back_edges[to as usize];
        if edge.is_none() {
            *edge = Some((self.index as u32, self.cache));
        }
    }

    /// Where the code of loop header `index` starts and its register cache state, once
    /// emitted, if the instruction is a loop header.
    fn loop_header(&self, index: u32) -> Option<(usize, RegisterCache)> {
        self.loops.iter().find(|l| l.header == index)?;
        self.starts.get(index as usize).copied()
    }

    /// The innermost loop whose body holds instruction `index`.
    fn innermost(&self, index: usize) -> Option<&Loop> {
        self.loops
            .iter()
            .filter(|l| l.header as usize <= index && index <= l.back as usize)
            .max_by_key(|l| l.header)
    }

    /// The register each slot holds at the header of the innermost loop around the
    /// current instruction (0 for none, or not in a loop).
    fn homes(&self) -> [u8; CACHE_SLOTS] {
        self.innermost(self.index)
            .map_or([0; CACHE_SLOTS], |l| l.state.guest)
    }

    /// How far ahead of `from` the next instruction that reads x[r] runs, counted in
    /// instructions in the order they run: in the innermost loop around `from`, on to its
    /// jump back, around from its header, then on after the loop. None when r is written
    /// before, or the cache is emptied or the block left first.
    fn next_read(&self, r: u8, from: usize) -> Option<usize> {
        let bit = 1u32 << r;
        let count = self.uses.len();
        let (end, wrap) = match self.innermost(from) {
            Some(l) => (l.back as usize + 1, l.header as usize..from),
            None => (count, 0..0),
        };
        let order = (from..end).chain(wrap).chain(end..count);
        order.enumerate().find_map(|(ahead, at)| {
            let uses = self.uses[at];
            if uses.empties_cache || (uses.reads & bit == 0 && uses.writes & bit != 0) {
                Some(None)
            } else {
                (uses.reads & bit != 0).then_some(Some(from + ahead))
            }
        })?
    }

    /// Before instruction `index` reads them: loads into the cache the sources it reads
    /// that a later instruction reads again, when a slot is free or holds a register
    /// needed later than that, and is no other register's home (which the jump back to
    /// the loop header would have to load again).
    fn cache_sources(&mut self, inst: &Instruction) {
        let index = self.index;
        for r in [inst.rs1, inst.rs2] {
            if r == 0 || self.cache.find(r).is_some() {
                continue;
            }
            let Some(again) = self.next_read(r, index + 1) else {
                continue;
            };
            let slot = self.victim(r, index);
            let held = self.cache.guest[slot];
            let home = self.homes()[slot];
            let later = held == 0 || self.next_read(held, index).is_none_or(|next| next > again);
            if later && (home == 0 || home == r) {
                let slot = self.evict(r, index);
                self.a.load(Width::W64, CACHE_REGS[slot], xreg(r));
            }
        }
    }

    /// The cache slot in which rd = rs1 op rs2 can be computed directly, marked written
    /// once the caller has: rd's own (`in_place`), or a new one when rd is not cached and
    /// is neither source (a source read through the new slot would find rd's stale value).
    fn destination(&mut self, rd: u8, rs1: u8, rs2: Option<u8>) -> Option<usize> {
        if let Some(slot) = self.in_place(rd, rs1, rs2) {
            return Some(slot);
        }
        (self.cache.find(rd).is_none() && rs1 != rd && rs2 != Some(rd))
            .then(|| self.allocate(rd, self.index))
    }

    /// rax = x[rs1] + imm (the effective address of a load or store).
    fn address(&mut self, inst: &Instruction) {
        match self.cache.find(inst.rs1) {
            Some(slot) if inst.imm != 0 => {
                self.a
                    .lea(Width::W64, RAX, at_base(CACHE_REGS[slot], inst.imm));
            }
            _ => {
                self.read(RAX, inst.rs1);
                if inst.imm != 0 {
                    self.a.alu_imm(Alu::Add, Width::W64, RAX, inst.imm);
                }
            }
        }
    }

    /// The soft-TLB probe shared by loads and stores (`mmu::Tlb::lookup` and the in-page
    /// check of `Hart::load`/`Hart::store`). With the address in rax, leaves rdx = the
    /// address of its entry; jumps to the slow path on a miss or a page-crossing access.
    fn tlb_probe(&mut self, tlb: usize, key: usize, size: u64) {
        tlb_compare(&mut self.a, tlb, key, DATA_TLB_ENTRIES, size);
        self.jcc_slow(Cond::NotEqual);
    }

    /// Loads or stores through one base register (`group_length`), maybe with integer
    /// operations between them: a single probe checks that all their bytes lie in one
    /// page its TLB entry maps (and for stores that the page needs no flagged store), and
    /// then each access is one host load or store. When the probe fails, the group's
    /// instructions run one by one out of line (`Stub::Group`). A function's saves and
    /// restores of registers on its stack are such groups.
    fn access_group(&mut self, ops: &[Instruction], first: usize) {
        let from = self.cache;
        let accesses = ops.iter().filter_map(|inst| {
            integer_access(inst.op).map(|(stores, size, _)| (inst.imm, stores, size))
        });
        let (first_byte, last_byte) = accesses
            .clone()
            .map(|(imm, _, size)| (imm, imm + size as i32 - 1))
            .fold((i32::MAX, i32::MIN), |(lo, hi), (a, b)| {
                (lo.min(a), hi.max(b))
            });
        let stores = accesses.clone().next().expect("a group").1;
        let between = ops.iter().any(|inst| integer_access(inst.op).is_none());
        let (tlb, key) = if stores {
            (offset_of!(Frame, store_tlb), offset_of!(Frame, store_key))
        } else {
            (offset_of!(Frame, load_tlb), offset_of!(Frame, load_key))
        };
        let base = self.source(RAX, ops[0].rs1);
        let a = &mut self.a;
        tlb_compare_range(a, tlb, key, DATA_TLB_ENTRIES, base, first_byte..=last_byte);
        let miss = a.jcc(Cond::NotEqual);
        a.load(Width::W64, RCX, at_base(RDX, 8));
        let flagged = stores.then(|| {
            a.test_low_byte(RCX, STORE_THROUGH_SLOW_PATH | STORE_MARKS_DIRTY);
            a.jcc(Cond::NotEqual)
        });
        // rcx = the host address of x[rs1] for the rest of the group: the accesses use
        // rax only, the operations between them may use rcx (they find it in the frame).
        a.alu(Alu::Add, Width::W64, RCX, base);
        let group_base = frame(offset_of!(Frame, group_base));
        if between {
            a.store(group_base, RCX);
        }
        let mut base_in_rcx = true;
        for (k, inst) in ops.iter().enumerate() {
            let index = first + k;
            if k > 0 {
                self.starts.push((self.a.len(), self.cache));
            }
            self.index = index;
            let Some((_, size, signed)) = integer_access(inst.op) else {
                self.instruction(inst, self.pcs[index], index as u32);
                base_in_rcx = false;
                continue;
            };
            if !base_in_rcx {
                self.a.load(Width::W64, RCX, group_base);
                base_in_rcx = true;
            }
            self.cache_sources(inst);
            let target = at_base(RCX, inst.imm);
            if stores {
                self.store_to(inst, size, target);
            } else {
                self.load_from(inst, size, signed, target);
            }
        }
        let stub = Stub::Group {
            first: first as u32,
            ops: ops.to_vec(),
            from,
            to: self.cache,
            resume: self.a.len(),
        };
        match flagged {
            Some(flagged) => self.add_stub([miss, flagged], stub),
            None => self.add_stub([miss], stub),
        }
    }

    fn load(&mut self, inst: &Instruction, size: u64, signed: bool) {
        self.address(inst);
        let value = self.load_target(size, false);
        self.load_from(inst, size, signed, value);
    }

    /// The load `inst` of `size` bytes from `value` (its host address) into its destination.
    fn load_from(&mut self, inst: &Instruction, size: u64, signed: bool, value: super::x86::Mem) {
        if float::is_float_access(inst.op) {
            self.a.load_extend(size, signed, RAX, value);
            self.float_loaded(inst);
        } else if inst.rd != 0 {
            let slot = self.slot_for(inst.rd);
            self.a.load_extend(size, signed, CACHE_REGS[slot], value);
        }
    }

    fn store(&mut self, inst: &Instruction, size: u64) {
        self.address(inst);
        self.store_target(size);
        self.store_to(inst, size, at_base(RCX, 0));
    }

    /// The store `inst` of `size` bytes of its source to `target` (its host address).
    fn store_to(&mut self, inst: &Instruction, size: u64, target: super::x86::Mem) {
        if float::is_float_access(inst.op) {
            self.float_store_source(inst);
            self.a.store_sized(size, target, RAX);
        } else {
            let value = self.source(RAX, inst.rs2);
            self.a.store_sized(size, target, value);
        }
    }

    /// An AMO (unprivileged spec 8.4) of `size` bytes: rd = the old value (sign-extended
    /// from 32 bits for the .w forms), memory = old `op` x[rs2], or x[rs2] for amoswap.
    fn amo(&mut self, inst: &Instruction, size: u64, op: Option<Alu>) {
        self.aligned_address(inst, size);
        self.store_target(size);
        let target = at_base(RCX, 0);
        self.a.load_extend(size, true, RAX, target);
        match op {
            None => self.read(RDX, inst.rs2),
            Some(op) => {
                self.a.mov(Width::W64, RDX, RAX);
                self.alu_source_to(RDX, op, Width::W64, inst.rs2);
            }
        }
        self.a.store_sized(size, target, RDX);
        self.write_rax(inst.rd);
    }

    /// LR (unprivileged spec 8.2): a load that also reserves its address and the raw
    /// value read (`Hart::reservation`, as the interpreter's LR sets it).
    fn load_reserved(&mut self, inst: &Instruction, size: u64) {
        self.aligned_address(inst, size);
        let target = self.load_target(size, true);
        let a = &mut self.a;
        a.load(Width::W64, RDX, frame(offset_of!(Frame, reservation)));
        a.store(at_base(RDX, offset_of!(Reservation, vaddr) as i32), RAX);
        a.load_extend(size, false, RAX, target);
        a.store(at_base(RDX, offset_of!(Reservation, value) as i32), RAX);
        if size == 4 {
            a.movsxd(RAX, RAX);
        }
        self.write_rax(inst.rd);
    }

    /// SC (unprivileged spec 8.2), as the interpreter's: stores x[rs2] and writes rd = 0
    /// when the reservation is for this address and memory still holds the value LR read,
    /// else writes rd = 1 (touching memory only when the address matched); either way the
    /// reservation is gone.
    fn store_conditional(&mut self, inst: &Instruction, size: u64) {
        let width = if size == 4 { Width::W32 } else { Width::W64 };
        let reservation = frame(offset_of!(Frame, reservation));
        let vaddr = at_base(RDX, offset_of!(Reservation, vaddr) as i32);
        let value = at_base(RDX, offset_of!(Reservation, value) as i32);
        self.aligned_address(inst, size);
        self.a.load(Width::W64, RDX, reservation);
        self.a.alu_mem(Alu::Cmp, Width::W64, RAX, vaddr);
        let other_address = self.a.jcc(Cond::NotEqual);
        self.store_target(size);
        let target = at_base(RCX, 0);
        let a = &mut self.a;
        a.load(Width::W64, RDX, reservation);
        a.load_extend(size, false, RAX, target);
        a.alu_mem(Alu::Cmp, width, RAX, value);
        let changed = a.jcc(Cond::NotEqual);
        self.read(RAX, inst.rs2);
        let a = &mut self.a;
        a.store_sized(size, target, RAX);
        a.alu(Alu::Xor, Width::W32, RAX, RAX);
        let done = a.jmp();
        a.bind(other_address);
        a.bind(changed);
        a.mov_imm(RAX, 1);
        a.bind(done);
        a.mov_imm(RCX, Reservation::NONE.vaddr);
        a.store(vaddr, RCX);
        self.write_rax(inst.rd);
    }

    /// rax = x[rs1], the address of an AMO, LR or SC; misaligned ones take the slow path,
    /// where the interpreter raises the fault (unprivileged spec 8.2 and 8.4).
    fn aligned_address(&mut self, inst: &Instruction, size: u64) {
        self.read(RAX, inst.rs1);
        self.a.test_low_byte(RAX, (size - 1) as u8);
        self.jcc_slow(Cond::NotEqual);
    }

    /// The load-TLB probe for a read of `size` bytes at rax; returns where the bytes are:
    /// at rcx when `keep_address` (rax still the address), else at rax.
    fn load_target(&mut self, size: u64, keep_address: bool) -> super::x86::Mem {
        self.tlb_probe(
            offset_of!(Frame, load_tlb),
            offset_of!(Frame, load_key),
            size,
        );
        // Load entries carry no flags: address + addend is the host address.
        let addend = at_base(RDX, 8);
        if keep_address {
            self.a.load(Width::W64, RCX, addend);
            self.a.alu(Alu::Add, Width::W64, RCX, RAX);
            at_base(RCX, 0)
        } else {
            self.a.alu_mem(Alu::Add, Width::W64, RAX, addend);
            at_base(RAX, 0)
        }
    }

    /// The store-TLB probe and the page's flags for a write of `size` bytes at rax; leaves
    /// rcx = its host address (an AMO reads through the same entry: privileged spec 3.7.1
    /// makes a writable page readable). Clobbers rdx.
    fn store_target(&mut self, size: u64) {
        self.tlb_probe(
            offset_of!(Frame, store_tlb),
            offset_of!(Frame, store_key),
            size,
        );
        let a = &mut self.a;
        a.load(Width::W64, RCX, at_base(RDX, 8));
        // An entry without flags belongs to a page already marked dirty, holding no code.
        a.test_low_byte(RCX, STORE_THROUGH_SLOW_PATH | STORE_MARKS_DIRTY);
        let flagged = a.jcc(Cond::NotEqual);
        a.alu(Alu::Add, Width::W64, RCX, RAX);
        let resume = a.len();
        let slow = self.current.expect("a store is being emitted");
        self.add_stub(
            [flagged],
            Stub::FlaggedStore {
                size_bytes: size,
                resume,
                slow,
            },
        );
    }

    /// An sstatus access of `sets_or_clears_status`, as `Hart::execute_csr` does it: rd = mstatus
    /// & the sstatus mask, and the set or clear of the bits of x[rs1] (or the immediate)
    /// that sstatus may write. A change of bits other than SIE, SUM and MXR, any change
    /// outside S-mode, and an enable of SIE that leaves an interrupt pending and enabled in
    /// mie take the interpreter path instead (which leaves for `Hart::run` to take it; in
    /// S-mode an enabled interrupt not delegated would have been taken already). A change
    /// of SUM or MXR rewrites the load and store keys, in the frame and in the MMU, as
    /// `Hart::update_tlb_keys` does. This reads mstatus as it is stored, since every writer
    /// keeps its SD equal to FS == Dirty, which `mstatus_read` computes. The interpreter
    /// also runs it from U-mode, to raise the illegal instruction (privileged spec 2.1:
    /// sstatus is an S-level CSR).
    fn status_access(&mut self, inst: &Instruction) {
        const WRITABLE: u64 = SSTATUS_MASK & MSTATUS_WRITABLE;
        const INLINE: u64 = MSTATUS_SIE | MSTATUS_SUM | MSTATUS_MXR;
        let mstatus = at_base(RBX, self.layout.mstatus);
        let privilege = at_base(RBX, self.layout.privilege);
        const { assert!(Privilege::User as u8 == 0) };
        self.a.test_mem_byte(privilege, 0xff);
        self.jcc_slow(Cond::Equal);
        self.a.load(Width::W64, RAX, mstatus);
        // rcx = the bits the instruction changes.
        match inst.op {
            Op::Csrrs | Op::Csrrc if inst.rs1 != 0 => {
                self.read(RCX, inst.rs1);
                let a = &mut self.a;
                if inst.op == Op::Csrrs {
                    a.mov(Width::W64, RDX, RAX);
                    a.unary(Unary::Not, Width::W64, RDX);
                    a.alu(Alu::And, Width::W64, RCX, RDX);
                } else {
                    a.alu(Alu::And, Width::W64, RCX, RAX);
                }
                a.mov_imm(RDX, WRITABLE);
                a.alu(Alu::And, Width::W64, RCX, RDX);
            }
            Op::Csrrsi | Op::Csrrci if inst.rs1 as u64 & WRITABLE != 0 => {
                // Of the immediate's five bits only SIE is one sstatus may write.
                const { assert!(WRITABLE & 0x1f == MSTATUS_SIE) };
                let a = &mut self.a;
                a.mov(Width::W32, RCX, RAX);
                if inst.op == Op::Csrrsi {
                    a.unary(Unary::Not, Width::W32, RCX);
                }
                a.alu_imm(Alu::And, Width::W32, RCX, MSTATUS_SIE as i32);
            }
            _ => {
                self.status_result(inst.rd);
                return;
            }
        }
        let unchanged = self.a.jcc(Cond::Equal);
        let a = &mut self.a;
        a.mov_imm(RDX, !INLINE);
        a.test(Width::W64, RCX, RDX);
        self.jcc_slow(Cond::NotEqual);
        self.a
            .test_mem_byte(privilege, Privilege::Machine as u8 & 2);
        const { assert!(Privilege::Supervisor as u8 & 2 == 0) };
        self.jcc_slow(Cond::NotEqual);
        let sets = matches!(inst.op, Op::Csrrs | Op::Csrrsi);
        if sets {
            let a = &mut self.a;
            a.test_low_byte(RCX, MSTATUS_SIE as u8);
            let no_enable = a.jcc(Cond::Equal);
            a.load(Width::W64, RDX, at_base(RBX, self.layout.mip));
            a.alu_mem(Alu::Or, Width::W64, RDX, at_base(RBX, self.layout.lines));
            a.alu_mem(Alu::And, Width::W64, RDX, at_base(RBX, self.layout.mie));
            self.jcc_slow(Cond::NotEqual);
            self.a.bind(no_enable);
        }
        let a = &mut self.a;
        // The changed bits are set in mstatus (csrrs) or clear (csrrc): either way xor
        // flips them.
        a.alu(Alu::Xor, Width::W64, RCX, RAX);
        a.store(mstatus, RCX);
        // An immediate changes SIE only; a register may change SUM or MXR, and then the
        // keys: 1 | SUM << 2 | MXR << 3 for loads in S-mode, without MXR for stores.
        if matches!(inst.op, Op::Csrrs | Op::Csrrc) {
            const SUPERVISOR: u64 = Privilege::Supervisor as u64;
            const {
                let (load, store) = mmu::data_keys(SUPERVISOR, MSTATUS_SUM | MSTATUS_MXR);
                assert!(MSTATUS_SUM >> 16 == 4 && MSTATUS_MXR >> 16 == 8);
                assert!(load == (SUPERVISOR | 12) << mmu::KEY_SHIFT);
                assert!(store == (SUPERVISOR | 4) << mmu::KEY_SHIFT);
                assert!(mmu::data_keys(SUPERVISOR, 0).0 == SUPERVISOR << mmu::KEY_SHIFT);
            };
            a.mov(Width::W64, RDX, RCX);
            a.alu(Alu::Xor, Width::W64, RDX, RAX);
            a.alu_imm(
                Alu::And,
                Width::W32,
                RDX,
                (MSTATUS_SUM | MSTATUS_MXR) as i32,
            );
            let same_keys = a.jcc(Cond::Equal);
            a.shift_imm(Shift::Shr, Width::W32, RCX, 16);
            a.alu_imm(Alu::And, Width::W32, RCX, 12);
            a.alu_imm(Alu::Or, Width::W32, RCX, SUPERVISOR as i32);
            a.mov(Width::W32, RDX, RCX);
            a.alu_imm(Alu::And, Width::W32, RDX, 7);
            a.shift_imm(Shift::Shl, Width::W64, RCX, mmu::KEY_SHIFT as u8);
            a.shift_imm(Shift::Shl, Width::W64, RDX, mmu::KEY_SHIFT as u8);
            a.store(frame(offset_of!(Frame, load_key)), RCX);
            a.store(at_base(RBX, self.layout.load_key), RCX);
            a.store(frame(offset_of!(Frame, store_key)), RDX);
            a.store(at_base(RBX, self.layout.store_key), RDX);
            a.bind(same_keys);
        }
        self.a.bind(unchanged);
        self.status_result(inst.rd);
    }

    /// A read of `time` (`block::reads_time`), the `index`th instruction of the block:
    /// `Frame::time_offset` + instret / `Frame::time_divisor`, saturating, as
    /// `Platform::linear_time` says, with instret = `Frame::end` - (r13 - `index`), the count
    /// the interpreter would have here (`call_interpreter`). A divisor of 0 takes the
    /// interpreter path (no linear time, or the counter not readable: privileged spec
    /// 3.1.11).
    fn time_read(&mut self, inst: &Instruction, index: u32) {
        let a = &mut self.a;
        a.load(Width::W64, RCX, frame(offset_of!(Frame, time_divisor)));
        a.test(Width::W64, RCX, RCX);
        self.jcc_slow(Cond::Equal);
        let a = &mut self.a;
        a.load(Width::W64, RAX, frame(offset_of!(Frame, end)));
        a.alu(Alu::Sub, Width::W64, RAX, R13);
        if index > 0 {
            a.alu_imm(Alu::Add, Width::W64, RAX, index as i32);
        }
        a.alu(Alu::Xor, Width::W32, RDX, RDX);
        a.unary(Unary::Div, Width::W64, RCX);
        a.alu_mem(
            Alu::Add,
            Width::W64,
            RAX,
            frame(offset_of!(Frame, time_offset)),
        );
        let no_carry = a.jcc(Cond::AboveOrEqual);
        a.mov_imm(RAX, u64::MAX);
        a.bind(no_carry);
        self.write_rax(inst.rd);
    }

    /// x[rd] = rax (mstatus) & the sstatus mask.
    fn status_result(&mut self, rd: u8) {
        let a = &mut self.a;
        a.mov_imm(RCX, SSTATUS_MASK);
        a.alu(Alu::And, Width::W64, RAX, RCX);
        self.write_rax(rd);
    }

    /// A CSR instruction on a CSR that holds data only (`block::accesses_data_csr`), as
    /// `Hart::execute_csr` does it: below the CSR's privilege the interpreter path raises
    /// the illegal instruction; rd = the old value; the new one is written unless a set or
    /// clear has nothing to set or clear (Zicsr 9.1), with bit 0 of xepc clear (privileged
    /// spec 3.1.14: IALIGN is 16 with C).
    fn data_csr_access(&mut self, inst: &Instruction) {
        use Op::*;
        let csr = (inst.imm as u32 & 0xfff) as u16;
        let index = DATA_ONLY_CSRS.iter().position(|&c| c == csr);
        let field = at_base(RBX, self.layout.data_csrs[index.expect("a data-only CSR")]);
        // Privilege is 0 in U-mode and has bit 1 set only in M-mode.
        const { assert!(Privilege::User as u8 == 0 && Privilege::Machine as u8 & 2 != 0) };
        const { assert!(Privilege::Supervisor as u8 & 2 == 0) };
        let machine_only = (csr >> 8) & 3 == Privilege::Machine as u16;
        let privilege = at_base(RBX, self.layout.privilege);
        self.a
            .test_mem_byte(privilege, if machine_only { 2 } else { 0xff });
        self.jcc_slow(Cond::Equal);
        let writes = matches!(inst.op, Csrrw | Csrrwi) || inst.rs1 != 0;
        // The source first: rd may be rs1.
        if writes {
            match inst.op {
                Csrrwi | Csrrsi | Csrrci => self.a.mov_imm(RCX, inst.rs1 as u64),
                _ => self.read(RCX, inst.rs1),
            }
        }
        self.a.load(Width::W64, RAX, field);
        if writes {
            let a = &mut self.a;
            match inst.op {
                Csrrs | Csrrsi => a.alu(Alu::Or, Width::W64, RCX, RAX),
                Csrrc | Csrrci => {
                    a.unary(Unary::Not, Width::W64, RCX);
                    a.alu(Alu::And, Width::W64, RCX, RAX);
                }
                _ => {}
            }
            if matches!(csr, SEPC | MEPC) {
                a.alu_imm(Alu::And, Width::W64, RCX, !1);
            }
            a.store(field, RCX);
        }
        self.write_rax(inst.rd);
    }

    /// Register-register or register-immediate ALU operation into rd.
    fn alu(&mut self, inst: &Instruction, op: Alu, width: Width, immediate: bool) {
        if inst.rd == 0 {
            return;
        }
        let commutes = matches!(op, Alu::Add | Alu::And | Alu::Or | Alu::Xor);
        let commuted = commuted(inst);
        let inst = if !immediate && commutes {
            &commuted
        } else {
            inst
        };
        if immediate && inst.rs1 == 0 {
            // li: x0 op imm is a constant (addiw's too: imm has 12 bits).
            let value = if op == Alu::And {
                0
            } else {
                inst.imm as i64 as u64
            };
            let slot = self.slot_for(inst.rd);
            self.a.mov_imm(CACHE_REGS[slot], value);
            return;
        }
        let rs2 = (!immediate).then_some(inst.rs2);
        if let Some(slot) = self.destination(inst.rd, inst.rs1, rs2) {
            let host = CACHE_REGS[slot];
            if op == Alu::Add && self.add_into(host, width, inst, rs2) {
                self.wrote(slot);
                return;
            }
            if inst.rs1 != inst.rd {
                self.read(host, inst.rs1);
            }
            match rs2 {
                None => self.alu_immediate(op, width, host, inst.imm),
                Some(rs2) => self.alu_source_to(host, op, width, rs2),
            }
            if width == Width::W32 {
                self.a.movsxd(host, host);
            }
            self.wrote(slot);
            return;
        }
        self.read(RAX, inst.rs1);
        if immediate {
            self.alu_immediate(op, width, RAX, inst.imm);
        } else {
            self.alu_source(op, width, inst.rs2);
        }
        if width == Width::W32 {
            self.a.movsxd(RAX, RAX);
        }
        self.write_rax(inst.rd);
    }

    /// rd = rs1 + rs2 (or + imm) into `host`, rd's slot, in one `lea` when rd is neither
    /// source and the sources are cached; false (nothing emitted) otherwise.
    fn add_into(&mut self, host: Reg, width: Width, inst: &Instruction, rs2: Option<u8>) -> bool {
        if inst.rs1 == inst.rd || rs2 == Some(inst.rd) {
            return false;
        }
        let Some(base) = self.cache.find(inst.rs1).map(|slot| CACHE_REGS[slot]) else {
            return false;
        };
        let sum = match rs2 {
            None if inst.imm == 0 && width == Width::W32 => {
                // sext.w
                self.a.movsxd(host, base);
                return true;
            }
            None if inst.imm == 0 => return false,
            None => at_base(base, inst.imm),
            Some(rs2) => match self.cache.find(rs2) {
                Some(slot) => at_index(base, CACHE_REGS[slot], 0),
                None => return false,
            },
        };
        self.a.lea(width, host, sum);
        if width == Width::W32 {
            self.a.movsxd(host, host);
        }
        true
    }

    fn shift(&mut self, inst: &Instruction, op: Shift, width: Width, immediate: bool) {
        if inst.rd == 0 {
            return;
        }
        let mask = if width == Width::W64 { 63 } else { 31 };
        let amount = (inst.imm & mask) as u8;
        // A 32-bit result is sign-extended to 64 bits (unprivileged spec 5.3.2), except
        // that one shifted right logically by at least one place has bit 31 clear, and
        // the x86 32-bit shift already cleared the upper half.
        let extend = width == Width::W32 && !(immediate && op == Shift::Shr && amount > 0);
        if !immediate {
            // x86 masks the count to 6 (64-bit) or 5 (32-bit) bits, as RV64I does for
            // sll/srl/sra and sllw/srlw/sraw (unprivileged spec 2.4.2, 5.3.2). Read
            // first: rs2 may be rd, which the destination's slot is about to receive.
            self.read(RCX, inst.rs2);
        }
        let (dst, slot) = match self.destination(inst.rd, inst.rs1, None) {
            Some(slot) => (CACHE_REGS[slot], Some(slot)),
            None => (RAX, None),
        };
        if inst.rs1 != inst.rd || slot.is_none() {
            self.read(dst, inst.rs1);
        }
        if immediate {
            self.a.shift_imm(op, width, dst, amount);
        } else {
            self.a.shift_cl(op, width, dst);
        }
        if extend {
            self.a.movsxd(dst, dst);
        }
        match slot {
            Some(slot) => self.wrote(slot),
            None => self.write_rax(inst.rd),
        }
    }

    fn compare(&mut self, inst: &Instruction, cond: Cond, immediate: bool) {
        if inst.rd == 0 {
            return;
        }
        if immediate {
            // The sign-extended imm32 compares as the sign-extended 12-bit immediate, also
            // for sltiu (unprivileged spec 2.4.1).
            let first = self.source(RAX, inst.rs1);
            self.a.alu_imm(Alu::Cmp, Width::W64, first, inst.imm);
        } else {
            self.compare_registers(inst.rs1, inst.rs2);
        }
        // Straight into rd's slot: a register evicted for it is stored with a mov, which
        // leaves the flags alone.
        let slot = self.slot_for(inst.rd);
        self.a.set_cond(cond, RAX, CACHE_REGS[slot]);
    }

    fn multiply(&mut self, inst: &Instruction) {
        if inst.rd == 0 {
            return;
        }
        // mul and mulw keep the low half: computed in rd's cache register where they can.
        let low = match inst.op {
            Op::Mul => Some(Width::W64),
            Op::Mulw => Some(Width::W32),
            _ => None,
        };
        if let Some(width) = low {
            let inst = &commuted(inst);
            if let Some(slot) = self.destination(inst.rd, inst.rs1, Some(inst.rs2)) {
                let host = CACHE_REGS[slot];
                if inst.rs1 != inst.rd {
                    self.read(host, inst.rs1);
                }
                match self.cache.find(inst.rs2) {
                    _ if inst.rs2 == 0 => self.a.alu(Alu::Xor, Width::W32, host, host),
                    Some(source) => self.a.imul(width, host, CACHE_REGS[source]),
                    None => self.a.imul_mem(width, host, xreg(inst.rs2)),
                }
                if width == Width::W32 {
                    self.a.movsxd(host, host);
                }
                self.wrote(slot);
                return;
            }
        }
        self.read(RAX, inst.rs1);
        self.read(RCX, inst.rs2);
        let a = &mut self.a;
        match inst.op {
            Op::Mul => a.imul(Width::W64, RAX, RCX),
            Op::Mulw => {
                a.imul(Width::W32, RAX, RCX);
                a.movsxd(RAX, RAX);
            }
            Op::Mulh => {
                a.unary(Unary::Imul, Width::W64, RCX);
                a.mov(Width::W64, RAX, RDX);
            }
            Op::Mulhu => {
                a.unary(Unary::Mul, Width::W64, RCX);
                a.mov(Width::W64, RAX, RDX);
            }
            _ => {
                // mulhsu: the unsigned high half, minus rs2 when rs1 is negative (the
                // signed rs1 is rs1 - 2^64 then).
                a.unary(Unary::Mul, Width::W64, RCX);
                // rax held rs1 and the product overwrote it: read rs1 again.
                self.read(RAX, inst.rs1);
                let a = &mut self.a;
                a.shift_imm(Shift::Sar, Width::W64, RAX, 63);
                a.alu(Alu::And, Width::W64, RAX, RCX);
                a.alu(Alu::Sub, Width::W64, RDX, RAX);
                a.mov(Width::W64, RAX, RDX);
            }
        }
        self.write_rax(inst.rd);
    }

    /// Division and remainder with the RISC-V results where x86 would fault (M spec 7.2,
    /// table 7.1): x / 0 = all ones, x % 0 = x, MIN / -1 = MIN, MIN % -1 = 0.
    fn divide(&mut self, inst: &Instruction) {
        if inst.rd == 0 {
            return;
        }
        let (width, signed, remainder) = match inst.op {
            Op::Div => (Width::W64, true, false),
            Op::Divu => (Width::W64, false, false),
            Op::Rem => (Width::W64, true, true),
            Op::Remu => (Width::W64, false, true),
            Op::Divw => (Width::W32, true, false),
            Op::Divuw => (Width::W32, false, false),
            Op::Remw => (Width::W32, true, true),
            _ => (Width::W32, false, true),
        };
        self.read(RAX, inst.rs1);
        self.read(RCX, inst.rs2);
        let a = &mut self.a;
        a.test(width, RCX, RCX);
        let zero = a.jcc(Cond::Equal);
        let mut done = Vec::new();
        if signed {
            a.alu_imm(Alu::Cmp, width, RCX, -1);
            let normal = a.jcc(Cond::NotEqual);
            // Dividing by -1 negates (wrapping at MIN); the remainder is 0.
            if remainder {
                a.alu(Alu::Xor, Width::W32, RAX, RAX);
            } else {
                a.unary(Unary::Neg, width, RAX);
            }
            done.push(a.jmp());
            a.bind(normal);
            a.sign_extend_into_rdx(width);
            a.unary(Unary::Idiv, width, RCX);
        } else {
            a.alu(Alu::Xor, Width::W32, RDX, RDX);
            a.unary(Unary::Div, width, RCX);
        }
        if remainder {
            a.mov(Width::W64, RAX, RDX);
        }
        done.push(a.jmp());
        a.bind(zero);
        if !remainder {
            a.mov_imm(RAX, u64::MAX);
        }
        // (x % 0 = x: rax still holds x.)
        for site in done {
            a.bind(site);
        }
        if width == Width::W32 {
            a.movsxd(RAX, RAX);
        }
        self.write_rax(inst.rd);
    }

    fn branch(&mut self, inst: &Instruction, cond: Cond, pc: u64, index: u32) {
        self.compare_registers(inst.rs1, inst.rs2);
        let target = pc.wrapping_add(inst.imm as i64 as u64);
        // A target inside the block (other than its start, the loop header) is reached
        // without leaving it: the same instructions retire as through an exit and a chained
        // entry, with the register cache kept.
        match self.pcs.binary_search(&target) {
            Ok(to) if to as u32 > index => {
                let site = self.a.jcc(cond);
                self.forward.push(PendingForward {
                    target: to as u32,
                    site,
                    from: self.cache,
                    skipped: to as u32 - index - 1,
                });
                return;
            }
            Ok(to) if to > 0 && to as u32 <= index => {
                let to = to as u32;
                self.note_back_edge(to);
                let not_taken = self.a.jcc(cond.negate());
                let (start, state) = self.starts[to as usize];
                // Instructions from the target on run again: as for the loop header in
                // `goto`, count what retired (index + 1 - to on top of the target's index
                // that later exits subtract) and check the budget for the rest of the block.
                self.back_edge_moves += self.transfer(self.cache, state);
                self.retire(index + 1 - to);
                self.a.alu_imm(Alu::Cmp, Width::W64, R13, self.count as i32);
                self.jcc_leave(Cond::Below, target, to, Exit::Budget, state);
                let back = self.a.jmp();
                self.a.patch(back, start as i64);
                self.a.bind(not_taken);
                return;
            }
            _ => {}
        }
        let not_taken = self.a.jcc(cond.negate());
        self.goto(pc.wrapping_add(inst.imm as i64 as u64), index + 1);
        self.a.bind(not_taken);
    }

    /// One instruction; returns false when it ended the block (a jump).
    fn instruction(&mut self, inst: &Instruction, pc: u64, index: u32) -> bool {
        let next = pc.wrapping_add(inst.length_bytes as u64);
        if !inline(inst, &self.layout) {
            let list_index = self.hand_over(inst);
            self.write_back(self.cache);
            self.interpret(list_index, pc, index);
            self.cache = RegisterCache::default();
            return true;
        }
        if translates(inst.op) {
            self.cache_sources(inst);
        }
        let first_stub = self.stubs.len();
        if accesses_memory(inst.op) || float::has_slow_path(inst.op) || csr_inline(inst) {
            let list_index = self.hand_over(inst);
            self.current = Some(Slow {
                list_index,
                pc,
                retired: index,
                before: self.cache,
                after: self.cache,
                resume: PENDING,
            });
        }
        let open = self.translated(inst, pc, index, next);
        if let Some(slow) = self.current.take() {
            let start = self.stub_sites.len();
            self.stub_sites.append(&mut self.slow_sites);
            self.stubs
                .push((start..self.stub_sites.len(), Stub::Interpret { slow }));
        }
        // Everything out of line for this instruction goes on after it, with the
        // register cache as the instruction left it.
        let after = self.a.len();
        let cache = self.cache;
        for (_, stub) in &mut self.stubs[first_stub..] {
            if let Stub::Interpret { slow } | Stub::FlaggedStore { slow, .. } = stub {
                if slow.resume == PENDING {
                    slow.resume = after;
                    slow.after = cache;
                }
            }
        }
        open
    }

    /// An instruction the translator handles inline.
    fn translated(&mut self, inst: &Instruction, pc: u64, index: u32, next: u64) -> bool {
        use Op::*;
        if sets_or_clears_status(inst) {
            self.status_access(inst);
            return true;
        }
        if float::csr_inline(inst) {
            self.float_csr(inst);
            return true;
        }
        if accesses_data_csr(inst) {
            self.data_csr_access(inst);
            return true;
        }
        if reads_time(inst) {
            self.time_read(inst, index);
            return true;
        }
        match inst.op {
            Lui | Auipc => {
                if inst.rd != 0 {
                    let base = if inst.op == Auipc { pc } else { 0 };
                    self.a
                        .mov_imm(RAX, base.wrapping_add(inst.imm as i64 as u64));
                    self.write_rax(inst.rd);
                }
            }
            Addi => self.alu(inst, Alu::Add, Width::W64, true),
            Xori => self.alu(inst, Alu::Xor, Width::W64, true),
            Ori => self.alu(inst, Alu::Or, Width::W64, true),
            Andi => self.alu(inst, Alu::And, Width::W64, true),
            Addiw => self.alu(inst, Alu::Add, Width::W32, true),
            Add => self.alu(inst, Alu::Add, Width::W64, false),
            Sub => self.alu(inst, Alu::Sub, Width::W64, false),
            Xor => self.alu(inst, Alu::Xor, Width::W64, false),
            Or => self.alu(inst, Alu::Or, Width::W64, false),
            And => self.alu(inst, Alu::And, Width::W64, false),
            Addw => self.alu(inst, Alu::Add, Width::W32, false),
            Subw => self.alu(inst, Alu::Sub, Width::W32, false),
            Slli => self.shift(inst, Shift::Shl, Width::W64, true),
            Srli => self.shift(inst, Shift::Shr, Width::W64, true),
            Srai => self.shift(inst, Shift::Sar, Width::W64, true),
            Slliw => self.shift(inst, Shift::Shl, Width::W32, true),
            Srliw => self.shift(inst, Shift::Shr, Width::W32, true),
            Sraiw => self.shift(inst, Shift::Sar, Width::W32, true),
            Sll => self.shift(inst, Shift::Shl, Width::W64, false),
            Srl => self.shift(inst, Shift::Shr, Width::W64, false),
            Sra => self.shift(inst, Shift::Sar, Width::W64, false),
            Sllw => self.shift(inst, Shift::Shl, Width::W32, false),
            Srlw => self.shift(inst, Shift::Shr, Width::W32, false),
            Sraw => self.shift(inst, Shift::Sar, Width::W32, false),
            Slti => self.compare(inst, Cond::Less, true),
            Sltiu => self.compare(inst, Cond::Below, true),
            Slt => self.compare(inst, Cond::Less, false),
            Sltu => self.compare(inst, Cond::Below, false),
            Mul | Mulh | Mulhsu | Mulhu | Mulw => self.multiply(inst),
            Div | Divu | Rem | Remu | Divw | Divuw | Remw | Remuw => self.divide(inst),
            Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu | Sb | Sh | Sw | Sd => {
                match integer_access(inst.op).expect("an integer load or store") {
                    (true, size, _) => self.store(inst, size),
                    (false, size, signed) => self.load(inst, size, signed),
                }
            }
            LrW => self.load_reserved(inst, 4),
            LrD => self.load_reserved(inst, 8),
            ScW => self.store_conditional(inst, 4),
            ScD => self.store_conditional(inst, 8),
            AmoswapW => self.amo(inst, 4, None),
            AmoaddW => self.amo(inst, 4, Some(Alu::Add)),
            AmoxorW => self.amo(inst, 4, Some(Alu::Xor)),
            AmoandW => self.amo(inst, 4, Some(Alu::And)),
            AmoorW => self.amo(inst, 4, Some(Alu::Or)),
            AmoswapD => self.amo(inst, 8, None),
            AmoaddD => self.amo(inst, 8, Some(Alu::Add)),
            AmoxorD => self.amo(inst, 8, Some(Alu::Xor)),
            AmoandD => self.amo(inst, 8, Some(Alu::And)),
            AmoorD => self.amo(inst, 8, Some(Alu::Or)),
            Beq => self.branch(inst, Cond::Equal, pc, index),
            Bne => self.branch(inst, Cond::NotEqual, pc, index),
            Blt => self.branch(inst, Cond::Less, pc, index),
            Bge => self.branch(inst, Cond::GreaterOrEqual, pc, index),
            Bltu => self.branch(inst, Cond::Below, pc, index),
            Bgeu => self.branch(inst, Cond::AboveOrEqual, pc, index),
            // Plain fences order memory for other harts and devices; with one hart and
            // MMIO handled outside translated code, retiring it is all there is to do.
            Fence => {}
            Jal => {
                if inst.rd != 0 {
                    self.a.mov_imm(RAX, next);
                    self.write_rax(inst.rd);
                }
                // (goto writes the link back with every other cached register.)
                let target = pc.wrapping_add(inst.imm as i64 as u64);
                if is_link(inst.rd) {
                    self.call(next, |e| e.goto(target, index + 1));
                } else {
                    self.goto(target, index + 1);
                }
                return false;
            }
            Jalr => {
                // Target first: rd may be rs1 (unprivileged spec 2.5.1).
                self.address(inst);
                self.a.alu_imm(Alu::And, Width::W64, RAX, -2);
                self.a.mov(Width::W64, RDX, RAX);
                if inst.rd != 0 {
                    self.a.mov_imm(RAX, next);
                    self.write_rax(inst.rd);
                }
                self.write_back(self.cache);
                let go = move |e: &mut Emitter| {
                    e.a.mov(Width::W64, RAX, RDX);
                    e.retire(index + 1);
                    e.jump_through_lookup();
                };
                if is_link(inst.rd) {
                    self.call(next, go);
                } else if inst.rd == 0 && is_link(inst.rs1) {
                    self.a.mov(Width::W64, RAX, RDX);
                    self.retire(index + 1);
                    self.emit_return();
                } else {
                    go(self);
                }
                return false;
            }
            _ if float::inline(inst, self.layout.fused_multiply_add) => self.float(inst),
            _ => unreachable!("translate::translates admits only the ops above"),
        }
        true
    }
}

/// The most call frames translated code keeps on the host stack (16 bytes each).
pub(super) const CALL_FRAMES_MAX: i32 = 32;

/// `inst`, an operation that commutes, with its sources swapped when its second is its
/// destination and its first is not (rd = rs1 op rd is rd = rd op rs1, computed in place),
/// or when its first is x0 (c.mv is add rd, x0, rs2: a move, where x0 first would take a
/// clear and an add).
fn commuted(inst: &Instruction) -> Instruction {
    if inst.rs2 == inst.rd && inst.rs1 != inst.rd || inst.rs1 == 0 {
        Instruction {
            rs1: inst.rs2,
            rs2: inst.rs1,
            ..*inst
        }
    } else {
        *inst
    }
}

/// Whether x[r] is a link register: ra or t0 (unprivileged spec 2.5.1).
fn is_link(r: u8) -> bool {
    r == 1 || r == 5
}

fn is_branch(op: Op) -> bool {
    use Op::*;
    matches!(op, Beq | Bne | Blt | Bge | Bltu | Bgeu)
}

/// An integer load or store: (whether it stores, its size in bytes, whether it
/// sign-extends).
fn integer_access(op: Op) -> Option<(bool, u64, bool)> {
    use Op::*;
    Some(match op {
        Lb => (false, 1, true),
        Lh => (false, 2, true),
        Lw => (false, 4, true),
        Ld => (false, 8, false),
        Lbu => (false, 1, false),
        Lhu => (false, 2, false),
        Lwu => (false, 4, false),
        Sb => (true, 1, false),
        Sh => (true, 2, false),
        Sw => (true, 4, false),
        Sd => (true, 8, false),
        _ => return None,
    })
}

/// Accesses in one group at most (`Emitter::access_group`).
const GROUP_ACCESSES_MAX: usize = 16;

/// Instructions in one group at most, its accesses and the operations between them.
const GROUP_INSTRUCTIONS_MAX: usize = 32;

/// Bytes a group's accesses may span: a function's frame fits, and a wider group would
/// straddle a page end, and take the slow way, more often.
const GROUP_SPAN_BYTES: i32 = 1024;

/// How many instructions from `ops[start]` on form an access group: integer loads (or
/// stores) through the same base register, none of them but the first the target of a
/// branch, all within `GROUP_SPAN_BYTES`, with only integer operations (`between_accesses`)
/// between them; none of them but the last access writes the base register. 1 when
/// `ops[start]` starts none.
fn group_length(ops: &[Instruction], start: usize, targets: &[bool]) -> usize {
    let head = ops[start];
    let Some((stores, size, _)) = integer_access(head.op) else {
        return 1;
    };
    if head.rs1 == 0 || (!stores && head.rd == head.rs1) {
        return 1;
    }
    let (mut lo, mut hi) = (head.imm, head.imm + size as i32 - 1);
    // Instructions up to the last access taken, and accesses taken.
    let (mut length, mut accesses) = (1, 1);
    let mut at = start + 1;
    while let Some(inst) = ops.get(at) {
        if targets[at] || at - start == GROUP_INSTRUCTIONS_MAX {
            break;
        }
        at += 1;
        let Some((also_stores, size, _)) = integer_access(inst.op) else {
            if between_accesses(inst.op) && inst.rd != head.rs1 {
                continue;
            }
            break;
        };
        let (first, last) = (lo.min(inst.imm), hi.max(inst.imm + size as i32 - 1));
        if also_stores != stores
            || inst.rs1 != head.rs1
            || last - first >= GROUP_SPAN_BYTES
            || accesses == GROUP_ACCESSES_MAX
        {
            break;
        }
        (lo, hi) = (first, last);
        (length, accesses) = (at - start, accesses + 1);
        if !stores && inst.rd == inst.rs1 {
            break;
        }
    }
    length
}

/// Whether `op` may lie between the accesses of a group: an integer operation translated
/// inline that neither accesses memory nor jumps (nor leaves the block in any way).
fn between_accesses(op: Op) -> bool {
    use Op::*;
    translates(op)
        && integer_access(op).is_none()
        && !is_branch(op)
        && !matches!(op, Jal | Jalr | Fence | LrW | LrD | ScW | ScD)
        && !is_amo(op)
}

/// Loads, stores and AMOs: translated inline with an interpreter slow path.
fn accesses_memory(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu | Sb | Sh | Sw | Sd | LrW | LrD | ScW | ScD
    ) || is_amo(op)
}

/// Whether the translator emits the CSR instruction `inst` inline (all of them have a slow
/// path: the interpreter runs what the inline checks refuse). Linux's sstatus accesses,
/// hundreds of thousands in a boot: `csrr` (save the flags), `csrrci` of SIE
/// (local_irq_save), `csrrs`/`csrrsi` of SIE (local_irq_restore and enable), `csrs`/`csrc`
/// of SUM (user-access windows); glibc's FP CSR accesses; the trap CSRs' accesses; the
/// reads of `time` (the kernel's clock and the vDSO's `clock_gettime`).
fn csr_inline(inst: &Instruction) -> bool {
    sets_or_clears_status(inst)
        || float::csr_inline(inst)
        || accesses_data_csr(inst)
        || reads_time(inst)
}

/// Whether the interpreter may answer `op` with `Flow::Refetch`, so that its call site
/// needs a way on through the lookup (elsewhere a refetch leaves translated code, which is
/// slower but as correct): fences of the translation or of code, stores, which may write
/// decoded code, and CSR writes that end a block only for translated FP code (sstatus.FS).
fn may_refetch(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        SfenceVma | FenceI | Sb | Sh | Sw | Sd | ScW | ScD | Fsw | Fsd
    ) || is_amo(op)
        || crate::block::is_csr(op)
}

/// The AMOs translated inline (min and max go to the interpreter: rare in Linux).
pub(super) fn is_amo(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        AmoswapW
            | AmoaddW
            | AmoxorW
            | AmoandW
            | AmoorW
            | AmoswapD
            | AmoaddD
            | AmoxorD
            | AmoandD
            | AmoorD
    )
}

/// A block's machine code in two parts: the hot part (`hot_bytes` long: the entries, the
/// body and the way out at its end), which runs on every pass and is placed at
/// `Placement::origin`, and the cold rest (exits, slow paths, stubs), which the translator
/// places in a region of its own, so that the hot parts of the blocks lie densely in the
/// host's instruction cache and TLB.
pub(super) struct Code {
    pub bytes: Vec<u8>,
    pub hot_bytes: usize,
    /// Where every rel32 of a jump or call lies (to move the cold part).
    pub rel32_sites: Vec<usize>,
}

impl Emitter {
    /// Ends the hot part (nothing falls through it: `ud2` makes sure) and emits the cold.
    fn finish(mut self) -> (Code, Vec<Instruction>) {
        self.a.ud2();
        let hot_bytes = self.a.len();
        self.hot_bytes = hot_bytes;
        self.emit_stubs();
        let code = Code {
            bytes: self.a.code,
            hot_bytes,
            rel32_sites: self.a.rel32_sites,
        };
        (code, self.interpreted)
    }
}

/// Machine code for the block `ops` placed as `at` says, and the instructions it hands to
/// the interpreter (to append to the translator's list).
pub(super) fn block(ops: &[Instruction], at: Placement) -> (Code, Vec<Instruction>) {
    settled(ops, &at).finish()
}

/// Register moves on the jumps back of the loops in the final translation of `ops`.
#[cfg(test)]
pub(super) fn back_edge_moves(ops: &[Instruction], at: Placement) -> u32 {
    settled(ops, &at).back_edge_moves
}

/// The final translation of `ops`.
fn settled(ops: &[Instruction], at: &Placement) -> Emitter {
    let mut e = emit_block(ops, at, Vec::new());
    // Loops: translate again with the registers cached at each first jump back as its
    // header's state (all marked dirty, so whatever the body leaves there stays put and
    // every exit writes them back), until the jumps back arrive in those states.
    for _ in 1..LOOP_TRANSLATIONS_MAX {
        let loops: Vec<Loop> = e
            .back_edges
            .iter()
            .enumerate()
            .filter_map(|(header, edge)| {
                let (back, mut state) = (*edge)?;
                for slot in 0..CACHE_SLOTS {
                    state.dirty[slot] = state.guest[slot] != 0;
                }
                Some(Loop {
                    header: header as u32,
                    // A jump back to the block's start may come from anywhere in it.
                    back: if header == 0 {
                        ops.len() as u32 - 1
                    } else {
                        back
                    },
                    state,
                })
            })
            .collect();
        let settled = loops.len() == e.loops.len()
            && loops
                .iter()
                .zip(&e.loops)
                .all(|(new, old)| new.header == old.header && new.state.guest == old.state.guest);
        if loops.is_empty() || settled {
            break;
        }
        e = emit_block(ops, at, loops);
    }
    e
}

/// Room reserved for a block's code per instruction (a little more than the average of
/// hot and cold parts together in a Linux boot), so that its buffer seldom grows.
const CODE_BYTES_PER_INSTRUCTION: usize = 160;

/// Translations of a block with loops, to let the loop headers' register cache states
/// settle (a jump back in another state moves registers on every iteration).
const LOOP_TRANSLATIONS_MAX: usize = 3;

/// A loop inside a block: a jump back from instruction `back` to instruction `header`.
#[derive(Clone, Copy)]
struct Loop {
    header: u32,
    back: u32,
    /// The register cache at the header (chosen from a previous translation).
    state: RegisterCache,
}

/// An emitter for a block of `count` instructions at `pcs` that use registers as `uses`
/// says, placed as `at` says.
fn emitter(at: &Placement, count: u32, pcs: Vec<u64>, uses: Vec<Uses>) -> Emitter {
    Emitter {
        a: Assembler::with_capacity(count as usize * CODE_BYTES_PER_INSTRUCTION),
        origin: at.origin,
        epilogue: at.epilogue,
        lookup: at.lookup,
        flagged_store: at.flagged_store,
        page: at.pc / PAGE_SIZE_BYTES,
        ram_page: at.ram_offset / PAGE_SIZE_BYTES,
        block_pc: at.pc,
        count,
        pcs,
        starts: Vec::with_capacity(count as usize),
        forward: Vec::new(),
        loops: Vec::new(),
        back_edges: vec![None; count as usize],
        back_edge_moves: 0,
        stubs: Vec::new(),
        stub_sites: Vec::new(),
        interpreted: Vec::new(),
        first_interpreted: at.first_interpreted,
        slow_sites: Vec::new(),
        current: None,
        cache: RegisterCache::default(),
        layout: at.layout,
        float_dirty: false,
        lookup_tail: Vec::new(),
        uses,
        index: 0,
        hot_bytes: usize::MAX,
    }
}

impl Emitter {
    /// A block's guarded entry, where jumps from other pages are linked (`GUARD_BYTES`
    /// before its entry): the fetch TLB must map the block's page, under the current
    /// privilege, to the RAM page the block was decoded from, else the jump goes on
    /// through the lookup. So a chain across pages is taken only where the lookup would
    /// find this block; inside a page the source block's own mapping vouches for it.
    fn guarded_entry(&mut self, at: &Placement) {
        let entry = ((at.pc >> 12) as usize & (FETCH_TLB_ENTRIES - 1)) * TLB_ENTRY_BYTES as usize;
        let entry = i32::try_from(entry).expect("fetch TLB below 2 GiB");
        // The fetch TLB's addend: RAM offset less virtual address (`mmu::TlbEntry`).
        let addend = (at.ram_offset & !0xfff).wrapping_sub(at.pc & !0xfff);
        let a = &mut self.a;
        a.load(Width::W64, RDX, frame(offset_of!(Frame, fetch_tlb)));
        a.mov_imm(RCX, at.pc >> 12);
        a.alu_mem(
            Alu::Or,
            Width::W64,
            RCX,
            frame(offset_of!(Frame, fetch_key)),
        );
        a.alu_mem(Alu::Cmp, Width::W64, RCX, at_base(RDX, entry));
        let other_tag = a.jcc(Cond::NotEqual);
        a.mov_imm(RCX, addend);
        a.alu_mem(Alu::Cmp, Width::W64, RCX, at_base(RDX, entry + 8));
        let other_page = a.jcc(Cond::NotEqual);
        let len = a.len();
        assert!(len <= GUARD_BYTES, "guard of {len} bytes");
        a.nops(GUARD_BYTES - len);
        self.add_stub([other_tag, other_page], Stub::Lookup { pc: at.pc });
    }

    /// A block's entry (after its guarded one): its page unchanged since it was decoded
    /// (`GENERATION_CHECK_BYTES`, which jumps from its own page skip), and enough budget
    /// for all its `count` instructions.
    fn entry_checks(&mut self, at: &Placement) {
        self.guarded_entry(at);
        let pc = at.pc;
        let start = self.a.len();
        let page = at.ram_offset / PAGE_SIZE_BYTES;
        self.a
            .load(Width::W64, RAX, frame(offset_of!(Frame, generations)));
        let page_disp = i32::try_from(page * 8).expect("RAM below 1 TiB");
        match i32::try_from(at.generation) {
            Ok(generation) => self.a.cmp_mem_imm(at_base(RAX, page_disp), generation),
            Err(_) => {
                self.a.load(Width::W64, RAX, at_base(RAX, page_disp));
                self.a.mov_imm(RCX, at.generation);
                self.a.alu(Alu::Cmp, Width::W64, RAX, RCX);
            }
        }
        self.jcc_leave(Cond::NotEqual, pc, 0, Exit::Stale, RegisterCache::default());
        let len = self.a.len() - start;
        assert!(
            len <= GENERATION_CHECK_BYTES,
            "generation check of {len} bytes"
        );
        self.a.nops(GENERATION_CHECK_BYTES - len);
        self.a.alu_imm(Alu::Cmp, Width::W64, R13, self.count as i32);
        self.jcc_leave(Cond::Below, pc, 0, Exit::Budget, RegisterCache::default());
    }
}

/// Machine code for the block of one instruction whose four bytes straddle the end of the
/// page at `at.pc`. No translation may hold it: its second half lies in another page, which
/// may be remapped or rewritten while this one stays as it is. So the interpreter fetches
/// it afresh through the MMU each time (a fault there is the instruction's), and a fall
/// through goes on at the next page (chained to its guarded entry, which checks the
/// page's mapping as `Hart::run` would), without leaving translated code.
pub(super) fn straddling(at: Placement) -> Code {
    let mut e = emitter(&at, 1, vec![at.pc], vec![Uses::default()]);
    e.entry_checks(&at);
    e.call_interpreter(super::FETCH_AT_PC, at.pc, 0, Some(at.pc.wrapping_add(4)));
    e.goto(at.pc.wrapping_add(4), 1);
    e.finish().0
}

/// One translation of the block with the register cache states of its `loops`' headers.
fn emit_block(ops: &[Instruction], at: &Placement, loops: Vec<Loop>) -> Emitter {
    let pc = at.pc;
    let count = ops.len() as u32;
    let pcs = ops
        .iter()
        .scan(pc, |at, inst| {
            let this = *at;
            *at = at.wrapping_add(inst.length_bytes as u64);
            Some(this)
        })
        .collect();
    let uses = ops.iter().map(|inst| Uses::of(inst, &at.layout)).collect();
    let mut e = emitter(at, count, pcs, uses);
    e.loops = loops;
    e.entry_checks(at);
    e.float_entry_checks(ops, pc);
    // Instructions that branches inside the block jump to.
    let mut targets = vec![false; ops.len()];
    for (inst, &at) in ops.iter().zip(&e.pcs) {
        if is_branch(inst.op) {
            if let Ok(to) = e
                .pcs
                .binary_search(&at.wrapping_add(inst.imm as i64 as u64))
            {
                targets[to] = true;
            }
        }
    }
    let mut at_pc = pc;
    let mut open = true;
    let mut index = 0;
    while index < ops.len() {
        e.index = index;
        e.join_forward(index as u32);
        if let Some(l) = e.loops.iter().find(|l| l.header == index as u32) {
            // Into the loop's state, on the straight path and the forward branches
            // joined here alike.
            let state = l.state;
            e.transfer(e.cache, state);
            e.cache = state;
        }
        e.starts.push((e.a.len(), e.cache));
        let length = group_length(ops, index, &targets);
        if length > 1 {
            e.access_group(&ops[index..index + length], index);
            open = true;
        } else {
            open = e.instruction(&ops[index], at_pc, index as u32);
        }
        for inst in &ops[index..index + length] {
            at_pc = at_pc.wrapping_add(inst.length_bytes as u64);
        }
        index += length;
    }
    if open {
        e.goto(at_pc, count);
    }
    e
}
