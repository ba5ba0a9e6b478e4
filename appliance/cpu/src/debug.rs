//! Debugger access to a hart: reads that change nothing, and a run that stops at breakpoints,
//! watchpoints and trap entries.
//!
//! A debugger of a replay must never change what the guest observes, so everything here
//! either only reads (`debug_translate`, `debug_read`, `debug_access`: no A/D bits, no TLB
//! fills, no dirty pages) or executes through the hart's own block runner (`run_debug`), which
//! is `Hart::run` with shorter blocks and checks between them. Interrupts are taken at the
//! same boundaries either way (the lines are constant inside a run and enabling state changes
//! only at block-ending instructions), so a run with checks retires the same instructions
//! with the same results as `Hart::run` with the same budget, or stops earlier at a hit.
//!
//! Breakpoints and watchpoints live here, outside the guest's view: no instruction is
//! written into guest memory and no trigger CSR (Sdtrig) is used.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use crate::csr::MSTATUS_MPRV;
use crate::inst::{decode, decode_compressed, Op};
use crate::{GuestPhysAddr, Hart, InstructionCount, Platform, Privilege, RunOutcome, StopReason};

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PPN_MASK: u64 = (1 << 44) - 1;
/// Sv39 levels (privileged spec 4.4.1).
const SV39_LEVELS: u32 = 3;
/// Bytes in a base page, as a shift.
const PAGE_SHIFT: u32 = 12;

/// Which accesses a watchpoint reports (GDB's `Z2`, `Z3`, `Z4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchKind {
    /// Stores, AMOs and SCs.
    Write,
    /// Loads, AMOs and LRs.
    Read,
    /// Any of them.
    Access,
}

/// A watched range of guest virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watchpoint {
    /// First watched byte.
    pub vaddr: u64,
    /// Watched bytes (at least 1).
    pub len_bytes: u64,
    /// Which accesses stop the run.
    pub kind: WatchKind,
}

/// What a debugged run stops at, besides its budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugTargets {
    /// Virtual addresses of instructions to stop before.
    pub breakpoints: BTreeSet<u64>,
    /// Ranges whose accesses stop the run before the accessing instruction.
    pub watchpoints: Vec<Watchpoint>,
    /// Stop right after entering a trap (an interrupt or an exception), before the handler's
    /// first instruction: a single step that traps ends at the handler (debug spec,
    /// `dcsr.step`).
    pub stop_at_trap_entry: bool,
}

impl DebugTargets {
    /// True when nothing but the budget stops a run.
    pub fn is_empty(&self) -> bool {
        self.breakpoints.is_empty() && self.watchpoints.is_empty() && !self.stop_at_trap_entry
    }
}

/// Why a debugged run stopped before its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugStop {
    /// pc is at a breakpoint; the instruction there has not executed.
    Breakpoint {
        /// The breakpoint's address (the pc).
        pc: u64,
    },
    /// The instruction at pc would access a watched range; it has not executed. Like an
    /// Sdtrig address match with `timing` 0, before the access (debug spec, `mcontrol`),
    /// which is what GDB expects of RISC-V: it steps the instruction itself, then compares
    /// the values.
    Watchpoint {
        /// The watchpoint that matched.
        watchpoint: Watchpoint,
        /// The first accessed byte inside the watched range.
        vaddr: u64,
    },
    /// A trap was entered; pc is the handler's first instruction, not yet executed.
    TrapEntered,
}

/// The data access an instruction makes, as far as its registers say before it executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAccess {
    /// First byte accessed (virtual).
    pub vaddr: u64,
    /// Bytes accessed.
    pub len_bytes: u64,
    /// The instruction reads memory.
    pub reads: bool,
    /// The instruction writes memory (an SC counts as a write: whether it will succeed is
    /// not known before it executes).
    pub writes: bool,
}

impl Hart {
    /// The physical address a load at `vaddr` would use now, without side effects: the
    /// guest's page tables are walked (Sv39, privileged spec 4.3.2) when the effective data
    /// privilege is below M and satp selects Sv39, and `vaddr` is physical otherwise. A/D bits
    /// are not set and no TLB is filled. Permission bits are not checked (a debugger sees
    /// every valid mapping); `None` when the walk finds no valid leaf.
    pub fn debug_translate(&self, vaddr: u64) -> Option<GuestPhysAddr> {
        let mstatus = self.csr.mstatus;
        let privilege = if self.privilege == Privilege::Machine && mstatus & MSTATUS_MPRV != 0 {
            Privilege::from_bits(mstatus >> 11)
        } else {
            self.privilege
        };
        self.debug_walk(vaddr, privilege)
    }

