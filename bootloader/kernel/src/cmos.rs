//! The PC's CMOS real-time clock (MC146818 at I/O ports 0x70/0x71), read once to give the
//! guest's RTC its wall-clock base.

use x86_64::instructions::port::Port;

/// CMOS register numbers (MC146818A datasheet, "Address map").
const REGISTER_SECONDS: u8 = 0x00;
const REGISTER_MINUTES: u8 = 0x02;
const REGISTER_HOURS: u8 = 0x04;
const REGISTER_DAY: u8 = 0x07;
const REGISTER_MONTH: u8 = 0x08;
const REGISTER_YEAR: u8 = 0x09;
const REGISTER_A: u8 = 0x0a;
const REGISTER_B: u8 = 0x0b;
/// Register A bit 7: an update is in progress; the time registers are not stable.
const UPDATE_IN_PROGRESS: u8 = 0x80;
/// Register B bit 2: binary (not BCD) values; bit 1: 24-hour mode.
const BINARY_MODE: u8 = 0x04;
const HOURS_24: u8 = 0x02;
/// Polls of register A before deciding there is no working RTC (no RTC reads 0xff).
const UPDATE_POLLS_MAX: u32 = 1_000_000;
/// Attempts at two identical consecutive readings.
const READ_ATTEMPTS_MAX: u32 = 8;
/// The CMOS year register holds two digits; the appliance runs in this century.
const CENTURY: u64 = 2000;

fn read_register(register: u8) -> u8 {
    // SAFETY: selecting a CMOS register and reading it has no memory effects. Bit 7 of the
    // index port keeps NMIs disabled as they already are.
    unsafe {
        Port::<u8>::new(0x70).write(0x80 | register);
        Port::<u8>::new(0x71).read()
    }
}

/// (seconds, minutes, hours, day, month, year) as the registers hold them.
fn read_fields() -> Option<[u8; 6]> {
    for _ in 0..UPDATE_POLLS_MAX {
        if read_register(REGISTER_A) & UPDATE_IN_PROGRESS == 0 {
            return Some([
                read_register(REGISTER_SECONDS),
                read_register(REGISTER_MINUTES),
                read_register(REGISTER_HOURS),
                read_register(REGISTER_DAY),
                read_register(REGISTER_MONTH),
                read_register(REGISTER_YEAR),
            ]);
        }
    }
    None
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian; the "days_from_civil"
/// algorithm of H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The wall time in ns since the Unix epoch (UTC, as PCs and QEMU keep the CMOS clock), or
/// `None` when there is no RTC or it holds an impossible date.
pub fn unix_time_ns() -> Option<u64> {
    let mut previous = read_fields()?;
    let mut fields = None;
    for _ in 0..READ_ATTEMPTS_MAX {
        let current = read_fields()?;
        if current == previous {
            fields = Some(current);
            break;
        }
        previous = current;
    }
    let [seconds, minutes, hours, day, month, year] = fields?;
    let status_b = read_register(REGISTER_B);
    let decode = |value: u8| -> u64 {
        if status_b & BINARY_MODE != 0 {
            u64::from(value)
        } else {
            u64::from(value >> 4) * 10 + u64::from(value & 0x0f)
        }
    };
    let mut hour = decode(hours & 0x7f);
    if status_b & HOURS_24 == 0 {
        // 12-hour mode: bit 7 marks PM; 12 AM is midnight.
        hour %= 12;
        if hours & 0x80 != 0 {
            hour += 12;
        }
    }
    let (second, minute, day, month, year) = (
        decode(seconds),
        decode(minutes),
        decode(day),
        decode(month),
        CENTURY + decode(year),
    );
    let valid = second < 60
        && minute < 60
        && hour < 24
        && (1..=31).contains(&day)
        && (1..=12).contains(&month)
        && year < CENTURY + 100;
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = ((days * 24 + hour) * 60 + minute) * 60 + second;
    Some(seconds * 1_000_000_000)
}

/// This boot's incarnation on the log channel (ft/PROTOCOL.md: a sender's boot counter, which
/// must grow across restarts, or its partner drops every frame as stale): the CMOS clock in
/// microseconds, with the time since the kernel started its clock added (the RTC counts whole
/// seconds). A kernel keeps no counter of its own across boots, so a machine whose clock goes
/// back is refused by a partner that heard a later incarnation: it can then neither claim nor
/// confirm anything, which is safe, and its console says `refused a frame` for it. Without a
/// CMOS clock the TSC stands in (`None` is returned for the caller to say so).
pub fn boot_incarnation_us() -> Option<u64> {
    let seconds = unix_time_ns()? / 1_000_000_000;
    Some(seconds * 1_000_000 + crate::tsc::now().0 % 1_000_000)
}
