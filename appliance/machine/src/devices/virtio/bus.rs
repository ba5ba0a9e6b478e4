//! The eight virtio-mmio slots of QEMU `virt` (0x10001000 + 0x1000 * n, PLIC source 1 + n):
//! routes MMIO to the device in each slot, runs their queue work, drives their interrupt
//! lines and describes them in the device tree.
//!
//! An empty slot answers like QEMU's: MagicValue, Version 2 and DeviceID 0, which drivers
//! skip (virtio 1.2 section 4.2.3.1.1), so the device tree can list all eight slots whatever
//! is plugged into them.

use super::mmio::{self, SavedMmio, VirtioMmio};
use super::{
    slot_address, write_fdt_node, Block, GuestMemory, Net, Rng, VirtioDevice, VIRTIO_MMIO_BASE,
    VIRTIO_MMIO_SIZE, VIRTIO_MMIO_SLOTS, VIRTIO_MMIO_STRIDE,
};
use crate::fdt::FdtWriter;
use crate::state::{RestoreError, StateReader, StateWriter};

/// What one slot holds.
pub enum Slot {
    Empty,
    Block(VirtioMmio<Block>),
    Net(VirtioMmio<Net>),
    Rng(VirtioMmio<Rng>),
}

/// All virtio-mmio slots of the machine.
pub struct VirtioBus {
    slots: [Slot; VIRTIO_MMIO_SLOTS],
}

impl Default for VirtioBus {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! each_device {
    ($slot:expr, $device:ident => $body:expr, $empty:expr) => {
        match $slot {
            Slot::Empty => $empty,
            Slot::Block($device) => $body,
            Slot::Net($device) => $body,
            Slot::Rng($device) => $body,
        }
    };
}

impl VirtioBus {
    pub fn new() -> Self {
        VirtioBus {
            slots: core::array::from_fn(|_| Slot::Empty),
        }
    }

    /// Plugs a device into `slot` (0..8), replacing what was there. Do it before the guest
    /// runs: the device set is part of the machine configuration.
    pub fn plug(&mut self, slot: usize, device: Slot) {
        assert!(slot < VIRTIO_MMIO_SLOTS, "virtio: no slot {slot}");
        self.slots[slot] = device;
    }

    pub fn slot(&self, slot: usize) -> &Slot {
        &self.slots[slot]
    }

    /// The first block device.
    pub fn block(&mut self) -> Option<&mut VirtioMmio<Block>> {
        self.slots.iter_mut().find_map(|slot| match slot {
            Slot::Block(device) => Some(device),
            _ => None,
        })
    }

    /// The first network device.
    pub fn net(&mut self) -> Option<&mut VirtioMmio<Net>> {
        self.slots.iter_mut().find_map(|slot| match slot {
            Slot::Net(device) => Some(device),
            _ => None,
        })
    }

    /// The first entropy device.
    pub fn rng(&mut self) -> Option<&mut VirtioMmio<Rng>> {
        self.slots.iter_mut().find_map(|slot| match slot {
            Slot::Rng(device) => Some(device),
            _ => None,
        })
    }

    /// Whether `address` is in the slots' window.
    pub fn contains(address: u64) -> bool {
        address.wrapping_sub(VIRTIO_MMIO_BASE) < VIRTIO_MMIO_STRIDE * VIRTIO_MMIO_SLOTS as u64
    }

    fn locate(address: u64) -> Option<(usize, u64)> {
        let relative = address.checked_sub(VIRTIO_MMIO_BASE)?;
        let slot = (relative / VIRTIO_MMIO_STRIDE) as usize;
        let offset = relative % VIRTIO_MMIO_STRIDE;
        (slot < VIRTIO_MMIO_SLOTS && offset < VIRTIO_MMIO_SIZE).then_some((slot, offset))
    }

