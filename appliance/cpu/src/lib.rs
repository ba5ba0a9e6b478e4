//! One deterministic RV64GC hart: decode, execute, privilege, traps, Sv39 and guest RAM.
//!
//! The hart runs an exact number of instructions per call (`Hart::run`), takes interrupts
//! only at instruction boundaries determined by architectural state, and reaches the outside
//! world only through the `Platform` trait (MMIO and the `time` CSR). Speed comes from a
//! decode cache of straight-line blocks keyed by physical address and direct-mapped soft TLBs
//! per access kind that cover RAM only (the TinyEMU/RVVM shape), and, when the embedder hands
//! in executable memory, from a translator of hot integer code to x86-64 (`translate`).
//!
//! Implementation choices where the specifications leave room (matching QEMU 7.2 TCG):
//! - A and D bits are set by the hart during the page walk (the PTE is written back), not
//!   reported as page faults (privileged spec 4.3.1, "Svadu-like" behaviour).
//! - Misaligned loads and stores are performed; a page-crossing access faults on the second
//!   page with `stval` = that page's first address. Misaligned LR raises load address
//!   misaligned (4), misaligned SC and AMOs raise store/AMO address misaligned (6).
//! - `mtval`/`stval` hold the instruction bits for illegal instructions and 0 for ebreak.
//! - satp keeps a 16-bit ASID; writes with a MODE other than Bare or Sv39 are ignored.
//! - `sfence.vma` with rs1 = x0 and writes to satp drop every cached translation;
//!   `sfence.vma` with an address drops that page's (every address space), or all when the
//!   address lies where superpages were cached from (as QEMU does).
//! - SC succeeds when the reservation address matches and memory still holds the value LR
//!   read (QEMU's compare-and-swap rule).
//! - `run` returns after a retired MMIO access (`StopReason::MmioAccess`) when the platform
//!   says the machine must act before the next instruction, or when the interrupt lines the
//!   platform handed back make an interrupt take place there (`Platform::mmio_effect`); so
//!   the lines change at an exact instruction boundary either way.
//! - Debug triggers (Sdtrig): two address-match triggers of type 2 or 6 with `tcontrol`
//!   (`trigger.rs` lists what they support); while one is armed the hart steps instruction
//!   by instruction.
//! - PMP has 16 entries with granularity 4 bytes (`pmp.rs` lists its WARL choices); all are
//!   off at reset, so whoever starts the hart below M-mode grants memory first, as firmware
//!   does.
//!
//! Determinism: the decode cache, the translator and TLBs are not architectural state and
//! cannot change what the guest observes (stores keep decoded and translated code coherent
//! at once, with or without fence.i; TLBs hold only what the page tables said when filled,
//! as the spec permits).
#![no_std]
#![warn(missing_docs)]
extern crate alloc;

mod block;
mod csr;
mod debug;
mod exec;
mod fp;
pub mod inst;
mod mmu;
mod pmp;
mod ram;
mod translate;
mod trigger;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

pub use csr::numbers as csr_numbers;
pub use debug::{DataAccess, DebugStop, DebugTargets, WatchKind, Watchpoint};
pub use inst::{decode, decode_compressed, encode, Instruction, Op};
pub use translate::{
    ExecutableMemory, PlacedBlock, TranslatorError, TranslatorStats, CODE_BYTES_MAX,
    CODE_BYTES_MIN, HOT_EXECUTIONS_DEFAULT,
};

/// A guest physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhysAddr(pub u64);

/// A number of retired guest instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InstructionCount(pub u64);

/// A RISC-V privilege mode (privileged spec 1.2); the value is the `mstatus.MPP` encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Privilege {
    /// U-mode.
    User = 0,
    /// S-mode.
    Supervisor = 1,
    /// M-mode.
    Machine = 3,
}

impl Privilege {
    fn from_bits(bits: u64) -> Privilege {
        match bits & 3 {
            0 => Privilege::User,
            1 => Privilege::Supervisor,
            _ => Privilege::Machine,
        }
    }
}

