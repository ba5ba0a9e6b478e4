//! The determinism contract: same inputs at the same instruction counts give the same
//! machine, whatever run budgets the driver uses; a one-bit change in an input shows.

use understudy_machine::program::echo_guest;
use understudy_machine::{Exit, Input, Machine, MachineConfig};

const CHECKPOINT_INSTRUCTIONS: u64 = 5_000;
const INPUT_BYTES: i32 = 6;

/// (instruction count, input) pairs, in order.
fn schedule(flip_bit_of_third_byte: bool) -> Vec<(u64, Input)> {
    let mut inputs = Vec::new();
    for (i, &byte) in b"replay".iter().enumerate() {
        let byte = if i == 2 && flip_bit_of_third_byte {
            byte ^ 1
        } else {
            byte
        };
        let at = 3_000 + 7_919 * i as u64;
        inputs.push((at, Input::ConsoleByte(byte)));
        inputs.push((
            at + 1_000,
            Input::AdvanceTime {
                ticks: 123 + i as u64,
            },
        ));
    }
    inputs
}

/// Runs the echo guest, injecting `inputs` at their counts, with run calls of at most
/// `slice` instructions; returns the digests at every checkpoint and the console output.
fn run(inputs: &[(u64, Input)], slice: u64) -> (Vec<(u64, [u8; 32])>, Vec<u8>) {
    let config = MachineConfig {
        memory_bytes: 8 << 20,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, &echo_guest(INPUT_BYTES), None).unwrap();
    let mut digests = Vec::new();
    let mut output = Vec::new();
    let mut next_input = 0;
    let mut next_checkpoint = CHECKPOINT_INSTRUCTIONS;
    loop {
        let now = machine.instret().0;
        while next_input < inputs.len() && inputs[next_input].0 == now {
            machine.inject(&inputs[next_input].1).unwrap();
            next_input += 1;
        }
        if now == next_checkpoint {
            digests.push((now, machine.digest()));
            next_checkpoint += CHECKPOINT_INSTRUCTIONS;
        }
        let mut stop = next_checkpoint.min(now + slice);
        if let Some((at, _)) = inputs.get(next_input) {
            stop = stop.min(*at);
        }
        let (_, exit) = machine.run(stop - now);
        output.extend(machine.take_console_output());
        match exit {
            Exit::BudgetExhausted => {}
            Exit::PowerOff { code: 0 } => break,
            other => panic!("unexpected exit {other:?} at {}", machine.instret().0),
        }
    }
    digests.push((machine.instret().0, machine.digest()));
    (digests, output)
}

#[test]
fn same_inputs_give_identical_digests_at_every_checkpoint_whatever_the_budgets() {
    let inputs = schedule(false);
    let (coarse, output) = run(&inputs, 1_000_000);
    let (fine, _) = run(&inputs, 997);
    let (single_steps, _) = run(&inputs, 1);
    assert_eq!(output, b"replay");
    assert!(coarse.len() > 8, "the run spans several checkpoints");
    assert_eq!(coarse, fine);
    assert_eq!(coarse, single_steps);
}

#[test]
fn a_one_bit_difference_in_an_input_changes_the_digests_from_that_point_on() {
    let original = run(&schedule(false), 4_096).0;
    let flipped = run(&schedule(true), 4_096).0;
    let third_byte_at = schedule(false)[4].0;
    for (a, b) in original.iter().zip(&flipped) {
        assert_eq!(a.0, b.0);
        if a.0 <= third_byte_at {
            assert_eq!(a.1, b.1, "digest at {} precedes the changed input", a.0);
        } else {
            assert_ne!(a.1, b.1, "digest at {} follows the changed input", a.0);
        }
    }
}

#[test]
fn a_different_time_advance_changes_the_digest() {
    let mut inputs = schedule(false);
    let original = run(&inputs, 4_096).0;
    inputs[1].1 = Input::AdvanceTime { ticks: 124 };
    let changed = run(&inputs, 4_096).0;
    assert_ne!(original.last(), changed.last());
}