    /// A load from the hart; `None` faults it. Touches no guest memory.
    pub fn mmio_load(&mut self, address: u64, size_bytes: u8) -> Option<u64> {
        let (slot, offset) = Self::locate(address)?;
        each_device!(&mut self.slots[slot], device => device.mmio_load(offset, size_bytes), {
            if size_bytes != 4 {
                return None;
            }
            Some(match offset {
                mmio::MAGIC_VALUE => u64::from(mmio::MAGIC),
                mmio::VERSION => u64::from(mmio::TRANSPORT_VERSION),
                mmio::VENDOR_ID => u64::from(mmio::VENDOR_ID_QEMU),
                _ => 0,
            })
        })
    }

    /// A store from the hart; `false` faults it. Only records register writes.
    pub fn mmio_store(&mut self, address: u64, size_bytes: u8, value: u64) -> bool {
        let Some((slot, offset)) = Self::locate(address) else {
            return false;
        };
        each_device!(&mut self.slots[slot], device => device.mmio_store(offset, size_bytes, value), true)
    }

    /// Whether a notified queue waits for `process`.
    pub fn has_work(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| each_device!(slot, device => device.has_work(), false))
    }

    /// Does all notified queue work, at the instruction boundary the machine chose.
    pub fn process(&mut self, memory: &mut dyn GuestMemory) {
        for slot in &mut self.slots {
            each_device!(slot, device => device.process(memory), ())
        }
    }

    /// (PLIC source, level) for every slot.
    pub fn interrupt_lines(&self) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.slots.iter().enumerate().map(|(index, slot)| {
            let level = each_device!(slot, device => device.interrupt(), false);
            (slot_address(index).1, level)
        })
    }

    /// Device tree nodes for all slots, highest address first as QEMU `virt` writes them.
    /// Call inside `/soc`.
    pub fn write_fdt_nodes(fdt: &mut FdtWriter, plic_phandle: u32) {
        for index in (0..VIRTIO_MMIO_SLOTS).rev() {
            let (base, irq) = slot_address(index);
            write_fdt_node(fdt, base, irq, plic_phandle);
        }
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        for slot in &self.slots {
            each_device!(slot, device => device.write_state(out), out.u32(0))
        }
    }

    /// What is plugged in: the device ID of each slot (0 for empty), for the compatibility
    /// check of saved state.
    pub fn device_ids(&self) -> [u32; VIRTIO_MMIO_SLOTS] {
        core::array::from_fn(
            |index| each_device!(&self.slots[index], device => device.device().device_id(), 0),
        )
    }

    /// Saved state of every slot, for `Machine::save_devices`.
    pub fn save(&self, out: &mut StateWriter) {
        for slot in &self.slots {
            each_device!(slot, device => device.save(out), out.u32(0))
        }
    }

    /// Reads what `save` wrote; changes nothing (`restore_saved` applies it). The device in
    /// each slot must be the one saved.
    pub fn parse_saved(&self, input: &mut StateReader) -> Result<SavedBus, RestoreError> {
        let mut slots = [const { SavedSlot::Empty }; VIRTIO_MMIO_SLOTS];
        for (saved, slot) in slots.iter_mut().zip(&self.slots) {
            *saved = match slot {
                Slot::Empty => {
                    let found = input.u32()?;
                    if found != 0 {
                        return Err(RestoreError::Mismatch {
                            what: "virtio device",
                            expected: 0,
                            found: u64::from(found),
                        });
                    }
                    SavedSlot::Empty
                }
                Slot::Block(device) => SavedSlot::Block(device.parse_saved(input)?),
                Slot::Net(device) => SavedSlot::Net(device.parse_saved(input)?),
                Slot::Rng(device) => SavedSlot::Rng(device.parse_saved(input)?),
            };
        }
        Ok(SavedBus { slots })
    }

    pub fn restore_saved(&mut self, saved: SavedBus) {
        for (slot, saved) in self.slots.iter_mut().zip(saved.slots) {
            match (slot, saved) {
                (Slot::Block(device), SavedSlot::Block(saved)) => device.restore_saved(saved),
                (Slot::Net(device), SavedSlot::Net(saved)) => device.restore_saved(saved),
                (Slot::Rng(device), SavedSlot::Rng(saved)) => device.restore_saved(saved),
                (Slot::Empty, SavedSlot::Empty) => {}
                _ => panic!("virtio: saved state applied to another bus than it was read for"),
            }
        }
    }
}

