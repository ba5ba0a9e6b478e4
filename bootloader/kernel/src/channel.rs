//! The log channel on the replication NIC: `ft` frames as UDP datagrams through smoltcp, the
//! same wire as the hosted process (`appliance/hosted/src/pair/replica.rs`), so appliances,
//! hosted replicas and either arbiter interoperate.
//!
//! Datagrams rather than a TCP stream: `ft` authenticates, orders, acknowledges and resends
//! its frames itself (ft/PROTOCOL.md), so TCP would add a second retransmission layer and
//! head-of-line blocking behind a lost segment, and a connection to re-establish after every
//! failure. Batches reach 32 KiB, larger than the Ethernet MTU, so IPv4 fragmentation is on
//! (RFC 791 section 2.3); a lost fragment loses its datagram, which `ft` resends.
//!
//! Each destination gets a sending socket of its own. smoltcp keeps a datagram whose next hop
//! is not resolved at the head of its socket's queue, and asks ARP again only after a second
//! of silence (`neighbor::Cache::SILENT_TIME`): with one shared queue, a frame to an
//! unresolved arbiter held every frame to the partner back for that second, which is a peer
//! timeout. Received datagrams all arrive on the one socket bound to the channel's port.

use crate::net::NetDevice;
use crate::tsc;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as NetInstant;
use smoltcp::wire::{IpAddress, IpEndpoint};
use understudy_boot_config::SocketAddress;

/// Received datagram bytes buffered until the loop reads them: a burst of batches while the
/// guest runs a slice (`ft` keeps at most `lag_bytes_max`, 1 MiB, unacknowledged).
const RECEIVE_BUFFER_BYTES: usize = 2 << 20;
/// Received datagrams buffered at most.
const RECEIVE_DATAGRAMS_MAX: usize = 1024;
/// Datagram bytes queued for sending.
const SEND_BUFFER_BYTES: usize = 1 << 20;
/// Datagrams queued for sending at most, per destination.
const SEND_DATAGRAMS_MAX: usize = 512;
/// Egress passes per poll at most: each sends a fragment or a datagram, so this many frames
/// leave per poll (a 64 KiB datagram is 45 fragments; the transmit queue holds 256 frames).
const EGRESS_PASSES_MAX: usize = 256;
/// The local port of the first destination's sending socket (the dynamic range, RFC 6335).
const SEND_PORT_FIRST: u16 = 49_152;
/// Destinations at most: the partner and the arbiter, or the arbiter's two replicas.
const DESTINATIONS_MAX: usize = 2;
/// A status request's head is read into this much, in bytes; a longer one is refused.
const STATUS_REQUEST_BYTES_MAX: usize = 4096;
/// The status answer's buffer: the metrics exposition is a few KiB.
const STATUS_ANSWER_BYTES_MAX: usize = 32 * 1024;
/// An HTTP exchange with an etcd endpoint that takes longer than this has failed (a member
/// without quorum holds a linearizable request for seconds), in microseconds.
const HTTP_TIMEOUT_US: u64 = 1_000_000;
/// Largest HTTP answer read, in bytes (a range of one small key is tiny).
const HTTP_ANSWER_BYTES_MAX: usize = 16 * 1024;
/// Local ports of the HTTP client's connections, taken in turn so a new connection never
/// meets an old one's TIME-WAIT (the dynamic range, RFC 6335).
const HTTP_PORT_FIRST: u16 = 50_000;
const HTTP_PORTS: u16 = 10_000;

/// One HTTP request and its answer so far.
struct Exchange {
    request: Vec<u8>,
    sent: usize,
    answer: Vec<u8>,
    started_us: u64,
}

/// The replication NIC's stack with the log channel's one UDP socket.
pub struct LogChannel {
    device: NetDevice,
    iface: Box<Interface>,
    sockets: SocketSet<'static>,
    /// Bound to the channel's port; every datagram arrives here.
    socket: SocketHandle,
    /// One sending socket per destination.
    senders: Vec<(SocketAddress, SocketHandle)>,
    /// The status server's listening socket and port (`metrics_port`), one client at a time.
    status: Option<(SocketHandle, u16)>,
    /// The head of the status request being read.
    request: Vec<u8>,
    /// The HTTP client's socket (etcd), made on first use, and its exchange in flight.
    http: Option<SocketHandle>,
    exchange: Option<Exchange>,
    next_http_port: u16,
    /// Datagram bytes handed to the socket.
    pub bytes_sent: u64,
    /// Datagrams the send buffer could not take (lost as on any network; `ft` resends).
    pub datagrams_dropped: u64,
}

