//! Virtio devices over the virtio-mmio transport (virtio 1.2): block, network and entropy.
//!
//! Every device is a `VirtioMmio<D>`: the transport's register file and split virtqueues
//! (`mmio.rs`, `queue.rs`) around a device model `D` (`block.rs`, `net.rs`, `rng.rs`), each
//! model the same shape: constants, config space, `VirtioDevice` impl, input/output methods,
//! state for the digest, tests.
//!
//! Determinism (the bounce-buffer rule): an MMIO access from the running hart only records a
//! register write (a QueueNotify marks the queue as having work). Guest memory is touched
//! only when the machine calls `process`, `receive` or `supply_entropy` with a
//! `GuestMemory` between run slices, at instruction boundaries the machine chooses. Everything
//! a device writes is a function of guest memory, its own state and those explicit inputs.

pub mod block;
pub mod bus;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
#[cfg(test)]
mod test_driver;

use core::fmt;

use crate::fdt::FdtWriter;
use crate::state::{RestoreError, StateReader, StateWriter};
use crate::GuestPhysAddr;

pub use block::{BackendError, Block, BlockBackend, VecBackend};
pub use bus::{Slot, VirtioBus};
pub use mmio::VirtioMmio;
pub use net::{Net, RxError, RxOutcome};
pub use queue::Queue;
pub use rng::Rng;

/// Where the first virtio-mmio instance sits and how far apart instances are (QEMU `virt`).
pub const VIRTIO_MMIO_BASE: u64 = 0x1000_1000;
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// One instance's register window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// PLIC source of instance 0; instance `n` uses `VIRTIO_MMIO_IRQ_FIRST + n` (QEMU `virt`).
pub const VIRTIO_MMIO_IRQ_FIRST: usize = 1;
/// QEMU `virt` has eight virtio-mmio slots (PLIC sources 1..=8).
pub const VIRTIO_MMIO_SLOTS: usize = 8;

/// Device IDs (virtio 1.2 section 5).
pub const DEVICE_ID_NET: u32 = 1;
pub const DEVICE_ID_BLOCK: u32 = 2;
pub const DEVICE_ID_ENTROPY: u32 = 4;

/// Reserved feature bits (virtio 1.2 section 6).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Guest memory as the devices see it: physical addresses, all-or-nothing accesses.
///
/// An access that is not entirely inside guest RAM fails without touching anything, so a
/// guest that hands a device a wild address gets a device error, and the host never reads or
/// writes outside the guest.
pub trait GuestMemory {
    fn read(&self, addr: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError>;
    fn write(&mut self, addr: GuestPhysAddr, data: &[u8]) -> Result<(), MemoryError>;
}

/// A device access to a physical range that is not (entirely) guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryError {
    pub addr: GuestPhysAddr,
    pub len_bytes: u64,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device access to {} bytes at {:#x} is outside guest memory",
            self.len_bytes, self.addr.0
        )
    }
}

impl core::error::Error for MemoryError {}

/// What a device model tells the transport after doing queue work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueWork {
    /// Buffers were added to a used ring and the driver did not suppress interrupts.
    pub notify_driver: bool,
    /// The driver broke the protocol (a malformed ring or chain): the device stops and
    /// sets DEVICE_NEEDS_RESET (virtio 1.2 section 2.1.2).
    pub needs_reset: bool,
}

impl QueueWork {
    pub fn merge(&mut self, other: QueueWork) {
        self.notify_driver |= other.notify_driver;
        self.needs_reset |= other.needs_reset;
    }
}

/// A device model behind the virtio-mmio transport (virtio 1.2 section 5, per device type).
pub trait VirtioDevice {
    fn device_id(&self) -> u32;
    /// Device feature bits, without the transport's VIRTIO_F_VERSION_1.
    fn device_features(&self) -> u64;
    /// QueueNumMax of each virtqueue; the number of entries is the number of queues.
    fn queue_max_sizes(&self) -> &'static [u16];
    /// Reads `data.len()` bytes of device configuration space at `offset`; bytes past the end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver writes configuration space; every device here ignores it (all our config
    /// fields are read-only for the driver).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Serves the queues that have work. `queues[i].has_work()` tells which were notified.
    fn process(
        &mut self,
        queues: &mut [Queue],
        features: u64,
        memory: &mut dyn GuestMemory,
    ) -> QueueWork;
    /// The device returns to its initial state (the driver wrote 0 to Status).
    fn reset(&mut self);
    /// Device model state for the digest.
    fn write_state(&self, out: &mut StateWriter);

