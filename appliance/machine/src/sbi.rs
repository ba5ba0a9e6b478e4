//! The SBI implementation of the host monitor (RISC-V SBI specification v2.0).
//!
//! Linux `Image` guests run in S-mode with no M-mode firmware: their `ecall`s stop the hart
//! and land here. Extension IDs and error codes are from SBI v2.0 chapters 3-12.

use understudy_cpu::{GuestPhysAddr, Hart};

use crate::devices::finisher::FinisherRequest;
use crate::Devices;

const EXT_LEGACY_SET_TIMER: u64 = 0x00;
const EXT_LEGACY_CONSOLE_PUTCHAR: u64 = 0x01;
const EXT_LEGACY_CONSOLE_GETCHAR: u64 = 0x02;
const EXT_LEGACY_SHUTDOWN: u64 = 0x08;
const EXT_BASE: u64 = 0x10;
const EXT_TIME: u64 = 0x5449_4d45;
const EXT_IPI: u64 = 0x0073_5049;
const EXT_RFENCE: u64 = 0x5246_4e43;
const EXT_HSM: u64 = 0x0048_534d;
const EXT_SRST: u64 = 0x5352_5354;
const EXT_DBCN: u64 = 0x4442_434e;

const SBI_SUCCESS: i64 = 0;
const SBI_ERR_FAILED: i64 = -1;
const SBI_ERR_NOT_SUPPORTED: i64 = -2;
const SBI_ERR_INVALID_PARAM: i64 = -3;
const SBI_ERR_INVALID_ADDRESS: i64 = -5;
const SBI_ERR_ALREADY_AVAILABLE: i64 = -6;

/// SBI v2.0: major 2 in bits 24..31, minor 0.
const SPEC_VERSION: u64 = 2 << 24;
/// Not a registered implementation ID (SBI 4.9 lists the registered ones).
const IMPLEMENTATION_ID: u64 = 0x5553;
const IMPLEMENTATION_VERSION: u64 = 1;
const HSM_STATE_STARTED: u64 = 0;
/// Upper bound on one DBCN console write, so one call cannot flood the output buffer.
const DBCN_WRITE_BYTES_MAX: u64 = 4096;
const MIP_SSIP: u64 = 1 << 1;
const CSR_MIP: u16 = 0x344;

