//! Runs the protected guest on `understudy_machine::Machine`: the serial console is its
//! console, the TSC its wall clock, an appliance disk its virtio-blk disk, and the service NIC
//! is bridged at layer 2 to its virtio-net.
//!
//! The loop mirrors the hosted live driver (`appliance/hosted/src/live.rs`, wall-clock mode):
//! every outside value (a console byte, elapsed time) enters the guest only through
//! `Machine::inject` between `run` slices, so the guest sees a function of its images and of
//! those inputs alone (ARCHITECTURE.md, determinism). Guest time follows the instruction count
//! and is pushed forward when it lags the TSC; an idle guest is polled with `pause` until its
//! next timer is due on the TSC or a console byte or frame arrives (interrupts stay masked).
//! The bridge forwards whole Ethernet frames both ways and never answers for the guest: the
//! guest owns its MAC and IP address. The guest's RTC starts from the CMOS clock and its
//! entropy device is fed from RDRAND when the CPU has it (else the guest has none).

use crate::guestdisk::GuestDisk;
use crate::net::NetDevice;
use crate::{cmos, println, serial, tsc};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use understudy_machine::clock::TIMEBASE_HZ;
use understudy_machine::devices::virtio::RxError;
use understudy_machine::{Exit, InjectError, Input, Machine, MachineConfig};
use x86_64::instructions::random::RdRand;

/// Instructions per `Machine::run` call (the hosted driver's slice): console input and output
/// stay responsive and the loop's own cost is negligible.
const RUN_SLICE_INSTRUCTIONS: u64 = 2_000_000;
/// Guest time may lag the TSC by this much (10 ms) before the loop advances it.
const CLOCK_LAG_TOLERANCE_TICKS: u64 = TIMEBASE_HZ / 100;
/// Console bytes read from COM1 but not yet taken by the guest's UART. The 16550's own FIFO
/// is 16 bytes; beyond this the loop stops reading COM1 and the host's FIFO holds the rest.
const PENDING_CONSOLE_BYTES_MAX: usize = 4096;
/// Frames received on the service NIC but not yet taken by the guest (it had no receive
/// buffer); beyond this new frames are dropped, as a NIC drops them.
const PENDING_FRAMES_MAX: usize = 1024;
/// Entropy is handed to the guest in pieces of at most this size (the hosted driver's too).
const ENTROPY_CHUNK_BYTES_MAX: usize = 256;
/// The guest's MAC address on the service network (the hosted driver's too).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
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
    /// The service NIC: the guest gets a virtio-net device bridged to it.
    pub service_nic: Option<NetDevice>,
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
    /// Service-network frames dropped because the guest could not take them.
    pub frames_dropped: u64,
}

/// The guest's machine and its bridge to the service network.
pub struct Guest {
    pub machine: Machine,
    service_nic: Option<NetDevice>,
    /// The source of the guest's entropy device, when the CPU has RDRAND.
    rdrand: Option<RdRand>,
}

/// Builds the machine; a bad image or memory size is the operator's error and is returned.
pub fn build(spec: GuestSpec) -> Result<Guest, understudy_machine::BootError> {
    let rdrand = RdRand::new();
    let config = MachineConfig {
        memory_bytes: spec.memory_bytes,
        bootargs: spec.bootargs,
        net_mac: spec.service_nic.as_ref().map(|_| GUEST_MAC),
        entropy: rdrand.is_some(),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, spec.kernel, spec.initrd)?;
    if let Some(disk) = spec.disk {
        machine.attach_disk(Box::new(disk), DISK_ID);
    }
    Ok(Guest {
        machine,
        service_nic: spec.service_nic,
        rdrand,
    })
}

