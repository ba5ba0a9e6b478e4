//! The hosted role config: the appliance's `key = value` format (`understudy-boot-config`)
//! plus the keys a Linux process needs (guest files, the service network, a state directory).
use std::fmt;
use std::path::{Path, PathBuf};

pub use understudy_boot_config::ArbiterKeys;
use understudy_boot_config::{self as boot, ChannelKey, Role};
use understudy_ft::Limits;

/// Keys only the hosted program reads; every other key goes to the appliance parser, which
/// rejects unknown ones.
const HOSTED_KEYS: [&str; 8] = [
    "guest_kernel",
    "guest_initrd",
    "guest_disk",
    "service_net",
    "state_dir",
    "metrics_address",
    "log_level",
    "log_format",
];

/// A validated hosted config.
#[derive(Clone, Debug)]
pub struct PairConfig {
    /// The appliance part: role, addresses, disk mode, channel key, memory, command line.
    pub boot: boot::Config,
    /// Where the replica keeps its last known epoch and status (the arbiter: its record).
    pub state_dir: PathBuf,
    /// The guest: kernel `Image` or ELF, optional initrd and disk (replicas only).
    pub guest: Option<GuestFiles>,
    /// The guest's service network, `tap:IFNAME` (replicas; optional).
    pub service_net: Option<String>,
    /// Where a replica serves its figures as Prometheus text exposition (optional).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Who decides epochs: the built-in arbiter process (default) or an etcd cluster.
    pub arbiter_backend: ArbiterBackend,
    /// Which events the process logs, and how (`log_level`, `log_format`).
    pub log_level: super::log::Level,
    pub log_format: super::log::Format,
    /// Replicas: the key shared with the arbiter. Arbiter: the primary's and the backup's.
    pub arbiter_keys: ArbiterKeys,
    /// The protocol's limits and timeouts (`peer_timeout_ms` scales the timers).
    pub limits: Limits,
}

/// The guest files of a replica.
#[derive(Clone, Debug)]
pub struct GuestFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
}

/// Who decides which replica goes live.
#[derive(Clone, Debug)]
pub enum ArbiterBackend {
    /// The `role = arbiter` process at the config's `arbiter` address.
    Builtin,
    /// A key in an etcd cluster, compared and set by each replica itself.
    Etcd(super::etcd::Etcd),
}

/// Why a config was refused.
#[derive(Debug)]
pub struct PairConfigError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for PairConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PairConfigError {}

impl PairConfig {
    /// Reads and validates `path`; `role` overrides the file's role.
    pub fn load(path: &Path, role: Option<Role>) -> Result<PairConfig, PairConfigError> {
        let error = |reason: String| PairConfigError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        parse(&text, base, role).map_err(error)
    }

    /// The replica's own id (1 primary, 2 backup) in `ft` terms; the arbiter is 3.
    pub fn role(&self) -> Role {
        self.boot.role
    }
}

/// Parses config text; relative paths are taken from `base`.
pub fn parse(text: &str, base: &Path, role: Option<Role>) -> Result<PairConfig, String> {
    let mut appliance_text = String::with_capacity(text.len());
    let mut hosted: Vec<(usize, &str, &str)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        match content.split_once('=') {
            Some((key, value)) if HOSTED_KEYS.contains(&key.trim()) => {
                let key = key.trim();
                if hosted.iter().any(|(_, k, _)| *k == key) {
                    return Err(format!("line {}: {key} is given twice", index + 1));
                }
                hosted.push((index + 1, key, value.trim()));
                // Keep the line numbers of the appliance parser's messages right.
                appliance_text.push('\n');
            }
            _ => {
                appliance_text.push_str(line);
                appliance_text.push('\n');
            }
        }
    }
    let mut boot = boot::parse(&appliance_text).map_err(|error| match error {
        boot::ConfigError::UnknownKey { line } => format!(
            "line {line}: unknown key; known keys: {}, {}",
            boot::KEYS.join(", "),
            HOSTED_KEYS.join(", ")
        ),
        other => other.to_string(),
    })?;
    if let Some(role) = role {
        boot.role = role;
    }
    let value = |key: &str| {
        hosted
            .iter()
            .find(|(_, k, _)| *k == key)
            .map(|(l, _, v)| (*l, *v))
    };
    let path_of = |key: &str| value(key).map(|(_, v)| base.join(v));
    let state_dir =
        path_of("state_dir").ok_or("state_dir is missing: a directory this process owns")?;
    let service_net = value("service_net").map(|(_, v)| v.to_owned());
    if let Some(spec) = &service_net {
        if !spec.starts_with("tap:") {
            return Err(format!("service_net {spec:?}: use tap:IFNAME"));
        }
    }
    let metrics_address = match value("metrics_address") {
        None => None,
        Some((line, text)) => Some(text.parse().map_err(|_| {
            format!("line {line}: metrics_address must be an address and port, e.g. 127.0.0.1:9464")
        })?),
    };
    let arbiter_backend = match boot.arbiter_backend {
        boot::ArbiterBackend::Builtin => ArbiterBackend::Builtin,
        boot::ArbiterBackend::Etcd { endpoints, prefix } => {
            if boot.role == Role::Arbiter {
                return Err(
                    "with arbiter_backend = etcd there is no arbiter process: the replicas ask etcd"
                        .into(),
                );
            }
            ArbiterBackend::Etcd(super::etcd::Etcd::new(
                endpoints.iter().flatten().map(|a| format!("{a}")).collect(),
                prefix.as_str(),
            ))
        }
    };
    let log_level = match value("log_level") {
        None => super::log::Level::Info,
        Some((line, text)) => super::log::Level::parse(text).ok_or_else(|| {
            format!("line {line}: log_level {text:?}: use error, warn, info or debug")
        })?,
    };
    let log_format = match value("log_format") {
        None => super::log::Format::KeyValue,
        Some((line, text)) => super::log::Format::parse(text)
            .ok_or_else(|| format!("line {line}: log_format {text:?}: use keyvalue or json"))?,
    };
    let limits = Limits::with_peer_timeout_ms(u64::from(boot.peer_timeout_ms));
    let arbiter_keys = boot.arbiter_keys().map_err(|error| error.to_string())?;
    let guest = match boot.role {
        Role::Arbiter => None,
        Role::Primary | Role::Backup => Some(GuestFiles {
            kernel: path_of("guest_kernel").ok_or("guest_kernel is missing")?,
            initrd: path_of("guest_initrd"),
            disk: path_of("guest_disk"),
        }),
    };
    Ok(PairConfig {
        boot,
        state_dir,
        guest,
        service_net,
        metrics_address,
        arbiter_backend,
        log_level,
        log_format,
        arbiter_keys,
        limits,
    })
}