/// Everything outside RAM that the hart reaches. Called only from inside `Hart::run`.
pub trait Platform {
    /// A load from a physical address outside RAM; `None` = access fault for the guest.
    /// `now` is the instruction count before the loading instruction retires, so a device
    /// that derives a register from the count (the CLINT's `mtime`) reads exactly.
    fn mmio_load(
        &mut self,
        addr: GuestPhysAddr,
        size_bytes: u8,
        now: InstructionCount,
    ) -> Option<u64>;
    /// A store outside RAM; `false` = access fault for the guest.
    fn mmio_store(
        &mut self,
        addr: GuestPhysAddr,
        size_bytes: u8,
        value: u64,
        now: InstructionCount,
    ) -> bool;
    /// The value of the `time` CSR when the hart has retired `instret` instructions.
    fn time(&mut self, instret: InstructionCount) -> u64;
    /// `time` as a function of the count that holds for the rest of the current `run`, if
    /// it is a `LinearTime`: translated code then reads `time` inline. The default, none,
    /// leaves every read to `time`.
    fn linear_time(&self) -> Option<LinearTime> {
        None
    }
    /// What the MMIO access just made (the last successful `mmio_load` or `mmio_store`)
    /// leaves to do before the next instruction; `after` is the instruction count once the
    /// accessing instruction retires. Asked once per access. The default ends the run after
    /// every access, so the caller of `run` can do whatever it does between runs.
    fn mmio_effect(&mut self, after: InstructionCount) -> MmioEffect {
        let _ = after;
        MmioEffect::EndRun
    }
}

/// `Platform::time` as `offset_ticks + instret / instructions_per_tick` (saturating), the
/// form of a clock that counts instructions (`Platform::linear_time`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearTime {
    /// Ticks at instruction count 0.
    pub offset_ticks: u64,
    /// Not 0.
    pub instructions_per_tick: u64,
}

/// What an MMIO access leaves to do before the next instruction (`Platform::mmio_effect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioEffect {
    /// Nothing: no interrupt line and nothing the caller of `run` looks at changed.
    Unchanged,
    /// Only the interrupt lines may have changed; these are the `set_interrupt_lines` bits
    /// now. The hart takes them at once and ends the run only if that makes an interrupt
    /// pending and enabled, so it is taken before the next instruction as it would be after
    /// a run that ended here.
    Lines(u64),
    /// The caller of `run` must act before the next instruction (device work, output, a
    /// changed timer deadline, power off): the run ends after this instruction.
    EndRun,
}

/// How to build a hart.
#[derive(Clone, Debug)]
pub struct HartConfig {
    /// Where RAM starts in the physical address space (0x8000_0000 on `virt`).
    pub ram_base: GuestPhysAddr,
    /// RAM size; rounded up to a whole number of 4 KiB pages.
    pub ram_size_bytes: u64,
    /// true when the monitor (SBI) is implemented by the host, as for Linux `Image` guests:
    /// an `ecall` from S-mode stops `run` with `StopReason::SupervisorEcall` (pc already
    /// advanced past the ecall, the ecall counted as one retired instruction), and any other
    /// trap that would enter M-mode stops `run` with `StopReason::MonitorTrap{cause, tval, pc}`
    /// instead of jumping to mtvec (the hart state is left as it was before the trap).
    pub host_monitor: bool,
}

/// Why `Hart::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The budget of instructions was used up.
    BudgetExhausted,
    /// `wfi` retired and no enabled interrupt is pending: the caller may skip time forward.
    WaitForInterrupt,
    /// An instruction that accessed MMIO (load or store) retired and the platform's
    /// `mmio_effect` asked for the run to end, or handed back lines that make an interrupt
    /// pending: the caller does its device work and recomputes the lines before the next
    /// instruction.
    MmioAccess,
    /// An `ecall` from S-mode retired while `host_monitor` is set.
    SupervisorEcall,
    /// A trap would have entered M-mode while `host_monitor` is set, or the hart is caught in
    /// a loop of traps that retires nothing (the handler's own fetch faults), which no guest
    /// can leave (`TRAP_LOOP_TRAPS_MAX` traps in a row). `cause` is the `mcause`
    /// value (bit 63 set for interrupts), `pc` the address of the trapping instruction.
    MonitorTrap {
        /// The `mcause` value the trap would have written.
        cause: u64,
        /// The `mtval` value the trap would have written.
        tval: u64,
        /// The `mepc` value the trap would have written.
        pc: u64,
    },
}