/// The saved state of every slot, read and checked, not yet applied.
pub struct SavedBus {
    slots: [SavedSlot; VIRTIO_MMIO_SLOTS],
}

enum SavedSlot {
    Empty,
    Block(SavedMmio<<Block as VirtioDevice>::Saved>),
    Net(SavedMmio<<Net as VirtioDevice>::Saved>),
    Rng(SavedMmio<<Rng as VirtioDevice>::Saved>),
}

#[cfg(test)]
mod tests {
    use super::super::test_driver::{initialise, notify, TestMemory, TestQueue, RAM_BASE};
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec;

    #[test]
    fn empty_slots_read_as_device_id_0_4_2_3_1_1() {
        let mut bus = VirtioBus::new();
        let base = VIRTIO_MMIO_BASE + 5 * VIRTIO_MMIO_STRIDE;
        assert_eq!(bus.mmio_load(base, 4), Some(u64::from(mmio::MAGIC)));
        assert_eq!(bus.mmio_load(base + mmio::VERSION, 4), Some(2));
        assert_eq!(bus.mmio_load(base + mmio::DEVICE_ID, 4), Some(0));
        assert!(bus.mmio_store(base + mmio::STATUS, 4, 1));
        assert!(VirtioBus::contains(
            VIRTIO_MMIO_BASE + 8 * VIRTIO_MMIO_STRIDE - 1
        ));
        assert!(!VirtioBus::contains(
            VIRTIO_MMIO_BASE + 8 * VIRTIO_MMIO_STRIDE
        ));
        assert_eq!(bus.mmio_load(0x1000_0000, 4), None);
    }

    #[test]
    fn slots_route_to_their_device_and_raise_their_own_line() {
        let mut bus = VirtioBus::new();
        bus.plug(1, Slot::Rng(VirtioMmio::new(Rng::new())));
        let base = VIRTIO_MMIO_BASE + VIRTIO_MMIO_STRIDE;
        assert_eq!(bus.mmio_load(base + mmio::DEVICE_ID, 4), Some(4));
        let mut memory = TestMemory::new(1 << 20);
        let mut queue = TestQueue::new(RAM_BASE, 16);
        let rng = bus.rng().unwrap();
        initialise(rng, core::slice::from_ref(&queue));
        rng.supply_entropy(&[1; 8], &mut memory);
        queue.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 8, true)]);
        notify(bus.rng().unwrap(), 0);
        assert!(bus.has_work());
        bus.process(&mut memory);
        assert!(!bus.has_work());
        assert_eq!(queue.used(&memory), vec![(0, 8)]);
        let lines: alloc::vec::Vec<_> = bus.interrupt_lines().collect();
        assert_eq!(lines[1], (2, true));
        assert!(lines.iter().filter(|l| l.1).count() == 1);
    }

    #[test]
    fn state_and_fdt_cover_every_slot() {
        let mut bus = VirtioBus::new();
        bus.plug(
            0,
            Slot::Block(VirtioMmio::new(Block::new(
                Box::new(super::super::VecBackend::new(vec![0; 4096])),
                b"d",
            ))),
        );
        bus.plug(2, Slot::Net(VirtioMmio::new(Net::new([2, 0, 0, 0, 0, 1]))));
        let mut state = StateWriter::default();
        bus.write_state(&mut state);
        assert!(state.bytes.len() > 8 * 4);
        let mut fdt = FdtWriter::new();
        fdt.begin_node("");
        VirtioBus::write_fdt_nodes(&mut fdt, 2);
        fdt.end_node();
        let blob = fdt.finish();
        let count = blob.windows(12).filter(|w| w == b"virtio,mmio\0").count();
        assert_eq!(count, VIRTIO_MMIO_SLOTS);
    }
}