    /// Device model state restored by `restore_saved`: parsed and checked first, applied
    /// only when the whole machine state was read without error.
    type Saved;
    /// All of the device model's state for `Machine::save_devices`, its identity (what the
    /// machine configuration chose: disk size, MAC address) included.
    fn save(&self, out: &mut StateWriter);
    /// Reads what `save` wrote, refusing a different identity or impossible values. Changes
    /// nothing.
    fn parse_saved(&self, input: &mut StateReader) -> Result<Self::Saved, RestoreError>;
    fn restore_saved(&mut self, saved: Self::Saved);
}

/// The base address and PLIC source of virtio-mmio slot `slot` (QEMU `virt` layout).
pub fn slot_address(slot: usize) -> (u64, usize) {
    assert!(slot < VIRTIO_MMIO_SLOTS, "virtio: no slot {slot}");
    (
        VIRTIO_MMIO_BASE + VIRTIO_MMIO_STRIDE * slot as u64,
        VIRTIO_MMIO_IRQ_FIRST + slot,
    )
}

/// Writes the device tree node of a virtio-mmio device at `base` with PLIC source `irq`
/// (Linux `Documentation/devicetree/bindings/virtio/mmio.yaml`). Call inside `/soc`.
pub fn write_fdt_node(fdt: &mut FdtWriter, base: u64, irq: usize, plic_phandle: u32) {
    let mut name = alloc::string::String::new();
    let _ = fmt::write(&mut name, format_args!("virtio_mmio@{base:x}"));
    fdt.begin_node(&name);
    fdt.property_string("compatible", "virtio,mmio");
    fdt.property_cells(
        "reg",
        &[
            (base >> 32) as u32,
            base as u32,
            (VIRTIO_MMIO_SIZE >> 32) as u32,
            VIRTIO_MMIO_SIZE as u32,
        ],
    );
    fdt.property_u32("interrupt-parent", plic_phandle);
    fdt.property_u32("interrupts", irq as u32);
    fdt.end_node();
}

/// Little-endian field helpers for guest-memory structures (virtio is little-endian since
/// 1.0, section 1.4).
pub(crate) fn read_u16(memory: &dyn GuestMemory, addr: u64) -> Result<u16, MemoryError> {
    let mut bytes = [0; 2];
    memory.read(GuestPhysAddr(addr), &mut bytes)?;
    Ok(u16::from_le_bytes(bytes))
}

pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// Devices reach guest RAM through the hart, which keeps its decoded-block cache coherent
/// and marks the pages dirty for the digest.
impl GuestMemory for understudy_cpu::Hart {
    fn read(&self, addr: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read_phys(addr, buf).map_err(|error| MemoryError {
            addr: error.addr,
            len_bytes: error.len_bytes,
        })
    }

    fn write(&mut self, addr: GuestPhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        self.write_phys(addr, data).map_err(|error| MemoryError {
            addr: error.addr,
            len_bytes: error.len_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_cpu::{Hart, HartConfig};

    #[test]
    fn hart_memory_refuses_ranges_outside_ram_and_marks_written_pages_dirty() {
        let base = 0x8000_0000;
        let mut hart = Hart::new(HartConfig {
            ram_base: GuestPhysAddr(base),
            ram_size_bytes: 1 << 20,
            host_monitor: false,
        });
        let _ = hart.take_dirty_pages();
        let memory: &mut dyn GuestMemory = &mut hart;
        memory
            .write(GuestPhysAddr(base + 0x2000), &[1, 2, 3])
            .unwrap();
        let mut buf = [0u8; 3];
        memory.read(GuestPhysAddr(base + 0x2000), &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3]);
        let end = GuestPhysAddr(base + (1 << 20) - 2);
        assert_eq!(
            memory.write(end, &[0; 4]),
            Err(MemoryError {
                addr: end,
                len_bytes: 4
            })
        );
        assert!(memory.read(GuestPhysAddr(0x1000), &mut buf).is_err());
        assert_eq!(hart.take_dirty_pages(), alloc::vec![2]);
    }

    #[test]
    fn fdt_node_names_the_slot_and_its_interrupt() {
        let (base, irq) = slot_address(2);
        assert_eq!((base, irq), (0x1000_3000, 3));
        let mut fdt = FdtWriter::new();
        fdt.begin_node("");
        write_fdt_node(&mut fdt, base, irq, 9);
        fdt.end_node();
        let blob = fdt.finish();
        let find = |needle: &[u8]| blob.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"virtio_mmio@10003000\0"));
        assert!(find(b"virtio,mmio\0"));
    }
}
