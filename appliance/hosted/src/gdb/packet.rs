//! GDB remote serial protocol framing, sans-IO: `$payload#checksum` packets, the `+`/`-`
//! acknowledgements and the interrupt byte in, packets with escaped binary data out (GDB
//! manual, appendix E.1 "Overview").
//!
//! Incoming payloads are kept as sent. GDB never run-length encodes what it sends (only a
//! stub's responses may be encoded that way), and the binary data of its `X` packets may
//! hold a raw `*`, so a `*` from GDB is data, not a repeat count.

use std::fmt;

/// The largest packet payload accepted or sent, in bytes; advertised as `PacketSize`.
pub const PACKET_BYTES_MAX: usize = 0x4000;

/// The byte GDB sends outside any packet to stop a running target (E.1: "Interrupts").
pub const INTERRUPT_BYTE: u8 = 0x03;

/// What the bytes from GDB amounted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A packet whose checksum matched: acknowledge it with `+`.
    Packet(Vec<u8>),
    /// GDB acknowledged our last packet.
    Ack,
    /// GDB asks for our last packet again.
    Nak,
    /// Ctrl-C: stop the target.
    Interrupt,
    /// A damaged packet: answer `-` so GDB sends it again.
    Malformed(FrameError),
}

/// Why a packet was refused. GDB is to blame (or the line between us).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The checksum did not match the payload.
    Checksum { sent: u8, computed: u8 },
    /// The checksum was not two hex digits.
    ChecksumDigits,
    /// The payload exceeded `PACKET_BYTES_MAX`.
    TooLong,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Checksum { sent, computed } => write!(
                f,
                "packet checksum {sent:02x} does not match its payload ({computed:02x}); asked for it again"
            ),
            FrameError::ChecksumDigits => {
                f.write_str("packet checksum is not two hex digits; asked for it again")
            }
            FrameError::TooLong => write!(
                f,
                "packet longer than the {PACKET_BYTES_MAX} bytes advertised as PacketSize; refused"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Where the decoder is inside the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between packets: `$`, `+`, `-` and 0x03 mean something; anything else is noise.
    Idle,
    /// Inside a payload, until `#`.
    Payload,
    /// After `#`: the first checksum digit.
    Checksum1,
    /// The second checksum digit; holds the first.
    Checksum2(u8),
}

/// Turns the bytes GDB sends into events, one byte at a time.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    payload: Vec<u8>,
    sum: u8,
    too_long: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Idle,
            payload: Vec::new(),
            sum: 0,
            too_long: false,
        }
    }
}

impl Decoder {
    /// Takes one byte; returns an event when the byte completes one.
    pub fn push(&mut self, byte: u8) -> Option<Event> {
        match self.state {
            State::Idle => match byte {
                b'$' => {
                    self.state = State::Payload;
                    self.payload.clear();
                    self.sum = 0;
                    self.too_long = false;
                    None
                }
                b'+' => Some(Event::Ack),
                b'-' => Some(Event::Nak),
                INTERRUPT_BYTE => Some(Event::Interrupt),
                _ => None,
            },
            State::Payload => {
                match byte {
                    b'#' => self.state = State::Checksum1,
                    // A new start inside a packet: the first was cut off; keep the new one.
                    b'$' => {
                        self.payload.clear();
                        self.sum = 0;
                        self.too_long = false;
                    }
                    _ => {
                        self.sum = self.sum.wrapping_add(byte);
                        if self.payload.len() < PACKET_BYTES_MAX {
                            self.payload.push(byte);
                        } else {
                            self.too_long = true;
                        }
                    }
                }
                None
            }
            State::Checksum1 => match hex_digit(byte) {
                Some(high) => {
                    self.state = State::Checksum2(high);
                    None
                }
                None => self.malformed(FrameError::ChecksumDigits),
            },
            State::Checksum2(high) => match hex_digit(byte) {
                Some(low) => {
                    self.state = State::Idle;
                    let sent = high << 4 | low;
                    if self.too_long {
                        Some(Event::Malformed(FrameError::TooLong))
                    } else if sent != self.sum {
                        Some(Event::Malformed(FrameError::Checksum {
                            sent,
                            computed: self.sum,
                        }))
                    } else {
                        Some(Event::Packet(std::mem::take(&mut self.payload)))
                    }
                }
                None => self.malformed(FrameError::ChecksumDigits),
            },
        }
    }

    fn malformed(&mut self, error: FrameError) -> Option<Event> {
        self.state = State::Idle;
        Some(Event::Malformed(error))
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

/// Appends `$payload#checksum` to `out`. The payload must not hold `$`, `#` or `*` (use
/// `escape_binary` for binary data).
pub fn encode_packet(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        !payload
            .iter()
            .any(|byte| matches!(byte, b'$' | b'#' | b'*')),
        "a packet payload holds a framing byte unescaped"
    );
    let sum = payload
        .iter()
        .fold(0u8, |sum, &byte| sum.wrapping_add(byte));
    out.push(b'$');
    out.extend_from_slice(payload);
    out.push(b'#');
    out.extend_from_slice(format!("{sum:02x}").as_bytes());
}

/// Appends binary `data` escaped for a packet (E.1: `#`, `$`, `}` and, in responses, `*`
/// become `}` and the byte XOR 0x20).
pub fn escape_binary(data: &[u8], out: &mut Vec<u8>) {
    for &byte in data {
        if matches!(byte, b'#' | b'$' | b'}' | b'*') {
            out.push(b'}');
            out.push(byte ^ 0x20);
        } else {
            out.push(byte);
        }
    }
}

/// Undoes `escape_binary`; `None` when the data ends inside an escape.
pub fn unescape_binary(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    let mut bytes = data.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'}' {
            out.push(bytes.next()? ^ 0x20);
        } else {
            out.push(byte);
        }
    }
    Some(out)
}