    /// The physical address an instruction fetch at `vaddr` would use now (fetches ignore
    /// MPRV), without side effects.
    fn debug_translate_fetch(&self, vaddr: u64) -> Option<GuestPhysAddr> {
        self.debug_walk(vaddr, self.privilege)
    }

    fn debug_walk(&self, vaddr: u64, privilege: Privilege) -> Option<GuestPhysAddr> {
        if privilege == Privilege::Machine || !self.csr.satp_sv39() {
            return Some(GuestPhysAddr(vaddr));
        }
        // Bits 63:39 must equal bit 38 (4.4.1).
        if (((vaddr as i64) << 25) >> 25) as u64 != vaddr {
            return None;
        }
        let mut table = (self.csr.satp & PPN_MASK) << PAGE_SHIFT;
        for level in (0..SV39_LEVELS).rev() {
            let vpn = (vaddr >> (PAGE_SHIFT + 9 * level)) & 0x1ff;
            let mut bytes = [0u8; 8];
            self.read_phys(GuestPhysAddr(table.wrapping_add(vpn * 8)), &mut bytes)
                .ok()?;
            let pte = u64::from_le_bytes(bytes);
            if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) || pte >> 54 != 0 {
                return None;
            }
            let ppn = (pte >> 10) & PPN_MASK;
            if pte & (PTE_R | PTE_X) == 0 {
                table = ppn << PAGE_SHIFT;
                continue;
            }
            // A misaligned superpage is a page fault (step 6).
            if level > 0 && ppn & ((1 << (9 * level)) - 1) != 0 {
                return None;
            }
            let mask = (1u64 << (PAGE_SHIFT + 9 * level)) - 1;
            return Some(GuestPhysAddr(
                ((ppn << PAGE_SHIFT) & !mask) | (vaddr & mask),
            ));
        }
        None
    }

    /// Copies guest memory at virtual address `vaddr` into `buf` as `debug_translate` maps
    /// it, page by page, without side effects. Returns how many bytes were copied: fewer than
    /// `buf.len()` when a page is unmapped or outside RAM.
    pub fn debug_read(&self, vaddr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let at = vaddr.wrapping_add(done as u64);
            let in_page = (1usize << PAGE_SHIFT) - (at as usize & ((1 << PAGE_SHIFT) - 1));
            let chunk = in_page.min(buf.len() - done);
            let Some(paddr) = self.debug_translate(at) else {
                break;
            };
            if self.read_phys(paddr, &mut buf[done..done + chunk]).is_err() {
                break;
            }
            done += chunk;
        }
        done
    }

    /// The memory access the instruction at pc would make if it executed now (`None` for an
    /// instruction that accesses no data, or a pc that cannot be fetched). Reads only.
    pub fn debug_access(&self) -> Option<DataAccess> {
        let fetch = |vaddr: u64| -> Option<u16> {
            let mut bytes = [0u8; 2];
            self.read_phys(self.debug_translate_fetch(vaddr)?, &mut bytes)
                .ok()?;
            Some(u16::from_le_bytes(bytes))
        };
        let low = fetch(self.pc)?;
        let inst = if low & 3 != 3 {
            decode_compressed(low)
        } else {
            decode(low as u32 | (fetch(self.pc.wrapping_add(2))? as u32) << 16)
        };
        let base = self.x[inst.rs1 as usize & 31];
        let offset = base.wrapping_add(inst.imm as i64 as u64);
        use Op::*;
        let (vaddr, len_bytes, reads, writes) = match inst.op {
            Lb | Lbu => (offset, 1, true, false),
            Lh | Lhu => (offset, 2, true, false),
            Lw | Lwu | Flw => (offset, 4, true, false),
            Ld | Fld => (offset, 8, true, false),
            Sb => (offset, 1, false, true),
            Sh => (offset, 2, false, true),
            Sw | Fsw => (offset, 4, false, true),
            Sd | Fsd => (offset, 8, false, true),
            LrW => (base, 4, true, false),
            LrD => (base, 8, true, false),
            ScW => (base, 4, false, true),
            ScD => (base, 8, false, true),
            AmoswapW | AmoaddW | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW | AmominuW
            | AmomaxuW => (base, 4, true, true),
            AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD | AmominD | AmomaxD | AmominuD
            | AmomaxuD => (base, 8, true, true),
            _ => return None,
        };
        Some(DataAccess {
            vaddr,
            len_bytes,
            reads,
            writes,
        })
    }

    /// `Hart::run` that also stops at `targets`: before an instruction at a breakpoint or one
    /// that would access a watched range, and after a trap entry when asked. The
    /// instructions it retires, and their effects, are those `run` would retire with the
    /// same budget; it only stops earlier (the outcome's stop is then `BudgetExhausted`).
    ///
    /// Its loop is `Hart::run`'s (budget, pending interrupt, one block) with the checks in
    /// between: whatever `run` does between blocks, this must do too.
    pub fn run_debug(
        &mut self,
        platform: &mut impl Platform,
        budget: u64,
        targets: &DebugTargets,
    ) -> (RunOutcome, Option<DebugStop>) {
        if targets.is_empty() {
            return (self.run(platform, budget), None);
        }
        let start = self.instret;
        let end = start.saturating_add(budget);
        let mut hit = None;
        let stop = loop {
            if self.instret >= end {
                break StopReason::BudgetExhausted;
            }
            if let Some(interrupt) = self.pending_interrupt() {
                if let Some(stop) = self.take_trap(interrupt, 0, true) {
                    break stop;
                }
                if targets.stop_at_trap_entry {
                    hit = Some(DebugStop::TrapEntered);
                    break StopReason::BudgetExhausted;
                }
            }
            if targets.breakpoints.contains(&self.pc) {
                hit = Some(DebugStop::Breakpoint { pc: self.pc });
                break StopReason::BudgetExhausted;
            }
            let watching = !targets.watchpoints.is_empty();
            if let Some(access) = watching.then(|| self.debug_access()).flatten() {
                if let Some((watchpoint, vaddr)) = watch_hit(&targets.watchpoints, &access) {
                    hit = Some(DebugStop::Watchpoint { watchpoint, vaddr });
                    break StopReason::BudgetExhausted;
                }
            }
            // One instruction at a time where a check must come before each one: watched
            // accesses, trap entries, and a breakpoint ahead in this page (a block never
            // leaves its page and runs its instructions in address order). Elsewhere whole
            // blocks.
            let page_end = self.pc | ((1 << PAGE_SHIFT) - 1);
            let breakpoint_ahead = self.pc < page_end
                && targets
                    .breakpoints
                    .range(self.pc + 1..=page_end)
                    .next()
                    .is_some();
            let single = watching || targets.stop_at_trap_entry || breakpoint_ahead;
            let before = self.instret;
            let block_end = if single { end.min(before + 1) } else { end };
            let stop = self.run_block(platform, block_end);
            let retired = self.instret > before;
            if let Some(stop) = stop {
                break stop;
            }
            if single && !retired && targets.stop_at_trap_entry {
                // The instruction trapped: pc is the handler's.
                hit = Some(DebugStop::TrapEntered);
                break StopReason::BudgetExhausted;
            }
        };
        let outcome = RunOutcome {
            executed: InstructionCount(self.instret - start),
            stop,
        };
        (outcome, hit)
    }
}