/// The result of `Hart::run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// Instructions retired by this call.
    pub executed: InstructionCount,
    /// Why the call returned.
    pub stop: StopReason,
}

/// A physical range that is not (entirely) guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// Start of the requested range.
    pub addr: GuestPhysAddr,
    /// Length of the requested range.
    pub len_bytes: u64,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest physical range {:#x}+{:#x} is outside RAM; use an address inside the RAM window",
            self.addr.0, self.len_bytes
        )
    }
}

impl core::error::Error for OutOfRange {}

/// Why `Hart::restore_state` rejected its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The input is not as long as `write_state` output.
    Length {
        /// Bytes received.
        len_bytes: usize,
    },
    /// The privilege word is not 0, 1 or 3.
    Privilege {
        /// The value found.
        value: u64,
    },
    /// The reservation flag is not 0 or 1.
    Reservation {
        /// The value found.
        flag: u64,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Length { len_bytes } => write!(
                f,
                "hart state of {len_bytes} bytes has the wrong length; send the bytes write_state produced"
            ),
            StateError::Privilege { value } => {
                write!(f, "hart state names privilege {value}; expected 0, 1 or 3")
            }
            StateError::Reservation { flag } => {
                write!(f, "hart state has reservation flag {flag}; expected 0 or 1")
            }
        }
    }
}

impl core::error::Error for StateError {}

/// A synchronous exception: `mcause` code and `mtval` value (privileged spec 3.1.15-16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exception {
    pub cause: u64,
    pub tval: u64,
}

/// Exception codes (privileged spec table 3.6).
pub(crate) mod cause {
    pub const INSTRUCTION_ACCESS_FAULT: u64 = 1;
    pub const ILLEGAL_INSTRUCTION: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const LOAD_ADDRESS_MISALIGNED: u64 = 4;
    pub const LOAD_ACCESS_FAULT: u64 = 5;
    pub const STORE_ADDRESS_MISALIGNED: u64 = 6;
    pub const STORE_ACCESS_FAULT: u64 = 7;
    pub const ECALL_FROM_U: u64 = 8;
    pub const INSTRUCTION_PAGE_FAULT: u64 = 12;
    pub const LOAD_PAGE_FAULT: u64 = 13;
    pub const STORE_PAGE_FAULT: u64 = 15;
}

/// Traps in a row without a retired instruction after which `run` gives up: by then the
/// handler address itself must be faulting (each trap can only reach mtvec or stvec), so
/// the guest would spin forever without retiring anything.
pub const TRAP_LOOP_TRAPS_MAX: u32 = 16;

/// Size of a guest page (Sv39 base page).
pub const PAGE_SIZE_BYTES: u64 = 4096;

/// Result of executing one instruction successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Fall through to pc + length.
    Next,
    /// The instruction set `pc` itself; end the block.
    Jumped,
    /// Fall through, but end the block (state that affects interrupts, translation or the
    /// decode cache may have changed).
    EndBlock,
    /// Fall through, and fetch the next instruction afresh: the address translation or
    /// code in RAM may have changed (sfence.vma, fence.i, a store into decoded code), but
    /// nothing `Hart::run` checks between blocks. Translated code goes on through its
    /// lookup, which sees the new translation and code, without leaving.
    Refetch,
    /// Fall through and stop `run` with this reason.
    Stop(StopReason),
}

/// The load-reservation set by LR (unprivileged spec 8.2). Like QEMU, SC succeeds when the
/// address matches and memory still holds the value LR read.
/// `repr(C)`: translated LR and SC read and write it in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Reservation {
    pub vaddr: u64,
    pub value: u64,
}

impl Reservation {
    /// No reservation: its address is one no LR can reserve (misaligned for both sizes).
    pub const NONE: Reservation = Reservation {
        vaddr: u64::MAX,
        value: 0,
    };

    pub fn get(self) -> Option<Reservation> {
        (self.vaddr != Reservation::NONE.vaddr).then_some(self)
    }
}

