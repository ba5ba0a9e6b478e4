//! The appliance role config: a small `no_std` parser for human-edited `key = value` text.
//!
//! One file describes the whole protected pair, so the primary's and the backup's files differ
//! only in `role`: each machine finds its own address and its peer's by role.
//!
//! ```text
//! # comments run from '#' to the end of the line
//! role = primary                  # primary | backup | arbiter
//! primary = 10.0.0.1/24           # replication-network address of the primary machine
//! backup = 10.0.0.2/24            # ... and of the backup machine
//! arbiter = 10.0.0.3:7100         # the arbiter's address and TCP port
//! port = 7000                     # replication TCP port (optional, default 7000)
//! gateway = 10.0.0.254            # optional; needed when the machines are in different subnets
//! disk = shared                   # shared | separate
//! channel_key = <64 hex digits>   # the 256-bit key that authenticates the log channel
//! guest_memory_mib = 256          # optional: RAM of the protected guest, MiB (default 256)
//! guest_cmdline = console=ttyS0   # optional: the guest kernel's command line (no '#')
//! arbiter_key_primary = <64 hex>  # the primary's key with the arbiter (ft/PROTOCOL.md, Keys)
//! arbiter_key_backup = <64 hex>   # the backup's key with the arbiter
//! arbiter_key = <64 hex>          # optional: this replica's key, instead of the one its role names
//! peer_timeout_ms = 1000          # optional: silence that counts as a failure (default 1000)
//! metrics_port = 9464             # optional: the appliance's status and metrics over HTTP
//! arbiter_backend = etcd          # optional: builtin (default) or etcd
//! etcd_endpoints = http://10.0.0.21:2379,http://10.0.0.22:2379   # with etcd
//! etcd_prefix = /understudy/pair-a                                # with etcd
//! ```
//!
//! The image carries both replicas' arbiter keys so that flipping `role` is the only edit:
//! each replica takes the key of its role. A site that wants neither replica to hold the
//! other's key gives each machine its own `arbiter_key` instead (and the arbiter both).
//!
//! The kernel command line carries the same keys as `key=value` words separated by spaces.
#![cfg_attr(not(test), no_std)]

pub mod payload;

use core::fmt;

/// Longest config text accepted, in bytes: a hand-written file is a few hundred bytes, so
/// anything larger is not a config (for example a wrong `-initrd`).
pub const CONFIG_BYTES_MAX: usize = 16 * 1024;
/// The replication port when `port` is absent.
pub const DEFAULT_REPLICATION_PORT: u16 = 7000;
/// Guest RAM when `guest_memory_mib` is absent, in MiB.
pub const DEFAULT_GUEST_MEMORY_MIB: u32 = 256;
/// Accepted range of `guest_memory_mib`: Linux needs some room, and the appliance must keep
/// memory for itself.
pub const GUEST_MEMORY_MIB_MIN: u32 = 16;
pub const GUEST_MEMORY_MIB_MAX: u32 = 64 * 1024;
/// Longest guest kernel command line, in bytes (RISC-V Linux's COMMAND_LINE_SIZE is 1024,
/// including the NUL).
pub const GUEST_CMDLINE_BYTES_MAX: usize = 1023;
/// Bytes in the channel key.
pub const CHANNEL_KEY_BYTES: usize = 32;
/// The shortest `peer_timeout_ms` accepted: below it, a busy machine's scheduling delays alone
/// would look like a failure.
pub const PEER_TIMEOUT_MS_MIN: u32 = 100;
/// The longest `peer_timeout_ms` accepted (a minute): a pair that waits longer is not
/// fault-tolerant in any useful sense.
pub const PEER_TIMEOUT_MS_MAX: u32 = 60_000;
/// The peer timeout when `peer_timeout_ms` is absent (`ft::Limits::default`).
pub const DEFAULT_PEER_TIMEOUT_MS: u32 = 1000;

/// What this machine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Backup,
    Arbiter,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Arbiter => "arbiter",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the two machines share one disk or each keep a copy (BRIEF section 1, item 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMode {
    Shared,
    Separate,
}

impl fmt::Display for DiskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskMode::Shared => "shared",
            DiskMode::Separate => "separate",
        })
    }
}

/// How the machine executes guest code. Both give the same instructions, counts and state
/// digests (so the two replicas of a pair may differ); only speed differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Execution {
    /// Hot code runs as x86-64 translated blocks, the rest in the interpreter (the default).
    Translate,
    /// Every instruction runs in the interpreter, the reference.
    Interpret,
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Execution::Translate => "translate",
            Execution::Interpret => "interpret",
        })
    }
}

/// An IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4(pub [u8; 4]);

impl Ipv4 {
    fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }
}

impl fmt::Display for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// An interface address with its prefix length, `10.0.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// Whether `other` is in this address's subnet.
    pub fn contains(&self, other: Ipv4) -> bool {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        };
        self.address.to_u32() & mask == other.to_u32() & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// An IPv4 address and TCP port, `10.0.0.3:7100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketAddress {
    pub address: Ipv4,
    pub port: u16,
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.address, self.port)
    }
}

/// The log channel's authentication key. `Debug` never shows the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey(pub [u8; CHANNEL_KEY_BYTES]);

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelKey(<redacted>)")
    }
}

