//! Split virtqueues (virtio 1.2 section 2.7): the device side of the descriptor table, the
//! available ring and the used ring, with descriptor chains checked before use.
//!
//! A chain whose structure is broken (an index past the queue, a loop, more descriptors than
//! the queue has, an indirect descriptor we never offered, a ring outside guest memory) is a
//! `ChainError`: the device cannot even tell which buffers the driver meant, so it sets
//! DEVICE_NEEDS_RESET. A well-formed chain whose buffers are wrong for the request (wrong
//! direction, too small, out-of-range addresses, oversized) is the device model's to judge:
//! it completes the request with an error where the device type has an error status.

use alloc::vec::Vec;
use core::fmt;

use super::{read_u16, GuestMemory, MemoryError};
use crate::state::{RestoreError, StateReader, StateWriter};
use crate::GuestPhysAddr;

/// Descriptor flags (virtio 1.2 section 2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver does not want used-buffer notifications (2.7.7).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// The largest split queue (2.7: "Queue Size ... maximum 32768").
pub const QUEUE_SIZE_MAX: u16 = 32768;

const DESCRIPTOR_BYTES: u64 = 16;
const USED_ELEMENT_BYTES: u64 = 8;
/// Offset of `ring[]` in the available and used rings (after `flags` and `idx`).
const RING_HEADER_BYTES: u64 = 4;
/// Alignment of the three parts (2.7, table "Virtqueue Part Alignment").
const DESCRIPTOR_TABLE_ALIGN: u64 = 16;
const AVAIL_RING_ALIGN: u64 = 2;
const USED_RING_ALIGN: u64 = 4;

/// Why a chain could not be taken from the available ring: the driver broke the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// The ring parts are not in guest memory.
    Memory(MemoryError),
    /// `avail.idx` ran more than a queue's worth ahead of the device (2.7.13.3).
    AvailIndex { avail_idx: u16, next_avail: u16 },
    /// A head or `next` index is not below the queue size.
    IndexOutOfRange { index: u16, queue_size: u16 },
    /// The chain has more descriptors than the queue: a loop (2.7.5.1 bounds it by the size).
    TooLong { queue_size: u16 },
    /// VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC, which no device here offers.
    IndirectNotNegotiated { index: u16 },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::Memory(error) => write!(f, "virtqueue ring: {error}"),
            ChainError::AvailIndex {
                avail_idx,
                next_avail,
            } => write!(
                f,
                "available index {avail_idx} is more than a queue ahead of {next_avail}"
            ),
            ChainError::IndexOutOfRange { index, queue_size } => {
                write!(
                    f,
                    "descriptor index {index} is outside a queue of {queue_size}"
                )
            }
            ChainError::TooLong { queue_size } => {
                write!(
                    f,
                    "descriptor chain is longer than the queue ({queue_size}): a loop"
                )
            }
            ChainError::IndirectNotNegotiated { index } => {
                write!(
                    f,
                    "descriptor {index} is indirect, which was not negotiated"
                )
            }
        }
    }
}

impl core::error::Error for ChainError {}

impl From<MemoryError> for ChainError {
    fn from(error: MemoryError) -> Self {
        ChainError::Memory(error)
    }
}

/// One buffer of a chain (2.7.5), with its direction as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: GuestPhysAddr,
    pub len_bytes: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE); otherwise device-readable.
    pub writable: bool,
}

/// A chain taken from the available ring. Its readable descriptors form one byte stream and
/// its writable descriptors another; devices address both by offset, since the driver may
/// split a request across descriptors any way it likes (2.6.4, message framing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorChain {
    pub head: u16,
    pub descriptors: Vec<Descriptor>,
}

impl DescriptorChain {
    pub fn readable_len(&self) -> u64 {
        self.len(false)
    }

    pub fn writable_len(&self) -> u64 {
        self.len(true)
    }

