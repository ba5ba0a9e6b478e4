//! The virtio entropy device (virtio 1.2 section 5.4), fed only through the nondeterminism
//! port.
//!
//! Requests are served from a pool that the machine fills with `supply_entropy`, an input
//! recorded with its instruction count. With the pool empty a request stays in the available
//! ring and `wants_entropy` says how many bytes would serve it; so replay, which supplies the
//! same bytes at the same counts, fills the same buffers at the same instructions.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::mmio::VirtioMmio;
use super::queue::Queue;
use super::{GuestMemory, QueueWork, VirtioDevice, DEVICE_ID_ENTROPY};
use crate::state::{RestoreError, StateReader, StateWriter};

/// QueueNumMax of the one request queue (5.4.2: requestq).
pub const RNG_QUEUE_SIZE: u16 = 64;
/// Entropy held for the guest; `supply_entropy` takes no more than this.
pub const ENTROPY_POOL_BYTES_MAX: usize = 4096;
/// The most one request is served at a time (a 5.4.6 device may write fewer bytes than the
/// buffer holds).
pub const RNG_REQUEST_BYTES_MAX: usize = 4096;

const REQUEST_QUEUE: usize = 0;

/// The entropy device model.
pub struct Rng {
    pool: VecDeque<u8>,
    /// Bytes the first waiting request would take, beyond what the pool holds.
    wanted_bytes: usize,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    pub fn new() -> Self {
        Rng {
            pool: VecDeque::new(),
            wanted_bytes: 0,
        }
    }

    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Serves requests from the pool until either runs out.
    fn serve(&mut self, queue: &mut Queue, memory: &mut dyn GuestMemory) -> QueueWork {
        let mut work = QueueWork::default();
        let mut used = false;
        self.wanted_bytes = 0;
        loop {
            let chain = match queue.pop(memory) {
                Ok(Some(chain)) => chain,
                Ok(None) => {
                    queue.clear_work();
                    break;
                }
                Err(_) => {
                    work.needs_reset = true;
                    return work;
                }
            };
            // 5.4.6.1: the driver places only device-writable buffers here; a readable one
            // is returned unused.
            let capacity = if chain.readable_len() == 0 {
                chain.writable_len().min(RNG_REQUEST_BYTES_MAX as u64) as usize
            } else {
                0
            };
            if capacity > 0 && self.pool.is_empty() {
                queue.undo_pop();
                self.wanted_bytes = capacity;
                break;
            }
            let take = capacity.min(self.pool.len());
            let bytes: Vec<u8> = self.pool.drain(..take).collect();
            let written = match chain.write_at(memory, 0, &bytes) {
                Ok(()) => take,
                // An address outside guest memory: nothing usable was written. The entropy is
                // spent either way, so replay stays exact.
                Err(_) => 0,
            };
            if queue.add_used(memory, chain.head, written as u32).is_err() {
                work.needs_reset = true;
                return work;
            }
            used = true;
        }
        if used {
            match queue.interrupts_suppressed(memory) {
                Ok(suppressed) => work.notify_driver = !suppressed,
                Err(_) => work.needs_reset = true,
            }
        }
        work
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        out.u32(self.pool.len() as u32);
        let (front, back) = self.pool.as_slices();
        out.bytes(front);
        out.bytes(back);
        out.u32(self.wanted_bytes as u32);
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        DEVICE_ID_ENTROPY
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[RNG_QUEUE_SIZE]
    }