/// A replica's 256-bit key with the arbiter.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArbiterKey(pub [u8; CHANNEL_KEY_BYTES]);

impl fmt::Debug for ArbiterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArbiterKey(<redacted>)")
    }
}

/// The arbiter keys one machine uses, by its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArbiterKeys {
    /// A replica holds its own key with the arbiter.
    Replica(ArbiterKey),
    /// The arbiter holds both.
    Arbiter {
        primary: ArbiterKey,
        backup: ArbiterKey,
    },
}

/// Most etcd endpoints a config names.
pub const ETCD_ENDPOINTS_MAX: usize = 7;
/// Longest `etcd_prefix`, in bytes.
pub const ETCD_PREFIX_BYTES_MAX: usize = 128;

/// Who decides which replica goes live after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArbiterBackend {
    /// The `role = arbiter` machine or process at `arbiter`.
    Builtin,
    /// A key under `prefix` in the etcd cluster at `endpoints`, compared and set by each
    /// replica itself (no arbiter machine).
    Etcd {
        endpoints: [Option<SocketAddress>; ETCD_ENDPOINTS_MAX],
        prefix: EtcdPrefix,
    },
}

/// Text held inline so that `Config` stays `Copy` and `no_std` without an allocator: the
/// guest's command line, the etcd prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> InlineText<N> {
    /// `None` when `text` is longer than `N` bytes.
    pub fn new(text: &str) -> Option<Self> {
        if text.len() > N {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Self {
            bytes,
            len: text.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        // `new` copied a whole `str`, so the bytes are UTF-8.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Debug for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The guest kernel's command line.
pub type GuestCmdline = InlineText<GUEST_CMDLINE_BYTES_MAX>;

/// The etcd key prefix of a pair.
pub type EtcdPrefix = InlineText<ETCD_PREFIX_BYTES_MAX>;

/// `text` as an etcd prefix: a path (`/...`) without blanks, at most `ETCD_PREFIX_BYTES_MAX`
/// bytes; a trailing `/` is dropped.
fn etcd_prefix(text: &str) -> Option<EtcdPrefix> {
    let text = text.trim_end_matches('/');
    if !text.starts_with('/') || text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    EtcdPrefix::new(text)
}

/// A validated config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub role: Role,
    pub primary: Ipv4Cidr,
    pub backup: Ipv4Cidr,
    pub arbiter: SocketAddress,
    pub port: u16,
    pub gateway: Option<Ipv4>,
    pub disk: DiskMode,
    pub channel_key: ChannelKey,
    pub guest_memory_mib: u32,
    /// The guest kernel's command line, when the config sets one.
    pub guest_cmdline: Option<GuestCmdline>,
    pub arbiter_key_primary: Option<ArbiterKey>,
    pub arbiter_key_backup: Option<ArbiterKey>,
    /// This replica's own arbiter key, overriding the one its role names.
    pub arbiter_key: Option<ArbiterKey>,
    /// Silence from the partner after which a replica asks the arbiter to decide.
    pub peer_timeout_ms: u32,
    /// The appliance serves its status and metrics over HTTP on this port of its replication
    /// address (`/metrics`, `/status`, `/status.json`).
    pub metrics_port: Option<u16>,
    pub arbiter_backend: ArbiterBackend,
    pub execution: Execution,
}

impl Config {
    /// This machine's replication-network address. The arbiter takes its address from the
    /// `arbiter` key with the primary's prefix length (all three share the network).
    pub fn own_address(&self) -> Ipv4Cidr {
        match self.role {
            Role::Primary => self.primary,
            Role::Backup => self.backup,
            Role::Arbiter => Ipv4Cidr {
                address: self.arbiter.address,
                prefix_len: self.primary.prefix_len,
            },
        }
    }

    /// The arbiter keys this machine's role needs: a replica's own key (`arbiter_key`, else
    /// the key its role names), or both for the arbiter. Checked when the role starts, so a
    /// config without keys still describes the addresses (the boot self tests need no more).
    pub fn arbiter_keys(&self) -> Result<ArbiterKeys, ConfigError> {
        let keys = match self.role {
            Role::Arbiter => {
                let primary = self.arbiter_key_primary.ok_or(ConfigError::MissingKey {
                    key: "arbiter_key_primary",
                })?;
                let backup = self.arbiter_key_backup.ok_or(ConfigError::MissingKey {
                    key: "arbiter_key_backup",
                })?;
                if primary == backup {
                    return Err(ConfigError::SameArbiterKeys);
                }
                ArbiterKeys::Arbiter { primary, backup }
            }
            Role::Primary | Role::Backup => {
                let (role_key, name) = if self.role == Role::Primary {
                    (self.arbiter_key_primary, "arbiter_key_primary")
                } else {
                    (self.arbiter_key_backup, "arbiter_key_backup")
                };
                let key = self
                    .arbiter_key
                    .or(role_key)
                    .ok_or(ConfigError::MissingKey { key: name })?;
                ArbiterKeys::Replica(key)
            }
        };
        let reused = match keys {
            ArbiterKeys::Replica(key) => key.0 == self.channel_key.0,
            ArbiterKeys::Arbiter { primary, backup } => {
                primary.0 == self.channel_key.0 || backup.0 == self.channel_key.0
            }
        };
        if reused {
            return Err(ConfigError::ArbiterKeyIsChannelKey);
        }
        Ok(keys)
    }

    /// The partner's replication endpoint (none for the arbiter).
    pub fn peer(&self) -> Option<SocketAddress> {
        match self.role {
            Role::Primary => Some(SocketAddress {
                address: self.backup.address,
                port: self.port,
            }),
            Role::Backup => Some(SocketAddress {
                address: self.primary.address,
                port: self.port,
            }),
            Role::Arbiter => None,
        }
    }
}

/// The keys a config may hold.
pub const KEYS: [&str; 19] = [
    "role",
    "primary",
    "backup",
    "arbiter",
    "port",
    "gateway",
    "disk",
    "channel_key",
    "guest_memory_mib",
    "guest_cmdline",
    "arbiter_key_primary",
    "arbiter_key_backup",
    "arbiter_key",
    "peer_timeout_ms",
    "metrics_port",
    "arbiter_backend",
    "etcd_endpoints",
    "etcd_prefix",
    "execution",
];

/// Why a config was rejected. Line numbers count from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    TooLarge {
        bytes: usize,
    },
    NotText,
    MissingEquals {
        line: usize,
    },
    EmptyKey {
        line: usize,
    },
    UnknownKey {
        line: usize,
    },
    DuplicateKey {
        line: usize,
        key: &'static str,
    },
    EmptyValue {
        line: usize,
        key: &'static str,
    },
    UnknownRole {
        line: usize,
    },
    UnknownDiskMode {
        line: usize,
    },
    BadAddress {
        line: usize,
        key: &'static str,
        expected: &'static str,
    },
    BadPort {
        line: usize,
    },
    BadChannelKey {
        line: usize,
    },
    BadGuestMemory {
        line: usize,
    },
    GuestCmdlineTooLong {
        line: usize,
    },
    BadArbiterKey {
        line: usize,
        key: &'static str,
    },
    BadPeerTimeout {
        line: usize,
    },
    SameArbiterKeys,
    ArbiterKeyIsChannelKey,
    UnknownArbiterBackend {
        line: usize,
    },
    UnknownExecution {
        line: usize,
    },
    BadEtcdEndpoints {
        line: usize,
    },
    BadEtcdPrefix {
        line: usize,
    },
    MissingKey {
        key: &'static str,
    },
    SameAddress,
    NoRoute,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge { bytes } => write!(
                f,
                "config is {bytes} bytes, more than the {CONFIG_BYTES_MAX} a config may have: is this the right file?"
            ),
            Self::NotText => write!(f, "config is not utf-8 text: is this the right file?"),
            Self::MissingEquals { line } => write!(f, "line {line}: expected `key = value`"),
            Self::EmptyKey { line } => write!(f, "line {line}: missing key before `=`"),
            Self::UnknownKey { line } => write!(
                f,
                "line {line}: unknown key; known keys: role, primary, backup, arbiter, port, gateway, disk, channel_key, guest_memory_mib, guest_cmdline, arbiter_key_primary, arbiter_key_backup, arbiter_key, peer_timeout_ms, metrics_port, arbiter_backend, etcd_endpoints, etcd_prefix, execution"
            ),
            Self::DuplicateKey { line, key } => write!(f, "line {line}: `{key}` is set twice"),
            Self::EmptyValue { line, key } => write!(f, "line {line}: `{key}` has no value"),
            Self::UnknownRole { line } => {
                write!(f, "line {line}: unknown role; expected primary, backup or arbiter")
            }
            Self::UnknownDiskMode { line } => {
                write!(f, "line {line}: unknown disk mode; expected shared or separate")
            }
            Self::BadAddress { line, key, expected } => {
                write!(f, "line {line}: `{key}` is not a valid address; expected {expected}")
            }
            Self::BadPort { line } => write!(f, "line {line}: a port must be a number 1..65535"),
            Self::BadChannelKey { line } => write!(
                f,
                "line {line}: `channel_key` must be {} hex digits ({CHANNEL_KEY_BYTES} bytes)",
                CHANNEL_KEY_BYTES * 2
            ),
            Self::BadGuestMemory { line } => write!(
                f,
                "line {line}: `guest_memory_mib` must be a number {GUEST_MEMORY_MIB_MIN}..{GUEST_MEMORY_MIB_MAX}"
            ),
            Self::GuestCmdlineTooLong { line } => write!(
                f,
                "line {line}: `guest_cmdline` is longer than {GUEST_CMDLINE_BYTES_MAX} bytes"
            ),
            Self::BadArbiterKey { line, key } => write!(
                f,
                "line {line}: `{key}` must be {} hex digits ({CHANNEL_KEY_BYTES} bytes)",
                CHANNEL_KEY_BYTES * 2
            ),
            Self::BadPeerTimeout { line } => write!(
                f,
                "line {line}: `peer_timeout_ms` must be a number of milliseconds {PEER_TIMEOUT_MS_MIN}..{PEER_TIMEOUT_MS_MAX}"
            ),
            Self::SameArbiterKeys => write!(
                f,
                "`arbiter_key_primary` and `arbiter_key_backup` are equal: give each replica its own key"
            ),
            Self::ArbiterKeyIsChannelKey => write!(
                f,
                "an arbiter key equals `channel_key`: the arbiter keys must differ from it"
            ),
            Self::UnknownArbiterBackend { line } => {
                write!(f, "line {line}: unknown arbiter_backend; expected builtin or etcd")
            }
            Self::UnknownExecution { line } => {
                write!(f, "line {line}: unknown execution; expected translate or interpret")
            }
            Self::BadEtcdEndpoints { line } => write!(
                f,
                "line {line}: `etcd_endpoints` must be 1 to {ETCD_ENDPOINTS_MAX} http://A.B.C.D:PORT separated by commas"
            ),
            Self::BadEtcdPrefix { line } => write!(
                f,
                "line {line}: `etcd_prefix` must be a path such as /understudy/pair-a (at most {ETCD_PREFIX_BYTES_MAX} bytes)"
            ),
            Self::MissingKey { key } => write!(f, "`{key}` is missing"),
            Self::SameAddress => write!(f, "`primary` and `backup` have the same address"),
            Self::NoRoute => write!(
                f,
                "`primary`, `backup` and `arbiter` are not all in one subnet and no `gateway` is set"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

fn parse_decimal(text: &str, max: u32) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are refused: `010` means octal to some tools, so it is ambiguous.
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    let value = text
        .bytes()
        .try_fold(0u64, |acc, b| Some(acc * 10 + u64::from(b - b'0')))?;
    (value <= u64::from(max)).then_some(value as u32)
}

/// Parses dotted-quad IPv4, four decimal octets.
pub fn parse_ipv4(text: &str) -> Option<Ipv4> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        *octet = parse_decimal(parts.next()?, 255)? as u8;
    }
    parts.next().is_none().then_some(Ipv4(octets))
}

