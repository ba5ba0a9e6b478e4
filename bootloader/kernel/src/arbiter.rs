//! The appliance as the arbiter (`role = arbiter`): `ft::Arbiter` answers the replicas' claims
//! on the log channel, and every decision is written to the arbiter's own disk, flushed and
//! read back before it answers, so a rebooted arbiter grants no epoch twice (the hosted
//! arbiter does the same with a file, `appliance/hosted/src/pair/arbiter.rs`).
//!
//! The record lives in the disk's first sector: a magic, then `ArbiterRecord::to_bytes`
//! (which carries its own checksum). A disk without the magic holds no record; one is
//! created only when the kernel is told to (`understudy.arbiter=init`), because a wiped or
//! replaced disk must not silently become "no epoch granted yet".

use crate::channel::LogChannel;
use crate::guest::{ARBITER_ID, BACKUP_ID, PRIMARY_ID};
use crate::guestdisk::GuestDisk;
use crate::{fail, idle, println, tsc};
use understudy_boot_config::{ArbiterKeys, Config, SocketAddress};
use understudy_ft::arbiter::{StorageError, ARBITER_RECORD_BYTES};
use understudy_ft::{Arbiter, ArbiterConfig, ArbiterRecord, Incarnation, Key, Limits};
use understudy_machine::devices::virtio::block::{BlockBackend, SECTOR_BYTES};

/// Marks the sector as holding an arbiter record.
const RECORD_MAGIC: &[u8; 16] = b"UNDERSTUDY-ARB-1";

/// Runs the arbiter until the machine is switched off.
pub fn run(config: &Config, mut disk: GuestDisk, mut channel: LogChannel, init: bool) -> ! {
    let ArbiterKeys::Arbiter { primary, backup } = config
        .arbiter_keys()
        .unwrap_or_else(|error| fail(format_args!("config: {error}")))
    else {
        unreachable!("the arbiter's config yields both keys")
    };
    let stored = match read_record(&mut disk) {
        Ok(Some(record)) => record,
        Ok(None) if init => {
            let record = ArbiterRecord::initial();
            write_record(&mut disk, record);
            record
        }
        Ok(None) => fail(format_args!(
            "the arbiter's disk holds no record: boot once with understudy.arbiter=init to start the record of a new pair (never for an arbiter whose disk was lost while its pair ran)"
        )),
        Err(why) => fail(format_args!(
            "the arbiter's record is corrupt ({why}); restore the disk: answering from a guess could grant an epoch twice"
        )),
    };
    let mut arbiter = Arbiter::new(
        ArbiterConfig {
            me: ARBITER_ID,
            replicas: [PRIMARY_ID, BACKUP_ID],
            keys: [Key(primary.0), Key(backup.0)],
            limits: Limits::with_peer_timeout_ms(u64::from(config.peer_timeout_ms)),
            incarnation: Incarnation(crate::guest::incarnation()),
        },
        stored,
    );
    println!(
        "understudy: arbiter on {}, epoch {} granted to replica {}",
        config.arbiter, stored.epoch.0, stored.owner.0
    );
    let replica_address = |id| SocketAddress {
        address: if id == PRIMARY_ID {
            config.primary.address
        } else {
            config.backup.address
        },
        port: config.port,
    };
    loop {
        channel.poll();
        while let Some(datagram) = channel.receive() {
            if arbiter.handle_frame(&datagram).is_err() {
                continue;
            }
            while let Some(record) = arbiter.poll_storage_write() {
                write_record(&mut disk, record);
                arbiter.storage_written(record);
                println!(
                    "understudy: arbiter granted epoch {} to replica {}",
                    record.epoch.0, record.owner.0
                );
            }
            while let Some(transmit) = arbiter.poll_transmit() {
                channel.send(replica_address(transmit.to), &transmit.bytes);
            }
            channel.poll();
        }
        if !channel.has_datagram() {
            // Returns within a millisecond: the NIC is polled, its interrupts stay off.
            idle::halt_until(tsc::TscTicks(u64::MAX));
        }
    }
}

/// The record in the first sector: `None` without the magic, an error when it is damaged.
fn read_record(disk: &mut GuestDisk) -> Result<Option<ArbiterRecord>, StorageError> {
    let mut sector = [0u8; SECTOR_BYTES as usize];
    if disk.read_at(0, &mut sector).is_err() {
        fail(format_args!("cannot read the arbiter's disk"));
    }
    if &sector[..RECORD_MAGIC.len()] != RECORD_MAGIC {
        return Ok(None);
    }
    let start = RECORD_MAGIC.len();
    ArbiterRecord::from_bytes(&sector[start..start + ARBITER_RECORD_BYTES]).map(Some)
}

/// Writes the record, flushes it to stable storage and reads it back: the arbiter answers
/// only for a decision the disk is known to hold. Any failure stops the arbiter (fail-stop):
/// the replicas then wait, which is safe.
fn write_record(disk: &mut GuestDisk, record: ArbiterRecord) {
    let mut sector = [0u8; SECTOR_BYTES as usize];
    sector[..RECORD_MAGIC.len()].copy_from_slice(RECORD_MAGIC);
    let start = RECORD_MAGIC.len();
    sector[start..start + ARBITER_RECORD_BYTES].copy_from_slice(&record.to_bytes());
    if disk.write_at(0, &sector).is_err() || disk.flush().is_err() {
        fail(format_args!(
            "cannot write the arbiter's record to its disk"
        ));
    }
    match read_record(disk) {
        Ok(Some(read)) if read == record => {}
        _ => fail(format_args!(
            "the arbiter's disk did not give back the record just written"
        )),
    }
}
