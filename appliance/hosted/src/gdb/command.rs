//! The GDB packets the replay stub understands, parsed into typed commands (GDB manual,
//! appendix E.2 "Packets", E.4 "General Query Packets").

use std::fmt;

/// The thread every stop names: a replay has one hart, shown to GDB as thread 1.
pub const THREAD_ID: u64 = 1;

/// A breakpoint or watchpoint kind, the first field of `Z`/`z` (E.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PointKind {
    /// `Z0`: a software breakpoint (the stub keeps it; guest memory is never written).
    Software,
    /// `Z1`: a hardware breakpoint.
    Hardware,
    /// `Z2`: a write watchpoint.
    Write,
    /// `Z3`: a read watchpoint.
    Read,
    /// `Z4`: an access watchpoint.
    Access,
}

/// What to do on resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    Continue,
    Step,
}

/// One parsed packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `qSupported[:features]`.
    Supported,
    /// `?`: why the target stopped.
    HaltReason,
    /// `g`.
    ReadRegisters,
    /// `G...`: refused, a replay's registers are the recording's.
    WriteRegisters,
    /// `p n`.
    ReadRegister(u32),
    /// `P n=r`: refused.
    WriteRegister,
    /// `m addr,length`.
    ReadMemory { addr: u64, len_bytes: u64 },
    /// `M addr,length:XX...` and `X addr,length:...`: refused.
    WriteMemory,
    /// `Z type,addr,kind`.
    Insert {
        kind: PointKind,
        addr: u64,
        len_bytes: u64,
    },
    /// `z type,addr,kind`.
    Remove {
        kind: PointKind,
        addr: u64,
        len_bytes: u64,
    },
    /// `c`, `s`, `C sig`, `S sig`, `vCont;...` (the action for thread 1 or all threads; a
    /// signal means nothing to a bare machine and is ignored).
    Resume(Resume),
    /// `vCont?`.
    VContSupported,
    /// `k` or `vKill`.
    Kill,
    /// `D`.
    Detach,
    /// `qAttached`.
    Attached,
    /// `qC`.
    CurrentThread,
    /// `qfThreadInfo`.
    FirstThreadInfo,
    /// `qsThreadInfo`.
    NextThreadInfo,
    /// `H op thread`: every thread is thread 1.
    SetThread,
    /// `T thread`.
    ThreadAlive,
    /// `qXfer:features:read:annex:offset,length`.
    ReadFeatures {
        annex: String,
        offset: u64,
        length: u64,
    },
    /// `qRcmd,hex`: a `monitor` command.
    Monitor(String),
    /// Anything else: answered with the empty packet (E.1: "an empty response").
    Unknown,
}

/// A known packet with arguments that do not parse. GDB (or whoever speaks for it) is to
/// blame; the reply is an error packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadArguments {
    pub packet: String,
}

impl fmt::Display for BadArguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed arguments in GDB packet {:?}", self.packet)
    }
}

impl std::error::Error for BadArguments {}

impl Command {
    /// Parses one packet payload.
    pub fn parse(payload: &[u8]) -> Result<Command, BadArguments> {
        let text = String::from_utf8_lossy(payload);
        let bad = || BadArguments {
            packet: text.chars().take(40).collect(),
        };
        let Some(first) = text.chars().next() else {
            return Ok(Command::Unknown);
        };
        let rest = &text[first.len_utf8()..];
        let command = match first {
            '?' => Command::HaltReason,
            'g' if rest.is_empty() => Command::ReadRegisters,
            'G' => Command::WriteRegisters,
            'p' => Command::ReadRegister(u32::from_str_radix(rest, 16).map_err(|_| bad())?),
            'P' => Command::WriteRegister,
            'm' => {
                let (addr, len) = rest.split_once(',').ok_or_else(bad)?;
                Command::ReadMemory {
                    addr: hex_u64(addr).ok_or_else(bad)?,
                    len_bytes: hex_u64(len).ok_or_else(bad)?,
                }
            }
            'M' | 'X' => Command::WriteMemory,
            'Z' | 'z' => {
                let mut fields = rest.split(',');
                let kind = match fields.next() {
                    Some("0") => PointKind::Software,
                    Some("1") => PointKind::Hardware,
                    Some("2") => PointKind::Write,
                    Some("3") => PointKind::Read,
                    Some("4") => PointKind::Access,
                    // Another kind of point: not supported, so the empty reply (E.2 'Z').
                    _ => return Ok(Command::Unknown),
                };
                let addr = fields.next().and_then(hex_u64).ok_or_else(bad)?;
                // The third field is the breakpoint's kind (instruction length) or the
                // watched length; conditions after ';' are not supported and ignored.
                let len_field = fields.next().ok_or_else(bad)?;
                let len_bytes =
                    hex_u64(len_field.split(';').next().unwrap_or("")).ok_or_else(bad)?;
                if first == 'Z' {
                    Command::Insert {
                        kind,
                        addr,
                        len_bytes,
                    }
                } else {
                    Command::Remove {
                        kind,
                        addr,
                        len_bytes,
                    }
                }
            }
            // A resume address would move pc, which a replay cannot do.
            'c' | 's' if !rest.is_empty() => return Err(bad()),
            'c' | 'C' => Command::Resume(Resume::Continue),
            's' | 'S' => Command::Resume(Resume::Step),
            'k' => Command::Kill,
            'D' => Command::Detach,
            'H' => Command::SetThread,
            'T' => Command::ThreadAlive,
            'v' => parse_v(rest).ok_or_else(bad)?,
            'q' => parse_query(rest).ok_or_else(bad)?,
            _ => Command::Unknown,
        };
        Ok(command)
    }
}