    /// 5.4.4: no configuration space.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(
        &mut self,
        queues: &mut [Queue],
        _features: u64,
        memory: &mut dyn GuestMemory,
    ) -> QueueWork {
        let queue = &mut queues[REQUEST_QUEUE];
        if !queue.has_work() {
            return QueueWork::default();
        }
        self.serve(queue, memory)
    }

    /// The pool is host input already handed over: it survives a device reset.
    fn reset(&mut self) {
        self.wanted_bytes = 0;
    }

    fn write_state(&self, out: &mut StateWriter) {
        Rng::write_state(self, out);
    }

    /// The entropy pool and the size of the request waiting for more.
    type Saved = Rng;

    fn save(&self, out: &mut StateWriter) {
        Rng::write_state(self, out);
    }

    fn parse_saved(&self, input: &mut StateReader) -> Result<Rng, RestoreError> {
        let pool = input.sized_bytes(ENTROPY_POOL_BYTES_MAX, "entropy pool length")?;
        let wanted = input.u32()?;
        if wanted as usize > RNG_REQUEST_BYTES_MAX {
            return Err(RestoreError::Invalid {
                what: "entropy request length",
                value: u64::from(wanted),
            });
        }
        Ok(Rng {
            pool: pool.iter().copied().collect(),
            wanted_bytes: wanted as usize,
        })
    }

    fn restore_saved(&mut self, saved: Rng) {
        *self = saved;
    }
}

impl VirtioMmio<Rng> {
    /// How many bytes of entropy would serve the request the guest is waiting on (0: none
    /// waiting). The driver supplies them through the nondeterminism port.
    pub fn wants_entropy(&self) -> usize {
        if self.has_work() {
            self.device().wanted_bytes
        } else {
            0
        }
    }

