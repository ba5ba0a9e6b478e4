//! `understudy replay --gdb`: Debian's gdb-multiarch stops a replayed Linux boot at a kernel
//! function, reads kernel memory through the guest's page tables, steps, watches, and lets it
//! run on, and the replay still reaches every recorded digest and the recorded end; a raw
//! client stops a running replay with Ctrl-C, steps it and detaches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use understudy::gdb::packet::{encode_packet, Decoder, Event, INTERRUPT_BYTE};
use understudy::gdb::target;

mod common;
use common::{artifacts, digest_lines, understudy, work_dir};

/// Where Linux 6.1 maps the first byte of a riscv64 `Image` (KERNEL_LINK_ADDR,
/// arch/riscv/include/asm/pgtable.h): kernel virtual address = this + offset in the file.
const KERNEL_VIRTUAL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Digest checkpoints of the recording and the replays, in instructions.
const DIGEST_EVERY: &str = "50000000";
/// How long a debugged replay may take before the test gives up on it.
const REPLAY_LIMIT: Duration = Duration::from_secs(600);

/// A recorded boot of the minimal guest whose init printed kernel symbols.
struct Recording {
    log: PathBuf,
    kernel: PathBuf,
    /// `start_kernel`'s address, from the guest's own /proc/kallsyms.
    start_kernel: u64,
    /// The digest lines the recording printed.
    digests: Vec<String>,
    /// The summary line of a replay without a debugger, up to its duration.
    summary: String,
}

/// Records once for every test of this file: the boot, then a plain replay of it.
fn recording() -> &'static Recording {
    static RECORDING: OnceLock<Recording> = OnceLock::new();
    RECORDING.get_or_init(|| {
        let paths = artifacts();
        let dir = work_dir("gdb-replay");
        let log = dir.join("boot.log");
        let kernel = paths["minimal_kernel"].clone();
        let append = "console=ttyS0 understudy.services=0 understudy.init='grep -E \" start_kernel$\" /proc/kallsyms'";
        let recorded = understudy(
            &[
                "run-guest",
                "--kernel",
                kernel.to_str().unwrap(),
                "--initrd",
                paths["minimal_initramfs"].to_str().unwrap(),
                "--append",
                append,
                "--clock",
                "virtual",
                "--record",
                log.to_str().unwrap(),
                "--digest-every",
                DIGEST_EVERY,
            ],
            b"",
        );
        let console = String::from_utf8_lossy(&recorded.stdout).into_owned();
        assert!(recorded.status.success(), "{console}");
        let start_kernel = console
            .lines()
            .find_map(|line| line.strip_suffix(" T start_kernel"))
            .map(|address| u64::from_str_radix(address.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("the guest printed start_kernel's address: {console}"));
        let digests = digest_lines(&recorded.stderr);
        let plain = understudy(
            &["replay", log.to_str().unwrap(), "--digest-every", DIGEST_EVERY],
            b"",
        );
        assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
        assert_eq!(digest_lines(&plain.stderr), digests);
        let summary = summary(&plain.stderr);
        assert_eq!(
            digests.len() as u64,
            instructions(&summary) / DIGEST_EVERY.parse::<u64>().unwrap(),
            "a digest at every checkpoint the boot passed: {summary}"
        );
        Recording {
            log,
            kernel,
            start_kernel,
            digests,
            summary,
        }
    })
}

/// The replay's last line, without its duration: inputs, digests checked, instructions.
fn summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let last = text.lines().last().unwrap_or_default();
    let (summary, _seconds) = last
        .rsplit_once(" (")
        .unwrap_or_else(|| panic!("a summary line: {text}"));
    summary.to_owned()
}

/// The instruction count of a summary line.
fn instructions(summary: &str) -> u64 {
    summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" instructions"))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("an instruction count in {summary:?}"))
}

/// A replay serving GDB: the process, the address it listens on, and its stderr so far.
struct DebuggedReplay {
    child: Child,
    address: String,
    stderr: JoinHandle<String>,
}

