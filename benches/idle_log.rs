//! Log bandwidth of an idle guest: boots the minimal Linux guest with `--record --clock wall`,
//! lets it sleep, and prints the record log's bytes per second of guest time over 60 s of
//! idle guest time, broken down by entry kind (the record file is the replication stream, so
//! this is the log channel's load too), against the 0.5 Mbit/s target (issue 3, item 5),
//! once with the console attached and once with stdin at end of file.
//! Run with `cargo bench --bench idle_log`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use understudy::record::{Frame, LogReader};
use understudy_ft::Record;
use understudy_machine::clock::TIMEBASE_HZ;
use understudy_replica::{CONSOLE, NET};

/// VMware FT's log link carries 0.5–1.5 Mbit/s; ours should stay under the low end.
const TARGET_MBIT_PER_S: f64 = 0.5;
/// The measured window of guest time.
const WINDOW_S: u64 = 60;
/// How long the guest sleeps after its ready marker; the window ends `WINDOW_END_MARGIN_S`
/// before the log's end, so it lies inside the sleep and leaves out boot and power off.
const GUEST_SLEEP_S: u64 = 70;
const WINDOW_END_MARGIN_S: u64 = 3;
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// After the ready marker: the sleep plus power off, with room for a slow host.
const EXIT_TIMEOUT: Duration = Duration::from_secs(GUEST_SLEEP_S + 120);
/// Log frame overhead besides the postcard body: the length prefix and the chain hash
/// (see appliance/hosted/src/record.rs).
const FRAME_LENGTH_BYTES: u64 = 4;
const FRAME_CHAIN_BYTES: u64 = 32;
/// Time advances shorter than this (10 us) are catch-ups, not sleeps.
const TINY_ADVANCE_TICKS: u64 = TIMEBASE_HZ / 100_000;
const READY_MARKER: &str = "understudy-guest: ready";
/// Linux reports process CPU time in USER_HZ ticks (proc(5)).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

fn artifacts() -> BTreeMap<String, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("guest/build"))
        .arg("--print-paths")
        .arg("minimal")
        .output()
        .expect("guest/build runs");
    if !output.status.success() {
        eprintln!(
            "idle_log: guest artifacts are missing; run guest/build minimal first: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::process::exit(1);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, path)| (name.to_owned(), PathBuf::from(path)))
        .collect()
}

/// utime + stime of a live process from /proc/<pid>/stat (proc(5)).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SECOND))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Kills the guest if the bench stops early, so no emulator outlives it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Header(_) => "header",
        Frame::Entry(entry) => match &entry.record {
            Record::AdvanceTime { .. } => "input AdvanceTime",
            Record::DeviceInput { device, .. } if *device == CONSOLE => "input console byte",
            Record::DeviceInput { device, .. } if *device == NET => "input frame (network)",
            Record::DeviceInput { .. } => "input other device",
            Record::Entropy { .. } => "input Entropy",
            Record::WallClockBase { .. } => "input WallClockBase",
            Record::Output { .. } => "output marker",
            Record::Horizon => "horizon",
            Record::Digest { .. } => "digest",
        },
        Frame::End { .. } => "end",
    }
}

