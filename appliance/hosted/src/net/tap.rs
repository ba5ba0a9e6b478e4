//! The `tap` backend: the guest's frames go to and come from a Linux TAP interface.
//!
//! Opens `/dev/net/tun` and attaches it to the named interface with `IFF_TAP | IFF_NO_PI`
//! (Linux Documentation/networking/tuntap.rst): every read returns one whole Ethernet frame
//! and every write sends one, with no packet-information prefix. The interface is created if
//! it does not exist (which needs CAP_NET_ADMIN), or attached if it does (a persistent TAP
//! owned by the user needs no privilege).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use super::Arrival;

/// Linux's limit on an interface name, without the terminating NUL (`IFNAMSIZ - 1`).
pub const INTERFACE_NAME_BYTES_MAX: usize = 15;
/// The largest frame read from the TAP device: a 1500-byte MTU frame with a VLAN tag has
/// 1518 bytes; the buffer leaves room for a larger MTU so nothing is cut silently.
pub const TAP_READ_BYTES_MAX: usize = 65536;
/// The largest frame the virtio-net device accepts from us (1500-byte MTU plus the 14-byte
/// header, virtio 1.2 section 5.1.6); larger frames read from the TAP are dropped.
pub const FRAME_BYTES_MAX: usize = 1514;

/// `struct ifreq` as TUNSETIFF reads it: the name, then `ifr_flags` at the start of the
/// 24-byte union (include/uapi/linux/if.h).
#[repr(C)]
struct InterfaceRequest {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    padding: [u8; 22],
}

/// A TAP interface attached to the guest's link.
pub struct TapNet {
    name: String,
    device: File,
    /// Dropping it ends the reader thread (its end of the pair sees end of file).
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    frames_oversized: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TapNet {
    /// Opens `/dev/net/tun` and attaches it to the TAP interface `name`.
    pub fn open(name: &str) -> io::Result<TapNet> {
        if name.is_empty() || name.len() > INTERFACE_NAME_BYTES_MAX || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}: 1 to 15 bytes, no NUL"),
            ));
        }
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
        let mut request = InterfaceRequest {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            padding: [0; 22],
        };
        for (slot, byte) in request.name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `InterfaceRequest`
        // lays out with the same size (40 bytes) and field offsets; the fd is open.
        let result = unsafe { libc::ioctl(device.as_raw_fd(), libc::TUNSETIFF, &mut request) };
        if result < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot attach to tap interface {name}: {e} (creating one needs root or CAP_NET_ADMIN)"),
            ));
        }
        Ok(TapNet {
            name: name.to_string(),
            device,
            stop: None,
            thread: None,
            frames_oversized: Default::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frames read from the TAP that were larger than the guest's link accepts, dropped.
    pub fn frames_oversized(&self) -> u64 {
        self.frames_oversized
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl super::NetBackend for TapNet {
    fn start(&mut self, arrivals: SyncSender<Arrival>) -> io::Result<()> {
        if self.thread.is_some() {
            return Err(io::Error::other("tap network already started"));
        }
        let mut reader = self.device.try_clone()?;
        let (stop_tx, stop_rx) = UnixStream::pair()?;
        let oversized = self.frames_oversized.clone();
        let thread = std::thread::Builder::new()
            .name(format!("net-tap-{}", self.name))
            .spawn(move || {
                let mut buffer = vec![0u8; TAP_READ_BYTES_MAX];
                loop {
                    let mut fds = [
                        libc::pollfd {
                            fd: reader.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: stop_rx.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: `fds` is a live array of two initialised pollfd structs.
                    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                    if ready < 0 {
                        if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return;
                    }
                    if fds[1].revents != 0 {
                        return; // The backend was dropped.
                    }
                    if fds[0].revents & libc::POLLIN == 0 {
                        if fds[0].revents != 0 {
                            return; // POLLERR or POLLHUP: the interface went away.
                        }
                        continue;
                    }
                    match reader.read(&mut buffer) {
                        Ok(0) => return,
                        Ok(n) if n > FRAME_BYTES_MAX => {
                            oversized.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(n) => {
                            if arrivals.send(Arrival::Frame(buffer[..n].to_vec())).is_err() {
                                return; // The driver is gone.
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            })?;
        self.stop = Some(stop_tx);
        self.thread = Some(thread);
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // One write is one frame on a TAP device; a short write does not happen.
        let written = self.device.write(frame)?;
        if written != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("tap wrote {written} of {} bytes", frame.len()),
            ));
        }
        Ok(())
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    //! These tests need root and `ip` (CI runs as root); without them they fail and say so.
    //! Each works in a network namespace of its own: `unshare(CLONE_NEWNET)` moves only the
    //! calling thread, and the threads and `ip` processes it starts inherit the namespace,
    //! so the host's network is never touched.

    use super::*;
    use crate::net::user::tests_support::{pattern, Guest};
    use crate::net::NetBackend;
    use std::net::{Ipv4Addr, TcpStream};
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    /// Moves the calling thread into a fresh network namespace.
    fn enter_new_network_namespace() {
        // SAFETY: unshare takes a flag word and changes only this thread's namespaces.
        let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert!(
            result == 0,
            "unshare(CLONE_NEWNET) failed: {} (this test needs root)",
            io::Error::last_os_error()
        );
    }

    fn ip(arguments: &[&str]) {
        let status = Command::new("ip")
            .args(arguments)
            .status()
            .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
        assert!(
            status.success(),
            "ip {} failed: {status}",
            arguments.join(" ")
        );
    }

    #[test]
    fn tap_in_a_private_namespace_carries_tcp_between_the_host_and_a_guest_stack() {
        const DOWNLOAD_BYTES: usize = 256 * 1024;
        std::thread::spawn(|| {
            enter_new_network_namespace();
            let mut tap = TapNet::open("ustap0").expect("create the tap interface");
            ip(&["link", "set", "ustap0", "up"]);
            ip(&["addr", "add", "10.0.3.1/24", "dev", "ustap0"]);
            let (arrivals_tx, arrivals) = mpsc::sync_channel(1024);
            tap.start(arrivals_tx).unwrap();

            let mut guest = Guest::new([10, 0, 3, 15]);
            let listener = guest.listen(80);
            // Spawned from this thread, the client is inside the namespace too.
            let client = std::thread::spawn(|| {
                let address = (Ipv4Addr::new(10, 0, 3, 15), 80).into();
                let mut stream = TcpStream::connect_timeout(&address, TEST_TIMEOUT).unwrap();
                stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
                stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut received = Vec::new();
                stream.read_to_end(&mut received).unwrap();
                received
            });
            let download = pattern(DOWNLOAD_BYTES, 5);
            let mut request = Vec::new();
            let mut sent = 0;
            let deadline = Instant::now() + TEST_TIMEOUT;
            while !client.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "transfer through the tap timed out"
                );
                guest.step(&mut tap, &arrivals);
                let socket = guest.socket(listener);
                while socket.can_recv() {
                    socket
                        .recv(|data| {
                            request.extend_from_slice(data);
                            (data.len(), ())
                        })
                        .unwrap();
                }
                if request.ends_with(b"\r\n\r\n") {
                    while sent < download.len() && socket.can_send() {
                        sent += socket.send_slice(&download[sent..]).unwrap();
                    }
                    if sent == download.len() {
                        socket.close();
                    }
                }
            }
            assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
            let received = client.join().unwrap();
            assert!(received == download, "download through the tap corrupted");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn attaching_to_a_bad_interface_name_is_an_error_not_a_panic() {
        for name in ["", "sixteen-bytes-xx", "a\0b"] {
            let error = TapNet::open(name).err().expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