/// Parses `A.B.C.D/PREFIX`.
pub fn parse_ipv4_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (address, prefix) = text.split_once('/')?;
    let address = parse_ipv4(address)?;
    let prefix_len = parse_decimal(prefix, 32)? as u8;
    // A host address must not be the network or broadcast address of its subnet.
    if prefix_len <= 30 {
        let host_mask = u32::MAX >> prefix_len;
        let host = address.to_u32() & host_mask;
        if host == 0 || host == host_mask {
            return None;
        }
    }
    if address.0 == [0, 0, 0, 0] || address.0[0] >= 224 {
        return None;
    }
    Some(Ipv4Cidr {
        address,
        prefix_len,
    })
}

fn parse_port(text: &str) -> Option<u16> {
    let port = parse_decimal(text, u32::from(u16::MAX))?;
    (port != 0).then_some(port as u16)
}

/// Parses `A.B.C.D:PORT`.
pub fn parse_socket_address(text: &str) -> Option<SocketAddress> {
    let (address, port) = text.rsplit_once(':')?;
    Some(SocketAddress {
        address: parse_ipv4(address)?,
        port: parse_port(port)?,
    })
}

fn parse_channel_key(text: &str) -> Option<ChannelKey> {
    let bytes = text.as_bytes();
    if bytes.len() != CHANNEL_KEY_BYTES * 2 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut key = [0u8; CHANNEL_KEY_BYTES];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = digit(bytes[2 * index])? << 4 | digit(bytes[2 * index + 1])?;
    }
    Some(ChannelKey(key))
}