    fn len(&self, writable: bool) -> u64 {
        self.descriptors
            .iter()
            .filter(|d| d.writable == writable)
            .map(|d| u64::from(d.len_bytes))
            .sum()
    }

    /// Whether every device-writable descriptor comes after every device-readable one, as
    /// 2.7.4.2 requires of the driver.
    pub fn is_well_ordered(&self) -> bool {
        let first_writable = self
            .descriptors
            .iter()
            .position(|d| d.writable)
            .unwrap_or(self.descriptors.len());
        self.descriptors[first_writable..]
            .iter()
            .all(|d| d.writable)
    }

    /// Reads `buf.len()` bytes at `offset` of the readable stream.
    pub fn read_at(
        &self,
        memory: &dyn GuestMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), BufferError> {
        let mut done = 0;
        self.for_each_piece(false, offset, buf.len(), |addr, start, len| {
            memory.read(addr, &mut buf[start..start + len])?;
            done += len;
            Ok(())
        })?;
        debug_assert_eq!(done, buf.len());
        Ok(())
    }

    /// Writes `data` at `offset` of the writable stream.
    pub fn write_at(
        &self,
        memory: &mut dyn GuestMemory,
        offset: u64,
        data: &[u8],
    ) -> Result<(), BufferError> {
        self.for_each_piece(true, offset, data.len(), |addr, start, len| {
            memory.write(addr, &data[start..start + len])?;
            Ok(())
        })
    }

    /// Calls `f(guest address, offset into the caller's buffer, length)` for each piece of
    /// the `[offset, offset + len)` range of one stream, in order.
    fn for_each_piece(
        &self,
        writable: bool,
        offset: u64,
        len: usize,
        mut f: impl FnMut(GuestPhysAddr, usize, usize) -> Result<(), MemoryError>,
    ) -> Result<(), BufferError> {
        let end = offset.checked_add(len as u64).ok_or(BufferError::PastEnd)?;
        if end > self.len(writable) {
            return Err(BufferError::PastEnd);
        }
        let mut stream_at = 0u64;
        let mut done = 0usize;
        for descriptor in self.descriptors.iter().filter(|d| d.writable == writable) {
            if done == len {
                break;
            }
            let descriptor_end = stream_at + u64::from(descriptor.len_bytes);
            let want_at = offset + done as u64;
            if want_at < descriptor_end {
                let skip = want_at - stream_at;
                let piece = ((descriptor_end - want_at) as usize).min(len - done);
                let addr = descriptor.addr.0.checked_add(skip).ok_or(MemoryError {
                    addr: descriptor.addr,
                    len_bytes: piece as u64,
                })?;
                f(GuestPhysAddr(addr), done, piece)?;
                done += piece;
            }
            stream_at = descriptor_end;
        }
        Ok(())
    }
}

/// Why a device could not move bytes through a chain's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferError {
    /// The request reaches past the buffers the driver supplied.
    PastEnd,
    /// A buffer address is not in guest memory.
    Memory(MemoryError),
}

impl From<MemoryError> for BufferError {
    fn from(error: MemoryError) -> Self {
        BufferError::Memory(error)
    }
}

impl fmt::Display for BufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BufferError::PastEnd => write!(f, "request reaches past the driver's buffers"),
            BufferError::Memory(error) => write!(f, "{error}"),
        }
    }
}

impl core::error::Error for BufferError {}

/// The device's view of one split virtqueue: what the driver configured through the
/// transport, and how far the device has consumed and produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    max_size: u16,
    /// QueueNum: the number of entries the driver chose.
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    /// The next available-ring entry the device will take (free-running, 2.7.6).
    next_avail: u16,
    /// The next used-ring entry the device will fill (free-running, 2.7.8).
    next_used: u16,
    /// The driver notified the queue and the device has not yet emptied its available ring.
    work: bool,
}

