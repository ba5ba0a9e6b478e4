//! The unprivileged `user` backend: a user-mode TCP/IP stack on the host side of the link.
//!
//! In the spirit of QEMU's `-netdev user,hostfwd=tcp::8080-:80`, but without outbound NAT:
//! a smoltcp interface at 10.0.2.2 sits on the virtual Ethernet link whose other end is the
//! guest's virtio-net. It answers ARP and ICMP echo for its address, and for each port
//! forward it listens on 127.0.0.1:HOSTPORT; every accepted host connection becomes a
//! smoltcp TCP connection to GUESTIP:GUESTPORT, and bytes are copied both ways until either
//! side closes. No root, no TAP device, and nothing but loopback on the host is touched.
//!
//! The stack runs on the driver's thread where the driver can have it
//! (`NetBackend::start_on_driver_thread`, as `run-guest` does): `send` queues the guest's
//! frames, `pump` moves what is ready, and the idle driver sleeps in `wait`, in `ppoll(2)`
//! on its own waker, the listeners and the connected host sockets with smoltcp's next
//! deadline as the timeout; a request and its answer then cost no switch between threads
//! (in a redis session those switches and wake-ups were a fifth of the samples). Otherwise
//! (`start`, as the replica drivers do) it runs on a thread of its own that sleeps the same
//! way on a wake-up socket written by `send`. Either way an idle link costs no CPU.
//! `UNDERSTUDY_NET_TRACE=1` prints every frame on the link, decoded, to stderr.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, HardwareAddress, IpAddress, IpCidr, Ipv4Address, PrettyPrinter,
};

use super::Arrival;

/// Guest frames queued between `send` and the stack thread; more are dropped (a real NIC
/// drops under pressure too, and TCP recovers).
pub const GUEST_FRAMES_QUEUED_MAX: usize = 256;
/// Frames the stack may emit in one poll before the thread hands them to the driver.
pub const HOST_FRAMES_BURST_MAX: usize = 64;
/// Largest Ethernet frame on the link: 1500-byte MTU plus the 14-byte header (virtio-net
/// without offloads, virtio 1.2 section 5.1.6).
pub const FRAME_BYTES_MAX: usize = 1514;
/// Receive and send buffer of each forwarded connection's smoltcp socket, in bytes.
pub const SOCKET_BUFFER_BYTES: usize = 64 * 1024;
/// Forwarded connections open at once. Beyond this, new host connections wait in the
/// listener's backlog (backpressure) until one closes.
pub const CONNECTIONS_MAX: usize = 128;
/// A connection whose peer stops acknowledging for this long is reset.
pub const PEER_SILENCE_TIMEOUT_S: u64 = 60;
/// Keep-alive probes on an idle forwarded connection (RFC 9293 3.8.4): together with
/// `PEER_SILENCE_TIMEOUT_S` they free the slot of a guest that vanished (rebooted, hung).
pub const KEEP_ALIVE_INTERVAL_S: u64 = 30;
/// Longest sleep of the stack thread when smoltcp has no deadline, in milliseconds.
pub const IDLE_SLEEP_MS_MAX: u64 = 1000;
/// Local ports the host side uses for its connections to the guest (RFC 6335 dynamic range).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Set in the environment, this prints every frame on the link to stderr, decoded.
pub const TRACE_VARIABLE: &str = "UNDERSTUDY_NET_TRACE";

/// The host's address on the virtual link (QEMU's user-mode gateway address).
pub const HOST_IP_DEFAULT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Where the guest is expected (QEMU's user-mode guest address; the guest's /init takes it
/// from the `understudy.ip=` boot argument).
pub const GUEST_IP_DEFAULT: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Prefix length of the virtual link's subnet.
pub const PREFIX_LEN: u8 = 24;
/// The host stack's MAC address: locally administered (bit 1 of the first octet), the same
/// one QEMU's user-mode gateway uses.
pub const HOST_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];

/// One `hostfwd`: a TCP listener on the host's loopback forwarded to a guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    /// 0 asks the host for any free port (see `UserNet::forward_addrs`).
    pub host_port: u16,
    pub guest_port: u16,
}

/// The addresses and forwards of a user-mode link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserConfig {
    pub host_ip: Ipv4Addr,
    pub guest_ip: Ipv4Addr,
    pub forwards: Vec<PortForward>,
}

