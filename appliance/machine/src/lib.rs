//! The machine around the hart: bus, devices, SBI monitor, device tree, loaders and digest.
//!
//! A `virt`-like RISC-V machine (same addresses as QEMU's `virt`, so programs built for it run
//! unchanged) with one exact rule: everything the guest can observe is a function of its
//! starting images and of the `Input`s passed to `Machine::inject`, the one nondeterminism
//! port. `Machine::run(budget)` executes exactly `budget` instructions or stops earlier at a
//! guest event, so a caller that injects the same inputs at the same instruction counts gets
//! the same machine, whatever budgets it runs with.
#![no_std]
extern crate alloc;

pub mod clock;
pub mod devices;
pub mod digest;
pub mod fdt;
pub mod loader;
pub mod program;
mod sbi;
mod snapshot;
pub mod state;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use sha2::Digest as _;

pub use understudy_cpu::{
    DebugStop, DebugTargets, ExecutableMemory, GuestPhysAddr, InstructionCount, TranslatorError,
    TranslatorStats, WatchKind, Watchpoint, CODE_BYTES_MIN, HOT_EXECUTIONS_DEFAULT,
};
use understudy_cpu::{Hart, HartConfig, LinearTime, MmioEffect, Platform, Privilege, StopReason};

use clock::{Clock, TIMEBASE_HZ};
use devices::clint::{Clint, CLINT_BASE, CLINT_SIZE};
use devices::finisher::{self, FinisherRequest, FINISHER_BASE, FINISHER_SIZE};
use devices::plic::{Plic, CONTEXT_MACHINE, CONTEXT_SUPERVISOR, PLIC_BASE, PLIC_SIZE};
use devices::rtc::{GoldfishRtc, RTC_BASE, RTC_IRQ, RTC_SIZE};
use devices::uart::{Uart, UART_BASE, UART_IRQ, UART_SIZE};
use devices::virtio::{
    Block, BlockBackend, Net, Rng, RxError, RxOutcome, Slot, VirtioBus, VirtioMmio,
};
use digest::Digest;
use fdt::FdtWriter;
use loader::{GuestImage, ImageError};
use snapshot::DirtyPages;
pub use snapshot::{RamPageError, SAVED_STATE_MAGIC, SAVED_STATE_VERSION};
pub use state::RestoreError;
use state::StateWriter;

pub const RAM_BASE: u64 = 0x8000_0000;
pub const PAGE_BYTES: u64 = 4096;
/// The device tree goes at the top of RAM, aligned as QEMU aligns it.
const FDT_ALIGN_BYTES: u64 = 2 * 1024 * 1024;
/// QEMU `virt` puts the initrd at half of RAM, but no higher than 128 MiB into it.
const INITRD_OFFSET_MAX_BYTES: u64 = 128 * 1024 * 1024;
pub const MEMORY_MIN_BYTES: u64 = 4 * 1024 * 1024;
pub const MEMORY_MAX_BYTES: u64 = 16 * 1024 * 1024 * 1024;

const MIP_SSIP: u64 = 1 << 1;
const MIP_MSIP: u64 = 1 << 3;
const MIP_STIP: u64 = 1 << 5;
const MIP_MTIP: u64 = 1 << 7;
const MIP_SEIP: u64 = 1 << 9;
const MIP_MEIP: u64 = 1 << 11;
const CSR_MEDELEG: u16 = 0x302;
const CSR_MIDELEG: u16 = 0x303;
const CSR_MCOUNTEREN: u16 = 0x306;
const CSR_SCOUNTEREN: u16 = 0x106;
const CSR_PMPCFG0: u16 = 0x3a0;
const CSR_PMPADDR0: u16 = 0x3b0;
/// PMP entry 0 as OpenSBI leaves its last one for the kernel: NAPOT over every physical
/// address (`pmpaddr` all ones: 2^57 bytes from 0) with R, W and X, not locked (privileged
/// spec 3.7.1). Without an active entry every S-mode access would fail.
const PMPADDR_ALL_MEMORY: u64 = (1 << 54) - 1;
const PMPCFG_NAPOT_RWX: u64 = 3 << 3 | 0b111;
/// What OpenSBI delegates to S-mode: every exception except ecalls from S and M (they are
/// the monitor's), so Linux handles its own faults (privileged spec 3.1.8).
const MEDELEG_FOR_LINUX: u64 = 0xb1ff;
const MIDELEG_FOR_LINUX: u64 = MIP_SSIP | MIP_STIP | MIP_SEIP;

/// How the machine is built. The same configuration and images give the same machine.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub memory_bytes: u64,
    /// Guest time advances one timebase tick (100 ns) per this many instructions, plus any
    /// `Input::AdvanceTime`. The default, 200, is a nominal 2 GIPS, at or above what
    /// translated code retires: guest time can only move forward, so a guest that runs
    /// faster than the nominal rate pulls its clock ahead of the wall clock and every idle
    /// wait then lasts until the wall clock catches up (at 10, a nominal 100 MIPS, the
    /// minimal guest's boot took 10.9 s of wall time for 1.4 s of CPU; at 100 the Debian
    /// guest, booting at 1.6 GIPS, was ready after 5.2 s for 3.3 s of CPU, at 200 after
    /// 3.3 s). A guest slower than the rate only lags, which the live drivers correct with
    /// `Input::AdvanceTime` every 10 ms of lag.
    pub instructions_per_tick: u64,
    /// The kernel command line (`/chosen/bootargs`).
    pub bootargs: String,
    /// A virtio network device with this MAC address (virtio-mmio slot 1).
    pub net_mac: Option<[u8; 6]>,
    /// A virtio entropy device (slot 2), fed by `Input::Entropy`.
    pub entropy: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            memory_bytes: 128 * 1024 * 1024,
            instructions_per_tick: 200,
            bootargs: String::new(),
            net_mac: None,
            entropy: false,
        }
    }
}

