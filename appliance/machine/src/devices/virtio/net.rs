//! The virtio network device (virtio 1.2 section 5.1): one receive and one transmit queue,
//! a MAC address in configuration space, no offloads and no mergeable receive buffers.
//!
//! Receiving is an input: the machine calls `receive` at an instruction boundary, and the
//! frame is written into the next receive buffer there and then. Transmitting is an output:
//! `process` moves frames from the transmit queue into a bounded outbox that the machine
//! drains with `take_transmitted`; while the outbox is full the remaining frames stay in the
//! available ring (backpressure), and the machine must drain and call `process` again before
//! it runs the hart on (as with a full console buffer). So the guest sees every transmit
//! completion at the same instruction in every run, however often the outbox is drained.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::mmio::VirtioMmio;
use super::queue::Queue;
use super::{read_config_bytes, GuestMemory, QueueWork, VirtioDevice, DEVICE_ID_NET};
use crate::state::{RestoreError, StateReader, StateWriter};

/// Feature bit (5.1.3): the device has a MAC address in configuration space.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// `struct virtio_net_hdr` with VIRTIO_F_VERSION_1: 12 bytes, `num_buffers` included even
/// without mergeable buffers (5.1.6).
pub const NET_HEADER_BYTES: usize = 12;
/// Without VIRTIO_NET_F_MRG_RXBUF, num_buffers is 1 (5.1.6.4).
const NUM_BUFFERS_OFFSET: usize = 10;
/// An Ethernet frame without FCS: 14-byte header, 1500-byte payload, one 802.1Q tag. With
/// no offloads negotiated, neither side sends more (5.1.6.2, 5.1.6.3.1).
pub const FRAME_BYTES_MAX: usize = 14 + 4 + 1500;
pub const FRAME_BYTES_MIN: usize = 14;
/// Transmitted frames held for the machine; the transmit queue waits when this is full.
pub const NET_OUTBOX_FRAMES_MAX: usize = 256;
/// QueueNumMax of both queues.
pub const NET_QUEUE_SIZE: u16 = 256;

const RECEIVE_QUEUE: usize = 0;
const TRANSMIT_QUEUE: usize = 1;
/// Configuration space (5.1.4): mac[6], then status, which we do not offer.
const CONFIG_BYTES: usize = 6;

/// Why `receive` did not take a frame. Guest state is untouched: keep the frame and retry
/// (`NoBuffer`, `NotReady`) or drop it (`FrameSize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// The driver has no receive buffer available now; it will add some and notify.
    NoBuffer,
    /// The driver has not brought the device up (or it needs a reset).
    NotReady,
    /// The frame is shorter than an Ethernet header or longer than `FRAME_BYTES_MAX`.
    FrameSize { len_bytes: usize },
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxError::NoBuffer => write!(f, "guest has no receive buffer; retry later"),
            RxError::NotReady => write!(f, "guest network device is not up"),
            RxError::FrameSize { len_bytes } => write!(
                f,
                "frame of {len_bytes} bytes is outside {FRAME_BYTES_MIN}..={FRAME_BYTES_MAX}"
            ),
        }
    }
}

impl core::error::Error for RxError {}

/// What `receive` did. Either way guest state changed, so the input must be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    Delivered,
    /// The driver's buffer was unusable (too small, device-readable, outside guest memory):
    /// it was returned empty, which Linux counts as a length error, and the frame is lost.
    DroppedBadBuffer,
    /// The receive ring is broken: the device set DEVICE_NEEDS_RESET and the frame is lost.
    DeviceNeedsReset,
}

/// The network device model.
pub struct Net {
    mac: [u8; 6],
    outbox: VecDeque<Vec<u8>>,
    /// Transmit chains returned without sending (bad buffers), for statistics.
    pub tx_dropped: u64,
}