fn debugged_replay(recording: &Recording) -> DebuggedReplay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "replay",
            recording.log.to_str().unwrap(),
            "--digest-every",
            DIGEST_EVERY,
            "--gdb",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let address = first
        .trim()
        .strip_prefix("replay: waiting for gdb on ")
        .unwrap_or_else(|| panic!("the replay says where it waits: {first:?}"))
        .to_owned();
    let stderr = std::thread::spawn(move || {
        let mut rest = first;
        stderr.read_to_string(&mut rest).unwrap();
        rest
    });
    DebuggedReplay {
        child,
        address,
        stderr,
    }
}

/// Runs `command` to its end and returns its output, killing it after `limit`.
fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb-multiarch runs (tools/install-prerequisites installs it)");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("{command:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Waits for the replay to end (killing it after `REPLAY_LIMIT`); its exit status and stderr.
fn finish(mut replay: DebuggedReplay) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = replay.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > REPLAY_LIMIT {
            replay.child.kill().unwrap();
            panic!("the debugged replay did not end within {REPLAY_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, replay.stderr.join().unwrap())
}

/// `count` little-endian u64s of the kernel image at the kernel virtual address `vaddr`.
fn image_words(kernel: &Path, vaddr: u64, count: usize) -> Vec<u64> {
    let image = std::fs::read(kernel).unwrap();
    let offset = (vaddr - KERNEL_VIRTUAL_BASE) as usize;
    image[offset..offset + 8 * count]
        .chunks(8)
        .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap()))
        .collect()
}

/// Kernel virtual addresses of every "Linux version " in the image: the banner and its
/// copies.
fn banners(kernel: &Path) -> Vec<u64> {
    let image = std::fs::read(kernel).unwrap();
    let needle = b"Linux version ";
    image
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| window == needle)
        .map(|(offset, _)| KERNEL_VIRTUAL_BASE + offset as u64)
        .collect()
}

/// The words after `prefix` on the first line of `text` that starts with it.
fn fields<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("a line starting {prefix:?} in:\n{text}"));
    line[prefix.len()..].split_whitespace().collect()
}

/// The text between the first line starting with `from` and the next line starting with
/// `to` (exclusive), so a test can read one command's output.
fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} in:\n{text}"));
    let rest = &text[start..];
    let end = rest[from.len()..]
        .find(to)
        .map_or(rest.len(), |end| end + from.len());
    &rest[..end]
}

fn parse_hex(text: &str) -> u64 {
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("a hex number: {text:?}"))
}

fn hex(value: u64) -> String {
    format!("{value:#x}")
}