/// Values seen so far, by key, with the line each came from.
#[derive(Default)]
struct Fields<'a> {
    values: [Option<(usize, &'a str)>; KEYS.len()],
}

/// Parses and validates config text (a file, or the `-initrd` module's bytes).
pub fn parse_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
    if bytes.len() > CONFIG_BYTES_MAX {
        return Err(ConfigError::TooLarge { bytes: bytes.len() });
    }
    // A config padded with NULs (a module rounded up to a page) is still text.
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let text = core::str::from_utf8(&bytes[..end]).map_err(|_| ConfigError::NotText)?;
    parse(text)
}

/// Parses and validates config text: one `key = value` per line, `#` comments.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_lines(text.split('\n'))
}

/// Parses the same keys from a kernel command line: `key=value` words separated by spaces.
/// Words for other consumers (a dot in the key, like `understudy.selftest=disk`, or no `=`)
/// are skipped.
pub fn parse_command_line(text: &str) -> Result<Config, ConfigError> {
    parse_lines(text.split_ascii_whitespace().filter(|word| {
        word.split_once('=')
            .is_some_and(|(key, _)| !key.contains('.'))
    }))
}

fn parse_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Config, ConfigError> {
    let mut fields = Fields::default();
    for (index, raw) in lines.enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if content.is_empty() {
            continue;
        }
        let (key, value) = content
            .split_once('=')
            .ok_or(ConfigError::MissingEquals { line })?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ConfigError::EmptyKey { line });
        }
        let slot = KEYS
            .iter()
            .position(|k| *k == key)
            .ok_or(ConfigError::UnknownKey { line })?;
        let key = KEYS[slot];
        if fields.values[slot].is_some() {
            return Err(ConfigError::DuplicateKey { line, key });
        }
        if value.is_empty() {
            return Err(ConfigError::EmptyValue { line, key });
        }
        fields.values[slot] = Some((line, value));
    }
    validate(&fields)
}

