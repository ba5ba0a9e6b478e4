//! Network backends for the guest's virtio-net device: where its Ethernet frames go.
//!
//! A backend delivers received frames to the live driver through the `Arrival` channel
//! (from its own thread, so the driver can sleep on one channel for every kind of input),
//! and takes transmitted frames through `NetBackend::send`.

use std::os::fd::RawFd;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// Something that arrived from outside, for the live driver to inject.
#[derive(Debug)]
pub enum Arrival {
    ConsoleByte(u8),
    ConsoleClosed,
    Frame(Vec<u8>),
    /// A datagram of the replication log channel.
    Datagram(Vec<u8>),
    /// The arbiter register's answer (`arbiter_backend = etcd`).
    Storage(understudy_ft::shared::StorageResult),
}

/// Where the guest's frames go and come from.
pub trait NetBackend: Send {
    /// Starts delivering received frames as `Arrival::Frame` into `arrivals`.
    fn start(&mut self, arrivals: SyncSender<Arrival>) -> std::io::Result<()>;
    /// Sends one frame the guest transmitted. Errors are counted and logged by the caller;
    /// a lost frame is what a real NIC does under pressure, and TCP recovers.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()>;
    /// Runs the backend on the driver's thread instead of one of its own, if it can (true):
    /// the driver then calls `pump` between run slices and `wait` when the guest idles,
    /// and never `start`. A request and its answer then cost no switch between threads.
    fn start_on_driver_thread(&mut self) -> std::io::Result<bool> {
        Ok(false)
    }
    /// On the driver's thread: does what is ready without blocking, handing each frame
    /// for the guest to `deliver`.
    fn pump(&mut self, _deliver: &mut dyn FnMut(Vec<u8>)) {}
    /// On the driver's thread: sleeps until `wake` is readable, something may be ready for
    /// `pump`, or `timeout` passed.
    fn wait(&mut self, _wake: RawFd, _timeout: Duration) {}
}

pub mod tap;
pub mod user;

use user::{PortForward, UserConfig};

/// A parsed `--net` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetSpec {
    /// `tap:IFNAME`
    Tap { interface: String },
    /// `user[:hostfwd=tcp:HOSTPORT-GUESTPORT[,hostfwd=...]]`
    User(UserConfig),
}

/// Why a `--net` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum NetSpecError {
    #[error(
        "unknown network backend {0:?}: use tap:IFNAME or user:hostfwd=tcp:HOSTPORT-GUESTPORT"
    )]
    UnknownBackend(String),
    #[error("tap needs an interface name: tap:IFNAME")]
    MissingInterface,
    #[error("bad tap interface name {0:?}: 1 to 15 bytes of letters, digits, '-', '_' or '.'")]
    BadInterface(String),
    #[error("unknown user network option {0:?}: use hostfwd=tcp:HOSTPORT-GUESTPORT")]
    UnknownOption(String),
    #[error("bad port forward {0:?}: use hostfwd=tcp:HOSTPORT-GUESTPORT, ports 1 to 65535")]
    BadForward(String),
    #[error("host port {0} is forwarded twice")]
    DuplicateHostPort(u16),
    // The I/O error is part of the message rather than a `source`, so that printing the
    // error chain does not say it twice.
    #[error("cannot start the {backend} network: {error}")]
    Open {
        backend: &'static str,
        error: std::io::Error,
    },
}

/// Parses a `--net` value without opening anything.
pub fn parse_spec(spec: &str) -> Result<NetSpec, NetSpecError> {
    let (kind, rest) = match spec.split_once(':') {
        Some((kind, rest)) => (kind, Some(rest)),
        None => (spec, None),
    };
    match kind {
        "tap" => {
            let interface = rest.ok_or(NetSpecError::MissingInterface)?;
            if interface.is_empty() {
                return Err(NetSpecError::MissingInterface);
            }
            // Linux accepts more (dev_valid_name), but these are the names that need no
            // quoting anywhere, and a typo such as "tap:tap0,foo" is caught here.
            let valid = interface.len() <= tap::INTERFACE_NAME_BYTES_MAX
                && interface != "."
                && interface != ".."
                && interface
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid {
                return Err(NetSpecError::BadInterface(interface.to_string()));
            }
            Ok(NetSpec::Tap {
                interface: interface.to_string(),
            })
        }
        "user" => {
            let mut forwards: Vec<PortForward> = Vec::new();
            for option in rest.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
                let Some(value) = option.strip_prefix("hostfwd=") else {
                    return Err(NetSpecError::UnknownOption(option.to_string()));
                };
                let forward = parse_forward(value)
                    .ok_or_else(|| NetSpecError::BadForward(option.to_string()))?;
                if forwards.iter().any(|f| f.host_port == forward.host_port) {
                    return Err(NetSpecError::DuplicateHostPort(forward.host_port));
                }
                forwards.push(forward);
            }
            Ok(NetSpec::User(UserConfig::new(forwards)))
        }
        _ => Err(NetSpecError::UnknownBackend(kind.to_string())),
    }
}

