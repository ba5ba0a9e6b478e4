//! The serial console on COM1 (16550 UART at I/O port 0x3f8), 115200 baud 8N1, polled.

use core::fmt::{self, Write};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// The I/O port base of COM1 on PC-compatible machines (and QEMU `microvm`'s ISA serial).
const COM1_PORT: u16 = 0x3f8;
/// Polls of the line-status register before a byte is dropped: a missing UART must not hang
/// the kernel.
const TRANSMIT_POLLS_MAX: u32 = 100_000;

/// A polled 16550 transmitter.
pub struct Serial {
    base: u16,
}

impl Serial {
    const fn new(base: u16) -> Self {
        Self { base }
    }

    fn init(&mut self) {
        // SAFETY: programming the 16550 registers (divisor latch, line and FIFO control) has no
        // memory effects; on a machine without COM1 the writes go nowhere.
        unsafe {
            Port::<u8>::new(self.base + 1).write(0x00); // interrupts off: we poll
            Port::<u8>::new(self.base + 3).write(0x80); // DLAB on
            Port::<u8>::new(self.base).write(0x01); // divisor 1: 115200 baud
            Port::<u8>::new(self.base + 1).write(0x00);
            Port::<u8>::new(self.base + 3).write(0x03); // 8 data bits, no parity, 1 stop bit
            Port::<u8>::new(self.base + 2).write(0xc7); // FIFOs on and cleared
            Port::<u8>::new(self.base + 4).write(0x03); // DTR | RTS
        }
    }

    fn write_byte(&mut self, byte: u8) {
        let mut line_status = Port::<u8>::new(self.base + 5);
        let mut data = Port::<u8>::new(self.base);
        for _ in 0..TRANSMIT_POLLS_MAX {
            // SAFETY: reading the line-status register has no side effects.
            if unsafe { line_status.read() } & 0x20 != 0 {
                break;
            }
        }
        // SAFETY: writing the transmit holding register sends one byte.
        unsafe { data.write(byte) }
    }

    fn read_byte(&mut self) -> Option<u8> {
        // SAFETY: reading the line-status register has no side effects; reading the receive
        // buffer register only when LSR bit 0 (data ready) is set takes one received byte.
        unsafe {
            if Port::<u8>::new(self.base + 5).read() & 0x01 == 0 {
                return None;
            }
            Some(Port::<u8>::new(self.base).read())
        }
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

/// Programs COM1; printing before this still works on QEMU, which ignores the baud rate.
pub fn init() {
    CONSOLE.lock().init();
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

/// True when COM1 holds a received byte (LSR bit 0, data ready), without taking it.
pub fn has_byte() -> bool {
    // SAFETY: reading the line-status register has no side effects.
    unsafe { Port::<u8>::new(COM1_PORT + 5).read() & 0x01 != 0 }
}

/// A byte COM1 has received, if any (polled: LSR data-ready).
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

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
