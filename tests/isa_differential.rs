//! Differential tests of the hart against QEMU: every ISA test program in
//! appliance/guest/isa/programs runs under `qemu-system-riscv64 -M virt` and under
//! `understudy run-guest`, interpreted (`--interpret`) and translated; console output and
//! exit status must be identical, and the interpreted and translated runs must pass through
//! the same state digests.

#[path = "../appliance/guest/isa/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::time::Duration;

/// Wall-clock limit of one run (the largest program, fp, takes a few seconds under QEMU).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Instruction limit of one run on our machine: far above what any program needs.
const INSTRUCTIONS_MAX: u64 = 2_000_000_000;

fn differential(name: &str) {
    let dir = harness::build_programs();
    let elf: PathBuf = dir.join(format!("{name}.elf"));
    assert!(elf.is_file(), "{} was not built", elf.display());
    let qemu = harness::run_qemu(&elf, true, RUN_TIMEOUT);
    let ours = harness::run_understudy(
        env!("CARGO_BIN_EXE_understudy").as_ref(),
        &elf,
        INSTRUCTIONS_MAX,
        false,
        RUN_TIMEOUT,
    );
    let translated = harness::run_interpreted_and_translated(
        env!("CARGO_BIN_EXE_understudy").as_ref(),
        &elf,
        INSTRUCTIONS_MAX,
        RUN_TIMEOUT,
    )
    .map(|(_, translated)| translated)
    .unwrap_or_else(|report| panic!("translator: {report}"));
    if let Err(report) = harness::compare(name, &qemu, &translated) {
        panic!("translator: {report}");
    }
    if let Err(report) = harness::compare(name, &qemu, &ours) {
        panic!(
            "{report}\nreproduce: qemu-system-riscv64 -M virt -cpu {} -bios none -nographic -icount shift=0 -kernel {}\n\
             and: target/release/understudy run-guest --clock virtual --kernel {}",
            harness::QEMU_CPU,
            elf.display(),
            elf.display()
        );
    }
}

macro_rules! differential_tests {
    ($($test:ident => $program:literal,)*) => {
        $(
            #[test]
            fn $test() {
                differential($program);
            }
        )*

        /// Every program in the directory has a test above.
        #[test]
        fn every_isa_program_has_a_differential_test() {
            let listed = [$($program),*];
            for name in harness::program_names() {
                assert!(listed.contains(&name.as_str()), "programs/{name} has no test in tests/isa_differential.rs");
            }
        }
    };
}

differential_tests! {
    rv64i_arithmetic_shifts_branches_jumps_loads_stores_match_qemu => "rv64i",
    rv64m_multiply_divide_and_division_corner_cases_match_qemu => "rv64m",
    rv64a_lr_sc_and_every_amo_match_qemu => "rv64a",
    f_and_d_arithmetic_rounding_nan_boxing_conversions_flags_match_qemu => "fp",
    every_compressed_form_matches_qemu => "compressed",
    zicsr_instructions_read_only_traps_and_counters_match_qemu => "zicsr",
    fence_i_makes_self_modifying_code_visible_like_qemu => "fencei",
    synchronous_traps_in_each_mode_match_qemu => "traps",
    medeleg_delegation_and_sret_mret_match_qemu => "delegation",
    clint_and_supervisor_interrupts_and_wfi_match_qemu => "interrupts",
    sv39_paging_faults_ad_bits_sum_mxr_mprv_sfence_match_qemu => "sv39",
    plic_claim_complete_and_uart_transmit_interrupt_match_qemu => "plic_uart",
    pmp_warl_tor_na4_napot_priority_locks_mprv_and_page_table_walks_match_qemu => "pmp",
    sdtrig_execute_load_store_breakpoints_mode_bits_and_warl_fields_match_qemu => "sdtrig",
}

/// The SiFive test finisher's code reaches the process status as its low 8 bits, as under
/// QEMU (`sifive_test` calls `exit(code)`, and a process status keeps 8 bits): a guest that
/// fails with code 256 exits 0 under both.
#[test]
fn finisher_codes_above_255_exit_with_their_low_8_bits_like_qemu() {
    let dir = std::env::temp_dir().join(format!("understudy-finisher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    for (code, status) in [(256u16, 0), (257, 1), (300, 44), (255, 255)] {
        let elf = dir.join(format!("exit-{code}.elf"));
        std::fs::write(&elf, understudy_machine::program::finisher_exit_guest(code))
            .expect("write the guest");
        let qemu = harness::run_qemu(&elf, true, RUN_TIMEOUT);
        let ours = harness::run_understudy(
            env!("CARGO_BIN_EXE_understudy").as_ref(),
            &elf,
            INSTRUCTIONS_MAX,
            false,
            RUN_TIMEOUT,
        );
        assert_eq!(qemu.status, Some(status), "qemu, finisher code {code}");
        assert_eq!(
            ours.status,
            Some(status),
            "understudy, finisher code {code}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