/// `tcp:HOSTPORT-GUESTPORT`, also in QEMU's spelling `tcp::HOSTPORT-:GUESTPORT` and with
/// the host address 127.0.0.1 written out (the only one we listen on).
fn parse_forward(value: &str) -> Option<PortForward> {
    let rest = value.strip_prefix("tcp:")?;
    let (host, guest) = rest.split_once('-')?;
    let host = host
        .strip_prefix("127.0.0.1:")
        .or(host.strip_prefix(':'))
        .unwrap_or(host);
    let guest = guest.strip_prefix(':').unwrap_or(guest);
    let port = |text: &str| -> Option<u16> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<u16>().ok().filter(|&p| p != 0)
    };
    Some(PortForward {
        host_port: port(host)?,
        guest_port: port(guest)?,
    })
}

/// Parses a `--net` value and opens the backend it names (binding listeners or attaching
/// the TAP interface now, so a port in use or a missing privilege is reported at once).
pub fn backend_from_spec(spec: &str) -> Result<Box<dyn NetBackend>, NetSpecError> {
    match parse_spec(spec)? {
        NetSpec::Tap { interface } => tap::TapNet::open(&interface)
            .map(|b| Box::new(b) as Box<dyn NetBackend>)
            .map_err(|error| NetSpecError::Open {
                backend: "tap",
                error,
            }),
        NetSpec::User(config) => user::UserNet::new(config)
            .map(|b| Box::new(b) as Box<dyn NetBackend>)
            .map_err(|error| NetSpecError::Open {
                backend: "user",
                error,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            host_port,
            guest_port,
        }
    }

    #[test]
    fn tap_spec_names_the_interface() {
        assert_eq!(
            parse_spec("tap:tap0").unwrap(),
            NetSpec::Tap {
                interface: "tap0".into()
            }
        );
        assert_eq!(
            parse_spec("tap:understudy-t.1").unwrap(),
            NetSpec::Tap {
                interface: "understudy-t.1".into()
            }
        );
    }

    #[test]
    fn tap_spec_without_a_valid_name_is_refused() {
        assert!(matches!(
            parse_spec("tap"),
            Err(NetSpecError::MissingInterface)
        ));
        assert!(matches!(
            parse_spec("tap:"),
            Err(NetSpecError::MissingInterface)
        ));
        for bad in [
            "tap:a/b",
            "tap:sixteen-bytes-xx",
            "tap:tap0,x",
            "tap:..",
            "tap:a b",
        ] {
            assert!(
                matches!(parse_spec(bad), Err(NetSpecError::BadInterface(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn user_spec_lists_forwards_in_order() {
        let NetSpec::User(config) =
            parse_spec("user:hostfwd=tcp:8080-80,hostfwd=tcp:6379-6379").unwrap()
        else {
            panic!("not user")
        };
        assert_eq!(
            config.forwards,
            vec![forward(8080, 80), forward(6379, 6379)]
        );
        assert_eq!(config.host_ip, user::HOST_IP_DEFAULT);
        assert_eq!(config.guest_ip, user::GUEST_IP_DEFAULT);
    }

    #[test]
    fn user_spec_accepts_qemu_spelling_and_no_forwards() {
        let NetSpec::User(config) =
            parse_spec("user:hostfwd=tcp::8080-:80,hostfwd=tcp:127.0.0.1:81-:81").unwrap()
        else {
            panic!("not user")
        };
        assert_eq!(config.forwards, vec![forward(8080, 80), forward(81, 81)]);
        for bare in ["user", "user:"] {
            assert_eq!(
                parse_spec(bare).unwrap(),
                NetSpec::User(UserConfig::new(Vec::new()))
            );
        }
    }

    #[test]
    fn user_spec_errors_name_the_bad_part() {
        let cases = [
            ("user:hostfwd=udp:53-53", "hostfwd=udp:53-53"),
            ("user:hostfwd=tcp:8080", "hostfwd=tcp:8080"),
            ("user:hostfwd=tcp:0-80", "hostfwd=tcp:0-80"),
            ("user:hostfwd=tcp:8080-65536", "hostfwd=tcp:8080-65536"),
            ("user:hostfwd=tcp:+1-80", "hostfwd=tcp:+1-80"),
            (
                "user:hostfwd=tcp:10.0.0.1:80-80",
                "hostfwd=tcp:10.0.0.1:80-80",
            ),
        ];
        for (spec, part) in cases {
            match parse_spec(spec) {
                Err(NetSpecError::BadForward(text)) => assert_eq!(text, part),
                other => panic!("{spec}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_spec("user:restrict=on"),
            Err(NetSpecError::UnknownOption(o)) if o == "restrict=on"
        ));
        assert!(matches!(
            parse_spec("user:hostfwd=tcp:80-80,hostfwd=tcp:80-81"),
            Err(NetSpecError::DuplicateHostPort(80))
        ));
        let error = parse_spec("slirp:x").unwrap_err();
        assert!(matches!(error, NetSpecError::UnknownBackend(ref k) if k == "slirp"));
        assert!(error.to_string().contains("tap:IFNAME"), "{error}");
    }

    #[test]
    fn backend_from_spec_reports_a_busy_host_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = backend_from_spec(&format!("user:hostfwd=tcp:{port}-80"))
            .err()
            .unwrap();
        assert!(
            matches!(
                error,
                NetSpecError::Open {
                    backend: "user",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains(&port.to_string()), "{error}");
    }
}