fn validate(fields: &Fields<'_>) -> Result<Config, ConfigError> {
    let get = |key: &'static str| {
        let slot = KEYS.iter().position(|k| *k == key).expect("key is in KEYS");
        fields.values[slot]
    };
    let require = |key: &'static str| get(key).ok_or(ConfigError::MissingKey { key });

    let (line, value) = require("role")?;
    let role = match value {
        "primary" => Role::Primary,
        "backup" => Role::Backup,
        "arbiter" => Role::Arbiter,
        _ => return Err(ConfigError::UnknownRole { line }),
    };
    let cidr = |key: &'static str| {
        let (line, value) = require(key)?;
        parse_ipv4_cidr(value).ok_or(ConfigError::BadAddress {
            line,
            key,
            expected: "A.B.C.D/PREFIX, e.g. 10.0.0.1/24",
        })
    };
    let primary = cidr("primary")?;
    let backup = cidr("backup")?;
    let (line, value) = require("arbiter")?;
    let arbiter = parse_socket_address(value).ok_or(ConfigError::BadAddress {
        line,
        key: "arbiter",
        expected: "A.B.C.D:PORT, e.g. 10.0.0.3:7100",
    })?;
    let port = match get("port") {
        Some((line, value)) => parse_port(value).ok_or(ConfigError::BadPort { line })?,
        None => DEFAULT_REPLICATION_PORT,
    };
    let gateway = match get("gateway") {
        Some((line, value)) => Some(parse_ipv4(value).ok_or(ConfigError::BadAddress {
            line,
            key: "gateway",
            expected: "A.B.C.D, e.g. 10.0.0.254",
        })?),
        None => None,
    };
    let (line, value) = require("disk")?;
    let disk = match value {
        "shared" => DiskMode::Shared,
        "separate" => DiskMode::Separate,
        _ => return Err(ConfigError::UnknownDiskMode { line }),
    };
    let (line, value) = require("channel_key")?;
    let channel_key = parse_channel_key(value).ok_or(ConfigError::BadChannelKey { line })?;
    let guest_memory_mib = match get("guest_memory_mib") {
        Some((line, value)) => parse_decimal(value, GUEST_MEMORY_MIB_MAX)
            .filter(|mib| *mib >= GUEST_MEMORY_MIB_MIN)
            .ok_or(ConfigError::BadGuestMemory { line })?,
        None => DEFAULT_GUEST_MEMORY_MIB,
    };
    let guest_cmdline = match get("guest_cmdline") {
        Some((line, value)) => {
            Some(GuestCmdline::new(value).ok_or(ConfigError::GuestCmdlineTooLong { line })?)
        }
        None => None,
    };

    let arbiter_key = |key: &'static str| match get(key) {
        Some((line, value)) => parse_channel_key(value)
            .map(|k| Some(ArbiterKey(k.0)))
            .ok_or(ConfigError::BadArbiterKey { line, key }),
        None => Ok(None),
    };
    let arbiter_key_primary = arbiter_key("arbiter_key_primary")?;
    let arbiter_key_backup = arbiter_key("arbiter_key_backup")?;
    let own_arbiter_key = arbiter_key("arbiter_key")?;
    let peer_timeout_ms = match get("peer_timeout_ms") {
        Some((line, value)) => parse_decimal(value, PEER_TIMEOUT_MS_MAX)
            .filter(|ms| *ms >= PEER_TIMEOUT_MS_MIN)
            .ok_or(ConfigError::BadPeerTimeout { line })?,
        None => DEFAULT_PEER_TIMEOUT_MS,
    };

    let arbiter_backend = match get("arbiter_backend") {
        None | Some((_, "builtin")) => ArbiterBackend::Builtin,
        Some((_, "etcd")) => {
            let (line, value) = require("etcd_endpoints")?;
            let mut endpoints = [None; ETCD_ENDPOINTS_MAX];
            let mut count = 0;
            for word in value.split(',') {
                let address = word
                    .trim()
                    .strip_prefix("http://")
                    .map(|rest| rest.trim_end_matches('/'))
                    .and_then(parse_socket_address)
                    .ok_or(ConfigError::BadEtcdEndpoints { line })?;
                *endpoints
                    .get_mut(count)
                    .ok_or(ConfigError::BadEtcdEndpoints { line })? = Some(address);
                count += 1;
            }
            let (line, value) = require("etcd_prefix")?;
            let prefix = etcd_prefix(value).ok_or(ConfigError::BadEtcdPrefix { line })?;
            ArbiterBackend::Etcd { endpoints, prefix }
        }
        Some((line, _)) => return Err(ConfigError::UnknownArbiterBackend { line }),
    };
    let execution = match get("execution") {
        None | Some((_, "translate")) => Execution::Translate,
        Some((_, "interpret")) => Execution::Interpret,
        Some((line, _)) => return Err(ConfigError::UnknownExecution { line }),
    };

    let metrics_port = match get("metrics_port") {
        Some((line, value)) => Some(parse_port(value).ok_or(ConfigError::BadPort { line })?),
        None => None,
    };

    if primary.address == backup.address
        || arbiter.address == primary.address
        || arbiter.address == backup.address
    {
        return Err(ConfigError::SameAddress);
    }
    if gateway.is_none() && !(primary.contains(backup.address) && primary.contains(arbiter.address))
    {
        return Err(ConfigError::NoRoute);
    }
    Ok(Config {
        role,
        primary,
        backup,
        arbiter,
        port,
        gateway,
        disk,
        channel_key,
        guest_memory_mib,
        guest_cmdline,
        arbiter_key_primary,
        arbiter_key_backup,
        arbiter_key: own_arbiter_key,
        peer_timeout_ms,
        metrics_port,
        arbiter_backend,
        execution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn example(role: &str) -> String {
        format!(
            "# example\nrole = {role}\nprimary = 10.0.0.1/24\nbackup = 10.0.0.2/24   # the understudy\n\
             arbiter = 10.0.0.3:7100\ndisk = shared\nchannel_key = {KEY}\n"
        )
    }

    fn replace(text: &str, key: &str, line: &str) -> String {
        text.lines()
            .map(|l| {
                if l.starts_with(key) {
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn primary_config_parses_with_peer_from_backup_address() {
        let config = parse(&example("primary")).unwrap();
        assert_eq!(config.role, Role::Primary);
        assert_eq!(config.execution, Execution::Translate);
        let interpreted = parse(&format!("{}execution = interpret\n", example("primary")));
        assert_eq!(interpreted.unwrap().execution, Execution::Interpret);
        assert_eq!(
            config.own_address(),
            Ipv4Cidr {
                address: Ipv4([10, 0, 0, 1]),
                prefix_len: 24
            }
        );
        assert_eq!(
            config.peer(),
            Some(SocketAddress {
                address: Ipv4([10, 0, 0, 2]),
                port: 7000
            })
        );
        assert_eq!(
            config.arbiter,
            SocketAddress {
                address: Ipv4([10, 0, 0, 3]),
                port: 7100
            }
        );
        assert_eq!(config.disk, DiskMode::Shared);
        assert_eq!(config.channel_key.0[0], 0x00);
        assert_eq!(config.channel_key.0[31], 0xff);
        assert_eq!(config.gateway, None);
    }

    #[test]
    fn flipping_role_swaps_own_address_and_peer() {
        let primary = parse(&example("primary")).unwrap();
        let backup = parse(&example("backup")).unwrap();
        assert_eq!(
            primary.own_address().address,
            backup.peer().unwrap().address
        );
        assert_eq!(
            backup.own_address().address,
            primary.peer().unwrap().address
        );
        let arbiter = parse(&example("arbiter")).unwrap();
        assert_eq!(arbiter.peer(), None);
        assert_eq!(arbiter.own_address().address, Ipv4([10, 0, 0, 3]));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let text = format!("{}colour = blue\n", example("primary"));
        assert_eq!(parse(&text), Err(ConfigError::UnknownKey { line: 8 }));
    }

    #[test]
    fn unknown_role_is_rejected() {
        assert_eq!(
            parse(&example("leader")),
            Err(ConfigError::UnknownRole { line: 2 })
        );
    }

    #[test]
    fn every_required_key_reports_missing() {
        for key in [
            "role",
            "primary",
            "backup",
            "arbiter",
            "disk",
            "channel_key",
        ] {
            let text = replace(&example("backup"), key, "");
            assert_eq!(parse(&text), Err(ConfigError::MissingKey { key }), "{key}");
        }
    }

    #[test]
    fn bad_addresses_are_rejected() {
        for bad in [
            "10.0.0.1",
            "10.0.0/24",
            "10.0.0.256/24",
            "10.0.0.1/33",
            "10.0.0.0/24",
            "10.0.0.255/24",
            "010.0.0.1/24",
            "a.b.c.d/8",
            "10.0.0.1/24x",
        ] {
            let text = replace(&example("primary"), "primary", &format!("primary = {bad}"));
            assert!(
                matches!(
                    parse(&text),
                    Err(ConfigError::BadAddress {
                        line: 3,
                        key: "primary",
                        ..
                    })
                ),
                "{bad}: {:?}",
                parse(&text)
            );
        }
        for bad in [
            "10.0.0.3",
            "10.0.0.3:0",
            "10.0.0.3:65536",
            "10.0.0.3:x",
            ":7100",
        ] {
            let text = replace(&example("primary"), "arbiter", &format!("arbiter = {bad}"));
            assert!(
                matches!(
                    parse(&text),
                    Err(ConfigError::BadAddress { key: "arbiter", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_disk_mode_key_port_and_syntax_are_rejected() {
        let text = replace(&example("primary"), "disk", "disk = mirrored");
        assert_eq!(parse(&text), Err(ConfigError::UnknownDiskMode { line: 6 }));
        let text = format!("{}execution = jit\n", example("primary"));
        assert_eq!(parse(&text), Err(ConfigError::UnknownExecution { line: 8 }));
        let text = replace(&example("primary"), "channel_key", "channel_key = 0011");
        assert_eq!(parse(&text), Err(ConfigError::BadChannelKey { line: 7 }));
        let text = replace(
            &example("primary"),
            "channel_key",
            &format!("channel_key = {}", KEY.replace('0', "g")),
        );
        assert_eq!(parse(&text), Err(ConfigError::BadChannelKey { line: 7 }));
        let text = format!("{}guest_memory_mib = 8\n", example("primary"));
        assert_eq!(parse(&text), Err(ConfigError::BadGuestMemory { line: 8 }));
        let text = format!("{}guest_memory_mib = 1024\n", example("primary"));
        assert_eq!(parse(&text).unwrap().guest_memory_mib, 1024);
        assert_eq!(
            parse(&example("primary")).unwrap().guest_memory_mib,
            DEFAULT_GUEST_MEMORY_MIB
        );
        let text = format!("{}port = 70000\n", example("primary"));
        assert_eq!(parse(&text), Err(ConfigError::BadPort { line: 8 }));
        let text = format!("{}just words\n", example("primary"));
        assert_eq!(parse(&text), Err(ConfigError::MissingEquals { line: 8 }));
        let text = format!("{}= 3\n", example("primary"));
        assert_eq!(parse(&text), Err(ConfigError::EmptyKey { line: 8 }));
        let text = format!("{}disk = separate\n", example("primary"));
        assert_eq!(
            parse(&text),
            Err(ConfigError::DuplicateKey {
                line: 8,
                key: "disk"
            })
        );
        let text = replace(&example("primary"), "disk", "disk =   # forgot");
        assert_eq!(
            parse(&text),
            Err(ConfigError::EmptyValue {
                line: 6,
                key: "disk"
            })
        );
    }

    #[test]
    fn peers_in_different_subnets_need_a_gateway() {
        let text = replace(&example("primary"), "backup", "backup = 10.0.1.2/24");
        assert_eq!(parse(&text), Err(ConfigError::NoRoute));
        let text = format!("{text}\ngateway = 10.0.0.254\n");
        assert_eq!(parse(&text).unwrap().gateway, Some(Ipv4([10, 0, 0, 254])));
        let text = replace(&example("primary"), "backup", "backup = 10.0.0.1/24");
        assert_eq!(parse(&text), Err(ConfigError::SameAddress));
    }

    #[test]
    fn command_line_words_parse_and_foreign_words_are_skipped() {
        let line = format!(
            "understudy.selftest=disk role=backup primary=10.0.0.1/24 backup=10.0.0.2/24 \
             arbiter=10.0.0.3:7100 port=7001 disk=separate channel_key={KEY} quiet"
        );
        let config = parse_command_line(&line).unwrap();
        assert_eq!(config.role, Role::Backup);
        assert_eq!(config.disk, DiskMode::Separate);
        assert_eq!(
            config.peer(),
            Some(SocketAddress {
                address: Ipv4([10, 0, 0, 1]),
                port: 7001
            })
        );
        // A word without a dot in its key is a config word, so a typo is an error, not ignored.
        let typo = format!("consle=ttyS0 {line}");
        assert_eq!(
            parse_command_line(&typo),
            Err(ConfigError::UnknownKey { line: 1 })
        );
    }

    #[test]
    fn nul_padded_module_is_text_and_binary_is_not() {
        let mut bytes = example("primary").into_bytes();
        bytes.extend_from_slice(&[0; 100]);
        assert!(parse_bytes(&bytes).is_ok());
        assert_eq!(parse_bytes(&[0xff, 0xfe, 0x41]), Err(ConfigError::NotText));
        assert_eq!(
            parse_bytes(&vec![b'#'; CONFIG_BYTES_MAX + 1]),
            Err(ConfigError::TooLarge {
                bytes: CONFIG_BYTES_MAX + 1
            })
        );
    }

    #[test]
    fn example_configs_in_the_repository_parse_and_differ_only_in_role() {
        let files = [
            (
                include_str!("../../../configs/primary-shared.conf"),
                Role::Primary,
                DiskMode::Shared,
            ),
            (
                include_str!("../../../configs/backup-shared.conf"),
                Role::Backup,
                DiskMode::Shared,
            ),
            (
                include_str!("../../../configs/primary-separate.conf"),
                Role::Primary,
                DiskMode::Separate,
            ),
            (
                include_str!("../../../configs/backup-separate.conf"),
                Role::Backup,
                DiskMode::Separate,
            ),
            (
                include_str!("../../../configs/arbiter.conf"),
                Role::Arbiter,
                DiskMode::Shared,
            ),
        ];
        for (text, role, disk) in files {
            let config = parse(text).unwrap();
            assert_eq!((config.role, config.disk), (role, disk));
        }
        let differing = |a: &str, b: &str| a.lines().zip(b.lines()).filter(|(x, y)| x != y).count();
        assert_eq!(
            differing(files[0].0, files[1].0),
            2,
            "role line and the header comment"
        );
    }

    const KEY_P: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn with_arbiter_keys(role: &str) -> String {
        format!(
            "{}arbiter_key_primary = {KEY_P}\narbiter_key_backup = {KEY_B}\n",
            example(role)
        )
    }

    #[test]
    fn each_replica_takes_the_arbiter_key_of_its_role_and_the_arbiter_both() {
        let keys = |role: &str| parse(&with_arbiter_keys(role)).unwrap().arbiter_keys();
        assert_eq!(
            keys("primary"),
            Ok(ArbiterKeys::Replica(ArbiterKey([0x11; 32])))
        );
        assert_eq!(
            keys("backup"),
            Ok(ArbiterKeys::Replica(ArbiterKey([0x22; 32])))
        );
        assert_eq!(
            keys("arbiter"),
            Ok(ArbiterKeys::Arbiter {
                primary: ArbiterKey([0x11; 32]),
                backup: ArbiterKey([0x22; 32])
            })
        );
        // An own key wins over the role's.
        let own = format!(
            "{}arbiter_key = {}\n",
            with_arbiter_keys("backup"),
            "33".repeat(32)
        );
        assert_eq!(
            parse(&own).unwrap().arbiter_keys(),
            Ok(ArbiterKeys::Replica(ArbiterKey([0x33; 32])))
        );
    }

    #[test]
    fn missing_equal_or_malformed_arbiter_keys_are_refused() {
        assert_eq!(
            parse(&example("backup")).unwrap().arbiter_keys(),
            Err(ConfigError::MissingKey {
                key: "arbiter_key_backup"
            })
        );
        let same = with_arbiter_keys("arbiter").replace(KEY_B, KEY_P);
        assert_eq!(
            parse(&same).unwrap().arbiter_keys(),
            Err(ConfigError::SameArbiterKeys)
        );
        let channel = with_arbiter_keys("primary").replace(KEY_P, KEY);
        assert_eq!(
            parse(&channel).unwrap().arbiter_keys(),
            Err(ConfigError::ArbiterKeyIsChannelKey)
        );
        let short = with_arbiter_keys("primary").replace(KEY_B, "22");
        assert_eq!(
            parse(&short),
            Err(ConfigError::BadArbiterKey {
                line: 9,
                key: "arbiter_key_backup"
            })
        );
    }

    #[test]
    fn peer_timeout_defaults_and_is_bounded() {
        assert_eq!(parse(&example("primary")).unwrap().peer_timeout_ms, 1000);
        let with = |ms: &str| parse(&format!("{}peer_timeout_ms = {ms}\n", example("primary")));
        assert_eq!(with("300").unwrap().peer_timeout_ms, 300);
        assert_eq!(with("99"), Err(ConfigError::BadPeerTimeout { line: 8 }));
        assert_eq!(with("60001"), Err(ConfigError::BadPeerTimeout { line: 8 }));
    }

    #[test]
    fn an_etcd_backend_names_its_endpoints_and_prefix() {
        let text = format!(
            "{}arbiter_backend = etcd\netcd_endpoints = http://10.0.0.21:2379, http://10.0.0.22:2379/\netcd_prefix = /understudy/pair-a/\n",
            example("primary")
        );
        let ArbiterBackend::Etcd { endpoints, prefix } = parse(&text).unwrap().arbiter_backend
        else {
            panic!("not etcd")
        };
        assert_eq!(
            endpoints[..3],
            [
                parse_socket_address("10.0.0.21:2379"),
                parse_socket_address("10.0.0.22:2379"),
                None
            ]
        );
        assert_eq!(prefix.as_str(), "/understudy/pair-a");
        let hostname = text.replace("http://10.0.0.21:2379", "http://etcd-1:2379");
        assert_eq!(
            parse(&hostname),
            Err(ConfigError::BadEtcdEndpoints { line: 9 })
        );
        let relative = text.replace("/understudy/pair-a/", "pair-a");
        assert_eq!(
            parse(&relative),
            Err(ConfigError::BadEtcdPrefix { line: 10 })
        );
        assert_eq!(
            parse(&format!(
                "{}arbiter_backend = zookeeper\n",
                example("primary")
            )),
            Err(ConfigError::UnknownArbiterBackend { line: 8 })
        );
        assert_eq!(
            parse(&example("primary")).unwrap().arbiter_backend,
            ArbiterBackend::Builtin
        );
    }

    #[test]
    fn errors_display_what_to_do() {
        let message = ConfigError::UnknownRole { line: 2 }.to_string();
        assert_eq!(
            message,
            "line 2: unknown role; expected primary, backup or arbiter"
        );
        assert!(ConfigError::MissingKey { key: "disk" }
            .to_string()
            .contains("`disk` is missing"));
        assert_eq!(
            format!("{:?}", ChannelKey([7; 32])),
            "ChannelKey(<redacted>)"
        );
    }

    #[test]
    fn guest_cmdline_is_optional_and_kept_whole() {
        assert_eq!(parse(&example("primary")).unwrap().guest_cmdline, None);
        let text = example("primary")
            + "guest_cmdline = console=ttyS0 understudy.init='echo a=b; ls /'   # comment\n";
        let config = parse(&text).unwrap();
        assert_eq!(
            config.guest_cmdline.unwrap().as_str(),
            "console=ttyS0 understudy.init='echo a=b; ls /'"
        );
    }

    #[test]
    fn overlong_guest_cmdline_is_refused_with_its_line() {
        let long = "x".repeat(GUEST_CMDLINE_BYTES_MAX + 1);
        let text = example("primary") + &format!("guest_cmdline = {long}\n");
        assert_eq!(
            parse(&text),
            Err(ConfigError::GuestCmdlineTooLong { line: 8 })
        );
        let fits = example("primary") + &format!("guest_cmdline = {}\n", &long[1..]);
        assert!(parse(&fits).is_ok());
    }
}