/// Inputs that arrived but that the guest has not taken yet.
#[derive(Default)]
struct Pending {
    console: VecDeque<u8>,
    frames: VecDeque<Vec<u8>>,
    frames_dropped: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.console.is_empty() && self.frames.is_empty()
    }

    /// Reads what COM1 and the service NIC have received (bounded).
    fn poll(&mut self, service_nic: &mut Option<NetDevice>) {
        poll_console(&mut self.console);
        if let Some(nic) = service_nic {
            while let Some(frame) = nic.receive_frame() {
                if self.frames.len() >= PENDING_FRAMES_MAX {
                    self.frames_dropped += 1;
                } else {
                    self.frames.push_back(frame);
                }
            }
        }
    }

    /// Injects what the guest can take now, in arrival order per source.
    fn deliver(&mut self, machine: &mut Machine) {
        deliver(machine, &mut self.console);
        while let Some(frame) = self.frames.pop_front() {
            let input = Input::Frame(frame);
            match machine.inject(&input) {
                Ok(()) => {}
                // No receive buffer yet: the guest will post some; keep the frame first.
                Err(InjectError::Frame(RxError::NoBuffer)) => {
                    if let Input::Frame(frame) = input {
                        self.frames.push_front(frame);
                    }
                    break;
                }
                // Device down or a frame it can never take: dropped, as a NIC drops it.
                Err(_) => self.frames_dropped += 1,
            }
        }
    }
}

/// Feeds the guest's entropy device what it asks for, from RDRAND. A failed RDRAND (the CPU
/// ran out of entropy for now) leaves the request for the next round.
fn supply_entropy(machine: &mut Machine, rdrand: Option<RdRand>) {
    let Some(rdrand) = rdrand else { return };
    let wanted = machine.wants_entropy().min(ENTROPY_CHUNK_BYTES_MAX);
    if wanted == 0 {
        return;
    }
    let mut bytes = Vec::with_capacity(wanted);
    while bytes.len() < wanted {
        let Some(word) = rdrand.get_u64() else { break };
        let take = (wanted - bytes.len()).min(8);
        bytes.extend_from_slice(&word.to_le_bytes()[..take]);
    }
    if !bytes.is_empty() {
        // The device exists (`wants_entropy` asked), so this cannot fail.
        let _ = machine.inject(&Input::Entropy(bytes));
    }
}

/// Sends what the guest transmitted out of the service NIC.
fn transmit(machine: &mut Machine, service_nic: &mut Option<NetDevice>) {
    let frames = machine.take_transmitted();
    if let Some(nic) = service_nic {
        for frame in frames {
            nic.send_frame(&frame);
        }
    }
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
pub fn run(guest: &mut Guest) -> Summary {
    let Guest {
        machine,
        service_nic,
        rdrand,
    } = guest;
    let rdrand = *rdrand;
    let start = tsc::read();
    let start_ticks = machine.time_ticks();
    match cmos::unix_time_ns() {
        Some(now_ns) => machine
            .inject(&Input::WallClockBase { ns: now_ns })
            .expect("the RTC takes its base"),
        None => println!("understudy: no CMOS clock; the guest's RTC starts at 1970"),
    }
    if rdrand.is_none() {
        println!("understudy: the CPU has no RDRAND; the guest gets no entropy device");
    }
    let mut pending = Pending::default();
    let ending = loop {
        pending.poll(service_nic);
        pending.deliver(machine);
        supply_entropy(machine, rdrand);
        catch_up(machine, start, start_ticks, CLOCK_LAG_TOLERANCE_TICKS);
        let (_, exit) = machine.run(RUN_SLICE_INSTRUCTIONS);
        serial::write_raw(&machine.take_console_output());
        transmit(machine, service_nic);
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
            Exit::PowerOff { code } => break Ending::PowerOff { code },
            Exit::Reset => break Ending::Reset,
            Exit::GuestCrashed { cause, tval, pc } => break Ending::Crashed { cause, tval, pc },
            Exit::Idle { wake_at_ticks } => {
                if !pending.is_empty() {
                    continue; // The guest will make room for what waits.
                }
                // Poll until the timer is due on the TSC or a console byte or frame arrives;
                // with no timer armed only an arrival can wake the guest.
                loop {
                    pending.poll(service_nic);
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
    transmit(machine, service_nic);
    Summary {
        ending,
        instructions: machine.instret().0,
        elapsed_ms: (tsc::read().0 - start.0) * 1000 / tsc::hz(),
        frames_dropped: pending.frames_dropped,
    }
}
