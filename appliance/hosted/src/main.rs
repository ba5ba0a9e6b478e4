//! The `understudy` command-line program.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use understudy::demo;
use understudy::live::{self, ClockMode, Ending};
use understudy_machine::{Machine, MachineConfig};

/// Exit status when the guest crashed or could not wake up (a guest's own failure code is
/// passed through unchanged).
const EXIT_GUEST_CRASHED: u8 = 125;
const EXIT_INSTRUCTION_LIMIT: u8 = 124;
const EXIT_USAGE: u8 = 2;
const MEMORY_MIB_DEFAULT: u64 = 128;

#[derive(Parser)]
#[command(
    name = "understudy",
    version,
    about = "A fault-tolerant appliance around a deterministic RISC-V machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one unreplicated guest: console on stdout, stdin to the UART; the exit status is
    /// the guest's finisher code (0 for pass or power off).
    RunGuest(RunGuest),
    /// Show the machine's determinism on the built-in guest: run it with console input
    /// typed at chosen instruction counts, replay it with other run budgets and compare the
    /// state digests, then change one bit of one input and watch the digests part.
    Demo,
}

#[derive(clap::Args)]
struct RunGuest {
    /// A RISC-V ELF executable (entered in M-mode) or a Linux `Image` (entered in S-mode).
    #[arg(long)]
    kernel: PathBuf,
    /// An initial RAM disk for a Linux guest.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = MEMORY_MIB_DEFAULT)]
    memory_mib: u64,
    /// Stop after this many instructions (exit status 124).
    #[arg(long)]
    max_instructions: Option<u64>,
    /// How guest time relates to the wall clock.
    #[arg(long, value_enum, default_value_t = ClockMode::Wall)]
    clock: ClockMode,
    /// Print instructions, seconds and MIPS to stderr at the end.
    #[arg(long)]
    stats: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let kind = error.kind();
            if matches!(
                kind,
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line says what is wrong.
            let text = error.render().to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see `understudy --help`)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        Command::RunGuest(args) => run_guest(args),
        Command::Demo => demo::run().map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn run_guest(args: RunGuest) -> Result<ExitCode> {
    let Some(memory_bytes) = args.memory_mib.checked_mul(1024 * 1024) else {
        bail!("--memory-mib {} is too large", args.memory_mib);
    };
    let kernel = read_file(&args.kernel, "kernel")?;
    let initrd = args
        .initrd
        .as_deref()
        .map(|path| read_file(path, "initrd"))
        .transpose()?;
    let config = MachineConfig {
        memory_bytes,
        bootargs: args.append.clone(),
        ..MachineConfig::default()
    };
    let console_input = live::spawn_console_reader(std::io::stdin());
    let mut total_instructions = 0;
    let mut total_elapsed = std::time::Duration::ZERO;
    let mut console_input = Some(console_input);
    let summary = loop {
        let mut machine = Machine::new(&config, &kernel, initrd.as_deref())
            .with_context(|| format!("cannot start {}", args.kernel.display()))?;
        let summary = live::run(
            &mut machine,
            args.clock,
            console_input.take(),
            &mut std::io::stdout().lock(),
            args.max_instructions
                .map(|limit| limit - total_instructions.min(limit)),
        )?;
        total_instructions += summary.instructions;
        total_elapsed += summary.elapsed;
        if summary.ending != Ending::Reset {
            break summary;
        }
        eprintln!("understudy: guest reset; restarting from its images");
        console_input = Some(live::spawn_console_reader(std::io::stdin()));
    };
    if args.stats {
        let seconds = total_elapsed.as_secs_f64();
        eprintln!("instructions {total_instructions}");
        eprintln!("seconds {seconds:.3}");
        eprintln!(
            "mips {:.1}",
            total_instructions as f64 / seconds.max(1e-9) / 1e6
        );
    }
    Ok(match summary.ending {
        Ending::PowerOff { code } => ExitCode::from(code.min(255) as u8),
        Ending::Reset => unreachable!("reset restarts the loop"),
        Ending::InstructionLimit => {
            eprintln!(
                "understudy: stopped after {total_instructions} instructions (--max-instructions)"
            );
            ExitCode::from(EXIT_INSTRUCTION_LIMIT)
        }
        Ending::GuestCrashed { cause, tval, pc } => {
            eprintln!("understudy: guest crashed: trap cause {cause:#x} tval {tval:#x} at pc {pc:#x} was not delegated to the guest");
            ExitCode::from(EXIT_GUEST_CRASHED)
        }
        Ending::IdleForever => {
            eprintln!("understudy: guest waits for an interrupt that can never come (no timer armed, no console input)");
            ExitCode::from(EXIT_GUEST_CRASHED)
        }
    })
}