impl UserConfig {
    pub fn new(forwards: Vec<PortForward>) -> Self {
        UserConfig {
            host_ip: HOST_IP_DEFAULT,
            guest_ip: GUEST_IP_DEFAULT,
            forwards,
        }
    }
}

/// The user-mode backend. Listeners are bound at construction, so a port already in use is
/// reported before the guest boots; the stack thread starts with `start`.
pub struct UserNet {
    config: UserConfig,
    /// Bound listeners, moved into the thread by `start`.
    listeners: Vec<(TcpListener, PortForward)>,
    forward_addrs: Vec<SocketAddr>,
    frames: Option<SyncSender<Vec<u8>>>,
    /// Written (one byte, non-blocking) after each queued frame; closing it stops the thread.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    /// The stack, when it runs on the driver's thread (`start_on_driver_thread`).
    inline: Option<Stack>,
    frames_dropped: u64,
}

impl UserNet {
    /// Binds one listener on 127.0.0.1 per forward.
    pub fn new(config: UserConfig) -> io::Result<UserNet> {
        let mut listeners = Vec::new();
        let mut forward_addrs = Vec::new();
        for forward in &config.forwards {
            let listener =
                TcpListener::bind((Ipv4Addr::LOCALHOST, forward.host_port)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot listen on 127.0.0.1:{}: {e}", forward.host_port),
                    )
                })?;
            listener.set_nonblocking(true)?;
            forward_addrs.push(listener.local_addr()?);
            listeners.push((listener, *forward));
        }
        Ok(UserNet {
            config,
            listeners,
            forward_addrs,
            frames: None,
            wake: None,
            thread: None,
            inline: None,
            frames_dropped: 0,
        })
    }

    /// The host addresses actually listened on, in the order of the forwards.
    pub fn forward_addrs(&self) -> &[SocketAddr] {
        &self.forward_addrs
    }

    /// Guest frames dropped because the stack's queue was full.
    pub fn frames_dropped(&self) -> u64 {
        self.frames_dropped
    }
}

impl super::NetBackend for UserNet {
    fn start(&mut self, arrivals: SyncSender<Arrival>) -> io::Result<()> {
        if self.thread.is_some() || self.inline.is_some() {
            return Err(io::Error::other("user network already started"));
        }
        let (frames_tx, frames_rx) = mpsc::sync_channel(GUEST_FRAMES_QUEUED_MAX);
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let stack = Stack::new(&self.config, std::mem::take(&mut self.listeners));
        let thread = std::thread::Builder::new()
            .name("net-user".into())
            .spawn(move || stack.run(frames_rx, wake_rx, arrivals))?;
        self.frames = Some(frames_tx);
        self.wake = Some(wake_tx);
        self.thread = Some(thread);
        Ok(())
    }

    fn start_on_driver_thread(&mut self) -> io::Result<bool> {
        if self.thread.is_some() || self.inline.is_some() {
            return Err(io::Error::other("user network already started"));
        }
        self.inline = Some(Stack::new(
            &self.config,
            std::mem::take(&mut self.listeners),
        ));
        Ok(true)
    }

    fn pump(&mut self, deliver: &mut dyn FnMut(Vec<u8>)) {
        if let Some(stack) = self.inline.as_mut() {
            stack.pump(&mut |frame| {
                deliver(frame);
                true
            });
        }
    }