/// Per kind: frames and bytes (with length prefix and chain hash).
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "idle_log".contains(f.as_str())) {
        return;
    }
    let paths = artifacts();
    let dir = std::env::temp_dir().join(format!("understudy-idle-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let mut results = Vec::new();
    for console in [Console::Attached, Console::Closed] {
        results.push((console, measure(&paths, &dir, console)));
        println!();
    }
    for (console, mbit_per_s) in results {
        println!(
            "summary: {}: {mbit_per_s:.4} Mbit/s, {:.3} of the {TARGET_MBIT_PER_S} Mbit/s target",
            console.describe(),
            mbit_per_s / TARGET_MBIT_PER_S
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guest's console input: how a live guest normally runs, or with stdin at end of file
/// (as under a test harness), which leaves the live driver with no open input source.
#[derive(Clone, Copy)]
enum Console {
    Attached,
    Closed,
}

impl Console {
    fn describe(self) -> &'static str {
        match self {
            Console::Attached => "console attached (stdin an open pipe)",
            Console::Closed => "stdin at end of file (</dev/null), no network",
        }
    }
}

/// Records an idle guest and prints the log bandwidth of its idle window; returns Mbit/s.
fn measure(paths: &BTreeMap<String, PathBuf>, dir: &Path, console_input: Console) -> f64 {
    let log = dir.join("idle.log");
    let append = format!("console=ttyS0 understudy.init='sleep {GUEST_SLEEP_S}'");
    println!("== {}", console_input.describe());
    println!("load average before: {}", load_average());
    println!(
        "command: understudy run-guest --kernel {} --initrd {} --append \"{append}\" --record {} --clock wall",
        paths["minimal_kernel"].display(),
        paths["minimal_initramfs"].display(),
        log.display()
    );

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .arg("run-guest")
        .arg("--kernel")
        .arg(&paths["minimal_kernel"])
        .arg("--initrd")
        .arg(&paths["minimal_initramfs"])
        .args(["--append", &append, "--clock", "wall", "--record"])
        .arg(&log)
        // An attached console is a pipe that stays open (in the `Child`) and silent.
        .stdin(match console_input {
            Console::Attached => Stdio::piped(),
            Console::Closed => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy starts");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut guest = Reaper(child);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr_text = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    // The ready marker, then two CPU-time samples a minute apart while the guest sleeps.
    let mut console = String::new();
    let ready_after = loop {
        match lines.recv_timeout(BOOT_TIMEOUT.saturating_sub(started.elapsed())) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
                if line.contains(READY_MARKER) {
                    break started.elapsed();
                }
            }
            Err(_) => {
                drop(guest);
                eprintln!(
                    "idle_log: no ready marker within {BOOT_TIMEOUT:?}:\n{console}\n{}",
                    stderr_text.join().unwrap_or_default()
                );
                std::process::exit(1);
            }
        }
    };
    println!("ready marker after {:.1} s wall", ready_after.as_secs_f64());
    let sample_start = Duration::from_secs(2);
    let sample_length = Duration::from_secs(WINDOW_S);
    std::thread::sleep(sample_start);
    let cpu_before = cpu_time(pid);
    let wall_before = Instant::now();
    std::thread::sleep(sample_length);
    let cpu_after = cpu_time(pid);
    let wall_sampled = wall_before.elapsed();

    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        match guest.0.try_wait().expect("wait for the guest") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                drop(guest);
                eprintln!("idle_log: the guest did not power off within {EXIT_TIMEOUT:?}");
                std::process::exit(1);
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let stderr_text = stderr_text.join().unwrap_or_default();
    assert!(
        status.success(),
        "understudy exited with {status}: {stderr_text}"
    );

    let mut reader = LogReader::open(&log).expect("the log reads back");
    let instructions_per_tick = reader.header.instructions_per_tick;
    // Guest time at each frame: the instruction count's share plus every advance so far
    // (appliance/machine/src/clock.rs).
    let mut advanced_ticks: u64 = 0;
    let mut frames: Vec<(u64, &'static str, u64)> = Vec::new();
    // Per AdvanceTime frame: guest time, its ticks and the instructions since the input
    // before it, to tell a few long sleeps from many tiny catch-ups.
    let mut advances: Vec<(u64, u64, u64)> = Vec::new();
    let mut previous_at: u64 = 0;
    while let Some(frame) = reader.next_frame().expect("the log is intact") {
        let body = postcard::to_stdvec(&frame).expect("frames encode").len() as u64;
        let bytes = FRAME_LENGTH_BYTES + body + FRAME_CHAIN_BYTES;
        let at = match &frame {
            Frame::Entry(entry) => {
                let at = entry.at.0;
                if let Record::AdvanceTime { ticks } = entry.record {
                    advanced_ticks += ticks;
                    advances.push((
                        at / instructions_per_tick + advanced_ticks,
                        ticks,
                        at - previous_at,
                    ));
                }
                if matches!(
                    entry.record,
                    Record::DeviceInput { .. }
                        | Record::AdvanceTime { .. }
                        | Record::Entropy { .. }
                        | Record::WallClockBase { .. }
                ) {
                    previous_at = at;
                }
                at
            }
            Frame::End { at, .. } => at.0,
            Frame::Header(_) => 0,
        };
        frames.push((
            at / instructions_per_tick + advanced_ticks,
            kind(&frame),
            bytes,
        ));
    }
    let end_ticks = frames.last().map_or(0, |&(ticks, _, _)| ticks);
    let window_end = end_ticks.saturating_sub(WINDOW_END_MARGIN_S * TIMEBASE_HZ);
    let window_start = window_end.saturating_sub(WINDOW_S * TIMEBASE_HZ);
    let total_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());
    println!(
        "log: {total_bytes} bytes, {} frames, {:.1} s of guest time in all",
        frames.len(),
        end_ticks as f64 / TIMEBASE_HZ as f64
    );
    assert!(
        end_ticks >= (WINDOW_S + WINDOW_END_MARGIN_S) * TIMEBASE_HZ,
        "the run is shorter than the window"
    );

    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for &(ticks, kind, bytes) in &frames {
        if ticks > window_start && ticks <= window_end {
            let tally = tallies.entry(kind).or_default();
            tally.frames += 1;
            tally.bytes += bytes;
        }
    }
    let window_bytes: u64 = tallies.values().map(|t| t.bytes).sum();
    let window_frames: u64 = tallies.values().map(|t| t.frames).sum();
    let mbit_per_s = window_bytes as f64 * 8.0 / WINDOW_S as f64 / 1e6;
    println!(
        "idle window: guest time {:.1}..{:.1} s: {window_frames} frames, {window_bytes} bytes",
        window_start as f64 / TIMEBASE_HZ as f64,
        window_end as f64 / TIMEBASE_HZ as f64
    );
    for (kind, tally) in &tallies {
        println!(
            "  {kind:<24} {:>7} frames {:>9} bytes {:>6.1} frames/s {:>9.4} Mbit/s ({:.0}%)",
            tally.frames,
            tally.bytes,
            tally.frames as f64 / WINDOW_S as f64,
            tally.bytes as f64 * 8.0 / WINDOW_S as f64 / 1e6,
            100.0 * tally.bytes as f64 / window_bytes.max(1) as f64
        );
    }
    let chain_share = window_frames * (FRAME_LENGTH_BYTES + FRAME_CHAIN_BYTES);
    println!(
        "  of which length prefixes and chain hashes: {chain_share} bytes ({:.0}%)",
        100.0 * chain_share as f64 / window_bytes.max(1) as f64
    );
    println!(
        "idle log bandwidth: {mbit_per_s:.4} Mbit/s per second of guest time; target {TARGET_MBIT_PER_S} Mbit/s; ratio to target {:.4} ({})",
        mbit_per_s / TARGET_MBIT_PER_S,
        if mbit_per_s < TARGET_MBIT_PER_S {
            "under target"
        } else {
            "OVER target"
        }
    );
    if mbit_per_s >= TARGET_MBIT_PER_S {
        if let Some((kind, tally)) = tallies.iter().max_by_key(|(_, t)| t.bytes) {
            println!(
                "dominated by {kind}: {} bytes of {window_bytes}",
                tally.bytes
            );
        }
    }
    let mut window_advances: Vec<(u64, u64)> = advances
        .iter()
        .filter(|&&(ticks, _, _)| ticks > window_start && ticks <= window_end)
        .map(|&(_, advance, gap)| (advance, gap))
        .collect();
    if !window_advances.is_empty() {
        let count = window_advances.len();
        let tiny = window_advances
            .iter()
            .filter(|&&(advance, _)| advance < TINY_ADVANCE_TICKS)
            .count();
        window_advances.sort_unstable_by_key(|&(advance, _)| advance);
        let median_ticks = window_advances[count / 2].0;
        window_advances.sort_unstable_by_key(|&(_, gap)| gap);
        let median_gap = window_advances[count / 2].1;
        println!(
            "AdvanceTime in the window: median {median_ticks} ticks ({:.1} us), median {median_gap} guest instructions since the previous input, {:.0}% advance less than {TINY_ADVANCE_TICKS} ticks",
            median_ticks as f64 * 1e6 / TIMEBASE_HZ as f64,
            100.0 * tiny as f64 / count as f64
        );
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let used = after.saturating_sub(before);
        println!(
            "host CPU of the idle guest: {:.2} s in {:.1} s wall ({:.1}% of one core)",
            used.as_secs_f64(),
            wall_sampled.as_secs_f64(),
            100.0 * used.as_secs_f64() / wall_sampled.as_secs_f64()
        );
    }
    println!("load average after: {}", load_average());
    let _ = std::fs::remove_file(&log);
    mbit_per_s
}
