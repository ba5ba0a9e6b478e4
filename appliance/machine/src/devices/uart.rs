//! An ns16550a UART (the console), as QEMU `virt` places it: byte registers, interrupt 10.
//!
//! Transmission is instantaneous: a byte written to THR goes to the output buffer that the
//! driver drains, and the transmitter is empty again at once. Received bytes enter only
//! through the nondeterminism port (`Machine::inject`), into a bounded FIFO.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::state::{RestoreError, StateReader, StateWriter};

pub const UART_BASE: u64 = 0x1000_0000;
pub const UART_SIZE: u64 = 0x100;
pub const UART_IRQ: usize = 10;
/// The 16550A receive FIFO holds 16 bytes.
pub const UART_RX_FIFO_BYTES: usize = 16;
/// Console output waiting for the driver; the machine stops its run when it fills.
pub const UART_TX_BUFFER_BYTES: usize = 64 * 1024;

const IER_RX_AVAILABLE: u8 = 0x01;
const IER_TX_EMPTY: u8 = 0x02;
const IIR_NONE: u8 = 0x01;
const IIR_TX_EMPTY: u8 = 0x02;
const IIR_RX_AVAILABLE: u8 = 0x04;
const IIR_FIFO_ENABLED: u8 = 0xc0;
const LCR_DLAB: u8 = 0x80;
const LSR_DATA_READY: u8 = 0x01;
const LSR_TX_EMPTY: u8 = 0x20 | 0x40; // THRE | TEMT
const FCR_FIFO_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
const MCR_LOOPBACK: u8 = 0x10;

pub struct Uart {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
    /// The transmitter-empty interrupt is pending until IIR reports it or THR is written.
    tx_interrupt_pending: bool,
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart {
    pub fn new() -> Self {
        Uart {
            rx: VecDeque::with_capacity(UART_RX_FIFO_BYTES),
            tx: Vec::new(),
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            fcr: 0,
            divisor: 0,
            tx_interrupt_pending: false,
        }
    }

    /// Whether the receive FIFO can take another byte from the port.
    pub fn can_receive(&self) -> bool {
        self.rx.len() < UART_RX_FIFO_BYTES
    }

    /// A byte arrives on the wire. Returns false (and drops nothing) when the FIFO is full.
    pub fn receive(&mut self, byte: u8) -> bool {
        if !self.can_receive() {
            return false;
        }
        self.rx.push_back(byte);
        true
    }

    /// Takes the next received byte, as the SBI console does.
    pub fn take_received(&mut self) -> Option<u8> {
        self.rx.pop_front()
    }

    /// Takes the bytes the guest transmitted since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.tx)
    }

    pub fn output_full(&self) -> bool {
        self.tx.len() >= UART_TX_BUFFER_BYTES
    }