impl Queue {
    pub fn new(max_size: u16) -> Self {
        assert!(
            max_size.is_power_of_two() && max_size <= QUEUE_SIZE_MAX,
            "virtqueue: bad max size {max_size}"
        );
        Queue {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            next_avail: 0,
            next_used: 0,
            work: false,
        }
    }

    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// Back to the state after device reset (4.2.2: QueueReady and the rings are cleared).
    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    /// Whether the configuration the driver wrote can be used (2.7: power-of-two size no
    /// larger than QueueNumMax; each part aligned as the alignment table requires).
    pub fn is_valid(&self) -> bool {
        self.size != 0
            && self.size.is_power_of_two()
            && self.size <= self.max_size
            && self.desc_table.is_multiple_of(DESCRIPTOR_TABLE_ALIGN)
            && self.avail_ring.is_multiple_of(AVAIL_RING_ALIGN)
            && self.used_ring.is_multiple_of(USED_RING_ALIGN)
    }

    pub fn has_work(&self) -> bool {
        self.work
    }

    /// A QueueNotify for this queue arrived.
    pub fn set_work(&mut self) {
        self.work = true;
    }

    /// The device found the available ring empty (or stopped serving the queue).
    pub fn clear_work(&mut self) {
        self.work = false;
    }

    /// Whether the driver has made a chain available that the device has not taken.
    pub fn has_available(&self, memory: &dyn GuestMemory) -> Result<bool, ChainError> {
        Ok(self.available_count(memory)? != 0)
    }

    fn available_count(&self, memory: &dyn GuestMemory) -> Result<u16, ChainError> {
        if !self.ready {
            // Devices only serve ready queues (which have a valid size); be safe anyway.
            return Ok(0);
        }
        let avail_idx = read_u16(memory, self.avail_ring.wrapping_add(2))?;
        let count = avail_idx.wrapping_sub(self.next_avail);
        if count > self.size {
            return Err(ChainError::AvailIndex {
                avail_idx,
                next_avail: self.next_avail,
            });
        }
        Ok(count)
    }

    /// Takes the next available chain, or `None` when the driver has made none available.
    pub fn pop(&mut self, memory: &dyn GuestMemory) -> Result<Option<DescriptorChain>, ChainError> {
        if self.available_count(memory)? == 0 {
            return Ok(None);
        }
        let slot = u64::from(self.next_avail % self.size);
        let head = read_u16(
            memory,
            self.avail_ring
                .wrapping_add(RING_HEADER_BYTES)
                .wrapping_add(2 * slot),
        )?;
        let chain = self.walk(memory, head)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    /// Puts the chain last taken by `pop` back: the device cannot serve it yet (no entropy,
    /// full outbox) and will take it again later.
    pub fn undo_pop(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    fn walk(&self, memory: &dyn GuestMemory, head: u16) -> Result<DescriptorChain, ChainError> {
        let mut descriptors = Vec::new();
        let mut index = head;
        loop {
            if index >= self.size {
                return Err(ChainError::IndexOutOfRange {
                    index,
                    queue_size: self.size,
                });
            }
            if descriptors.len() == usize::from(self.size) {
                return Err(ChainError::TooLong {
                    queue_size: self.size,
                });
            }
            let at = self
                .desc_table
                .checked_add(DESCRIPTOR_BYTES * u64::from(index))
                .ok_or(MemoryError {
                    addr: GuestPhysAddr(self.desc_table),
                    len_bytes: DESCRIPTOR_BYTES,
                })?;
            let mut raw = [0u8; DESCRIPTOR_BYTES as usize];
            memory.read(GuestPhysAddr(at), &mut raw)?;
            let addr = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
            let len_bytes = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
            let flags = u16::from_le_bytes([raw[12], raw[13]]);
            let next = u16::from_le_bytes([raw[14], raw[15]]);
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(ChainError::IndirectNotNegotiated { index });
            }
            descriptors.push(Descriptor {
                addr: GuestPhysAddr(addr),
                len_bytes,
                writable: flags & VIRTQ_DESC_F_WRITE != 0,
            });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(DescriptorChain { head, descriptors });
            }
            index = next;
        }
    }