/// A nondeterministic input: the only way the outside world reaches the guest.
///
/// Serialised into record logs and the replication stream: appending a variant is a
/// compatible change for readers that know it; never reorder or remove variants.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// Guest time jumps forward (an idle guest skipping to its next timer, or live time
    /// catching up with the wall clock).
    AdvanceTime { ticks: u64 },
    /// A byte arrives at the console UART.
    ConsoleByte(u8),
    /// An Ethernet frame arrives at the virtio network device.
    Frame(Vec<u8>),
    /// Entropy for the virtio entropy device.
    Entropy(Vec<u8>),
    /// The wall time at guest tick 0, in ns since the Unix epoch (the RTC's base).
    WallClockBase { ns: u64 },
}

/// Why `Machine::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    BudgetExhausted,
    /// The guest waits for an interrupt and none can arrive until guest time reaches
    /// `wake_at_ticks` (`None`: only an input can wake it).
    Idle {
        wake_at_ticks: Option<u64>,
    },
    /// The console output buffer is full: take it, then run again.
    ConsoleOutputFull,
    /// The network outbox is full: take the frames, then run again.
    NetOutputFull,
    /// The guest powered off or passed (status 0) or failed with a code.
    PowerOff {
        code: u16,
    },
    Reset,
    /// The guest trapped into a monitor that does not exist (an S-mode guest took a trap
    /// that was not delegated to it): the guest is dead.
    GuestCrashed {
        cause: u64,
        tval: u64,
        pc: u64,
    },
}

/// Why a machine could not be built. The configuration or the images are to blame.
#[derive(Debug, PartialEq, Eq)]
pub enum BootError {
    Image(ImageError),
    MemorySize {
        bytes: u64,
    },
    /// Guest time cannot advance by one tick per zero instructions.
    InstructionsPerTick {
        value: u64,
    },
    DoesNotFit {
        what: &'static str,
        address: u64,
        bytes: u64,
        memory_bytes: u64,
    },
    Overlap {
        first: &'static str,
        second: &'static str,
    },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Image(error) => write!(f, "{error}"),
            BootError::MemorySize { bytes } => write!(
                f,
                "memory size {} MiB is out of range ({}..={} MiB)",
                bytes >> 20,
                MEMORY_MIN_BYTES >> 20,
                MEMORY_MAX_BYTES >> 20
            ),
            BootError::InstructionsPerTick { value } => {
                write!(f, "{value} instructions per tick is out of range; use at least 1")
            }
            BootError::DoesNotFit { what, address, bytes, memory_bytes } => write!(
                f,
                "{what} ({bytes} bytes at {address:#x}) does not fit in {} MiB of guest memory at {RAM_BASE:#x}; give the guest more memory",
                memory_bytes >> 20
            ),
            BootError::Overlap { first, second } => {
                write!(f, "{first} and {second} overlap in guest memory; give the guest more memory")
            }
        }
    }
}

impl core::error::Error for BootError {}

/// Why an input could not be delivered now. Nothing was lost: deliver it later.
#[derive(Debug, PartialEq, Eq)]
pub enum InjectError {
    ConsoleFull,
    /// The network device cannot take the frame now (no receive buffer, device down) or
    /// ever (bad size).
    Frame(RxError),
    NoDevice,
}

/// The devices and the monitor's state: everything outside the hart and its RAM.
pub struct Devices {
    clock: Clock,
    clint: Clint,
    plic: Plic,
    uart: Uart,
    /// The S-mode timer set through SBI TIME (host monitor only).
    sbi_timer_ticks: u64,
    finisher_request: Option<FinisherRequest>,
    rtc: GoldfishRtc,
    virtio: VirtioBus,
    /// True for Linux `Image` guests: the SBI timer drives STIP (a copy of the machine's).
    host_monitor: bool,
    /// What the last MMIO access changed, for `Platform::mmio_effect`. Not machine state:
    /// set by every access and read right after it.
    last_access: AccessEffect,
    /// Tests compare against the machine as it was before `mmio_effect`: every access ends
    /// the slice.
    #[cfg(test)]
    every_access_ends_run: bool,
}

/// What one MMIO access changed, as far as the run loop is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccessEffect {
    /// No interrupt line and nothing `Machine::run` looks at between slices: reads of
    /// registers without side effects.
    Nothing,
    /// At most the interrupt lines: PLIC claims, completions and enables, UART reads and
    /// register writes, virtio register writes that leave no queue work.
    Lines,
    /// Something the machine must handle before the next instruction: a virtio queue to
    /// process, console output, a timer compare (the slice's end moves), the finisher, the
    /// RTC.
    Machine,
}