impl LogChannel {
    /// Binds the log channel to `port` on the interface's address.
    pub fn bind(device: NetDevice, iface: Box<Interface>, port: u16) -> Self {
        let receive = udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; RECEIVE_DATAGRAMS_MAX],
            vec![0u8; RECEIVE_BUFFER_BYTES],
        );
        // Nothing is sent from the receiving socket.
        let send = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0u8; 0]);
        let mut socket = udp::Socket::new(receive, send);
        socket
            .bind(port)
            .expect("a fresh socket binds to a nonzero port");
        let mut sockets = SocketSet::new(Vec::new());
        let socket = sockets.add(socket);
        Self {
            device,
            iface,
            sockets,
            socket,
            senders: Vec::new(),
            status: None,
            request: Vec::new(),
            http: None,
            exchange: None,
            next_http_port: 0,
            bytes_sent: 0,
            datagrams_dropped: 0,
        }
    }

    /// Moves frames between the NIC and the socket; returns whether anything happened.
    ///
    /// smoltcp sends one fragment of a fragmented datagram per egress pass and reports no
    /// change for it, so one `Interface::poll` moves a 24 KiB datagram (17 fragments) by a
    /// fragment only; the egress passes repeat while frames leave, so a datagram leaves whole
    /// in one call (bounded by the NIC's transmit queue).
    pub fn poll(&mut self) -> bool {
        let now = NetInstant::from_micros(tsc::now().0 as i64);
        let result = self.iface.poll(now, &mut self.device, &mut self.sockets);
        for _ in 0..EGRESS_PASSES_MAX {
            let sent = self.device.counters().frames_sent;
            let _ = self
                .iface
                .poll_egress(now, &mut self.device, &mut self.sockets);
            if self.device.counters().frames_sent == sent {
                break;
            }
        }
        result == smoltcp::iface::PollResult::SocketStateChanged
    }

    /// The next received datagram, if any.
    pub fn receive(&mut self) -> Option<Vec<u8>> {
        let socket = self.sockets.get_mut::<udp::Socket>(self.socket);
        socket.recv().ok().map(|(bytes, _)| bytes.to_vec())
    }

    /// True when a datagram waits to be read.
    pub fn has_datagram(&self) -> bool {
        self.sockets.get::<udp::Socket>(self.socket).can_recv()
    }

    /// Queues one datagram to `to`. A datagram that finds the buffer full is dropped and
    /// counted: `ft` resends what matters.
    pub fn send(&mut self, to: SocketAddress, bytes: &[u8]) {
        let [a, b, c, d] = to.address.0;
        let endpoint = IpEndpoint::new(IpAddress::v4(a, b, c, d), to.port);
        let sender = self.sender(to);
        let socket = self.sockets.get_mut::<udp::Socket>(sender);
        match socket.send_slice(bytes, endpoint) {
            Ok(()) => self.bytes_sent += bytes.len() as u64,
            Err(_) => self.datagrams_dropped += 1,
        }
    }

    /// The sending socket of `to`, made on first use.
    fn sender(&mut self, to: SocketAddress) -> SocketHandle {
        if let Some((_, handle)) = self.senders.iter().find(|(address, _)| *address == to) {
            return *handle;
        }
        assert!(
            self.senders.len() < DESTINATIONS_MAX,
            "the log channel has at most {DESTINATIONS_MAX} destinations"
        );
        let receive = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0u8; 0]);
        let send = udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; SEND_DATAGRAMS_MAX],
            vec![0u8; SEND_BUFFER_BYTES],
        );
        let mut socket = udp::Socket::new(receive, send);
        socket
            .bind(SEND_PORT_FIRST + self.senders.len() as u16)
            .expect("a fresh socket binds to a nonzero port");
        let handle = self.sockets.add(socket);
        self.senders.push((to, handle));
        handle
    }

    /// Serves HTTP status requests on `port` of the replication address (`status_request`,
    /// `status_answer`).
    pub fn serve_status(&mut self, port: u16) {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; STATUS_REQUEST_BYTES_MAX]),
            tcp::SocketBuffer::new(vec![0u8; STATUS_ANSWER_BYTES_MAX]),
        );
        let handle = self.sockets.add(socket);
        self.status = Some((handle, port));
        self.listen_for_status();
    }

    fn listen_for_status(&mut self) {
        let Some((handle, port)) = self.status else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if !socket.is_open() {
            self.request.clear();
            // A fresh socket listens; a listening one cannot fail to.
            let _ = socket.listen(port);
        }
    }

    /// The path of a complete status request waiting for its answer (`GET /path`), if any.
    /// A request that is not a GET, or too long, is answered `400` and closed here.
    pub fn status_request(&mut self) -> Option<String> {
        self.listen_for_status();
        let (handle, _) = self.status?;
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        while socket.can_recv() && self.request.len() < STATUS_REQUEST_BYTES_MAX {
            let room = STATUS_REQUEST_BYTES_MAX - self.request.len();
            let request = &mut self.request;
            let _ = socket.recv(|bytes| {
                let take = bytes.len().min(room);
                request.extend_from_slice(&bytes[..take]);
                (take, ())
            });
        }
        if !self.request.windows(4).any(|w| w == b"\r\n\r\n") {
            if self.request.len() >= STATUS_REQUEST_BYTES_MAX {
                self.status_answer("400 Bad Request", "text/plain", "request too long\n");
            }
            return None;
        }
        let head = core::str::from_utf8(&self.request).unwrap_or("");
        let path = head
            .strip_prefix("GET ")
            .and_then(|rest| rest.split(' ').next())
            .map(String::from);
        if path.is_none() {
            self.status_answer("400 Bad Request", "text/plain", "only GET\n");
        }
        path
    }

    /// Answers the waiting status request and closes the connection.
    pub fn status_answer(&mut self, status: &str, content_type: &str, body: &str) {
        let Some((handle, _)) = self.status else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let head = alloc::format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        // The answer fits the buffer (`STATUS_ANSWER_BYTES_MAX`); what does not is cut.
        let _ = socket.send_slice(head.as_bytes());
        let _ = socket.send_slice(body.as_bytes());
        socket.close();
        self.request.clear();
    }

    /// Starts one HTTP exchange with `to` (the bytes of a whole request), abandoning any
    /// other; `http_poll` tells how it ends.
    pub fn http_start(&mut self, to: SocketAddress, request: Vec<u8>) {
        let handle = match self.http {
            Some(handle) => handle,
            None => {
                let socket = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0u8; HTTP_ANSWER_BYTES_MAX]),
                    tcp::SocketBuffer::new(vec![0u8; HTTP_ANSWER_BYTES_MAX]),
                );
                let handle = self.sockets.add(socket);
                self.http = Some(handle);
                handle
            }
        };
        let local_port = HTTP_PORT_FIRST + self.next_http_port;
        self.next_http_port = (self.next_http_port + 1) % HTTP_PORTS;
        let [a, b, c, d] = to.address.0;
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.abort();
        let connected = socket
            .connect(
                self.iface.context(),
                (IpAddress::v4(a, b, c, d), to.port),
                local_port,
            )
            .is_ok();
        self.exchange = Some(Exchange {
            request,
            sent: 0,
            answer: Vec::new(),
            // A connection that cannot even start fails at the next poll.
            started_us: if connected { tsc::now().0 } else { 0 },
        });
    }

    /// How the exchange in flight ended: `Some(Some(body))` for a complete 200 answer,
    /// `Some(None)` for anything else (refused, reset, timed out, not a 200), `None` while it
    /// runs or when there is none.
    pub fn http_poll(&mut self) -> Option<Option<Vec<u8>>> {
        let handle = self.http?;
        let exchange = self.exchange.as_mut()?;
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if socket.can_send() && exchange.sent < exchange.request.len() {
            if let Ok(sent) = socket.send_slice(&exchange.request[exchange.sent..]) {
                exchange.sent += sent;
            }
        }
        while socket.can_recv() && exchange.answer.len() < HTTP_ANSWER_BYTES_MAX {
            let answer = &mut exchange.answer;
            let _ = socket.recv(|bytes| {
                answer.extend_from_slice(bytes);
                (bytes.len(), ())
            });
        }
        let ended = if let Some(body) = understudy_replica::etcd::http_body(&exchange.answer) {
            Some(Some(body.to_vec()))
        } else if !socket.is_open()
            || exchange.answer.len() >= HTTP_ANSWER_BYTES_MAX
            || tsc::now().0.saturating_sub(exchange.started_us) > HTTP_TIMEOUT_US
        {
            Some(None)
        } else {
            None
        };
        if ended.is_some() {
            socket.abort();
            self.exchange = None;
        }
        ended
    }
}