/// Appends `bytes` as lowercase hex.
pub fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    for byte in bytes {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Event> {
        let mut decoder = Decoder::default();
        bytes
            .iter()
            .filter_map(|&byte| decoder.push(byte))
            .collect()
    }

    #[test]
    fn a_packet_with_its_checksum_decodes_to_its_payload() {
        // GDB manual E.1: "$g#67" is the g packet.
        assert_eq!(decode_all(b"$g#67"), [Event::Packet(b"g".to_vec())]);
        assert_eq!(
            decode_all(b"$qSupported:swbreak+#8b"),
            [Event::Packet(b"qSupported:swbreak+".to_vec())]
        );
    }

    #[test]
    fn acknowledgements_and_the_interrupt_byte_are_events_and_noise_is_skipped() {
        assert_eq!(
            decode_all(b"+ -\x03junk$?#3f"),
            [
                Event::Ack,
                Event::Nak,
                Event::Interrupt,
                Event::Packet(b"?".to_vec())
            ]
        );
    }

    #[test]
    fn a_wrong_checksum_is_malformed_and_the_next_packet_still_decodes() {
        assert_eq!(
            decode_all(b"$g#68$g#67"),
            [
                Event::Malformed(FrameError::Checksum {
                    sent: 0x68,
                    computed: 0x67
                }),
                Event::Packet(b"g".to_vec())
            ]
        );
    }

    #[test]
    fn a_checksum_that_is_not_hex_is_malformed() {
        assert_eq!(
            decode_all(b"$g#zz$?#3f"),
            [
                Event::Malformed(FrameError::ChecksumDigits),
                Event::Packet(b"?".to_vec())
            ]
        );
    }

    #[test]
    fn a_packet_past_the_advertised_size_is_refused_without_growing() {
        let mut bytes = b"$".to_vec();
        bytes.extend(std::iter::repeat_n(b'0', PACKET_BYTES_MAX + 10));
        bytes.extend_from_slice(b"#00");
        let mut decoder = Decoder::default();
        let events: Vec<Event> = bytes.iter().filter_map(|&b| decoder.push(b)).collect();
        assert_eq!(events, [Event::Malformed(FrameError::TooLong)]);
        assert_eq!(decoder.payload.len(), PACKET_BYTES_MAX);
    }

    #[test]
    fn a_restart_inside_a_packet_keeps_the_new_packet() {
        assert_eq!(decode_all(b"$qSup$g#67"), [Event::Packet(b"g".to_vec())]);
    }

    #[test]
    fn a_star_from_gdb_is_data_not_a_repeat_count() {
        // "X" binary data may hold a raw '*' (only responses must escape it).
        let payload = b"X80000000,2:a*";
        let mut framed = Vec::new();
        let sum = payload.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        framed.extend_from_slice(b"$");
        framed.extend_from_slice(payload);
        framed.extend_from_slice(format!("#{sum:02x}").as_bytes());
        assert_eq!(decode_all(&framed), [Event::Packet(payload.to_vec())]);
    }

    #[test]
    fn encoding_adds_the_modulo_256_checksum() {
        let mut out = Vec::new();
        encode_packet(b"OK", &mut out);
        assert_eq!(out, b"$OK#9a");
        out.clear();
        encode_packet(b"", &mut out);
        assert_eq!(out, b"$#00");
    }

    #[test]
    fn binary_data_escapes_the_framing_bytes_and_round_trips() {
        let data = b"a}b#c$d*e";
        let mut escaped = Vec::new();
        escape_binary(data, &mut escaped);
        assert_eq!(escaped, b"a}]b}\x03c}\x04d}\x0ae");
        assert_eq!(unescape_binary(&escaped).as_deref(), Some(&data[..]));
        let mut framed = Vec::new();
        encode_packet(&escaped, &mut framed);
        assert_eq!(decode_all(&framed), [Event::Packet(escaped.clone())]);
        assert_eq!(unescape_binary(b"ab}"), None);
    }

    #[test]
    fn every_byte_value_round_trips_through_escaping_and_framing() {
        let data: Vec<u8> = (0..=255).collect();
        let mut escaped = Vec::new();
        escape_binary(&data, &mut escaped);
        let mut framed = Vec::new();
        encode_packet(&escaped, &mut framed);
        let events = decode_all(&framed);
        let [Event::Packet(payload)] = &events[..] else {
            panic!("one packet: {events:?}")
        };
        assert_eq!(unescape_binary(payload), Some(data));
    }
}