/// `v` packets (E.2 'v').
fn parse_v(rest: &str) -> Option<Command> {
    if rest == "Cont?" {
        return Some(Command::VContSupported);
    }
    if rest == "Kill" || rest.starts_with("Kill;") {
        return Some(Command::Kill);
    }
    let Some(actions) = rest.strip_prefix("Cont;") else {
        return Some(Command::Unknown);
    };
    // The leftmost action that applies to thread 1 wins (E.2 'vCont').
    for action in actions.split(';') {
        let (action, thread) = match action.split_once(':') {
            Some((action, thread)) => (action, Some(thread)),
            None => (action, None),
        };
        let applies = match thread {
            None | Some("-1") => true,
            Some(thread) => hex_u64(thread) == Some(THREAD_ID),
        };
        if !applies {
            continue;
        }
        return match action.as_bytes().first() {
            Some(b'c' | b'C') => Some(Command::Resume(Resume::Continue)),
            Some(b's' | b'S') => Some(Command::Resume(Resume::Step)),
            _ => None,
        };
    }
    None
}

/// `q` packets (E.4).
fn parse_query(rest: &str) -> Option<Command> {
    let command = if rest == "Supported" || rest.starts_with("Supported:") {
        Command::Supported
    } else if rest == "Attached" || rest.starts_with("Attached:") {
        Command::Attached
    } else if rest == "C" {
        Command::CurrentThread
    } else if rest == "fThreadInfo" {
        Command::FirstThreadInfo
    } else if rest == "sThreadInfo" {
        Command::NextThreadInfo
    } else if let Some(request) = rest.strip_prefix("Xfer:features:read:") {
        let (annex, range) = request.split_once(':')?;
        let (offset, length) = range.split_once(',')?;
        Command::ReadFeatures {
            annex: annex.to_owned(),
            offset: hex_u64(offset)?,
            length: hex_u64(length)?,
        }
    } else if let Some(hex) = rest.strip_prefix("Rcmd,") {
        let bytes = decode_hex(hex)?;
        Command::Monitor(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        Command::Unknown
    };
    Some(command)
}

fn hex_u64(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// Hex text to bytes; `None` for an odd length or a non-hex digit.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Command, BadArguments> {
        Command::parse(text.as_bytes())
    }

    #[test]
    fn the_packets_gdb_sends_on_connect_parse() {
        assert_eq!(
            parse("qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+"),
            Ok(Command::Supported)
        );
        assert_eq!(parse("?"), Ok(Command::HaltReason));
        assert_eq!(parse("Hg0"), Ok(Command::SetThread));
        assert_eq!(parse("qAttached"), Ok(Command::Attached));
        assert_eq!(parse("qC"), Ok(Command::CurrentThread));
        assert_eq!(parse("qfThreadInfo"), Ok(Command::FirstThreadInfo));
        assert_eq!(parse("qsThreadInfo"), Ok(Command::NextThreadInfo));
        assert_eq!(
            parse("qXfer:features:read:target.xml:0,ffb"),
            Ok(Command::ReadFeatures {
                annex: "target.xml".into(),
                offset: 0,
                length: 0xffb
            })
        );
        assert_eq!(parse("vMustReplyEmpty"), Ok(Command::Unknown));
        assert_eq!(parse("qTStatus"), Ok(Command::Unknown));
    }

    #[test]
    fn registers_and_memory_requests_carry_their_hex_arguments() {
        assert_eq!(parse("g"), Ok(Command::ReadRegisters));
        assert_eq!(parse("p20"), Ok(Command::ReadRegister(32)));
        assert_eq!(
            parse("mffffffff80000000,10"),
            Ok(Command::ReadMemory {
                addr: 0xffff_ffff_8000_0000,
                len_bytes: 16
            })
        );
        assert_eq!(parse("P20=0000000080000000"), Ok(Command::WriteRegister));
        assert_eq!(parse("M80000000,1:00"), Ok(Command::WriteMemory));
        assert_eq!(parse("X80000000,0:"), Ok(Command::WriteMemory));
    }

    #[test]
    fn breakpoints_and_watchpoints_name_kind_address_and_length() {
        assert_eq!(
            parse("Z0,ffffffff802468b0,2"),
            Ok(Command::Insert {
                kind: PointKind::Software,
                addr: 0xffff_ffff_8024_68b0,
                len_bytes: 2
            })
        );
        assert_eq!(
            parse("z1,80200000,4"),
            Ok(Command::Remove {
                kind: PointKind::Hardware,
                addr: 0x8020_0000,
                len_bytes: 4
            })
        );
        assert_eq!(
            parse("Z4,1000,8;X1,0f"),
            Ok(Command::Insert {
                kind: PointKind::Access,
                addr: 0x1000,
                len_bytes: 8
            })
        );
        assert_eq!(
            parse("Z2,1000,4").map(|c| matches!(
                c,
                Command::Insert {
                    kind: PointKind::Write,
                    ..
                }
            )),
            Ok(true)
        );
        assert_eq!(
            parse("Z3,1000,4").map(|c| matches!(
                c,
                Command::Insert {
                    kind: PointKind::Read,
                    ..
                }
            )),
            Ok(true)
        );
        assert_eq!(parse("Z9,1000,4"), Ok(Command::Unknown));
    }

    #[test]
    fn resume_packets_and_vcont_actions_for_thread_one_parse() {
        assert_eq!(parse("c"), Ok(Command::Resume(Resume::Continue)));
        assert_eq!(parse("s"), Ok(Command::Resume(Resume::Step)));
        assert_eq!(parse("C05"), Ok(Command::Resume(Resume::Continue)));
        assert_eq!(parse("vCont?"), Ok(Command::VContSupported));
        assert_eq!(parse("vCont;c"), Ok(Command::Resume(Resume::Continue)));
        assert_eq!(parse("vCont;s:1;c"), Ok(Command::Resume(Resume::Step)));
        assert_eq!(parse("vCont;s:2;c"), Ok(Command::Resume(Resume::Continue)));
        assert_eq!(parse("vCont;S05:-1"), Ok(Command::Resume(Resume::Step)));
        assert_eq!(parse("vKill;1"), Ok(Command::Kill));
        assert_eq!(parse("k"), Ok(Command::Kill));
        assert_eq!(parse("D"), Ok(Command::Detach));
    }

    #[test]
    fn malformed_arguments_are_errors_not_panics() {
        for text in [
            "p",
            "pzz",
            "m",
            "m10",
            "mxyz,4",
            "m1,",
            "m11111111111111111,1",
            "Z0",
            "Z0,1000",
            "Z0,,4",
            "vCont;x",
            "vCont;",
            "qXfer:features:read:target.xml:0",
            "qRcmd,6",
            "c80000000",
        ] {
            assert!(parse(text).is_err(), "{text} is malformed");
        }
        assert_eq!(parse(""), Ok(Command::Unknown));
        assert_eq!(
            Command::parse(&[0xff, 0xfe, b'm']),
            Ok(Command::Unknown),
            "bytes that are not text are an unknown packet"
        );
    }

    #[test]
    fn a_monitor_command_arrives_as_hex_text() {
        assert_eq!(
            parse("qRcmd,69636f756e74"),
            Ok(Command::Monitor("icount".into()))
        );
    }
}