/// One RV64GC hart with its guest RAM.
pub struct Hart {
    pub(crate) x: [u64; 32],
    pub(crate) f: [u64; 32],
    pub(crate) pc: u64,
    pub(crate) privilege: Privilege,
    pub(crate) instret: u64,
    pub(crate) csr: csr::CsrFile,
    /// Interrupt lines driven by the machine (MSIP, MTIP, MEIP, SEIP, STIP).
    pub(crate) lines: u64,
    pub(crate) reservation: Reservation,
    /// instret at the last trap, and how many traps in a row happened at that count.
    pub(crate) last_trap_instret: u64,
    pub(crate) traps_without_retire: u32,
    /// Set by an MMIO load; the loading instruction then ends the run (`MmioAccess`).
    pub(crate) mmio_loaded: bool,
    pub(crate) host_monitor: bool,
    pub(crate) ram: ram::Ram,
    pub(crate) ram_base: u64,
    pub(crate) ram_size_bytes: u64,
    pub(crate) mmu: mmu::Tlbs,
    /// One bit per RAM page written since the last `take_dirty_pages`.
    pub(crate) dirty: Vec<u64>,
    pub(crate) blocks: block::BlockCache,
    /// The translator and its code cache, when the embedder turned it on.
    pub(crate) translator: Option<alloc::boxed::Box<translate::Translator>>,
}

impl fmt::Debug for Hart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hart")
            .field("pc", &format_args!("{:#x}", self.pc))
            .field("privilege", &self.privilege)
            .field("instret", &self.instret)
            .finish_non_exhaustive()
    }
}

impl Hart {
    /// Creates a hart in M-mode at pc 0 with zeroed RAM of `config.ram_size_bytes`.
    pub fn new(config: HartConfig) -> Hart {
        let pages = config.ram_size_bytes.div_ceil(PAGE_SIZE_BYTES);
        let ram_size_bytes = pages * PAGE_SIZE_BYTES;
        assert!(
            config.ram_base.0.is_multiple_of(PAGE_SIZE_BYTES),
            "RAM base must be page aligned"
        );
        assert!(
            config.ram_base.0.checked_add(ram_size_bytes).is_some(),
            "RAM window overflows"
        );
        let ram = ram::Ram::zeroed(ram_size_bytes as usize);
        let mut hart = Hart {
            x: [0; 32],
            f: [0; 32],
            pc: 0,
            privilege: Privilege::Machine,
            instret: 0,
            csr: csr::CsrFile::default(),
            lines: 0,
            reservation: Reservation::NONE,
            mmio_loaded: false,
            last_trap_instret: u64::MAX,
            traps_without_retire: 0,
            host_monitor: config.host_monitor,
            mmu: mmu::Tlbs::new(ram.as_ptr() as u64),
            ram,
            ram_base: config.ram_base.0,
            ram_size_bytes,
            dirty: vec![0u64; (pages as usize).div_ceil(64)],
            blocks: block::BlockCache::new(pages as usize),
            translator: None,
        };
        hart.update_tlb_keys();
        hart
    }

    /// Drops every cached translation (SBI remote fences land here). Decoded blocks are
    /// keyed by physical address and kept coherent by stores, so they stay.
    pub fn flush_translations(&mut self) {
        self.mmu.flush_all();
    }

    /// Sets pc, privilege and a0/a1 as a loader would. Other state keeps its value.
    pub fn reset(&mut self, pc: u64, privilege: Privilege, a0: u64, a1: u64) {
        self.pc = pc;
        self.privilege = privilege;
        self.x[10] = a0;
        self.x[11] = a1;
        self.reservation = Reservation::NONE;
        self.traps_without_retire = 0;
        self.update_tlb_keys();
    }

    /// Execute exactly `budget` instructions, or fewer if a `StopReason` other than
    /// `BudgetExhausted` occurs; returns the exact count retired. A trap is not a retired
    /// instruction. An enabled pending interrupt is taken before the next instruction.
    pub fn run(&mut self, platform: &mut impl Platform, budget: u64) -> RunOutcome {
        let start = self.instret;
        let end = start.saturating_add(budget);
        let stop = loop {
            if self.instret >= end {
                break StopReason::BudgetExhausted;
            }
            if let Some(interrupt) = self.pending_interrupt() {
                if let Some(stop) = self.take_trap(interrupt, 0, true) {
                    break stop;
                }
            }
            let stop = if self.translator.is_some() {
                self.run_translated(platform, end)
            } else {
                self.run_block(platform, end)
            };
            if let Some(stop) = stop {
                break stop;
            }
        };
        RunOutcome {
            executed: InstructionCount(self.instret - start),
            stop,
        }
    }