    /// Returns a chain to the driver with `len_bytes` written into it (2.7.8).
    pub fn add_used(
        &mut self,
        memory: &mut dyn GuestMemory,
        head: u16,
        len_bytes: u32,
    ) -> Result<(), MemoryError> {
        assert!(
            self.ready,
            "virtqueue: add_used on a queue that is not ready"
        );
        let slot = u64::from(self.next_used % self.size);
        let element_at = self
            .used_ring
            .wrapping_add(RING_HEADER_BYTES)
            .wrapping_add(USED_ELEMENT_BYTES * slot);
        let mut element = [0u8; USED_ELEMENT_BYTES as usize];
        element[0..4].copy_from_slice(&u32::from(head).to_le_bytes());
        element[4..8].copy_from_slice(&len_bytes.to_le_bytes());
        memory.write(GuestPhysAddr(element_at), &element)?;
        self.next_used = self.next_used.wrapping_add(1);
        memory.write(
            GuestPhysAddr(self.used_ring.wrapping_add(2)),
            &self.next_used.to_le_bytes(),
        )
    }

    /// Whether the driver asked not to be interrupted for used buffers (2.7.7; without
    /// VIRTIO_F_EVENT_IDX, which no device here offers).
    pub fn interrupts_suppressed(&self, memory: &dyn GuestMemory) -> Result<bool, MemoryError> {
        Ok(read_u16(memory, self.avail_ring)? & VIRTQ_AVAIL_F_NO_INTERRUPT != 0)
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        out.u32(u32::from(self.max_size));
        out.u32(u32::from(self.size));
        out.u8(self.ready as u8 | (self.work as u8) << 1);
        out.u64(self.desc_table);
        out.u64(self.avail_ring);
        out.u64(self.used_ring);
        out.u32(u32::from(self.next_avail));
        out.u32(u32::from(self.next_used));
    }

    /// Saved state for `Machine::save_devices`: the same fields as the digest's.
    pub fn save(&self, out: &mut StateWriter) {
        self.write_state(out);
    }