/// The channel key as `ft` wants it.
pub fn channel_key(key: &ChannelKey) -> understudy_ft::Key {
    understudy_ft::Key(key.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_boot_config::DiskMode;
    use understudy_ft::Duration;

    const BASE: &str = "role = primary\nprimary = 127.0.0.1/8\nbackup = 127.0.0.2/8\n\
        arbiter = 127.0.0.3:7100\ndisk = separate\n\
        channel_key = 5c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b\n\
        state_dir = state/primary\nguest_kernel = Image\n\
        arbiter_key = 1111111111111111111111111111111111111111111111111111111111111111\n";

    #[test]
    fn hosted_keys_resolve_against_the_config_directory() {
        let config = parse(BASE, Path::new("/etc/understudy"), None).unwrap();
        assert_eq!(config.state_dir, Path::new("/etc/understudy/state/primary"));
        let guest = config.guest.unwrap();
        assert_eq!(guest.kernel, Path::new("/etc/understudy/Image"));
        assert_eq!(guest.disk, None);
        assert_eq!(config.boot.role, Role::Primary);
    }

    #[test]
    fn role_flag_overrides_the_file() {
        let config = parse(BASE, Path::new("."), Some(Role::Backup)).unwrap();
        assert_eq!(config.boot.role, Role::Backup);
    }

    #[test]
    fn a_wrong_key_names_its_line() {
        let text = format!("{BASE}colour = blue\n");
        let error = parse(&text, Path::new("."), None).unwrap_err();
        assert_eq!(
            error,
            "line 10: unknown key; known keys: role, primary, backup, arbiter, port, gateway, \
             disk, channel_key, guest_memory_mib, guest_cmdline, arbiter_key_primary, \
             arbiter_key_backup, arbiter_key, peer_timeout_ms, metrics_port, arbiter_backend, \
             etcd_endpoints, etcd_prefix, execution, guest_kernel, guest_initrd, \
             guest_disk, service_net, state_dir, metrics_address, log_level, log_format"
        );
    }

    #[test]
    fn a_short_arbiter_key_is_refused() {
        let text = BASE.replace("arbiter_key = 11", "arbiter_key = 1");
        let error = parse(&text, Path::new("."), None).unwrap_err();
        assert_eq!(
            error,
            "line 9: `arbiter_key` must be 64 hex digits (32 bytes)"
        );
    }

    #[test]
    fn shared_disks_are_accepted_with_the_one_image_named() {
        let text = BASE.replace("disk = separate", "disk = shared") + "guest_disk = d.ext4\n";
        let config = parse(&text, Path::new("/srv"), None).unwrap();
        assert_eq!(config.boot.disk, DiskMode::Shared);
        assert_eq!(
            config.guest.unwrap().disk.unwrap(),
            Path::new("/srv/d.ext4")
        );
    }

    #[test]
    fn the_example_hosted_configs_parse_with_the_roles_they_name() {
        let examples = [
            (
                include_str!("../../../../configs/hosted-primary.conf"),
                Role::Primary,
            ),
            (
                include_str!("../../../../configs/hosted-backup.conf"),
                Role::Backup,
            ),
            (
                include_str!("../../../../configs/hosted-arbiter.conf"),
                Role::Arbiter,
            ),
        ];
        for (text, role) in examples {
            let config = parse(text, Path::new("configs"), None).unwrap();
            assert_eq!(config.boot.role, role);
            assert_eq!(config.boot.disk, DiskMode::Separate);
        }
    }

    #[test]
    fn peer_timeout_scales_every_timer_and_stays_valid() {
        let text = format!("{BASE}peer_timeout_ms = 300\n");
        let config = parse(&text, Path::new("."), None).unwrap();
        assert_eq!(config.limits.peer_timeout, Duration::from_millis(300));
        assert_eq!(config.limits.heartbeat_interval, Duration::from_millis(30));
        assert_eq!(
            config.limits.ack_progress_timeout,
            Duration::from_millis(600)
        );
        assert_eq!(config.limits.validate(), Ok(()));
        let text = format!("{BASE}peer_timeout_ms = 50\n");
        assert_eq!(
            parse(&text, Path::new("."), None).unwrap_err(),
            "line 10: `peer_timeout_ms` must be a number of milliseconds 100..60000"
        );
    }
}