impl Platform for Devices {
    fn mmio_load(
        &mut self,
        addr: GuestPhysAddr,
        size_bytes: u8,
        now: InstructionCount,
    ) -> Option<u64> {
        let address = addr.0;
        // Virtio first: the network and disk drivers' accesses are the most frequent.
        let (value, effect) = if VirtioBus::contains(address) {
            // Register and configuration reads have no side effects (virtio 1.2, 4.2.2).
            (
                self.virtio.mmio_load(address, size_bytes),
                AccessEffect::Nothing,
            )
        } else if in_range(address, PLIC_BASE, PLIC_SIZE) {
            // A claim takes a source's pending bit.
            (
                self.plic.load(address - PLIC_BASE, size_bytes),
                AccessEffect::Lines,
            )
        } else if in_range(address, UART_BASE, UART_SIZE) {
            // Reading RBR or IIR can lower the UART's line.
            (
                self.uart.load(address - UART_BASE, size_bytes),
                AccessEffect::Lines,
            )
        } else if in_range(address, CLINT_BASE, CLINT_SIZE) {
            (
                self.clint
                    .load(address - CLINT_BASE, size_bytes, &self.clock, now),
                AccessEffect::Nothing,
            )
        } else if in_range(address, FINISHER_BASE, FINISHER_SIZE) {
            (Some(0), AccessEffect::Nothing)
        } else if in_range(address, RTC_BASE, RTC_SIZE) {
            let ticks = self.clock.ticks(now);
            (
                self.rtc.load(address - RTC_BASE, size_bytes, ticks),
                AccessEffect::Machine,
            )
        } else {
            (None, AccessEffect::Machine)
        };
        self.last_access = effect;
        value
    }

    fn mmio_store(
        &mut self,
        addr: GuestPhysAddr,
        size_bytes: u8,
        value: u64,
        now: InstructionCount,
    ) -> bool {
        let address = addr.0;
        let (accepted, effect) = if VirtioBus::contains(address) {
            let accepted = self.virtio.mmio_store(address, size_bytes, value);
            // A queue notify leaves work that must be done before the next instruction
            // (devices touch guest memory only between slices); any other register write
            // can change no more than the device's interrupt line.
            let effect = if self.virtio.has_work() {
                AccessEffect::Machine
            } else {
                AccessEffect::Lines
            };
            (accepted, effect)
        } else if in_range(address, PLIC_BASE, PLIC_SIZE) {
            (
                self.plic.store(address - PLIC_BASE, size_bytes, value),
                AccessEffect::Lines,
            )
        } else if in_range(address, UART_BASE, UART_SIZE) {
            let offset = address - UART_BASE;
            // Offset 0 is THR: console output, whose buffer the machine checks for room.
            let effect = if offset == 0 {
                AccessEffect::Machine
            } else {
                AccessEffect::Lines
            };
            (self.uart.store(offset, size_bytes, value), effect)
        } else if in_range(address, CLINT_BASE, CLINT_SIZE) {
            // mtimecmp moves the end of the slice; msip is rare enough to treat alike.
            (
                self.clint.store(address - CLINT_BASE, size_bytes, value),
                AccessEffect::Machine,
            )
        } else if in_range(address, FINISHER_BASE, FINISHER_SIZE) {
            if let Some(request) = finisher::decode(address - FINISHER_BASE, value) {
                self.finisher_request = Some(request);
            }
            (true, AccessEffect::Machine)
        } else if in_range(address, RTC_BASE, RTC_SIZE) {
            let ticks = self.clock.ticks(now);
            (
                self.rtc.store(address - RTC_BASE, size_bytes, value, ticks),
                AccessEffect::Machine,
            )
        } else {
            (false, AccessEffect::Machine)
        };
        self.last_access = effect;
        accepted
    }

    fn time(&mut self, instret: InstructionCount) -> u64 {
        self.clock.ticks(instret)
    }

    fn linear_time(&self) -> Option<LinearTime> {
        // The offset changes between runs only (`Input::AdvanceTime`).
        Some(LinearTime {
            offset_ticks: self.clock.offset_ticks(),
            instructions_per_tick: self.clock.instructions_per_tick(),
        })
    }

    /// The run goes on after accesses that change at most the interrupt lines: the lines
    /// are computed here exactly as `Machine::run` computes them between slices, at the
    /// count where the next slice would start, so the guest sees what it saw when every
    /// access ended the slice (ARCHITECTURE.md, "The determinism contract").
    fn mmio_effect(&mut self, after: InstructionCount) -> MmioEffect {
        #[cfg(test)]
        if self.every_access_ends_run {
            return MmioEffect::EndRun;
        }
        match self.last_access {
            AccessEffect::Nothing => MmioEffect::Unchanged,
            AccessEffect::Lines => MmioEffect::Lines(self.interrupt_lines(after)),
            AccessEffect::Machine => MmioEffect::EndRun,
        }
    }
}

fn in_range(address: u64, base: u64, size: u64) -> bool {
    address.wrapping_sub(base) < size
}

impl Devices {
    /// Drives the PLIC's sources from the devices' lines and returns the hart's interrupt
    /// lines (`Hart::set_interrupt_lines` bits) at instruction count `now`.
    fn interrupt_lines(&mut self, now: InstructionCount) -> u64 {
        let ticks = self.clock.ticks(now);
        let uart_line = self.uart.interrupt();
        self.plic.set_level(UART_IRQ, uart_line);
        let rtc_line = self.rtc.interrupt(ticks);
        self.plic.set_level(RTC_IRQ, rtc_line);
        for (irq, level) in self.virtio.interrupt_lines() {
            self.plic.set_level(irq, level);
        }
        let mut lines = 0;
        if self.clint.msip() {
            lines |= MIP_MSIP;
        }
        if ticks >= self.clint.mtimecmp {
            lines |= MIP_MTIP;
        }
        if self.host_monitor && ticks >= self.sbi_timer_ticks {
            lines |= MIP_STIP;
        }
        if self.plic.interrupt(CONTEXT_MACHINE) {
            lines |= MIP_MEIP;
        }
        if self.plic.interrupt(CONTEXT_SUPERVISOR) {
            lines |= MIP_SEIP;
        }
        lines
    }