    /// Bits of mip driven by the machine: MSIP(3), MTIP(7), MEIP(11), SEIP(9), STIP(5).
    pub fn set_interrupt_lines(&mut self, mip_bits: u64) {
        self.lines = mip_bits & csr::LINE_BITS;
    }

    /// Instructions retired since creation.
    pub fn instret(&self) -> InstructionCount {
        InstructionCount(self.instret)
    }

    /// The program counter.
    pub fn pc(&self) -> u64 {
        self.pc
    }

    /// The current privilege mode.
    pub fn privilege(&self) -> Privilege {
        self.privilege
    }

    /// Integer register `i` (0..32); x0 reads 0, out-of-range reads 0.
    pub fn x(&self, i: usize) -> u64 {
        self.x.get(i).copied().unwrap_or(0)
    }

    /// Sets integer register `i`; writes to x0 or out of range are ignored.
    pub fn set_x(&mut self, i: usize, v: u64) {
        if i != 0 && i < 32 {
            self.x[i] = v;
        }
    }

    /// Floating-point register `i` as raw bits (NaN-boxed singles included).
    pub fn f(&self, i: usize) -> u64 {
        self.f.get(i).copied().unwrap_or(0)
    }

    /// Sets the program counter (for a monitor emulating an instruction).
    pub fn set_pc(&mut self, pc: u64) {
        self.pc = pc;
        self.traps_without_retire = 0;
    }

    /// Reads a CSR with no privilege check (for the monitor). `None` if it does not exist;
    /// `time` is not readable here (it belongs to the platform).
    pub fn read_csr(&self, csr: u16) -> Option<u64> {
        self.csr_read_raw(csr)
    }

    /// Writes a CSR with no privilege check (for the monitor). `false` if it does not exist
    /// or is read-only.
    pub fn write_csr(&mut self, csr: u16, v: u64) -> bool {
        let ok = self.csr_write_raw(csr, v);
        self.update_tlb_keys();
        self.traps_without_retire = 0;
        ok
    }

    /// Copies guest RAM at `addr` into `buf`.
    pub fn read_phys(&self, addr: GuestPhysAddr, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let offset = self.ram_range(addr, buf.len() as u64)?;
        buf.copy_from_slice(&self.ram[offset..offset + buf.len()]);
        Ok(())
    }

