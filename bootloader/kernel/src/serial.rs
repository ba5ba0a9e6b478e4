//! The serial console on COM1 (16550 UART at I/O port 0x3f8), 115200 baud 8N1, polled.
//!
//! A machine may have no COM1. Its ports then read 0xff, which looks like "data ready" in the
//! line-status register forever, so `init` probes for the UART first (the classic 16550 probe:
//! the scratch register, then a byte sent to itself in loopback mode) and, when it is absent,
//! reads nothing and writes nowhere.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// The I/O port base of COM1 on PC-compatible machines (and QEMU `microvm`'s ISA serial).
const COM1_PORT: u16 = 0x3f8;
/// Polls of the line-status register before a byte is dropped: a missing UART must not hang
/// the kernel.
const TRANSMIT_POLLS_MAX: u32 = 100_000;
/// Polls of the line-status register for the byte the loopback probe sends itself. A byte
/// takes 87 us at 115200 baud and a port read at least about 0.5 us on hardware, so this
/// allows a few milliseconds.
const LOOPBACK_POLLS_MAX: u32 = 10_000;
/// Bytes written to and read back from the scratch register (16550 datasheet, SCR): a missing
/// UART reads 0xff for both, and two complementary patterns rule out a stuck bus.
const SCRATCH_PROBE_BYTES: [u8; 2] = [0x55, 0xaa];
/// The byte the loopback probe sends.
const LOOPBACK_PROBE_BYTE: u8 = 0xae;

/// 16550 register offsets from the base port and the bits used here (16550D datasheet).
const REGISTER_DATA: u16 = 0;
const REGISTER_INTERRUPT_ENABLE: u16 = 1;
const REGISTER_FIFO_CONTROL: u16 = 2;
const REGISTER_LINE_CONTROL: u16 = 3;
const REGISTER_MODEM_CONTROL: u16 = 4;
const REGISTER_LINE_STATUS: u16 = 5;
const REGISTER_SCRATCH: u16 = 7;
const LINE_STATUS_DATA_READY: u8 = 0x01;
const LINE_STATUS_TRANSMIT_EMPTY: u8 = 0x20;
/// Modem control: DTR and RTS, the normal state.
const MODEM_CONTROL_NORMAL: u8 = 0x03;
/// Modem control bit 4: loopback, the transmitter feeds the receiver and the line stays idle.
const MODEM_CONTROL_LOOPBACK: u8 = 0x10;

/// Whether `init` found the UART. True until then, so that output before the probe still goes
/// out on machines that have it.
static PRESENT: AtomicBool = AtomicBool::new(true);

/// A polled 16550 transmitter.
pub struct Serial {
    base: u16,
    /// The last byte written ended a line (the guest's console output shares the port, and
    /// need not end its lines).
    at_line_start: bool,
}

impl Serial {
    const fn new(base: u16) -> Self {
        Self {
            base,
            at_line_start: true,
        }
    }

    fn read_register(&self, register: u16) -> u8 {
        // SAFETY: port input from the UART; the only side effect of any register used here is
        // that reading the data register takes one received byte, which the callers intend.
        unsafe { Port::<u8>::new(self.base + register).read() }
    }

    fn write_register(&self, register: u16, value: u8) {
        // SAFETY: port output to the UART's registers has no memory effects; on a machine
        // without COM1 it goes nowhere.
        unsafe { Port::<u8>::new(self.base + register).write(value) }
    }