    fn write_state(&self, out: &mut StateWriter) {
        out.u64(self.clock.offset_ticks());
        self.clint.write_state(out);
        self.plic.write_state(out);
        self.uart.write_state(out);
        out.u64(self.sbi_timer_ticks);
        self.rtc.write_state(out);
        self.virtio.write_state(out);
    }
}

/// One RISC-V machine: a hart, its RAM and its devices.
pub struct Machine {
    hart: Hart,
    devices: Devices,
    /// True for Linux `Image` guests: SBI is implemented here, not by guest firmware.
    host_monitor: bool,
    digest: Digest,
    /// SHA-256 of the device tree the machine was built with: saved state names it, and
    /// a machine built from another configuration refuses that state.
    device_tree_sha256: [u8; 32],
    /// The pages the hart reported written, fanned out to the digest and the dirty log.
    dirty: DirtyPages,
    /// `Hart::run` calls since the machine was built: what ending slices costs. Not machine
    /// state (a replay with other budgets has other counts).
    slices: u64,
}

impl Machine {
    /// Builds the machine and loads `kernel` (an ELF executable or a Linux `Image`), the
    /// optional `initrd`, and a device tree describing it all.
    pub fn new(
        config: &MachineConfig,
        kernel: &[u8],
        initrd: Option<&[u8]>,
    ) -> Result<Machine, BootError> {
        let memory_bytes = config.memory_bytes;
        if !(MEMORY_MIN_BYTES..=MEMORY_MAX_BYTES).contains(&memory_bytes)
            || !memory_bytes.is_multiple_of(PAGE_BYTES)
        {
            return Err(BootError::MemorySize {
                bytes: memory_bytes,
            });
        }
        if config.instructions_per_tick == 0 {
            return Err(BootError::InstructionsPerTick {
                value: config.instructions_per_tick,
            });
        }
        let image = GuestImage::parse(kernel).map_err(BootError::Image)?;
        let host_monitor = matches!(image, GuestImage::LinuxImage { .. });
        let mut hart = Hart::new(HartConfig {
            ram_base: GuestPhysAddr(RAM_BASE),
            ram_size_bytes: memory_bytes,
            host_monitor,
        });
        let ram_end = RAM_BASE + memory_bytes;
        let mut regions: Vec<(&'static str, u64, u64)> = Vec::new();
        let mut place =
            |hart: &mut Hart, what: &'static str, address: u64, data: &[u8], bytes: u64| {
                let fits = address >= RAM_BASE
                    && address.checked_add(bytes).is_some_and(|end| end <= ram_end);
                if !fits {
                    return Err(BootError::DoesNotFit {
                        what,
                        address,
                        bytes,
                        memory_bytes,
                    });
                }
                for &(other, start, len) in &regions {
                    if address < start + len && start < address + bytes {
                        return Err(BootError::Overlap {
                            first: other,
                            second: what,
                        });
                    }
                }
                regions.push((what, address, bytes));
                hart.write_phys(GuestPhysAddr(address), data)
                    .expect("range checked above");
                Ok(())
            };
        let entry = match &image {
            GuestImage::Elf { entry, segments } => {
                for segment in segments {
                    place(
                        &mut hart,
                        "kernel segment",
                        segment.address,
                        segment.data,
                        segment.memory_bytes,
                    )?;
                }
                *entry
            }
            GuestImage::LinuxImage { text_offset, image } => {
                let address = RAM_BASE + text_offset;
                place(&mut hart, "kernel", address, image.data, image.memory_bytes)?;
                address
            }
        };
        let initrd_range = match initrd {
            Some(initrd) => {
                let start = RAM_BASE + (memory_bytes / 2).min(INITRD_OFFSET_MAX_BYTES);
                place(&mut hart, "initrd", start, initrd, initrd.len() as u64)?;
                Some((start, start + initrd.len() as u64))
            }
            None => None,
        };
        let device_tree = device_tree(config, initrd_range);
        let fdt_address = (ram_end - device_tree.len() as u64) & !(FDT_ALIGN_BYTES - 1);
        place(
            &mut hart,
            "device tree",
            fdt_address,
            &device_tree,
            device_tree.len() as u64,
        )?;

        if host_monitor {
            // The state OpenSBI leaves behind when it enters the kernel (SBI 2.0, 4.x).
            hart.write_csr(CSR_MEDELEG, MEDELEG_FOR_LINUX);
            hart.write_csr(CSR_MIDELEG, MIDELEG_FOR_LINUX);
            hart.write_csr(CSR_MCOUNTEREN, 0x7);
            // OpenSBI also opens cycle, time and instret to U-mode (sbi_hart.c
            // mstatus_init); without it a user `rdtime` (the vDSO clock) is illegal.
            hart.write_csr(CSR_SCOUNTEREN, 0x7);
            hart.write_csr(CSR_PMPADDR0, PMPADDR_ALL_MEMORY);
            hart.write_csr(CSR_PMPCFG0, PMPCFG_NAPOT_RWX);
            hart.reset(entry, Privilege::Supervisor, 0, fdt_address);
        } else {
            hart.reset(entry, Privilege::Machine, 0, fdt_address);
        }
        let mut devices = Devices {
            clock: Clock::new(config.instructions_per_tick),
            clint: Clint::new(),
            plic: Plic::new(),
            uart: Uart::new(),
            sbi_timer_ticks: u64::MAX,
            finisher_request: None,
            rtc: GoldfishRtc::new(),
            virtio: VirtioBus::new(),
            host_monitor,
            last_access: AccessEffect::Machine,
            #[cfg(test)]
            every_access_ends_run: false,
        };
        if let Some(mac) = config.net_mac {
            devices
                .virtio
                .plug(1, Slot::Net(VirtioMmio::new(Net::new(mac))));
        }
        if config.entropy {
            devices
                .virtio
                .plug(2, Slot::Rng(VirtioMmio::new(Rng::new())));
        }
        let digest = Digest::new(memory_bytes);
        let device_tree_sha256 = sha2::Sha256::digest(&device_tree).into();
        Ok(Machine {
            slices: 0,
            dirty: DirtyPages::new(hart.ram().len()),
            hart,
            devices,
            host_monitor,
            digest,
            device_tree_sha256,
        })
    }

