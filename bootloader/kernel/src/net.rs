//! A smoltcp `Device` over `VirtIONetRaw` with every receive buffer posted and asynchronous
//! transmit: a frame is queued and the driver moves on; finished buffers are reclaimed later.
//!
//! The virtio net device (virtio 1.2 section 5.1.6) prefixes each frame with a
//! `virtio_net_hdr`; the raw driver's `fill_buffer_header` writes it and `receive_complete`
//! reports its length.

use crate::hal::KernelHal;
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::SomeTransport;

/// Descriptors per virtqueue. QEMU's virtio-net queues hold 256.
pub const QUEUE_SIZE: usize = 256;
/// Ethernet MTU the stack uses, in bytes (no jumbo frames).
pub const MTU_BYTES: usize = 1500;
/// Destination and source MAC and EtherType (IEEE 802.3 section 3.1.1, no VLAN tag).
const ETHERNET_HEADER_BYTES: usize = 14;
/// One buffer holds the virtio header (12 bytes), an Ethernet header and an MTU-sized payload.
const BUFFER_BYTES: usize = 2048;
/// Transmit buffers in flight at most; one descriptor each, so the queue bounds it.
const TRANSMIT_BUFFERS: usize = QUEUE_SIZE;

/// Over PCI or virtio-mmio, whichever the machine has.
type RawNet = VirtIONetRaw<KernelHal, SomeTransport<'static>, QUEUE_SIZE>;

/// Counters for the console.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetCounters {
    pub frames_received: u64,
    pub frames_sent: u64,
    pub receive_errors: u64,
    pub transmit_errors: u64,
}

struct Inner {
    raw: RawNet,
    /// Receive buffers by descriptor token (the head descriptor index, below `QUEUE_SIZE`).
    /// `None` while the buffer is lent to smoltcp.
    receive_posted: Vec<Option<Box<[u8]>>>,
    /// Transmit buffers in flight, by token, with the length handed to the device.
    transmit_in_flight: Vec<Option<(Box<[u8]>, usize)>>,
    transmit_free: Vec<Box<[u8]>>,
    counters: NetCounters,
}

impl Inner {
    fn post_receive(&mut self, mut buffer: Box<[u8]>) {
        // SAFETY: the buffer lives in `receive_posted` (heap, not moved) until
        // `receive_complete` hands it back; nothing touches it meanwhile.
        match unsafe { self.raw.receive_begin(&mut buffer) } {
            Ok(token) => self.receive_posted[usize::from(token)] = Some(buffer),
            Err(_) => {
                // Cannot happen with at most QUEUE_SIZE buffers; keep the buffer out of use.
                self.counters.receive_errors += 1;
            }
        }
    }

    /// Takes back transmit buffers the device has finished with.
    fn reclaim_transmitted(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let Some((buffer, length)) = self.transmit_in_flight[usize::from(token)].take() else {
                // A token we never issued: the device is broken; stop reclaiming.
                self.counters.transmit_errors += 1;
                return;
            };
            // SAFETY: the same buffer and length as passed to `transmit_begin` for this token.
            if unsafe { self.raw.transmit_complete(token, &buffer[..length]) }.is_err() {
                self.counters.transmit_errors += 1;
            }
            self.transmit_free.push(buffer);
        }
    }
}

/// The replication NIC as a smoltcp device.
pub struct NetDevice {
    inner: RefCell<Inner>,
}

impl NetDevice {
    pub fn new(raw: RawNet) -> Self {
        let mut inner = Inner {
            raw,
            receive_posted: (0..QUEUE_SIZE).map(|_| None).collect(),
            transmit_in_flight: (0..QUEUE_SIZE).map(|_| None).collect(),
            transmit_free: (0..TRANSMIT_BUFFERS)
                .map(|_| vec![0u8; BUFFER_BYTES].into_boxed_slice())
                .collect(),
            counters: NetCounters::default(),
        };
        inner.raw.disable_interrupts();
        for _ in 0..QUEUE_SIZE {
            inner.post_receive(vec![0u8; BUFFER_BYTES].into_boxed_slice());
        }
        Self {
            inner: RefCell::new(inner),
        }
    }

    pub fn mac_address(&self) -> [u8; 6] {
        self.inner.borrow().raw.mac_address()
    }

    pub fn counters(&self) -> NetCounters {
        self.inner.borrow().counters
    }
}

pub struct NetRxToken<'a> {
    inner: &'a RefCell<Inner>,
    buffer: Box<[u8]>,
    header_bytes: usize,
    frame_bytes: usize,
}