    /// Programs the UART and returns whether it is there.
    fn init(&mut self) -> bool {
        for pattern in SCRATCH_PROBE_BYTES {
            self.write_register(REGISTER_SCRATCH, pattern);
            if self.read_register(REGISTER_SCRATCH) != pattern {
                return false;
            }
        }
        self.write_register(REGISTER_INTERRUPT_ENABLE, 0x00); // interrupts off: we poll
        self.write_register(REGISTER_LINE_CONTROL, 0x80); // DLAB on
        self.write_register(REGISTER_DATA, 0x01); // divisor 1: 115200 baud
        self.write_register(REGISTER_INTERRUPT_ENABLE, 0x00);
        self.write_register(REGISTER_LINE_CONTROL, 0x03); // 8 data bits, no parity, 1 stop bit
        self.write_register(REGISTER_FIFO_CONTROL, 0xc7); // FIFOs on and cleared

        // Loopback: a device that merely keeps the scratch value must also echo a byte.
        self.write_register(
            REGISTER_MODEM_CONTROL,
            MODEM_CONTROL_LOOPBACK | MODEM_CONTROL_NORMAL,
        );
        self.write_register(REGISTER_DATA, LOOPBACK_PROBE_BYTE);
        let echoed = (0..LOOPBACK_POLLS_MAX)
            .find(|_| self.read_register(REGISTER_LINE_STATUS) & LINE_STATUS_DATA_READY != 0)
            .map(|_| self.read_register(REGISTER_DATA));
        self.write_register(REGISTER_MODEM_CONTROL, MODEM_CONTROL_NORMAL);
        echoed == Some(LOOPBACK_PROBE_BYTE)
    }

    fn write_byte(&mut self, byte: u8) {
        self.at_line_start = byte == b'\n';
        if !present() {
            return;
        }
        for _ in 0..TRANSMIT_POLLS_MAX {
            if self.read_register(REGISTER_LINE_STATUS) & LINE_STATUS_TRANSMIT_EMPTY != 0 {
                break;
            }
        }
        self.write_register(REGISTER_DATA, byte);
    }

    fn read_byte(&mut self) -> Option<u8> {
        // Read the receive buffer only when data ready is set: each read takes one byte.
        if !present() || self.read_register(REGISTER_LINE_STATUS) & LINE_STATUS_DATA_READY == 0 {
            return None;
        }
        Some(self.read_register(REGISTER_DATA))
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Serial> = Mutex::new(Serial::new(COM1_PORT));

/// Probes and programs COM1; printing before this still works on QEMU, which ignores the baud
/// rate. Without COM1 there is nowhere to say so: `present` tells the rest of the kernel.
pub fn init() {
    let present = CONSOLE.lock().init();
    PRESENT.store(present, Ordering::Relaxed);
}

/// Whether COM1 answered the probe in `init`. Without it the console discards output and
/// `try_read_byte` never returns a byte.
pub fn present() -> bool {
    PRESENT.load(Ordering::Relaxed)
}

#[doc(hidden)]
pub fn print_fmt(args: fmt::Arguments) {
    // Interrupts stay disabled in this kernel, so the lock cannot be re-entered by a handler
    // except from an exception inside `write_fmt`; the exception path uses `force_print`.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Prints even if the console lock is held (used by the exception and panic epitaphs).
pub fn force_print(args: fmt::Arguments) {
    // SAFETY: the console is a stateless port writer; a second writer can only interleave
    // bytes, which is acceptable for a dying kernel.
    unsafe { CONSOLE.force_unlock() };
    print_fmt(args);
}

/// True when COM1 holds a received byte (LSR bit 0, data ready), without taking it; never
/// without COM1.
pub fn has_byte() -> bool {
    // SAFETY: reading the line-status register has no side effects.
    present() && unsafe { Port::<u8>::new(COM1_PORT + 5).read() & 0x01 != 0 }
}

/// A byte COM1 has received, if any (polled: LSR data-ready); never one without COM1.
pub fn try_read_byte() -> Option<u8> {
    CONSOLE.lock().read_byte()
}

/// Sends bytes as they are: the protected guest's console output, whose line endings are the
/// guest's own business.
pub fn write_raw(bytes: &[u8]) {
    let mut console = CONSOLE.lock();
    for &byte in bytes {
        console.write_byte(byte);
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the serial console, on a line of its own: after guest output that did not
/// end its line, a line break comes first, so every appliance line starts a console line (log
/// scrapers and the tests read `understudy ...` lines from the start).
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::println_fmt(format_args!($($arg)*)) };
}

#[doc(hidden)]
pub fn println_fmt(args: fmt::Arguments) {
    let mut console = CONSOLE.lock();
    if !console.at_line_start {
        let _ = console.write_str("\n");
    }
    let _ = console.write_fmt(format_args!("{args}\n"));
}