    /// Runs until `budget` instructions retired or the guest needs the host; returns the
    /// exact number retired and why it stopped.
    pub fn run(&mut self, budget: u64) -> (InstructionCount, Exit) {
        let (executed, exit, _) = self.run_slices(budget, None);
        (executed, exit)
    }

    /// `run` for a debugger: the same instructions with the same effects, but it also stops
    /// at `targets` (breakpoints, watchpoints, trap entries; `Hart::run_debug`), with
    /// `Exit::BudgetExhausted` and the hit.
    pub fn run_debug(
        &mut self,
        budget: u64,
        targets: &DebugTargets,
    ) -> (InstructionCount, Exit, Option<DebugStop>) {
        self.run_slices(budget, Some(targets))
    }

    fn run_slices(
        &mut self,
        budget: u64,
        targets: Option<&DebugTargets>,
    ) -> (InstructionCount, Exit, Option<DebugStop>) {
        let mut executed = 0;
        while executed < budget {
            // Device queue work happens between slices, never inside the MMIO access that
            // notified the device (a queue notify ends the slice, `Devices::mmio_effect`):
            // here, before any further instruction runs, so it lands at the same instruction
            // whatever the budgets. A full network outbox stops the run before it executes
            // more.
            self.process_devices();
            if self.transmit_blocked() {
                return (InstructionCount(executed), Exit::NetOutputFull, None);
            }
            self.update_interrupt_lines();
            let now = self.hart.instret();
            let slice = match self.instructions_until_next_timer(now) {
                Some(wait) => wait.min(budget - executed),
                None => budget - executed,
            };
            self.slices += 1;
            let (outcome, hit) = match targets {
                None => (self.hart.run(&mut self.devices, slice), None),
                Some(targets) => self.hart.run_debug(&mut self.devices, slice, targets),
            };
            executed += outcome.executed.0;
            // Also after the slice, so that state between `run` calls has it done.
            self.process_devices();
            let exit = match outcome.stop {
                StopReason::BudgetExhausted => None,
                StopReason::MmioAccess => None,
                StopReason::SupervisorEcall => {
                    sbi::call(&mut self.hart, &mut self.devices);
                    None
                }
                StopReason::WaitForInterrupt => Some(Exit::Idle {
                    wake_at_ticks: self.next_timer_ticks(),
                }),
                StopReason::MonitorTrap { cause, tval, pc } => {
                    Some(Exit::GuestCrashed { cause, tval, pc })
                }
            };
            if let Some(request) = self.devices.finisher_request.take() {
                return (InstructionCount(executed), finisher_exit(request), hit);
            }
            if let Some(exit) = exit {
                return (InstructionCount(executed), exit, hit);
            }
            if self.devices.uart.output_full() {
                return (InstructionCount(executed), Exit::ConsoleOutputFull, hit);
            }
            if self.transmit_blocked() {
                return (InstructionCount(executed), Exit::NetOutputFull, hit);
            }
            if hit.is_some() {
                return (InstructionCount(executed), Exit::BudgetExhausted, hit);
            }
        }
        (InstructionCount(executed), Exit::BudgetExhausted, None)
    }

    /// Delivers one input at the current instruction boundary.
    pub fn inject(&mut self, input: &Input) -> Result<(), InjectError> {
        match *input {
            Input::AdvanceTime { ticks } => self.devices.clock.advance(ticks),
            Input::ConsoleByte(byte) => {
                if !self.devices.uart.receive(byte) {
                    return Err(InjectError::ConsoleFull);
                }
            }
            Input::Frame(ref frame) => {
                let net = self.devices.virtio.net().ok_or(InjectError::NoDevice)?;
                // Ok(Delivered | Dropped..): guest state changed either way.
                let _: RxOutcome = net
                    .receive(frame, &mut self.hart)
                    .map_err(InjectError::Frame)?;
            }
            Input::Entropy(ref bytes) => {
                let rng = self.devices.virtio.rng().ok_or(InjectError::NoDevice)?;
                rng.supply_entropy(bytes, &mut self.hart);
            }
            Input::WallClockBase { ns } => self.devices.rtc.set_wall_clock_base_ns(ns),
        }
        Ok(())
    }

    /// Plugs a disk into virtio-mmio slot 0. Call before the first `run`.
    pub fn attach_disk(&mut self, backend: Box<dyn BlockBackend + Send>, id: &[u8]) {
        self.devices
            .virtio
            .plug(0, Slot::Block(VirtioMmio::new(Block::new(backend, id))));
    }

    /// The disk's backend, if a disk is attached (a runtime that installed its own backend
    /// reaches it through `BlockBackend::as_any_mut`).
    pub fn block_backend_mut(&mut self) -> Option<&mut dyn BlockBackend> {
        Some(self.devices.virtio.block()?.device_mut().backend_mut())
    }

