//! Boot-time self tests the QEMU tests ask for with `understudy.selftest=` on the command
//! line: a disk marker that must survive a reboot, the guest disk's backend on a real disk, a
//! bulk TCP transfer between two appliances over the replication network, and an idle wait
//! that halts until a console byte arrives.

use crate::guestdisk::{Disk, GuestDisk};
use crate::net::NetDevice;
use crate::println;
use crate::{idle, serial, tsc};
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;
use understudy_boot_config::{Config, Role};
use understudy_machine::devices::virtio::{BackendError, BlockBackend};
use virtio_drivers::device::blk::SECTOR_SIZE;

/// Bytes the replication self test moves from primary to backup.
pub const TRANSFER_BYTES: u64 = 64 << 20;
/// TCP socket buffers, in bytes; with window scaling this is the receive window.
const SOCKET_BUFFER_BYTES: usize = 512 * 1024;
/// The transfer fails when no byte moves for this long.
const STALL_TIMEOUT_MS: u64 = 30_000;
/// Before the first connection, retry this long (the partner may still be booting).
const CONNECT_TIMEOUT_MS: u64 = 60_000;
/// How long a finished side keeps the connection serviced while it closes.
const LINGER_MS: u64 = 2_000;
/// Delay between connection attempts.
const RECONNECT_DELAY_MS: u64 = 200;
/// Local TCP port of the primary's connection.
const PRIMARY_LOCAL_PORT: u16 = 49_152;
/// The sector the disk self test owns (sector 0 is left to partition tables).
const MARKER_SECTOR: usize = 1;
const MARKER_MAGIC: &[u8; 16] = b"UNDERSTUDY-MARK1";
/// Where the guest disk self test writes, in bytes: past the disk self test's marker sector and
/// not sector-aligned, so the write starts and ends inside a sector.
const GUEST_DISK_PROBE_OFFSET_BYTES: u64 = 64 * 1024 + 300;
/// How much it writes: more than one sector, so the write spans three.
const GUEST_DISK_PROBE_BYTES: usize = 1000;
/// The idle self test fails when no console byte arrives within this long.
const IDLE_TIMEOUT_MS: u64 = 60_000;

fn now() -> Instant {
    Instant::from_micros(tsc::now().0 as i64)
}

fn elapsed_ms(since: Instant) -> u64 {
    (now() - since).total_millis()
}

