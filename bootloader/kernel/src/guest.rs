//! Runs the protected guest on `understudy_machine::Machine`: the serial console is its
//! console, the TSC its wall clock, an appliance disk its virtio-blk disk.
//!
//! The loop mirrors the hosted live driver (`appliance/hosted/src/live.rs`, wall-clock mode):
//! every outside value (a console byte, elapsed time) enters the guest only through
//! `Machine::inject` between `run` slices, so the guest sees a function of its images and of
//! those inputs alone (ARCHITECTURE.md, determinism). Guest time follows the instruction count
//! and is pushed forward when it lags the TSC; an idle guest is polled with `pause` until its
//! next timer is due on the TSC or a console byte arrives (interrupts stay masked).

use crate::guestdisk::GuestDisk;
use crate::{serial, tsc};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::{Exit, InjectError, Input, Machine, MachineConfig};

/// Instructions per `Machine::run` call (the hosted driver's slice): console input and output
/// stay responsive and the loop's own cost is negligible.
const RUN_SLICE_INSTRUCTIONS: u64 = 2_000_000;
/// Guest time may lag the TSC by this much (10 ms) before the loop advances it.
const CLOCK_LAG_TOLERANCE_TICKS: u64 = TIMEBASE_HZ / 100;
/// Console bytes read from COM1 but not yet taken by the guest's UART. The 16550's own FIFO
/// is 16 bytes; beyond this the loop stops reading COM1 and the host's FIFO holds the rest.
const PENDING_CONSOLE_BYTES_MAX: usize = 4096;
/// The disk id the guest reads with VIRTIO_BLK_T_GET_ID (the hosted driver's too).
const DISK_ID: &[u8] = b"understudy-disk";
/// The kernel command line when the payload carries none.
pub const DEFAULT_BOOTARGS: &str = "console=ttyS0";

/// What the guest is and what it gets.
pub struct GuestSpec<'a> {
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    pub bootargs: String,
    pub memory_bytes: u64,
    pub disk: Option<GuestDisk>,
}

/// Why the guest stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    PowerOff { code: u16 },
    Reset,
    Crashed { cause: u64, tval: u64, pc: u64 },
}

/// What the run did.
pub struct Summary {
    pub ending: Ending,
    pub instructions: u64,
    pub elapsed_ms: u64,
}

/// Builds the machine; a bad image or memory size is the operator's error and is returned.
pub fn build(spec: GuestSpec) -> Result<Machine, understudy_machine::BootError> {
    let config = MachineConfig {
        memory_bytes: spec.memory_bytes,
        bootargs: spec.bootargs,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, spec.kernel, spec.initrd)?;
    if let Some(disk) = spec.disk {
        machine.attach_disk(Box::new(disk), DISK_ID);
    }
    Ok(machine)
}

/// Guest timebase ticks since `start` on the TSC.
fn ticks_since(start: tsc::TscTicks) -> u64 {
    let elapsed = tsc::read().0.saturating_sub(start.0);
    (u128::from(elapsed) * u128::from(TIMEBASE_HZ) / u128::from(tsc::hz())) as u64
}

/// Reads what COM1 has received into `pending` (bounded).
fn poll_console(pending: &mut VecDeque<u8>) {
    while pending.len() < PENDING_CONSOLE_BYTES_MAX {
        match serial::try_read_byte() {
            Some(byte) => pending.push_back(byte),
            None => break,
        }
    }
}

/// Injects pending console bytes until the guest's UART is full.
fn deliver(machine: &mut Machine, pending: &mut VecDeque<u8>) {
    while let Some(&byte) = pending.front() {
        match machine.inject(&Input::ConsoleByte(byte)) {
            Ok(()) => {
                pending.pop_front();
            }
            Err(InjectError::ConsoleFull) => break,
            // A console byte has no other failure; drop it rather than spin on it.
            Err(_) => {
                pending.pop_front();
            }
        }
    }
}

/// Advances guest time to the TSC when it lags by more than `tolerance` ticks.
fn catch_up(machine: &mut Machine, start: tsc::TscTicks, start_ticks: u64, tolerance: u64) {
    let wall_ticks = start_ticks + ticks_since(start);
    let guest_ticks = machine.time_ticks();
    if wall_ticks > guest_ticks + tolerance {
        machine
            .inject(&Input::AdvanceTime {
                ticks: wall_ticks - guest_ticks,
            })
            .expect("advancing time always succeeds");
    }
}

/// Runs the guest until it powers off, resets or crashes.
pub fn run(machine: &mut Machine) -> Summary {
    let start = tsc::read();
    let start_ticks = machine.time_ticks();
    let mut pending: VecDeque<u8> = VecDeque::new();
    let ending = loop {
        poll_console(&mut pending);
        deliver(machine, &mut pending);
        catch_up(machine, start, start_ticks, CLOCK_LAG_TOLERANCE_TICKS);
        let (_, exit) = machine.run(RUN_SLICE_INSTRUCTIONS);
        serial::write_raw(&machine.take_console_output());
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
            Exit::PowerOff { code } => break Ending::PowerOff { code },
            Exit::Reset => break Ending::Reset,
            Exit::GuestCrashed { cause, tval, pc } => break Ending::Crashed { cause, tval, pc },
            Exit::Idle { wake_at_ticks } => {
                if !pending.is_empty() {
                    continue; // The guest will make room in its UART.
                }
                // Poll until the timer is due on the TSC or a console byte arrives; with no
                // timer armed only a console byte can wake the guest.
                loop {
                    poll_console(&mut pending);
                    if !pending.is_empty() {
                        break;
                    }
                    if let Some(wake) = wake_at_ticks {
                        if start_ticks + ticks_since(start) >= wake {
                            break;
                        }
                    }
                    core::hint::spin_loop();
                }
                catch_up(machine, start, start_ticks, 0);
            }
        }
    };
    serial::write_raw(&machine.take_console_output());
    Summary {
        ending,
        instructions: machine.instret().0,
        elapsed_ms: (tsc::read().0 - start.0) * 1000 / tsc::hz(),
    }
}