    fn wait(&mut self, wake: RawFd, timeout: std::time::Duration) {
        if let Some(stack) = self.inline.as_mut() {
            let timeout = stack.timeout().min(timeout);
            stack.wait(wake, timeout);
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if let Some(stack) = self.inline.as_mut() {
            if stack.link.from_guest.len() >= GUEST_FRAMES_QUEUED_MAX {
                self.frames_dropped += 1;
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "user network queue full; frame dropped",
                ));
            }
            stack.from_guest(frame.to_vec());
            return Ok(());
        }
        let frames = self
            .frames
            .as_ref()
            .ok_or_else(|| io::Error::other("user network not started"))?;
        match frames.try_send(frame.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.frames_dropped += 1;
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "user network queue full; frame dropped",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "user network thread has stopped",
                ));
            }
        }
        if let Some(wake) = self.wake.as_mut() {
            // A full wake-up socket already holds a pending wake-up, so WouldBlock is fine.
            match wake.write(&[1]) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        // Closing the frame queue and the wake-up socket makes the thread see end of file.
        self.frames = None;
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// smoltcp's view of the link: frames from the guest in, frames to the guest out.
struct Link {
    from_guest: VecDeque<Vec<u8>>,
    to_guest: Vec<Vec<u8>>,
}

struct LinkRx(Vec<u8>);
struct LinkTx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for LinkRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for LinkTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

impl Device for Link {
    type RxToken<'a> = LinkRx;
    type TxToken<'a> = LinkTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(LinkRx, LinkTx<'_>)> {
        if self.to_guest.len() >= HOST_FRAMES_BURST_MAX {
            return None;
        }
        let frame = self.from_guest.pop_front()?;
        Some((LinkRx(frame), LinkTx(&mut self.to_guest)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<LinkTx<'_>> {
        if self.to_guest.len() >= HOST_FRAMES_BURST_MAX {
            return None;
        }
        Some(LinkTx(&mut self.to_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = FRAME_BYTES_MAX;
        capabilities
    }
}

/// One forwarded connection: a host socket joined to a smoltcp socket.
struct Connection {
    stream: TcpStream,
    socket: SocketHandle,
    local_port: u16,
    /// The host client closed its sending side (FIN queued to the guest).
    host_read_closed: bool,
    /// The guest closed its sending side and everything it sent was written to the host.
    host_write_closed: bool,
    /// The last write to the host socket would have blocked: wait for POLLOUT.
    host_write_blocked: bool,
    /// The smoltcp socket has left SYN-SENT at least once.
    established: bool,
}

struct Stack {
    guest_ip: Ipv4Address,
    interface: Interface,
    link: Link,
    sockets: SocketSet<'static>,
    listeners: Vec<(TcpListener, PortForward)>,
    connections: Vec<Connection>,
    next_port: u16,
    epoch: std::time::Instant,
    trace: bool,
}

/// True if the host client closed its side: a peek reads end of file, or fails.
fn host_hung_up(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// What a read from the host socket into the smoltcp send buffer found.
enum HostRead {
    Data,
    Nothing,
    End,
    Failed,
}

impl Stack {
    fn new(config: &UserConfig, listeners: Vec<(TcpListener, PortForward)>) -> Stack {
        let epoch = std::time::Instant::now();
        let mut link = Link {
            from_guest: VecDeque::new(),
            to_guest: Vec::new(),
        };
        let mut interface_config =
            Config::new(HardwareAddress::Ethernet(EthernetAddress(HOST_MAC)));
        // Seeds smoltcp's initial sequence numbers; host-side only, and it reaches the
        // guest solely inside frames, which the record log captures.
        interface_config.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut interface = Interface::new(interface_config, &mut link, Instant::from_micros(0));
        let host_ip = Ipv4Address::from(config.host_ip.octets());
        interface.update_ip_addrs(|addresses| {
            addresses
                .push(IpCidr::new(IpAddress::Ipv4(host_ip), PREFIX_LEN))
                .expect("one address fits the interface");
        });
        Stack {
            guest_ip: Ipv4Address::from(config.guest_ip.octets()),
            interface,
            link,
            sockets: SocketSet::new(Vec::new()),
            listeners,
            connections: Vec::new(),
            next_port: *EPHEMERAL_PORTS.start(),
            epoch,
            trace: std::env::var_os(TRACE_VARIABLE).is_some(),
        }
    }

    /// With `TRACE_VARIABLE` set, prints one decoded frame to stderr.
    fn trace(&self, direction: &str, frame: &[u8]) {
        if self.trace {
            let decoded = PrettyPrinter::<EthernetFrame<&[u8]>>::new("", &frame);
            eprintln!("net-user {:?} {direction}: {decoded}", self.epoch.elapsed());
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// The thread body: runs until the backend is dropped or the driver stops listening.
    fn run(
        mut self,
        frames: Receiver<Vec<u8>>,
        mut wake: UnixStream,
        arrivals: SyncSender<Arrival>,
    ) {
        loop {
            // Take every queued guest frame; the wake-up bytes only say "look at the queue".
            let mut drain = [0u8; 256];
            let mut wake_closed = false;
            loop {
                match wake.read(&mut drain) {
                    Ok(0) => {
                        wake_closed = true;
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            loop {
                match frames.try_recv() {
                    Ok(frame) => self.from_guest(frame),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        wake_closed = true;
                        break;
                    }
                }
            }
            if wake_closed && self.link.from_guest.is_empty() {
                return;
            }
            let delivered = self.pump(&mut |frame| arrivals.send(Arrival::Frame(frame)).is_ok());
            if !delivered {
                return; // The driver is gone.
            }
            let timeout = self.timeout();
            self.wait(wake.as_raw_fd(), timeout);
        }
    }

    /// Does all that is ready without blocking: takes new host connections, then polls
    /// until the stack is quiet (each pass moves bytes between host sockets and smoltcp
    /// buffers, then lets smoltcp turn them into frames and frames into bytes), handing the
    /// frames for the guest to `deliver`; false as soon as `deliver` refuses one.
    fn pump(&mut self, deliver: &mut dyn FnMut(Vec<u8>) -> bool) -> bool {
        self.accept_connections();
        loop {
            let now = self.now();
            self.interface.poll(now, &mut self.link, &mut self.sockets);
            let moved = self.copy_bytes();
            let mut emitted = false;
            for frame in std::mem::take(&mut self.link.to_guest) {
                emitted = true;
                self.trace("host to guest", &frame);
                if !deliver(frame) {
                    return false;
                }
            }
            if !moved && !emitted && self.link.from_guest.is_empty() {
                break;
            }
        }
        self.reap_connections();
        true
    }

    /// How long the stack may sleep: until smoltcp's next deadline, at least 1 ms (so a
    /// sub-millisecond deadline does not spin) and at most `IDLE_SLEEP_MS_MAX`.
    fn timeout(&mut self) -> std::time::Duration {
        let now = self.now();
        let ms = match self.interface.poll_delay(now, &self.sockets) {
            Some(delay) => delay.total_millis(),
            None => IDLE_SLEEP_MS_MAX,
        };
        std::time::Duration::from_millis(ms.clamp(1, IDLE_SLEEP_MS_MAX))
    }

    /// Queues a frame from the guest.
    fn from_guest(&mut self, frame: Vec<u8>) {
        self.trace("guest to host", &frame);
        self.link.from_guest.push_back(frame);
    }

    /// Sleeps until `wake` is readable, a host socket event or `timeout`.
    fn wait(&self, wake: RawFd, timeout: std::time::Duration) {
        let mut fds = Vec::with_capacity(1 + self.listeners.len() + self.connections.len());
        let pollfd = |fd: RawFd, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pollfd(wake, libc::POLLIN));
        if self.connections.len() < CONNECTIONS_MAX {
            for (listener, _) in &self.listeners {
                fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
            }
        }
        for connection in &self.connections {
            let socket = self.sockets.get::<tcp::Socket>(connection.socket);
            let mut events = 0;
            if !connection.host_read_closed
                && socket.may_send()
                && socket.send_queue() < socket.send_capacity()
            {
                events |= libc::POLLIN;
            }
            if connection.host_write_blocked {
                events |= libc::POLLOUT;
            }
            if socket.state() == tcp::State::SynSent {
                events |= libc::POLLRDHUP; // See `host_hung_up`.
            }
            if events != 0 {
                fds.push(pollfd(connection.stream.as_raw_fd(), events));
            }
        }
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a live, properly initialised array of `fds.len()` pollfd structs;
        // `timeout` is a valid timespec and no signal mask is passed.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &timeout,
                std::ptr::null(),
            )
        };
    }

    fn accept_connections(&mut self) {
        for index in 0..self.listeners.len() {
            while self.connections.len() < CONNECTIONS_MAX {
                let (stream, _) = match self.listeners[index].0.accept() {
                    Ok(accepted) => accepted,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break, // WouldBlock, or a transient accept error.
                };
                let guest_port = self.listeners[index].1.guest_port;
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let Some(local_port) = self.allocate_port() else {
                    continue;
                };
                let mut socket = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
                    tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
                );
                socket.set_timeout(Some(Duration::from_secs(PEER_SILENCE_TIMEOUT_S)));
                socket.set_keep_alive(Some(Duration::from_secs(KEEP_ALIVE_INTERVAL_S)));
                socket.set_nagle_enabled(false);
                let endpoint = (IpAddress::Ipv4(self.guest_ip), guest_port);
                if socket
                    .connect(self.interface.context(), endpoint, local_port)
                    .is_err()
                {
                    continue;
                }
                let handle = self.sockets.add(socket);
                self.connections.push(Connection {
                    stream,
                    socket: handle,
                    local_port,
                    host_read_closed: false,
                    host_write_closed: false,
                    host_write_blocked: false,
                    established: false,
                });
            }
        }
    }

    /// The next dynamic port not used by an open connection.
    fn allocate_port(&mut self) -> Option<u16> {
        let span = (*EPHEMERAL_PORTS.end() - *EPHEMERAL_PORTS.start()) as usize + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                port + 1
            };
            if self.connections.iter().all(|c| c.local_port != port) {
                return Some(port);
            }
        }
        None
    }

    /// Moves bytes between each host socket and its smoltcp socket; true if any moved.
    fn copy_bytes(&mut self) -> bool {
        let mut moved = false;
        for connection in &mut self.connections {
            let socket = self.sockets.get_mut::<tcp::Socket>(connection.socket);
            if socket.state() != tcp::State::SynSent && socket.state() != tcp::State::Closed {
                connection.established = true;
            }
            // A client that leaves before the guest answers gives its slot back now rather
            // than after smoltcp's SYN retries time out.
            if socket.state() == tcp::State::SynSent && host_hung_up(&connection.stream) {
                connection.host_read_closed = true;
                connection.host_write_closed = true;
                socket.abort();
                moved = true;
                continue;
            }

            // Host to guest.
            while !connection.host_read_closed
                && socket.may_send()
                && socket.send_queue() < socket.send_capacity()
            {
                let stream = &mut connection.stream;
                let result = socket.send(|buffer| {
                    if buffer.is_empty() {
                        return (0, HostRead::Nothing);
                    }
                    match stream.read(buffer) {
                        Ok(0) => (0, HostRead::End),
                        Ok(n) => (n, HostRead::Data),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (0, HostRead::Nothing),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => (0, HostRead::Data),
                        Err(_) => (0, HostRead::Failed),
                    }
                });
                match result {
                    Ok(HostRead::Data) => moved = true,
                    Ok(HostRead::Nothing) | Err(_) => break,
                    Ok(HostRead::End) => {
                        connection.host_read_closed = true;
                        socket.close(); // FIN after the queued bytes (RFC 9293 3.10.4).
                        moved = true;
                    }
                    Ok(HostRead::Failed) => {
                        connection.host_read_closed = true;
                        connection.host_write_closed = true;
                        socket.abort();
                        moved = true;
                    }
                }
            }

            // Guest to host.
            connection.host_write_blocked = false;
            while !connection.host_write_closed && socket.recv_queue() > 0 {
                let stream = &mut connection.stream;
                let result = socket.recv(|buffer| match stream.write(buffer) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match result {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => moved = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        connection.host_write_blocked = true;
                        break;
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        // The host client is gone: reset the guest side too.
                        connection.host_read_closed = true;
                        connection.host_write_closed = true;
                        socket.abort();
                        moved = true;
                    }
                    Err(_) => break,
                }
            }
            // The guest sent FIN (or reset) and every byte before it reached the host.
            if connection.established
                && !connection.host_write_closed
                && !socket.may_recv()
                && socket.recv_queue() == 0
            {
                connection.host_write_closed = true;
                let _ = connection.stream.shutdown(std::net::Shutdown::Write);
                moved = true;
            }
        }
        moved
    }

    /// Forgets connections that are finished on both sides, or reset.
    fn reap_connections(&mut self) {
        let sockets = &mut self.sockets;
        self.connections.retain(|connection| {
            let socket = sockets.get::<tcp::Socket>(connection.socket);
            let state = socket.state();
            let finished = state == tcp::State::Closed
                || (state == tcp::State::TimeWait
                    && connection.host_read_closed
                    && connection.host_write_closed);
            if finished {
                // Dropping the stream closes the host socket; a reset or refused guest
                // connection thereby ends the host client's connection too.
                sockets.remove(connection.socket);
            }
            !finished
        });
    }
}

/// A guest-side smoltcp stack for tests of every backend.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::net::NetBackend;
    use std::sync::mpsc::Receiver;
    use std::time::Duration as StdDuration;

    pub(crate) const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A guest-side smoltcp stack wired back to back with a backend.
    pub(crate) struct Guest {
        interface: Interface,
        link: Link,
        pub(crate) sockets: SocketSet<'static>,
        epoch: std::time::Instant,
    }

    impl Guest {
        pub(crate) fn new(address: [u8; 4]) -> Guest {
            let mut link = Link {
                from_guest: VecDeque::new(),
                to_guest: Vec::new(),
            };
            let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
            let mut interface = Interface::new(config, &mut link, Instant::from_micros(0));
            interface.update_ip_addrs(|a| {
                a.push(IpCidr::new(
                    IpAddress::Ipv4(Ipv4Address::from(address)),
                    PREFIX_LEN,
                ))
                .unwrap();
            });
            Guest {
                interface,
                link,
                sockets: SocketSet::new(Vec::new()),
                epoch: std::time::Instant::now(),
            }
        }

        pub(crate) fn listen(&mut self, port: u16) -> SocketHandle {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 16 * 1024]),
                tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            );
            socket.listen(port).unwrap();
            self.sockets.add(socket)
        }

        pub(crate) fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(handle)
        }

        /// Exchanges frames with the backend once (waiting briefly for the next one).
        pub(crate) fn step(&mut self, backend: &mut dyn NetBackend, arrivals: &Receiver<Arrival>) {
            let now = Instant::from_micros(self.epoch.elapsed().as_micros() as i64);
            self.interface.poll(now, &mut self.link, &mut self.sockets);
            for frame in self.link.to_guest.drain(..) {
                backend.send(&frame).unwrap();
            }
            if let Ok(Arrival::Frame(frame)) = arrivals.recv_timeout(StdDuration::from_millis(2)) {
                self.link.from_guest.push_back(frame);
            }
            while let Ok(Arrival::Frame(frame)) = arrivals.try_recv() {
                self.link.from_guest.push_back(frame);
            }
        }
    }

    pub(crate) fn pattern(length: usize, seed: u8) -> Vec<u8> {
        (0..length)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{pattern, Guest, GUEST_MAC};
    use super::*;
    use crate::net::NetBackend;
    use smoltcp::socket::AnySocket;
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};
    use std::sync::mpsc::Receiver;
    use std::time::Duration as StdDuration;

    const TEST_TIMEOUT: StdDuration = StdDuration::from_secs(20);

    fn started(forwards: Vec<PortForward>) -> (UserNet, Receiver<Arrival>) {
        let mut backend = UserNet::new(UserConfig::new(forwards)).expect("bind loopback");
        let (arrivals_tx, arrivals_rx) = mpsc::sync_channel(1024);
        backend.start(arrivals_tx).expect("start");
        (backend, arrivals_rx)
    }

    fn arp_request_for_host() -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(GUEST_MAC),
            source_protocol_addr: Ipv4Address::new(10, 0, 2, 15),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Address::new(10, 0, 2, 2),
        };
        let mut bytes = vec![0u8; 14 + repr.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes);
        frame.set_dst_addr(EthernetAddress::BROADCAST);
        frame.set_src_addr(EthernetAddress(GUEST_MAC));
        frame.set_ethertype(EthernetProtocol::Arp);
        repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        bytes
    }

    #[test]
    fn arp_request_for_the_host_address_is_answered_with_the_host_mac() {
        let (mut backend, arrivals) = started(Vec::new());
        backend.send(&arp_request_for_host()).unwrap();
        let Arrival::Frame(reply) = arrivals.recv_timeout(TEST_TIMEOUT).expect("an ARP reply")
        else {
            panic!("expected a frame")
        };
        assert_arp_reply(&reply);
    }

    #[test]
    fn on_the_driver_thread_pump_answers_arp_and_turns_a_host_connection_into_a_syn() {
        use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpPacket};
        let forward = PortForward {
            host_port: 0,
            guest_port: 80,
        };
        let mut backend = UserNet::new(UserConfig::new(vec![forward])).expect("bind loopback");
        assert!(backend.start_on_driver_thread().unwrap());
        let mut frames = Vec::new();
        backend.send(&arp_request_for_host()).unwrap();
        backend.pump(&mut |frame| frames.push(frame));
        assert_eq!(frames.len(), 1);
        assert_arp_reply(&frames[0]);
        // A host client: after `wait`, `pump` takes its connection and turns it into a SYN
        // to the guest.
        let _client = TcpStream::connect(backend.forward_addrs()[0]).unwrap();
        frames.clear();
        for _ in 0..20 {
            backend.wait(-1, TEST_TIMEOUT);
            backend.pump(&mut |frame| frames.push(frame));
            if !frames.is_empty() {
                break;
            }
        }
        assert_eq!(frames.len(), 1);
        let frame = EthernetFrame::new_checked(&frames[0][..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress(GUEST_MAC));
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(
            (ip.dst_addr(), ip.next_header()),
            (Ipv4Address::new(10, 0, 2, 15), IpProtocol::Tcp)
        );
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.dst_port(), tcp.syn(), tcp.ack()), (80, true, false));
    }

    fn assert_arp_reply(reply: &[u8]) {
        let frame = EthernetFrame::new_checked(reply).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress(GUEST_MAC));
        assert_eq!(frame.ethertype(), EthernetProtocol::Arp);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(HOST_MAC),
                source_protocol_addr: Ipv4Address::new(10, 0, 2, 2),
                target_hardware_addr: EthernetAddress(GUEST_MAC),
                target_protocol_addr: Ipv4Address::new(10, 0, 2, 15),
            }
        );
    }

    #[test]
    fn garbage_frames_from_the_guest_are_ignored() {
        let (mut backend, arrivals) = started(Vec::new());
        for length in [0usize, 1, 13, 14, 60, FRAME_BYTES_MAX, 9000] {
            let _ = backend.send(&vec![0xa5; length]);
        }
        // The stack still works afterwards.
        backend.send(&arp_request_for_host()).unwrap();
        assert!(matches!(
            arrivals.recv_timeout(TEST_TIMEOUT),
            Ok(Arrival::Frame(_))
        ));
    }

    #[test]
    fn host_client_reaches_a_guest_listener_through_the_forward_both_ways() {
        const UPLOAD_BYTES: usize = 300 * 1024;
        const DOWNLOAD_BYTES: usize = 1024 * 1024;
        let (mut backend, arrivals) = started(vec![PortForward {
            host_port: 0,
            guest_port: 80,
        }]);
        let address = backend.forward_addrs()[0];
        let mut guest = Guest::new([10, 0, 2, 15]);
        let listener = guest.listen(80);

        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            stream.write_all(&pattern(UPLOAD_BYTES, 7)).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut received = Vec::new();
            stream.read_to_end(&mut received).unwrap();
            received
        });

        // The guest reads the whole upload (until the client's FIN), then sends the download
        // and closes.
        let mut uploaded = Vec::new();
        let download = pattern(DOWNLOAD_BYTES, 3);
        let mut sent = 0;
        let deadline = std::time::Instant::now() + TEST_TIMEOUT;
        while !client.is_finished() {
            assert!(std::time::Instant::now() < deadline, "transfer timed out");
            guest.step(&mut backend, &arrivals);
            let socket = guest.socket(listener);
            while socket.can_recv() {
                socket
                    .recv(|data| {
                        uploaded.extend_from_slice(data);
                        (data.len(), ())
                    })
                    .unwrap();
            }
            if uploaded.len() == UPLOAD_BYTES && !socket.may_recv() && socket.may_send() {
                while sent < download.len() && socket.can_send() {
                    sent += socket.send_slice(&download[sent..]).unwrap();
                }
                if sent == download.len() {
                    socket.close();
                }
            }
        }
        let received = client.join().unwrap();
        assert_eq!(uploaded, pattern(UPLOAD_BYTES, 7));
        assert_eq!(received.len(), DOWNLOAD_BYTES);
        assert!(received == download, "download corrupted");
    }

    #[test]
    fn host_client_is_disconnected_when_the_guest_port_is_closed() {
        let (mut backend, arrivals) = started(vec![PortForward {
            host_port: 0,
            guest_port: 81,
        }]);
        let address = backend.forward_addrs()[0];
        let mut guest = Guest::new([10, 0, 2, 15]);
        let _elsewhere = guest.listen(80);
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            let mut buffer = [0u8; 16];
            match stream.read(&mut buffer) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            }
        });
        let deadline = std::time::Instant::now() + TEST_TIMEOUT;
        while !client.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "client was never disconnected"
            );
            guest.step(&mut backend, &arrivals);
        }
        assert!(
            client.join().unwrap(),
            "the client saw data or a timeout, not a close"
        );
    }

    /// Drives `guest` until `done` holds, closing every guest socket whose peer closed.
    fn drive_until(
        guest: &mut Guest,
        backend: &mut UserNet,
        arrivals: &Receiver<Arrival>,
        what: &str,
        mut done: impl FnMut(&mut Guest) -> bool,
    ) {
        let deadline = std::time::Instant::now() + TEST_TIMEOUT;
        while !done(guest) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            guest.step(backend, arrivals);
            for (_, socket) in guest.sockets.iter_mut() {
                if let Some(socket) = tcp::Socket::downcast_mut(socket) {
                    if socket.state() == tcp::State::CloseWait {
                        socket.close();
                    }
                }
            }
        }
    }

    /// The bytes each guest socket received so far, by socket.
    fn received(guest: &mut Guest, handles: &[SocketHandle]) -> Vec<Vec<u8>> {
        handles
            .iter()
            .map(|&handle| {
                let socket = guest.socket(handle);
                let mut bytes = Vec::new();
                while socket.can_recv() {
                    socket
                        .recv(|data| {
                            bytes.extend_from_slice(data);
                            (data.len(), ())
                        })
                        .unwrap();
                }
                bytes
            })
            .collect()
    }

    #[test]
    fn connections_beyond_the_limit_wait_in_the_backlog_until_one_closes() {
        let (mut backend, arrivals) = started(vec![PortForward {
            host_port: 0,
            guest_port: 80,
        }]);
        let address = backend.forward_addrs()[0];
        let mut guest = Guest::new([10, 0, 2, 15]);
        // One listening socket per connection, one more than the backend will carry.
        let handles: Vec<SocketHandle> = (0..=CONNECTIONS_MAX).map(|_| guest.listen(80)).collect();
        let mut clients: Vec<TcpStream> = (0..CONNECTIONS_MAX)
            .map(|_| {
                let mut stream = TcpStream::connect(address).unwrap();
                stream.write_all(b"a").unwrap();
                stream
            })
            .collect();
        let mut seen = vec![Vec::new(); handles.len()];
        drive_until(
            &mut guest,
            &mut backend,
            &arrivals,
            "the first connections",
            |guest| {
                for (bytes, new) in seen.iter_mut().zip(received(guest, &handles)) {
                    bytes.extend(new);
                }
                seen.iter().filter(|bytes| !bytes.is_empty()).count() == CONNECTIONS_MAX
            },
        );

        let mut extra = TcpStream::connect(address).unwrap();
        extra.write_all(b"b").unwrap();
        let until = std::time::Instant::now() + StdDuration::from_millis(300);
        drive_until(
            &mut guest,
            &mut backend,
            &arrivals,
            "a quiet moment",
            |_| std::time::Instant::now() >= until,
        );
        for (bytes, new) in seen.iter_mut().zip(received(&mut guest, &handles)) {
            bytes.extend(new);
        }
        assert!(
            seen.iter().all(|bytes| bytes != b"b"),
            "connection {} was carried beyond the limit",
            CONNECTIONS_MAX + 1
        );

        drop(clients.remove(0));
        drive_until(
            &mut guest,
            &mut backend,
            &arrivals,
            "the waiting connection",
            |guest| {
                for (bytes, new) in seen.iter_mut().zip(received(guest, &handles)) {
                    bytes.extend(new);
                }
                seen.iter().any(|bytes| bytes == b"b")
            },
        );
    }

    #[test]
    fn a_client_that_leaves_before_the_guest_answers_frees_its_slot() {
        let (mut backend, arrivals) = started(vec![PortForward {
            host_port: 0,
            guest_port: 80,
        }]);
        let address = backend.forward_addrs()[0];
        // Nothing answers yet: every connection stays in SYN-SENT; then all clients leave.
        let clients: Vec<TcpStream> = (0..CONNECTIONS_MAX)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        std::thread::sleep(StdDuration::from_millis(100));
        drop(clients);
        // A guest that starts answering now serves a new client at once.
        let mut guest = Guest::new([10, 0, 2, 15]);
        let handle = guest.listen(80);
        let mut client = TcpStream::connect(address).unwrap();
        client.write_all(b"late").unwrap();
        let mut seen = Vec::new();
        drive_until(
            &mut guest,
            &mut backend,
            &arrivals,
            "the late client",
            |guest| {
                seen.extend(received(guest, &[handle]).remove(0));
                seen == b"late"
            },
        );
    }

    #[test]
    fn a_port_in_use_is_reported_when_the_backend_is_made() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = UserNet::new(UserConfig::new(vec![PortForward {
            host_port: port,
            guest_port: 80,
        }]))
        .err()
        .expect("the port is taken");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    }

    #[test]
    fn dropping_the_backend_stops_its_thread() {
        let (backend, arrivals) = started(Vec::new());
        drop(backend);
        // The thread held the only sender; it is gone once the thread has ended.
        assert!(matches!(
            arrivals.recv_timeout(TEST_TIMEOUT),
            Err(mpsc::RecvTimeoutError::Disconnected)
        ));
    }
}