#[test]
fn gdb_stops_a_replayed_boot_at_start_kernel_reads_memory_steps_and_watches_and_the_replay_stays_exact(
) {
    let recording = recording();
    let start_kernel = recording.start_kernel;
    let banners = banners(&recording.kernel);
    assert_eq!(banners.len(), 2, "linux_banner and its copy in the image");
    let replay = debugged_replay(recording);
    let mut gdb = Command::new("gdb-multiarch");
    gdb.args(["-nx", "-batch", "-ex", "set architecture riscv:rv64"])
        .args(["-ex", &format!("target remote {}", replay.address)]);
    for command in [
        format!("break *{}", hex(start_kernel)),
        "continue".into(),
        "echo ==breakpoint\\n".into(),
        "info registers pc".into(),
        format!("x/2gx {}", hex(start_kernel)),
        format!("x/2gx {}", hex(banners[0])),
        "monitor icount".into(),
        "stepi".into(),
        "echo ==stepped\\n".into(),
        "info registers pc".into(),
        "monitor icount".into(),
        // The first instruction made start_kernel's frame; the slot just below it is where
        // the first function it calls saves its return address.
        "x/gx $sp - 8".into(),
        "eval \"watch *(long *)%lu\", $sp - 8".into(),
        "continue".into(),
        "echo ==watched\\n".into(),
        "info registers ra".into(),
        "delete".into(),
        format!("rwatch *(char *){}", hex(banners[0])),
        format!("rwatch *(char *){}", hex(banners[1])),
        "continue".into(),
        "echo ==read-watched\\n".into(),
        "delete".into(),
        "continue".into(),
    ] {
        gdb.args(["-ex", &command]);
    }
    let output = output_within(&mut gdb, REPLAY_LIMIT);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, stderr) = finish(replay);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Stopped before start_kernel's first instruction, at its address.
    let at_breakpoint = between(&text, "==breakpoint", "==stepped");
    assert!(
        text.contains(&format!("Breakpoint 1, {start_kernel:#018x} in ?? ()")),
        "{text}"
    );
    assert_eq!(
        fields(at_breakpoint, "pc "),
        [hex(start_kernel), hex(start_kernel)]
    );
    // Kernel memory read through the guest's Sv39 tables holds the image's bytes: the
    // function's first instructions and the version banner ("Linux ve", "rsion 6.").
    let code = image_words(&recording.kernel, start_kernel, 2);
    assert_eq!(
        fields(at_breakpoint, &format!("{}:", hex(start_kernel))),
        [format!("{:#018x}", code[0]), format!("{:#018x}", code[1])]
    );
    assert_eq!(
        fields(at_breakpoint, &format!("{}:", hex(banners[0]))),
        ["0x65762078756e694c", "0x2e36206e6f697372"]
    );

    // One step: past the first instruction (2 bytes if compressed, else 4), and exactly one
    // instruction further in the replay (`monitor icount` answers on GDB's stderr).
    let stepped = between(&text, "==stepped", "==watched");
    let first_length = if code[0] & 0b11 == 0b11 { 4 } else { 2 };
    let next = hex(start_kernel + first_length);
    assert_eq!(fields(stepped, "pc "), [next.clone(), next]);
    let gdb_stderr = String::from_utf8_lossy(&output.stderr);
    let counts: Vec<u64> = gdb_stderr
        .lines()
        .filter_map(|line| line.strip_prefix("instruction count "))
        .map(|count| count.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{gdb_stderr}");
    assert_eq!(counts[1], counts[0] + 1);

    // The write watchpoint reports the slot's old value and the return address the callee
    // stored there, which is still in its ra.
    let slot_line = stepped
        .lines()
        .find(|line| line.starts_with("0x"))
        .unwrap_or_else(|| panic!("the slot's value in:\n{stepped}"));
    let (slot, old) = slot_line.split_once(":\t").unwrap();
    let slot = parse_hex(slot);
    let old = parse_hex(old);
    let watched = between(&text, "==watched", "==read-watched");
    let ra = parse_hex(fields(watched, "ra ")[0]);
    assert_ne!(old, ra);
    let expected = format!(
        "Hardware watchpoint 2: *(long *){slot}\n\nOld value = {}\nNew value = {}\n",
        old as i64, ra as i64
    );
    assert!(stepped.contains(&expected), "{expected} in:\n{stepped}");

    // A read watchpoint on each banner: the kernel's first read of either stops the replay.
    let read_stops = [
        format!(
            "Hardware read watchpoint 3: *(char *){}\n\nValue = 76 'L'",
            hex(banners[0])
        ),
        format!(
            "Hardware read watchpoint 4: *(char *){}\n\nValue = 76 'L'",
            hex(banners[1])
        ),
    ];
    assert!(
        read_stops
            .iter()
            .any(|stop| watched.contains(stop.as_str())),
        "{watched}"
    );

    // Then to the end: GDB sees the exit, and the replay checked every digest.
    assert!(
        text.contains("[Inferior 1 (Remote target) exited normally]"),
        "{text}"
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(digest_lines(stderr.as_bytes()), recording.digests);
    assert_eq!(summary(stderr.as_bytes()), recording.summary);
    assert!(
        stderr.contains("replay: gdb connected from 127.0.0.1:"),
        "{stderr}"
    );
}

/// A minimal GDB client over the stub's own codec: sends packets, reads replies.
struct Client {
    stream: TcpStream,
    decoder: Decoder,
}

impl Client {
    fn connect(address: &str) -> Client {
        let stream = TcpStream::connect(address).expect("the stub listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        Client {
            stream,
            decoder: Decoder::default(),
        }
    }

    fn send(&mut self, payload: &str) {
        let mut bytes = Vec::new();
        encode_packet(payload.as_bytes(), &mut bytes);
        self.stream.write_all(&bytes).unwrap();
    }

    /// The next reply packet (acknowledging it).
    fn reply(&mut self) -> String {
        let mut byte = [0u8; 1];
        loop {
            self.stream.read_exact(&mut byte).expect("a reply");
            if let Some(Event::Packet(payload)) = self.decoder.push(byte[0]) {
                self.stream.write_all(b"+").unwrap();
                return String::from_utf8(payload).unwrap();
            }
        }
    }

    fn ask(&mut self, payload: &str) -> String {
        self.send(payload);
        self.reply()
    }

    /// The replay's instruction count, from `monitor icount` (hex console output, then OK).
    fn instruction_count(&mut self) -> u64 {
        let output = self.ask(&format!("qRcmd,{}", hex_text("icount")));
        assert_eq!(self.reply(), "OK");
        let text: String = (1..output.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&output[i..i + 2], 16).unwrap() as char)
            .collect();
        text.trim()
            .strip_prefix("instruction count ")
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("an instruction count: {text:?}"))
    }

    /// A 64-bit register by its remote number (`p`: little-endian hex).
    fn register(&mut self, number: u32) -> u64 {
        let reply = self.ask(&format!("p{number:x}"));
        let bytes: Vec<u8> = (0..reply.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&reply[i..i + 2], 16).unwrap())
            .collect();
        u64::from_le_bytes(bytes.try_into().unwrap())
    }
}