    /// The frames the guest transmitted since the last call.
    pub fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        self.devices
            .virtio
            .net()
            .map(|net| net.take_transmitted())
            .unwrap_or_default()
    }

    /// Bytes of entropy the guest waits for (0: none).
    pub fn wants_entropy(&mut self) -> usize {
        self.devices
            .virtio
            .rng()
            .map_or(0, |rng| rng.wants_entropy())
    }

    pub fn virtio(&mut self) -> &mut VirtioBus {
        &mut self.devices.virtio
    }

    fn process_devices(&mut self) {
        if self.devices.virtio.has_work() {
            self.devices.virtio.process(&mut self.hart);
        }
    }

    fn transmit_blocked(&mut self) -> bool {
        self.devices
            .virtio
            .net()
            .is_some_and(|net| net.transmit_blocked())
    }

    /// Whether an `Input::ConsoleByte` would be accepted now.
    pub fn console_can_receive(&self) -> bool {
        self.devices.uart.can_receive()
    }

    pub fn take_console_output(&mut self) -> Vec<u8> {
        self.devices.uart.take_output()
    }

    pub fn instret(&self) -> InstructionCount {
        self.hart.instret()
    }

    /// Run slices (`Hart::run` calls) since the machine was built; each ends at a budget, a
    /// timer deadline or a device access the machine must handle.
    pub fn slices(&self) -> u64 {
        self.slices
    }

    /// Guest time in timebase ticks (`TIMEBASE_HZ` per second).
    pub fn time_ticks(&self) -> u64 {
        self.devices.clock.ticks(self.hart.instret())
    }

    pub fn hart(&self) -> &Hart {
        &self.hart
    }

    /// Runs hot guest code through the translator from now on, with `memory` as its code
    /// cache; a block is hot once run `hot_executions` times (`HOT_EXECUTIONS_DEFAULT`
    /// normally, 1 to translate everything at once). The guest sees no difference: same
    /// instructions, counts and digests.
    pub fn enable_translator(
        &mut self,
        memory: Box<dyn ExecutableMemory>,
        hot_executions: u32,
    ) -> Result<(), TranslatorError> {
        self.hart.enable_translator_after(memory, hot_executions)
    }

    /// The translator's counters, when it is on.
    pub fn translator_stats(&self) -> Option<TranslatorStats> {
        self.hart.translator_stats()
    }

    /// Keeps where translated blocks go from now on (`Hart::record_block_placements`).
    pub fn record_block_placements(&mut self) {
        self.hart.record_block_placements();
    }

    /// SHA-256 over hart state, device state and RAM, at the current boundary. Cheap: only
    /// pages written since the last digest are hashed again.
    pub fn digest(&mut self) -> [u8; 32] {
        let mut state = Vec::new();
        self.hart.write_state(&mut state);
        let mut devices = StateWriter::default();
        self.devices.write_state(&mut devices);
        let dirty = self.dirty.take_for_digest(&mut self.hart);
        self.digest
            .update(self.hart.ram(), &dirty, &state, &devices.bytes)
    }

    fn update_interrupt_lines(&mut self) {
        let lines = self.devices.interrupt_lines(self.hart.instret());
        self.hart.set_interrupt_lines(lines);
    }

    /// The nearest timer compare value still in the future, in ticks.
    fn next_timer_ticks(&self) -> Option<u64> {
        let now = self.devices.clock.ticks(self.hart.instret());
        let mut deadlines = [
            self.devices.clint.mtimecmp,
            u64::MAX,
            self.devices.rtc.next_alarm_ticks(now).unwrap_or(u64::MAX),
        ];
        if self.host_monitor {
            deadlines[1] = self.devices.sbi_timer_ticks;
        }
        deadlines
            .into_iter()
            .filter(|&d| d > now && d != u64::MAX)
            .min()
    }

    fn instructions_until_next_timer(&self, now: InstructionCount) -> Option<u64> {
        let deadline = self.next_timer_ticks()?;
        self.devices.clock.instructions_until(now, deadline)
    }
}

fn finisher_exit(request: FinisherRequest) -> Exit {
    match request {
        FinisherRequest::Exit { code } => Exit::PowerOff { code },
        FinisherRequest::Reset => Exit::Reset,
    }
}