    /// The interrupt line towards the PLIC.
    pub fn interrupt(&self) -> bool {
        self.interrupt_id() != IIR_NONE
    }

    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RX_AVAILABLE != 0 && !self.rx.is_empty() {
            IIR_RX_AVAILABLE
        } else if self.ier & IER_TX_EMPTY != 0 && self.tx_interrupt_pending {
            IIR_TX_EMPTY
        } else {
            IIR_NONE
        }
    }

    pub fn load(&mut self, offset: u64, size_bytes: u8) -> Option<u64> {
        if size_bytes != 1 {
            return None;
        }
        let dlab = self.lcr & LCR_DLAB != 0;
        let value = match offset {
            0 if dlab => self.divisor as u8,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.ier,
            2 => {
                let id = self.interrupt_id();
                if id == IIR_TX_EMPTY {
                    self.tx_interrupt_pending = false;
                }
                let fifo = if self.fcr & FCR_FIFO_ENABLE != 0 {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                LSR_TX_EMPTY
                    | if self.rx.is_empty() {
                        0
                    } else {
                        LSR_DATA_READY
                    }
            }
            // Modem status: clear to send, data set ready, carrier detect.
            6 => 0xb0,
            7 => self.scr,
            _ => 0,
        };
        Some(u64::from(value))
    }

    /// Returns false only for accesses the bus should fault; a full output buffer is
    /// reported by `output_full` so the machine can stop and let the driver drain it.
    pub fn store(&mut self, offset: u64, size_bytes: u8, value: u64) -> bool {
        if size_bytes != 1 {
            return false;
        }
        let value = value as u8;
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            0 => {
                if self.mcr & MCR_LOOPBACK != 0 {
                    self.receive(value);
                } else {
                    self.tx.push(value);
                }
                self.tx_interrupt_pending = true;
            }
            1 if dlab => self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8),
            1 => {
                // Enabling the transmitter interrupt with an empty THR raises it at once.
                if value & IER_TX_EMPTY != 0 && self.ier & IER_TX_EMPTY == 0 {
                    self.tx_interrupt_pending = true;
                }
                self.ier = value & 0x0f;
            }
            2 => {
                if value & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
                self.fcr = value & FCR_FIFO_ENABLE;
            }
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1f,
            7 => self.scr = value,
            _ => {}
        }
        true
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        out.bytes(&[self.ier, self.lcr, self.mcr, self.scr, self.fcr]);
        out.u32(u32::from(self.divisor));
        out.u8(self.tx_interrupt_pending as u8);
        out.u32(self.rx.len() as u32);
        for &byte in &self.rx {
            out.u8(byte);
        }
    }

    /// Saved state for `Machine::save_devices`: the registers, the receive FIFO and the
    /// output the host has not taken yet (it travels with the machine, so take it first
    /// where it was already delivered).
    pub fn save(&self, out: &mut StateWriter) {
        out.bytes(&[self.ier, self.lcr, self.mcr, self.scr, self.fcr]);
        out.u16(self.divisor);
        out.u8(self.tx_interrupt_pending as u8);
        let (front, back) = self.rx.as_slices();
        out.u32((front.len() + back.len()) as u32);
        out.bytes(front);
        out.bytes(back);
        out.sized_bytes(&self.tx);
    }

    /// A UART in the state `save` wrote; register values the guest cannot write are refused.
    pub fn restore(input: &mut StateReader) -> Result<Uart, RestoreError> {
        let ier = input.flags(0x0f, "uart ier")?;
        let lcr = input.u8()?;
        let mcr = input.flags(0x1f, "uart mcr")?;
        let scr = input.u8()?;
        let fcr = input.flags(FCR_FIFO_ENABLE, "uart fcr")?;
        let divisor = input.u16()?;
        let tx_interrupt_pending = input.bool("uart tx interrupt pending")?;
        let rx = input.sized_bytes(UART_RX_FIFO_BYTES, "uart receive fifo length")?;
        // The run stops as soon as the buffer is full, so it never holds more.
        let tx = input.sized_bytes(UART_TX_BUFFER_BYTES, "uart output length")?;
        let mut uart = Uart::new();
        uart.rx.extend(rx);
        uart.tx = tx.to_vec();
        uart.ier = ier;
        uart.lcr = lcr;
        uart.mcr = mcr;
        uart.scr = scr;
        uart.fcr = fcr;
        uart.divisor = divisor;
        uart.tx_interrupt_pending = tx_interrupt_pending;
        Ok(uart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_bytes_raise_the_rx_interrupt_until_read() {
        let mut uart = Uart::new();
        uart.store(1, 1, u64::from(IER_RX_AVAILABLE));
        assert!(!uart.interrupt());
        assert!(uart.receive(b'x'));
        assert!(uart.interrupt());
        assert_eq!(
            uart.load(5, 1),
            Some(u64::from(LSR_TX_EMPTY | LSR_DATA_READY))
        );
        assert_eq!(uart.load(0, 1), Some(u64::from(b'x')));
        assert!(!uart.interrupt());
    }

    #[test]
    fn tx_empty_interrupt_clears_when_iir_reports_it() {
        let mut uart = Uart::new();
        uart.store(1, 1, u64::from(IER_TX_EMPTY));
        assert!(uart.interrupt());
        assert_eq!(uart.load(2, 1), Some(u64::from(IIR_TX_EMPTY)));
        assert!(!uart.interrupt());
        uart.store(0, 1, u64::from(b'a'));
        assert!(uart.interrupt());
        assert_eq!(uart.take_output(), b"a");
    }

    #[test]
    fn a_full_fifo_refuses_bytes_without_losing_queued_ones() {
        let mut uart = Uart::new();
        for i in 0..UART_RX_FIFO_BYTES {
            assert!(uart.receive(i as u8));
        }
        assert!(!uart.receive(0xff));
        assert_eq!(uart.load(0, 1), Some(0));
    }

    fn saved(uart: &Uart) -> Vec<u8> {
        let mut out = StateWriter::default();
        uart.save(&mut out);
        out.bytes
    }

    #[test]
    fn saved_state_keeps_both_fifos_and_the_pending_interrupt() {
        let mut uart = Uart::new();
        uart.store(3, 1, u64::from(LCR_DLAB));
        uart.store(0, 1, 0x34);
        uart.store(1, 1, 0x12);
        uart.store(3, 1, 0x03);
        uart.store(1, 1, u64::from(IER_RX_AVAILABLE | IER_TX_EMPTY));
        uart.store(0, 1, u64::from(b'o'));
        uart.receive(b'i');
        uart.receive(b'j');
        let bytes = saved(&uart);
        let mut restored = Uart::restore(&mut StateReader::new(&bytes)).unwrap();
        assert_eq!(saved(&restored), bytes);
        assert!(restored.interrupt());
        assert_eq!(restored.load(0, 1), Some(u64::from(b'i')));
        assert_eq!(restored.load(0, 1), Some(u64::from(b'j')));
        assert_eq!(restored.take_output(), b"o");
        restored.store(3, 1, u64::from(LCR_DLAB));
        assert_eq!(restored.load(1, 1), Some(0x12));
    }

    #[test]
    fn saved_state_with_an_overlong_fifo_or_bad_register_is_refused() {
        let bytes = saved(&Uart::new());
        let mut ier = bytes.clone();
        ier[0] = 0x10;
        assert_eq!(
            Uart::restore(&mut StateReader::new(&ier)).err(),
            Some(RestoreError::Invalid {
                what: "uart ier",
                value: 0x10
            })
        );
        let mut fifo = bytes.clone();
        fifo[8..12].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(
            Uart::restore(&mut StateReader::new(&fifo)).err(),
            Some(RestoreError::Invalid {
                what: "uart receive fifo length",
                value: 17
            })
        );
        for len in 0..bytes.len() {
            assert!(Uart::restore(&mut StateReader::new(&bytes[..len])).is_err());
        }
    }
}