impl Net {
    pub fn new(mac: [u8; 6]) -> Self {
        Net {
            mac,
            outbox: VecDeque::new(),
            tx_dropped: 0,
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn outbox_full(&self) -> bool {
        self.outbox.len() >= NET_OUTBOX_FRAMES_MAX
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Moves frames from the transmit queue to the outbox until either is exhausted.
    fn transmit(&mut self, queue: &mut Queue, memory: &mut dyn GuestMemory) -> QueueWork {
        let mut work = QueueWork::default();
        let mut used = false;
        while !self.outbox_full() {
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
            let len = chain.readable_len();
            let frame_len = (len as usize).saturating_sub(NET_HEADER_BYTES);
            let well_formed = chain.writable_len() == 0
                && len >= NET_HEADER_BYTES as u64
                && len <= (NET_HEADER_BYTES + FRAME_BYTES_MAX) as u64
                && frame_len >= FRAME_BYTES_MIN;
            let mut frame = vec![0; if well_formed { frame_len } else { 0 }];
            // The header is all zeros without offloads (5.1.6.2); the frame follows it.
            if well_formed
                && chain
                    .read_at(memory, NET_HEADER_BYTES as u64, &mut frame)
                    .is_ok()
            {
                self.outbox.push_back(frame);
            } else {
                self.tx_dropped += 1;
            }
            // 5.1.6.2: transmit buffers are returned with len 0 (nothing was written).
            if queue.add_used(memory, chain.head, 0).is_err() {
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

    fn deliver(
        &mut self,
        queue: &mut Queue,
        frame: &[u8],
        memory: &mut dyn GuestMemory,
    ) -> (QueueWork, Result<RxOutcome, RxError>) {
        let mut work = QueueWork::default();
        let chain = match queue.pop(memory) {
            Ok(Some(chain)) => chain,
            Ok(None) => return (work, Err(RxError::NoBuffer)),
            Err(_) => {
                work.needs_reset = true;
                return (work, Ok(RxOutcome::DeviceNeedsReset));
            }
        };
        let mut packet = vec![0u8; NET_HEADER_BYTES + frame.len()];
        packet[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&1u16.to_le_bytes());
        packet[NET_HEADER_BYTES..].copy_from_slice(frame);
        let fits = chain.readable_len() == 0 && chain.writable_len() >= packet.len() as u64;
        let (outcome, written) = if fits && chain.write_at(memory, 0, &packet).is_ok() {
            (RxOutcome::Delivered, packet.len() as u32)
        } else {
            (RxOutcome::DroppedBadBuffer, 0)
        };
        if queue.add_used(memory, chain.head, written).is_err() {
            work.needs_reset = true;
            return (work, Ok(RxOutcome::DeviceNeedsReset));
        }
        match queue.interrupts_suppressed(memory) {
            Ok(suppressed) => work.notify_driver = !suppressed,
            Err(_) => {
                work.needs_reset = true;
                return (work, Ok(RxOutcome::DeviceNeedsReset));
            }
        }
        (work, Ok(outcome))
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn device_features(&self) -> u64 {
        VIRTIO_NET_F_MAC
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[NET_QUEUE_SIZE, NET_QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config: [u8; CONFIG_BYTES] = self.mac;
        read_config_bytes(&config, offset, data);
    }

    /// Receive buffers are used only by `receive`; a notify on the receive queue just says
    /// the driver added some (the machine may retry a held frame). Transmit does the work.
    fn process(
        &mut self,
        queues: &mut [Queue],
        _features: u64,
        memory: &mut dyn GuestMemory,
    ) -> QueueWork {
        queues[RECEIVE_QUEUE].clear_work();
        let queue = &mut queues[TRANSMIT_QUEUE];
        if !queue.has_work() {
            return QueueWork::default();
        }
        self.transmit(queue, memory)
    }

    /// Frames already in the outbox left the guest before the reset; they stay to be sent.
    fn reset(&mut self) {}

    /// The outbox is not guest state: when the driver drains it varies between runs, and
    /// a full outbox only stops the run before the guest executes on (see the module doc).
    fn write_state(&self, out: &mut StateWriter) {
        out.bytes(&self.mac);
        out.u64(self.tx_dropped);
    }

    /// The frames the guest transmitted that the host has not taken, and the drop counter.
    /// Received frames are never held: `receive` writes them to guest memory at once.
    type Saved = (VecDeque<Vec<u8>>, u64);

    fn save(&self, out: &mut StateWriter) {
        out.bytes(&self.mac);
        out.u64(self.tx_dropped);
        out.u32(self.outbox.len() as u32);
        for frame in &self.outbox {
            out.sized_bytes(frame);
        }
    }

    fn parse_saved(&self, input: &mut StateReader) -> Result<Self::Saved, RestoreError> {
        let mac: [u8; 6] = input.array()?;
        if mac != self.mac {
            let word = |mac: [u8; 6]| {
                mac.iter()
                    .fold(0u64, |acc, &byte| acc << 8 | u64::from(byte))
            };
            return Err(RestoreError::Mismatch {
                what: "network MAC address",
                expected: word(self.mac),
                found: word(mac),
            });
        }
        let tx_dropped = input.u64()?;
        let count = input.u32()?;
        if count as usize > NET_OUTBOX_FRAMES_MAX {
            return Err(RestoreError::Invalid {
                what: "network outbox length",
                value: u64::from(count),
            });
        }
        let mut outbox = VecDeque::with_capacity(count as usize);
        for _ in 0..count {
            let frame = input.sized_bytes(FRAME_BYTES_MAX, "network frame length")?;
            if frame.len() < FRAME_BYTES_MIN {
                return Err(RestoreError::Invalid {
                    what: "network frame length",
                    value: frame.len() as u64,
                });
            }
            outbox.push_back(frame.to_vec());
        }
        Ok((outbox, tx_dropped))
    }

    fn restore_saved(&mut self, (outbox, tx_dropped): Self::Saved) {
        self.outbox = outbox;
        self.tx_dropped = tx_dropped;
    }
}

impl VirtioMmio<Net> {
    /// An input: a frame from the network enters the guest at this instruction boundary.
    /// `Err` leaves guest state untouched (keep the frame for `NoBuffer`/`NotReady`); `Ok`
    /// means guest state changed and the input must be recorded.
    pub fn receive(
        &mut self,
        frame: &[u8],
        memory: &mut dyn GuestMemory,
    ) -> Result<RxOutcome, RxError> {
        if !(FRAME_BYTES_MIN..=FRAME_BYTES_MAX).contains(&frame.len()) {
            return Err(RxError::FrameSize {
                len_bytes: frame.len(),
            });
        }
        self.with_queues(|net, queues, _| {
            let queue = &mut queues[RECEIVE_QUEUE];
            if !queue.ready {
                return (QueueWork::default(), Err(RxError::NotReady));
            }
            net.deliver(queue, frame, memory)
        })
        .unwrap_or(Err(RxError::NotReady))
    }

    /// Takes the frames the guest transmitted since the last call, oldest first. If the
    /// outbox was full, call `process` before running the hart again.
    pub fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        self.device_mut().outbox.drain(..).collect()
    }

    /// Transmit frames are waiting for outbox space: drain, then `process`.
    pub fn transmit_blocked(&self) -> bool {
        self.device().outbox_full() && self.has_work()
    }
}

#[cfg(test)]
mod tests {
    use super::super::mmio::CONFIG;
    use super::super::test_driver::{
        acknowledge_interrupt, initialise, notify, TestMemory, TestQueue, RAM_BASE,
    };
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const BUFFERS: u64 = RAM_BASE + 0x40000;

    struct Fixture {
        device: VirtioMmio<Net>,
        memory: TestMemory,
        rx: TestQueue,
        tx: TestQueue,
    }

    fn setup_with_tx_size(tx_size: u16) -> Fixture {
        let mut device = VirtioMmio::new(Net::new(MAC));
        let memory = TestMemory::new(4 << 20);
        let queues = [
            TestQueue::new(RAM_BASE, 16),
            TestQueue::new(RAM_BASE + 0x10000, tx_size),
        ];
        initialise(&mut device, &queues);
        let [rx, tx] = queues;
        Fixture {
            device,
            memory,
            rx,
            tx,
        }
    }

    fn setup() -> Fixture {
        setup_with_tx_size(16)
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut frame = vec![fill; len];
        frame[..6].copy_from_slice(&MAC);
        frame
    }

    #[test]
    fn mac_is_in_config_space_5_1_4() {
        let mut f = setup();
        for (i, byte) in MAC.iter().enumerate() {
            assert_eq!(
                f.device.mmio_load(CONFIG + i as u64, 1),
                Some(u64::from(*byte))
            );
        }
        assert_eq!(f.device.mmio_load(CONFIG + 6, 2), Some(0));
    }

    #[test]
    fn received_frame_lands_after_a_header_with_num_buffers_1_5_1_6_4() {
        let mut f = setup();
        let head = f.rx.add_chain(&mut f.memory, &[(BUFFERS, 1526, true)]);
        notify(&mut f.device, 0);
        f.device.process(&mut f.memory);
        let data = frame(60, 0xab);
        assert_eq!(
            f.device.receive(&data, &mut f.memory),
            Ok(RxOutcome::Delivered)
        );
        assert_eq!(f.rx.used(&f.memory), vec![(u32::from(head), 72)]);
        assert_eq!(
            f.memory.peek(BUFFERS, 12),
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(f.memory.peek(BUFFERS + 12, 60), &data[..]);
        assert_eq!(acknowledge_interrupt(&mut f.device), 1);
    }

    #[test]
    fn no_receive_buffer_leaves_the_frame_with_the_caller() {
        let mut f = setup();
        assert_eq!(
            f.device.receive(&frame(60, 1), &mut f.memory),
            Err(RxError::NoBuffer)
        );
        assert!(!f.device.interrupt());
    }

    #[test]
    fn receive_before_driver_ok_is_refused() {
        let mut device = VirtioMmio::new(Net::new(MAC));
        let mut memory = TestMemory::new(1 << 16);
        assert_eq!(
            device.receive(&frame(60, 1), &mut memory),
            Err(RxError::NotReady)
        );
    }

    #[test]
    fn oversized_and_runt_frames_are_refused() {
        let mut f = setup();
        assert_eq!(
            f.device
                .receive(&vec![0; FRAME_BYTES_MAX + 1], &mut f.memory),
            Err(RxError::FrameSize {
                len_bytes: FRAME_BYTES_MAX + 1
            })
        );
        assert_eq!(
            f.device.receive(&[0; 10], &mut f.memory),
            Err(RxError::FrameSize { len_bytes: 10 })
        );
    }

    #[test]
    fn too_small_or_readable_receive_buffer_is_returned_empty() {
        let mut f = setup();
        f.rx.add_chain(&mut f.memory, &[(BUFFERS, 64, true)]);
        f.rx.add_chain(&mut f.memory, &[(BUFFERS, 1526, false)]);
        f.rx.add_chain(&mut f.memory, &[(0x10, 1526, true)]);
        for _ in 0..3 {
            assert_eq!(
                f.device.receive(&frame(100, 2), &mut f.memory),
                Ok(RxOutcome::DroppedBadBuffer)
            );
        }
        assert_eq!(
            f.rx.used(&f.memory).iter().map(|u| u.1).collect::<Vec<_>>(),
            vec![0, 0, 0]
        );
        assert_eq!(
            f.memory.peek(BUFFERS, 12),
            &[0; 12],
            "nothing written into the small buffer"
        );
        assert!(!f.device.needs_reset());
    }

    #[test]
    fn broken_receive_ring_sets_needs_reset() {
        let mut f = setup();
        f.rx.set_avail_idx(&mut f.memory, 40);
        assert_eq!(
            f.device.receive(&frame(60, 1), &mut f.memory),
            Ok(RxOutcome::DeviceNeedsReset)
        );
        assert!(f.device.needs_reset());
        assert_eq!(
            f.device.receive(&frame(60, 1), &mut f.memory),
            Err(RxError::NotReady)
        );
    }

    #[test]
    fn transmitted_frames_lose_their_header_5_1_6_2() {
        let mut f = setup();
        let data = frame(100, 0xcd);
        f.memory.poke(BUFFERS, &[0; 12]);
        f.memory.poke(BUFFERS + 0x100, &data);
        let head = f.tx.add_chain(
            &mut f.memory,
            &[(BUFFERS, 12, false), (BUFFERS + 0x100, 100, false)],
        );
        notify(&mut f.device, 1);
        f.device.process(&mut f.memory);
        assert_eq!(f.device.take_transmitted(), vec![data]);
        assert_eq!(f.tx.used(&f.memory), vec![(u32::from(head), 0)]);
        assert!(f.device.take_transmitted().is_empty());
    }

    #[test]
    fn malformed_transmit_chains_are_dropped_and_returned() {
        let mut f = setup();
        // Writable buffer, oversized frame, runt frame, address outside memory.
        f.tx.add_chain(&mut f.memory, &[(BUFFERS, 100, true)]);
        f.tx.add_chain(
            &mut f.memory,
            &[(
                BUFFERS,
                (NET_HEADER_BYTES + FRAME_BYTES_MAX + 1) as u32,
                false,
            )],
        );
        f.tx.add_chain(&mut f.memory, &[(BUFFERS, 20, false)]);
        f.tx.add_chain(&mut f.memory, &[(0x10, 100, false)]);
        notify(&mut f.device, 1);
        f.device.process(&mut f.memory);
        assert!(f.device.take_transmitted().is_empty());
        assert_eq!(f.tx.used(&f.memory).len(), 4);
        assert_eq!(f.device.device().tx_dropped, 4);
        assert!(!f.device.needs_reset());
    }

    #[test]
    fn full_outbox_leaves_frames_in_the_ring_until_drained() {
        // A transmit queue bigger than the outbox.
        let mut f = setup_with_tx_size(NET_QUEUE_SIZE);
        f.memory.poke(BUFFERS, &frame(72, 3));
        for _ in 0..200 {
            f.tx.add_chain(&mut f.memory, &[(BUFFERS, 72, false)]);
        }
        notify(&mut f.device, 1);
        f.device.process(&mut f.memory);
        for _ in 0..100 {
            f.tx.add_chain(&mut f.memory, &[(BUFFERS, 72, false)]);
        }
        notify(&mut f.device, 1);
        f.device.process(&mut f.memory);
        assert!(f.device.transmit_blocked());
        assert_eq!(f.tx.used(&f.memory).len(), NET_OUTBOX_FRAMES_MAX);
        assert_eq!(f.device.take_transmitted().len(), NET_OUTBOX_FRAMES_MAX);
        assert!(!f.device.transmit_blocked());
        f.device.process(&mut f.memory);
        assert_eq!(f.tx.used(&f.memory).len(), 300 - NET_OUTBOX_FRAMES_MAX);
        assert_eq!(
            f.device.take_transmitted().len(),
            300 - NET_OUTBOX_FRAMES_MAX
        );
        assert!(!f.device.has_work());
    }

    fn saved(device: &VirtioMmio<Net>) -> Vec<u8> {
        let mut out = crate::state::StateWriter::default();
        device.save(&mut out);
        out.bytes
    }

    #[test]
    fn saved_state_carries_untaken_frames_and_the_queues_into_a_fresh_device() {
        let mut f = setup();
        let data = frame(100, 0xcd);
        f.memory.poke(BUFFERS, &[0; 12]);
        f.memory.poke(BUFFERS + 0x100, &data);
        f.tx.add_chain(
            &mut f.memory,
            &[(BUFFERS, 12, false), (BUFFERS + 0x100, 100, false)],
        );
        notify(&mut f.device, 1);
        f.device.process(&mut f.memory);
        let bytes = saved(&f.device);
        let mut fresh = VirtioMmio::new(Net::new(MAC));
        let parsed = fresh
            .parse_saved(&mut StateReader::new(&bytes))
            .expect("same MAC");
        fresh.restore_saved(parsed);
        assert_eq!(saved(&fresh), bytes);
        assert!(fresh.interrupt());
        assert_eq!(fresh.take_transmitted(), vec![data]);
        // The receive queue goes on where the old device left it.
        f.device = fresh;
        f.rx.add_chain(&mut f.memory, &[(BUFFERS + 0x1000, 2048, true)]);
        assert_eq!(
            f.device.receive(&frame(60, 1), &mut f.memory),
            Ok(RxOutcome::Delivered)
        );
    }

    #[test]
    fn saved_state_with_a_runt_frame_or_too_many_frames_is_refused() {
        let f = setup();
        let mut out = crate::state::StateWriter::default();
        f.device.save(&mut out);
        let empty_outbox = out.bytes.len() - 4;
        let mut runt = out.bytes.clone();
        runt.truncate(empty_outbox);
        runt.extend_from_slice(&1u32.to_le_bytes());
        runt.extend_from_slice(&2u32.to_le_bytes());
        runt.extend_from_slice(&[1, 2]);
        assert_eq!(
            f.device.parse_saved(&mut StateReader::new(&runt)).err(),
            Some(RestoreError::Invalid {
                what: "network frame length",
                value: 2
            })
        );
        let mut many = out.bytes.clone();
        many.truncate(empty_outbox);
        many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            f.device.parse_saved(&mut StateReader::new(&many)),
            Err(RestoreError::Invalid {
                what: "network outbox length",
                ..
            })
        ));
    }
}