pub struct NetTxToken<'a> {
    inner: &'a RefCell<Inner>,
}

impl RxToken for NetRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // The borrow is not held across `f`: smoltcp transmits a reply from inside it.
        let result = f(&self.buffer[self.header_bytes..self.header_bytes + self.frame_bytes]);
        self.inner.borrow_mut().post_receive(self.buffer);
        result
    }
}

impl TxToken for NetTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
        let mut inner = self.inner.borrow_mut();
        inner.reclaim_transmitted();
        // `transmit` only hands out a token when a buffer is free.
        let mut buffer = inner
            .transmit_free
            .pop()
            .expect("transmit token without a free buffer");
        let header_bytes = inner
            .raw
            .fill_buffer_header(&mut buffer)
            .expect("buffer holds a header");
        let total = header_bytes + length;
        assert!(
            total <= buffer.len(),
            "frame of {length} bytes exceeds the {MTU_BYTES}-byte mtu"
        );
        let result = f(&mut buffer[header_bytes..total]);
        // SAFETY: the buffer is parked in `transmit_in_flight` until the device returns its token.
        match unsafe { inner.raw.transmit_begin(&buffer[..total]) } {
            Ok(token) => {
                inner.transmit_in_flight[usize::from(token)] = Some((buffer, total));
                inner.counters.frames_sent += 1;
            }
            Err(_) => {
                inner.counters.transmit_errors += 1;
                inner.transmit_free.push(buffer);
            }
        }
        result
    }
}

impl Device for NetDevice {
    type RxToken<'a> = NetRxToken<'a>;
    type TxToken<'a> = NetTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(NetRxToken<'_>, NetTxToken<'_>)> {
        let inner = self.inner.get_mut();
        inner.reclaim_transmitted();
        if inner.transmit_free.is_empty() || !inner.raw.can_send() {
            // No reply could be sent; leave the frame queued until transmits complete.
            return None;
        }
        loop {
            let token = inner.raw.poll_receive()?;
            let Some(mut buffer) = inner.receive_posted.get_mut(usize::from(token))?.take() else {
                inner.counters.receive_errors += 1;
                return None;
            };
            // SAFETY: the same buffer that was posted under this token.
            match unsafe { inner.raw.receive_complete(token, &mut buffer) } {
                Ok((header_bytes, frame_bytes)) => {
                    inner.counters.frames_received += 1;
                    return Some((
                        NetRxToken {
                            inner: &self.inner,
                            buffer,
                            header_bytes,
                            frame_bytes,
                        },
                        NetTxToken { inner: &self.inner },
                    ));
                }
                Err(_) => {
                    inner.counters.receive_errors += 1;
                    inner.post_receive(buffer);
                }
            }
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<NetTxToken<'_>> {
        let inner = self.inner.get_mut();
        inner.reclaim_transmitted();
        if inner.transmit_free.is_empty() || !inner.raw.can_send() {
            return None;
        }
        Some(NetTxToken { inner: &self.inner })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = MTU_BYTES + ETHERNET_HEADER_BYTES;
        capabilities.max_burst_size = Some(QUEUE_SIZE / 2);
        capabilities
    }
}

/// Raw frames for the layer-2 bridge between the service NIC and the guest's virtio-net:
/// the appliance never parses or answers them.
impl NetDevice {
    /// True when a received frame waits, without taking it.
    pub fn has_frame(&self) -> bool {
        self.inner.borrow().raw.poll_receive().is_some()
    }

    /// The next received Ethernet frame, if any.
    pub fn receive_frame(&mut self) -> Option<Vec<u8>> {
        let (rx, _tx) = self.receive(Instant::ZERO)?;
        Some(rx.consume(|frame| frame.to_vec()))
    }

    /// Queues one Ethernet frame for transmission. A frame longer than the NIC's MTU allows,
    /// or one that finds every transmit buffer in flight, is dropped (as a switch port would
    /// drop it) and counted; returns whether it was queued.
    pub fn send_frame(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MTU_BYTES + ETHERNET_HEADER_BYTES {
            self.inner.get_mut().counters.transmit_errors += 1;
            return false;
        }
        match self.transmit(Instant::ZERO) {
            Some(tx) => {
                tx.consume(frame.len(), |buffer| buffer.copy_from_slice(frame));
                true
            }
            None => {
                self.inner.get_mut().counters.transmit_errors += 1;
                false
            }
        }
    }
}