    /// Writes guest RAM at `addr` (loaders, device DMA between runs). Keeps the decode cache
    /// coherent and marks the pages dirty.
    pub fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) -> Result<(), OutOfRange> {
        let offset = self.ram_range(addr, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len();
        let mut at = offset;
        while at < end {
            let page_end = (at / PAGE_SIZE_BYTES as usize + 1) * PAGE_SIZE_BYTES as usize;
            let chunk_end = page_end.min(end);
            self.note_ram_write(at, chunk_end - at);
            at = chunk_end;
        }
        self.ram[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// All of guest RAM.
    pub fn ram(&self) -> &[u8] {
        &self.ram
    }

    /// Page numbers (4 KiB, relative to the RAM base) written since the last call, in
    /// increasing order; clears the set.
    pub fn take_dirty_pages(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (word_index, word) in self.dirty.iter_mut().enumerate() {
            let mut w = *word;
            while w != 0 {
                let bit = w.trailing_zeros();
                out.push((word_index * 64) as u32 + bit);
                w &= w - 1;
            }
            *word = 0;
        }
        // The TLBs keep their translations: dropping entries here would make the next access
        // walk the page table again and perhaps set an A/D bit the guest cleared, so the
        // digest would change the guest. Their store entries are flagged instead, so the
        // next store through each marks its page again.
        self.mmu.store.mark_all_clean();
        out
    }

    /// Appends every architectural register and CSR in a fixed order (little endian u64s)
    /// for the state digest: pc, privilege, instret, x0..x31, f0..f31, the CSR file, the
    /// interrupt lines and the reservation.
    pub fn write_state(&self, out: &mut Vec<u8>) {
        let mut put = |v: u64| out.extend_from_slice(&v.to_le_bytes());
        put(self.pc);
        put(self.privilege as u64);
        put(self.instret);
        for v in self.x {
            put(v);
        }
        for v in self.f {
            put(v);
        }
        self.csr.write_state(&mut put);
        put(self.lines);
        match self.reservation.get() {
            Some(r) => {
                put(1);
                put(r.vaddr);
                put(r.value);
            }
            None => put(0),
        }
    }

    /// Restores registers and CSRs from bytes produced by `write_state` (state transfer to
    /// a backup; RAM travels separately through `write_phys`, before or after). All cached
    /// translations and decoded blocks are dropped, so the receiver starts from the
    /// architectural state and RAM alone; the sender should call `flush_translations` at the
    /// same instruction count so both sides agree exactly (decoded blocks are invisible to
    /// the guest, translations are not). On error nothing changes.
    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        const WORDS_WITHOUT_RESERVATION: usize = 3 + 32 + 32 + csr::CSR_STATE_WORDS + 1 + 1;
        if !state.len().is_multiple_of(8) {
            return Err(StateError::Length {
                len_bytes: state.len(),
            });
        }
        let words: Vec<u64> = state
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let reservation_flag = words.get(WORDS_WITHOUT_RESERVATION - 1).copied();
        let expected = match reservation_flag {
            Some(0) => WORDS_WITHOUT_RESERVATION,
            Some(1) => WORDS_WITHOUT_RESERVATION + 2,
            Some(flag) => return Err(StateError::Reservation { flag }),
            None => {
                return Err(StateError::Length {
                    len_bytes: state.len(),
                })
            }
        };
        if words.len() != expected {
            return Err(StateError::Length {
                len_bytes: state.len(),
            });
        }
        let privilege = match words[1] {
            0 => Privilege::User,
            1 => Privilege::Supervisor,
            3 => Privilege::Machine,
            value => return Err(StateError::Privilege { value }),
        };
        let mut next = words.iter().copied();
        let mut take = || next.next().unwrap_or(0);
        self.pc = take();
        take();
        self.privilege = privilege;
        self.instret = take();
        for i in 0..32 {
            self.x[i] = take();
        }
        self.x[0] = 0;
        for i in 0..32 {
            self.f[i] = take();
        }
        self.csr.read_state(&mut take);
        self.lines = take() & csr::LINE_BITS;
        self.reservation = match take() {
            1 => Reservation {
                vaddr: take(),
                value: take(),
            },
            _ => Reservation::NONE,
        };
        self.mmio_loaded = false;
        self.traps_without_retire = 0;
        self.last_trap_instret = u64::MAX;
        self.mmu.flush_all();
        self.blocks.clear();
        if let Some(translator) = self.translator.as_mut() {
            // Translations are checked against page generations, which `clear` leaves
            // alone while RAM may change freely until code is decoded again.
            translator.flush();
        }
        self.update_tlb_keys();
        Ok(())
    }

    fn ram_range(&self, addr: GuestPhysAddr, len: u64) -> Result<usize, OutOfRange> {
        let err = OutOfRange {
            addr,
            len_bytes: len,
        };
        let offset = addr.0.checked_sub(self.ram_base).ok_or(err)?;
        let end = offset.checked_add(len).ok_or(err)?;
        if end > self.ram_size_bytes {
            return Err(err);
        }
        Ok(offset as usize)
    }

    /// Records a write of `len_bytes` (within one page) at RAM offset `offset`: the page's
    /// dirty bit, and invalidation of decoded blocks it overlaps. Returns true when decoded
    /// code was invalidated.
    #[inline]
    pub(crate) fn note_ram_write(&mut self, offset: usize, len_bytes: usize) -> bool {
        self.mark_page_dirty(offset / PAGE_SIZE_BYTES as usize);
        self.blocks.invalidate_range(offset, len_bytes)
    }

    /// Marks RAM page `page` written, for the next `take_dirty_pages`.
    #[inline(always)]
    pub(crate) fn mark_page_dirty(&mut self, page: usize) {
        self.dirty[page / 64] |= 1 << (page % 64);
    }

    /// The interrupt to take now, if any (privileged spec 3.1.9: priority MEI, MSI, MTI,
    /// SEI, SSI, STI; M-level before S-level).
    pub(crate) fn pending_interrupt(&self) -> Option<u64> {
        let pending = self.mip() & self.csr.mie;
        if pending == 0 {
            return None;
        }
        let mstatus = self.csr.mstatus;
        let m_enabled = self.privilege != Privilege::Machine || mstatus & csr::MSTATUS_MIE != 0;
        let s_enabled = match self.privilege {
            Privilege::User => true,
            Privilege::Supervisor => mstatus & csr::MSTATUS_SIE != 0,
            Privilege::Machine => false,
        };
        let m_set = if m_enabled {
            pending & !self.csr.mideleg
        } else {
            0
        };
        let s_set = if s_enabled {
            pending & self.csr.mideleg
        } else {
            0
        };
        let set = if m_set != 0 { m_set } else { s_set };
        [11u64, 3, 7, 9, 1, 5]
            .into_iter()
            .find(|&bit| set & (1 << bit) != 0)
    }

    /// Enters a trap (privileged spec 3.1.6.1, 3.1.8, 4.1.1). Returns a stop reason when the
    /// trap would enter M-mode and the monitor is on the host.
    pub(crate) fn take_trap(
        &mut self,
        code: u64,
        tval: u64,
        interrupt: bool,
    ) -> Option<StopReason> {
        // A faulting instruction does not retire, so an MMIO read it made does not stop
        // the run by itself.
        self.mmio_loaded = false;
        let cause_value = code | (interrupt as u64) << 63;
        if self.instret == self.last_trap_instret {
            self.traps_without_retire = self.traps_without_retire.saturating_add(1);
            if self.traps_without_retire >= TRAP_LOOP_TRAPS_MAX {
                return Some(StopReason::MonitorTrap {
                    cause: cause_value,
                    tval,
                    pc: self.pc,
                });
            }
        } else {
            self.last_trap_instret = self.instret;
            self.traps_without_retire = 1;
        }
        let delegation = if interrupt {
            self.csr.mideleg
        } else {
            self.csr.medeleg
        };
        let to_supervisor = self.privilege != Privilege::Machine && (delegation >> code) & 1 != 0;
        let mstatus = self.csr.mstatus;
        if to_supervisor {
            self.csr.scause = cause_value;
            self.csr.sepc = self.pc;
            self.csr.stval = tval;
            let sie = (mstatus >> 1) & 1;
            let mut m = mstatus & !(csr::MSTATUS_SPIE | csr::MSTATUS_SIE | csr::MSTATUS_SPP);
            m |= sie << 5;
            if self.privilege == Privilege::Supervisor {
                m |= csr::MSTATUS_SPP;
            }
            self.csr.mstatus = m;
            self.privilege = Privilege::Supervisor;
            self.pc = trap_vector(self.csr.stvec, code, interrupt);
        } else {
            if self.host_monitor {
                return Some(StopReason::MonitorTrap {
                    cause: cause_value,
                    tval,
                    pc: self.pc,
                });
            }
            self.csr.triggers.enter_machine_trap();
            self.csr.mcause = cause_value;
            self.csr.mepc = self.pc;
            self.csr.mtval = tval;
            let mie = (mstatus >> 3) & 1;
            let mut m = mstatus & !(csr::MSTATUS_MPIE | csr::MSTATUS_MIE | csr::MSTATUS_MPP);
            m |= mie << 7;
            m |= (self.privilege as u64) << 11;
            self.csr.mstatus = m;
            self.privilege = Privilege::Machine;
            self.pc = trap_vector(self.csr.mtvec, code, interrupt);
        }
        self.update_tlb_keys();
        None
    }
}

/// The handler address for a trap (privileged spec 3.1.7: vectored mode only for interrupts).
fn trap_vector(tvec: u64, code: u64, interrupt: bool) -> u64 {
    let base = tvec & !3;
    if tvec & 3 == 1 && interrupt {
        base.wrapping_add(4 * code)
    } else {
        base
    }
}

#[cfg(test)]
mod tests;
