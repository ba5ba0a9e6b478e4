//! Go-live announcements: the frames that move the guest's MAC address to the new primary's
//! port on the service network's switches.
//!
//! QEMU's `announce-self` sends RARP (RFC 903) broadcasts from the guest's MAC; a gratuitous
//! ARP request (RFC 5227 section 3, "ARP Announcement") also refreshes the neighbours' caches
//! when the guest's IPv4 address is known. Both are broadcasts whose source is the guest MAC,
//! which is what a learning bridge needs to see.
use alloc::vec::Vec;

const BROADCAST: [u8; 6] = [0xff; 6];
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_RARP: u16 = 0x8035;
/// ARP opcodes (RFC 826; RFC 903 section "Protocol" for 3).
const ARP_REQUEST: u16 = 1;
const RARP_REQUEST: u16 = 3;
/// Ethernet frames are padded to this size without the frame check sequence.
const ETHERNET_FRAME_BYTES_MIN: usize = 60;

/// The announcement frames for a guest with `mac` and, when known, IPv4 address `ipv4`.
pub fn announce_frames(mac: [u8; 6], ipv4: Option<[u8; 4]>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    frames.push(arp_frame(
        ETHERTYPE_RARP,
        RARP_REQUEST,
        mac,
        [0; 4],
        mac,
        [0; 4],
    ));
    if let Some(address) = ipv4 {
        frames.push(arp_frame(
            ETHERTYPE_ARP,
            ARP_REQUEST,
            mac,
            address,
            [0; 6],
            address,
        ));
    }
    frames
}

fn arp_frame(
    ethertype: u16,
    operation: u16,
    sender_mac: [u8; 6],
    sender_ip: [u8; 4],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETHERNET_FRAME_BYTES_MIN);
    frame.extend_from_slice(&BROADCAST);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    frame.push(6);
    frame.push(4);
    frame.extend_from_slice(&operation.to_be_bytes());
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&sender_ip);
    frame.extend_from_slice(&target_mac);
    frame.extend_from_slice(&target_ip);
    frame.resize(ETHERNET_FRAME_BYTES_MIN, 0);
    frame
}

/// The IPv4 address a guest frame was sent from, if it is an ARP or IPv4 frame from `mac`:
/// the runtime learns the guest's address this way for the gratuitous ARP.
pub fn guest_ipv4(mac: [u8; 6], frame: &[u8]) -> Option<[u8; 4]> {
    if frame.len() < 14 || frame[6..12] != mac {
        return None;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let address: [u8; 4] = match ethertype {
        // ARP sender protocol address: Ethernet header 14 + 14 bytes into the ARP packet.
        ETHERTYPE_ARP => frame.get(28..32)?.try_into().ok()?,
        // IPv4 source address: offset 12 of the IPv4 header.
        0x0800 => frame.get(26..30)?.try_into().ok()?,
        _ => return None,
    };
    (address != [0; 4]).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn rarp_announcement_matches_qemu_announce_self_layout() {
        let frames = announce_frames(MAC, None);
        assert_eq!(frames.len(), 1);
        let expected: Vec<u8> = [
            &BROADCAST[..],
            &MAC,
            &[0x80, 0x35, 0, 1, 8, 0, 6, 4, 0, 3],
            &MAC,
            &[0; 4],
            &MAC,
            &[0; 4],
        ]
        .concat();
        assert_eq!(frames[0][..expected.len()], expected[..]);
        assert_eq!(frames[0].len(), 60);
        assert!(frames[0][expected.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn gratuitous_arp_names_the_guest_address_as_sender_and_target() {
        let frames = announce_frames(MAC, Some([10, 0, 2, 15]));
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[1][12..14], &[0x08, 0x06]);
        assert_eq!(&frames[1][20..22], &[0, 1]);
        assert_eq!(&frames[1][28..32], &[10, 0, 2, 15]);
        assert_eq!(&frames[1][38..42], &[10, 0, 2, 15]);
        assert_eq!(guest_ipv4(MAC, &frames[1]), Some([10, 0, 2, 15]));
        assert_eq!(guest_ipv4([1; 6], &frames[1]), None);
    }
}