/// The device tree of QEMU's `virt` machine with the devices this machine has.
fn device_tree(config: &MachineConfig, initrd: Option<(u64, u64)>) -> Vec<u8> {
    let mut fdt = FdtWriter::new();
    let reg = |base: u64, size: u64| {
        [
            (base >> 32) as u32,
            base as u32,
            (size >> 32) as u32,
            size as u32,
        ]
    };
    const CPU_INTC: u32 = 1;
    const PLIC: u32 = 2;
    const FINISHER: u32 = 3;
    fdt.begin_node("");
    fdt.property_u32("#address-cells", 2);
    fdt.property_u32("#size-cells", 2);
    fdt.property_string("compatible", "riscv-virtio");
    fdt.property_string("model", "understudy,virt");

    fdt.begin_node("chosen");
    fdt.property_string("bootargs", &config.bootargs);
    fdt.property_string("stdout-path", "/soc/serial@10000000");
    if let Some((start, end)) = initrd {
        fdt.property_u64("linux,initrd-start", start);
        fdt.property_u64("linux,initrd-end", end);
    }
    fdt.end_node();

    fdt.begin_node("memory@80000000");
    fdt.property_string("device_type", "memory");
    fdt.property_cells("reg", &reg(RAM_BASE, config.memory_bytes));
    fdt.end_node();

    fdt.begin_node("cpus");
    fdt.property_u32("#address-cells", 1);
    fdt.property_u32("#size-cells", 0);
    fdt.property_u32("timebase-frequency", TIMEBASE_HZ as u32);
    fdt.begin_node("cpu@0");
    fdt.property_string("device_type", "cpu");
    fdt.property_u32("reg", 0);
    fdt.property_string("status", "okay");
    fdt.property_string("compatible", "riscv");
    fdt.property_string("riscv,isa", "rv64imafdc_zicsr_zifencei");
    fdt.property_string("riscv,isa-base", "rv64i");
    fdt.property_strings(
        "riscv,isa-extensions",
        &["i", "m", "a", "f", "d", "c", "zicsr", "zifencei"],
    );
    fdt.property_string("mmu-type", "riscv,sv39");
    fdt.begin_node("interrupt-controller");
    fdt.property_u32("#interrupt-cells", 1);
    fdt.property_empty("interrupt-controller");
    fdt.property_string("compatible", "riscv,cpu-intc");
    fdt.property_u32("phandle", CPU_INTC);
    fdt.end_node();
    fdt.end_node();
    fdt.end_node();

    fdt.begin_node("soc");
    fdt.property_u32("#address-cells", 2);
    fdt.property_u32("#size-cells", 2);
    fdt.property_string("compatible", "simple-bus");
    fdt.property_empty("ranges");

    fdt.begin_node("clint@2000000");
    fdt.property_strings("compatible", &["sifive,clint0", "riscv,clint0"]);
    fdt.property_cells("reg", &reg(CLINT_BASE, CLINT_SIZE));
    fdt.property_cells("interrupts-extended", &[CPU_INTC, 3, CPU_INTC, 7]);
    fdt.end_node();

    fdt.begin_node("plic@c000000");
    fdt.property_strings("compatible", &["sifive,plic-1.0.0", "riscv,plic0"]);
    fdt.property_cells("reg", &reg(PLIC_BASE, PLIC_SIZE));
    fdt.property_u32("#interrupt-cells", 1);
    fdt.property_u32("#address-cells", 0);
    fdt.property_empty("interrupt-controller");
    fdt.property_u32("riscv,ndev", (devices::plic::PLIC_SOURCES - 1) as u32);
    fdt.property_cells("interrupts-extended", &[CPU_INTC, 11, CPU_INTC, 9]);
    fdt.property_u32("phandle", PLIC);
    fdt.end_node();

    fdt.begin_node("serial@10000000");
    fdt.property_string("compatible", "ns16550a");
    fdt.property_cells("reg", &reg(UART_BASE, UART_SIZE));
    fdt.property_u32("clock-frequency", 3_686_400);
    fdt.property_u32("interrupt-parent", PLIC);
    fdt.property_u32("interrupts", UART_IRQ as u32);
    fdt.end_node();

    devices::rtc::write_fdt_node(&mut fdt, PLIC);
    VirtioBus::write_fdt_nodes(&mut fdt, PLIC);

    fdt.begin_node("test@100000");
    fdt.property_strings("compatible", &["sifive,test1", "sifive,test0", "syscon"]);
    fdt.property_cells("reg", &reg(FINISHER_BASE, FINISHER_SIZE));
    fdt.property_u32("phandle", FINISHER);
    fdt.end_node();

    fdt.begin_node("poweroff");
    fdt.property_string("compatible", "syscon-poweroff");
    fdt.property_u32("regmap", FINISHER);
    fdt.property_u32("offset", 0);
    fdt.property_u32("value", 0x5555);
    fdt.end_node();

    fdt.begin_node("reboot");
    fdt.property_string("compatible", "syscon-reboot");
    fdt.property_u32("regmap", FINISHER);
    fdt.property_u32("offset", 0);
    fdt.property_u32("value", 0x7777);
    fdt.end_node();

    fdt.end_node(); // soc
    fdt.end_node(); // root
    fdt.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;
    use crate::program::{echo_guest, reg, Assembler};
    use understudy_cpu::Op;

    /// Console bytes the interrupt guest takes before it powers off.
    const INTERRUPT_GUEST_BYTES: i32 = 40;

    /// An M-mode guest that takes console bytes by interrupt: its handler claims the UART's
    /// source from the PLIC, reads RBR, folds the byte and the main loop's counter into a
    /// hash (so the instruction where each interrupt came in shows) and completes; a claim
    /// that finds nothing is counted in S4. The main loop turns the UART's receive
    /// interrupt off and on again, so a waiting byte raises the line right after a store
    /// in the middle of a block. Powers off after `INTERRUPT_GUEST_BYTES` bytes.
    fn interrupt_guest() -> Vec<u8> {
        use reg::*;
        const PLIC_PRIORITY_UART: i32 = 0x0c00_0000 + 4 * UART_IRQ as i32;
        const PLIC_ENABLE_MACHINE: i32 = 0x0c00_2000;
        const PLIC_CLAIM_MACHINE: i32 = 0x0c20_0004;
        const CSR_MSTATUS: u16 = 0x300;
        const CSR_MIE: u16 = 0x304;
        const CSR_MTVEC: u16 = 0x305;
        let mut a = Assembler::new();
        a.li(S0, UART_BASE as i32);
        let after_handler = a.label();
        a.jump_and_link(T0, after_handler); // T0: the handler's address
        a.li(T0, PLIC_CLAIM_MACHINE);
        a.i(Op::Lw, T1, T0, 0); // claim
        let claimed = a.label();
        a.branch(Op::Bne, T1, ZERO, claimed);
        a.i(Op::Addi, S4, S4, 1);
        a.fixed(Op::Mret);
        a.bind(claimed);
        a.i(Op::Lbu, T2, S0, 0); // RBR
        a.i(Op::Slli, T5, S1, 5);
        a.r(Op::Sub, T5, T5, S1);
        a.r(Op::Add, T5, T5, T2);
        a.r(Op::Add, S1, T5, S2); // hash = hash * 31 + byte + loop counter
        a.i(Op::Addi, S3, S3, 1);
        a.store(Op::Sw, T1, T0, 0); // complete
        a.fixed(Op::Mret);
        a.bind(after_handler);
        a.csr(Op::Csrrw, ZERO, T0, CSR_MTVEC);
        a.li(T0, PLIC_PRIORITY_UART);
        a.li(T1, 1);
        a.store(Op::Sw, T1, T0, 0);
        a.li(T0, PLIC_ENABLE_MACHINE);
        a.li(T1, 1 << UART_IRQ);
        a.store(Op::Sw, T1, T0, 0);
        a.li(T1, 1 << 11); // MEIE
        a.csr(Op::Csrrs, ZERO, T1, CSR_MIE);
        a.li(T1, 1 << 3); // MIE
        a.csr(Op::Csrrs, ZERO, T1, CSR_MSTATUS);
        let spin = a.here();
        a.i(Op::Addi, S2, S2, 1);
        a.store(Op::Sb, ZERO, S0, 1); // IER: off
        a.li(T3, 1);
        a.store(Op::Sb, T3, S0, 1); // IER: receive data available
        a.li(T4, INTERRUPT_GUEST_BYTES);
        a.branch(Op::Blt, S3, T4, spin);
        a.li(T0, FINISHER_BASE as i32);
        a.li(T1, 0x5555);
        a.store(Op::Sw, T1, T0, 0);
        let forever = a.here();
        a.jump(forever);
        loader::elf_executable(RAM_BASE, &a.finish())
    }

    /// Runs the interrupt guest with console bytes arriving at fixed counts, in slices of
    /// pseudo-random length from `seed`; returns the digest at every arrival and at the end,
    /// with the machine.
    fn run_interrupt_guest(every_access_ends_run: bool, seed: u64) -> (Vec<[u8; 32]>, Machine) {
        let mut machine =
            Machine::new(&MachineConfig::default(), &interrupt_guest(), None).expect("boots");
        machine.devices.every_access_ends_run = every_access_ends_run;
        let mut state = seed;
        let mut budget = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + state % 5000
        };
        let mut digests = Vec::new();
        for byte in 0..INTERRUPT_GUEST_BYTES as u64 {
            // Bytes come in bursts of two, so the FIFO sometimes holds a second one when
            // the handler completes.
            let arrival = 20_000 + (byte / 2) * 7_919;
            while machine.instret().0 < arrival {
                let left = arrival - machine.instret().0;
                let (_, exit) = machine.run(budget().min(left));
                assert_eq!(exit, Exit::BudgetExhausted, "byte {byte}");
            }
            machine
                .inject(&Input::ConsoleByte(b'a' + byte as u8))
                .expect("the FIFO has room");
            digests.push(machine.digest());
        }
        loop {
            match machine.run(budget()).1 {
                Exit::BudgetExhausted => {}
                Exit::PowerOff { code: 0 } => break,
                exit => panic!("unexpected exit {exit:?}"),
            }
            assert!(machine.instret().0 < 10_000_000, "the guest never finished");
        }
        digests.push(machine.digest());
        (digests, machine)
    }

    #[test]
    fn interrupt_lines_taken_within_a_slice_give_the_execution_of_a_slice_per_access() {
        let (reference, old) = run_interrupt_guest(true, 0x1234_5678);
        let (digests, new) = run_interrupt_guest(false, 0x8765_4321);
        assert_eq!(old.hart().x(reg::S3 as usize), INTERRUPT_GUEST_BYTES as u64);
        assert_eq!(old.hart().x(reg::S4 as usize), 0, "no claim found nothing");
        assert_eq!(new.instret(), old.instret());
        assert_eq!(
            new.hart().x(reg::S1 as usize),
            old.hart().x(reg::S1 as usize),
            "every interrupt came in at the same instruction"
        );
        assert_eq!(digests, reference);
    }

    #[test]
    fn plic_claims_uart_reads_and_register_writes_do_not_end_the_slice() {
        let (_, old) = run_interrupt_guest(true, 7);
        let (_, new) = run_interrupt_guest(false, 7);
        // Every access ended a slice before: the main loop makes two per turn.
        assert!(old.slices() > 2 * old.hart().x(reg::S2 as usize));
        // Now only budgets and interrupts that came in after a write end one.
        assert!(
            new.slices() * 10 < old.slices(),
            "{} slices against {}",
            new.slices(),
            old.slices()
        );
    }

    #[test]
    fn zero_instructions_per_tick_is_a_boot_error_not_a_panic() {
        let config = MachineConfig {
            instructions_per_tick: 0,
            ..MachineConfig::default()
        };
        let error = Machine::new(&config, &echo_guest(1), None)
            .err()
            .expect("refused");
        assert_eq!(error, BootError::InstructionsPerTick { value: 0 });
        assert_eq!(
            error.to_string(),
            "0 instructions per tick is out of range; use at least 1"
        );
    }
}
