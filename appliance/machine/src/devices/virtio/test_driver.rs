//! Test doubles: a Vec-backed guest memory that records every access it refuses, and a
//! minimal driver that lays out split virtqueues and initialises a device as Linux does.

use alloc::vec;
use alloc::vec::Vec;

use super::mmio::{self, VirtioMmio};
use super::queue::{Queue, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use super::{GuestMemory, MemoryError, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::GuestPhysAddr;

pub const RAM_BASE: u64 = 0x8000_0000;

pub struct TestMemory {
    pub bytes: Vec<u8>,
    /// Accesses refused because they were not inside the memory: (address, length, write).
    pub refused: Vec<(u64, usize, bool)>,
}

impl TestMemory {
    pub fn new(len_bytes: usize) -> Self {
        TestMemory {
            bytes: vec![0; len_bytes],
            refused: Vec::new(),
        }
    }

    fn range(&self, addr: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = addr.checked_sub(RAM_BASE)?;
        let end = start.checked_add(len as u64)?;
        (end <= self.bytes.len() as u64).then_some(start as usize..end as usize)
    }

    pub fn poke(&mut self, addr: u64, data: &[u8]) {
        let range = self.range(addr, data.len()).expect("poke inside memory");
        self.bytes[range].copy_from_slice(data);
    }

    pub fn peek(&self, addr: u64, len: usize) -> &[u8] {
        &self.bytes[self.range(addr, len).expect("peek inside memory")]
    }

    pub fn refused_writes(&self) -> usize {
        self.refused.iter().filter(|r| r.2).count()
    }
}

impl GuestMemory for TestMemory {
    fn read(&self, addr: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        match self.range(addr.0, buf.len()) {
            Some(range) => {
                buf.copy_from_slice(&self.bytes[range]);
                Ok(())
            }
            None => Err(MemoryError {
                addr,
                len_bytes: buf.len() as u64,
            }),
        }
    }

    fn write(&mut self, addr: GuestPhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        match self.range(addr.0, data.len()) {
            Some(range) => {
                self.bytes[range].copy_from_slice(data);
                Ok(())
            }
            None => {
                self.refused.push((addr.0, data.len(), true));
                Err(MemoryError {
                    addr,
                    len_bytes: data.len() as u64,
                })
            }
        }
    }
}

/// The driver's side of one split queue, laid out contiguously from `base`.
pub struct TestQueue {
    pub size: u16,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    next_descriptor: u16,
    avail_idx: u16,
    last_used: u16,
}

impl TestQueue {
    pub fn new(base: u64, size: u16) -> Self {
        let desc_table = base;
        let avail_ring = desc_table + 16 * u64::from(size);
        let used_ring = (avail_ring + 6 + 2 * u64::from(size) + 3) & !3;
        TestQueue {
            size,
            desc_table,
            avail_ring,
            used_ring,
            next_descriptor: 0,
            avail_idx: 0,
            last_used: 0,
        }
    }

    pub fn configure(&self, queue: &mut Queue) {
        queue.size = self.size;
        queue.desc_table = self.desc_table;
        queue.avail_ring = self.avail_ring;
        queue.used_ring = self.used_ring;
    }

    pub fn set_descriptor(
        &self,
        memory: &mut TestMemory,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        memory.poke(self.desc_table + 16 * u64::from(index), &raw);
    }

    /// Writes a chain of (address, length, device-writable) buffers and makes it available.
    pub fn add_chain(&mut self, memory: &mut TestMemory, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_descriptor;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == buffers.len();
            let flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VIRTQ_DESC_F_NEXT };
            self.set_descriptor(memory, index, addr, len, flags, (index + 1) % self.size);
        }
        self.next_descriptor = (head + buffers.len() as u16) % self.size;
        let slot = u64::from(self.avail_idx % self.size);
        memory.poke(self.avail_ring + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(memory, self.avail_idx);
        head
    }

    pub fn set_avail_idx(&self, memory: &mut TestMemory, idx: u16) {
        memory.poke(self.avail_ring + 2, &idx.to_le_bytes());
    }

    pub fn set_avail_flags(&self, memory: &mut TestMemory, flags: u16) {
        memory.poke(self.avail_ring, &flags.to_le_bytes());
    }

    /// Used elements (id, len) added since the last call.
    pub fn used(&mut self, memory: &TestMemory) -> Vec<(u32, u32)> {
        let idx = u16::from_le_bytes(memory.peek(self.used_ring + 2, 2).try_into().unwrap());
        let mut out = Vec::new();
        while self.last_used != idx {
            let slot = u64::from(self.last_used % self.size);
            let element = memory.peek(self.used_ring + 4 + 8 * slot, 8);
            out.push((
                u32::from_le_bytes(element[0..4].try_into().unwrap()),
                u32::from_le_bytes(element[4..8].try_into().unwrap()),
            ));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }
}

fn store<D: VirtioDevice>(device: &mut VirtioMmio<D>, offset: u64, value: u32) {
    assert!(
        device.mmio_store(offset, 4, u64::from(value)),
        "store to {offset:#x}"
    );
}

fn load<D: VirtioDevice>(device: &mut VirtioMmio<D>, offset: u64) -> u32 {
    device.mmio_load(offset, 4).expect("register load") as u32
}

/// The initialisation sequence of virtio 1.2 section 3.1.1 over the MMIO registers (4.2.3),
/// accepting every offered feature. Returns the negotiated features.
pub fn initialise<D: VirtioDevice>(device: &mut VirtioMmio<D>, queues: &[TestQueue]) -> u64 {
    store(device, mmio::STATUS, 0);
    store(device, mmio::STATUS, mmio::STATUS_ACKNOWLEDGE);
    store(
        device,
        mmio::STATUS,
        mmio::STATUS_ACKNOWLEDGE | mmio::STATUS_DRIVER,
    );
    let mut features = 0u64;
    for select in 0..2 {
        store(device, mmio::DEVICE_FEATURES_SEL, select);
        features |= u64::from(load(device, mmio::DEVICE_FEATURES)) << (32 * select);
    }
    assert!(features & VIRTIO_F_VERSION_1 != 0);
    for select in 0..2 {
        store(device, mmio::DRIVER_FEATURES_SEL, select);
        store(
            device,
            mmio::DRIVER_FEATURES,
            (features >> (32 * select)) as u32,
        );
    }
    let features_ok = mmio::STATUS_ACKNOWLEDGE | mmio::STATUS_DRIVER | mmio::STATUS_FEATURES_OK;
    store(device, mmio::STATUS, features_ok);
    assert_eq!(
        load(device, mmio::STATUS),
        features_ok,
        "device accepted the features"
    );
    for (index, queue) in queues.iter().enumerate() {
        store(device, mmio::QUEUE_SEL, index as u32);
        assert_eq!(load(device, mmio::QUEUE_READY), 0);
        assert!(load(device, mmio::QUEUE_NUM_MAX) >= u32::from(queue.size));
        store(device, mmio::QUEUE_NUM, u32::from(queue.size));
        for (low, address) in [
            (mmio::QUEUE_DESC_LOW, queue.desc_table),
            (mmio::QUEUE_DRIVER_LOW, queue.avail_ring),
            (mmio::QUEUE_DEVICE_LOW, queue.used_ring),
        ] {
            store(device, low, address as u32);
            store(device, low + 4, (address >> 32) as u32);
        }
        store(device, mmio::QUEUE_READY, 1);
    }
    store(device, mmio::STATUS, features_ok | mmio::STATUS_DRIVER_OK);
    features
}

/// The driver kicks queue `index` (4.2.2, QueueNotify).
pub fn notify<D: VirtioDevice>(device: &mut VirtioMmio<D>, index: u32) {
    store(device, mmio::QUEUE_NOTIFY, index);
}

/// The driver's interrupt handler: reads and acknowledges InterruptStatus.
pub fn acknowledge_interrupt<D: VirtioDevice>(device: &mut VirtioMmio<D>) -> u32 {
    let status = load(device, mmio::INTERRUPT_STATUS);
    store(device, mmio::INTERRUPT_ACK, status);
    status
}