/// Handles one `ecall` from S-mode; the arguments are in a0-a7 (SBI 3.1).
pub fn call(hart: &mut Hart, devices: &mut Devices) {
    let extension = hart.x(17);
    let function = hart.x(16);
    let args = [hart.x(10), hart.x(11), hart.x(12)];
    let result: Result<u64, i64> = match (extension, function) {
        (EXT_LEGACY_SET_TIMER, _) => {
            devices.sbi_timer_ticks = args[0];
            // Legacy calls return only a0.
            hart.set_x(10, 0);
            return;
        }
        (EXT_LEGACY_CONSOLE_PUTCHAR, _) => {
            devices.uart.store(0, 1, args[0] & 0xff);
            hart.set_x(10, 0);
            return;
        }
        (EXT_LEGACY_CONSOLE_GETCHAR, _) => {
            let byte = devices.uart.take_received().map_or(u64::MAX, u64::from);
            hart.set_x(10, byte);
            return;
        }
        (EXT_LEGACY_SHUTDOWN, _) => {
            devices.finisher_request = Some(FinisherRequest::Exit { code: 0 });
            return;
        }
        (EXT_BASE, 0) => Ok(SPEC_VERSION),
        (EXT_BASE, 1) => Ok(IMPLEMENTATION_ID),
        (EXT_BASE, 2) => Ok(IMPLEMENTATION_VERSION),
        (EXT_BASE, 3) => Ok(supported(args[0]) as u64),
        (EXT_BASE, 4..=6) => Ok(0), // mvendorid, marchid, mimpid
        (EXT_TIME, 0) => {
            devices.sbi_timer_ticks = args[0];
            Ok(0)
        }
        (EXT_IPI, 0) => {
            if targets_hart_zero(args[0], args[1]) {
                let mip = hart.read_csr(CSR_MIP).unwrap_or(0);
                hart.write_csr(CSR_MIP, mip | MIP_SSIP);
            }
            Ok(0)
        }
        (EXT_RFENCE, 0..=6) => {
            // One hart: the caller's own fences already ran; flush anyway for a remote fence
            // that names hart 0, since the guest asked for it.
            if targets_hart_zero(args[0], args[1]) {
                hart.flush_translations();
            }
            Ok(0)
        }
        (EXT_HSM, 0) => Err(if args[0] == 0 {
            SBI_ERR_ALREADY_AVAILABLE
        } else {
            SBI_ERR_INVALID_PARAM
        }),
        (EXT_HSM, 1) => Err(SBI_ERR_FAILED),
        (EXT_HSM, 2) => {
            if args[0] == 0 {
                Ok(HSM_STATE_STARTED)
            } else {
                Err(SBI_ERR_INVALID_PARAM)
            }
        }
        (EXT_SRST, 0) => match (args[0], args[1]) {
            (0, _) => {
                devices.finisher_request = Some(if args[1] == 0 {
                    FinisherRequest::Exit { code: 0 }
                } else {
                    // Reason 1 is "system failure" (SBI 10.1).
                    FinisherRequest::Exit { code: 1 }
                });
                Ok(0)
            }
            (1 | 2, _) => {
                devices.finisher_request = Some(FinisherRequest::Reset);
                Ok(0)
            }
            _ => Err(SBI_ERR_INVALID_PARAM),
        },
        (EXT_DBCN, 0) => dbcn_write(hart, devices, args[0], args[1], args[2]),
        (EXT_DBCN, 1) => dbcn_read(hart, devices, args[0], args[1], args[2]),
        (EXT_DBCN, 2) => {
            devices.uart.store(0, 1, args[0] & 0xff);
            Ok(0)
        }
        _ => Err(SBI_ERR_NOT_SUPPORTED),
    };
    let (error, value) = match result {
        Ok(value) => (SBI_SUCCESS, value),
        Err(error) => (error, 0),
    };
    hart.set_x(10, error as u64);
    hart.set_x(11, value);
}

fn supported(extension: u64) -> bool {
    matches!(
        extension,
        EXT_LEGACY_SET_TIMER
            | EXT_LEGACY_CONSOLE_PUTCHAR
            | EXT_LEGACY_CONSOLE_GETCHAR
            | EXT_LEGACY_SHUTDOWN
            | EXT_BASE
            | EXT_TIME
            | EXT_IPI
            | EXT_RFENCE
            | EXT_HSM
            | EXT_SRST
            | EXT_DBCN
    )
}

/// SBI 3.2: a hart mask with base -1 (all ones) means every hart.
fn targets_hart_zero(mask: u64, base: u64) -> bool {
    base == u64::MAX || (base == 0 && mask & 1 != 0)
}

fn dbcn_write(
    hart: &mut Hart,
    devices: &mut Devices,
    bytes: u64,
    low: u64,
    high: u64,
) -> Result<u64, i64> {
    if high != 0 {
        return Err(SBI_ERR_INVALID_ADDRESS);
    }
    let count = bytes.min(DBCN_WRITE_BYTES_MAX);
    let mut buffer = alloc::vec![0u8; count as usize];
    hart.read_phys(GuestPhysAddr(low), &mut buffer)
        .map_err(|_| SBI_ERR_INVALID_ADDRESS)?;
    for byte in buffer {
        devices.uart.store(0, 1, u64::from(byte));
    }
    Ok(count)
}

fn dbcn_read(
    hart: &mut Hart,
    devices: &mut Devices,
    bytes: u64,
    low: u64,
    high: u64,
) -> Result<u64, i64> {
    if high != 0 {
        return Err(SBI_ERR_INVALID_ADDRESS);
    }
    let mut count = 0;
    while count < bytes {
        let Some(byte) = devices.uart.take_received() else {
            break;
        };
        hart.write_phys(GuestPhysAddr(low + count), &[byte])
            .map_err(|_| SBI_ERR_INVALID_ADDRESS)?;
        count += 1;
    }
    Ok(count)
}