    /// An input: entropy from the host enters the pool, and waiting requests are served at
    /// once, at this instruction boundary. Returns how many bytes the pool took (the rest
    /// was not consumed; the pool is bounded).
    pub fn supply_entropy(&mut self, bytes: &[u8], memory: &mut dyn GuestMemory) -> usize {
        let rng = self.device_mut();
        let take = bytes.len().min(ENTROPY_POOL_BYTES_MAX - rng.pool.len());
        rng.pool.extend(&bytes[..take]);
        self.with_queues(|rng, queues, _| {
            let queue = &mut queues[REQUEST_QUEUE];
            let work = if queue.has_work() {
                rng.serve(queue, memory)
            } else {
                QueueWork::default()
            };
            (work, ())
        });
        take
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_driver::{
        acknowledge_interrupt, initialise, notify, TestMemory, TestQueue, RAM_BASE,
    };
    use super::*;
    use alloc::vec;

    fn setup() -> (VirtioMmio<Rng>, TestMemory, TestQueue) {
        let mut device = VirtioMmio::new(Rng::new());
        let memory = TestMemory::new(1 << 20);
        let queue = TestQueue::new(RAM_BASE, 16);
        initialise(&mut device, core::slice::from_ref(&queue));
        (device, memory, queue)
    }

    #[test]
    fn request_waits_for_entropy_then_is_served_by_supply_5_4_6() {
        let (mut device, mut memory, mut queue) = setup();
        let buffer = RAM_BASE + 0x8000;
        let head = queue.add_chain(&mut memory, &[(buffer, 16, true)]);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert_eq!(device.wants_entropy(), 16);
        assert!(
            queue.used(&memory).is_empty(),
            "nothing served without entropy"
        );
        assert!(!device.interrupt());

        assert_eq!(device.supply_entropy(&[0xa5; 10], &mut memory), 10);
        assert_eq!(
            queue.used(&memory),
            vec![(u32::from(head), 10)],
            "a partial fill is allowed"
        );
        assert_eq!(
            memory.peek(buffer, 11),
            &[0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0]
        );
        assert_eq!(device.wants_entropy(), 0);
        assert_eq!(acknowledge_interrupt(&mut device), 1);
    }

    #[test]
    fn pooled_entropy_serves_the_next_request_at_process() {
        let (mut device, mut memory, mut queue) = setup();
        device.supply_entropy(&[1, 2, 3, 4, 5, 6], &mut memory);
        let head = queue.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 4, true)]);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert_eq!(queue.used(&memory), vec![(u32::from(head), 4)]);
        assert_eq!(memory.peek(RAM_BASE + 0x8000, 4), &[1, 2, 3, 4]);
        assert_eq!(device.device().pool_len(), 2);
    }

    #[test]
    fn pool_is_bounded() {
        let (mut device, mut memory, _) = setup();
        let taken = device.supply_entropy(&vec![7; ENTROPY_POOL_BYTES_MAX + 100], &mut memory);
        assert_eq!(taken, ENTROPY_POOL_BYTES_MAX);
        assert_eq!(device.supply_entropy(&[1], &mut memory), 0);
    }

    #[test]
    fn readable_buffer_is_returned_unused_5_4_6_1() {
        let (mut device, mut memory, mut queue) = setup();
        device.supply_entropy(&[9; 8], &mut memory);
        let head = queue.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 8, false)]);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert_eq!(queue.used(&memory), vec![(u32::from(head), 0)]);
        assert_eq!(device.device().pool_len(), 8, "no entropy spent");
    }

    #[test]
    fn buffer_outside_memory_completes_empty_without_writing() {
        let (mut device, mut memory, mut queue) = setup();
        device.supply_entropy(&[9; 8], &mut memory);
        let head = queue.add_chain(&mut memory, &[(0x1000, 8, true)]);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert_eq!(queue.used(&memory), vec![(u32::from(head), 0)]);
        assert_eq!(memory.refused_writes(), 1);
        assert!(!device.needs_reset());
    }

    #[test]
    fn broken_ring_sets_needs_reset_and_stops() {
        let (mut device, mut memory, queue) = setup();
        queue.set_avail_idx(&mut memory, 100);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert!(device.needs_reset());
        assert!(!device.has_work());
        assert_eq!(
            acknowledge_interrupt(&mut device),
            2,
            "configuration change"
        );
    }

    #[test]
    fn no_interrupt_flag_suppresses_the_notification_2_7_7() {
        let (mut device, mut memory, mut queue) = setup();
        queue.set_avail_flags(&mut memory, 1);
        device.supply_entropy(&[9; 8], &mut memory);
        queue.add_chain(&mut memory, &[(RAM_BASE + 0x8000, 8, true)]);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert_eq!(queue.used(&memory).len(), 1);
        assert!(!device.interrupt());
    }

    fn saved(device: &VirtioMmio<Rng>) -> Vec<u8> {
        let mut out = crate::state::StateWriter::default();
        device.save(&mut out);
        out.bytes
    }

    #[test]
    fn saved_state_keeps_the_pool_and_the_waiting_request() {
        let (mut device, mut memory, mut queue) = setup();
        assert_eq!(device.supply_entropy(&[1, 2, 3], &mut memory), 3);
        assert_eq!(device.device().pool_len(), 3);
        let buffer = RAM_BASE + 0x8000;
        queue.add_chain(&mut memory, &[(buffer, 3, true)]);
        queue.add_chain(&mut memory, &[(buffer + 16, 8, true)]);
        notify(&mut device, 0);
        device.process(&mut memory);
        assert_eq!(device.wants_entropy(), 8);
        let bytes = saved(&device);
        let mut fresh = VirtioMmio::new(Rng::new());
        let parsed = fresh.parse_saved(&mut StateReader::new(&bytes)).unwrap();
        fresh.restore_saved(parsed);
        assert_eq!(saved(&fresh), bytes);
        assert_eq!(fresh.wants_entropy(), 8);
        assert_eq!(fresh.device().pool_len(), 0);
        assert_eq!(memory.peek(buffer, 3), &[1, 2, 3]);
        fresh.supply_entropy(&[9; 10], &mut memory);
        assert_eq!(memory.peek(buffer + 16, 8), &[9; 8]);
        assert_eq!(fresh.device().pool_len(), 2);
        let mut garbled = bytes.clone();
        let last = garbled.len() - 1;
        garbled[last] = 0xff;
        assert!(matches!(
            fresh.parse_saved(&mut StateReader::new(&garbled)),
            Err(RestoreError::Invalid {
                what: "entropy request length",
                ..
            })
        ));
        assert!(fresh
            .parse_saved(&mut StateReader::new(&bytes[..bytes.len() - 1]))
            .is_err());
    }
}