fn hex_text(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn ctrl_c_stops_a_running_replay_a_step_retires_one_instruction_and_after_detach_it_ends_as_recorded(
) {
    let recording = recording();
    let replay = debugged_replay(recording);
    let mut client = Client::connect(&replay.address);
    assert!(client.ask("qSupported:swbreak+").starts_with("PacketSize="));
    assert_eq!(client.ask("?"), "T05thread:1;");
    client.send("vCont;c");
    std::thread::sleep(Duration::from_millis(300));
    client.stream.write_all(&[INTERRUPT_BYTE]).unwrap();
    assert_eq!(client.reply(), "T02thread:1;", "stopped by SIGINT");
    assert_eq!(client.ask("?"), "T02thread:1;");
    // Stopped at a slice boundary somewhere in the boot, not at its end.
    let count = client.instruction_count();
    let total = instructions(&recording.summary);
    assert!(count > 0 && count < total, "{count} of {total}");
    // A single step retires one instruction, or enters the interrupt pending here and stops
    // at its handler with none retired.
    assert_eq!(client.ask("vCont;s:1"), "T05thread:1;");
    let stepped = client.instruction_count();
    let stvec = target::FIRST_CSR
        + target::CSRS
            .iter()
            .position(|(name, _)| *name == "stvec")
            .unwrap() as u32;
    let handler = client.register(stvec) & !3;
    let pc = client.register(target::PC);
    assert!(
        stepped == count + 1 || (stepped == count && pc == handler),
        "a step from {count} to {stepped}, pc {pc:#x}"
    );
    assert_eq!(client.ask("D"), "OK");
    drop(client);
    let (status, stderr) = finish(replay);
    assert!(status.success(), "{stderr}");
    assert_eq!(digest_lines(stderr.as_bytes()), recording.digests);
    assert_eq!(summary(stderr.as_bytes()), recording.summary);
}