    /// A queue of QueueNumMax `max_size` in the state `save` wrote. A ready queue must have
    /// a configuration `is_valid` accepts (the device divides by its size), and only a ready
    /// queue can have work.
    pub fn restore(max_size: u16, input: &mut StateReader) -> Result<Queue, RestoreError> {
        let mut queue = Queue::new(max_size);
        let saved_max = input.u32()?;
        if saved_max != u32::from(max_size) {
            return Err(RestoreError::Mismatch {
                what: "virtqueue maximum size",
                expected: u64::from(max_size),
                found: u64::from(saved_max),
            });
        }
        let size = input.u32()?;
        queue.size = u16::try_from(size).map_err(|_| RestoreError::Invalid {
            what: "virtqueue size",
            value: u64::from(size),
        })?;
        let flags = input.flags(0b11, "virtqueue flags")?;
        queue.ready = flags & 1 != 0;
        queue.work = flags & 2 != 0;
        queue.desc_table = input.u64()?;
        queue.avail_ring = input.u64()?;
        queue.used_ring = input.u64()?;
        let mut index = |what| -> Result<u16, RestoreError> {
            let value = input.u32()?;
            u16::try_from(value).map_err(|_| RestoreError::Invalid {
                what,
                value: u64::from(value),
            })
        };
        queue.next_avail = index("virtqueue next available index")?;
        queue.next_used = index("virtqueue next used index")?;
        if (queue.ready && !queue.is_valid()) || (queue.work && !queue.ready) {
            return Err(RestoreError::Invalid {
                what: "virtqueue configuration",
                value: u64::from(flags),
            });
        }
        Ok(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_driver::{TestMemory, TestQueue, RAM_BASE};
    use super::*;
    use alloc::vec;

    fn setup(size: u16) -> (TestMemory, TestQueue, Queue) {
        let memory = TestMemory::new(1 << 20);
        let driver = TestQueue::new(RAM_BASE + 0x1000, size);
        let mut queue = Queue::new(size);
        driver.configure(&mut queue);
        queue.ready = true;
        (memory, driver, queue)
    }

    #[test]
    fn chain_is_read_in_order_and_used_ring_advances_2_7_8() {
        let (mut memory, mut driver, mut queue) = setup(8);
        let head = driver.add_chain(
            &mut memory,
            &[(RAM_BASE + 0x8000, 4, false), (RAM_BASE + 0x9000, 16, true)],
        );
        let chain = queue.pop(&memory).unwrap().unwrap();
        assert_eq!(chain.head, head);
        assert_eq!(chain.readable_len(), 4);
        assert_eq!(chain.writable_len(), 16);
        assert!(chain.is_well_ordered());
        assert_eq!(queue.pop(&memory).unwrap(), None);
        queue.add_used(&mut memory, head, 16).unwrap();
        assert_eq!(driver.used(&memory), vec![(u32::from(head), 16)]);
    }

    #[test]
    fn streams_cross_descriptor_boundaries_2_6_4() {
        let (mut memory, mut driver, mut queue) = setup(8);
        memory.poke(RAM_BASE + 0x8000, b"abc");
        memory.poke(RAM_BASE + 0x8100, b"defg");
        driver.add_chain(
            &mut memory,
            &[
                (RAM_BASE + 0x8000, 3, false),
                (RAM_BASE + 0x8100, 4, false),
                (RAM_BASE + 0x9000, 2, true),
                (RAM_BASE + 0x9100, 5, true),
            ],
        );
        let chain = queue.pop(&memory).unwrap().unwrap();
        let mut buf = [0u8; 5];
        chain.read_at(&memory, 1, &mut buf).unwrap();
        assert_eq!(&buf, b"bcdef");
        chain.write_at(&mut memory, 1, b"XYZ").unwrap();
        assert_eq!(memory.peek(RAM_BASE + 0x9001, 1), b"X");
        assert_eq!(memory.peek(RAM_BASE + 0x9100, 2), b"YZ");
        assert_eq!(
            chain.read_at(&memory, 5, &mut buf),
            Err(BufferError::PastEnd)
        );
        assert_eq!(
            chain.write_at(&mut memory, 6, b"ab"),
            Err(BufferError::PastEnd)
        );
    }

    #[test]
    fn a_looping_chain_is_an_error_not_a_hang_2_7_5_1() {
        let (mut memory, mut driver, mut queue) = setup(4);
        let head = driver.add_chain(
            &mut memory,
            &[(RAM_BASE + 0x8000, 4, false), (RAM_BASE + 0x8000, 4, false)],
        );
        // Point the last descriptor back at the head.
        driver.set_descriptor(
            &mut memory,
            head + 1,
            RAM_BASE + 0x8000,
            4,
            VIRTQ_DESC_F_NEXT,
            head,
        );
        assert_eq!(
            queue.pop(&memory),
            Err(ChainError::TooLong { queue_size: 4 })
        );
    }

    #[test]
    fn next_index_past_the_queue_is_an_error() {
        let (mut memory, mut driver, mut queue) = setup(4);
        let head = driver.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 4, false)]);
        driver.set_descriptor(
            &mut memory,
            head,
            RAM_BASE + 0x8000,
            4,
            VIRTQ_DESC_F_NEXT,
            9,
        );
        assert_eq!(
            queue.pop(&memory),
            Err(ChainError::IndexOutOfRange {
                index: 9,
                queue_size: 4
            })
        );
    }

    #[test]
    fn indirect_descriptors_are_refused_when_not_offered() {
        let (mut memory, mut driver, mut queue) = setup(4);
        let head = driver.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 16, false)]);
        driver.set_descriptor(
            &mut memory,
            head,
            RAM_BASE + 0x8000,
            16,
            VIRTQ_DESC_F_INDIRECT,
            0,
        );
        assert_eq!(
            queue.pop(&memory),
            Err(ChainError::IndirectNotNegotiated { index: head })
        );
    }

    #[test]
    fn avail_index_running_too_far_ahead_is_an_error_2_7_13_3() {
        let (mut memory, driver, mut queue) = setup(4);
        driver.set_avail_idx(&mut memory, 5);
        assert!(matches!(
            queue.pop(&memory),
            Err(ChainError::AvailIndex { .. })
        ));
    }

    #[test]
    fn rings_outside_guest_memory_are_an_error() {
        let mut memory = TestMemory::new(1 << 16);
        let mut queue = Queue::new(4);
        queue.ready = true;
        queue.desc_table = 0x10;
        queue.avail_ring = u64::MAX - 1;
        queue.used_ring = 0x1000;
        assert!(matches!(queue.pop(&memory), Err(ChainError::Memory(_))));
        assert!(queue.add_used(&mut memory, 0, 0).is_err());
        assert_eq!(
            memory.refused_writes(),
            1,
            "the used-ring write was refused, not done"
        );
    }

    #[test]
    fn buffer_addresses_outside_memory_fail_without_writing() {
        let (mut memory, mut driver, mut queue) = setup(4);
        driver.add_chain(&mut memory, &[(u64::MAX - 3, 8, true)]);
        let chain = queue.pop(&memory).unwrap().unwrap();
        assert!(matches!(
            chain.write_at(&mut memory, 0, &[1; 8]),
            Err(BufferError::Memory(_))
        ));
        assert_eq!(memory.refused_writes(), 1);
    }

    #[test]
    fn queue_configuration_must_be_power_of_two_and_aligned_2_7() {
        let mut queue = Queue::new(16);
        queue.desc_table = 0x1000;
        queue.avail_ring = 0x2000;
        queue.used_ring = 0x3000;
        assert!(queue.is_valid());
        queue.size = 12;
        assert!(!queue.is_valid());
        queue.size = 32;
        assert!(!queue.is_valid(), "larger than QueueNumMax");
        queue.size = 16;
        queue.desc_table = 0x1008;
        assert!(
            !queue.is_valid(),
            "descriptor table needs 16-byte alignment"
        );
        queue.desc_table = 0x1000;
        queue.used_ring = 0x3002;
        assert!(!queue.is_valid(), "used ring needs 4-byte alignment");
    }

    #[test]
    fn undo_pop_gives_the_same_chain_again() {
        let (mut memory, mut driver, mut queue) = setup(4);
        driver.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 4, true)]);
        let first = queue.pop(&memory).unwrap().unwrap();
        queue.undo_pop();
        assert_eq!(queue.pop(&memory).unwrap(), Some(first));
    }

    #[test]
    fn saved_state_restores_exactly_and_a_ready_queue_of_size_zero_is_refused() {
        let (_, _, mut queue) = setup(16);
        queue.next_avail = 7;
        queue.next_used = 5;
        queue.set_work();
        let mut saved = StateWriter::default();
        queue.save(&mut saved);
        let restored = Queue::restore(queue.max_size(), &mut StateReader::new(&saved.bytes));
        assert_eq!(restored.as_ref(), Ok(&queue));
        assert!(matches!(
            Queue::restore(queue.max_size() / 2, &mut StateReader::new(&saved.bytes)),
            Err(RestoreError::Mismatch { .. })
        ));
        let mut zero = saved.bytes.clone();
        zero[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            Queue::restore(queue.max_size(), &mut StateReader::new(&zero)),
            Err(RestoreError::Invalid {
                what: "virtqueue configuration",
                value: 3
            })
        );
    }
}