/// The first watchpoint `access` matches, and the first matched byte.
fn watch_hit(watchpoints: &[Watchpoint], access: &DataAccess) -> Option<(Watchpoint, u64)> {
    let writes = access.writes;
    let access_end = access.vaddr.saturating_add(access.len_bytes);
    watchpoints.iter().find_map(|watchpoint| {
        let kind_matches = match watchpoint.kind {
            WatchKind::Write => writes,
            WatchKind::Read => access.reads,
            WatchKind::Access => writes || access.reads,
        };
        let watch_end = watchpoint.vaddr.saturating_add(watchpoint.len_bytes.max(1));
        let overlaps = access.vaddr < watch_end && watchpoint.vaddr < access_end;
        (kind_matches && overlaps).then(|| (*watchpoint, access.vaddr.max(watchpoint.vaddr)))
    })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::csr::MSTATUS_SUM;
    use crate::tests::{
        assemble, hart, ins, read_u64, sv39_hart, write_u64, Bus, Rng, RAM_BASE, ROOT,
    };
    use crate::{csr_numbers, mmu::Access};

    const VA: u64 = 0x4000_3000;
    const PA: u64 = RAM_BASE + 0x9000;
    const PTE_A: u64 = 1 << 6;
    const PTE_D: u64 = 1 << 7;
    const PTE_U: u64 = 1 << 4;

    /// A supervisor hart with `program` at the RAM base (identity-mapped by a gigapage) and
    /// VA mapped to PA with `flags`.
    fn supervisor_with_page(flags: u64, program: &[crate::Instruction]) -> Hart {
        let mut h = sv39_hart(VA, PA, flags);
        h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(program))
            .unwrap();
        h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
        h
    }

    #[test]
    fn a_debug_read_through_the_page_tables_sets_no_accessed_bit_and_dirties_no_page() {
        let mut h = supervisor_with_page(PTE_V | PTE_R | PTE_W, &[]);
        write_u64(&mut h, PA + 8, 0x1122_3344_5566_7788);
        h.take_dirty_pages();
        let leaf = ROOT + 0x2000 + ((VA >> 12) & 0x1ff) * 8;
        let mut buf = [0u8; 8];
        assert_eq!(h.debug_read(VA + 8, &mut buf), 8);
        assert_eq!(u64::from_le_bytes(buf), 0x1122_3344_5566_7788);
        assert_eq!(read_u64(&h, leaf) & (PTE_A | PTE_D), 0);
        assert_eq!(h.take_dirty_pages(), std::vec::Vec::<u32>::new());
    }

    #[test]
    fn a_debug_read_stops_at_the_first_unmapped_page() {
        let h = supervisor_with_page(PTE_V | PTE_R, &[]);
        let mut buf = [0u8; 32];
        assert_eq!(h.debug_read(VA + 0x1000 - 16, &mut buf), 16);
        assert_eq!(h.debug_read(VA - 16, &mut buf), 0);
    }

    #[test]
    fn a_debug_read_ignores_permissions_a_guest_load_would_check() {
        // A user page is readable from S-mode without SUM, and an execute-only page too.
        let h = supervisor_with_page(PTE_V | PTE_X | PTE_U, &[]);
        assert_eq!(h.debug_translate(VA + 5), Some(GuestPhysAddr(PA + 5)));
    }

    #[test]
    fn a_debug_read_in_machine_mode_is_physical() {
        let mut h = supervisor_with_page(PTE_V | PTE_R, &[]);
        h.reset(RAM_BASE, Privilege::Machine, 0, 0);
        assert_eq!(h.debug_translate(PA), Some(GuestPhysAddr(PA)));
        assert_eq!(h.debug_translate(VA), Some(GuestPhysAddr(VA)));
    }

    /// A random Sv39 table entry: invalid, a pointer, reserved bits, or a leaf in or out of
    /// RAM, aligned or not.
    fn random_pte(rng: &mut Rng, next_table: Option<u64>, level: u32) -> u64 {
        let flags = rng.next() & 0xff | PTE_V;
        match rng.below(8) {
            0 => 0,
            1..=3 if next_table.is_some() => (next_table.unwrap() >> 12) << 10 | PTE_V,
            4 => flags | 1 << 60,
            _ => {
                let page = if rng.below(12) == 0 {
                    0x2000_0000
                } else if level > 0 {
                    RAM_BASE + 0x1000 * rng.below(2) * rng.below(256)
                } else {
                    RAM_BASE + 0x80000 + 0x1000 * rng.below(0x80)
                };
                (page >> 12) << 10 | flags
            }
        }
    }

    #[test]
    fn debug_translation_agrees_with_a_supervisor_load_that_may_read_everything() {
        // With SUM and MXR an S-mode load may read every leaf (all leaves are R or X), so the
        // permission-blind debug walk must give the same answer as the real one, and change
        // nothing where the real one sets A bits.
        let mut rng = Rng(0x5eed_0d06);
        let (mut mapped, mut unmapped) = (0, 0);
        for _ in 0..40 {
            let mut h = hart(true);
            for e in 0..4u64 {
                let l1 = ROOT + 0x1000 * (1 + e);
                write_u64(&mut h, ROOT + e * 8, random_pte(&mut rng, Some(l1), 2));
                for f in 0..4u64 {
                    let l0 = ROOT + 0x1000 * (5 + (e * 4 + f) % 8);
                    write_u64(&mut h, l1 + f * 8, random_pte(&mut rng, Some(l0), 1));
                    for g in 0..4u64 {
                        write_u64(&mut h, l0 + g * 8, random_pte(&mut rng, None, 0));
                    }
                }
            }
            h.write_csr(csr_numbers::SATP, 8 << 60 | ROOT >> 12);
            let sum_mxr = MSTATUS_SUM | 1 << 19;
            let mstatus = h.read_csr(csr_numbers::MSTATUS).unwrap();
            h.write_csr(csr_numbers::MSTATUS, mstatus | sum_mxr);
            h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
            for _ in 0..64 {
                let va = (rng.below(4) << 30 | rng.below(4) << 21 | rng.below(4) << 12)
                    + rng.below(0x1000);
                let before: std::vec::Vec<u8> = h.ram().to_vec();
                let debug = h.debug_translate(va).map(|pa| pa.0);
                assert_eq!(h.ram(), &before[..], "a debug walk writes nothing");
                let real = h.translate(va, Access::Load).ok();
                assert_eq!(debug, real, "va {va:#x}");
                if debug.is_some() {
                    mapped += 1;
                } else {
                    unmapped += 1;
                }
            }
        }
        assert!(
            mapped > 200 && unmapped > 200,
            "{mapped} mapped, {unmapped} not"
        );
    }

    #[test]
    fn debug_access_names_the_address_size_and_direction_of_the_next_instruction() {
        let mut h = supervisor_with_page(
            PTE_V | PTE_R | PTE_W,
            &[ins(Op::Sd, 0, 13, 12, 16), ins(Op::AmoaddW, 5, 13, 12, 0)],
        );
        h.set_x(13, VA);
        assert_eq!(
            h.debug_access(),
            Some(DataAccess {
                vaddr: VA + 16,
                len_bytes: 8,
                reads: false,
                writes: true,
            })
        );
        h.set_pc(RAM_BASE + 4);
        assert_eq!(
            h.debug_access(),
            Some(DataAccess {
                vaddr: VA,
                len_bytes: 4,
                reads: true,
                writes: true,
            })
        );
    }

    /// A loop in M-mode: x5 counts up, a store to RAM_BASE + 0x800 + x5 * 8 each turn.
    fn counting_loop() -> (Hart, Bus) {
        let program = [
            ins(Op::Addi, 5, 5, 0, 1),  // 0x00
            ins(Op::Slli, 6, 5, 0, 3),  // 0x04
            ins(Op::Add, 6, 6, 7, 0),   // 0x08
            ins(Op::Sd, 0, 6, 5, 0),    // 0x0c
            ins(Op::Jal, 0, 0, 0, -16), // 0x10
        ];
        let mut h = hart(true);
        h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(&program))
            .unwrap();
        h.reset(RAM_BASE, Privilege::Machine, 0, 0);
        h.set_x(7, RAM_BASE + 0x800);
        (h, Bus::default())
    }

    #[test]
    fn a_breakpoint_stops_before_its_instruction_and_budget_splits_change_nothing() {
        let (mut h, mut bus) = counting_loop();
        let mut targets = DebugTargets::default();
        targets.breakpoints.insert(RAM_BASE + 0x0c);
        let (outcome, hit) = h.run_debug(&mut bus, 1000, &targets);
        assert_eq!(
            hit,
            Some(DebugStop::Breakpoint {
                pc: RAM_BASE + 0x0c
            })
        );
        assert_eq!(outcome.executed.0, 3);
        assert_eq!(h.pc(), RAM_BASE + 0x0c);
        // The same run without the breakpoint, as one budget, ends in the same state.
        let (mut plain, mut plain_bus) = counting_loop();
        plain.run(&mut plain_bus, 3);
        let mut a = std::vec::Vec::new();
        let mut b = std::vec::Vec::new();
        h.write_state(&mut a);
        plain.write_state(&mut b);
        assert_eq!(a, b);
        // A breakpoint at the current pc stops at once; without it the run goes on to the
        // next turn's breakpoint, five instructions later.
        let (outcome, hit) = h.run_debug(&mut bus, 1000, &targets);
        assert_eq!(
            (outcome.executed.0, hit),
            (
                0,
                Some(DebugStop::Breakpoint {
                    pc: RAM_BASE + 0x0c
                })
            )
        );
        h.run(&mut bus, 1);
        let (outcome, _) = h.run_debug(&mut bus, 1000, &targets);
        assert_eq!(outcome.executed.0, 4);
        assert_eq!(h.x(5), 2);
    }

    #[test]
    fn a_write_watchpoint_stops_before_the_store_into_its_range() {
        let (mut h, mut bus) = counting_loop();
        let watched = RAM_BASE + 0x800 + 3 * 8 + 4;
        let targets = DebugTargets {
            watchpoints: std::vec![Watchpoint {
                vaddr: watched,
                len_bytes: 4,
                kind: WatchKind::Write,
            }],
            ..DebugTargets::default()
        };
        let (outcome, hit) = h.run_debug(&mut bus, 1000, &targets);
        assert_eq!(
            hit,
            Some(DebugStop::Watchpoint {
                watchpoint: targets.watchpoints[0],
                vaddr: watched
            })
        );
        // Turns 1 and 2 (5 instructions each), then 3 instructions of turn 3, up to its `sd`.
        assert_eq!(outcome.executed.0, 13);
        assert_eq!(h.pc(), RAM_BASE + 0x0c);
        assert_eq!(read_u64(&h, RAM_BASE + 0x800 + 24), 0, "not yet stored");
        // The watchpoint fires again until the store runs without it.
        let (outcome, _) = h.run_debug(&mut bus, 1000, &targets);
        assert_eq!(outcome.executed.0, 0);
        h.run(&mut bus, 1);
        assert_eq!(read_u64(&h, RAM_BASE + 0x800 + 24), 3);
    }

    #[test]
    fn a_read_watchpoint_ignores_stores_and_an_access_watchpoint_sees_them() {
        let read = DebugTargets {
            watchpoints: std::vec![Watchpoint {
                vaddr: RAM_BASE + 0x808,
                len_bytes: 8,
                kind: WatchKind::Read,
            }],
            ..DebugTargets::default()
        };
        let (mut h, mut bus) = counting_loop();
        let (outcome, hit) = h.run_debug(&mut bus, 100, &read);
        assert_eq!((outcome.executed.0, hit), (100, None));
        let mut access = read.clone();
        access.watchpoints[0].kind = WatchKind::Access;
        let (mut h, mut bus) = counting_loop();
        let (outcome, hit) = h.run_debug(&mut bus, 100, &access);
        assert_eq!(outcome.executed.0, 3);
        assert!(
            matches!(hit, Some(DebugStop::Watchpoint { vaddr, .. }) if vaddr == RAM_BASE + 0x808)
        );
    }

    #[test]
    fn a_step_that_faults_stops_at_the_handler_without_running_it() {
        // M-mode load from an address outside RAM and MMIO: access fault to mtvec.
        let program = [ins(Op::Ld, 10, 0, 0, 0x100), ins(Op::Addi, 5, 0, 0, 1)];
        let mut h = hart(false);
        h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(&program))
            .unwrap();
        h.reset(RAM_BASE, Privilege::Machine, 0, 0);
        h.write_csr(csr_numbers::MTVEC, RAM_BASE + 4);
        let step = DebugTargets {
            stop_at_trap_entry: true,
            ..DebugTargets::default()
        };
        let (outcome, hit) = h.run_debug(&mut Bus::default(), 1, &step);
        assert_eq!((outcome.executed.0, hit), (0, Some(DebugStop::TrapEntered)));
        assert_eq!(h.pc(), RAM_BASE + 4);
        assert_eq!(h.x(5), 0, "the handler's first instruction has not run");
        let (outcome, hit) = h.run_debug(&mut Bus::default(), 1, &step);
        assert_eq!((outcome.executed.0, hit), (1, None));
        assert_eq!(h.x(5), 1);
    }

    /// An M-mode loop that stores, takes an `ecall` every turn, and from its 20th turn
    /// enables the (already raised) timer interrupt, whose handler disables it again.
    fn trapping_loop() -> (Hart, Bus) {
        use csr_numbers::{MCAUSE, MEPC, MIE, MSTATUS, MTVEC};
        let csr = |op, rd, rs1, number: u16| ins(op, rd, rs1, 0, number as i32);
        let main = [
            csr(Op::Csrrs, 0, 10, MSTATUS), // 0x00: MIE
            ins(Op::Addi, 5, 5, 0, 1),      // 0x04: loop
            ins(Op::Sd, 0, 8, 5, 0),        // 0x08
            ins(Op::Ecall, 0, 0, 0, 0),     // 0x0c
            ins(Op::Addi, 9, 5, 0, -20),    // 0x10
            ins(Op::Bne, 0, 9, 0, 12),      // 0x14
            csr(Op::Csrrs, 0, 11, MIE),     // 0x18: MTIE
            ins(Op::Addi, 0, 0, 0, 0),      // 0x1c
            ins(Op::Jal, 0, 0, 0, -28),     // 0x20
        ];
        let handler = [
            csr(Op::Csrrs, 12, 0, MCAUSE), // 0x40
            ins(Op::Blt, 0, 12, 0, 24),    // 0x44: interrupt
            csr(Op::Csrrs, 13, 0, MEPC),   // 0x48
            ins(Op::Addi, 13, 13, 0, 4),   // 0x4c
            csr(Op::Csrrw, 0, 13, MEPC),   // 0x50
            ins(Op::Addi, 6, 6, 0, 1),     // 0x54
            ins(Op::Mret, 0, 0, 0, 0),     // 0x58
            csr(Op::Csrrc, 0, 11, MIE),    // 0x5c
            ins(Op::Addi, 7, 7, 0, 1),     // 0x60
            ins(Op::Mret, 0, 0, 0, 0),     // 0x64
        ];
        let mut h = hart(false);
        h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(&main))
            .unwrap();
        h.write_phys(GuestPhysAddr(RAM_BASE + 0x40), &assemble(&handler))
            .unwrap();
        h.reset(RAM_BASE, Privilege::Machine, 0, 0);
        h.write_csr(MTVEC, RAM_BASE + 0x40);
        h.set_x(8, RAM_BASE + 0x800);
        h.set_x(10, crate::csr::MSTATUS_MIE);
        h.set_x(11, 1 << 7);
        h.set_interrupt_lines(1 << 7);
        (h, Bus::default())
    }

    /// Runs `budget` instructions under `targets`, resuming after every hit by one
    /// instruction or trap entry, as a debugger does; returns the hits.
    fn run_through_hits(h: &mut Hart, bus: &mut Bus, budget: u64, targets: &DebugTargets) -> usize {
        let step_off = DebugTargets {
            stop_at_trap_entry: true,
            ..DebugTargets::default()
        };
        let end = h.instret().0 + budget;
        let mut hits = 0;
        while h.instret().0 < end {
            let (_, hit) = h.run_debug(bus, end - h.instret().0, targets);
            if hit.is_some() {
                hits += 1;
                h.run_debug(bus, 1, &step_off);
            }
        }
        hits
    }

    #[test]
    fn stopping_at_every_instruction_and_every_store_leaves_traps_and_interrupts_where_run_has_them(
    ) {
        let (mut plain, mut bus) = trapping_loop();
        plain.run(&mut bus, 400);
        let mut expected = std::vec::Vec::new();
        plain.write_state(&mut expected);
        assert_eq!(
            (plain.x(5), plain.x(6), plain.x(7)),
            (33, 33, 1),
            "33 turns, an ecall in each, one interrupt"
        );

        let every_instruction = DebugTargets {
            breakpoints: (0..0x68)
                .step_by(4)
                .map(|offset| RAM_BASE + offset)
                .collect(),
            ..DebugTargets::default()
        };
        let every_store = DebugTargets {
            watchpoints: std::vec![Watchpoint {
                vaddr: RAM_BASE + 0x800,
                len_bytes: 8,
                kind: WatchKind::Write,
            }],
            ..DebugTargets::default()
        };
        // A hit before each of the 400 retired instructions and before each `ecall`, which
        // traps instead of retiring; a hit before each turn's store.
        let turns = plain.x(5);
        for (targets, expected_hits) in [
            (every_instruction, 400 + turns as usize),
            (every_store, turns as usize),
        ] {
            let (mut h, mut bus) = trapping_loop();
            let hits = run_through_hits(&mut h, &mut bus, 400, &targets);
            assert_eq!(hits, expected_hits);
            let mut state = std::vec::Vec::new();
            h.write_state(&mut state);
            assert_eq!(state, expected);
            assert_eq!(h.ram(), plain.ram());
        }
    }
}
