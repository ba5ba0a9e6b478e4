//! Linux guests booted in one process interpreted and translated (every block at once, and
//! only hot blocks as by default), run in lockstep with the same budgets: after every slice
//! the hart state and the machine digest must be the same. On a difference the run is
//! repeated instruction by instruction from the last equal point and the first differing
//! instruction is reported. The minimal 6.1 guest runs its whole boot; the Debian trixie 6.12
//! kernel the first `TRIXIE_INSTRUCTIONS` of its boot (a different kernel, its modules,
//! udev-free init, more of the ISA).

use std::path::PathBuf;

use understudy::code_memory::{MappedCode, CODE_CACHE_BYTES};
use understudy_machine::{Exit, Input, Machine, MachineConfig, HOT_EXECUTIONS_DEFAULT};

mod common;

/// Instructions per lockstep slice of the minimal guest.
const SLICE_INSTRUCTIONS: u64 = 200_000;
/// Instructions after which the comparison stops (the minimal boot takes about 1.05e9).
const INSTRUCTIONS_MAX: u64 = 1_200_000_000;
/// Instructions per slice of the trixie guest: fewer digests over a longer run.
const TRIXIE_SLICE_INSTRUCTIONS: u64 = 5_000_000;
/// The part of the trixie boot compared (it takes about 4.1e9 to power off, most of it idle
/// loops that the first 1.5e9 already cover).
const TRIXIE_INSTRUCTIONS: u64 = 1_500_000_000;

/// A guest to boot twice.
struct Guest {
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    bootargs: &'static str,
    memory_bytes: u64,
}

impl Guest {
    fn minimal() -> Guest {
        let paths = common::artifacts();
        Guest {
            kernel: std::fs::read(PathBuf::from(&paths["minimal_kernel"])).expect("kernel"),
            initrd: std::fs::read(PathBuf::from(&paths["minimal_initramfs"])).expect("initrd"),
            bootargs: "console=ttyS0 understudy.init='echo hello from init'",
            memory_bytes: MachineConfig::default().memory_bytes,
        }
    }

    fn trixie() -> Guest {
        let paths = common::artifacts();
        Guest {
            kernel: std::fs::read(PathBuf::from(&paths["trixie_kernel"])).expect("kernel"),
            initrd: std::fs::read(PathBuf::from(&paths["trixie_initramfs_gz"])).expect("initrd"),
            bootargs: "console=ttyS0 quiet understudy.services=0 understudy.init=poweroff",
            memory_bytes: 256 << 20,
        }
    }

    /// `translate`: the translator's hot threshold, or `None` for the interpreter alone.
    fn boot(&self, translate: Option<u32>) -> Machine {
        let config = MachineConfig {
            bootargs: self.bootargs.to_string(),
            memory_bytes: self.memory_bytes,
            ..MachineConfig::default()
        };
        let mut machine =
            Machine::new(&config, &self.kernel, Some(&self.initrd)).expect("the guest boots");
        if let Some(hot_executions) = translate {
            machine
                .enable_translator(
                    Box::new(MappedCode::new(CODE_CACHE_BYTES).expect("executable memory")),
                    hot_executions,
                )
                .expect("translator");
        }
        machine
    }
}

fn hart_state(machine: &Machine) -> Vec<u8> {
    let mut out = Vec::new();
    machine.hart().write_state(&mut out);
    out
}

/// Runs `budget` instructions the way the live driver would without inputs: an idle guest
/// skips to its timer. Returns false when the guest stopped for good.
fn step(machine: &mut Machine, budget: u64) -> bool {
    let mut left = budget;
    while left > 0 {
        let (executed, exit) = machine.run(left);
        left -= executed.0.min(left);
        machine.take_console_output();
        match exit {
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
            Exit::Idle {
                wake_at_ticks: Some(wake),
            } => {
                let now = machine.time_ticks();
                machine
                    .inject(&Input::AdvanceTime {
                        ticks: wake.saturating_sub(now).max(1),
                    })
                    .expect("time advances");
            }
            _ => return false,
        }
    }
    true
}

fn describe(machine: &Machine) -> String {
    let hart = machine.hart();
    let mut text = format!(
        "pc {:#x} instret {} privilege {:?}",
        hart.pc(),
        hart.instret().0,
        hart.privilege()
    );
    for i in 1..32 {
        text.push_str(&format!(" x{i}={:#x}", hart.x(i)));
    }
    text
}

#[test]
fn linux_boot_with_every_block_translated_stays_in_lockstep_with_the_interpreter() {
    lockstep(&Guest::minimal(), 1, SLICE_INSTRUCTIONS, INSTRUCTIONS_MAX);
}

#[test]
fn linux_boot_with_hot_blocks_translated_stays_in_lockstep_with_the_interpreter() {
    lockstep(
        &Guest::minimal(),
        HOT_EXECUTIONS_DEFAULT,
        SLICE_INSTRUCTIONS,
        INSTRUCTIONS_MAX,
    );
}

#[test]
fn debian_kernel_boot_with_hot_blocks_translated_stays_in_lockstep_with_the_interpreter() {
    lockstep(
        &Guest::trixie(),
        HOT_EXECUTIONS_DEFAULT,
        TRIXIE_SLICE_INSTRUCTIONS,
        TRIXIE_INSTRUCTIONS,
    );
}

fn lockstep(guest: &Guest, hot_executions: u32, slice: u64, instructions_max: u64) {
    let translate = Some(hot_executions);
    let mut interpreted = guest.boot(None);
    let mut translated = guest.boot(translate);
    let mut done = 0;
    let mut divergence = None;
    while done < instructions_max {
        let going = step(&mut interpreted, slice);
        let going_too = step(&mut translated, slice);
        if hart_state(&interpreted) != hart_state(&translated)
            || interpreted.digest() != translated.digest()
        {
            divergence = Some(done);
            break;
        }
        assert_eq!(going, going_too, "one machine stopped at {done}");
        if !going {
            break;
        }
        done += slice;
    }
    let Some(start) = divergence else {
        assert!(
            translated.translator_stats().unwrap().entries > 0,
            "translated code never ran"
        );
        return;
    };
    // Replay both to the last equal slice, then one instruction at a time.
    let mut interpreted = guest.boot(None);
    let mut translated = guest.boot(translate);
    step(&mut interpreted, start);
    step(&mut translated, start);
    for offset in 0..slice {
        let before = describe(&interpreted);
        step(&mut interpreted, 1);
        step(&mut translated, 1);
        if hart_state(&interpreted) != hart_state(&translated)
            || interpreted.digest() != translated.digest()
        {
            panic!(
                "first difference after instruction {}:\nbefore      {before}\ninterpreted {}\ntranslated  {}",
                start + offset,
                describe(&interpreted),
                describe(&translated)
            );
        }
    }
    panic!("the slice from {start} differed, but not one instruction at a time");
}