/// The byte at `offset` of the transfer: a pattern with period 251 (prime, so it does not line
/// up with segment or buffer sizes) that the receiver checks.
fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn fold_checksum(bytes: &[u8]) -> u64 {
    // FNV-1a, 64-bit: enough to tell a marker from leftover bytes.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Reads the marker sector, reports the previous generation, writes the next one, flushes and
/// reads it back. A second boot on the same disk image must report what the first wrote.
pub fn disk(blk: &mut Disk) -> bool {
    let mut sector = [0u8; SECTOR_SIZE];
    if let Err(error) = blk.read_blocks(MARKER_SECTOR, &mut sector) {
        println!("understudy: disk selftest failed: read sector {MARKER_SECTOR}: {error}");
        return false;
    }
    let previous = if &sector[..16] == MARKER_MAGIC
        && u64::from_le_bytes(sector[24..32].try_into().expect("8 bytes"))
            == fold_checksum(&sector[..24])
    {
        let generation = u64::from_le_bytes(sector[16..24].try_into().expect("8 bytes"));
        println!("understudy: disk selftest found generation {generation}");
        generation
    } else {
        println!("understudy: disk selftest found no marker");
        0
    };
    let generation = previous + 1;
    let mut marker = [0u8; SECTOR_SIZE];
    marker[..16].copy_from_slice(MARKER_MAGIC);
    marker[16..24].copy_from_slice(&generation.to_le_bytes());
    let checksum = fold_checksum(&marker[..24]);
    marker[24..32].copy_from_slice(&checksum.to_le_bytes());
    for (index, byte) in marker[32..].iter_mut().enumerate() {
        *byte = pattern_byte(index as u64 + generation);
    }
    if let Err(error) = blk
        .write_blocks(MARKER_SECTOR, &marker)
        .and_then(|()| blk.flush())
    {
        println!("understudy: disk selftest failed: write sector {MARKER_SECTOR}: {error}");
        return false;
    }
    let mut readback = [0u8; SECTOR_SIZE];
    if let Err(error) = blk.read_blocks(MARKER_SECTOR, &mut readback) {
        println!("understudy: disk selftest failed: read back: {error}");
        return false;
    }
    if readback != marker {
        println!(
            "understudy: disk selftest failed: sector read back differs from what was written"
        );
        return false;
    }
    println!("understudy: disk selftest wrote generation {generation}, read back ok");
    true
}

/// Takes the first disk as the guest's and checks its backend: an access past the end is
/// refused with an error for the guest and the appliance runs on; an unaligned write across
/// sector boundaries reads back. An error of the disk itself stops the appliance (fail-stop,
/// `guestdisk`), which the QEMU tests provoke with a read-only disk.
pub fn guest_disk(disks: &mut Vec<Disk>) -> bool {
    if disks.is_empty() {
        println!("understudy: guest disk selftest failed: no virtio-blk disk");
        return false;
    }
    let mut backend = GuestDisk::new(disks.remove(0));
    let mut two = [0u8; 2];
    match backend.read_at(backend.len_bytes() - 1, &mut two) {
        Err(BackendError::OutOfRange) => {
            println!("understudy: guest disk selftest: an access past the end is the guest's error")
        }
        other => {
            println!(
                "understudy: guest disk selftest failed: an access past the end gave {other:?}"
            );
            return false;
        }
    }
    let pattern: Vec<u8> = (0..GUEST_DISK_PROBE_BYTES as u64)
        .map(|index| pattern_byte(index + GUEST_DISK_PROBE_OFFSET_BYTES))
        .collect();
    let written = backend
        .write_at(GUEST_DISK_PROBE_OFFSET_BYTES, &pattern)
        .and_then(|()| backend.flush());
    if let Err(error) = written {
        println!("understudy: guest disk selftest failed: write: {error}");
        return false;
    }
    let mut readback = vec![0u8; GUEST_DISK_PROBE_BYTES];
    if let Err(error) = backend.read_at(GUEST_DISK_PROBE_OFFSET_BYTES, &mut readback) {
        println!("understudy: guest disk selftest failed: read back: {error}");
        return false;
    }
    if readback != pattern {
        println!(
            "understudy: guest disk selftest failed: bytes read back differ from those written"
        );
        return false;
    }
    println!(
        "understudy: guest disk selftest wrote {GUEST_DISK_PROBE_BYTES} bytes at byte {GUEST_DISK_PROBE_OFFSET_BYTES} and read them back"
    );
    true
}

fn megabits_per_second(bytes: u64, elapsed_ms: u64) -> (u64, u64) {
    let tenths = bytes * 8 * 10_000 / 1_000_000 / elapsed_ms.max(1);
    (tenths / 10, tenths % 10)
}

/// The primary sends `TRANSFER_BYTES` to the backup, which checks every byte. Returns whether
/// this side saw the whole transfer.
pub fn replication(config: &Config, iface: &mut Interface, device: &mut NetDevice) -> bool {
    let mut sockets = SocketSet::new(vec![]);
    let socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
        tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER_BYTES]),
    );
    let handle = sockets.add(socket);
    let started = now();
    let mut last_progress = now();
    let mut transfer_started: Option<Instant> = None;
    let mut moved: u64 = 0;
    let mut pattern_ok = true;
    let mut next_connect = now();
    let peer = config.peer();
    let sender = config.role == Role::Primary;
    if config.role == Role::Backup {
        if let Err(error) = sockets.get_mut::<tcp::Socket>(handle).listen(config.port) {
            println!("understudy: replication selftest failed: listen: {error}");
            return false;
        }
    }
    let Some(peer) = peer else {
        println!("understudy: replication selftest needs role primary or backup");
        return false;
    };
    loop {
        iface.poll(now(), device, &mut sockets);
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        if sender && !socket.is_open() && transfer_started.is_none() {
            if elapsed_ms(started) > CONNECT_TIMEOUT_MS {
                println!("understudy: replication selftest failed: cannot connect to {peer}");
                return false;
            }
            if now() >= next_connect {
                let [a, b, c, d] = peer.address.0;
                let remote = (IpAddress::v4(a, b, c, d), peer.port);
                if let Err(error) = socket.connect(iface.context(), remote, PRIMARY_LOCAL_PORT) {
                    println!("understudy: replication selftest: connect: {error}");
                }
                next_connect = now() + smoltcp::time::Duration::from_millis(RECONNECT_DELAY_MS);
            }
            continue;
        }
        if socket.may_send() || socket.may_recv() {
            transfer_started.get_or_insert_with(|| {
                last_progress = now();
                now()
            });
        }
        if sender {
            while moved < TRANSFER_BYTES && socket.can_send() {
                let sent = socket
                    .send(|buffer| {
                        let count = buffer.len().min((TRANSFER_BYTES - moved) as usize);
                        for (index, byte) in buffer[..count].iter_mut().enumerate() {
                            *byte = pattern_byte(moved + index as u64);
                        }
                        (count, count)
                    })
                    .unwrap_or(0);
                if sent == 0 {
                    break;
                }
                moved += sent as u64;
                last_progress = now();
            }
            if moved == TRANSFER_BYTES && socket.send_queue() == 0 {
                let elapsed = elapsed_ms(transfer_started.unwrap_or(started));
                let (whole, tenth) = megabits_per_second(moved, elapsed);
                println!(
                    "understudy: replication selftest sent {moved} bytes to {peer} in {elapsed} ms ({whole}.{tenth} Mbit/s)"
                );
                socket.close();
                // Let the FIN go out before returning.
                let closing = now();
                while elapsed_ms(closing) < LINGER_MS {
                    iface.poll(now(), device, &mut sockets);
                    if sockets.get::<tcp::Socket>(handle).state() == tcp::State::Closed {
                        break;
                    }
                }
                return true;
            }
        } else {
            while socket.can_recv() {
                let received = socket
                    .recv(|buffer| {
                        for (index, &byte) in buffer.iter().enumerate() {
                            pattern_ok &= byte == pattern_byte(moved + index as u64);
                        }
                        (buffer.len(), buffer.len())
                    })
                    .unwrap_or(0);
                if received == 0 {
                    break;
                }
                moved += received as u64;
                last_progress = now();
            }
            if moved >= TRANSFER_BYTES {
                let elapsed = elapsed_ms(transfer_started.unwrap_or(started));
                let (whole, tenth) = megabits_per_second(moved, elapsed);
                let verdict = if pattern_ok && moved == TRANSFER_BYTES {
                    "pattern ok"
                } else {
                    "PATTERN MISMATCH"
                };
                println!(
                    "understudy: replication selftest received {moved} bytes from {} in {elapsed} ms ({whole}.{tenth} Mbit/s), {verdict}",
                    peer.address
                );
                // Keep polling so the last acknowledgements go out and the sender's FIN is
                // answered; a receiver that stops here would leave the sender waiting.
                socket.close();
                let closing = now();
                while elapsed_ms(closing) < LINGER_MS {
                    iface.poll(now(), device, &mut sockets);
                    if sockets.get::<tcp::Socket>(handle).state() == tcp::State::Closed {
                        break;
                    }
                }
                return pattern_ok && moved == TRANSFER_BYTES;
            }
        }
        let waited = if transfer_started.is_some() {
            elapsed_ms(last_progress)
        } else {
            0
        };
        if waited > STALL_TIMEOUT_MS
            || (transfer_started.is_none() && elapsed_ms(started) > CONNECT_TIMEOUT_MS)
        {
            println!("understudy: replication selftest failed: stalled after {moved} bytes");
            return false;
        }
    }
}

/// Waits for a console byte the way an idle guest loop does: poll COM1, then
/// `idle::halt_until` a far deadline, which returns after at most one capped halt so COM1 is
/// polled again. Reports how long it waited, how many halts that took and the longest one.
pub fn idle() -> bool {
    println!("understudy: idle selftest waiting for a console byte");
    let start = tsc::read();
    let give_up = tsc::TscTicks(start.0 + tsc::ticks_from_micros(IDLE_TIMEOUT_MS * 1000));
    let mut halts = 0u64;
    let mut longest_ticks = 0u64;
    loop {
        if let Some(byte) = serial::try_read_byte() {
            let waited_ms = (tsc::read().0 - start.0) * 1000 / tsc::hz();
            println!(
                "understudy: idle selftest took console byte {byte:#04x} after {waited_ms} ms: {halts} halts, longest {} us",
                longest_ticks * 1_000_000 / tsc::hz()
            );
            return true;
        }
        let before = tsc::read();
        if before >= give_up {
            println!("understudy: idle selftest failed: no console byte in {IDLE_TIMEOUT_MS} ms");
            return false;
        }
        idle::halt_until(give_up);
        halts += 1;
        longest_ticks = longest_ticks.max(tsc::read().0 - before.0);
    }
}
